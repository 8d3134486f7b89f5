//! Typed errors of nbrt-init.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}:{line}: {reason}")]
    BadDbLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },

    #[error("invalid {name}={value:?}: {reason}")]
    BadEnv {
        name: &'static str,
        value: String,
        reason: String,
    },

    #[error(
        "Neither the jovyan user nor '{0}' exists. This could be the result of stopping and \
         starting, the container with a different NB_USER environment variable."
    )]
    NoSuchUser(String),

    #[error("cannot set up the home directory {home}: {reason}")]
    Home { home: PathBuf, reason: String },

    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },

    #[error("certificate generation failed: {0}")]
    Cert(String),

    #[error("cannot execute {program:?}: {source}")]
    Exec {
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Usage(String),

    #[error("hook {path} exited the start with status {status}")]
    HookExited { path: PathBuf, status: i32 },

    #[error("cont-init script {path} failed with status {status}: stopping the container")]
    ContInit { path: PathBuf, status: i32 },
}

impl Error {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }

    pub fn sys(what: impl Into<String>, source: nix::Error) -> Error {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    /// The exit code nbrt-init uses when it stops because of this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::HookExited { status, .. } | Error::ContInit { status, .. }
                if (1..=255).contains(status) =>
            {
                *status
            }
            Error::Exec { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 127,
            Error::Exec { .. } => 126,
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
