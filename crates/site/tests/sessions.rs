//! Sessions on the real Docker engine: limits in `docker inspect` and enforced (a cell run
//! through Jupyter's kernel API past maxMemory gets the session OOM-killed), isolation
//! between users through the API and the proxy (HTTP and websockets), idle culling.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use nbrt_oci::label;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const MIB: i64 = 1024 * 1024;

fn docker() -> bool {
    nbrt_testkit::require_docker()
}

async fn start(t: &TestSite, token: &str, runtime: &str) -> Value {
    let a = t
        .call(
            "POST",
            "/api/sessions",
            Some(token),
            Some(json!({"runtimeId": runtime, "wait": true})),
        )
        .await;
    assert!(a.status == 200 || a.status == 202, "{}", a.text);
    let s = &a.body["session"];
    assert_eq!(s["state"], "ready", "{}", a.text);
    s.clone()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn kernel_ws(t: &TestSite, token: &str, prefix: &str) -> (String, Ws) {
    let k = t
        .call(
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
        t.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("kernel websocket through the proxy");
    (kid, ws)
}

fn execute(code: &str, msg_id: &str) -> Message {
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
async fn run_cell(ws: &mut Ws, code: &str, msg_id: &str) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_applied_and_memory_is_enforced() {
    if !docker() {
        return;
    }
    // The server's environment must not reach sessions.
    std::env::set_var("NBRT_SITE_TEST_CANARY", "server-secret");
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let rt = t
        .register(
            json!({"name": "small", "imageId": jupyter_image(), "maxCpu": 0.5,
            "maxMemory": 256, "maxMemoryUnit": "m", "maxSwapMemory": 256, "maxSwapMemoryUnit": "m",
            "sharedMemory": 128, "sharedMemoryUnit": "m"}),
        )
        .await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    // Starting again returns the same session.
    let again = start(&t, &ann, rt_id).await;
    assert_eq!(again["id"], s["id"]);

    let info = docker_inspect(s["containerId"].as_str().unwrap());
    let hc = &info["HostConfig"];
    assert_eq!(hc["NanoCpus"], 500_000_000);
    assert_eq!(hc["Memory"], 256 * MIB);
    assert_eq!(hc["MemorySwap"], 256 * MIB);
    assert_eq!(hc["ShmSize"], 128 * MIB);
    assert_eq!(hc["Privileged"], false);
    assert_eq!(hc["SecurityOpt"], json!(["no-new-privileges:true"]));
    let labels = &info["Config"]["Labels"];
    assert_eq!(labels[label::SESSION.name], s["id"]);
    assert_eq!(labels[label::SESSION_USER.name], "ann");
    assert_eq!(labels[label::SESSION_RUNTIME.name], rt_id);
    assert_eq!(labels[label::SITE.name], t.site.site_id.as_str());
    let env: Vec<String> = serde_json::from_value(info["Config"]["Env"].clone()).unwrap();
    let prefix = format!("/user/ann/{rt_id}");
    assert!(env.contains(&format!("NB_PREFIX={prefix}")), "{env:?}");
    assert!(
        env.iter()
            .any(|e| e.starts_with("JUPYTER_TOKEN=") && e.len() > 30),
        "{env:?}"
    );
    assert!(
        !env.iter()
            .any(|e| e.contains("NBRT_SITE_TEST_CANARY") || e.contains("server-secret")),
        "{env:?}"
    );
    let mounts = info["Mounts"].as_array().unwrap();
    assert!(
        mounts.iter().any(|m| m["Type"] == "volume"
            && m["Destination"] == "/home/jovyan"
            && m["Name"].as_str().unwrap().ends_with("-home-ann")),
        "{mounts:?}"
    );

    // The server inside enforces its token: without the proxy's, /api/kernels is refused.
    let ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .unwrap();
    let direct = reqwest::get(format!("http://{ip}:8888{prefix}/api/kernels"))
        .await
        .unwrap();
    assert_eq!(direct.status().as_u16(), 403);

    // Run cells through Jupyter's REST + websocket API, through the site's proxy.
    let url = format!("{prefix}/");
    let (_kid, mut ws) = kernel_ws(&t, &ann, &url).await;
    assert_eq!(run_cell(&mut ws, "print(6 * 7)", "m1").await, "42\n");
    let shm = run_cell(
        &mut ws,
        "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)",
        "m2",
    )
    .await;
    assert_eq!(shm.trim(), (128 * MIB).to_string());
    // Past maxMemory: the allocation touches every page.
    ws.send(execute(
        "x = b'x' * (600 * 1024 * 1024)\nprint(len(x))",
        "m3",
    ))
    .await
    .unwrap();

    let ended = t
        .wait_session_state(s["id"].as_str().unwrap(), &ann, "ready")
        .await;
    assert_eq!(ended["state"], "oom-killed", "{ended}");
    assert_eq!(ended["oomKilled"], true);
    assert!(
        ended["message"].as_str().unwrap().contains("out of memory"),
        "{ended}"
    );
    // The state is recorded first, then the container killed: give the kill its moment.
    let mut info = docker_inspect(s["containerId"].as_str().unwrap());
    for _ in 0..100 {
        if info["State"]["Running"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = docker_inspect(s["containerId"].as_str().unwrap());
    }
    assert_eq!(info["State"]["Running"], false, "{}", info["State"]);
    assert_eq!(info["State"]["OOMKilled"], true, "{}", info["State"]);
    // The proxy no longer reaches it.
    assert_eq!(
        t.call("GET", &format!("{prefix}/api"), Some(&ann), None)
            .await
            .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_reaches_a_session() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", true).await;
    let rt = t.register(runtime_body("py", &jupyter_image())).await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    let sid = s["id"].as_str().unwrap();
    let prefix = format!("/user/ann/{rt_id}");

    // API: bob cannot see or stop ann's session.
    assert_eq!(
        t.call("GET", &format!("/api/sessions/{sid}"), Some(&bob), None)
            .await
            .status,
        404
    );
    assert_eq!(
        t.call("DELETE", &format!("/api/sessions/{sid}"), Some(&bob), None)
            .await
            .status,
        404
    );
    let list = t.call("GET", "/api/sessions", Some(&bob), None).await;
    assert_eq!(list.body["sessions"], json!([]));
    assert_eq!(
        t.call("GET", "/api/sessions", Some(&ann), None).await.body["sessions"][0]["id"],
        sid
    );
    assert_eq!(
        t.call("GET", "/api/sessions", Some(&t.admin), None)
            .await
            .body["sessions"][0]["id"],
        sid
    );

    // Proxy: ann yes; bob and the admin no; no token: 401.
    assert_eq!(
        t.call("GET", &format!("{prefix}/api"), Some(&ann), None)
            .await
            .status,
        200
    );
    assert_eq!(
        t.call("GET", &format!("{prefix}/api/kernels"), Some(&ann), None)
            .await
            .status,
        200
    );
    assert_eq!(
        t.call("GET", &format!("{prefix}/api/kernels"), Some(&bob), None)
            .await
            .status,
        403
    );
    assert_eq!(
        t.call("GET", &format!("{prefix}/lab"), Some(&t.admin), None)
            .await
            .status,
        403
    );
    assert_eq!(
        t.call("GET", &format!("{prefix}/api"), None, None)
            .await
            .status,
        401
    );
    // bob's own path for a runtime he has no session on.
    assert_eq!(
        t.call("GET", &format!("/user/bob/{rt_id}/api"), Some(&bob), None)
            .await
            .status,
        404
    );

    // Websockets: ann's kernel channel works, bob's upgrade is refused before reaching Jupyter.
    let (kid, mut ws) = kernel_ws(&t, &ann, &format!("{prefix}/")).await;
    assert_eq!(run_cell(&mut ws, "print('hi')", "a1").await, "hi\n");
    let url = format!(
        "{}{prefix}/api/kernels/{kid}/channels",
        t.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {bob}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403)
        }
        other => panic!("bob's websocket should be refused: {:?}", other.map(|_| ())),
    }

    // ann stops it: container gone, home volume kept.
    let stopped = t
        .call("DELETE", &format!("/api/sessions/{sid}"), Some(&ann), None)
        .await;
    assert_eq!(
        stopped.body["session"]["state"], "stopped",
        "{}",
        stopped.text
    );
    let gone = std::process::Command::new("docker")
        .args(["inspect", s["containerId"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    let vol = std::process::Command::new("docker")
        .args([
            "volume",
            "inspect",
            &format!("nbrt-{}-home-ann", t.site.site_id),
        ])
        .output()
        .unwrap();
    assert!(vol.status.success(), "the home volume outlives the session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_culled() {
    if !docker() {
        return;
    }
    let t = start_site(|c| {
        c.cull_idle_timeout = Some(Duration::from_secs(4));
        c.cull_interval = Duration::from_secs(1);
    })
    .await;
    let ann = t.user("ann", "author", false).await;
    let rt = t.register(runtime_body("py", &jupyter_image())).await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    let ended = t
        .wait_session_state(s["id"].as_str().unwrap(), &ann, "ready")
        .await;
    assert_eq!(ended["state"], "culled", "{ended}");
    assert!(
        ended["message"]
            .as_str()
            .unwrap()
            .contains("no kernel activity"),
        "{ended}"
    );
    // The state is recorded first, then the container removed: give the removal its moment.
    let mut gone = false;
    for _ in 0..100 {
        let out = std::process::Command::new("docker")
            .args(["inspect", s["containerId"].as_str().unwrap()])
            .output()
            .unwrap();
        if !out.status.success() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "a culled session's container is removed");
}
