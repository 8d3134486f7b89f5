//! A plain root file system tar (what `mmdebstrap`, `debootstrap | tar` or `docker export`
//! produce) turned into a one-layer image, deterministically: entries keep their order and
//! metadata, mtimes are clamped to `SOURCE_DATE_EPOCH` when set, and the creation time is
//! `SOURCE_DATE_EPOCH` or else the newest mtime in the tar, never the clock.

use std::collections::BTreeMap;
use std::io::Read;

use crate::error::Result;
use crate::image::Image;
use crate::layer::budget::Budget;
use crate::layer::compression::Compression;
use crate::layer::reader::read_layer;
use crate::layer::writer::{LayerInfo, LayerWriter};
use crate::platform::Platform;
use crate::progress::Bar;
use crate::spec::{rfc3339, source_date_epoch, ContainerConfig, History, ImageConfig, RootFs};
use crate::store::Store;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Write the file system in `tar` (uncompressed) into the store as one layer.
/// Returns the layer and the newest mtime seen.
pub fn write_layer(
    store: &Store,
    tar: impl Read,
    compression: Compression,
    bar: &Bar,
) -> Result<(LayerInfo, u64)> {
    write_layer_within(
        store,
        tar,
        compression,
        bar,
        &Budget::new(Default::default()),
    )
}

/// [`write_layer`] within a budget (what the tar may expand to). The tar's entries are
/// written as they are, duplicates too (the layer means what the tar means).
pub fn write_layer_within(
    store: &Store,
    tar: impl Read,
    compression: Compression,
    bar: &Bar,
    budget: &Budget,
) -> Result<(LayerInfo, u64)> {
    let sde = source_date_epoch().map(|s| s.max(0) as u64);
    let mut writer = LayerWriter::new(store.new_blob()?, compression, sde)?;
    let mut newest = 0u64;
    read_layer(bar.wrap_read(tar), Some(budget), |entry, data| {
        newest = newest.max(entry.mtime);
        writer.append(entry, data)
    })?;
    let (info, blob) = writer.finish()?;
    blob.commit()?;
    Ok((info, newest))
}

/// The config of an image made from a root file system: the host platform, a default PATH,
/// and one history entry.
pub fn rootfs_config(layer: &LayerInfo, newest_mtime: u64, source_name: &str) -> ImageConfig {
    let created = rfc3339(source_date_epoch().unwrap_or(newest_mtime as i64));
    let host = Platform::host();
    ImageConfig {
        architecture: host.architecture,
        os: host.os,
        created: Some(created.clone()),
        config: Some(ContainerConfig {
            env: Some(vec![DEFAULT_PATH.to_string()]),
            ..Default::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(created),
            created_by: Some(format!("nbrt import {source_name}")),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Import a root file system tar as a new image (not yet named).
pub fn import(
    store: &Store,
    tar: impl Read,
    source_name: &str,
    compression: Compression,
    bar: &Bar,
) -> Result<Image> {
    import_within(
        store,
        tar,
        source_name,
        compression,
        bar,
        &Budget::new(Default::default()),
    )
}

/// [`import`] within a budget (what the tar may expand to).
pub fn import_within(
    store: &Store,
    tar: impl Read,
    source_name: &str,
    compression: Compression,
    bar: &Bar,
    budget: &Budget,
) -> Result<Image> {
    let (layer, newest) = write_layer_within(store, tar, compression, bar, budget)?;
    let config = rootfs_config(&layer, newest, source_name);
    Image::assemble(config, vec![layer.descriptor()], BTreeMap::new())
}
