//! The one error type of the image crate: every variant says what was wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// A body that went on past its limit while it streamed (reading stopped there).
    #[error("{what} is over the limit of {limit} bytes (reading stopped there)")]
    OverLimit { what: String, limit: u64 },
    #[error("invalid JSON in {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafeEntry { path: String, reason: String },
    #[error("invalid layer: {0}")]
    InvalidLayer(String),
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no image named {0:?} in the store (see `nbrt images`)")]
    NotFound(String),
    #[error("blob {0} is not in the store")]
    BlobNotFound(String),
    #[error("unsupported {what}: {value}")]
    Unsupported { what: String, value: String },
    #[error("cannot read {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("Docker engine: {0}")]
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
