//! Registry references: `[host[:port]/]repository[:tag][@sha256:…]`, Docker Hub's defaults
//! (`docker.io`, single names under `library/`), and which hosts are loopback.

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::name::ImageName;

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

pub(super) fn bad_ref(s: &str, reason: &str) -> OciError {
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

    pub(super) fn is_docker_hub(&self) -> bool {
        matches!(
            self.host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    }

    pub(super) fn oci(&self) -> Reference {
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

    pub(super) fn in_repository(&self, repository: &str) -> Reference {
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
}
