//! Files that tell of the build machine or the build's moment rather than of the image:
//! package managers' logs and caches that stamp the clock, and identities of the machine.
//! They are left out of the layers of steps that run commands (the same files mmdebstrap
//! removes from a root file system it makes), so two builds of one runtime file match.

use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Logs and caches with times or machine facts in them, as paths in the image.
pub const REMOVED: [&str; 9] = [
    // dpkg, apt and update-alternatives log every run with its time.
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    // ldconfig's cache of the libraries' ctimes (ld.so.cache itself is sorted).
    "var/cache/ldconfig/aux-cache",
    // apt's binary caches, stamped with the lists' times (`apt-get clean` removes them).
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/lib/dbus/machine-id",
];

/// Files whose content must be empty in an image: a container gets its own at start.
pub const EMPTIED: [&str; 1] = ["etc/machine-id"];

/// Take the leaks out of a step's overlay upper directory: what the step wrote there goes,
/// so the image keeps what the layers below have (a whiteout, where the step deleted one,
/// stays).
pub fn remove_from_upper(upper: &Path) -> Result<()> {
    for rel in REMOVED {
        let path = upper.join(rel);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() || m.file_type().is_symlink()) {
            fs::remove_file(&path).io_context(|| format!("removing {}", path.display()))?;
        }
    }
    for rel in EMPTIED {
        let path = upper.join(rel);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            fs::write(&path, b"").io_context(|| format!("emptying {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_go_and_machine_id_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let up = dir.path();
        fs::create_dir_all(up.join("var/log/apt")).unwrap();
        fs::create_dir_all(up.join("etc")).unwrap();
        fs::write(up.join("var/log/dpkg.log"), "2026-12-06 status installed").unwrap();
        fs::write(up.join("var/log/apt/history.log"), "Start-Date: 2026-12-06").unwrap();
        fs::write(up.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        fs::write(up.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        remove_from_upper(up).unwrap();
        assert!(!up.join("var/log/dpkg.log").exists());
        assert!(!up.join("var/log/apt/history.log").exists());
        assert!(up.join("var/log/apt").is_dir());
        assert_eq!(fs::read(up.join("etc/machine-id")).unwrap(), b"");
        assert!(up.join("etc/hosts").exists());
    }
}
