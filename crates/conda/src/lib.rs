//! conda packages on the rattler crates, for the builder's `[conda]` step and for the
//! `nbrt-conda` command (`conda`, `mamba`) that stock images carry: one home for what both
//! need.
//!
//! - `channels`: channel URLs and local channel directories, their canonical `file:///`
//!   URLs (no host path ever reaches a record or the lock), and their repodata.
//! - `solve`: what a prefix holds after a request, solved with resolvo against the installed
//!   `conda-meta` records (installed packages favoured), or a lock's builds found again.
//! - `fetch`: the archive of each package (package files, local channels, downloads into the
//!   cache), checked against its record and extracted.
//! - `link`: the transaction between installed and desired, linked into a prefix (prefix
//!   placeholders, `noarch: python`, `conda-meta` records).
//! - `prefix`: a live prefix on this machine (what the command changes): its records, pins,
//!   `conda-meta/history`, removal of unlinked packages' files.
//! - `config`, `list`, `cli`: the command's `.condarc`, listings and command line.
//! - `kernels`: Jupyter kernels for the user's environments that have ipykernel.
//!
//! [`install`] is the builder's entry point: the delta linked into a staging directory that
//! stands for the image root, with the files of removed packages named as whiteouts.

pub mod channels;
pub mod cli;
pub mod config;
pub mod error;
pub mod fetch;
pub mod history;
pub mod json;
pub mod kernels;
pub mod link;
pub mod list;
pub mod net;
pub mod prefix;
pub mod solve;

use std::path::{Path, PathBuf};

pub use error::{CondaError, Result};
use fetch::{Fetcher, Sources};

/// One conda package as `runtime.lock` records it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
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
        &cache_dir.join("pkgs"),
        link::SideFiles::Remove,
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
