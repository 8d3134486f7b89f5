//! The image config of a built runtime: the parent's config with the runtime's `[env]`,
//! `[image]` and description applied, the new layers' diff IDs and history appended, and the
//! creation time the build's ([`crate::epoch`]), never the clock.

use std::collections::BTreeMap;

use nbrt_oci::spec::{rfc3339, Healthcheck, History, ImageConfig, RootFs};
use nbrt_oci::{Digest, Platform};

use nbrt_oci::facts::dist_info;
use nbrt_oci::fsview::FileView;

use crate::error::{BuildError, Result};
use crate::runtime_file::{parse_duration_ns, RuntimeFile};
use crate::steps::Step;

use nbrt_oci::label;

/// A new layer and what made it, for the config's history.
pub struct AddedLayer {
    pub diff_id: Digest,
    pub created_by: String,
}

/// Merge `KEY=value` lists: later keys replace earlier ones in place, new keys are appended.
fn merge_env(parent: &[String], add: &BTreeMap<String, String>) -> Vec<String> {
    let mut out: Vec<String> = parent.to_vec();
    for (k, v) in add {
        let entry = format!("{k}={v}");
        match out
            .iter_mut()
            .find(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
        {
            Some(slot) => *slot = entry,
            None => out.push(entry),
        }
    }
    out
}

/// The variable naming the runtime an image was built as (`NBRT_RUNTIME=scipy`): nbrt-init
/// and the Python environment key the user's own packages by it (see
/// `nbrt_init::userpkgs`), so another runtime never imports them.
pub const RUNTIME_VAR: &str = "NBRT_RUNTIME";

/// The runtime's `[env]` with [`RUNTIME_VAR`] set to its name unless `[env]` sets it.
fn runtime_env(rt: &RuntimeFile) -> BTreeMap<String, String> {
    let mut env = rt.env.clone();
    env.entry(RUNTIME_VAR.to_string())
        .or_insert_with(|| rt.name.clone());
    env
}

/// The environment `run` and `apt` steps see: the parent image's, with the runtime's `[env]`
/// (as a Dockerfile's `RUN` sees every `ENV` above it).
pub fn step_env(parent: Option<&ImageConfig>, rt: &RuntimeFile) -> Vec<String> {
    let inherited = parent
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.env.as_deref())
        .unwrap_or_default();
    merge_env(inherited, &runtime_env(rt))
}

/// The version labels of the runtime's image (label → distribution): the parent's (recorded
/// in its [`label::VERSION_LABELS`]) and the runtime's own `[image] version-labels`, so a
/// runtime that changes a parent's package also changes the label that names its version.
pub fn version_label_names(
    parent: Option<&ImageConfig>,
    rt: &RuntimeFile,
) -> BTreeMap<String, String> {
    let mut names: BTreeMap<String, String> = parent
        .and_then(|p| p.config.as_ref())
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| label::VERSION_LABELS.get(l))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    names.extend(rt.image.version_labels.clone());
    names
}

/// The values of the version labels `wanted` (label → distribution): the version of each
/// distribution in the Python environment at `prefix` of the built image, and the
/// [`label::VERSION_LABELS`] record of them.
pub fn version_labels(
    view: &impl FileView,
    prefix: &str,
    wanted: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    if wanted.is_empty() {
        return Ok(BTreeMap::new());
    }
    let missing = |name: &str| {
        BuildError::step(
            "image",
            format!("version-labels: {name} is not installed in {prefix} of the built image"),
        )
    };
    let mut installed = BTreeMap::new();
    for python in dist_info::python_versions(view, prefix)
        .map_err(|e| BuildError::step("image", e.to_string()))?
    {
        let site = dist_info::site_packages(prefix, python);
        for d in dist_info::distributions(view, &site).items {
            if let (Some(name), Some(version)) = (d.normalized_name(), d.version.clone()) {
                installed.insert(name, version);
            }
        }
    }
    let out = wanted
        .iter()
        .map(|(label, dist)| {
            installed
                .get(&dist_info::normalize(dist))
                .map(|v| (label.clone(), v.clone()))
                .ok_or_else(|| missing(dist))
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    with_record(out, wanted)
}

/// The version labels' values and the record of which label names which distribution
/// ([`label::VERSION_LABELS`]), which runtimes built on the image read.
fn with_record(
    mut values: BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let record =
        serde_json::to_string(wanted).map_err(|e| BuildError::step("image", e.to_string()))?;
    values.insert(label::VERSION_LABELS.name.to_string(), record);
    Ok(values)
}

/// The version labels without reading the image's files, when the runtime's own steps can
/// only have changed its Python distributions through pip (no run, conda, python or
/// bootstrap step, no file copied under the environment): a distribution the pip step
/// installed has the version its lock names, any other the version the parent's label
/// says. `None` when that does not decide every label (then [`version_labels`] reads the
/// image). `pip` maps normalized names to the versions the pip step installed.
pub fn version_labels_without_files(
    parent: Option<&ImageConfig>,
    steps: &[Step],
    prefix: &str,
    pip: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Option<BTreeMap<String, String>> {
    let inside = |dest: &str| {
        let prefix = prefix.trim_end_matches('/');
        dest == prefix || dest.starts_with(&format!("{prefix}/"))
    };
    let only_pip = steps.iter().all(|s| match s {
        // Debian's Python packages go under /usr.
        Step::Apt(_) => !prefix.starts_with("/usr"),
        Step::User(_) | Step::Pip(_) => true,
        Step::Files(f) => f.files.iter().all(|spec| !inside(&spec.destination)),
        Step::Bootstrap(_) | Step::Python(_) | Step::Conda(_) | Step::Run(_) => false,
    });
    if wanted.is_empty() || !only_pip {
        return None;
    }
    let parent_labels = parent
        .and_then(|c| c.config.as_ref())
        .and_then(|c| c.labels.as_ref());
    // The parent's label is only the answer for the distribution it was read from.
    let parent_names: BTreeMap<String, String> = parent_labels
        .and_then(|l| label::VERSION_LABELS.get(l))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for (label, dist) in wanted {
        let version = match pip.get(&dist_info::normalize(dist)) {
            Some(v) => v.clone(),
            None if parent_names.get(label) == Some(dist) => parent_labels?.get(label)?.clone(),
            None => return None,
        };
        out.insert(label.clone(), version);
    }
    with_record(out, wanted).ok()
}

/// The config of the runtime's image; `versions` are the values of its version labels,
/// `created` its time (see [`crate::epoch`]; `None` keeps the parent's).
pub fn runtime_config(
    parent: Option<&ImageConfig>,
    rt: &RuntimeFile,
    added: &[AddedLayer],
    versions: &BTreeMap<String, String>,
    created: Option<i64>,
) -> ImageConfig {
    let mut config = parent.cloned().unwrap_or_else(|| {
        let host = Platform::host();
        ImageConfig {
            architecture: host.architecture,
            os: host.os,
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: Vec::new(),
            },
            ..Default::default()
        }
    });
    let created = match created {
        Some(t) => rfc3339(t),
        None => config.created.clone().unwrap_or_else(|| rfc3339(0)),
    };
    config.created = Some(created.clone());
    let mut cc = config.config.take().unwrap_or_default();
    let env = merge_env(cc.env.as_deref().unwrap_or_default(), &runtime_env(rt));
    cc.env = (!env.is_empty()).then_some(env);
    let img = &rt.image;
    if let Some(e) = &img.entrypoint {
        cc.entrypoint = Some(e.clone());
        // As in a Dockerfile, a new entrypoint drops the parent's command unless one is given.
        if img.cmd.is_none() {
            cc.cmd = None;
        }
    }
    if let Some(c) = &img.cmd {
        cc.cmd = Some(c.clone());
    }
    if let Some(w) = &img.workdir {
        cc.working_dir = Some(w.clone());
    }
    if let Some(u) = &img.user {
        cc.user = Some(u.clone());
    }
    if let Some(s) = &img.stop_signal {
        cc.stop_signal = Some(s.clone());
    }
    if !img.ports.is_empty() {
        let ports = cc.exposed_ports.get_or_insert_with(BTreeMap::new);
        for p in &img.ports {
            ports.insert(format!("{p}/tcp"), serde_json::json!({}));
        }
    }
    let mut labels = cc.labels.take().unwrap_or_default();
    labels.insert(label::TITLE.to_string(), rt.name.clone());
    if let Some(d) = &rt.description {
        labels.insert(label::DESCRIPTION.to_string(), d.clone());
    }
    // The parent's defaults fill what this runtime leaves unset (a label the parent wrote
    // in another shape is not read).
    let parent_defaults = label::RuntimeDefaults::from_labels(&labels)
        .ok()
        .flatten()
        .unwrap_or_default();
    labels.insert(
        label::RUNTIME_DEFAULTS.name.to_string(),
        rt.runtime.over(&parent_defaults).to_label(),
    );
    labels.extend(img.labels.clone());
    labels.extend(versions.clone());
    cc.labels = Some(labels);
    if let Some(hc) = &img.healthcheck {
        cc.healthcheck = Some(Healthcheck {
            test: Some(hc.test.clone()),
            interval: hc.interval.as_deref().and_then(parse_duration_ns),
            timeout: hc.timeout.as_deref().and_then(parse_duration_ns),
            start_period: hc.start_period.as_deref().and_then(parse_duration_ns),
            retries: hc.retries.map(i64::from),
            extra: BTreeMap::new(),
        });
    }
    config.config = Some(cc);
    for layer in added {
        config.rootfs.diff_ids.push(layer.diff_id.clone());
        config.history.push(History {
            created: Some(created.clone()),
            created_by: Some(layer.created_by.clone()),
            comment: Some(format!("nbrt build {}", rt.name)),
            ..Default::default()
        });
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbrt_oci::spec::ContainerConfig;
    use std::path::Path;

    fn rt(text: &str) -> RuntimeFile {
        let dir = std::env::temp_dir();
        RuntimeFile::parse(text, Path::new("r.toml"), &dir, &dir).unwrap()
    }

    #[test]
    fn version_labels_come_from_the_pip_lock_and_the_parent_when_nothing_else_could_change_them() {
        let wanted: BTreeMap<String, String> = [
            ("io.x.hub".to_string(), "jupyterhub".to_string()),
            ("io.x.lab".to_string(), "jupyterlab".to_string()),
        ]
        .into();
        let parent = ImageConfig {
            config: Some(ContainerConfig {
                labels: Some(
                    [
                        ("io.x.hub".to_string(), "5.0.0".to_string()),
                        ("io.x.lab".to_string(), "4.0.0".to_string()),
                        (
                            label::VERSION_LABELS.name.to_string(),
                            serde_json::to_string(&wanted).unwrap(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pip: BTreeMap<String, String> =
            [("jupyterlab".to_string(), "4.1.0".to_string())].into();
        let plan = |text: &str| crate::steps::plan(&rt(text));
        let pip_only = plan("name = \"a\"\nfrom = \"p\"\n[pip]\npackages = [\"jupyterlab\"]\n");
        let got =
            version_labels_without_files(Some(&parent), &pip_only, "/opt/conda", &pip, &wanted)
                .unwrap();
        assert_eq!(got["io.x.hub"], "5.0.0", "the parent's, untouched");
        assert_eq!(got["io.x.lab"], "4.1.0", "the pip step's");
        // A command could install anything: the image is read instead.
        let with_run = plan("name = \"a\"\nfrom = \"p\"\n[[run]]\ncommand = \"true\"\n");
        assert!(version_labels_without_files(
            Some(&parent),
            &with_run,
            "/opt/conda",
            &pip,
            &wanted
        )
        .is_none());
        // A label the parent does not carry for that distribution.
        let mut other = wanted.clone();
        other.insert("io.x.core".into(), "jupyter-core".into());
        assert!(
            version_labels_without_files(Some(&parent), &pip_only, "/opt/conda", &pip, &other)
                .is_none()
        );
    }

    #[test]
    fn applies_env_image_and_layers() {
        let parent = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some("2024-01-01T00:00:00Z".into()),
            config: Some(ContainerConfig {
                env: Some(vec!["PATH=/usr/bin".into(), "A=old".into()]),
                entrypoint: Some(vec!["tini".into()]),
                cmd: Some(vec!["bash".into()]),
                labels: Some(BTreeMap::from([(
                    label::RUNTIME_DEFAULTS.name.to_string(),
                    r#"{"max-cpu":2.0,"max-memory":"1g","server":"web","ready-path":"/healthz"}"#
                        .to_string(),
                )])),
                ..Default::default()
            }),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![Digest::of_bytes(b"base")],
            },
            ..Default::default()
        };
        let r = rt(r#"
name = "jupyter"
description = "JupyterLab"
from = "base"
[env]
A = "new"
PATH = "/opt/conda/bin:/usr/bin"
B = "b"
[image]
entrypoint = ["nbrt-init"]
ports = [8888]
user = "1000"
workdir = "/home/jovyan"
healthcheck = { test = ["CMD", "nbrt-init", "healthcheck"], interval = "30s", retries = 3 }
[runtime]
max-memory = "4g"
"#);
        let added = [AddedLayer {
            diff_id: Digest::of_bytes(b"pip"),
            created_by: "pip install jupyterlab".into(),
        }];
        let c = runtime_config(Some(&parent), &r, &added, &BTreeMap::new(), None);
        let cc = c.config.as_ref().unwrap();
        assert_eq!(
            cc.env.as_ref().unwrap(),
            &[
                "PATH=/opt/conda/bin:/usr/bin",
                "A=new",
                "B=b",
                "NBRT_RUNTIME=jupyter"
            ]
        );
        assert_eq!(cc.entrypoint.as_ref().unwrap(), &["nbrt-init"]);
        assert_eq!(cc.cmd, None, "a new entrypoint drops the parent's cmd");
        assert!(cc.exposed_ports.as_ref().unwrap().contains_key("8888/tcp"));
        assert_eq!(
            cc.healthcheck.as_ref().unwrap().interval,
            Some(30_000_000_000)
        );
        let labels = cc.labels.as_ref().unwrap();
        assert_eq!(labels[label::DESCRIPTION], "JupyterLab");
        // Its own memory; the parent's CPUs and server where it sets none.
        let defaults = label::RuntimeDefaults::from_labels(labels)
            .unwrap()
            .unwrap();
        assert_eq!(defaults.max_memory.as_deref(), Some("4g"));
        assert_eq!(defaults.max_cpu, Some(2.0));
        assert_eq!(defaults.http().ready_upstream_path("/p"), "/p/healthz");
        assert!(!defaults.http().is_jupyter());
        assert_eq!(c.rootfs.diff_ids.len(), 2);
        assert_eq!(
            c.history.last().unwrap().created_by.as_deref(),
            Some("pip install jupyterlab")
        );
        assert_eq!(
            c.created.as_deref(),
            Some("2024-01-01T00:00:00Z"),
            "the parent's time, not the clock"
        );
    }
}
