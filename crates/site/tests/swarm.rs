//! The Swarm backend on a real three-node swarm: `scripts/swarm-lab up` (engines in network
//! namespaces, the site registry at 10.77.0.254:5000). Without the lab these tests fail
//! saying so, unless NBRT_SKIP_DOCKER=1.
//!
//! Start → ready through the proxy, a kernel runs code, a second start is the same session,
//! the site restarted adopts it, stop; limits the backend cannot enforce are refused; a
//! process past `maxMemory` gives `oom-killed`; a crashing image gives `failed` with its
//! reason.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use common::*;
use futures_util::SinkExt;
use nbrt_site::{BackendKind, Config, Site, SwarmConfig};
use serde_json::{json, Value};

const REGISTRY: &str = "10.77.0.254:5000";

fn lab_dir() -> String {
    std::env::var("NBRT_SWARM_LAB").unwrap_or_else(|_| "/var/lib/nbrt-swarm-lab".into())
}

fn engine(node: &str) -> String {
    format!("unix://{}/{node}/docker.sock", lab_dir())
}

fn on_manager(args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(engine("n1"))
        .args(args)
        .output()
        .expect("running docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the lab is up; panics saying how to start it unless skipping is allowed.
fn lab() -> bool {
    if on_manager(&["info", "--format", "{{.Swarm.ControlAvailable}}"]) == "true" {
        return true;
    }
    if std::env::var("NBRT_SKIP_DOCKER").is_ok_and(|v| v == "1") {
        eprintln!("skipped: the swarm lab is not up (scripts/swarm-lab up)");
        return false;
    }
    panic!(
        "the swarm lab is not up at {}: run scripts/swarm-lab up (it needs scripts/setup: \
         docker.io, docker-registry, iproute2, util-linux), or set NBRT_SKIP_DOCKER=1",
        lab_dir()
    );
}

/// The stock jupyter image in the shared fixture store, and a crasher made from it (its
/// entrypoint prints a reason and exits 3).
fn images() -> Option<(std::path::PathBuf, String, String)> {
    let store = nbrt_testkit::stock::store_with("jupyter")?;
    let jupyter = store
        .resolve("jupyter")
        .expect("jupyter in the fixture store");
    let mut cfg = jupyter.image.config.value().clone();
    let c = cfg.config.get_or_insert_with(Default::default);
    c.entrypoint = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo 'crasher: no notebook server today' >&2; exit 3".into(),
    ]);
    c.cmd = None;
    let crasher = nbrt_oci::Image::assemble(cfg, jupyter.image.layers().to_vec(), BTreeMap::new())
        .expect("assembling the crasher");
    store.put_bytes(crasher.config.bytes()).unwrap();
    store.put_bytes(crasher.manifest.bytes()).unwrap();
    store
        .tag(
            &crasher,
            &nbrt_oci::ImageName::parse("nbrt-test/crasher:swarm").unwrap(),
        )
        .unwrap();
    Some((
        store.root().to_path_buf(),
        jupyter.image.id().to_string(),
        crasher.id().to_string(),
    ))
}

fn swarm_config(c: &mut Config, store: &std::path::Path) {
    c.store = Some(store.to_path_buf());
    c.backend = BackendKind::Swarm;
    c.engine = Some(engine("n1"));
    c.swarm = SwarmConfig {
        registry: Some(REGISTRY.into()),
        registry_insecure: true,
        node_engines: ["n1", "n2", "n3"].iter().map(|n| engine(n)).collect(),
        ..Default::default()
    };
}

/// Removes the site's services and home pins from the swarm, and its volumes from the nodes.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=io.nbrt.site={}", self.0);
        for what in ["service", "config"] {
            let ids = on_manager(&[what, "ls", "-q", "--filter", &filter]);
            if !ids.is_empty() {
                let mut args = vec![what, "rm"];
                args.extend(ids.lines());
                on_manager(&args);
            }
        }
    }
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
    a.body["session"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_session_start_run_restart_stop() {
    if !lab() {
        return;
    }
    let Some((store, jupyter, _)) = images() else {
        return;
    };
    let t = start_site(|c| swarm_config(c, &store)).await;
    let _cleanup = Cleanup(t.site.site_id.clone());
    let ann = t.user("ann", "author", false).await;

    // Swap is not the swarm's to set: refused, naming the field.
    let a = t
        .call(
            "POST",
            "/api/runtimes",
            Some(&t.admin),
            Some(json!({"name": "noswap", "imageId": jupyter, "maxCpu": 1,
                "maxMemory": 512, "maxMemoryUnit": "m", "maxSwapMemory": 512})),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["field"], "maxSwapMemory", "{}", a.text);

    let rt = t
        .register(
            json!({"name": "py", "imageId": jupyter, "maxCpu": 1, "maxMemory": 512,
            "maxMemoryUnit": "m", "sharedMemory": 96, "sharedMemoryUnit": "m"}),
        )
        .await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &ann, rt_id).await;
    assert_eq!(s["state"], "ready", "{s}");
    let sid = s["id"].as_str().unwrap().to_string();
    let again = start(&t, &ann, rt_id).await;
    assert_eq!(again["id"], s["id"], "a second start is the same session");

    // One service, pinned by digest to the site registry, with the limits.
    let service = on_manager(&["service", "inspect", s["containerId"].as_str().unwrap()]);
    let v: Value = serde_json::from_str(&service).unwrap();
    let spec = &v[0]["Spec"];
    let image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .unwrap();
    assert!(image.starts_with(&format!("{REGISTRY}/nbrt/")), "{image}");
    assert!(image.contains("@sha256:"), "{image}");
    assert_eq!(spec["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
    assert_eq!(spec["EndpointSpec"]["Mode"], "dnsrr");
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"],
        512 * 1024 * 1024
    );
    assert_eq!(
        spec["TaskTemplate"]["Resources"]["Limits"]["NanoCPUs"],
        1_000_000_000
    );

    // A kernel runs code through the site's proxy; /dev/shm has the runtime's size.
    let prefix = format!("/user/ann/{rt_id}/");
    let (_kid, mut ws) = kernel_ws(&t, &ann, &prefix).await;
    assert_eq!(run_cell(&mut ws, "print(6 * 7)", "s1").await, "42\n");
    let shm = run_cell(
        &mut ws,
        "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)",
        "s2",
    )
    .await;
    assert_eq!(shm.trim(), (96 * 1024 * 1024).to_string());

    // The site started again on the same database adopts the session, once.
    let mut cfg = nbrt_site::Config::new(t.dir.path().join("site.db"));
    swarm_config(&mut cfg, &store);
    let (again_site, admin): (Arc<Site>, _) = Site::open(cfg).await.expect("reopening the site");
    assert!(admin.is_none());
    let report = again_site.reconcile().await.expect("reconcile");
    assert_eq!(report.adopted, vec![sid.clone()], "{report:?}");
    assert!(report.removed_orphans.is_empty(), "{report:?}");
    loop {
        let s = nbrt_site::sessions::get(&again_site, &sid)
            .unwrap()
            .unwrap();
        if s.state != nbrt_site::sessions::SessionState::Starting {
            assert_eq!(s.state, nbrt_site::sessions::SessionState::Ready, "{s:?}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Stop: the service goes, the session is stopped.
    let stopped = t
        .call("DELETE", &format!("/api/sessions/{sid}"), Some(&ann), None)
        .await;
    assert_eq!(
        stopped.body["session"]["state"], "stopped",
        "{}",
        stopped.text
    );
    let left = on_manager(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.nbrt.session={sid}"),
    ]);
    assert!(left.is_empty(), "the service outlived its session: {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_out_of_memory_and_crash() {
    if !lab() {
        return;
    }
    let Some((store, jupyter, crasher)) = images() else {
        return;
    };
    let t = start_site(|c| swarm_config(c, &store)).await;
    let _cleanup = Cleanup(t.site.site_id.clone());
    let bob = t.user("bob", "author", false).await;

    // A crashing image ends the session as failed, with the engine's reason.
    let rt = t.register(runtime_body("crash", &crasher)).await;
    let s = start(&t, &bob, rt["id"].as_str().unwrap()).await;
    assert_eq!(s["state"], "failed", "{s}");
    let msg = s["message"].as_str().unwrap();
    assert!(msg.contains("exited with code 3"), "{s}");

    // A process past maxMemory: the session is oom-killed.
    let rt = t
        .register(json!({"name": "small", "imageId": jupyter, "maxCpu": 1,
            "maxMemory": 256, "maxMemoryUnit": "m"}))
        .await;
    let rt_id = rt["id"].as_str().unwrap();
    let s = start(&t, &bob, rt_id).await;
    assert_eq!(s["state"], "ready", "{s}");
    let (_kid, mut ws) = kernel_ws(&t, &bob, &format!("/user/bob/{rt_id}/")).await;
    ws.send(execute(
        "x = b'x' * (600 * 1024 * 1024)\nprint(len(x))",
        "o1",
    ))
    .await
    .unwrap();
    let ended = t
        .wait_session_state(s["id"].as_str().unwrap(), &bob, "ready")
        .await;
    assert_eq!(ended["state"], "oom-killed", "{ended}");
    assert!(
        ended["message"].as_str().unwrap().contains("out of memory"),
        "{ended}"
    );
}
