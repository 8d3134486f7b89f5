//! Layers extracted once into directories, in the form overlayfs reads as lower layers
//! (whiteouts as character devices 0/0, opaque directories marked with the
//! `trusted.overlay.opaque` xattr), and a read-only merged view of an image's file system
//! built from them, so an image's files can be read without mounting or running anything.
//!
//! ```text
//! $NBRT_HOME/snapshots/<diff-id hex>/   one layer's files (never changed once renamed here)
//! $NBRT_HOME/snapshots/.tmp/            extractions in progress (renamed into place when whole)
//! $NBRT_HOME/snapshots/.trash/          snapshots being removed by prune
//! $NBRT_HOME/snapshots/.locks/<hex>     held while a layer is being extracted
//! $NBRT_HOME/snapshots/.lock            shared while a process uses snapshots, exclusive to prune
//! ```
//!
//! Snapshot directories hold the image's setuid binaries and device nodes with their real
//! owners, so the `snapshots` directory is kept at mode 0700.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nbrt_oci::digest::HashingReader;
use nbrt_oci::fsutil::{open_locked, LockMode};
use nbrt_oci::fsview::{self, FileInfo, FileKind, FileView, FsViewError};
use nbrt_oci::image::{open_verified, unwrap_io};
use nbrt_oci::layer::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use nbrt_oci::layer::compression::{decompress, Compression};
use nbrt_oci::layer::merge::{AtPath, PathMerge, Present};
use nbrt_oci::spec::Descriptor;
use nbrt_oci::{Digest, Image, Store};

use crate::error::{BuildError, IoContext, Result};

/// Layer directories of a store, keyed by diff ID.
pub struct Snapshots {
    root: PathBuf,
    /// Shared for as long as this value lives; [`Snapshots::prune`] needs it exclusively.
    lock: File,
}

/// What [`Snapshots::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    pub removed: usize,
    pub kept: usize,
}

impl Snapshots {
    /// The snapshots of `store` (`<store root>/snapshots`).
    pub fn open(store: &Store) -> Result<Self> {
        Self::open_at(store.snapshot_root())
    }

    /// Snapshots kept in `root` (created when missing).
    pub fn open_at(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join(".tmp"), root.join(".locks"), root.join(".trash")] {
            fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700))
            .io_context(|| format!("setting the mode of {}", root.display()))?;
        let lock = open_locked(&root.join(".lock"), LockMode::Shared)?;
        Ok(Self { root, lock })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the snapshot of the layer with this diff ID is (or would be).
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join(diff_id.hex())
    }

    /// The directory holding this layer's files in overlay form. Extracted on first use into
    /// a temporary directory, checked against `diff_id` (and the blob against the
    /// descriptor's digest) and only then renamed into place; a lock per layer keeps two
    /// processes from extracting the same layer at once.
    pub fn ensure(&self, store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
        let dir = self.path(diff_id);
        if dir.is_dir() {
            return Ok(dir);
        }
        let _lock = open_locked(
            &self.root.join(".locks").join(diff_id.hex()),
            LockMode::Exclusive,
        )?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{}-", diff_id.hex()))
            .tempdir_in(self.root.join(".tmp"))
            .io_context(|| format!("creating a directory in {}", self.root.display()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .io_context(|| format!("setting the mode of {}", tmp.path().display()))?;
        extract(store, layer, diff_id, tmp.path())?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, &dir) {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(BuildError::Io {
                context: format!("renaming a snapshot into {}", dir.display()),
                source: e,
            });
        }
        Ok(dir)
    }

    /// Take `dir`, the tree a step just wrote its layer from (with whiteouts in overlay form),
    /// as the snapshot of that layer instead of unpacking the blob again later. Its mtimes
    /// are made what unpacking gives (whole seconds, clamped like the layer's). Does nothing
    /// when the snapshot exists already; `dir` is moved otherwise.
    pub fn adopt(&self, diff_id: &Digest, dir: &Path, clamp_mtime: Option<u64>) -> Result<()> {
        let target = self.path(diff_id);
        if target.is_dir() {
            return Ok(());
        }
        let _lock = open_locked(
            &self.root.join(".locks").join(diff_id.hex()),
            LockMode::Exclusive,
        )?;
        if target.is_dir() {
            return Ok(());
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .io_context(|| format!("setting the mode of {}", dir.display()))?;
        as_unpacked_times(dir, clamp_mtime)?;
        fs::rename(dir, &target)
            .io_context(|| format!("moving {} to {}", dir.display(), target.display()))
    }

    /// All layer directories of an image, top layer first (the order of overlay's
    /// `lowerdir`).
    pub fn lowers(&self, store: &Store, image: &Image) -> Result<Vec<PathBuf>> {
        let layers: Vec<(&Descriptor, &Digest)> =
            image.layers().iter().zip(image.diff_ids()).collect();
        self.ensure_all(store, &layers)
    }

    /// The directories of `layers` (bottom first), top layer first (the order of overlay's
    /// `lowerdir`), unpacked where they are not yet. (Unpacking them side by side was tried:
    /// no faster on two CPUs, where the biggest layer sets the time.)
    pub fn ensure_all(
        &self,
        store: &Store,
        layers: &[(&Descriptor, &Digest)],
    ) -> Result<Vec<PathBuf>> {
        let mut dirs = layers
            .iter()
            .map(|(l, d)| self.ensure(store, l, d))
            .collect::<Result<Vec<_>>>()?;
        dirs.reverse();
        Ok(dirs)
    }

    /// Remove every snapshot whose diff ID `keep` does not want, and leftovers of
    /// interrupted extractions. Refuses (with an error) while another `Snapshots` of this
    /// directory is open, in this process or another, since it may be using them.
    pub fn prune(&self, keep: impl Fn(&Digest) -> bool) -> Result<PruneReport> {
        exclusively(&self.lock, &self.root, "snapshots", || {
            self.prune_locked(keep)
        })
    }

    fn prune_locked(&self, keep: impl Fn(&Digest) -> bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let trash = self.root.join(".trash");
        for entry in
            fs::read_dir(&self.root).io_context(|| format!("listing {}", self.root.display()))?
        {
            let entry = entry.io_context(|| format!("listing {}", self.root.display()))?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
                continue;
            };
            if keep(&digest) {
                report.kept += 1;
                continue;
            }
            // Rename first, so a removal cut short never leaves a half snapshot in place.
            let doomed = trash.join(digest.hex());
            let _ = fs::remove_dir_all(&doomed);
            fs::rename(entry.path(), &doomed)
                .io_context(|| format!("moving {} out of the way", entry.path().display()))?;
            let _ = fs::remove_file(self.root.join(".locks").join(digest.hex()));
            report.removed += 1;
        }
        // With the exclusive lock held nobody is extracting: what is left here is debris.
        for dir in [self.root.join(".tmp"), trash] {
            if let Ok(entries) = fs::read_dir(&dir) {
                for entry in entries.flatten() {
                    fs::remove_dir_all(entry.path())
                        .io_context(|| format!("removing {}", entry.path().display()))?;
                }
            }
        }
        Ok(report)
    }
}

/// Run `f` holding `lock` (the shared lock every user of the cache at `root` holds)
/// exclusively: refuses with an error while another user has it open, in this process or
/// another, and takes the shared lock again afterwards.
pub(crate) fn exclusively<T>(
    lock: &fs::File,
    root: &Path,
    what: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(BuildError::Io {
                context: format!(
                    "pruning {}: {what} are in use by another nbrt build; try again when it \
                     has finished",
                    root.display()
                ),
                source: io::Error::from(io::ErrorKind::WouldBlock),
            })
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(BuildError::Io {
                context: format!("locking {} for pruning", root.display()),
                source: e,
            })
        }
    }
    let result = f();
    let relock = lock
        .lock_shared()
        .io_context(|| format!("relocking {}", root.display()));
    let out = result?;
    relock?;
    Ok(out)
}

/// Every entry's mtime as a layer stores it: whole seconds, at most `clamp`. Children first,
/// so setting a directory's time is the last change to it.
fn as_unpacked_times(path: &Path, clamp: Option<u64>) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::symlink_metadata(path).io_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).io_context(|| format!("listing {}", path.display()))? {
            let entry = entry.io_context(|| format!("listing {}", path.display()))?;
            as_unpacked_times(&entry.path(), clamp)?;
        }
    }
    let secs = match clamp {
        Some(max) => meta.mtime().min(max as i64),
        None => meta.mtime(),
    };
    let time = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| BuildError::Io {
        context: format!("setting the time of {}", path.display()),
        source: e.into(),
    })
}

/// Apply one layer blob into `dir` in overlay form, checking the blob and its diff ID.
fn extract(store: &Store, layer: &Descriptor, diff_id: &Digest, dir: &Path) -> Result<()> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let mut blob = open_verified(store, layer)?;
    let mut tar = HashingReader::new(decompress(&mut blob, compression)?);
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        chown: rustix::process::geteuid().is_root(),
    };
    apply_layer(dir, &mut tar, opts)?;
    // The tar may end before the stream does (padding after the end marker); the diff ID
    // covers all of it, and the blob digest is checked only once the blob is read to its end.
    io::copy(&mut tar, &mut io::sink())
        .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)))?;
    let (actual, _) = tar.finish();
    io::copy(&mut blob, &mut io::sink())
        .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)))?;
    diff_id
        .verify(&actual, || format!("diff ID of layer {}", layer.digest))
        .map_err(BuildError::from)
}

/// Largest file [`MergedView::read`] returns.
pub const MAX_READ: u64 = 64 << 20;
/// Most symlinks followed while resolving one path (as Linux does).
pub const MAX_SYMLINKS: usize = 40;

/// A read-only merged view of an image's file system over its snapshot directories, with
/// overlayfs's rules (those of [`nbrt_oci::layer::merge`], applied lazily to each path looked
/// up): the top layer wins, a whiteout (character device 0/0) hides what is below it, an
/// opaque directory hides the lower directories of the same path, and a non-directory ends
/// the merge of a path. Symlinks resolve inside the image root. It is a [`FileView`] for the
/// shared fact readers of [`nbrt_oci::facts`].
#[derive(Debug, Clone)]
pub struct MergedView {
    lowers: Vec<PathBuf>,
}

/// What a path is in a [`MergedView`].
#[derive(Debug, Clone)]
pub enum Node {
    /// A directory, merged from these layers (indexes into the lowers, top first).
    Dir(Vec<usize>),
    /// Anything else, as found in this layer.
    Other { layer: usize, meta: fs::Metadata },
}

/// A path looked up in a [`MergedView`].
#[derive(Debug, Clone)]
pub struct Found {
    /// The path with every symlink followed resolved (relative to the root, no leading `/`).
    pub path: String,
    pub node: Node,
}

enum Walk {
    Found(Found),
    /// `prefix` exists (resolved); `rest` does not, or is below a non-directory.
    Missing {
        prefix: Vec<String>,
        rest: Vec<String>,
    },
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

fn lstat(path: &Path) -> fsview::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(FsViewError::Io {
            context: format!("reading {}", path.display()),
            source: e,
        }),
    }
}

fn view_io(context: impl FnOnce() -> String) -> impl FnOnce(io::Error) -> FsViewError {
    move |source| FsViewError::Io {
        context: context(),
        source,
    }
}

/// The builder's error for a view's: I/O errors stay I/O errors, the rest are the sandbox's
/// (with the view's message).
pub(crate) fn build_err(e: FsViewError) -> BuildError {
    match e {
        FsViewError::Io { context, source } => BuildError::Io { context, source },
        other => BuildError::Sandbox(other.to_string()),
    }
}

/// Whether an entry is an overlay whiteout (a character device with device number 0/0).
pub fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// The paths a layer directory decides when it is merged over others (relative, sorted):
/// every non-directory, whiteouts included, and every opaque directory, whose whole contents
/// it decides. Directories that only hold entries are left out.
pub fn decided_paths(layer: &Path) -> Result<Vec<String>> {
    fn walk(abs: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        for entry in fs::read_dir(abs).io_context(|| format!("listing {}", abs.display()))? {
            let entry = entry.io_context(|| format!("listing {}", abs.display()))?;
            let name = entry.file_name();
            let child = match rel {
                "" => name.to_string_lossy().into_owned(),
                _ => format!("{rel}/{}", name.to_string_lossy()),
            };
            let path = entry.path();
            let is_dir = entry
                .file_type()
                .io_context(|| format!("reading {}", path.display()))?
                .is_dir();
            if !is_dir || is_opaque(&path) {
                out.push(child);
            } else {
                walk(&path, &child, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(layer, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// Whether a directory carries overlayfs's opaque mark.
pub fn is_opaque(path: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut buf[..]),
        Ok(1) if buf[0] == b'y'
    )
}

/// What a layer directory holds at a path, for the merge rules (`path` is where it is on
/// disk; its opaque mark is read for directories only).
fn at_path(meta: &fs::Metadata, path: &Path) -> AtPath {
    if is_whiteout(meta) {
        AtPath::WHITEOUT
    } else if meta.is_dir() {
        AtPath::dir(is_opaque(path))
    } else {
        AtPath::OTHER
    }
}

fn file_info(meta: &fs::Metadata, link: Option<String>) -> FileInfo {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_char_device() || ft.is_block_device() {
        FileKind::Device
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::File
    };
    FileInfo {
        kind,
        mode: meta.mode() & 0o7777,
        uid: u64::from(meta.uid()),
        gid: u64::from(meta.gid()),
        size: if kind == FileKind::File {
            meta.len()
        } else {
            0
        },
        link,
    }
}

impl MergedView {
    /// `lowers`: layer directories, top first.
    pub fn new(lowers: Vec<PathBuf>) -> Self {
        Self { lowers }
    }

    pub fn lowers(&self) -> &[PathBuf] {
        &self.lowers
    }

    fn root_stack(&self) -> Vec<usize> {
        let mut merge = PathMerge::new();
        let mut stack = Vec::new();
        for (i, dir) in self.lowers.iter().enumerate() {
            if merge.push(AtPath::dir(is_opaque(dir))).contents_shown {
                stack.push(i);
            }
            if merge.is_done() {
                break;
            }
        }
        stack
    }

    /// The [`FileInfo`] of the entry `rel` (resolved) of layer `layer`, whose metadata is
    /// `meta`: a symlink's target read from the disk.
    fn info_at(&self, layer: usize, rel: &str, meta: &fs::Metadata) -> fsview::Result<FileInfo> {
        let link = if meta.file_type().is_symlink() {
            let on_disk = self.layer_path(layer, rel);
            let target = fs::read_link(&on_disk)
                .map_err(view_io(|| format!("reading symlink {}", on_disk.display())))?;
            Some(
                target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| FsViewError::NotUtf8 {
                        what: format!("the target of symlink /{rel}"),
                    })?,
            )
        } else {
            None
        };
        Ok(file_info(meta, link))
    }

    fn layer_path(&self, layer: usize, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.lowers[layer].clone()
        } else {
            self.lowers[layer].join(rel)
        }
    }

    /// Look `name` up in the directory `dir` (resolved, relative) merged from `stack`: the
    /// merge rules applied to the path's entries in those layers, top first.
    fn child(&self, stack: &[usize], dir: &str, name: &str) -> fsview::Result<Option<Node>> {
        let rel = fsview::join(dir, name);
        let mut merge = PathMerge::new();
        let mut dirs = Vec::new();
        let mut other = None;
        for &i in stack {
            let path = self.layer_path(i, &rel);
            let Some(meta) = lstat(&path)? else {
                continue;
            };
            let pushed = merge.push(at_path(&meta, &path));
            if pushed.contents_shown {
                dirs.push(i);
            }
            if pushed.shown && !meta.is_dir() {
                other = Some((i, meta));
            }
            if merge.is_done() {
                break;
            }
        }
        Ok(match (merge.top(), other) {
            (Some(Present::Dir), _) => Some(Node::Dir(dirs)),
            (Some(Present::Other), Some((layer, meta))) => Some(Node::Other { layer, meta }),
            _ => None,
        })
    }

    fn walk(&self, path: &str, follow_last: bool) -> fsview::Result<Walk> {
        let mut todo: Vec<String> = components(path);
        todo.reverse(); // a stack: next component last
        let mut cur: Vec<String> = Vec::new();
        let mut stacks: Vec<Vec<usize>> = vec![self.root_stack()];
        let mut links = 0usize;
        while let Some(comp) = todo.pop() {
            if comp == ".." {
                if !cur.is_empty() {
                    cur.pop();
                    stacks.pop();
                }
                continue;
            }
            let dir = cur.join("/");
            let stack = stacks.last().cloned().unwrap_or_default();
            match self.child(&stack, &dir, &comp)? {
                None => {
                    let mut rest = vec![comp];
                    rest.extend(todo.into_iter().rev());
                    return Ok(Walk::Missing { prefix: cur, rest });
                }
                Some(Node::Dir(s)) => {
                    cur.push(comp);
                    stacks.push(s);
                }
                Some(Node::Other { layer, meta }) => {
                    let last = todo.is_empty();
                    if meta.file_type().is_symlink() && (!last || follow_last) {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(FsViewError::SymlinkLoop {
                                path: path.to_string(),
                            });
                        }
                        let rel = fsview::join(&dir, &comp);
                        let link = self.layer_path(layer, &rel);
                        let target = fs::read_link(&link)
                            .map_err(view_io(|| format!("reading symlink {}", link.display())))?;
                        let target = target.to_str().ok_or_else(|| FsViewError::NotUtf8 {
                            what: format!("the target of symlink /{rel}"),
                        })?;
                        if target.starts_with('/') {
                            cur.clear();
                            stacks.truncate(1);
                        }
                        todo.extend(components(target).into_iter().rev());
                        continue;
                    }
                    cur.push(comp);
                    if !last {
                        let rest: Vec<String> = todo.into_iter().rev().collect();
                        return Ok(Walk::Missing { prefix: cur, rest });
                    }
                    return Ok(Walk::Found(Found {
                        path: cur.join("/"),
                        node: Node::Other { layer, meta },
                    }));
                }
            }
        }
        Ok(Walk::Found(Found {
            path: cur.join("/"),
            node: Node::Dir(stacks.pop().unwrap_or_default()),
        }))
    }

    fn find(&self, path: &str, follow_last: bool) -> fsview::Result<Option<Found>> {
        Ok(match self.walk(path, follow_last)? {
            Walk::Found(f) => Some(f),
            Walk::Missing { .. } => None,
        })
    }

    /// Look a path up. `follow_last`: follow a symlink in the last component too (like
    /// `stat`); otherwise report the symlink itself (like `lstat`). Symlinks in earlier
    /// components are always followed, inside the image root.
    pub fn lookup(&self, path: &str, follow_last: bool) -> Result<Option<Found>> {
        self.find(path, follow_last).map_err(build_err)
    }

    /// Where a path leads once every symlink that exists is followed, even when its end does
    /// not exist yet (like `realpath -m`, inside the image root). This is the place a
    /// runtime creates a missing mount point at.
    pub fn resolve_lenient(&self, path: &str) -> Result<String> {
        Ok(match self.walk(path, true).map_err(build_err)? {
            Walk::Found(f) => f.path,
            Walk::Missing { mut prefix, rest } => {
                for c in rest {
                    if c == ".." {
                        prefix.pop();
                    } else {
                        prefix.push(c);
                    }
                }
                prefix.join("/")
            }
        })
    }

    /// A file's bytes (symlinks followed inside the image); `None` when nothing is there.
    /// Fails for directories, special files and files over [`MAX_READ`] bytes.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        FileView::read(self, path).map_err(build_err)
    }

    /// Whether something is at `path` (symlinks followed, so a dangling one is not there).
    pub fn exists(&self, path: &str) -> bool {
        matches!(self.find(path, true), Ok(Some(_)))
    }

    /// Metadata of the visible entry at `path` without following a final symlink (for a
    /// directory, that of its top layer). `None` when nothing is there.
    pub fn symlink_metadata(&self, path: &str) -> Result<Option<fs::Metadata>> {
        self.top_metadata(path, false)
            .map(|m| m.map(|(_, _, meta)| meta))
            .map_err(build_err)
    }

    /// The visible entry's layer, resolved path and metadata (a directory's from its top
    /// layer).
    fn top_metadata(
        &self,
        path: &str,
        follow: bool,
    ) -> fsview::Result<Option<(usize, String, fs::Metadata)>> {
        let Some(found) = self.find(path, follow)? else {
            return Ok(None);
        };
        match found.node {
            Node::Other { layer, meta } => Ok(Some((layer, found.path, meta))),
            Node::Dir(stack) => {
                match stack.first() {
                    Some(&top) => Ok(lstat(&self.layer_path(top, &found.path))?
                        .map(|meta| (top, found.path, meta))),
                    None => Ok(None),
                }
            }
        }
    }

    /// Names in a directory, merged over the layers, sorted.
    pub fn read_dir(&self, path: &str) -> Result<Vec<String>> {
        FileView::read_dir(self, path)
            .map_err(build_err)?
            .ok_or_else(|| BuildError::Sandbox(format!("no directory {path:?} in the image")))
    }

    /// The first path at or below `path` that reads differently in `other` (symlinks in
    /// earlier components followed, not the last): another kind, mode, owner, size, symlink
    /// target or content, or present in one view only. A directory's entries are compared,
    /// not its own metadata. `None` when both read the same; entries that are the same file
    /// on disk (the same layer below both) are not read.
    pub fn first_difference(&self, other: &MergedView, path: &str) -> Result<Option<String>> {
        let (mine, theirs) = match (self.lookup(path, false)?, other.lookup(path, false)?) {
            (None, None) => return Ok(None),
            (Some(mine), Some(theirs)) => (mine, theirs),
            _ => return Ok(Some(path.to_string())),
        };
        if mine.path != theirs.path {
            return Ok(Some(path.to_string()));
        }
        match (&mine.node, &theirs.node) {
            (Node::Dir(_), Node::Dir(_)) => {
                let mut names: std::collections::BTreeSet<String> =
                    FileView::read_dir(self, &mine.path)
                        .map_err(build_err)?
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                names.extend(
                    FileView::read_dir(other, &mine.path)
                        .map_err(build_err)?
                        .unwrap_or_default(),
                );
                for name in names {
                    let child = fsview::join(&mine.path, &name);
                    if let Some(d) = self.first_difference(other, &child)? {
                        return Ok(Some(d));
                    }
                }
                Ok(None)
            }
            (Node::Other { layer: a, meta: ma }, Node::Other { layer: b, meta: mb }) => {
                let (pa, pb) = (
                    self.layer_path(*a, &mine.path),
                    other.layer_path(*b, &theirs.path),
                );
                if pa == pb {
                    return Ok(None);
                }
                let same = self.info_at(*a, &mine.path, ma).map_err(build_err)?
                    == other.info_at(*b, &theirs.path, mb).map_err(build_err)?
                    && (!ma.is_file() || same_bytes(&pa, &pb, ma.len())?)
                    && (!ma.file_type().is_char_device() && !ma.file_type().is_block_device()
                        || ma.rdev() == mb.rdev());
                Ok((!same).then(|| path.to_string()))
            }
            _ => Ok(Some(path.to_string())),
        }
    }

    /// Where the visible copy of `path` lives on disk (symlinks followed; for a directory,
    /// its top layer's copy).
    pub fn real_path(&self, path: &str) -> Option<PathBuf> {
        let found = self.find(path, true).ok()??;
        let layer = match found.node {
            Node::Other { layer, .. } => layer,
            Node::Dir(stack) => *stack.first()?,
        };
        Some(self.layer_path(layer, &found.path))
    }
}

/// Whether two files of `len` bytes hold the same bytes (read in blocks: files may be large).
fn same_bytes(a: &Path, b: &Path, len: u64) -> Result<bool> {
    let open = |p: &Path| File::open(p).io_context(|| format!("opening {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut left = len;
    while left > 0 {
        let n = left.min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n])
            .io_context(|| format!("reading {}", a.display()))?;
        fb.read_exact(&mut bb[..n])
            .io_context(|| format!("reading {}", b.display()))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

impl FileView for MergedView {
    fn read(&self, path: &str) -> fsview::Result<Option<Vec<u8>>> {
        let Some(found) = self.find(path, true)? else {
            return Ok(None);
        };
        let (layer, meta) = match found.node {
            Node::Other { layer, meta } => (layer, meta),
            Node::Dir(_) => {
                return Err(FsViewError::IsADirectory {
                    path: path.to_string(),
                })
            }
        };
        if !meta.is_file() {
            return Err(FsViewError::NotAFile {
                path: path.to_string(),
            });
        }
        let too_large = |size: u64| FsViewError::TooLarge {
            path: path.to_string(),
            size,
            limit: MAX_READ,
        };
        if meta.len() > MAX_READ {
            return Err(too_large(meta.len()));
        }
        let real = self.layer_path(layer, &found.path);
        let fd = rustix::fs::open(
            &real,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| FsViewError::Io {
            context: format!("opening {}", real.display()),
            source: e.into(),
        })?;
        let mut data = Vec::with_capacity(meta.len() as usize);
        File::from(fd)
            .take(MAX_READ + 1)
            .read_to_end(&mut data)
            .map_err(view_io(|| format!("reading {}", real.display())))?;
        if data.len() as u64 > MAX_READ {
            return Err(too_large(data.len() as u64));
        }
        Ok(Some(data))
    }

    fn read_dir(&self, path: &str) -> fsview::Result<Option<Vec<String>>> {
        let Some(found) = self.find(path, true)? else {
            return Ok(None);
        };
        let Node::Dir(stack) = found.node else {
            return Err(FsViewError::NotADirectory {
                path: path.to_string(),
            });
        };
        // Each name by the merge rules over the layers whose contents show; the first layer
        // holding a name decides whether it shows.
        let mut names: BTreeMap<String, PathMerge> = BTreeMap::new();
        for i in stack {
            let dir = self.layer_path(i, &found.path);
            let entries =
                fs::read_dir(&dir).map_err(view_io(|| format!("listing {}", dir.display())))?;
            for entry in entries {
                let entry = entry.map_err(view_io(|| format!("listing {}", dir.display())))?;
                let Ok(name) = entry.file_name().into_string() else {
                    return Err(FsViewError::NotUtf8 {
                        what: format!("a name in {}", dir.display()),
                    });
                };
                let merge = names.entry(name).or_default();
                if merge.top().is_some() || merge.is_done() {
                    continue;
                }
                let Some(meta) = lstat(&entry.path())? else {
                    continue;
                };
                // Whether lower contents are hidden does not change whether the name shows.
                let at = if is_whiteout(&meta) {
                    AtPath::WHITEOUT
                } else if meta.is_dir() {
                    AtPath::dir(false)
                } else {
                    AtPath::OTHER
                };
                merge.push(at);
            }
        }
        Ok(Some(
            names
                .into_iter()
                .filter_map(|(name, merge)| merge.top().is_some().then_some(name))
                .collect(),
        ))
    }

    fn metadata(&self, path: &str, follow: bool) -> fsview::Result<Option<FileInfo>> {
        let Some((layer, rel, meta)) = self.top_metadata(path, follow)? else {
            return Ok(None);
        };
        self.info_at(layer, &rel, &meta).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }

    #[test]
    fn merges_layers_and_resolves_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
        write(&bottom, "usr/lib/os-release", "ID=debian\n");
        symlink("../usr/lib/os-release", bottom.join("usr/os")).unwrap();
        fs::create_dir_all(bottom.join("etc")).unwrap();
        symlink("../usr/lib/os-release", bottom.join("etc/os-release")).unwrap();
        symlink("/usr/lib", bottom.join("lib")).unwrap();
        write(&bottom, "etc/a", "a");
        write(&top, "etc/b", "b");
        write(&top, "usr/lib/os-release", "ID=top\n");
        symlink("loop2", top.join("loop1")).unwrap();
        symlink("loop1", top.join("loop2")).unwrap();
        symlink("../../../../..", top.join("etc/up")).unwrap();
        let view = MergedView::new(vec![top.clone(), bottom.clone()]);
        assert_eq!(view.read("/etc/os-release").unwrap().unwrap(), b"ID=top\n");
        assert_eq!(view.read("lib/os-release").unwrap().unwrap(), b"ID=top\n");
        assert_eq!(view.read("/etc/up/etc/a").unwrap().unwrap(), b"a");
        assert_eq!(
            view.read_dir("/etc").unwrap(),
            ["a", "b", "os-release", "up"]
        );
        assert!(view.read("/loop1").is_err());
        assert!(view.read("/etc").is_err());
        assert_eq!(view.read("/nope").unwrap(), None);
        assert_eq!(view.read("/etc/a/x").unwrap(), None);
        assert_eq!(view.real_path("/etc/b").unwrap(), top.join("etc/b"));
        assert_eq!(view.real_path("/etc").unwrap(), top.join("etc"));
        assert_eq!(view.resolve_lenient("/lib/new/x").unwrap(), "usr/lib/new/x");
        assert!(view.symlink_metadata("/lib").unwrap().unwrap().is_symlink());
    }

    #[test]
    fn is_a_file_view() {
        let tmp = tempfile::tempdir().unwrap();
        let (top, mid, bottom) = (
            tmp.path().join("top"),
            tmp.path().join("mid"),
            tmp.path().join("bottom"),
        );
        write(&bottom, "d/x", "x");
        write(&bottom, "e/old", "old");
        write(&mid, "d", "a file between two directories");
        write(&top, "d/y", "y");
        write(&top, "e/new", "new");
        symlink("/e", top.join("l")).unwrap();
        let view = MergedView::new(vec![top, mid, bottom]);
        assert_eq!(FileView::read_dir(&view, "d").unwrap().unwrap(), ["y"]);
        assert_eq!(
            FileView::read_dir(&view, "l").unwrap().unwrap(),
            ["new", "old"]
        );
        assert_eq!(FileView::read_dir(&view, "nope").unwrap(), None);
        assert!(matches!(
            FileView::read_dir(&view, "e/new"),
            Err(FsViewError::NotADirectory { .. })
        ));
        let link = FileView::metadata(&view, "l", false).unwrap().unwrap();
        assert_eq!(
            (link.kind, link.link.as_deref()),
            (FileKind::Symlink, Some("/e"))
        );
        let f = FileView::metadata(&view, "l/old", true).unwrap().unwrap();
        assert_eq!((f.kind, f.size), (FileKind::File, 3));
        assert_eq!(FileView::read(&view, "d/x").unwrap(), None);
        assert!(matches!(
            FileView::read(&view, "d"),
            Err(FsViewError::IsADirectory { .. })
        ));
        // The builder's own methods say the same in its error type.
        assert!(view.read_dir("nope").is_err());
        assert_eq!(view.read("l/new").unwrap().unwrap(), b"new");
    }
}
