//! Sessions: one container per (user, runtime) on the Docker engine, with the runtime's
//! limits, found again by labels, reached through the proxy, culled when idle. Their states
//! are [`SessionState`]s.
//!
//! Containers and home volumes carry `nbrt_oci::label`'s keys ([`label::SITE`],
//! [`label::SESSION`], [`label::SESSION_USER`], [`label::SESSION_RUNTIME`]) under their
//! `io.nbrt.` names; containers an earlier version started carry the `org.nbrt.` names and
//! are still found (every engine filter looks for both) and read ([`label::Key::get`]).

pub mod state;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerInspectResponse, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, KillContainerOptions, ListContainersOptions,
};
use futures_util::StreamExt;
use nbrt_oci::label;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::auth::User;
use crate::db::{new_id, now_ms, random_hex};
use crate::error::{Result, SiteError};
use crate::runtime::{self, Runtime};
use crate::Site;

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
    /// Where the user opens it: `/user/<name>/<runtime>/`.
    pub url: String,
    pub created: i64,
    pub ready: Option<i64>,
    pub ended: Option<i64>,
    pub last_activity: Option<i64>,
    pub oom_killed: bool,
    #[serde(skip)]
    pub token: String,
    #[serde(skip)]
    pub address: Option<String>,
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
    s.oom_killed, s.token, s.address FROM sessions s JOIN users u ON u.id = s.user_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Session> {
    let user: String = r.get(1)?;
    let runtime_id: String = r.get(3)?;
    Ok(Session {
        id: r.get(0)?,
        url: format!("{}/", prefix(&user, &runtime_id)),
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
    Ok(n > 0)
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

async fn remove_container(site: &Site, name_or_id: &str) -> Result<()> {
    engine(site).remove(name_or_id).await.map_err(engine_err)
}

/// The site's Docker engine as `nbrt_oci` speaks to it (the calls it shares with the checks
/// and the kernel specs).
fn engine(site: &Site) -> nbrt_oci::Engine {
    nbrt_oci::Engine::from_client(site.docker.clone())
}

/// An engine failure is the engine's (502); anything else (the store) is the store's.
fn engine_err(e: nbrt_oci::OciError) -> SiteError {
    match e {
        nbrt_oci::OciError::Engine(m) => SiteError::Engine(m),
        other => SiteError::Store(other),
    }
}

async fn ensure_image(site: &Site, image_id: &str) -> Result<()> {
    let engine = engine(site);
    let in_store = match site.open_store()? {
        Some(store) => store.resolve(image_id).map(|found| (store, found)),
        None => Err(nbrt_oci::OciError::NotFound(image_id.to_string())),
    };
    let (store, found) = match in_store {
        Ok(found) => found,
        Err(e) => {
            if engine.image(image_id).await.map_err(engine_err)?.is_some() {
                return Ok(());
            }
            return Err(e.into());
        }
    };
    let name = nbrt_oci::engine::engine_name(&found.image, &found.names);
    let ensured = engine
        .ensure(&store, &found.image, &name)
        .await
        .map_err(engine_err)?;
    if ensured.loaded {
        tracing::info!("loaded {image_id} from the store into the Docker engine as {name}");
    }
    Ok(())
}

fn home_volume(site: &Site, user: &str) -> String {
    format!("nbrt-{}-home-{user}", site.site_id)
}

fn container_name(site: &Site, user: &str, runtime_id: &str) -> String {
    let short: String = runtime_id.chars().filter(|c| *c != '-').take(12).collect();
    format!("nbrt-{}-{user}-{short}", site.site_id)
}

async fn ensure_volume(site: &Site, user: &str) -> Result<String> {
    let name = home_volume(site, user);
    let labels = HashMap::from([
        (label::SITE.name.to_string(), site.site_id.clone()),
        (label::SESSION_USER.name.to_string(), user.to_string()),
    ]);
    // Creating an existing named volume is a no-op that returns it.
    site.docker
        .create_volume(bollard::models::VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map_err(SiteError::engine)?;
    Ok(name)
}

/// The container a session runs in: the runtime's limits, labels, `NB_PREFIX`, the session's
/// token, the home volume — and nothing from the server's own environment.
pub fn container_spec(
    site: &Site,
    user: &User,
    rt: &Runtime,
    session_id: &str,
    token: &str,
    volume: &str,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (label::SITE.name.to_string(), site.site_id.clone()),
        (label::SESSION.name.to_string(), session_id.to_string()),
        (label::SESSION_USER.name.to_string(), user.name.clone()),
        (label::SESSION_RUNTIME.name.to_string(), rt.id.clone()),
    ]);
    let env = vec![
        format!("NB_PREFIX={}", prefix(&user.name, &rt.id)),
        format!("JUPYTER_TOKEN={token}"),
        format!("JUPYTER_PORT={PORT}"),
        "NBRT_AUTH=token".to_string(),
    ];
    // A runtime that requires the advanced privilege may use sudo/setuid inside (only users
    // holding the privilege get here); every other session runs with no-new-privileges.
    let security_opt = if rt.requires_advanced_privileges {
        None
    } else {
        Some(vec!["no-new-privileges:true".to_string()])
    };
    ContainerCreateBody {
        image: Some(rt.image_id.clone()),
        env: Some(env),
        labels: Some(labels),
        host_config: Some(HostConfig {
            nano_cpus: Some(rt.nano_cpus()),
            memory: Some(rt.memory_bytes()),
            memory_swap: Some(rt.swap_bytes()),
            shm_size: rt.shm_bytes(),
            runtime: rt.docker_runtime.clone(),
            binds: Some(vec![format!("{volume}:{HOME}")]),
            security_opt,
            privileged: Some(false),
            network_mode: Some(
                site.config
                    .network
                    .clone()
                    .unwrap_or_else(|| "bridge".to_string()),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

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
        Err(SiteError::NotFound(m)) => return Err(SiteError::invalid("runtimeId", m)),
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
    let lock = lock_for(site, user.id, &rt.id);
    let guard = lock.lock().await;
    let session = match active_for(site, user.id, &rt.id)? {
        Some(s) => s,
        None => create(site, user, &rt).await?,
    };
    drop(guard);
    let task = tokio::spawn(wait_ready(site.clone(), session.id.clone()));
    if wait {
        task.await
            .map_err(|e| SiteError::Internal(format!("readiness task: {e}")))??;
    }
    get(site, &session.id)?.ok_or_else(|| SiteError::NotFound(format!("no session {}", session.id)))
}

async fn create(site: &Arc<Site>, user: &User, rt: &Runtime) -> Result<Session> {
    ensure_image(site, &rt.image_id).await?;
    let volume = ensure_volume(site, &user.name).await?;
    let id = new_id()?;
    let token = random_hex(24)?;
    let name = container_name(site, &user.name, &rt.id);
    let now = now_ms();
    site.db.with(|c| {
        c.execute(
            "INSERT INTO sessions (id, user_id, runtime_id, container_name, token, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, user.id, rt.id, name, token, SessionState::Starting, now],
        )
    })?;
    // A container left by an ended session of the same user and runtime.
    remove_container(site, &name).await?;
    let spec = container_spec(site, user, rt, &id, &token, &volume);
    let created = site
        .docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            spec,
        )
        .await;
    let container_id = match created {
        Ok(c) => c.id,
        Err(e) => {
            let msg = format!("creating the container failed: {e}");
            end(site, &id, SessionState::Failed, &msg, false)?;
            return Err(SiteError::Engine(msg));
        }
    };
    site.db.with(|c| {
        c.execute(
            "UPDATE sessions SET container_id = ?2 WHERE id = ?1",
            params![id, container_id],
        )
    })?;
    if let Err(e) = site.docker.start_container(&container_id, None).await {
        let msg = format!("starting the container failed: {e}");
        end(site, &id, SessionState::Failed, &msg, false)?;
        remove_container(site, &container_id).await.ok();
        return Err(SiteError::Engine(msg));
    }
    tracing::info!(
        "session {id}: started container {name} for {} on {}",
        user.name,
        rt.name
    );
    get(site, &id)?.ok_or_else(|| SiteError::Internal(format!("session {id} vanished")))
}

fn container_address(site: &Site, info: &ContainerInspectResponse) -> Option<String> {
    let net = site.config.network.as_deref().unwrap_or("bridge");
    let nets = info.network_settings.as_ref()?.networks.as_ref()?;
    let ep = nets.get(net).or_else(|| nets.values().next())?;
    let ip = ep.ip_address.as_deref().filter(|ip| !ip.is_empty())?;
    Some(format!("{ip}:{PORT}"))
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

/// Settle a session whose container is not running (or was OOM-killed).
async fn settle_stopped_container(
    site: &Site,
    s: &Session,
    info: &ContainerInspectResponse,
) -> Result<()> {
    let state = info.state.as_ref();
    let oom = state.and_then(|s| s.oom_killed).unwrap_or(false);
    if oom {
        let rt = runtime::repo::get(&site.db, &s.runtime_id).ok();
        end(
            site,
            &s.id,
            SessionState::OomKilled,
            &oom_message(rt.as_ref()),
            true,
        )?;
    } else {
        let code = state.and_then(|s| s.exit_code).unwrap_or(-1);
        let err = state
            .and_then(|s| s.error.clone())
            .filter(|e| !e.is_empty())
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        end(
            site,
            &s.id,
            SessionState::Failed,
            &format!("the container exited with code {code}{err}"),
            false,
        )?;
    }
    Ok(())
}

/// How often readiness polls `<prefix>/api` once the container has an address, and how
/// often the container itself is inspected meanwhile (exits are also caught by the watcher).
const READY_POLL: Duration = Duration::from_millis(20);
const READY_INSPECT: Duration = Duration::from_millis(500);

/// Wait until the session's container runs and `<prefix>/api` answers (any status below
/// 500, as JupyterHub does), or until it ends or the start timeout passes.
pub async fn wait_ready(site: Arc<Site>, id: String) -> Result<()> {
    let deadline = tokio::time::Instant::now() + site.config.start_timeout;
    let mut addr: Option<String> = None;
    let mut inspected: Option<tokio::time::Instant> = None;
    loop {
        let Some(s) = get(&site, &id)? else {
            return Ok(());
        };
        if s.state != SessionState::Starting {
            return Ok(());
        }
        let Some(cid) = s.container_id.clone() else {
            return Ok(());
        };
        if addr.is_none() || inspected.is_none_or(|t| t.elapsed() >= READY_INSPECT) {
            let info = match site.docker.inspect_container(&cid, None).await {
                Ok(i) => i,
                Err(e) if is_404(&e) => {
                    end(
                        &site,
                        &id,
                        SessionState::Failed,
                        "the container disappeared while starting",
                        false,
                    )?;
                    return Ok(());
                }
                Err(e) => return Err(SiteError::engine(e)),
            };
            inspected = Some(tokio::time::Instant::now());
            let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
            let status = info.state.as_ref().and_then(|s| s.status);
            if !running
                && !matches!(
                    status,
                    Some(bollard::models::ContainerStateStatusEnum::CREATED)
                )
            {
                settle_stopped_container(&site, &s, &info).await?;
                return Ok(());
            }
            addr = if running {
                container_address(&site, &info)
            } else {
                None
            };
        }
        if let Some(addr) = &addr {
            let url = format!("http://{addr}{}/api", prefix(&s.user, &s.runtime_id));
            if let Ok(code) = crate::proxy::get_status(&site.http, &url, None).await {
                if code < 500 {
                    let now = now_ms();
                    site.db.with(|c| {
                        c.execute(
                            "UPDATE sessions SET state = ?4, ready_at = ?2, address = ?3,
                             last_activity = COALESCE(last_activity, ?2), message = ''
                             WHERE id = ?1 AND state = ?5",
                            params![id, now, addr, SessionState::Ready, SessionState::Starting],
                        )
                    })?;
                    tracing::info!("session {id}: ready at {addr}");
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            let msg = format!(
                "the notebook server did not answer {}/api within {} s",
                prefix(&s.user, &s.runtime_id),
                site.config.start_timeout.as_secs()
            );
            end(&site, &id, SessionState::Failed, &msg, false)?;
            remove_container(&site, &cid).await.ok();
            return Ok(());
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Stop a session: its container is removed, its home volume kept.
pub async fn stop(site: &Site, s: &Session, state: SessionState, message: &str) -> Result<()> {
    end(site, &s.id, state, message, false)?;
    if let Some(cid) = &s.container_id {
        remove_container(site, cid).await?;
    } else {
        remove_container(site, &s.container_name).await?;
    }
    Ok(())
}

/// After an out-of-memory event: record it and stop the whole container.
async fn handle_oom(site: &Site, session_id: &str, container: &str) -> Result<()> {
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
        match site
            .docker
            .kill_container(
                container,
                Some(KillContainerOptions {
                    signal: "SIGKILL".into(),
                }),
            )
            .await
        {
            Ok(()) => {}
            Err(e) if is_404(&e) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(SiteError::engine(e)),
        }
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

/// The engine's label filters for this site's containers, `<key>=<site id>`: one for the
/// site label's name and one for the name earlier versions wrote. Each is its own query —
/// a filter listing two labels wants both on one container.
fn site_label_filters(site: &Site) -> Vec<String> {
    [Some(label::SITE.name), label::SITE.old]
        .into_iter()
        .flatten()
        .map(|key| format!("{key}={}", site.site_id))
        .collect()
}

/// Take over this site's containers after a (re)start — those an earlier version labelled
/// the old way too.
pub async fn reconcile(site: &Arc<Site>) -> Result<ReconcileReport> {
    let mut report = ReconcileReport::default();
    let mut containers = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for filter in site_label_filters(site) {
        let found = site
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
                ..Default::default()
            }))
            .await
            .map_err(SiteError::engine)?;
        for c in found {
            if let Some(cid) = c.id.clone() {
                if listed.insert(cid.clone()) {
                    containers.push((cid, c));
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (cid, c) in containers {
        let sid = c
            .labels
            .as_ref()
            .and_then(|l| label::SESSION.get(l))
            .unwrap_or_default()
            .to_string();
        let session = if sid.is_empty() {
            None
        } else {
            get(site, &sid)?
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
                let info = match site.docker.inspect_container(&cid, None).await {
                    Ok(i) => i,
                    Err(e) if is_404(&e) => continue,
                    Err(e) => return Err(SiteError::engine(e)),
                };
                let st = info.state.as_ref();
                let running = st.and_then(|s| s.running).unwrap_or(false);
                let oom = st.and_then(|s| s.oom_killed).unwrap_or(false);
                if running && oom {
                    handle_oom(site, &s.id, &cid).await?;
                    report.ended.push(s.id.clone());
                } else if running {
                    // Re-check readiness (the address may be new if the engine restarted).
                    site.db.with(|db| {
                        db.execute(
                            "UPDATE sessions SET state = ?2 WHERE id = ?1 AND state = ?3",
                            params![s.id, SessionState::Starting, SessionState::Ready],
                        )
                    })?;
                    report.adopted.push(s.id.clone());
                    tokio::spawn(wait_ready(site.clone(), s.id.clone()));
                } else {
                    settle_stopped_container(site, &s, &info).await?;
                    report.ended.push(s.id.clone());
                }
            }
            _ => {
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                tracing::info!("removing orphan container {cid} ({state}, session {sid:?})");
                remove_container(site, &cid).await?;
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

/// Follow the engine's events for this site's containers: OOM kills and exits.
pub fn spawn_watcher(site: Arc<Site>) {
    tokio::spawn(async move {
        loop {
            // One stream per name of the site label (see `site_label_filters`), merged.
            let streams = site_label_filters(&site).into_iter().map(|filter| {
                let filters = HashMap::from([
                    ("type".to_string(), vec!["container".to_string()]),
                    ("label".to_string(), vec![filter]),
                    (
                        "event".to_string(),
                        vec!["oom".to_string(), "die".to_string()],
                    ),
                ]);
                Box::pin(site.docker.events(Some(EventsOptions {
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
                let Some(cid) = actor.id else { continue };
                let attrs = actor.attributes.unwrap_or_default();
                let Some(sid) = label::SESSION.get(&attrs).map(str::to_string) else {
                    continue;
                };
                let result = match ev.action.as_deref() {
                    Some("oom") => handle_oom(&site, &sid, &cid).await,
                    Some("die") => on_die(&site, &sid, &cid).await,
                    _ => Ok(()),
                };
                if let Err(e) = result {
                    tracing::warn!("session {sid}: {e}");
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn on_die(site: &Site, sid: &str, cid: &str) -> Result<()> {
    let Some(s) = get(site, sid)? else {
        return Ok(());
    };
    if !s.is_active() {
        return Ok(());
    }
    match site.docker.inspect_container(cid, None).await {
        Ok(info) => settle_stopped_container(site, &s, &info).await,
        Err(e) if is_404(&e) => {
            end(
                site,
                sid,
                SessionState::Failed,
                "the container disappeared",
                false,
            )?;
            Ok(())
        }
        Err(e) => Err(SiteError::engine(e)),
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

/// Check every ready session's kernels and stop those idle past the threshold.
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
        let url = format!(
            "http://{addr}{}/api/kernels",
            prefix(&s.user, &s.runtime_id)
        );
        let auth = format!("token {}", s.token);
        if let Ok((200, body)) = crate::proxy::get_body(&site.http, &url, Some(&auth)).await {
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
        let last = get(site, &s.id)?
            .and_then(|s| s.last_activity.or(s.ready))
            .unwrap_or(now);
        if now - last > idle.as_millis() as i64 {
            let msg = format!(
                "culled: no kernel activity for {} s (threshold {} s)",
                (now - last) / 1000,
                idle.as_secs()
            );
            stop(site, &s, SessionState::Culled, &msg).await?;
            tracing::info!("session {}: {msg}", s.id);
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
