//! A small client of a Jupyter server's REST and websocket API, for tests that prove an
//! image works the way a user would: the server answers, a kernel starts and runs code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A Jupyter server at `127.0.0.1:port` under `prefix` (`""` or `/notebook/ns/name`).
#[derive(Debug, Clone)]
pub struct Jupyter {
    pub port: u16,
    pub token: String,
    pub prefix: String,
}

/// What a cell printed and returned.
#[derive(Debug, Clone, Default)]
pub struct Execution {
    pub stdout: String,
    pub stderr: String,
    /// `text/plain` of the execute_result, if any.
    pub result: Option<String>,
    /// `ename: evalue` when the cell raised.
    pub error: Option<String>,
}

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| format!("{e} in {:?}", self.body))
    }
}

/// One HTTP/1.0 request (the server answers without chunking and closes the connection).
pub fn http(
    method: &str,
    port: u16,
    path_and_query: &str,
    body: Option<&str>,
) -> Result<Response, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {head:?}"))?;
    Ok(Response {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    })
}

impl Jupyter {
    pub fn new(port: u16, token: &str) -> Jupyter {
        Jupyter {
            port,
            token: token.to_string(),
            prefix: String::new(),
        }
    }

    pub fn with_prefix(mut self, prefix: &str) -> Jupyter {
        self.prefix = prefix.trim_end_matches('/').to_string();
        self
    }

    fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}token={}", self.prefix, self.token)
    }

    pub fn get(&self, path: &str) -> Result<Response, String> {
        http("GET", self.port, &self.url(path), None)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Response, String> {
        http("POST", self.port, &self.url(path), Some(&body.to_string()))
    }

    pub fn delete(&self, path: &str) -> Result<Response, String> {
        http("DELETE", self.port, &self.url(path), None)
    }

    /// Wait until `GET <prefix>/api` answers 200; the last failure when it never does.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            let last = match self.get("/api") {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("status {}", r.status),
                Err(e) => e,
            };
            if start.elapsed() > timeout {
                return Err(format!(
                    "{}/api did not answer 200 within {timeout:?}: {last}",
                    self.prefix
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Start a kernel (the server's default kernel spec); its ID.
    pub fn start_kernel(&self) -> Result<String, String> {
        self.start(json!({}))
    }

    /// Start a kernel of the kernel spec `name` (`"ir"`, `"python3"`); its ID.
    pub fn start_kernel_named(&self, name: &str) -> Result<String, String> {
        self.start(json!({ "name": name }))
    }

    fn start(&self, body: Value) -> Result<String, String> {
        let r = self.post("/api/kernels", &body)?;
        if r.status != 201 && r.status != 200 {
            return Err(format!("POST /api/kernels: {} {}", r.status, r.body));
        }
        r.json()?["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no kernel id in {}", r.body))
    }

    /// Run `code` in kernel `id` through the websocket channels, until the kernel is idle
    /// again after it.
    pub fn execute(&self, id: &str, code: &str, timeout: Duration) -> Result<Execution, String> {
        let url = format!(
            "ws://127.0.0.1:{}{}",
            self.port,
            self.url(&format!("/api/kernels/{id}/channels"))
        );
        let (mut ws, _) = tungstenite::connect(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
        }
        let msg_id = format!("nbrt-test-{}", std::process::id());
        let request = json!({
            "header": { "msg_id": msg_id, "username": "test", "session": "nbrt-test",
                        "msg_type": "execute_request", "version": "5.3" },
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": { "code": code, "silent": false, "store_history": false,
                         "user_expressions": {}, "allow_stdin": false, "stop_on_error": true },
        });
        ws.send(tungstenite::Message::text(request.to_string()))
            .map_err(|e| e.to_string())?;
        let mut out = Execution::default();
        let start = Instant::now();
        while start.elapsed() < timeout {
            let msg = match ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(format!("kernel websocket: {e}")),
            };
            let Ok(text) = msg.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["parent_header"]["msg_id"] != msg_id {
                continue;
            }
            let content = &v["content"];
            match v["msg_type"].as_str().unwrap_or_default() {
                "stream" if content["name"] == "stdout" => {
                    out.stdout += content["text"].as_str().unwrap_or_default()
                }
                "stream" => out.stderr += content["text"].as_str().unwrap_or_default(),
                "execute_result" => {
                    out.result = content["data"]["text/plain"].as_str().map(str::to_string)
                }
                "error" => {
                    out.error = Some(format!(
                        "{}: {}",
                        content["ename"].as_str().unwrap_or_default(),
                        content["evalue"].as_str().unwrap_or_default()
                    ))
                }
                "status" if content["execution_state"] == "idle" => {
                    ws.close(None).ok();
                    return Ok(out);
                }
                _ => {}
            }
        }
        Err(format!(
            "kernel {id} did not finish {code:?} within {timeout:?}; so far: {out:?}"
        ))
    }
}
