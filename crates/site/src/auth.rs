//! Users, roles and tokens. A token is 32 random bytes shown once; the database keeps only
//! its SHA-256 (the token carries 256 bits of entropy, so a fast hash is enough). Requests
//! authenticate with `Authorization: Bearer <token>` (or `token <token>`), or with the
//! `nbrt_token` cookie the web UI's login sets.
//!
//! Tokens expire ([`TokenPolicy`]): API tokens after `expiresIn` or the site's default, the
//! web UI's login token after its own lifetime; the admin token a new site prints never does
//! (it is how the site is recovered). A token is revoked by its owner or an admin, and logout
//! revokes the token it was called with. A disabled user's tokens stop working at once.
//! Tokens are listed by an ID that is the first 16 hex digits of their hash: it names a
//! token without being one.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::db::{now_ms, random_hex};
use crate::error::{Result, SiteError};
use crate::Site;

pub const COOKIE: &str = "nbrt_token";
const TOKEN_PREFIX: &str = "nbrt_";
/// Hex digits of a token's hash that name it in listings and in revocation URLs.
const TOKEN_ID_LEN: usize = 16;
/// A token's last use is written at most this often (not on every request).
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// How long tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Tokens made through the API (new users' first tokens, `POST …/tokens`) without an
    /// `expiresIn`: `None` means they never expire.
    pub api_lifetime: Option<Duration>,
    /// The token behind the web UI's login cookie (JupyterHub's cookie lives 14 days).
    pub login_lifetime: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            api_lifetime: Some(Duration::from_secs(90 * 24 * 3600)),
            login_lifetime: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

/// What a listing shows of a token (never the token).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub label: String,
    pub created: i64,
    /// Milliseconds since the epoch; `null`: never.
    pub expires: Option<i64>,
    pub last_used: Option<i64>,
    /// The token this request was made with.
    pub current: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Author,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Author => "author",
        }
    }
    fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "author" => Some(Role::Author),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// ArcGIS's "Advanced Notebooks" privilege: may use runtimes that require it.
    pub advanced: bool,
    /// A disabled user's tokens are refused; its record, notebooks and history stay.
    pub disabled: bool,
    /// The ID of the token this request authenticated with (for the audit log), when the
    /// user comes from a request.
    #[serde(skip)]
    pub token_id: Option<String>,
}

impl User {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    /// Admins hold every privilege.
    pub fn has_advanced(&self) -> bool {
        self.advanced || self.is_admin()
    }
    pub fn require_admin(&self) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(SiteError::Forbidden(format!(
                "user {} is not an administrator",
                self.name
            )))
        }
    }
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn new_token() -> Result<String> {
    Ok(format!("{TOKEN_PREFIX}{}", random_hex(32)?))
}

/// User names appear in URLs, container and volume names: lower-case letters, digits,
/// `-` and `_`, starting with a letter, at most 32 characters.
pub fn validate_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SiteError::invalid(
            "name",
            format!(
                "{name:?} is not a valid user name: 1 to 32 lower-case letters, digits, '-' or '_', starting with a letter"
            ),
        ))
    }
}

/// The columns `row_user` reads, in its order.
const USER_COLUMNS: &str = "u.id, u.name, u.role, u.advanced, u.disabled";

type UserRow = (i64, String, String, bool, bool);

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_user((id, name, role, advanced, disabled): UserRow) -> Result<User> {
    let role = Role::parse(&role)
        .ok_or_else(|| SiteError::Internal(format!("user {name} has unknown role {role:?}")))?;
    Ok(User {
        id,
        name,
        role,
        advanced,
        disabled,
        token_id: None,
    })
}

/// When a token made now with this lifetime expires (`None`: never).
fn expiry(lifetime: Option<Duration>) -> Option<i64> {
    lifetime.map(|d| now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

/// Create a user and its first token (returned once), which lives `lifetime` (`None`: never).
pub fn create_user(
    site: &Site,
    name: &str,
    role: Role,
    advanced: bool,
    lifetime: Option<Duration>,
) -> Result<(User, String)> {
    validate_user_name(name)?;
    let token = new_token()?;
    let hash = hash_token(&token);
    let now = now_ms();
    let expires = expiry(lifetime);
    let id = site.db.try_with(|c| {
        let tx = c.transaction()?;
        let exists: Option<i64> = tx
            .query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return Err(SiteError::conflict(
                Some("name"),
                format!("a user named {name} exists"),
            ));
        }
        tx.execute(
            "INSERT INTO users (name, role, advanced, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), advanced, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO tokens (hash, user_id, label, created_at, expires_at)
             VALUES (?1, ?2, 'initial', ?3, ?4)",
            params![hash, id, now, expires],
        )?;
        tx.commit()?;
        Ok(id)
    })?;
    Ok((
        User {
            id,
            name: name.to_string(),
            role,
            advanced,
            disabled: false,
            token_id: None,
        },
        token,
    ))
}

/// Another token for an existing user, living `lifetime` (`None`: never). Returns the token
/// (shown once) and its listing.
pub fn add_token(
    site: &Site,
    user: &User,
    label: &str,
    lifetime: Option<Duration>,
) -> Result<(String, TokenInfo)> {
    if label.chars().count() > 100 {
        return Err(SiteError::invalid("label", "at most 100 characters"));
    }
    let token = new_token()?;
    let hash = hash_token(&token);
    let info = TokenInfo {
        id: hash[..TOKEN_ID_LEN].to_string(),
        label: label.to_string(),
        created: now_ms(),
        expires: expiry(lifetime),
        last_used: None,
        current: false,
    };
    site.db.with(|c| {
        c.execute(
            "INSERT INTO tokens (hash, user_id, label, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, user.id, label, info.created, info.expires],
        )
    })?;
    Ok((token, info))
}

/// A user's tokens that still work, newest first; `current` marks the one `request_token` is.
pub fn list_tokens(
    site: &Site,
    user: &User,
    request_token: Option<&str>,
) -> Result<Vec<TokenInfo>> {
    let current = request_token.map(hash_token);
    site.db.with(|c| {
        let mut st = c.prepare(
            "SELECT hash, label, created_at, expires_at, last_used_at FROM tokens
             WHERE user_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)
             ORDER BY created_at DESC, hash",
        )?;
        let rows = st.query_map(params![user.id, now_ms()], |r| {
            let hash: String = r.get(0)?;
            Ok(TokenInfo {
                id: hash[..TOKEN_ID_LEN.min(hash.len())].to_string(),
                label: r.get(1)?,
                created: r.get(2)?,
                expires: r.get(3)?,
                last_used: r.get(4)?,
                current: current.as_deref() == Some(hash.as_str()),
            })
        })?;
        rows.collect()
    })
}

/// Revoke one of a user's tokens by its listed ID (404 when it has none such).
pub fn revoke_token(site: &Site, user: &User, id: &str) -> Result<()> {
    if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SiteError::NotFound(format!(
            "no token {:?}: token IDs are {TOKEN_ID_LEN} hex digits (see the token list)",
            nbrt_oci::text::Escaped(id)
        )));
    }
    let removed = site.db.with(|c| {
        c.execute(
            "DELETE FROM tokens WHERE user_id = ?1 AND substr(hash, 1, ?2) = ?3",
            params![user.id, TOKEN_ID_LEN as i64, id.to_ascii_lowercase()],
        )
    })?;
    if removed == 0 {
        return Err(SiteError::NotFound(format!(
            "user {} has no token {id}",
            user.name
        )));
    }
    Ok(())
}

/// Revoke the token itself (logout). Unknown tokens are not an error: the goal is reached.
pub fn revoke(site: &Site, token: &str) -> Result<()> {
    site.db.with(|c| {
        c.execute("DELETE FROM tokens WHERE hash = ?1", [hash_token(token)])
            .map(|_| ())
    })
}

fn user_where(site: &Site, condition: &str, value: &dyn rusqlite::ToSql) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u WHERE {condition}");
    let row = site
        .db
        .with(|c| c.query_row(&sql, [value], row_user).optional())?;
    row.map(to_user).transpose()
}

pub fn user_by_name(site: &Site, name: &str) -> Result<User> {
    user_where(site, "u.name = ?1", &name)?.ok_or_else(|| {
        SiteError::NotFound(format!("no user named {}", nbrt_oci::text::Escaped(name)))
    })
}

pub fn user_by_id(site: &Site, id: i64) -> Result<User> {
    user_where(site, "u.id = ?1", &id)?
        .ok_or_else(|| SiteError::NotFound(format!("no user with id {id}")))
}

pub fn list_users(site: &Site) -> Result<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users u ORDER BY u.name");
    let rows = site.db.with(|c| {
        let mut st = c.prepare(&sql)?;
        let rows = st
            .query_map([], row_user)?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows
    })?;
    rows.into_iter().map(to_user).collect()
}

/// The user a token belongs to: `None` for a token that is unknown, revoked or expired; a 403
/// for a disabled user's token (it is known, and saying so helps the user more than a 401).
pub fn user_for_token(site: &Site, token: &str) -> Result<Option<User>> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    let hash = hash_token(token);
    let now = now_ms();
    let sql = format!(
        "SELECT {USER_COLUMNS}, t.last_used_at FROM tokens t JOIN users u ON u.id = t.user_id
         WHERE t.hash = ?1 AND (t.expires_at IS NULL OR t.expires_at > ?2)"
    );
    let row = site.db.with(|c| {
        let row = c
            .query_row(&sql, params![hash, now], |r| {
                Ok((row_user(r)?, r.get::<_, Option<i64>>(5)?))
            })
            .optional()?;
        if let Some((_, last_used)) = &row {
            if last_used.is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS) {
                c.execute(
                    "UPDATE tokens SET last_used_at = ?2 WHERE hash = ?1",
                    params![hash, now],
                )?;
            }
        }
        Ok(row)
    })?;
    let Some((row, _)) = row else {
        return Ok(None);
    };
    let mut user = to_user(row)?;
    user.token_id = Some(hash[..TOKEN_ID_LEN].to_string());
    if user.disabled {
        return Err(SiteError::Forbidden(format!(
            "user {} is disabled: an administrator can enable it again",
            user.name
        )));
    }
    Ok(Some(user))
}

/// What an administrator may change about a user.
#[derive(Debug, Default, Clone, Copy)]
pub struct UserChange {
    pub role: Option<Role>,
    pub advanced: Option<bool>,
    pub disabled: Option<bool>,
}

/// Enabled administrators other than `except`: a change that would leave none is refused,
/// so the site is never locked.
fn other_enabled_admins(c: &rusqlite::Connection, except: i64) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0 AND id != ?1",
        [except],
        |r| r.get(0),
    )
}

pub fn update_user(site: &Site, name: &str, change: UserChange) -> Result<User> {
    let user = user_by_name(site, name)?;
    let role = change.role.unwrap_or(user.role);
    let advanced = change.advanced.unwrap_or(user.advanced);
    let disabled = change.disabled.unwrap_or(user.disabled);
    let stays_admin = role == Role::Admin && !disabled;
    site.db.try_with(|c| {
        let tx = c.transaction()?;
        if user.is_admin()
            && !user.disabled
            && !stays_admin
            && other_enabled_admins(&tx, user.id)? == 0
        {
            return Err(SiteError::conflict(
                Some(if change.disabled == Some(true) {
                    "disabled"
                } else {
                    "role"
                }),
                format!("{name} is the last enabled administrator: make another one first"),
            ));
        }
        tx.execute(
            "UPDATE users SET role = ?2, advanced = ?3, disabled = ?4 WHERE id = ?1",
            params![user.id, role.as_str(), advanced, disabled],
        )?;
        tx.commit()?;
        Ok(())
    })?;
    user_by_id(site, user.id)
}

/// Delete a user and its tokens. Refused (409) while it has running sessions or owns
/// notebooks (move or delete them first: they are its users' work), and for the last enabled
/// administrator. Its ended sessions' records go with it.
pub fn delete_user(site: &Site, name: &str) -> Result<()> {
    let user = user_by_name(site, name)?;
    site.db.try_with(|c| {
        let tx = c.transaction()?;
        if user.is_admin() && !user.disabled && other_enabled_admins(&tx, user.id)? == 0 {
            return Err(SiteError::conflict(
                None,
                format!("{name} is the last enabled administrator: make another one first"),
            ));
        }
        let active: i64 = tx.query_row(
            "SELECT count(*) FROM sessions WHERE user_id = ?1 AND state IN ('starting', 'ready')",
            [user.id],
            |r| r.get(0),
        )?;
        if active > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{name} has {active} running session(s): stop them first"),
            ));
        }
        let notebooks: i64 = tx.query_row(
            "SELECT count(*) FROM notebooks WHERE owner_id = ?1",
            [user.id],
            |r| r.get(0),
        )?;
        if notebooks > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{name} owns {notebooks} notebook(s): delete them first, or disable the user instead"),
            ));
        }
        tx.execute("DELETE FROM sessions WHERE user_id = ?1", [user.id])?;
        tx.execute("DELETE FROM tokens WHERE user_id = ?1", [user.id])?;
        tx.execute("DELETE FROM users WHERE id = ?1", [user.id])?;
        tx.commit()?;
        Ok(())
    })
}

/// The admin user and its token on a fresh database; `None` when users exist. This token
/// never expires: it is how an operator gets into a new site.
pub fn bootstrap_admin(site: &Site) -> Result<Option<String>> {
    let count: i64 = site
        .db
        .with(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))?;
    if count > 0 {
        return Ok(None);
    }
    let (_, token) = create_user(site, "admin", Role::Admin, true, None)?;
    Ok(Some(token))
}

/// The token a request carries: a site token (`nbrt_…`) in the Authorization header, else
/// the login cookie, else whatever the header holds (reported as invalid). JupyterLab in a
/// browser sends its server's token as `Authorization: token …` on every request through
/// the proxy; that one is not the site's, so the login cookie decides.
pub fn request_token(headers: &axum::http::HeaderMap) -> Option<String> {
    credential(headers).map(|(token, _)| token)
}

/// The `Set-Cookie` value that clears the login cookie.
pub const CLEAR_COOKIE: &str = "nbrt_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0";

/// Log out: revoke the token the request carries (the login cookie's, or the bearer token
/// of a script), audited as the user's `logout`. No token is no error: the goal is reached.
pub fn log_out(site: &Site, headers: &axum::http::HeaderMap) -> Result<()> {
    if let Some(token) = request_token(headers) {
        let user = user_for_token(site, &token).ok().flatten();
        revoke(site, &token)?;
        if let Some(user) = user {
            crate::audit::record(
                site,
                &user,
                "logout",
                Some(&user.name),
                serde_json::Value::Null,
            );
        }
    }
    Ok(())
}

/// The request's token and whether it came from the login cookie (see [`request_token`]).
fn credential(headers: &axum::http::HeaderMap) -> Option<(String, bool)> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            ["Bearer ", "bearer ", "token ", "Token "]
                .iter()
                .find_map(|scheme| v.strip_prefix(scheme))
                .map(|t| t.trim().to_string())
        });
    match header {
        Some(t) if t.starts_with(TOKEN_PREFIX) => Some((t, false)),
        other => cookie_value(headers, COOKIE)
            .map(|c| (c, true))
            .or(other.map(|t| (t, false))),
    }
}

/// What a state-changing API request authenticated by the login cookie must also show, so
/// that another site's page cannot make the browser send it (beyond the cookie's
/// `SameSite=Strict`): a body, if any, declared as JSON (HTML forms and no-cors requests
/// can only send form and `text/plain` bodies), and an `Origin`, if sent, that is this site
/// (the `Host`, or `X-Forwarded-Host` behind a proxy).
fn check_browser_request(headers: &axum::http::HeaderMap) -> Result<()> {
    use axum::http::header::{CONTENT_TYPE, HOST, ORIGIN};
    if let Some(ct) = headers.get(CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" {
            return Err(SiteError::UnsupportedMediaType(format!(
                "a request signed in with the login cookie must send its body as \
                 application/json, not {:?}",
                essence
            )));
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .unwrap_or("");
        let ours = |h: Option<&axum::http::HeaderValue>| {
            h.and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .is_some_and(|v| !authority.is_empty() && v.trim().eq_ignore_ascii_case(authority))
        };
        if !ours(headers.get(HOST)) && !ours(headers.get("x-forwarded-host")) {
            return Err(SiteError::Forbidden(format!(
                "a request from another site ({:?}) signed in with the login cookie",
                origin
            )));
        }
    }
    Ok(())
}

pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Authenticate a request (401 without a valid token).
pub fn authenticate(site: &Site, headers: &axum::http::HeaderMap) -> Result<User> {
    let token = request_token(headers).ok_or_else(|| {
        SiteError::Unauthorized("no token: send `Authorization: Bearer <token>`".into())
    })?;
    user_for_token(site, &token)?
        .ok_or_else(|| SiteError::Unauthorized("the token is not valid".into()))
}

/// Authenticate an API call: [`authenticate`], and for a state-changing call signed in with
/// the login cookie, what [`check_browser_request`] asks of it.
pub fn authenticate_call(
    site: &Site,
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> Result<User> {
    let user = authenticate(site, headers)?;
    let by_cookie = credential(headers).is_some_and(|(_, cookie)| cookie);
    if by_cookie && !method.is_safe() {
        check_browser_request(headers)?;
    }
    Ok(user)
}

impl FromRequestParts<Arc<Site>> for User {
    type Rejection = SiteError;

    async fn from_request_parts(parts: &mut Parts, site: &Arc<Site>) -> Result<Self> {
        let user = authenticate_call(site, &parts.method, &parts.headers)?;
        crate::access::note_user(&parts.extensions, &user.name);
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{header, HeaderMap, HeaderValue};

    #[test]
    fn site_tokens_win_jupyter_tokens_defer_to_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nbrt_abc"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("nbrt_token=nbrt_cookie"),
        );
        assert_eq!(request_token(&h).as_deref(), Some("nbrt_abc"));
        // JupyterLab's own header: the login cookie is the credential.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("token 0123abcd"),
        );
        assert_eq!(request_token(&h).as_deref(), Some("nbrt_cookie"));
        h.remove(header::COOKIE);
        assert_eq!(request_token(&h).as_deref(), Some("0123abcd"));
    }
}
