//! The build time of a runtime, taken from its inputs rather than the clock, so that the same
//! runtime file gives the same image on any machine and any day with nothing set.
//!
//! The rule (also in `docs/runtime-file.md`, "Reproducible builds"):
//!
//! - `SOURCE_DATE_EPOCH`, when set, is the time of everything: every file time is clamped to
//!   it, and it is the image's `created`.
//! - Otherwise a runtime's steps start from its parent image's `created`; a runtime with a
//!   `[bootstrap]` (no parent) starts from its bootstrap's time (below).
//! - A step's time is the runtime's start time, moved forward by the newest time of the
//!   files under `/usr/share/doc` that its layer carries and that it did not write itself
//!   (those of the Debian packages it installed: dpkg keeps the times of a package's files,
//!   which Debian clamps to the package's changelog date). Files the step wrote are newer
//!   than the step's start as the file system clock sees it, which is how they are told
//!   apart. Every file time in the step's layer is clamped to the step's time; the bootstrap
//!   falls back to the newest such time anywhere in its root file system when it has no
//!   documentation.
//! - The image's `created` and its history entries are the newest of the runtime's start
//!   time and its steps' times; commands run by steps see the start time as
//!   `SOURCE_DATE_EPOCH` (so Python writes hash-checked bytecode, and tools that honour it
//!   stamp it) and `PYTHONHASHSEED=0`.
//!
//! A step's cache key holds the runtime's start time: a parent rebuilt at another time makes
//! its children's steps run again.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nbrt_oci::spec::{parse_rfc3339, source_date_epoch, ImageConfig};

use crate::error::{IoContext, Result};

/// Where Debian packages keep their changelogs and copyright files.
pub const DOC_DIR: &str = "usr/share/doc";

/// `SOURCE_DATE_EPOCH`, which fixes every time when it is set.
pub fn fixed() -> Option<i64> {
    source_date_epoch()
}

/// The time a runtime's steps start from: `SOURCE_DATE_EPOCH`, else the parent's `created`;
/// `None` for a runtime with no parent (its bootstrap gives it).
pub fn start(parent: Option<&ImageConfig>) -> Option<i64> {
    fixed().or_else(|| {
        parent
            .and_then(|c| c.created.as_deref())
            .and_then(parse_rfc3339)
    })
}

/// The newest mtime a layer written at `epoch` may carry.
pub fn as_clamp(epoch: Option<i64>) -> Option<u64> {
    epoch.map(|e| e.max(0) as u64)
}

/// A step's start as the file system's clock sees it (the kernel stamps new files, whatever
/// time a process is told): the mtime of a file made in `dir`.
pub fn step_start(dir: &Path) -> Result<i64> {
    fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    let marker = dir.join(".nbrt-step-start");
    fs::write(&marker, b"").io_context(|| format!("writing {}", marker.display()))?;
    let meta = fs::metadata(&marker).io_context(|| format!("reading {}", marker.display()))?;
    let _ = fs::remove_file(&marker);
    Ok(meta.mtime())
}

/// Whether `rel` (a path in an image, without a leading `/`) is under [`DOC_DIR`].
pub fn is_doc_path(rel: &str) -> bool {
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    rel.strip_prefix(DOC_DIR)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// The newest mtime, older than `before`, of the regular files under `root/usr/share/doc`.
pub fn newest_doc_time(root: &Path, before: i64) -> Result<Option<i64>> {
    let mut newest = None;
    let doc = root.join(DOC_DIR);
    if fs::symlink_metadata(&doc).is_ok_and(|m| m.is_dir()) {
        newest_below(&doc, before, &mut newest)?;
    }
    Ok(newest)
}

fn newest_below(dir: &Path, before: i64, newest: &mut Option<i64>) -> Result<()> {
    for entry in fs::read_dir(dir).io_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.io_context(|| format!("listing {}", dir.display()))?;
        let meta = entry
            .metadata()
            .io_context(|| format!("reading {}", entry.path().display()))?;
        if meta.is_dir() {
            newest_below(&entry.path(), before, newest)?;
        } else if meta.is_file() && meta.mtime() < before {
            *newest = Some(newest.map_or(meta.mtime(), |n: i64| n.max(meta.mtime())));
        }
    }
    Ok(())
}

/// A step's time: `SOURCE_DATE_EPOCH`, else the runtime's start time moved forward by
/// `found` (the newest package documentation time in the step's layer).
pub fn step_time(start: Option<i64>, found: Option<i64>) -> Option<i64> {
    fixed().or(match (start, found) {
        (Some(s), Some(f)) => Some(s.max(f)),
        (s, f) => s.or(f),
    })
}

/// The environment commands of a step see besides the image's (entries `env` already has
/// are left as they are): the start time as `SOURCE_DATE_EPOCH`, and a fixed hash seed.
pub fn command_env(env: &[String], start: Option<i64>) -> Vec<String> {
    let mut out = env.to_vec();
    let mut add = vec!["PYTHONHASHSEED=0".to_string()];
    if let Some(s) = start {
        add.push(format!("SOURCE_DATE_EPOCH={}", s.max(0)));
    }
    for entry in add {
        let key = entry.split('=').next().unwrap_or_default();
        if !out.iter().any(|e| e.split('=').next() == Some(key)) {
            out.push(entry);
        }
    }
    out
}

/// `/etc/shadow` with every password's last-change day (days since 1970, taken from the
/// clock by whoever wrote the entry) set to the day of `epoch`.
pub fn shadow_at(text: &str, epoch: i64) -> String {
    let day = (epoch.max(0) / 86_400).to_string();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let mut fields: Vec<&str> = body.split(':').collect();
        if fields.len() >= 3 && !fields[2].is_empty() && fields[2] != "0" {
            fields[2] = &day;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(body);
        }
        out.push_str(end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_paths() {
        assert!(is_doc_path("usr/share/doc/tree/changelog.Debian.gz"));
        assert!(is_doc_path("./usr/share/doc/tree/copyright"));
        assert!(!is_doc_path("usr/share/doctor/x"));
        assert!(!is_doc_path("usr/share/doc"));
    }

    #[test]
    fn shadow_days_come_from_the_epoch() {
        let text = "root:*:20400:0:99999:7:::\njovyan:!::0:99999:7:::\nx:!:0::::::";
        assert_eq!(
            shadow_at(text, 1_700_000_000),
            "root:*:19675:0:99999:7:::\njovyan:!::0:99999:7:::\nx:!:0::::::"
        );
    }

    #[test]
    fn the_environment_keeps_what_the_image_sets() {
        let env = command_env(&["PYTHONHASHSEED=7".into()], Some(5));
        assert_eq!(env, ["PYTHONHASHSEED=7", "SOURCE_DATE_EPOCH=5"]);
        assert_eq!(command_env(&[], None), ["PYTHONHASHSEED=0"]);
    }

    #[test]
    fn newest_doc_time_skips_files_the_step_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("usr/share/doc/p");
        fs::create_dir_all(&doc).unwrap();
        let set = |name: &str, t: i64| {
            let p = doc.join(name);
            fs::write(&p, b"x").unwrap();
            let ts = rustix::fs::Timespec {
                tv_sec: t,
                tv_nsec: 0,
            };
            rustix::fs::utimensat(
                rustix::fs::CWD,
                &p,
                &rustix::fs::Timestamps {
                    last_access: ts,
                    last_modification: ts,
                },
                rustix::fs::AtFlags::empty(),
            )
            .unwrap();
        };
        set("changelog.Debian.gz", 1_000);
        set("copyright", 2_000);
        set("written-by-the-step", 9_000);
        assert_eq!(newest_doc_time(dir.path(), 5_000).unwrap(), Some(2_000));
        assert_eq!(
            newest_doc_time(&dir.path().join("none"), 5_000).unwrap(),
            None
        );
    }
}
