//! The conda step: conda packages solved and linked with the rattler crates (through
//! `nbrt-conda`, the crate the `conda` command of the stock images shares), as one layer's
//! worth of files.
//!
//! [`install`] (in `nbrt_conda`) solves the request against the image's installed `conda-meta`
//! records (installed packages are favoured, so they stay unless a spec needs a change) or
//! takes the builds of `runtime.lock`, fetches and checks each archive, and links only the
//! delta into a staging directory that stands for the image root, naming the files of
//! removed or replaced packages as whiteout paths. The step itself ([`StepKind`] for the
//! runtime file's `[conda]`) reads what the image has, makes the request, runs [`install`]
//! and finishes the staging tree; its lock entry is every record of the prefix.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::lock::{conda_packages, LockSection, StepLock};
use crate::runtime_file::{Conda, RuntimeFile};
use crate::steps::{env, LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};
pub use nbrt_conda::{CondaOutcome, CondaRequest, LockedCondaPackage};

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

/// [`nbrt_conda::install`] with the builder's errors: solve (or take from the lock) and link
/// the delta into `staging`, an empty directory standing for the image root.
pub async fn install(
    installed_meta: &[Vec<u8>],
    python: Option<(u64, u64)>,
    req: &CondaRequest,
    staging: &Path,
    cache_dir: &Path,
) -> Result<CondaOutcome> {
    Ok(nbrt_conda::install(installed_meta, python, req, staging, cache_dir).await?)
}
