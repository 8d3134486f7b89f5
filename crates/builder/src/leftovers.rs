//! Step directories, and what a build killed outright (SIGKILL, a power cut) leaves behind
//! in them: its runc container still running, its overlay mount, the directory itself.
//! Every step works in a directory of its own under the store's `tmp/`, locked while the
//! step runs; [`sweep`], at the start of every build, cleans up the directories nobody
//! holds and the containers whose nbrt process is gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{IoContext, Result};
use crate::sandbox;

/// Prefix of step directories under the store's `tmp/`.
const STEP_PREFIX: &str = "nbrt-step-";
/// Lock file of a step directory, held by the build while the step runs.
const LOCK: &str = ".nbrt-step.lock";

/// A step's scratch directory, locked for as long as this value lives and removed after.
pub struct StepDir {
    // Field order matters: the lock is released before the directory goes.
    _lock: fs::File,
    dir: tempfile::TempDir,
}

impl StepDir {
    pub fn new(tmp_root: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(STEP_PREFIX)
            .tempdir_in(tmp_root)
            .io_context(|| format!("creating a step directory in {}", tmp_root.display()))?;
        // Locked under another name first, so a sweep never finds the lock file unlocked.
        let fresh = dir.path().join(".nbrt-step.lock.new");
        let lock =
            fs::File::create(&fresh).io_context(|| format!("creating {}", fresh.display()))?;
        lock.lock()
            .io_context(|| format!("locking {}", fresh.display()))?;
        fs::rename(&fresh, dir.path().join(LOCK))
            .io_context(|| format!("renaming {}", fresh.display()))?;
        Ok(Self { _lock: lock, dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What [`sweep`] cleaned up.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// runc containers of nbrt processes that are gone, stopped and deleted.
    pub containers: Vec<String>,
    /// Step directories nobody held, with their mounts, removed.
    pub step_dirs: Vec<PathBuf>,
}

/// Clean up after builds that were killed: find the step directories under `tmp_root` whose
/// lock nobody holds; if there are any, stop the containers whose nbrt process is gone
/// (they keep the mounts busy), then unmount what is mounted below those directories and
/// remove them. Costs one directory listing when there is nothing to do.
pub fn sweep(tmp_root: &Path) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = fs::read_dir(tmp_root) else {
        return swept;
    };
    // (directory, its lock, held by us until the directory is gone)
    let mut abandoned = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(STEP_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // No lock file: a step directory being made, or one of an older nbrt; left alone.
        let Ok(lock) = fs::File::open(dir.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() {
            abandoned.push((dir, lock));
        }
    }
    if abandoned.is_empty() {
        return swept;
    }
    if let Ok(runc) = sandbox::find_runc() {
        for id in orphaned_containers(&runc) {
            let deleted = Command::new(&runc)
                .args(["delete", "--force", &id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if deleted {
                swept.containers.push(id);
            }
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (dir, _lock) in abandoned {
        let mut points: Vec<PathBuf> = mount_points(&mountinfo)
            .into_iter()
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for point in points {
            let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
        }
        if fs::remove_dir_all(&dir).is_ok() {
            swept.step_dirs.push(dir);
        }
    }
    swept
}

/// [`sweep`] at the start of a build, saying on the build's log what it cleaned up.
pub fn sweep_before_build(tmp_root: &Path, log: &mut dyn std::io::Write) {
    let swept = sweep(tmp_root);
    for id in &swept.containers {
        writeln!(log, "stopped container {id} of a build that was killed").ok();
    }
    for dir in &swept.step_dirs {
        writeln!(log, "removed {} of a build that was killed", dir.display()).ok();
    }
}

/// Containers named by [`sandbox`] (`nbrt-<pid>-…`) whose nbrt process no longer runs.
fn orphaned_containers(runc: &Path) -> Vec<String> {
    let Ok(out) = Command::new(runc)
        .args(["list", "-q"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|id| {
            id.strip_prefix("nbrt-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(str::to_string)
        .collect()
}

/// Mount points in `/proc/self/mountinfo` (field 5, with its octal escapes undone).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mount_points() {
        let info = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            mount_points(info),
            [PathBuf::from("/mnt/with space"), PathBuf::from("/proc")]
        );
    }

    #[test]
    fn a_held_step_dir_stays_and_an_abandoned_one_goes() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let held = StepDir::new(tmp.path()).expect("a step directory");
        let abandoned = StepDir::new(tmp.path()).expect("a step directory");
        let abandoned_path = abandoned.path().to_path_buf();
        fs::write(abandoned_path.join("file"), "x").expect("a file");
        // As a killed build leaves it: the lock released, the directory still there.
        let StepDir { _lock, dir } = abandoned;
        drop(_lock);
        let kept = dir.keep();
        let swept = sweep(tmp.path());
        assert_eq!(swept.step_dirs, std::slice::from_ref(&kept));
        assert!(!kept.exists());
        assert!(held.path().is_dir());
        // Something else in tmp/ is none of its business.
        let other = tmp.path().join("other");
        fs::create_dir(&other).expect("a directory");
        assert!(sweep(tmp.path()).step_dirs.is_empty());
        assert!(other.is_dir() && held.path().is_dir());
    }
}
