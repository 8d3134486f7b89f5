//! Where sessions run: one interface ([`SessionBackend`]) with one implementation per engine.
//!
//! The site keeps everything that does not depend on the engine — the database, the proxy,
//! readiness (`<prefix>/api` answering), culling, migrations — in `sessions.rs`; a backend
//! only does what the engine must: put the runtime's image where the engine runs it, make
//! the user's home, launch a session under a deterministic name (idempotently), say what
//! became of it, watch the engine for ends, stop it and list what the site owns after a
//! restart. A backend refuses, with a 409 naming the field, limits it cannot enforce
//! ([`SessionBackend::refuse`]).
//!
//! | module | engine |
//! | --- | --- |
//! | [`docker`] | one Docker engine: a container per session, a named volume per user |
//! | [`swarm`] | a Docker Swarm, through a manager: a service per session, images through the site's registry |
//! | [`kubernetes`] | a Kubernetes cluster: a bare pod per session, a claim per user, images through the site's registry |

pub mod docker;
pub mod home_slot;
pub mod kubernetes;
pub mod swarm;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SiteError};
use crate::runtime::{Runtime, RuntimeSpec};

/// Which engine a site runs its sessions on (`nbrt serve --backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The one Docker engine `DOCKER_HOST` (or the local socket) names.
    #[default]
    Docker,
    /// A Docker Swarm, through one of its managers.
    Swarm,
    /// A Kubernetes cluster, through its API server.
    Kubernetes,
}

impl BackendKind {
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Docker,
        BackendKind::Swarm,
        BackendKind::Kubernetes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Swarm => "swarm",
            BackendKind::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        BackendKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown session backend {s:?} (known: docker, swarm, kubernetes)")
            })
    }
}

/// How a Swarm backend reaches its cluster and registry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwarmConfig {
    /// The site's registry, `host:port`, that every node pulls runtime images from; the site
    /// pushes them there from its store and launches them by digest.
    pub registry: Option<String>,
    /// Plain HTTP to the registry (loopback registries always get it).
    pub registry_insecure: bool,
    /// The overlay network sessions are attached to (created, attachable, when missing).
    pub network: Option<String>,
    /// Placement constraints every session's service gets (`node.labels.nbrt==yes`).
    pub constraints: Vec<String>,
    /// The CPU a session reserves on its node, as a fraction of its limit (0 to 1).
    pub cpu_reservation: Option<f64>,
    /// The nodes' own engines, where the site can reach them: their `oom` events tell an
    /// out-of-memory kill of any process in a session (the manager shows only task exits).
    pub node_engines: Vec<String>,
}

/// How a Kubernetes backend reaches its cluster and what it puts on the objects it makes
/// (`nbrt serve --backend kubernetes`, the `[kubernetes]` table of `--config`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesConfig {
    /// A kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, else the in-cluster
    /// service account).
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context (default: its current one).
    pub context: Option<String>,
    /// The namespace sessions run in (default: the context's, else `default`).
    pub namespace: Option<String>,
    /// The site's registry, `host:port`, that nodes pull runtime images from.
    pub registry: Option<String>,
    /// Plain HTTP to the registry (loopback registries always get it).
    #[serde(default)]
    pub registry_insecure: bool,
    /// The storage class of home claims (default: the cluster's default class).
    pub storage_class: Option<String>,
    /// The size of a new home claim (a Kubernetes quantity; default 10Gi).
    pub home_size: Option<String>,
    /// Labels a node must have to run sessions (`nodeSelector`).
    #[serde(default)]
    pub node_selector: std::collections::BTreeMap<String, String>,
    /// Taints sessions tolerate, as Kubernetes writes them (`key`, `operator`, `value`,
    /// `effect`, `tolerationSeconds`).
    #[serde(default)]
    pub tolerations: Vec<k8s_openapi::api::core::v1::Toleration>,
    /// Secrets (in the namespace) nodes use to pull from the registry.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// A ClusterIP Service per session; the site then reaches sessions by the Service's DNS
    /// name rather than the pod's address.
    #[serde(default)]
    pub service: bool,
    /// The labels of the site's own pod, when it runs in the cluster: the NetworkPolicy
    /// admits them to session ports.
    #[serde(default)]
    pub site_pod_labels: std::collections::BTreeMap<String, String>,
    /// The site's addresses (CIDRs), when it runs outside the cluster: the NetworkPolicy
    /// admits them to session ports.
    #[serde(default)]
    pub site_cidrs: Vec<String>,
    /// The CPU a session requests, as a fraction of its limit (0 to 1; default 0.25).
    pub cpu_request: Option<f64>,
    /// The GPUs a GPU runtime's session gets when the runtime names no count (default 1;
    /// see [`session_gpus`]).
    pub gpus: Option<u32>,
}

/// The limits a runtime asks of the engine, from a registered runtime or one being
/// registered.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub nano_cpus: i64,
    pub memory: i64,
    /// Memory plus swap (`maxSwapMemory`).
    pub memory_swap: i64,
    /// Whether `maxSwapMemory` was given, or derived (twice the memory, Docker's default).
    pub swap_given: bool,
    pub shm: Option<i64>,
    pub docker_runtime: Option<String>,
    /// The runtime's own GPU count (`None`: the backend's default; see [`session_gpus`]).
    pub gpus: Option<u32>,
}

impl Limits {
    pub fn of_runtime(rt: &Runtime) -> Limits {
        Limits {
            nano_cpus: rt.nano_cpus(),
            memory: rt.memory_bytes(),
            memory_swap: rt.swap_bytes(),
            swap_given: rt.swap_given,
            shm: rt.shm_bytes(),
            docker_runtime: rt.docker_runtime.clone(),
            gpus: rt.gpus,
        }
    }

    pub fn of_spec(spec: &RuntimeSpec) -> Limits {
        Limits {
            nano_cpus: (spec.max_cpu * 1e9).round() as i64,
            memory: spec.max_memory_unit.bytes(spec.max_memory),
            memory_swap: spec.max_swap_memory_unit.bytes(spec.max_swap_memory),
            swap_given: spec.swap_given,
            shm: spec.shared_memory.map(|(v, u)| u.bytes(v)),
            docker_runtime: spec.docker_runtime.clone(),
            gpus: spec.gpus,
        }
    }

    /// The GPUs a session with these limits gets (see [`session_gpus`]).
    pub fn session_gpus(&self, site_default: Option<u32>) -> Option<u32> {
        gpus_of(self.docker_runtime.as_deref(), self.gpus, site_default)
    }
}

/// The GPUs a GPU runtime's session gets when neither the runtime nor the site names a count.
pub const DEFAULT_GPUS: u32 = 1;

/// The variable that shows a container of the `nvidia` runtime no GPU. CUDA images set
/// `NVIDIA_VISIBLE_DEVICES=all`, so a GPU runtime's session that is to get no GPU (a count
/// of 0) gets this; a count above 0 sets it to the GPUs given (Docker's device request,
/// Kubernetes' device plugin).
pub const NO_GPUS_ENV: (&str, &str) = ("NVIDIA_VISIBLE_DEVICES", "void");

/// The GPUs a session of `rt` gets: `None` for a runtime that is not a GPU runtime (its
/// Docker runtime is not `nvidia`); else the runtime's own count (`gpus`, from its image's
/// `[runtime]` label or as given), else `site_default` (the Kubernetes backend's `gpus`
/// setting), else [`DEFAULT_GPUS`].
pub fn session_gpus(rt: &Runtime, site_default: Option<u32>) -> Option<u32> {
    gpus_of(rt.docker_runtime.as_deref(), rt.gpus, site_default)
}

fn gpus_of(docker_runtime: Option<&str>, own: Option<u32>, site: Option<u32>) -> Option<u32> {
    crate::runtime::is_gpu_docker_runtime(docker_runtime)
        .then(|| own.or(site).unwrap_or(DEFAULT_GPUS))
}

/// The name a runtime's image carries in the engine that runs its sessions:
/// `nbrt-runtime/<the runtime's name, lower case, runs of other characters as '-'>:<the first
/// 12 hex digits of the image ID>`. A tag naming the runtime, so `docker images` says what the
/// image is for and `docker image prune` (which removes untagged images) leaves it.
pub fn runtime_image_name(runtime_name: &str, image_id: &str) -> nbrt_oci::ImageName {
    let mut slug = String::new();
    for c in runtime_name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(100);
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "runtime" } else { slug };
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    nbrt_oci::ImageName {
        repository: format!("nbrt-runtime/{slug}"),
        tag: hex.chars().take(12).collect(),
    }
}

/// What one session can get at most: the engine's CPUs and memory (for a cluster, its
/// largest node's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    pub cpus: f64,
    pub memory: i64,
}

/// How far a session's image has come on its way to the engine (a load from the store, a
/// push to the site's registry): what [`SessionBackend::ensure_image`] reports on.
pub type ImageProgress = nbrt_oci::Progress;

/// What the engine runs: a Docker image ID, or `repository@sha256:…` in the site's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(pub String);

/// The user's home: a volume, and the node that holds it where volumes are node-local and
/// the user already has one there (Swarm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HomeRef {
    pub volume: String,
    pub node: Option<String>,
}

/// How the engine knows a launched session: a container or service ID, or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle(pub String);

/// Everything a backend needs to launch one session.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub site_id: String,
    pub session_id: String,
    /// The deterministic name (`nbrt-<site>-<user>-<runtime12>`).
    pub name: String,
    pub user: String,
    pub runtime: Runtime,
    pub token: String,
    pub image: ImageRef,
    pub home: HomeRef,
    /// `NB_PREFIX`: `/user/<name>/<runtime>` (a warm session's: `/warm/<session id>`).
    pub prefix: String,
    /// A warm session's home: an empty directory of the site's, bound with slave
    /// propagation, where the user's home is mounted when a user takes the session (see
    /// [`home_slot`]); `home` is then unused.
    pub home_slot: Option<std::path::PathBuf>,
    /// What the site and the runtime give every session: variables (in [`SessionSpec::env`])
    /// and files (written by the backend before the session starts, where it can).
    pub session_env: crate::session_env::SessionEnv,
}

impl SessionSpec {
    /// The notebook server's environment — and nothing from the server's own.
    pub fn env(&self) -> Vec<String> {
        let mut env = vec![
            format!("NB_PREFIX={}", self.prefix),
            format!("JUPYTER_TOKEN={}", self.token),
            format!("JUPYTER_PORT={}", crate::sessions::PORT),
            "NBRT_AUTH=token".to_string(),
        ];
        env.extend(self.session_env.container_env());
        env
    }

    /// The labels of the session's container (or service): site, session, user, runtime.
    pub fn labels(&self) -> std::collections::HashMap<String, String> {
        use nbrt_oci::label;
        std::collections::HashMap::from([
            (label::SITE.name.to_string(), self.site_id.clone()),
            (label::SESSION.name.to_string(), self.session_id.clone()),
            (label::SESSION_USER.name.to_string(), self.user.clone()),
            (
                label::SESSION_RUNTIME.name.to_string(),
                self.runtime.id.clone(),
            ),
        ])
    }
}

/// How a session ended, as the engine tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Killed for going past its memory limit (seen, or inferred where the engine shows no
    /// more: see the backend).
    pub oom: bool,
    /// What happened, for the session's message (`the container exited with code 3`).
    pub message: String,
}

/// What became of a launched session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Not running yet (created, scheduled, pulling), with the engine's reason.
    Pending { reason: String },
    /// Running; `address` (`host:port`) is where the site reaches the notebook server, when
    /// known.
    Running { address: Option<String> },
    /// Not running any more.
    Ended(Ended),
    /// The engine knows no such session.
    Gone,
}

/// An engine event about a session of this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendEvent {
    /// A process in it went past its memory limit.
    Oom { session: String, handle: Handle },
    /// It stopped running (exited, failed, removed).
    Ended { session: String, handle: Handle },
}

/// Something on the engine that carries this site's label.
#[derive(Debug, Clone)]
pub struct Owned {
    pub handle: Handle,
    /// The session label, when it has one.
    pub session: Option<String>,
    /// The engine's word for its state, for the log.
    pub status: String,
}

/// What a running session uses now, as its engine measures it.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// CPU in use, in cores (1.0: one core busy all the time) over the last interval —
    /// `docker stats`' CPU % divided by 100; `None` when the engine gave no interval yet.
    pub cpu: Option<f64>,
    /// Memory in use, in bytes, without the page cache the kernel can take back (what
    /// `docker stats` and `kubectl top` show).
    pub memory: i64,
    /// The memory limit the engine enforces, when it says.
    pub memory_limit: Option<i64>,
}

/// What [`SessionBackend::usage`] can say of a session.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageReport {
    Now(Usage),
    /// The engine cannot say (no metrics API, no engine of the session's node, not
    /// running): why.
    NotAvailable(String),
}

/// How much of an ended session's output its message keeps: its last lines, at most so many
/// bytes of them.
pub const LAST_LINES: usize = 10;
pub const LAST_OUTPUT_BYTES: usize = 1500;

/// The end of a session's output for its message once it ended: `"; last output:\n…"` with
/// its last [`LAST_LINES`] lines (the last [`LAST_OUTPUT_BYTES`] of them, cut at a character
/// boundary), or nothing when it printed nothing. Every backend's message is made here.
pub fn last_output(out: &str) -> String {
    let out = out.trim();
    if out.is_empty() {
        return String::new();
    }
    // The last lines, whatever the engine gave.
    let mut start = 0;
    for (n, (i, _)) in out.rmatch_indices('\n').enumerate() {
        if n + 1 == LAST_LINES {
            start = i + 1;
            break;
        }
    }
    let out = &out[start..];
    // The end matters most: keep the last bytes.
    let mut start = out.len().saturating_sub(LAST_OUTPUT_BYTES);
    while !out.is_char_boundary(start) {
        start += 1;
    }
    format!("; last output:\n{}", &out[start..])
}

/// One engine that runs sessions. Implementations turn the engine's errors into
/// [`SiteError::Engine`] (502) and keep the engine's words in messages.
#[async_trait::async_trait]
pub trait SessionBackend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Refuse a runtime whose limits this engine cannot enforce: a 409 naming the field.
    fn refuse(&self, limits: &Limits) -> Result<()>;

    /// What one session can get at most, as the engine tells it (registration refuses
    /// limits past it, naming the field).
    async fn capacity(&self) -> Result<Capacity>;

    /// Make the runtime's image runnable where sessions run (from `store`, the site's image
    /// store when it has one), tagged [`runtime_image_name`] where the engine keeps images;
    /// what to launch. A load or push reports on `progress`.
    async fn ensure_image(
        &self,
        store: Option<&nbrt_oci::Store>,
        rt: &Runtime,
        progress: &ImageProgress,
    ) -> Result<ImageRef>;

    /// Make (or find) the user's home.
    async fn ensure_home(&self, site_id: &str, user: &str) -> Result<HomeRef>;

    /// Launch a session under `spec.name`, replacing what an ended session left under that
    /// name. An error's message says what failed (`creating the container failed: …`).
    async fn launch(&self, spec: &SessionSpec) -> Result<Handle>;

    /// What became of a launched session.
    async fn observe(&self, handle: &Handle) -> Result<Observed>;

    /// The engine's events for this site's sessions, one stream for the site; it reconnects
    /// by itself and never ends.
    fn watch(&self, site_id: &str) -> BoxStream<'static, BackendEvent>;

    /// Stop a session and remove what ran it (its home stays), waiting up to `grace` for it
    /// to exit. A session the engine no longer knows is stopped.
    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<()>;

    /// Kill a session at once (after an out-of-memory kill of one of its processes); what
    /// ran it may stay until the next [`SessionBackend::stop`] or adoption.
    async fn kill(&self, handle: &Handle) -> Result<()>;

    /// Everything on the engine that carries this site's label.
    async fn list_owned(&self, site_id: &str) -> Result<Vec<Owned>>;

    /// Why this backend cannot run warm pools (sessions started before their user is known,
    /// given the user's home when taken), or `None` when it can.
    fn warm_pool_refusal(&self) -> Option<String> {
        Some(format!(
            "warm pools run on the docker backend only: the {} backend cannot give a started \
             session a user's home",
            self.kind()
        ))
    }

    /// Give the started warm session behind `handle` (launched with
    /// [`SessionSpec::home_slot`] = `slot`) the user's `home`.
    async fn attach_home(
        &self,
        _handle: &Handle,
        _slot: &std::path::Path,
        _home: &HomeRef,
    ) -> Result<()> {
        Err(SiteError::Internal(format!(
            "the {} backend has no warm sessions",
            self.kind()
        )))
    }

    /// What a running session uses now (CPU, memory and its limit), as the engine measures
    /// it; [`UsageReport::NotAvailable`] with the reason when it cannot.
    async fn usage(&self, _handle: &Handle) -> Result<UsageReport> {
        Ok(UsageReport::NotAvailable(format!(
            "the {} backend does not measure sessions",
            self.kind()
        )))
    }
}

/// Runtime image ID → what was pushed for it (`repository@sha256:…`): a backend that ships
/// images through the site's registry pushes each once.
pub(crate) type Pushed = tokio::sync::Mutex<std::collections::HashMap<String, String>>;

/// Push the runtime's image from the site's store to `registry` (`host:port`) as
/// `registry/nbrt/<name>:<tag>`, once per image; what to launch, pinned by digest. The
/// backends whose nodes pull (Swarm, Kubernetes) share it.
pub(crate) async fn push_to_registry(
    kind: BackendKind,
    pushed: &Pushed,
    registry: &str,
    insecure: bool,
    store: Option<&nbrt_oci::Store>,
    rt: &Runtime,
    progress: &ImageProgress,
) -> Result<ImageRef> {
    let mut pushed = pushed.lock().await;
    if let Some(r) = pushed.get(&rt.image_id) {
        return Ok(ImageRef(r.clone()));
    }
    let found = match store {
        Some(store) => store.resolve(&rt.image_id).map(|f| Some((store, f))),
        None => Ok(None),
    };
    let (store, found) = match found {
        Ok(Some(found)) => found,
        Ok(None) | Err(nbrt_oci::OciError::NotFound(_)) => {
            return Err(SiteError::conflict(
                Some("runtimeId"),
                format!(
                    "the {kind} backend ships runtime images from the site's image store to \
                     its registry, and the store has no image {}: nbrt pull or nbrt import \
                     it into the store",
                    rt.image_id
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    let name = nbrt_oci::engine::engine_name(&found.image, &found.names);
    let last = name
        .repository
        .rsplit('/')
        .next()
        .unwrap_or("runtime")
        .to_string();
    let repository = format!("{registry}/nbrt/{last}");
    let target = format!("{repository}:{}", name.tag);
    let opts = nbrt_oci::registry::RegistryOptions {
        insecure,
        docker_config: None,
    };
    // The push's future is not `Send` (its blob stream borrows across awaits): it runs on
    // a blocking thread of its own, on this runtime.
    let root = store.root().to_path_buf();
    let image = found.image.clone();
    let to = target.clone();
    let rt_handle = tokio::runtime::Handle::current();
    let progress = progress.clone();
    let pushed_report = tokio::task::spawn_blocking(move || {
        let store = nbrt_oci::Store::open(root)?;
        rt_handle.block_on(nbrt_oci::registry::push(
            &store, &image, &to, &opts, &progress,
        ))
    })
    .await
    .map_err(|e| SiteError::Internal(format!("pushing {}: {e}", rt.image_id)))?;
    let report = pushed_report
        .map_err(|e| SiteError::Engine(format!("pushing {} to {target}: {e}", rt.image_id)))?;
    let pinned = format!("{repository}@{}", report.manifest_digest);
    tracing::info!(
        "{kind}: {} is {pinned} ({} blob(s) uploaded)",
        rt.image_id,
        report.uploaded.len()
    );
    pushed.insert(rt.image_id.clone(), pinned.clone());
    Ok(ImageRef(pinned))
}

/// Connect to a Docker engine: `address` (`unix:///path`, `tcp://host:port`), else
/// `DOCKER_HOST` or the local socket.
pub async fn connect_engine(address: Option<&str>) -> Result<bollard::Docker> {
    let Some(addr) = address else {
        return nbrt_oci::engine::connect()
            .await
            .map_err(|e| SiteError::Engine(e.to_string()));
    };
    let docker = if let Some(path) = addr.strip_prefix("unix://") {
        bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
    } else if addr.starts_with("tcp://") || addr.starts_with("http://") {
        bollard::Docker::connect_with_http(addr, 120, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(SiteError::invalid(
            "engine",
            format!("{addr:?} is not an engine address: give unix:///path or tcp://host:port"),
        ));
    };
    let docker = docker.map_err(|e| SiteError::Engine(format!("cannot connect to {addr}: {e}")))?;
    docker.negotiate_version().await.map_err(|e| {
        SiteError::Engine(format!(
            "no answer from the Docker engine at {addr} ({e}); is it running?"
        ))
    })
}

/// Whether a bollard error is the engine's 404.
pub(crate) fn is_404(e: &bollard::errors::Error) -> bool {
    status_of(e) == Some(404)
}

pub(crate) fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A stream fed by a task: what [`SessionBackend::watch`] returns.
pub(crate) fn channel_stream(
    rx: tokio::sync::mpsc::Receiver<BackendEvent>,
) -> BoxStream<'static, BackendEvent> {
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (ev, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        for k in BackendKind::ALL {
            assert_eq!(k.as_str().parse::<BackendKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        let err = "nomad".parse::<BackendKind>().unwrap_err();
        assert!(err.contains("docker, swarm, kubernetes"), "{err}");
    }

    #[test]
    fn last_output_keeps_the_last_lines_and_bytes() {
        assert_eq!(last_output("  \n "), "");
        assert_eq!(last_output("one\ntwo\n"), "; last output:\none\ntwo");
        let many: Vec<String> = (1..=25).map(|i| format!("line {i}")).collect();
        let kept = last_output(&many.join("\n"));
        let want: Vec<&str> = many[15..].iter().map(String::as_str).collect();
        assert_eq!(kept, format!("; last output:\n{}", want.join("\n")));
        // Long lines: the last bytes, cut at a character boundary.
        let long = "é".repeat(2000);
        let kept = last_output(&long);
        let body = kept.strip_prefix("; last output:\n").unwrap();
        assert!(body.len() <= LAST_OUTPUT_BYTES && body.len() >= LAST_OUTPUT_BYTES - 1);
        assert!(body.chars().all(|c| c == 'é'));
    }

    #[test]
    fn runtime_images_are_tagged_with_the_runtime_name() {
        let id = format!("sha256:{}", "ab".repeat(32));
        let name = runtime_image_name("nbrt SciPy (GPU) 3.1", &id);
        assert_eq!(
            name.to_string(),
            "nbrt-runtime/nbrt-scipy-gpu-3-1:abababababab"
        );
        // A valid Docker reference whatever the name.
        assert!(nbrt_oci::ImageName::parse(&name.to_string()).is_ok());
        assert_eq!(
            runtime_image_name("!!!", &id).repository,
            "nbrt-runtime/runtime"
        );
    }
}
