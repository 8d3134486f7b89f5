//! Runtimes: ArcGIS Notebook Server's record (an image plus per-container limits and a
//! library manifest), validated field by field. Bad input names the field and stores nothing.
//!
//! | file | its job |
//! | --- | --- |
//! | `record.rs` | [`Runtime`], the record as stored and shown; memory [`Unit`]s |
//! | `input.rs` | [`RuntimeInput`], the body of register and update (partial updates too), and its validation into a [`RuntimeSpec`] |
//! | `fields.rs` | how one input field is read ([`Given`]), and the deserializer error that names it |
//! | `manifest.rs` | library manifests: parsed from uploads, read from the image, compared |
//! | `engine.rs` | the image and the Docker runtime a runtime needs, looked up in the store and the engine |
//! | `repo.rs` | the runtimes table (SQL only) |
//! | `factory.rs` | "Restore Factory Runtimes": the stock stacks with their images' `[runtime]` defaults |
//!
//! This file holds the operations that take more than one of them: [`register`] and
//! [`update`] (validate, check against the engine, find the manifest, store).

pub mod engine;
pub mod factory;
pub mod fields;
pub mod input;
pub mod manifest;
pub mod record;
pub mod repo;

pub use factory::{restore_factory, RestoreReport, FACTORY};
pub use fields::Given;
pub use input::{normalize_image_id, RuntimeInput, RuntimeSpec};
pub use manifest::{parse_manifest, ManifestDiff};
pub use record::{is_gpu_docker_runtime, Runtime, Unit, GPU_DOCKER_RUNTIME, MAX_GPUS};

use crate::backend::Limits;
use crate::error::Result;
use crate::Site;

/// Register a runtime: refused (409, naming the field) when the site's backend cannot
/// enforce its limits, 400 when they are past what the engine can give. Fields the input
/// leaves out come from the image's `[runtime]` defaults label. The manifest comes from the
/// input, else from the image (see [`manifest::from_image`]). The image is pinned in the
/// store ([`engine::pin`]); with `preloadImage`, put where sessions run now. How its sessions
/// are reached over HTTP is read off the image too ([`factory::label_http`]).
pub async fn register(site: &Site, input: &RuntimeInput, builtin: bool) -> Result<Runtime> {
    let labels = image_labels_of(site, input).await?;
    let input = input.clone().or_defaults(factory::label_input(&labels)?);
    let http = factory::label_http(&labels)?;
    let mut spec = input.validate()?;
    site.backend.refuse(&Limits::of_spec(&spec))?;
    engine::check(site, &spec).await?;
    engine::check_capacity(site, &spec).await?;
    if spec.manifest.is_none() {
        spec.manifest = manifest::from_image(site, &spec.image_id).await?;
    }
    let id = repo::insert(&site.db, &spec, builtin)?;
    repo::set_http(&site.db, &id, &http)?;
    let rt = repo::get(&site.db, &id)?;
    if let Err(e) = after_store(site, &rt, &input).await {
        // Nothing half-done stays: the record goes with its pin.
        repo::delete(&site.db, &id)?;
        engine::unpin(site, &id)?;
        return Err(e);
    }
    Ok(rt)
}

/// The labels of the input's image (none when the input names no image, or an image ID
/// that is not one: validation names that).
async fn image_labels_of(
    site: &Site,
    input: &RuntimeInput,
) -> Result<std::collections::BTreeMap<String, String>> {
    let Some(Ok(image_id)) = input
        .image_id
        .get("imageId")
        .ok()
        .flatten()
        .map(|s| normalize_image_id(s))
    else {
        return Ok(Default::default());
    };
    engine::image_labels(site, &image_id).await
}

/// What follows a stored registration or update: the image pinned, and preloaded if asked.
async fn after_store(site: &Site, rt: &Runtime, input: &RuntimeInput) -> Result<()> {
    engine::pin(site, rt)?;
    if input.preload_image.get("preloadImage")? == Some(&true) {
        engine::preload(site, rt).await?;
    }
    Ok(())
}

/// Update the runtime `current` with `patch`: the given fields replace the stored ones (see
/// [`RuntimeInput::applied_to`]), the result is validated as a whole. A new image brings the
/// GPU count of its `[runtime]` label, unless the patch gives `gpus` (see
/// [`RuntimeInput::with_image_gpus`]). Applies to sessions started afterwards (running ones
/// keep their limits).
pub async fn update(site: &Site, current: &Runtime, patch: &RuntimeInput) -> Result<Runtime> {
    let input = patch.applied_to(current);
    let mut spec = input.validate()?;
    let image_changed = spec.image_id != current.image_id;
    let labels = engine::image_labels(site, &spec.image_id).await?;
    if image_changed {
        // A new image brings its GPU count, as it brought it at registration.
        let gpus = factory::label_gpus(&labels)?;
        spec = input
            .with_image_gpus(patch.gpus.is_given(), gpus)
            .validate()?;
    }
    site.backend.refuse(&Limits::of_spec(&spec))?;
    if image_changed || spec.docker_runtime != current.docker_runtime {
        engine::check(site, &spec).await?;
    }
    if Limits::of_spec(&spec) != Limits::of_runtime(current) {
        engine::check_capacity(site, &spec).await?;
    }
    // A new image brings its own libraries: the given manifest, else the image's, else none
    // (the old image's list would be wrong).
    let replace_manifest = spec.manifest.is_some() || image_changed;
    if spec.manifest.is_none() && image_changed {
        spec.manifest = manifest::from_image(site, &spec.image_id).await?;
    }
    // Read again on every update: a runtime registered before the site kept it gets it.
    let http = factory::label_http(&labels)?;
    repo::update(&site.db, &current.id, &spec, replace_manifest)?;
    repo::set_http(&site.db, &current.id, &http)?;
    let rt = repo::get(&site.db, &current.id)?;
    after_store(site, &rt, patch).await?;
    Ok(rt)
}

/// Unregister a runtime (refused while notebooks or sessions use it) and drop its pin.
pub fn unregister(site: &Site, id: &str) -> Result<()> {
    repo::delete(&site.db, id)?;
    engine::unpin(site, id)
}
