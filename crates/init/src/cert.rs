//! GEN_CERT: a self-signed certificate made in process (no openssl binary needed).
//!
//! One PEM file holding the private key and the certificate, mode 600, owned by the server's
//! user — the shape docker-stacks produces (`notebook.pem` in Jupyter's data directory),
//! regenerated on every start. ECDSA P-256 instead of RSA-2048: as widely accepted, and made
//! in microseconds instead of tens of milliseconds.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

use crate::error::{Error, Result};

/// Key and certificate, PEM encoded.
pub struct Generated {
    pub key_pem: String,
    pub cert_pem: String,
}

/// Make a self-signed certificate valid for 365 days for `localhost`, the loopback
/// addresses and the given extra host names.
pub fn generate(extra_names: &[String]) -> Result<Generated> {
    let mut names = vec!["localhost".to_owned()];
    for n in extra_names {
        if !n.is_empty() && !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut params =
        CertificateParams::new(names).map_err(|e| Error::Cert(format!("names: {e}")))?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V6(
            std::net::Ipv6Addr::LOCALHOST,
        )));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "XX");
    dn.push(DnType::StateOrProvinceName, "XX");
    dn.push(DnType::LocalityName, "XX");
    dn.push(DnType::OrganizationName, "generated");
    dn.push(DnType::CommonName, "generated");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(365);
    let key = KeyPair::generate().map_err(|e| Error::Cert(format!("key: {e}")))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| Error::Cert(format!("signing: {e}")))?;
    Ok(Generated {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
    })
}

/// Write key + certificate to `path` (mode 600), replacing any previous file, and give it
/// to `owner` when set.
pub fn write_pem(path: &Path, g: &Generated, owner: Option<(u32, u32)>) -> Result<()> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    f.write_all(g.key_pem.as_bytes())
        .and_then(|_| f.write_all(g.cert_pem.as_bytes()))
        .map_err(|e| Error::io("writing", path, e))?;
    if let Some((u, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(u), Some(gid))
            .map_err(|e| Error::io("changing owner of", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn makes_a_pem_with_key_and_cert() {
        let g = generate(&["myhost".into()]).unwrap();
        assert!(g.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("notebook.pem");
        write_pem(&p, &g, None).unwrap();
        write_pem(&p, &g, None).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("PRIVATE KEY") && text.contains("CERTIFICATE"));
    }
}
