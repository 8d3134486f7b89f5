//! What the kernel image says (its env, labels and ipykernel version, from the store — with
//! the gateway-kernel checks — or from the Docker engine), and the name the provisioner
//! launches it by.

use std::collections::BTreeMap;

use nbrt_inspect::check::{self, Profile, Status};
use nbrt_oci::engine::engine_name;
use nbrt_oci::label;
use nbrt_oci::{Engine, ImageName, OciError, Progress, Store, StoredImage};

use crate::error::{KernelspecError, Result};
use crate::input::normalize_language;

/// What nbrt knows of the image: its config's env and labels, and the ipykernel version.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub ipykernel: Option<String>,
}

impl ImageFacts {
    /// The value of `key` in the image's environment.
    pub fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    /// The language a spec is for: `arg` (`--language`), else the image's
    /// [`label::KERNEL_LANGUAGE`] label or `KERNEL_LANGUAGE`, else python.
    pub fn language(&self, arg: Option<&str>) -> Result<String> {
        normalize_language(arg.unwrap_or_else(|| {
            label::KERNEL_LANGUAGE
                .get(&self.labels)
                .or(self.env("KERNEL_LANGUAGE"))
                .unwrap_or("python")
        }))
    }

    /// Variable names the image lets through to the kernel ([`label::KERNEL_ENV`]).
    pub fn declared_env(&self) -> Vec<String> {
        crate::input::declared_env(label::KERNEL_ENV.get(&self.labels))
    }
}

/// Checks of the Python launcher that do not apply to an R kernel image (its launcher is
/// launch_IRkernel.R; its `python` only runs the listener).
const PYTHON_ONLY: &[&str] = &["kernel.launcher", "kernel.ipykernel"];
const R_LAUNCHER: &str = "/usr/local/bin/kernel-launchers/R/scripts/launch_IRkernel.R";

/// Env, labels and ipykernel version of a store image (`reference` as the user named it),
/// checked against the static gateway-kernel checks: failing them is an error, or with
/// `force` a warning returned beside the facts.
pub fn store_facts(
    store: &Store,
    found: &StoredImage,
    reference: &str,
    language: Option<&str>,
    force: bool,
    progress: &Progress,
) -> Result<(ImageFacts, Option<String>)> {
    let (view, pkgs) = nbrt_inspect::read_image(store, &found.image, progress).map_err(|e| {
        KernelspecError::ReadImage {
            image: reference.to_string(),
            source: e,
        }
    })?;
    let cfg = found
        .image
        .config
        .value()
        .config
        .clone()
        .unwrap_or_default();
    let facts = ImageFacts {
        env: cfg.env.unwrap_or_default(),
        labels: cfg.labels.unwrap_or_default(),
        ipykernel: pkgs
            .iter()
            .find(|p| p.name == "ipykernel")
            .map(|p| p.version.clone()),
    };
    let r = facts.language(language)? == "R";
    let report = check::static_report(
        reference,
        &found.image,
        &view,
        &pkgs,
        Profile::GatewayKernel,
    );
    let mut failures: Vec<String> = report
        .results
        .iter()
        .filter(|c| c.status == Status::Fail && !(r && PYTHON_ONLY.contains(&c.id.as_str())))
        .map(|c| format!("  {}: {}", c.id, c.message))
        .collect();
    if r && view.lookup(R_LAUNCHER).is_none() {
        failures.push(format!(
            "  kernel.launcher: the R kernel launcher {R_LAUNCHER} is missing"
        ));
    }
    if failures.is_empty() {
        return Ok((facts, None));
    }
    let text = failures.join("\n");
    if force {
        let warning = format!("{reference} fails the gateway-kernel checks:\n{text}");
        return Ok((facts, Some(warning)));
    }
    Err(KernelspecError::NotAKernelImage {
        image: reference.to_string(),
        failures: text,
    })
}

/// Make sure the Docker engine has the store image under its engine name
/// ([`engine_name`]: exact, so the provisioner never pulls a `latest`); returns that name
/// and whether the image had to be loaded. With `no_load`, an engine without the image is
/// an error.
pub async fn docker_name(
    store: &Store,
    found: &StoredImage,
    no_load: bool,
    progress: &Progress,
) -> Result<(String, bool)> {
    let name = engine_name(&found.image, &found.names);
    let engine = Engine::connect().await.map_err(KernelspecError::NoEngine)?;
    let ensure_failed = |source| KernelspecError::Ensure {
        name: name.to_string(),
        source,
    };
    if no_load
        && engine
            .find(&found.image)
            .await
            .map_err(&ensure_failed)?
            .is_none()
    {
        return Err(KernelspecError::NotInEngine {
            id: found.image.id().to_string(),
        });
    }
    let ensured = engine
        .ensure_with_progress(store, &found.image, &name, progress)
        .await
        .map_err(&ensure_failed)?;
    Ok((ensured.name.to_string(), ensured.loaded))
}

/// Kubernetes nodes pull by name: the reference as given when it names a registry and a
/// tag, else the store's name that does.
pub fn kubernetes_name(reference: &str, found: &StoredImage) -> Result<String> {
    let remote = |n: &ImageName| {
        let first = n.repository.split('/').next().unwrap_or("");
        n.repository.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost")
    };
    if let Ok(n) = ImageName::parse(reference) {
        if remote(&n) && n.tag != "latest" {
            return Ok(n.to_string());
        }
    }
    if let Some(n) = found.names.iter().find(|n| remote(n) && n.tag != "latest") {
        return Ok(n.to_string());
    }
    Err(KernelspecError::NoRegistryName {
        reference: reference.to_string(),
    })
}

/// An image the engine has but the store does not: its env and labels from the engine.
pub async fn engine_facts(name: &str) -> Result<ImageFacts> {
    let not_found = |source| KernelspecError::NotFound {
        image: name.to_string(),
        source,
    };
    let engine = Engine::connect().await.map_err(not_found)?;
    let Some(image) = engine.image(name).await.map_err(not_found)? else {
        return Err(not_found(OciError::Engine(format!(
            "no such image: {name}"
        ))));
    };
    Ok(ImageFacts {
        env: image.env,
        labels: image.labels,
        ipykernel: None,
    })
}
