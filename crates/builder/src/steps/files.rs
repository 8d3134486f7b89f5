//! The files step: files and directories copied from the stack directory, or provided by
//! nbrt (`builtin`), into the image with a mode and an owner. The layer holds only those
//! files and the directories above them (with the image's owner, mode and time), so it does
//! not depend on the base unless an owner is given by name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{BuildError, IoContext, Result};
use crate::runtime_file::{FileSpec, RuntimeFile};
use crate::sandbox;
use crate::snapshot::MergedView;
use crate::steps::{Rebase, RebaseContext, RunContext, StepKind, StepOutput};

/// The runtime file's `[[files]]`, as one step.
#[derive(Debug, Clone, Serialize)]
pub struct Files {
    pub files: Vec<FileSpec>,
}

fn step_err(message: impl Into<String>) -> BuildError {
    BuildError::step("files", message)
}

impl StepKind for Files {
    fn label(&self) -> String {
        format!(
            "files {}",
            self.files
                .iter()
                .map(|f| f.destination.clone())
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn inputs(&self, rt: &RuntimeFile) -> Result<Vec<PathBuf>> {
        self.files.iter().map(|f| file_source(rt, f)).collect()
    }

    fn run(&self, cx: &RunContext<'_>, _log: &mut dyn Write) -> Result<StepOutput> {
        let view = cx.view();
        for f in &self.files {
            copy_file_spec(cx.rt, f, &view, cx.staging)?;
        }
        Ok(cx.staging_layer()?.into())
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(if self.independent() {
            Rebase::Move("files from the stack, independent of the base".into())
        } else {
            Rebase::Rebuild("an owner given by name is looked up in the image".into())
        })
    }
}

impl Files {
    /// Whether every entry has no owner or a numeric `uid[:gid]` one: then the layer holds
    /// files from the stack only and does not depend on what is below it.
    fn independent(&self) -> bool {
        self.files.iter().all(|f| {
            f.owner.as_deref().is_none_or(|o| {
                o.split(':')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            })
        })
    }
}

/// The file a `files` entry copies: from the stack, or one nbrt provides.
fn file_source(rt: &RuntimeFile, f: &FileSpec) -> Result<PathBuf> {
    match (&f.source, &f.builtin) {
        (Some(src), _) => Ok(rt.dir.join(src)),
        (None, Some(name)) => crate::builtin::resolve(name),
        (None, None) => Err(step_err("an entry without `source` or `builtin`")),
    }
}

/// The directories above `rel` that the image already has get their owner, mode and time
/// from the image: the layer carries entries for them, which would otherwise hand, say,
/// jovyan's `/opt/conda` to root. Directories the step creates take the owner and mode of
/// the directory they are made in (jovyan's setgid tree stays jovyan's).
fn mirror_parents(view: &MergedView, staging: &Path, rel: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = String::new();
    // (uid, gid, mode) of the nearest directory the image has.
    let mut above: Option<(u32, u32, u32)> = None;
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        let dir = staging.join(&path);
        let existing = view.symlink_metadata(&path)?.filter(|m| m.is_dir());
        if let Some(meta) = &existing {
            above = Some((meta.uid(), meta.gid(), meta.mode() & 0o7777));
        }
        let Some((uid, gid, mode)) = above else {
            continue;
        };
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .io_context(|| format!("setting the owner of {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .io_context(|| format!("setting the mode of {}", dir.display()))?;
        if let Some(meta) = existing {
            let time = |sec, nsec| rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            };
            let times = rustix::fs::Timestamps {
                last_access: time(meta.atime(), meta.atime_nsec()),
                last_modification: time(meta.mtime(), meta.mtime_nsec()),
            };
            rustix::fs::utimensat(rustix::fs::CWD, &dir, &times, rustix::fs::AtFlags::empty())
                .map_err(|e| step_err(format!("{}: {e}", dir.display())))?;
        }
    }
    Ok(())
}

fn copy_file_spec(rt: &RuntimeFile, f: &FileSpec, view: &MergedView, staging: &Path) -> Result<()> {
    let src = file_source(rt, f)?;
    let mut dest_rel = f.destination.trim_start_matches('/').to_string();
    if f.destination.ends_with('/') {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dest_rel = format!("{}{name}", dest_rel);
    }
    // Through the image's symlinks (`/bin` → `usr/bin`): a directory in the layer would
    // replace the link.
    let dest_rel = view.resolve_lenient(&dest_rel)?;
    let dest = staging.join(&dest_rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).io_context(|| format!("creating {}", parent.display()))?;
    }
    if src.is_dir() {
        crate::steps::user::copy_tree(&src, &dest)?;
    } else {
        fs::copy(&src, &dest).io_context(|| format!("copying {}", src.display()))?;
    }
    if let Some(mode) = &f.mode {
        let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| step_err(format!("bad mode {mode}")))?;
        fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(m))
            .io_context(|| format!("setting the mode of {}", dest.display()))?;
    }
    let (uid, gid) = match &f.owner {
        Some(owner) => {
            let u = sandbox::resolve_user_in(view, owner)?;
            (u.uid, u.gid)
        }
        None => (0, 0),
    };
    crate::steps::user::own_tree(&dest, uid, gid, false)?;
    // Last, so that creating the file does not change its directory's time again.
    mirror_parents(view, staging, &dest_rel)
}
