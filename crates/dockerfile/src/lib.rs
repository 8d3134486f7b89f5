//! Dockerfiles built into nbrt's store without a Docker daemon, with BuildKit's semantics
//! (see `docs/dockerfile.md`).
//!
//! - [`parse`]: the Dockerfile parsed by the `parse-dockerfile` crate into owned
//!   instructions with their lines;
//! - [`words`]: Docker's word splitting, quote removal and `${VAR:-…}` expansion;
//! - [`ignore`]: `.dockerignore` matching (moby's `patternmatcher`);
//! - [`context`]: the build context: files selected by sources and `.dockerignore`, and
//!   their cache digest;
//! - [`convert`]: a Dockerfile written out as a runtime file (`nbrt convert`);
//! - [`build`]: stages, ARG scoping, instruction semantics and the steps on nbrt's builder
//!   machinery (the runc sandbox, the layer cache, the store).

pub mod build;
pub mod context;
pub mod convert;
pub mod error;
pub mod ignore;
pub mod parse;
pub mod words;

pub use build::{build, parse_secret, BuildOptions, BuildReport, Secret};
pub use error::{DockerfileError, Result};
