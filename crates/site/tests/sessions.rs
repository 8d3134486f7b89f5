//! Sessions on the real Docker engine: limits in `docker inspect` and enforced (a cell run
//! through Jupyter's kernel API past maxMemory gets the session OOM-killed), isolation
//! between users through the API and the proxy (HTTP and websockets), idle culling.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use nbrt_oci::label;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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

/// A registered runtime's image is pinned in the store: `nbrt gc` (the store's gc) keeps it
/// after `nbrt build` moved its tag to a new image, and the pin names the runtime. Loaded
/// into Docker for a session it carries a tag naming the runtime, so `docker image prune`
/// leaves it; `preloadImage` loads at registration; unregistering lets gc remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_images_are_pinned_tagged_and_outlive_gc_and_prune() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let store = nbrt_oci::Store::open(t.dir.path().join("store")).unwrap();
    let mark = format!("pins-{}", t.site.site_id);
    let latest = nbrt_oci::ImageName::parse("tiny:latest").unwrap();
    let v1 = tiny_image(&store, &mark, "one");
    store.tag(&v1, &latest).unwrap();
    let id1 = v1.id().to_string();
    let rt = t
        .register(json!({"name": "Tiny One", "imageId": id1, "maxCpu": 1,
            "maxMemory": 64, "maxMemoryUnit": "m"}))
        .await;
    let rt_id = rt["id"].as_str().unwrap().to_string();

    // `nbrt build` re-tags :latest: the registered image has no name left; gc keeps it.
    let v2 = tiny_image(&store, &mark, "two");
    store.tag(&v2, &latest).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.pins, 1, "{report:?}");
    nbrt_oci::validate(&v1, &store).expect("the pinned image is whole after gc");
    let pins = store.pins_of(&v1).unwrap();
    assert_eq!(pins.len(), 1);
    assert!(
        pins[0].holder.contains("\"Tiny One\""),
        "{}",
        pins[0].holder
    );

    // A session loads it into Docker under a tag naming the runtime (the tiny image has no
    // program, so the session itself fails: the load is what is looked at).
    let a = t
        .call(
            "POST",
            "/api/sessions",
            Some(&t.admin),
            Some(json!({"runtimeId": rt_id})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let s = t
        .wait_session(a.body["session"]["id"].as_str().unwrap(), &t.admin)
        .await;
    assert_eq!(s["state"], "failed", "{s}");
    let tag = format!("nbrt-runtime/tiny-one:{}", &id1[7..19]);
    let loaded = docker_image(&id1).expect("the site loaded the image into Docker");
    assert!(
        loaded["RepoTags"].as_array().unwrap().contains(&json!(tag)),
        "{loaded}"
    );
    let prune = std::process::Command::new("docker")
        .args(["image", "prune", "-f", "--filter"])
        .arg(format!("label=io.nbrt.test.mark={mark}"))
        .output()
        .unwrap();
    assert!(prune.status.success());
    assert!(docker_image(&id1).is_some(), "docker image prune left it");

    // Preloaded at registration.
    let id2 = v2.id().to_string();
    let two = t
        .call(
            "POST",
            "/api/runtimes",
            Some(&t.admin),
            Some(json!({"name": "Tiny Two", "imageId": id2, "maxCpu": 1,
                "maxMemory": 64, "maxMemoryUnit": "m", "preloadImage": true})),
        )
        .await;
    assert_eq!(two.status, 201, "{}", two.text);
    let preloaded = docker_image(&id2).expect("preloaded at registration");
    assert!(preloaded["RepoTags"]
        .as_array()
        .unwrap()
        .contains(&json!(format!("nbrt-runtime/tiny-two:{}", &id2[7..19]))));

    // Unregistered, the nameless image is the store's to collect.
    let del = t
        .call(
            "DELETE",
            &format!("/api/runtimes/{rt_id}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(store.pins_of(&v1).unwrap().is_empty());
    store.gc().unwrap();
    assert!(store.resolve(&id1).is_err());
    for id in [&id1, &id2] {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", id])
            .output();
    }
}

/// A deprecated runtime takes no new sessions (a 409 that says why) while its running ones
/// keep going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deprecated_runtime_keeps_its_sessions_and_takes_no_new_ones() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", false).await;
    let rt = t.register(runtime_body("old", &jupyter_image())).await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    let dep = t
        .call(
            "POST",
            &format!("/api/runtimes/{rt_id}/deprecate"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(dep.status, 200, "{}", dep.text);
    let refused = t
        .call(
            "POST",
            "/api/sessions",
            Some(&bob),
            Some(json!({"runtimeId": rt_id})),
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert_eq!(refused.body["field"], "runtimeId");
    assert!(
        refused.body["error"]
            .as_str()
            .unwrap()
            .contains("runtime old is deprecated: it takes no new sessions"),
        "{}",
        refused.text
    );
    // Ann's keeps going: still ready, reachable, and hers when she starts again.
    let again = start(&t, &ann, rt_id).await;
    assert_eq!(again["id"], s["id"]);
    let through = t
        .call(
            "GET",
            &format!("{}api", s["url"].as_str().unwrap()),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(through.status, 200, "{}", through.text);
}

/// A session whose image the engine lacks is `starting` while the site loads it from the
/// store, with the load's progress in its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_image_load_shows_its_progress() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let store = nbrt_oci::Store::open(t.dir.path().join("store")).unwrap();
    let mark = format!("progress-{}", t.site.site_id);
    let image = image_with_filler(&store, &mark, &mark, 400 * MIB as u64);
    store
        .tag(&image, &nbrt_oci::ImageName::parse("big:1").unwrap())
        .unwrap();
    let id = image.id().to_string();
    let rt = t
        .register(json!({"name": "big", "imageId": id, "maxCpu": 1,
            "maxMemory": 64, "maxMemoryUnit": "m"}))
        .await;
    let a = t
        .call(
            "POST",
            "/api/sessions",
            Some(&t.admin),
            Some(json!({"runtimeId": rt["id"]})),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let sid = a.body["session"]["id"].as_str().unwrap().to_string();
    let mut seen: Vec<String> = Vec::new();
    loop {
        let s = t
            .call("GET", &format!("/api/sessions/{sid}"), Some(&t.admin), None)
            .await;
        let msg = s.body["session"]["message"].as_str().unwrap().to_string();
        if seen.last() != Some(&msg) {
            seen.push(msg);
        }
        if s.body["session"]["state"] != "starting" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &id])
        .output();
    eprintln!("the session's messages while it started: {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m.starts_with("loading image ") && m.contains("% (")),
        "the load's progress was shown: {seen:?}"
    );
}
