//! The error type of the kernelspec crate. A variant that wraps a cause says what was being
//! done and leaves the cause to [`std::error::Error::source`], so a caller that prints the
//! chain (`{:#}` with anyhow) prints each part once.

use std::path::PathBuf;

use nbrt_inspect::InspectError;
use nbrt_oci::OciError;

#[derive(Debug, thiserror::Error)]
pub enum KernelspecError {
    /// A value given for the spec is not usable; the message says which and what to give.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{image} is not a kernel image Gateway Provisioners can launch:\n{failures}\n\
         (`nbrt check {image} --profile gateway-kernel` explains; --force writes the spec anyway)"
    )]
    NotAKernelImage { image: String, failures: String },
    #[error("kernel spec {} exists; give --replace to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the layers of {image}")]
    ReadImage {
        image: String,
        #[source]
        source: InspectError,
    },
    #[error("the docker provisioner runs kernels on a Docker engine")]
    NoEngine(#[source] OciError),
    #[error(
        "the Docker engine does not have this image (ID {id}); load it with `nbrt load` \
         or leave out --no-load"
    )]
    NotInEngine { id: String },
    #[error("putting the image into the Docker engine as {name}")]
    Ensure {
        name: String,
        #[source]
        source: OciError,
    },
    #[error(
        "{reference} has no registry name the cluster can pull: push it \
         (`nbrt push {reference} REGISTRY/NAME:TAG`) and give that name, or write a name \
         with --image-name"
    )]
    NoRegistryName { reference: String },
    #[error("{image} is neither in the image store nor in the Docker engine")]
    NotFound {
        image: String,
        #[source]
        source: OciError,
    },
    #[error(transparent)]
    Oci(#[from] OciError),
}

pub type Result<T, E = KernelspecError> = std::result::Result<T, E>;

pub(crate) fn invalid(message: impl Into<String>) -> KernelspecError {
    KernelspecError::Invalid(message.into())
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> KernelspecError {
    let context = context.into();
    move |source| KernelspecError::Io { context, source }
}
