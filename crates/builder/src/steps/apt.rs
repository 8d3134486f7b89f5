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
use crate::snapshot::decided_paths;
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

    fn rebase(&self, cx: &RebaseContext<'_>) -> Result<Rebase> {
        if !cx.earlier_moved {
            return Ok(Rebase::Rebuild(
                "an earlier step of the runtime is rebuilt: apt would run over another system"
                    .into(),
            ));
        }
        if cx.old_env != cx.new_env {
            let changed = cx
                .new_env
                .iter()
                .chain(cx.old_env)
                .find(|v| !cx.old_env.contains(v) || !cx.new_env.contains(v))
                .map(|v| v.split('=').next().unwrap_or(v))
                .unwrap_or("an entry");
            return Ok(Rebase::Rebuild(format!(
                "the environment apt runs with changed ({changed})"
            )));
        }
        let (old, new) = (cx.view(cx.old_below)?, cx.view(cx.new_below)?);
        for path in APT_STATE {
            if let Some(changed) = old.first_difference(&new, path)? {
                return Ok(Rebase::Rebuild(format!(
                    "the base's Debian packages or apt's settings changed (/{changed})"
                )));
            }
        }
        for path in decided_paths(&cx.layer_dir()?)? {
            if let Some(changed) = old.first_difference(&new, &path)? {
                return Ok(Rebase::Rebuild(format!(
                    "the base changed /{changed}, which this step's layer writes over"
                )));
            }
        }
        Ok(Rebase::Move(
            "the same Debian packages and apt settings below it, and nothing its layer writes \
             changed in the base"
                .into(),
        ))
    }
}

/// What apt's solve and dpkg's unpacking start from: the installed packages with their
/// versions, diversions and overrides, and apt's and dpkg's configuration. The same on two
/// bases means the same packages are installed the same way (the versions are the lock's).
const APT_STATE: [&str; 6] = [
    "var/lib/dpkg/status",
    "var/lib/dpkg/diversions",
    "var/lib/dpkg/statoverride",
    "var/lib/dpkg/arch",
    "etc/apt",
    "etc/dpkg",
];
