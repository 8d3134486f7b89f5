//! A real Distribution registry (Debian's `docker-registry`) for one test: started on a free
//! port of 127.0.0.1 with its storage in a temporary directory, its log (every request in
//! the access-log format) kept in a file the test can read, killed when dropped.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, require};

/// How to configure a test registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Contents of an htpasswd file (`user:bcrypt-hash` lines). When set, the registry
    /// requires HTTP basic authentication.
    pub htpasswd: Option<String>,
}

/// One request the registry logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string, percent-decoded (`digest=sha256:…&mount=…`).
    pub query: String,
    pub status: u16,
}

impl LoggedRequest {
    /// Value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }
}

pub struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    /// Whether `docker-registry` is here (see [`require`]).
    pub fn available() -> bool {
        require("docker-registry", &["--version"], "docker-registry")
    }

    /// An anonymous registry.
    pub fn start() -> Self {
        Self::start_with(&RegistryConfig::default())
    }

    pub fn start_with(config: &RegistryConfig) -> Self {
        let mut last_log = String::new();
        // The port was free a moment ago; another process may take it first: retry.
        for _ in 0..5 {
            match Self::try_start(config) {
                Ok(r) => return r,
                Err(log) => last_log = log,
            }
        }
        panic!("docker-registry did not start; its log:\n{last_log}");
    }

    fn try_start(config: &RegistryConfig) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("creating a temporary directory for the registry");
        let port = free_port();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).expect("creating registry storage");
        let mut yml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: nbrt-test-secret\n",
            storage.display()
        );
        if let Some(htpasswd) = &config.htpasswd {
            let path = dir.path().join("htpasswd");
            fs::write(&path, htpasswd).expect("writing htpasswd");
            yml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: nbrt-test\n    path: {}\n",
                path.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, yml).expect("writing registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("creating registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning log file handle"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut registry = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if registry.answers() {
                return Ok(registry);
            }
            if let Ok(Some(_)) = registry.child.try_wait() {
                return Err(registry.log());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "(not answering on port {port} after 20 s)\n{}",
                    registry.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether `GET /v2/` gets an HTTP answer (200, or 401 when authentication is on).
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok()
            && (head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 401"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root (`docker/registry/v2/…` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the data of a blob (`sha256:<hex>` or bare hex).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The directory the registry writes its files to (config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the registry logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Every request of the access log, in order.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.log().lines().filter_map(parse_access_line).collect()
    }

    /// Digests of blobs uploaded (the `PUT …/blobs/uploads/…?digest=` that completes an
    /// upload, answered 201) to `repo`, in order.
    pub fn uploaded_blobs(&self, repo: &str) -> Vec<String> {
        let prefix = format!("/v2/{repo}/blobs/uploads/");
        self.requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.status == 201 && r.path.starts_with(&prefix))
            .filter_map(|r| r.param("digest").map(str::to_string))
            .collect()
    }

    /// `(digest, from)` of blob mounts into `repo` that the registry accepted (201).
    pub fn mounted_blobs(&self, repo: &str) -> Vec<(String, String)> {
        let prefix = format!("/v2/{repo}/blobs/uploads/");
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.status == 201 && r.path.starts_with(&prefix))
            .filter_map(|r| Some((r.param("mount")?.to_string(), r.param("from")?.to_string())))
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse `127.0.0.1 - - [date] "PUT /v2/x/blobs/uploads/u?digest=sha256%3A… HTTP/1.1" 201 0 …`.
fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let start = line.find("] \"")? + 3;
    let rest = &line[start..];
    let end = rest.find('"')?;
    let mut req = rest[..end].split(' ');
    let method = req.next()?.to_string();
    let target = req.next()?;
    if !req.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Some(LoggedRequest {
        method,
        path: path.to_string(),
        query: percent_decode(query),
        status,
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let line = r#"127.0.0.1 - - [22/Nov/2026:03:43:03 +0000] "PUT /v2/nb/base/blobs/uploads/8f?_state=x&digest=sha256%3Aabc HTTP/1.1" 201 0 "" "oci-client/0.18""#;
        let r = parse_access_line(line).unwrap();
        assert_eq!(r.method, "PUT");
        assert_eq!(r.path, "/v2/nb/base/blobs/uploads/8f");
        assert_eq!(r.param("digest"), Some("sha256:abc"));
        assert_eq!(r.status, 201);
        assert!(parse_access_line("time=\"x\" level=info msg=\"listening\"").is_none());
        assert_eq!(percent_decode("a%3Ab%2"), "a:b%2");
    }
}
