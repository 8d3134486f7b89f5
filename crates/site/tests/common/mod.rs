//! Shared harness for the site's tests: a site on a temporary database, served on loopback,
//! and the Jupyter image its sessions run.
#![allow(dead_code)]

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nbrt_oci::label;
use nbrt_site::{Config, Site};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub struct TestSite {
    pub site: Arc<Site>,
    pub base: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestSite {
    fn drop(&mut self) {
        self.server.abort();
        // Warm sessions' home slots: unmounted before the directory goes, so removing it
        // never reaches into a home volume.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "awk '{{print $5}}' /proc/self/mountinfo | grep -F '{}/warm-homes' | sort -r | \
                 xargs -r -n1 umount -l",
                self.dir.path().display()
            ))
            .output();
        // Leave no containers behind: every container of this site goes (under the site
        // label's name and the one earlier versions wrote).
        let keys = [Some(label::SITE.name), label::SITE.old];
        for key in keys.into_iter().flatten() {
            let out = Command::new("docker")
                .args(["ps", "-aq", "--filter"])
                .arg(format!("label={key}={}", self.site.site_id))
                .output();
            if let Ok(out) = out {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .arg("rm")
                        .arg("-fv")
                        .args(&ids)
                        .output();
                }
            }
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "docker volume ls -q --filter label={key}={} | xargs -r docker volume rm -f",
                    self.site.site_id
                ))
                .output();
        }
    }
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir.join("site.db"));
    c.store = Some(dir.join("store"));
    c.start_timeout = Duration::from_secs(180);
    c
}

pub async fn start_site(tweak: impl FnOnce(&mut Config)) -> TestSite {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let (site, admin) = Site::open(cfg).await.expect("opening the site");
    let admin = admin.expect("a new database makes an admin token");
    site.reconcile().await.expect("reconcile");
    site.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = site.router();
    let limits = site.config.limits.clone();
    // The server `nbrt serve` runs, with its time-outs and connection cap.
    let server = tokio::spawn(nbrt_site::server::serve(listener, router, limits));
    TestSite {
        site,
        base,
        admin,
        dir,
        http: reqwest::Client::new(),
        server,
    }
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

/// One request to the site at `base` (`http://host:port`), with a bearer token and a JSON
/// body when given.
pub async fn call_at(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = http.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer { status, body, text }
}

impl TestSite {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        call_at(&self.http, &self.base, method, path, token, body).await
    }

    /// Log in as the UI does with `token`: the login cookie's `name=value`.
    pub async fn login_cookie(&self, token: &str) -> String {
        let r = self
            .http
            .post(format!("{}/api/login", self.base))
            .header("Content-Type", "application/json")
            .body(json!({"token": token}).to_string())
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 200);
        r.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .expect("a login cookie")
            .to_string()
    }

    pub async fn user(&self, name: &str, role: &str, advanced: bool) -> String {
        let a = self
            .call(
                "POST",
                "/api/users",
                Some(&self.admin),
                Some(serde_json::json!({"name": name, "role": role, "advanced": advanced})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["token"].as_str().expect("token").to_string()
    }

    pub async fn register(&self, body: Value) -> Value {
        let a = self
            .call("POST", "/api/runtimes", Some(&self.admin), Some(body))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["notebookRuntime"].clone()
    }

    /// Start a session of `runtime` as the holder of `token` and wait for it: the session,
    /// which must be ready.
    pub async fn start_ready(&self, token: &str, runtime: &str) -> Value {
        let a = self
            .call(
                "POST",
                "/api/sessions",
                Some(token),
                Some(serde_json::json!({"runtimeId": runtime, "wait": true})),
            )
            .await;
        assert!(a.status == 200 || a.status == 202, "{}", a.text);
        let s = &a.body["session"];
        assert_eq!(s["state"], "ready", "{}", a.text);
        s.clone()
    }

    /// Poll a session until its state is no longer `state`.
    pub async fn wait_session_state(&self, id: &str, token: &str, state: &str) -> Value {
        loop {
            let a = self
                .call("GET", &format!("/api/sessions/{id}"), Some(token), None)
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            if a.body["session"]["state"] != state {
                return a.body["session"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Poll a session until it leaves `starting` (no timing asserted: the site's own start
    /// timeout ends a session that never answers).
    pub async fn wait_session(&self, id: &str, token: &str) -> Value {
        loop {
            let a = self
                .call("GET", &format!("/api/sessions/{id}"), Some(token), None)
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            if a.body["session"]["state"] != "starting" {
                return a.body["session"].clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The Jupyter image sessions run: `NBRT_SITE_TEST_IMAGE`, else the stock jupyter stack
/// built by nbrt (`nbrt_testkit::stock`) and loaded into Docker.
/// Returns the full image ID.
pub fn jupyter_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let tag = match std::env::var("NBRT_SITE_TEST_IMAGE") {
                Ok(t) if !t.is_empty() => t,
                // On a plain thread: loading into Docker blocks on its own async runtime,
                // which cannot start inside the test's.
                _ => std::thread::spawn(|| nbrt_testkit::stock::docker_image("jupyter"))
                    .join()
                    .expect("building and loading the stock jupyter image")
                    .expect("the stock jupyter image (mmdebstrap, runc, uv and Docker are needed)"),
            };
            run(Command::new("docker").args([
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                tag.trim(),
            ]))
            .trim()
            .to_string()
        })
        .clone()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn docker_inspect(container: &str) -> Value {
    let out = run(Command::new("docker").args(["inspect", container]));
    let v: Value = serde_json::from_str(&out).expect("docker inspect JSON");
    v[0].clone()
}

pub fn runtime_body(name: &str, image: &str) -> Value {
    serde_json::json!({
        "name": name, "imageId": image, "maxCpu": 1, "maxMemory": 512, "maxMemoryUnit": "m",
    })
}

/// A kernel started through the proxy under `prefix` (ending in `/`) and its websocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn kernel_ws(t: &TestSite, token: &str, prefix: &str) -> (String, Ws) {
    kernel_ws_at(&t.http, &t.base, token, prefix).await
}

/// [`kernel_ws`] on the site at `base`.
pub async fn kernel_ws_at(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    prefix: &str,
) -> (String, Ws) {
    let k = call_at(
        http,
        base,
        "POST",
        &format!("{prefix}api/kernels"),
        Some(token),
        Some(json!({"name": "python3"})),
    )
    .await;
    assert_eq!(
        k.status, 201,
        "starting a kernel through the proxy: {}",
        k.text
    );
    let kid = k.body["id"].as_str().unwrap().to_string();
    let url = format!(
        "{}{prefix}api/kernels/{kid}/channels",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("kernel websocket through the proxy");
    (kid, ws)
}

pub fn execute(code: &str, msg_id: &str) -> Message {
    Message::text(
        json!({
            "header": {"msg_id": msg_id, "username": "test", "session": "s1",
                       "msg_type": "execute_request", "version": "5.3", "date": "2024-01-01T00:00:00Z"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": false, "store_history": true,
                        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true}
        })
        .to_string(),
    )
}

/// Run code and collect its stdout until the kernel goes idle again.
pub async fn run_cell(ws: &mut Ws, code: &str, msg_id: &str) -> String {
    ws.send(execute(code, msg_id)).await.unwrap();
    let mut out = String::new();
    while let Some(msg) = ws.next().await {
        let Ok(Message::Text(text)) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["parent_header"]["msg_id"] != msg_id {
            continue;
        }
        match v["msg_type"].as_str() {
            Some("stream") => out.push_str(v["content"]["text"].as_str().unwrap_or("")),
            Some("error") => out.push_str(&format!("ERROR {}", v["content"]["ename"])),
            Some("status") if v["content"]["execution_state"] == "idle" => break,
            _ => {}
        }
    }
    out
}

/// A one-file image written into `store` (not runnable: it has no program), labelled
/// `io.nbrt.test.mark=<mark>` so a test can find (and prune) only its own images; `content`
/// makes it distinct.
pub fn tiny_image(store: &nbrt_oci::Store, mark: &str, content: &str) -> nbrt_oci::Image {
    image_with_filler(store, mark, content, 0)
}

/// [`tiny_image`] with a file of `filler` zero bytes besides, uncompressed: an image that
/// takes the engine a while to load.
pub fn image_with_filler(
    store: &nbrt_oci::Store,
    mark: &str,
    content: &str,
    filler: u64,
) -> nbrt_oci::Image {
    use std::io::Read;

    use nbrt_oci::layer::{Compression, Entry, EntryKind, LayerWriter};
    use nbrt_oci::spec::{ContainerConfig, ImageConfig, RootFs};
    let entry = |path: &str, size: u64| Entry {
        path: path.into(),
        kind: EntryKind::File,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1,
        size,
        xattrs: vec![],
    };
    let compression = if filler > 0 {
        Compression::None
    } else {
        Compression::Gzip
    };
    let mut w =
        LayerWriter::new(store.new_blob().expect("blob"), compression, None).expect("layer writer");
    w.append(
        &entry("hello", content.len() as u64),
        &mut content.as_bytes(),
    )
    .expect("layer entry");
    if filler > 0 {
        w.append(
            &entry("filler", filler),
            &mut std::io::repeat(0).take(filler),
        )
        .expect("filler entry");
    }
    let (info, blob) = w.finish().expect("layer");
    blob.commit().expect("layer blob");
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            labels: Some(std::collections::BTreeMap::from([(
                "io.nbrt.test.mark".to_string(),
                mark.to_string(),
            )])),
            ..Default::default()
        }),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![info.diff_id.clone()],
        },
        ..Default::default()
    };
    nbrt_oci::Image::assemble(config, vec![info.descriptor()], Default::default()).expect("image")
}

/// The `docker image inspect` of an image, if the engine has it.
pub fn docker_image(id: &str) -> Option<Value> {
    let out = Command::new("docker")
        .args(["image", "inspect", id])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0].clone())
}
