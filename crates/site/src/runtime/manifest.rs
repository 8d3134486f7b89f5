//! A runtime's library manifest (ArcGIS's list of the libraries in the image), in nbrt's one
//! manifest definition ([`Manifest`]: conda and Python packages as `conda list --json`
//! records, Debian packages apart): normalised from what an admin uploads, read from the
//! image itself when none is, and compared between two runtimes for a migration.

use nbrt_inspect::manifest::Manifest;
pub use nbrt_inspect::manifest::ManifestDiff;
use serde_json::Value;

use crate::error::{Result, SiteError};
use crate::Site;

/// The manifest of the image `image_id`, read without running it by nbrt-inspect: the
/// manifest of a runtime registered without one. `None` when only the engine has the image
/// (nothing to read layers from). This is the one place the site asks for an image's
/// manifest.
pub async fn from_image(site: &Site, image_id: &str) -> Result<Option<Manifest>> {
    if !site.store_has_image(image_id)? {
        return Ok(None);
    }
    if let Some(m) = site.image_manifests.get(image_id) {
        return Ok(Some(m));
    }
    let root = site.store_root()?;
    let id = image_id.to_string();
    let manifest = tokio::task::spawn_blocking(move || -> Result<Manifest> {
        let store = nbrt_oci::Store::open(&root)?;
        let image = store.resolve(&id)?.image;
        let (_view, packages) =
            nbrt_inspect::read_image(&store, &image, &nbrt_oci::Progress::hidden())
                .map_err(|e| SiteError::Internal(format!("reading the packages of {id}: {e}")))?;
        Ok(Manifest::of(&packages))
    })
    .await
    .map_err(|e| SiteError::Internal(format!("manifest task: {e}")))??;
    site.image_manifests.put(image_id, &manifest);
    Ok(Some(manifest))
}

/// Manifests read from images, by image ID. An image ID is the digest of the image's
/// config, which names its layers' digests: what the layers hold, and so their manifest,
/// can never change under it. Registering many runtimes of one image (or the factory
/// restore again) reads it once; a few dozen are kept.
#[derive(Default)]
pub struct ImageManifests(std::sync::Mutex<std::collections::HashMap<String, Manifest>>);

/// How many image manifests [`ImageManifests`] keeps (each a few hundred records).
const KEPT_MANIFESTS: usize = 32;

impl ImageManifests {
    fn get(&self, image_id: &str) -> Option<Manifest> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(image_id).cloned()
    }

    fn put(&self, image_id: &str, manifest: &Manifest) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= KEPT_MANIFESTS {
            map.clear();
        }
        map.insert(image_id.to_string(), manifest.clone());
    }
}

/// An uploaded manifest — `conda list --json` (a bare array of records), ArcGIS's
/// `{"libraries": [...]}` or nbrt's own (with `debian`) — normalised to the one definition.
pub fn parse_manifest(v: &Value) -> Result<Manifest> {
    Manifest::normalise(v).map_err(|e| SiteError::invalid("manifest", e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_and_diff() {
        let conda = json!([{"name": "numpy", "version": "1.26.4", "channel": "conda-forge",
                            "base_url": null, "platform": null, "build_number": 0,
                            "build_string": "py311", "dist_name": "numpy-1.26.4-py311"},
                           {"name": "pandas", "version": "2.1.0"}]);
        let a = parse_manifest(&conda).unwrap();
        let b = parse_manifest(&json!({"libraries": [{"name": "numpy", "version": "2.0.0"},
                                                      {"name": "scipy", "version": "1.13"}]}))
        .unwrap();
        let d = serde_json::to_value(a.diff(&b)).unwrap();
        assert_eq!(d["added"][0]["name"], "scipy");
        assert_eq!(d["removed"][0]["name"], "pandas");
        assert_eq!(d["changed"][0]["to"], "2.0.0");
        assert!(parse_manifest(&json!([{"name": "x"}])).is_err());
        assert_eq!(
            parse_manifest(&json!("nope")).unwrap_err().field(),
            Some("manifest")
        );
    }
}
