//! The README's first command, run as written (`bash -c "<that line>"` from the repository
//! root) under a time limit: it ends with the site serving the stock runtimes as factory
//! runtimes, its URL and admin token printed; a session of `nbrt jupyter` starts through
//! it and answers through the site's proxy; Ctrl-C stops the site and the session.
//!
//! Two things are given to it so that it fits CI's time: this test's own nbrt (`NBRT_BIN`,
//! instead of the release build the demo makes) and the stock fixture store
//! (`NBRT_DEMO_STORE`, where the stacks are built already, so the demo's build finds every
//! step in the cache). The command and every step of the demo are the README's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long the command may take to have the site serving (a cold machine builds every
/// stock stack; here they come from the cache).
const LIMIT: Duration = Duration::from_secs(40 * 60);

/// The first command of the README's first `sh` block, its comment left out.
fn readme_first_command(repo: &Path) -> String {
    let readme = std::fs::read_to_string(repo.join("README.md")).expect("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .expect("a ```sh block in README.md");
    let line = block.lines().next().expect("a first command");
    line.split(" #").next().unwrap_or(line).trim().to_string()
}

/// curl with the admin token; the answer as JSON.
fn api(addr: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> Value {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "600", "-X", method])
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!("http://{addr}{path}"));
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data", b]);
    }
    let out = c.output().expect("curl (scripts/setup installs it)");
    assert!(out.status.success(), "{method} {path}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn the_readme_first_command_ends_with_the_site_serving_the_factory_runtimes() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    // The stock stacks, built once for every test that needs them (scipy and its parents).
    if nbrt_testkit::stock::store().is_none() {
        return;
    }
    let repo = nbrt_testkit::repo_dir();
    let command = readme_first_command(&repo);
    assert_eq!(command, "scripts/setup && scripts/demo");
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", nbrt_testkit::free_port());
    let mut child = Command::new("setsid")
        .args(["bash", "-c", &command])
        .current_dir(&repo)
        .env("NBRT_BIN", env!("CARGO_BIN_EXE_nbrt"))
        .env("NBRT_DEMO_DIR", dir.path())
        .env("NBRT_DEMO_STORE", nbrt_testkit::stock::store_dir())
        .env("NBRT_DEMO_LISTEN", &listen)
        .env("NBRT_INIT_BIN", nbrt_testkit::static_nbrt_init())
        .env("NBRT_CONDA_BIN", nbrt_testkit::static_nbrt_conda())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the README's first command");
    // setsid runs bash in its own process group; the demo execs nbrt serve in that process.
    let pid = child.id();
    let group = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    let stop_all = || {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    };
    let (tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push(line);
        }
        all.join("\n")
    });

    // Until the site says it serves, within the limit.
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut token = None;
    let mut factory = None;
    while factory.is_none() {
        let left = LIMIT.saturating_sub(started.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(t) = line.trim().strip_prefix("nbrt_") {
                    token = Some(format!("nbrt_{t}"));
                }
                if line.starts_with("factory runtimes:") {
                    factory = Some(line.clone());
                }
                seen.push(line);
            }
            Err(e) => {
                stop_all();
                let _ = child.wait();
                panic!(
                    "the site did not serve within {LIMIT:?} ({e}):\n{}\n{}",
                    seen.join("\n"),
                    errors.join().unwrap_or_default()
                );
            }
        }
    }
    let took = started.elapsed();
    let out = seen.join("\n");
    assert!(
        out.contains(&format!("nbrt serve: http://{listen}/")),
        "{out}"
    );
    assert!(out.contains("open http://"), "{out}");
    let token = token.unwrap_or_else(|| panic!("no admin token printed:\n{out}"));
    assert!(
        factory
            .as_deref()
            .is_some_and(|f| f.contains("nbrt jupyter") && f.contains("nbrt scipy")),
        "{out}"
    );
    println!("the site served {took:?} after the command started");

    // The factory runtimes are listed, and a session starts and answers through the proxy.
    let runtimes = api(&listen, &token, "GET", "/api/runtimes", None);
    let list = runtimes["runtimes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{runtimes}"));
    let jupyter = list
        .iter()
        .find(|r| r["name"] == "nbrt jupyter")
        .unwrap_or_else(|| panic!("{runtimes}"));
    assert!(list.iter().any(|r| r["name"] == "nbrt scipy"), "{runtimes}");
    let body = serde_json::json!({"runtimeId": jupyter["id"], "wait": true}).to_string();
    let session = api(&listen, &token, "POST", "/api/sessions", Some(&body));
    let session = &session["session"];
    assert_eq!(session["state"], "ready", "{session}");
    let url = session["url"]
        .as_str()
        .unwrap_or_else(|| panic!("{session}"));
    let jupyter_api = api(&listen, &token, "GET", &format!("{url}api"), None);
    assert!(jupyter_api["version"].is_string(), "{jupyter_api}");
    let container = session["containerName"].as_str().unwrap().to_string();

    // Ctrl-C: the site stops its session and exits.
    rustix::process::kill_process(group, rustix::process::Signal::INT).expect("SIGINT");
    let status = child.wait().expect("waiting for the site");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{status:?}\n{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l == "nbrt serve: stopped 1 session(s)"),
        "{}",
        rest.join("\n")
    );
    let ps = Command::new("docker")
        .args(["ps", "-a", "-q", "--filter", &format!("name=^{container}$")])
        .output()
        .expect("docker ps");
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "{container} is still there"
    );
}
