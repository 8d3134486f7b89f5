//! Warm pools: a runtime can keep N sessions started before anyone asks (`warmPool`); a
//! user's start takes a ready one instead of starting a container.
//!
//! A running Jupyter server cannot take a new base URL or token, so a warm session keeps
//! the ones it started with: its URL is `/warm/<session id>/` (the proxy sends the owner of
//! `/user/<name>/<runtime>/` there) and its token, which only the proxy uses, was made for
//! it alone. What a user brings is their home: a warm session's home directory is an empty
//! slot until a user takes it, and then the user's home volume is mounted there (see
//! [`crate::backend::home_slot`]). Nothing else of the user's is in it: a pool member is
//! started with the runtime's limits and the site's and runtime's session environment only,
//! serves one user, and is removed when that session ends — never handed to a second user.
//!
//! The keeper ([`spawn_keeper`]) refills pools, replaces members started from an older
//! runtime record or session environment, removes members of runtimes that no longer want a
//! pool, and releases the slots of ended sessions. Members are not in the database: after a
//! restart the site's reconcile removes them (their session label names no session) and the
//! keeper starts new ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{get, Session, SessionState, STOP_GRACE};
use crate::auth::User;
use crate::backend::{home_slot, Handle, HomeRef, Observed, SessionSpec};
use crate::db::{new_id, now_ms, random_hex};
use crate::error::{Result, SiteError};
use crate::runtime::{self, Runtime};
use crate::Site;

/// How often the keeper looks at the pools (and sooner when a member is taken).
const KEEP_INTERVAL: Duration = Duration::from_secs(2);

/// The URL prefix of a warm session.
pub fn warm_prefix(session_id: &str) -> String {
    format!("/warm/{session_id}")
}

/// One started session waiting for a user.
#[derive(Debug, Clone)]
struct Member {
    session_id: String,
    runtime_id: String,
    /// What it was started from (see [`fingerprint`]): a member of an older one is replaced.
    fingerprint: String,
    name: String,
    handle: Option<Handle>,
    token: String,
    slot: PathBuf,
    address: Option<String>,
    ready: bool,
    /// Being handed to a user ([`take`]): listed until its session is recorded, so its
    /// slot is not taken for an orphan meanwhile.
    taken: bool,
    /// When it was launched (ms): one that is not ready within the start timeout goes.
    launched: i64,
}

/// The site's warm sessions, and the directory their home slots are in.
#[derive(Default)]
pub struct Pools {
    members: Mutex<Vec<Member>>,
    wake: tokio::sync::Notify,
    root: tokio::sync::OnceCell<PathBuf>,
}

impl Pools {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member>> {
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Ready and starting warm sessions of a runtime.
    pub fn counts(&self, runtime_id: &str) -> (usize, usize) {
        let members = self.lock();
        let of = members
            .iter()
            .filter(|m| m.runtime_id == runtime_id && !m.taken);
        let ready = of.clone().filter(|m| m.ready).count();
        (ready, of.count() - ready)
    }
}

/// Where the slots are: `warm-homes` beside the database.
fn root_dir(site: &Site) -> PathBuf {
    site.config
        .database
        .parent()
        .map(|p| p.join("warm-homes"))
        .unwrap_or_else(|| PathBuf::from("warm-homes"))
}

/// Whether slots are left from an earlier start of the site (or this one).
fn slots_left(site: &Site) -> bool {
    std::fs::read_dir(root_dir(site)).is_ok_and(|mut d| d.next().is_some())
}

/// [`root_dir`], made a shared mount once.
async fn root(site: &Site) -> Result<&Path> {
    let dir = root_dir(site);
    site.pools
        .root
        .get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || home_slot::prepare_root(&dir))
                .await
                .map_err(|e| SiteError::Internal(format!("preparing warm homes: {e}")))?
        })
        .await
        .map(PathBuf::as_path)
}

/// Why this site cannot keep warm pools, if it cannot (a 409 naming `warmPool` at
/// registration).
pub fn refusal(site: &Site) -> Option<String> {
    site.backend.warm_pool_refusal()
}

/// What a runtime's members are started from: its image, limits and privilege, and the
/// session environment it gets (a change of the pool's size alone keeps the members).
fn fingerprint(site: &Site, rt: &Runtime) -> Result<String> {
    let env = crate::session_env::for_session(site, &rt.id)?;
    let limits = format!("{:?}", crate::backend::Limits::of_runtime(rt));
    let text = serde_json::json!([
        rt.id,
        rt.image_id,
        limits,
        rt.requires_advanced_privileges,
        env
    ])
    .to_string();
    Ok(hex::encode(Sha256::digest(text.as_bytes())))
}

/// Take a ready warm session of `rt` for `user`: the user's home mounted into it, its record
/// made `ready`. `None` when the runtime has no pool or no member is ready (the caller
/// starts a container), or when the member could not be handed over (it is removed).
pub async fn take(site: &Arc<Site>, user: &User, rt: &Runtime) -> Result<Option<Session>> {
    if rt.warm_pool == 0 {
        return Ok(None);
    }
    let taken_at = std::time::Instant::now();
    let created = now_ms();
    let fp = fingerprint(site, rt)?;
    let member = {
        let mut members = site.pools.lock();
        members
            .iter_mut()
            .find(|m| m.runtime_id == rt.id && m.ready && !m.taken && m.fingerprint == fp)
            .map(|m| {
                m.taken = true;
                m.clone()
            })
    };
    let Some(member) = member else {
        return Ok(None);
    };
    site.pools.wake.notify_one();
    let handed = hand_over(site, user, rt, &member, created).await;
    site.pools
        .lock()
        .retain(|m| m.session_id != member.session_id);
    match handed {
        Ok(()) => {
            let ms = taken_at.elapsed().as_secs_f64() * 1000.0;
            site.metrics
                .start_seconds
                .observe(taken_at.elapsed().as_secs_f64());
            tracing::info!(
                "session {}: a warm session of {} taken by {} in {ms:.0} ms",
                member.session_id,
                rt.name,
                user.name
            );
            get(site, &member.session_id)
        }
        Err(e) => {
            tracing::warn!(
                "warm session {} of {} could not be handed to {} ({e}); starting a container \
                 instead",
                member.session_id,
                rt.name,
                user.name
            );
            retire(site, &member).await;
            Ok(None)
        }
    }
}

async fn hand_over(
    site: &Arc<Site>,
    user: &User,
    rt: &Runtime,
    m: &Member,
    created: i64,
) -> Result<()> {
    let (Some(handle), Some(address)) = (&m.handle, &m.address) else {
        return Err(SiteError::Internal("the member is not started".into()));
    };
    // Still running (an exit since the keeper's last look is caught here).
    match site.backend.observe(handle).await? {
        Observed::Running { .. } => {}
        other => {
            return Err(SiteError::Engine(format!(
                "the warm session is no longer running: {other:?}"
            )))
        }
    }
    let home: HomeRef = site.backend.ensure_home(&site.site_id, &user.name).await?;
    site.backend.attach_home(handle, &m.slot, &home).await?;
    let now = now_ms();
    site.db.with(|c| {
        c.execute(
            "INSERT INTO sessions (id, user_id, runtime_id, container_name, container_id, address,
             token, state, message, created_at, ready_at, last_activity, prefix)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10, ?10, ?11)",
            params![
                m.session_id,
                user.id,
                rt.id,
                m.name,
                handle.0,
                address,
                m.token,
                SessionState::Ready,
                created,
                now,
                warm_prefix(&m.session_id)
            ],
        )
    })?;
    Ok(())
}

/// Remove a member: its container, its slot.
async fn retire(site: &Site, m: &Member) {
    if let Some(h) = &m.handle {
        if let Err(e) = site.backend.stop(h, STOP_GRACE).await {
            tracing::warn!("removing warm session {}: {e}", m.session_id);
        }
    }
    release(m.slot.clone()).await;
}

async fn release(slot: PathBuf) {
    let shown = slot.display().to_string();
    match tokio::task::spawn_blocking(move || home_slot::release(&slot)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("releasing the home slot {shown}: {e}"),
        Err(e) => tracing::warn!("releasing the home slot {shown}: {e}"),
    }
}

/// After a warm session's container is gone: release its slot (the user's home unmounted
/// from it). The keeper does it too, for sessions that end on their own.
pub async fn release_slot_of(site: &Site, session_id: &str) {
    release(root_dir(site).join(session_id)).await;
}

/// Remove every warm session not yet taken and release every slot no running session
/// holds; then the slots' directory is unmounted when nothing is left in it. For a site that
/// stops (its members hold nothing of anyone's; the next start makes new ones).
pub async fn drain(site: &Site) -> Result<()> {
    let members: Vec<Member> = site.pools.lock().drain(..).collect();
    for m in &members {
        retire(site, m).await;
    }
    if site.pools.root.get().is_none() && !slots_left(site) {
        return Ok(());
    }
    let root = root_dir(site);
    release_orphan_slots(site, &root).await?;
    tokio::task::spawn_blocking(move || home_slot::unprepare_root(&root))
        .await
        .map_err(|e| SiteError::Internal(format!("unmounting warm homes: {e}")))?
}

/// Keep the pools: every [`KEEP_INTERVAL`], and when a member was taken.
pub fn spawn_keeper(site: Arc<Site>) {
    tokio::spawn(async move {
        let mut refused = false;
        loop {
            match keep(&site).await {
                Ok(()) => refused = false,
                Err(e) if !refused => {
                    tracing::warn!("warm pools: {e}");
                    refused = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(KEEP_INTERVAL) => {}
                _ = site.pools.wake.notified() => {}
            }
        }
    });
}

/// One look at the pools.
async fn keep(site: &Arc<Site>) -> Result<()> {
    let wanted: Vec<Runtime> = runtime::repo::list(&site.db)?
        .into_iter()
        .filter(|rt| rt.warm_pool > 0 && !rt.deprecated && !rt.disabled)
        .collect();
    let idle = site.pools.lock().is_empty() && !slots_left(site);
    if wanted.is_empty() && idle {
        return Ok(());
    }
    if !wanted.is_empty() {
        if let Some(why) = refusal(site) {
            return Err(SiteError::conflict(Some("warmPool"), why));
        }
    }
    let root = root(site).await?.to_path_buf();
    let mut fingerprints = std::collections::HashMap::new();
    for rt in &wanted {
        fingerprints.insert(rt.id.clone(), fingerprint(site, rt)?);
    }
    // Members no longer wanted, or started from an older runtime or environment.
    let stale: Vec<Member> = {
        let mut members = site.pools.lock();
        let (keep, stale) = members.drain(..).partition(|m: &Member| {
            m.taken || fingerprints.get(&m.runtime_id) == Some(&m.fingerprint)
        });
        *members = keep;
        stale
    };
    for m in &stale {
        tracing::info!("warm session {}: no longer wanted, removed", m.session_id);
        retire(site, m).await;
    }
    check_members(site).await;
    // Shrink pools that are larger than wanted (the newest go).
    for rt in &wanted {
        let extra: Vec<Member> = {
            let mut members = site.pools.lock();
            let of: Vec<usize> = members
                .iter()
                .enumerate()
                .filter(|(_, m)| m.runtime_id == rt.id && !m.taken)
                .map(|(i, _)| i)
                .collect();
            let excess = of.len().saturating_sub(rt.warm_pool as usize);
            // From the back, so the indices left stay valid.
            let drop: Vec<usize> = of.into_iter().rev().take(excess).collect();
            drop.into_iter().map(|i| members.remove(i)).collect()
        };
        for m in &extra {
            retire(site, m).await;
        }
    }
    release_orphan_slots(site, &root).await?;
    for rt in &wanted {
        let have = site
            .pools
            .lock()
            .iter()
            .filter(|m| m.runtime_id == rt.id && !m.taken)
            .count();
        for _ in have..rt.warm_pool as usize {
            let fp = fingerprints.get(&rt.id).cloned().unwrap_or_default();
            if let Err(e) = launch_member(site, &root, rt, fp).await {
                tracing::warn!("warm pool of {}: starting a session failed: {e}", rt.name);
                break;
            }
        }
    }
    Ok(())
}

/// Mark members ready once `<prefix>/api` answers; remove those that ended or did not get
/// ready within the start timeout.
async fn check_members(site: &Arc<Site>) {
    let members: Vec<Member> = site.pools.lock().clone();
    for m in members.into_iter().filter(|m| !m.taken) {
        let Some(handle) = &m.handle else { continue };
        let gone = match site.backend.observe(handle).await {
            Ok(Observed::Running { address }) => {
                if !m.ready {
                    if let Some(addr) = address {
                        let url = format!("http://{addr}{}/api", warm_prefix(&m.session_id));
                        if let Ok(code) = crate::proxy::get_status(&site.http, &url, None).await {
                            if code < 500 {
                                mark_ready(site, &m.session_id, &addr);
                            }
                        }
                    }
                }
                false
            }
            Ok(Observed::Pending { .. }) => false,
            Ok(Observed::Ended(e)) => {
                tracing::warn!("warm session {} ended: {}", m.session_id, e.message);
                true
            }
            Ok(Observed::Gone) => true,
            Err(e) => {
                tracing::warn!("warm session {}: {e}", m.session_id);
                false
            }
        };
        let late = !m.ready && now_ms() - m.launched > site.config.start_timeout.as_millis() as i64;
        if gone || late {
            let removed = {
                let mut members = site.pools.lock();
                members
                    .iter()
                    .position(|x| x.session_id == m.session_id)
                    .map(|i| members.remove(i))
            };
            if let Some(m) = removed {
                retire(site, &m).await;
            }
        }
    }
}

fn mark_ready(site: &Site, session_id: &str, addr: &str) {
    let mut members = site.pools.lock();
    if let Some(m) = members.iter_mut().find(|m| m.session_id == session_id) {
        m.ready = true;
        m.address = Some(addr.to_string());
        tracing::info!(
            "warm session {session_id} of runtime {} is ready",
            m.runtime_id
        );
    }
}

/// Slots whose session is neither a member nor active: their session ended (or the site
/// restarted); unmount and remove them.
async fn release_orphan_slots(site: &Site, root: &Path) -> Result<()> {
    let entries = std::fs::read_dir(root).map_err(|source| SiteError::Io {
        context: format!("reading {}", root.display()),
        source,
    })?;
    let members: std::collections::HashSet<String> = site
        .pools
        .lock()
        .iter()
        .map(|m| m.session_id.clone())
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if members.contains(&name) {
            continue;
        }
        if get(site, &name)?.is_some_and(|s| s.is_active()) {
            continue;
        }
        release(entry.path()).await;
    }
    Ok(())
}

/// Start one member of `rt`'s pool: its image, its empty home slot, its container.
async fn launch_member(site: &Arc<Site>, root: &Path, rt: &Runtime, fp: String) -> Result<()> {
    let session_id = new_id()?;
    let short: String = session_id.chars().filter(|c| *c != '-').take(12).collect();
    let mut member = Member {
        session_id: session_id.clone(),
        runtime_id: rt.id.clone(),
        fingerprint: fp,
        name: format!("nbrt-{}-warm-{short}", site.site_id),
        handle: None,
        token: random_hex(24)?,
        slot: root.join(&session_id),
        address: None,
        ready: false,
        taken: false,
        launched: now_ms(),
    };
    let image = {
        let store = site.open_store()?;
        let progress = crate::backend::ImageProgress::watched();
        site.backend
            .ensure_image(store.as_ref(), rt, &progress)
            .await?
    };
    let slot = home_slot::create(root, &session_id)?;
    let spec = SessionSpec {
        site_id: site.site_id.clone(),
        session_id: session_id.clone(),
        name: member.name.clone(),
        user: String::new(),
        runtime: rt.clone(),
        token: member.token.clone(),
        image,
        home: HomeRef {
            volume: String::new(),
            node: None,
        },
        prefix: warm_prefix(&session_id),
        home_slot: Some(slot),
        session_env: crate::session_env::for_session(site, &rt.id)?,
    };
    // Listed before the container exists, so the slot is never taken for an orphan.
    site.pools.lock().push(member.clone());
    match site.backend.launch(&spec).await {
        Ok(handle) => {
            member.handle = Some(handle.clone());
            let mut members = site.pools.lock();
            if let Some(m) = members.iter_mut().find(|m| m.session_id == session_id) {
                m.handle = Some(handle);
            }
            tracing::info!("warm session {session_id} of {} started", rt.name);
            Ok(())
        }
        Err(e) => {
            site.pools.lock().retain(|m| m.session_id != session_id);
            release(member.slot.clone()).await;
            Err(e)
        }
    }
}
