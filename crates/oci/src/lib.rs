//! nbrt's image core: the OCI image model, layers as tar streams, the local content store,
//! the places images live (OCI layouts, docker archives, registries, the Docker engine), and
//! copying between them; and the facts about an image's files that more than one crate reads.
//!
//! | module | its job |
//! | --- | --- |
//! | [`digest`], [`json`], [`spec`], [`name`] | digests and hashing, canonical JSON, the OCI documents, image names |
//! | [`image`] | an image (manifest, config, layers; exact bytes, verified reads), [`validate`], [`copy_image`] |
//! | [`layer`] | layers as tar streams: read (untrusted entries checked), write (deterministic), apply, merge (the one whiteout rule), flatten |
//! | [`store`] | the local content store: blobs, names, typed references ([`RefKind`]), its areas ([`Bucket`]), gc |
//! | [`format`] | OCI layouts, docker archives, root file system tars |
//! | [`transfer`] | import and export between the store and files |
//! | [`registry`] | registries: references, auth, client, push, pull |
//! | [`engine`] | the Docker engine ([`Engine`]): loading an image under its one name, containers |
//! | [`platform`] | [`Platform`]: the host's platform and which entry of a multi-platform index is for it |
//! | [`fsview`], [`facts`] | [`FileView`], one trait over an image's files, and the readers of dpkg status, conda-meta, dist-info and passwd/group written against it |
//! | [`label`] | the labels nbrt writes on images and containers, [`label::RuntimeDefaults`] |
//! | [`progress`], [`fsutil`], [`error`] | progress bars, atomic writes and locks, [`OciError`] |
//! | [`text`] | untrusted text made safe to print: control characters escaped ([`text::Escaped`], [`text::Quoted`]) |

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
pub mod parallel;
pub mod platform;
pub mod pod;
pub mod progress;
pub mod registry;
pub mod spec;
pub mod store;
pub mod text;
pub mod transfer;

pub use digest::Digest;
pub use engine::Engine;
pub use error::{OciError, Result};
pub use fsview::{FileInfo, FileKind, FileView, FsViewError};
pub use image::{copy_image, validate, BlobSource, Image, ImageSink, Raw};
pub use name::ImageName;
pub use platform::Platform;
pub use progress::Progress;
pub use store::{Bucket, Pin, RefKind, Store, StoredImage};
