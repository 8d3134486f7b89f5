//! `nbrt serve`: the site — runtimes, notebooks, sessions, users.
//!
//! SQLite for state; sessions on a [`backend`]: the local Docker engine, a Docker Swarm or a
//! Kubernetes cluster.
//! [`Site::open`] opens the database (creating the admin user on first start) and connects
//! to the backend, [`Site::reconcile`] adopts the sessions a previous server left,
//! [`Site::router`] is the HTTP interface (REST API under `/api`, the proxy under
//! `/user/<name>/<runtime>/`, the web UI at `/`), and [`Site::spawn_background`] watches the
//! backend (out-of-memory kills, exits) and culls idle sessions.
//!
//! | module | its job |
//! | --- | --- |
//! | [`api`] | the HTTP routes: request bodies in, JSON out |
//! | [`arcgis`] | the same runtime operations on ArcGIS Notebook Server's Administrator Directory paths and bodies (`/arcgis/admin/notebooks/runtimes/…`, form-encoded, `f=json`, `token=`) |
//! | [`access`] | the access log: one event per request |
//! | [`audit`] | the audit log: who changed what, with which token, in the database |
//! | [`metrics`] | `GET /metrics` in Prometheus' text format |
//! | [`auth`] | users, roles, tokens, the admin bootstrap |
//! | [`db`] | the SQLite file and its migrations |
//! | [`error`] | [`SiteError`]: one HTTP status per error, the field at fault |
//! | [`runtime`] | runtimes: the typed input and its validation, the table, manifests, engine checks, factory restore (one file each, see its map) |
//! | [`notebooks`] | notebooks and migrations between runtimes |
//! | [`session_env`] | what sessions get from the site and their runtime: variables, files, a CA bundle, conda channels (checked, secrets masked) |
//! | [`sessions`] | sessions, whatever runs them: start, readiness, stop, adoption after a restart, reactions to the backend's events, the culler; [`sessions::SessionState`] |
//! | [`backend`] | where sessions run: the [`backend::SessionBackend`] interface, Docker, Swarm and Kubernetes behind it |
//! | [`usage`] | what a session uses now (CPU, memory) against its runtime's limits |
//! | [`hub`] | the way back from JupyterLab to the site (its hub extension's menu items) |
//! | [`proxy`] | `/user/<name>/<runtime>/` to the session's notebook server (HTTP and websockets) |
//! | [`server`] | the HTTP server: time-outs for headers, idle keep-alive and request bodies; the connection cap ([`ServerLimits`]) |
//! | [`openapi`] | the API's OpenAPI document |
//! | [`ui`] | the web page |
//!
//! Container and volume labels are `nbrt_oci::label`'s keys.

pub mod access;
pub mod api;
pub mod arcgis;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod db;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod notebooks;
pub mod openapi;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod session_env;
pub mod sessions;
pub mod ui;
pub mod usage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

pub use backend::{BackendKind, KubernetesConfig, SwarmConfig};
pub use error::{Result, SiteError};
pub use server::ServerLimits;

/// How a site runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite database (created on first start).
    pub database: PathBuf,
    /// The image store runtimes' images are looked up in (default: nbrt's store).
    pub store: Option<PathBuf>,
    /// Where sessions run.
    pub backend: BackendKind,
    /// The Docker engine to use (`unix:///path`, `tcp://host:port`; for Swarm, a manager's).
    /// Default: `DOCKER_HOST`, else the local socket.
    pub engine: Option<String>,
    /// Docker network for session containers (default: the engine's `bridge`).
    pub network: Option<String>,
    /// The Swarm backend's registry, network and placement.
    pub swarm: SwarmConfig,
    /// The Kubernetes backend's cluster, namespace, registry and what it puts on pods.
    pub kubernetes: KubernetesConfig,
    /// Cull sessions whose kernels have been idle this long (`None`: never).
    pub cull_idle_timeout: Option<Duration>,
    /// How often kernel activity is checked.
    pub cull_interval: Duration,
    /// How long a session may take from container start to `<prefix>/api` answering.
    pub start_timeout: Duration,
    /// The HTTP server's time-outs and connection cap.
    pub limits: ServerLimits,
    /// How long tokens live.
    pub tokens: auth::TokenPolicy,
    /// Serve `GET /metrics` without a token. By default it needs one (any user's), as
    /// JupyterHub's `/hub/metrics` does: give the scraper a user of its own and a token that
    /// never expires (`nbrt serve --metrics-public` turns this on).
    pub metrics_public: bool,
    /// Administrators may open other users' sessions through the proxy, with their own
    /// credential; each first access of an administrator to a session is audited
    /// (`session.admin-access`). Off by default, as JupyterHub's `admin_access` is.
    pub admin_access: bool,
}

impl Config {
    pub fn new(database: impl Into<PathBuf>) -> Config {
        Config {
            database: database.into(),
            store: None,
            backend: BackendKind::Docker,
            engine: None,
            network: None,
            swarm: SwarmConfig::default(),
            kubernetes: KubernetesConfig::default(),
            cull_idle_timeout: Some(Duration::from_secs(1440 * 60)),
            cull_interval: Duration::from_secs(60),
            start_timeout: Duration::from_secs(300),
            limits: ServerLimits::default(),
            tokens: auth::TokenPolicy::default(),
            metrics_public: false,
            admin_access: false,
        }
    }
}

pub struct Site {
    pub config: Config,
    /// (administrator, session) pairs already audited as admin access.
    pub admin_accesses: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    pub db: db::Db,
    /// The Docker engine (for Swarm, the manager the site talks to): runtime checks use it.
    pub docker: Docker,
    /// What runs sessions.
    pub backend: Arc<dyn backend::SessionBackend>,
    /// Labels every container of this site carries (`io.nbrt.site=<id>`, `org.nbrt.site`
    /// before): several sites can share an engine without adopting each other's sessions.
    pub site_id: String,
    pub http: proxy::HttpClient,
    /// The counters and histograms of `GET /metrics`.
    pub metrics: metrics::Metrics,
    starting: sessions::StartLocks,
    /// The warm sessions waiting for a user, by runtime.
    pub pools: sessions::pool::Pools,
    /// Manifests read from images (registration without an uploaded one).
    pub image_manifests: runtime::manifest::ImageManifests,
}

impl Site {
    /// Open the database and connect to the engine. Returns the admin token when the
    /// database was new (shown once, only its hash is kept).
    pub async fn open(config: Config) -> Result<(Arc<Site>, Option<String>)> {
        let db = db::Db::open(&config.database)?;
        let site_id = match db.meta("site_id")? {
            Some(id) => id,
            None => {
                let id = db::random_hex(6)?;
                db.with(|c| {
                    c.execute(
                        "INSERT OR IGNORE INTO meta (key, value) VALUES ('site_id', ?1)",
                        [&id],
                    )
                })?;
                db.meta("site_id")?.unwrap_or(id)
            }
        };
        let docker = if config.backend == BackendKind::Kubernetes && config.engine.is_none() {
            // A cluster's site may have no Docker engine: a client that connects only when
            // used (registration's look at an image missing from the store).
            bollard::Docker::connect_with_local_defaults().map_err(SiteError::engine)?
        } else {
            backend::connect_engine(config.engine.as_deref()).await?
        };
        let backend: Arc<dyn backend::SessionBackend> = match config.backend {
            BackendKind::Docker => Arc::new(backend::docker::DockerBackend::new(
                docker.clone(),
                config.network.clone(),
                engine_is_local(config.engine.as_deref()),
            )),
            BackendKind::Swarm => Arc::new(
                backend::swarm::SwarmBackend::connect(docker.clone(), &config.swarm).await?,
            ),
            BackendKind::Kubernetes => Arc::new(
                backend::kubernetes::KubernetesBackend::connect(&config.kubernetes, &site_id)
                    .await?,
            ),
        };
        let site = Arc::new(Site {
            config,
            admin_accesses: Default::default(),
            db,
            docker,
            backend,
            site_id,
            http: proxy::client(),
            metrics: metrics::Metrics::new()?,
            starting: Default::default(),
            pools: Default::default(),
            image_manifests: Default::default(),
        });
        let admin = auth::bootstrap_admin(&site)?;
        Ok((site, admin))
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }

    /// Adopt this site's containers, remove orphans, settle sessions whose containers are
    /// gone; pin every runtime's image in the store.
    pub async fn reconcile(self: &Arc<Self>) -> Result<sessions::ReconcileReport> {
        let report = sessions::reconcile(self).await?;
        let pinned = runtime::engine::pin_all(self)?;
        tracing::info!("{pinned} runtime image(s) pinned in the store");
        Ok(report)
    }

    /// The engine watcher (OOM kills, exits) and the idle culler.
    pub fn spawn_background(self: &Arc<Self>) {
        sessions::spawn_watcher(self.clone());
        if self.config.cull_idle_timeout.is_some() {
            sessions::spawn_culler(self.clone());
        }
        sessions::pool::spawn_keeper(self.clone());
    }

    /// Whether the site has a Docker engine to look at (images not in the store, Docker
    /// runtimes): not on a Kubernetes site, unless `engine` names one.
    pub fn has_docker_engine(&self) -> bool {
        self.config.backend != BackendKind::Kubernetes || self.config.engine.is_some()
    }

    pub(crate) fn open_store(&self) -> Result<Option<nbrt_oci::Store>> {
        let root = match &self.config.store {
            Some(p) => p.clone(),
            None => nbrt_oci::Store::default_root()?,
        };
        if !root.join("index.json").exists() {
            return Ok(None);
        }
        Ok(Some(nbrt_oci::Store::open(root)?))
    }

    pub fn store_root(&self) -> Result<PathBuf> {
        Ok(match &self.config.store {
            Some(p) => p.clone(),
            None => nbrt_oci::Store::default_root()?,
        })
    }

    /// Whether the store holds an image with this ID (config digest), named or pinned.
    pub fn store_has_image(&self, image_id: &str) -> Result<bool> {
        let Some(store) = self.open_store()? else {
            return Ok(false);
        };
        match store.resolve(image_id) {
            Ok(found) => Ok(found.image.id().to_string() == image_id),
            Err(nbrt_oci::OciError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The image ID of a name in the store, if it is there.
    pub fn store_image_id(&self, name: &str) -> Result<Option<String>> {
        let Some(store) = self.open_store()? else {
            return Ok(None);
        };
        match store.resolve(name) {
            Ok(i) => Ok(Some(i.image.id().to_string())),
            Err(nbrt_oci::OciError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the Docker engine `address` names (else `DOCKER_HOST`, else the local socket)
/// is reached by a local socket, so runs on this host.
fn engine_is_local(address: Option<&str>) -> bool {
    let from_env = std::env::var("DOCKER_HOST").ok();
    match address.or(from_env.as_deref()).filter(|a| !a.is_empty()) {
        Some(a) => a.starts_with("unix://"),
        None => true,
    }
}

/// What `nbrt serve` does besides serving.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Register the stock stacks the store holds as factory runtimes when the site starts
    /// (ArcGIS's "Restore Factory Runtimes", done once at start).
    pub restore_factory: bool,
    /// On Ctrl-C (SIGINT) or SIGTERM, stop every running session before exiting. Without
    /// it they keep running and the next start adopts them.
    pub stop_sessions_on_exit: bool,
}

/// What the site says once it listens.
pub struct Started<'a> {
    pub addr: SocketAddr,
    /// The admin user's token, when this start created the database.
    pub admin: Option<String>,
    pub reconcile: &'a sessions::ReconcileReport,
    /// What the factory restore did, when [`ServeOptions::restore_factory`] asked for it.
    pub factory: Option<&'a runtime::factory::RestoreReport>,
}

/// Run a site: open, reconcile, watch, serve on `listen` until SIGINT or SIGTERM, then stop
/// (and its sessions, when `options` says so). `on_ready` gets the bound address, the admin
/// token of a new database and the start reports. Returns the sessions stopped on the way
/// out.
pub async fn serve(
    config: Config,
    listen: SocketAddr,
    options: ServeOptions,
    on_ready: impl FnOnce(Started<'_>),
) -> Result<Vec<String>> {
    let (site, admin) = Site::open(config).await?;
    let report = site.reconcile().await?;
    site.spawn_background();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| SiteError::Io {
            context: format!("listening on {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SiteError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    let factory = match options.restore_factory {
        true => Some(runtime::factory::restore_factory(&site).await?),
        false => None,
    };
    on_ready(Started {
        addr,
        admin,
        reconcile: &report,
        factory: factory.as_ref(),
    });
    tokio::select! {
        _ = server::serve(listener, site.router(), site.config.limits.clone()) => {}
        signal = shutdown_signal() => tracing::info!("{signal}: the site stops"),
    }
    // Warm sessions nobody took hold nothing of anyone's: they go with the site.
    if let Err(e) = sessions::pool::drain(&site).await {
        tracing::warn!("removing warm sessions: {e}");
    }
    if !options.stop_sessions_on_exit {
        return Ok(Vec::new());
    }
    let mut stopped = Vec::new();
    // Without ended ones: the running sessions.
    for s in sessions::list(&site, None, false)? {
        match sessions::stop(
            &site,
            &s,
            sessions::SessionState::Stopped,
            "the site stopped",
        )
        .await
        {
            Ok(()) => stopped.push(s.id.clone()),
            Err(e) => tracing::warn!("stopping session {}: {e}", s.id),
        }
    }
    // The homes of the warm sessions just stopped.
    if let Err(e) = sessions::pool::drain(&site).await {
        tracing::warn!("releasing warm homes: {e}");
    }
    Ok(stopped)
}

/// The first of SIGINT and SIGTERM, by name.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        // Without signal handlers the process ends as it always did, by the signal.
        _ => std::future::pending().await,
    }
}
