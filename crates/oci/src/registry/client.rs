//! The connection to one repository: one HTTP client (reqwest) with the credentials (the
//! login as Docker does it, tokens renewed when refused), registry errors turned into clear
//! [`OciError::Registry`] messages (worded through oci-client's error types), and the
//! requests pull and push make. Every read is bounded while it streams (`bounded.rs`):
//! documents up to the JSON size limit, blobs up to their descriptor's size, error and
//! token replies to their own limits. (oci-client's own client reads whole bodies before
//! looking at them, so no request goes through it.)

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use super::auth::{
    exchange_identity_token, load_credentials, parse_bearer_challenge, CredentialOrigin,
};
use super::bounded::{read_bounded, Bounded, DOCUMENT_LIMIT, ERROR_BODY_LIMIT, TOKEN_REPLY_LIMIT};
use super::reference::RemoteRef;
use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::progress::Bar;
use crate::spec::{media, Descriptor};

/// Blobs transferred at the same time.
pub(super) const CONCURRENCY: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP for any registry (loopback registries always get plain HTTP).
    pub insecure: bool,
    /// Docker's `config.json` with credentials. Default: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

pub(super) struct Remote {
    pub(super) r: RemoteRef,
    pub(super) reference: Reference,
    pub(super) auth: RegistryAuth,
    origin: CredentialOrigin,
    scheme: &'static str,
    /// The HTTP client every request goes through (see the module's notes).
    pub(super) http: reqwest::Client,
    /// How requests authenticate, found on first use (and again when a token expires).
    request_auth: tokio::sync::Mutex<Option<RequestAuth>>,
    /// The token scopes asked for (`repository:<name>:pull[,push]`, mount sources).
    scopes: Vec<String>,
}

/// What every request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RequestAuth {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl RequestAuth {
    pub(super) fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            RequestAuth::Anonymous => rb,
            RequestAuth::Basic(user, password) => rb.basic_auth(user, Some(password)),
            RequestAuth::Bearer(token) => rb.bearer_auth(token),
        }
    }
}

impl Remote {
    /// Set up a client for `r`. `scopes`: the token scopes an identity token is traded for.
    pub(super) async fn connect(
        r: &RemoteRef,
        opts: &RegistryOptions,
        scopes: Vec<String>,
    ) -> Result<Self> {
        let plain = opts.insecure || r.is_loopback();
        let scheme = if plain { "http" } else { "https" };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("nbrt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OciError::Registry {
                registry: r.host.clone(),
                message: format!("cannot set up an HTTP client: {e}"),
            })?;
        let creds = load_credentials(r, opts)?;
        let auth = match &creds.identity_token {
            Some(token) => {
                let access = exchange_identity_token(scheme, &r.host, token, &scopes)
                    .await
                    .map_err(|message| OciError::Registry {
                        registry: r.host.clone(),
                        message: format!("logging in with the identity token: {message}"),
                    })?;
                RegistryAuth::Bearer(access)
            }
            None => creds.auth,
        };
        let reference = r.oci();
        Ok(Self {
            r: r.clone(),
            reference,
            auth,
            origin: creds.origin,
            scheme,
            http,
            request_auth: tokio::sync::Mutex::new(None),
            scopes,
        })
    }

    pub(super) fn fail(&self, message: String) -> OciError {
        OciError::Registry {
            registry: self.r.host.clone(),
            message,
        }
    }

    /// A clear error for a failed registry call: what was being done, the HTTP status,
    /// what the registry said, and what to do about a refusal.
    pub(super) fn error(&self, doing: &str, e: OciDistributionError) -> OciError {
        let status_line = |code: u16| {
            let reason = reqwest::StatusCode::from_u16(code)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            format!("HTTP {code} {reason}").trim_end().to_string()
        };
        let (code, detail) = match e {
            OciDistributionError::ServerError { code, url, message } => {
                let message = message.trim();
                let message = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", truncate(message, 500))
                };
                (
                    Some(code),
                    format!("{} from {url}{message}", status_line(code)),
                )
            }
            OciDistributionError::UnauthorizedError { url } => {
                (Some(401), format!("{} from {url}", status_line(401)))
            }
            OciDistributionError::RegistryError { envelope, url } => {
                let code = envelope_status(&envelope);
                let errors = describe_envelope(&envelope);
                let status = code
                    .map(|c| format!("{} ", status_line(c)))
                    .unwrap_or_default();
                (code, format!("{status}from {url}: {errors}"))
            }
            OciDistributionError::RequestError(err) => match err.status() {
                Some(s) => (
                    Some(s.as_u16()),
                    format!(
                        "{}{}",
                        status_line(s.as_u16()),
                        err.url().map(|u| format!(" from {u}")).unwrap_or_default()
                    ),
                ),
                None if err.is_connect() => (
                    None,
                    format!(
                        "cannot connect to {}://{}: {}{}",
                        self.scheme,
                        self.r.host,
                        error_chain(&err),
                        if self.scheme == "https" {
                            " (a registry that speaks plain HTTP needs --insecure)"
                        } else {
                            " (is the registry running?)"
                        }
                    ),
                ),
                None if err.is_timeout() => (None, format!("timed out: {}", error_chain(&err))),
                None => (None, error_chain(&err)),
            },
            OciDistributionError::DigestError(d) => (None, format!("digest check failed: {d}")),
            OciDistributionError::AuthenticationFailure(reason) => (
                Some(401),
                format!(
                    "the token server refused to log in: {}",
                    truncate(reason.trim(), 500)
                ),
            ),
            other => (None, other.to_string()),
        };
        let hint = match code {
            Some(401) => format!("; {}", self.auth_hint()),
            Some(403) => format!(
                "; the registry denied access to {} ({})",
                self.r.repository,
                self.describe_origin()
            ),
            _ => String::new(),
        };
        self.fail(format!("{doing}: {detail}{hint}"))
    }

    fn describe_origin(&self) -> String {
        match &self.origin {
            CredentialOrigin::None(why) => format!("no credentials: {why}"),
            CredentialOrigin::Basic { user, from } => format!("user {user:?} from {from}"),
            CredentialOrigin::IdentityToken { from } => format!("identity token from {from}"),
        }
    }

    fn auth_hint(&self) -> String {
        match &self.origin {
            CredentialOrigin::None(why) => format!(
                "the registry requires credentials and none were found ({why}); log in with \
                 `docker login {}` or add them to the Docker config",
                self.r.host
            ),
            CredentialOrigin::Basic { user, from } => {
                format!("the registry refused the credentials of user {user:?} from {from}")
            }
            CredentialOrigin::IdentityToken { from } => {
                format!("the registry refused the identity token from {from}")
            }
        }
    }

    /// `<scheme>://<registry>/v2/<repository>/<path>`.
    pub(super) fn url(&self, path: &str) -> String {
        format!(
            "{}://{}/v2/{}/{path}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        )
    }

    /// How requests authenticate: found once, as Docker does: `GET /v2/`, and on a Bearer
    /// challenge a token for the connection's scopes from the token server (with the Basic
    /// credentials, if any); on a Basic challenge the Basic credentials.
    /// `stale`: what a request was refused with, to be replaced.
    async fn request_auth(&self, stale: Option<&RequestAuth>) -> Result<RequestAuth> {
        let mut current = self.request_auth.lock().await;
        if let Some(auth) = current.as_ref() {
            if stale.is_none_or(|s| s != auth) {
                return Ok(auth.clone());
            }
        }
        let auth = self.login().await?;
        *current = Some(auth.clone());
        Ok(auth)
    }

    async fn login(&self) -> Result<RequestAuth> {
        let basic = match &self.auth {
            RegistryAuth::Bearer(token) => return Ok(RequestAuth::Bearer(token.clone())),
            RegistryAuth::Basic(user, password) => Some((user.clone(), password.clone())),
            RegistryAuth::Anonymous => None,
        };
        let probe = format!(
            "{}://{}/v2/",
            self.scheme,
            self.reference.resolve_registry()
        );
        let doing = "logging in";
        // Only the headers are looked at; the body is never read.
        let res = self
            .http
            .get(&probe)
            .send()
            .await
            .map_err(|e| self.error(doing, OciDistributionError::RequestError(e)))?;
        let challenge = res
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        drop(res);
        let Some(challenge) = challenge else {
            return Ok(RequestAuth::Anonymous);
        };
        let Some(bearer) = parse_bearer_challenge(&challenge) else {
            return Ok(match basic {
                Some((user, password)) => RequestAuth::Basic(user, password),
                None => RequestAuth::Anonymous,
            });
        };
        let mut query: Vec<(&str, &str)> =
            self.scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = &bearer.service {
            query.push(("service", service));
        }
        let mut rb = self.http.get(&bearer.realm).query(&query);
        if let Some((user, password)) = &basic {
            rb = rb.basic_auth(user, Some(password));
        }
        let doing = format!("getting a token from {}", bearer.realm);
        let mut res = rb
            .send()
            .await
            .map_err(|e| self.error(&doing, OciDistributionError::RequestError(e)))?;
        let status = res.status();
        if !status.is_success() {
            let body = read_bounded(&mut res, ERROR_BODY_LIMIT)
                .await
                .map_err(|e| self.error(&doing, OciDistributionError::RequestError(e)))?;
            let e = OciDistributionError::AuthenticationFailure(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body.bytes)
            ));
            return Err(cut_note(self.error(&doing, e), &body));
        }
        let body = read_bounded(&mut res, TOKEN_REPLY_LIMIT)
            .await
            .map_err(|e| self.error(&doing, OciDistributionError::RequestError(e)))?;
        if body.cut {
            return Err(OciError::OverLimit {
                what: format!("the token reply of {}", bearer.realm),
                limit: TOKEN_REPLY_LIMIT,
            });
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
        }
        let reply: TokenReply = serde_json::from_slice(&body.bytes).map_err(|e| {
            self.fail(format!(
                "{doing}: the token server answered invalid JSON: {e}"
            ))
        })?;
        reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .map(RequestAuth::Bearer)
            .ok_or_else(|| self.fail(format!("{doing}: the token server returned no token")))
    }

    /// Send the request `make` builds with the current credentials. `renew`: on a 401
    /// with a token from a token server, get a fresh token and send again, once (tokens
    /// expire: Docker Hub's after five minutes, shorter than a big transfer). Returns any
    /// reply; [`Remote::refuse`] turns one that is not wanted into an error.
    pub(super) async fn send(
        &self,
        doing: &str,
        renew: bool,
        mut make: impl FnMut(&RequestAuth) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut auth = self.request_auth(None).await?;
        let mut renewed = !renew;
        loop {
            let res = make(&auth)
                .send()
                .await
                .map_err(|e| self.error(doing, OciDistributionError::RequestError(e)))?;
            let from_token_server = matches!(auth, RequestAuth::Bearer(_))
                && !matches!(self.auth, RegistryAuth::Bearer(_));
            if res.status() == reqwest::StatusCode::UNAUTHORIZED && from_token_server && !renewed {
                renewed = true;
                auth = self.request_auth(Some(&auth)).await?;
                continue;
            }
            return Ok(res);
        }
    }

    /// The error for an unwanted reply, its body read up to [`ERROR_BODY_LIMIT`].
    pub(super) async fn refuse(
        &self,
        doing: &str,
        url: &str,
        mut res: reqwest::Response,
    ) -> OciError {
        let status = res.status();
        match read_bounded(&mut res, ERROR_BODY_LIMIT).await {
            Ok(body) => cut_note(
                self.error(doing, status_error(status, &body.bytes, url)),
                &body,
            ),
            Err(e) => self.error(doing, OciDistributionError::RequestError(e)),
        }
    }

    /// `GET`, authenticated; a reply that is not `200` becomes an error.
    async fn pull_get(
        &self,
        url: &str,
        accept: Option<&str>,
        doing: &str,
    ) -> Result<reqwest::Response> {
        let res = self
            .send(doing, true, |auth| {
                let rb = auth.apply(self.http.get(url));
                match accept {
                    Some(a) => rb.header(reqwest::header::ACCEPT, a),
                    None => rb,
                }
            })
            .await?;
        if res.status() == reqwest::StatusCode::OK {
            return Ok(res);
        }
        Err(self.refuse(doing, url, res).await)
    }

    /// Fetch a manifest or index by reference, checking its digest and size.
    pub(super) async fn fetch_manifest(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<(Bytes, Digest)> {
        let accepted = [
            media::OCI_MANIFEST,
            media::DOCKER_MANIFEST,
            media::OCI_INDEX,
            media::DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let url = self.url(&format!("manifests/{target}"));
        let doing = format!("fetching {what}");
        let mut res = self.pull_get(&url, Some(&accepted), &doing).await?;
        if let Some(len) = res.content_length() {
            if len > DOCUMENT_LIMIT {
                return Err(OciError::TooLarge {
                    what: format!("{what} from {}", self.r.host),
                    size: len,
                    limit: DOCUMENT_LIMIT,
                });
            }
        }
        let reported = res
            .headers()
            .get("docker-content-digest")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let body = read_bounded(&mut res, DOCUMENT_LIMIT)
            .await
            .map_err(|e| self.error(&doing, OciDistributionError::RequestError(e)))?;
        if body.cut {
            return Err(OciError::OverLimit {
                what: format!("{what} from {}", self.r.host),
                limit: DOCUMENT_LIMIT,
            });
        }
        let body = Bytes::from(body.bytes);
        let actual = Digest::of_bytes(&body);
        if let Some(expected) = reference.digest() {
            Digest::parse(expected)?.verify(&actual, || what.to_string())?;
        }
        if let Some(reported) = reported {
            let reported = Digest::parse(&reported).map_err(|_| {
                self.fail(format!(
                    "{doing}: the registry reported the digest {:?}, which is not a sha256 digest",
                    truncate(&reported, 100)
                ))
            })?;
            reported.verify(&actual, || {
                format!("{what} (digest reported by the registry)")
            })?;
        }
        Ok((body, actual))
    }

    /// Stream a blob to `out`, refusing more than `desc.size` bytes. The next chunk is read
    /// once `out` has taken this one (so a slow consumer holds the download back).
    pub(super) async fn download(
        &self,
        desc: &Descriptor,
        bar: &Bar,
        mut out: impl AsyncFnMut(Bytes) -> Result<()>,
    ) -> Result<()> {
        let digest = desc.digest.to_string();
        let doing = format!("downloading blob {digest}");
        let url = self.url(&format!("blobs/{digest}"));
        let mut res = self.pull_get(&url, None, &doing).await?;
        if let Some(len) = res.content_length() {
            if len > desc.size {
                return Err(OciError::SizeMismatch {
                    what: format!("blob {digest} as served by {}", self.r.host),
                    expected: desc.size,
                    actual: len,
                });
            }
        }
        let mut received: u64 = 0;
        loop {
            let chunk = match res.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(self.fail(format!(
                        "{doing}: failed after {received} of {} bytes: {}",
                        desc.size,
                        error_chain(&e)
                    )))
                }
            };
            received += chunk.len() as u64;
            if received > desc.size {
                return Err(OciError::SizeMismatch {
                    what: format!("blob {digest} (the registry sent more than its size)"),
                    expected: desc.size,
                    actual: received,
                });
            }
            let len = chunk.len() as u64;
            out(chunk).await?;
            bar.inc(len);
        }
        Ok(())
    }
}

/// An error reply as oci-client would have made it, so [`Remote::error`] words it the same
/// way as before (its wording is what users and tests know).
fn status_error(status: reqwest::StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError {
            url: url.to_string(),
        };
    }
    if status.is_client_error() {
        if let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body) {
            return OciDistributionError::RegistryError {
                envelope,
                url: url.to_string(),
            };
        }
    }
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url: url.to_string(),
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

/// Say so when an error reply went on past [`ERROR_BODY_LIMIT`].
fn cut_note(e: OciError, body: &Bounded) -> OciError {
    match e {
        OciError::Registry { registry, message } if body.cut => OciError::Registry {
            registry,
            message: format!(
                "{message} (the reply's body went on past the limit of {ERROR_BODY_LIMIT} bytes \
                 for error replies and was not read further)"
            ),
        },
        e => e,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The whole `source()` chain of an error, which is where reqwest keeps the useful part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

fn describe_envelope(envelope: &OciEnvelope) -> String {
    envelope
        .errors
        .iter()
        .map(|e| {
            let code = serde_json::to_value(&e.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", e.code));
            if e.message.is_empty() {
                code
            } else {
                format!("{code}: {}", e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The HTTP status the distribution spec gives an error code (the client does not keep it).
fn envelope_status(envelope: &OciEnvelope) -> Option<u16> {
    let code = serde_json::to_value(&envelope.errors.first()?.code).ok()?;
    Some(match code.as_str()? {
        "UNAUTHORIZED" => 401,
        "DENIED" => 403,
        "BLOB_UNKNOWN" | "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UPLOAD_UNKNOWN" => 404,
        "TOOMANYREQUESTS" => 429,
        "UNSUPPORTED" => 405,
        _ => 400,
    })
}
