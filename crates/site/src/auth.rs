//! Users, roles and tokens. A token is 32 random bytes shown once; the database keeps only
//! its SHA-256 (the token carries 256 bits of entropy, so a fast hash is enough). Requests
//! authenticate with `Authorization: Bearer <token>` (or `token <token>`), or with the
//! `nbrt_token` cookie the web UI's login sets.

use std::sync::Arc;

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

fn row_user(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, bool)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_user((id, name, role, advanced): (i64, String, String, bool)) -> Result<User> {
    let role = Role::parse(&role)
        .ok_or_else(|| SiteError::Internal(format!("user {name} has unknown role {role:?}")))?;
    Ok(User {
        id,
        name,
        role,
        advanced,
    })
}

/// Create a user and its first token (returned once).
pub fn create_user(site: &Site, name: &str, role: Role, advanced: bool) -> Result<(User, String)> {
    validate_user_name(name)?;
    let token = new_token()?;
    let hash = hash_token(&token);
    let now = now_ms();
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
            "INSERT INTO tokens (hash, user_id, label, created_at) VALUES (?1, ?2, 'initial', ?3)",
            params![hash, id, now],
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
        },
        token,
    ))
}

/// Another token for an existing user.
pub fn add_token(site: &Site, user: &User, label: &str) -> Result<String> {
    if label.len() > 100 {
        return Err(SiteError::invalid("label", "at most 100 characters"));
    }
    let token = new_token()?;
    site.db.with(|c| {
        c.execute(
            "INSERT INTO tokens (hash, user_id, label, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![hash_token(&token), user.id, label, now_ms()],
        )
    })?;
    Ok(token)
}

pub fn user_by_name(site: &Site, name: &str) -> Result<User> {
    let row = site.db.with(|c| {
        c.query_row(
            "SELECT id, name, role, advanced FROM users WHERE name = ?1",
            [name],
            row_user,
        )
        .optional()
    })?;
    to_user(row.ok_or_else(|| SiteError::NotFound(format!("no user named {name}")))?)
}

pub fn user_by_id(site: &Site, id: i64) -> Result<User> {
    let row = site.db.with(|c| {
        c.query_row(
            "SELECT id, name, role, advanced FROM users WHERE id = ?1",
            [id],
            row_user,
        )
        .optional()
    })?;
    to_user(row.ok_or_else(|| SiteError::NotFound(format!("no user with id {id}")))?)
}

pub fn list_users(site: &Site) -> Result<Vec<User>> {
    let rows = site.db.with(|c| {
        let mut st = c.prepare("SELECT id, name, role, advanced FROM users ORDER BY name")?;
        let rows = st
            .query_map([], row_user)?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows
    })?;
    rows.into_iter().map(to_user).collect()
}

pub fn user_for_token(site: &Site, token: &str) -> Result<Option<User>> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    let row = site.db.with(|c| {
        c.query_row(
            "SELECT u.id, u.name, u.role, u.advanced FROM tokens t JOIN users u ON u.id = t.user_id
             WHERE t.hash = ?1",
            [hash_token(token)],
            row_user,
        )
        .optional()
    })?;
    row.map(to_user).transpose()
}

/// The admin user and its token on a fresh database; `None` when users exist.
pub fn bootstrap_admin(site: &Site) -> Result<Option<String>> {
    let count: i64 = site
        .db
        .with(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))?;
    if count > 0 {
        return Ok(None);
    }
    let (_, token) = create_user(site, "admin", Role::Admin, true)?;
    Ok(Some(token))
}

/// The token a request carries: a site token (`nbrt_…`) in the Authorization header, else
/// the login cookie, else whatever the header holds (reported as invalid). JupyterLab in a
/// browser sends its server's token as `Authorization: token …` on every request through
/// the proxy; that one is not the site's, so the login cookie decides.
pub fn request_token(headers: &axum::http::HeaderMap) -> Option<String> {
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
        Some(t) if t.starts_with(TOKEN_PREFIX) => Some(t),
        other => cookie_value(headers, COOKIE).or(other),
    }
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

impl FromRequestParts<Arc<Site>> for User {
    type Rejection = SiteError;

    async fn from_request_parts(parts: &mut Parts, site: &Arc<Site>) -> Result<Self> {
        authenticate(site, &parts.headers)
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
