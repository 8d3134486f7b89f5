//! The connection to one repository: the HTTP client (`oci-client`) set up with the
//! credentials, registry errors turned into clear [`OciError::Registry`] messages, and the
//! bounded reads every transfer goes through (manifests up to the JSON size limit, blobs up
//! to their descriptor's size).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::auth::{exchange_identity_token, load_credentials, CredentialOrigin};
use super::reference::RemoteRef;
use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::json::MAX_JSON_SIZE;
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
    pub(super) client: Client,
    pub(super) r: RemoteRef,
    pub(super) reference: Reference,
    pub(super) auth: RegistryAuth,
    origin: CredentialOrigin,
    scheme: &'static str,
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
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            use_monolithic_push: true,
            max_concurrent_upload: CONCURRENCY,
            max_concurrent_download: CONCURRENCY,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| OciError::Registry {
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
        // Every call of the client looks up the credentials stored for the registry.
        client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        Ok(Self {
            client,
            r: r.clone(),
            reference,
            auth,
            origin: creds.origin,
            scheme,
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
        ];
        let (body, reported) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
            .map_err(|e| match e {
                OciDistributionError::DigestError(
                    oci_client::errors::DigestError::VerificationError { expected, actual },
                ) => OciError::DigestMismatch {
                    what: format!("{what} from {}", self.r.host),
                    expected,
                    actual,
                },
                e => self.error(&format!("fetching {what}"), e),
            })?;
        if body.len() as u64 > MAX_JSON_SIZE {
            return Err(OciError::TooLarge {
                what: what.to_string(),
                size: body.len() as u64,
                limit: MAX_JSON_SIZE,
            });
        }
        let actual = Digest::of_bytes(&body);
        // oci-client checked the digest the registry reported and the reference's; check
        // again with our own digest type (it only knows sha256).
        if let Some(expected) = reference.digest() {
            Digest::parse(expected)?.verify(&actual, || what.to_string())?;
        }
        if let Ok(reported) = Digest::parse(&reported) {
            reported.verify(&actual, || {
                format!("{what} (digest reported by the registry)")
            })?;
        }
        Ok((body, actual))
    }

    /// Stream a blob to `out`, refusing more than `desc.size` bytes.
    pub(super) async fn download(
        &self,
        desc: &Descriptor,
        bar: &Bar,
        mut out: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let digest = desc.digest.to_string();
        let doing = format!("downloading blob {digest}");
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, digest.as_str())
            .await
            .map_err(|e| self.error(&doing, e))?;
        if let Some(len) = stream.content_length {
            if len > desc.size {
                return Err(OciError::SizeMismatch {
                    what: format!("blob {digest} as served by {}", self.r.host),
                    expected: desc.size,
                    actual: len,
                });
            }
        }
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own digest check fails at the very end. With every byte
                // here, the store's verification gives the precise error.
                Err(_) if received == desc.size => break,
                Err(e) => {
                    return Err(self.fail(format!(
                        "{doing}: failed after {received} of {} bytes: {e}",
                        desc.size
                    )))
                }
            };
            received += chunk.len() as u64;
            if received > desc.size {
                return Err(OciError::SizeMismatch {
                    what: format!("blob {digest}"),
                    expected: desc.size,
                    actual: received,
                });
            }
            out(&chunk)?;
            bar.inc(chunk.len() as u64);
        }
        Ok(())
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
