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
        assert_eq!(names, ["d", "d/y", "t", "t/new"]);
    }
}
