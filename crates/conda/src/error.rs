//! The errors of nbrt-conda, and an error's sources on one line.

use std::fmt::Write as _;

/// What went wrong with conda packages, a channel or a prefix.
#[derive(Debug, thiserror::Error)]
pub enum CondaError {
    /// Bad input or a failed step, said in one message.
    #[error("{0}")]
    Message(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The specs cannot be solved together; `explanation` names the conflict.
    #[error("cannot install {requested}:\n{explanation}{hint}")]
    Unsolvable {
        requested: String,
        explanation: String,
        hint: String,
    },
    /// A channel or package URL could not be fetched (`status`: the HTTP status, when the
    /// server answered).
    #[error("cannot {action} {url}: {detail}")]
    Http {
        action: &'static str,
        url: String,
        status: Option<u16>,
        detail: String,
    },
    /// No channel has a package matching these specs (conda's `PackagesNotFoundError`).
    #[error("{}", packages_not_found(.packages, .channels))]
    PackagesNotFound {
        packages: Vec<String>,
        channels: Vec<String>,
    },
}

pub type Result<T, E = CondaError> = std::result::Result<T, E>;

/// conda's text for `PackagesNotFoundError` (what scripts match).
fn packages_not_found(packages: &[String], channels: &[String]) -> String {
    let mut out = String::from(
        "PackagesNotFoundError: The following packages are not available from current channels:\n\n",
    );
    for p in packages {
        let _ = writeln!(out, "  - {p}");
    }
    out.push_str("\nCurrent channels:\n\n");
    for c in channels {
        let _ = writeln!(out, "  - {c}");
    }
    out.push_str(
        "\nTo search for alternate channels that may provide the conda package you're\n\
         looking for, navigate to\n\n    https://anaconda.org\n\n\
         and use the search bar at the top of the page.\n",
    );
    out
}

/// A failed request as [`CondaError::Http`].
pub(crate) fn http(action: &'static str, url: &url::Url, e: &reqwest::Error) -> CondaError {
    CondaError::Http {
        action,
        url: url.to_string(),
        status: e.status().map(|s| s.as_u16()),
        detail: chain(e),
    }
}

pub(crate) fn conda(message: impl Into<String>) -> CondaError {
    CondaError::Message(message.into())
}

pub trait IoContext<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|source| CondaError::Io {
            context: context().into(),
            source,
        })
    }
}

/// An error and its sources, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn chain_joins_sources_and_skips_repeated_text() {
        let error = Layer(
            "cannot fetch x: connection refused",
            Some(Box::new(Layer(
                "connection refused",
                Some(Box::new(Layer("os error 111", None))),
            ))),
        );
        assert_eq!(
            chain(&error),
            "cannot fetch x: connection refused: os error 111"
        );
        assert_eq!(conda("boom").to_string(), "boom");
    }

    #[test]
    fn packages_not_found_reads_as_condas() {
        let e = CondaError::PackagesNotFound {
            packages: vec!["zeta".into()],
            channels: vec!["http://127.0.0.1:1/c/linux-64".into()],
        };
        let text = e.to_string();
        assert!(text.starts_with(
            "PackagesNotFoundError: The following packages are not available from current \
             channels:\n\n  - zeta\n\nCurrent channels:\n\n  - http://127.0.0.1:1/c/linux-64\n"
        ));
    }
}
