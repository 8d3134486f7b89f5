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
pub use manifest::{diff_libraries, parse_manifest, LibraryDiff};
pub use record::{Runtime, Unit};

use crate::error::Result;
use crate::Site;

/// Register a runtime. The manifest comes from the input, else from the image (see
/// [`manifest::from_image`]).
pub async fn register(site: &Site, input: &RuntimeInput, builtin: bool) -> Result<Runtime> {
    let mut spec = input.validate()?;
    engine::check(site, &spec).await?;
    if spec.manifest.is_none() {
        spec.manifest = manifest::from_image(site, &spec.image_id).await?;
    }
    let id = repo::insert(&site.db, &spec, builtin)?;
    repo::get(&site.db, &id)
}

/// Update the runtime `current` with `patch`: the given fields replace the stored ones (see
/// [`RuntimeInput::applied_to`]), the result is validated as a whole. Applies to sessions
/// started afterwards (running ones keep their limits).
pub async fn update(site: &Site, current: &Runtime, patch: &RuntimeInput) -> Result<Runtime> {
    let mut spec = patch.applied_to(current).validate()?;
    let image_changed = spec.image_id != current.image_id;
    if image_changed || spec.docker_runtime != current.docker_runtime {
        engine::check(site, &spec).await?;
    }
    // A new image brings its own libraries: the given manifest, else the image's, else none
    // (the old image's list would be wrong).
    let replace_manifest = spec.manifest.is_some() || image_changed;
    if spec.manifest.is_none() && image_changed {
        spec.manifest = manifest::from_image(site, &spec.image_id).await?;
    }
    repo::update(&site.db, &current.id, &spec, replace_manifest)?;
    repo::get(&site.db, &current.id)
}
