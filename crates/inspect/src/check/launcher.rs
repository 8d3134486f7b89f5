//! Our side of the Gateway Provisioners kernel launcher protocol (launcher payload version 1),
//! used to check a kernel image live:
//!
//! 1. make an RSA-1024 key pair; listen on the Docker bridge's gateway address;
//! 2. start the image as the Docker provisioner does (no command; `KERNEL_ID`,
//!    `KERNEL_LANGUAGE`, `RESPONSE_ADDRESS`, `PUBLIC_KEY` (base64 DER SubjectPublicKeyInfo),
//!    `PORT_RANGE`, … in the environment; uid 1000, group 100);
//! 3. read the payload until EOF: base64 of `{"version":1,"key":b64(RSA-PKCS#1v1.5(aes key)),
//!    "conn_info":b64(AES-128-ECB-PKCS#7(json))}`; decrypt and check the kernel id;
//! 4. send a signed (HMAC-SHA256) `kernel_info_request` on the shell channel and wait for the
//!    reply (its signature checked too);
//! 5. shut down: `shutdown_request` on the control channel, `{"shutdown": 1}` to the comm
//!    port, and watch the container stop.
//!
//! The container's state is polled all along, so a broken image fails with its exit code and
//! log instead of a timeout.

use std::time::{Duration, Instant};

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, KeyInit};
use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use nbrt_oci::Engine;
use rsa::pkcs8::EncodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

use super::container::{bridge_gateway, indent, Container, RunSpec};
use super::live::LiveOptions;
use super::CheckResult as R;
use crate::error::{InspectError, Result};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// The payload is a few hundred bytes; anything much larger is not a launcher.
const MAX_PAYLOAD: u64 = 64 << 10;

fn bad(msg: impl Into<String>) -> InspectError {
    InspectError::Invalid(msg.into())
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A UUID-4 string (the form kernel ids and message ids have).
fn uuid4() -> String {
    let h = random_hex(16);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// The server's key pair and the `PUBLIC_KEY` value launchers take.
pub struct Keys {
    private: RsaPrivateKey,
    pub public_b64: String,
}

impl Keys {
    pub fn generate() -> Result<Self> {
        let mut rng = rsa::rand_core::OsRng;
        let private = RsaPrivateKey::new(&mut rng, 1024)
            .map_err(|e| bad(format!("generating an RSA key: {e}")))?;
        let der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| bad(format!("encoding the RSA public key: {e}")))?;
        Ok(Self {
            private,
            public_b64: B64.encode(der.as_bytes()),
        })
    }

    /// Decode a launcher payload (version 1) into the connection info.
    pub fn decode(&self, payload: &[u8]) -> Result<Value> {
        let outer = B64
            .decode(trim_ascii(payload))
            .map_err(|e| bad(format!("the payload is not base64: {e}")))?;
        let doc: Value = serde_json::from_slice(&outer)
            .map_err(|e| bad(format!("the payload is not JSON: {e}")))?;
        if doc.get("version").and_then(Value::as_i64) != Some(1) {
            return Err(bad(format!(
                "payload version {:?}; only version 1 (RSA + AES) is accepted",
                doc.get("version")
            )));
        }
        let field = |k: &str| -> Result<Vec<u8>> {
            let s = doc
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("the payload has no {k:?}")))?;
            B64.decode(s)
                .map_err(|e| bad(format!("payload field {k:?} is not base64: {e}")))
        };
        let key = self
            .private
            .decrypt(Pkcs1v15Encrypt, &field("key")?)
            .map_err(|_| bad("the AES key does not decrypt with our RSA key"))?;
        if key.len() != 16 {
            return Err(bad(format!(
                "the AES key is {} bytes, expected 16",
                key.len()
            )));
        }
        let plain = aes128_ecb_decrypt(&key, &field("conn_info")?)?;
        serde_json::from_slice(&plain)
            .map_err(|e| bad(format!("the connection info is not JSON: {e}")))
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// AES-128 in ECB mode with PKCS#7 padding removed.
pub fn aes128_ecb_decrypt(key: &[u8], data: &[u8]) -> Result<Vec<u8>> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(bad(format!(
            "the encrypted connection info is {} bytes, not a multiple of 16",
            data.len()
        )));
    }
    let cipher = aes::Aes128::new(GenericArray::from_slice(key));
    let mut out = data.to_vec();
    for block in out.chunks_mut(16) {
        cipher.decrypt_block(GenericArray::from_mut_slice(block));
    }
    let pad = *out.last().unwrap_or(&0) as usize;
    if pad == 0 || pad > 16 || !out[out.len() - pad..].iter().all(|b| *b as usize == pad) {
        return Err(bad("bad padding in the connection info (wrong key?)"));
    }
    out.truncate(out.len() - pad);
    Ok(out)
}

/// Jupyter messages signed with HMAC-SHA256 over header, parent header, metadata, content.
pub struct Signer {
    key: Vec<u8>,
    session: String,
}

impl Signer {
    pub fn new(key: &str) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            session: uuid4(),
        }
    }

    fn sign(&self, parts: &[&[u8]]) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
            return String::new();
        };
        for p in parts {
            mac.update(p);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// The frames of a request; returns them with its msg_id.
    pub fn request(&self, msg_type: &str, content: Value) -> (ZmqMessage, String) {
        let msg_id = uuid4();
        let header = json!({
            "msg_id": msg_id, "session": self.session, "username": "nbrt-check",
            "date": "1970-01-01T00:00:00.000000Z", "msg_type": msg_type, "version": "5.3",
        })
        .to_string();
        let parts = [
            header,
            "{}".to_string(),
            "{}".to_string(),
            content.to_string(),
        ];
        let sig = self.sign(&[
            parts[0].as_bytes(),
            parts[1].as_bytes(),
            parts[2].as_bytes(),
            parts[3].as_bytes(),
        ]);
        let mut frames = vec![Bytes::from_static(b"<IDS|MSG>"), Bytes::from(sig)];
        frames.extend(parts.into_iter().map(Bytes::from));
        let msg = ZmqMessage::try_from(frames).unwrap_or_else(|_| ZmqMessage::from(""));
        (msg, msg_id)
    }

    /// Check a reply's signature and return (header, parent header, content).
    pub fn verify(&self, msg: &ZmqMessage) -> Result<(Value, Value, Value)> {
        let frames: Vec<&Bytes> = msg.iter().collect();
        let at = frames
            .iter()
            .position(|f| f.as_ref() == b"<IDS|MSG>")
            .ok_or_else(|| bad("the reply has no <IDS|MSG> delimiter"))?;
        if frames.len() < at + 6 {
            return Err(bad("the reply has too few frames"));
        }
        let body = &frames[at + 2..at + 6];
        let want = self.sign(&[&body[0][..], &body[1][..], &body[2][..], &body[3][..]]);
        if frames[at + 1].as_ref() != want.as_bytes() {
            return Err(bad(
                "the reply's HMAC signature does not match the connection key",
            ));
        }
        let parse = |b: &Bytes| -> Result<Value> {
            serde_json::from_slice(b).map_err(|e| bad(format!("a reply frame is not JSON: {e}")))
        };
        Ok((parse(body[0])?, parse(body[1])?, parse(body[3])?))
    }
}

/// Send a request on a channel and wait for the signed reply to it.
async fn ask(
    endpoint: &str,
    signer: &Signer,
    msg_type: &str,
    content: Value,
    timeout: Duration,
) -> Result<(Value, Value)> {
    let mut sock = zeromq::DealerSocket::new();
    tokio::time::timeout(timeout, sock.connect(endpoint))
        .await
        .map_err(|_| bad(format!("connecting to {endpoint} timed out")))?
        .map_err(|e| bad(format!("connecting to {endpoint}: {e}")))?;
    let (msg, id) = signer.request(msg_type, content);
    sock.send(msg)
        .await
        .map_err(|e| bad(format!("sending {msg_type}: {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let reply = tokio::time::timeout(left, sock.recv())
            .await
            .map_err(|_| {
                bad(format!(
                    "no reply to {msg_type} within {}s",
                    timeout.as_secs()
                ))
            })?
            .map_err(|e| bad(format!("receiving the reply to {msg_type}: {e}")))?;
        let (header, parent, content) = signer.verify(&reply)?;
        if parent.get("msg_id").and_then(Value::as_str) == Some(id.as_str()) {
            let _ = sock.close().await;
            return Ok((header, content));
        }
    }
}

/// The gateway-kernel live check.
pub async fn check(engine: &Engine, image: &str, opts: &LiveOptions) -> Result<Vec<R>> {
    let keys = tokio::task::spawn_blocking(Keys::generate)
        .await
        .map_err(|e| bad(format!("key generation: {e}")))??;
    let gateway = bridge_gateway(engine).await?;
    let listener = TcpListener::bind((gateway.as_str(), 0))
        .await
        .map_err(crate::error::io(format!("listening on {gateway}")))?;
    let port = listener
        .local_addr()
        .map_err(crate::error::io("response address"))?
        .port();
    let kernel_id = uuid4();
    let env = vec![
        format!("KERNEL_ID={kernel_id}"),
        "KERNEL_LANGUAGE=python".to_string(),
        format!("RESPONSE_ADDRESS={gateway}:{port}"),
        format!("PUBLIC_KEY={}", keys.public_b64),
        "PORT_RANGE=0..0".to_string(),
        "KERNEL_SPARK_CONTEXT_INIT_MODE=none".to_string(),
        "KERNEL_USERNAME=nbrt-check".to_string(),
        "KERNEL_UID=1000".to_string(),
        "KERNEL_GID=100".to_string(),
    ];
    let spec = RunSpec {
        env,
        user: Some("1000".to_string()),
        group_add: vec!["100".to_string()],
        ..Default::default()
    };
    let c = Container::start(engine, image, &spec).await?;
    let out = converse(&c, &listener, &keys, &kernel_id, opts).await;
    c.remove().await;
    out
}

async fn read_payload(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut limited = stream.take(MAX_PAYLOAD + 1);
    tokio::time::timeout(Duration::from_secs(10), limited.read_to_end(&mut buf))
        .await
        .map_err(|_| bad("the launcher did not close the connection within 10s"))?
        .map_err(crate::error::io("reading the payload"))?;
    if buf.len() as u64 > MAX_PAYLOAD {
        return Err(bad(format!("the payload is over {MAX_PAYLOAD} bytes")));
    }
    Ok(buf)
}

async fn converse(
    c: &Container,
    listener: &TcpListener,
    keys: &Keys,
    kernel_id: &str,
    opts: &LiveOptions,
) -> Result<Vec<R>> {
    let mut out = Vec::new();
    let start = Instant::now();
    // Wait for the launcher's connection, watching the container.
    let payload = loop {
        tokio::select! {
            acc = listener.accept() => {
                let (mut stream, _) = acc.map_err(crate::error::io("accepting the launcher"))?;
                break read_payload(&mut stream).await;
            }
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                let st = c.state().await?;
                if !st.running {
                    out.push(R::fail(
                        "live.kernel.payload",
                        format!("the kernel container exited with code {} before sending its connection info; last log lines{}", st.exit_code, indent(&c.logs(20).await)),
                        "run the image with KERNEL_ID, KERNEL_LANGUAGE, RESPONSE_ADDRESS and PUBLIC_KEY set and fix the error in its log",
                    ));
                    return Ok(out);
                }
                if start.elapsed() > opts.timeout {
                    out.push(R::fail(
                        "live.kernel.payload",
                        format!("no connection info reached the response address within {}s; last log lines{}", opts.timeout.as_secs(), indent(&c.logs(20).await)),
                        "check that the image's command runs bootstrap-kernel.sh and the launcher can reach RESPONSE_ADDRESS",
                    ));
                    return Ok(out);
                }
            }
        }
    };
    let info = match payload.and_then(|p| keys.decode(&p)) {
        Ok(v) => v,
        Err(e) => {
            out.push(R::fail(
                "live.kernel.payload",
                format!("the launcher's payload is unusable: {e}"),
                "use the launchers of gateway_provisioners (payload version 1) with pycryptodomex",
            ));
            return Ok(out);
        }
    };
    if info.get("kernel_id").and_then(Value::as_str) != Some(kernel_id) {
        out.push(R::fail(
            "live.kernel.payload",
            format!(
                "the payload is for kernel {:?}, not {kernel_id}",
                info.get("kernel_id")
            ),
            "pass KERNEL_ID through to the launcher (bootstrap-kernel.sh --kernel-id)",
        ));
        return Ok(out);
    }
    let port = |k: &str| {
        info.get(k)
            .and_then(Value::as_u64)
            .filter(|p| *p > 0 && *p < 65536)
    };
    let (Some(shell), Some(control), Some(comm)) =
        (port("shell_port"), port("control_port"), port("comm_port"))
    else {
        out.push(R::fail(
            "live.kernel.payload",
            format!("the connection info lacks shell/control/comm ports: {info}"),
            "use the gateway_provisioners launcher and server_listener.py",
        ));
        return Ok(out);
    };
    let key = info
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if info
        .get("signature_scheme")
        .and_then(Value::as_str)
        .is_some_and(|s| s != "hmac-sha256")
    {
        out.push(R::fail(
            "live.kernel.payload",
            format!(
                "signature scheme {:?}; hmac-sha256 expected",
                info.get("signature_scheme")
            ),
            "use jupyter_client's default signature scheme",
        ));
        return Ok(out);
    }
    out.push(R::pass(
        "live.kernel.payload",
        format!("connection info received and decrypted (RSA + AES) for kernel {kernel_id}"),
    ));
    let ip = c.state().await?.ip.unwrap_or_default();
    let signer = Signer::new(&key);
    let wait = opts.timeout.min(Duration::from_secs(60));
    match ask(
        &format!("tcp://{ip}:{shell}"),
        &signer,
        "kernel_info_request",
        json!({}),
        wait,
    )
    .await
    {
        Ok((header, content))
            if header.get("msg_type").and_then(Value::as_str) == Some("kernel_info_reply") =>
        {
            let lang = content
                .pointer("/language_info/name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let imp = content
                .get("implementation")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let ver = content
                .get("implementation_version")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let proto = content
                .get("protocol_version")
                .and_then(Value::as_str)
                .unwrap_or("?");
            out.push(R::pass(
                "live.kernel.info",
                format!(
                    "signed kernel_info_request answered: {imp} {ver}, {lang}, protocol {proto}"
                ),
            ));
        }
        Ok((header, _)) => out.push(R::fail(
            "live.kernel.info",
            format!(
                "the kernel answered with {:?} instead of kernel_info_reply",
                header.get("msg_type")
            ),
            "install ipykernel in the image's `python`",
        )),
        Err(e) => {
            let st = c.state().await?;
            let why = if st.running {
                String::new()
            } else {
                format!(" (the container exited with code {})", st.exit_code)
            };
            out.push(R::fail(
                "live.kernel.info",
                format!(
                    "no kernel_info_reply on the shell port {shell}: {e}{why}; last log lines{}",
                    indent(&c.logs(20).await)
                ),
                "check that ipykernel starts in the image (`python -m ipykernel_launcher`)",
            ));
            return Ok(out);
        }
    }
    // Shutdown as the server does it: the kernel over control, the listener over the comm port.
    let kernel_down = ask(
        &format!("tcp://{ip}:{control}"),
        &signer,
        "shutdown_request",
        json!({"restart": false}),
        wait,
    )
    .await;
    let comm_ok = match TcpStream::connect((ip.as_str(), comm as u16)).await {
        Ok(mut s) => {
            let sent = s.write_all(br#"{"shutdown": 1}"#).await.is_ok();
            let _ = s.shutdown().await;
            sent
        }
        Err(_) => false,
    };
    let stopped = {
        let t = Instant::now();
        loop {
            match c.state().await {
                Ok(st) if !st.running => break Some(st.exit_code),
                _ if t.elapsed() > Duration::from_secs(5) => break None,
                _ => tokio::time::sleep(Duration::from_millis(300)).await,
            }
        }
    };
    // The provisioner removes the container after this; whether it also exits by itself
    // is reported, not required.
    let container = match stopped {
        Some(code) => format!("the container exited with code {code}"),
        None => "the container is still up (the provisioner removes it)".to_string(),
    };
    match (kernel_down.is_ok(), comm_ok, stopped) {
        (true, true, _) => out.push(R::pass(
            "live.kernel.shutdown",
            format!(
                "shutdown_reply received, comm port {comm} took {{\"shutdown\": 1}}; {container}"
            ),
        )),
        (k, m, s) => out.push(R::fail(
            "live.kernel.shutdown",
            format!(
                "shutdown incomplete: shutdown_reply {}, comm port {comm} {}, container {}",
                if k { "received" } else { "missing" },
                if m {
                    "took {\"shutdown\": 1}"
                } else {
                    "refused the connection"
                },
                match s {
                    Some(c) => format!("exited with code {c}"),
                    None => "still running".into(),
                },
            ),
            "use the gateway_provisioners launcher (its server_listener serves the comm port)",
        )),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncrypt;
    use rsa::RsaPublicKey;

    /// Encrypt a payload the way launch_ipykernel.py does.
    fn launcher_payload(public_b64: &str, conn: &Value) -> Vec<u8> {
        use rsa::pkcs8::DecodePublicKey;
        let der = B64.decode(public_b64).unwrap();
        let public = RsaPublicKey::from_public_key_der(&der).unwrap();
        let aes_key = [7u8; 16];
        let mut data = conn.to_string().into_bytes();
        let pad = 16 - data.len() % 16;
        data.extend(std::iter::repeat_n(pad as u8, pad));
        let cipher = aes::Aes128::new(GenericArray::from_slice(&aes_key));
        for block in data.chunks_mut(16) {
            cipher.encrypt_block(GenericArray::from_mut_slice(block));
        }
        let key = public
            .encrypt(&mut rsa::rand_core::OsRng, Pkcs1v15Encrypt, &aes_key)
            .unwrap();
        let doc = json!({"version": 1, "key": B64.encode(key), "conn_info": B64.encode(data)});
        B64.encode(doc.to_string()).into_bytes()
    }

    #[test]
    fn decodes_a_launcher_payload() {
        let keys = Keys::generate().unwrap();
        let conn = json!({"shell_port": 5, "key": "k", "kernel_id": "abc", "comm_port": 9});
        let payload = launcher_payload(&keys.public_b64, &conn);
        assert_eq!(keys.decode(&payload).unwrap(), conn);
        // Another server's key cannot read it.
        let other = Keys::generate().unwrap();
        assert!(other.decode(&payload).is_err());
        assert!(keys.decode(b"not base64!").is_err());
        let v0 = B64.encode(json!({"version": 0}).to_string());
        assert!(keys
            .decode(v0.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("version"));
    }

    #[test]
    fn signs_and_verifies_messages() {
        let s = Signer::new("secret");
        let (msg, _) = s.request("kernel_info_request", json!({}));
        let (h, _, _) = s.verify(&msg).unwrap();
        assert_eq!(h["msg_type"], "kernel_info_request");
        let other = Signer::new("other");
        assert!(other.verify(&msg).is_err());
    }
}
