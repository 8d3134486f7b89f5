//! Python distributions in every `site-packages` of the image: `*.dist-info/METADATA` (with
//! `INSTALLER`), `*.egg-info/PKG-INFO` and single-file `*.egg-info`. Distributions conda
//! installed (INSTALLER `conda`, or a conda package of the same name in the same
//! environment) are left to the conda records, as `conda list` does. Each `site-packages`
//! is read by the shared reader [`nbrt_oci::facts::dist_info`].

use std::collections::{BTreeSet, HashSet};

use nbrt_oci::facts::dist_info;

use super::{Package, Source};
use crate::view::View;

#[cfg(test)]
use nbrt_oci::facts::dist_info::prefix_of;
pub use nbrt_oci::facts::dist_info::{header, normalize};

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

/// Every `site-packages` of the view with a captured distribution.
fn sites(view: &View) -> BTreeSet<&str> {
    view.captured()
        .keys()
        .filter_map(|p| distribution_of(p))
        .map(|(site, _)| site)
        .filter(|site| site.ends_with("site-packages"))
        .collect()
}

pub fn packages(view: &View, conda: &[Package]) -> Vec<Package> {
    let conda_names: HashSet<(String, String)> = conda
        .iter()
        .map(|p| (p.location.clone(), normalize(&p.name)))
        .collect();
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut out = Vec::new();
    for site in sites(view) {
        // Metadata the index could not keep has a warning in the view already.
        for dist in dist_info::distributions(view, site).into_items() {
            if dist.installer.as_deref() == Some("conda") {
                continue;
            }
            let (Some(name), Some(version)) = (dist.name, dist.version) else {
                continue;
            };
            let location = dist_info::prefix_of(site);
            let key = (location.clone(), normalize(&name));
            if conda_names.contains(&key) || !seen.insert(key) {
                continue;
            }
            out.push(Package {
                source: Source::Pypi,
                name,
                version,
                build_string: "pypi_0".to_string(),
                build_number: 0,
                channel: "pypi".to_string(),
                base_url: Some(nbrt_conda::list::PYPI_BASE_URL.to_string()),
                platform: Some("pypi".to_string()),
                location,
                license: dist.license.filter(|l| !l.is_empty() && l.len() < 200),
            });
        }
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
