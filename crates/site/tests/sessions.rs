//! Sessions on the real Docker engine: the backends' conformance suite
//! (`conformance/mod.rs`) run on it; then what is the Docker backend's own: limits, labels
//! and environment in `docker inspect`, isolation between users through the API and the
//! proxy (HTTP and websockets), image pins and tags, deprecation, load progress, adoption of
//! containers an earlier version labelled.

mod common;
mod conformance;

use std::time::Duration;

use common::*;
use nbrt_oci::label;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const MIB: i64 = 1024 * 1024;

fn docker() -> bool {
    nbrt_testkit::require_docker()
}

async fn start(t: &TestSite, token: &str, runtime: &str) -> Value {
    t.start_ready(token, runtime).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_backend_conforms() {
    conformance::run(conformance::Fixture::Docker).await;
}

/// The conformance suite's site, in a process of its own (see `conformance::SiteProcess`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the conformance suite as its site process"]
async fn conformance_site() {
    conformance::site_process(conformance::Fixture::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_labels_and_environment_of_a_container() {
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

    // /dev/shm has the runtime's size.
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

/// A session container an earlier version started carries `org.nbrt.site`, `org.nbrt.session`,
/// `org.nbrt.user` and `org.nbrt.runtime`: a site killed and started again on that database
/// adopts it like its own, and its engine watcher still sees it exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_adopts_containers_labelled_by_earlier_versions() {
    use conformance::{Ctx, Fixture, SiteProcess};
    use std::process::Command;
    if !docker() {
        return;
    }
    let Some(images) = conformance::images() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("site.db");
    let mut first = SiteProcess::spawn(&db, &images.store, None);
    let site_id = first.site_id.clone();
    let cx = Ctx {
        fx: Fixture::Docker,
        base: first.base.clone(),
        admin: first.admin.clone().expect("admin token on first start"),
        http: reqwest::Client::new(),
    };
    let ann = cx.user("ann").await;
    let rt_id = cx.register(runtime_body("py", &images.jupyter)).await;
    let s = cx.start(&ann, &rt_id, true).await;
    assert_eq!(s["state"], "ready", "{s}");
    let sid = s["id"].as_str().unwrap().to_string();
    let cid = s["containerId"].as_str().unwrap().to_string();
    first.kill();

    // The same container as an earlier version would have started it: same name, image,
    // environment (the session's token) and home volume, the old label names.
    let info = docker_inspect(&cid);
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
    let old_labelled = || {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--no-trunc", "--filter"])
            .arg(format!("label=org.nbrt.site={site_id}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(old_labelled(), old);

    let second = SiteProcess::spawn(&db, &images.store, None);
    let cx = Ctx {
        base: second.base.clone(),
        ..cx
    };
    assert_eq!(second.report["adopted"], json!([sid]), "{}", second.report);
    assert_eq!(second.report["removedOrphans"], json!([]));
    assert_eq!(second.report["ended"], json!([]));
    let s2 = cx.wait_leaves(&sid, &ann, &["starting"]).await;
    assert_eq!(s2["state"], "ready", "{s2}");
    assert_eq!(s2["containerId"], old.as_str());
    let api = cx
        .call("GET", &format!("/user/ann/{rt_id}/api"), &ann, None)
        .await;
    assert_eq!(api.status, 200, "{}", api.text);
    // Starting again returns the adopted session, not a second container.
    let again = cx.start(&ann, &rt_id, true).await;
    assert_eq!(again["id"], sid.as_str());
    assert_eq!(old_labelled(), old);
    assert_eq!(Fixture::Docker.owned(&site_id), Vec::<String>::new());

    // The engine watcher follows the old label too: the container's exit ends the session.
    let kill = Command::new("docker")
        .args(["kill", &old])
        .output()
        .unwrap();
    assert!(kill.status.success());
    let ended = cx.wait_leaves(&sid, &ann, &["ready"]).await;
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        ended["message"].as_str().unwrap().contains("exited"),
        "{ended}"
    );
    drop(second);
    let _ = Command::new("docker").args(["rm", "-f", &old]).output();
    Fixture::Docker.cleanup(&site_id);
}

/// Admin access (off by default, as JupyterHub's): with it on, an administrator opens another
/// user's session through the proxy with the administrator's own credential, HTTP and
/// websocket, and the first access to that session is audited once; an author still may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_access_opens_a_users_session_and_is_audited_once() {
    if !docker() {
        return;
    }
    let t = start_site(|c| c.admin_access = true).await;
    let me = t.call("GET", "/api/me", Some(&t.admin), None).await;
    assert_eq!(me.body["adminAccess"], true, "{}", me.text);
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", false).await;
    let rt = t.register(runtime_body("py", &jupyter_image())).await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    let sid = s["id"].as_str().unwrap();
    let prefix = format!("/user/ann/{rt_id}");
    for path in ["api", "api/kernels", "api/contents"] {
        let a = t
            .call("GET", &format!("{prefix}/{path}"), Some(&t.admin), None)
            .await;
        assert_eq!(a.status, 200, "{path}: {}", a.text);
    }
    let (_, mut ws) = kernel_ws(&t, &t.admin, &format!("{prefix}/")).await;
    assert_eq!(run_cell(&mut ws, "print(6 * 7)", "a1").await, "42\n");
    assert_eq!(
        t.call("GET", &format!("{prefix}/api"), Some(&bob), None)
            .await
            .status,
        403,
        "an author still may not"
    );
    let audit = t
        .call(
            "GET",
            "/api/audit?action=session.admin-access",
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let records: Vec<&Value> = audit.body["records"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", audit.text))
        .iter()
        .filter(|r| r["action"] == "session.admin-access")
        .collect();
    assert_eq!(records.len(), 1, "{}", audit.text);
    assert_eq!(records[0]["target"], sid);
    assert_eq!(records[0]["user"], "admin");
    assert_eq!(records[0]["detail"]["owner"], "ann");
}

/// How long a user waits for a session: `POST /api/sessions` with `wait` until it answers
/// `ready`, by this test's clock.
async fn timed_start(t: &TestSite, token: &str, runtime: &str) -> (Value, Duration) {
    let clock = std::time::Instant::now();
    let s = start(t, token, runtime).await;
    (s, clock.elapsed())
}

/// Poll a runtime until `warmReady` is `n` (the site's start timeout ends members that never
/// get ready; no timing is asserted).
async fn wait_warm(t: &TestSite, rt: &str, n: u64) {
    loop {
        let a = t
            .call("GET", &format!("/api/runtimes/{rt}"), Some(&t.admin), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        if a.body["warmReady"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn patch_runtime(t: &TestSite, rt: &str, body: Value) {
    let a = t
        .call(
            "PATCH",
            &format!("/api/runtimes/{rt}"),
            Some(&t.admin),
            Some(body),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
}

fn docker_ok(args: &[&str]) -> bool {
    std::process::Command::new("docker")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Warm pools: a runtime with `warmPool: 2` keeps two sessions started; a user's start takes
/// one (its own URL, the user's home mounted into it, nothing else), the pool refills, and
/// the next user gets another container, with none of the first user's state. The start
/// times against a cold container start of the same image are reported, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_pool_hands_started_sessions_to_users() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", false).await;
    let image = jupyter_image();
    let mut body = runtime_body("warm", &image);
    body["warmPool"] = json!(2);
    let rt = t.register(body).await;
    assert_eq!(rt["warmPool"], 2, "{rt}");
    let rt_id = rt["id"].as_str().unwrap().to_string();
    let cold_rt = t.register(runtime_body("cold", &image)).await;
    let cold_id = cold_rt["id"].as_str().unwrap().to_string();

    // What a start costs without the pool: a container of the same image.
    let (cold, cold_took) = timed_start(&t, &ann, &cold_id).await;
    assert_eq!(cold["url"], format!("/user/ann/{cold_id}/"));

    wait_warm(&t, &rt_id, 2).await;
    let pool_containers = |t: &TestSite| -> Vec<String> {
        let out = std::process::Command::new("docker")
            .args(["ps", "-q", "--no-trunc", "--filter"])
            .arg(format!("name=nbrt-{}-warm-", t.site.site_id))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let members = pool_containers(&t);
    assert_eq!(members.len(), 2, "two warm containers: {members:?}");

    let (s, warm_took) = timed_start(&t, &ann, &rt_id).await;
    let sid = s["id"].as_str().unwrap();
    let cid = s["containerId"].as_str().unwrap();
    assert!(
        members.contains(&cid.to_string()),
        "a pool member was taken"
    );
    assert_eq!(s["url"], format!("/warm/{sid}/"));
    println!(
        "warm pool of 2: the session was ready in {:.0} ms; a container start of the same \
         image took {:.0} ms ({:.1}x)",
        warm_took.as_secs_f64() * 1000.0,
        cold_took.as_secs_f64() * 1000.0,
        cold_took.as_secs_f64() / warm_took.as_secs_f64()
    );

    // It mounts one thing: its home slot, the user's home volume mounted on it.
    let info = docker_inspect(cid);
    let mounts = info["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Destination"], "/home/jovyan");
    let slot = mounts[0]["Source"].as_str().unwrap().to_string();
    assert!(slot.ends_with(sid), "{slot}");

    // ann writes into her home through her session, at its URL and at the usual one.
    let url = s["url"].as_str().unwrap();
    let put = t
        .call(
            "PUT",
            &format!("{url}api/contents/work/note.txt"),
            Some(&ann),
            Some(json!({"type": "file", "format": "text", "content": "ann's note"})),
        )
        .await;
    assert!(put.status == 201 || put.status == 200, "{}", put.text);
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let usual = call_at(
        &no_follow,
        &t.base,
        "GET",
        &format!("/user/ann/{rt_id}/lab/tree/work?reset"),
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(usual.status, 307, "{}", usual.text);
    let followed = t
        .call(
            "GET",
            &format!("/user/ann/{rt_id}/api/contents/work/note.txt"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(followed.body["content"], "ann's note", "{}", followed.text);
    // The file is in ann's home volume, not in the container.
    let volume = format!("nbrt-{}-home-ann", t.site.site_id);
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "cat", "-v"])
        .arg(format!("{volume}:/h"))
        .args([&image, "/h/work/note.txt"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ann's note");
    assert!(docker_ok(&["exec", cid, "touch", "/tmp/ann-was-here"]));

    // bob cannot open it; the pool refills; bob's session is another container, with his
    // own (new, skeleton-filled) home and none of ann's files.
    let denied = t
        .call("GET", &format!("{url}api/contents"), Some(&bob), None)
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    wait_warm(&t, &rt_id, 2).await;
    let (b, _) = timed_start(&t, &bob, &rt_id).await;
    let bcid = b["containerId"].as_str().unwrap();
    assert_ne!(bcid, cid);
    let burl = b["url"].as_str().unwrap();
    let bnote = t
        .call(
            "GET",
            &format!("{burl}api/contents/work/note.txt"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(bnote.status, 404, "{}", bnote.text);
    let listing = t
        .call("GET", &format!("{burl}api/contents"), Some(&bob), None)
        .await;
    assert!(
        listing.text.contains("\"work\""),
        "bob's new home has the skeleton: {}",
        listing.text
    );
    assert!(!docker_ok(&[
        "exec",
        bcid,
        "test",
        "-e",
        "/tmp/ann-was-here"
    ]));
    let bmounts = docker_inspect(bcid)["Mounts"].clone();
    assert_eq!(bmounts.as_array().unwrap().len(), 1, "{bmounts}");

    // Stopped: its container goes, its slot is released, ann's home keeps her file; her next
    // warm session has it.
    let stopped = t
        .call("DELETE", &format!("/api/sessions/{sid}"), Some(&ann), None)
        .await;
    assert_eq!(
        stopped.body["session"]["state"], "stopped",
        "{}",
        stopped.text
    );
    assert!(!docker_ok(&["inspect", cid]));
    assert!(
        !std::path::Path::new(&slot).exists(),
        "the slot is released"
    );
    wait_warm(&t, &rt_id, 2).await;
    let (again, _) = timed_start(&t, &ann, &rt_id).await;
    let again_url = again["url"].as_str().unwrap();
    let note = t
        .call(
            "GET",
            &format!("{again_url}api/contents/work/note.txt"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(note.body["content"], "ann's note", "{}", note.text);

    // A changed runtime: the members started before are replaced by ones with its limits;
    // the sessions taken from the pool keep running.
    let taken = [
        bcid.to_string(),
        again["containerId"].as_str().unwrap().to_string(),
    ];
    wait_warm(&t, &rt_id, 2).await;
    let before: Vec<String> = pool_containers(&t)
        .into_iter()
        .filter(|c| !taken.contains(c))
        .collect();
    patch_runtime(&t, &rt_id, json!({"maxCpu": 0.75})).await;
    loop {
        let now: Vec<String> = pool_containers(&t)
            .into_iter()
            .filter(|c| !taken.contains(c))
            .collect();
        if now.len() == 2 && now.iter().all(|c| !before.contains(c)) {
            for c in &now {
                assert_eq!(docker_inspect(c)["HostConfig"]["NanoCpus"], 750_000_000);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A pool of 0: the members go; the sessions taken from it stay.
    patch_runtime(&t, &rt_id, json!({"warmPool": 0})).await;
    loop {
        let left = pool_containers(&t);
        // ann's and bob's sessions run in former members.
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        t.call("GET", &format!("{burl}api"), Some(&bob), None)
            .await
            .status,
        200
    );
    for s in [&b, &again, &cold] {
        let id = s["id"].as_str().unwrap();
        t.call(
            "DELETE",
            &format!("/api/sessions/{id}"),
            Some(&t.admin),
            None,
        )
        .await;
    }
    nbrt_site::sessions::pool::drain(&t.site).await.unwrap();
}
