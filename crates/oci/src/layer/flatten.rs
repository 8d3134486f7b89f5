//! Flattening an image's layers into one file-system tar (what `docker export` gives for a
//! container): layers are read top-down and an entry is kept only if no upper layer replaced,
//! deleted or hid it. No file system is touched, so nothing can land outside a root.

use std::io::Write;

use crate::error::Result;
use crate::image::{open_verified, BlobSource, Image};
use crate::layer::compression::{decompress, Compression};
use crate::layer::merge::{Present, TopDown};
use crate::layer::reader::{for_each_entry, EntryKind};
use crate::layer::writer::LayerWriter;
use crate::progress::Progress;

/// Write the merged file system of `image` as an uncompressed tar to `out`.
pub fn flatten<W: Write>(
    image: &Image,
    source: &dyn BlobSource,
    out: W,
    progress: &Progress,
) -> Result<W> {
    let mut writer = LayerWriter::new(out, Compression::None, None)?;
    // The rules of crate::layer::merge; within a layer, the first entry of a path is kept.
    let mut merge: TopDown<String> = TopDown::new();
    let bar = progress.bytes("flattening", image.size());
    for layer in image.layers().iter().rev() {
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = bar.wrap_read(open_verified(source, layer)?);
        for_each_entry(decompress(blob, compression)?, |entry, data| {
            let kind = match entry.kind {
                EntryKind::Whiteout => {
                    merge.whiteout(entry.path.clone());
                    return Ok(());
                }
                EntryKind::Opaque => {
                    merge.opaque(entry.path.clone());
                    return Ok(());
                }
                EntryKind::Dir => Present::Dir,
                _ => Present::Other,
            };
            if merge.entry(entry.path.clone(), kind) {
                writer.append(entry, data)?;
            }
            Ok(())
        })?;
        merge.end_layer();
    }
    bar.finish();
    let (_, out) = writer.finish()?;
    Ok(out)
}
