//! `nbrt kernelspec`: arguments for [`nbrt_kernelspec::install`], and its outcome printed.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use nbrt_kernelspec::{Location, Request};

use crate::images::{progress, Context};
use crate::output::json as print_json;
use crate::output::outln;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Provisioner {
    Docker,
    Kubernetes,
}

impl From<Provisioner> for nbrt_kernelspec::Provisioner {
    fn from(p: Provisioner) -> Self {
        match p {
            Provisioner::Docker => Self::Docker,
            Provisioner::Kubernetes => Self::Kubernetes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pull {
    /// Never pull: an image missing from the engine fails the launch at once
    Never,
    /// Pull only when the engine (node) lacks the image
    Missing,
    /// Pull at every launch
    Always,
}

impl From<Pull> for nbrt_kernelspec::Pull {
    fn from(p: Pull) -> Self {
        match p {
            Pull::Never => Self::Never,
            Pull::Missing => Self::Missing,
            Pull::Always => Self::Always,
        }
    }
}

#[derive(Args)]
pub struct KernelspecArgs {
    /// The kernel image: a name or ID in the store, else a name the Docker engine knows
    image: String,
    /// Which Gateway Provisioners provisioner launches the kernel
    #[arg(long, value_enum)]
    provisioner: Provisioner,
    /// The kernel spec's name (its directory; spaces become `_`, lower case)
    #[arg(long)]
    kernel_name: String,
    /// The name notebooks show (default: the image name and the provisioner)
    #[arg(long)]
    display_name: Option<String>,
    /// Seconds the server waits for the kernel to report its ports
    #[arg(long, default_value_t = 30, value_name = "S")]
    launch_timeout: u64,
    /// Ports the kernel may listen on, `A..B` (`0..0`: any)
    #[arg(long, default_value = "0..0", value_name = "A..B")]
    port_range: String,
    /// Install under DIR/share/jupyter/kernels (e.g. the server's venv)
    #[arg(long, value_name = "DIR", conflicts_with = "user")]
    prefix: Option<PathBuf>,
    /// Install in the user's Jupyter data directory (default: /usr/local/share/jupyter/kernels)
    #[arg(long)]
    user: bool,
    /// The kernel language (default: the image's io.nbrt.kernel.language label or
    /// KERNEL_LANGUAGE, else python)
    #[arg(long)]
    language: Option<String>,
    /// The ipykernel Kernel class (Python kernels)
    #[arg(long, value_name = "CLASS")]
    kernel_class_name: Option<String>,
    /// Users allowed to start this kernel (repeatable)
    #[arg(long = "authorized-users", value_name = "USER")]
    authorized_users: Vec<String>,
    /// Users refused (repeatable; the provisioner's default refuses root)
    #[arg(long = "unauthorized-users", value_name = "USER")]
    unauthorized_users: Vec<String>,
    /// A variable set for the kernel (the spec's `env`; repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A variable passed from the server's environment to the kernel (repeatable)
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Write this image name as it is, without looking it up
    #[arg(long, value_name = "NAME")]
    image_name: Option<String>,
    /// When the engine may pull the image (default: never for docker, missing for kubernetes)
    #[arg(long, value_enum)]
    pull: Option<Pull>,
    /// Do not load a store image into the Docker engine; fail if the engine lacks it
    #[arg(long)]
    no_load: bool,
    /// The Python that runs the launch script on the server host (must import docker, or
    /// kubernetes)
    #[arg(long, default_value = "python", value_name = "PATH")]
    python: String,
    /// Overwrite an existing kernel spec of that name
    #[arg(long)]
    replace: bool,
    /// Write the spec even if the image fails the gateway-kernel checks
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

pub async fn kernelspec(ctx: &Context, a: KernelspecArgs) -> Result<()> {
    let store = ctx.store()?;
    let location = match (a.prefix, a.user) {
        (Some(p), _) => Location::Prefix(p),
        (None, true) => Location::User,
        (None, false) => Location::System,
    };
    let request = Request {
        image: a.image,
        provisioner: a.provisioner.into(),
        kernel_name: a.kernel_name,
        display_name: a.display_name,
        launch_timeout: a.launch_timeout,
        port_range: a.port_range,
        location,
        language: a.language,
        kernel_class_name: a.kernel_class_name,
        authorized_users: a.authorized_users,
        unauthorized_users: a.unauthorized_users,
        env: a.env,
        pass_env: a.pass_env,
        image_name: a.image_name,
        pull: a.pull.map(Into::into),
        no_load: a.no_load,
        python: a.python,
        replace: a.replace,
        force: a.force,
    };
    let outcome = nbrt_kernelspec::install(&store, &request, &progress(a.json)).await?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        return print_json(&outcome);
    }
    outln!(
        "Wrote kernel spec {} ({} for image {})",
        outcome.directory.display(),
        outcome.provisioner,
        outcome.image_name
    );
    Ok(())
}
