//! The error type of the inspect crate.

use nbrt_oci::OciError;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} in {path:?}: {reason}")]
    BadFile {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("Docker engine: {0}")]
    Engine(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = InspectError> = std::result::Result<T, E>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InspectError {
    let context = context.into();
    move |source| InspectError::Io { context, source }
}
