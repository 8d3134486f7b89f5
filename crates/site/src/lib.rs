//! `nbrt serve`: the site — runtimes, notebooks, sessions, users.
//!
//! One machine, the Docker engine for sessions, SQLite for state. [`Site::open`] opens the
//! database (creating the admin user on first start), [`Site::reconcile`] adopts the
//! session containers a previous server left, [`Site::router`] is the HTTP interface (REST
//! API under `/api`, the proxy under `/user/<name>/<runtime>/`, the web UI at `/`), and
//! [`Site::spawn_background`] watches the engine (out-of-memory kills, exits) and culls idle
//! sessions.
//!
//! | module | its job |
//! | --- | --- |
//! | [`api`] | the HTTP routes: request bodies in, JSON out |
//! | [`auth`] | users, roles, tokens, the admin bootstrap |
//! | [`db`] | the SQLite file and its migrations |
//! | [`error`] | [`SiteError`]: one HTTP status per error, the field at fault |
//! | [`runtime`] | runtimes: the typed input and its validation, the table, manifests, engine checks, factory restore (one file each, see its map) |
//! | [`notebooks`] | notebooks and migrations between runtimes |
//! | [`sessions`] | session containers on Docker: start, readiness, stop, adoption after a restart, the engine watcher, the culler; [`sessions::SessionState`] |
//! | [`proxy`] | `/user/<name>/<runtime>/` to the session's notebook server (HTTP and websockets) |
//! | [`server`] | the HTTP server: time-outs for headers, idle keep-alive and request bodies; the connection cap ([`ServerLimits`]) |
//! | [`openapi`] | the API's OpenAPI document |
//! | [`ui`] | the web page |
//!
//! Container and volume labels are `nbrt_oci::label`'s keys.

pub mod api;
pub mod auth;
pub mod db;
pub mod error;
pub mod notebooks;
pub mod openapi;
pub mod proxy;
pub mod runtime;
pub mod server;
pub mod sessions;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;

pub use error::{Result, SiteError};
pub use server::ServerLimits;

/// How a site runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SQLite database (created on first start).
    pub database: PathBuf,
    /// The image store runtimes' images are looked up in (default: nbrt's store).
    pub store: Option<PathBuf>,
    /// Docker network for session containers (default: the engine's `bridge`).
    pub network: Option<String>,
    /// Cull sessions whose kernels have been idle this long (`None`: never).
    pub cull_idle_timeout: Option<Duration>,
    /// How often kernel activity is checked.
    pub cull_interval: Duration,
    /// How long a session may take from container start to `<prefix>/api` answering.
    pub start_timeout: Duration,
    /// The HTTP server's time-outs and connection cap.
    pub limits: ServerLimits,
}

impl Config {
    pub fn new(database: impl Into<PathBuf>) -> Config {
        Config {
            database: database.into(),
            store: None,
            network: None,
            cull_idle_timeout: Some(Duration::from_secs(1440 * 60)),
            cull_interval: Duration::from_secs(60),
            start_timeout: Duration::from_secs(300),
            limits: ServerLimits::default(),
        }
    }
}

pub struct Site {
    pub config: Config,
    pub db: db::Db,
    pub docker: Docker,
    /// Labels every container of this site carries (`io.nbrt.site=<id>`, `org.nbrt.site`
    /// before): several sites can share an engine without adopting each other's sessions.
    pub site_id: String,
    pub http: proxy::HttpClient,
    starting: sessions::StartLocks,
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
        let docker = nbrt_oci::engine::connect()
            .await
            .map_err(|e| SiteError::Engine(e.to_string()))?;
        let site = Arc::new(Site {
            config,
            db,
            docker,
            site_id,
            http: proxy::client(),
            starting: Default::default(),
        });
        let admin = auth::bootstrap_admin(&site)?;
        Ok((site, admin))
    }

    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }

    /// Adopt this site's containers, remove orphans, settle sessions whose containers are gone.
    pub async fn reconcile(self: &Arc<Self>) -> Result<sessions::ReconcileReport> {
        sessions::reconcile(self).await
    }

    /// The engine watcher (OOM kills, exits) and the idle culler.
    pub fn spawn_background(self: &Arc<Self>) {
        sessions::spawn_watcher(self.clone());
        if self.config.cull_idle_timeout.is_some() {
            sessions::spawn_culler(self.clone());
        }
    }

    fn open_store(&self) -> Result<Option<nbrt_oci::Store>> {
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

    /// Whether the store holds an image with this ID (config digest).
    pub fn store_has_image(&self, image_id: &str) -> Result<bool> {
        let Some(store) = self.open_store()? else {
            return Ok(false);
        };
        Ok(store
            .list()?
            .iter()
            .any(|i| i.image.id().to_string() == image_id))
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

/// Run a site until the process is stopped: open, reconcile, watch, serve on `listen`.
/// `on_ready` gets the bound address and the admin token of a new database.
pub async fn serve(
    config: Config,
    listen: SocketAddr,
    on_ready: impl FnOnce(SocketAddr, Option<String>, &sessions::ReconcileReport),
) -> Result<()> {
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
    on_ready(addr, admin, &report);
    server::serve(listener, site.router(), site.config.limits.clone()).await;
    Ok(())
}
