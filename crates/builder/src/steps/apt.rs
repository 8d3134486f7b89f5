//! The apt step: Debian packages installed by apt-get in the sandbox, over the image, with
//! the network. Its lock entry is every package it added or changed; apt's marks of
//! automatic packages are settled as [`crate::apt_marks`] says.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::apt_marks;
use crate::error::{BuildError, IoContext, Result};
use crate::lock::{deb_args, dpkg_status, LockSection, StepLock};
use crate::runtime_file::Apt;
use crate::steps::{LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};

impl StepKind for Apt {
    fn label(&self) -> String {
        format!("apt {}", self.packages.join(" "))
    }

    fn sees_env(&self) -> bool {
        true
    }

    fn lock_section(&self) -> Option<LockSection> {
        Some(LockSection::Apt)
    }

    fn run(&self, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput> {
        let script = format!(
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
             apt-get install -y -qq --no-install-recommends {}; apt-get clean; rm -rf /var/lib/apt/lists/*",
            deb_args(cx.pins, &self.packages).join(" ")
        );
        let argv = vec!["/bin/sh".into(), "-c".into(), script];
        let pins = match cx.pins {
            Some(StepLock::Apt(debs)) => Some(debs.as_slice()),
            _ => None,
        };
        let settle_marks = |upper: &Path| {
            let file = upper.join(apt_marks::PATH);
            match fs::read_to_string(&file) {
                Ok(text) => fs::write(&file, apt_marks::settle(&text, pins))
                    .io_context(|| format!("writing {}", file.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).io_context(|| format!("reading {}", file.display())),
            }
        };
        match cx.sandboxed_with(argv, "root", true, log, settle_marks) {
            Ok(layer) => Ok(layer.into()),
            Err(BuildError::Sandbox(output)) => Err(crate::lock::lost_pin(cx.rt, cx.pins, &output)
                .unwrap_or(BuildError::Sandbox(output))),
            Err(e) => Err(e),
        }
    }

    fn lock(&self, cx: &LockContext<'_>) -> Result<Option<StepLock>> {
        let old = dpkg_status(&cx.before)?;
        Ok(Some(StepLock::Apt(
            dpkg_status(&cx.after)?
                .into_iter()
                .filter(|(k, d)| old.get(k) != Some(d))
                .map(|(_, d)| d)
                .collect(),
        )))
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(Rebase::Rebuild("it runs inside the base".into()))
    }
}
