//! The merged file view of an image, read without unpacking: the layer indexes merged top
//! down the way a container sees them (an upper entry replaces a lower one, whiteouts delete,
//! opaque directories hide what is below, a non-directory hides a lower subtree), by the
//! rules of [`nbrt_oci::layer::merge`]. It is a [`FileView`] for the shared fact readers of
//! [`nbrt_oci::facts`]; its files' bytes are the captured ones (see [`crate::index`]).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};

use nbrt_oci::fsview::{self, FileInfo, FileKind, FileView, FsViewError};
use nbrt_oci::layer::merge::{Present, TopDown};
use nbrt_oci::{Image, Progress, Store};

use crate::error::{InspectError, Result};
use crate::index::{FileMeta, Kind, LayerIndex};

/// An entry of the view and the layer (0 = bottom) it comes from.
#[derive(Debug, Clone)]
pub struct Located {
    pub meta: FileMeta,
    pub layer: usize,
}

#[derive(Debug, Clone, Default)]
pub struct View {
    entries: BTreeMap<String, Located>,
    captured: BTreeMap<String, String>,
    /// Files that could not be read (too large, malformed), per layer.
    pub warnings: Vec<String>,
}

/// The index of every layer of `image`, bottom first. Layers not indexed yet are read by
/// as many threads as there are CPUs (at most 4), biggest first: reading one is
/// decompression and hashing, bound by a CPU. A layer the image holds twice is read once.
/// `done(n, all)` is told as layers finish.
fn load_indexes(
    store: &Store,
    image: &Image,
    done: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<LayerIndex>> {
    let layers: Vec<_> = image.layers().iter().zip(image.diff_ids()).collect();
    let mut unique: Vec<usize> = Vec::new();
    for (i, (_, diff_id)) in layers.iter().enumerate() {
        if !unique.iter().any(|&u| layers[u].1 == *diff_id) {
            unique.push(i);
        }
    }
    unique.sort_by_key(|&i| std::cmp::Reverse(layers[i].0.size));
    let all = unique.len();
    let finished = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let read = nbrt_oci::parallel::run_queue(
        unique,
        threads,
        |i| {
            let index = LayerIndex::load(store, layers[i].0, layers[i].1)?;
            done(finished.fetch_add(1, Ordering::Relaxed) + 1, all);
            Ok((i, index))
        },
        || InspectError::Invalid("reading a layer panicked".to_string()),
    )?;
    let mut read: BTreeMap<usize, LayerIndex> = read.into_iter().collect();
    let mut indexes: Vec<LayerIndex> = Vec::with_capacity(layers.len());
    for (i, (_, diff_id)) in layers.iter().enumerate() {
        let index = match read.remove(&i) {
            Some(index) => index,
            None => indexes
                .iter()
                .find(|index| &index.diff_id == *diff_id)
                .cloned()
                .ok_or_else(|| InspectError::Invalid(format!("layer {diff_id} was not read")))?,
        };
        indexes.push(index);
    }
    Ok(indexes)
}

/// Follow at most this many symlinks while resolving a path (as Linux does).
const MAX_SYMLINKS: usize = 40;

impl View {
    /// Index every layer of `image` (from the cache where possible) and merge them.
    pub fn open(store: &Store, image: &Image, progress: &Progress) -> Result<Self> {
        let bar = progress.spinner("reading layers");
        let indexes = load_indexes(store, image, &|done, all| {
            bar.set_message(format!("layer {done}/{all}"))
        })?;
        bar.finish();
        Ok(Self::merge(&indexes))
    }

    /// Merge layer indexes, bottom layer first.
    pub fn merge(layers: &[LayerIndex]) -> Self {
        let mut view = View::default();
        let mut merge: TopDown<&str> = TopDown::new();
        for (n, layer) in layers.iter().enumerate().rev() {
            view.warnings.extend(layer.warnings.iter().cloned());
            // The last entry of a path in a tar wins: offered first.
            for e in layer.entries.iter().rev() {
                let path = e.path.as_str();
                let kind = match e.kind {
                    Kind::Whiteout => {
                        merge.whiteout(path);
                        continue;
                    }
                    Kind::Opaque => {
                        merge.opaque(path);
                        continue;
                    }
                    Kind::Dir => Present::Dir,
                    _ => Present::Other,
                };
                if !merge.entry(path, kind) {
                    continue;
                }
                if let Some(text) = layer.captured.get(path) {
                    view.captured.insert(e.path.clone(), text.clone());
                }
                view.entries.insert(
                    e.path.clone(),
                    Located {
                        meta: e.clone(),
                        layer: n,
                    },
                );
            }
            merge.end_layer();
        }
        // Directories only implied by the layers (a whiteout inside one, say) exist too.
        for (path, from_top) in merge.implied_dirs() {
            view.entries.insert(
                path.to_string(),
                Located {
                    meta: FileMeta {
                        path: path.to_string(),
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        size: 0,
                        digest: None,
                        link: None,
                    },
                    layer: layers.len().saturating_sub(1 + from_top),
                },
            );
        }
        view
    }

    /// The entry at `path` itself (symlinks not followed). Paths are relative to the root,
    /// with or without a leading `/`.
    pub fn get(&self, path: &str) -> Option<&Located> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Every entry, by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Located)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Captured small files (package metadata, passwd, launchers), by path.
    pub fn captured(&self) -> &BTreeMap<String, String> {
        &self.captured
    }

    /// Resolve symlinks in `path` (in every component, inside the image root). `None` when a
    /// link loop or too many links are met.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut pending: Vec<String> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut cur: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(c);
            let here = cur.join("/");
            if let Some(e) = self.entries.get(&here) {
                if e.meta.kind == Kind::Symlink {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return None;
                    }
                    cur.pop();
                    let target = e.meta.link.as_deref().unwrap_or("");
                    if target.starts_with('/') {
                        cur.clear();
                    }
                    pending.extend(
                        target
                            .split('/')
                            .rev()
                            .filter(|c| !c.is_empty())
                            .map(str::to_string),
                    );
                }
            }
        }
        Some(cur.join("/"))
    }

    /// The entry `path` leads to, symlinks followed.
    pub fn lookup(&self, path: &str) -> Option<(String, &Located)> {
        let real = self.resolve(path)?;
        let e = self.entries.get(&real)?;
        Some((real, e))
    }

    /// Whether `path` exists (symlinks followed), as an entry or as a directory implied by
    /// entries below it.
    pub fn exists(&self, path: &str) -> bool {
        let Some(real) = self.resolve(path) else {
            return false;
        };
        real.is_empty() || self.entries.contains_key(&real) || self.children(&real).next().is_some()
    }

    /// The text of a captured file, symlinks followed.
    pub fn text(&self, path: &str) -> Option<&str> {
        let real = self.resolve(path)?;
        self.captured.get(&real).map(String::as_str)
    }

    /// Direct children of directory `dir` (symlinks in `dir` followed), by name.
    pub fn children(&self, dir: &str) -> impl Iterator<Item = (&str, &Located)> {
        let real = self.resolve(dir).unwrap_or_default();
        let prefix = if real.is_empty() {
            String::new()
        } else {
            format!("{real}/")
        };
        let skip = prefix.len();
        self.entries
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter_map(move |(k, v)| {
                let rest = &k[skip..];
                (!rest.is_empty() && !rest.contains('/')).then_some((rest, v))
            })
    }
}

impl View {
    /// The names directly under the resolved directory `real`, directories that only
    /// entries deeper down imply included, sorted.
    fn child_names(&self, real: &str) -> Vec<String> {
        let prefix = if real.is_empty() {
            String::new()
        } else {
            format!("{real}/")
        };
        let mut out: Vec<String> = Vec::new();
        let mut from = Bound::Included(prefix.clone());
        while let Some((k, _)) = self
            .entries
            .range::<str, _>((from.as_ref().map(String::as_str), Bound::Unbounded))
            .next()
        {
            let Some(rest) = k.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                None => {
                    out.push(rest.to_string());
                    from = Bound::Excluded(k.clone());
                }
                Some((name, _)) => {
                    out.push(name.to_string());
                    // Every key from here to `<prefix><name>0` is under `name/` ('0' follows '/').
                    from = Bound::Included(format!("{prefix}{name}0"));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// `path` with its symlinks resolved, the last one too when `follow`.
    fn real(&self, path: &str, follow: bool) -> fsview::Result<String> {
        let loop_err = || FsViewError::SymlinkLoop {
            path: path.to_string(),
        };
        if follow {
            return self.resolve(path).ok_or_else(loop_err);
        }
        let comps: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        match comps.split_last() {
            None => Ok(String::new()),
            Some((&"..", _)) => self.resolve(path).ok_or_else(loop_err),
            Some((last, parent)) => {
                let dir = self.resolve(&parent.join("/")).ok_or_else(loop_err)?;
                Ok(fsview::join(&dir, last))
            }
        }
    }

    /// Whether the resolved `real` is a directory only entries below it imply (or the root).
    fn implied_dir(&self, real: &str) -> bool {
        real.is_empty()
            || self
                .entries
                .range::<str, _>((Bound::Excluded(real), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(real))
                .any(|(k, _)| k.as_bytes().get(real.len()) == Some(&b'/'))
    }
}

/// The view as the shared fact readers see it. `read` gives a file's captured text: a file
/// the index does not capture (or that was over its limit) is [`FsViewError::NotCaptured`].
/// Directories that only their entries imply read as directories of mode 0755 owned by root
/// (what unpacking creates for them).
impl FileView for View {
    fn read(&self, path: &str) -> fsview::Result<Option<Vec<u8>>> {
        let real = self.real(path, true)?;
        let Some(e) = self.entries.get(&real) else {
            if self.implied_dir(&real) {
                return Err(FsViewError::IsADirectory {
                    path: path.to_string(),
                });
            }
            return Ok(None);
        };
        match e.meta.kind {
            Kind::File | Kind::Hardlink => match self.captured.get(&real) {
                Some(text) => Ok(Some(text.as_bytes().to_vec())),
                None => Err(FsViewError::NotCaptured {
                    path: path.to_string(),
                }),
            },
            Kind::Dir => Err(FsViewError::IsADirectory {
                path: path.to_string(),
            }),
            Kind::Whiteout | Kind::Opaque => Ok(None),
            Kind::Symlink | Kind::Device | Kind::Fifo => Err(FsViewError::NotAFile {
                path: path.to_string(),
            }),
        }
    }

    fn read_dir(&self, path: &str) -> fsview::Result<Option<Vec<String>>> {
        let real = self.real(path, true)?;
        match self.entries.get(&real) {
            Some(e) if e.meta.kind != Kind::Dir => Err(FsViewError::NotADirectory {
                path: path.to_string(),
            }),
            Some(_) => Ok(Some(self.child_names(&real))),
            None => {
                let names = self.child_names(&real);
                Ok((real.is_empty() || !names.is_empty()).then_some(names))
            }
        }
    }

    fn metadata(&self, path: &str, follow: bool) -> fsview::Result<Option<FileInfo>> {
        let real = self.real(path, follow)?;
        let Some(e) = self.entries.get(&real) else {
            return Ok(self.implied_dir(&real).then_some(FileInfo {
                kind: FileKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                size: 0,
                link: None,
            }));
        };
        let m = &e.meta;
        let kind = match m.kind {
            Kind::File | Kind::Hardlink => FileKind::File,
            Kind::Dir => FileKind::Dir,
            Kind::Symlink => FileKind::Symlink,
            Kind::Device => FileKind::Device,
            Kind::Fifo => FileKind::Fifo,
            Kind::Whiteout | Kind::Opaque => return Ok(None),
        };
        Ok(Some(FileInfo {
            kind,
            mode: m.mode & 0o7777,
            uid: m.uid,
            gid: m.gid,
            size: if kind == FileKind::File { m.size } else { 0 },
            link: if kind == FileKind::Symlink {
                m.link.clone()
            } else {
                None
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbrt_oci::Digest;

    fn e(path: &str, kind: Kind) -> FileMeta {
        FileMeta {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            digest: None,
            link: None,
        }
    }

    fn layer(entries: Vec<FileMeta>, captured: &[(&str, &str)]) -> LayerIndex {
        LayerIndex {
            diff_id: Digest::of_bytes(b""),
            entries,
            captured: captured
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            warnings: vec![],
        }
    }

    #[test]
    fn whiteouts_opaques_and_replacements() {
        let mut link = e("opt/env", Kind::Symlink);
        link.link = Some("/opt/conda".into());
        let bottom = layer(
            vec![
                e("etc", Kind::Dir),
                e("etc/passwd", Kind::File),
                e("etc/gone", Kind::File),
                e("opt/conda/a", Kind::File),
                e("opt/conda/b", Kind::File),
                e("var/x", Kind::Dir),
                e("var/x/y", Kind::File),
                e("srv/d", Kind::Dir),
                e("srv/d/f", Kind::File),
            ],
            &[("etc/passwd", "root:x:0:0::/root:/bin/sh\n")],
        );
        let top = layer(
            vec![
                e("etc/gone", Kind::Whiteout),
                e("opt/conda", Kind::Opaque),
                e("opt/conda/c", Kind::File),
                e("var/x", Kind::File),
                link,
                // A whiteout and a new entry of the same name in one layer: the new one stays.
                e("srv/d", Kind::Whiteout),
                e("srv/d", Kind::Dir),
                e("srv/d/g", Kind::File),
            ],
            &[],
        );
        let v = View::merge(&[bottom, top]);
        assert!(v.get("etc/passwd").is_some());
        assert!(v.get("etc/gone").is_none());
        assert!(v.get("opt/conda/a").is_none());
        assert!(v.get("opt/conda/c").is_some());
        assert_eq!(v.get("var/x").unwrap().meta.kind, Kind::File);
        assert!(v.get("var/x/y").is_none());
        assert!(v.get("srv/d/f").is_none());
        assert!(v.get("srv/d/g").is_some());
        assert_eq!(v.text("/etc/passwd"), Some("root:x:0:0::/root:/bin/sh\n"));
        assert_eq!(v.resolve("opt/env/c").as_deref(), Some("opt/conda/c"));
        assert_eq!(v.lookup("/opt/env/c").unwrap().1.layer, 1);
        let names: Vec<&str> = v.children("opt/env").map(|(n, _)| n).collect();
        assert_eq!(names, ["c"]);
        assert!(v.exists("opt"));
        assert!(!v.exists("opt/nothing"));
    }

    #[test]
    fn symlink_loops_end() {
        let mut a = e("a", Kind::Symlink);
        a.link = Some("b".into());
        let mut b = e("b", Kind::Symlink);
        b.link = Some("a".into());
        let v = View::merge(&[layer(vec![a, b], &[])]);
        assert_eq!(v.resolve("a/x"), None);
    }

    #[test]
    fn a_file_view_with_implied_directories() {
        let mut link = e("l", Kind::Symlink);
        link.link = Some("x/b".into());
        let v = View::merge(&[layer(
            vec![
                e("x/b/d", Kind::File),
                e("x/b-c", Kind::File),
                e("x/b", Kind::Dir),
                e("y/z/f", Kind::File),
                link,
            ],
            &[("y/z/f", "text")],
        )]);
        let dir = |p: &str| FileView::read_dir(&v, p).unwrap();
        assert_eq!(dir("").unwrap(), ["l", "x", "y"]);
        assert_eq!(dir("x").unwrap(), ["b", "b-c"]);
        assert_eq!(dir("y").unwrap(), ["z"]);
        assert_eq!(dir("l").unwrap(), ["d"]);
        assert_eq!(dir("nothing"), None);
        assert!(matches!(
            FileView::read_dir(&v, "x/b-c"),
            Err(FsViewError::NotADirectory { .. })
        ));
        let implied = FileView::metadata(&v, "y/z", false).unwrap().unwrap();
        assert_eq!((implied.kind, implied.mode), (FileKind::Dir, 0o755));
        assert_eq!(
            FileView::metadata(&v, "l", false).unwrap().unwrap().kind,
            FileKind::Symlink
        );
        assert_eq!(
            FileView::metadata(&v, "l", true).unwrap().unwrap().kind,
            FileKind::Dir
        );
        assert_eq!(FileView::metadata(&v, "y/none", true).unwrap(), None);
        assert_eq!(
            FileView::read(&v, "/y/z/f").unwrap().as_deref(),
            Some(&b"text"[..])
        );
        assert!(matches!(
            FileView::read(&v, "x/b/d"),
            Err(FsViewError::NotCaptured { .. })
        ));
        assert!(matches!(
            FileView::read(&v, "y"),
            Err(FsViewError::IsADirectory { .. })
        ));
        assert_eq!(FileView::read(&v, "y/none").unwrap(), None);
    }

    #[test]
    fn a_file_between_two_directories_ends_the_merge() {
        let bottom = layer(vec![e("d", Kind::Dir), e("d/x", Kind::File)], &[]);
        let middle = layer(vec![e("d", Kind::File)], &[]);
        let top = layer(vec![e("d", Kind::Dir), e("d/y", Kind::File)], &[]);
        let v = View::merge(&[bottom, middle, top]);
        assert!(v.get("d/x").is_none());
        assert_eq!(v.get("d").unwrap().layer, 2);
        assert!(v.get("d/y").is_some());
    }
}
