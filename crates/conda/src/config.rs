//! conda's configuration: `.condarc` files (the YAML subset conda writes: scalars and lists
//! of scalars at the top level), the environment variables that override them, and where
//! environments and packages go.
//!
//! Files are read from lowest to highest precedence: `/etc/conda/.condarc`,
//! `<root prefix>/.condarc`, `~/.config/conda/.condarc`, `~/.condarc`,
//! `<target prefix>/.condarc`, `$CONDARC`. Lists (`channels`, `envs_dirs`, `pkgs_dirs`) are
//! merged with the higher-precedence file's entries first; scalars are taken from the
//! highest-precedence file that sets them.

use std::path::{Path, PathBuf};

use crate::error::{conda, IoContext, Result};

/// One top-level value of a `.condarc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Scalar(String),
    List(Vec<String>),
    /// Anything else (nested maps), kept as its lines so a rewrite does not lose it.
    Raw(Vec<String>),
}

/// A `.condarc` file: its top-level keys in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcFile {
    pub entries: Vec<(String, Value)>,
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    let t = match t.find(" #") {
        Some(i) if !t.starts_with(['"', '\'']) => t[..i].trim_end(),
        _ => t,
    };
    if t.len() >= 2
        && ((t.starts_with('"') && t.ends_with('"')) || (t.starts_with('\'') && t.ends_with('\'')))
    {
        t[1..t.len() - 1].to_string()
    } else {
        t.to_string()
    }
}

fn quote_if_needed(text: &str) -> String {
    let plain = !text.is_empty()
        && !text.starts_with([
            '-', '[', '{', '!', '&', '*', '#', '|', '>', '%', '@', '"', '\'',
        ])
        && !text.contains(": ")
        && !text.contains(" #");
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

impl RcFile {
    /// Parse the YAML subset conda writes. Lines this reader does not understand below a key
    /// make that key [`Value::Raw`].
    pub fn parse(text: &str) -> RcFile {
        let mut entries: Vec<(String, Value)> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_end();
            if trimmed.trim_start().starts_with('#') || trimmed.trim().is_empty() {
                continue;
            }
            let indented = line.starts_with([' ', '\t']);
            if !indented && !trimmed.starts_with('-') {
                let Some((key, rest)) = trimmed.split_once(':') else {
                    continue;
                };
                let key = key.trim().to_string();
                let rest = rest.trim();
                let value = if rest.is_empty() {
                    Value::List(Vec::new())
                } else if rest.starts_with('[') && rest.ends_with(']') {
                    Value::List(
                        rest[1..rest.len() - 1]
                            .split(',')
                            .map(unquote)
                            .filter(|s| !s.is_empty())
                            .collect(),
                    )
                } else {
                    Value::Scalar(unquote(rest))
                };
                entries.push((key, value));
                continue;
            }
            let Some((_, value)) = entries.last_mut() else {
                continue;
            };
            let item = trimmed.trim_start();
            match value {
                Value::List(items) if item.starts_with("- ") || item == "-" => {
                    let text = unquote(item.trim_start_matches('-'));
                    if text.contains(": ") {
                        let mut raw: Vec<String> =
                            items.iter().map(|i| format!("  - {i}")).collect();
                        raw.push(line.to_string());
                        *value = Value::Raw(raw);
                    } else {
                        items.push(text);
                    }
                }
                Value::List(items) => {
                    let mut raw: Vec<String> = items.iter().map(|i| format!("  - {i}")).collect();
                    raw.push(line.to_string());
                    *value = Value::Raw(raw);
                }
                Value::Raw(lines) => lines.push(line.to_string()),
                Value::Scalar(_) => {}
            }
        }
        RcFile { entries }
    }

    pub fn read(path: &Path) -> Result<Option<RcFile>> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(RcFile::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(None),
            Err(e) => Err(e).io_context(|| format!("read {}", path.display())),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn list(&self, key: &str) -> Option<&[String]> {
        match self.get(key) {
            Some(Value::List(items)) => Some(items),
            _ => None,
        }
    }

    pub fn scalar(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Value::Scalar(s)) => Some(s),
            _ => None,
        }
    }

    /// `config --add KEY VALUE` (`prepend`) or `--append`: the value moves to the front (or
    /// end) of the list, once.
    pub fn add(&mut self, key: &str, item: &str, prepend: bool) -> Result<()> {
        let position = self.entries.iter().position(|(k, _)| k == key);
        let index = match position {
            Some(i) => i,
            None => {
                self.entries
                    .push((key.to_string(), Value::List(Vec::new())));
                self.entries.len() - 1
            }
        };
        match &mut self.entries[index].1 {
            Value::List(items) => {
                items.retain(|i| i != item);
                if prepend {
                    items.insert(0, item.to_string());
                } else {
                    items.push(item.to_string());
                }
                Ok(())
            }
            _ => Err(conda(format!(
                "CondaValueError: Key '{key}' is not a known sequence parameter."
            ))),
        }
    }

    /// `config --remove KEY VALUE`.
    pub fn remove(&mut self, key: &str, item: &str) -> Result<()> {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, Value::List(items))) if items.iter().any(|i| i == item) => {
                items.retain(|i| i != item);
                Ok(())
            }
            _ => Err(conda(format!(
                "CondaKeyError: '{key}': '{item}' is not in the '{key}' key of the config file"
            ))),
        }
    }

    /// `config --set KEY VALUE`.
    pub fn set(&mut self, key: &str, value: &str) {
        let value = Value::Scalar(value.to_string());
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (key, value) in &self.entries {
            match value {
                Value::Scalar(s) => out.push_str(&format!("{key}: {}\n", quote_if_needed(s))),
                Value::List(items) if items.is_empty() => out.push_str(&format!("{key}: []\n")),
                Value::List(items) => {
                    out.push_str(&format!("{key}:\n"));
                    for i in items {
                        out.push_str(&format!("  - {}\n", quote_if_needed(i)));
                    }
                }
                Value::Raw(lines) => {
                    out.push_str(&format!("{key}:\n"));
                    for l in lines {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Write the file (a temporary name renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::prefix::write_atomic(path, self.to_yaml().as_bytes())
    }
}

/// The configuration in force: every `.condarc` read, with the environment's overrides.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `(path, file)` from lowest to highest precedence, the files that exist.
    pub files: Vec<(PathBuf, RcFile)>,
    pub home: Option<PathBuf>,
    pub root_prefix: PathBuf,
}

/// The channel conda uses when no `.condarc` names one.
pub const DEFAULT_CHANNEL: &str = "conda-forge";
pub const DEFAULT_CHANNEL_ALIAS: &str = "https://conda.anaconda.org";

impl Config {
    /// The files a command reads for a target prefix (`None`: the root prefix).
    pub fn rc_paths(
        root_prefix: &Path,
        home: Option<&Path>,
        target: Option<&Path>,
    ) -> Vec<PathBuf> {
        let mut paths = vec![
            PathBuf::from("/etc/conda/.condarc"),
            root_prefix.join(".condarc"),
        ];
        if let Some(home) = home {
            paths.push(home.join(".config/conda/.condarc"));
            paths.push(home.join(".condarc"));
        }
        if let Some(t) = target.filter(|t| *t != root_prefix) {
            paths.push(t.join(".condarc"));
        }
        if let Some(p) = std::env::var_os("CONDARC").filter(|p| !p.is_empty()) {
            paths.push(PathBuf::from(p));
        }
        paths
    }

    pub fn load(root_prefix: &Path, home: Option<&Path>, target: Option<&Path>) -> Result<Config> {
        let mut files = Vec::new();
        for path in Self::rc_paths(root_prefix, home, target) {
            if let Some(file) = RcFile::read(&path)? {
                if !files.iter().any(|(p, _): &(PathBuf, RcFile)| p == &path) {
                    files.push((path, file));
                }
            }
        }
        Ok(Config {
            files,
            home: home.map(Path::to_path_buf),
            root_prefix: root_prefix.to_path_buf(),
        })
    }

    /// A list merged over the files, highest precedence first, each item once.
    pub fn merged_list(&self, key: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, file) in self.files.iter().rev() {
            for item in file.list(key).unwrap_or_default() {
                if !out.contains(item) {
                    out.push(item.clone());
                }
            }
        }
        out
    }

    pub fn scalar(&self, key: &str) -> Option<String> {
        self.files
            .iter()
            .rev()
            .find_map(|(_, f)| f.scalar(key).map(str::to_string))
    }

    fn env_list(name: &str) -> Option<Vec<PathBuf>> {
        let value = std::env::var(name).ok()?;
        let items: Vec<PathBuf> = value
            .split([':', ','])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        (!items.is_empty()).then_some(items)
    }

    fn expand(&self, path: &str) -> PathBuf {
        match (path.strip_prefix("~/"), &self.home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ if path == "~" => self.home.clone().unwrap_or_else(|| PathBuf::from(path)),
            _ => PathBuf::from(path),
        }
    }

    /// Channels by name or URL, as configured (default conda-forge).
    pub fn channels(&self) -> Vec<String> {
        let channels = self.merged_list("channels");
        if channels.is_empty() {
            vec![DEFAULT_CHANNEL.to_string()]
        } else {
            channels
        }
    }

    pub fn channel_alias(&self) -> String {
        self.scalar("channel_alias")
            .unwrap_or_else(|| DEFAULT_CHANNEL_ALIAS.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// A channel name, URL or directory as a URL or directory `nbrt_conda::channels`
    /// takes: names go below `channel_alias`; `defaults` is Anaconda's main and r.
    pub fn channel_url(&self, channel: &str) -> Vec<String> {
        let c = channel.trim();
        if c.contains("://") || c.starts_with('/') || c.starts_with('.') {
            return vec![c.to_string()];
        }
        if c == "defaults" {
            return match self.merged_list("default_channels") {
                d if !d.is_empty() => d,
                _ => vec![
                    "https://repo.anaconda.com/pkgs/main".to_string(),
                    "https://repo.anaconda.com/pkgs/r".to_string(),
                ],
            };
        }
        vec![format!("{}/{c}", self.channel_alias())]
    }

    /// `envs_dirs`: `CONDA_ENVS_PATH` / `CONDA_ENVS_DIRS`, the `.condarc` list, else
    /// `<root>/envs` and `~/.conda/envs` (the writable one first).
    pub fn envs_dirs(&self) -> Vec<PathBuf> {
        if let Some(dirs) =
            Self::env_list("CONDA_ENVS_PATH").or_else(|| Self::env_list("CONDA_ENVS_DIRS"))
        {
            return dirs;
        }
        let configured = self.merged_list("envs_dirs");
        if !configured.is_empty() {
            return configured.iter().map(|d| self.expand(d)).collect();
        }
        let root = self.root_prefix.join("envs");
        let user = self.home.as_ref().map(|h| h.join(".conda/envs"));
        match user {
            Some(user) if !writable_dir(&self.root_prefix) => vec![user, root],
            Some(user) => vec![root, user],
            None => vec![root],
        }
    }

    /// `pkgs_dirs`: `CONDA_PKGS_DIRS`, the `.condarc` list, else `<root>/pkgs` where the root
    /// prefix is writable, else `~/.conda/pkgs`.
    pub fn pkgs_dirs(&self) -> Vec<PathBuf> {
        if let Some(dirs) = Self::env_list("CONDA_PKGS_DIRS") {
            return dirs;
        }
        let configured = self.merged_list("pkgs_dirs");
        if !configured.is_empty() {
            return configured.iter().map(|d| self.expand(d)).collect();
        }
        let root = self.root_prefix.join("pkgs");
        let user = self.home.as_ref().map(|h| h.join(".conda/pkgs"));
        match user {
            Some(user) if !writable_dir(&self.root_prefix) => vec![user, root],
            Some(user) => vec![root, user],
            None => vec![root],
        }
    }

    /// The first `pkgs_dirs` entry this user can write to (created when missing).
    pub fn writable_pkgs_dir(&self) -> Result<PathBuf> {
        let dirs = self.pkgs_dirs();
        for dir in &dirs {
            if std::fs::create_dir_all(dir).is_ok() && writable_dir(dir) {
                return Ok(dir.clone());
            }
        }
        Err(conda(format!(
            "NotWritableError: none of the package cache directories is writable: {}",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    pub fn user_rc_path(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".condarc"))
    }
}

/// Whether this process can create files in `dir` (tried, not guessed from modes).
pub fn writable_dir(dir: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".nbrt-conda-probe")
        .tempfile_in(dir)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_yaml_subset_conda_writes() {
        let text = "# comment\nchannels:\n  - conda-forge\n  - 'http://x/y'\nalways_yes: true\n\
                    pkgs_dirs: [/a, \"/b\"]\nproxy_servers:\n  http: http://p:1\nenvs_dirs:\n";
        let mut rc = RcFile::parse(text);
        assert_eq!(rc.list("channels").unwrap(), ["conda-forge", "http://x/y"]);
        assert_eq!(rc.scalar("always_yes"), Some("true"));
        assert_eq!(rc.list("pkgs_dirs").unwrap(), ["/a", "/b"]);
        assert!(matches!(rc.get("proxy_servers"), Some(Value::Raw(_))));
        rc.add("channels", "http://x/y", true).unwrap();
        rc.add("envs_dirs", "~/envs", false).unwrap();
        assert_eq!(
            rc.to_yaml(),
            "channels:\n  - http://x/y\n  - conda-forge\nalways_yes: true\npkgs_dirs:\n  - /a\n  - /b\n\
             proxy_servers:\n  http: http://p:1\nenvs_dirs:\n  - ~/envs\n"
        );
        assert_eq!(RcFile::parse(&rc.to_yaml()), rc);
        assert!(rc.add("always_yes", "x", true).is_err());
    }

    #[test]
    fn lists_merge_with_the_higher_precedence_first() {
        let config = Config {
            files: vec![
                (
                    PathBuf::from("/sys"),
                    RcFile::parse("channels:\n  - a\n  - b\n"),
                ),
                (
                    PathBuf::from("/user"),
                    RcFile::parse("channels:\n  - c\n  - a\n"),
                ),
            ],
            home: Some(PathBuf::from("/home/u")),
            root_prefix: PathBuf::from("/opt/conda"),
        };
        assert_eq!(config.channels(), ["c", "a", "b"]);
        assert_eq!(
            config.channel_url("conda-forge"),
            ["https://conda.anaconda.org/conda-forge"]
        );
        assert_eq!(config.channel_url("file:///x"), ["file:///x"]);
        assert_eq!(Config::default().channels(), ["conda-forge"]);
    }
}
