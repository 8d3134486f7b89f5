//! Errors of the Dockerfile front end: each names the Dockerfile line and instruction when
//! one is at fault.

use nbrt_build::BuildError;
use nbrt_oci::OciError;

#[derive(Debug, thiserror::Error)]
pub enum DockerfileError {
    /// The parser refused the file.
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
    /// An instruction that cannot be carried out as written.
    #[error("{file}:{line}: {instruction}: {message}")]
    Instruction {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    /// Something wrong with what the build was asked (target, build arguments, context).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Image(#[from] OciError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = DockerfileError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| DockerfileError::Io {
            context: context().into(),
            source,
        })
    }
}
