//! What is inside an image without running it, and whether it meets a platform's contract.
//!
//! - [`index`]: one pass over a layer records every entry (with a content digest) and keeps
//!   the few small files the rest of the crate reads; cached per layer in the store.
//! - [`view`]: the merged file view of an image (whiteouts honoured by `nbrt_oci`'s one
//!   merge rule), built from those; an `nbrt_oci::FileView`.
//! - [`packages`]: conda, Python and Debian packages found in a view, read by `nbrt_oci`'s
//!   shared readers (the builder's lock reads the same facts with the same rules).
//! - [`manifest`], [`sbom`]: packages as `conda list --json` records, ArcGIS's
//!   `{"libraries": …}`, a table, SPDX and CycloneDX.
//! - [`diff`]: what changes between two images.
//! - [`check`]: platform contracts (kubeflow, docker-stacks, jupyterhub, gateway-kernel,
//!   arcgis), static and live.

pub mod check;
pub mod diff;
pub mod error;
pub mod index;
pub mod manifest;
pub mod packages;
pub mod sbom;
pub mod view;

pub use error::{InspectError, Result};
pub use view::View;

use nbrt_oci::{Image, Progress, Store};

/// The merged view of an image and every package in it.
pub fn read_image(
    store: &Store,
    image: &Image,
    progress: &Progress,
) -> Result<(View, Vec<packages::Package>)> {
    let view = View::open(store, image, progress)?;
    let pkgs = packages::packages(&view);
    Ok((view, pkgs))
}

/// Bumped when the way packages are read from a view changes (a cached list would be stale).
const PACKAGES_VERSION: u32 = 1;

/// Every package of an image, from the per-image cache (`cache/inspect-v4/packages-v<N>-<manifest
/// digest hex>.json`) when present, else read from the layers and cached. The cache is
/// keyed by the manifest digest, which names the exact layers, and by [`PACKAGES_VERSION`].
pub fn image_packages(
    store: &Store,
    image: &Image,
    progress: &Progress,
) -> Result<Vec<packages::Package>> {
    let path = store.cache(nbrt_oci::Bucket::Inspect).join(format!(
        "packages-v{PACKAGES_VERSION}-{}.json",
        image.digest().hex()
    ));
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(pkgs) = serde_json::from_slice(&bytes) {
            return Ok(pkgs);
        }
    }
    let (view, pkgs) = read_image(store, image, progress)?;
    for w in &view.warnings {
        tracing::warn!("{w}");
    }
    if let Ok(bytes) = serde_json::to_vec(&pkgs) {
        let _ = std::fs::create_dir_all(store.cache(nbrt_oci::Bucket::Inspect));
        if let Err(e) = nbrt_oci::fsutil::write_atomic(&store.tmp(), &path, &bytes) {
            tracing::warn!("cannot cache the packages of {}: {e}", image.digest());
        }
    }
    Ok(pkgs)
}
