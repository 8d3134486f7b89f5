//! `nbrt build --check-reproducible`: build a stack twice, each time in a fresh store of its
//! own from a copy of the stack at another path (so nothing is taken from a cache, and paths
//! of the checkout or of temporary directories that leak would show), then compare the
//! images. For each runtime whose image IDs differ, the report names the first layer that
//! differs (the step that made it) and the first file in it that differs, and how; or, when
//! every layer matches, the config fields that differ.
//!
//! The builds leave the user's store, and the stack directory with its locks, as they were:
//! both work on copies inside the store's temporary directory, removed at the end. Images
//! the stack builds on that are in the user's store are copied into both scratch stores.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use nbrt_oci::digest::Hasher;
use nbrt_oci::layer::compression::decompress_sniffed;
use nbrt_oci::layer::reader::read_layer;
use nbrt_oci::layer::{Entry, EntryKind};
use nbrt_oci::spec::Descriptor;
use nbrt_oci::{BlobSource, Digest, Image, ImageName, Progress, Store};
use serde::Serialize;

use crate::builder::{build_stack, BuildOptions, RuntimeReport};
use crate::error::{IoContext, Result};
use crate::stack::{Parent, Stack};

/// What the two builds gave for one runtime.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeCheck {
    pub name: String,
    /// Image IDs of the first and the second build.
    pub first: Digest,
    pub second: Digest,
    pub same: bool,
    /// Where they part, when they differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
}

/// Where two images of one runtime part.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "in", rename_all = "kebab-case")]
pub enum Difference {
    /// The first layer that differs (0 is the bottom one), what made it, and the first file
    /// in it that differs.
    Layer {
        index: usize,
        step: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        file: Option<FileDifference>,
    },
    /// Every layer matches: the config fields that differ.
    Config { fields: Vec<String> },
}

/// The first entry (in path order) whose presence or metadata or content differs.
#[derive(Debug, Clone, Serialize)]
pub struct FileDifference {
    /// The path in the image (`/etc/stamp`).
    pub path: String,
    /// What differs: `content`, `mtime 1700000000 / 1700000100`, `only in the first build`, …
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub runtimes: Vec<RuntimeCheck>,
}

impl CheckReport {
    /// Whether every runtime came out the same both times.
    pub fn reproducible(&self) -> bool {
        self.runtimes.iter().all(|r| r.same)
    }
}

/// Build the stack at `stack_path` (all of it, or what `only` needs) twice and compare.
pub fn check_reproducible(
    store: &Store,
    stack_path: &Path,
    only: Option<&str>,
    opts: &BuildOptions,
    progress: &Progress,
    log: &mut dyn Write,
) -> Result<CheckReport> {
    let original = Stack::load(stack_path, store)?;
    fs::create_dir_all(store.tmp()).io_context(|| format!("creating {}", store.tmp().display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("check-reproducible-")
        .tempdir_in(store.tmp())
        .io_context(|| format!("creating a directory in {}", store.tmp().display()))?;
    let mut builds = Vec::new();
    // The second copy sits deeper, under other names: a path that leaks changes the layer.
    for (i, place) in ["first", "second/checkout/of/the/stack"].iter().enumerate() {
        let root = scratch.path().join(format!("build-{i}"));
        let build_store = Store::open(root.join("store"))?;
        copy_store_parents(store, &build_store, &original, progress)?;
        let dir = root.join(place);
        let path = copy_stack(&original, stack_path, &dir)?;
        let stack = match Stack::load(&path, &build_store) {
            Ok(s) => s,
            // A parent given by a relative path outside the stack is not in the copy.
            Err(e) => {
                writeln!(
                    log,
                    "the copy of the stack does not load ({e}); building from {} instead",
                    stack_path.display()
                )
                .ok();
                Stack::load(stack_path, &build_store)?
            }
        };
        writeln!(log, "build {} of 2, in {}", i + 1, root.display()).ok();
        let reports = build_stack(&build_store, &stack, only, opts, progress, log)?;
        builds.push((build_store, reports));
    }
    let (first, second) = (&builds[0], &builds[1]);
    let mut runtimes = Vec::new();
    for a in &first.1 {
        let Some(b) = second.1.iter().find(|b| b.name == a.name) else {
            continue;
        };
        runtimes.push(compare_runtime(&first.0, a, &second.0, b)?);
    }
    drop(builds);
    if let Err(e) = fs::remove_dir_all(scratch.path()) {
        writeln!(log, "could not remove {}: {e}", scratch.path().display()).ok();
    }
    Ok(CheckReport { runtimes })
}

/// Copy the stack directory to `dir` (locks too); the path of its copy to build from.
fn copy_stack(stack: &Stack, stack_path: &Path, dir: &Path) -> Result<PathBuf> {
    let name = stack
        .dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "stack".into());
    let to = dir.join(name);
    crate::steps::user::copy_tree(&stack.dir, &to)?;
    Ok(if stack_path.is_file() {
        to.join(stack_path.file_name().unwrap_or_default())
    } else {
        to
    })
}

/// The images of the user's store that runtimes of the stack build on, copied into `to`
/// under the same names.
fn copy_store_parents(from: &Store, to: &Store, stack: &Stack, progress: &Progress) -> Result<()> {
    for parent in stack.parents.values() {
        let Parent::Image(reference) = parent else {
            continue;
        };
        let found = from.resolve(reference)?;
        let names = ImageName::parse(reference)
            .map(|n| vec![n])
            .unwrap_or_default();
        nbrt_oci::image::copy_image(&found.image, from, &mut to.sink(names), progress)?;
    }
    Ok(())
}

fn compare_runtime(
    store_a: &Store,
    a: &RuntimeReport,
    store_b: &Store,
    b: &RuntimeReport,
) -> Result<RuntimeCheck> {
    let same = a.id == b.id;
    let difference = if same {
        None
    } else {
        let image_a = store_a.resolve(&format!("{}:latest", a.name))?.image;
        let image_b = store_b.resolve(&format!("{}:latest", b.name))?.image;
        Some(first_difference(store_a, &image_a, store_b, &image_b)?)
    };
    Ok(RuntimeCheck {
        name: a.name.clone(),
        first: a.id.clone(),
        second: b.id.clone(),
        same,
        difference,
    })
}

/// Where two images part: the first layer whose diff ID differs and the first file in it,
/// else the config fields.
pub fn first_difference(
    store_a: &Store,
    a: &Image,
    store_b: &Store,
    b: &Image,
) -> Result<Difference> {
    let (ids_a, ids_b) = (a.diff_ids(), b.diff_ids());
    let index = ids_a.iter().zip(ids_b).position(|(x, y)| x != y);
    let index = match index {
        Some(i) => Some(i),
        None if ids_a.len() != ids_b.len() => Some(ids_a.len().min(ids_b.len())),
        None => None,
    };
    let Some(index) = index else {
        return Ok(Difference::Config {
            fields: config_fields(a, b),
        });
    };
    let step = a
        .config
        .value()
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .nth(index)
        .and_then(|h| h.created_by.clone())
        .unwrap_or_default();
    let file = match (a.layers().get(index), b.layers().get(index)) {
        (Some(la), Some(lb)) => {
            first_file_difference(&layer_entries(store_a, la)?, &layer_entries(store_b, lb)?)
        }
        _ => None,
    };
    Ok(Difference::Layer { index, step, file })
}

/// The top-level config fields whose values differ (`created`, `history`, `config.Env`, …).
fn config_fields(a: &Image, b: &Image) -> Vec<String> {
    let (va, vb) = (
        serde_json::to_value(a.config.value()).unwrap_or_default(),
        serde_json::to_value(b.config.value()).unwrap_or_default(),
    );
    let mut fields = Vec::new();
    if let (Some(ma), Some(mb)) = (va.as_object(), vb.as_object()) {
        let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
        for k in keys {
            match (ma.get(k), mb.get(k)) {
                (Some(serde_json::Value::Object(oa)), Some(serde_json::Value::Object(ob))) => {
                    let inner: std::collections::BTreeSet<&String> =
                        oa.keys().chain(ob.keys()).collect();
                    for i in inner {
                        if oa.get(i) != ob.get(i) {
                            fields.push(format!("{k}.{i}"));
                        }
                    }
                }
                (x, y) if x != y => fields.push(k.clone()),
                _ => {}
            }
        }
    }
    fields
}

/// What a layer says about one path: everything its bytes cover.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryFacts {
    kind: String,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    size: u64,
    content: Digest,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn layer_entries(store: &Store, layer: &Descriptor) -> Result<BTreeMap<String, EntryFacts>> {
    let blob = store.open_blob(layer)?;
    let (_, tar) = decompress_sniffed(blob)?;
    let mut out = BTreeMap::new();
    read_layer(tar, None, |entry: &Entry, data: &mut dyn Read| {
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = data.read(&mut buf).map_err(|e| nbrt_oci::OciError::Io {
                context: format!("reading {} of a layer", entry.path),
                source: e,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let kind = match &entry.kind {
            EntryKind::Symlink(t) => format!("symlink to {t}"),
            EntryKind::Hardlink(t) => format!("hard link to /{t}"),
            other => format!("{other:?}"),
        };
        out.insert(
            entry.path.trim_start_matches("./").to_string(),
            EntryFacts {
                kind,
                mode: entry.mode,
                owner: (entry.uid, entry.gid),
                mtime: entry.mtime,
                size: entry.size,
                content: h.finish().0,
                xattrs: entry.xattrs.clone(),
            },
        );
        Ok(())
    })?;
    Ok(out)
}

/// The first path (in order) whose entry differs between two layers, and how.
fn first_file_difference(
    a: &BTreeMap<String, EntryFacts>,
    b: &BTreeMap<String, EntryFacts>,
) -> Option<FileDifference> {
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for path in paths {
        let what = match (a.get(path), b.get(path)) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(x), Some(y)) => describe(x, y),
            (Some(_), None) => "only in the first build".to_string(),
            (None, Some(_)) => "only in the second build".to_string(),
            (None, None) => continue,
        };
        return Some(FileDifference {
            path: format!("/{path}"),
            what,
        });
    }
    None
}

fn describe(x: &EntryFacts, y: &EntryFacts) -> String {
    let mut parts = Vec::new();
    if x.kind != y.kind {
        parts.push(format!("type {} / {}", x.kind, y.kind));
    }
    if x.content != y.content {
        parts.push(format!("content ({} / {} bytes)", x.size, y.size));
    }
    if x.mode != y.mode {
        parts.push(format!("mode {:o} / {:o}", x.mode, y.mode));
    }
    if x.owner != y.owner {
        parts.push(format!(
            "owner {}:{} / {}:{}",
            x.owner.0, x.owner.1, y.owner.0, y.owner.1
        ));
    }
    if x.mtime != y.mtime {
        parts.push(format!("mtime {} / {}", x.mtime, y.mtime));
    }
    if x.xattrs != y.xattrs {
        parts.push("extended attributes".to_string());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(content: &[u8], mtime: u64) -> EntryFacts {
        EntryFacts {
            kind: "File".into(),
            mode: 0o644,
            owner: (0, 0),
            mtime,
            size: content.len() as u64,
            content: Digest::of_bytes(content),
            xattrs: Vec::new(),
        }
    }

    #[test]
    fn the_first_differing_path_and_how() {
        let a: BTreeMap<String, EntryFacts> = [
            ("etc/a".to_string(), facts(b"same", 1)),
            ("etc/stamp".to_string(), facts(b"Mon", 5)),
            ("usr/z".to_string(), facts(b"z", 1)),
        ]
        .into();
        let mut b = a.clone();
        b.insert("etc/stamp".into(), facts(b"Tue", 6));
        b.remove("usr/z");
        let d = first_file_difference(&a, &b).unwrap();
        assert_eq!(d.path, "/etc/stamp");
        assert_eq!(d.what, "content (3 / 3 bytes), mtime 5 / 6");
        b.insert("etc/stamp".into(), facts(b"Mon", 5));
        let d = first_file_difference(&a, &b).unwrap();
        assert_eq!(
            (d.path.as_str(), d.what.as_str()),
            ("/usr/z", "only in the first build")
        );
        assert!(first_file_difference(&a, &a).is_none());
    }
}
