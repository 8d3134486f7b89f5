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
//! `error` holds the error helpers the four share. The step itself ([`StepKind`] for the
//! runtime file's `[conda]`) reads what the image has, makes the request, runs [`install`]
//! and finishes the staging tree; its lock entry is every record of the prefix.

mod channels;
mod error;
mod fetch;
mod link;
mod solve;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Result;
pub use crate::lock::LockedCondaPackage;
use crate::lock::{conda_packages, LockSection, StepLock};
use crate::runtime_file::{Conda, RuntimeFile};
use crate::steps::{env, LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};
use fetch::{Fetcher, Sources};

impl StepKind for Conda {
    fn label(&self) -> String {
        format!(
            "conda {}",
            self.packages
                .iter()
                .chain(&self.files)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn inputs(&self, rt: &RuntimeFile) -> Result<Vec<PathBuf>> {
        Ok(self
            .files
            .iter()
            .map(|f| rt.dir.join(f))
            .chain(
                self.channels
                    .iter()
                    .map(|ch| rt.dir.join(ch))
                    .filter(|p| p.is_dir()),
            )
            .collect())
    }

    fn lock_section(&self) -> Option<LockSection> {
        Some(LockSection::Conda)
    }

    fn run(&self, cx: &RunContext<'_>, _log: &mut dyn Write) -> Result<StepOutput> {
        let view = cx.view();
        let installed: Vec<Vec<u8>> = nbrt_oci::facts::conda_meta::documents(&view, &self.prefix)
            .into_result()
            .map_err(|e| crate::BuildError::Conda(format!("reading what the image has: {e}")))?
            .into_iter()
            .map(|d| d.bytes)
            .collect();
        let python = env::python_version(&view, &self.prefix).ok();
        let rt = cx.rt;
        let req = CondaRequest {
            prefix: self.prefix.clone(),
            channels: self
                .channels
                .iter()
                .map(|ch| {
                    if rt.dir.join(ch).is_dir() {
                        rt.dir.join(ch).display().to_string()
                    } else {
                        ch.clone()
                    }
                })
                .collect(),
            specs: self.packages.clone(),
            package_files: self.files.iter().map(|f| rt.dir.join(f)).collect(),
            platform: "linux-64".into(),
            locked: match cx.pins {
                Some(StepLock::Conda(c)) => Some(c.clone()),
                _ => None,
            },
        };
        let cache = cx.store.cache(nbrt_oci::Bucket::Conda);
        let out =
            crate::blocking::block_on(|| install(&installed, python, &req, cx.staging, &cache))??;
        env::finish_staging(&view, &self.prefix, cx.staging, &out.whiteouts)?;
        let layer = cx.dir_layer(cx.staging, true)?;
        cx.adopt_staging(&layer);
        Ok(layer.into())
    }

    fn lock(&self, cx: &LockContext<'_>) -> Result<Option<StepLock>> {
        Ok(Some(StepLock::Conda(conda_packages(
            &cx.after,
            &self.prefix,
        )?)))
    }

    fn rebase(&self, cx: &RebaseContext<'_>) -> Result<Rebase> {
        env::rebase_decision(cx, &self.prefix, env::Installed::CondaMeta)
    }
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
