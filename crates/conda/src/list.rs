//! What a prefix holds, in the shapes conda prints it: `conda list` (text, `--json`,
//! `--explicit`), pip-installed distributions (channel `pypi`, build `pypi_0`), and
//! `conda env export`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rattler_conda_types::PrefixRecord;
use serde::Serialize;

const SUBDIRS: &[&str] = &[
    "noarch",
    "linux-64",
    "linux-aarch64",
    "linux-ppc64le",
    "linux-s390x",
    "linux-32",
    "osx-64",
    "osx-arm64",
    "win-64",
    "win-32",
];

/// Channel name and base URL as `conda list --json` shows them (the same as `nbrt manifest`,
/// `nbrt_inspect::packages::conda::channel_of`): the channel URL without its subdir is the
/// base URL; the name is the path on anaconda.org / repo.anaconda.com (`conda-forge`,
/// `pkgs/main`), else the last path component.
pub fn channel_of(channel: &str) -> (String, Option<String>) {
    let channel = channel.trim_end_matches('/');
    let Some((scheme, rest)) = channel.split_once("://") else {
        let name = channel.to_string();
        let base = (!name.is_empty()).then(|| format!("https://conda.anaconda.org/{name}"));
        return (name, base);
    };
    let mut base = channel.to_string();
    if let Some((head, last)) = base.rsplit_once('/') {
        if SUBDIRS.contains(&last) && head.len() > scheme.len() + 3 {
            base = head.to_string();
        }
    }
    let path_start = scheme.len() + 3;
    let (host, path) = match base[path_start..].split_once('/') {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => (rest.to_string(), String::new()),
    };
    let name = if host == "conda.anaconda.org" || host == "repo.anaconda.com" || path.is_empty() {
        if path.is_empty() {
            host
        } else {
            path
        }
    } else {
        path.rsplit('/').next().unwrap_or(&path).to_string()
    };
    (name, Some(base))
}

/// One package as `conda list --json` prints it (keys in conda's sorted order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListRecord {
    pub base_url: Option<String>,
    pub build_number: u64,
    pub build_string: String,
    pub channel: String,
    pub dist_name: String,
    pub name: String,
    pub platform: String,
    pub version: String,
    /// Not printed: the archive URL (`--explicit`) and md5.
    #[serde(skip)]
    pub url: Option<String>,
    #[serde(skip)]
    pub md5: Option<String>,
}

/// The channel URL a record names: its `channel`, else the directory of its URL (as
/// `nbrt_oci::facts::conda_meta::CondaMetaRecord::channel_url` reads it, so `conda list` and
/// `nbrt manifest` agree).
fn record_channel(record: &PrefixRecord) -> Option<String> {
    let r = &record.repodata_record;
    match r.channel.as_deref() {
        Some(c) if !c.is_empty() => Some(c.to_string()),
        _ => r.url.as_str().rsplit_once('/').map(|(c, _)| c.to_string()),
    }
}

pub fn conda_record(record: &PrefixRecord) -> ListRecord {
    let p = &record.repodata_record.package_record;
    let (channel, base_url) = match record_channel(record) {
        Some(c) => channel_of(&c),
        None => (String::new(), None),
    };
    ListRecord {
        base_url,
        build_number: p.build_number,
        build_string: p.build.to_string(),
        channel,
        dist_name: format!("{}-{}-{}", p.name.as_normalized(), p.version, p.build),
        name: p.name.as_normalized().to_string(),
        platform: p.subdir.clone(),
        version: p.version.to_string(),
        url: Some(record.repodata_record.url.to_string()),
        md5: p.md5.map(hex::encode),
    }
}

/// The base URL conda gives pip-installed distributions.
pub const PYPI_BASE_URL: &str = "https://conda.anaconda.org/pypi";

/// A pip-installed distribution as conda lists it.
pub fn pypi_record(name: &str, version: &str) -> ListRecord {
    ListRecord {
        base_url: Some(PYPI_BASE_URL.to_string()),
        build_number: 0,
        build_string: "pypi_0".to_string(),
        channel: "pypi".to_string(),
        dist_name: format!("{name}-{version}-pypi_0"),
        name: name.to_string(),
        platform: "pypi".to_string(),
        version: version.to_string(),
        url: None,
        md5: None,
    }
}

/// A distribution name compared across conda and pip: lower case, `-` for `_` and `.`.
fn normalize_dist_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace(['_', '.'], "-")
}

/// `Name:` and `Version:` of a METADATA / PKG-INFO file.
fn metadata_name_version(text: &str) -> Option<(String, String)> {
    let mut name = None;
    let mut version = None;
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name.get_or_insert_with(|| v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version.get_or_insert_with(|| v.trim().to_string());
        }
    }
    Some((name?, version?))
}

/// The `site-packages` directories of a prefix.
pub fn site_packages(prefix: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(prefix.join("lib"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
                .map(|e| e.path().join("site-packages"))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Distributions in the prefix's site-packages that no conda package installed (their
/// `.dist-info` / `.egg-info` is in no record's files, their `INSTALLER` is not conda, and no
/// record has their name), named as their metadata names them (as `nbrt manifest` does).
pub fn pip_records(prefix: &Path, installed: &[PrefixRecord]) -> Vec<ListRecord> {
    let owned: BTreeSet<String> = installed
        .iter()
        .flat_map(|r| {
            r.files
                .iter()
                .chain(r.paths_data.paths.iter().map(|p| &p.relative_path))
        })
        .filter_map(|f| {
            let text = f.to_string_lossy();
            let (_, after) = text.split_once("site-packages/")?;
            let top = after.split('/').next()?;
            (top.ends_with(".dist-info") || top.ends_with(".egg-info")).then(|| top.to_string())
        })
        .collect();
    let conda_names: BTreeSet<String> = installed
        .iter()
        .map(|r| normalize_dist_name(r.repodata_record.package_record.name.as_normalized()))
        .collect();
    let mut out: Vec<ListRecord> = Vec::new();
    for dir in site_packages(prefix) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".dist-info") || n.ends_with(".egg-info"))
            .collect();
        names.sort();
        for entry in names {
            if owned.contains(&entry) {
                continue;
            }
            let path = dir.join(&entry);
            let metadata = if entry.ends_with(".dist-info") {
                path.join("METADATA")
            } else if path.is_dir() {
                path.join("PKG-INFO")
            } else {
                path.clone()
            };
            let Some((name, version)) = std::fs::read_to_string(&metadata)
                .ok()
                .and_then(|t| metadata_name_version(&t))
            else {
                continue;
            };
            let installer = std::fs::read_to_string(path.join("INSTALLER")).unwrap_or_default();
            if installer.trim() == "conda" {
                continue;
            }
            let key = normalize_dist_name(&name);
            if conda_names.contains(&key) || out.iter().any(|r| normalize_dist_name(&r.name) == key)
            {
                continue;
            }
            out.push(pypi_record(&name, &version));
        }
    }
    out
}

/// Every package of the prefix, conda's then pip's, sorted by name as conda sorts them.
pub fn records(prefix: &Path, installed: &[PrefixRecord]) -> Vec<ListRecord> {
    let mut out: Vec<ListRecord> = installed.iter().map(conda_record).collect();
    out.extend(pip_records(prefix, installed));
    out.sort_by(|a, b| {
        (a.name.to_lowercase(), &a.channel, &a.version).cmp(&(
            b.name.to_lowercase(),
            &b.channel,
            &b.version,
        ))
    });
    out
}

/// `conda list --json`: conda's layout (`json.dumps(indent=2, sort_keys=True)`).
pub fn to_json(records: &[ListRecord]) -> String {
    serde_json::to_string_pretty(records).unwrap_or_else(|_| "[]".to_string())
}

/// `conda list` as text.
pub fn to_text(prefix: &Path, records: &[ListRecord]) -> String {
    let mut out = format!(
        "# packages in environment at {}:\n#\n# {:<23} {:<15} {:>15}  Channel\n",
        prefix.display(),
        "Name",
        "Version",
        "Build"
    );
    for r in records {
        out.push_str(
            format!(
                "{:<25} {:<15} {:>15}  {}",
                r.name, r.version, r.build_string, r.channel
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out
}

/// `conda list --explicit` (`--md5`): the archive URLs, for `conda create --file`.
pub fn to_explicit(platform: &str, records: &[ListRecord], md5: bool) -> String {
    let mut out = format!(
        "# This file may be used to create an environment using:\n\
         # $ conda create --name <env> --file <this file>\n# platform: {platform}\n@EXPLICIT\n"
    );
    for r in records {
        let Some(url) = r
            .url
            .as_deref()
            .filter(|u| u.contains("://") && r.channel != "pypi")
        else {
            continue;
        };
        if url.starts_with("file:///") && !url.trim_start_matches("file:///").contains('/') {
            // A package file installed offline: no channel to get it from again.
            continue;
        }
        out.push_str(url);
        if let (true, Some(m)) = (md5, &r.md5) {
            out.push('#');
            out.push_str(m);
        }
        out.push('\n');
    }
    out
}

/// `conda env export`.
#[derive(Debug, Clone, Serialize)]
pub struct Export {
    pub name: String,
    pub channels: Vec<String>,
    pub dependencies: Vec<serde_json::Value>,
    pub prefix: String,
}

impl Export {
    pub fn new(
        name: &str,
        prefix: &Path,
        channels: Vec<String>,
        records: &[ListRecord],
        no_builds: bool,
    ) -> Export {
        let mut dependencies = Vec::new();
        let mut pip = Vec::new();
        for r in records {
            if r.channel == "pypi" {
                pip.push(serde_json::Value::String(format!(
                    "{}=={}",
                    r.name, r.version
                )));
            } else if no_builds {
                dependencies.push(format!("{}={}", r.name, r.version).into());
            } else {
                dependencies.push(format!("{}={}={}", r.name, r.version, r.build_string).into());
            }
        }
        if !pip.is_empty() {
            let mut map = serde_json::Map::new();
            map.insert("pip".to_string(), serde_json::Value::Array(pip));
            dependencies.push(serde_json::Value::Object(map));
        }
        Export {
            name: name.to_string(),
            channels,
            dependencies,
            prefix: prefix.display().to_string(),
        }
    }

    pub fn to_yaml(&self) -> String {
        let mut out = format!("name: {}\nchannels:\n", self.name);
        for c in &self.channels {
            out.push_str(&format!("  - {c}\n"));
        }
        out.push_str("dependencies:\n");
        for d in &self.dependencies {
            match d {
                serde_json::Value::String(s) => out.push_str(&format!("  - {s}\n")),
                serde_json::Value::Object(map) => {
                    for (k, v) in map {
                        out.push_str(&format!("  - {k}:\n"));
                        for item in v.as_array().into_iter().flatten() {
                            out.push_str(&format!("      - {}\n", item.as_str().unwrap_or("")));
                        }
                    }
                }
                _ => {}
            }
        }
        out.push_str(&format!("prefix: {}\n", self.prefix));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_read_as_conda_names_them() {
        assert_eq!(
            channel_of("https://conda.anaconda.org/conda-forge/linux-64"),
            (
                "conda-forge".into(),
                Some("https://conda.anaconda.org/conda-forge".into())
            )
        );
        assert_eq!(
            channel_of("http://127.0.0.1:8080/channel"),
            (
                "channel".into(),
                Some("http://127.0.0.1:8080/channel".into())
            )
        );
    }

    #[test]
    fn pip_distributions_are_listed_as_pypi_unless_conda_owns_them() {
        let tmp = tempfile::tempdir().unwrap();
        let sp = tmp.path().join("lib/python3.11/site-packages");
        for (dir, name, version) in [
            ("Six-1.16.0.dist-info", "six", "1.16.0"),
            ("zope.interface-6.0.dist-info", "zope.interface", "6.0"),
        ] {
            std::fs::create_dir_all(sp.join(dir)).unwrap();
            std::fs::write(
                sp.join(dir).join("METADATA"),
                format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nName: no\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(sp.join("broken.dist-info")).unwrap();
        let records = pip_records(tmp.path(), &[]);
        let json = to_json(&records);
        assert_eq!(
            json,
            r#"[
  {
    "base_url": "https://conda.anaconda.org/pypi",
    "build_number": 0,
    "build_string": "pypi_0",
    "channel": "pypi",
    "dist_name": "six-1.16.0-pypi_0",
    "name": "six",
    "platform": "pypi",
    "version": "1.16.0"
  },
  {
    "base_url": "https://conda.anaconda.org/pypi",
    "build_number": 0,
    "build_string": "pypi_0",
    "channel": "pypi",
    "dist_name": "zope.interface-6.0-pypi_0",
    "name": "zope.interface",
    "platform": "pypi",
    "version": "6.0"
  }
]"#
        );
        let export = Export::new(
            "base",
            tmp.path(),
            vec!["conda-forge".into()],
            &records,
            true,
        );
        assert!(export.to_yaml().contains("  - pip:\n      - six==1.16.0\n"));
    }
}
