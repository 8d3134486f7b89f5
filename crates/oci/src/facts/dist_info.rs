//! Python distributions installed in a `site-packages` directory: `*.dist-info` directories
//! (name and version in the directory's name and in `METADATA`, the tags of the wheel it was
//! installed from in `WHEEL`, the tool that installed it in `INSTALLER`), and the older
//! `*.egg-info`, a directory with `PKG-INFO` or (distutils) a single file.
//!
//! Metadata files are read to the end of their header block (the first blank line): the
//! description after it is not read, so a reduced copy holding the header block only (the
//! inspector's layer index) reads the same.

use std::collections::BTreeSet;

use super::Scan;
use crate::fsview::{join, FileKind, FileView, FsViewError};

/// How a distribution's metadata is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// `name-version.dist-info/METADATA` (pip, uv, conda).
    DistInfo,
    /// `name-version.egg-info/PKG-INFO` (setuptools).
    EggInfoDir,
    /// `name-version.egg-info`, the metadata itself (distutils).
    EggInfoFile,
}

/// One distribution of a `site-packages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Its entry in `site-packages` (`six-1.17.0.dist-info`).
    pub entry: String,
    pub format: Format,
    /// Normalized name and version from a `name-version.dist-info` directory's name.
    pub dir_name: Option<(String, String)>,
    /// `Name` of the metadata, as written.
    pub name: Option<String>,
    /// `Version` of the metadata.
    pub version: Option<String>,
    /// `License-Expression` of the metadata, else `License` (as written; may be empty).
    pub license: Option<String>,
    /// `INSTALLER` (`pip`, `uv`, `conda`), trimmed.
    pub installer: Option<String>,
    /// The `Tag:` lines of `WHEEL`: the tags of the wheel file it was installed from.
    pub wheel_tags: BTreeSet<String>,
}

impl Distribution {
    /// The metadata file, relative to `site`.
    pub fn metadata_file(&self) -> String {
        match self.format {
            Format::DistInfo => format!("{}/METADATA", self.entry),
            Format::EggInfoDir => format!("{}/PKG-INFO", self.entry),
            Format::EggInfoFile => self.entry.clone(),
        }
    }

    /// The PEP 503 name: of the metadata's `Name`, else of the directory's name.
    pub fn normalized_name(&self) -> Option<String> {
        match (&self.name, &self.dir_name) {
            (Some(n), _) => Some(normalize(n)),
            (None, Some((n, _))) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// The environment's `site-packages` for Python `major.minor`, relative to the image root:
/// `opt/conda/lib/python3.11/site-packages`.
pub fn site_packages(prefix: &str, python: (u64, u64)) -> String {
    join(
        prefix,
        &format!("lib/python{}.{}/site-packages", python.0, python.1),
    )
}

/// The Python versions of the environment at `prefix`: every `lib/pythonX.Y` that has a
/// `site-packages`, lowest first. Empty when there is no `lib`.
pub fn python_versions(view: &impl FileView, prefix: &str) -> Result<Vec<(u64, u64)>, FsViewError> {
    let lib = join(prefix, "lib");
    let Some(names) = view.read_dir(&lib)? else {
        return Ok(Vec::new());
    };
    let mut versions = Vec::new();
    for v in names
        .iter()
        .filter_map(|n| n.strip_prefix("python"))
        .filter_map(|v| v.split_once('.'))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
    {
        if view.exists(&site_packages(prefix, v))? {
            versions.push(v);
        }
    }
    versions.sort();
    Ok(versions)
}

/// `/opt/conda` from `opt/conda/lib/python3.11/site-packages` (the environment a
/// `site-packages` belongs to: above `lib/pythonX.Y` or `lib`, else the directory itself).
pub fn prefix_of(site_packages: &str) -> String {
    let parts: Vec<&str> = site_packages.trim_matches('/').split('/').collect();
    let n = parts.len();
    let cut =
        if n >= 3 && parts[n - 3].eq_ignore_ascii_case("lib") && parts[n - 2].starts_with("python")
        {
            n - 3
        } else if n >= 2 && parts[n - 2].eq_ignore_ascii_case("lib") {
            n - 2
        } else {
            n
        };
    format!("/{}", parts[..cut].join("/"))
}

/// PEP 503 normalized name: runs of `-`, `_` and `.` as one `-`, lower case.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut last_sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            if !last_sep {
                out.push('-');
            }
            last_sep = true;
        } else {
            out.extend(c.to_lowercase());
            last_sep = false;
        }
    }
    out
}

/// `name-version.dist-info` → (normalized name, version).
pub fn dist_info_name(dir: &str) -> Option<(String, String)> {
    let stem = dir.strip_suffix(".dist-info")?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalize(name), version.to_string()))
}

/// The header block of a metadata file: up to and including the line before the first blank
/// line.
pub fn header_block(text: &str) -> &str {
    match text.find("\n\n") {
        Some(i) => &text[..i + 1],
        None => text,
    }
}

/// The first value of header `key` (case-insensitive) in the header block of `text`;
/// continuation lines are not headers.
pub fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    header_block(text).lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.eq_ignore_ascii_case(key) && !l.starts_with([' ', '\t'])).then(|| v.trim())
    })
}

/// The tags in a dist-info `WHEEL` file (`Tag: cp311-abi3-manylinux_2_28_x86_64` lines): the
/// tags of the wheel file the distribution was installed from.
pub fn wheel_file_tags(wheel_metadata: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(wheel_metadata)
        .lines()
        .filter_map(|l| l.strip_prefix("Tag:"))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn read_optional(
    view: &impl FileView,
    path: &str,
    scan_problems: &mut Vec<super::FactError>,
) -> Option<Vec<u8>> {
    match view.read(path) {
        Ok(b) => b,
        Err(e) => {
            scan_problems.push(e.into());
            None
        }
    }
}

/// Every distribution in `site` (a `site-packages`, relative to the image root), by entry
/// name: `*.dist-info` and `*.egg-info` directories (symlinks to them are not followed) and
/// `*.egg-info` files. A distribution whose metadata cannot be read is still listed (without
/// name and version from it), with a problem.
pub fn distributions(view: &impl FileView, site: &str) -> Scan<Distribution> {
    let mut scan = Scan::default();
    let names = match view.read_dir(site) {
        Ok(n) => n.unwrap_or_default(),
        Err(e) => {
            scan.problem(e);
            return scan;
        }
    };
    for entry in names {
        let format = if entry.ends_with(".dist-info") {
            Format::DistInfo
        } else if entry.ends_with(".egg-info") {
            Format::EggInfoDir
        } else {
            continue;
        };
        let path = join(site, &entry);
        let kind = match view.metadata(&path, false) {
            Ok(Some(m)) => m.kind,
            Ok(None) => continue,
            Err(e) => {
                scan.problem(e);
                continue;
            }
        };
        let format = match (format, kind) {
            (_, FileKind::Dir) => format,
            (Format::EggInfoDir, FileKind::File) => Format::EggInfoFile,
            _ => continue,
        };
        let mut dist = Distribution {
            dir_name: dist_info_name(&entry),
            entry,
            format,
            name: None,
            version: None,
            license: None,
            installer: None,
            wheel_tags: BTreeSet::new(),
        };
        let meta = read_optional(view, &join(site, &dist.metadata_file()), &mut scan.problems);
        if let Some(bytes) = meta {
            let text = String::from_utf8_lossy(&bytes);
            let text = header_block(&text);
            dist.name = header(text, "Name").map(str::to_string);
            dist.version = header(text, "Version").map(str::to_string);
            dist.license = header(text, "License-Expression")
                .or_else(|| header(text, "License"))
                .map(str::to_string);
        }
        if format == Format::DistInfo {
            dist.installer = read_optional(view, &format!("{path}/INSTALLER"), &mut scan.problems)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string());
            dist.wheel_tags = read_optional(view, &format!("{path}/WHEEL"), &mut scan.problems)
                .map(|b| wheel_file_tags(&b))
                .unwrap_or_default();
        }
        scan.items.push(dist);
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::testing::MemView;

    #[test]
    fn names_headers_and_tags() {
        assert_eq!(normalize("Typing_Extensions"), "typing-extensions");
        assert_eq!(
            normalize("Jupyter_Server.Terminals"),
            "jupyter-server-terminals"
        );
        assert_eq!(
            dist_info_name("jupyter_server-2.14.0.dist-info"),
            Some(("jupyter-server".into(), "2.14.0".into()))
        );
        assert_eq!(dist_info_name("x.egg-info"), None);
        let meta = "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0.2\nSummary: x\n  Name: not this\n\nLicense: in the body\n";
        assert_eq!(header(meta, "name"), Some("PyYAML"));
        assert_eq!(header(meta, "Version"), Some("6.0.2"));
        assert_eq!(header(meta, "License"), None, "the body is not headers");
        assert_eq!(
            wheel_file_tags(b"Wheel-Version: 1.0\nTag: py3-none-any\nTag: \n"),
            BTreeSet::from(["py3-none-any".to_string()])
        );
        assert_eq!(
            site_packages("/opt/conda/", (3, 11)),
            "opt/conda/lib/python3.11/site-packages"
        );
        assert_eq!(
            prefix_of("opt/conda/lib/python3.11/site-packages"),
            "/opt/conda"
        );
        assert_eq!(
            prefix_of("home/jovyan/.local/lib/python3.12/site-packages"),
            "/home/jovyan/.local"
        );
        assert_eq!(prefix_of("srv/site-packages"), "/srv/site-packages");
    }

    #[test]
    fn reads_a_site_packages() {
        let site = "opt/conda/lib/python3.11/site-packages";
        let f = |rel: &str| format!("{site}/{rel}");
        let files = [
            (
                f("six-1.17.0.dist-info/METADATA"),
                "Metadata-Version: 2.1\nName: six\nVersion: 1.17.0\nLicense: MIT\n\nbody\n",
            ),
            (f("six-1.17.0.dist-info/INSTALLER"), "uv\n"),
            (
                f("six-1.17.0.dist-info/WHEEL"),
                "Wheel-Version: 1.0\nTag: py2-none-any\nTag: py3-none-any\n",
            ),
            (
                f("old-1.0-py3.11.egg-info/PKG-INFO"),
                "Metadata-Version: 1.0\nName: old\nVersion: 1.0\n",
            ),
            (
                f("single-2.0.egg-info"),
                "Metadata-Version: 1.0\nName: single\nVersion: 2.0\n",
            ),
            (f("nometa-3.dist-info/RECORD"), ""),
            (f("six.py"), ""),
            ("opt/conda/lib/python3.9/other".to_string(), ""),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        let view = MemView::with(&files);
        let got = distributions(&view, site).into_result().unwrap();
        let entries: Vec<(&str, Format)> =
            got.iter().map(|d| (d.entry.as_str(), d.format)).collect();
        assert_eq!(
            entries,
            [
                ("nometa-3.dist-info", Format::DistInfo),
                ("old-1.0-py3.11.egg-info", Format::EggInfoDir),
                ("single-2.0.egg-info", Format::EggInfoFile),
                ("six-1.17.0.dist-info", Format::DistInfo),
            ]
        );
        assert_eq!(got[0].name, None);
        assert_eq!(got[0].normalized_name().as_deref(), Some("nometa"));
        assert_eq!(got[1].version.as_deref(), Some("1.0"));
        assert_eq!(got[2].name.as_deref(), Some("single"));
        let six = &got[3];
        assert_eq!(
            (six.name.as_deref(), six.version.as_deref()),
            (Some("six"), Some("1.17.0"))
        );
        assert_eq!(six.dir_name, Some(("six".into(), "1.17.0".into())));
        assert_eq!(six.license.as_deref(), Some("MIT"));
        assert_eq!(six.installer.as_deref(), Some("uv"));
        assert_eq!(six.wheel_tags.len(), 2);
        assert_eq!(python_versions(&view, "/opt/conda").unwrap(), [(3, 11)]);
        assert!(python_versions(&view, "/nowhere").unwrap().is_empty());
    }
}
