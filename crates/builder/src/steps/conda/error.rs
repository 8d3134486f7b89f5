//! The conda step's errors: one [`BuildError::Conda`] constructor and an error's sources on one
//! line, shared by the four parts of the step.

use std::fmt::Write as _;

use crate::error::BuildError;

pub(super) fn conda(message: impl Into<String>) -> BuildError {
    BuildError::Conda(message.into())
}

/// An error and its sources, on one line.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
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
        assert_eq!(
            conda("boom").to_string(),
            "conda: boom",
            "the conda step's errors are BuildError::Conda"
        );
    }
}
