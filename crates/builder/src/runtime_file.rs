//! Runtime files: the TOML that declares one notebook runtime. Parsing checks everything that
//! can be checked without building, and every error names the file and line.
//! The format is documented in `docs/runtime-file.md`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{BuildError, Result};

/// The largest runtime file accepted.
const MAX_FILE_SIZE: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    from: Option<Spanned<String>>,
    #[serde(default)]
    bootstrap: Option<Spanned<Bootstrap>>,
    #[serde(default)]
    apt: Option<Apt>,
    #[serde(default)]
    python: Option<Python>,
    #[serde(default)]
    conda: Option<Conda>,
    #[serde(default)]
    pip: Option<Pip>,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    files: Vec<Spanned<FileSpec>>,
    #[serde(default)]
    run: Vec<RunStep>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    image: Option<ImageSpec>,
    #[serde(default)]
    runtime: Option<RuntimeDefaults>,
}

/// A root file system made with mmdebstrap, for runtimes with no `from`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Bootstrap {
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub packages: Vec<String>,
    #[serde(default = "default_mirror")]
    pub mirror: String,
}

/// Debian's stable release (bookworm, now oldstable, stays a `suite = "bookworm"` away).
fn default_suite() -> String {
    "trixie".into()
}
fn default_variant() -> String {
    "minbase".into()
}
fn default_mirror() -> String {
    "http://deb.debian.org/debian".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Apt {
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Conda {
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Package files (`.conda`, `.tar.bz2`) installed offline, relative to the runtime's directory.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "/opt/conda".into()
}

/// The image's Python environment: a venv of the image's own interpreter at `prefix`, which
/// conda and pip then install into (see `steps::python`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Python {
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// A conda version spec the interpreter must match (`"3.13.*"`), pinned in
    /// `conda-meta/pinned`; default: the interpreter's own major.minor.
    #[serde(default)]
    pub version: Option<String>,
    /// The interpreter the environment is made from (a command in the image).
    #[serde(default = "default_interpreter")]
    pub interpreter: String,
    /// Channels written to the environment's `.condarc`.
    #[serde(default = "default_python_channels")]
    pub channels: Vec<String>,
}

fn default_interpreter() -> String {
    "python3".into()
}
fn default_python_channels() -> Vec<String> {
    vec!["conda-forge".into()]
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Pip {
    #[serde(default)]
    pub packages: Vec<Spanned<String>>,
    /// A requirements file relative to the runtime's directory.
    #[serde(default)]
    pub requirements: Option<String>,
    #[serde(default)]
    pub constraints: Option<String>,
    #[serde(default)]
    pub index_url: Option<String>,
    #[serde(default)]
    pub extra_index_urls: Vec<String>,
    /// Directories of wheels used as a local index (relative to the runtime's directory).
    #[serde(default)]
    pub wheelhouse: Vec<String>,
    /// The Python environment to install into (default `/opt/conda`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct User {
    #[serde(default = "default_user")]
    pub name: String,
    #[serde(default = "default_uid")]
    pub uid: u32,
    #[serde(default = "default_gid")]
    pub gid: u32,
    #[serde(default)]
    pub home: Option<String>,
    /// Directories the user owns, group-writable and setgid (docker-stacks' fix-permissions).
    #[serde(default)]
    pub owns: Vec<String>,
}

fn default_user() -> String {
    "jovyan".into()
}
fn default_uid() -> u32 {
    1000
}
fn default_gid() -> u32 {
    100
}

impl User {
    pub fn home(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSpec {
    /// Relative to the runtime's directory; may not leave the stack directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A file nbrt itself provides instead of `source` (see `crate::builtin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    /// Absolute path inside the image (a trailing `/` means "into this directory").
    pub destination: String,
    #[serde(default)]
    pub mode: Option<String>,
    /// `uid:gid`, `uid`, or `user` / `user:group` names known to the image.
    #[serde(default)]
    pub owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunStep {
    /// Run with `/bin/sh -c`.
    pub command: String,
    #[serde(default = "default_run_user")]
    pub user: String,
    /// Give the command network access (package registries) during the step.
    #[serde(default = "yes")]
    pub network: bool,
}

fn default_run_user() -> String {
    "root".into()
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageSpec {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Labels whose value is the version of a Python distribution in the built image
    /// (label → distribution name): which jupyterhub an image carries, read off the image.
    #[serde(default)]
    pub version_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Healthcheck {
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub start_period: Option<String>,
    #[serde(default)]
    pub retries: Option<u32>,
}

/// The `[runtime]` table: defaults for registering the runtime in a site, carried on the
/// image's label.
pub use nbrt_oci::label::RuntimeDefaults;

/// Where a runtime starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// Nothing: a `[bootstrap]` makes the root file system.
    Scratch,
    /// Another runtime, an image in the store, an archive or layout path, or a registry
    /// reference; which one is decided when the stack is resolved.
    Named(String),
}

/// A parsed and checked runtime file.
#[derive(Debug, Clone)]
pub struct RuntimeFile {
    pub path: PathBuf,
    /// The directory `files` sources and other relative paths are taken from.
    pub dir: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub from: From,
    /// Line of the `from` (or `bootstrap`) key, for errors about the parent.
    pub from_line: usize,
    pub bootstrap: Option<Bootstrap>,
    pub apt: Option<Apt>,
    pub python: Option<Python>,
    pub conda: Option<Conda>,
    pub pip: Option<Pip>,
    pub user: Option<User>,
    pub files: Vec<FileSpec>,
    pub run: Vec<RunStep>,
    pub env: BTreeMap<String, String>,
    pub image: ImageSpec,
    pub runtime: RuntimeDefaults,
}

/// Line (1-based) of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    /// Span of the first line that assigns `key` (for values not carried with a span).
    fn key(&self, key: &str) -> std::ops::Range<usize> {
        let mut offset = 0;
        for line in self.text.split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                return offset..offset;
            }
            offset += line.len();
        }
        0..0
    }

    fn err(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> BuildError {
        BuildError::RuntimeFile {
            file: self.file.display().to_string(),
            line: line_of(self.text, span.start),
            message: message.into(),
        }
    }
}

/// Names of runtimes: what image names allow, one path component.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// Parse a size with a unit: `512m`, `4g`, `4GiB`, `1.5g`, plain bytes. Binary units, as
/// Docker's `--memory` reads them.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    if !(value.is_finite() && value > 0.0) {
        return None;
    }
    Some((value * mult as f64) as u64)
}

/// Parse a duration like `30s`, `1m30s`, `500ms` into nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        let value: f64 = num.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let mult = match unit {
            "ns" => 1.0,
            "us" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * mult;
        rest = next;
    }
    Some(total as i64)
}

/// `..`-free, relative path inside `base` (checked lexically and, when it exists, after
/// resolving symlinks).
fn inside(base: &Path, rel: &str) -> std::result::Result<PathBuf, String> {
    let p = Path::new(rel);
    if p.is_absolute() {
        return Err(format!(
            "{rel:?} must be relative to the runtime's directory"
        ));
    }
    let joined = base.join(p);
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!("{rel:?} is outside the stack directory"));
        }
    }
    if let (Ok(real), Ok(real_base)) = (joined.canonicalize(), base.canonicalize()) {
        if !real.starts_with(&real_base) {
            return Err(format!(
                "{rel:?} resolves to {}, outside the stack directory",
                real.display()
            ));
        }
    }
    Ok(joined)
}

impl RuntimeFile {
    /// Read and check a runtime file. `stack_dir` bounds the paths it may refer to (the
    /// stack's directory; the file's own directory for a lone runtime file).
    pub fn load(path: &Path, stack_dir: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| BuildError::RuntimeFile {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        if meta.len() > MAX_FILE_SIZE {
            return Err(BuildError::RuntimeFile {
                file: path.display().to_string(),
                line: 0,
                message: format!("{} bytes is too large for a runtime file", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| BuildError::RuntimeFile {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, path, &dir, stack_dir)
    }

    /// Parse runtime file text (`path` is used in messages, `dir` for relative paths).
    pub fn parse(text: &str, path: &Path, dir: &Path, stack_dir: &Path) -> Result<Self> {
        let ctx = Ctx { file: path, text };
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ctx.err(span, e.message().trim().to_string())
        })?;

        let name = raw.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(ctx.err(
                raw.name.span(),
                format!("runtime name {name:?}: use lower-case letters, digits, '-', '_' and '.'"),
            ));
        }
        let (from, from_line) = match (&raw.from, &raw.bootstrap) {
            (Some(f), None) => {
                if f.get_ref().trim().is_empty() {
                    return Err(ctx.err(f.span(), "`from` is empty"));
                }
                (From::Named(f.get_ref().trim().to_string()), line_of(text, f.span().start))
            }
            (None, Some(b)) => (From::Scratch, line_of(text, b.span().start)),
            (Some(f), Some(_)) => {
                return Err(ctx.err(
                    f.span(),
                    "a runtime has either `from` (a parent) or `[bootstrap]` (a new root file system), not both",
                ))
            }
            (None, None) => {
                return Err(ctx.err(
                    raw.name.span(),
                    "no `from` and no `[bootstrap]`: say what the runtime starts from",
                ))
            }
        };
        if let Some(pip) = &raw.pip {
            for p in &pip.packages {
                if let Err(e) =
                    pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(p.get_ref())
                {
                    return Err(ctx.err(
                        p.span(),
                        format!(
                            "pip package {:?} is not a valid requirement: {}",
                            p.get_ref(),
                            e.message
                        ),
                    ));
                }
            }
            for (key, paths) in [
                ("requirements", pip.requirements.iter().collect::<Vec<_>>()),
                ("constraints", pip.constraints.iter().collect()),
                ("wheelhouse", pip.wheelhouse.iter().collect()),
            ] {
                for f in paths {
                    inside(stack_dir, &relative_to(dir, stack_dir, f))
                        .map_err(|m| ctx.err(ctx.key(key), format!("pip.{key}: {m}")))?;
                }
            }
        }
        if let Some(conda) = &raw.conda {
            for f in &conda.files {
                inside(stack_dir, &relative_to(dir, stack_dir, f))
                    .map_err(|m| ctx.err(ctx.key("files"), format!("conda.files: {m}")))?;
            }
            if !conda.prefix.starts_with('/') {
                return Err(ctx.err(
                    ctx.key("prefix"),
                    format!("conda prefix {:?} must be absolute", conda.prefix),
                ));
            }
        }
        let mut files = Vec::new();
        for f in &raw.files {
            let spec = f.get_ref();
            match (&spec.source, &spec.builtin) {
                (Some(src), None) => {
                    let source = relative_to(dir, stack_dir, src);
                    let resolved = inside(stack_dir, &source)
                        .map_err(|m| ctx.err(f.span(), format!("files: {m}")))?;
                    if !resolved.exists() {
                        return Err(ctx.err(
                            f.span(),
                            format!("files: source {src:?} does not exist in {}", dir.display()),
                        ));
                    }
                }
                (None, Some(name)) => {
                    if !crate::builtin::NAMES.contains(&name.as_str()) {
                        return Err(ctx.err(
                            f.span(),
                            format!(
                                "files: unknown builtin {name:?} (known: {})",
                                crate::builtin::NAMES.join(", ")
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(ctx.err(
                        f.span(),
                        "files: give exactly one of `source` (a file of the stack) or `builtin`",
                    ))
                }
            }
            if !spec.destination.starts_with('/') || spec.destination.split('/').any(|c| c == "..")
            {
                return Err(ctx.err(
                    f.span(),
                    format!(
                        "files: destination {:?} must be an absolute path without '..'",
                        spec.destination
                    ),
                ));
            }
            if let Some(mode) = &spec.mode {
                if u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                    .map_or(true, |m| m > 0o7777)
                {
                    return Err(ctx.err(
                        f.span(),
                        format!("files: mode {mode:?} is not an octal mode like \"0755\""),
                    ));
                }
            }
            files.push(spec.clone());
        }
        if let Some(rt) = &raw.runtime {
            for (key, v) in [
                ("max-memory", &rt.max_memory),
                ("max-swap", &rt.max_swap),
                ("shared-memory", &rt.shared_memory),
            ] {
                if let Some(v) = v {
                    if parse_size(v).is_none() {
                        return Err(ctx.err(
                            ctx.key(key),
                            format!("runtime.{key} = {v:?}: use a size like \"4g\", \"512m\""),
                        ));
                    }
                }
            }
            if rt.max_cpu.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                return Err(ctx.err(
                    ctx.key("max-cpu"),
                    "runtime.max-cpu must be a positive number of CPUs",
                ));
            }
            if rt.gpus == Some(0) {
                return Err(ctx.err(
                    ctx.key("gpus"),
                    "runtime.gpus must be at least 1 (leave it out for a runtime without GPUs)",
                ));
            }
            if rt.gpus.is_some() && rt.gpu_runtime.is_none() {
                return Err(ctx.err(
                    ctx.key("gpus"),
                    "runtime.gpus needs runtime.gpu-runtime (the engine runtime that gives \
                     containers GPUs, e.g. \"nvidia\")",
                ));
            }
            if let Some((key, problem)) = rt.http().problem() {
                return Err(ctx.err(ctx.key(key), format!("runtime.{problem}")));
            }
        }
        if let Some(py) = &raw.python {
            if let Some(v) = &py.version {
                if let Err(e) = crate::steps::python::parse_version_spec(v) {
                    return Err(ctx.err(
                        ctx.key("version"),
                        format!("python.version {v:?} is not a conda version spec: {e}"),
                    ));
                }
            }
            if !py.prefix.starts_with('/') {
                return Err(ctx.err(
                    ctx.key("prefix"),
                    format!("python.prefix {:?} must be an absolute path", py.prefix),
                ));
            }
        }
        if let Some(hc) = raw.image.as_ref().and_then(|i| i.healthcheck.as_ref()) {
            for d in [&hc.interval, &hc.timeout, &hc.start_period]
                .into_iter()
                .flatten()
            {
                if parse_duration_ns(d).is_none() {
                    return Err(ctx.err(
                        ctx.key("healthcheck"),
                        format!("image.healthcheck: {d:?} is not a duration like \"30s\""),
                    ));
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            name,
            description: raw.description,
            from,
            from_line,
            bootstrap: raw.bootstrap.map(|b| b.into_inner()),
            apt: raw.apt,
            python: raw.python,
            conda: raw.conda,
            pip: raw.pip,
            user: raw.user,
            files,
            run: raw.run,
            env: raw.env,
            image: raw.image.unwrap_or_default(),
            runtime: raw.runtime.unwrap_or_default(),
        })
    }

    /// A located error about this file.
    pub fn error(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::RuntimeFile {
            file: self.path.display().to_string(),
            line,
            message: message.into(),
        }
    }
}

/// A path from the runtime file (relative to its directory) as a path relative to the stack.
fn relative_to(dir: &Path, stack_dir: &Path, rel: &str) -> String {
    match dir.strip_prefix(stack_dir) {
        Ok(sub) if !sub.as_os_str().is_empty() => sub.join(rel).to_string_lossy().into_owned(),
        _ => rel.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RuntimeFile> {
        let dir = std::env::temp_dir();
        RuntimeFile::parse(text, Path::new("stack/x/runtime.toml"), &dir, &dir)
    }

    fn err_line(text: &str) -> (usize, String) {
        match parse(text) {
            Err(BuildError::RuntimeFile { line, message, .. }) => (line, message),
            other => panic!("expected a runtime file error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_full_runtime() {
        let rt = parse(
            r#"
name = "scipy"
from = "jupyter"
[pip]
packages = ["numpy>=2", "pandas==2.2.*"]
[env]
A = "1"
[image]
ports = [8888]
cmd = ["nbrt-init", "start-notebook"]
[runtime]
max-cpu = 2.5
max-memory = "4g"
"#,
        )
        .unwrap();
        assert_eq!(rt.name, "scipy");
        assert_eq!(rt.from, From::Named("jupyter".into()));
        assert_eq!(rt.from_line, 3);
        assert_eq!(rt.pip.unwrap().packages.len(), 2);
        assert_eq!(rt.image.ports, vec![8888]);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let (line, msg) = err_line("name = \"a\"\nfrom = \"b\"\n\n[pip]\npackage = [\"x\"]\n");
        assert_eq!(line, 5);
        assert!(msg.contains("unknown field `package`"), "{msg}");
    }

    #[test]
    fn bad_requirements_name_the_line() {
        let (line, msg) = err_line(
            "name = \"a\"\nfrom = \"b\"\n[pip]\npackages = [\n  \"numpy\",\n  \"pandas>>=2\",\n]\n",
        );
        assert_eq!(line, 6);
        assert!(msg.contains("pandas>>=2"), "{msg}");
    }

    #[test]
    fn parent_must_be_said_once() {
        let (line, msg) = err_line("name = \"a\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("no `from`"), "{msg}");
        let (line, _) = err_line("name = \"a\"\nfrom = \"b\"\n[bootstrap]\nsuite = \"bookworm\"\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn a_gpu_count_needs_a_gpu_runtime() {
        let rt =
            parse("name = \"a\"\nfrom = \"b\"\n[runtime]\ngpu-runtime = \"nvidia\"\ngpus = 2\n")
                .unwrap();
        assert_eq!(
            (rt.runtime.gpu_runtime.as_deref(), rt.runtime.gpus),
            (Some("nvidia"), Some(2))
        );
        let (line, msg) = err_line("name = \"a\"\nfrom = \"b\"\n[runtime]\ngpus = 1\n");
        assert_eq!(line, 4);
        assert!(msg.contains("gpu-runtime"), "{msg}");
        let (line, msg) =
            err_line("name = \"a\"\nfrom = \"b\"\n[runtime]\ngpu-runtime = \"nvidia\"\ngpus = 0\n");
        assert_eq!(line, 5);
        assert!(msg.contains("at least 1"), "{msg}");
    }

    #[test]
    fn a_web_server_says_how_it_is_reached() {
        let rt = parse(
            "name = \"a\"\nfrom = \"b\"\n[runtime]\nserver = \"web\"\nhttp-rewrite-uri = \"/\"\nready-path = \"/healthz\"\n",
        )
        .unwrap();
        let http = rt.runtime.http();
        assert!(!http.is_jupyter());
        assert_eq!(http.ready_upstream_path("/user/a/b"), "/healthz");
        let (line, msg) =
            err_line("name = \"a\"\nfrom = \"b\"\n[runtime]\nready-path = \"healthz\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("must start with /"), "{msg}");
        let (_, msg) = err_line("name = \"a\"\nfrom = \"b\"\n[runtime]\nserver = \"rstudio\"\n");
        assert!(msg.contains("rstudio"), "{msg}");
        let (line, msg) = err_line(
            "name = \"a\"\nfrom = \"b\"\n[runtime]\nhttp-headers-request-set = { Host = \"x\" }\n",
        );
        assert_eq!(line, 4);
        assert!(msg.contains("the proxy's own"), "{msg}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4g"), Some(4 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("4 apples"), None);
        assert_eq!(parse_size("-1g"), None);
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("soon"), None);
    }
}
