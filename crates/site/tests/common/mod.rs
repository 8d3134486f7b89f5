//! Shared harness for the site's tests: a site on a temporary database, served on loopback,
//! and the Jupyter image its sessions run.
#![allow(dead_code)]

use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nbrt_oci::label;
use nbrt_site::{Config, Site};
use serde_json::Value;

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

impl TestSite {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
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
