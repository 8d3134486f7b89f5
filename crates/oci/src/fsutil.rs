//! Small file-system helpers shared by the places that write files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Write `bytes` to `path` through a temporary file in `tmp_dir` (same file system) and a
/// rename, so readers see the old content or the new, never a part.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".nbrt-{}-", std::process::id()))
        .tempfile_in(tmp_dir)
        .io_context(|| format!("creating a temporary file in {}", tmp_dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_data())
        .io_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .io_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// How a lock file is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Open (creating it if needed) a lock file and take an advisory lock on it, waiting for
/// other holders. The lock lasts as long as the returned file is open.
pub fn open_locked(path: &Path, mode: LockMode) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .io_context(|| format!("opening {}", path.display()))?;
    match mode {
        LockMode::Shared => file.lock_shared(),
        LockMode::Exclusive => file.lock(),
    }
    .io_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

/// Prefix of the temporary files and directories an export writes beside its output (and
/// inside an OCI layout it adds to): `.nbrt-export-<pid>-`, so leftovers of a killed process
/// can be told from the files of one still running.
pub fn export_temp_prefix() -> String {
    format!("{EXPORT_TEMP}{}-", std::process::id())
}

pub const EXPORT_TEMP: &str = ".nbrt-export-";

/// Remove what killed exports left in `dir` (entries named by [`export_temp_prefix`] whose
/// process is gone, and older unnumbered ones). Returns the bytes freed.
pub fn sweep_export_leftovers(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut freed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(EXPORT_TEMP)) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(process_alive) {
            continue;
        }
        freed += remove_counting(&e.path());
    }
    freed
}

/// Whether a process with this ID exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Remove a file or a directory tree (never following symlinks); returns the bytes freed.
pub fn remove_counting(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        let mut freed = 0;
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                freed += remove_counting(&e.path());
            }
        }
        let _ = std::fs::remove_dir(path);
        freed
    } else {
        match std::fs::remove_file(path) {
            Ok(()) => meta.len(),
            Err(_) => 0,
        }
    }
}
