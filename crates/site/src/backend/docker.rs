//! Sessions on one Docker engine: a container per session with the runtime's limits, a named
//! volume per user for the home, the engine's `oom`/`die` events.
//!
//! Containers and home volumes carry `nbrt_oci::label`'s keys ([`label::SITE`],
//! [`label::SESSION`], [`label::SESSION_USER`], [`label::SESSION_RUNTIME`]) under their
//! `io.nbrt.` names; containers an earlier version started carry the `org.nbrt.` names and
//! are still found (every engine filter looks for both) and read ([`label::Key::get`]).

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerMemoryStats, DeviceRequest, HostConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions,
    StatsOptions,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use nbrt_oci::label;

use super::{
    channel_stream, is_404, runtime_image_name, status_of, BackendEvent, BackendKind, Capacity,
    Ended, Handle, HomeRef, ImageProgress, ImageRef, Limits, Observed, Owned, SessionBackend,
    SessionSpec, Usage, UsageReport,
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
    /// The last reading of each measured container (CPU use is the change between two).
    meter: CpuMeter,
}

impl DockerBackend {
    pub fn new(docker: Docker, network: Option<String>, local: bool) -> DockerBackend {
        DockerBackend {
            docker,
            network,
            local,
            meter: CpuMeter::default(),
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
/// token, the home volume — and nothing from the server's own environment. A GPU runtime's
/// container runs its Docker runtime (`nvidia`) and gets its GPU count ([`super::session_gpus`])
/// as a device request ([`gpu_request`]), as `docker run --gpus N` asks; with a count of 0,
/// no request and [`super::NO_GPUS_ENV`].
pub fn container_spec(spec: &SessionSpec, network: &str) -> ContainerCreateBody {
    let rt = &spec.runtime;
    let gpus = super::session_gpus(rt, None);
    let mut env = spec.env();
    if gpus == Some(0) {
        let (k, v) = super::NO_GPUS_ENV;
        env.push(format!("{k}={v}"));
    }
    // A runtime that requires the advanced privilege may use sudo/setuid inside (only users
    // holding the privilege get here); every other session runs with no-new-privileges.
    let security_opt = if rt.requires_advanced_privileges {
        None
    } else {
        Some(vec!["no-new-privileges:true".to_string()])
    };
    ContainerCreateBody {
        image: Some(spec.image.0.clone()),
        env: Some(env),
        labels: Some(spec.labels()),
        host_config: Some(HostConfig {
            nano_cpus: Some(rt.nano_cpus()),
            memory: Some(rt.memory_bytes()),
            memory_swap: Some(rt.swap_bytes()),
            shm_size: rt.shm_bytes(),
            runtime: rt.docker_runtime.clone(),
            device_requests: gpus.filter(|n| *n > 0).map(|n| vec![gpu_request(n)]),
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

/// The engine's device driver for NVIDIA GPUs (present where NVIDIA's container toolkit is).
pub const GPU_DEVICE_DRIVER: &str = "nvidia";

/// `n` GPUs from the engine's `nvidia` device driver (`docker run --gpus N`): the engine shows
/// the container the GPUs numbered 0 to n − 1 (`NVIDIA_VISIBLE_DEVICES=0,1,…`). It does not
/// share GPUs out between containers: every session of the runtime gets the same ones.
pub fn gpu_request(n: u32) -> DeviceRequest {
    DeviceRequest {
        driver: Some(GPU_DEVICE_DRIVER.to_string()),
        count: Some(i64::from(n)),
        device_ids: None,
        capabilities: Some(vec![vec!["gpu".to_string()]]),
        options: None,
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

impl DockerBackend {
    /// The container's last lines of output, for the message of a session that ended
    /// ([`super::last_output`]).
    async fn last_output(&self, container: &str) -> String {
        super::last_output(&self.engine().logs(container, super::LAST_LINES).await)
    }
}

/// One reading of a container's counters: the stats API's one-shot answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Reading {
    /// The container's CPU time, ns.
    pub cpu_total: u64,
    /// The host's CPU time, ns (the engine's `system_cpu_usage`).
    pub system: u64,
    pub online_cpus: u32,
    pub memory: i64,
    pub memory_limit: Option<i64>,
    pub at: std::time::Instant,
}

/// Past this, a container's last reading is too old to tell what it uses now.
const READING_FRESH: Duration = Duration::from_secs(30);
/// The interval between the two readings taken when there is no fresh one.
const READING_INTERVAL: Duration = Duration::from_millis(500);

/// Container → its last reading. The one-shot stats API gives no previous reading (its
/// `precpu_stats` is empty), so CPU use is measured between this reading and the last one
/// (a UI refreshing every second gets the last second's), or between two taken
/// [`READING_INTERVAL`] apart when there is no fresh one. Shared by the Swarm backend, which
/// reads its nodes' engines.
#[derive(Default)]
pub(crate) struct CpuMeter(std::sync::Mutex<HashMap<String, Reading>>);

impl CpuMeter {
    /// What `container` on `docker` uses now.
    pub(crate) async fn usage(&self, docker: &Docker, container: &str) -> Result<UsageReport> {
        let not_running = || UsageReport::NotAvailable("the container is not running".into());
        let Some(now) = read_stats(docker, container).await? else {
            return Ok(not_running());
        };
        let last = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(container)
            .copied()
            .filter(|r| r.at.elapsed() < READING_FRESH && now.system > r.system);
        let (before, now) = match last {
            Some(last) => (last, now),
            None => {
                tokio::time::sleep(READING_INTERVAL).await;
                let Some(next) = read_stats(docker, container).await? else {
                    return Ok(not_running());
                };
                (now, next)
            }
        };
        {
            let mut readings = self.0.lock().unwrap_or_else(|p| p.into_inner());
            readings.retain(|_, r| r.at.elapsed() < READING_FRESH);
            readings.insert(container.to_string(), now);
        }
        Ok(UsageReport::Now(Usage {
            cpu: cpu_cores(&before, &now),
            memory: now.memory,
            memory_limit: now.memory_limit,
        }))
    }
}

/// One reading of `container`'s counters; `None` when it is gone or not running (the
/// engine then answers with no memory figures).
pub(crate) async fn read_stats(docker: &Docker, container: &str) -> Result<Option<Reading>> {
    let mut stats = docker.stats(
        container,
        Some(StatsOptions {
            stream: false,
            one_shot: true,
        }),
    );
    let stats = match stats.next().await {
        Some(Ok(s)) => s,
        Some(Err(e)) if is_404(&e) => return Ok(None),
        Some(Err(e)) => return Err(SiteError::engine(e)),
        None => return Ok(None),
    };
    let mem = stats.memory_stats.unwrap_or_default();
    if mem.usage.is_none() {
        return Ok(None);
    }
    let cpu = stats.cpu_stats.unwrap_or_default();
    let usage = cpu.cpu_usage.unwrap_or_default();
    // Engines that give no online CPUs count the per-CPU figures, as `docker stats` does.
    let online_cpus = cpu
        .online_cpus
        .filter(|n| *n > 0)
        .or_else(|| {
            let n = usage.percpu_usage.as_ref()?.len();
            u32::try_from(n).ok().filter(|n| *n > 0)
        })
        .unwrap_or(1);
    Ok(Some(Reading {
        cpu_total: usage.total_usage.unwrap_or(0),
        system: cpu.system_cpu_usage.unwrap_or(0),
        online_cpus,
        memory: memory_used(&mem),
        memory_limit: mem.limit.and_then(|l| i64::try_from(l).ok()),
        at: std::time::Instant::now(),
    }))
}

/// Memory in use as `docker stats` shows it: the usage without the inactive file pages
/// (cgroup v1's `total_inactive_file`, v2's `inactive_file`) when they are below it.
pub(crate) fn memory_used(mem: &ContainerMemoryStats) -> i64 {
    let usage = mem.usage.unwrap_or(0);
    let stats = mem.stats.as_ref();
    let inactive = stats
        .and_then(|s| s.get("total_inactive_file"))
        .or_else(|| stats.and_then(|s| s.get("inactive_file")))
        .copied()
        .filter(|v| *v < usage)
        .unwrap_or(0);
    i64::try_from(usage - inactive).unwrap_or(i64::MAX)
}

/// CPU in use between two readings, in cores: `docker stats`' `(container's CPU time
/// change / the host's) × online CPUs` (its percentage, divided by 100). `None` when the
/// host's time did not move or the container's went back (a restart).
pub(crate) fn cpu_cores(before: &Reading, now: &Reading) -> Option<f64> {
    let cpu = now.cpu_total.checked_sub(before.cpu_total)? as f64;
    let system = now.system.checked_sub(before.system)? as f64;
    if system <= 0.0 {
        return None;
    }
    Some(cpu / system * f64::from(now.online_cpus))
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

    async fn usage(&self, handle: &Handle) -> Result<UsageReport> {
        self.meter.usage(&self.docker, &handle.0).await
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

    fn reading(cpu_total: u64, system: u64) -> Reading {
        Reading {
            cpu_total,
            system,
            online_cpus: 2,
            memory: 0,
            memory_limit: None,
            at: std::time::Instant::now(),
        }
    }

    #[test]
    fn cpu_is_docker_stats_formula() {
        // Half the host's time on 2 CPUs: one core.
        assert_eq!(cpu_cores(&reading(0, 0), &reading(500, 1000)), Some(1.0));
        assert_eq!(cpu_cores(&reading(10, 0), &reading(10, 1000)), Some(0.0));
        assert_eq!(cpu_cores(&reading(10, 5), &reading(20, 5)), None);
        assert_eq!(cpu_cores(&reading(100, 0), &reading(20, 1000)), None);
    }

    #[test]
    fn memory_leaves_out_inactive_files() {
        let mem = |usage, key: &str, v| ContainerMemoryStats {
            usage: Some(usage),
            stats: Some(HashMap::from([(key.to_string(), v)])),
            ..Default::default()
        };
        assert_eq!(memory_used(&mem(100, "total_inactive_file", 30)), 70);
        assert_eq!(memory_used(&mem(100, "inactive_file", 40)), 60);
        assert_eq!(memory_used(&mem(100, "inactive_file", 400)), 100);
        assert_eq!(memory_used(&mem(100, "cache", 40)), 100);
    }

    /// A session of a runtime with Docker runtime `docker_runtime` and GPU count `gpus`.
    fn session(docker_runtime: Option<&str>, gpus: Option<u32>) -> SessionSpec {
        let rt = Runtime {
            name: "cuda".into(),
            docker_runtime: docker_runtime.map(str::to_string),
            use_gpu: crate::runtime::is_gpu_docker_runtime(docker_runtime),
            gpus,
            requires_advanced_privileges: false,
            ..Runtime::sample()
        };
        SessionSpec {
            site_id: "site".into(),
            session_id: "s".into(),
            name: "nbrt-site-ann-r".into(),
            user: "ann".into(),
            image: ImageRef(rt.image_id.clone()),
            runtime: rt,
            token: "t".into(),
            home: HomeRef {
                volume: "nbrt-site-home-ann".into(),
                node: None,
            },
            prefix: "/user/ann/r".into(),
            home_slot: None,
            session_env: Default::default(),
        }
    }

    /// The create body as the engine gets it (its JSON).
    fn create_body(docker_runtime: Option<&str>, gpus: Option<u32>) -> serde_json::Value {
        serde_json::to_value(container_spec(&session(docker_runtime, gpus), "bridge")).unwrap()
    }

    /// The create body of a GPU runtime's container asks for its GPU count; checked on the
    /// body alone — no GPU is used (none exists here) and no container is made.
    #[test]
    fn create_body_asks_for_the_runtimes_gpu_count_without_a_gpu() {
        let body = create_body(Some("nvidia"), Some(2));
        let hc = &body["HostConfig"];
        assert_eq!(hc["Runtime"], "nvidia", "the Docker runtime stays");
        assert_eq!(
            hc["DeviceRequests"],
            serde_json::json!([{"Driver": "nvidia", "Count": 2, "Capabilities": [["gpu"]]}])
        );
        let env = body["Env"].as_array().unwrap();
        assert!(
            !env.iter()
                .any(|e| e.as_str().unwrap().starts_with("NVIDIA_VISIBLE_DEVICES")),
            "{env:?}"
        );
        // No count: the default, one GPU (not every GPU of the host).
        let body = create_body(Some("nvidia"), None);
        assert_eq!(body["HostConfig"]["DeviceRequests"][0]["Count"], 1);
        // Zero: no request, and the nvidia runtime shows the container no GPU.
        let body = create_body(Some("nvidia"), Some(0));
        assert!(body["HostConfig"].get("DeviceRequests").is_none(), "{body}");
        assert_eq!(body["HostConfig"]["Runtime"], "nvidia");
        let env = body["Env"].as_array().unwrap();
        assert!(
            env.contains(&serde_json::json!("NVIDIA_VISIBLE_DEVICES=void")),
            "{env:?}"
        );
        // A runtime that is no GPU runtime asks for none.
        for rt in [None, Some("runsc")] {
            let body = create_body(rt, None);
            assert!(body["HostConfig"].get("DeviceRequests").is_none(), "{body}");
            assert_eq!(
                body["HostConfig"].get("Runtime").cloned(),
                rt.map(Into::into)
            );
        }
    }
}
