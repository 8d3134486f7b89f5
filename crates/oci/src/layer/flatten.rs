//! Flattening an image's layers into one file-system tar (what `docker export` gives for a
//! container): layers are read top-down and an entry is kept only if no upper layer replaced,
//! deleted or hid it. No file system is touched, so nothing can land outside a root.
//!
//! Each layer is read twice: first for what its entries come to (the last entry of a path
//! wins, [`super::rules`]) and which of them show through the upper layers
//! ([`super::merge`]), then to write those. The result has one entry per path, so GNU tar
//! extracts it as the builder's merged view and the inspector's index see the image:
//!
//! - a hard link whose target shows is written as a link to it; when the target is hidden
//!   by an upper layer, the first link of the group that shows is written as the file (with
//!   the target's contents and metadata, where the target was) and the others link to it;
//! - a path an upper layer made a directory by having entries under it hides a lower
//!   non-directory there, as the builder's unpacked layers do.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::error::Result;
use crate::image::{open_verified, BlobSource, Image};
use crate::layer::budget::Budget;
use crate::layer::compression::{decompress, Compression};
use crate::layer::merge::{Present, TopDown};
use crate::layer::reader::{for_each_entry, read_layer, Entry, EntryKind};
use crate::layer::writer::LayerWriter;
use crate::progress::Progress;
use crate::spec::Descriptor;

/// Write the merged file system of `image` as an uncompressed tar to `out`.
pub fn flatten<W: Write>(
    image: &Image,
    source: &dyn BlobSource,
    out: W,
    progress: &Progress,
) -> Result<W> {
    flatten_within(
        image,
        source,
        out,
        progress,
        &Budget::new(Default::default()),
    )
}

/// [`flatten`] bounded by `budget` (what the layers may expand to).
pub fn flatten_within<W: Write>(
    image: &Image,
    source: &dyn BlobSource,
    out: W,
    progress: &Progress,
    budget: &Budget,
) -> Result<W> {
    let mut writer = LayerWriter::new(out, Compression::None, None)?;
    let mut merge: TopDown<String> = TopDown::new();
    let bar = progress.bytes("flattening", image.size().saturating_mul(2));
    for layer in image.layers().iter().rev() {
        let plan = plan_layer(source, layer, &mut merge, budget, &bar)?;
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = bar.wrap_read(open_verified(source, layer)?);
        let mut index = 0usize;
        for_each_entry(decompress(blob, compression)?, |entry, data| {
            let i = index;
            index += 1;
            if let Some(primary) = plan.written_as.get(&i) {
                // A hidden link target: written under the first shown link's name.
                let mut e = entry.clone();
                e.path = primary.clone();
                return writer.append(&e, data);
            }
            if !plan.shown.contains(&i) || plan.skip.contains(&i) {
                return Ok(());
            }
            match plan.link_to.get(&i) {
                Some(target) => {
                    let mut e = entry.clone();
                    e.kind = EntryKind::Hardlink(target.clone());
                    writer.append(&e, data)
                }
                None => writer.append(entry, data),
            }
        })?;
    }
    // Directories only implied by the layers (a whiteout inside one, say) exist too.
    let mut implied: Vec<&str> = merge.implied_dirs().map(|(p, _)| p).collect();
    implied.sort_unstable();
    for path in implied {
        let dir = Entry {
            path: path.to_string(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            xattrs: Vec::new(),
        };
        writer.append(&dir, &mut std::io::empty())?;
    }
    bar.finish();
    let (_, out) = writer.finish()?;
    Ok(out)
}

/// What to write of one layer.
#[derive(Default)]
struct Plan {
    /// Entries (by index) that show in the merged file system.
    shown: HashSet<usize>,
    /// Hard links that show, with the path they link to.
    link_to: HashMap<usize, String>,
    /// Link targets that do not show, written under this path (a link of theirs that shows).
    written_as: HashMap<usize, String>,
    /// Links written at their target's place instead.
    skip: HashSet<usize>,
}

/// First read of a layer: what its entries come to, and which show.
fn plan_layer(
    source: &dyn BlobSource,
    layer: &Descriptor,
    merge: &mut TopDown<String>,
    budget: &Budget,
    bar: &crate::progress::Bar,
) -> Result<Plan> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let blob = bar.wrap_read(open_verified(source, layer)?);
    let mut entries: Vec<(String, EntryKind)> = Vec::new();
    let outcome = read_layer(decompress(blob, compression)?, Some(budget), |entry, _| {
        let kind = match &entry.kind {
            EntryKind::Hardlink(_) => EntryKind::Hardlink(String::new()),
            EntryKind::Symlink(_) => EntryKind::Symlink(String::new()),
            k => k.clone(),
        };
        entries.push((entry.path.clone(), kind));
        Ok(())
    })?;
    let mut plan = Plan::default();
    for (i, (path, kind)) in entries.iter().enumerate() {
        if !outcome.kept[i] {
            continue;
        }
        let shows = match kind {
            EntryKind::Whiteout => {
                merge.whiteout(path.clone());
                false
            }
            EntryKind::Opaque => {
                merge.opaque(path.clone());
                false
            }
            EntryKind::Dir => merge.entry(path.clone(), Present::Dir),
            _ => merge.entry(path.clone(), Present::Other),
        };
        if shows {
            plan.shown.insert(i);
        }
    }
    merge.end_layer();
    // Hard link groups, in the order of the tar (a link always comes after its root).
    let mut primary: HashMap<&str, &str> = HashMap::new();
    let mut links: Vec<(&usize, &String)> = outcome.link_roots.iter().collect();
    links.sort();
    for (&i, root) in links {
        if !plan.shown.contains(&i) {
            continue;
        }
        let Some(&root_index) = outcome.roots.get(root) else {
            continue;
        };
        if plan.shown.contains(&root_index) {
            plan.link_to.insert(i, root.clone());
            continue;
        }
        let path = entries[i].0.as_str();
        match primary.get(root.as_str()) {
            Some(first) => {
                plan.link_to.insert(i, first.to_string());
            }
            None => {
                primary.insert(root.as_str(), path);
                plan.written_as.insert(root_index, path.to_string());
                plan.skip.insert(i);
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::layer::reader::Entry;
    use crate::spec::{ImageConfig, RootFs};
    use crate::store::Store;

    fn layer(store: &Store, entries: &[(&str, EntryKind)]) -> crate::layer::LayerInfo {
        let mut w = LayerWriter::new(store.new_blob().unwrap(), Compression::None, None).unwrap();
        for (path, kind) in entries {
            let e = Entry {
                path: path.to_string(),
                kind: kind.clone(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 1,
                size: 0,
                xattrs: vec![],
            };
            w.append(&e, &mut std::io::empty()).unwrap();
        }
        let (info, blob) = w.finish().unwrap();
        blob.commit().unwrap();
        info
    }

    #[test]
    fn follows_the_merge_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        use EntryKind::{Dir, File, Opaque, Whiteout};
        let layers = [
            layer(
                &store,
                &[("d", Dir), ("d/x", File), ("t", Dir), ("t/old", File)],
            ),
            layer(&store, &[("d", File)]),
            layer(
                &store,
                &[
                    ("d", Dir),
                    ("d/y", File),
                    ("t", Whiteout),
                    ("t", Dir),
                    ("t/new", File),
                    ("o", Opaque),
                ],
            ),
        ];
        let config = ImageConfig {
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            ..Default::default()
        };
        let image = Image::assemble(
            config,
            layers.iter().map(|l| l.descriptor()).collect(),
            BTreeMap::new(),
        )
        .unwrap();
        let out = flatten(&image, &store, Vec::new(), &Progress::hidden()).unwrap();
        let mut names = Vec::new();
        for_each_entry(&out[..], |e, _| {
            names.push(e.path.clone());
            Ok(())
        })
        .unwrap();
        names.sort();
        // `o`: an opaque marker alone makes the directory (as tar and the builder do).
        assert_eq!(names, ["d", "d/y", "o", "t", "t/new"]);
    }
}
