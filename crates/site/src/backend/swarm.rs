//! Sessions on a Docker Swarm, through one of its managers — the engine JupyterHub's
//! SwarmSpawner and Gateway Provisioners also drive.
//!
//! - **One service per session**, named like the Docker backend's container: one replica,
//!   restart condition `none` (the site, not the swarm, decides what happens after an exit),
//!   `dnsrr` endpoints (no virtual IP: the ingress routing mesh needs IPVS, which not every
//!   kernel has), port 8888 published in `host` mode on the node that runs it — the site
//!   reaches the notebook server at `<node address>:<published port>`.
//! - **Limits**: CPU and memory limits, reservations (all the memory; a fraction of the CPU,
//!   [`SwarmConfig::cpu_reservation`]), `/dev/shm` as a tmpfs mount of the runtime's size.
//!   Services have no swap setting: a task gets the engine's default, memory + swap = twice
//!   the memory, so a runtime asking for anything else is refused (409 naming
//!   `maxSwapMemory`). A Docker runtime (`nvidia`) cannot be chosen per service on the
//!   engines this was built on: refused (409 naming `dockerRuntime`).
//! - **Images**: every node must run the same bytes, so the runtime's image is pushed from
//!   the site's store to the site's registry and the service names it by digest
//!   (`registry/nbrt/<name>@sha256:…`).
//! - **Homes**: a named volume per user, created by the engine of the node the task lands
//!   on. Volumes are node-local, so once a user's home exists on a node their sessions are
//!   pinned there (`node.id==…`); the pin is a Swarm config object
//!   (`nbrt-<site>-home-<user hash>`, labelled with the node), so it lives in the cluster and
//!   survives the site. A shared volume driver would lift the pin (not done here).
//! - **Session files** (the CA bundle, the conda channels, the site's and the runtime's
//!   files: [`crate::session_env`]): each file is a Swarm config — a secret when it is secret —
//!   named by its content's digest (`nbrt-<site>-file-<24 hex>`, `nbrt-<site>-secret-<24 hex>`),
//!   mounted at its path (owner root, group 100, its mode). The swarm hands them to whichever
//!   node runs the task. The combined CA bundle is the image's own
//!   (`/etc/ssl/certs/ca-certificates.crt`, read from the site's store) followed by the site's.
//!   When a session's service is removed, the site's configs and secrets no service refers to
//!   any more are removed too.
//! - **Ends**: the manager shows a task's state, exit code and error, not the worker's
//!   `OOMKilled`: a task that failed with exit code 137 (SIGKILL) that the site did not kill
//!   is taken for an out-of-memory kill. One poll of the site's services and tasks per
//!   second is the site's event watch (the engine's event stream has no task events).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use bollard::models::{
    ConfigSpec, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, HealthConfig, Limit,
    Mount, MountTmpfsOptions, MountType, NetworkAttachmentConfig, NetworkCreateRequest,
    ResourceObject, SecretSpec, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task,
    TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs, TaskSpecContainerSpecFile,
    TaskSpecContainerSpecFile1, TaskSpecContainerSpecPrivileges, TaskSpecContainerSpecSecrets,
    TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    ListConfigsOptions, ListSecretsOptions, ListServicesOptions, ListTasksOptions, LogsOptions,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use nbrt_oci::label;
use sha2::Digest as _;

use super::{
    channel_stream, is_404, status_of, BackendEvent, BackendKind, Capacity, Ended, Handle, HomeRef,
    ImageRef, Limits, Observed, Owned, SessionBackend, SessionSpec, SwarmConfig, UsageReport,
};
use crate::error::{Result, SiteError};
use crate::runtime::Runtime;
use crate::session_env::SessionEnv;
use crate::sessions::{HOME, PORT};

/// The overlay network sessions join when the configuration names none.
pub const DEFAULT_NETWORK: &str = "nbrt-sessions";
/// The CPU a session reserves, as a fraction of its limit, when the configuration says none.
pub const DEFAULT_CPU_RESERVATION: f64 = 0.25;
/// How long a stopped session's server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the watch lists the site's tasks.
const WATCH_POLL: Duration = Duration::from_secs(1);
/// Labels of nbrt's own on services: the home volume and the node it was pinned to.
const HOME_LABEL: &str = "io.nbrt.home";
const HOME_NODE_LABEL: &str = "io.nbrt.home-node";
/// The label of the configs and secrets that hold session files: their content's SHA-256.
const FILE_LABEL: &str = "io.nbrt.session-file";
/// What a Swarm config or secret holds at most (swarmkit's limit).
pub const MAX_FILE_OBJECT: usize = 500 * 1024;
/// How long an ended task's logs may take to come from its node (a node that left the swarm
/// never answers).
const TASK_LOGS_WAIT: Duration = Duration::from_secs(5);

pub struct SwarmBackend {
    docker: Docker,
    registry: String,
    insecure: bool,
    network: String,
    constraints: Vec<String>,
    cpu_reservation: f64,
    /// Runtime image ID → what was pushed (`repo@digest`), so a start pushes once per image.
    pushed: super::Pushed,
    /// Node ID → its address, as the manager reports it.
    nodes: Mutex<HashMap<String, String>>,
    /// The nodes' engines the site reaches (`oom` events, usage).
    node_engines: Vec<Docker>,
    /// Node ID → the engine of `node_engines` that is that node, once asked.
    node_engine_ids: tokio::sync::Mutex<HashMap<String, Docker>>,
    /// The last readings of session containers on the nodes' engines.
    meter: super::docker::CpuMeter,
    /// The site's image store, as the first [`SessionBackend::ensure_image`] named it: where
    /// an image's own CA bundle is read.
    store_root: Mutex<Option<PathBuf>>,
    /// Runtime image ID → its system CA bundle (`None`: it has none).
    bundles: tokio::sync::Mutex<HashMap<String, Option<Vec<u8>>>>,
    /// Held while session files are made and a service refers to them, and while unused
    /// ones are removed: a removal never takes a file a launch is about to use.
    files_lock: tokio::sync::Mutex<()>,
}

/// One session file as the swarm mounts it (see the module's notes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileObject {
    /// `nbrt-<site>-file-<24 hex of its SHA-256>` (`-secret-` for a secret).
    pub name: String,
    pub path: String,
    pub mode: u32,
    /// Kept as a Swarm secret (encrypted in the swarm's store, never shown by inspect).
    pub secret: bool,
    pub data: Vec<u8>,
    /// The SHA-256 of `data`, hex.
    pub digest: String,
}

/// A session file and the ID of the config or secret that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedFile {
    pub file: FileObject,
    pub id: String,
}

/// The files a session gets (`env`'s, and the CA bundle combined with the image's
/// `system_bundle`) as Swarm objects; a 409 naming `files` for one the swarm cannot hold.
pub fn file_objects(
    site_id: &str,
    env: &SessionEnv,
    system_bundle: Option<&[u8]>,
) -> Result<Vec<FileObject>> {
    let secret: HashSet<&str> = env
        .files
        .iter()
        .filter(|f| f.secret)
        .map(|f| f.path.as_str())
        .collect();
    env.files_to_write(system_bundle)
        .into_iter()
        .map(|(path, data, mode)| {
            if data.len() > MAX_FILE_OBJECT {
                return Err(SiteError::conflict(
                    Some("files"),
                    format!(
                        "{path} is {} bytes: a Swarm config or secret holds at most {} KB; \
                         make it smaller or use the docker backend",
                        data.len(),
                        MAX_FILE_OBJECT / 1024
                    ),
                ));
            }
            let secret = secret.contains(path.as_str());
            let digest = hex::encode(sha2::Sha256::digest(&data));
            let kind = if secret { "secret" } else { "file" };
            Ok(FileObject {
                name: format!("nbrt-{site_id}-{kind}-{}", &digest[..24]),
                path,
                mode,
                secret,
                data,
                digest,
            })
        })
        .collect()
}

impl SwarmBackend {
    /// Check that `docker` is a swarm manager, the configuration complete; make the overlay
    /// network if it is missing.
    pub async fn connect(docker: Docker, cfg: &SwarmConfig) -> Result<SwarmBackend> {
        let registry = cfg.registry.clone().ok_or_else(|| {
            SiteError::invalid(
                "registry",
                "the swarm backend needs the site's registry (--registry HOST:PORT): every node \
                 pulls runtime images from it",
            )
        })?;
        let cpu_reservation = cfg.cpu_reservation.unwrap_or(DEFAULT_CPU_RESERVATION);
        if !(0.0..=1.0).contains(&cpu_reservation) {
            return Err(SiteError::invalid(
                "cpu-reservation",
                format!("{cpu_reservation} is not a fraction between 0 and 1"),
            ));
        }
        if let Err(e) = docker.inspect_swarm().await {
            return Err(SiteError::Engine(format!(
                "the engine is not a swarm manager ({}); point --engine at a manager",
                engine_message(&e)
            )));
        }
        let network = cfg
            .network
            .clone()
            .unwrap_or_else(|| DEFAULT_NETWORK.to_string());
        ensure_network(&docker, &network).await?;
        let mut node_engines = Vec::new();
        for addr in &cfg.node_engines {
            node_engines.push(super::connect_engine(Some(addr)).await?);
        }
        Ok(SwarmBackend {
            docker,
            registry,
            insecure: cfg.registry_insecure,
            network,
            constraints: cfg.constraints.clone(),
            cpu_reservation,
            pushed: Default::default(),
            nodes: Default::default(),
            node_engines,
            node_engine_ids: Default::default(),
            meter: Default::default(),
            store_root: Mutex::new(None),
            bundles: Default::default(),
            files_lock: Default::default(),
        })
    }

    /// The service that runs a session (see the module's notes).
    pub fn service_spec(&self, spec: &SessionSpec, files: &[MountedFile]) -> ServiceSpec {
        service_spec(
            spec,
            files,
            &self.network,
            &self.constraints,
            self.cpu_reservation,
        )
    }

    /// The system CA bundle of a runtime's image, from the site's store (once per image).
    async fn system_bundle(&self, image_id: &str) -> Result<Option<Vec<u8>>> {
        let mut bundles = self.bundles.lock().await;
        if let Some(b) = bundles.get(image_id) {
            return Ok(b.clone());
        }
        let root = self
            .store_root
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(root) = root else {
            return Ok(None);
        };
        let id = image_id.to_string();
        let bundle = tokio::task::spawn_blocking(move || {
            let store = nbrt_oci::Store::open(root)?;
            crate::session_env::system_bundle_in_store(&store, &id)
        })
        .await
        .map_err(|e| SiteError::Internal(format!("reading the CA bundle of {image_id}: {e}")))??;
        bundles.insert(image_id.to_string(), bundle.clone());
        Ok(bundle)
    }

    /// The config (or secret) named `name`, if the swarm has it.
    async fn find_file_object(&self, secret: bool, name: &str) -> Result<Option<String>> {
        let filters = Some(HashMap::from([(
            "name".to_string(),
            vec![name.to_string()],
        )]));
        let found: Vec<(Option<String>, Option<String>)> = if secret {
            let list = self
                .docker
                .list_secrets(Some(ListSecretsOptions { filters }));
            list.await
                .map_err(SiteError::engine)?
                .into_iter()
                .map(|o| (o.id, o.spec.and_then(|s| s.name)))
                .collect()
        } else {
            let list = self
                .docker
                .list_configs(Some(ListConfigsOptions { filters }));
            list.await
                .map_err(SiteError::engine)?
                .into_iter()
                .map(|o| (o.id, o.spec.and_then(|s| s.name)))
                .collect()
        };
        // The engine's name filter matches prefixes too.
        Ok(found
            .into_iter()
            .find(|(_, n)| n.as_deref() == Some(name))
            .and_then(|(id, _)| id))
    }

    /// Make (or find) the configs and secrets of a session's files.
    async fn ensure_files(
        &self,
        site_id: &str,
        files: Vec<FileObject>,
    ) -> Result<Vec<MountedFile>> {
        let mut mounted = Vec::with_capacity(files.len());
        for file in files {
            if let Some(id) = self.find_file_object(file.secret, &file.name).await? {
                mounted.push(MountedFile { file, id });
                continue;
            }
            let labels = Some(HashMap::from([
                (label::SITE.name.to_string(), site_id.to_string()),
                (FILE_LABEL.to_string(), file.digest.clone()),
            ]));
            let data = Some(base64::engine::general_purpose::STANDARD.encode(&file.data));
            let name = Some(file.name.clone());
            let created = if file.secret {
                let spec = SecretSpec {
                    name,
                    labels,
                    data,
                    ..Default::default()
                };
                self.docker.create_secret(spec).await
            } else {
                let spec = ConfigSpec {
                    name,
                    labels,
                    data,
                    ..Default::default()
                };
                self.docker.create_config(spec).await
            };
            let id = match created {
                Ok(r) => r.id,
                // Made meanwhile by another launch of this site.
                Err(e) if status_of(&e) == Some(409) => self
                    .find_file_object(file.secret, &file.name)
                    .await?
                    .ok_or_else(|| SiteError::engine(e))?,
                Err(e) => {
                    return Err(SiteError::Engine(format!(
                        "storing the session file {} in the swarm failed: {}",
                        file.path,
                        engine_message(&e)
                    )))
                }
            };
            mounted.push(MountedFile { file, id });
        }
        Ok(mounted)
    }

    /// Remove the site's session-file configs and secrets that no service of the site refers
    /// to any more.
    async fn remove_unused_files(&self, site_id: &str) -> Result<()> {
        let _files = self.files_lock.lock().await;
        let mut used = HashSet::new();
        for s in site_services(&self.docker, site_id).await? {
            let Some(c) = s.spec.and_then(|s| s.task_template?.container_spec) else {
                continue;
            };
            used.extend(c.configs.into_iter().flatten().filter_map(|r| r.config_id));
            used.extend(c.secrets.into_iter().flatten().filter_map(|r| r.secret_id));
        }
        let filters = Some(HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={site_id}", label::SITE.name),
                FILE_LABEL.to_string(),
            ],
        )]));
        let configs = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: filters.clone(),
            }))
            .await
            .map_err(SiteError::engine)?;
        let secrets = self
            .docker
            .list_secrets(Some(ListSecretsOptions { filters }))
            .await
            .map_err(SiteError::engine)?;
        let unused = configs
            .into_iter()
            .filter_map(|c| c.id)
            .map(|id| (false, id))
            .chain(
                secrets
                    .into_iter()
                    .filter_map(|c| c.id)
                    .map(|id| (true, id)),
            )
            .filter(|(_, id)| !used.contains(id));
        for (secret, id) in unused {
            let removed = if secret {
                self.docker.delete_secret(&id).await
            } else {
                self.docker.delete_config(&id).await
            };
            match removed {
                Ok(()) => {}
                Err(e) if is_404(&e) => {}
                // Still in use by a service of another site or made by hand: kept.
                Err(e) => {
                    tracing::warn!("swarm: keeping session file {id}: {}", engine_message(&e))
                }
            }
        }
        Ok(())
    }

    async fn node_address(&self, node_id: &str) -> Result<Option<String>> {
        if let Some(a) = self
            .nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node_id)
        {
            return Ok(Some(a.clone()));
        }
        let node = match self.docker.inspect_node(node_id).await {
            Ok(n) => n,
            Err(e) if is_404(&e) => return Ok(None),
            Err(e) => return Err(SiteError::engine(e)),
        };
        let Some(addr) = node.status.and_then(|s| s.addr).filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_string(), addr.clone());
        Ok(Some(addr))
    }

    async fn tasks_of(&self, service_ids: &[String]) -> Result<Vec<Task>> {
        if service_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([(
                    "service".to_string(),
                    service_ids.to_vec(),
                )])),
            }))
            .await
            .map_err(SiteError::engine)
    }

    /// The engine of node `node_id`, among the nodes' engines the site reaches (asked which
    /// node each is, again when the node is not among the answers yet).
    async fn node_engine(&self, node_id: &str) -> Option<Docker> {
        let mut known = self.node_engine_ids.lock().await;
        if !known.contains_key(node_id) {
            for engine in &self.node_engines {
                match engine.info().await {
                    Ok(info) => {
                        if let Some(id) = info.swarm.and_then(|s| s.node_id) {
                            known.insert(id, engine.clone());
                        }
                    }
                    Err(e) => tracing::warn!("swarm: a node's engine did not answer: {e}"),
                }
            }
        }
        known.get(node_id).cloned()
    }

    /// The last lines of an ended task's output (from the manager's task logs API), for the
    /// session's message ([`super::last_output`]); nothing when the node does not answer.
    async fn task_output(&self, task_id: &str) -> String {
        let logs = self.docker.task_logs(
            task_id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: super::LAST_LINES.to_string(),
                ..Default::default()
            }),
        );
        let collect = async {
            let mut out = String::new();
            let mut logs = std::pin::pin!(logs);
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut logs).await {
                out.push_str(&chunk.to_string());
            }
            out
        };
        match tokio::time::timeout(TASK_LOGS_WAIT, collect).await {
            Ok(out) => super::last_output(&out),
            Err(_) => {
                tracing::warn!("swarm: the logs of task {task_id} did not come");
                String::new()
            }
        }
    }

    /// Record that `user`'s home lives on `node` (idempotent: the first pin stays).
    async fn pin_home(&self, site_id: &str, user: &str, node: &str) -> Result<()> {
        let spec = ConfigSpec {
            name: Some(home_pin_name(site_id, user)),
            labels: Some(HashMap::from([
                (label::SITE.name.to_string(), site_id.to_string()),
                (label::SESSION_USER.name.to_string(), user.to_string()),
                (HOME_NODE_LABEL.to_string(), node.to_string()),
            ])),
            data: Some(base64::engine::general_purpose::STANDARD.encode(node.as_bytes())),
            ..Default::default()
        };
        match self.docker.create_config(spec).await {
            Ok(_) => {
                tracing::info!("swarm: {user}'s home is on node {node}; their sessions go there");
                Ok(())
            }
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(SiteError::engine(e)),
        }
    }
}

async fn ensure_network(docker: &Docker, name: &str) -> Result<()> {
    match docker
        .inspect_network(
            name,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if is_404(&e) => {}
        Err(e) => return Err(SiteError::engine(e)),
    }
    let created = docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            ..Default::default()
        })
        .await;
    match created {
        Ok(_) => Ok(()),
        // Made by another site meanwhile (a 409, or a 500 "name conflicts" from swarmkit).
        Err(_)
            if docker
                .inspect_network(
                    name,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .is_ok() =>
        {
            Ok(())
        }
        Err(e) => Err(SiteError::Engine(format!(
            "creating the overlay network {name} failed: {}",
            engine_message(&e)
        ))),
    }
}

/// An error's message without bollard's wrapping (`Docker responded with status code 404: `).
fn engine_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The Swarm config that pins a user's home to a node: a name the engine accepts whatever
/// the user name (`nbrt-<site>-home-<12 hex of its SHA-256>`).
pub fn home_pin_name(site_id: &str, user: &str) -> String {
    let h = sha2::Sha256::digest(user.as_bytes());
    format!("nbrt-{site_id}-home-{}", &hex::encode(h)[..12])
}

/// Where a session file is mounted: at its path, owner root, group 100 (the notebook users'),
/// its mode — as the docker backend writes them.
fn file_target(f: &MountedFile) -> TaskSpecContainerSpecFile {
    TaskSpecContainerSpecFile {
        name: Some(f.file.path.clone()),
        uid: Some("0".into()),
        gid: Some("100".into()),
        mode: Some(f.file.mode),
    }
}

/// The service for one session: see the module's notes.
pub fn service_spec(
    spec: &SessionSpec,
    files: &[MountedFile],
    network: &str,
    constraints: &[String],
    cpu_reservation: f64,
) -> ServiceSpec {
    let rt = &spec.runtime;
    let labels = spec.labels();
    let mut service_labels = labels.clone();
    service_labels.insert(HOME_LABEL.to_string(), spec.home.volume.clone());
    if let Some(node) = &spec.home.node {
        service_labels.insert(HOME_NODE_LABEL.to_string(), node.clone());
    }
    let mut mounts = vec![Mount {
        target: Some(HOME.to_string()),
        source: Some(spec.home.volume.clone()),
        typ: Some(MountType::VOLUME),
        volume_options: Some(bollard::models::MountVolumeOptions {
            labels: Some(HashMap::from([
                (label::SITE.name.to_string(), spec.site_id.clone()),
                (label::SESSION_USER.name.to_string(), spec.user.clone()),
            ])),
            ..Default::default()
        }),
        ..Default::default()
    }];
    if let Some(shm) = rt.shm_bytes() {
        mounts.push(Mount {
            target: Some("/dev/shm".to_string()),
            typ: Some(MountType::TMPFS),
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: Some(shm),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut placement = constraints.to_vec();
    if let Some(node) = &spec.home.node {
        placement.push(format!("node.id=={node}"));
    }
    let nano_cpus = rt.nano_cpus();
    let mut configs = Vec::new();
    let mut secrets = Vec::new();
    for f in files {
        let target = file_target(f);
        if f.file.secret {
            secrets.push(TaskSpecContainerSpecSecrets {
                file: Some(target),
                secret_id: Some(f.id.clone()),
                secret_name: Some(f.file.name.clone()),
            });
        } else {
            configs.push(TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: target.name,
                    uid: target.uid,
                    gid: target.gid,
                    mode: target.mode,
                }),
                config_id: Some(f.id.clone()),
                config_name: Some(f.file.name.clone()),
                ..Default::default()
            });
        }
    }
    ServiceSpec {
        name: Some(spec.name.clone()),
        labels: Some(service_labels),
        task_template: Some(TaskSpec {
            container_spec: Some(TaskSpecContainerSpec {
                image: Some(spec.image.0.clone()),
                labels: Some(labels),
                env: Some(spec.env()),
                mounts: Some(mounts),
                // The site's readiness (`<prefix>/api`) stands for the image's HEALTHCHECK:
                // Swarm would hold the task in `starting` until a first healthy check (15 s
                // into the stock images) and kill it when unhealthy (see docs/backends.md).
                health_check: Some(HealthConfig {
                    test: Some(vec!["NONE".to_string()]),
                    ..Default::default()
                }),
                configs: (!configs.is_empty()).then_some(configs),
                secrets: (!secrets.is_empty()).then_some(secrets),
                stop_grace_period: Some(STOP_GRACE.as_nanos() as i64),
                // Engines before swarmkit's 2023 privileges work ignore it (see docs/backends.md).
                privileges: (!rt.requires_advanced_privileges).then(|| {
                    TaskSpecContainerSpecPrivileges {
                        no_new_privileges: Some(true),
                        ..Default::default()
                    }
                }),
                ..Default::default()
            }),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    nano_cpus: Some(nano_cpus),
                    memory_bytes: Some(rt.memory_bytes()),
                    pids: None,
                }),
                reservations: Some(ResourceObject {
                    nano_cpus: Some((nano_cpus as f64 * cpu_reservation).round() as i64),
                    memory_bytes: Some(rt.memory_bytes()),
                    generic_resources: None,
                }),
                ..Default::default()
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                max_attempts: Some(0),
                ..Default::default()
            }),
            placement: (!placement.is_empty()).then(|| TaskSpecPlacement {
                constraints: Some(placement),
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig {
                target: Some(network.to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(PORT)),
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
        }),
        ..Default::default()
    }
}

/// The task that stands for the service: the one meant to run, else the latest.
fn current_task(mut tasks: Vec<Task>) -> Option<Task> {
    tasks.sort_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0));
    let running = tasks
        .iter()
        .rposition(|t| t.desired_state == Some(TaskState::RUNNING));
    match running {
        Some(i) => Some(tasks.swap_remove(i)),
        None => tasks.pop(),
    }
}

/// What a task in a final state says about the session's end.
fn task_end(task: &Task) -> Option<Ended> {
    let status = task.status.as_ref()?;
    let state = status.state?;
    let err = status.err.clone().filter(|e| !e.is_empty());
    let code = status.container_status.as_ref().and_then(|c| c.exit_code);
    let reason = |what: &str| match &err {
        Some(e) => format!("{what}: {e}"),
        None => what.to_string(),
    };
    let ended = match state {
        TaskState::COMPLETE => Ended {
            oom: false,
            message: format!(
                "the container exited with code {}",
                code.unwrap_or_default()
            ),
        },
        TaskState::FAILED => Ended {
            // The manager shows the exit code, not OOMKilled (that is the worker's): a
            // SIGKILL the site did not send is the memory limit's.
            oom: code == Some(137),
            message: reason(&format!(
                "the container exited with code {}",
                code.map_or("unknown".to_string(), |c| c.to_string())
            )),
        },
        TaskState::REJECTED => Ended {
            oom: false,
            message: reason("the node rejected the session's task"),
        },
        TaskState::SHUTDOWN | TaskState::REMOVE => Ended {
            oom: false,
            message: reason("the session's task was shut down"),
        },
        TaskState::ORPHANED => Ended {
            oom: false,
            message: reason("the node running the session left the swarm"),
        },
        _ => return None,
    };
    Some(ended)
}

fn host_port(task: &Task) -> Option<i64> {
    task.status
        .as_ref()?
        .port_status
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.target_port == Some(i64::from(PORT)))?
        .published_port
}

#[async_trait::async_trait]
impl SessionBackend for SwarmBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Swarm
    }

    fn refuse(&self, limits: &Limits) -> Result<()> {
        if limits.memory_swap != limits.memory.saturating_mul(2) {
            return Err(SiteError::conflict(
                Some("maxSwapMemory"),
                "the swarm backend cannot set swap: a Swarm service has no swap setting and its \
                 tasks get the engine's default, memory + swap = twice maxMemory; leave \
                 maxSwapMemory out (or give twice maxMemory), or use the docker backend",
            ));
        }
        if let Some(rt) = &limits.docker_runtime {
            return Err(SiteError::conflict(
                Some("dockerRuntime"),
                format!(
                    "the swarm backend cannot choose the Docker runtime {rt:?}: Swarm services \
                     run the engine's default runtime; use the docker backend for this runtime"
                ),
            ));
        }
        Ok(())
    }

    /// The largest ready node's: a session runs on one node.
    async fn capacity(&self) -> Result<Capacity> {
        let nodes = self
            .docker
            .list_nodes(None::<bollard::query_parameters::ListNodesOptions>)
            .await
            .map_err(SiteError::engine)?;
        let mut cap = Capacity {
            cpus: 0.0,
            memory: 0,
        };
        for node in nodes {
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.state)
                .is_some_and(|s| s == bollard::models::NodeState::READY);
            let Some(res) = node.description.and_then(|d| d.resources) else {
                continue;
            };
            if !ready {
                continue;
            }
            cap.cpus = cap.cpus.max(res.nano_cpus.unwrap_or(0) as f64 / 1e9);
            cap.memory = cap.memory.max(res.memory_bytes.unwrap_or(0));
        }
        Ok(cap)
    }

    async fn ensure_image(
        &self,
        store: Option<&nbrt_oci::Store>,
        rt: &Runtime,
        progress: &super::ImageProgress,
    ) -> Result<ImageRef> {
        if let Some(store) = store {
            *self.store_root.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(store.root().to_path_buf());
        }
        super::push_to_registry(
            BackendKind::Swarm,
            &self.pushed,
            &self.registry,
            self.insecure,
            store,
            rt,
            progress,
        )
        .await
    }

    async fn ensure_home(&self, site_id: &str, user: &str) -> Result<HomeRef> {
        let volume = format!("nbrt-{site_id}-home-{user}");
        let pins = self
            .docker
            .list_configs(Some(ListConfigsOptions {
                filters: Some(HashMap::from([(
                    "name".to_string(),
                    vec![home_pin_name(site_id, user)],
                )])),
            }))
            .await
            .map_err(SiteError::engine)?;
        let node = pins.into_iter().find_map(|c| {
            c.spec?
                .labels?
                .get(HOME_NODE_LABEL)
                .filter(|n| !n.is_empty())
                .cloned()
        });
        Ok(HomeRef { volume, node })
    }

    async fn launch(&self, spec: &SessionSpec) -> Result<Handle> {
        let system_bundle = match &spec.session_env.ca_bundle {
            Some(_) => self.system_bundle(&spec.runtime.image_id).await?,
            None => None,
        };
        let files = file_objects(&spec.site_id, &spec.session_env, system_bundle.as_deref())?;
        let _files = self.files_lock.lock().await;
        let files = self.ensure_files(&spec.site_id, files).await?;
        // A service left by an ended session of the same user and runtime.
        match self.docker.delete_service(&spec.name).await {
            Ok(()) => {}
            Err(e) if is_404(&e) => {}
            Err(e) => return Err(SiteError::engine(e)),
        }
        let created = self
            .docker
            .create_service(self.service_spec(spec, &files), None)
            .await
            .map_err(|e| {
                SiteError::Engine(format!(
                    "creating the service failed: {}",
                    engine_message(&e)
                ))
            })?;
        for w in created.warnings.unwrap_or_default() {
            tracing::warn!("swarm: service {}: {w}", spec.name);
        }
        let id = created.id.ok_or_else(|| {
            SiteError::Engine(format!(
                "the manager gave no ID for the service {}",
                spec.name
            ))
        })?;
        Ok(Handle(id))
    }

    async fn observe(&self, handle: &Handle) -> Result<Observed> {
        let service = match self.docker.inspect_service(&handle.0, None).await {
            Ok(s) => s,
            Err(e) if is_404(&e) => return Ok(Observed::Gone),
            Err(e) => return Err(SiteError::engine(e)),
        };
        let sid = service.id.clone().unwrap_or_else(|| handle.0.clone());
        let Some(task) = current_task(self.tasks_of(&[sid]).await?) else {
            return Ok(Observed::Pending {
                reason: "waiting for the swarm to schedule it".into(),
            });
        };
        if let Some(mut ended) = task_end(&task) {
            // A container that ran and exited: its last output (as the Docker backend).
            let exited = task
                .status
                .as_ref()
                .and_then(|s| s.container_status.as_ref())
                .and_then(|c| c.exit_code)
                .is_some();
            if exited && !ended.oom {
                if let Some(id) = &task.id {
                    ended.message.push_str(&self.task_output(id).await);
                }
            }
            return Ok(Observed::Ended(ended));
        }
        let status = task.status.as_ref();
        let state = status.and_then(|s| s.state);
        if state != Some(TaskState::RUNNING) {
            let words = [
                state.map(|s| s.to_string()),
                status.and_then(|s| s.message.clone()),
                status.and_then(|s| s.err.clone()),
            ];
            let reason: Vec<String> = words
                .into_iter()
                .flatten()
                .filter(|w| !w.is_empty())
                .collect();
            return Ok(Observed::Pending {
                reason: format!("swarm task {}", reason.join(": ")),
            });
        }
        let Some(node) = task.node_id.clone() else {
            return Ok(Observed::Running { address: None });
        };
        // The home is where this task made it: pin the user's later sessions there.
        let labels = service
            .spec
            .as_ref()
            .and_then(|s| s.labels.clone())
            .unwrap_or_default();
        if !labels.contains_key(HOME_NODE_LABEL) {
            if let (Some(site), Some(user)) =
                (label::SITE.get(&labels), label::SESSION_USER.get(&labels))
            {
                self.pin_home(site, user, &node).await?;
            }
        }
        let address = match (self.node_address(&node).await?, host_port(&task)) {
            (Some(host), Some(port)) => Some(format!("{host}:{port}")),
            _ => None,
        };
        Ok(Observed::Running { address })
    }

    fn watch(&self, site_id: &str) -> BoxStream<'static, BackendEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let docker = self.docker.clone();
        // Where the nodes' engines are reachable, their `oom` events (with the service's ID
        // among the container's labels) end the session as out of memory.
        for node in &self.node_engines {
            tokio::spawn(super::docker::follow_events(
                node.clone(),
                site_id.to_string(),
                tx.clone(),
                |ev| {
                    let service = ev.attributes.get("com.docker.swarm.service.id")?;
                    (ev.action == "oom").then(|| BackendEvent::Oom {
                        session: ev.session,
                        handle: Handle(service.clone()),
                    })
                },
            ));
        }
        let site_id = site_id.to_string();
        tokio::spawn(async move {
            // Service ID → (session, whether its end was told).
            let mut known: HashMap<String, (String, bool)> = HashMap::new();
            loop {
                if tx.is_closed() {
                    return;
                }
                match watch_once(&docker, &site_id, &mut known).await {
                    Ok(events) => {
                        for ev in events {
                            if tx.send(ev).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!("swarm watch: {e}"),
                }
                tokio::time::sleep(WATCH_POLL).await;
            }
        });
        channel_stream(rx)
    }

    async fn stop(&self, handle: &Handle, _grace: Duration) -> Result<()> {
        let site = match self.docker.inspect_service(&handle.0, None).await {
            Ok(s) => s
                .spec
                .and_then(|s| s.labels)
                .and_then(|l| label::SITE.get(&l).map(str::to_string)),
            Err(e) if is_404(&e) => return Ok(()),
            Err(e) => return Err(SiteError::engine(e)),
        };
        // Removing the service stops its task with the service's stop grace period.
        match self.docker.delete_service(&handle.0).await {
            Ok(()) => {}
            Err(e) if is_404(&e) => {}
            Err(e) => return Err(SiteError::engine(e)),
        }
        if let Some(site) = site {
            if let Err(e) = self.remove_unused_files(&site).await {
                tracing::warn!("swarm: removing unused session files: {e}");
            }
        }
        Ok(())
    }

    async fn kill(&self, handle: &Handle) -> Result<()> {
        self.stop(handle, Duration::ZERO).await
    }

    /// Measured on the engine of the node that runs the task, where the site reaches it
    /// ([`SwarmConfig::node_engines`]): the manager has no stats of a service.
    async fn usage(&self, handle: &Handle) -> Result<UsageReport> {
        let task = current_task(self.tasks_of(std::slice::from_ref(&handle.0)).await?);
        let status = task.as_ref().and_then(|t| t.status.as_ref());
        let running = status.and_then(|s| s.state) == Some(TaskState::RUNNING);
        let container = status
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone());
        let node = task.as_ref().and_then(|t| t.node_id.clone());
        let (true, Some(container), Some(node)) = (running, container, node) else {
            return Ok(UsageReport::NotAvailable(
                "the session's task is not running".into(),
            ));
        };
        let Some(engine) = self.node_engine(&node).await else {
            return Ok(UsageReport::NotAvailable(format!(
                "the site does not reach the engine of node {node}, which runs the session \
                 (the swarm backend's node engines)"
            )));
        };
        self.meter.usage(&engine, &container).await
    }

    async fn list_owned(&self, site_id: &str) -> Result<Vec<Owned>> {
        let mut owned = Vec::new();
        for s in site_services(&self.docker, site_id).await? {
            let Some(id) = s.id.clone() else { continue };
            let labels = s
                .spec
                .as_ref()
                .and_then(|sp| sp.labels.clone())
                .unwrap_or_default();
            owned.push(Owned {
                handle: Handle(id),
                session: label::SESSION
                    .get(&labels)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string),
                status: "service".into(),
            });
        }
        Ok(owned)
    }
}

async fn site_services(docker: &Docker, site_id: &str) -> Result<Vec<bollard::models::Service>> {
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for filter in super::docker::site_label_filters(site_id) {
        let found = docker
            .list_services(Some(ListServicesOptions {
                filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
                status: None,
            }))
            .await
            .map_err(SiteError::engine)?;
        for s in found {
            if let Some(id) = &s.id {
                if seen.insert(id.clone()) {
                    all.push(s);
                }
            }
        }
    }
    Ok(all)
}

/// One look at the site's services and tasks: an `Ended` event for each service whose task
/// reached a final state, or that vanished, since the last look.
async fn watch_once(
    docker: &Docker,
    site_id: &str,
    known: &mut HashMap<String, (String, bool)>,
) -> Result<Vec<BackendEvent>> {
    let services = site_services(docker, site_id).await?;
    let mut events = Vec::new();
    let mut present = std::collections::HashSet::new();
    for s in &services {
        let Some(id) = s.id.clone() else { continue };
        let labels = s
            .spec
            .as_ref()
            .and_then(|sp| sp.labels.clone())
            .unwrap_or_default();
        let Some(session) = label::SESSION.get(&labels).map(str::to_string) else {
            continue;
        };
        present.insert(id.clone());
        known.entry(id).or_insert((session, false));
    }
    let ids: Vec<String> = present.iter().cloned().collect();
    let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
    if !ids.is_empty() {
        let tasks = docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("service".to_string(), ids)])),
            }))
            .await
            .map_err(SiteError::engine)?;
        for t in tasks {
            if let Some(sid) = t.service_id.clone() {
                by_service.entry(sid).or_default().push(t);
            }
        }
    }
    known.retain(|id, (session, told)| {
        let ended = if !present.contains(id) {
            true
        } else {
            let tasks = by_service.remove(id).unwrap_or_default();
            current_task(tasks).is_some_and(|t| task_end(&t).is_some())
        };
        if ended && !*told {
            events.push(BackendEvent::Ended {
                session: session.clone(),
                handle: Handle(id.clone()),
            });
            *told = true;
        }
        present.contains(id)
    });
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_pins_have_engine_names_whatever_the_user() {
        let n = home_pin_name("0123456789ab", "Ann Ö/..");
        assert!(n.starts_with("nbrt-0123456789ab-home-"), "{n}");
        assert!(n.len() <= 64, "{n}");
        assert!(
            n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
            "{n}"
        );
    }

    fn task(state: TaskState, code: Option<i64>, err: &str) -> Task {
        Task {
            status: Some(bollard::models::TaskStatus {
                state: Some(state),
                err: Some(err.to_string()),
                container_status: Some(bollard::models::ContainerStatus {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn task_states_map_to_session_ends() {
        let oom = task_end(&task(
            TaskState::FAILED,
            Some(137),
            "task: non-zero exit (137)",
        ));
        assert!(oom.is_some_and(|e| e.oom));
        let crash = task_end(&task(TaskState::FAILED, Some(3), "task: non-zero exit (3)")).unwrap();
        assert!(!crash.oom);
        assert_eq!(
            crash.message,
            "the container exited with code 3: task: non-zero exit (3)"
        );
        let rejected = task_end(&task(TaskState::REJECTED, None, "No such image: x")).unwrap();
        assert!(
            rejected.message.contains("No such image: x"),
            "{rejected:?}"
        );
        assert_eq!(task_end(&task(TaskState::RUNNING, None, "")), None);
        assert_eq!(task_end(&task(TaskState::PREPARING, None, "")), None);
    }
}
