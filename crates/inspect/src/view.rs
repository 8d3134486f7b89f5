//! The merged file view of an image, read without unpacking: the layer indexes merged top
//! down the way a container sees them (an upper entry replaces a lower one, whiteouts delete,
//! opaque directories hide what is below, a non-directory hides a lower subtree).

use std::collections::{BTreeMap, HashSet};

use nbrt_oci::{Image, Progress, Store};

use crate::error::Result;
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

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Follow at most this many symlinks while resolving a path (as Linux does).
const MAX_SYMLINKS: usize = 40;

impl View {
    /// Index every layer of `image` (from the cache where possible) and merge them.
    pub fn open(store: &Store, image: &Image, progress: &Progress) -> Result<Self> {
        let bar = progress.spinner("reading layers");
        let mut indexes = Vec::with_capacity(image.layers().len());
        for (i, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
            bar.set_message(format!("layer {}/{}", i + 1, image.layers().len()));
            indexes.push(LayerIndex::load(store, layer, diff_id)?);
        }
        bar.finish();
        Ok(Self::merge(&indexes))
    }

    /// Merge layer indexes, bottom layer first.
    pub fn merge(layers: &[LayerIndex]) -> Self {
        let mut view = View::default();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut non_dirs: HashSet<&str> = HashSet::new();
        let mut deleted: HashSet<&str> = HashSet::new();
        let mut opaque: HashSet<&str> = HashSet::new();
        for (n, layer) in layers.iter().enumerate().rev() {
            view.warnings.extend(layer.warnings.iter().cloned());
            let mut layer_deleted = Vec::new();
            let mut layer_opaque = Vec::new();
            let mut layer_non_dirs = Vec::new();
            // The last entry of a path in a tar wins.
            for e in layer.entries.iter().rev() {
                let path = e.path.as_str();
                match e.kind {
                    Kind::Whiteout => {
                        layer_deleted.push(path);
                        continue;
                    }
                    Kind::Opaque => {
                        layer_opaque.push(path);
                        continue;
                    }
                    _ => {}
                }
                let hidden = seen.contains(path)
                    || deleted.contains(path)
                    || ancestors(path)
                        .any(|a| deleted.contains(a) || opaque.contains(a) || non_dirs.contains(a));
                if hidden {
                    continue;
                }
                seen.insert(path);
                if e.kind != Kind::Dir {
                    layer_non_dirs.push(path);
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
            deleted.extend(layer_deleted);
            opaque.extend(layer_opaque);
            non_dirs.extend(layer_non_dirs);
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
}
