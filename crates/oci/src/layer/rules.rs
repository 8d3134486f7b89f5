//! What the entries of one layer mean together, in the order the tar gives them: the layer is
//! what unpacking its entries one after the other into an empty directory gives (what GNU
//! tar, umoci and [`super::apply`] do), so **the last entry of a path wins**:
//!
//! - a later entry replaces an earlier one at the same path; a directory after a directory
//!   only changes its metadata (the contents stay), anything else removes the earlier entry
//!   and everything under it;
//! - a whiteout or an opaque marker acts on the layers below only, never on entries of its
//!   own layer (OCI image spec), wherever it comes in the tar;
//! - directories an entry needs but the layer does not list are implied (created as
//!   directories, as tar does).
//!
//! What the layer cannot mean is refused, so every reader refuses the same layers:
//!
//! - an entry under a path the same layer made a non-directory (a symlink, a file): a write
//!   through a same-layer symlink would depend on the reader;
//! - a hard link whose target is not an earlier non-directory entry of the same layer (a
//!   missing target, a target later in the tar, a directory, a file of a lower layer);
//! - replacing (or removing, by replacing a directory above it) the target of an earlier
//!   hard link, which would leave the link and the path with different contents.
//!
//! [`LayerRules`] follows a layer entry by entry ([`super::reader::for_each_entry`] runs it
//! on every layer anyone reads); its [`LayerRules::finish`] says which entries are final.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{OciError, Result};
use crate::layer::reader::{Entry, EntryKind};
use crate::text::Quoted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A directory; `entry` is the index of its last directory entry (None: implied).
    Dir { entry: Option<usize> },
    /// Anything but a directory, from entry `entry`.
    Other { entry: usize, what: &'static str },
}

#[derive(Debug, Clone, Default)]
struct PathState {
    node: Option<Node>,
    /// For a hard link: the path of its link group's first member (a non-link).
    link_root: Option<String>,
}

/// One layer's entries followed in order.
#[derive(Debug, Default)]
pub struct LayerRules {
    paths: BTreeMap<String, PathState>,
    /// Paths some hard link of the layer points at (roots of link groups).
    linked: HashSet<String>,
    /// Whiteouts and opaque markers: index, path, and whether it is an opaque marker. Kept
    /// unless a later entry replaced a directory they are in.
    markers: Vec<(usize, String, bool)>,
    count: usize,
}

/// What a layer's entries came to.
#[derive(Debug, Clone, Default)]
pub struct LayerOutcome {
    /// By entry index: whether the entry is part of the layer's result (an entry replaced by
    /// a later one, or removed with a directory a later entry replaced, is not). Whiteouts
    /// and opaque markers always are.
    pub kept: Vec<bool>,
    /// Hard links kept, by entry index: the path of the first member of their link group
    /// (the non-link entry every link of the group shares the contents of).
    pub link_roots: HashMap<usize, String>,
    /// For each link group root path, its entry index.
    pub roots: HashMap<String, usize>,
}

impl LayerOutcome {
    /// Whether any entry was replaced (the layer had duplicates).
    pub fn replaced_any(&self) -> bool {
        self.kept.iter().any(|k| !k)
    }
}

fn refuse(path: &str, reason: String) -> OciError {
    OciError::UnsafeEntry {
        path: path.to_string(),
        reason,
    }
}

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn what(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "a file",
        EntryKind::Symlink(_) => "a symlink",
        EntryKind::Hardlink(_) => "a hard link",
        EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => "a device",
        EntryKind::Fifo => "a fifo",
        _ => "a non-directory",
    }
}

impl LayerRules {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follow the next entry of the layer; refuses what the layer cannot mean.
    pub fn push(&mut self, e: &Entry) -> Result<()> {
        let index = self.count;
        self.count += 1;
        let path = e.path.as_str();
        // The directories the entry needs.
        let needs_self = matches!(e.kind, EntryKind::Opaque);
        let mut needed: Vec<&str> = ancestors(path).collect();
        if needs_self && !path.is_empty() {
            needed.push(path);
        }
        for dir in needed {
            let st = self.paths.entry(dir.to_string()).or_default();
            match st.node {
                Some(Node::Other { what, .. }) => {
                    return Err(refuse(
                        path,
                        format!(
                            "it is under {}, which this layer made {} (a write through a \
                             symlink or under a file of the same layer is refused)",
                            Quoted(dir),
                            what
                        ),
                    ));
                }
                Some(Node::Dir { .. }) => {}
                None => st.node = Some(Node::Dir { entry: None }),
            }
        }
        match &e.kind {
            EntryKind::Whiteout | EntryKind::Opaque => {
                self.markers
                    .push((index, e.path.clone(), e.kind == EntryKind::Opaque))
            }
            EntryKind::Dir => {
                if self.linked.contains(path) {
                    return Err(self.replaced_target(path, path));
                }
                let st = self.paths.entry(path.to_string()).or_default();
                st.node = Some(Node::Dir { entry: Some(index) });
                st.link_root = None;
            }
            kind => {
                if self.paths.get(path).is_some_and(|st| st.node.is_some()) {
                    self.remove(path)?;
                }
                let link_root = match kind {
                    EntryKind::Hardlink(target) => Some(self.link_target(path, target)?),
                    _ => None,
                };
                if let Some(root) = &link_root {
                    self.linked.insert(root.clone());
                }
                let st = self.paths.entry(path.to_string()).or_default();
                st.node = Some(Node::Other {
                    entry: index,
                    what: what(kind),
                });
                st.link_root = link_root;
            }
        }
        Ok(())
    }

    fn replaced_target(&self, path: &str, target: &str) -> OciError {
        refuse(
            path,
            format!(
                "it replaces {}, the target of a hard link earlier in the layer",
                Quoted(target)
            ),
        )
    }

    /// Remove `path` and everything under it (a later entry replaces it).
    fn remove(&mut self, path: &str) -> Result<()> {
        let prefix = format!("{path}/");
        let under: Vec<String> = self
            .paths
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| p.clone())
            .collect();
        for p in under.iter().map(String::as_str).chain([path]) {
            if self.linked.contains(p) {
                return Err(self.replaced_target(path, p));
            }
        }
        for p in &under {
            self.paths.remove(p);
        }
        // Markers inside what is removed go with it (a whiteout of the path itself stays: it
        // is about the layers below).
        self.markers
            .retain(|(_, p, opaque)| !(p.starts_with(&prefix) || (*opaque && p == path)));
        if let Some(st) = self.paths.get_mut(path) {
            st.node = None;
            st.link_root = None;
        }
        Ok(())
    }

    /// Check a hard link's target; returns its link group's root.
    fn link_target(&self, path: &str, target: &str) -> Result<String> {
        match self
            .paths
            .get(target)
            .and_then(|st| st.node.map(|n| (n, st)))
        {
            Some((Node::Other { .. }, st)) => {
                Ok(st.link_root.clone().unwrap_or_else(|| target.to_string()))
            }
            Some((Node::Dir { .. }, _)) => Err(refuse(
                path,
                format!("hard link to {}, a directory", Quoted(target)),
            )),
            None => Err(refuse(
                path,
                format!(
                    "hard link to {}, which is not an earlier entry of this layer (a hard \
                     link must follow its target in the same layer)",
                    Quoted(target)
                ),
            )),
        }
    }

    /// What the layer came to.
    pub fn finish(self) -> LayerOutcome {
        let mut out = LayerOutcome {
            kept: vec![false; self.count],
            ..Default::default()
        };
        for (path, st) in &self.paths {
            match st.node {
                Some(Node::Dir { entry: Some(i) }) => out.kept[i] = true,
                Some(Node::Other { entry, .. }) => {
                    out.kept[entry] = true;
                    if let Some(root) = &st.link_root {
                        out.link_roots.insert(entry, root.clone());
                    } else if self.linked.contains(path) {
                        out.roots.insert(path.clone(), entry);
                    }
                }
                _ => {}
            }
        }
        for (i, _, _) in &self.markers {
            out.kept[*i] = true;
        }
        out
    }
}
