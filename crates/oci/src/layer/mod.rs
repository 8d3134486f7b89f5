//! Layers as tar streams: reading them safely, writing them deterministically, applying them
//! to a directory and flattening a stack of them.

pub mod apply;
pub mod budget;
pub mod compression;
pub mod flatten;
pub mod members;
pub mod merge;
pub mod pgzip;
pub mod reader;
pub mod rules;
pub mod writer;

pub use compression::Compression;
pub use reader::{Entry, EntryKind};
pub use writer::{LayerInfo, LayerWriter};
