//! The pip step's layer, put together from one member per distribution ("piece").
//!
//! A pip step's layer is mostly the files of its distributions, and a distribution installs
//! the same files wherever it goes (same wheel, same interpreter, same prefix and owner).
//! So each distribution's files (with their bytecode) become a tar member of their own,
//! compressed once and kept in the store's cache under a key made of what decides its bytes;
//! the layer is then: a member with every directory, whiteout and file no distribution
//! claims, followed by the pieces in distribution order (see `nbrt_oci::layer::members`).
//! Adding one package to a step compresses that package's piece and copies the others,
//! and the layer is byte for byte what a build from an empty cache makes of the same
//! distributions.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use nbrt_oci::digest::Hasher;
use nbrt_oci::layer::compression::Compression;
use nbrt_oci::layer::members::{self, Member};
use nbrt_oci::layer::LayerInfo;
use nbrt_oci::{Digest, Store};
use serde::{Deserialize, Serialize};

use super::uv::err;
use crate::error::{BuildError, IoContext, Result};
use crate::layer_dir::{member_from_dir, member_from_files, DirLayerOptions};
use crate::snapshot::{exclusively, PruneReport};
use nbrt_oci::fsutil::{open_locked, LockMode};

/// Changes whenever the bytes a piece holds for the same inputs would change.
const PIECES_VERSION: &str = "nbrt-pip-pieces/3";

/// What every piece of one step depends on besides its distribution: the interpreter (its
/// bytecode), the environment's path and owner, and the mtime clamp.
#[derive(Debug, Clone)]
pub struct Context(Digest);

impl Context {
    pub fn new(
        prefix: &str,
        python: (u64, u64),
        interpreter: Option<&Digest>,
        owner: Option<(u32, u32, bool)>,
        clamp_mtime: Option<u64>,
    ) -> Self {
        let doc = serde_json::json!({
            "v": PIECES_VERSION,
            "prefix": prefix.trim_matches('/'),
            "python": [python.0, python.1],
            "interpreter": interpreter.map(|d| d.to_string()),
            "owner": owner,
            "clamp": clamp_mtime,
        });
        Context(Digest::of_bytes(doc.to_string().as_bytes()))
    }
}

/// One distribution's files in the staging tree.
#[derive(Debug, Clone)]
pub struct Dist {
    /// `name-version.dist-info`.
    pub dist_info: String,
    /// Paths relative to the image root, sorted.
    pub files: Vec<String>,
    pub key: Digest,
    /// Bytes of its files, to share the compression out evenly.
    pub bytes: u64,
    /// False when a file of it is claimed by another distribution too: that file goes in
    /// the step's own member, so this piece depends on its neighbours and is not kept.
    pub cacheable: bool,
}

/// The first field of a `RECORD` line (CSV: quoted when it holds a comma or a quote).
fn record_path(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some(out);
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        line.split(',').next().map(str::to_string)
    }
}

/// The files of every distribution installed into `staging` (its dist-info directories
/// under `site_rel`): what its `RECORD` lists and its dist-info directory holds. A path two
/// distributions claim belongs to neither.
pub fn claim(staging: &Path, site_rel: &str, ctx: &Context) -> Result<Vec<Dist>> {
    let site = staging.join(site_rel);
    let mut names: Vec<String> = Vec::new();
    if site.is_dir() {
        for entry in fs::read_dir(&site).io_context(|| format!("listing {}", site.display()))? {
            let entry = entry.io_context(|| format!("listing {}", site.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".dist-info") && entry.path().join("RECORD").is_file() {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut claims: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut records = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let record_file = site.join(name).join("RECORD");
        let record =
            fs::read(&record_file).io_context(|| format!("reading {}", record_file.display()))?;
        let mut paths = BTreeSet::new();
        for line in String::from_utf8_lossy(&record).lines() {
            if let Some(p) = record_path(line)
                .filter(|p| !p.is_empty())
                .and_then(|p| super::uv::join_inside(site_rel, &p))
            {
                paths.insert(p);
            }
        }
        list_files(staging, &format!("{site_rel}/{name}"), &mut paths)?;
        for p in paths {
            claims.entry(p).or_default().push(i);
        }
        records.push(record);
    }
    let mut dists: Vec<Dist> = names
        .iter()
        .map(|n| Dist {
            dist_info: n.clone(),
            files: Vec::new(),
            key: Digest::of_bytes(b""),
            bytes: 0,
            cacheable: true,
        })
        .collect();
    for (path, owners) in claims {
        let Ok(meta) = fs::symlink_metadata(staging.join(&path)) else {
            continue; // listed, not installed (a pyc uv does not write, say)
        };
        if meta.is_dir() || (meta.is_file() && meta.nlink() > 1) {
            continue; // directories and hard links go in the step's own member
        }
        if owners.len() > 1 {
            for o in owners {
                dists[o].cacheable = false;
            }
            continue;
        }
        dists[owners[0]].bytes += meta.len();
        dists[owners[0]].files.push(path);
    }
    for (dist, record) in dists.iter_mut().zip(&records) {
        dist.key = dist_key(ctx, staging, dist, record)?;
    }
    Ok(dists)
}

/// Every non-directory below `rel` in `root`.
fn list_files(root: &Path, rel: &str, out: &mut BTreeSet<String>) -> Result<()> {
    let dir = root.join(rel);
    for entry in fs::read_dir(&dir).io_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.io_context(|| format!("listing {}", dir.display()))?;
        let child = format!("{rel}/{}", entry.file_name().to_string_lossy());
        if entry
            .file_type()
            .io_context(|| format!("reading {child}"))?
            .is_dir()
        {
            list_files(root, &child, out)?;
        } else {
            out.insert(child);
        }
    }
    Ok(())
}

/// What decides a piece's bytes: the context, the distribution's `RECORD` (every file with
/// its sha256) and each file's path, kind, mode and size as installed.
fn dist_key(ctx: &Context, staging: &Path, dist: &Dist, record: &[u8]) -> Result<Digest> {
    let mut h = Hasher::new();
    h.update(ctx.0.hex().as_bytes());
    h.update(b"\0");
    h.update(dist.dist_info.as_bytes());
    h.update(b"\0");
    h.update(Digest::of_bytes(record).hex().as_bytes());
    for f in &dist.files {
        let path = staging.join(f);
        let meta = fs::symlink_metadata(&path).io_context(|| format!("reading {f}"))?;
        h.update(format!("\0{f}\0{:o}\0{}", meta.mode(), meta.len()).as_bytes());
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).io_context(|| format!("reading {f}"))?;
            h.update(target.as_os_str().as_encoded_bytes());
        }
    }
    Ok(h.finish().0)
}

/// Add to each distribution the bytecode compiled for its `.py` files.
pub fn add_bytecode(staging: &Path, dists: &mut [Dist], python: (u64, u64)) {
    let tag = format!("cpython-{}{}", python.0, python.1);
    for dist in dists {
        let mut pycs = Vec::new();
        for f in &dist.files {
            let Some(stem) = f.strip_suffix(".py") else {
                continue;
            };
            let (dir, name) = stem.rsplit_once('/').unwrap_or(("", stem));
            let pyc = if dir.is_empty() {
                format!("__pycache__/{name}.{tag}.pyc")
            } else {
                format!("{dir}/__pycache__/{name}.{tag}.pyc")
            };
            if let Ok(meta) = fs::symlink_metadata(staging.join(&pyc)) {
                if meta.is_file() {
                    dist.bytes += meta.len();
                    pycs.push(pyc);
                }
            }
        }
        dist.files.extend(pycs);
        dist.files.sort();
    }
}

/// A directory a piece's files are in, as the staging tree had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirMeta {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// What the cache keeps about a piece besides its member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceInfo {
    pub dist_info: String,
    pub files: Vec<String>,
    pub dirs: Vec<DirMeta>,
    pub tar_size: u64,
    pub compressed_size: u64,
}

/// A piece in the cache.
#[derive(Debug, Clone)]
pub struct Piece {
    pub dir: PathBuf,
    pub info: PieceInfo,
}

impl Piece {
    /// The dist-info files uv needs to see the distribution as installed.
    pub fn seed_dir(&self) -> PathBuf {
        self.dir.join("seed")
    }

    /// The cache key it is kept under.
    pub fn key(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn member(&self) -> Member {
        Member {
            tar: self.dir.join("member.tar"),
            compressed: self.dir.join("member.tar.gz"),
        }
    }
}

/// The pieces kept in the store (`cache/pip-pieces/<key>/`). Every user holds a shared lock
/// on the directory while it is open; pruning needs it alone.
pub struct PieceCache {
    dir: PathBuf,
    lock: fs::File,
}

impl PieceCache {
    /// The piece cache of `store`.
    pub fn open(store: &Store) -> Result<Self> {
        let dir = store.cache(nbrt_oci::Bucket::PipPieces);
        fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        let lock = open_locked(&dir.join(".lock"), LockMode::Shared)?;
        Ok(Self { dir, lock })
    }

    /// Remove every piece whose key `keep` does not want, and debris of interrupted writes.
    /// Refuses (with an error) while a build has the cache open.
    pub fn prune(&self, keep: impl Fn(&str) -> bool) -> Result<PruneReport> {
        exclusively(&self.lock, &self.dir, "pip pieces", || {
            let mut report = PruneReport::default();
            let trash = self.dir.join(".trash");
            fs::create_dir_all(&trash).io_context(|| format!("creating {}", trash.display()))?;
            for entry in
                fs::read_dir(&self.dir).io_context(|| format!("listing {}", self.dir.display()))?
            {
                let entry = entry.io_context(|| format!("listing {}", self.dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let debris = name.starts_with(".new-");
                if !debris && Digest::from_hex(&name).is_err() {
                    continue; // the lock, the trash
                }
                if !debris && keep(&name) {
                    report.kept += 1;
                    continue;
                }
                // Out of the way first, so a removal cut short leaves no half piece in place.
                let doomed = trash.join(&name);
                let _ = fs::remove_dir_all(&doomed);
                fs::rename(entry.path(), &doomed)
                    .io_context(|| format!("moving {} out of the way", entry.path().display()))?;
                report.removed += usize::from(!debris);
            }
            fs::remove_dir_all(&trash).io_context(|| format!("removing {}", trash.display()))?;
            Ok(report)
        })
    }

    /// The piece under `key`, if it is there whole.
    pub fn get(&self, key: &Digest) -> Option<Piece> {
        let dir = self.dir.join(key.hex());
        let info: PieceInfo =
            serde_json::from_slice(&fs::read(dir.join("piece.json")).ok()?).ok()?;
        let piece = Piece { dir, info };
        let m = piece.member();
        let size = |p: &Path| fs::metadata(p).map(|m| m.len()).ok();
        (size(&m.tar) == Some(piece.info.tar_size)
            && size(&m.compressed) == Some(piece.info.compressed_size))
        .then_some(piece)
    }

    /// Keep a finished piece (its files in `made`, a directory on the same file system)
    /// under `key`: renamed into place whole, so a concurrent build sees all of it or
    /// nothing; if another build kept it first, that one stays.
    fn put(&self, key: &Digest, made: &Path) -> Result<Piece> {
        let target = self.dir.join(key.hex());
        if let Err(e) = fs::rename(made, &target) {
            if !target.is_dir() {
                return Err(BuildError::Io {
                    context: format!("keeping piece {}", target.display()),
                    source: e,
                });
            }
            let _ = fs::remove_dir_all(made);
        }
        self.get(key)
            .ok_or_else(|| err(format!("piece {} is incomplete", target.display())))
    }
}

/// The directories above each of `files` (paths relative to `root`), with their metadata.
fn dirs_of(root: &Path, files: &[String]) -> Result<Vec<DirMeta>> {
    let mut seen = BTreeSet::new();
    for f in files {
        let mut path = f.as_str();
        while let Some((parent, _)) = path.rsplit_once('/') {
            if !seen.insert(parent.to_string()) {
                break;
            }
            path = parent;
        }
    }
    seen.into_iter()
        .map(|path| {
            let meta =
                fs::symlink_metadata(root.join(&path)).io_context(|| format!("reading {path}"))?;
            Ok(DirMeta {
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                path,
            })
        })
        .collect()
}

/// Create the directories `pieces` have files in that `staging` lacks (all of a kept
/// piece's, the `__pycache__` directories of one whose files uv installed again), with the
/// owner, mode and time they had when the pieces were made: the step's own member carries
/// every directory of the layer, or engines would make them root's.
pub fn ensure_dirs<'a>(staging: &Path, pieces: impl IntoIterator<Item = &'a Piece>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut wanted: BTreeMap<&str, &DirMeta> = BTreeMap::new();
    for p in pieces {
        for d in &p.info.dirs {
            wanted.entry(d.path.as_str()).or_insert(d);
        }
    }
    let mut created = Vec::new();
    for (path, meta) in wanted {
        if path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(err(format!(
                "piece directory {path:?} is not a plain relative path"
            )));
        }
        let abs = staging.join(path);
        if fs::symlink_metadata(&abs).is_ok() {
            continue;
        }
        fs::create_dir(&abs).io_context(|| format!("creating {}", abs.display()))?;
        std::os::unix::fs::lchown(&abs, Some(meta.uid), Some(meta.gid))
            .io_context(|| format!("setting the owner of {}", abs.display()))?;
        fs::set_permissions(&abs, fs::Permissions::from_mode(meta.mode))
            .io_context(|| format!("setting the mode of {}", abs.display()))?;
        created.push((abs, meta.mtime));
    }
    // Children first: creating a directory changes its parent's time.
    for (abs, mtime) in created.into_iter().rev() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
        fs::File::open(&abs)
            .and_then(|f| f.set_modified(time))
            .io_context(|| format!("setting the time of {}", abs.display()))?;
    }
    Ok(())
}

/// Where a distribution's piece comes from when the layer is written.
pub enum Source {
    /// Its files in the staging tree: a new piece is written (and kept if it can be).
    Staging(Dist),
    /// The cache (the same distribution was made into a piece before).
    Cached(Piece),
}

/// How many pieces were made and how many came from the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerReport {
    pub made: usize,
    pub cached: usize,
}

/// Write the step's layer into the store: the step's own member (the staging tree without
/// the files of `sources`, as an overlay upper directory: whiteouts stay whiteouts), then
/// every piece in distribution order. New pieces are written and compressed on all CPUs.
pub fn write_layer(
    store: &Store,
    cache: Option<&PieceCache>,
    staging: &Path,
    sources: Vec<Source>,
    scratch: &Path,
    clamp_mtime: Option<u64>,
) -> Result<(LayerInfo, LayerReport)> {
    let started = std::time::Instant::now();
    let work = scratch.join("pieces");
    fs::create_dir_all(&work).io_context(|| format!("creating {}", work.display()))?;
    let mut report = LayerReport::default();
    let mut exclude = Vec::new();
    let mut ready: Vec<(String, Member)> = Vec::new();
    let mut jobs: Vec<Dist> = Vec::new();
    for s in sources {
        match s {
            Source::Staging(d) => {
                exclude.extend(d.files.iter().cloned());
                jobs.push(d);
            }
            Source::Cached(p) => {
                exclude.extend(p.info.files.iter().cloned());
                report.cached += 1;
                ready.push((p.info.dist_info.clone(), p.member()));
            }
        }
    }
    report.made = jobs.len();
    // Biggest first, so the last job to finish is a small one.
    jobs.sort_by_key(|d| std::cmp::Reverse(d.bytes));
    let own = Member {
        tar: work.join("own.tar"),
        compressed: work.join("own.tar.gz"),
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let opts = DirLayerOptions {
        overlay_upper: true,
        clamp_mtime,
        compression: Compression::Gzip,
        exclude,
    };
    let made = std::thread::scope(|s| -> Result<Vec<(String, Member)>> {
        let own_job = s.spawn(|| -> Result<()> {
            member_from_dir(staging, &own, &opts)?;
            Ok(())
        });
        let made = nbrt_oci::parallel::run_queue(
            jobs.into_iter().enumerate().collect(),
            threads,
            |(i, dist): (usize, Dist)| {
                let member = make_piece(
                    cache,
                    staging,
                    &dist,
                    &work.join(i.to_string()),
                    clamp_mtime,
                )?;
                Ok((dist.dist_info, member))
            },
            || err("writing a piece panicked"),
        );
        own_job
            .join()
            .unwrap_or_else(|_| Err(err("writing the step's member panicked")))?;
        made
    })?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "members written");
    ready.extend(made);
    ready.sort_by(|a, b| a.0.cmp(&b.0));
    let mut order = vec![own];
    order.extend(ready.into_iter().map(|(_, m)| m));
    let (info, blob) = members::assemble(store.new_blob()?, &order, Compression::Gzip)?;
    blob.commit()?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "layer assembled");
    Ok((info, report))
}

/// Write one distribution's piece in `dir`, and keep it in the cache when it can be kept.
fn make_piece(
    cache: Option<&PieceCache>,
    staging: &Path,
    dist: &Dist,
    dir: &Path,
    clamp_mtime: Option<u64>,
) -> Result<Member> {
    fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    let tar = dir.join("member.tar");
    let compressed = dir.join("member.tar.gz");
    let member = Member { tar, compressed };
    let (tar_size, compressed_size) = member_from_files(
        staging,
        &dist.files,
        &member,
        Compression::Gzip,
        clamp_mtime,
    )?;
    let Some(cache) = cache.filter(|_| dist.cacheable) else {
        return Ok(member);
    };
    let info = PieceInfo {
        dist_info: dist.dist_info.clone(),
        files: dist.files.clone(),
        dirs: dirs_of(staging, &dist.files)?,
        tar_size,
        compressed_size,
    };
    let seed = dir.join("seed");
    fs::create_dir_all(&seed).io_context(|| format!("creating {}", seed.display()))?;
    for f in super::uv::SEEDED_FILES {
        let suffix = format!("{}/{f}", dist.dist_info);
        if let Some(path) = dist.files.iter().find(|p| p.ends_with(&suffix)) {
            fs::copy(staging.join(path), seed.join(f))
                .io_context(|| format!("keeping {suffix}"))?;
        }
    }
    let json = serde_json::to_vec(&info).map_err(|e| err(e.to_string()))?;
    fs::write(dir.join("piece.json"), json).io_context(|| "writing piece.json")?;
    // Moved whole into the cache; a directory of the cache so that rename stays on one
    // file system.
    let staged = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(&cache.dir)
        .io_context(|| format!("creating a directory in {}", cache.dir.display()))?;
    let inside = staged.path().join("piece");
    fs::rename(dir, &inside).io_context(|| format!("moving {}", dir.display()))?;
    Ok(cache.put(&dist.key, &inside)?.member())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths() {
        assert_eq!(record_path("a/b.py,sha256=x,3").as_deref(), Some("a/b.py"));
        assert_eq!(
            record_path("\"a,\"\"b\"\".py\",sha256=x,3").as_deref(),
            Some("a,\"b\".py")
        );
        assert_eq!(record_path("\"open").as_deref(), None);
    }
}
