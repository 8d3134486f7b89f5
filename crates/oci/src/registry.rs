//! Registry client: push images from the store to a registry and pull them into it, over the
//! OCI distribution API (through `oci-client`).
//!
//! - Push checks which blobs the registry already has (`HEAD`), mounts blobs that another
//!   repository of the same registry is known to hold, streams the rest from the store's
//!   files (one monolithic `PUT` each, a few at a time, never a whole layer in memory), then
//!   puts the manifest with its exact bytes, so the registry's digest is the image's.
//! - Pull resolves the manifest (OCI or Docker; an index or manifest list resolves to the
//!   host's platform), verifies its digest, and streams every blob through the store's
//!   verification. Nothing is named, and no new blob stays, unless the whole image arrived.
//! - Which repositories hold which blobs is remembered in `$NBRT_HOME/remotes.json`, updated
//!   by every push and pull, so a later push to another repository can mount instead of
//!   upload.
//! - Plain HTTP is used for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) and
//!   with [`RegistryOptions::insecure`]; HTTPS otherwise.
//! - Credentials come from Docker's `config.json`: `auths.<host>.auth`, `identitytoken`, and
//!   the credential helpers `credsStore` / `credHelpers`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{IoContext, OciError, Result};
use crate::image::{Image, ImageSink, Raw};
use crate::json::{parse_bounded, to_canonical_vec, MAX_JSON_SIZE};
use crate::name::ImageName;
use crate::progress::{Bar, Progress};
use crate::spec::{media, Descriptor, Index, Manifest};
use crate::store::Store;

/// Blobs transferred at the same time.
const CONCURRENCY: usize = 3;
/// Read size for uploads from the store.
const UPLOAD_CHUNK: usize = 256 << 10;
/// How many repositories are remembered per blob.
const MAX_REPOS_PER_BLOB: usize = 8;
/// How many blobs `remotes.json` remembers (first forgetting blobs no longer in the store).
/// With [`MAX_REPOS_PER_BLOB`] this keeps the file well under the JSON size limit.
const MAX_REMEMBERED_BLOBS: usize = 10_000;
/// Mount attempts per blob before uploading it.
const MAX_MOUNT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Plain HTTP for any registry (loopback registries always get plain HTTP).
    pub insecure: bool,
    /// Docker's `config.json` with credentials. Default: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// What was pushed, normalized: `host/repository:tag` (or `@digest`).
    pub reference: String,
    pub manifest_digest: Digest,
    /// Blobs sent to the registry.
    pub uploaded: Vec<Digest>,
    /// Blobs the repository already had.
    pub existing: Vec<Digest>,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: Vec<Digest>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// The name the image got in the store (the reference as given, tag `latest` by
    /// default; a pull by digest alone is named `<repository>:sha256-<hex>`).
    pub reference: String,
    /// Digest of the image manifest (for an index: of the manifest picked for this host).
    pub manifest_digest: Digest,
    /// The image ID: the config digest.
    pub image_id: Digest,
    /// Blobs fetched from the registry.
    pub downloaded: Vec<Digest>,
    /// Blobs the store already had.
    pub existing: Vec<Digest>,
}

// ---------------------------------------------------------------------------------------
// References

/// A reference to an image in a registry: `[host[:port]/]repository[:tag][@sha256:…]`.
/// Without a host, Docker Hub is meant (`docker.io`, single names under `library/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// `docker.io`, `registry.example.com`, `127.0.0.1:5000`, `[::1]:5000`.
    pub host: String,
    /// `library/debian`, `nb/base`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

fn bad_ref(s: &str, reason: &str) -> OciError {
    OciError::InvalidName {
        name: s.to_string(),
        reason: reason.to_string(),
    }
}

fn valid_host(h: &str) -> bool {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => ("x", None),
            p => match p.strip_prefix(':') {
                Some(p) => ("x", Some(p)),
                None => return false,
            },
        }
    } else {
        match h.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (h, None),
        }
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

impl RemoteRef {
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 512 {
            return Err(bad_ref(s, "an image reference is 1 to 512 characters"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| {
                    bad_ref(
                        s,
                        "the digest after '@' must be sha256:<64 lowercase hex digits>",
                    )
                })?),
            ),
            None => (s, None),
        };
        let (host, rest) = match name_tag.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first.starts_with('[')
                    || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(bad_ref(s, "invalid registry host[:port]"));
                }
                (first.to_string(), rest)
            }
            _ => ("docker.io".to_string(), name_tag),
        };
        let (repository, tag) = match rest.rsplit_once(':') {
            Some((r, t)) => (r, Some(t)),
            None => (rest, None),
        };
        // Reuse the local name grammar for the repository and tag.
        let check = format!("{repository}:{}", tag.unwrap_or("latest"));
        ImageName::parse(&check).map_err(|e| match e {
            OciError::InvalidName { reason, .. } => bad_ref(s, &reason),
            other => other,
        })?;
        let mut repository = repository.to_string();
        if matches!(host.as_str(), "docker.io" | "index.docker.io") && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        Ok(Self {
            host,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// `host/repository`, how `remotes.json` names a repository.
    pub fn repo_key(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    fn is_docker_hub(&self) -> bool {
        matches!(
            self.host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    }

    fn oci(&self) -> Reference {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(
                self.host.clone(),
                self.repository.clone(),
                t.clone(),
                d.to_string(),
            ),
            (None, Some(d)) => {
                Reference::with_digest(self.host.clone(), self.repository.clone(), d.to_string())
            }
            (t, None) => Reference::with_tag(
                self.host.clone(),
                self.repository.clone(),
                t.clone().unwrap_or_else(|| "latest".to_string()),
            ),
        }
    }

    fn in_repository(&self, repository: &str) -> Reference {
        Reference::with_tag(
            self.host.clone(),
            repository.to_string(),
            "latest".to_string(),
        )
    }

    /// Plain HTTP for loopback hosts.
    pub fn is_loopback(&self) -> bool {
        let h = &self.host;
        let name = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or("")
        } else {
            h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n)
        };
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for RemoteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        } else if self.digest.is_none() {
            write!(f, ":latest")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// The name a pulled image gets in the store: the reference as given without the digest
/// (tag `latest` by default); by digest alone, `<repository>:sha256-<hex>`.
fn store_name(given: &str, r: &RemoteRef) -> Result<ImageName> {
    let name_tag = given.split('@').next().unwrap_or(given);
    let name = match (&r.tag, &r.digest) {
        (None, Some(d)) => format!("{name_tag}:sha256-{}", d.hex()),
        _ => name_tag.to_string(),
    };
    ImageName::parse(&name).map_err(|e| match e {
        OciError::InvalidName { reason, .. } => OciError::InvalidName {
            name: given.to_string(),
            reason: format!("cannot name the pulled image {name:?} in the store: {reason}"),
        },
        other => other,
    })
}

// ---------------------------------------------------------------------------------------
// Credentials

/// Where the credentials for a registry came from, to explain a refusal.
#[derive(Debug, Clone)]
enum CredentialOrigin {
    /// No credentials; the text says why (no config, no entry, helper failed).
    None(String),
    Basic {
        user: String,
        from: String,
    },
    IdentityToken {
        from: String,
    },
}

struct Credentials {
    auth: RegistryAuth,
    identity_token: Option<String>,
    origin: CredentialOrigin,
}

impl Credentials {
    fn anonymous(why: String) -> Self {
        Self {
            auth: RegistryAuth::Anonymous,
            identity_token: None,
            origin: CredentialOrigin::None(why),
        }
    }
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
fn default_docker_config(
    docker_config_env: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(dir) = docker_config_env.filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    home.filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker/config.json"))
}

fn load_credentials(r: &RemoteRef, opts: &RegistryOptions) -> Result<Credentials> {
    let path = match &opts.docker_config {
        Some(p) => p.clone(),
        None => {
            match default_docker_config(std::env::var_os("DOCKER_CONFIG"), std::env::var_os("HOME"))
            {
                Some(p) => p,
                None => {
                    return Ok(Credentials::anonymous(
                        "no Docker config (neither DOCKER_CONFIG nor HOME is set)".to_string(),
                    ))
                }
            }
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Credentials::anonymous(format!(
                "{} does not exist",
                path.display()
            )))
        }
        Err(e) => {
            return Err(OciError::Io {
                context: format!("reading Docker credentials from {}", path.display()),
                source: e,
            })
        }
    };
    if bytes.len() as u64 > MAX_JSON_SIZE {
        return Err(OciError::TooLarge {
            what: path.display().to_string(),
            size: bytes.len() as u64,
            limit: MAX_JSON_SIZE,
        });
    }
    // Docker Hub's credentials live under its legacy index address.
    let server = if r.is_docker_hub() {
        "https://index.docker.io/v1/".to_string()
    } else {
        r.host.clone()
    };
    let from = path.display().to_string();
    let bad_config = |reason: &str| OciError::Format {
        path: path.clone(),
        reason: reason.to_string(),
    };
    use docker_credential::{CredentialRetrievalError as E, DockerCredential};
    match docker_credential::get_credential_from_reader(&bytes[..], &server) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Credentials {
            auth: RegistryAuth::Basic(user.clone(), password),
            identity_token: None,
            origin: CredentialOrigin::Basic { user, from },
        }),
        Ok(DockerCredential::IdentityToken(token)) => Ok(Credentials {
            auth: RegistryAuth::Anonymous,
            identity_token: Some(token),
            origin: CredentialOrigin::IdentityToken { from },
        }),
        Err(E::NoCredentialConfigured) | Err(E::ConfigNotFound) => Ok(Credentials::anonymous(
            format!("{from} has no credentials for {server}"),
        )),
        Err(E::ConfigReadError) => Err(bad_config("not a valid Docker config.json")),
        Err(E::CredentialDecodingError) => Err(bad_config(&format!(
            "auths.\"{server}\".auth is not base64 of user:password"
        ))),
        Err(E::CredentialMismatchError) => Err(bad_config(&format!(
            "auths.\"{server}\": auth does not match username and password"
        ))),
        Err(E::HelperFailure {
            helper,
            stdout,
            stderr,
        }) => {
            let said = format!("{} {}", stdout.trim(), stderr.trim());
            if said.to_ascii_lowercase().contains("credentials not found") {
                Ok(Credentials::anonymous(format!(
                    "the credential helper {helper} (from {from}) has no credentials for {server}"
                )))
            } else {
                tracing::warn!(
                    "credential helper {helper} failed for {server}: {}",
                    said.trim()
                );
                Ok(Credentials::anonymous(format!(
                    "the credential helper {helper} (from {from}) failed: {}",
                    said.trim()
                )))
            }
        }
        Err(e @ (E::HelperCommunicationError | E::MalformedHelperResponse)) => {
            tracing::warn!("credential helper for {server} (from {from}): {e}");
            Ok(Credentials::anonymous(format!(
                "the credential helper for {server} named in {from} could not be used: {e}"
            )))
        }
    }
}

/// A `WWW-Authenticate: Bearer realm="…",service="…"` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BearerChallenge {
    realm: String,
    service: Option<String>,
}

fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
    })
}

/// Trade a Docker identity token (an OAuth2 refresh token) for an access token with the
/// given scopes, as Docker does: `POST <realm>` with `grant_type=refresh_token`.
async fn exchange_identity_token(
    scheme: &str,
    host: &str,
    token: &str,
    scopes: &[String],
) -> std::result::Result<String, String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let probe = format!("{scheme}://{host}/v2/");
    let res = http
        .get(&probe)
        .send()
        .await
        .map_err(|e| format!("GET {probe}: {e}"))?;
    let challenge = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_bearer_challenge)
        .ok_or_else(|| {
            format!(
                "an identity token needs a token server, but GET {probe} answered HTTP {} \
                 without a Bearer challenge",
                res.status()
            )
        })?;
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", token.to_string()),
        ("client_id", "nbrt".to_string()),
        ("scope", scopes.join(" ")),
    ];
    if let Some(service) = &challenge.service {
        form.push(("service", service.clone()));
    }
    let res = http
        .post(&challenge.realm)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("POST {}: {e}", challenge.realm))?;
    let status = res.status();
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("reading the answer of {}: {e}", challenge.realm))?;
    if !status.is_success() {
        return Err(format!(
            "the token server {} refused the identity token: HTTP {status}: {}",
            challenge.realm,
            String::from_utf8_lossy(&body[..body.len().min(500)]).trim()
        ));
    }
    #[derive(Deserialize)]
    struct TokenAnswer {
        access_token: Option<String>,
        token: Option<String>,
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "the token server {} answered invalid JSON: {e}",
            challenge.realm
        )
    })?;
    answer
        .access_token
        .or(answer.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("the token server {} returned no token", challenge.realm))
}

// ---------------------------------------------------------------------------------------
// The connection to one repository

struct Remote {
    client: Client,
    r: RemoteRef,
    reference: Reference,
    auth: RegistryAuth,
    origin: CredentialOrigin,
    scheme: &'static str,
}

impl Remote {
    /// Set up a client for `r`. `scopes`: the token scopes an identity token is traded for.
    async fn connect(r: &RemoteRef, opts: &RegistryOptions, scopes: Vec<String>) -> Result<Self> {
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

    fn fail(&self, message: String) -> OciError {
        OciError::Registry {
            registry: self.r.host.clone(),
            message,
        }
    }

    /// A clear error for a failed registry call: what was being done, the HTTP status,
    /// what the registry said, and what to do about a refusal.
    fn error(&self, doing: &str, e: OciDistributionError) -> OciError {
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
    async fn fetch_manifest(&self, reference: &Reference, what: &str) -> Result<(Bytes, Digest)> {
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

    /// Resolve the reference to one image manifest (through an index when there is one).
    async fn resolve_manifest(&self) -> Result<Raw<Manifest>> {
        let (body, digest) = self
            .fetch_manifest(&self.reference, &format!("the manifest of {}", self.r))
            .await?;
        let body = if document_kind(&body, &self.r)? == DocumentKind::Index {
            let index: Index = parse_bounded(&body, &format!("image index of {}", self.r))?;
            let entry = pick_platform(&index).ok_or_else(|| {
                let (os, arch) = host_platform();
                let offered: Vec<String> = index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                self.fail(format!(
                    "{} ({digest}) is an index without an image for {os}/{arch}; it has: {}",
                    self.r,
                    if offered.is_empty() {
                        "no platforms".to_string()
                    } else {
                        offered.join(", ")
                    }
                ))
            })?;
            if entry.size > MAX_JSON_SIZE {
                return Err(OciError::TooLarge {
                    what: format!("manifest {}", entry.digest),
                    size: entry.size,
                    limit: MAX_JSON_SIZE,
                });
            }
            let what = format!("the {} manifest of {}", platform_label(entry), self.r);
            let (body, _) = self
                .fetch_manifest(
                    &self.reference.clone_with_digest(entry.digest.to_string()),
                    &what,
                )
                .await?;
            if body.len() as u64 != entry.size {
                return Err(OciError::SizeMismatch {
                    what,
                    expected: entry.size,
                    actual: body.len() as u64,
                });
            }
            if document_kind(&body, &self.r)? != DocumentKind::Manifest {
                return Err(self.fail(format!(
                    "{what} is an index again; nested indexes are not supported"
                )));
            }
            body
        } else {
            body
        };
        Raw::from_bytes(body.to_vec(), &format!("image manifest of {}", self.r))
    }

    /// Stream a blob to `out`, refusing more than `desc.size` bytes.
    async fn download(
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

    /// Make `desc` present in the target repository: already there, mounted, or uploaded.
    /// `inline`: the blob's bytes when they are at hand (the config), else it is streamed
    /// from the store's file.
    async fn push_blob(
        &self,
        store: &Store,
        desc: &Descriptor,
        inline: Option<Bytes>,
        mount_from: &[String],
        bar: &Bar,
    ) -> Result<BlobOutcome> {
        let digest = desc.digest.to_string();
        let exists = self
            .client
            .blob_exists(&self.reference, &digest)
            .await
            .map_err(|e| {
                self.error(
                    &format!("checking whether {} has blob {digest}", self.r.repository),
                    e,
                )
            })?;
        if exists {
            bar.inc(desc.size);
            return Ok(BlobOutcome::Existing);
        }
        for from in mount_from.iter().take(MAX_MOUNT_ATTEMPTS) {
            match self
                .client
                .mount_blob(&self.reference, &self.r.in_repository(from), &digest)
                .await
            {
                Ok(()) => {
                    bar.inc(desc.size);
                    return Ok(BlobOutcome::Mounted);
                }
                // The registry may refuse (no such blob there any more, no permission, or
                // no mount support): upload instead.
                Err(e) => tracing::debug!("mounting {digest} from {from} refused: {e}"),
            }
        }
        let body = match inline {
            Some(bytes) => {
                if bytes.len() as u64 != desc.size {
                    return Err(OciError::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: desc.size,
                        actual: bytes.len() as u64,
                    });
                }
                bar.inc(desc.size);
                stream::once(async move { Ok(bytes) }).boxed()
            }
            None => {
                let path = store.blob_path(&desc.digest);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(OciError::BlobNotFound(digest))
                    }
                    Err(e) => {
                        return Err(OciError::Io {
                            context: format!("opening {}", path.display()),
                            source: e,
                        })
                    }
                };
                let len = file
                    .metadata()
                    .await
                    .io_context(|| format!("reading the size of {}", path.display()))?
                    .len();
                if len != desc.size {
                    return Err(OciError::SizeMismatch {
                        what: format!("stored blob {digest}"),
                        expected: desc.size,
                        actual: len,
                    });
                }
                let counter = bar.clone();
                tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK)
                    .map(move |chunk| {
                        chunk
                            .inspect(|c| counter.inc(c.len() as u64))
                            .map_err(OciDistributionError::IoError)
                    })
                    .boxed()
            }
        };
        self.client
            .push_blob_stream(&self.reference, body, &digest, Some(desc.size))
            .await
            .map_err(|e| {
                self.error(
                    &format!("uploading blob {digest} to {}", self.r.repository),
                    e,
                )
            })?;
        Ok(BlobOutcome::Uploaded)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocumentKind {
    Manifest,
    Index,
}

/// Whether a registry document is an image manifest or an index, by its `mediaType` or,
/// when it has none, by its shape.
fn document_kind(body: &[u8], r: &RemoteRef) -> Result<DocumentKind> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = parse_bounded(body, &format!("manifest of {r}"))?;
    match probe.media_type.as_deref() {
        Some(m) if media::is_manifest(m) => Ok(DocumentKind::Manifest),
        Some(m) if media::is_index(m) => Ok(DocumentKind::Index),
        Some(m) => Err(OciError::Unsupported {
            what: format!("manifest media type of {r}"),
            value: m.to_string(),
        }),
        None if probe.manifests.is_some() => Ok(DocumentKind::Index),
        None if probe.layers.is_some() => Ok(DocumentKind::Manifest),
        None => Err(OciError::InvalidImage(format!(
            "the manifest of {r} is neither an image manifest nor an index"
        ))),
    }
}

/// The OCI platform of this machine (`linux` and GOARCH names).
fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    };
    ("linux", arch)
}

fn platform_label(d: &Descriptor) -> String {
    match &d.platform {
        Some(p) => format!("{}/{}", p.os, p.architecture),
        None => "selected".to_string(),
    }
}

/// The index entry for this host's platform: an image manifest for linux and this
/// architecture (for arm64, variant v8 or none is preferred).
fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let (os, arch) = host_platform();
    let candidates: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| media::is_manifest(&d.media_type))
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == arch)
        })
        .collect();
    candidates
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.variant.is_none() || p.variant.as_deref() == Some("v8"))
        })
        .or(candidates.first())
        .copied()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobOutcome {
    Uploaded,
    Existing,
    Mounted,
}

/// An image's blobs, layers first then the config, each once.
fn image_blobs(image: &Image) -> Vec<Descriptor> {
    let mut seen = BTreeSet::new();
    image
        .layers()
        .iter()
        .chain([&image.manifest.value().config])
        .filter(|d| seen.insert(d.digest.clone()))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------
// Push

/// Push an image from the store to `target` (`host[:port]/repository[:tag]`).
pub async fn push(
    store: &Store,
    image: &Image,
    target: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<PushReport> {
    let mut r = RemoteRef::parse(target)?;
    if let Some(d) = &r.digest {
        if d != image.digest() {
            return Err(bad_ref(
                target,
                &format!("the image's manifest digest is {}, not {d}", image.digest()),
            ));
        }
    }
    // With a tag, the manifest goes under the tag (its digest was just checked).
    if r.tag.is_some() {
        r.digest = None;
    }

    let blobs = image_blobs(image);
    let record = RemoteRecord::load(store);
    let repo_key = r.repo_key();
    let mount_sources: Vec<Vec<String>> = blobs
        .iter()
        .map(|d| record.sources(&d.digest, &r.host, &repo_key))
        .collect();
    let mut scopes = vec![format!("repository:{}:pull,push", r.repository)];
    let from_repos: BTreeSet<&String> = mount_sources.iter().flatten().collect();
    scopes.extend(
        from_repos
            .iter()
            .map(|repo| format!("repository:{repo}:pull")),
    );
    let remote = Remote::connect(&r, opts, scopes).await?;

    let total: u64 = blobs.iter().map(|d| d.size).sum();
    let bar = progress.bytes("pushing", total);
    let outcomes: Vec<(usize, BlobOutcome)> = stream::iter(blobs.iter().enumerate())
        .map(|(i, desc)| {
            let remote = &remote;
            let bar = &bar;
            let from = &mount_sources[i];
            // The config is at hand: send it from memory.
            let inline =
                (desc.digest == *image.id()).then(|| Bytes::copy_from_slice(image.config.bytes()));
            async move {
                let outcome = remote.push_blob(store, desc, inline, from, bar).await?;
                Ok::<_, OciError>((i, outcome))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut outcomes = outcomes;
    outcomes.sort_by_key(|(i, _)| *i);

    let content_type =
        reqwest::header::HeaderValue::from_str(image.media_type()).map_err(|_| {
            OciError::InvalidImage(format!(
                "media type {:?} is not a valid header",
                image.media_type()
            ))
        })?;
    remote
        .client
        .push_manifest_raw(
            &remote.reference,
            image.manifest.bytes().to_vec(),
            content_type,
        )
        .await
        .map_err(|e| remote.error(&format!("putting the manifest of {}", remote.r), e))?;
    // The registry must now know the manifest under our digest.
    let stored = remote
        .client
        .fetch_manifest_digest(&remote.reference, &remote.auth)
        .await
        .map_err(|e| remote.error(&format!("checking the pushed manifest of {}", remote.r), e))?;
    if stored != image.digest().to_string() {
        return Err(OciError::DigestMismatch {
            what: format!("manifest of {} as the registry stored it", remote.r),
            expected: image.digest().to_string(),
            actual: stored,
        });
    }
    bar.finish();

    let mut report = PushReport {
        reference: r.to_string(),
        manifest_digest: image.digest().clone(),
        uploaded: Vec::new(),
        existing: Vec::new(),
        mounted: Vec::new(),
    };
    for (i, outcome) in outcomes {
        let d = blobs[i].digest.clone();
        match outcome {
            BlobOutcome::Uploaded => report.uploaded.push(d),
            BlobOutcome::Existing => report.existing.push(d),
            BlobOutcome::Mounted => report.mounted.push(d),
        }
    }
    let digests: Vec<Digest> = blobs.into_iter().map(|d| d.digest).collect();
    if let Err(e) = RemoteRecord::remember(store, &digests, &repo_key) {
        tracing::warn!("could not record where the pushed blobs are: {e}");
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Pull

/// Pull `reference` (`[host[:port]/]repository[:tag][@sha256:…]`) into the store and name it
/// there as given. Every blob is verified; on failure nothing new stays in the store.
pub async fn pull(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<(Image, PullReport)> {
    let r = RemoteRef::parse(reference)?;
    let name = store_name(reference, &r)?;
    let remote =
        Remote::connect(&r, opts, vec![format!("repository:{}:pull", r.repository)]).await?;

    let manifest = remote.resolve_manifest().await?;
    let config_desc = manifest.value().config.clone();
    if config_desc.size > MAX_JSON_SIZE {
        return Err(OciError::TooLarge {
            what: format!("image config {}", config_desc.digest),
            size: config_desc.size,
            limit: MAX_JSON_SIZE,
        });
    }
    if !matches!(
        config_desc.media_type.as_str(),
        media::OCI_CONFIG | media::DOCKER_CONFIG
    ) {
        return Err(OciError::Unsupported {
            what: format!("config media type of {}", remote.r),
            value: config_desc.media_type.clone(),
        });
    }
    let hidden = Progress::hidden().bytes("config", config_desc.size);
    let mut config_bytes = Vec::with_capacity(config_desc.size as usize);
    remote
        .download(&config_desc, &hidden, |chunk| {
            config_bytes.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
    let (actual, len) = (Digest::of_bytes(&config_bytes), config_bytes.len() as u64);
    if len != config_desc.size {
        return Err(OciError::SizeMismatch {
            what: format!("image config {}", config_desc.digest),
            expected: config_desc.size,
            actual: len,
        });
    }
    config_desc
        .digest
        .verify(&actual, || format!("image config of {}", remote.r))?;
    let config = Raw::from_bytes(config_bytes, &format!("image config of {}", remote.r))?;
    let image = Image::from_parts(manifest, config)?;

    let sink = Mutex::new(store.sink(vec![name.clone()]));
    let blobs = image_blobs(&image);
    let (present, missing): (Vec<&Descriptor>, Vec<&Descriptor>) =
        blobs.iter().partition(|d| store.has_blob(&d.digest));
    let total: u64 = missing.iter().map(|d| d.size).sum();
    let bar = progress.bytes("pulling", total);
    let fetched: Vec<Digest> = stream::iter(missing.iter().copied())
        .map(|desc| {
            let remote = &remote;
            let bar = &bar;
            let sink = &sink;
            let image = &image;
            let config_desc = &config_desc;
            async move {
                if desc.digest == config_desc.digest {
                    // Already here, verified: let the store verify it once more as it lands.
                    let mut sink = sink.lock().map_err(|_| poisoned())?;
                    sink.put_blob(desc, &mut image.config.bytes())?;
                    bar.inc(desc.size);
                    return Ok(desc.digest.clone());
                }
                let mut blob = store.new_blob()?;
                remote
                    .download(desc, bar, |chunk| {
                        blob.write_all(chunk)
                            .io_context(|| format!("writing blob {} into the store", desc.digest))
                    })
                    .await?;
                blob.commit_expecting(desc)?;
                sink.lock()
                    .map_err(|_| poisoned())?
                    .track(desc.digest.clone());
                Ok::<_, OciError>(desc.digest.clone())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut sink = sink.into_inner().map_err(|_| poisoned())?;
    sink.put_image(&image)?;
    drop(sink);
    bar.finish();

    let fetched: BTreeSet<Digest> = fetched.into_iter().collect();
    let report = PullReport {
        reference: name.to_string(),
        manifest_digest: image.digest().clone(),
        image_id: image.id().clone(),
        downloaded: blobs
            .iter()
            .filter(|d| fetched.contains(&d.digest))
            .map(|d| d.digest.clone())
            .collect(),
        existing: present.iter().map(|d| d.digest.clone()).collect(),
    };
    let digests: Vec<Digest> = blobs.into_iter().map(|d| d.digest).collect();
    if let Err(e) = RemoteRecord::remember(store, &digests, &r.repo_key()) {
        tracing::warn!("could not record where the pulled blobs are: {e}");
    }
    Ok((image, report))
}

fn poisoned() -> OciError {
    OciError::InvalidImage("a blob download panicked".to_string())
}

// ---------------------------------------------------------------------------------------
// remotes.json: which repositories hold which blobs

/// `$NBRT_HOME/remotes.json`: blob digest → repositories (`host/repository`, most recent
/// first) known to hold it. A hint for cross-repository mounts, never trusted for content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RemoteRecord {
    #[serde(default)]
    blobs: BTreeMap<Digest, Vec<String>>,
}

impl RemoteRecord {
    fn path(store: &Store) -> PathBuf {
        store.root().join("remotes.json")
    }

    /// The record, or an empty one when it is missing or unreadable (it is only a hint).
    fn load(store: &Store) -> Self {
        let path = Self::path(store);
        match std::fs::read(&path) {
            Ok(bytes) => parse_bounded(&bytes, &path.display().to_string()).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Other repositories of `host` known to hold `digest`.
    fn sources(&self, digest: &Digest, host: &str, except: &str) -> Vec<String> {
        let prefix = format!("{host}/");
        self.blobs
            .get(digest)
            .into_iter()
            .flatten()
            .filter(|k| k.as_str() != except)
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Record that `repo_key` holds `digests`: read, change and replace the file under
    /// `remotes.lock`, so concurrent pushes and pulls do not lose each other's entries.
    fn remember(store: &Store, digests: &[Digest], repo_key: &str) -> Result<()> {
        let _lock = crate::fsutil::open_locked(
            &store.root().join("remotes.lock"),
            crate::fsutil::LockMode::Exclusive,
        )?;
        let mut record = Self::load(store);
        for d in digests {
            let repos = record.blobs.entry(d.clone()).or_default();
            repos.retain(|k| k != repo_key);
            repos.insert(0, repo_key.to_string());
            repos.truncate(MAX_REPOS_PER_BLOB);
        }
        if record.blobs.len() > MAX_REMEMBERED_BLOBS {
            record.blobs.retain(|d, _| store.has_blob(d));
        }
        if record.blobs.len() > MAX_REMEMBERED_BLOBS {
            let keep: BTreeSet<&Digest> = digests.iter().collect();
            let mut excess = record.blobs.len() - MAX_REMEMBERED_BLOBS;
            record.blobs.retain(|d, _| {
                if excess > 0 && !keep.contains(d) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let bytes = to_canonical_vec(&record, "remotes.json")?;
        store.write_atomic(&Self::path(store), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r = RemoteRef::parse("127.0.0.1:5000/nb/base:v1").unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "nb/base");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/nb/base:v1");

        let r = RemoteRef::parse("debian").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repository.as_str()),
            ("docker.io", "library/debian")
        );
        assert_eq!(r.to_string(), "docker.io/library/debian:latest");
        assert!(!r.is_loopback());

        let d = Digest::of_bytes(b"x");
        let r = RemoteRef::parse(&format!("localhost:5000/a@{d}")).unwrap();
        assert_eq!(r.digest.as_ref(), Some(&d));
        assert_eq!(r.tag, None);
        assert!(r.is_loopback());

        let r = RemoteRef::parse("[::1]:5000/a:t").unwrap();
        assert_eq!(r.host, "[::1]:5000");
        assert!(r.is_loopback());
        assert!(RemoteRef::parse("127.1.2.3/x").unwrap().is_loopback());
        assert!(!RemoteRef::parse("registry.example.com/x")
            .unwrap()
            .is_loopback());
        assert!(!RemoteRef::parse("localhost.example.com/x")
            .unwrap()
            .is_loopback());

        for bad in [
            "",
            "Nb/Base",
            "a@sha256:zz",
            "[::1/x",
            "host:port/x",
            "a:",
            "a/../b",
        ] {
            assert!(RemoteRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_pulled_images() {
        let given = "127.0.0.1:5000/nb/base";
        let r = RemoteRef::parse(given).unwrap();
        assert_eq!(
            store_name(given, &r).unwrap().to_string(),
            "127.0.0.1:5000/nb/base:latest"
        );
        let d = Digest::of_bytes(b"x");
        let given = format!("127.0.0.1:5000/nb/base@{d}");
        let r = RemoteRef::parse(&given).unwrap();
        assert_eq!(
            store_name(&given, &r).unwrap().to_string(),
            format!("127.0.0.1:5000/nb/base:sha256-{}", d.hex())
        );
        let given = format!("nb/base:v2@{d}");
        let r = RemoteRef::parse(&given).unwrap();
        assert_eq!(store_name(&given, &r).unwrap().to_string(), "nb/base:v2");
    }

    #[test]
    fn finds_docker_config() {
        assert_eq!(
            default_docker_config(Some("/d".into()), Some("/h".into())),
            Some(PathBuf::from("/d/config.json"))
        );
        assert_eq!(
            default_docker_config(Some("".into()), Some("/h".into())),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
        assert_eq!(default_docker_config(None, None), None);
    }

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example.com/token");
        assert_eq!(c.service.as_deref(), Some("registry.example.com"));
        let c = parse_bearer_challenge(r#"bearer realm=https://x/t, service="s\"q""#).unwrap();
        assert_eq!(c.realm, "https://x/t");
        assert_eq!(c.service.as_deref(), Some("s\"q"));
        assert_eq!(parse_bearer_challenge(r#"Basic realm="r""#), None);
        assert_eq!(parse_bearer_challenge(r#"Bearer service="s""#), None);
    }

    /// A token server on loopback: `GET /v2/` challenges, `POST /token` grants.
    #[tokio::test]
    async fn trades_an_identity_token_for_an_access_token() {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (sock, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut request = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    request.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                request.push_str(&String::from_utf8(body).unwrap());
                let response = if request.starts_with("GET /v2/ ") {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer \
                         realm=\"http://{addr}/token\",service=\"fake\"\r\n\
                         Content-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                } else {
                    let body = r#"{"access_token":"granted","expires_in":300}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                (&sock).write_all(response.as_bytes()).unwrap();
                seen.push(request);
            }
            seen
        });
        let token = exchange_identity_token(
            "http",
            &addr.to_string(),
            "refresh-me",
            &["repository:nb/base:pull,push".to_string()],
        )
        .await
        .unwrap();
        assert_eq!(token, "granted");
        let seen = server.join().unwrap();
        assert!(seen[1].starts_with("POST /token "), "{}", seen[1]);
        for part in [
            "grant_type=refresh_token",
            "refresh_token=refresh-me",
            "service=fake",
            "scope=repository%3Anb%2Fbase%3Apull%2Cpush",
        ] {
            assert!(seen[1].contains(part), "{part} missing in {}", seen[1]);
        }

        // A registry without a token server cannot take an identity token.
        let err = exchange_identity_token("http", "127.0.0.1:1", "t", &[])
            .await
            .unwrap_err();
        assert!(err.contains("127.0.0.1:1"), "{err}");
    }

    fn descriptor(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(&[n]), 10);
        d.platform = Some(crate::spec::Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
            extra: BTreeMap::new(),
        });
        d
    }

    #[test]
    fn picks_the_host_platform() {
        let (_, arch) = host_platform();
        let mut index = Index::empty();
        index.manifests.push(descriptor("s390x-not-this", None, 1));
        index.manifests.push(descriptor(arch, Some("v7-odd"), 2));
        index.manifests.push(descriptor(arch, None, 3));
        let picked = pick_platform(&index).unwrap();
        assert_eq!(picked.digest, Digest::of_bytes(&[3]));
        index
            .manifests
            .retain(|d| d.digest != Digest::of_bytes(&[3]));
        assert_eq!(
            pick_platform(&index).unwrap().digest,
            Digest::of_bytes(&[2])
        );
        index
            .manifests
            .retain(|d| d.digest == Digest::of_bytes(&[1]));
        assert!(pick_platform(&index).is_none());
    }

    #[test]
    fn remembers_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        RemoteRecord::remember(&store, &[a.clone(), b.clone()], "h:1/one").unwrap();
        RemoteRecord::remember(&store, std::slice::from_ref(&a), "h:1/two").unwrap();
        RemoteRecord::remember(&store, std::slice::from_ref(&a), "other/three").unwrap();
        let record = RemoteRecord::load(&store);
        assert_eq!(
            record.sources(&a, "h:1", "h:1/one"),
            vec!["two".to_string()]
        );
        assert_eq!(
            record.sources(&a, "h:1", "h:1/x"),
            vec!["two".to_string(), "one".to_string()]
        );
        assert_eq!(record.sources(&b, "h:1", "h:1/one"), Vec::<String>::new());
        assert_eq!(record.sources(&b, "other", "other/x"), Vec::<String>::new());
        // An unreadable record is an empty hint, not an error.
        std::fs::write(dir.path().join("remotes.json"), b"{not json").unwrap();
        assert!(RemoteRecord::load(&store).blobs.is_empty());
    }
}
