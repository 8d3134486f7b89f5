//! A hostile registry on loopback: enough of the distribution API (`/v2/` with a Bearer
//! challenge pointing to its own token endpoint, a token endpoint, manifests, blobs) to lead
//! a client into one endless reply. Each [`Endless`] mode picks the reply that never ends;
//! every other reply is small and well formed. [`HostileRegistry::expiring_tokens`] serves
//! only well-formed replies, but a token stops being accepted once a manifest was fetched
//! with it (a token that expired during a pull).
//!
//! "Endless" is capped at [`ENDLESS_CAP`] bytes per reply so that a client that does not
//! bound its reads fails a test instead of the machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// Bytes one endless reply sends at most before the server closes the connection.
pub const ENDLESS_CAP: u64 = 512 << 20;

/// The access tokens the token endpoint grants (when its reply is not the endless one):
/// this with `-1`, `-2`, … appended.
const TOKEN: &str = "hostile-token";

/// The token the registry accepts now, and how many were granted.
#[derive(Debug, Default)]
struct Tokens {
    expiring: bool,
    granted: u64,
    valid: String,
}

impl Tokens {
    fn grant(&mut self) -> String {
        self.granted += 1;
        self.valid = format!("{TOKEN}-{}", self.granted);
        self.valid.clone()
    }
}

/// Which reply never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endless {
    /// The manifest (`200`, an OCI manifest's media type, a body that does not stop).
    Manifest,
    /// An error reply to the manifest request (`404`, a JSON error body that does not stop).
    ErrorBody,
    /// The token endpoint's reply (`200`, `{"token":"aaaa…`).
    Token,
    /// The config blob (`200`, bytes past the descriptor's size).
    Config,
    /// An error reply to the config blob request (`500`, a body that does not stop).
    BlobError,
}

/// The hostile registry; stops when dropped.
pub struct HostileRegistry {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tokens: Arc<std::sync::Mutex<Tokens>>,
    thread: Option<JoinHandle<()>>,
}

impl HostileRegistry {
    pub fn start(mode: Endless) -> Self {
        Self::start_mode(Some(mode), false)
    }

    /// Well-formed replies (an image with no layers), but the token a manifest was fetched
    /// with is refused afterwards: a client must get a new one to fetch the config.
    pub fn expiring_tokens() -> Self {
        Self::start_mode(None, true)
    }

    /// How many tokens the token endpoint granted.
    pub fn tokens_granted(&self) -> u64 {
        lock(&self.tokens).granted
    }

    fn start_mode(mode: Option<Endless>, expiring: bool) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").expect("binding the hostile registry on loopback");
        let addr = listener.local_addr().expect("local address");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let tokens = Arc::new(std::sync::Mutex::new(Tokens {
            expiring,
            ..Tokens::default()
        }));
        let thread = {
            let stop = stop.clone();
            let sent = sent.clone();
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(sock) = sock else { continue };
                    let sent = sent.clone();
                    let tokens = tokens.clone();
                    std::thread::spawn(move || {
                        let _ = serve(sock, addr, mode, &sent, &tokens);
                    });
                }
            })
        };
        Self {
            addr,
            stop,
            sent,
            tokens,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Bytes of endless bodies written so far (what the client read, give or take the
    /// socket buffers).
    pub fn endless_bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The small config and manifest the non-endless modes serve.
fn image() -> (Vec<u8>, String, Vec<u8>) {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}"#.to_vec();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config)));
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    (config, config_digest, manifest.into_bytes())
}

fn serve(
    sock: TcpStream,
    addr: SocketAddr,
    mode: Option<Endless>,
    sent: &AtomicU64,
    tokens: &std::sync::Mutex<Tokens>,
) -> std::io::Result<()> {
    sock.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(sock.try_clone()?).take(64 << 10);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut bearer = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            if let Some(t) = line.trim().rsplit(' ').next() {
                bearer = t.to_string();
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    let mut out = sock;

    if path == "/token" {
        if mode == Some(Endless::Token) {
            return endless(
                &mut out,
                "200 OK",
                "application/json",
                b"{\"token\":\"",
                b'a',
                sent,
            );
        }
        return small(
            &mut out,
            "200 OK",
            "application/json",
            &[],
            format!(r#"{{"token":"{}","expires_in":300}}"#, lock(tokens).grant()).as_bytes(),
        );
    }
    if !path.starts_with("/v2/") {
        return small(&mut out, "404 Not Found", "text/plain", &[], b"not here");
    }
    let authorized = {
        let t = lock(tokens);
        !t.valid.is_empty() && bearer == t.valid
    };
    if !authorized {
        let challenge =
            format!("WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"hostile\"");
        return small(
            &mut out,
            "401 Unauthorized",
            "application/json",
            &[challenge],
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    }
    if path == "/v2/" {
        return small(&mut out, "200 OK", "application/json", &[], b"{}");
    }
    let (config, config_digest, manifest) = image();
    if path.contains("/manifests/") {
        return match mode {
            Some(Endless::Manifest) => endless(
                &mut out,
                "200 OK",
                "application/vnd.oci.image.manifest.v1+json",
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":["#,
                b' ',
                sent,
            ),
            Some(Endless::ErrorBody) => endless(
                &mut out,
                "404 Not Found",
                "application/json",
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":""#,
                b'a',
                sent,
            ),
            _ => {
                {
                    let mut t = lock(tokens);
                    if t.expiring {
                        t.valid.clear();
                    }
                }
                let digest = format!(
                    "Docker-Content-Digest: sha256:{}",
                    hex::encode(Sha256::digest(&manifest))
                );
                small(
                    &mut out,
                    "200 OK",
                    "application/vnd.oci.image.manifest.v1+json",
                    &[digest],
                    if method == "HEAD" { b"" } else { &manifest },
                )
            }
        };
    }
    if path.ends_with(&format!("/blobs/{config_digest}")) {
        return match mode {
            Some(Endless::Config) => endless(
                &mut out,
                "200 OK",
                "application/octet-stream",
                &config,
                b'x',
                sent,
            ),
            Some(Endless::BlobError) => endless(
                &mut out,
                "500 Internal Server Error",
                "text/plain",
                b"",
                b'e',
                sent,
            ),
            _ => small(&mut out, "200 OK", "application/octet-stream", &[], &config),
        };
    }
    small(
        &mut out,
        "404 Not Found",
        "application/json",
        &[],
        br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#,
    )
}

fn lock(tokens: &std::sync::Mutex<Tokens>) -> std::sync::MutexGuard<'_, Tokens> {
    tokens.lock().unwrap_or_else(|p| p.into_inner())
}

fn small(
    out: &mut TcpStream,
    status: &str,
    content_type: &str,
    headers: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// A close-delimited body: `start`, then `fill` bytes until the client goes away or
/// [`ENDLESS_CAP`] is reached.
fn endless(
    out: &mut TcpStream,
    status: &str,
    content_type: &str,
    start: &[u8],
    fill: u8,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let head =
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nConnection: close\r\n\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(start)?;
    let chunk = vec![fill; 64 << 10];
    let mut written = start.len() as u64;
    while written < ENDLESS_CAP {
        out.write_all(&chunk)?;
        written += chunk.len() as u64;
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}
