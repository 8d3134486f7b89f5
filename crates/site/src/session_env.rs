//! What sessions get from the site besides the runtime's image: environment variables and
//! files (an index URL, proxy variables, a CA bundle, conda channels), set for the whole
//! site and per runtime, so installs in a session (`!pip install`, `!conda install`) work
//! behind the same proxy and certificates the builds used.
//!
//! A document (`GET`/`PUT /api/site/session-env`, `/api/runtimes/{id}/session-env`):
//!
//! ```json
//! {"env": [{"name": "PIP_INDEX_URL", "value": "https://pypi.corp/simple/"},
//!          {"name": "HTTPS_PROXY", "value": "http://user:pw@proxy:3128"}],
//!  "files": [{"path": "/etc/pip.conf", "content": "[global]\n…", "mode": "0644"}],
//!  "caBundle": "-----BEGIN CERTIFICATE-----\n…",
//!  "condaChannels": ["https://conda.corp/conda-forge"]}
//! ```
//!
//! Everything is checked when it is put (names, URLs of the variables whose meaning is a
//! URL, absolute file paths outside what the engine manages, PEM certificates), with the
//! field at fault named. Secrets are kept but never shown again: a variable is secret when it
//! says so (`"secret": true`), when its name says so (`…PASSWORD…`, `…TOKEN…`, `…SECRET…`,
//! `…_KEY`, `…CREDENTIAL…`) or when its value is a URL with a password; a file when it says
//! so. Shown, a secret has `"value": null` (`"content": null`) and `"set": true`; put back
//! that way (or without a value), the stored one is kept, so a client can edit the rest of a
//! document it read.
//!
//! At a session's start the runtime's document is laid over the site's (variables by name,
//! files by path; CA certificates and channels of both, the runtime's first):
//! - variables go into the container's environment;
//! - files are written into the container before it starts (owner root, group 100, the
//!   notebook users' group, so a `0640` secret file is readable by the user only);
//! - the CA bundle is added to the image's `/etc/ssl/certs/ca-certificates.crt` (what
//!   OpenSSL, pip, conda and curl read) and kept alone in `/etc/nbrt/session/ca.pem`;
//!   `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `PIP_CERT` and `CURL_CA_BUNDLE` name the
//!   combined file, `NODE_EXTRA_CA_CERTS` the site's certificates;
//! - conda channels go to `/etc/nbrt/session/condarc`, named by `CONDARC` (conda's
//!   highest-precedence file, so they come before the image's channels).
//! - and every session gets JupyterLab's way back to the site, a page config naming the
//!   site's `/hub/` paths ([`crate::hub`]), unless the document has a file at its path.
//!
//! Documents live in the `meta` table (`session-env:site`, `session-env:runtime:<id>`).

use std::collections::BTreeMap;

use bollard::query_parameters::{DownloadFromContainerOptions, UploadToContainerOptions};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Result, SiteError};
use crate::Site;

/// Variables the site sets itself for every session (the proxy, the token, the port) or
/// that would break the image's start: refused.
pub const RESERVED: &[&str] = &[
    "NB_PREFIX",
    "JUPYTER_TOKEN",
    "JUPYTER_PORT",
    "NBRT_AUTH",
    "NBRT_IP",
    "HOME",
    "PATH",
    "NB_USER",
    "NB_UID",
    "NB_GID",
];

/// Variables whose value is a URL (space-separated URLs for the `EXTRA` ones): checked.
const URL_VARS: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "CONDA_CHANNEL_ALIAS",
];

/// Paths the engine manages in every container (written by it, not by images).
const ENGINE_PATHS: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
const FORBIDDEN_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Where the system CA bundle is in Debian and Ubuntu images (and what the variables name).
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The site's own certificates, alone.
pub const SITE_CA: &str = "/etc/nbrt/session/ca.pem";
/// The conda configuration with the site's channels.
pub const CONDARC: &str = "/etc/nbrt/session/condarc";

const MAX_VARS: usize = 200;
const MAX_VALUE: usize = 32 << 10;
const MAX_FILES: usize = 50;
const MAX_FILE: usize = 1 << 20;
const MAX_CA: usize = 1 << 20;
const MAX_CHANNELS: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFile {
    pub path: String,
    pub content: String,
    /// Octal permission bits.
    pub mode: u32,
    #[serde(default)]
    pub secret: bool,
}

/// A stored document (secrets included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionEnv {
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub files: Vec<SessionFile>,
    #[serde(default)]
    pub ca_bundle: Option<String>,
    #[serde(default)]
    pub conda_channels: Vec<String>,
    /// Not stored: the session gets JupyterLab's way back to the site, the page config
    /// [`crate::hub::page_config`] at [`crate::hub::PAGE_CONFIG_PATH`] (unless a file of the
    /// document is there). Every session's document has it ([`for_session`]).
    #[serde(skip)]
    pub hub_link: bool,
}

/// Whose document: the site's or a runtime's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Site,
    Runtime(String),
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Scope::Site => "session-env:site".to_string(),
            Scope::Runtime(id) => format!("session-env:runtime:{id}"),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> SiteError {
    SiteError::invalid(field, message)
}

/// Whether a variable is secret by its name.
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "PASSWORD",
        "PASSWD",
        "TOKEN",
        "SECRET",
        "CREDENTIAL",
        "APIKEY",
        "API_KEY",
        "AUTH",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with("_KEY")
}

/// Whether a value holds a URL with a password (`scheme://user:password@host`).
pub fn has_url_password(value: &str) -> bool {
    value.split_whitespace().any(|word| {
        word.split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .and_then(|authority| authority.rsplit_once('@'))
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 128
}

/// `scheme://host…` with one of `schemes` and no blanks.
fn check_url(value: &str, schemes: &[&str]) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(format!("{value:?} is not a URL (scheme://host/…)"));
    };
    if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{value:?}: the scheme must be one of {}",
            schemes.join(", ")
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{value:?} has no host or contains blanks"));
    }
    Ok(())
}

fn check_var(i: usize, v: &EnvVar) -> Result<()> {
    let field = format!("env[{i}].name");
    if !valid_name(&v.name) {
        return Err(invalid(
            &field,
            format!(
                "{:?} is not a variable name (letters, digits and _, not starting with a digit)",
                v.name
            ),
        ));
    }
    if RESERVED.contains(&v.name.as_str()) {
        return Err(invalid(
            &field,
            format!(
                "{} is set by the site or the image for every session",
                v.name
            ),
        ));
    }
    let field = format!("env[{i}].value");
    if v.value.len() > MAX_VALUE || v.value.contains('\0') {
        return Err(invalid(
            &field,
            format!("at most {MAX_VALUE} bytes, no NUL character"),
        ));
    }
    if URL_VARS.contains(&v.name.as_str()) && !v.value.is_empty() {
        let schemes: &[&str] = if v.name.to_ascii_uppercase().contains("PROXY") {
            &["http", "https", "socks5", "socks5h", "socks4"]
        } else {
            &["http", "https", "file"]
        };
        for url in v.value.split_whitespace() {
            check_url(url, schemes).map_err(|m| invalid(&field, m))?;
        }
    }
    Ok(())
}

fn check_file(i: usize, f: &SessionFile) -> Result<()> {
    let field = format!("files[{i}].path");
    let p = &f.path;
    let normal = p.starts_with('/')
        && p.len() > 1
        && p.len() <= 1024
        && !p.ends_with('/')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !p.chars().any(|c| c.is_control());
    if !normal {
        return Err(invalid(
            &field,
            format!("{p:?} is not an absolute normal path (no `.`, `..`, empty parts, trailing /)"),
        ));
    }
    if ENGINE_PATHS.contains(&p.as_str()) {
        return Err(invalid(
            &field,
            format!("{p} is written by the engine in every container"),
        ));
    }
    if FORBIDDEN_TREES
        .iter()
        .any(|t| p == t || p.starts_with(&format!("{t}/")))
    {
        return Err(invalid(&field, format!("{p} is in a kernel file system")));
    }
    if p == SYSTEM_BUNDLE || p == SITE_CA || p == CONDARC {
        return Err(invalid(
            &field,
            format!("{p} is written from caBundle / condaChannels"),
        ));
    }
    if f.content.len() > MAX_FILE {
        return Err(invalid(
            &format!("files[{i}].content"),
            format!("at most {MAX_FILE} bytes"),
        ));
    }
    if f.mode > 0o777 {
        return Err(invalid(
            &format!("files[{i}].mode"),
            format!("{:o} is more than permission bits (at most 0777)", f.mode),
        ));
    }
    Ok(())
}

/// The certificates of a PEM bundle: each `BEGIN CERTIFICATE` block, checked to be base64
/// of a DER sequence. Text outside blocks (labels) is allowed.
pub fn certificates(pem: &str) -> std::result::Result<Vec<String>, String> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start..];
        let label_end = after[11..]
            .find("-----")
            .ok_or("a BEGIN line is not closed")?;
        let label = &after[11..11 + label_end];
        if label != "CERTIFICATE" && label != "TRUSTED CERTIFICATE" {
            return Err(format!(
                "a {label} block: only certificates belong in a CA bundle (never keys)"
            ));
        }
        let end_marker = format!("-----END {label}-----");
        let end = after
            .find(&end_marker)
            .ok_or_else(|| format!("no {end_marker} line"))?;
        let body: String = after[11 + label_end + 5..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|e| format!("certificate {} is not base64: {e}", out.len() + 1))?;
        if der.first() != Some(&0x30) || der.len() < 64 {
            return Err(format!(
                "certificate {} is not a DER certificate",
                out.len() + 1
            ));
        }
        out.push(after[..end + end_marker.len()].to_string());
        rest = &after[end + end_marker.len()..];
    }
    if out.is_empty() {
        return Err("no -----BEGIN CERTIFICATE----- block".into());
    }
    Ok(out)
}

fn check_channel(i: usize, c: &str) -> Result<()> {
    let field = format!("condaChannels[{i}]");
    if c.contains("://") {
        return check_url(c, &["http", "https", "file"]).map_err(|m| invalid(&field, m));
    }
    let ok = !c.is_empty()
        && c.len() <= 256
        && c.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_./".contains(ch))
        && !c.starts_with(['/', '.']);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            &field,
            format!("{c:?} is neither a channel name nor an http(s)/file URL"),
        ))
    }
}

impl SessionEnv {
    /// Check a document; the first problem, with its field.
    pub fn validate(&self) -> Result<()> {
        if self.env.len() > MAX_VARS {
            return Err(invalid("env", format!("at most {MAX_VARS} variables")));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, v) in self.env.iter().enumerate() {
            check_var(i, v)?;
            if !seen.insert(v.name.as_str()) {
                return Err(invalid(
                    &format!("env[{i}].name"),
                    format!("{} is given twice", v.name),
                ));
            }
        }
        if self.files.len() > MAX_FILES {
            return Err(invalid("files", format!("at most {MAX_FILES} files")));
        }
        let mut paths = std::collections::BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            check_file(i, f)?;
            if !paths.insert(f.path.as_str()) {
                return Err(invalid(
                    &format!("files[{i}].path"),
                    format!("{} is given twice", f.path),
                ));
            }
        }
        if let Some(ca) = &self.ca_bundle {
            if ca.len() > MAX_CA {
                return Err(invalid("caBundle", format!("at most {MAX_CA} bytes")));
            }
            certificates(ca).map_err(|m| invalid("caBundle", m))?;
        }
        if self.conda_channels.len() > MAX_CHANNELS {
            return Err(invalid(
                "condaChannels",
                format!("at most {MAX_CHANNELS} channels"),
            ));
        }
        for (i, c) in self.conda_channels.iter().enumerate() {
            check_channel(i, c)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.files.is_empty()
            && self.ca_bundle.is_none()
            && self.conda_channels.is_empty()
    }

    /// The document as the API shows it: secrets masked.
    pub fn shown(&self) -> Value {
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|v| {
                if v.secret {
                    json!({"name": v.name, "value": null, "secret": true, "set": true})
                } else {
                    json!({"name": v.name, "value": v.value, "secret": false})
                }
            })
            .collect();
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                let mode = format!("{:04o}", f.mode);
                if f.secret {
                    json!({"path": f.path, "content": null, "mode": mode, "secret": true, "set": true})
                } else {
                    json!({"path": f.path, "content": f.content, "mode": mode, "secret": false})
                }
            })
            .collect();
        let certificates = self
            .ca_bundle
            .as_deref()
            .and_then(|c| certificates(c).ok())
            .map_or(0, |c| c.len());
        json!({
            "env": env,
            "files": files,
            "caBundle": self.ca_bundle,
            "caCertificates": certificates,
            "condaChannels": self.conda_channels,
        })
    }

    /// A document from an API body, secrets left out (`null` or missing) taken from
    /// `stored`. Not yet validated.
    pub fn from_input(body: &Value, stored: &SessionEnv) -> Result<SessionEnv> {
        let Some(m) = body.as_object() else {
            return Err(invalid("body", "expected a JSON object"));
        };
        if let Some(k) = m.keys().find(|k| {
            ![
                "env",
                "files",
                "caBundle",
                "caCertificates",
                "condaChannels",
            ]
            .contains(&k.as_str())
        }) {
            return Err(invalid(k, "unknown field"));
        }
        let list = |field: &str| -> Result<Vec<Value>> {
            match m.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(other) => Err(invalid(field, format!("expected a list, got {other}"))),
            }
        };
        let mut out = SessionEnv::default();
        for (i, item) in list("env")?.iter().enumerate() {
            let field = |f: &str| format!("env[{i}].{f}");
            let Some(o) = item.as_object() else {
                return Err(invalid(
                    &format!("env[{i}]"),
                    "expected an object {name, value}",
                ));
            };
            if let Some(k) = o
                .keys()
                .find(|k| !["name", "value", "secret", "set"].contains(&k.as_str()))
            {
                return Err(invalid(&field(k), "unknown field"));
            }
            let name = match o.get("name") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(invalid(&field("name"), "required, a string")),
            };
            let secret_flag = match o.get("secret") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid(&field("secret"), "expected true or false")),
            };
            let value = match o.get("value") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => match stored.env.iter().find(|v| v.name == name) {
                    Some(v) => v.value.clone(),
                    None => return Err(invalid(&field("value"), "required, a string")),
                },
                Some(other) => {
                    return Err(invalid(
                        &field("value"),
                        format!("expected a string, got {other}"),
                    ))
                }
            };
            let kept_secret = stored.env.iter().any(|v| v.name == name && v.secret)
                && !matches!(o.get("value"), Some(Value::String(_)));
            let secret =
                secret_flag || kept_secret || secret_name(&name) || has_url_password(&value);
            out.env.push(EnvVar {
                name,
                value,
                secret,
            });
        }
        for (i, item) in list("files")?.iter().enumerate() {
            let field = |f: &str| format!("files[{i}].{f}");
            let Some(o) = item.as_object() else {
                return Err(invalid(
                    &format!("files[{i}]"),
                    "expected an object {path, content}",
                ));
            };
            if let Some(k) = o
                .keys()
                .find(|k| !["path", "content", "mode", "secret", "set"].contains(&k.as_str()))
            {
                return Err(invalid(&field(k), "unknown field"));
            }
            let path = match o.get("path") {
                Some(Value::String(s)) => s.clone(),
                _ => return Err(invalid(&field("path"), "required, a string")),
            };
            let secret = match o.get("secret") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid(&field("secret"), "expected true or false")),
            };
            let previous = stored.files.iter().find(|f| f.path == path);
            let content = match o.get("content") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => match previous {
                    Some(f) => f.content.clone(),
                    None => return Err(invalid(&field("content"), "required, a string")),
                },
                Some(other) => {
                    return Err(invalid(
                        &field("content"),
                        format!("expected a string, got {other}"),
                    ))
                }
            };
            let secret = secret
                || (previous.is_some_and(|f| f.secret)
                    && !matches!(o.get("content"), Some(Value::String(_))));
            let mode = match o.get("mode") {
                None | Some(Value::Null) => {
                    if secret {
                        0o640
                    } else {
                        0o644
                    }
                }
                Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8)
                    .map_err(|_| {
                        invalid(
                            &field("mode"),
                            format!("{s:?} is not an octal mode such as \"0644\""),
                        )
                    })?,
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid(&field("mode"), "expected an octal string such as \"0644\"")
                    })?,
                Some(other) => {
                    return Err(invalid(
                        &field("mode"),
                        format!("expected an octal string, got {other}"),
                    ))
                }
            };
            out.files.push(SessionFile {
                path,
                content,
                mode,
                secret,
            });
        }
        out.ca_bundle = match m.get("caBundle") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(invalid(
                    "caBundle",
                    format!("expected PEM text, got {other}"),
                ))
            }
        };
        for (i, c) in list("condaChannels")?.iter().enumerate() {
            match c {
                Value::String(s) => out.conda_channels.push(s.trim().to_string()),
                other => {
                    return Err(invalid(
                        &format!("condaChannels[{i}]"),
                        format!("expected a string, got {other}"),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// `self` (the site's) with `over` (a runtime's) laid over it.
    pub fn overlaid(&self, over: &SessionEnv) -> SessionEnv {
        let mut env: Vec<EnvVar> = self
            .env
            .iter()
            .filter(|v| !over.env.iter().any(|o| o.name == v.name))
            .cloned()
            .collect();
        env.extend(over.env.iter().cloned());
        let mut files: Vec<SessionFile> = self
            .files
            .iter()
            .filter(|f| !over.files.iter().any(|o| o.path == f.path))
            .cloned()
            .collect();
        files.extend(over.files.iter().cloned());
        let ca: Vec<&str> = [over.ca_bundle.as_deref(), self.ca_bundle.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let mut channels = over.conda_channels.clone();
        for c in &self.conda_channels {
            if !channels.contains(c) {
                channels.push(c.clone());
            }
        }
        SessionEnv {
            env,
            files,
            ca_bundle: (!ca.is_empty()).then(|| {
                ca.iter()
                    .map(|c| c.trim_end().to_string() + "\n")
                    .collect::<String>()
            }),
            conda_channels: channels,
            hub_link: self.hub_link || over.hub_link,
        }
    }
}

/// The stored document of a scope (empty when none).
pub fn load(site: &Site, scope: &Scope) -> Result<SessionEnv> {
    match site.db.meta(&scope.key())? {
        None => Ok(SessionEnv::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            SiteError::Internal(format!("the stored {} is not readable: {e}", scope.key()))
        }),
    }
}

/// Check and store a document from an API body; the stored document.
pub fn put(site: &Site, scope: &Scope, body: &Value) -> Result<SessionEnv> {
    let stored = load(site, scope)?;
    let doc = SessionEnv::from_input(body, &stored)?;
    doc.validate()?;
    let text = serde_json::to_string(&doc)
        .map_err(|e| SiteError::Internal(format!("writing the document: {e}")))?;
    let key = scope.key();
    site.db.with(|c| {
        if doc.is_empty() {
            c.execute("DELETE FROM meta WHERE key = ?1", [&key])
        } else {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&key, &text],
            )
        }
    })?;
    Ok(doc)
}

/// What a session of `runtime_id` gets: the site's document with the runtime's over it.
pub fn for_session(site: &Site, runtime_id: &str) -> Result<SessionEnv> {
    let site_doc = load(site, &Scope::Site)?;
    let runtime_doc = load(site, &Scope::Runtime(runtime_id.to_string()))?;
    let mut doc = site_doc.overlaid(&runtime_doc);
    doc.hub_link = true;
    Ok(doc)
}

impl SessionEnv {
    /// The container's extra environment (`NAME=value`), with the variables the CA bundle and
    /// channels need unless the document sets them.
    pub fn container_env(&self) -> Vec<String> {
        let mut vars: BTreeMap<&str, String> = BTreeMap::new();
        if self.ca_bundle.is_some() {
            for name in [
                "SSL_CERT_FILE",
                "REQUESTS_CA_BUNDLE",
                "PIP_CERT",
                "CURL_CA_BUNDLE",
            ] {
                vars.insert(name, SYSTEM_BUNDLE.to_string());
            }
            vars.insert("NODE_EXTRA_CA_CERTS", SITE_CA.to_string());
        }
        if !self.conda_channels.is_empty() {
            vars.insert("CONDARC", CONDARC.to_string());
        }
        for v in &self.env {
            vars.remove(v.name.as_str());
        }
        let mut out: Vec<String> = vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.extend(self.env.iter().map(|v| format!("{}={}", v.name, v.value)));
        out
    }

    /// The files to write (path, bytes, mode), the CA bundle's combined file made from
    /// `system_bundle` (the image's, when it has one).
    pub fn files_to_write(&self, system_bundle: Option<&[u8]>) -> Vec<(String, Vec<u8>, u32)> {
        let mut out: Vec<(String, Vec<u8>, u32)> = self
            .files
            .iter()
            .map(|f| (f.path.clone(), f.content.as_bytes().to_vec(), f.mode))
            .collect();
        if let Some(ca) = &self.ca_bundle {
            let ca = ca.trim_end().to_string() + "\n";
            let mut combined = system_bundle.map(<[u8]>::to_vec).unwrap_or_default();
            if !combined.is_empty() && !combined.ends_with(b"\n") {
                combined.push(b'\n');
            }
            combined.extend_from_slice(ca.as_bytes());
            out.push((SYSTEM_BUNDLE.to_string(), combined, 0o644));
            out.push((SITE_CA.to_string(), ca.into_bytes(), 0o644));
        }
        if !self.conda_channels.is_empty() {
            let mut rc = String::from("channels:\n");
            for c in &self.conda_channels {
                rc.push_str(&format!("  - {c}\n"));
            }
            out.push((CONDARC.to_string(), rc.into_bytes(), 0o644));
        }
        let hub = crate::hub::PAGE_CONFIG_PATH;
        if self.hub_link && !out.iter().any(|(path, _, _)| path == hub) {
            let config = crate::hub::page_config().to_string().into_bytes();
            out.push((hub.to_string(), config, 0o644));
        }
        out
    }
}

/// A tar of `files` with the directories above them (root-owned, group 100).
pub fn tar_of(files: &[(String, Vec<u8>, u32)]) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in files {
        let rel = path.trim_start_matches('/');
        let mut parent = std::path::Path::new(rel).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    for d in &dirs {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, d, std::io::empty())?;
    }
    for (path, data, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(100);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path.trim_start_matches('/'), data.as_slice())?;
    }
    b.into_inner()
}

/// The image's system CA bundle, read from a created container (`None` when it has none).
async fn system_bundle(docker: &bollard::Docker, container: &str) -> Option<Vec<u8>> {
    let mut stream = docker.download_from_container(
        container,
        Some(DownloadFromContainerOptions {
            path: SYSTEM_BUNDLE.to_string(),
        }),
    );
    let mut tar_bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        tar_bytes.extend_from_slice(&chunk.ok()?);
        if tar_bytes.len() > 64 << 20 {
            return None;
        }
    }
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).ok()?;
            return Some(data);
        }
    }
    None
}

/// The system CA bundle of a stored image, read without running it (for engines where the
/// site cannot read a created container, Swarm): the merged view of the image's layers says
/// which layer holds [`SYSTEM_BUNDLE`] (symlinks followed), and that one layer is read for
/// its bytes. `None` when the image has no such file.
pub fn system_bundle_in_store(store: &nbrt_oci::Store, image_id: &str) -> Result<Option<Vec<u8>>> {
    use nbrt_oci::layer::{reader::for_each_entry, Compression, EntryKind};
    let image = store.resolve(image_id)?.image;
    let view = nbrt_inspect::view::View::open(store, &image, &nbrt_oci::Progress::hidden())
        .map_err(|e| SiteError::Internal(format!("reading the layers of {image_id}: {e}")))?;
    let Some((path, located)) = view.lookup(SYSTEM_BUNDLE) else {
        return Ok(None);
    };
    let Some(layer) = image.layers().get(located.layer) else {
        return Ok(None);
    };
    let io = |source| SiteError::Io {
        context: format!("reading layer {} of {image_id}", layer.digest),
        source,
    };
    let blob = std::fs::File::open(store.blob_path(&layer.digest)).map_err(io)?;
    let compression = Compression::from_media_type(&layer.media_type)?;
    let tar = nbrt_oci::layer::compression::decompress(std::io::BufReader::new(blob), compression)?;
    let mut found = None;
    for_each_entry(tar, |entry, data| {
        // The last entry of the path in the layer wins; hard links are not followed.
        if entry.path == path && entry.kind == EntryKind::File && entry.size <= 64 << 20 {
            let mut bytes = Vec::with_capacity(entry.size as usize);
            data.read_to_end(&mut bytes)
                .map_err(|source| nbrt_oci::OciError::Io {
                    context: format!("reading {path}"),
                    source,
                })?;
            found = Some(bytes);
        }
        Ok(())
    })?;
    Ok(found)
}

/// Write the document's files into a created (not yet started) container.
pub async fn write_files(
    docker: &bollard::Docker,
    container: &str,
    doc: &SessionEnv,
) -> Result<()> {
    let system = if doc.ca_bundle.is_some() {
        system_bundle(docker, container).await
    } else {
        None
    };
    let files = doc.files_to_write(system.as_deref());
    if files.is_empty() {
        return Ok(());
    }
    let tar = tar_of(&files).map_err(|e| SiteError::Internal(format!("session files: {e}")))?;
    docker
        .upload_to_container(
            container,
            Some(UploadToContainerOptions {
                path: "/".to_string(),
                ..Default::default()
            }),
            bollard::body_full(tar.into()),
        )
        .await
        .map_err(|e| SiteError::Engine(format!("writing the session's files: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A syntactically valid certificate block (a DER SEQUENCE; not a real certificate).
    fn cert() -> String {
        use base64::Engine;
        let mut der = vec![0x30, 0x82, 0x01, 0x00];
        der.extend(std::iter::repeat_n(7u8, 256));
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    fn doc(v: Value) -> Result<SessionEnv> {
        let d = SessionEnv::from_input(&v, &SessionEnv::default())?;
        d.validate()?;
        Ok(d)
    }

    fn field(e: SiteError) -> String {
        e.field().unwrap_or("").to_string()
    }

    #[test]
    fn checks_name_the_field() {
        let bad = [
            (json!({"env": [{"name": "1X", "value": ""}]}), "env[0].name"),
            (
                json!({"env": [{"name": "JUPYTER_TOKEN", "value": "x"}]}),
                "env[0].name",
            ),
            (
                json!({"env": [{"name": "PIP_INDEX_URL", "value": "pypi.org/simple"}]}),
                "env[0].value",
            ),
            (
                json!({"env": [{"name": "HTTPS_PROXY", "value": "ftp://p:3128"}]}),
                "env[0].value",
            ),
            (
                json!({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
                "env[1].name",
            ),
            (json!({"env": [{"name": "A"}]}), "env[0].value"),
            (
                json!({"env": [{"name": "A", "value": "1", "colour": 1}]}),
                "env[0].colour",
            ),
            (
                json!({"files": [{"path": "etc/x", "content": ""}]}),
                "files[0].path",
            ),
            (
                json!({"files": [{"path": "/etc/../x", "content": ""}]}),
                "files[0].path",
            ),
            (
                json!({"files": [{"path": "/etc/hosts", "content": ""}]}),
                "files[0].path",
            ),
            (
                json!({"files": [{"path": "/proc/x", "content": ""}]}),
                "files[0].path",
            ),
            (
                json!({"files": [{"path": "/x", "content": "", "mode": "4755"}]}),
                "files[0].mode",
            ),
            (json!({"caBundle": "hello"}), "caBundle"),
            (
                json!({"caBundle": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
                "caBundle",
            ),
            (
                json!({"caBundle": "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"}),
                "caBundle",
            ),
            (json!({"condaChannels": ["a b"]}), "condaChannels[0]"),
            (json!({"colour": 1}), "colour"),
        ];
        for (v, f) in bad {
            let e = doc(v.clone()).expect_err(&v.to_string());
            assert_eq!(field(e), f, "{v}");
        }
        let good = doc(json!({
            "env": [{"name": "PIP_INDEX_URL", "value": "https://pyindex:8443/simple/"},
                    {"name": "PIP_EXTRA_INDEX_URL", "value": "https://a/simple https://b/simple"},
                    {"name": "NO_PROXY", "value": "localhost,.corp"}],
            "files": [{"path": "/etc/pip.conf", "content": "[global]\n"}],
            "caBundle": format!("# corp root\n{}", cert()),
            "condaChannels": ["conda-forge", "https://conda.corp/main"],
        }))
        .unwrap();
        assert_eq!(good.files[0].mode, 0o644);
        assert_eq!(
            certificates(good.ca_bundle.as_deref().unwrap())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn secrets_are_kept_and_never_shown() {
        let stored = doc(json!({"env": [
            {"name": "HTTPS_PROXY", "value": "http://me:pw@proxy:3128"},
            {"name": "ARTIFACTORY_TOKEN", "value": "t0k3n"},
            {"name": "OPAQUE", "value": "x", "secret": true},
            {"name": "PIP_INDEX_URL", "value": "https://pypi.corp/simple/"}],
            "files": [{"path": "/etc/netrc", "content": "machine a password b", "secret": true}]}))
        .unwrap();
        let shown = stored.shown();
        let text = shown.to_string();
        for secret in ["pw@proxy", "t0k3n", "\"x\"", "password b"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            shown["env"][0],
            json!({"name": "HTTPS_PROXY", "value": null, "secret": true, "set": true})
        );
        assert_eq!(shown["env"][3]["value"], "https://pypi.corp/simple/");
        assert_eq!(shown["files"][0]["mode"], "0640");
        // What was shown, put back with one change: the secrets are kept.
        let mut edited = shown.clone();
        edited["env"][3]["value"] = json!("https://other/simple/");
        let again = SessionEnv::from_input(&edited, &stored).unwrap();
        again.validate().unwrap();
        assert_eq!(again.env[0].value, "http://me:pw@proxy:3128");
        assert_eq!(again.env[1].value, "t0k3n");
        assert!(again.env[2].secret, "stays secret");
        assert_eq!(again.env[3].value, "https://other/simple/");
        assert_eq!(again.files[0].content, "machine a password b");
    }

    #[test]
    fn runtime_over_site_and_what_a_container_gets() {
        let site = doc(json!({
            "env": [{"name": "PIP_INDEX_URL", "value": "https://site/simple/"}, {"name": "A", "value": "site"}],
            "files": [{"path": "/etc/pip.conf", "content": "site"}],
            "caBundle": cert(),
            "condaChannels": ["https://site/conda"]}))
        .unwrap();
        let rt = doc(json!({
            "env": [{"name": "A", "value": "runtime"}],
            "files": [{"path": "/etc/pip.conf", "content": "runtime"}],
            "condaChannels": ["https://rt/conda"]}))
        .unwrap();
        let all = site.overlaid(&rt);
        let env = all.container_env();
        assert!(env.contains(&"A=runtime".to_string()), "{env:?}");
        assert!(env.contains(&"PIP_INDEX_URL=https://site/simple/".to_string()));
        assert!(env.contains(&format!("SSL_CERT_FILE={SYSTEM_BUNDLE}")));
        assert!(env.contains(&format!("CONDARC={CONDARC}")));
        let files = all.files_to_write(Some(b"SYSTEM CA\n"));
        let get = |p: &str| {
            files
                .iter()
                .find(|f| f.0 == p)
                .map(|f| String::from_utf8(f.1.clone()).unwrap())
                .unwrap()
        };
        assert_eq!(get("/etc/pip.conf"), "runtime");
        assert!(get(SYSTEM_BUNDLE).starts_with("SYSTEM CA\n-----BEGIN CERTIFICATE-----"));
        assert_eq!(
            get(CONDARC),
            "channels:\n  - https://rt/conda\n  - https://site/conda\n"
        );
        let tar = tar_of(&files).unwrap();
        let mut names = Vec::new();
        for e in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
        }
        assert!(names.contains(&"etc/nbrt/session".to_string()), "{names:?}");
        assert!(names.contains(&"etc/ssl/certs/ca-certificates.crt".to_string()));
    }

    #[test]
    fn url_passwords() {
        assert!(has_url_password("http://u:p@proxy:3128"));
        assert!(!has_url_password("http://u@proxy:3128"));
        assert!(!has_url_password("https://pypi.org/simple/a:b@c"));
        assert!(secret_name("PIP_PASSWORD") && secret_name("aws_secret_access_key"));
        assert!(!secret_name("PIP_INDEX_URL"));
    }
}
