//! conda packages: one `conda-meta/<name>-<version>-<build>.json` record per package in each
//! environment.

use std::collections::BTreeSet;

use nbrt_oci::facts::conda_meta;

use super::{Package, Source};
use crate::view::View;

pub use nbrt_oci::facts::conda_meta::CondaMetaRecord;

/// Channel name and base URL the way `conda list --json` shows them: one definition, shared
/// with the images' `conda` command (`nbrt_conda::list`), so `nbrt manifest` and
/// `conda list --json` in a container give the same records.
pub use nbrt_conda::list::channel_of;

/// The prefix of an environment from the path of its `conda-meta` directory.
fn prefix_of(conda_meta_file: &str) -> String {
    let dir = conda_meta_file
        .rsplit_once("/conda-meta/")
        .map(|(p, _)| p)
        .unwrap_or("");
    format!("/{dir}")
}

/// The environments of the view (`/opt/conda`): every prefix whose `conda-meta` has a
/// captured record.
fn prefixes(view: &View) -> BTreeSet<String> {
    view.captured()
        .keys()
        .filter(|p| {
            p.ends_with(".json")
                && p.rsplit_once('/')
                    .is_some_and(|(dir, _)| dir == "conda-meta" || dir.ends_with("/conda-meta"))
        })
        .map(|p| prefix_of(p))
        .collect()
}

pub fn packages(view: &View) -> Vec<Package> {
    let mut out = Vec::new();
    for prefix in prefixes(view) {
        // Records the index could not keep have a warning in the view already.
        for rec in conda_meta::records(view, &prefix).into_items() {
            let (channel, base_url) = match rec.channel_url() {
                Some(c) => channel_of(&c),
                None => (String::new(), None),
            };
            out.push(Package {
                source: Source::Conda,
                name: rec.name,
                version: rec.version,
                build_string: rec.build,
                build_number: rec.build_number,
                channel,
                base_url,
                platform: rec.subdir,
                location: prefix.clone(),
                license: rec.license,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        assert_eq!(
            channel_of("https://conda.anaconda.org/conda-forge/linux-64"),
            (
                "conda-forge".into(),
                Some("https://conda.anaconda.org/conda-forge".into())
            )
        );
        assert_eq!(
            channel_of("https://repo.anaconda.com/pkgs/main"),
            (
                "pkgs/main".into(),
                Some("https://repo.anaconda.com/pkgs/main".into())
            )
        );
        assert_eq!(
            channel_of("file:///local-channel"),
            ("local-channel".into(), Some("file:///local-channel".into()))
        );
        assert_eq!(
            channel_of("conda-forge"),
            (
                "conda-forge".into(),
                Some("https://conda.anaconda.org/conda-forge".into())
            )
        );
        assert_eq!(prefix_of("opt/conda/conda-meta/x-1-0.json"), "/opt/conda");
        assert_eq!(
            prefix_of("opt/conda/envs/r/conda-meta/x-1-0.json"),
            "/opt/conda/envs/r"
        );
    }
}
