//! nbrt's image core: the OCI image model, layers as tar streams, the local content store,
//! the places images live (OCI layouts, docker archives, registries, the Docker engine), and
//! copying between them. [`Platform`] is the one place that knows the host's platform and
//! which entry of a multi-platform index is for it.

pub mod digest;
pub mod engine;
pub mod error;
pub mod facts;
pub mod format;
pub mod fsutil;
pub mod fsview;
pub mod image;
pub mod json;
pub mod label;
pub mod layer;
pub mod name;
pub mod platform;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod store;
pub mod transfer;

pub use digest::Digest;
pub use engine::Engine;
pub use error::{OciError, Result};
pub use fsview::{FileInfo, FileKind, FileView, FsViewError};
pub use image::{copy_image, validate, BlobSource, Image, ImageSink, Raw};
pub use name::ImageName;
pub use platform::Platform;
pub use progress::Progress;
pub use store::{Bucket, RefKind, Store, StoredImage};
