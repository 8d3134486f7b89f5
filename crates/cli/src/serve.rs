//! `nbrt serve`: the site (runtimes, notebooks, sessions on the Docker engine, web UI).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_site::ServerLimits;

use crate::images::Context;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "ADDR")]
    listen: SocketAddr,
    /// The site's SQLite database (created on first start; default: site.db in the store's parent directory)
    #[arg(long, value_name = "PATH")]
    database: Option<PathBuf>,
    /// Docker network for session containers (default: bridge)
    #[arg(long, value_name = "NAME")]
    network: Option<String>,
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
    let mut config = nbrt_site::Config::new(&database);
    config.store = Some(store);
    config.network = a.network;
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
    let json = a.json;
    nbrt_site::serve(config, a.listen, |addr, admin, report| {
        if json {
            let v = serde_json::json!({
                "listen": addr.to_string(),
                "database": database.display().to_string(),
                "adminToken": admin,
                "reconcile": report,
            });
            println!("{v}");
        } else {
            println!("nbrt serve: http://{addr}/ (database {})", database.display());
            if let Some(t) = admin {
                println!("created the admin user; its token, shown only this once:\n  {t}");
            }
            println!(
                "sessions: {} adopted, {} ended while the server was down, {} orphan container(s) removed",
                report.adopted.len(),
                report.ended.len(),
                report.removed_orphans.len()
            );
        }
    })
    .await
    .context("nbrt serve")
}
