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
    /// The server a session runs (Jupyter unless the image says otherwise). This and the
    /// three HTTP fields below are left out of the label when unset, like `gpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerKind>,
    /// What a session's URL prefix becomes before a request reaches the server (Kubeflow's
    /// `notebooks.kubeflow.org/http-rewrite-uri`): `/` for servers that answer at the root
    /// and cannot be told a base URL (code-server, RStudio). Unset: the prefix stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_rewrite_uri: Option<String>,
    /// The path, as the server sees it under its base, that answers once the server is up
    /// (Jupyter's `/api` unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// Headers set on every request to the server (Kubeflow's
    /// `notebooks.kubeflow.org/http-headers-request-set`); [`NB_PREFIX_PLACEHOLDER`] in a
    /// value is the session's URL prefix (RStudio's `X-RStudio-Root-Path`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_headers_request_set: BTreeMap<String, String>,
}

/// In a request header's value: the session's URL prefix, with its trailing slash.
pub const NB_PREFIX_PLACEHOLDER: &str = "${NB_PREFIX}";

/// Headers an image may not have set on its requests: the proxy's own and hop-by-hop ones.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The kind of server a runtime's sessions run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// A Jupyter server: it takes a token, serves under `NB_PREFIX`, has kernels.
    #[default]
    Jupyter,
    /// Another web application (code-server, RStudio): no Jupyter API, token or kernels.
    Web,
}

impl ServerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Jupyter => "jupyter",
            ServerKind::Web => "web",
        }
    }
}

/// How a site (or `nbrt check`) reaches a session's server over HTTP: the image's `server`,
/// `http-rewrite-uri`, `ready-path` and `http-headers-request-set` defaults, the one home of
/// the rules that use them. The same fields as in [`RuntimeDefaults`], in the API's shape
/// (camelCase) where the label has the runtime file's (kebab-case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpContract {
    pub server: ServerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_rewrite_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub http_headers_request_set: BTreeMap<String, String>,
}

impl HttpContract {
    /// The headers set on a request to the server of a session under `prefix` (no trailing
    /// slash), with the placeholder filled in.
    pub fn request_headers(&self, prefix: &str) -> Vec<(String, String)> {
        let root = format!("{}/", prefix.trim_end_matches('/'));
        self.http_headers_request_set
            .iter()
            .map(|(k, v)| (k.clone(), v.replace(NB_PREFIX_PLACEHOLDER, &root)))
            .collect()
    }

    /// What is wrong with a header an image asks to set, if anything.
    pub fn header_problem(name: &str, value: &str) -> Option<String> {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            Some(format!("header name {name:?} is not an HTTP field name"))
        } else if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            Some(format!(
                "header {name} is the proxy's own, not the image's to set"
            ))
        } else if value.chars().any(|c| c.is_control() || !c.is_ascii()) {
            Some(format!(
                "header {name}'s value {value:?} is not visible ASCII"
            ))
        } else {
            None
        }
    }

    /// The first problem of this contract's paths and headers, if any: the runtime-file
    /// key it is under, and what is wrong.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        for (key, value) in [
            ("http-rewrite-uri", &self.http_rewrite_uri),
            ("ready-path", &self.ready_path),
        ] {
            if let Some(value) = value {
                if let Some(p) = Self::path_problem(value) {
                    return Some((key, format!("{key} = {value:?} {p}")));
                }
            }
        }
        self.http_headers_request_set
            .iter()
            .find_map(|(k, v)| Self::header_problem(k, v))
            .map(|p| {
                (
                    "http-headers-request-set",
                    format!("http-headers-request-set: {p}"),
                )
            })
    }

    pub fn is_jupyter(&self) -> bool {
        self.server == ServerKind::Jupyter
    }

    /// The path a request for `path` reaches the server at, for a session whose URL prefix
    /// is `prefix` (no trailing slash; `path` is under it): the same path, or with the
    /// prefix replaced by the rewrite URI.
    pub fn upstream_path(&self, prefix: &str, path: &str) -> String {
        let Some(to) = &self.http_rewrite_uri else {
            return path.to_string();
        };
        let rest = path.strip_prefix(prefix).unwrap_or(path);
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        format!("{}/{rest}", to.trim_end_matches('/'))
    }

    /// The path readiness polls, for a session under `prefix`.
    pub fn ready_upstream_path(&self, prefix: &str) -> String {
        let ready = self.ready_path.as_deref().unwrap_or(match self.server {
            ServerKind::Jupyter => "/api",
            ServerKind::Web => "/",
        });
        self.upstream_path(prefix, &format!("{prefix}{ready}"))
    }

    /// What is wrong with a rewrite URI or ready path, if anything: both are absolute URL
    /// paths without a query.
    pub fn path_problem(value: &str) -> Option<&'static str> {
        if !value.starts_with('/') {
            Some("must start with /")
        } else if value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            Some("must be a URL path (no spaces, query or fragment)")
        } else if value.split('/').any(|seg| seg == "..") {
            Some("must not contain ..")
        } else {
            None
        }
    }
}

impl RuntimeDefaults {
    /// The label's value.
    pub fn to_label(&self) -> String {
        // A struct of options, strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// These defaults over a parent image's: each field this leaves unset is the parent's
    /// (as a label a Dockerfile does not set again is), so a runtime built on code-server is
    /// still reached as code-server, and a child of jupyter keeps its limits. The advanced
    /// privilege, once required, stays required.
    pub fn over(&self, parent: &RuntimeDefaults) -> RuntimeDefaults {
        fn or<T: Clone>(mine: &Option<T>, theirs: &Option<T>) -> Option<T> {
            mine.clone().or_else(|| theirs.clone())
        }
        RuntimeDefaults {
            max_cpu: self.max_cpu.or(parent.max_cpu),
            max_memory: or(&self.max_memory, &parent.max_memory),
            max_swap: or(&self.max_swap, &parent.max_swap),
            shared_memory: or(&self.shared_memory, &parent.shared_memory),
            gpu_runtime: or(&self.gpu_runtime, &parent.gpu_runtime),
            gpus: self.gpus.or(parent.gpus),
            advanced_privileges: self.advanced_privileges || parent.advanced_privileges,
            server: self.server.or(parent.server),
            http_rewrite_uri: or(&self.http_rewrite_uri, &parent.http_rewrite_uri),
            ready_path: or(&self.ready_path, &parent.ready_path),
            http_headers_request_set: parent
                .http_headers_request_set
                .iter()
                .chain(&self.http_headers_request_set)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// How sessions of the image are reached over HTTP.
    pub fn http(&self) -> HttpContract {
        HttpContract {
            server: self.server.unwrap_or_default(),
            http_rewrite_uri: self.http_rewrite_uri.clone(),
            ready_path: self.ready_path.clone(),
            http_headers_request_set: self.http_headers_request_set.clone(),
        }
    }

    /// How sessions of an image with these labels are reached over HTTP (Jupyter's rules
    /// without the label); an error naming the problem when the label is not readable.
    pub fn http_of(labels: &impl Labels) -> Result<HttpContract, String> {
        Ok(Self::from_labels(labels)?.unwrap_or_default().http())
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
    fn http_contract_rewrites_the_prefix_and_finds_the_ready_path() {
        let prefix = "/user/ann/rt1";
        let jupyter = RuntimeDefaults::default().http();
        assert!(jupyter.is_jupyter());
        assert_eq!(
            jupyter.upstream_path(prefix, "/user/ann/rt1/lab"),
            "/user/ann/rt1/lab"
        );
        assert_eq!(jupyter.ready_upstream_path(prefix), "/user/ann/rt1/api");
        let web = RuntimeDefaults {
            server: Some(ServerKind::Web),
            http_rewrite_uri: Some("/".into()),
            ready_path: Some("/healthz".into()),
            ..Default::default()
        }
        .http();
        assert_eq!(web.upstream_path(prefix, "/user/ann/rt1/"), "/");
        assert_eq!(web.upstream_path(prefix, "/user/ann/rt1"), "/");
        assert_eq!(
            web.upstream_path(prefix, "/user/ann/rt1/static/a.js"),
            "/static/a.js"
        );
        assert_eq!(web.ready_upstream_path(prefix), "/healthz");
        let under = HttpContract {
            server: ServerKind::Web,
            http_rewrite_uri: Some("/app/".into()),
            ready_path: None,
            http_headers_request_set: BTreeMap::from([(
                "X-RStudio-Root-Path".to_string(),
                NB_PREFIX_PLACEHOLDER.to_string(),
            )]),
        };
        assert_eq!(
            under.request_headers(prefix),
            [(
                "X-RStudio-Root-Path".to_string(),
                "/user/ann/rt1/".to_string()
            )]
        );
        assert_eq!(under.problem(), None);
        assert!(HttpContract::header_problem("Host", "x").is_some());
        assert!(HttpContract::header_problem("X Bad", "x").is_some());
        assert!(HttpContract::header_problem("X-Ok", "a\nb").is_some());
        assert_eq!(under.upstream_path(prefix, "/user/ann/rt1/x"), "/app/x");
        assert_eq!(under.ready_upstream_path(prefix), "/app/");
        assert_eq!(HttpContract::path_problem("/healthz"), None);
        assert!(HttpContract::path_problem("healthz").is_some());
        assert!(HttpContract::path_problem("/a b").is_some());
        assert!(HttpContract::path_problem("/a?b").is_some());
        assert!(HttpContract::path_problem("/../x").is_some());
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
