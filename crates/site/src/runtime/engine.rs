//! What a runtime needs from the world outside its record: its image in the store or the
//! Docker engine, and its Docker runtime (`nvidia`) known to the engine.

use super::input::RuntimeSpec;
use crate::error::{Result, SiteError};
use crate::Site;

/// Where the image is: the store (its config digest is the image ID), the engine, or neither.
pub async fn image_exists(site: &Site, image_id: &str) -> Result<bool> {
    if site.store_has_image(image_id)? {
        return Ok(true);
    }
    match site.docker.inspect_image(image_id).await {
        Ok(i) => Ok(i.id.as_deref() == Some(image_id)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(SiteError::engine(e)),
    }
}

/// The image exists and the engine has the Docker runtime; a 400 naming the field if not.
pub async fn check(site: &Site, spec: &RuntimeSpec) -> Result<()> {
    if !image_exists(site, &spec.image_id).await? {
        return Err(SiteError::invalid(
            "imageId",
            format!(
                "no image {} in the store or the Docker engine (build, pull or load it first)",
                spec.image_id
            ),
        ));
    }
    if let Some(rt) = &spec.docker_runtime {
        let info = site.docker.info().await.map_err(SiteError::engine)?;
        let known = info.runtimes.unwrap_or_default();
        if !known.contains_key(rt) {
            let mut names: Vec<_> = known.keys().cloned().collect();
            names.sort();
            return Err(SiteError::invalid(
                "dockerRuntime",
                format!(
                    "the Docker engine has no runtime {rt:?} (it has {})",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}
