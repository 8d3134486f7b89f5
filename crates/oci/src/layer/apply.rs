//! Applying a layer to a directory. Every path is resolved by the kernel with the target
//! directory as its root (`openat2` with `RESOLVE_IN_ROOT`), and the last component of each
//! entry is never followed, so no entry, symlink or hard link can reach outside the root,
//! whatever the layers below put there.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;

use crate::error::{OciError, Result};
use crate::layer::reader::{for_each_entry, Entry, EntryKind};
use crate::text::Quoted;

/// How whiteouts in the layer are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Delete what they hide from the directory (flattening onto lower layers).
    Delete,
    /// Record them the way overlayfs does (character device 0/0, `trusted.overlay.opaque`),
    /// for a directory used as one overlay lower layer.
    Overlay,
}

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Set owners from the layer (needs root; otherwise files belong to the caller).
    pub chown: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            whiteouts: WhiteoutMode::Delete,
            chown: rustix::process::geteuid().is_root(),
        }
    }
}

fn sys_err(path: &str, what: &str, e: Errno) -> OciError {
    OciError::Io {
        context: format!("{what} {}", Quoted(path)),
        source: std::io::Error::from(e),
    }
}

struct Applier {
    root: OwnedFd,
    opts: ApplyOptions,
    /// Directory times are set last: creating children changes them.
    dir_times: BTreeMap<String, u64>,
    /// Paths this layer wrote (implied directories too): its own whiteouts and opaque
    /// markers never remove them (they act on the layers below only).
    written: HashSet<String>,
}

/// Apply an uncompressed layer tar to `root` (which must exist).
pub fn apply_layer<R: Read>(root: &Path, layer: R, opts: ApplyOptions) -> Result<()> {
    let root_fd = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| sys_err(&root.display().to_string(), "opening target root", e))?;
    let mut applier = Applier {
        root: root_fd,
        opts,
        dir_times: BTreeMap::new(),
        written: HashSet::new(),
    };
    for_each_entry(layer, |entry, data| applier.apply(entry, data))?;
    applier.finish_dirs();
    Ok(())
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", path),
    }
}

impl Applier {
    /// Open a directory inside the root, resolving symlinks as if the root were `/`.
    fn open_dir(&self, path: &str) -> std::result::Result<OwnedFd, Errno> {
        let p = if path.is_empty() { "." } else { path };
        rfs::openat2(
            &self.root,
            p,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Open the parent of an entry, creating missing directories (mode 0755) on the way.
    fn parent(&mut self, path: &str) -> Result<OwnedFd> {
        let (parent, _) = split(path);
        match self.open_dir(parent) {
            Ok(fd) => return Ok(fd),
            // Missing, or one of this layer's whiteouts on the way: made below.
            Err(Errno::NOENT | Errno::NOTDIR) => {}
            Err(e) => return Err(sys_err(parent, "opening directory", e)),
        }
        let mut done = String::new();
        let mut fd = self
            .open_dir("")
            .map_err(|e| sys_err("/", "opening root", e))?;
        for comp in parent.split('/') {
            let next = if done.is_empty() {
                comp.to_string()
            } else {
                format!("{done}/{comp}")
            };
            fd = match self.open_dir(&next) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rfs::mkdirat(&fd, comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            self.written.insert(next.clone());
                        }
                        Err(Errno::EXIST) => {}
                        Err(e) => return Err(sys_err(&next, "creating directory", e)),
                    }
                    self.open_dir(&next)
                        .map_err(|e| sys_err(&next, "opening directory (a dangling symlink?)", e))?
                }
                Err(Errno::NOTDIR) if self.is_own_whiteout(&fd, comp) => {
                    // Entries under a path this layer whited out: a fresh directory.
                    rfs::unlinkat(&fd, comp, AtFlags::empty())
                        .map_err(|e| sys_err(&next, "replacing whiteout", e))?;
                    rfs::mkdirat(&fd, comp, Mode::from_raw_mode(0o755))
                        .map_err(|e| sys_err(&next, "creating directory", e))?;
                    self.written.insert(next.clone());
                    let dir = self
                        .open_dir(&next)
                        .map_err(|e| sys_err(&next, "opening directory", e))?;
                    let rw =
                        reopen_dir(&dir).map_err(|e| sys_err(&next, "opening directory", e))?;
                    rfs::fsetxattr(&rw, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                        .map_err(|e| sys_err(&next, "marking opaque", e))?;
                    dir
                }
                Err(e) => return Err(sys_err(&next, "opening directory", e)),
            };
            done = next;
        }
        Ok(fd)
    }

    /// Whether `name` in `dir` is an overlay whiteout (in overlay form, one of this layer's).
    fn is_own_whiteout(&self, dir: &OwnedFd, name: &str) -> bool {
        self.opts.whiteouts == WhiteoutMode::Overlay
            && rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
            })
    }

    /// Remove what lower layers put under directory `path` (open as `dir`), keeping what
    /// this layer wrote.
    fn remove_lower(&self, dir: &OwnedFd, path: &str) -> std::result::Result<(), Errno> {
        let fd = reopen_dir(dir)?;
        for name in list_dir(&fd)? {
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            if !self.written.contains(&child) {
                remove_all(&fd, &name)?;
            } else if let Ok(sub) = rfs::openat(
                &fd,
                name.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                self.remove_lower(&sub, &child)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        let result = self.apply_entry(entry, data);
        if result.is_ok() && !matches!(entry.kind, EntryKind::Whiteout | EntryKind::Opaque) {
            self.written.insert(entry.path.clone());
        }
        result
    }

    fn apply_entry(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        let path = entry.path.as_str();
        if entry.kind == EntryKind::Opaque {
            return self.opaque(path);
        }
        let dir = self.parent(path)?;
        let (_, name) = split(path);
        let existing = rfs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        // In overlay form, a directory replacing a whiteout from this same layer must hide
        // the lower directory of that name: it becomes opaque.
        let replaces_whiteout = existing.as_ref().is_some_and(|st| {
            FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
        });
        match &entry.kind {
            EntryKind::Whiteout if self.written.contains(path) => {
                // A whiteout never removes what its own layer wrote: it hides the layers
                // below, so a directory of this layer becomes a fresh one.
                if existing_is_dir {
                    let sub = self
                        .open_dir(path)
                        .map_err(|e| sys_err(path, "opening directory", e))?;
                    match self.opts.whiteouts {
                        WhiteoutMode::Delete => self
                            .remove_lower(&sub, path)
                            .map_err(|e| sys_err(path, "emptying", e))?,
                        WhiteoutMode::Overlay => {
                            let fd = reopen_dir(&sub)
                                .map_err(|e| sys_err(path, "opening directory", e))?;
                            rfs::fsetxattr(
                                &fd,
                                "trusted.overlay.opaque",
                                b"y",
                                XattrFlags::empty(),
                            )
                            .map_err(|e| sys_err(path, "marking opaque", e))?;
                        }
                    }
                }
                return Ok(());
            }
            EntryKind::Whiteout => {
                if replaces_whiteout && self.opts.whiteouts == WhiteoutMode::Overlay {
                    return Ok(());
                }
                if existing.is_some() {
                    remove_all(&dir, name).map_err(|e| sys_err(path, "removing", e))?;
                }
                if self.opts.whiteouts == WhiteoutMode::Overlay {
                    rfs::mknodat(&dir, name, FileType::CharacterDevice, Mode::empty(), 0)
                        .map_err(|e| sys_err(path, "creating overlay whiteout", e))?;
                }
                return Ok(());
            }
            EntryKind::Dir if existing_is_dir => {}
            _ => {
                if existing.is_some() {
                    remove_all(&dir, name).map_err(|e| sys_err(path, "replacing", e))?;
                }
            }
        }
        let mode = Mode::from_raw_mode(entry.mode);
        match &entry.kind {
            EntryKind::File => {
                let fd = rfs::openat(
                    &dir,
                    name,
                    OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::WRONLY
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| sys_err(path, "creating file", e))?;
                let mut file = std::fs::File::from(fd);
                let n = std::io::copy(&mut data.take(entry.size), &mut file).map_err(|e| {
                    OciError::Io {
                        context: format!("writing {}", Quoted(path)),
                        source: e,
                    }
                })?;
                if n != entry.size {
                    return Err(OciError::InvalidLayer(format!(
                        "{path:?} ends after {n} of its {} bytes",
                        entry.size
                    )));
                }
                file.flush().ok();
                self.finish_fd(file.as_fd(), entry, mode, path)?;
            }
            EntryKind::Dir => {
                if !existing_is_dir {
                    rfs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| sys_err(path, "creating directory", e))?;
                }
                let fd = rfs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| sys_err(path, "opening directory", e))?;
                self.finish_fd(fd.as_fd(), entry, mode, path)?;
                self.dir_times.insert(path.to_string(), entry.mtime);
                if self.opts.whiteouts == WhiteoutMode::Overlay && replaces_whiteout {
                    rfs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                        .map_err(|e| sys_err(path, "marking opaque", e))?;
                }
            }
            EntryKind::Symlink(target) => {
                rfs::symlinkat(target.as_str(), &dir, name)
                    .map_err(|e| sys_err(path, "creating symlink", e))?;
                if self.opts.chown {
                    rfs::chownat(
                        &dir,
                        name,
                        Some(rfs::Uid::from_raw(entry.uid as u32)),
                        Some(rfs::Gid::from_raw(entry.gid as u32)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| sys_err(path, "setting owner of", e))?;
                }
                rfs::utimensat(&dir, name, &times(entry.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| sys_err(path, "setting time of", e))?;
            }
            EntryKind::Hardlink(target) => {
                let tdir = self
                    .open_dir(split(target).0)
                    .map_err(|e| sys_err(target, "opening link target directory", e))?;
                rfs::linkat(&tdir, split(target).1, &dir, name, AtFlags::empty())
                    .map_err(|e| sys_err(path, &format!("linking to {} as", Quoted(target)), e))?;
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let ft = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev = rfs::makedev(*major, *minor);
                match rfs::mknodat(&dir, name, ft, mode, dev) {
                    Ok(()) => {}
                    Err(Errno::PERM) if !self.opts.chown => {
                        tracing::warn!("skipping device node {path:?}: not running as root");
                        return Ok(());
                    }
                    Err(e) => return Err(sys_err(path, "creating device node", e)),
                }
                self.chown_at(&dir, name, entry, path)?;
            }
            EntryKind::Fifo => {
                rfs::mknodat(&dir, name, FileType::Fifo, mode, 0)
                    .map_err(|e| sys_err(path, "creating fifo", e))?;
                self.chown_at(&dir, name, entry, path)?;
            }
            EntryKind::Whiteout | EntryKind::Opaque => {}
        }
        Ok(())
    }

    fn chown_at(&self, dir: &OwnedFd, name: &str, entry: &Entry, path: &str) -> Result<()> {
        if self.opts.chown {
            rfs::chownat(
                dir,
                name,
                Some(rfs::Uid::from_raw(entry.uid as u32)),
                Some(rfs::Gid::from_raw(entry.gid as u32)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| sys_err(path, "setting owner of", e))?;
        }
        Ok(())
    }

    /// Owner, then mode (chown clears setuid bits), xattrs and time, on an open file.
    fn finish_fd(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        entry: &Entry,
        mode: Mode,
        path: &str,
    ) -> Result<()> {
        if self.opts.chown {
            rfs::fchown(
                fd,
                Some(rfs::Uid::from_raw(entry.uid as u32)),
                Some(rfs::Gid::from_raw(entry.gid as u32)),
            )
            .map_err(|e| sys_err(path, "setting owner of", e))?;
        }
        rfs::fchmod(fd, mode).map_err(|e| sys_err(path, "setting mode of", e))?;
        for (key, value) in &entry.xattrs {
            match rfs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                // Unprivileged callers cannot set trusted.* or security.* attributes.
                Err(Errno::PERM | Errno::OPNOTSUPP) if !self.opts.chown => {}
                Err(e) => {
                    return Err(sys_err(
                        path,
                        &format!("setting xattr {} on", Quoted(key)),
                        e,
                    ))
                }
            }
        }
        if entry.kind == EntryKind::File {
            rfs::futimens(fd, &times(entry.mtime))
                .map_err(|e| sys_err(path, "setting time of", e))?;
        }
        Ok(())
    }

    fn opaque(&mut self, path: &str) -> Result<()> {
        let dir = match self.open_dir(path) {
            Ok(fd) => fd,
            Err(Errno::NOENT | Errno::NOTDIR) => self.parent(&format!("{path}/x"))?,
            Err(e) => return Err(sys_err(path, "opening directory", e)),
        };
        match self.opts.whiteouts {
            WhiteoutMode::Delete => {
                self.remove_lower(&dir, path)
                    .map_err(|e| sys_err(path, "emptying", e))?;
            }
            WhiteoutMode::Overlay => {
                let fd = reopen_dir(&dir).map_err(|e| sys_err(path, "opening directory", e))?;
                rfs::fsetxattr(&fd, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                    .map_err(|e| sys_err(path, "marking opaque", e))?;
            }
        }
        Ok(())
    }

    fn finish_dirs(&self) {
        // Deepest first, so setting a parent's time comes after its children are done.
        for (path, mtime) in self.dir_times.iter().rev() {
            if let Ok(fd) = self.open_dir(path) {
                if let Ok(fd) = reopen_dir(&fd) {
                    let _ = rfs::futimens(&fd, &times(*mtime));
                }
            }
        }
    }
}

fn times(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// An O_PATH directory descriptor turned into one that can be listed and changed.
fn reopen_dir(fd: &OwnedFd) -> std::result::Result<OwnedFd, Errno> {
    rfs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn list_dir(fd: &OwnedFd) -> std::result::Result<Vec<String>, Errno> {
    let mut names = Vec::new();
    let dup = rustix::io::dup(fd)?;
    let mut dir = rfs::Dir::new(dup)?;
    while let Some(ent) = dir.read() {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Remove `name` in `dir`, recursively if it is a directory, never following symlinks.
fn remove_all(dir: &OwnedFd, name: &str) -> std::result::Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for child in list_dir(&sub)? {
        remove_all(&sub, &child)?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)
}
