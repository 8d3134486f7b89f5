//! `nbrt gc`: the store's unused blobs collected, then the builder's caches pruned to what
//! the store's images still use (unpacked layers, pip pieces).

use std::collections::HashSet;

use nbrt_oci::{Digest, Store};
use serde::Serialize;

use crate::error::Result;
use crate::snapshot::{PruneReport, Snapshots};

/// What [`gc`] did.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub blobs: nbrt_oci::store::GcReport,
    /// Unpacked layers; `None` when there are none, or when a build is using them.
    pub snapshots: Option<PruneReport>,
    /// Pip pieces; `None` when there are none, or when a build is using them.
    pub pip_pieces: Option<PruneReport>,
    /// Caches that were kept, and why (blobs are collected all the same).
    pub warnings: Vec<String>,
}

/// Collect the store's unused blobs, then prune the builder's caches.
pub fn gc(store: &Store) -> Result<GcReport> {
    let blobs = store.gc()?;
    let mut live = HashSet::new();
    for stored in store.list()? {
        live.extend(stored.image.diff_ids().iter().cloned());
    }
    let mut warnings = Vec::new();
    let mut pruned = |what: &str, result: Result<Option<PruneReport>>| match result {
        Ok(report) => report,
        Err(e) => {
            warnings.push(format!("{what} kept: {e}"));
            None
        }
    };
    let snapshots = pruned("unpacked layers", prune_snapshots(store, &live));
    let pip_pieces = pruned("pip pieces", crate::steps::pip::prune_pieces(store, &live));
    Ok(GcReport {
        blobs,
        snapshots,
        pip_pieces,
        warnings,
    })
}

/// The unpacked layers (`snapshots/`) of layers no image in the store has any more.
fn prune_snapshots(store: &Store, live: &HashSet<Digest>) -> Result<Option<PruneReport>> {
    if !store.snapshot_root().is_dir() {
        return Ok(None);
    }
    let snapshots = Snapshots::open(store)?;
    snapshots.prune(|d| live.contains(d)).map(Some)
}
