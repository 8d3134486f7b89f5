//! The audit log: one record in the site's database for each change made through the API
//! (the REST API and the ArcGIS-shaped one alike) — who (user and the ID of the token the
//! request carried, never the token), what (`action`, e.g. `runtime.register`), on what
//! (`target`: a runtime, user, session … ID or name) and the particulars (`detail`, a JSON
//! object). The site's own actions (the idle culler) are recorded under the user `(site)`.
//! Administrators read it at `GET /api/audit?limit=&before=&action=&user=`, newest first.
//!
//! Each record is also a log event (target `nbrt::audit`), so it reaches the server's log in
//! its format. A record that cannot be written is logged as an error and does not undo the
//! change it describes (the change is already made).

use rusqlite::params;
use serde::Serialize;
use serde_json::Value;

use crate::auth::User;
use crate::db::now_ms;
use crate::error::{Result, SiteError};
use crate::Site;

/// The name the site's own actions are recorded under.
pub const SITE_ACTOR: &str = "(site)";

/// The most records one request returns.
pub const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    /// Milliseconds since the epoch.
    pub time: i64,
    pub user: String,
    /// The token's ID (the first 16 hex digits of its hash, as the token listing shows);
    /// `null` for the site's own actions.
    pub token_id: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: Value,
}

fn write(
    site: &Site,
    user: Option<&User>,
    action: &str,
    target: Option<&str>,
    detail: &Value,
) -> Result<()> {
    let (user_id, name, token) = match user {
        Some(u) => (Some(u.id), u.name.as_str(), u.token_id.as_deref()),
        None => (None, SITE_ACTOR, None),
    };
    let detail_text = if detail.is_null() {
        None
    } else {
        Some(detail.to_string())
    };
    site.db.with(|c| {
        c.execute(
            "INSERT INTO audit (at, user_id, user_name, token_id, action, target, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![now_ms(), user_id, name, token, action, target, detail_text],
        )
    })?;
    tracing::info!(
        target: "nbrt::audit",
        user = name,
        token_id = token.unwrap_or("-"),
        action,
        target_id = target.unwrap_or("-"),
        detail = %detail,
        "audit"
    );
    Ok(())
}

/// Record `action` by `user` on `target`. Never fails the request: see the module's notes.
pub fn record(site: &Site, user: &User, action: &str, target: Option<&str>, detail: Value) {
    if let Err(e) = write(site, Some(user), action, target, &detail) {
        tracing::error!("audit record {action} by {} not written: {e}", user.name);
    }
}

/// Record an action of the site itself (no user, no token).
pub fn record_site(site: &Site, action: &str, target: Option<&str>, detail: Value) {
    if let Err(e) = write(site, None, action, target, &detail) {
        tracing::error!("audit record {action} by the site not written: {e}");
    }
}

/// What `GET /api/audit` filters by.
#[derive(Debug, Default, Clone)]
pub struct Query {
    /// At most this many (default 100, at most [`MAX_LIMIT`]).
    pub limit: Option<u32>,
    /// Records older than this record ID (the `next` of the previous page).
    pub before: Option<i64>,
    pub action: Option<String>,
    pub user: Option<String>,
}

/// Records newest first, and the `before` of the next page (`None`: no more).
pub fn list(site: &Site, q: &Query) -> Result<(Vec<AuditRecord>, Option<i64>)> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(SiteError::invalid(
            "limit",
            format!("{limit} is out of range: 1 to {MAX_LIMIT}"),
        ));
    }
    let rows = site.db.with(|c| {
        let mut st = c.prepare_cached(
            "SELECT id, at, user_name, token_id, action, target, detail FROM audit
             WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR action = ?2)
               AND (?3 IS NULL OR user_name = ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = st
            .query_map(
                params![q.before, q.action, q.user, i64::from(limit) + 1],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows
    })?;
    let more = rows.len() > limit as usize;
    let records: Vec<AuditRecord> = rows
        .into_iter()
        .take(limit as usize)
        .map(
            |(id, time, user, token_id, action, target, detail)| AuditRecord {
                id,
                time,
                user,
                token_id,
                action,
                target,
                // Written by `write` as JSON; anything else is shown as the text it is.
                detail: detail
                    .map(|d| serde_json::from_str(&d).unwrap_or(Value::String(d)))
                    .unwrap_or(Value::Null),
            },
        )
        .collect();
    let next = if more {
        records.last().map(|r| r.id)
    } else {
        None
    };
    Ok((records, next))
}
