//! The conda step: conda packages solved and linked with the rattler crates, as one layer's
//! worth of files.
//!
//! [`install`] chains four parts, each in its own file:
//!
//! 1. `solve` reads the image's installed `conda-meta` records and decides what the prefix
//!    holds after the step: the request's specs solved against `channels` (installed packages
//!    are favoured, so they stay unless a spec needs a change), or the builds of `runtime.lock`
//!    found again without solving.
//! 2. `channels` is where packages come from: channel URLs and local channel directories,
//!    their canonical `file:///` URLs (no host path ever reaches a record or the lock), and
//!    their repodata, fetched, read or indexed in memory.
//! 3. `fetch` finds or downloads the archive of each package to link (package files given
//!    offline, local channel files, the download cache), checks it against its record
//!    (sha256 or md5; name, version, build) and extracts it into the package cache.
//! 4. `link` plans the transaction between installed and desired, links only the delta into a
//!    staging directory that stands for the image root (prefix placeholders, `noarch: python`,
//!    `conda-meta` records), and names the files of removed or replaced packages as whiteout
//!    paths for the caller to write.
//!
//! `error` holds the error helpers the four share.

mod channels;
mod error;
mod fetch;
mod link;
mod solve;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use fetch::{Fetcher, Sources};

/// What to install into a conda prefix of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaRequest {
    /// The prefix inside the image, e.g. `/opt/conda`.
    pub prefix: String,
    /// Channel URLs (`https://…`, `file://…`) or local channel directories, highest priority
    /// first.
    pub channels: Vec<String>,
    /// Match specs, e.g. `graphviz >=2.50`, `alpha=1.0`.
    pub specs: Vec<String>,
    /// `.conda` / `.tar.bz2` files installed offline.
    pub package_files: Vec<PathBuf>,
    /// The conda platform (subdir) of the image, e.g. `linux-64`.
    pub platform: String,
    /// When rebuilding from `runtime.lock`: install exactly these, without solving.
    pub locked: Option<Vec<LockedCondaPackage>>,
}

/// One conda package as `runtime.lock` records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockedCondaPackage {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    /// Canonical URL (see `channels`); never a host temporary path.
    pub url: String,
    /// Hex sha256 of the archive; empty when an image's record did not carry one.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl Ord for LockedCondaPackage {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (
            &self.name,
            &self.version,
            &self.build,
            &self.subdir,
            &self.url,
            &self.sha256,
            &self.md5,
        )
            .cmp(&(
                &other.name,
                &other.version,
                &other.build,
                &other.subdir,
                &other.url,
                &other.sha256,
                &other.md5,
            ))
    }
}

impl PartialOrd for LockedCondaPackage {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What an [`install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaOutcome {
    /// Every package of the prefix after the step (sorted by name), for `runtime.lock`.
    pub installed: Vec<LockedCondaPackage>,
    /// Packages new to the prefix, as `name=version=build`, sorted.
    pub added: Vec<String>,
    /// Packages gone from the prefix, as `name=version=build`, sorted.
    pub removed: Vec<String>,
    /// Packages replaced (or relinked): `(name, old "version=build", new "version=build")`.
    pub changed: Vec<(String, String, String)>,
    /// Paths relative to the image root (`opt/conda/lib/old.so`) of files of removed or
    /// replaced packages that the new files do not overwrite, to be written as whiteouts.
    pub whiteouts: Vec<String>,
}

/// Solve (or take from the lock) and link the delta into `staging`.
///
/// `installed_meta` holds the image's `conda-meta/*.json` documents (may be empty); `python` is
/// the image's Python `(major, minor)` when known, used for `noarch: python` packages when the
/// prefix has no `python` package; `staging` is an empty directory standing for the image
/// root; `cache_dir` keeps extracted packages and downloads between builds.
pub async fn install(
    installed_meta: &[Vec<u8>],
    python: Option<(u64, u64)>,
    req: &CondaRequest,
    staging: &Path,
    cache_dir: &Path,
) -> Result<CondaOutcome> {
    let platform = channels::parse_platform(&req.platform)?;
    let prefix = link::normalize_prefix(&req.prefix)?;
    let installed = solve::parse_installed(installed_meta)?;
    let mut fetcher = Fetcher::new(cache_dir);
    let mut sources = Sources::default();

    let desired = match &req.locked {
        Some(locked) => {
            solve::resolve_locked(
                locked,
                &installed,
                req,
                platform,
                &mut fetcher,
                &mut sources,
            )
            .await?
        }
        None => solve::solve(&installed, req, platform, &mut fetcher, &mut sources).await?,
    };

    let plan = link::plan(&installed, &desired, python, platform)?;
    let archives = fetch::archives(&plan.to_link, &sources, &mut fetcher).await?;
    let written = link::link_packages(
        &plan,
        &archives,
        staging,
        &prefix,
        &req.prefix,
        platform,
        cache_dir,
    )
    .await?;
    let whiteouts = link::whiteouts(&plan.to_unlink, staging, &prefix);

    let mut installed_after: Vec<LockedCondaPackage> = desired
        .iter()
        .map(|record| {
            written
                .get(record.package_record.name.as_normalized())
                .cloned()
                .unwrap_or_else(|| solve::locked_entry(record))
        })
        .collect();
    installed_after.sort();
    Ok(CondaOutcome {
        installed: installed_after,
        added: plan.added,
        removed: plan.removed,
        changed: plan.changed,
        whiteouts,
    })
}
