//! Sessions on one Docker engine: a container per session with the runtime's limits, a named
//! volume per user for the home, the engine's `oom`/`die` events.
//!
//! Containers and home volumes carry `nbrt_oci::label`'s keys ([`label::SITE`],
//! [`label::SESSION`], [`label::SESSION_USER`], [`label::SESSION_RUNTIME`]) under their
//! `io.nbrt.` names; containers an earlier version started carry the `org.nbrt.` names and
//! are still found (every engine filter looks for both) and read ([`label::Key::get`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use nbrt_oci::label;

use super::{
    channel_stream, is_404, runtime_image_name, status_of, BackendEvent, BackendKind, Capacity,
    Ended, Handle, HomeRef, ImageProgress, ImageRef, Limits, Observed, Owned, SessionBackend,
    SessionSpec,
};
use crate::error::{Result, SiteError};
use crate::runtime::Runtime;
use crate::sessions::{HOME, PORT};

pub struct DockerBackend {
    pub docker: Docker,
    /// Docker network for session containers (default: the engine's `bridge`).
    pub network: Option<String>,
    /// Whether the engine runs on the site's own host (reached by a local socket): its
    /// volumes are directories here (what warm pools need).
    pub local: bool,
}

impl DockerBackend {
    pub fn new(docker: Docker, network: Option<String>, local: bool) -> DockerBackend {
        DockerBackend {
            docker,
            network,
            local,
        }
    }

    /// The site's Docker engine as `nbrt_oci` speaks to it (the calls it shares with the
    /// checks and the kernel specs).
    fn engine(&self) -> nbrt_oci::Engine {
        nbrt_oci::Engine::from_client(self.docker.clone())
    }

    fn network(&self) -> String {
        self.network.clone().unwrap_or_else(|| "bridge".to_string())
    }

    async fn remove_container(&self, name_or_id: &str) -> Result<()> {
        self.engine().remove(name_or_id).await.map_err(engine_err)
    }

    /// The container a session runs in (see [`container_spec`]).
    pub fn container_spec(&self, spec: &SessionSpec) -> ContainerCreateBody {
        container_spec(spec, &self.network())
    }

    fn address(&self, info: &ContainerInspectResponse) -> Option<String> {
        let net = self.network();
        let nets = info.network_settings.as_ref()?.networks.as_ref()?;
        let ep = nets.get(&net).or_else(|| nets.values().next())?;
        let ip = ep.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
        Some(format!("{ip}:{PORT}"))
    }
}

/// An engine failure is the engine's (502); anything else (the store) is the store's.
fn engine_err(e: nbrt_oci::OciError) -> SiteError {
    match e {
        nbrt_oci::OciError::Engine(m) => SiteError::Engine(m),
        other => SiteError::Store(other),
    }
}

/// The container a session runs in: the runtime's limits, labels, `NB_PREFIX`, the session's
/// token, the home volume — and nothing from the server's own environment.
pub fn container_spec(spec: &SessionSpec, network: &str) -> ContainerCreateBody {
    let rt = &spec.runtime;
    // A runtime that requires the advanced privilege may use sudo/setuid inside (only users
    // holding the privilege get here); every other session runs with no-new-privileges.
    let security_opt = if rt.requires_advanced_privileges {
        None
    } else {
        Some(vec!["no-new-privileges:true".to_string()])
    };
    ContainerCreateBody {
        image: Some(spec.image.0.clone()),
        env: Some(spec.env()),
        labels: Some(spec.labels()),
        host_config: Some(HostConfig {
            nano_cpus: Some(rt.nano_cpus()),
            memory: Some(rt.memory_bytes()),
            memory_swap: Some(rt.swap_bytes()),
            shm_size: rt.shm_bytes(),
            runtime: rt.docker_runtime.clone(),
            binds: Some(vec![match &spec.home_slot {
                Some(slot) => format!("{}:{HOME}:rslave", slot.display()),
                None => format!("{}:{HOME}", spec.home.volume),
            }]),
            security_opt,
            privileged: Some(false),
            network_mode: Some(network.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The engine's label filters for this site's containers, `<key>=<site id>`: one for the
/// site label's name and one for the name earlier versions wrote. Each is its own query —
/// a filter listing two labels wants both on one container.
pub(crate) fn site_label_filters(site_id: &str) -> Vec<String> {
    [Some(label::SITE.name), label::SITE.old]
        .into_iter()
        .flatten()
        .map(|key| format!("{key}={site_id}"))
        .collect()
}

/// How much of a failed container's output its session's message keeps.
const LAST_LINES: usize = 10;
const LAST_OUTPUT_BYTES: usize = 1500;

impl DockerBackend {
    /// The container's last lines of output, for the message of a session that ended:
    /// `"; last output: …"`, or nothing when it printed nothing.
    async fn last_output(&self, container: &str) -> String {
        let engine = nbrt_oci::Engine::from_client(self.docker.clone());
        let out = engine.logs(container, LAST_LINES).await;
        let out = out.trim();
        if out.is_empty() {
            return String::new();
        }
        // The end matters most: keep the last bytes, cut at a character boundary.
        let mut start = out.len().saturating_sub(LAST_OUTPUT_BYTES);
        while !out.is_char_boundary(start) {
            start += 1;
        }
        format!("; last output:\n{}", &out[start..])
    }
}

/// A stopped container's end: OOM-killed, or its exit code and the engine's error.
fn ended(info: &ContainerInspectResponse) -> Ended {
    let state = info.state.as_ref();
    let oom = state.and_then(|s| s.oom_killed).unwrap_or(false);
    let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
    let err = state
        .and_then(|s| s.error.clone())
        .filter(|e| !e.is_empty())
        .map(|e| format!(": {e}"))
        .unwrap_or_default();
    Ended {
        oom,
        message: format!("the container exited with code {code}{err}"),
    }
}

/// An `oom` or `die` event of a container of the site's, as [`follow_events`] hands it on.
pub(crate) struct ContainerEvent<'a> {
    pub action: &'a str,
    pub session: String,
    pub container: String,
    pub attributes: &'a HashMap<String, String>,
}

/// Follow one engine's `oom` and `die` events for the site's containers, sending what `map`
/// makes of them to `tx`, until `tx` closes; reconnects after a second when the stream
/// breaks.
pub(crate) async fn follow_events(
    docker: Docker,
    site_id: String,
    tx: tokio::sync::mpsc::Sender<BackendEvent>,
    map: impl Fn(ContainerEvent<'_>) -> Option<BackendEvent> + Send + 'static,
) {
    let filters = site_label_filters(&site_id);
    loop {
        // One stream per name of the site label (see `site_label_filters`), merged.
        let streams = filters.iter().map(|filter| {
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![filter.clone()]),
                (
                    "event".to_string(),
                    vec!["oom".to_string(), "die".to_string()],
                ),
            ]);
            Box::pin(docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            })))
        });
        let mut events = futures_util::stream::select_all(streams);
        while let Some(ev) = events.next().await {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("engine events: {e}");
                    break;
                }
            };
            let Some(actor) = ev.actor else { continue };
            let Some(container) = actor.id else { continue };
            let attributes = actor.attributes.unwrap_or_default();
            let Some(session) = label::SESSION.get(&attributes).map(str::to_string) else {
                continue;
            };
            let Some(action) = ev.action.as_deref() else {
                continue;
            };
            let Some(event) = map(ContainerEvent {
                action,
                session,
                container,
                attributes: &attributes,
            }) else {
                continue;
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait::async_trait]
impl SessionBackend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    /// The Docker engine enforces every limit a runtime can name.
    fn refuse(&self, _limits: &Limits) -> Result<()> {
        Ok(())
    }

    async fn capacity(&self) -> Result<Capacity> {
        let info = self.docker.info().await.map_err(SiteError::engine)?;
        Ok(Capacity {
            cpus: info.ncpu.unwrap_or(0) as f64,
            memory: info.mem_total.unwrap_or(0),
        })
    }

    /// From the store when it holds the image (loaded only if the engine lacks it), else the
    /// engine's own; either way tagged [`runtime_image_name`].
    async fn ensure_image(
        &self,
        store: Option<&nbrt_oci::Store>,
        rt: &Runtime,
        progress: &ImageProgress,
    ) -> Result<ImageRef> {
        let image_id = &rt.image_id;
        let engine = self.engine();
        let name = runtime_image_name(&rt.name, image_id);
        let in_store = match store {
            Some(store) => store.resolve(image_id).map(|found| (store, found)),
            None => Err(nbrt_oci::OciError::NotFound(image_id.to_string())),
        };
        let (store, found) = match in_store {
            Ok(found) => found,
            Err(e) => {
                let Some(found) = engine.image(image_id).await.map_err(engine_err)? else {
                    return Err(e.into());
                };
                if !found.names.contains(&name.to_string()) {
                    engine.tag(&found.id, &name).await.map_err(engine_err)?;
                }
                return Ok(ImageRef(image_id.clone()));
            }
        };
        let ensured = engine
            .ensure_with_progress(store, &found.image, &name, progress)
            .await
            .map_err(engine_err)?;
        if ensured.loaded {
            tracing::info!("loaded {image_id} from the store into the Docker engine as {name}");
        }
        Ok(ImageRef(image_id.clone()))
    }

    async fn ensure_home(&self, site_id: &str, user: &str) -> Result<HomeRef> {
        let name = format!("nbrt-{site_id}-home-{user}");
        let labels = HashMap::from([
            (label::SITE.name.to_string(), site_id.to_string()),
            (label::SESSION_USER.name.to_string(), user.to_string()),
        ]);
        // Creating an existing named volume is a no-op that returns it.
        self.docker
            .create_volume(bollard::models::VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .map_err(SiteError::engine)?;
        Ok(HomeRef {
            volume: name,
            node: None,
        })
    }

    async fn launch(&self, spec: &SessionSpec) -> Result<Handle> {
        // A container left by an ended session of the same user and runtime.
        self.remove_container(&spec.name).await?;
        if let Some(slot) = &spec.home_slot {
            // The warm session's empty home gets the image's notebook user, as a new home
            // volume gets it from the image.
            let image = self
                .docker
                .inspect_image(&spec.image.0)
                .await
                .map_err(SiteError::engine)?;
            let env = image.config.and_then(|c| c.env).unwrap_or_default();
            let (uid, gid) = super::home_slot::notebook_user(&env);
            super::home_slot::own(slot, uid, gid)?;
        }
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                self.container_spec(spec),
            )
            .await;
        let container_id = match created {
            Ok(c) => c.id,
            Err(e) => {
                return Err(SiteError::Engine(format!(
                    "creating the container failed: {e}"
                )))
            }
        };
        if let Err(e) =
            crate::session_env::write_files(&self.docker, &container_id, &spec.session_env).await
        {
            self.remove_container(&container_id).await.ok();
            return Err(SiteError::Engine(format!(
                "preparing the container failed: {e}"
            )));
        }
        if let Err(e) = self.docker.start_container(&container_id, None).await {
            self.remove_container(&container_id).await.ok();
            return Err(SiteError::Engine(format!(
                "starting the container failed: {e}"
            )));
        }
        Ok(Handle(container_id))
    }

    async fn observe(&self, handle: &Handle) -> Result<Observed> {
        let info = match self.docker.inspect_container(&handle.0, None).await {
            Ok(i) => i,
            Err(e) if is_404(&e) => return Ok(Observed::Gone),
            Err(e) => return Err(SiteError::engine(e)),
        };
        let state = info.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        let oom = state.and_then(|s| s.oom_killed).unwrap_or(false);
        let status = state.and_then(|s| s.status);
        Ok(if running && !oom {
            Observed::Running {
                address: self.address(&info),
            }
        } else if !running
            && matches!(
                status,
                Some(bollard::models::ContainerStateStatusEnum::CREATED)
            )
        {
            Observed::Pending {
                reason: "created".into(),
            }
        } else {
            let mut end = ended(&info);
            if !end.oom {
                end.message.push_str(&self.last_output(&handle.0).await);
            }
            Observed::Ended(end)
        })
    }

    fn watch(&self, site_id: &str) -> BoxStream<'static, BackendEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(follow_events(
            self.docker.clone(),
            site_id.to_string(),
            tx,
            |ev| match ev.action {
                "oom" => Some(BackendEvent::Oom {
                    session: ev.session,
                    handle: Handle(ev.container),
                }),
                "die" => Some(BackendEvent::Ended {
                    session: ev.session,
                    handle: Handle(ev.container),
                }),
                _ => None,
            },
        ));
        channel_stream(rx)
    }

    /// The container is removed at once (its home volume kept), as before the backends.
    async fn stop(&self, handle: &Handle, _grace: Duration) -> Result<()> {
        self.remove_container(&handle.0).await
    }

    async fn kill(&self, handle: &Handle) -> Result<()> {
        match self
            .docker
            .kill_container(
                &handle.0,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(SiteError::engine(e)),
        }
    }

    /// Warm pools need this engine's volumes and the site's slots on one host, and the site
    /// as root there (see [`super::home_slot`]).
    fn warm_pool_refusal(&self) -> Option<String> {
        if !self.local {
            return Some(
                "warm pools need the Docker engine on the site's own host (a local socket): \
                 the site mounts a user's home volume into a started session"
                    .into(),
            );
        }
        super::home_slot::unsupported()
    }

    async fn attach_home(
        &self,
        handle: &Handle,
        slot: &std::path::Path,
        home: &HomeRef,
    ) -> Result<()> {
        let volume = self
            .docker
            .inspect_volume(&home.volume)
            .await
            .map_err(SiteError::engine)?;
        let source = std::path::PathBuf::from(&volume.mountpoint);
        if volume.driver != "local" || !source.is_dir() {
            return Err(SiteError::Engine(format!(
                "the home volume {} ({} driver, at {}) is not a directory on this host",
                home.volume, volume.driver, volume.mountpoint
            )));
        }
        let info = self
            .docker
            .inspect_container(&handle.0, None)
            .await
            .map_err(SiteError::engine)?;
        // The container's own home skeleton, through its PID 1's root.
        let skeleton = info
            .state
            .and_then(|s| s.pid)
            .filter(|pid| *pid > 0)
            .map(|pid| {
                std::path::Path::new(&format!("/proc/{pid}/root"))
                    .join(nbrt_init::env::DEFAULT_HOME_SKEL.trim_start_matches('/'))
            });
        let slot = slot.to_path_buf();
        tokio::task::spawn_blocking(move || {
            super::home_slot::attach(&slot, &source, skeleton.as_deref())
        })
        .await
        .map_err(|e| SiteError::Internal(format!("attaching a home: {e}")))?
    }

    async fn list_owned(&self, site_id: &str) -> Result<Vec<Owned>> {
        let mut owned = Vec::new();
        let mut listed = std::collections::HashSet::new();
        for filter in site_label_filters(site_id) {
            let found = self
                .docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
                    ..Default::default()
                }))
                .await
                .map_err(SiteError::engine)?;
            for c in found {
                let Some(cid) = c.id.clone() else { continue };
                if !listed.insert(cid.clone()) {
                    continue;
                }
                let session = c
                    .labels
                    .as_ref()
                    .and_then(|l| label::SESSION.get(l))
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                owned.push(Owned {
                    handle: Handle(cid),
                    session,
                    status: c.state.map(|s| s.to_string()).unwrap_or_default(),
                });
            }
        }
        Ok(owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_pools_need_the_engine_on_this_host() {
        let client = Docker::connect_with_local_defaults().expect("a client (it connects lazily)");
        let remote = DockerBackend::new(client, None, false);
        let why = remote.warm_pool_refusal().expect("refused");
        assert!(why.contains("on the site's own host"), "{why}");
    }
}
