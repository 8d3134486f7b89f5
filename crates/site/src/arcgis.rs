//! ArcGIS Notebook Server's Administrator Directory runtime operations, on the site's
//! registry: the paths under `/arcgis/admin/` that ArcGIS serves under
//! `https://<host>:11443/arcgis/admin/`, so a script written for ArcGIS needs only another
//! base URL.
//!
//! | path (under `/arcgis/admin/notebooks/runtimes`) | method | does |
//! | --- | --- | --- |
//! | `` | GET, POST | list: `{"runtimes": [...]}` |
//! | `/register` | POST | register: `{"status": "success", "notebookRuntime": {...}}` |
//! | `/restoreFactoryRuntimes`, `/restore` | POST | restore factory runtimes: `{"status": "success", "added": [...], "updated": [...], "unchanged": [...], "missing": [...], "skipped": [...]}` (what `/api/runtimes/restore` answers) |
//! | `/<id>` | GET, POST | one runtime's record |
//! | `/<id>/update` | POST | change the fields given: `{"status": "success", "notebookRuntime": {...}}` |
//! | `/<id>/unregister` | POST | `{"status": "success"}` |
//! | `/<id>/manifest` | GET, POST | `{"libraries": [...]}` |
//!
//! Parameters come as ArcGIS clients send them: form-encoded (`curl -d`), or a JSON object,
//! and in the query string; the fields are the registry's ([`crate::runtime::RuntimeInput`]:
//! ArcGIS's names and spellings, numbers and booleans as strings). `f` is `json` (the
//! default) or `pjson` (indented); `html` is not served. The token is the site's: `token=`
//! as a parameter (as ArcGIS clients send it), an `X-Esri-Authorization: Bearer` header,
//! or the site's own `Authorization: Bearer` / login cookie. Reads need any user, changes
//! an administrator, and every change is in the audit log like the REST API's (the same
//! operations, [`crate::api`]).
//!
//! Errors are ArcGIS's shape, `{"status": "error", "messages": ["<field>: <what>"], "code":
//! <HTTP status>}`, with the same HTTP status (ArcGIS itself answers 200: check `status`).
//! A missing token is code 499 ("Token Required"), one that is not valid 498 ("Invalid
//! Token"), both with HTTP 401, as ArcGIS's codes go.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::{register_op, restore_answer, restore_op, unregister_op, update_op, BODY_LIMIT};
use crate::auth::{self, User};
use crate::error::{Result, SiteError};
use crate::{access, runtime, Site};

/// Where the operations are mounted (ArcGIS's admin root is `/arcgis/admin`).
pub const PREFIX: &str = "/arcgis/admin/notebooks/runtimes";

pub fn routes() -> Router<Arc<Site>> {
    let p = |rest: &str| format!("{PREFIX}{rest}");
    Router::new()
        .route(PREFIX, get(list).post(list))
        .route(&p("/register"), post(register))
        .route(&p("/restoreFactoryRuntimes"), post(restore))
        .route(&p("/restore"), post(restore))
        .route(&p("/{id}"), get(one).post(one))
        .route(&p("/{id}/update"), post(update))
        .route(&p("/{id}/unregister"), post(unregister))
        .route(&p("/{id}/manifest"), get(manifest).post(manifest))
}

/// `f`: how the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Pjson,
}

/// An ArcGIS error: what the site's error says, with ArcGIS's code.
struct Failure {
    status: StatusCode,
    code: u16,
    message: String,
}

impl From<SiteError> for Failure {
    fn from(e: SiteError) -> Self {
        let status = e.status();
        if status.is_server_error() {
            tracing::warn!("{e}");
        }
        Failure {
            status,
            code: status.as_u16(),
            message: e.to_string(),
        }
    }
}

fn answer(format: Format, status: StatusCode, v: &Value) -> Response {
    let text = match format {
        Format::Json => v.to_string(),
        // Serializing a Value cannot fail; the compact form is the fallback all the same.
        Format::Pjson => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

fn failure(format: Format, f: Failure) -> Response {
    let mut resp = answer(
        format,
        f.status,
        &json!({"status": "error", "messages": [f.message], "code": f.code}),
    );
    if f.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"nbrt\""),
        );
    }
    resp
}

/// Put one parameter into `fields`: a name given twice with two values is refused.
fn put(fields: &mut Map<String, Value>, name: String, value: Value) -> Result<()> {
    match fields.get(&name) {
        Some(old) if *old != value => Err(SiteError::invalid(&name, "given twice")),
        _ => {
            fields.insert(name, value);
            Ok(())
        }
    }
}

/// The manifest's spellings: a form field can only hold text, so there its text is read as
/// JSON (a JSON body must send the manifest as JSON, as on `/api`).
const MANIFEST_FIELDS: &[&str] = &["manifest", "libraryManifest", "libraries"];

/// Form pairs (a query string or a form body) as fields: strings, the manifest as JSON.
fn form_pairs(field: &str, text: &[u8]) -> Result<Vec<(String, Value)>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(text)
        .map_err(|e| SiteError::invalid(field, format!("not form-encoded: {e}")))?;
    pairs
        .into_iter()
        .map(|(k, v)| {
            let value = if MANIFEST_FIELDS.contains(&k.as_str()) && !v.trim().is_empty() {
                serde_json::from_str(&v)
                    .map_err(|e| SiteError::invalid(&k, format!("not JSON ({e})")))?
            } else {
                Value::String(v)
            };
            Ok((k, value))
        })
        .collect()
}

/// The parameters of a request: the query string's, then the body's (form-encoded or a JSON
/// object, by its Content-Type; without one, a body starting with `{` is JSON).
fn parameters(
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>> {
    let mut fields = Map::new();
    for (k, v) in form_pairs("query", query.unwrap_or("").as_bytes())? {
        put(&mut fields, k, v)?;
    }
    let body = body.trim_ascii();
    if body.is_empty() {
        return Ok(fields);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = match content_type.as_str() {
        "application/json" => true,
        "application/x-www-form-urlencoded" => false,
        "" => body.starts_with(b"{"),
        "multipart/form-data" => {
            return Err(SiteError::invalid(
                "body",
                "multipart/form-data is not read: send the fields form-encoded (curl -d) or as a JSON object",
            ))
        }
        other => {
            return Err(SiteError::invalid(
                "body",
                format!("{other} is not read: send the fields form-encoded (curl -d) or as a JSON object"),
            ))
        }
    };
    if json {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => {
                for (k, v) in m {
                    put(&mut fields, k, v)?;
                }
            }
            Ok(_) => return Err(SiteError::invalid("body", "expected a JSON object")),
            Err(e) => return Err(SiteError::invalid("body", format!("not JSON: {e}"))),
        }
    } else {
        for (k, v) in form_pairs("body", body)? {
            put(&mut fields, k, v)?;
        }
    }
    Ok(fields)
}

fn take_format(fields: &mut Map<String, Value>) -> Result<Format> {
    match fields.remove("f") {
        None | Some(Value::Null) => Ok(Format::Json),
        Some(Value::String(f)) if f == "json" => Ok(Format::Json),
        Some(Value::String(f)) if f == "pjson" => Ok(Format::Pjson),
        Some(other) => Err(SiteError::invalid(
            "f",
            format!("{other} is not served: json or pjson"),
        )),
    }
}

/// The caller: `token=`, else `X-Esri-Authorization: Bearer`, else the site's own ways (a
/// change signed in with the login cookie must then be a JSON call from this site, as on
/// `/api`: a form posted from another page is refused).
fn caller(
    site: &Site,
    fields: &mut Map<String, Value>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<User, Failure> {
    let token = match fields.remove("token") {
        Some(Value::String(t)) if !t.trim().is_empty() => Some(t.trim().to_string()),
        None | Some(Value::Null) | Some(Value::String(_)) => None,
        Some(other) => {
            return Err(
                SiteError::invalid("token", format!("expected a string, got {other}")).into(),
            )
        }
    };
    let token = token.or_else(|| {
        headers
            .get("x-esri-authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(|t| t.trim().to_string())
    });
    let invalid = || Failure {
        status: StatusCode::UNAUTHORIZED,
        code: 498,
        message: "Invalid Token: the token is not valid (unknown, revoked or expired)".into(),
    };
    if let Some(token) = token {
        return auth::user_for_token(site, &token)?.ok_or_else(invalid);
    }
    if auth::request_token(headers).is_none() {
        return Err(Failure {
            status: StatusCode::UNAUTHORIZED,
            code: 499,
            message:
                "Token Required: send token=<the site's token> or `Authorization: Bearer <token>`"
                    .into(),
        });
    }
    match auth::authenticate_call(site, method, headers) {
        Ok(u) => Ok(u),
        Err(SiteError::Unauthorized(_)) => Err(invalid()),
        Err(e) => Err(e.into()),
    }
}

/// A call's caller and parameters (without `f` and `token`).
struct Call {
    user: User,
    fields: Map<String, Value>,
}

/// Read the request (bounded body), authenticate, run `op`, answer in ArcGIS's shape.
async fn handle<F, Fut>(site: Arc<Site>, req: Request, op: F) -> Response
where
    F: FnOnce(Arc<Site>, Call) -> Fut,
    Fut: Future<Output = Result<(StatusCode, Value)>>,
{
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            let e = SiteError::TooLarge(format!(
                "the request body is over the limit of {} MiB, or was not read: {e}",
                BODY_LIMIT >> 20
            ));
            return failure(Format::Json, e.into());
        }
    };
    let mut fields = match parameters(parts.uri.query(), &parts.headers, &body) {
        Ok(m) => m,
        Err(e) => return failure(Format::Json, e.into()),
    };
    let format = match take_format(&mut fields) {
        Ok(f) => f,
        Err(e) => return failure(Format::Json, e.into()),
    };
    let user = match caller(&site, &mut fields, &parts.method, &parts.headers) {
        Ok(u) => u,
        Err(f) => return failure(format, f),
    };
    access::note_user(&parts.extensions, &user.name);
    match op(site, Call { user, fields }).await {
        Ok((status, v)) => answer(format, status, &v),
        Err(e) => failure(format, e.into()),
    }
}

/// Refuse parameters an operation does not take (reads and unregister take none).
fn no_fields(call: &Call) -> Result<()> {
    match call.fields.keys().next() {
        Some(k) => Err(SiteError::invalid(k, "unknown parameter")),
        None => Ok(()),
    }
}

async fn list(State(site): State<Arc<Site>>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        no_fields(&call)?;
        let runtimes = runtime::repo::list(&site.db)?;
        Ok((StatusCode::OK, json!({"runtimes": runtimes})))
    })
    .await
}

async fn one(State(site): State<Arc<Site>>, Path(id): Path<String>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        no_fields(&call)?;
        let rt = runtime::repo::get(&site.db, &id)?;
        Ok((StatusCode::OK, serde_json::to_value(rt).map_err(internal)?))
    })
    .await
}

fn internal(e: serde_json::Error) -> SiteError {
    SiteError::Internal(format!("writing the answer: {e}"))
}

async fn register(State(site): State<Arc<Site>>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        let rt = register_op(&site, &call.user, call.fields).await?;
        Ok((
            StatusCode::OK,
            json!({"status": "success", "notebookRuntime": rt}),
        ))
    })
    .await
}

async fn update(State(site): State<Arc<Site>>, Path(id): Path<String>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        let rt = update_op(&site, &call.user, &id, call.fields).await?;
        Ok((
            StatusCode::OK,
            json!({"status": "success", "notebookRuntime": rt}),
        ))
    })
    .await
}

async fn unregister(
    State(site): State<Arc<Site>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    handle(site, req, |site, call| async move {
        no_fields(&call)?;
        unregister_op(&site, &call.user, &id)?;
        Ok((StatusCode::OK, json!({"status": "success"})))
    })
    .await
}

async fn manifest(State(site): State<Arc<Site>>, Path(id): Path<String>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        no_fields(&call)?;
        let libraries = runtime::repo::stored_manifest(&site.db, &id)?.libraries;
        Ok((StatusCode::OK, json!({"libraries": libraries})))
    })
    .await
}

async fn restore(State(site): State<Arc<Site>>, req: Request) -> Response {
    handle(site, req, |site, call| async move {
        no_fields(&call)?;
        let report = restore_op(&site, &call.user).await?;
        Ok((StatusCode::OK, restore_answer(&report)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(body: &str) -> Result<Map<String, Value>> {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        parameters(Some("f=json"), &h, &Bytes::from(body.to_string()))
    }

    #[test]
    fn form_json_and_query_parameters() {
        let m = form("name=Python+3&maxCpu=2&f=json").unwrap();
        assert_eq!(m["name"], "Python 3");
        assert_eq!(m["maxCpu"], "2");
        assert_eq!(m["f"], "json");
        // A manifest's text is read as JSON.
        let m =
            form("libraryManifest=%5B%7B%22name%22%3A%22numpy%22%2C%22version%22%3A%222%22%7D%5D")
                .unwrap();
        assert_eq!(m["libraryManifest"][0]["name"], "numpy");
        assert_eq!(
            form("manifest=%5Bnot").unwrap_err().field(),
            Some("manifest")
        );
        assert_eq!(form("f=pjson").unwrap_err().field(), Some("f"));
        let m = parameters(None, &HeaderMap::new(), &Bytes::from(r#"{"maxCpu": 2}"#)).unwrap();
        assert_eq!(m["maxCpu"], 2);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=x".parse().unwrap(),
        );
        assert_eq!(
            parameters(None, &h, &Bytes::from("--x"))
                .unwrap_err()
                .field(),
            Some("body")
        );
    }

    #[test]
    fn formats() {
        let mut m = Map::new();
        m.insert("f".into(), "pjson".into());
        assert_eq!(take_format(&mut m).unwrap(), Format::Pjson);
        m.insert("f".into(), "html".into());
        assert_eq!(take_format(&mut m).unwrap_err().field(), Some("f"));
        assert_eq!(take_format(&mut Map::new()).unwrap(), Format::Json);
    }
}
