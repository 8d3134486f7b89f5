//! The local Docker engine, spoken to through its API (bollard). [`Engine`] is the one door:
//! every crate but the site's Docker backend goes through it, with nbrt's own small types
//! for what goes in and comes out.
//!
//! - this module: connecting, the engine's images (looked up, tagged, and [`Engine::ensure`]:
//!   a store image present under its [`engine_name`]);
//! - [`load`]: loading a store image (what `docker load` does), streamed without a temporary
//!   file;
//! - [`container`]: containers (create and start, inspect, logs, processes, exec, wait, stop,
//!   remove), volumes and the bridge network's gateway.

pub mod container;
pub mod load;

use std::collections::BTreeMap;

use bollard::query_parameters::TagImageOptions;
use bollard::Docker;

pub use container::{
    ContainerInfo, ContainerSpec, ExecOutput, NetworkAddress, Process, PublishedPort,
};
pub use load::{load, LoadReport};

use crate::error::{OciError, Result};
use crate::image::Image;
use crate::name::ImageName;
use crate::progress::Progress;
use crate::store::Store;

/// Connect to the engine named by `DOCKER_HOST`, or the local socket, at the highest API
/// version both sides speak; the bare client, for the site's Docker session backend (every
/// other caller uses [`Engine::connect`]).
pub async fn connect() -> Result<Docker> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| OciError::Engine(format!("cannot connect: {e}")))?;
    docker.negotiate_version().await.map_err(|e| {
        OciError::Engine(format!(
            "no answer from the Docker engine ({e}); is dockerd running and DOCKER_HOST right?"
        ))
    })
}

/// How long one whole-image transfer with the engine (a load, a save) may take. The client's
/// own limit (bollard's 120 s for every request) cut off the load of a 6.4 GB image that
/// Docker needed about 120 s to take in (bench/results/scale-pytorch-cuda-*.md); a transfer's
/// time grows with the image, so it gets a bound that only a stuck engine reaches.
pub const TRANSFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

/// The repository a store image without a name gets in the engine.
pub const UNNAMED_REPOSITORY: &str = "nbrt/unnamed";

/// The name a store image has in the Docker engine — the one scheme for every caller (live
/// checks, kernel specs, site sessions): the repository of its first store name (else
/// [`UNNAMED_REPOSITORY`]) and, as the tag, the first 12 hex digits of its manifest digest.
///
/// The tag is exact — it names this image and no other, so a kernel spec or a container
/// that names it never gets a moved `latest` and nothing has to pull — while the repository
/// keeps it recognisable in `docker images` and in the kernel specs that write it.
pub fn engine_name(image: &Image, store_names: &[ImageName]) -> ImageName {
    let repository = store_names
        .first()
        .map(|n| n.repository.clone())
        .unwrap_or_else(|| UNNAMED_REPOSITORY.to_string());
    ImageName {
        repository,
        tag: image.digest().hex()[..12].to_string(),
    }
}

/// The Docker engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

/// An image as the engine knows it.
#[derive(Debug, Clone, Default)]
pub struct EngineImage {
    /// The engine's image ID (the config digest on the classic store, the manifest digest
    /// on the containerd image store).
    pub id: String,
    /// Its `repository:tag` names.
    pub names: Vec<String>,
    /// Its config's environment (`KEY=VALUE`) and labels.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// What [`Engine::ensure`] did.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The reference to create containers from: the engine's image ID.
    pub reference: String,
    /// The name that now points at the image.
    pub name: ImageName,
    /// Whether the image had to be loaded from the store.
    pub loaded: bool,
}

/// Whether the engine answered "no such thing" (HTTP 404).
fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// An engine error, saying what was being done.
fn failed(what: impl std::fmt::Display) -> impl FnOnce(bollard::errors::Error) -> OciError {
    move |e| OciError::Engine(format!("{what}: {e}"))
}

impl Engine {
    /// Connect to the engine named by `DOCKER_HOST`, or the local socket, at the highest API
    /// version both sides speak.
    pub async fn connect() -> Result<Self> {
        Ok(Self {
            docker: connect().await?,
        })
    }

    /// An engine over a client the caller already holds (the site's).
    pub fn from_client(docker: Docker) -> Self {
        Self { docker }
    }

    /// The image `reference` (a name or an ID) names in the engine, if it has one.
    pub async fn image(&self, reference: &str) -> Result<Option<EngineImage>> {
        let info = match self.docker.inspect_image(reference).await {
            Ok(info) => info,
            Err(e) if is_404(&e) => return Ok(None),
            Err(e) => return Err(failed(format!("inspecting the image {reference}"))(e)),
        };
        let config = info.config.unwrap_or_default();
        Ok(Some(EngineImage {
            id: info.id.unwrap_or_default(),
            names: info.repo_tags.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
        }))
    }

    /// The store image `image` in the engine, if the engine has it: the classic store knows
    /// it by its config digest, Docker's containerd image store by its manifest digest.
    pub async fn find(&self, image: &Image) -> Result<Option<EngineImage>> {
        if let Some(found) = self.image(&image.id().to_string()).await? {
            return Ok(Some(found));
        }
        self.image(&image.digest().to_string()).await
    }

    /// Write the engine's image `reference` as a docker archive (what `docker save` writes)
    /// to `path`, streamed; for reading an image the engine has into the store with
    /// [`crate::transfer::import`].
    pub async fn save_to(&self, reference: &str, path: &std::path::Path) -> Result<()> {
        use futures_util::StreamExt;
        use std::io::Write;
        let mut file = std::fs::File::create(path).map_err(|e| OciError::Io {
            context: format!("creating {}", path.display()),
            source: e,
        })?;
        let docker = self.docker.clone().with_timeout(TRANSFER_TIMEOUT);
        let mut stream = docker.export_image(reference);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed(format!("saving the image {reference}")))?;
            file.write_all(&chunk).map_err(|e| OciError::Io {
                context: format!("writing {}", path.display()),
                source: e,
            })?;
        }
        file.sync_all().map_err(|e| OciError::Io {
            context: format!("writing {}", path.display()),
            source: e,
        })
    }

    /// Point `name` at the image `reference` names.
    pub async fn tag(&self, reference: &str, name: &ImageName) -> Result<()> {
        self.docker
            .tag_image(
                reference,
                Some(TagImageOptions {
                    repo: Some(name.repository.clone()),
                    tag: Some(name.tag.clone()),
                }),
            )
            .await
            .map_err(failed(format!("tagging {reference} as {name}")))
    }

    /// Make sure the engine has the store image `image` and that `name` (its
    /// [`engine_name`]) points at it: loaded from `store` only when the engine lacks the
    /// image, tagged when the engine has it under other names only.
    pub async fn ensure(&self, store: &Store, image: &Image, name: &ImageName) -> Result<Ensured> {
        self.ensure_with_progress(store, image, name, &Progress::hidden())
            .await
    }

    /// [`Engine::ensure`], showing the load's progress on `progress`.
    pub async fn ensure_with_progress(
        &self,
        store: &Store,
        image: &Image,
        name: &ImageName,
        progress: &Progress,
    ) -> Result<Ensured> {
        if let Some(found) = self.find(image).await? {
            if !found.names.contains(&name.to_string()) {
                self.tag(&found.id, name).await?;
            }
            return Ok(Ensured {
                reference: found.id,
                name: name.clone(),
                loaded: false,
            });
        }
        let report = self
            .load(
                store.root().to_path_buf(),
                image,
                std::slice::from_ref(name),
                progress,
            )
            .await?;
        Ok(Ensured {
            reference: if report.engine_id.is_empty() {
                name.to_string()
            } else {
                report.engine_id
            },
            name: name.clone(),
            loaded: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Image {
        Image::assemble(Default::default(), Vec::new(), BTreeMap::new()).unwrap()
    }

    #[test]
    fn engine_names_are_the_store_repository_and_the_digest() {
        let image = image();
        let twelve = image.digest().hex()[..12].to_string();
        let named = engine_name(
            &image,
            &[
                ImageName::parse("127.0.0.1:5000/nb/kernel-py:1").unwrap(),
                ImageName::parse("other").unwrap(),
            ],
        );
        assert_eq!(
            named.to_string(),
            format!("127.0.0.1:5000/nb/kernel-py:{twelve}")
        );
        let unnamed = engine_name(&image, &[]);
        assert_eq!(unnamed.to_string(), format!("nbrt/unnamed:{twelve}"));
    }
}
