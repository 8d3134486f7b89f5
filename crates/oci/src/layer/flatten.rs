//! Flattening an image's layers into one file-system tar (what `docker export` gives for a
//! container): layers are read top-down and an entry is kept only if no upper layer replaced,
//! deleted or hid it. No file system is touched, so nothing can land outside a root.

use std::collections::HashSet;
use std::io::Write;

use crate::error::Result;
use crate::image::{open_verified, BlobSource, Image};
use crate::layer::compression::{decompress, Compression};
use crate::layer::reader::{for_each_entry, EntryKind};
use crate::layer::writer::LayerWriter;
use crate::progress::Progress;

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Write the merged file system of `image` as an uncompressed tar to `out`.
pub fn flatten<W: Write>(
    image: &Image,
    source: &dyn BlobSource,
    out: W,
    progress: &Progress,
) -> Result<W> {
    let mut writer = LayerWriter::new(out, Compression::None, None)?;
    // Paths already written, or shadowed by an upper layer.
    let mut seen: HashSet<String> = HashSet::new();
    // Paths an upper layer wrote as something other than a directory: their lower subtree is gone.
    let mut non_dirs: HashSet<String> = HashSet::new();
    let mut deleted: HashSet<String> = HashSet::new();
    let mut opaque: HashSet<String> = HashSet::new();
    let bar = progress.bytes("flattening", image.size());
    for layer in image.layers().iter().rev() {
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = bar.wrap_read(open_verified(source, layer)?);
        let mut layer_deleted = Vec::new();
        let mut layer_opaque = Vec::new();
        for_each_entry(decompress(blob, compression)?, |entry, data| {
            let path = entry.path.as_str();
            match entry.kind {
                EntryKind::Whiteout => {
                    layer_deleted.push(entry.path.clone());
                    return Ok(());
                }
                EntryKind::Opaque => {
                    layer_opaque.push(entry.path.clone());
                    return Ok(());
                }
                _ => {}
            }
            let hidden = seen.contains(path)
                || deleted.contains(path)
                || ancestors(path)
                    .any(|a| deleted.contains(a) || opaque.contains(a) || non_dirs.contains(a));
            if hidden {
                return Ok(());
            }
            writer.append(entry, data)?;
            seen.insert(entry.path.clone());
            if entry.kind != EntryKind::Dir {
                non_dirs.insert(entry.path.clone());
            }
            Ok(())
        })?;
        deleted.extend(layer_deleted);
        opaque.extend(layer_opaque);
    }
    bar.finish();
    let (_, out) = writer.finish()?;
    Ok(out)
}
