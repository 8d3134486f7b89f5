//! Credentials and token auth: Docker's `config.json` (`auths.<host>.auth`,
//! `identitytoken`, the credential helpers `credsStore` / `credHelpers`), the
//! `WWW-Authenticate: Bearer` challenge, and trading an identity token for an access token.

use std::path::PathBuf;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::bounded::{read_bounded, ERROR_BODY_LIMIT, TOKEN_REPLY_LIMIT};
use super::client::RegistryOptions;
use super::reference::RemoteRef;
use crate::error::{OciError, Result};
use crate::json::MAX_JSON_SIZE;
use crate::text::Escaped;

/// Where the credentials for a registry came from, to explain a refusal.
#[derive(Debug, Clone)]
pub(super) enum CredentialOrigin {
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

pub(super) struct Credentials {
    pub(super) auth: RegistryAuth,
    pub(super) identity_token: Option<String>,
    pub(super) origin: CredentialOrigin,
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

pub(super) fn load_credentials(r: &RemoteRef, opts: &RegistryOptions) -> Result<Credentials> {
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
                    Escaped(said.trim())
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
pub(super) struct BearerChallenge {
    pub(super) realm: String,
    pub(super) service: Option<String>,
}

pub(super) fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
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
pub(super) async fn exchange_identity_token(
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
    let mut res = res;
    let limit = if status.is_success() {
        TOKEN_REPLY_LIMIT
    } else {
        ERROR_BODY_LIMIT
    };
    let body = read_bounded(&mut res, limit)
        .await
        .map_err(|e| format!("reading the answer of {}: {e}", challenge.realm))?;
    if !status.is_success() {
        return Err(format!(
            "the token server {} refused the identity token: HTTP {status}: {}",
            challenge.realm,
            String::from_utf8_lossy(&body.bytes[..body.bytes.len().min(500)]).trim()
        ));
    }
    if body.cut {
        return Err(format!(
            "the token reply of {} is over the limit of {TOKEN_REPLY_LIMIT} bytes (reading \
             stopped there)",
            challenge.realm
        ));
    }
    let body = body.bytes;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
}
