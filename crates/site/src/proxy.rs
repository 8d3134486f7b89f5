//! `/user/<name>/<runtime>/…` → the session's notebook server: HTTP requests and websocket
//! upgrades, for the session's owner only (and administrators when the site allows admin
//! access, audited). The site's own credentials (the `nbrt_token`
//! cookie, the Authorization header) never reach the container; the session's Jupyter token
//! is sent instead.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use nbrt_oci::label::HttpContract;

use crate::auth;
use crate::error::{Result, SiteError};
use crate::sessions::{self, SessionState};
use crate::Site;

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

const MAX_SMALL_BODY: usize = 4 << 20;

/// GET a URL, returning the status and (bounded) body.
pub async fn get_body(
    client: &HttpClient,
    url: &str,
    authorization: Option<&str>,
) -> Result<(u16, Vec<u8>)> {
    let mut req = axum::http::Request::get(url);
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let req = req
        .body(Body::empty())
        .map_err(|e| SiteError::Internal(format!("request to {url}: {e}")))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| SiteError::Unavailable(format!("{url}: no answer in 10 s")))?
        .map_err(|e| SiteError::Unavailable(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_SMALL_BODY)
        .collect()
        .await
        .map_err(|e| SiteError::Unavailable(format!("{url}: {e}")))?
        .to_bytes();
    Ok((status, body.to_vec()))
}

pub async fn get_status(
    client: &HttpClient,
    url: &str,
    authorization: Option<&str>,
) -> Result<u16> {
    get_body(client, url, authorization).await.map(|(s, _)| s)
}

/// Headers that describe one hop, not the message (RFC 9110 7.6.1), minus `upgrade`, which
/// is handled for websockets.
const HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn strip_hop(headers: &mut HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| s != "upgrade")
        .collect();
    for h in HOP {
        headers.remove(*h);
    }
    for h in named {
        headers.remove(h.as_str());
    }
}

/// The Cookie header without the site's login cookie.
fn strip_site_cookie(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(auth::COOKIE))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(header::UPGRADE)
}

/// `/user/<name>/<runtime>` without the slash: redirect, as JupyterHub does.
pub async fn redirect_slash(uri: Uri) -> Redirect {
    Redirect::temporary(&format!("{}/", uri.path()))
}

/// Counted in `nbrt_proxy_requests_total`; the proxy's own 5xx answers (the session not
/// ready, its server not answering) also in `nbrt_proxy_errors_total`.
pub async fn handle(State(site): State<Arc<Site>>, req: Request) -> Response<Body> {
    site.metrics.proxy_requests.inc();
    match forward(site.clone(), req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                site.metrics.proxy_errors.inc();
            }
            e.into_response()
        }
    }
}

/// An administrator opening another user's session: audited once per administrator and
/// session (every request of a notebook page would drown the log).
fn note_admin_access(site: &Site, user: &auth::User, session: &sessions::Session) {
    let first = match site.admin_accesses.lock() {
        Ok(mut seen) => seen.insert((user.name.clone(), session.id.clone())),
        Err(_) => true,
    };
    if first {
        crate::audit::record(
            site,
            user,
            "session.admin-access",
            Some(&session.id),
            serde_json::json!({"owner": session.user, "runtimeId": session.runtime_id}),
        );
    }
}

fn path_parts(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/user/")?;
    let mut it = rest.splitn(3, '/');
    let user = it.next().filter(|s| !s.is_empty())?;
    let runtime = it.next().filter(|s| !s.is_empty())?;
    Some((user, runtime))
}

/// The session of `/warm/<session id>/…` (a warm session's own URL, see
/// [`sessions::pool`]).
fn warm_part(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/warm/")?;
    rest.split('/').next().filter(|s| !s.is_empty())
}

/// Whether `user` may open a session of `owner`: the owner, or an administrator when the
/// site allows admin access (then `Ok(true)`, for the audit).
fn may_open(site: &Site, user: &auth::User, owner: &str, path: &str) -> Result<bool> {
    let admin_access = user.name != owner && user.is_admin() && site.config.admin_access;
    if user.name != owner && !admin_access {
        // Only the owner reaches a session (ArcGIS: "only one user can be assigned any given
        // container"); administrators too, unless the site allows admin access.
        return Err(SiteError::Forbidden(format!(
            "{path} belongs to {owner}; {} may not open it{}",
            user.name,
            if user.is_admin() {
                " (the site runs without --admin-access)"
            } else {
                ""
            }
        )));
    }
    Ok(admin_access)
}

/// The headers the image asks to have on its requests (Kubeflow's
/// `http-headers-request-set`, e.g. RStudio's `X-RStudio-Root-Path`), replacing what the
/// client sent under those names. Checked when the runtime was registered; one that is not
/// a header after all is left out.
fn set_server_headers(headers: &mut HeaderMap, http: &HttpContract, prefix: &str) {
    for (name, value) in http.request_headers(prefix) {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(n, v);
        }
    }
}

async fn forward(site: Arc<Site>, mut req: Request) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let (user, session, admin_access) = if let Some(id) = warm_part(&path) {
        let user = auth::authenticate(&site, req.headers())?;
        crate::access::note_user(req.extensions(), &user.name);
        let session = sessions::get(&site, id)?
            .filter(|s| s.is_active())
            .ok_or_else(|| SiteError::NotFound(format!("no running session {id}")))?;
        let admin_access = may_open(&site, &user, &session.user, &path)?;
        (user, session, admin_access)
    } else {
        let (owner, runtime_id) =
            path_parts(&path).ok_or_else(|| SiteError::NotFound(format!("no route {path}")))?;
        let user = auth::authenticate(&site, req.headers())?;
        crate::access::note_user(req.extensions(), &user.name);
        let admin_access = may_open(&site, &user, owner, &path)?;
        let session = sessions::active_by_path(&site, owner, runtime_id)?.ok_or_else(|| {
            SiteError::NotFound(format!(
                "{owner} has no session on runtime {runtime_id}: start one first"
            ))
        })?;
        // A warm session answers at its own URL: the same page there.
        let own = sessions::prefix(owner, runtime_id);
        if session.prefix != own {
            let rest = path.strip_prefix(&own).unwrap_or("/");
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let to = format!("{}{rest}{query}", session.prefix);
            return Ok(Redirect::temporary(&to).into_response());
        }
        (user, session, admin_access)
    };
    if admin_access {
        note_admin_access(&site, &user, &session);
    }
    let addr = match (session.state, &session.address) {
        (SessionState::Ready, Some(a)) => a.clone(),
        _ => {
            return Err(SiteError::Unavailable(format!(
                "the session is {}: try again in a moment",
                session.state
            )))
        }
    };
    // The path the server sees: the same, or with the prefix rewritten (Kubeflow's
    // http-rewrite-uri, for servers that answer at their root).
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let upstream_path = session.http.upstream_path(&session.prefix, &path);
    sessions::touch(&site, &session)?;
    let upstream: Uri = format!("http://{addr}{upstream_path}{query}")
        .parse()
        .map_err(|e| SiteError::invalid("path", format!("{e}")))?;
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let (mut parts, body) = req.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop(&mut headers);
    strip_site_cookie(&mut headers);
    headers.remove(header::AUTHORIZATION);
    if session.http.is_jupyter() {
        let token = HeaderValue::from_str(&format!("token {}", session.token))
            .map_err(|e| SiteError::Internal(format!("session token: {e}")))?;
        headers.insert(header::AUTHORIZATION, token);
    }
    set_server_headers(&mut headers, &session.http, &session.prefix);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(upstream);
    if let Some(h) = out.headers_mut() {
        *h = headers;
    }
    let out = out
        .body(if upgrade { Body::empty() } else { body })
        .map_err(|e| SiteError::Internal(format!("building the request: {e}")))?;
    let mut resp =
        site.http.request(out).await.map_err(|e| {
            SiteError::Unavailable(format!("the notebook server did not answer: {e}"))
        })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(SiteError::Engine(
                "the notebook server switched protocols unasked".into(),
            ));
        };
        let server_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, server_upgrade) {
                Ok((c, s)) => {
                    let mut c = TokioIo::new(c);
                    let mut s = TokioIo::new(s);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                }
                Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_cookie_is_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("_xsrf=abc; nbrt_token=nbrt_secret; other=1"),
        );
        strip_site_cookie(&mut h);
        assert_eq!(h.get(header::COOKIE).unwrap(), "_xsrf=abc; other=1");
    }

    #[test]
    fn an_images_headers_replace_the_clients() {
        let http = HttpContract {
            http_headers_request_set: [(
                "X-RStudio-Root-Path".to_string(),
                "${NB_PREFIX}".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("x-rstudio-root-path", HeaderValue::from_static("/forged/"));
        set_server_headers(&mut h, &http, "/user/ann/rt1");
        assert_eq!(h.get_all("x-rstudio-root-path").iter().count(), 1);
        assert_eq!(h.get("x-rstudio-root-path").unwrap(), "/user/ann/rt1/");
    }

    #[test]
    fn paths() {
        assert_eq!(path_parts("/user/ann/rt1/lab"), Some(("ann", "rt1")));
        assert_eq!(path_parts("/user/ann/rt1/"), Some(("ann", "rt1")));
        assert_eq!(path_parts("/user/ann/"), None);
    }
}
