//! Small file-system helpers shared by the places that write files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Write `bytes` to `path` through a temporary file in `tmp_dir` (same file system) and a
/// rename, so readers see the old content or the new, never a part.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)
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
