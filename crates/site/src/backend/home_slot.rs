//! Home slots: how a session started before its user was known (a warm pool's, see
//! `crate::sessions::pool`) gets the user's home.
//!
//! A running container cannot be given a new mount by its engine. So a warm session's home
//! directory is a bind mount of an empty directory of the site's (its *slot*) with slave
//! propagation: when the site later bind-mounts the user's home volume onto the slot on the
//! host, the mount appears inside the container at the home directory — and only that home:
//! the container mounts nothing else of the site's. The slots live under one directory the
//! site makes a shared mount of itself, so propagation works whatever the host's root mount
//! is. This needs the site to run as root on the engine's host (the volume's directory and
//! the slot are host paths).

use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Result, SiteError};

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> SiteError {
    move |source| SiteError::Io { context, source }
}

fn mount_err(context: String) -> impl FnOnce(nix::Error) -> SiteError {
    move |e| SiteError::Io {
        context,
        source: std::io::Error::from(e),
    }
}

/// Why this process cannot make home slots, if it cannot.
pub fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "warm pools need the site to run as root on the Docker engine's host (it mounts a \
             user's home into a started session)"
                .into(),
        );
    }
    None
}

/// The mount points of this process's mount namespace (`/proc/self/mountinfo`'s fifth
/// field, its octal escapes undone).
fn mount_points() -> Result<std::collections::HashSet<PathBuf>> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io_err("reading /proc/self/mountinfo".into()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(std::ffi::OsString::from_vec(unescape(mp))))
        .collect())
}

/// `\040` → space, and every other `\ooo` octal escape the kernel writes.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Make `root` (created if missing) a shared mount, so mounts under it propagate into the
/// containers that bind its slots with slave propagation.
pub fn prepare_root(root: &Path) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
    let root = root
        .canonicalize()
        .map_err(io_err(format!("resolving {}", root.display())))?;
    if !mount_points()?.contains(&root) {
        mount(
            Some(&root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(mount_err(format!(
            "bind-mounting {} onto itself",
            root.display()
        )))?;
    }
    mount(
        None::<&str>,
        &root,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(mount_err(format!(
        "making {} a shared mount",
        root.display()
    )))?;
    Ok(root)
}

/// Undo [`prepare_root`] once no slot is left in `root`: unmount it (the directory stays).
pub fn unprepare_root(root: &Path) -> Result<()> {
    let empty = fs::read_dir(root)
        .map_err(io_err(format!("reading {}", root.display())))?
        .next()
        .is_none();
    if empty && mount_points()?.contains(root) {
        umount2(root, MntFlags::MNT_DETACH)
            .map_err(mount_err(format!("unmounting {}", root.display())))?;
    }
    Ok(())
}

/// A new empty slot under `root`, named for the session that will use it.
pub fn create(root: &Path, session_id: &str) -> Result<PathBuf> {
    let slot = root.join(session_id);
    fs::create_dir(&slot).map_err(io_err(format!("creating {}", slot.display())))?;
    Ok(slot)
}

/// Give a slot the owner and mode of a docker-stacks home (`NB_UID:NB_GID`, setgid and group
/// writable), as a new volume would get them from the image's home.
pub fn own(slot: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(slot, Some(uid), Some(gid))
        .map_err(io_err(format!("chown {}", slot.display())))?;
    fs::set_permissions(slot, fs::Permissions::from_mode(0o2775))
        .map_err(io_err(format!("chmod {}", slot.display())))
}

/// The notebook user of an image, from its environment: docker-stacks' `NB_UID` and
/// `NB_GID`, else 1000 and 100 (its defaults).
pub fn notebook_user(env: &[String]) -> (u32, u32) {
    let get = |key: &str, default: u32| {
        env.iter()
            .filter_map(|e| e.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(default)
    };
    (get("NB_UID", 1000), get("NB_GID", 100))
}

/// Bind-mount `home` (a volume's directory on this host) onto `slot`, where the container
/// sees it as its home directory. An empty home gets what the container's own home had
/// after its start — the image's home skeleton as PID 1 copied it, owned by the notebook
/// user — read from `skeleton` (the container's home skeleton, seen from the host); the
/// home's top directory gets the slot's owner and mode, as a new volume's would from the
/// image.
pub fn attach(slot: &Path, home: &Path, skeleton: Option<&Path>) -> Result<()> {
    let slot_meta = fs::metadata(slot).map_err(io_err(format!("reading {}", slot.display())))?;
    let empty = fs::read_dir(home)
        .map_err(io_err(format!("reading {}", home.display())))?
        .next()
        .is_none();
    if empty {
        std::os::unix::fs::chown(home, Some(slot_meta.uid()), Some(slot_meta.gid()))
            .map_err(io_err(format!("chown {}", home.display())))?;
        fs::set_permissions(home, slot_meta.permissions())
            .map_err(io_err(format!("chmod {}", home.display())))?;
        if let Some(skel) = skeleton.filter(|s| s.is_dir()) {
            let owner = nbrt_init::home::Owner::Set(slot_meta.uid(), slot_meta.gid());
            nbrt_init::home::copy_tree(skel, home, owner, true).map_err(|e| {
                SiteError::Internal(format!(
                    "filling {} from the home skeleton: {e}",
                    home.display()
                ))
            })?;
        }
    }
    mount(
        Some(home),
        slot,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err(format!(
        "bind-mounting {} onto {}",
        home.display(),
        slot.display()
    )))
}

/// Undo a slot: unmount what is mounted on it (lazily: a process may still hold it) and
/// remove it — never through a mount: what is still mounted anywhere under it is refused,
/// so a user's home can never be deleted with its slot. A slot that is gone is released.
pub fn release(slot: &Path) -> Result<()> {
    if !slot.exists() {
        return Ok(());
    }
    while mount_points()?.contains(slot) {
        umount2(slot, MntFlags::MNT_DETACH)
            .map_err(mount_err(format!("unmounting {}", slot.display())))?;
    }
    remove_tree(slot, &mount_points()?)
}

/// `rm -r` that stops at mount points.
fn remove_tree(dir: &Path, mounts: &std::collections::HashSet<PathBuf>) -> Result<()> {
    if mounts.contains(dir) {
        return Err(SiteError::Internal(format!(
            "{} is still a mount point: not removed",
            dir.display()
        )));
    }
    for entry in fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))? {
        let entry = entry.map_err(io_err(format!("reading {}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(io_err(format!("reading {}", path.display())))?;
        if kind.is_dir() {
            remove_tree(&path, mounts)?;
        } else {
            fs::remove_file(&path).map_err(io_err(format!("removing {}", path.display())))?;
        }
    }
    fs::remove_dir(dir).map_err(io_err(format!("removing {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), b"/a b\tc\\d".to_vec());
        assert_eq!(unescape(r"/plain\9"), b"/plain\\9".to_vec());
    }

    #[test]
    fn removal_stops_at_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        fs::create_dir_all(slot.join("a/b")).unwrap();
        fs::write(slot.join("a/b/f"), "x").unwrap();
        let mounts = std::collections::HashSet::from([slot.join("a/b")]);
        assert!(remove_tree(&slot, &mounts).is_err());
        assert!(
            slot.join("a/b/f").exists(),
            "nothing under a mount point is removed"
        );
        remove_tree(&slot, &Default::default()).unwrap();
        assert!(!slot.exists());
    }
}
