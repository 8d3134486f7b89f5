//! A directory tree written into the store as one layer, deterministically: entries in path
//! order (a directory, then its opaque marker, then the whiteouts in it, then its other
//! children by name), numeric owners and full modes from `lstat`, mtimes clamped, extended
//! attributes as PAX records, hard links found by (device, inode) with the first path in
//! that order as their target. Sockets are left out; device nodes and fifos are kept.
//!
//! With `overlay_upper` the directory is an overlayfs upper directory: a character device
//! 0/0 is a whiteout (written as `.wh.<name>`), a directory with `trusted.overlay.opaque=y`
//! gets an opaque marker (`.wh..wh..opq`), and overlayfs's own `trusted.overlay.*`
//! attributes are never written.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nbrt_oci::layer::compression::Compression;
use nbrt_oci::layer::members::{Member, MemberWriter};
use nbrt_oci::layer::reader::WHITEOUT_PREFIX;
use nbrt_oci::layer::{Entry, EntryKind, LayerInfo, LayerWriter};
use nbrt_oci::Store;

use crate::error::{BuildError, IoContext, Result};
use crate::snapshot::{is_opaque, is_whiteout};

#[derive(Debug, Clone)]
pub struct DirLayerOptions {
    /// The directory is an overlay upper directory (see the module documentation).
    pub overlay_upper: bool,
    /// Upper bound for every entry's mtime (usually `SOURCE_DATE_EPOCH`).
    pub clamp_mtime: Option<u64>,
    pub compression: Compression,
    /// Paths relative to the directory that are left out, with everything below them
    /// (e.g. `tmp/nbrt-ca.crt`).
    pub exclude: Vec<String>,
}

impl Default for DirLayerOptions {
    fn default() -> Self {
        Self {
            overlay_upper: false,
            clamp_mtime: None,
            compression: Compression::Gzip,
            exclude: Vec::new(),
        }
    }
}

/// Extended attributes never written into a layer: overlayfs's bookkeeping, and SELinux
/// labels of the build host.
fn skip_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name == "security.selinux"
}

fn sys_err(path: &Path, what: &str, e: rustix::io::Errno) -> BuildError {
    BuildError::Io {
        context: format!("{what} {}", path.display()),
        source: e.into(),
    }
}

/// The extended attributes of an entry (not following symlinks), sorted by name.
pub fn read_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = Vec::new();
    loop {
        let size = match rustix::fs::llistxattr_query(path) {
            Ok(n) => n,
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(sys_err(path, "listing extended attributes of", e)),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        names.resize(size, 0);
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(sys_err(path, "listing extended attributes of", e)),
        }
    }
    let mut out = Vec::new();
    for raw in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(raw).map_err(|_| BuildError::Io {
            context: format!(
                "{}: an extended attribute name is not UTF-8",
                path.display()
            ),
            source: io::Error::from(io::ErrorKind::InvalidData),
        })?;
        if skip_xattr(name) {
            continue;
        }
        let mut value = Vec::new();
        loop {
            let size = match rustix::fs::lgetxattr_query(path, name) {
                Ok(n) => n,
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => return Err(sys_err(path, &format!("reading xattr {name} of"), e)),
            };
            value.resize(size, 0);
            if size == 0 {
                break;
            }
            match rustix::fs::lgetxattr(path, name, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(sys_err(path, &format!("reading xattr {name} of"), e)),
            }
        }
        out.push((name.to_string(), value));
    }
    out.sort();
    Ok(out)
}

/// Whether overlayfs wrote something we cannot express in a layer.
fn check_overlay_xattrs(path: &Path) -> Result<()> {
    for name in ["trusted.overlay.redirect", "trusted.overlay.metacopy"] {
        if rustix::fs::lgetxattr_query(path, name).is_ok() {
            return Err(BuildError::Sandbox(format!(
                "{} carries {name}: the overlay was mounted with redirect_dir or metacopy \
                 on, which a layer cannot express (mount with redirect_dir=off,metacopy=off)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Write the tree under `dir` into the store as a layer.
pub fn layer_from_dir(store: &Store, dir: &Path, opts: &DirLayerOptions) -> Result<LayerInfo> {
    let writer = LayerWriter::new(store.new_blob()?, opts.compression, opts.clamp_mtime)?;
    let (info, blob) = walk_tree(writer, dir, opts)?.finish()?;
    blob.commit()?;
    Ok(info)
}

/// Write the tree under `dir` as a layer member (see `nbrt_oci::layer::members`). Returns
/// the sizes of its uncompressed and compressed files.
pub fn member_from_dir(dir: &Path, member: &Member, opts: &DirLayerOptions) -> Result<(u64, u64)> {
    let writer = MemberWriter::create(member, opts.compression, opts.clamp_mtime)?;
    Ok(walk_tree(writer, dir, opts)?.finish()?)
}

/// Write the entries `files` (paths relative to `root`, none a directory) as a layer member,
/// in the order given. Returns the sizes of its uncompressed and compressed files.
pub fn member_from_files(
    root: &Path,
    files: &[String],
    member: &Member,
    compression: Compression,
    clamp_mtime: Option<u64>,
) -> Result<(u64, u64)> {
    let mut walker = Walker {
        writer: MemberWriter::create(member, compression, clamp_mtime)?,
        overlay: false,
        exclude: BTreeSet::new(),
        links: HashMap::new(),
    };
    for rel in files {
        let abs = root.join(rel);
        let meta =
            fs::symlink_metadata(&abs).io_context(|| format!("reading {}", abs.display()))?;
        if meta.is_dir() {
            return Err(BuildError::Io {
                context: format!("{}: a directory among the files of a member", abs.display()),
                source: io::Error::from(io::ErrorKind::IsADirectory),
            });
        }
        walker.entry(&abs, rel, &meta)?;
    }
    Ok(walker.writer.finish()?)
}

/// Where a walker's entries go: a whole layer, or a member of one.
trait Sink {
    fn append(&mut self, entry: &Entry, data: &mut dyn io::Read) -> nbrt_oci::Result<()>;
}

impl<W: io::Write> Sink for LayerWriter<W> {
    fn append(&mut self, entry: &Entry, data: &mut dyn io::Read) -> nbrt_oci::Result<()> {
        LayerWriter::append(self, entry, data)
    }
}

impl Sink for MemberWriter {
    fn append(&mut self, entry: &Entry, data: &mut dyn io::Read) -> nbrt_oci::Result<()> {
        MemberWriter::append(self, entry, data)
    }
}

/// Every entry of the tree under `dir`, in order, into `sink`.
fn walk_tree<S: Sink>(sink: S, dir: &Path, opts: &DirLayerOptions) -> Result<S> {
    let meta = fs::symlink_metadata(dir).io_context(|| format!("reading {}", dir.display()))?;
    if !meta.is_dir() {
        return Err(BuildError::Io {
            context: format!("making a layer of {}", dir.display()),
            source: io::Error::from(io::ErrorKind::NotADirectory),
        });
    }
    let exclude: BTreeSet<String> = opts
        .exclude
        .iter()
        .map(|p| {
            p.split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect::<Vec<_>>()
                .join("/")
        })
        .filter(|p| !p.is_empty())
        .collect();
    let mut walker = Walker {
        writer: sink,
        overlay: opts.overlay_upper,
        exclude,
        links: HashMap::new(),
    };
    if opts.overlay_upper && is_opaque(dir) {
        walker.append(&marker("", EntryKind::Opaque, &meta), &mut io::empty())?;
    }
    walker.walk(dir, "")?;
    Ok(walker.writer)
}

struct Walker<S: Sink> {
    writer: S,
    overlay: bool,
    exclude: BTreeSet<String>,
    /// (device, inode) of regular files with more than one link → the first path written.
    links: HashMap<(u64, u64), String>,
}

fn marker(path: &str, kind: EntryKind, meta: &fs::Metadata) -> Entry {
    Entry {
        path: path.to_string(),
        kind,
        mode: 0,
        uid: 0,
        gid: 0,
        mtime: meta.mtime().max(0) as u64,
        size: 0,
        xattrs: Vec::new(),
    }
}

impl<S: Sink> Walker<S> {
    fn append(&mut self, entry: &Entry, data: &mut dyn io::Read) -> Result<()> {
        self.writer.append(entry, data).map_err(BuildError::from)
    }

    fn walk(&mut self, abs: &Path, rel: &str) -> Result<()> {
        let mut names = Vec::new();
        for entry in fs::read_dir(abs).io_context(|| format!("listing {}", abs.display()))? {
            let entry = entry.io_context(|| format!("listing {}", abs.display()))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|n| BuildError::Io {
                    context: format!(
                        "{}: the name {n:?} is not UTF-8, which layers need",
                        abs.display()
                    ),
                    source: io::Error::from(io::ErrorKind::InvalidData),
                })?;
            names.push(name);
        }
        names.sort();
        let mut whiteouts = Vec::new();
        let mut others = Vec::new();
        for name in names {
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if self.exclude.contains(&child_rel) {
                continue;
            }
            let child_abs = abs.join(&name);
            if name.starts_with(WHITEOUT_PREFIX) {
                return Err(BuildError::Sandbox(format!(
                    "{}: names starting with {WHITEOUT_PREFIX:?} are reserved for whiteouts \
                     in layers",
                    child_abs.display()
                )));
            }
            let meta = fs::symlink_metadata(&child_abs)
                .io_context(|| format!("reading {}", child_abs.display()))?;
            if self.overlay && is_whiteout(&meta) {
                whiteouts.push((child_rel, meta));
            } else {
                others.push((child_abs, child_rel, meta));
            }
        }
        for (path, meta) in whiteouts {
            self.append(&marker(&path, EntryKind::Whiteout, &meta), &mut io::empty())?;
        }
        for (child_abs, child_rel, meta) in others {
            self.entry(&child_abs, &child_rel, &meta)?;
        }
        Ok(())
    }

    fn entry(&mut self, abs: &Path, rel: &str, meta: &fs::Metadata) -> Result<()> {
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        if self.overlay {
            check_overlay_xattrs(abs)?;
        }
        let mut entry = Entry {
            path: rel.to_string(),
            kind: EntryKind::File,
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime().max(0) as u64,
            size: 0,
            xattrs: read_xattrs(abs)?,
        };
        if ft.is_dir() {
            entry.kind = EntryKind::Dir;
            self.append(&entry, &mut io::empty())?;
            if self.overlay && is_opaque(abs) {
                self.append(&marker(rel, EntryKind::Opaque, meta), &mut io::empty())?;
            }
            return self.walk(abs, rel);
        }
        if ft.is_symlink() {
            let target = fs::read_link(abs).io_context(|| format!("reading {}", abs.display()))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|t| BuildError::Io {
                    context: format!(
                        "{}: the symlink target {t:?} is not UTF-8, which layers need",
                        abs.display()
                    ),
                    source: io::Error::from(io::ErrorKind::InvalidData),
                })?;
            entry.kind = EntryKind::Symlink(target);
            return self.append(&entry, &mut io::empty());
        }
        if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev()),
            );
            entry.kind = if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            };
            return self.append(&entry, &mut io::empty());
        }
        if ft.is_fifo() {
            entry.kind = EntryKind::Fifo;
            return self.append(&entry, &mut io::empty());
        }
        if !ft.is_file() {
            return Ok(());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(target) = self.links.get(&key) {
                entry.kind = EntryKind::Hardlink(target.clone());
                return self.append(&entry, &mut io::empty());
            }
            self.links.insert(key, rel.to_string());
        }
        let fd = rustix::fs::open(
            abs,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| sys_err(abs, "opening", e))?;
        let mut file = File::from(fd);
        let now = file
            .metadata()
            .io_context(|| format!("reading {}", abs.display()))?;
        if !now.is_file() || now.ino() != meta.ino() {
            return Err(BuildError::Io {
                context: format!("{} changed while the layer was written", abs.display()),
                source: io::Error::from(io::ErrorKind::InvalidData),
            });
        }
        entry.size = now.len();
        self.append(&entry, &mut file)
    }
}
