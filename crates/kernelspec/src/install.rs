//! `nbrt kernelspec` as a call: a [`Request`] (what the user asked for) → the image resolved
//! (store or engine, checked, loaded or named) → a [`SpecInput`] → the spec directory
//! written ([`Outcome`]).

use std::path::PathBuf;

use nbrt_oci::{OciError, Progress, Store};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{invalid, Result};
use crate::image::{docker_name, engine_facts, kubernetes_name, store_facts, ImageFacts};
use crate::input::{
    check_port_range, curve_capable, normalize_kernel_name, parse_env, valid_env_name,
};
use crate::spec::{write_spec, Location, Provisioner, Pull, SpecInput};

/// What to write a kernel spec for, as the user gave it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The kernel image: a name or ID in the store, else a name the Docker engine knows.
    pub image: String,
    pub provisioner: Provisioner,
    /// The spec's name (its directory; spaces become `_`, lower case).
    pub kernel_name: String,
    /// The name notebooks show (default: the image name and the provisioner).
    pub display_name: Option<String>,
    /// Seconds the server waits for the kernel to report its ports.
    pub launch_timeout: u64,
    /// Ports the kernel may listen on, `A..B` (`0..0`: any).
    pub port_range: String,
    pub location: Location,
    /// The kernel language (default: the image's label or KERNEL_LANGUAGE, else python).
    pub language: Option<String>,
    /// The ipykernel Kernel class (Python kernels).
    pub kernel_class_name: Option<String>,
    pub authorized_users: Vec<String>,
    pub unauthorized_users: Vec<String>,
    /// `KEY=VALUE` variables set for the kernel (the spec's `env`).
    pub env: Vec<String>,
    /// Variables passed from the server's environment to the kernel.
    pub pass_env: Vec<String>,
    /// Write this image name as it is, without looking it up.
    pub image_name: Option<String>,
    /// When the engine may pull the image (default: [`Pull::default_for`]).
    pub pull: Option<Pull>,
    /// Do not load a store image into the Docker engine; fail if the engine lacks it.
    pub no_load: bool,
    /// The Python that runs the launch script on the server host.
    pub python: String,
    /// Overwrite an existing kernel spec of that name.
    pub replace: bool,
    /// Write the spec even if the image fails the gateway-kernel checks.
    pub force: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub directory: PathBuf,
    pub image_name: String,
    pub provisioner: &'static str,
    /// Whether the image was put into the Docker engine by this call.
    pub loaded: bool,
    pub kernel_json: Value,
    /// Problems `force` let through (the image fails the gateway-kernel checks).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Write the kernel spec `r` asks for; `store` is where store images are looked for and
/// loaded from, `progress` shows reading and loading the image.
pub async fn install(store: &Store, r: &Request, progress: &Progress) -> Result<Outcome> {
    let kernel_name = normalize_kernel_name(&r.kernel_name)?;
    check_port_range(&r.port_range)?;
    let env = parse_env(&r.env)?;
    for n in &r.pass_env {
        if !valid_env_name(n) {
            return Err(invalid(format!("--pass-env {n:?} is not a variable name")));
        }
    }
    let pull = r.pull.unwrap_or(Pull::default_for(r.provisioner));

    let mut loaded = false;
    let mut warnings = Vec::new();
    let found = match store.resolve(&r.image) {
        Ok(found) => Some(found),
        Err(OciError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (image_name, facts, source) = match found {
        // A store image says what the kernel is (language, ipykernel) and is checked; the
        // name is written as given, or the one the provisioner launches it by.
        Some(found) => {
            let (facts, warning) = store_facts(
                store,
                &found,
                &r.image,
                r.language.as_deref(),
                r.force,
                progress,
            )?;
            warnings.extend(warning);
            let name = match (&r.image_name, r.provisioner) {
                (Some(name), _) => name.clone(),
                (None, Provisioner::Docker) => {
                    let (n, l) = docker_name(store, &found, r.no_load, progress).await?;
                    loaded = l;
                    n
                }
                (None, Provisioner::Kubernetes) => kubernetes_name(&r.image, &found)?,
            };
            let source = json!({
                "image": r.image,
                "digest": found.image.digest().to_string(),
                "id": found.image.id().to_string(),
            });
            (name, facts, source)
        }
        None => match &r.image_name {
            Some(name) => (
                name.clone(),
                ImageFacts::default(),
                json!({"image": r.image, "image_name": "given"}),
            ),
            None => (
                r.image.clone(),
                engine_facts(&r.image).await?,
                json!({"image": r.image, "engine": true}),
            ),
        },
    };

    let language = facts.language(r.language.as_deref())?;
    if language != "python" && r.kernel_class_name.is_some() {
        return Err(invalid("--kernel-class-name is for Python kernels"));
    }
    let mut pass_env = facts.declared_env();
    pass_env.extend(r.pass_env.iter().cloned());
    let display_name = r
        .display_name
        .clone()
        .unwrap_or_else(|| format!("{image_name} ({})", r.provisioner.engine_title()));
    let input = SpecInput {
        provisioner: r.provisioner,
        kernel_name,
        display_name,
        language,
        image_name: image_name.clone(),
        launch_timeout: r.launch_timeout,
        port_range: r.port_range.clone(),
        kernel_class_name: r.kernel_class_name.clone(),
        authorized_users: r.authorized_users.clone(),
        unauthorized_users: r.unauthorized_users.clone(),
        env,
        pass_env,
        pull,
        python: r.python.clone(),
        curve: curve_capable(facts.ipykernel.as_deref()),
        source,
    };
    let kernels = r.location.kernels_dir()?;
    let (directory, kernel_json) = write_spec(&input, &kernels, r.replace)?;
    Ok(Outcome {
        directory,
        image_name,
        provisioner: r.provisioner.entry_point(),
        loaded,
        kernel_json,
        warnings,
    })
}
