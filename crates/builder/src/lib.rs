//! nbrt's builder: runtime files and stacks → build plan → steps → layers → image.
//!
//! Modules, from the bottom up (each uses only those above it in this list):
//! - `builtin`: files nbrt provides to runtimes (nbrt-init);
//! - `runtime_file`, `stack`: runtime files parsed and checked; stacks ordered by parent;
//! - `snapshot`: layers extracted once into directories (overlay whiteout form), and a merged
//!   read-only view of an image's file system built from them;
//! - `layer_dir`: a directory tree (or an overlay upper directory) written as a layer;
//! - `sandbox`: commands executed with runc over an overlayfs mount;
//! - `epoch`, `leaks`: the build time taken from the inputs, never the clock, and the files
//!   that would tell of the build machine, left out of layers;
//! - `leftovers`: step directories, and cleaning up after builds that were killed;
//! - `config`: the image config of a built runtime; `blocking`: async work run from the
//!   synchronous builder;
//! - `lock`: the `runtime.lock` format and its records; `cache`: the layer cache and the
//!   hashing of input files; `record`: which runtime file made an image;
//! - `steps`: one module per step kind (bootstrap, apt, user, conda, pip, files, run), each
//!   owning its label, cache inputs, run, lock entry and rebase decision (`steps::StepKind`);
//!   a step's cache key (`steps::Step::cache_key`);
//! - `builder`: the driver (plan → key → cache hit or run → lock → assemble);
//! - `rebase`: a runtime's layers moved onto a new base;
//! - `reproducible`: a stack built twice in two scratch stores, and where the images part;
//! - `gc`: the builder's caches pruned to what the store's images use.

pub mod apt_marks;
pub mod blocking;
pub mod builder;
pub mod builtin;
pub mod cache;
pub mod config;
pub mod epoch;
pub mod error;
pub mod gc;
pub mod layer_dir;
pub mod leaks;
pub mod leftovers;
pub mod lock;
pub mod rebase;
pub mod record;
pub mod reproducible;
pub mod runtime_file;
pub mod sandbox;
pub mod snapshot;
pub mod stack;
pub mod steps;

pub use error::{BuildError, Result};
pub use gc::gc;
