//! The way back from JupyterLab to the site. JupyterLab's hub extension shows "Hub Control
//! Panel" and "Log Out" in its File menu when the page config carries `hubPrefix`, as
//! JupyterHub's single-user server sets it; every session gets that page config as a file
//! ([`PAGE_CONFIG_PATH`], see [`crate::session_env::SessionEnv::hub_link`]) naming this
//! site's `/hub/` paths, which this module serves:
//!
//! | JupyterLab opens | the site answers |
//! | --- | --- |
//! | `<hubHost>/hub/home` (Hub Control Panel) | a redirect to the site's sessions page |
//! | `<hubHost>/hub/spawn…` (Restart Server, the lost-connection dialog) | the same |
//! | `<server base>/logout` (`/user/<name>/<runtime>/` or a warm session's `/warm/<session>/`; Log Out: JupyterLab asks the notebook server, which under JupyterHub hands over to the Hub's logout) | a redirect to `/hub/logout` instead of the notebook server |
//! | `/hub/logout` | the site's logout: the login cookie's token revoked, the cookie cleared, a redirect to the site |
//!
//! `hubHost` is left empty: JupyterLab then opens these on the origin it was loaded from,
//! which is the site (notebook servers are reached through its proxy), whatever name or
//! address the user reached the site by.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::{auth, Site};

/// Where a session's page config for the hub extension is written: a `page_config.d` file
/// in `/usr/local/etc/jupyter`, a system config directory every Jupyter reads (below the
/// environment's, the user's and `/etc/jupyter`'s files, so an image or a user can override
/// it), and one no stock image has (its directories are made root-owned 0755, as
/// `/usr/local/etc` is).
pub const PAGE_CONFIG_PATH: &str = "/usr/local/etc/jupyter/labconfig/page_config.d/nbrt-site.json";

/// The site's paths JupyterLab's hub extension opens.
pub const PREFIX: &str = "/hub/";

/// The page config every session gets: `hubPrefix` (this site's `/hub/`) and an empty
/// `hubHost` (the origin JupyterLab was loaded from: the site).
pub fn page_config() -> Value {
    json!({"hubPrefix": PREFIX, "hubHost": ""})
}

pub fn routes() -> Router<Arc<Site>> {
    Router::new()
        .route("/hub", get(to_sessions))
        .route("/hub/", get(to_sessions))
        .route("/hub/home", get(to_sessions))
        .route("/hub/spawn", get(to_sessions))
        .route("/hub/spawn/{*rest}", get(to_sessions))
        .route("/hub/logout", get(logout))
        .route("/user/{user}/{runtime}/logout", get(to_logout))
        .route("/warm/{session}/logout", get(to_logout))
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
}

async fn to_sessions() -> Response {
    redirect("/#sessions")
}

async fn to_logout() -> Response {
    redirect("/hub/logout")
}

/// The site's logout for a browser (`POST /api/logout` for scripts): the token the request
/// carries revoked, the login cookie cleared, back to the site's page (its login form).
async fn logout(
    axum::extract::State(site): axum::extract::State<Arc<Site>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = auth::log_out(&site, &headers) {
        return e.into_response();
    }
    let mut resp = redirect("/");
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(auth::CLEAR_COOKIE),
    );
    resp
}
