//! The one error type of the image crate: every variant says what was wrong and where.
//! Its messages carry names and text from untrusted places (layers, archives, registries),
//! so every field is shown through [`Escaped`] or [`Quoted`]: no control character reaches
//! a terminal.

use std::path::PathBuf;

use crate::text::{Escaped, Quoted};

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{}: {}", Escaped(.context), Escaped(.source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest {}: expected sha256:<64 lowercase hex digits>", Quoted(.0))]
    InvalidDigest(String),
    #[error(
        "digest mismatch for {}: expected {}, got {}",
        Escaped(.what),
        Escaped(.expected),
        Escaped(.actual)
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {}: expected {expected} bytes, got {actual}", Escaped(.what))]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{} is {size} bytes, over the limit of {limit} bytes", Escaped(.what))]
    TooLarge { what: String, size: u64, limit: u64 },
    /// A body that went on past its limit while it streamed (reading stopped there).
    #[error("{} is over the limit of {limit} bytes (reading stopped there)", Escaped(.what))]
    OverLimit { what: String, limit: u64 },
    /// One import or export expanded past its bound (see `layer::budget`).
    #[error(
        "the image expands to more than {limit} {unit}, the limit of one import or export \
         (raise it with {setting})"
    )]
    ExpansionLimit {
        limit: u64,
        unit: &'static str,
        setting: &'static str,
    },
    #[error("invalid JSON in {}: {}", Escaped(.what), Escaped(.source))]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid image: {}", Escaped(.0))]
    InvalidImage(String),
    #[error("unsafe layer entry {}: {}", Quoted(.path), Escaped(.reason))]
    UnsafeEntry { path: String, reason: String },
    #[error("invalid layer: {}", Escaped(.0))]
    InvalidLayer(String),
    #[error("invalid image name {}: {}", Quoted(.name), Escaped(.reason))]
    InvalidName { name: String, reason: String },
    #[error("no image named {} in the store (see `nbrt images`)", Quoted(.0))]
    NotFound(String),
    #[error("blob {} is not in the store", Escaped(.0))]
    BlobNotFound(String),
    #[error("unsupported {}: {}", Escaped(.what), Escaped(.value))]
    Unsupported { what: String, value: String },
    #[error("cannot read {}: {}", Escaped(.path.display()), Escaped(.reason))]
    Format { path: PathBuf, reason: String },
    #[error("registry {}: {}", Escaped(.registry), Escaped(.message))]
    Registry { registry: String, message: String },
    #[error("Docker engine: {}", Escaped(.0))]
    Engine(String),
}

pub type Result<T, E = OciError> = std::result::Result<T, E>;

/// Attach a description of what was being done to an I/O error.
pub trait IoContext<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| OciError::Io {
            context: context().into(),
            source,
        })
    }
}
