//! nbrt's image core: the OCI image model, layers as tar streams, the local content store,
//! the places images live (OCI layouts, docker archives, registries, the Docker engine), and
//! copying between them.

pub mod digest;
pub mod engine;
pub mod error;
pub mod format;
pub mod fsutil;
pub mod image;
pub mod json;
pub mod label;
pub mod layer;
pub mod name;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod store;
pub mod transfer;

pub use digest::Digest;
pub use engine::Engine;
pub use error::{OciError, Result};
pub use image::{copy_image, validate, BlobSource, Image, ImageSink, Raw};
pub use name::ImageName;
pub use progress::Progress;
pub use store::{Bucket, RefKind, Store, StoredImage};
