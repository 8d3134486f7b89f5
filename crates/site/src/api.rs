//! The HTTP interface: REST API under `/api` (described by `/api/openapi.json`), the
//! session proxy under `/user/`, the web UI at `/`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{self, Role, User};
use crate::error::{Result, SiteError};
use crate::runtime::{self, RuntimeInput};
use crate::sessions::{self, SessionState};
use crate::{notebooks, proxy, Site};

type S = State<Arc<Site>>;

pub fn router(site: Arc<Site>) -> Router {
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/openapi.json", get(openapi))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/{name}/tokens", post(create_token))
        .route("/api/runtimes", get(list_runtimes).post(register_runtime))
        .route("/api/runtimes/register", post(register_runtime))
        .route("/api/runtimes/restore", post(restore_runtimes))
        .route(
            "/api/runtimes/{id}",
            get(get_runtime)
                .patch(update_runtime)
                .delete(unregister_runtime),
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
        .layer(DefaultBodyLimit::max(32 << 20));
    Router::new()
        .route("/", get(ui_page))
        .route("/user/{user}/{runtime}", any(proxy::redirect_slash))
        .route("/user/{user}/{runtime}/", any(proxy::handle))
        .route("/user/{user}/{runtime}/{*rest}", any(proxy::handle))
        .merge(api)
        .fallback(no_route)
        .with_state(site)
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
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(SiteError::invalid(
            field,
            format!("expected true or false, got {other}"),
        )),
    }
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
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict",
        auth::COOKIE
    );
    let mut resp = Json(json!({"user": user})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|_| SiteError::invalid("token", "not a valid token"))?,
    );
    Ok(resp)
}

async fn logout() -> Response {
    let mut resp = Json(json!({"status": "success"})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("nbrt_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

async fn me(user: User) -> Json<User> {
    Json(user)
}

// ---- users ----

async fn list_users(State(site): S, user: User) -> Result<Json<Value>> {
    user.require_admin()?;
    Ok(Json(json!({"users": auth::list_users(&site)?})))
}

async fn create_user(State(site): S, user: User, body: Bytes) -> Result<(StatusCode, Json<Value>)> {
    user.require_admin()?;
    let m = object(&body)?;
    only_fields(&m, &["name", "role", "advanced"])?;
    let name = str_field(&m, "name")?;
    let role = match m.get("role").and_then(Value::as_str).unwrap_or("author") {
        "admin" => Role::Admin,
        "author" => Role::Author,
        other => {
            return Err(SiteError::invalid(
                "role",
                format!("{other:?} is not a role: admin or author"),
            ))
        }
    };
    let advanced = bool_field(&m, "advanced", false)?;
    let (u, token) = auth::create_user(&site, name, role, advanced)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": u, "token": token})),
    ))
}

async fn create_token(
    State(site): S,
    user: User,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    if user.name != name {
        user.require_admin()?;
    }
    let m = object(&body)?;
    only_fields(&m, &["label"])?;
    let label = m.get("label").and_then(Value::as_str).unwrap_or("");
    let target = auth::user_by_name(&site, &name)?;
    let token = auth::add_token(&site, &target, label)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": target, "token": token})),
    ))
}

// ---- runtimes ----

async fn list_runtimes(State(site): S, _user: User) -> Result<Json<Value>> {
    Ok(Json(json!({"runtimes": runtime::repo::list(&site.db)?})))
}

async fn register_runtime(
    State(site): S,
    user: User,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    user.require_admin()?;
    let input = RuntimeInput::from_map(object(&body)?)?;
    let rt = runtime::register(&site, &input, false).await?;
    Ok((StatusCode::CREATED, Json(json!({"notebookRuntime": rt}))))
}

async fn restore_runtimes(State(site): S, user: User) -> Result<Json<Value>> {
    user.require_admin()?;
    let report = runtime::restore_factory(&site).await?;
    Ok(Json(
        json!({"status": "success", "restored": report.restored, "missing": report.missing,
               "skipped": report.skipped}),
    ))
}

async fn get_runtime(
    State(site): S,
    _user: User,
    Path(id): Path<String>,
) -> Result<Json<runtime::Runtime>> {
    Ok(Json(runtime::repo::get(&site.db, &id)?))
}

async fn update_runtime(
    State(site): S,
    user: User,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    user.require_admin()?;
    let m = object(&body)?;
    // An unknown runtime is a 404 before the body's fields are looked at.
    let current = runtime::repo::get(&site.db, &id)?;
    let patch = RuntimeInput::from_map(m)?;
    let rt = runtime::update(&site, &current, &patch).await?;
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
    let rt = runtime::repo::set_deprecated(&site.db, &id, bool_field(&m, "deprecated", true)?)?;
    Ok(Json(json!({"status": "success", "notebookRuntime": rt})))
}

async fn unregister_runtime(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    user.require_admin()?;
    runtime::repo::delete(&site.db, &id)?;
    Ok(Json(json!({"status": "success"})))
}

async fn get_manifest(State(site): S, _user: User, Path(id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(
        json!({"libraries": runtime::repo::stored_manifest(&site.db, &id)?}),
    ))
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
    let libs = runtime::parse_manifest(&v)?;
    let rt = runtime::repo::set_manifest(&site.db, &id, &libs)?;
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
    Ok(Json(json!({"notebook": nb})))
}

async fn delete_notebook(
    State(site): S,
    user: User,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    notebooks::delete(&site, &user, &id)?;
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
    Ok(Json(json!({"migration": notebooks::rollback(&site, &id)?})))
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
    Ok(Json(json!({"sessions": list})))
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
    let status = if s.state == SessionState::Ready {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(json!({"session": s}))))
}

async fn get_session(State(site): S, user: User, Path(id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(
        json!({"session": sessions::get_visible(&site, &user, &id)?}),
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
    }
    Ok(Json(
        json!({"session": sessions::get_visible(&site, &user, &id)?}),
    ))
}
