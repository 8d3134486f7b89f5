//! Where COPY and ADD read from — the build context (with `.dockerignore`) or another
//! stage's file system — and the entries a source selects, with the digest its cache key
//! takes (paths, types, modes, sizes, contents and link targets; never times).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nbrt_build::snapshot::{MergedView, Node};
use sha2::{Digest as _, Sha256};

use crate::error::{IoContext, Result};
use crate::ignore::{clean, glob_match, has_glob, Ignore};

/// A file system COPY reads from. Paths are relative, `/`-separated, `""` for the root.
pub trait SourceFs {
    /// Metadata without following a last symlink.
    fn lstat(&self, rel: &str) -> Option<fs::Metadata>;
    /// Names in a directory, sorted.
    fn list(&self, rel: &str) -> Result<Vec<String>>;
    /// Where the entry's bytes are on disk (the entry itself, not followed).
    fn disk(&self, rel: &str) -> Option<PathBuf>;
    /// Whether `.dockerignore` leaves the path out.
    fn excluded(&self, _rel: &str) -> bool {
        false
    }
    /// Whether excluded directories may still hold included entries (`!` patterns).
    fn walk_excluded(&self) -> bool {
        false
    }
}

/// The build context directory and its `.dockerignore`.
pub struct Context {
    pub root: PathBuf,
    pub ignore: Ignore,
}

impl Context {
    /// The context at `root`, with `root/.dockerignore` when there is one.
    pub fn open(root: &Path) -> Result<Self> {
        let root = fs::canonicalize(root)
            .io_context(|| format!("finding the build context {}", root.display()))?;
        let ignore = match fs::read_to_string(root.join(".dockerignore")) {
            Ok(text) => Ignore::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
            Err(e) => {
                return Err(crate::DockerfileError::Io {
                    context: format!("reading {}", root.join(".dockerignore").display()),
                    source: e,
                })
            }
        };
        Ok(Self { root, ignore })
    }
}

impl Context {
    /// Where `rel` is on disk with every symlink above its last component followed inside
    /// the context (a link to `/etc` means the context's `etc`), as BuildKit resolves
    /// paths; never outside the context.
    fn inside(&self, rel: &str) -> Option<PathBuf> {
        let mut parts: Vec<String> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        let mut done: Vec<String> = Vec::new();
        let mut hops = 0;
        while !parts.is_empty() {
            let c = parts.remove(0);
            if c == ".." {
                done.pop();
                continue;
            }
            if parts.is_empty() {
                done.push(c);
                break;
            }
            let here = self.root.join(done.join("/")).join(&c);
            let meta = fs::symlink_metadata(&here).ok()?;
            if meta.file_type().is_symlink() {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                let target = fs::read_link(&here).ok()?.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut t: Vec<String> = target
                    .split('/')
                    .filter(|c| !c.is_empty() && *c != ".")
                    .map(str::to_string)
                    .collect();
                t.extend(parts);
                parts = t;
            } else {
                done.push(c);
            }
        }
        Some(self.root.join(done.join("/")))
    }
}

impl SourceFs for Context {
    fn lstat(&self, rel: &str) -> Option<fs::Metadata> {
        fs::symlink_metadata(self.inside(rel)?).ok()
    }
    fn list(&self, rel: &str) -> Result<Vec<String>> {
        let Some(dir) = self.inside(rel) else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for e in fs::read_dir(&dir).io_context(|| format!("listing {}", dir.display()))? {
            let e = e.io_context(|| format!("listing {}", dir.display()))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn disk(&self, rel: &str) -> Option<PathBuf> {
        self.inside(rel)
    }
    fn excluded(&self, rel: &str) -> bool {
        !rel.is_empty() && self.ignore.excludes(rel)
    }
    fn walk_excluded(&self) -> bool {
        self.ignore.has_exceptions()
    }
}

/// A stage's (or image's) file system, read through its layer snapshots.
pub struct ViewFs(pub MergedView);

impl SourceFs for ViewFs {
    fn lstat(&self, rel: &str) -> Option<fs::Metadata> {
        self.0.symlink_metadata(rel).ok().flatten()
    }
    fn list(&self, rel: &str) -> Result<Vec<String>> {
        Ok(self.0.read_dir(rel)?)
    }
    fn disk(&self, rel: &str) -> Option<PathBuf> {
        let found = self.0.lookup(rel, false).ok()??;
        let layer = match found.node {
            Node::Other { layer, .. } => layer,
            Node::Dir(stack) => *stack.first()?,
        };
        Some(self.0.lowers().get(layer)?.join(&found.path))
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink(String),
}

/// One entry a source selects: where it is in the source, where it goes below the
/// destination, and its metadata.
#[derive(Debug, Clone)]
pub struct Item {
    pub src: String,
    /// Relative to the destination directory (`""`: the destination itself).
    pub dest: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub disk: PathBuf,
}

/// A COPY source selected: the items, and whether the source was a directory (its contents
/// are copied) or a single entry.
#[derive(Debug)]
pub struct Selected {
    pub items: Vec<Item>,
    pub is_dir: bool,
    /// The base name a single entry takes in a destination directory.
    pub name: String,
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// Follow a symlink at `rel` inside the source (a COPY source's own path is followed, as
/// BuildKit does), at most 40 times.
fn follow(fs_: &dyn SourceFs, rel: &str) -> Option<(String, fs::Metadata)> {
    let mut rel = rel.to_string();
    for _ in 0..40 {
        let meta = fs_.lstat(&rel)?;
        if !meta.file_type().is_symlink() {
            return Some((rel, meta));
        }
        let target = fs::read_link(fs_.disk(&rel)?).ok()?;
        let target = target.to_string_lossy().into_owned();
        let base = if target.starts_with('/') {
            String::new()
        } else {
            rel.rsplit_once('/')
                .map(|(d, _)| d.to_string())
                .unwrap_or_default()
        };
        let joined = clean(&format!("/{}", join(&base, &target)));
        rel = joined.trim_start_matches('/').to_string();
    }
    None
}

fn item(fs_: &dyn SourceFs, src: &str, dest: &str, meta: &fs::Metadata) -> Result<Option<Item>> {
    let ft = meta.file_type();
    let disk = fs_.disk(src).unwrap_or_default();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        let t = fs::read_link(&disk).io_context(|| format!("reading {}", disk.display()))?;
        Kind::Symlink(t.to_string_lossy().into_owned())
    } else if ft.is_file() {
        Kind::File
    } else {
        return Ok(None);
    };
    Ok(Some(Item {
        src: src.to_string(),
        dest: dest.to_string(),
        size: if kind == Kind::File { meta.len() } else { 0 },
        kind,
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: meta.mtime(),
        disk,
    }))
}

/// Everything below the directory `src` (not itself), with `.dockerignore` applied.
/// Returns how many entries were included.
fn walk(fs_: &dyn SourceFs, src: &str, dest: &str, out: &mut Vec<Item>) -> Result<usize> {
    let mut n = 0;
    for name in fs_.list(src)? {
        let s = join(src, &name);
        let d = join(dest, &name);
        let Some(meta) = fs_.lstat(&s) else { continue };
        let excluded = fs_.excluded(&s);
        if excluded && !(meta.is_dir() && fs_.walk_excluded()) {
            continue;
        }
        let Some(it) = item(fs_, &s, &d, &meta)? else {
            continue;
        };
        if meta.is_dir() {
            let at = out.len();
            out.push(it);
            let below = walk(fs_, &s, &d, out)?;
            if excluded && below == 0 {
                out.truncate(at);
                continue;
            }
            n += 1 + below;
        } else {
            out.push(it);
            n += 1;
        }
    }
    Ok(n)
}

/// Why a source selects nothing.
#[derive(Debug)]
pub enum SourceError {
    OutsideContext,
    NotFound,
}

/// The paths (relative to the source root) a COPY source names: itself, or what its glob
/// matches, without what `.dockerignore` excludes.
pub fn expand_source(
    fs_: &dyn SourceFs,
    source: &str,
) -> std::result::Result<Vec<String>, SourceError> {
    let rel = clean(source);
    let rel = rel.trim_start_matches('/');
    if rel == ".." || rel.starts_with("../") {
        return Err(SourceError::OutsideContext);
    }
    let rel = if rel == "." { "" } else { rel };
    if !has_glob(rel) {
        if !rel.is_empty() && (fs_.lstat(rel).is_none() || fs_.excluded(rel)) {
            return Err(SourceError::NotFound);
        }
        return Ok(vec![rel.to_string()]);
    }
    let mut found = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for base in &found {
            let is_dir = base.is_empty() || fs_.lstat(base).is_some_and(|m| m.is_dir());
            if !is_dir {
                continue;
            }
            if has_glob(comp) {
                for name in fs_.list(base).unwrap_or_default() {
                    if glob_match(comp, &name) {
                        next.push(join(base, &name));
                    }
                }
            } else {
                let p = join(base, comp);
                if fs_.lstat(&p).is_some() {
                    next.push(p);
                }
            }
        }
        found = next;
    }
    found.retain(|p| !fs_.excluded(p));
    if found.is_empty() {
        return Err(SourceError::NotFound);
    }
    Ok(found)
}

/// The entries under one selected path.
pub fn select(fs_: &dyn SourceFs, rel: &str) -> Result<Selected> {
    let name = rel.rsplit('/').next().unwrap_or_default().to_string();
    let Some((real, meta)) = follow(fs_, rel) else {
        return Ok(Selected {
            items: Vec::new(),
            is_dir: false,
            name,
        });
    };
    let mut items = Vec::new();
    if meta.is_dir() {
        if let Some(mut it) = item(fs_, &real, "", &meta)? {
            it.src = real.clone();
            items.push(it);
        }
        walk(fs_, &real, "", &mut items)?;
        Ok(Selected {
            items,
            is_dir: true,
            name,
        })
    } else {
        if let Some(it) = item(fs_, &real, "", &meta)? {
            items.push(it);
        }
        Ok(Selected {
            items,
            is_dir: false,
            name,
        })
    }
}

/// Hash the items as a COPY cache key takes them: path, type, mode, size, content, link
/// target (owners only when `owners`, for copies that keep them; never times).
pub fn hash_items(items: &[Item], owners: bool, h: &mut Sha256) -> Result<()> {
    for it in items {
        h.update(it.dest.as_bytes());
        h.update([0]);
        match &it.kind {
            Kind::Dir => h.update(b"d"),
            Kind::File => {
                h.update(b"f");
                let mut f = fs::File::open(&it.disk)
                    .io_context(|| format!("reading {}", it.disk.display()))?;
                let mut content = Sha256::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = f
                        .read(&mut buf)
                        .io_context(|| format!("reading {}", it.disk.display()))?;
                    if n == 0 {
                        break;
                    }
                    content.update(&buf[..n]);
                }
                h.update(content.finalize());
            }
            Kind::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
            }
        }
        h.update(it.mode.to_le_bytes());
        h.update(it.size.to_le_bytes());
        if owners {
            h.update(it.uid.to_le_bytes());
            h.update(it.gid.to_le_bytes());
        }
    }
    Ok(())
}
