//! Where a runtime's library manifest comes from when none is uploaded: the image itself,
//! read without running it by nbrt-inspect (conda and Python packages as `conda list --json`
//! records, what ArcGIS's manifest lists).

use serde_json::Value;

use crate::error::{Result, SiteError};
use crate::Site;

/// The library records of the image `image_id` when the store holds it; `None` when only
/// the engine has it (nothing to read layers from). This is the one place the site asks
/// for an image's manifest.
pub async fn from_image(site: &Site, image_id: &str) -> Result<Option<Vec<Value>>> {
    if !site.store_has_image(image_id)? {
        return Ok(None);
    }
    let root = site.store_root()?;
    let image_id = image_id.to_string();
    tokio::task::spawn_blocking(move || -> Result<Option<Vec<Value>>> {
        let store = nbrt_oci::Store::open(&root)?;
        let image = store.resolve(&image_id)?.image;
        let (_view, packages) =
            nbrt_inspect::read_image(&store, &image, &nbrt_oci::Progress::hidden()).map_err(
                |e| SiteError::Internal(format!("reading the packages of {image_id}: {e}")),
            )?;
        let sel = nbrt_inspect::manifest::Selection {
            conda: true,
            pypi: true,
            debian: false,
        };
        let kept: Vec<_> = packages.into_iter().filter(|p| sel.keeps(p)).collect();
        let records = nbrt_inspect::manifest::records(&kept, sel);
        let value = serde_json::to_value(records)
            .map_err(|e| SiteError::Internal(format!("manifest of {image_id}: {e}")))?;
        match value {
            Value::Array(a) => Ok(Some(a)),
            _ => Ok(None),
        }
    })
    .await
    .map_err(|e| SiteError::Internal(format!("manifest task: {e}")))?
}
