//! Kernel specs for Gateway Provisioners: the directory its installers (`jupyter docker-spec
//! install`, `jupyter k8s-spec install`) write, for a kernel image nbrt knows — `kernel.json`
//! with `metadata.kernel_provisioner` and the launcher's argv, and `scripts/launch_docker.py`
//! or `scripts/launch_kubernetes.py` beside it.
//!
//! The launch scripts are nbrt's own (same arguments as the installers' ones): the kernel's
//! container gets the launcher protocol's variables and the names the spec or the image
//! declares, never the server's whole environment; the Docker one attaches the container to
//! the network the provisioner looks on, runs it as `KERNEL_UID:KERNEL_GID`, and does not
//! pull unless the spec says so.
//!
//! - [`install`]: the whole call — a [`Request`] in, the spec written, an [`Outcome`] out.
//! - [`image`]: what the image says (store, with the gateway-kernel checks, or engine) and
//!   the name the provisioner launches it by (loaded into the engine for docker).
//! - [`input`]: kernel names, port ranges, languages and variables, checked.
//! - [`spec`]: [`SpecInput`] → `kernel.json` and the spec directory, and where Jupyter
//!   looks for it ([`Location`]); the launch scripts are in `src/scripts/`.

pub mod error;
pub mod image;
pub mod input;
pub mod install;
pub mod spec;

pub use error::{KernelspecError, Result};
pub use install::{install, Outcome, Request};
pub use spec::{kernel_json, write_spec, Location, Provisioner, Pull, SpecInput};
