//! nbrt's builder: runtime files and stacks → build plan → steps → layers → image.
//!
//! Modules (filled in as the builder grows):
//! - `snapshot`: layers extracted once into directories (overlay whiteout form), and a merged
//!   read-only view of an image's file system built from them;
//! - `layer_dir`: a directory tree (or an overlay upper directory) written as a layer;
//! - `sandbox`: `run` and `apt` steps executed with runc over an overlayfs mount;
//! - `leftovers`: step directories, and cleaning up after builds that were killed;
//! - `steps`: the pip (uv, bytecode), conda (rattler) and user steps.

pub mod builder;
pub mod builtin;
pub mod config;
pub mod error;
pub mod layer_dir;
pub mod leftovers;
pub mod lock;
pub mod pip_step;
pub mod rebase;
pub mod runtime_file;
pub mod sandbox;
pub mod snapshot;
pub mod stack;
pub mod steps;

pub use error::{BuildError, Result};
