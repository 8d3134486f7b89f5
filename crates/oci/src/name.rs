//! Local image names: `NAME[:TAG]`, Docker's grammar (lower-case path components, an optional
//! registry host with port, a tag of up to 128 characters, `latest` by default).

use std::fmt;

use crate::error::{OciError, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    pub repository: String,
    pub tag: String,
}

fn invalid(name: &str, reason: &str) -> OciError {
    OciError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    }
}

fn valid_component(c: &str) -> bool {
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_host(c: &str) -> bool {
    let (host, port) = match c.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (c, None),
    };
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.as_bytes()[0] != b'.'
        && t.as_bytes()[0] != b'-'
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl ImageName {
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > 255 {
            return Err(invalid(s, "longer than 255 characters"));
        }
        if s.contains('@') {
            return Err(invalid(
                s,
                "digest references cannot name an image here; use a tag",
            ));
        }
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        if !valid_tag(tag) {
            return Err(invalid(s, "a tag is letters, digits, '_', '.' and '-', up to 128, not starting with '.' or '-'"));
        }
        let comps: Vec<&str> = repository.split('/').collect();
        for (i, c) in comps.iter().enumerate() {
            let host_like = i == 0
                && comps.len() > 1
                && (c.contains('.') || c.contains(':') || *c == "localhost");
            let ok = if host_like {
                valid_host(c)
            } else {
                valid_component(c)
            };
            if !ok {
                return Err(invalid(s, "a name is lower-case letters, digits and '.', '_', '-' in '/'-separated parts, optionally after a registry host[:port]"));
            }
        }
        Ok(Self {
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let n = ImageName::parse("debian").unwrap();
        assert_eq!(n.to_string(), "debian:latest");
        let n = ImageName::parse("127.0.0.1:5000/nb/base:v1.2").unwrap();
        assert_eq!(n.repository, "127.0.0.1:5000/nb/base");
        assert_eq!(n.tag, "v1.2");
        for bad in [
            "",
            "Debian",
            "a:",
            "a:-x",
            "a/../b",
            "a@sha256:00",
            "a b",
            "/a",
            "a/",
        ] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
