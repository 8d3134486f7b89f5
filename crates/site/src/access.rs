//! The access log: one event per HTTP request (target `nbrt::access`) with its method, path
//! (never the query string: it may carry a token), status, duration (to the response's
//! headers; a proxied body or a websocket streams on after) and user (`-` when the request
//! was not authenticated). The format is the server's log format (`nbrt serve --log-format`).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Extensions;
use axum::middleware::Next;
use axum::response::Response;

/// Who made the request, once authentication knows: put in the request's extensions by
/// [`log`], set by [`note_user`].
#[derive(Clone, Default)]
pub struct Caller(Arc<OnceLock<String>>);

/// Tell the access log who the request's user is.
pub fn note_user(extensions: &Extensions, name: &str) {
    if let Some(c) = extensions.get::<Caller>() {
        let _ = c.0.set(name.to_string());
    }
}

/// The middleware that writes the access log.
pub async fn log(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let caller = Caller::default();
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    let duration_ms = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let user = caller.0.get().map(String::as_str).unwrap_or("-");
    tracing::info!(
        target: "nbrt::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        duration_ms,
        user,
        "request"
    );
    resp
}
