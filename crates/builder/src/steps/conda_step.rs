//! The conda step: packages solved and linked into the environment's prefix through the
//! rattler crates (see [`crate::steps::conda`]); its lock entry is every record of the prefix.

use std::io::Write;
use std::path::PathBuf;

use crate::error::Result;
use crate::lock::{conda_packages, LockSection, StepLock};
use crate::runtime_file::{Conda, RuntimeFile};
use crate::steps::conda::{install, CondaRequest};
use crate::steps::{env, LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};

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
        let meta_dir = format!("{}/conda-meta", self.prefix.trim_start_matches('/'));
        let mut installed = Vec::new();
        if view.exists(&meta_dir) {
            for n in view
                .read_dir(&meta_dir)?
                .into_iter()
                .filter(|n| n.ends_with(".json"))
            {
                if let Some(b) = view.read(&format!("{meta_dir}/{n}"))? {
                    installed.push(b);
                }
            }
        }
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
