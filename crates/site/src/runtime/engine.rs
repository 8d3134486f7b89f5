//! What a runtime needs from the world outside its record: its image in the store or the
//! Docker engine (pinned in the store while registered), its Docker runtime (`nvidia`) known
//! to the engine, limits the engine can give.

use std::collections::BTreeMap;

use super::input::RuntimeSpec;
use super::record::Runtime;
use crate::error::{Result, SiteError};
use crate::Site;

/// The store pin ([`nbrt_oci::Pin`]) that keeps a runtime's image: one per runtime of a site.
fn pin_key(site: &Site, runtime_id: &str) -> String {
    format!("site-{}-runtime-{runtime_id}", site.site_id)
}

/// Pin the runtime's image in the store, so `nbrt gc` keeps it whatever becomes of its
/// names and `nbrt rm` names the runtime; replaces the runtime's earlier pin. A runtime
/// whose image only the engine holds has nothing to pin (and keeps no pin). Whether it is
/// pinned.
pub fn pin(site: &Site, rt: &Runtime) -> Result<bool> {
    let Some(store) = site.open_store()? else {
        return Ok(false);
    };
    let images = store.list_with_pinned()?;
    pin_in(site, &store, &images, rt)
}

/// [`pin`] with the store's images listed once (see [`nbrt_oci::Store::resolve_among`]).
fn pin_in(
    site: &Site,
    store: &nbrt_oci::Store,
    images: &[nbrt_oci::StoredImage],
    rt: &Runtime,
) -> Result<bool> {
    let key = pin_key(site, &rt.id);
    match nbrt_oci::Store::resolve_among(images, &rt.image_id) {
        Ok(found) => {
            let holder = format!(
                "runtime {:?} of the site at {}",
                rt.name,
                site.config.database.display()
            );
            store.pin(&key, &found.image, &holder)?;
            Ok(true)
        }
        Err(nbrt_oci::OciError::NotFound(_)) => {
            store.unpin(&key)?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Drop an unregistered runtime's pin.
pub fn unpin(site: &Site, runtime_id: &str) -> Result<()> {
    if let Some(store) = site.open_store()? {
        store.unpin(&pin_key(site, runtime_id))?;
    }
    Ok(())
}

/// Pin every registered runtime's image (when the site starts: runtimes registered before
/// pins, pins removed by hand). How many are pinned.
pub fn pin_all(site: &Site) -> Result<usize> {
    let Some(store) = site.open_store()? else {
        return Ok(0);
    };
    let images = store.list_with_pinned()?;
    let mut n = 0;
    for rt in super::repo::list(&site.db)? {
        if pin_in(site, &store, &images, &rt)? {
            n += 1;
        }
    }
    Ok(n)
}

/// Put the runtime's image where sessions run (registration's `preloadImage`).
pub async fn preload(site: &Site, rt: &Runtime) -> Result<()> {
    let store = site.open_store()?;
    site.backend
        .ensure_image(store.as_ref(), rt, &nbrt_oci::Progress::hidden())
        .await?;
    Ok(())
}

/// The image's config labels: the store's image, else the engine's; none when neither
/// has it (registration then says so).
pub async fn image_labels(site: &Site, image_id: &str) -> Result<BTreeMap<String, String>> {
    if let Some(store) = site.open_store()? {
        match store.resolve(image_id) {
            Ok(found) => return Ok(found.image.labels()),
            Err(nbrt_oci::OciError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !site.has_docker_engine() {
        return Ok(BTreeMap::new());
    }
    let engine = nbrt_oci::Engine::from_client(site.docker.clone());
    match engine.image(image_id).await {
        Ok(Some(found)) if found.id == image_id => Ok(found.labels),
        Ok(_) => Ok(BTreeMap::new()),
        Err(e) => Err(SiteError::engine(e)),
    }
}

/// The limits fit what the backend's engine can give one session (its CPUs and memory; a
/// cluster's largest node's): a 400 naming the field if not.
pub async fn check_capacity(site: &Site, spec: &RuntimeSpec) -> Result<()> {
    let cap = site.backend.capacity().await?;
    let whose = match site.backend.kind() {
        crate::BackendKind::Docker => "the Docker engine has",
        _ => "the largest node has",
    };
    if cap.cpus > 0.0 && spec.max_cpu > cap.cpus {
        return Err(SiteError::invalid(
            "maxCpu",
            format!(
                "{} cores is more than a session can get here: {whose} {} CPUs",
                spec.max_cpu, cap.cpus
            ),
        ));
    }
    let gib = |b: i64| b as f64 / (1024.0 * 1024.0 * 1024.0);
    let memory = spec.max_memory_unit.bytes(spec.max_memory);
    if cap.memory > 0 && memory > cap.memory {
        return Err(SiteError::invalid(
            "maxMemory",
            format!(
                "{} {} is more than a session can get here: {whose} {:.1} GiB of memory",
                spec.max_memory,
                spec.max_memory_unit.as_str(),
                gib(cap.memory)
            ),
        ));
    }
    if let Some((v, u)) = spec.shared_memory {
        if cap.memory > 0 && u.bytes(v) > cap.memory {
            return Err(SiteError::invalid(
                "sharedMemory",
                format!(
                    "{v} {} is more than a session can get here: {whose} {:.1} GiB of memory",
                    u.as_str(),
                    gib(cap.memory)
                ),
            ));
        }
    }
    Ok(())
}

/// Where the image is: the store (its config digest is the image ID), the engine, or neither.
pub async fn image_exists(site: &Site, image_id: &str) -> Result<bool> {
    if site.store_has_image(image_id)? {
        return Ok(true);
    }
    if !site.has_docker_engine() {
        return Ok(false);
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
    if spec.warm_pool > 0 {
        if let Some(why) = crate::sessions::pool::refusal(site) {
            return Err(SiteError::conflict(Some("warmPool"), why));
        }
    }
    if !image_exists(site, &spec.image_id).await? {
        return Err(SiteError::invalid(
            "imageId",
            format!(
                "no image {} in the store or the Docker engine (build, pull or load it first)",
                spec.image_id
            ),
        ));
    }
    // On a cluster the Docker runtime names a RuntimeClass, which nodes define.
    if let (Some(rt), true) = (&spec.docker_runtime, site.has_docker_engine()) {
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
