//! The bootstrap step: a Debian root file system made by mmdebstrap, for runtimes with no
//! `from`. Its lock entry is every package dpkg then records. Its time (see
//! [`crate::epoch`]) is the newest time of the packages' documentation in it; the host's
//! resolv.conf and hostname that mmdebstrap copies in are left out, and password ages in
//! `/etc/shadow` count from that time instead of the clock; apt's marks of automatic
//! packages are settled as [`crate::apt_marks`] says.

use std::fs;
use std::io::Write;

use std::path::Path;

use nbrt_oci::error::OciError;
use nbrt_oci::layer::reader::read_layer;
use nbrt_oci::layer::{Compression, EntryKind, LayerWriter};
use nbrt_oci::Progress;

use crate::apt_marks;
use crate::epoch;
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
        // Not `--quiet`: it hides apt's own errors (a version the mirror lost) too.
        cmd.arg(format!("--variant={}", self.variant));
        // mmdebstrap copies the host's resolv.conf and hostname in (for debootstrap's
        // sake): neither belongs in an image, which gets its own when it runs.
        cmd.arg(r#"--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname""#);
        let packages = deb_args(cx.pins, &self.packages);
        if !packages.is_empty() {
            cmd.arg(format!("--include={}", packages.join(",")));
        }
        cmd.arg(&self.suite).arg(&tar).arg(&self.mirror);
        // Python bytecode that maintainer scripts compile keeps set constants in hash order.
        cmd.env("PYTHONHASHSEED", "0");
        match cx.epoch {
            Some(t) => cmd.env("SOURCE_DATE_EPOCH", t.to_string()),
            None => cmd.env_remove("SOURCE_DATE_EPOCH"),
        };
        let out = cmd.output().map_err(|e| {
            err(format!(
                "cannot run mmdebstrap (apt-get install mmdebstrap): {e}"
            ))
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if let Some(e) = crate::lock::lost_pin(cx.rt, cx.pins, &stderr) {
                return Err(e);
            }
            let lines: Vec<&str> = stderr.trim().lines().collect();
            return Err(err(format!(
                "mmdebstrap failed; the last lines of its output:\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            )));
        }
        let time = epoch::step_time(cx.epoch, rootfs_time(&tar, cx.started)?);
        cx.step_epoch.set(time);
        let file = fs::File::open(&tar).io_context(|| "reading the bootstrap tar")?;
        let pins = match cx.pins {
            Some(StepLock::Bootstrap(debs)) => Some(debs.as_slice()),
            _ => None,
        };
        let bar = Progress::hidden().spinner("bootstrap");
        let mut writer = LayerWriter::new(
            cx.store.new_blob()?,
            Compression::Gzip,
            epoch::as_clamp(time),
        )?;
        read_layer(
            bar.wrap_read(std::io::BufReader::new(file)),
            None,
            |entry, data| {
                let path = entry.path.trim_start_matches("./");
                match (time, path) {
                    (_, apt_marks::PATH) => {
                        let mut text = String::new();
                        data.read_to_string(&mut text).map_err(|e| OciError::Io {
                            context: format!("reading /{path} of the bootstrap"),
                            source: e,
                        })?;
                        let text = apt_marks::settle(&text, pins);
                        let mut e = entry.clone();
                        e.size = text.len() as u64;
                        writer.append(&e, &mut text.as_bytes())
                    }
                    // Password ages count days from the clock of the build.
                    (Some(t), "etc/shadow" | "etc/shadow-") => {
                        let mut text = String::new();
                        data.read_to_string(&mut text).map_err(|e| OciError::Io {
                            context: format!("reading /{path} of the bootstrap"),
                            source: e,
                        })?;
                        let text = epoch::shadow_at(&text, t);
                        let mut e = entry.clone();
                        e.size = text.len() as u64;
                        writer.append(&e, &mut text.as_bytes())
                    }
                    _ => writer.append(entry, data),
                }
            },
        )?;
        let (layer, blob) = writer.finish()?;
        blob.commit()?;
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

/// The time of a root file system tar made by a bootstrap that started at `started` (by the
/// file system's clock): the newest time of the files under `/usr/share/doc` older than
/// that, else of any file older than that.
fn rootfs_time(tar: &Path, started: i64) -> Result<Option<i64>> {
    let file = fs::File::open(tar).io_context(|| "reading the bootstrap tar")?;
    let (mut docs, mut any) = (None::<i64>, None::<i64>);
    read_layer(std::io::BufReader::new(file), None, |entry, _| {
        let t = entry.mtime.min(i64::MAX as u64) as i64;
        if entry.kind == EntryKind::File && t < started {
            any = any.max(Some(t));
            if epoch::is_doc_path(&entry.path) {
                docs = docs.max(Some(t));
            }
        }
        Ok(())
    })?;
    Ok(docs.or(any))
}
