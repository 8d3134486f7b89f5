//! Home directories: copying a home to a new name, filling an (empty) home volume from the
//! image's skeleton without overwriting anything, and chown of homes and extra paths.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{chown, Gid, Uid};

use crate::error::{Error, Result};

/// What happens to ownership of copied entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Keep the source's owner and group (`cp -a` as root).
    Preserve,
    /// Give every copied entry this owner and group.
    Set(u32, u32),
    /// Leave it to whoever copies (`--no-preserve=ownership`, or a non-root copy).
    Copier,
}

/// Counters of a copy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub copied: usize,
    pub skipped_existing: usize,
}

fn set_owner(path: &Path, owner: Owner, meta: &fs::Metadata) -> std::io::Result<()> {
    let (u, g) = match owner {
        Owner::Preserve => (meta.uid(), meta.gid()),
        Owner::Set(u, g) => (u, g),
        Owner::Copier => return Ok(()),
    };
    std::os::unix::fs::lchown(path, Some(u), Some(g))
}

fn copy_times(path: &Path, meta: &fs::Metadata) {
    let at = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mt = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    let _ = utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &at,
        &mt,
        UtimensatFlags::NoFollowSymlink,
    );
}

/// Copy the contents of `src` into `dst` recursively (like `cp -a src/. dst/`, or with
/// `no_clobber` like `cp -n -r -T`): regular files, directories, symlinks; modes and times
/// kept; ownership per `owner`. With `no_clobber`, entries that exist in `dst` are left
/// alone (directories are still descended into). Sockets, FIFOs and devices are skipped.
pub fn copy_tree(src: &Path, dst: &Path, owner: Owner, no_clobber: bool) -> Result<CopyStats> {
    let mut stats = CopyStats::default();
    copy_dir_contents(src, dst, owner, no_clobber, &mut stats)?;
    Ok(stats)
}

fn copy_dir_contents(
    src: &Path,
    dst: &Path,
    owner: Owner,
    no_clobber: bool,
    stats: &mut CopyStats,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(|e| Error::io("reading directory", src, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading directory", src, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(|e| Error::io("reading", &from, e))?;
        let existing = fs::symlink_metadata(&to).ok();
        let ft = meta.file_type();
        if ft.is_dir() {
            match &existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    stats.skipped_existing += 1;
                    continue;
                }
                None => {
                    fs::create_dir(&to).map_err(|e| Error::io("creating directory", &to, e))?;
                    stats.copied += 1;
                    set_owner(&to, owner, &meta)
                        .map_err(|e| Error::io("changing owner of", &to, e))?;
                }
            }
            copy_dir_contents(&from, &to, owner, no_clobber, stats)?;
            if existing.is_none() {
                fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                    .map_err(|e| Error::io("setting mode of", &to, e))?;
                copy_times(&to, &meta);
            }
            continue;
        }
        if existing.is_some() {
            if no_clobber {
                stats.skipped_existing += 1;
                continue;
            }
            if existing.as_ref().is_some_and(|m| m.is_dir()) {
                stats.skipped_existing += 1;
                continue;
            }
            fs::remove_file(&to).map_err(|e| Error::io("replacing", &to, e))?;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| Error::io("reading link", &from, e))?;
            std::os::unix::fs::symlink(&target, &to)
                .map_err(|e| Error::io("creating link", &to, e))?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(|e| Error::io("copying to", &to, e))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| Error::io("setting mode of", &to, e))?;
        } else {
            continue;
        }
        set_owner(&to, owner, &meta).map_err(|e| Error::io("changing owner of", &to, e))?;
        if ft.is_file() {
            // chown clears set-id bits; put the mode back.
            if matches!(owner, Owner::Preserve | Owner::Set(..)) && meta.mode() & 0o6000 != 0 {
                let _ = fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777));
            }
        }
        copy_times(&to, &meta);
        stats.copied += 1;
    }
    Ok(())
}

/// `chown [-R] uid:gid path`: the path itself follows a symlink (like chown without -h);
/// inside a tree, links are changed themselves and never followed.
pub fn chown_path(path: &Path, uid: u32, gid: u32, recursive: bool) -> Result<usize> {
    chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| Error::sys(format!("chown {uid}:{gid} {}", path.display()), e))?;
    let mut n = 1;
    if recursive && fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false) {
        n += chown_tree(path, uid, gid)?;
    }
    Ok(n)
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<usize> {
    let mut n = 0;
    for entry in fs::read_dir(dir).map_err(|e| Error::io("reading directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("reading directory", dir, e))?;
        let p = entry.path();
        let meta = fs::symlink_metadata(&p).map_err(|e| Error::io("reading", &p, e))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
                .map_err(|e| Error::io("changing owner of", &p, e))?;
            if meta.is_file() && meta.mode() & 0o6000 != 0 {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(meta.mode() & 0o7777));
            }
        }
        n += 1;
        if meta.is_dir() {
            n += chown_tree(&p, uid, gid)?;
        }
    }
    Ok(n)
}

/// Create `dir` and its missing parents, giving the directories created the owner (when
/// running as root) — used for the server's data directory in the user's home.
pub fn create_dir_all_owned(dir: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(p) = cur {
        match fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                missing.push(p.to_owned());
                cur = p.parent();
            }
            Err(e) => return Err(Error::io("checking", p, e)),
        }
    }
    for p in missing.iter().rev() {
        match fs::create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("creating directory", p, e)),
        }
        if let Some((u, g)) = owner {
            chown(p.as_path(), Some(Uid::from_raw(u)), Some(Gid::from_raw(g)))
                .map_err(|e| Error::sys(format!("chown {}", p.display()), e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("src");
        fs::create_dir_all(s.join("a/b")).unwrap();
        fs::write(s.join(".bashrc"), "skeleton rc").unwrap();
        fs::write(s.join("a/b/file"), "deep").unwrap();
        fs::set_permissions(s.join("a/b/file"), fs::Permissions::from_mode(0o750)).unwrap();
        std::os::unix::fs::symlink("a/b/file", s.join("link")).unwrap();
        d
    }

    #[test]
    fn copies_everything_into_a_new_dir() {
        let d = tree();
        let dst = d.path().join("dst");
        fs::create_dir(&dst).unwrap();
        let st = copy_tree(&d.path().join("src"), &dst, Owner::Copier, false).unwrap();
        assert_eq!(st.copied, 5);
        assert_eq!(fs::read_to_string(dst.join("a/b/file")).unwrap(), "deep");
        assert_eq!(
            fs::metadata(dst.join("a/b/file")).unwrap().mode() & 0o777,
            0o750
        );
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("a/b/file")
        );
        assert_eq!(
            fs::metadata(dst.join("a/b/file")).unwrap().mtime(),
            fs::metadata(d.path().join("src/a/b/file")).unwrap().mtime()
        );
    }

    #[test]
    fn fill_never_overwrites() {
        let d = tree();
        let dst = d.path().join("home");
        fs::create_dir_all(dst.join("a")).unwrap();
        fs::write(dst.join(".bashrc"), "mine").unwrap();
        fs::write(dst.join("keep.txt"), "user data").unwrap();
        let st = copy_tree(&d.path().join("src"), &dst, Owner::Copier, true).unwrap();
        assert_eq!(fs::read_to_string(dst.join(".bashrc")).unwrap(), "mine");
        assert_eq!(
            fs::read_to_string(dst.join("keep.txt")).unwrap(),
            "user data"
        );
        assert_eq!(fs::read_to_string(dst.join("a/b/file")).unwrap(), "deep");
        assert_eq!(st.skipped_existing, 1);
        // A second fill copies nothing.
        let st = copy_tree(&d.path().join("src"), &dst, Owner::Copier, true).unwrap();
        assert_eq!(st.copied, 0);
    }

    #[test]
    fn created_dirs_exist() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/y/z");
        create_dir_all_owned(&p, None).unwrap();
        assert!(p.is_dir());
        create_dir_all_owned(&p, None).unwrap();
    }

    #[test]
    fn chown_to_self_counts_entries() {
        let d = tree();
        let m = fs::metadata(d.path()).unwrap();
        let n = chown_path(&d.path().join("src"), m.uid(), m.gid(), true).unwrap();
        assert_eq!(n, 6);
        assert_eq!(
            chown_path(&d.path().join("src"), m.uid(), m.gid(), false).unwrap(),
            1
        );
    }
}
