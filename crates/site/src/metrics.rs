//! `GET /metrics`: the site's metrics in Prometheus' text exposition format (0.0.4, the
//! `prometheus` crate's encoder).
//!
//! | metric | type | what |
//! | --- | --- | --- |
//! | `nbrt_sessions{state, runtime_id, runtime}` | gauge | session records by state, for every registered runtime and every state (0 included), read from the database at each scrape |
//! | `nbrt_session_start_seconds` | histogram | from a session's record to its notebook server answering, for sessions started by this process |
//! | `nbrt_proxy_requests_total` | counter | requests to `/user/<name>/<runtime>/…` (websocket upgrades included) |
//! | `nbrt_proxy_errors_total` | counter | of those, the ones the proxy answered itself with a 5xx: the session not ready, its server not answering |
//! | `nbrt_sessions_culled_total` | counter | sessions stopped by the idle culler |
//! | `nbrt_sessions_oom_killed_total` | counter | sessions ended by an out-of-memory kill |
//!
//! Counters and the histogram count from the server's start (Prometheus handles resets);
//! the gauge is the database's, so it survives restarts. Whether `/metrics` needs a token is
//! [`crate::Config::metrics_public`]'s.

use std::sync::Mutex;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGaugeVec, Opts, Registry};

use crate::error::{Result, SiteError};
use crate::sessions::SessionState;
use crate::Site;

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Session start buckets, in seconds: a warm start well under a second, a cold container a
/// few seconds, an image being loaded minutes.
const START_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    sessions: IntGaugeVec,
    /// Seconds from a session's record to ready.
    pub start_seconds: Histogram,
    pub proxy_requests: IntCounter,
    pub proxy_errors: IntCounter,
    pub culls: IntCounter,
    pub oom_kills: IntCounter,
    /// One scrape at a time: the gauge is reset and refilled for each.
    scrape: Mutex<()>,
}

fn internal(e: prometheus::Error) -> SiteError {
    SiteError::Internal(format!("metrics: {e}"))
}

impl Metrics {
    pub fn new() -> Result<Metrics> {
        let registry = Registry::new();
        let sessions = IntGaugeVec::new(
            Opts::new("nbrt_sessions", "Session records by state and runtime"),
            &["state", "runtime_id", "runtime"],
        )
        .map_err(internal)?;
        let start_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "nbrt_session_start_seconds",
                "Seconds from a session's start request to its notebook server answering",
            )
            .buckets(START_BUCKETS.to_vec()),
        )
        .map_err(internal)?;
        let counter = |name: &str, help: &str| IntCounter::new(name, help).map_err(internal);
        let proxy_requests = counter(
            "nbrt_proxy_requests_total",
            "Requests through the session proxy",
        )?;
        let proxy_errors = counter(
            "nbrt_proxy_errors_total",
            "Proxy requests the proxy answered itself with a server error (session not ready, notebook server not answering)",
        )?;
        let culls = counter(
            "nbrt_sessions_culled_total",
            "Sessions stopped by the idle culler",
        )?;
        let oom_kills = counter(
            "nbrt_sessions_oom_killed_total",
            "Sessions ended by an out-of-memory kill",
        )?;
        registry
            .register(Box::new(sessions.clone()))
            .map_err(internal)?;
        registry
            .register(Box::new(start_seconds.clone()))
            .map_err(internal)?;
        for c in [&proxy_requests, &proxy_errors, &culls, &oom_kills] {
            registry.register(Box::new(c.clone())).map_err(internal)?;
        }
        Ok(Metrics {
            registry,
            sessions,
            start_seconds,
            proxy_requests,
            proxy_errors,
            culls,
            oom_kills,
            scrape: Mutex::new(()),
        })
    }

    /// Note a session ending in `state` (called once per transition).
    pub fn session_ended(&self, state: SessionState) {
        match state {
            SessionState::Culled => self.culls.inc(),
            SessionState::OomKilled => self.oom_kills.inc(),
            _ => {}
        }
    }
}

/// Session counts by (state, runtime ID, runtime name): every registered runtime with every
/// state, 0 where there is none.
fn session_counts(site: &Site) -> Result<Vec<(String, String, String, i64)>> {
    let states: Vec<String> = SessionState::ALL
        .iter()
        .map(|s| format!("('{}')", s.as_str()))
        .collect();
    let sql = format!(
        "WITH states(state) AS (VALUES {})
         SELECT st.state, r.id, r.name,
                (SELECT count(*) FROM sessions s WHERE s.runtime_id = r.id AND s.state = st.state)
         FROM runtimes r CROSS JOIN states st ORDER BY r.name, st.state",
        states.join(", ")
    );
    site.db.with(|c| {
        let mut st = c.prepare_cached(&sql)?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect();
        rows
    })
}

/// The text `GET /metrics` answers.
pub fn render(site: &Site) -> Result<String> {
    let m = &site.metrics;
    let counts = session_counts(site)?;
    let _one = m.scrape.lock().unwrap_or_else(|p| p.into_inner());
    m.sessions.reset();
    for (state, id, name, n) in counts {
        m.sessions.with_label_values(&[&state, &id, &name]).set(n);
    }
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&m.registry.gather(), &mut out)
        .map_err(internal)?;
    Ok(out)
}
