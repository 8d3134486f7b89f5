//! The server process killed (SIGKILL) and started again on the same database: its sessions
//! are adopted — none lost, none duplicated — and an orphan container is removed; containers
//! an earlier version labelled (`org.nbrt.*`) are adopted and watched too.
//!
//! The server runs in a child process: this test binary re-executes itself running the
//! ignored `server_process` test with `NBRT_SITE_CHILD_DB` set.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use nbrt_oci::label;
use serde_json::{json, Value};

/// The child: serve on the given database until killed, printing the address (and the
/// admin token on first start) on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by restart_adopts_sessions as its server process"]
async fn server_process() {
    let Ok(db) = std::env::var("NBRT_SITE_CHILD_DB") else {
        return;
    };
    let mut cfg = nbrt_site::Config::new(&db);
    cfg.store = Some(std::path::PathBuf::from(&db).with_extension("store"));
    nbrt_site::serve(
        cfg,
        "127.0.0.1:0".parse().unwrap(),
        Default::default(),
        |started| {
            println!("LISTEN {}", started.addr);
            if let Some(t) = started.admin {
                println!("ADMIN {t}");
            }
            println!(
                "REPORT {}",
                serde_json::to_string(started.reconcile).unwrap()
            );
            println!("READY");
        },
    )
    .await
    .expect("serve");
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Started {
    server: Server,
    base: String,
    admin: Option<String>,
    report: Value,
}

fn spawn_server(db: &std::path::Path) -> Started {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "server_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NBRT_SITE_CHILD_DB", db)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the server process");
    let out = BufReader::new(child.stdout.take().unwrap());
    let server = Server { child };
    let (mut base, mut admin, mut report) = (None, None, Value::Null);
    for line in out.lines() {
        let line = line.expect("server output");
        // libtest may print `test server_process ... ` on the same line before the output.
        let line = match ["LISTEN ", "ADMIN ", "REPORT ", "READY"]
            .iter()
            .filter_map(|m| line.find(m))
            .min()
        {
            Some(i) => line[i..].to_string(),
            None => continue,
        };
        if let Some(a) = line.strip_prefix("LISTEN ") {
            base = Some(format!("http://{a}"));
        } else if let Some(t) = line.strip_prefix("ADMIN ") {
            admin = Some(t.to_string());
        } else if let Some(r) = line.strip_prefix("REPORT ") {
            report = serde_json::from_str(r).unwrap();
        } else if line == "READY" {
            break;
        }
    }
    Started {
        server,
        base: base.expect("the server printed its address"),
        admin,
        report,
    }
}

async fn call(
    base: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null),
    )
}

/// The site's containers: labelled with the site label's name or the one earlier versions
/// wrote (one query each: a filter naming two labels wants both on one container).
fn site_containers(site_id: &str) -> Vec<String> {
    let mut v = Vec::new();
    for key in [Some(label::SITE.name), label::SITE.old]
        .into_iter()
        .flatten()
    {
        let out = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--no-trunc",
                "--filter",
                &format!("label={key}={site_id}"),
            ])
            .output()
            .unwrap();
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_string),
        );
    }
    v.sort();
    v.dedup();
    v
}

async fn wait_ready(base: &str, token: &str, id: &str) -> Value {
    loop {
        let (_, v) = call(base, "GET", &format!("/api/sessions/{id}"), token, None).await;
        if v["session"]["state"] != "starting" {
            return v["session"].clone();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_sessions() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("site.db");
    let mut first = spawn_server(&db);
    let admin = first.admin.clone().expect("admin token on first start");
    let base = first.base.clone();
    let (st, ann) = call(
        &base,
        "POST",
        "/api/users",
        &admin,
        Some(json!({"name": "ann"})),
    )
    .await;
    assert_eq!(st, 201);
    let ann = ann["token"].as_str().unwrap().to_string();
    let (st, rt) = call(
        &base,
        "POST",
        "/api/runtimes",
        &admin,
        Some(runtime_body("py", &jupyter_image())),
    )
    .await;
    assert_eq!(st, 201, "{rt}");
    let rt_id = rt["notebookRuntime"]["id"].as_str().unwrap().to_string();
    let (st, s) = call(
        &base,
        "POST",
        "/api/sessions",
        &ann,
        Some(json!({"runtimeId": rt_id, "wait": true})),
    )
    .await;
    assert_eq!(st, 200, "{s}");
    let s = s["session"].clone();
    let sid = s["id"].as_str().unwrap().to_string();
    let cid = s["containerId"].as_str().unwrap().to_string();
    let site_id = docker_inspect(&cid)["Config"]["Labels"][label::SITE.name]
        .as_str()
        .unwrap()
        .to_string();

    // An orphan: a container with the site's label and no session behind it.
    let orphan = Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            &format!("org.nbrt.site={site_id}"),
            "--label",
            "org.nbrt.session=gone",
            "--entrypoint",
            "sleep",
            &jupyter_image(),
            "600",
        ])
        .output()
        .unwrap();
    assert!(orphan.status.success());
    let orphan = String::from_utf8_lossy(&orphan.stdout).trim().to_string();

    // Kill the server: no chance to clean up.
    first.server.child.kill().unwrap();
    first.server.child.wait().unwrap();

    let second = spawn_server(&db);
    assert!(
        second.admin.is_none(),
        "the admin token is shown only on first start"
    );
    let base = second.base.clone();
    assert_eq!(second.report["adopted"], json!([sid]));
    assert_eq!(second.report["removedOrphans"], json!([orphan]));
    let s2 = wait_ready(&base, &ann, &sid).await;
    assert_eq!(s2["state"], "ready", "{s2}");
    assert_eq!(s2["containerId"], cid.as_str());
    // Exactly one container: the adopted one.
    assert_eq!(site_containers(&site_id), vec![cid.clone()]);
    let (_, list) = call(&base, "GET", "/api/sessions", &admin, None).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1);
    // Starting again returns the adopted session, not a second container.
    let (_, again) = call(
        &base,
        "POST",
        "/api/sessions",
        &ann,
        Some(json!({"runtimeId": rt_id, "wait": true})),
    )
    .await;
    assert_eq!(again["session"]["id"], sid.as_str());
    assert_eq!(site_containers(&site_id), vec![cid.clone()]);
    // And the proxy reaches it.
    let (st, _) = call(&base, "GET", &format!("/user/ann/{rt_id}/api"), &ann, None).await;
    assert_eq!(st, 200);

    drop(second);
    let _ = Command::new("docker").args(["rm", "-f", &cid]).output();
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", &format!("nbrt-{site_id}-home-ann")])
        .output();
}

/// Poll a session until it leaves `state`, for at most `secs` seconds.
async fn wait_leaves(base: &str, token: &str, id: &str, state: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, v) = call(base, "GET", &format!("/api/sessions/{id}"), token, None).await;
        if v["session"]["state"] != state {
            return v["session"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session {id} still {state} after {secs} s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A session container an earlier version started carries `org.nbrt.site`, `org.nbrt.session`,
/// `org.nbrt.user` and `org.nbrt.runtime`: a server started on that database adopts it like
/// its own, and its engine watcher still sees it exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_containers_labelled_by_earlier_versions() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("site.db");
    let mut first = spawn_server(&db);
    let admin = first.admin.clone().expect("admin token on first start");
    let base = first.base.clone();
    let (st, ann) = call(
        &base,
        "POST",
        "/api/users",
        &admin,
        Some(json!({"name": "ann"})),
    )
    .await;
    assert_eq!(st, 201);
    let ann = ann["token"].as_str().unwrap().to_string();
    let (st, rt) = call(
        &base,
        "POST",
        "/api/runtimes",
        &admin,
        Some(runtime_body("py", &jupyter_image())),
    )
    .await;
    assert_eq!(st, 201, "{rt}");
    let rt_id = rt["notebookRuntime"]["id"].as_str().unwrap().to_string();
    let (st, s) = call(
        &base,
        "POST",
        "/api/sessions",
        &ann,
        Some(json!({"runtimeId": rt_id, "wait": true})),
    )
    .await;
    assert_eq!(st, 200, "{s}");
    let sid = s["session"]["id"].as_str().unwrap().to_string();
    let cid = s["session"]["containerId"].as_str().unwrap().to_string();
    first.server.child.kill().unwrap();
    first.server.child.wait().unwrap();

    // The same container as an earlier version would have started it: same name, image,
    // environment (the session's token) and home volume, the old label names.
    let info = docker_inspect(&cid);
    let site_id = info["Config"]["Labels"][label::SITE.name]
        .as_str()
        .unwrap()
        .to_string();
    let name = info["Name"].as_str().unwrap().trim_start_matches('/');
    let mut args: Vec<String> = ["run", "-d", "--name", name]
        .iter()
        .map(|a| a.to_string())
        .collect();
    for l in [
        format!("org.nbrt.site={site_id}"),
        format!("org.nbrt.session={sid}"),
        "org.nbrt.user=ann".to_string(),
        format!("org.nbrt.runtime={rt_id}"),
    ] {
        args.extend(["--label".to_string(), l]);
    }
    for e in info["Config"]["Env"].as_array().unwrap() {
        args.extend(["-e".to_string(), e.as_str().unwrap().to_string()]);
    }
    for b in info["HostConfig"]["Binds"].as_array().unwrap() {
        args.extend(["-v".to_string(), b.as_str().unwrap().to_string()]);
    }
    args.push(info["Config"]["Image"].as_str().unwrap().to_string());
    let rm = Command::new("docker")
        .args(["rm", "-f", &cid])
        .output()
        .unwrap();
    assert!(rm.status.success());
    let old = Command::new("docker").args(&args).output().unwrap();
    assert!(
        old.status.success(),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let old = String::from_utf8_lossy(&old.stdout).trim().to_string();
    assert_eq!(site_containers(&site_id), vec![old.clone()]);

    let second = spawn_server(&db);
    let base = second.base.clone();
    assert_eq!(second.report["adopted"], json!([sid]), "{}", second.report);
    assert_eq!(second.report["removedOrphans"], json!([]));
    assert_eq!(second.report["ended"], json!([]));
    let s2 = wait_ready(&base, &ann, &sid).await;
    assert_eq!(s2["state"], "ready", "{s2}");
    assert_eq!(s2["containerId"], old.as_str());
    let (st, _) = call(&base, "GET", &format!("/user/ann/{rt_id}/api"), &ann, None).await;
    assert_eq!(st, 200);
    // Starting again returns the adopted session, not a second container.
    let (_, again) = call(
        &base,
        "POST",
        "/api/sessions",
        &ann,
        Some(json!({"runtimeId": rt_id, "wait": true})),
    )
    .await;
    assert_eq!(again["session"]["id"], sid.as_str());
    assert_eq!(site_containers(&site_id), vec![old.clone()]);

    // The engine watcher follows the old label too: the container's exit ends the session.
    let kill = Command::new("docker")
        .args(["kill", &old])
        .output()
        .unwrap();
    assert!(kill.status.success());
    let ended = wait_leaves(&base, &ann, &sid, "ready", 60).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended["message"].as_str().unwrap().contains("exited"),
        "{ended}"
    );

    drop(second);
    let _ = Command::new("docker").args(["rm", "-f", &old]).output();
    let _ = Command::new("docker")
        .args(["volume", "rm", "-f", &format!("nbrt-{site_id}-home-ann")])
        .output();
}
