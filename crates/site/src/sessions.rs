//! Sessions: one per (user, runtime), run by the site's [`SessionBackend`] (a container on
//! Docker, a service on Swarm) with the runtime's limits, found again by labels, reached
//! through the proxy, culled when idle. Their states are [`SessionState`]s. What is here does
//! not depend on the engine: the database, readiness (`<prefix>/api` answering), adoption
//! after a restart, reactions to the backend's events, culling.

pub mod pool;
pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::auth::User;
use crate::backend::{BackendEvent, Ended, Handle, Limits, Observed, SessionSpec};
use crate::db::{new_id, now_ms, random_hex};
use crate::error::{Result, SiteError};
use crate::runtime::{self, Runtime};
use crate::Site;
use nbrt_oci::label::HttpContract;

pub use state::SessionState;

/// The port the notebook server listens on in the container (Kubeflow's contract).
pub const PORT: u16 = 8888;
/// Where the user's home volume is mounted (docker-stacks' and Kubeflow's home).
pub const HOME: &str = "/home/jovyan";

/// Per (user, runtime) locks, so two start requests make one container.
pub type StartLocks = Mutex<HashMap<(i64, String), Arc<tokio::sync::Mutex<()>>>>;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub id: String,
    pub user: String,
    #[serde(skip)]
    pub user_id: i64,
    pub runtime_id: String,
    pub state: SessionState,
    pub message: String,
    pub container_name: String,
    pub container_id: Option<String>,
    /// Where the user opens it: `/user/<name>/<runtime>/` (a warm session's:
    /// `/warm/<session id>/`, see [`pool`]).
    pub url: String,
    /// The notebook server's base URL (`NB_PREFIX`): the URL without its last slash.
    #[serde(skip)]
    pub prefix: String,
    pub created: i64,
    pub ready: Option<i64>,
    pub ended: Option<i64>,
    pub last_activity: Option<i64>,
    pub oom_killed: bool,
    #[serde(skip)]
    pub token: String,
    #[serde(skip)]
    pub address: Option<String>,
    /// How its server is reached (its runtime's; Jupyter's rules when the runtime is gone).
    #[serde(skip)]
    pub http: HttpContract,
}

impl Session {
    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }
}

pub fn prefix(user: &str, runtime_id: &str) -> String {
    format!("/user/{user}/{runtime_id}")
}

const SELECT: &str = "SELECT s.id, u.name, s.user_id, s.runtime_id, s.state, s.message,
    s.container_name, s.container_id, s.created_at, s.ready_at, s.ended_at, s.last_activity,
    s.oom_killed, s.token, s.address, s.prefix, r.http FROM sessions s
    JOIN users u ON u.id = s.user_id LEFT JOIN runtimes r ON r.id = s.runtime_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let user: String = r.get(1)?;
    let runtime_id: String = r.get(3)?;
    let own_prefix: Option<String> = r.get(15)?;
    let prefix = own_prefix.unwrap_or_else(|| prefix(&user, &runtime_id));
    Ok(Session {
        id: r.get(0)?,
        url: format!("{prefix}/"),
        prefix,
        user,
        user_id: r.get(2)?,
        runtime_id,
        state: r.get(4)?,
        message: r.get(5)?,
        container_name: r.get(6)?,
        container_id: r.get(7)?,
        created: r.get(8)?,
        ready: r.get(9)?,
        ended: r.get(10)?,
        last_activity: r.get(11)?,
        oom_killed: r.get(12)?,
        token: r.get(13)?,
        address: r.get(14)?,
        http: runtime::repo::http_column(r.get(16)?),
    })
}

pub fn get(site: &Site, id: &str) -> Result<Option<Session>> {
    site.db.with(|c| {
        c.query_row(&format!("{SELECT} WHERE s.id = ?1"), [id], row)
            .optional()
    })
}

/// A session the user may see: their own, or any for admins. Others' are "not found".
pub fn get_visible(site: &Site, user: &User, id: &str) -> Result<Session> {
    match get(site, id)? {
        Some(s) if s.user_id == user.id || user.is_admin() => Ok(s),
        _ => Err(SiteError::NotFound(format!("no session {id}"))),
    }
}

/// Sessions of one user (or all, for `None`), newest first; ended ones only if asked.
pub fn list(site: &Site, user_id: Option<i64>, include_ended: bool) -> Result<Vec<Session>> {
    let filter = if include_ended {
        String::new()
    } else {
        format!(" AND s.state IN {}", SessionState::active_sql())
    };
    site.db.with(|c| {
        let mut st = c.prepare_cached(&format!(
            "{SELECT} WHERE (?1 IS NULL OR s.user_id = ?1){filter} ORDER BY s.created_at DESC LIMIT 1000"
        ))?;
        let rows = st.query_map([user_id], row)?.collect();
        rows
    })
}

pub fn active_for(site: &Site, user_id: i64, runtime_id: &str) -> Result<Option<Session>> {
    site.db.with(|c| {
        c.query_row(
            &format!(
                "{SELECT} WHERE s.user_id = ?1 AND s.runtime_id = ?2 AND s.state IN {}",
                SessionState::active_sql()
            ),
            params![user_id, runtime_id],
            row,
        )
        .optional()
    })
}

/// The ready session behind `/user/<name>/<runtime>/`, if any.
pub fn active_by_path(site: &Site, user: &str, runtime_id: &str) -> Result<Option<Session>> {
    site.db.with(|c| {
        c.query_row(
            &format!(
                "{SELECT} WHERE u.name = ?1 AND s.runtime_id = ?2 AND s.state IN {}",
                SessionState::active_sql()
            ),
            params![user, runtime_id],
            row,
        )
        .optional()
    })
}

/// Move an active session to an end state (no-op if it already ended).
fn end(site: &Site, id: &str, state: SessionState, message: &str, oom: bool) -> Result<bool> {
    let n = site.db.with(|c| {
        c.execute(
            &format!(
                "UPDATE sessions SET state = ?2, message = ?3, ended_at = ?4,
                 oom_killed = oom_killed OR ?5 WHERE id = ?1 AND state IN {}",
                SessionState::active_sql()
            ),
            params![id, state, message, now_ms(), oom],
        )
    })?;
    if n > 0 {
        site.metrics.session_ended(state);
    }
    Ok(n > 0)
}

fn container_name(site: &Site, user: &str, runtime_id: &str) -> String {
    let short: String = runtime_id.chars().filter(|c| *c != '-').take(12).collect();
    format!("nbrt-{}-{user}-{short}", site.site_id)
}

/// How long a stopped session's notebook server gets to exit before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

fn lock_for(site: &Site, user_id: i64, runtime_id: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = site
        .starting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.entry((user_id, runtime_id.to_string()))
        .or_default()
        .clone()
}

/// Start (or return the running) session of `user` on `runtime_id`. With `wait`, return once
/// it is ready or ended.
pub async fn start(site: &Arc<Site>, user: &User, runtime_id: &str, wait: bool) -> Result<Session> {
    let rt = match runtime::repo::get(&site.db, runtime_id) {
        Ok(rt) => rt,
        Err(e @ SiteError::NotFound(_)) => return Err(SiteError::missing_as("runtimeId", e)),
        Err(e) => return Err(e),
    };
    if rt.disabled {
        return Err(SiteError::conflict(
            Some("runtimeId"),
            format!("runtime {} is disabled", rt.name),
        ));
    }
    if rt.requires_advanced_privileges && !user.has_advanced() {
        return Err(SiteError::Forbidden(format!(
            "runtime {} requires the advanced privilege, which {} does not hold",
            rt.name, user.name
        )));
    }
    site.backend.refuse(&Limits::of_runtime(&rt))?;
    let lock = lock_for(site, user.id, &rt.id);
    let guard = lock.lock().await;
    let (session, task) = match active_for(site, user.id, &rt.id)? {
        // A running session of a runtime deprecated since keeps going.
        Some(s) => {
            let task = tokio::spawn(wait_ready(site.clone(), s.id.clone()));
            (s, task)
        }
        None => {
            if rt.deprecated {
                return Err(SiteError::conflict(
                    Some("runtimeId"),
                    format!(
                        "runtime {} is deprecated: it takes no new sessions (running ones keep \
                         going); use the runtime that replaces it",
                        rt.name
                    ),
                ));
            }
            // A warm session of the runtime's pool, when one is ready: no container start.
            if let Some(s) = pool::take(site, user, &rt).await? {
                return Ok(s);
            }
            let s = create(site, user, &rt)?;
            let task = tokio::spawn(launch(site.clone(), s.id.clone(), user.name.clone(), rt));
            (s, task)
        }
    };
    drop(guard);
    if wait {
        task.await
            .map_err(|e| SiteError::Internal(format!("readiness task: {e}")))??;
    }
    get(site, &session.id)?.ok_or_else(|| SiteError::NotFound(format!("no session {}", session.id)))
}

/// The session's record, `starting` while its image and container are made (see [`launch`]).
fn create(site: &Site, user: &User, rt: &Runtime) -> Result<Session> {
    let id = new_id()?;
    let token = random_hex(24)?;
    let name = container_name(site, &user.name, &rt.id);
    let now = now_ms();
    site.db.with(|c| {
        c.execute(
            "INSERT INTO sessions (id, user_id, runtime_id, container_name, token, state, message,
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                user.id,
                rt.id,
                name,
                token,
                SessionState::Starting,
                "preparing the image",
                now
            ],
        )
    })?;
    get(site, &id)?.ok_or_else(|| SiteError::Internal(format!("session {id} vanished")))
}

/// What a session shows while its image is on its way (`loading image 40% (120 of 300 MB)`),
/// from the backend's progress; `None` before any bar knows its size.
pub fn image_progress_message(bars: &[nbrt_oci::progress::BarState]) -> Option<String> {
    let bar = bars.iter().rev().find(|b| b.percent().is_some())?;
    let verb = match bar.label.as_str() {
        "pushing" => "pushing image to the site registry",
        _ => "loading image",
    };
    let mb = |b: u64| b / (1024 * 1024);
    Some(format!(
        "{verb} {}% ({} of {} MB)",
        bar.percent()?,
        mb(bar.done),
        mb(bar.total?)
    ))
}

fn set_message(site: &Site, id: &str, message: &str) -> Result<bool> {
    let n = site.db.with(|c| {
        c.execute(
            "UPDATE sessions SET message = ?2 WHERE id = ?1 AND state = ?3",
            params![id, message, SessionState::Starting],
        )
    })?;
    Ok(n > 0)
}

/// Bring a new session up: its image where the engine runs it (a load's progress shown in
/// the session's message), the user's home, the container; then wait until it is ready. A
/// failure ends the session `failed` with the engine's words, and is returned.
async fn launch(site: Arc<Site>, id: String, user: String, rt: Runtime) -> Result<()> {
    match launch_container(&site, &id, &user, &rt).await {
        Ok(true) => wait_ready(site, id).await,
        Ok(false) => Ok(()),
        Err(e) => {
            let msg = match &e {
                SiteError::Engine(m) => m.clone(),
                other => other.to_string(),
            };
            tracing::warn!("session {id}: {msg}");
            end(&site, &id, SessionState::Failed, &msg, false)?;
            Err(e)
        }
    }
}

/// [`launch`] up to the container's start; `false` when the session was stopped meanwhile.
async fn launch_container(site: &Arc<Site>, id: &str, user: &str, rt: &Runtime) -> Result<bool> {
    let store = site.open_store()?;
    let progress = crate::backend::ImageProgress::watched();
    let ticker = {
        let (site, id, progress) = (site.clone(), id.to_string(), progress.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Some(msg) = image_progress_message(&progress.snapshot()) {
                    if msg != last && set_message(&site, &id, &msg).is_ok() {
                        last = msg;
                    }
                }
            }
        })
    };
    let image = site
        .backend
        .ensure_image(store.as_ref(), rt, &progress)
        .await;
    ticker.abort();
    let image = image?;
    drop(store);
    let home = site.backend.ensure_home(&site.site_id, user).await?;
    if !set_message(site, id, "starting the container")? {
        return Ok(false);
    }
    let Some(session) = get(site, id)? else {
        return Ok(false);
    };
    let spec = SessionSpec {
        site_id: site.site_id.clone(),
        session_id: id.to_string(),
        name: session.container_name.clone(),
        user: user.to_string(),
        runtime: rt.clone(),
        token: session.token.clone(),
        image,
        home,
        prefix: prefix(user, &rt.id),
        home_slot: None,
        // The site's and the runtime's session environment (variables and files).
        session_env: crate::session_env::for_session(site, &rt.id)?,
    };
    let handle = site.backend.launch(&spec).await?;
    site.db.with(|c| {
        c.execute(
            "UPDATE sessions SET container_id = ?2 WHERE id = ?1",
            params![id, handle.0],
        )
    })?;
    // Stopped while it was being made: what was made goes too.
    if get(site, id)?.is_none_or(|s| !s.is_active()) {
        site.backend.stop(&handle, STOP_GRACE).await?;
        return Ok(false);
    }
    tracing::info!(
        "session {id}: started {} on {} for {user} on {}",
        spec.name,
        site.backend.kind(),
        rt.name
    );
    Ok(true)
}

/// The engine's handle of a session: its container (or service) ID, else its name.
pub(crate) fn handle_of(s: &Session) -> Handle {
    Handle(
        s.container_id
            .clone()
            .unwrap_or_else(|| s.container_name.clone()),
    )
}

fn oom_message(rt: Option<&Runtime>) -> String {
    match rt {
        Some(rt) => format!(
            "out of memory: a process went past the runtime's memory limit ({} {}), the kernel \
             killed it and the site stopped the session",
            rt.max_memory, rt.max_memory_unit
        ),
        None => "out of memory: a process went past the memory limit and was killed".to_string(),
    }
}

/// The state a session ends in, from what the backend tells of its end.
pub fn state_of(ended: &Ended) -> SessionState {
    if ended.oom {
        SessionState::OomKilled
    } else {
        SessionState::Failed
    }
}

/// Settle a session whose container is not running (or was OOM-killed).
fn settle(site: &Site, s: &Session, ended: &Ended) -> Result<()> {
    if state_of(ended) == SessionState::OomKilled {
        let rt = runtime::repo::get(&site.db, &s.runtime_id).ok();
        end(
            site,
            &s.id,
            SessionState::OomKilled,
            &oom_message(rt.as_ref()),
            true,
        )?;
    } else {
        end(site, &s.id, SessionState::Failed, &ended.message, false)?;
    }
    Ok(())
}

/// How often readiness polls (`<prefix>/api` for Jupyter) once the container has an address, and how
/// often the container itself is inspected meanwhile (exits are also caught by the watcher).
const READY_POLL: Duration = Duration::from_millis(20);
const READY_INSPECT: Duration = Duration::from_millis(500);

/// Wait until the session's container runs and its readiness path answers (`<prefix>/api`
/// for Jupyter; any status below 500, as JupyterHub does), or until it ends or the start
/// timeout passes.
pub async fn wait_ready(site: Arc<Site>, id: String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + site.config.start_timeout;
    let mut addr: Option<String> = None;
    let mut inspected: Option<tokio::time::Instant> = None;
    let mut pending = String::new();
    loop {
        let Some(s) = get(&site, &id)? else {
            return Ok(());
        };
        if s.state != SessionState::Starting {
            return Ok(());
        }
        let Some(cid) = s.container_id.clone() else {
            // Its image and container are still being made (see `launch`), which ends it if
            // that fails.
            tokio::time::sleep(READY_INSPECT).await;
            continue;
        };
        let handle = Handle(cid);
        if addr.is_none() || inspected.is_none_or(|t| t.elapsed() >= READY_INSPECT) {
            let observed = site.backend.observe(&handle).await?;
            inspected = Some(tokio::time::Instant::now());
            addr = match observed {
                Observed::Gone => {
                    end(
                        &site,
                        &id,
                        SessionState::Failed,
                        "the container disappeared while starting",
                        false,
                    )?;
                    return Ok(());
                }
                Observed::Ended(ended) => {
                    settle(&site, &s, &ended)?;
                    if ended.oom {
                        site.backend.kill(&handle).await?;
                    }
                    return Ok(());
                }
                Observed::Pending { reason } => {
                    if reason != pending {
                        // What the engine is waiting for, shown while the session starts.
                        site.db.with(|c| {
                            c.execute(
                                "UPDATE sessions SET message = ?2 WHERE id = ?1 AND state = ?3",
                                params![id, reason, SessionState::Starting],
                            )
                        })?;
                        pending = reason;
                    }
                    None
                }
                Observed::Running { address } => address,
            };
        }
        if let Some(addr) = &addr {
            let url = format!("http://{addr}{}", s.http.ready_upstream_path(&s.prefix));
            if let Ok(code) = crate::proxy::get_status(&site.http, &url, None).await {
                if code < 500 {
                    let now = now_ms();
                    let changed = site.db.with(|c| {
                        c.execute(
                            "UPDATE sessions SET state = ?4, ready_at = ?2, address = ?3,
                             last_activity = COALESCE(last_activity, ?2), message = ''
                             WHERE id = ?1 AND state = ?5",
                            params![id, now, addr, SessionState::Ready, SessionState::Starting],
                        )
                    })?;
                    // A first start (an adopted session was ready before: not a start).
                    if changed > 0 && s.ready.is_none() {
                        let secs = (now - s.created).max(0) as f64 / 1000.0;
                        site.metrics.start_seconds.observe(secs);
                    }
                    tracing::info!("session {id}: ready at {addr}");
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            let mut msg = format!(
                "the notebook server did not answer {} within {} s",
                s.http.ready_upstream_path(&s.prefix),
                site.config.start_timeout.as_secs()
            );
            if addr.is_none() && !pending.is_empty() {
                msg.push_str(&format!(" (still pending: {pending})"));
            }
            end(&site, &id, SessionState::Failed, &msg, false)?;
            site.backend.stop(&handle, STOP_GRACE).await.ok();
            return Ok(());
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Stop a session: its container is removed, its home volume kept.
pub async fn stop(site: &Site, s: &Session, state: SessionState, message: &str) -> Result<()> {
    end(site, &s.id, state, message, false)?;
    site.backend.stop(&handle_of(s), STOP_GRACE).await?;
    if s.prefix == pool::warm_prefix(&s.id) {
        pool::release_slot_of(site, &s.id).await;
    }
    Ok(())
}

/// After an out-of-memory event: record it and stop the whole container.
async fn handle_oom(site: &Site, session_id: &str, handle: &Handle) -> Result<()> {
    let Some(s) = get(site, session_id)? else {
        return Ok(());
    };
    let rt = runtime::repo::get(&site.db, &s.runtime_id).ok();
    if end(
        site,
        &s.id,
        SessionState::OomKilled,
        &oom_message(rt.as_ref()),
        true,
    )? {
        tracing::warn!("session {}: out of memory, stopping its container", s.id);
        site.backend.kill(handle).await?;
    }
    Ok(())
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Sessions whose running containers were taken over.
    pub adopted: Vec<String>,
    /// Containers with this site's label and no live session: removed.
    pub removed_orphans: Vec<String>,
    /// Sessions whose containers had stopped or vanished while the server was down.
    pub ended: Vec<String>,
}

/// Take over this site's containers (or services) after a (re)start — those an earlier
/// version labelled the old way too.
pub async fn reconcile(site: &Arc<Site>) -> Result<ReconcileReport> {
    let mut report = ReconcileReport::default();
    let mut seen = std::collections::HashSet::new();
    for owned in site.backend.list_owned(&site.site_id).await? {
        let cid = owned.handle.0.clone();
        let session = match &owned.session {
            Some(sid) => get(site, sid)?,
            None => None,
        };
        match session {
            Some(s) if s.is_active() && !seen.contains(&s.id) => {
                seen.insert(s.id.clone());
                if s.container_id.as_deref() != Some(cid.as_str()) {
                    site.db.with(|db| {
                        db.execute(
                            "UPDATE sessions SET container_id = ?2 WHERE id = ?1",
                            params![s.id, cid],
                        )
                    })?;
                }
                match site.backend.observe(&owned.handle).await? {
                    Observed::Gone => continue,
                    Observed::Ended(ended) if ended.oom => {
                        handle_oom(site, &s.id, &owned.handle).await?;
                        report.ended.push(s.id.clone());
                    }
                    Observed::Ended(ended) => {
                        settle(site, &s, &ended)?;
                        report.ended.push(s.id.clone());
                    }
                    Observed::Running { .. } | Observed::Pending { .. } => {
                        // Re-check readiness (the address may be new if the engine restarted).
                        site.db.with(|db| {
                            db.execute(
                                "UPDATE sessions SET state = ?2 WHERE id = ?1 AND state = ?3",
                                params![s.id, SessionState::Starting, SessionState::Ready],
                            )
                        })?;
                        report.adopted.push(s.id.clone());
                        tokio::spawn(wait_ready(site.clone(), s.id.clone()));
                    }
                }
            }
            _ => {
                tracing::info!(
                    "removing orphan {cid} ({}, session {:?})",
                    owned.status,
                    owned.session
                );
                site.backend.stop(&owned.handle, Duration::ZERO).await?;
                report.removed_orphans.push(cid);
            }
        }
    }
    for s in list(site, None, false)? {
        if !seen.contains(&s.id) {
            end(
                site,
                &s.id,
                SessionState::Failed,
                "the container was gone when the server started",
                false,
            )?;
            report.ended.push(s.id);
        }
    }
    Ok(report)
}

/// Follow the backend's events for this site's sessions: OOM kills and ends.
pub fn spawn_watcher(site: Arc<Site>) {
    tokio::spawn(async move {
        let mut events = site.backend.watch(&site.site_id);
        while let Some(ev) = events.next().await {
            let (sid, result) = match ev {
                BackendEvent::Oom { session, handle } => {
                    let r = handle_oom(&site, &session, &handle).await;
                    (session, r)
                }
                BackendEvent::Ended { session, handle } => {
                    let r = on_end(&site, &session, &handle).await;
                    (session, r)
                }
            };
            if let Err(e) = result {
                tracing::warn!("session {sid}: {e}");
            }
        }
    });
}

async fn on_end(site: &Site, sid: &str, handle: &Handle) -> Result<()> {
    let Some(s) = get(site, sid)? else {
        return Ok(());
    };
    if !s.is_active() {
        return Ok(());
    }
    match site.backend.observe(handle).await? {
        Observed::Ended(ended) => settle(site, &s, &ended),
        Observed::Gone => {
            end(
                site,
                sid,
                SessionState::Failed,
                "the container disappeared",
                false,
            )?;
            Ok(())
        }
        Observed::Running { .. } | Observed::Pending { .. } => Ok(()),
    }
}

#[derive(serde::Deserialize)]
struct Kernel {
    #[serde(default)]
    last_activity: Option<String>,
    #[serde(default)]
    execution_state: Option<String>,
}

/// Kubeflow's rule on `/api/kernels`: a kernel that is not idle is activity now; otherwise
/// the newest kernel `last_activity`; no kernels, or no answer, changes nothing.
pub fn kernel_activity(body: &[u8], now: i64) -> Option<i64> {
    let kernels: Vec<Kernel> = serde_json::from_slice(body).ok()?;
    let mut newest: Option<i64> = None;
    for k in &kernels {
        if k.execution_state.as_deref().is_some_and(|s| s != "idle") {
            return Some(now);
        }
        if let Some(t) = k.last_activity.as_deref().and_then(parse_time) {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    }
    newest
}

fn parse_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// How often a request through the proxy counts as a web application's activity.
const TOUCH_EVERY_MS: i64 = 30_000;

/// A request through the proxy to a session whose server is not Jupyter: activity for the
/// culler (a Jupyter server's comes from its kernels). Written at most every
/// [`TOUCH_EVERY_MS`].
pub fn touch(site: &Site, s: &Session) -> Result<()> {
    let now = now_ms();
    if s.http.is_jupyter() || s.last_activity.is_some_and(|t| now - t < TOUCH_EVERY_MS) {
        return Ok(());
    }
    site.db.with(|c| {
        c.execute(
            "UPDATE sessions SET last_activity = ?2 WHERE id = ?1",
            params![s.id, now],
        )
    })?;
    Ok(())
}

/// Check every ready session's kernels and stop those idle past the threshold.
/// When the culler stops `s` if its kernels stay idle: its last kernel activity (else the
/// time it became ready) plus the idle limit. `None` when culling is off or `s` is not
/// ready. The culler checks every `cull_interval`, so it may come up to that much later.
pub fn cull_at(site: &Site, s: &Session) -> Option<i64> {
    let idle = site.config.cull_idle_timeout?;
    if s.state != SessionState::Ready {
        return None;
    }
    Some(s.last_activity.or(s.ready)? + idle.as_millis() as i64)
}

pub async fn cull_once(site: &Site) -> Result<Vec<String>> {
    let Some(idle) = site.config.cull_idle_timeout else {
        return Ok(Vec::new());
    };
    let mut culled = Vec::new();
    for s in list(site, None, false)? {
        if s.state != SessionState::Ready {
            continue;
        }
        let Some(addr) = &s.address else { continue };
        let now = now_ms();
        let url = format!("http://{addr}{}/api/kernels", s.prefix);
        let auth = format!("token {}", s.token);
        // Another web application has no kernels: its activity is what the proxy passes it
        // (see `touch`).
        let kernels = match s.http.is_jupyter() {
            true => crate::proxy::get_body(&site.http, &url, Some(&auth))
                .await
                .ok(),
            false => None,
        };
        if let Some((200, body)) = kernels {
            if let Some(t) = kernel_activity(&body, now) {
                if Some(t) > s.last_activity {
                    site.db.with(|c| {
                        c.execute(
                            "UPDATE sessions SET last_activity = ?2 WHERE id = ?1",
                            params![s.id, t],
                        )
                    })?;
                }
            }
        }
        let fresh = get(site, &s.id)?;
        let last = fresh
            .as_ref()
            .and_then(|s| s.last_activity.or(s.ready))
            .unwrap_or(now);
        if fresh
            .as_ref()
            .and_then(|f| cull_at(site, f))
            .is_some_and(|due| now > due)
        {
            let msg = format!(
                "culled: no kernel activity for {} s (threshold {} s)",
                (now - last) / 1000,
                idle.as_secs()
            );
            stop(site, &s, SessionState::Culled, &msg).await?;
            tracing::info!("session {}: {msg}", s.id);
            crate::audit::record_site(
                site,
                "session.cull",
                Some(&s.id),
                serde_json::json!({"user": s.user, "runtimeId": s.runtime_id, "message": msg}),
            );
            culled.push(s.id.clone());
        }
    }
    Ok(culled)
}

pub fn spawn_culler(site: Arc<Site>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(site.config.cull_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = cull_once(&site).await {
                tracing::warn!("culling: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_progress_is_a_percentage() {
        use nbrt_oci::progress::BarState;
        let bar = |label: &str, done, total| BarState {
            label: label.into(),
            done,
            total,
        };
        assert_eq!(image_progress_message(&[]), None);
        assert_eq!(image_progress_message(&[bar("reading", 5, None)]), None);
        let mb = 1024 * 1024;
        assert_eq!(
            image_progress_message(&[bar("copying", 120 * mb, Some(300 * mb))]).as_deref(),
            Some("loading image 40% (120 of 300 MB)")
        );
        assert_eq!(
            image_progress_message(&[bar("pushing", 1, Some(4))]).as_deref(),
            Some("pushing image to the site registry 25% (0 of 0 MB)")
        );
    }

    #[test]
    fn activity_rule() {
        let now = 1_700_000_000_000;
        let busy =
            br#"[{"id":"a","execution_state":"busy","last_activity":"2020-01-01T00:00:00Z"}]"#;
        assert_eq!(kernel_activity(busy, now), Some(now));
        let idle = br#"[{"execution_state":"idle","last_activity":"2023-11-14T22:13:20.000000Z"},
                        {"execution_state":"idle","last_activity":"2023-11-14T22:00:00Z"}]"#;
        assert_eq!(kernel_activity(idle, now), Some(1_700_000_000_000));
        assert_eq!(kernel_activity(b"[]", now), None);
        assert_eq!(kernel_activity(b"not json", now), None);
    }
}
