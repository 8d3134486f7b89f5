//! Packages found in an image's file view: conda (`conda-meta/*.json`), Python distributions
//! (`*.dist-info`, `*.egg-info` in every `site-packages`) and Debian (`var/lib/dpkg/status`,
//! `status.d/*`).

pub mod conda;
pub mod dpkg;
pub mod python;

use serde::{Deserialize, Serialize};

use crate::view::View;

/// Which package manager installed a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Conda,
    Pypi,
    Debian,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Conda => "conda",
            Source::Pypi => "pypi",
            Source::Debian => "debian",
        }
    }
}

/// One installed package, with the fields of a `conda list --json` record and where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Package {
    pub source: Source,
    pub name: String,
    pub version: String,
    pub build_string: String,
    pub build_number: u64,
    pub channel: String,
    pub base_url: Option<String>,
    pub platform: Option<String>,
    /// The environment prefix (`/opt/conda`) of conda and Python packages; `/` for Debian.
    pub location: String,
    pub license: Option<String>,
}

impl Package {
    /// The key two images' packages are matched by in a diff.
    pub fn key(&self) -> (Source, String, String) {
        let name = match self.source {
            Source::Pypi => python::normalize(&self.name),
            _ => self.name.clone(),
        };
        (self.source, self.location.clone(), name)
    }
}

/// Every package of the view, sorted by source, location and name.
pub fn packages(view: &View) -> Vec<Package> {
    let mut out = conda::packages(view);
    out.extend(python::packages(view, &out));
    out.extend(dpkg::packages(view));
    out.sort_by(|a, b| {
        (a.source, &a.location, a.name.to_lowercase(), &a.version).cmp(&(
            b.source,
            &b.location,
            b.name.to_lowercase(),
            &b.version,
        ))
    });
    out
}
