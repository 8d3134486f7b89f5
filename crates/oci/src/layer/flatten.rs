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
use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use crate::error::{IoContext, Result};
use crate::image::{open_verified, BlobSource, Image};
use crate::layer::budget::Budget;
use crate::layer::compression::{decompress, Compression};
use crate::layer::merge::{Present, TopDown};
use crate::layer::reader::{for_each_entry, read_layer, Entry, EntryKind};
use crate::layer::writer::append_entry;
use crate::progress::Progress;
use crate::spec::Descriptor;

/// Where a flattened tar goes: a stream, or a file that can be cut back to a mark. Into a
/// file, a layer is read once when what its entries came to needs no second look (no entry
/// replaced by a later one, no hard link whose target an upper layer hides), which is nearly
/// always; otherwise what was written of it is cut off and it is read twice.
trait FlatOut: Write {
    /// A point to come back to, if this output can.
    fn mark(&mut self) -> io::Result<Option<u64>>;
    /// Cut the output back to `mark`.
    fn cut(&mut self, mark: u64) -> io::Result<()>;
}

struct Stream<W>(W);

impl<W: Write> Write for Stream<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> FlatOut for Stream<W> {
    fn mark(&mut self) -> io::Result<Option<u64>> {
        Ok(None)
    }
    fn cut(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("a stream cannot be cut back"))
    }
}

struct FileOut {
    file: BufWriter<File>,
    pos: u64,
}

impl Write for FileOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl FlatOut for FileOut {
    fn mark(&mut self) -> io::Result<Option<u64>> {
        Ok(Some(self.pos))
    }
    fn cut(&mut self, mark: u64) -> io::Result<()> {
        self.file.flush()?;
        let f = self.file.get_mut();
        f.set_len(mark)?;
        f.seek(SeekFrom::Start(mark))?;
        self.pos = mark;
        Ok(())
    }
}

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

/// [`flatten`] bounded by `budget` (what the layers may expand to). Every layer is read
/// twice (a stream cannot be cut back); [`flatten_to_file`] reads most once.
pub fn flatten_within<W: Write>(
    image: &Image,
    source: &dyn BlobSource,
    out: W,
    progress: &Progress,
    budget: &Budget,
) -> Result<W> {
    Ok(flatten_into(image, source, Stream(out), progress, budget)?.0)
}

/// [`flatten_within`] into a file (written from its current position, which must be its
/// end); returns it flushed.
pub fn flatten_to_file(
    image: &Image,
    source: &dyn BlobSource,
    mut file: File,
    progress: &Progress,
    budget: &Budget,
) -> Result<File> {
    let pos = file
        .stream_position()
        .io_context(|| "reading the output position")?;
    let out = FileOut {
        file: BufWriter::with_capacity(1 << 20, file),
        pos,
    };
    let out = flatten_into(image, source, out, progress, budget)?;
    out.file
        .into_inner()
        .map_err(|e| e.into_error())
        .io_context(|| "writing the flattened tar")
}

fn flatten_into<O: FlatOut>(
    image: &Image,
    source: &dyn BlobSource,
    out: O,
    progress: &Progress,
    budget: &Budget,
) -> Result<O> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let mut merge: TopDown<String> = TopDown::new();
    let bar = progress.bytes("flattening", image.size());
    for layer in image.layers().iter().rev() {
        let mut counted = false;
        if let Some(mark) = tar.get_mut().mark().io_context(|| "writing the tar")? {
            if one_pass(&mut tar, source, layer, &mut merge, budget, &bar)? {
                merge.end_layer();
                continue;
            }
            tar.get_mut()
                .cut(mark)
                .io_context(|| "cutting the tar back")?;
            merge.discard_layer();
            counted = true;
        }
        let plan = plan_layer(
            source,
            layer,
            &mut merge,
            (!counted).then_some(budget),
            &bar,
        )?;
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
                return append_entry(&mut tar, None, &e, data);
            }
            if !plan.shown.contains(&i) || plan.skip.contains(&i) {
                return Ok(());
            }
            match plan.link_to.get(&i) {
                Some(target) => {
                    let mut e = entry.clone();
                    e.kind = EntryKind::Hardlink(target.clone());
                    append_entry(&mut tar, None, &e, data)
                }
                None => append_entry(&mut tar, None, entry, data),
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
        append_entry(&mut tar, None, &dir, &mut std::io::empty())?;
    }
    bar.finish();
    let mut out = tar.into_inner().io_context(|| "finishing the tar")?;
    out.flush().io_context(|| "writing the tar")?;
    Ok(out)
}

/// Read a layer once, writing what shows as it comes. Returns false (and the caller cuts
/// off what was written) when the layer needs a second look: an entry a later one replaced,
/// or a hard link whose target does not show.
fn one_pass<O: FlatOut>(
    tar: &mut tar::Builder<O>,
    source: &dyn BlobSource,
    layer: &Descriptor,
    merge: &mut TopDown<String>,
    budget: &Budget,
    bar: &crate::progress::Bar,
) -> Result<bool> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let blob = bar.wrap_read(open_verified(source, layer)?);
    let mut shown_here: HashSet<String> = HashSet::new();
    let mut link_root: HashMap<String, String> = HashMap::new();
    let mut clean = true;
    let outcome = read_layer(
        decompress(blob, compression)?,
        Some(budget),
        |entry, data| {
            if !clean {
                return Ok(());
            }
            let shows = match &entry.kind {
                EntryKind::Whiteout => {
                    merge.whiteout(entry.path.clone());
                    false
                }
                EntryKind::Opaque => {
                    merge.opaque(entry.path.clone());
                    false
                }
                EntryKind::Dir => merge.entry(entry.path.clone(), Present::Dir),
                _ => merge.entry(entry.path.clone(), Present::Other),
            };
            if let EntryKind::Hardlink(target) = &entry.kind {
                let root = link_root
                    .get(target)
                    .cloned()
                    .unwrap_or_else(|| target.clone());
                link_root.insert(entry.path.clone(), root.clone());
                if shows {
                    if !shown_here.contains(&root) {
                        clean = false;
                        return Ok(());
                    }
                    let mut e = entry.clone();
                    e.kind = EntryKind::Hardlink(root);
                    append_entry(tar, None, &e, data)?;
                }
            } else if shows {
                append_entry(tar, None, entry, data)?;
            }
            if shows {
                shown_here.insert(entry.path.clone());
            }
            Ok(())
        },
    )?;
    Ok(clean && !outcome.replaced_any())
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
    budget: Option<&Budget>,
    bar: &crate::progress::Bar,
) -> Result<Plan> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let blob = bar.wrap_read(open_verified(source, layer)?);
    let mut entries: Vec<(String, EntryKind)> = Vec::new();
    let outcome = read_layer(decompress(blob, compression)?, budget, |entry, _| {
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
    use crate::layer::LayerWriter;
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
