//! Issue 17, item 10: the OpenAPI document against the handlers' real rules. schemathesis
//! (from PyPI; `scripts/setup` installs it) runs every check it has against a site on
//! loopback, bounded in examples and time, with a fixed seed so that a CI run repeats the
//! last one. `tests/schemathesis.toml` says where a schema cannot hold a rule (state and
//! rules across fields); everything else is held to the schema both ways.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// schemathesis: `NBRT_SCHEMATHESIS`, else the one `scripts/setup` installs.
fn schemathesis() -> Option<String> {
    let program = std::env::var("NBRT_SCHEMATHESIS")
        .unwrap_or_else(|_| "/opt/nbrt-tools/bin/schemathesis".to_string());
    if Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(program);
    }
    if nbrt_testkit::skipping_allowed() {
        eprintln!("skipping: schemathesis is not installed and NBRT_SKIP_DOCKER=1");
        return None;
    }
    panic!(
        "this test needs schemathesis: run scripts/setup (it installs it from PyPI into \
         /opt/nbrt-tools), or set NBRT_SCHEMATHESIS to one, or NBRT_SKIP_DOCKER=1 to skip"
    );
}

/// Run `program args`, killed after 10 minutes; its status and output.
fn run_bounded(program: &str, args: &[String]) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting schemathesis");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for schemathesis") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("schemathesis ran over 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_disagreement_with_the_openapi_document() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let Some(program) = schemathesis() else {
        return;
    };
    let t = start_site(|_| {}).await;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    let schema = format!("{}/api/openapi.json", t.base);
    let auth = format!("Authorization: Bearer {}", t.admin);
    let started = Instant::now();
    let args: Vec<String> = [
        "--no-color",
        "--config-file",
        config,
        "run",
        &schema,
        "-H",
        &auth,
        // Logout revokes the token it is called with: the rest would then only see 401s.
        "--exclude-path",
        "/api/logout",
        "--checks",
        "all",
        "--max-examples",
        "15",
        "--max-failures",
        "50",
        "--request-timeout",
        "20",
        "--seed",
        "119256849857340733656838168148362845722",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The site runs on this runtime's workers; schemathesis waits on a blocking thread.
    let (status, out, err) = tokio::task::spawn_blocking(move || run_bounded(&program, &args))
        .await
        .expect("the schemathesis thread");
    let summary: Vec<&str> = out.lines().skip_while(|l| !l.contains("SUMMARY")).collect();
    eprintln!(
        "schemathesis ran {:.0?}:\n{}",
        started.elapsed(),
        summary.join("\n")
    );
    assert!(
        status.success(),
        "schemathesis found failures:\n{out}\n{err}"
    );
    assert!(out.contains("passed"), "no test case ran?\n{out}");
}
