//! `nbrt serve`: the site (runtimes, notebooks, sessions on a backend — the Docker engine, a
//! Docker Swarm or a Kubernetes cluster —, web UI). The backend's settings come from flags, else from the file
//! `--config` names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_site::{BackendKind, KubernetesConfig, ServerLimits, SwarmConfig};
use serde::Deserialize;

use crate::images::Context;
use crate::output::outln;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: SocketAddr,
    /// The site's SQLite database (created on first start; default: site.db in the store's parent directory)
    #[arg(long, value_name = "PATH")]
    database: Option<PathBuf>,
    /// A TOML file with the backend's settings (`backend`, `engine`, `network`, `[swarm]`,
    /// `[kubernetes]`); flags given on the command line win over it
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Where sessions run: docker (the one engine), swarm (a Docker Swarm, through a manager)
    /// or kubernetes (a cluster, through its API server) [default: docker]
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// The Docker engine (for swarm: a manager), unix:///PATH or tcp://HOST:PORT [default:
    /// DOCKER_HOST, else the local socket]
    #[arg(long, value_name = "ADDRESS")]
    engine: Option<String>,
    /// Network for sessions: a Docker network (default: bridge), or for swarm an overlay
    /// network (default: nbrt-sessions, created when missing)
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
    /// swarm, kubernetes: the site's registry (HOST:PORT) every node pulls runtime images from
    #[arg(long, value_name = "HOST:PORT")]
    registry: Option<String>,
    /// swarm, kubernetes: speak plain HTTP to the registry (loopback registries always get it)
    #[arg(long)]
    registry_insecure: bool,
    /// kubernetes: the kubeconfig file [default: KUBECONFIG, ~/.kube/config, else in-cluster]
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// kubernetes: the kubeconfig context [default: its current context]
    #[arg(long, value_name = "NAME")]
    kube_context: Option<String>,
    /// kubernetes: the namespace sessions run in [default: the context's, else default]
    #[arg(long, value_name = "NAME")]
    namespace: Option<String>,
    /// swarm: a placement constraint for every session (repeatable), e.g. node.role==worker
    #[arg(long, value_name = "EXPR")]
    constraint: Vec<String>,
    /// swarm: a node's own engine the site can reach (repeatable), for its out-of-memory events
    #[arg(long, value_name = "ADDRESS")]
    node_engine: Vec<String>,
    /// Stop sessions whose kernels were idle this many minutes (0: never)
    #[arg(long, default_value_t = 1440, value_name = "MINUTES")]
    cull_idle_minutes: u64,
    /// How often kernel activity is checked, in seconds
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    cull_interval: u64,
    /// How long a session may take to answer <prefix>/api, in seconds
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    start_timeout: u64,
    /// Seconds a client has to send a request's headers, from its connection or from the
    /// first byte of its next request
    #[arg(long, default_value_t = ServerLimits::default().header_timeout.as_secs(), value_name = "SECONDS")]
    header_timeout: u64,
    /// Seconds a keep-alive connection may sit with no request before it is closed
    #[arg(long, default_value_t = ServerLimits::default().idle_timeout.as_secs(), value_name = "SECONDS")]
    idle_timeout: u64,
    /// Seconds a request body may send nothing before the request fails
    #[arg(long, default_value_t = ServerLimits::default().body_timeout.as_secs(), value_name = "SECONDS")]
    body_timeout: u64,
    /// Connections served at once; more wait until one closes (websockets count while open)
    #[arg(long, default_value_t = ServerLimits::default().max_connections, value_name = "N")]
    max_connections: usize,
    /// Days an API token lives when its request gives no `expiresIn` (0: never)
    #[arg(long, default_value_t = 90, value_name = "DAYS")]
    token_lifetime_days: u64,
    /// Hours the web UI's login lasts (its cookie's token)
    #[arg(long, default_value_t = 14 * 24, value_name = "HOURS")]
    login_lifetime_hours: u64,
    /// Serve GET /metrics without a token (by default it needs one, any user's, as
    /// JupyterHub's /hub/metrics does)
    #[arg(long)]
    metrics_public: bool,
    /// Let administrators open other users' sessions with their own credential (each first
    /// access to a session is in the audit log as session.admin-access); off by default, as
    /// JupyterHub's admin_access
    #[arg(long)]
    admin_access: bool,
    /// Register the stock stacks the store holds (jupyter, scipy) as factory runtimes at
    /// start, as ArcGIS's "Restore Factory Runtimes" does
    #[arg(long)]
    restore_factory: bool,
    /// On Ctrl-C or SIGTERM, stop every running session before exiting (by default they keep
    /// running and the next start adopts them)
    #[arg(long)]
    stop_sessions_on_exit: bool,
    /// Print the start report as JSON
    #[arg(long)]
    json: bool,
}

pub async fn serve(ctx: &Context, a: ServeArgs) -> Result<()> {
    let store = match &ctx.store {
        Some(s) => s.clone(),
        None => nbrt_oci::Store::default_root()?,
    };
    let database = a.database.unwrap_or_else(|| {
        store
            .parent()
            .map(|p| p.join("nbrt-site.db"))
            .unwrap_or_else(|| PathBuf::from("nbrt-site.db"))
    });
    let file = match &a.config {
        Some(p) => ServeFile::read(p)?,
        None => ServeFile::default(),
    };
    let mut config = nbrt_site::Config::new(&database);
    config.store = Some(store);
    config.backend = a.backend.or(file.backend).unwrap_or_default();
    config.engine = a.engine.or(file.engine);
    config.network = a.network.or(file.network);
    let sw = file.swarm.unwrap_or_default();
    let mut kube = file.kubernetes.unwrap_or_default();
    kube.registry = a.registry.clone().or(kube.registry);
    kube.registry_insecure |= a.registry_insecure;
    kube.kubeconfig = a.kubeconfig.or(kube.kubeconfig);
    kube.context = a.kube_context.or(kube.context);
    kube.namespace = a.namespace.or(kube.namespace);
    config.kubernetes = kube;
    config.swarm = SwarmConfig {
        registry: a.registry.or(sw.registry),
        registry_insecure: a.registry_insecure || sw.registry_insecure.unwrap_or(false),
        network: config.network.clone(),
        constraints: if a.constraint.is_empty() {
            sw.constraints.unwrap_or_default()
        } else {
            a.constraint
        },
        cpu_reservation: sw.cpu_reservation,
        node_engines: if a.node_engine.is_empty() {
            sw.node_engines.unwrap_or_default()
        } else {
            a.node_engine
        },
    };
    config.cull_idle_timeout =
        (a.cull_idle_minutes > 0).then(|| Duration::from_secs(a.cull_idle_minutes * 60));
    config.cull_interval = Duration::from_secs(a.cull_interval.max(1));
    config.start_timeout = Duration::from_secs(a.start_timeout.max(1));
    config.limits = ServerLimits {
        header_timeout: Duration::from_secs(a.header_timeout.max(1)),
        idle_timeout: Duration::from_secs(a.idle_timeout.max(1)),
        body_timeout: Duration::from_secs(a.body_timeout.max(1)),
        max_connections: a.max_connections.max(1),
    };
    config.tokens = nbrt_site::auth::TokenPolicy {
        api_lifetime: (a.token_lifetime_days > 0)
            .then(|| Duration::from_secs(a.token_lifetime_days.saturating_mul(24 * 3600))),
        login_lifetime: Duration::from_secs(a.login_lifetime_hours.max(1).saturating_mul(3600)),
    };
    config.metrics_public = a.metrics_public;
    config.admin_access = a.admin_access;
    let json = a.json;
    let options = nbrt_site::ServeOptions {
        restore_factory: a.restore_factory,
        stop_sessions_on_exit: a.stop_sessions_on_exit,
    };
    let stopped = nbrt_site::serve(config, a.listen, options, |started| {
        let nbrt_site::Started {
            addr,
            admin,
            reconcile: report,
            factory,
        } = started;
        if json {
            let v = serde_json::json!({
                "listen": addr.to_string(),
                "database": database.display().to_string(),
                "adminToken": admin,
                "reconcile": report,
                "factory": factory,
            });
            outln!("{v}");
            return;
        }
        outln!("nbrt serve: http://{addr}/ (database {})", database.display());
        if let Some(t) = &admin {
            outln!("created the admin user; its token, shown only this once:\n  {t}");
            outln!("open http://{addr}/ and log in with that token");
        }
        outln!(
            "sessions: {} adopted, {} ended while the server was down, {} orphan container(s) removed",
            report.adopted.len(),
            report.ended.len(),
            report.removed_orphans.len()
        );
        if let Some(f) = factory {
            let names = |rs: &[nbrt_site::runtime::Runtime]| {
                rs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
            };
            outln!(
                "factory runtimes: {} added, {} reset, {} unchanged [{}]{}",
                f.added.len(),
                f.updated.len(),
                f.unchanged.len(),
                names(&[f.added.as_slice(), f.updated.as_slice(), f.unchanged.as_slice()].concat()),
                if f.missing.is_empty() {
                    String::new()
                } else {
                    format!("; not in the store: {}", f.missing.join(", "))
                }
            );
        }
    })
    .await
    .context("nbrt serve")?;
    if !stopped.is_empty() {
        outln!("nbrt serve: stopped {} session(s)", stopped.len());
    }
    Ok(())
}

fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse()
}

/// `nbrt serve --config FILE`: the backend's settings.
///
/// ```toml
/// backend = "swarm"                        # docker | swarm | kubernetes
/// engine = "unix:///run/docker.sock"       # for swarm: a manager
/// network = "nbrt-sessions"
/// [swarm]
/// registry = "10.77.0.254:5000"
/// registry-insecure = true
/// constraints = ["node.role==worker"]
/// cpu-reservation = 0.25                   # of each session's CPU limit
/// node-engines = ["tcp://node1:2375"]      # for out-of-memory events
/// [kubernetes]                             # see docs/backends.md for every key
/// kubeconfig = "/etc/nbrt/kubeconfig"
/// namespace = "notebooks"
/// registry = "registry.example:5000"
/// storage-class = "standard"
/// home-size = "10Gi"
/// node-selector = { "nbrt.io/sessions" = "yes" }
/// tolerations = [{ key = "gpu", operator = "Exists", effect = "NoSchedule" }]
/// image-pull-secrets = ["site-registry"]
/// service = false
/// site-pod-labels = { "app.kubernetes.io/name" = "nbrt-serve" }
/// site-cidrs = ["10.0.0.5/32"]
/// cpu-request = 0.25
/// gpus = 1
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ServeFile {
    backend: Option<BackendKind>,
    engine: Option<String>,
    network: Option<String>,
    swarm: Option<SwarmFile>,
    kubernetes: Option<KubernetesConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct SwarmFile {
    registry: Option<String>,
    registry_insecure: Option<bool>,
    constraints: Option<Vec<String>>,
    cpu_reservation: Option<f64>,
    node_engines: Option<Vec<String>>,
}

impl ServeFile {
    fn read(path: &Path) -> Result<ServeFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the serve configuration {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("{}: not a serve configuration", path.display()))
    }
}
