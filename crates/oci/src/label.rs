//! Labels nbrt writes on images and containers, and the one reader of each.
//!
//! nbrt's own labels are under `io.nbrt.`. Images built and containers started by earlier
//! versions carry `org.nbrt.` labels; [`Key::get`] still reads those, nothing writes them.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The OCI annotation keys nbrt sets as labels.
pub const TITLE: &str = "org.opencontainers.image.title";
pub const DESCRIPTION: &str = "org.opencontainers.image.description";
pub const VERSION: &str = "org.opencontainers.image.version";

/// A label of nbrt's: the name it is written under and the name earlier versions used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub old: Option<&'static str>,
}

impl Key {
    /// The label's value in `labels`, under its name or, failing that, its old name.
    pub fn get<'a>(&self, labels: &'a impl Labels) -> Option<&'a str> {
        labels
            .label(self.name)
            .or_else(|| self.old.and_then(|old| labels.label(old)))
    }
}

/// A runtime's `[runtime]` defaults, as JSON (see [`RuntimeDefaults`]), on its image.
pub const RUNTIME_DEFAULTS: Key = Key {
    name: "io.nbrt.runtime",
    old: None,
};
/// A kernel image's language (`python`, `R`, …), on its image.
pub const KERNEL_LANGUAGE: Key = Key {
    name: "io.nbrt.kernel.language",
    old: Some("org.nbrt.kernel.language"),
};
/// Environment variables a kernel image lets through to the kernel (comma or space
/// separated), on its image.
pub const KERNEL_ENV: Key = Key {
    name: "io.nbrt.kernel.env",
    old: Some("org.nbrt.kernel.env"),
};
/// On containers of `nbrt serve`: the site that owns the container.
pub const SITE: Key = Key {
    name: "io.nbrt.site",
    old: Some("org.nbrt.site"),
};
/// On session containers: the session's ID, its user and its runtime.
pub const SESSION: Key = Key {
    name: "io.nbrt.session",
    old: Some("org.nbrt.session"),
};
pub const SESSION_USER: Key = Key {
    name: "io.nbrt.session.user",
    old: Some("org.nbrt.user"),
};
pub const SESSION_RUNTIME: Key = Key {
    name: "io.nbrt.session.runtime",
    old: Some("org.nbrt.runtime"),
};
/// On containers `nbrt check --live` starts (so leftovers can be found and removed).
pub const CHECK: Key = Key {
    name: "io.nbrt.check",
    old: Some("org.nbrt.check"),
};

/// Versions users must match, on images that carry them: the jupyterhub-singleuser a
/// JupyterHub site talks to, and JupyterLab (whose extensions are built for one major).
pub const JUPYTERHUB_VERSION: Key = Key {
    name: "io.nbrt.jupyterhub.version",
    old: None,
};
pub const JUPYTERLAB_VERSION: Key = Key {
    name: "io.nbrt.jupyterlab.version",
    old: None,
};
/// Which labels of an image are versions of Python distributions in it (JSON: label →
/// distribution name), so a runtime built on it writes them again from what it carries.
pub const VERSION_LABELS: Key = Key {
    name: "io.nbrt.version-labels",
    old: None,
};

/// A label map, as image configs (sorted) and the Docker API (hashed) hold them.
pub trait Labels {
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// Defaults used when a runtime is registered in a site (ArcGIS's field set): the
/// `[runtime]` table of a runtime file, carried on the image in [`RUNTIME_DEFAULTS`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeDefaults {
    #[serde(default)]
    pub max_cpu: Option<f64>,
    #[serde(default)]
    pub max_memory: Option<String>,
    #[serde(default)]
    pub max_swap: Option<String>,
    #[serde(default)]
    pub shared_memory: Option<String>,
    #[serde(default)]
    pub gpu_runtime: Option<String>,
    /// GPUs a session of the runtime asks for (with a `gpu_runtime`). Left out of the label
    /// when unset, so images built before the field existed keep their label, and their ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    #[serde(default)]
    pub advanced_privileges: bool,
}

impl RuntimeDefaults {
    /// The label's value.
    pub fn to_label(&self) -> String {
        // A struct of options, strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The defaults an image's labels carry: `None` without the label, an error naming the
    /// problem when the label is not this shape.
    pub fn from_labels(labels: &impl Labels) -> Result<Option<Self>, String> {
        match RUNTIME_DEFAULTS.get(labels) {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| format!("the image's {} label: {e}", RUNTIME_DEFAULTS.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_new_then_old_names() {
        let mut labels = HashMap::new();
        labels.insert("org.nbrt.site".to_string(), "old".to_string());
        assert_eq!(SITE.get(&labels), Some("old"));
        labels.insert("io.nbrt.site".to_string(), "new".to_string());
        assert_eq!(SITE.get(&labels), Some("new"));
        assert_eq!(SESSION.get(&labels), None);
    }

    #[test]
    fn runtime_defaults_round_trip_through_the_label() {
        let d = RuntimeDefaults {
            max_cpu: Some(2.0),
            max_memory: Some("4g".into()),
            advanced_privileges: true,
            ..Default::default()
        };
        let mut labels = BTreeMap::new();
        labels.insert(RUNTIME_DEFAULTS.name.to_string(), d.to_label());
        assert!(labels[RUNTIME_DEFAULTS.name].contains("\"max-memory\":\"4g\""));
        assert_eq!(RuntimeDefaults::from_labels(&labels), Ok(Some(d)));
        labels.insert(
            RUNTIME_DEFAULTS.name.to_string(),
            "{\"max-cpu\": \"x\"}".into(),
        );
        assert!(RuntimeDefaults::from_labels(&labels).is_err());
        assert_eq!(RuntimeDefaults::from_labels(&BTreeMap::new()), Ok(None));
    }

    #[test]
    fn a_gpu_count_is_in_the_label_only_when_set() {
        let cpu = RuntimeDefaults {
            max_cpu: Some(2.0),
            ..Default::default()
        };
        assert!(!cpu.to_label().contains("gpus"), "{}", cpu.to_label());
        let gpu = RuntimeDefaults {
            gpu_runtime: Some("nvidia".into()),
            gpus: Some(1),
            ..Default::default()
        };
        assert!(gpu.to_label().contains("\"gpus\":1"), "{}", gpu.to_label());
        let mut labels = BTreeMap::new();
        labels.insert(RUNTIME_DEFAULTS.name.to_string(), gpu.to_label());
        assert_eq!(RuntimeDefaults::from_labels(&labels), Ok(Some(gpu)));
    }
}
