//! The command's HTTP client: rustls with the image's CA bundle (plus `SSL_CERT_FILE`,
//! `REQUESTS_CA_BUNDLE`, `CONDA_SSL_VERIFY` or `.condarc`'s `ssl_verify` when they name a
//! file) and the webpki roots, so it works in images without `ca-certificates`; proxies
//! from `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`. The static build resolves names with
//! hickory (`/etc/resolv.conf`, `/etc/hosts`), so no NSS module is needed in the image.

use std::path::PathBuf;

use crate::error::{chain, conda, Result};

/// Where Debian-family images keep their CA bundle.
pub const IMAGE_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA bundle files to trust besides the webpki roots, existing ones only.
pub fn ca_files(ssl_verify: Option<&str>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut candidates: Vec<String> = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CONDA_SSL_VERIFY"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    candidates.extend(ssl_verify.map(str::to_string));
    candidates.push(IMAGE_CA_BUNDLE.to_string());
    for c in candidates {
        let path = PathBuf::from(c.trim());
        if path.is_file() && !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Whether TLS verification is switched off (`ssl_verify: false`, `CONDA_SSL_VERIFY=false`).
fn verify_off(ssl_verify: Option<&str>) -> bool {
    let off = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no");
    std::env::var("CONDA_SSL_VERIFY").is_ok_and(|v| off(&v)) || ssl_verify.is_some_and(off)
}

pub fn client(ssl_verify: Option<&str>) -> Result<reqwest::Client> {
    let mut certs: Vec<reqwest::Certificate> = Vec::new();
    for file in ca_files(ssl_verify) {
        let Ok(pem) = std::fs::read(&file) else {
            continue;
        };
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(found) => certs.extend(found),
            Err(e) => tracing::warn!(file = %file.display(), "unreadable CA bundle: {e}"),
        }
    }
    for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        if let Ok(cert) = reqwest::Certificate::from_der(der.as_ref()) {
            certs.push(cert);
        }
    }
    let builder = reqwest::Client::builder()
        .user_agent(concat!(
            "conda/24.11.0 nbrt-conda/",
            env!("CARGO_PKG_VERSION")
        ))
        .tls_certs_only(certs)
        .tls_danger_accept_invalid_certs(verify_off(ssl_verify));
    builder
        .build()
        .map_err(|e| conda(format!("cannot set up HTTP: {}", chain(&e))))
}
