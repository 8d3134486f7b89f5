//! The session backends' conformance suite (issue 16): what every backend must do, one
//! function per behaviour, run against a [`Fixture`] — the Docker backend (`sessions.rs`) and
//! the Swarm backend on the lab (`swarm.rs`).
//!
//! The behaviours run in order on one site, so the suite starts as few sessions as it can:
//! start → ready through the proxy, what it uses now (CPU, memory within the runtime's limit),
//! JupyterLab's way back to the site (the hub page config and the site's `/hub/` paths), a
//! kernel runs code, the site's session files are there,
//! a second start is the same session, two users' sessions on different nodes, each user's
//! home kept across a restart of their session on its node, stop, a process past
//! `maxMemory` gives `oom-killed`, a crashing image gives `failed` with its reason and its
//! last output within 30 s, the site killed (SIGKILL) and started again adopts every session exactly once, idle
//! sessions are culled (a busy kernel is not), and no session file outlives its sessions.
//!
//! The site runs in a child process — the test binary running its ignored `conformance_site`
//! test ([`site_process`]) — so that it can be killed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use nbrt_site::{BackendKind, Config, Site, SwarmConfig};
use serde_json::{json, Value};

use crate::common::{call_at, execute, kernel_ws_at, run_cell, Answer, Ws};

/// The site registry of the swarm lab (`scripts/swarm-lab`).
pub const LAB_REGISTRY: &str = "10.77.0.254:5000";
/// The lab's engines.
pub const LAB_NODES: [&str; 3] = ["n1", "n2", "n3"];
/// A crashing image must end its session within this (issue 16's deadline).
pub const CRASH_DEADLINE: Duration = Duration::from_secs(30);
/// The idle time past which the restarted site culls.
const CULL_AFTER_SECS: u64 = 3;
const MIB: i64 = 1024 * 1024;

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// The local Docker engine.
    Docker,
    /// The three-engine swarm of `scripts/swarm-lab up`.
    Swarm,
}

pub fn lab_dir() -> String {
    std::env::var("NBRT_SWARM_LAB").unwrap_or_else(|_| "/var/lib/nbrt-swarm-lab".into())
}

/// A lab node's engine address.
pub fn lab_engine(node: &str) -> String {
    format!("unix://{}/{node}/docker.sock", lab_dir())
}

impl Fixture {
    /// `docker` with this fixture's engine (the lab's manager for Swarm).
    fn docker(self) -> Command {
        self.docker_on(LAB_NODES[0])
    }

    fn docker_on(self, node: &str) -> Command {
        let mut c = Command::new("docker");
        if self == Fixture::Swarm {
            c.arg("-H").arg(lab_engine(node));
        }
        c
    }

    /// What `docker …` prints (trimmed); empty when it fails.
    fn out(self, args: &[&str]) -> String {
        out_of(self.docker().args(args))
    }

    /// Whether the engine is there; for the lab, panics saying how to start it unless
    /// skipping is allowed (NBRT_SKIP_DOCKER=1).
    pub fn available(self) -> bool {
        match self {
            Fixture::Docker => nbrt_testkit::require_docker(),
            Fixture::Swarm => {
                if self.out(&["info", "--format", "{{.Swarm.ControlAvailable}}"]) == "true" {
                    return true;
                }
                if nbrt_testkit::skipping_allowed() {
                    eprintln!("skipped: the swarm lab is not up (scripts/swarm-lab up)");
                    return false;
                }
                panic!(
                    "the swarm lab is not up at {}: run scripts/swarm-lab up (it needs \
                     scripts/setup: docker.io, docker-registry, iproute2, util-linux), or set \
                     NBRT_SKIP_DOCKER=1",
                    lab_dir()
                );
            }
        }
    }

    /// Point a site's configuration at this fixture's engine.
    pub fn configure(self, c: &mut Config) {
        if self == Fixture::Swarm {
            c.backend = BackendKind::Swarm;
            c.engine = Some(lab_engine(LAB_NODES[0]));
            c.swarm = SwarmConfig {
                registry: Some(LAB_REGISTRY.into()),
                registry_insecure: true,
                node_engines: LAB_NODES.iter().map(|n| lab_engine(n)).collect(),
                ..Default::default()
            };
        }
    }

    /// How many nodes sessions can land on.
    pub fn nodes(self) -> usize {
        match self {
            Fixture::Docker => 1,
            Fixture::Swarm => LAB_NODES.len(),
        }
    }

    /// The node a running session is on.
    pub fn node_of(self, handle: &str) -> String {
        match self {
            Fixture::Docker => "the local engine".into(),
            // The node's ID: the lab's nodes share one host name.
            Fixture::Swarm => {
                let tasks = self.out(&[
                    "service",
                    "ps",
                    "-q",
                    "--filter",
                    "desired-state=running",
                    handle,
                ]);
                let task = tasks.lines().next().unwrap_or_default();
                self.out(&["inspect", "--format", "{{.NodeID}}", task])
            }
        }
    }

    /// What is the engine's own about a launched session: a container with the runtime's
    /// memory; a service with the image by digest from the site registry, restart none,
    /// dnsrr endpoints, the limits, the session files as configs and secrets at their paths.
    pub fn check_shape(self, handle: &str, memory: i64) {
        let what = match self {
            Fixture::Docker => "container",
            Fixture::Swarm => "service",
        };
        let info: Value = serde_json::from_str(&self.out(&[what, "inspect", handle]))
            .unwrap_or_else(|e| panic!("{what} inspect {handle}: {e}"));
        let info = &info[0];
        if self == Fixture::Docker {
            assert_eq!(info["HostConfig"]["Memory"], memory, "{info}");
            return;
        }
        let task = &info["Spec"]["TaskTemplate"];
        let image = task["ContainerSpec"]["Image"].as_str().unwrap_or_default();
        assert!(
            image.starts_with(&format!("{LAB_REGISTRY}/nbrt/")),
            "{image}"
        );
        assert!(image.contains("@sha256:"), "{image}");
        assert_eq!(task["RestartPolicy"]["Condition"], "none", "{task}");
        // The site's readiness stands for the image's HEALTHCHECK (Swarm would gate on it).
        assert_eq!(
            task["ContainerSpec"]["Healthcheck"]["Test"],
            json!(["NONE"])
        );
        assert_eq!(info["Spec"]["EndpointSpec"]["Mode"], "dnsrr", "{info}");
        assert_eq!(task["Resources"]["Limits"]["MemoryBytes"], memory, "{task}");
        assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 1_000_000_000_i64);
        let targets = |key: &str| -> Vec<String> {
            let mut t: Vec<String> = task["ContainerSpec"][key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["File"]["Name"].as_str().map(str::to_string))
                .collect();
            t.sort();
            t
        };
        assert_eq!(
            targets("Configs"),
            [
                "/etc/nbrt-test/site.conf",
                "/etc/nbrt/session/ca.pem",
                "/etc/nbrt/session/condarc",
                "/etc/ssl/certs/ca-certificates.crt",
                nbrt_site::hub::PAGE_CONFIG_PATH,
            ],
            "{task}"
        );
        assert_eq!(targets("Secrets"), ["/etc/nbrt-test/secret.conf"], "{task}");
    }

    /// Whether the engine still has what ran a session (a container, a service).
    pub fn has(self, handle: &str) -> bool {
        let what = match self {
            Fixture::Docker => "container",
            Fixture::Swarm => "service",
        };
        self.docker()
            .args([what, "inspect", handle])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// The IDs of what carries the site's label on the engine (containers, services).
    pub fn owned(self, site_id: &str) -> Vec<String> {
        let filter = format!("label=io.nbrt.site={site_id}");
        let listed = match self {
            Fixture::Docker => self.out(&["ps", "-aq", "--no-trunc", "--filter", &filter]),
            Fixture::Swarm => self.out(&["service", "ls", "-q", "--filter", &filter]),
        };
        let mut ids: Vec<String> = listed.lines().map(str::to_string).collect();
        ids.sort();
        ids
    }

    /// The Swarm configs and secrets that hold the site's session files.
    pub fn session_file_objects(self, site_id: &str) -> Vec<String> {
        if self == Fixture::Docker {
            return Vec::new();
        }
        let mut found = Vec::new();
        for what in ["config", "secret"] {
            let listed = self.out(&[
                what,
                "ls",
                "--filter",
                &format!("label=io.nbrt.site={site_id}"),
                "--filter",
                "label=io.nbrt.session-file",
                "--format",
                "{{.Name}}",
            ]);
            found.extend(listed.lines().map(str::to_string));
        }
        found
    }

    /// Remove everything the site left on the engine: containers or services, configs,
    /// secrets, home volumes.
    pub fn cleanup(self, site_id: &str) {
        let filter = format!("label=io.nbrt.site={site_id}");
        let kinds: &[&str] = match self {
            Fixture::Docker => &["container"],
            Fixture::Swarm => &["service", "config", "secret"],
        };
        for what in kinds {
            let mut ls = vec![*what, "ls", "-q", "--filter", &filter];
            if *what == "container" {
                ls.insert(2, "-a");
            }
            let ids = self.out(&ls);
            if !ids.is_empty() {
                let mut rm = vec![*what, "rm"];
                if *what == "container" {
                    rm.push("-fv");
                }
                rm.extend(ids.lines());
                let _ = self.docker().args(&rm).output();
            }
        }
        // Home volumes, on every node; a removed service's container may take a moment.
        let nodes: &[&str] = match self {
            Fixture::Docker => &["local"],
            Fixture::Swarm => &LAB_NODES,
        };
        for node in nodes {
            for _ in 0..50 {
                let vols = out_of(
                    self.docker_on(node)
                        .args(["volume", "ls", "-q", "--filter", &filter]),
                );
                if vols.is_empty() {
                    break;
                }
                let _ = self
                    .docker_on(node)
                    .args(["volume", "rm", "-f"])
                    .args(vols.lines())
                    .output();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn out_of(cmd: &mut Command) -> String {
    match cmd.output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => String::new(),
    }
}

/// The images the suite registers: the stock jupyter image and a crasher made from the stock
/// base image (its entrypoint prints a reason and exits 3), both in the shared fixture store
/// — the store the site reads, so the Swarm backend pushes them from there. `None` when the
/// stock images cannot be built and skipping is allowed.
pub struct Images {
    pub store: PathBuf,
    pub jupyter: String,
    pub crasher: String,
}

pub fn images() -> Option<Images> {
    let store = nbrt_testkit::stock::store_with("jupyter")?;
    let jupyter = store
        .resolve("jupyter")
        .expect("jupyter in the fixture store");
    let base = store.resolve("base").expect("base in the fixture store");
    let mut cfg = base.image.config.value().clone();
    let c = cfg.config.get_or_insert_with(Default::default);
    c.entrypoint = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo 'crasher: no notebook server today' >&2; exit 3".into(),
    ]);
    c.cmd = None;
    let crasher = nbrt_oci::Image::assemble(cfg, base.image.layers().to_vec(), BTreeMap::new())
        .expect("assembling the crasher");
    store
        .put_bytes(crasher.config.bytes())
        .expect("crasher config");
    store
        .put_bytes(crasher.manifest.bytes())
        .expect("crasher manifest");
    store
        .tag(
            &crasher,
            &nbrt_oci::ImageName::parse("nbrt-test/crasher:conformance").expect("name"),
        )
        .expect("tagging the crasher");
    Some(Images {
        store: store.root().to_path_buf(),
        jupyter: jupyter.image.id().to_string(),
        crasher: crasher.id().to_string(),
    })
}

/// The child: a site on `NBRT_CONFORMANCE_DB` with `fixture`'s backend, served until killed,
/// printing its address, site ID, admin token (first start) and adoption report.
pub async fn site_process(fixture: Fixture) {
    let Ok(db) = std::env::var("NBRT_CONFORMANCE_DB") else {
        return;
    };
    let mut cfg = Config::new(&db);
    cfg.store = std::env::var_os("NBRT_CONFORMANCE_STORE").map(PathBuf::from);
    cfg.start_timeout = Duration::from_secs(180);
    fixture.configure(&mut cfg);
    match std::env::var("NBRT_CONFORMANCE_CULL") {
        Ok(secs) => {
            cfg.cull_idle_timeout = Some(Duration::from_secs(secs.parse().expect("seconds")));
            cfg.cull_interval = Duration::from_secs(1);
        }
        Err(_) => cfg.cull_idle_timeout = None,
    }
    let (site, admin) = Site::open(cfg).await.expect("opening the site");
    let report = site.reconcile().await.expect("reconcile");
    site.spawn_background();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!("LISTEN {}", listener.local_addr().expect("address"));
    println!("SITE {}", site.site_id);
    if let Some(t) = admin {
        println!("ADMIN {t}");
    }
    println!("REPORT {}", serde_json::to_string(&report).expect("report"));
    println!("READY");
    let limits = site.config.limits.clone();
    nbrt_site::server::serve(listener, site.router(), limits).await;
}

/// A site in a child process.
pub struct SiteProcess {
    child: Child,
    pub base: String,
    pub site_id: String,
    pub admin: Option<String>,
    /// The adoption report of its start.
    pub report: Value,
}

impl Drop for SiteProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SiteProcess {
    /// Start the site on `db` (culling sessions idle `cull` seconds, or never).
    pub fn spawn(db: &Path, store: &Path, cull: Option<u64>) -> SiteProcess {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args([
            "--ignored",
            "--exact",
            "conformance_site",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("NBRT_CONFORMANCE_DB", db)
        .env("NBRT_CONFORMANCE_STORE", store)
        .stdout(Stdio::piped());
        match cull {
            Some(secs) => cmd.env("NBRT_CONFORMANCE_CULL", secs.to_string()),
            None => cmd.env_remove("NBRT_CONFORMANCE_CULL"),
        };
        let mut child = cmd.spawn().expect("starting the site process");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut site = SiteProcess {
            child,
            base: String::new(),
            site_id: String::new(),
            admin: None,
            report: Value::Null,
        };
        for line in out.lines() {
            let line = line.expect("site output");
            // libtest may print `test conformance_site ... ` before the output on one line.
            let Some(i) = ["LISTEN ", "SITE ", "ADMIN ", "REPORT ", "READY"]
                .iter()
                .filter_map(|m| line.find(m))
                .min()
            else {
                continue;
            };
            let line = &line[i..];
            if let Some(a) = line.strip_prefix("LISTEN ") {
                site.base = format!("http://{a}");
            } else if let Some(s) = line.strip_prefix("SITE ") {
                site.site_id = s.to_string();
            } else if let Some(t) = line.strip_prefix("ADMIN ") {
                site.admin = Some(t.to_string());
            } else if let Some(r) = line.strip_prefix("REPORT ") {
                site.report = serde_json::from_str(r).expect("report JSON");
            } else if line == "READY" {
                break;
            }
        }
        assert!(!site.base.is_empty(), "the site process printed no address");
        site
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("killing the site process");
        self.child.wait().expect("reaping the site process");
    }
}

/// The suite's view of a site: where it is, the admin's token, the fixture.
pub struct Ctx {
    pub fx: Fixture,
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
}

impl Ctx {
    pub async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        call_at(&self.http, &self.base, method, path, Some(token), body).await
    }

    pub async fn user(&self, name: &str) -> String {
        let a = self
            .call(
                "POST",
                "/api/users",
                &self.admin,
                Some(json!({"name": name, "role": "author"})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["token"].as_str().expect("token").to_string()
    }

    pub async fn register(&self, body: Value) -> String {
        let a = self
            .call("POST", "/api/runtimes", &self.admin, Some(body))
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["notebookRuntime"]["id"]
            .as_str()
            .expect("runtime id")
            .to_string()
    }

    pub async fn session(&self, id: &str, token: &str) -> Value {
        let a = self
            .call("GET", &format!("/api/sessions/{id}"), token, None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["session"].clone()
    }

    /// Poll a session until its state is none of `states` (no deadline: the site's start
    /// timeout ends sessions that never answer).
    pub async fn wait_leaves(&self, id: &str, token: &str, states: &[&str]) -> Value {
        loop {
            let s = self.session(id, token).await;
            if !states.iter().any(|st| s["state"] == *st) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn start(&self, token: &str, runtime: &str, wait: bool) -> Value {
        let a = self
            .call(
                "POST",
                "/api/sessions",
                token,
                Some(json!({"runtimeId": runtime, "wait": wait})),
            )
            .await;
        assert!(a.status == 200 || a.status == 202, "{}", a.text);
        a.body["session"].clone()
    }

    /// A kernel of the session at `url` (`/user/<name>/<runtime>/`), through the proxy.
    pub async fn kernel(&self, token: &str, url: &str) -> Ws {
        kernel_ws_at(&self.http, &self.base, token, url).await.1
    }
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Every behaviour in order, on one site of `fx`'s backend.
pub async fn run(fx: Fixture) {
    if !fx.available() {
        return;
    }
    let Some(images) = images() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("site.db");
    let mut first = SiteProcess::spawn(&db, &images.store, None);
    let _cleanup = Cleanup(fx, first.site_id.clone());
    let cx = Ctx {
        fx,
        base: first.base.clone(),
        admin: first.admin.clone().expect("an admin token on first start"),
        http: reqwest::Client::new(),
    };
    let ann = cx.user("ann").await;
    let bob = cx.user("bob").await;
    let cy = cx.user("cy").await;
    let py = cx
        .register(json!({"name": "py", "imageId": images.jupyter, "maxCpu": 1,
            "maxMemory": 256, "maxMemoryUnit": "m",
            "sharedMemory": 96, "sharedMemoryUnit": "m"}))
        .await;
    let crash = cx
        .register(
            json!({"name": "crash", "imageId": images.crasher, "maxCpu": 1,
            "maxMemory": 64, "maxMemoryUnit": "m"}),
        )
        .await;
    let files = set_session_files(&cx).await;

    let ann_s = start_is_ready_through_the_proxy(&cx, &ann, &py).await;
    fx.check_shape(&text(&ann_s, "containerId"), 256 * MIB);
    usage_is_measured_within_the_limit(&cx, &ann, &cy, &ann_s, 256 * MIB).await;
    jupyterlab_links_back_to_the_site(&cx, &ann, &ann_s).await;
    let mut ann_ws = cx.kernel(&ann, &text(&ann_s, "url")).await;
    a_kernel_runs_code(&mut ann_ws).await;
    session_files_are_in_the_session(&mut ann_ws, &files).await;
    a_second_start_is_the_same_session(&cx, &ann, &py, &ann_s).await;
    let bob_s = two_users_sessions_on_different_nodes(&cx, &bob, &py, &ann_s).await;
    let ann_s = home_kept_across_a_restart_on_its_node(&cx, &ann, &py, ann_s, ann_ws).await;
    out_of_memory_is_oom_killed(&cx, &bob, &bob_s).await;
    a_crashing_image_fails_with_its_reason(&cx, &cy, &crash).await;

    // Two live sessions when the site is killed: ann's with a busy kernel, bob's idle.
    let mut busy = cx.kernel(&ann, &text(&ann_s, "url")).await;
    busy.send(execute("import time; time.sleep(3600)", "busy"))
        .await
        .expect("sending the busy cell");
    let bob_s = cx.start(&bob, &py, true).await;
    assert_eq!(bob_s["state"], "ready", "{bob_s}");
    let live = [ann_s.clone(), bob_s.clone()];
    first.kill();
    let second = SiteProcess::spawn(&db, &images.store, Some(CULL_AFTER_SECS));
    let cx = Ctx {
        base: second.base.clone(),
        ..cx
    };
    the_restarted_site_adopts_every_session_once(&cx, &second, &live, &[&ann, &bob]).await;
    idle_sessions_are_culled_busy_ones_not(&cx, (&bob, &bob_s), (&ann, &ann_s)).await;
    stop_removes_what_ran_the_session(&cx, &ann, &ann_s).await;
    no_session_file_outlives_its_sessions(&cx, &second.site_id);
}

/// Removes what the site left on the engine, however the suite ends.
struct Cleanup(Fixture, String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.cleanup(&self.1);
    }
}

/// What the site's session environment puts in sessions (see [`set_session_files`]).
pub struct SessionFiles {
    pub ca: String,
}

/// A test CA certificate (PEM).
fn ca_certificate() -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "nbrt conformance CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.self_signed(&key).expect("self-signed").pem()
}

/// The site's session environment: a variable, a file, a secret file, a CA bundle and a
/// conda channel.
pub async fn set_session_files(cx: &Ctx) -> SessionFiles {
    let ca = ca_certificate();
    let a = cx
        .call(
            "PUT",
            "/api/site/session-env",
            &cx.admin,
            Some(json!({
                "env": [{"name": "NBRT_CONFORMANCE", "value": "from the site"}],
                "files": [
                    {"path": "/etc/nbrt-test/site.conf", "content": "site file\n"},
                    {"path": "/etc/nbrt-test/secret.conf", "content": "s3cr3t\n",
                     "mode": "0640", "secret": true},
                ],
                "caBundle": ca,
                "condaChannels": ["https://conda.example/main"],
            })),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    SessionFiles { ca }
}

/// Start → ready, and the proxy reaches the notebook server.
pub async fn start_is_ready_through_the_proxy(cx: &Ctx, token: &str, runtime: &str) -> Value {
    let s = cx.start(token, runtime, true).await;
    assert_eq!(s["state"], "ready", "{s}");
    let api = cx
        .call("GET", &format!("{}api", text(&s, "url")), token, None)
        .await;
    assert_eq!(api.status, 200, "{}", api.text);
    assert!(api.body["version"].is_string(), "{}", api.text);
    s
}

/// What a running session uses now, as the engine measures it: memory in use above zero and
/// within the runtime's limit, which is the engine's; CPU in cores. Another user's session
/// is not theirs to see.
pub async fn usage_is_measured_within_the_limit(
    cx: &Ctx,
    token: &str,
    other: &str,
    s: &Value,
    memory: i64,
) {
    let path = format!("/api/sessions/{}/usage", text(s, "id"));
    let a = cx.call("GET", &path, token, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let u = &a.body["usage"];
    assert_eq!(u["available"], true, "{u}");
    let used = u["memory"].as_i64().expect("memory in bytes");
    assert!(used > 0, "{u}");
    assert!(used <= memory, "{u}");
    assert_eq!(
        u["memoryLimit"], memory,
        "the engine's limit is the runtime's: {u}"
    );
    let cpu = u["cpu"].as_f64().expect("CPU in cores");
    assert!(cpu >= 0.0, "{u}");
    assert_eq!(u["cpuLimit"], 1.0, "{u}");
    eprintln!("{:?}: usage of a ready session: {u}", cx.fx);
    // Again: measured against the last reading.
    let again = cx.call("GET", &path, token, None).await;
    assert_eq!(again.body["usage"]["available"], true, "{}", again.text);
    assert_eq!(cx.call("GET", &path, other, None).await.status, 404);
    assert_eq!(cx.call("GET", &path, &cx.admin, None).await.status, 200);
}

/// JupyterLab's page config names the site's `/hub/` (its File menu then has "Hub Control
/// Panel" and "Log Out"), and the site answers there: the control panel is the site's
/// sessions page, Log Out (the notebook server's `logout`) the site's logout.
pub async fn jupyterlab_links_back_to_the_site(cx: &Ctx, token: &str, s: &Value) {
    let lab = cx
        .call("GET", &format!("{}lab", text(s, "url")), token, None)
        .await;
    assert_eq!(lab.status, 200, "{}", lab.text);
    let marker = "id=\"jupyter-config-data\" type=\"application/json\">";
    let start = lab.text.find(marker).expect("JupyterLab's page config") + marker.len();
    let end = start + lab.text[start..].find("</script>").expect("its end");
    let config: Value = serde_json::from_str(&lab.text[start..end]).expect("page config JSON");
    assert_eq!(config["hubPrefix"], "/hub/", "{config}");
    assert_eq!(config["hubHost"], "", "{config}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    for (path, to) in [
        ("/hub/home".to_string(), "/#sessions"),
        (format!("{}logout", text(s, "url")), "/hub/logout"),
    ] {
        let a = http
            .get(format!("{}{path}", cx.base))
            .send()
            .await
            .expect("request");
        assert_eq!(a.status(), 302, "{path}");
        let location = a.headers().get("location").and_then(|v| v.to_str().ok());
        assert_eq!(location, Some(to), "{path}");
    }
}

/// A kernel runs code (Jupyter's REST and websocket API, through the proxy).
pub async fn a_kernel_runs_code(ws: &mut Ws) {
    assert_eq!(run_cell(ws, "print(6 * 7)", "code").await, "42\n");
    // /dev/shm has the runtime's size.
    let shm = run_cell(
        ws,
        "import os; s = os.statvfs('/dev/shm'); print(s.f_blocks * s.f_frsize)",
        "shm",
    )
    .await;
    assert_eq!(shm.trim(), (96 * MIB).to_string());
}

/// The site's variables and files are in the session: a file, a secret file the user can
/// read, the conda channels, the image's CA bundle with the site's CA added.
pub async fn session_files_are_in_the_session(ws: &mut Ws, files: &SessionFiles) {
    let code = r#"
import os
def read(p):
    with open(p) as f:
        return f.read()
b = read('/etc/ssl/certs/ca-certificates.crt')
print(os.environ['NBRT_CONFORMANCE'])
print(read('/etc/nbrt-test/site.conf'), end='')
print(read('/etc/nbrt-test/secret.conf'), end='')
print(read(os.environ['CONDARC']), end='')
print(b.count('BEGIN CERTIFICATE') > 10)
print(os.environ['SSL_CERT_FILE'])
"#;
    let out = run_cell(ws, code, "files").await;
    assert_eq!(
        out,
        "from the site\nsite file\ns3cr3t\nchannels:\n  - https://conda.example/main\nTrue\n\
         /etc/ssl/certs/ca-certificates.crt\n"
    );
    let bundle = run_cell(
        ws,
        "print(open('/etc/ssl/certs/ca-certificates.crt').read())",
        "bundle",
    )
    .await;
    assert!(
        bundle.contains(files.ca.trim()),
        "the site's CA is in the bundle"
    );
}

/// Starting again returns the running session.
pub async fn a_second_start_is_the_same_session(cx: &Ctx, token: &str, runtime: &str, s: &Value) {
    let again = cx.start(token, runtime, true).await;
    assert_eq!(again["id"], s["id"], "a second start is the same session");
    assert_eq!(again["containerId"], s["containerId"]);
}

/// A second user's session lands on another node where there is one (the swarm spreads
/// tasks); on one engine both run there.
pub async fn two_users_sessions_on_different_nodes(
    cx: &Ctx,
    token: &str,
    runtime: &str,
    other: &Value,
) -> Value {
    let s = cx.start(token, runtime, true).await;
    assert_eq!(s["state"], "ready", "{s}");
    let here = cx.fx.node_of(&text(&s, "containerId"));
    let there = cx.fx.node_of(&text(other, "containerId"));
    if cx.fx.nodes() == 1 {
        eprintln!(
            "{:?} has one node: both users' sessions run on {here}",
            cx.fx
        );
        assert_eq!(here, there);
    } else {
        assert!(!here.is_empty() && !there.is_empty(), "{here:?} {there:?}");
        assert_ne!(here, there, "two users' sessions on one node");
    }
    s
}

/// A file written in the home is there after the session is stopped and started again,
/// on the node that holds the home.
pub async fn home_kept_across_a_restart_on_its_node(
    cx: &Ctx,
    token: &str,
    runtime: &str,
    s: Value,
    mut ws: Ws,
) -> Value {
    let wrote = run_cell(
        &mut ws,
        "open('/home/jovyan/kept.txt', 'w').write('kept'); print('ok')",
        "home",
    )
    .await;
    assert_eq!(wrote, "ok\n");
    drop(ws);
    let node = cx.fx.node_of(&text(&s, "containerId"));
    stop_removes_what_ran_the_session(cx, token, &s).await;
    let again = start_is_ready_through_the_proxy(cx, token, runtime).await;
    assert_ne!(again["id"], s["id"], "a new session after a stop");
    assert_eq!(cx.fx.node_of(&text(&again, "containerId")), node);
    let mut ws = cx.kernel(token, &text(&again, "url")).await;
    let read = run_cell(&mut ws, "print(open('/home/jovyan/kept.txt').read())", "r").await;
    assert_eq!(read, "kept\n", "the home was kept");
    again
}

/// Stop: the session is `stopped` and what ran it is gone.
pub async fn stop_removes_what_ran_the_session(cx: &Ctx, token: &str, s: &Value) {
    let id = text(s, "id");
    let a = cx
        .call("DELETE", &format!("/api/sessions/{id}"), token, None)
        .await;
    assert_eq!(a.body["session"]["state"], "stopped", "{}", a.text);
    let handle = text(s, "containerId");
    assert!(!cx.fx.has(&handle), "{handle} outlived its session");
}

/// A process past `maxMemory`: the session is `oom-killed`, saying so.
pub async fn out_of_memory_is_oom_killed(cx: &Ctx, token: &str, s: &Value) {
    let mut ws = cx.kernel(token, &text(s, "url")).await;
    ws.send(execute(
        "x = b'x' * (1024 * 1024 * 1024)\nprint(len(x))",
        "oom",
    ))
    .await
    .expect("sending the cell");
    let ended = cx.wait_leaves(&text(s, "id"), token, &["ready"]).await;
    assert_eq!(ended["state"], "oom-killed", "{ended}");
    assert_eq!(ended["oomKilled"], true, "{ended}");
    assert!(text(&ended, "message").contains("out of memory"), "{ended}");
}

/// A crashing image: `failed`, with its exit code, within the deadline.
pub async fn a_crashing_image_fails_with_its_reason(cx: &Ctx, token: &str, runtime: &str) {
    let t0 = Instant::now();
    let s = cx.start(token, runtime, false).await;
    let ended = cx
        .wait_leaves(&text(&s, "id"), token, &["starting", "ready"])
        .await;
    let took = t0.elapsed();
    assert_eq!(ended["state"], "failed", "{ended}");
    assert!(
        text(&ended, "message").contains("exited with code 3"),
        "{ended}"
    );
    // The container's last output is in the message (the UI shows it).
    assert!(
        text(&ended, "message").contains("; last output:\ncrasher: no notebook server today"),
        "{ended}"
    );
    assert!(
        took < CRASH_DEADLINE,
        "a crashing image took {took:?} to fail (deadline {CRASH_DEADLINE:?})"
    );
}

/// The restarted site adopted each live session once: its report names each once, the
/// engine runs exactly those, they are ready again where they were, and a start returns them.
pub async fn the_restarted_site_adopts_every_session_once(
    cx: &Ctx,
    site: &SiteProcess,
    live: &[Value],
    tokens: &[&str],
) {
    let mut adopted: Vec<String> = serde_json::from_value(site.report["adopted"].clone())
        .expect("adopted sessions in the report");
    adopted.sort();
    let mut want: Vec<String> = live.iter().map(|s| text(s, "id")).collect();
    want.sort();
    assert_eq!(adopted, want, "{}", site.report);
    let mut handles: Vec<String> = live.iter().map(|s| text(s, "containerId")).collect();
    handles.sort();
    let owned = cx.fx.owned(&site.site_id);
    assert_eq!(owned.len(), handles.len(), "{owned:?} {handles:?}");
    for (o, h) in owned.iter().zip(&handles) {
        assert!(h.starts_with(o.as_str()), "{owned:?} {handles:?}");
    }
    for (s, token) in live.iter().zip(tokens) {
        let id = text(s, "id");
        let now = cx.session(&id, token).await;
        assert!(
            now["state"] == "starting" || now["state"] == "ready",
            "{now}"
        );
        assert_eq!(now["containerId"], s["containerId"]);
    }
}

/// The restarted site culls: the idle session goes, the busy one stays (and the proxy
/// still reaches it, and a start returns it).
pub async fn idle_sessions_are_culled_busy_ones_not(
    cx: &Ctx,
    idle: (&str, &Value),
    busy: (&str, &Value),
) {
    let (token, s) = idle;
    let ended = cx
        .wait_leaves(&text(s, "id"), token, &["starting", "ready"])
        .await;
    assert_eq!(ended["state"], "culled", "{ended}");
    assert!(
        text(&ended, "message").contains("no kernel activity"),
        "{ended}"
    );
    let handle = text(s, "containerId");
    // The state is recorded first, then what ran it removed: give the removal its moment.
    for _ in 0..100 {
        if !cx.fx.has(&handle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !cx.fx.has(&handle),
        "a culled session's {handle} is removed"
    );

    let (token, s) = busy;
    let now = cx.wait_leaves(&text(s, "id"), token, &["starting"]).await;
    assert_eq!(now["state"], "ready", "a busy session is not culled: {now}");
    let api = cx
        .call("GET", &format!("{}api", text(s, "url")), token, None)
        .await;
    assert_eq!(api.status, 200, "{}", api.text);
    let again = cx.start(token, &text(s, "runtimeId"), true).await;
    assert_eq!(again["id"], s["id"]);
}

/// Every session stopped: the site's session files are gone from the engine too.
pub fn no_session_file_outlives_its_sessions(cx: &Ctx, site_id: &str) {
    let left = cx.fx.session_file_objects(site_id);
    assert!(
        left.is_empty(),
        "session files outlived their sessions: {left:?}"
    );
}
