//! The bootstrap step: a Debian root file system made by mmdebstrap, for runtimes with no
//! `from`. Its lock entry is every package dpkg then records.

use std::fs;
use std::io::Write;

use nbrt_oci::layer::Compression;
use nbrt_oci::Progress;

use crate::error::{BuildError, IoContext, Result};
use crate::lock::{deb_args, dpkg_status, LockSection, StepLock};
use crate::runtime_file::Bootstrap;
use crate::steps::{LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};

fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("bootstrap", message)
}

impl StepKind for Bootstrap {
    fn label(&self) -> String {
        format!("bootstrap {} ({})", self.suite, self.variant)
    }

    fn lock_section(&self) -> Option<LockSection> {
        Some(LockSection::Bootstrap)
    }

    fn run(&self, cx: &RunContext<'_>, _log: &mut dyn Write) -> Result<StepOutput> {
        let tar = cx.scratch.join("rootfs.tar");
        let mut cmd = std::process::Command::new("mmdebstrap");
        cmd.args(["--quiet", &format!("--variant={}", self.variant)]);
        let packages = deb_args(cx.pins, &self.packages);
        if !packages.is_empty() {
            cmd.arg(format!("--include={}", packages.join(",")));
        }
        cmd.arg(&self.suite).arg(&tar).arg(&self.mirror);
        let out = cmd.output().map_err(|e| {
            err(format!(
                "cannot run mmdebstrap (apt-get install mmdebstrap): {e}"
            ))
        })?;
        if !out.status.success() {
            return Err(err(format!(
                "mmdebstrap failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let file = fs::File::open(&tar).io_context(|| "reading the bootstrap tar")?;
        let (layer, _) = nbrt_oci::format::rootfs::write_layer(
            cx.store,
            std::io::BufReader::new(file),
            Compression::Gzip,
            &Progress::hidden().spinner("bootstrap"),
        )?;
        Ok(layer.into())
    }

    fn lock(&self, cx: &LockContext<'_>) -> Result<Option<StepLock>> {
        Ok(Some(StepLock::Bootstrap(
            dpkg_status(&cx.after)?.into_values().collect(),
        )))
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(Rebase::Rebuild("bootstrap".into()))
    }
}
