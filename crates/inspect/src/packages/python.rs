//! Python distributions in every `site-packages` of the image: `*.dist-info/METADATA` (with
//! `INSTALLER`), `*.egg-info/PKG-INFO` and single-file `*.egg-info`. Distributions conda
//! installed (INSTALLER `conda`, or a conda package of the same name in the same
//! environment) are left to the conda records, as `conda list` does.

use std::collections::HashSet;

use super::{Package, Source};
use crate::view::View;

/// PEP 503 normalized name: lower case, runs of `-_.` as one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The first value of each wanted header of a metadata header block.
pub fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.eq_ignore_ascii_case(key) && !l.starts_with([' ', '\t'])).then(|| v.trim())
    })
}

/// `/opt/conda` from `opt/conda/lib/python3.11/site-packages`.
fn prefix_of(site_packages: &str) -> String {
    let parts: Vec<&str> = site_packages.split('/').collect();
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

/// Where the metadata of a distribution is, if `path` is one: (site-packages dir, dist dir).
fn distribution_of(path: &str) -> Option<(&str, &str)> {
    if let Some(dist) = path.strip_suffix("/METADATA") {
        let (site, name) = dist.rsplit_once('/')?;
        return name.ends_with(".dist-info").then_some((site, dist));
    }
    if let Some(dist) = path.strip_suffix("/PKG-INFO") {
        let (site, name) = dist.rsplit_once('/')?;
        return name.ends_with(".egg-info").then_some((site, dist));
    }
    if path.ends_with(".egg-info") {
        let (site, _) = path.rsplit_once('/')?;
        return Some((site, path));
    }
    None
}

pub fn packages(view: &View, conda: &[Package]) -> Vec<Package> {
    let conda_names: HashSet<(String, String)> = conda
        .iter()
        .map(|p| (p.location.clone(), normalize(&p.name)))
        .collect();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut out = Vec::new();
    for (path, text) in view.captured() {
        let Some((site, dist)) = distribution_of(path) else {
            continue;
        };
        if !site.ends_with("site-packages") {
            continue;
        }
        let installer = view
            .captured()
            .get(&format!("{dist}/INSTALLER"))
            .map(|s| s.trim().to_string());
        if installer.as_deref() == Some("conda") {
            continue;
        }
        let (Some(name), Some(version)) = (header(text, "Name"), header(text, "Version")) else {
            continue;
        };
        let location = prefix_of(site);
        let key = (location.clone(), normalize(name));
        if conda_names.contains(&key) || !seen.insert(key) {
            continue;
        }
        out.push(Package {
            source: Source::Pypi,
            name: name.to_string(),
            version: version.to_string(),
            build_string: "pypi_0".to_string(),
            build_number: 0,
            channel: "pypi".to_string(),
            base_url: Some("https://conda.anaconda.org/pypi".to_string()),
            platform: Some("pypi".to_string()),
            location,
            license: header(text, "License-Expression")
                .or_else(|| header(text, "License"))
                .filter(|l| !l.is_empty() && l.len() < 200)
                .map(str::to_string),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_prefixes_headers() {
        assert_eq!(
            normalize("Jupyter_Server.Terminals"),
            "jupyter-server-terminals"
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
        let meta =
            "Metadata-Version: 2.1\nName: PyYAML\nVersion: 6.0.2\nSummary: x\n  Name: not this\n";
        assert_eq!(header(meta, "name"), Some("PyYAML"));
        assert_eq!(header(meta, "Version"), Some("6.0.2"));
        assert_eq!(
            distribution_of("a/site-packages/x-1.dist-info/METADATA"),
            Some(("a/site-packages", "a/site-packages/x-1.dist-info"))
        );
        assert_eq!(
            distribution_of("a/site-packages/x-1.egg-info"),
            Some(("a/site-packages", "a/site-packages/x-1.egg-info"))
        );
    }
}
