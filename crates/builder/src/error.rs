//! Errors of the builder.

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Image(#[from] nbrt_oci::OciError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Something wrong in a runtime file, located to the line.
    #[error("{file}:{line}: {message}")]
    RuntimeFile {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Stack(String),
    #[error("step {step}: {message}")]
    Step { step: String, message: String },
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error("conda: {0}")]
    Conda(String),
    /// `runtime.lock` missing, stale or not matching what is built.
    #[error("lock: {0}")]
    Lock(String),
    /// A lock pins a package its mirror no longer has: only a refresh of the lock helps.
    #[error("lock: {0}")]
    LostPin(String),
    #[error("rebase: {0}")]
    Rebase(String),
}

impl From<nbrt_conda::CondaError> for BuildError {
    fn from(e: nbrt_conda::CondaError) -> Self {
        BuildError::Conda(e.to_string())
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl BuildError {
    /// An error of the step `step` (`pip`, `files`, …).
    pub fn step(step: &str, message: impl Into<String>) -> Self {
        BuildError::Step {
            step: step.to_string(),
            message: message.into(),
        }
    }
}

pub trait IoContext<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| BuildError::Io {
            context: context().into(),
            source,
        })
    }
}
