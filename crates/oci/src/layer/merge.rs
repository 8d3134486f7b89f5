//! How layers merge into one file system: the rules of overlayfs and of the OCI image spec's
//! whiteouts, in one place. Three readers use them: flattening (layer tars, top down, in
//! [`super::flatten`]), the inspector's view (layer indexes, top down) and the builder's
//! merged view (unpacked layer directories, one path at a time, lazily).
//!
//! For one path, looking at the layers from the top:
//!
//! - the top-most layer with an entry at the path gives it (its kind and metadata);
//! - a whiteout hides the path, and everything under it, in the layers below its own;
//! - a directory lets lower layers add to its contents, down to a layer whose copy is opaque
//!   (or that whites the path out too: a whiteout and a new directory of the same name in one
//!   layer are a fresh directory); the layers below that one are hidden there;
//! - a non-directory ends the merge: nothing of the layers below shows at or under the path;
//!   a lower non-directory under an upper directory is hidden and ends it the same way;
//! - an opaque marker whose layer has no entry for the directory itself (a tar may leave a
//!   directory implied) hides the lower contents, but a lower layer's directory entry still
//!   gives the directory's metadata;
//! - a whiteout or an opaque marker acts on the layers below its own, never on entries of its
//!   own layer;
//! - a directory a layer has only because it has entries under it (an implied directory, as
//!   tar creates it and as the builder's unpacked layer holds it) is a directory of that
//!   layer: it hides a lower non-directory of that path, and a lower directory entry gives
//!   its metadata.
//!
//! Within one layer the last entry of a path wins (see [`super::rules`], which every layer
//! reader applies before entries reach a merge).
//!
//! [`PathMerge`] is the rule for one path's stack of entries; [`TopDown`] applies it to every
//! path of layers read top down (an entry shows when its own path and every directory above
//! it still let that layer through).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// What kind of entry a layer has at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Present {
    Dir,
    /// A file, symlink, device, …: anything but a directory.
    Other,
}

/// What one layer has at one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AtPath {
    pub entry: Option<Present>,
    /// A whiteout of the path (`.wh.<name>`, or overlayfs's character device 0/0).
    pub whiteout: bool,
    /// The directory's lower contents are hidden (`.wh..wh..opq`, `trusted.overlay.opaque`).
    pub opaque: bool,
    /// The layer has entries under the path but none at it: an implied directory.
    pub implied: bool,
}

impl AtPath {
    pub const ABSENT: AtPath = AtPath {
        entry: None,
        whiteout: false,
        opaque: false,
        implied: false,
    };
    pub const WHITEOUT: AtPath = AtPath {
        entry: None,
        whiteout: true,
        opaque: false,
        implied: false,
    };
    pub const OTHER: AtPath = AtPath {
        entry: Some(Present::Other),
        whiteout: false,
        opaque: false,
        implied: false,
    };

    pub const fn dir(opaque: bool) -> AtPath {
        AtPath {
            entry: Some(Present::Dir),
            whiteout: false,
            opaque,
            implied: false,
        }
    }
}

/// What pushing one layer's entry did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// This layer's entry is the one the merged file system shows at the path.
    pub shown: bool,
    /// This layer's contents of the directory show (under the path).
    pub contents_shown: bool,
}

/// The merge of one path, fed its layers' entries from the top down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMerge {
    top: Option<Present>,
    /// A lower layer's entry at the path would still show.
    entry_open: bool,
    /// Lower layers' entries under the path would still show.
    contents_open: bool,
    /// An upper layer made the path a directory without an entry of its own (an opaque
    /// marker alone): a lower directory entry gives its metadata, a lower non-directory does
    /// not show.
    implied_dir: bool,
}

impl Default for PathMerge {
    fn default() -> Self {
        Self::new()
    }
}

impl PathMerge {
    pub const fn new() -> Self {
        Self {
            top: None,
            entry_open: true,
            contents_open: true,
            implied_dir: false,
        }
    }

    /// Add the next lower layer's entry at the path.
    pub fn push(&mut self, at: AtPath) -> Pushed {
        let mut p = Pushed::default();
        if self.is_done() {
            return p;
        }
        match at.entry {
            Some(Present::Dir) => {
                if self.entry_open {
                    self.top = Some(Present::Dir);
                    self.entry_open = false;
                    p.shown = true;
                }
                p.contents_shown = self.contents_open;
                if at.opaque || at.whiteout {
                    self.contents_open = false;
                }
            }
            Some(Present::Other) => {
                if self.entry_open && !self.implied_dir {
                    self.top = Some(Present::Other);
                    p.shown = true;
                }
                self.entry_open = false;
                self.contents_open = false;
            }
            // A directory without an entry of its own (an opaque marker alone, or entries
            // under the path): a lower directory entry gives its metadata, a lower
            // non-directory does not show. Over a whiteout of its own layer it is a fresh
            // directory: nothing below shows.
            None if at.opaque || at.implied => {
                p.contents_shown = self.contents_open;
                if at.opaque || at.whiteout {
                    self.contents_open = false;
                }
                if at.whiteout {
                    self.entry_open = false;
                } else if self.entry_open {
                    self.implied_dir = true;
                }
            }
            None if at.whiteout => {
                self.entry_open = false;
                self.contents_open = false;
            }
            None => {}
        }
        p
    }

    /// What the merged file system shows at the path so far.
    pub fn top(&self) -> Option<Present> {
        self.top
    }

    /// Whether an entry at the path in a lower layer would show.
    pub fn shows(&self, entry: Present) -> bool {
        let mut probe = *self;
        probe
            .push(AtPath {
                entry: Some(entry),
                ..AtPath::ABSENT
            })
            .shown
    }

    /// Whether lower layers' entries under the path still show.
    pub fn contents_open(&self) -> bool {
        self.contents_open
    }

    /// Nothing in lower layers can change the path or what is under it any more.
    pub fn is_done(&self) -> bool {
        !self.entry_open && !self.contents_open
    }
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// How [`TopDown`] keeps paths: `String`, or `&str` when the layers outlive the merge.
pub trait PathKey: Borrow<str> + Hash + Eq {
    /// The first `len` bytes of the path (a directory above it).
    fn prefix(&self, len: usize) -> Self;
}

impl PathKey for String {
    fn prefix(&self, len: usize) -> Self {
        self[..len].to_string()
    }
}

impl PathKey for &str {
    fn prefix(&self, len: usize) -> Self {
        &self[..len]
    }
}

/// The merge of whole layers read from the top down: for each entry of the current layer,
/// whether it shows in the merged file system. A layer's whiteouts and opaque markers, and
/// its entries' effect on lower layers, count from the next layer on; so do the directories
/// it implies (the ones above its entries that it lists no entry for). Two entries of one
/// path in a layer: the first one offered shows (readers offer only the entry that is left
/// of a path once [`super::rules`] applied, so there is one).
#[derive(Debug)]
pub struct TopDown<K = String> {
    merged: HashMap<K, PathMerge>,
    layer: HashMap<K, AtPath>,
    /// Implied directories that show and no lower layer has given an entry yet, with the
    /// layer (counted from the top, 0 first) that implied them.
    implied_shown: HashMap<String, usize>,
    /// What the current layer took out of `implied_shown` (put back by `discard_layer`).
    unimplied: Vec<(String, usize)>,
    layers_done: usize,
}

impl<K: PathKey> Default for TopDown<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PathKey> TopDown<K> {
    pub fn new() -> Self {
        Self {
            merged: HashMap::new(),
            layer: HashMap::new(),
            implied_shown: HashMap::new(),
            unimplied: Vec::new(),
            layers_done: 0,
        }
    }

    /// An entry (not a whiteout or an opaque marker) at `path` of the current layer: whether
    /// it shows.
    pub fn entry(&mut self, path: K, kind: Present) -> bool {
        let p: &str = path.borrow();
        let shows = self.merged.get(p).is_none_or(|m| m.shows(kind))
            && self.layer.get(p).is_none_or(|at| at.entry.is_none())
            && self.ancestors_open(p);
        if shows {
            if let Some(l) = self.implied_shown.remove(p) {
                self.unimplied.push((p.to_string(), l));
            }
        }
        let at = self.layer.entry(path).or_default();
        if at.entry.is_none() {
            at.entry = Some(kind);
        }
        shows
    }

    fn ancestors_open(&self, p: &str) -> bool {
        ancestors(p).all(|a| self.merged.get(a).is_none_or(PathMerge::contents_open))
    }

    /// Directories some layer implied (it had entries under them, or an opaque marker, but
    /// no entry for them) that show and that no layer gave an entry for: they exist, as
    /// tar and the builder's unpacked layers create them, without metadata of their own.
    /// With the layer (counted from the top, 0 first) that implied each.
    pub fn implied_dirs(&self) -> impl Iterator<Item = (&str, usize)> {
        self.implied_shown.iter().map(|(p, l)| (p.as_str(), *l))
    }

    /// A whiteout of `path` in the current layer.
    pub fn whiteout(&mut self, path: K) {
        self.layer.entry(path).or_default().whiteout = true;
    }

    /// An opaque marker on directory `path` in the current layer.
    pub fn opaque(&mut self, path: K) {
        self.layer.entry(path).or_default().opaque = true;
    }

    /// Forget what the current layer offered (to offer it again).
    pub fn discard_layer(&mut self) {
        self.layer.clear();
        for (p, l) in self.unimplied.drain(..) {
            self.implied_shown.insert(p, l);
        }
    }

    /// The current layer is read: what it did counts for the layers below.
    pub fn end_layer(&mut self) {
        self.unimplied.clear();
        // Directories above this layer's entries that it has no entry for.
        let mut implied: Vec<K> = Vec::new();
        {
            let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
            for path in self.layer.keys() {
                let p: &str = path.borrow();
                for (i, _) in p.match_indices('/').collect::<Vec<_>>().into_iter().rev() {
                    let dir = &p[..i];
                    if !seen.insert(dir) {
                        break;
                    }
                    if self.layer.get(dir).is_none_or(|at| at.entry.is_none()) {
                        implied.push(path.prefix(i));
                    }
                }
            }
        }
        for dir in implied {
            self.layer.entry(dir).or_default().implied = true;
        }
        for (path, at) in &self.layer {
            let p: &str = path.borrow();
            if at.entry.is_none()
                && (at.implied || at.opaque)
                && !p.is_empty()
                && self.merged.get(p).is_none_or(|m| m.shows(Present::Dir))
                && self.ancestors_open(p)
            {
                self.implied_shown
                    .entry(p.to_string())
                    .or_insert(self.layers_done);
            }
        }
        self.layers_done += 1;
        for (path, at) in self.layer.drain() {
            self.merged.entry(path).or_default().push(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(layers: &[AtPath]) -> (Option<Present>, Vec<usize>, Option<usize>) {
        let mut m = PathMerge::new();
        let mut contents = Vec::new();
        let mut shown = None;
        for (i, at) in layers.iter().enumerate() {
            let p = m.push(*at);
            if p.contents_shown {
                contents.push(i);
            }
            if p.shown {
                shown = Some(i);
            }
        }
        (m.top(), contents, shown)
    }

    #[test]
    fn one_path() {
        let d = AtPath::dir(false);
        let o = AtPath::dir(true);
        let f = AtPath::OTHER;
        let w = AtPath::WHITEOUT;
        let a = AtPath::ABSENT;
        assert_eq!(stack(&[d, a, d]), (Some(Present::Dir), vec![0, 2], Some(0)));
        assert_eq!(stack(&[d, o, d]), (Some(Present::Dir), vec![0, 1], Some(0)));
        assert_eq!(stack(&[w, d]), (None, vec![], None));
        assert_eq!(stack(&[f, d]), (Some(Present::Other), vec![], Some(0)));
        // A lower non-directory under a directory: hidden, and the end of the merge.
        assert_eq!(stack(&[d, f, d]), (Some(Present::Dir), vec![0], Some(0)));
        // A whiteout and a directory in one layer: a fresh directory.
        let wd = AtPath {
            whiteout: true,
            ..d
        };
        assert_eq!(stack(&[wd, d]), (Some(Present::Dir), vec![0], Some(0)));
        // An opaque marker alone: the lower entry gives the metadata, not the contents.
        let marker = AtPath { opaque: true, ..a };
        assert_eq!(stack(&[marker, d]), (Some(Present::Dir), vec![0], Some(1)));
        assert_eq!(stack(&[marker, f]), (None, vec![0], None));
    }

    #[test]
    fn top_down() {
        // top: .wh.a, b (a file), c/.wh..wh..opq and c/n, e/ (twice: as a directory and as a
        // file); middle: e (a file); bottom: a/, a/x, b/, b/y, c/, c/z, e/, e/f.
        let mut m: TopDown<&str> = TopDown::new();
        let mut shown = Vec::new();
        let mut offer = |m: &mut TopDown<&'static str>, p: &'static str, k: Present| {
            if m.entry(p, k) {
                shown.push(p);
            }
        };
        // top
        m.whiteout("a");
        offer(&mut m, "b", Present::Other);
        m.opaque("c");
        offer(&mut m, "c/n", Present::Other);
        offer(&mut m, "e", Present::Dir);
        offer(&mut m, "e", Present::Other); // second entry of e in one layer: not shown
        m.end_layer();
        // middle
        offer(&mut m, "e", Present::Other);
        m.end_layer();
        // bottom
        for (p, k) in [
            ("a", Present::Dir),
            ("a/x", Present::Other),
            ("b", Present::Dir),
            ("b/y", Present::Other),
            ("c", Present::Dir),
            ("c/z", Present::Other),
            ("e", Present::Dir),
            ("e/f", Present::Other),
        ] {
            offer(&mut m, p, k);
        }
        m.end_layer();
        assert_eq!(shown, ["b", "c/n", "e", "c"]);
    }
}
