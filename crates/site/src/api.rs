//! The HTTP interface: REST API under `/api` (described by `/api/openapi.json`), the
//! session proxy under `/user/`, the web UI at `/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{self, Role, User};
use crate::error::{Result, SiteError};
use crate::runtime::{self, Runtime, RuntimeInput};
use crate::sessions::{self, SessionState};
use crate::{access, audit, metrics, notebooks, proxy, session_env, Site};

type S = State<Arc<Site>>;

pub fn router(site: Arc<Site>) -> Router {
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/users", get(list_users).post(create_user))
        .route(
            "/api/users/{name}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/api/users/{name}/tokens",
            get(list_tokens).post(create_token),
        )
        .route("/api/users/{name}/tokens/{id}", delete(revoke_token))
        .route("/api/runtimes", get(list_runtimes).post(register_runtime))
        .route("/api/runtimes/register", post(register_runtime))
        .route("/api/runtimes/restore", post(restore_runtimes))
        .route(
            "/api/runtimes/{id}",
            get(get_runtime)
                .patch(update_runtime)
                .delete(unregister_runtime),
        )
        .route(
            "/api/site/session-env",
            get(get_site_session_env).put(put_site_session_env),
        )
        .route(
            "/api/runtimes/{id}/session-env",
            get(get_runtime_session_env).put(put_runtime_session_env),
        )
        .route("/api/runtimes/{id}/update", post(update_runtime))
        .route("/api/runtimes/{id}/deprecate", post(deprecate_runtime))
        .route("/api/runtimes/{id}/unregister", post(unregister_runtime))
        .route(
            "/api/runtimes/{id}/manifest",
            get(get_manifest).put(put_manifest),
        )
        .route("/api/notebooks", get(list_notebooks).post(create_notebook))
        .route(
            "/api/notebooks/{id}",
            get(get_notebook)
                .patch(patch_notebook)
                .delete(delete_notebook),
        )
        .route(
            "/api/migrations",
            get(list_migrations).post(create_migration),
        )
        .route("/api/migrations/{id}/rollback", post(rollback_migration))
        .route("/api/sessions", get(list_sessions).post(start_session))
        .route("/api/sessions/{id}", get(get_session).delete(stop_session))
        .route("/api/sessions/{id}/usage", get(get_session_usage))
        .route("/api/audit", get(list_audit))
        .merge(crate::arcgis::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(too_large_as_json));
    Router::new()
        .route("/", get(ui_page))
        .route("/metrics", get(get_metrics))
        .route("/warm/{session}", any(proxy::redirect_slash))
        .route("/warm/{session}/", any(proxy::handle))
        .route("/warm/{session}/{*rest}", any(proxy::handle))
        .route("/user/{user}/{runtime}", any(proxy::redirect_slash))
        .route("/user/{user}/{runtime}/", any(proxy::handle))
        .route("/user/{user}/{runtime}/{*rest}", any(proxy::handle))
        .merge(api)
        .merge(crate::hub::routes())
        .fallback(no_route)
        .layer(axum::middleware::from_fn(access::log))
        .with_state(site)
}

/// The largest request body the API takes (a manifest of a big image is a few MiB).
pub(crate) const BODY_LIMIT: usize = 32 << 20;

/// axum's own 413 for a body over [`BODY_LIMIT`] is plain text; the API answers in JSON.
async fn too_large_as_json(resp: Response) -> Response {
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return SiteError::TooLarge(format!(
            "the request body is over the limit of {} MiB",
            BODY_LIMIT >> 20
        ))
        .into_response();
    }
    resp
}

async fn no_route(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no route {}", uri.path()), "status": 404, "route": false})),
    )
        .into_response()
}

async fn ui_page() -> Html<&'static str> {
    Html(crate::ui::PAGE)
}

async fn health(State(site): S) -> Result<Json<Value>> {
    let version = site.db.schema_version()?;
    Ok(Json(json!({"success": true, "schemaVersion": version})))
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// Prometheus' text format; a token (any user's) unless the site serves it publicly.
async fn get_metrics(State(site): S, req: axum::extract::Request) -> Result<Response> {
    if !site.config.metrics_public {
        let user = auth::authenticate(&site, req.headers())?;
        access::note_user(req.extensions(), &user.name);
    }
    let text = metrics::render(&site)?;
    Ok(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<u32>,
    before: Option<i64>,
    action: Option<String>,
    user: Option<String>,
}

/// The audit log, newest first, a page at a time (administrators).
async fn list_audit(
    State(site): S,
    user: User,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let (records, next) = audit::list(
        &site,
        &audit::Query {
            limit: q.limit,
            before: q.before,
            action: q.action,
            user: q.user,
        },
    )?;
    Ok(Json(json!({"records": records, "next": next})))
}

/// A JSON object body; anything else is a 400 naming `body`.
fn object(body: &Bytes) -> Result<Map<String, Value>> {
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(SiteError::invalid("body", "expected a JSON object")),
        Err(e) => Err(SiteError::invalid("body", format!("not JSON: {e}"))),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, field: &str) -> Result<&'a str> {
    match m.get(field) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(SiteError::invalid(field, "required")),
        Some(other) => Err(SiteError::invalid(
            field,
            format!("expected a string, got {other}"),
        )),
    }
}

fn bool_field(m: &Map<String, Value>, field: &str, default: bool) -> Result<bool> {
    match m.get(field) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SiteError::invalid(
            field,
            format!("expected true or false, got {other}"),
        )),
    }
}

/// A non-negative whole number, also when written with a fraction of zero (`5611.0`: JSON
/// does not tell the two apart).
fn whole_number(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 2f64.powi(53))
            .map(|f| f as u64)
    })
}

fn only_fields(m: &Map<String, Value>, allowed: &[&str]) -> Result<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(SiteError::invalid(k, "unknown field")),
        None => Ok(()),
    }
}

// ---- login ----

async fn login(State(site): S, body: Bytes) -> Result<Response> {
    let m = object(&body)?;
    only_fields(&m, &["token"])?;
    let token = str_field(&m, "token")?.trim().to_string();
    let user = auth::user_for_token(&site, &token)?
        .ok_or_else(|| SiteError::Unauthorized("the token is not valid".into()))?;
    // The cookie carries a token of its own, so logging out (which revokes it) leaves the
    // token the user typed working, and a stolen cookie dies with its lifetime.
    let lifetime = site.config.tokens.login_lifetime;
    let (login_token, info) = auth::add_token(&site, &user, "web login", Some(lifetime))?;
    audit::record(
        &site,
        &user,
        "login",
        Some(&user.name),
        json!({"loginTokenId": info.id}),
    );
    let cookie = format!(
        "{}={login_token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        auth::COOKIE,
        lifetime.as_secs()
    );
    let mut resp = Json(json!({"user": user})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| SiteError::Internal("the login cookie is not a header value".into()))?,
    );
    Ok(resp)
}

/// Clear the login cookie and revoke the token the request was made with (the cookie's, or
/// the bearer token's when called from a script).
async fn logout(State(site): S, headers: HeaderMap) -> Result<Response> {
    auth::log_out(&site, &headers)?;
    let mut resp = Json(json!({"status": "success"})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(auth::CLEAR_COOKIE),
    );
    Ok(resp)
}

/// The calling user; for administrators also whether the site lets them open other users'
/// sessions (`adminAccess`).
async fn me(State(site): S, user: User) -> Json<Value> {
    let mut v = json!(user);
    if user.is_admin() {
        v["adminAccess"] = json!(site.config.admin_access);
    }
    Json(v)
}

// ---- users ----

async fn list_users(State(site): S, user: User) -> Result<Json<Value>> {
    user.require_admin()?;
    Ok(Json(json!({"users": auth::list_users(&site)?})))
}

fn role_field(m: &Map<String, Value>) -> Result<Option<Role>> {
    match m.get("role") {
        None => Ok(None),
        Some(Value::String(r)) if r == "admin" => Ok(Some(Role::Admin)),
        Some(Value::String(r)) if r == "author" => Ok(Some(Role::Author)),
        Some(other) => Err(SiteError::invalid(
            "role",
            format!("{other} is not a role: admin or author"),
        )),
    }
}

async fn create_user(State(site): S, user: User, body: Bytes) -> Result<(StatusCode, Json<Value>)> {
    user.require_admin()?;
    let m = object(&body)?;
    only_fields(&m, &["name", "role", "advanced"])?;
    let name = str_field(&m, "name")?;
    let role = role_field(&m)?.unwrap_or(Role::Author);
    let advanced = bool_field(&m, "advanced", false)?;
    let lifetime = site.config.tokens.api_lifetime;
    let (u, token) = auth::create_user(&site, name, role, advanced, lifetime)?;
    audit::record(
        &site,
        &user,
        "user.create",
        Some(&u.name),
        json!({"role": u.role, "advanced": u.advanced}),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": u, "token": token})),
    ))
}

/// The user named in the path, for its owner or an administrator.
fn user_for(site: &Site, caller: &User, name: &str) -> Result<User> {
    if caller.name != name {
        caller.require_admin()?;
    }
    auth::user_by_name(site, name)
}

async fn get_user(State(site): S, user: User, Path(name): Path<String>) -> Result<Json<Value>> {
    Ok(Json(json!({"user": user_for(&site, &user, &name)?})))
}

/// Change a user's role, privilege or whether it is disabled (administrators). Disabling a
/// user stops its running sessions.
async fn update_user(
    State(site): S,
    user: User,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let m = object(&body)?;
    only_fields(&m, &["role", "advanced", "disabled"])?;
    let change = auth::UserChange {
        role: role_field(&m)?,
        advanced: m
            .contains_key("advanced")
            .then(|| bool_field(&m, "advanced", false))
            .transpose()?,
        disabled: m
            .contains_key("disabled")
            .then(|| bool_field(&m, "disabled", false))
            .transpose()?,
    };
    let updated = auth::update_user(&site, &name, change)?;
    audit::record(
        &site,
        &user,
        "user.update",
        Some(&updated.name),
        Value::Object(m.clone()),
    );
    if updated.disabled {
        for s in sessions::list(&site, Some(updated.id), false)? {
            if s.is_active() {
                let why = format!(
                    "stopped: user {} was disabled by {}",
                    updated.name, user.name
                );
                sessions::stop(&site, &s, SessionState::Stopped, &why).await?;
            }
        }
    }
    Ok(Json(json!({"user": updated})))
}

async fn delete_user(State(site): S, user: User, Path(name): Path<String>) -> Result<Json<Value>> {
    user.require_admin()?;
    auth::delete_user(&site, &name)?;
    audit::record(&site, &user, "user.delete", Some(&name), Value::Null);
    Ok(Json(json!({"status": "success"})))
}

async fn list_tokens(
    State(site): S,
    user: User,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let target = user_for(&site, &user, &name)?;
    let current = auth::request_token(&headers);
    Ok(Json(json!({
        "user": target.name,
        "tokens": auth::list_tokens(&site, &target, current.as_deref())?
    })))
}

/// The longest `expiresIn`: ten years.
const MAX_TOKEN_SECONDS: u64 = 10 * 365 * 24 * 3600;

async fn create_token(
    State(site): S,
    user: User,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let target = user_for(&site, &user, &name)?;
    let m = object(&body)?;
    only_fields(&m, &["label", "expiresIn"])?;
    let label = match m.get("label") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(SiteError::invalid(
                "label",
                format!("expected a string, got {other}"),
            ))
        }
    };
    let lifetime = match m.get("expiresIn") {
        None | Some(Value::Null) => site.config.tokens.api_lifetime,
        Some(v) => match whole_number(v) {
            // A token that never expires is for services an administrator sets up.
            Some(0) => {
                user.require_admin().map_err(|_| {
                    SiteError::invalid("expiresIn", "0 (never) is for administrators")
                })?;
                None
            }
            Some(secs) if secs <= MAX_TOKEN_SECONDS => {
                Some(std::time::Duration::from_secs(secs))
            }
            _ => {
                return Err(SiteError::invalid(
                    "expiresIn",
                    format!("{v} is not a lifetime: seconds from 1 to {MAX_TOKEN_SECONDS}, or 0 for never (administrators)"),
                ))
            }
        },
    };
    let (token, info) = auth::add_token(&site, &target, label, lifetime)?;
    audit::record(
        &site,
        &user,
        "token.create",
        Some(&target.name),
        json!({"tokenId": info.id, "label": info.label, "expires": info.expires}),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": target, "token": token, "info": info})),
    ))
}

async fn revoke_token(
    State(site): S,
    user: User,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let target = user_for(&site, &user, &name)?;
    auth::revoke_token(&site, &target, &id)?;
    audit::record(
        &site,
        &user,
        "token.revoke",
        Some(&target.name),
        json!({"tokenId": id}),
    );
    Ok(Json(json!({"status": "success"})))
}

// ---- runtimes ----

/// `{"runtimes": [...]}`, serialised straight from the records (no `Value` in between: a
/// thousand runtimes are half a megabyte).
#[derive(serde::Serialize)]
struct RuntimeList {
    runtimes: Vec<Runtime>,
}

async fn list_runtimes(State(site): S, _user: User) -> Result<Json<RuntimeList>> {
    let mut runtimes = runtime::repo::list(&site.db)?;
    for rt in &mut runtimes {
        rt.warm_ready = site.pools.counts(&rt.id).0;
    }
    Ok(Json(RuntimeList { runtimes }))
}

async fn register_runtime(
    State(site): S,
    user: User,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let rt = register_op(&site, &user, object(&body)?).await?;
    Ok((StatusCode::CREATED, Json(json!({"notebookRuntime": rt}))))
}

// The runtime operations both this API and the ArcGIS-shaped one (crate::arcgis) make:
// permission, the change, its audit record.

/// Register a runtime from a body's fields (administrators).
pub(crate) async fn register_op(
    site: &Site,
    user: &User,
    fields: Map<String, Value>,
) -> Result<Runtime> {
    user.require_admin()?;
    let input = RuntimeInput::from_map(fields)?;
    let rt = runtime::register(site, &input, false).await?;
    audit::record(
        site,
        user,
        "runtime.register",
        Some(&rt.id),
        json!({"name": rt.name, "imageId": rt.image_id}),
    );
    Ok(rt)
}

/// Change the fields given of runtime `id` (administrators).
pub(crate) async fn update_op(
    site: &Site,
    user: &User,
    id: &str,
    fields: Map<String, Value>,
) -> Result<Runtime> {
    user.require_admin()?;
    // An unknown runtime is a 404 before the body's fields are looked at.
    let current = runtime::repo::get(&site.db, id)?;
    let given: Vec<String> = fields.keys().filter(|k| *k != "f").cloned().collect();
    let patch = RuntimeInput::from_map(fields)?;
    let rt = runtime::update(site, &current, &patch).await?;
    audit::record(
        site,
        user,
        "runtime.update",
        Some(&rt.id),
        json!({"name": rt.name, "fields": given}),
    );
    Ok(rt)
}

/// Unregister runtime `id` (administrators).
pub(crate) fn unregister_op(site: &Site, user: &User, id: &str) -> Result<()> {
    user.require_admin()?;
    let rt = runtime::repo::get(&site.db, id)?;
    runtime::unregister(site, &rt.id)?;
    audit::record(
        site,
        user,
        "runtime.unregister",
        Some(&rt.id),
        json!({"name": rt.name}),
    );
    Ok(())
}

/// Restore the factory runtimes (administrators).
pub(crate) async fn restore_op(site: &Site, user: &User) -> Result<runtime::RestoreReport> {
    user.require_admin()?;
    let report = runtime::restore_factory(site).await?;
    let names = |list: &[Runtime]| list.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    audit::record(
        site,
        user,
        "runtime.restore",
        None,
        json!({"added": names(&report.added), "updated": names(&report.updated),
               "missing": report.missing, "skipped": report.skipped}),
    );
    Ok(report)
}

/// What a restore answers (here and on the ArcGIS path): `status` and the report.
pub(crate) fn restore_answer(report: &runtime::RestoreReport) -> Value {
    json!({
        "status": "success", "added": report.added, "updated": report.updated,
        "unchanged": report.unchanged, "missing": report.missing, "skipped": report.skipped,
    })
}

async fn restore_runtimes(State(site): S, user: User) -> Result<Json<Value>> {
    let report = restore_op(&site, &user).await?;
    Ok(Json(restore_answer(&report)))
}

async fn get_runtime(
    State(site): S,
    _user: User,
    Path(id): Path<String>,
) -> Result<Json<runtime::Runtime>> {
    let mut rt = runtime::repo::get(&site.db, &id)?;
    rt.warm_ready = site.pools.counts(&rt.id).0;
    Ok(Json(rt))
}

// ---- session environment (crate::session_env) ----

/// The whole document a PUT replaces: an empty body is refused, not taken as "clear all".
fn json_body(body: &Bytes) -> Result<Value> {
    if body.is_empty() {
        return Err(SiteError::invalid(
            "body",
            "required: the whole document (send {} to clear it)",
        ));
    }
    Ok(Value::Object(object(body)?))
}

async fn get_site_session_env(State(site): S, user: User) -> Result<Json<Value>> {
    user.require_admin()?;
    let doc = session_env::load(&site, &session_env::Scope::Site)?;
    Ok(Json(json!({"sessionEnv": doc.shown()})))
}

async fn put_site_session_env(State(site): S, user: User, body: Bytes) -> Result<Json<Value>> {
    user.require_admin()?;
    let doc = session_env::put(&site, &session_env::Scope::Site, &json_body(&body)?)?;
    audit::record(&site, &user, "site.session-env", None, Value::Null);
    Ok(Json(json!({"sessionEnv": doc.shown()})))
}

async fn get_runtime_session_env(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let rt = runtime::repo::get(&site.db, &id)?;
    let doc = session_env::load(&site, &session_env::Scope::Runtime(rt.id.clone()))?;
    let effective = session_env::for_session(&site, &rt.id)?;
    Ok(Json(
        json!({"sessionEnv": doc.shown(), "effective": effective.shown()}),
    ))
}

async fn put_runtime_session_env(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let rt = runtime::repo::get(&site.db, &id)?;
    let doc = session_env::put(
        &site,
        &session_env::Scope::Runtime(rt.id.clone()),
        &json_body(&body)?,
    )?;
    audit::record(
        &site,
        &user,
        "runtime.session-env",
        Some(&rt.id),
        json!({"name": rt.name}),
    );
    Ok(Json(json!({"sessionEnv": doc.shown()})))
}

async fn update_runtime(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let rt = update_op(&site, &user, &id, object(&body)?).await?;
    Ok(Json(json!({"status": "success", "notebookRuntime": rt})))
}

async fn deprecate_runtime(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let m = object(&body)?;
    only_fields(&m, &["deprecated"])?;
    let deprecated = bool_field(&m, "deprecated", true)?;
    let rt = runtime::repo::set_deprecated(&site.db, &id, deprecated)?;
    audit::record(
        &site,
        &user,
        if deprecated {
            "runtime.deprecate"
        } else {
            "runtime.undeprecate"
        },
        Some(&rt.id),
        json!({"name": rt.name}),
    );
    Ok(Json(json!({"status": "success", "notebookRuntime": rt})))
}

async fn unregister_runtime(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    unregister_op(&site, &user, &id)?;
    Ok(Json(json!({"status": "success"})))
}

async fn get_manifest(State(site): S, _user: User, Path(id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(json!(runtime::repo::stored_manifest(&site.db, &id)?)))
}

async fn put_manifest(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| SiteError::invalid("manifest", format!("not JSON: {e}")))?;
    let manifest = runtime::parse_manifest(&v)?;
    let rt = runtime::repo::set_manifest(&site.db, &id, &manifest)?;
    audit::record(
        &site,
        &user,
        "runtime.manifest",
        Some(&rt.id),
        json!({"name": rt.name, "libraries": manifest.libraries.len()}),
    );
    Ok(Json(json!({"status": "success", "notebookRuntime": rt})))
}

// ---- notebooks and migrations ----

async fn list_notebooks(State(site): S, user: User) -> Result<Json<Value>> {
    Ok(Json(json!({"notebooks": notebooks::list(&site, &user)?})))
}

async fn create_notebook(
    State(site): S,
    user: User,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let m = object(&body)?;
    only_fields(&m, &["name", "runtimeId"])?;
    let nb = notebooks::create(
        &site,
        &user,
        str_field(&m, "name")?,
        str_field(&m, "runtimeId")?,
    )?;
    audit::record(
        &site,
        &user,
        "notebook.create",
        Some(&nb.id),
        json!({"name": nb.name, "runtimeId": nb.runtime_id}),
    );
    Ok((StatusCode::CREATED, Json(json!({"notebook": nb}))))
}

async fn get_notebook(State(site): S, user: User, Path(id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(
        json!({"notebook": notebooks::get(&site, &user, &id)?}),
    ))
}

async fn patch_notebook(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let m = object(&body)?;
    only_fields(&m, &["runtimeId"])?;
    let nb = notebooks::set_runtime(&site, &user, &id, str_field(&m, "runtimeId")?)?;
    audit::record(
        &site,
        &user,
        "notebook.update",
        Some(&nb.id),
        json!({"runtimeId": nb.runtime_id}),
    );
    Ok(Json(json!({"notebook": nb})))
}

async fn delete_notebook(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    notebooks::delete(&site, &user, &id)?;
    audit::record(&site, &user, "notebook.delete", Some(&id), Value::Null);
    Ok(Json(json!({"status": "success"})))
}

async fn list_migrations(State(site): S, user: User) -> Result<Json<Value>> {
    user.require_admin()?;
    Ok(Json(
        json!({"migrations": notebooks::list_migrations(&site)?}),
    ))
}

async fn create_migration(
    State(site): S,
    user: User,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    user.require_admin()?;
    let m = object(&body)?;
    only_fields(&m, &["from", "to", "dryRun"])?;
    let dry = bool_field(&m, "dryRun", false)?;
    let mig = notebooks::migrate(&site, str_field(&m, "from")?, str_field(&m, "to")?, dry)?;
    // A dry run changes nothing: no record.
    if !dry {
        audit::record(
            &site,
            &user,
            "migration.create",
            mig.id.as_deref(),
            json!({"from": mig.from, "to": mig.to, "notebooks": mig.notebooks.len()}),
        );
    }
    let status = if dry {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!({"migration": mig}))))
}

async fn rollback_migration(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let mig = notebooks::rollback(&site, &id)?;
    audit::record(
        &site,
        &user,
        "migration.rollback",
        mig.id.as_deref(),
        json!({"from": mig.from, "to": mig.to}),
    );
    Ok(Json(json!({"migration": mig})))
}

// ---- sessions ----

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: Option<bool>,
}

async fn list_sessions(
    State(site): S,
    user: User,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>> {
    let owner = if user.is_admin() { None } else { Some(user.id) };
    let list = sessions::list(&site, owner, q.all.unwrap_or(false))?;
    let list: Vec<Value> = list.iter().map(|s| session_json(&site, s)).collect();
    Ok(Json(json!({"sessions": list})))
}

/// A session as the API shows it: its record and when the culler would stop it (`cullAt`).
fn session_json(site: &Site, s: &sessions::Session) -> Value {
    let mut v = json!(s);
    v["cullAt"] = json!(sessions::cull_at(site, s));
    v
}

async fn start_session(
    State(site): S,
    user: User,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let m = object(&body)?;
    only_fields(&m, &["runtimeId", "wait"])?;
    let wait = bool_field(&m, "wait", false)?;
    let s = sessions::start(&site, &user, str_field(&m, "runtimeId")?, wait).await?;
    audit::record(
        &site,
        &user,
        "session.start",
        Some(&s.id),
        json!({"user": s.user, "runtimeId": s.runtime_id}),
    );
    let status = if s.state == SessionState::Ready {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(json!({"session": s}))))
}

async fn get_session(State(site): S, user: User, Path(id): Path<String>) -> Result<Json<Value>> {
    let s = sessions::get_visible(&site, &user, &id)?;
    Ok(Json(json!({"session": session_json(&site, &s)})))
}

/// What a running session uses now (`crate::usage`): admins any session, users their own.
async fn get_session_usage(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let s = sessions::get_visible(&site, &user, &id)?;
    Ok(Json(
        json!({"usage": crate::usage::of_session(&site, &s).await?}),
    ))
}

async fn stop_session(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    _h: HeaderMap,
) -> Result<Json<Value>> {
    let s = sessions::get_visible(&site, &user, &id)?;
    if s.is_active() {
        sessions::stop(
            &site,
            &s,
            SessionState::Stopped,
            &format!("stopped by {}", user.name),
        )
        .await?;
        audit::record(
            &site,
            &user,
            "session.stop",
            Some(&s.id),
            json!({"user": s.user, "runtimeId": s.runtime_id}),
        );
    }
    let s = sessions::get_visible(&site, &user, &id)?;
    Ok(Json(json!({"session": session_json(&site, &s)})))
}
