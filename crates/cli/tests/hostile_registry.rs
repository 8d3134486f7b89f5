//! `nbrt pull` against a hostile registry (testkit's [`HostileRegistry`] on loopback) that
//! answers one request with an endless body: the pull must fail, say which limit it hit, and
//! keep its peak memory (the child's maximum resident set, measured by GNU time through
//! `wait4`) under a generous ceiling.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nbrt_testkit::{require, Endless, HostileRegistry};

/// Peak RSS a failing pull may reach. The endless replies are 512 MiB each; an unbounded
/// read of one takes a gigabyte or more.
const CEILING_KIB: u64 = 256 << 10;

struct Pulled {
    success: bool,
    stderr: String,
    max_rss_kib: u64,
}

fn pull(dir: &Path, registry: &HostileRegistry) -> Pulled {
    let reference = format!("{}/hostile/image:latest", registry.host());
    nbrt_measured(dir, &["pull", &reference])
}

/// Run `nbrt ARGS` with the store in `dir`, measuring its peak RSS.
fn nbrt_measured(dir: &Path, args: &[&str]) -> Pulled {
    let home = dir.join("store");
    let docker_config = dir.join("docker");
    std::fs::create_dir_all(&docker_config).expect("creating an empty Docker config directory");
    let rss_file = dir.join("maxrss");
    let stderr_file = dir.join("stderr");
    let reference = args.join(" ");
    let mut child = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_nbrt"))
        .args(args)
        .env("NBRT_HOME", &home)
        .env("DOCKER_CONFIG", &docker_config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_file).expect("creating the stderr file"))
        .spawn()
        .expect("running /usr/bin/time nbrt");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for nbrt") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nbrt {reference} did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let rss = std::fs::read_to_string(&rss_file).expect("reading GNU time's output");
    // GNU time writes "Command exited with non-zero status N" before the figure.
    let max_rss_kib = rss
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no maximum RSS in GNU time's output: {rss:?}"));
    Pulled {
        success: status.success(),
        stderr: std::fs::read_to_string(&stderr_file).unwrap_or_default(),
        max_rss_kib,
    }
}

fn check(mode: Endless, names_the_limit: &[&str]) {
    if !require("/usr/bin/time", &["-f", "%M", "true"], "time") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = HostileRegistry::start(mode);
    let p = pull(tmp.path(), &registry);
    eprintln!(
        "{mode:?}: peak RSS {} KiB, {} bytes of endless body sent; stderr: {}",
        p.max_rss_kib,
        registry.endless_bytes_sent(),
        p.stderr.trim()
    );
    assert!(!p.success, "{mode:?}: the pull succeeded: {}", p.stderr);
    assert!(
        p.max_rss_kib < CEILING_KIB,
        "{mode:?}: peak RSS {} KiB is over the ceiling of {CEILING_KIB} KiB; stderr: {}",
        p.max_rss_kib,
        p.stderr
    );
    for part in names_the_limit {
        assert!(
            p.stderr.contains(part),
            "{mode:?}: {part:?} missing from the error: {}",
            p.stderr
        );
    }
    assert!(
        !p.stderr.contains(&"a".repeat(600)),
        "{mode:?}: the error repeats more than 500 bytes of what the registry sent"
    );
}

#[test]
fn endless_manifest() {
    check(Endless::Manifest, &["over the limit of 8388608 bytes"]);
}

#[test]
fn endless_error_body() {
    check(Endless::ErrorBody, &["HTTP 404", "65536 bytes"]);
}

#[test]
fn endless_token_reply() {
    check(
        Endless::Token,
        &["token", "over the limit of 1048576 bytes"],
    );
}

#[test]
fn endless_config() {
    check(Endless::Config, &["size mismatch for blob"]);
}

#[test]
fn endless_blob_error_body() {
    check(Endless::BlobError, &["HTTP 500", "65536 bytes"]);
}

/// Not hostile, only strict: the token a manifest was fetched with is refused afterwards
/// (as when it expires during a long pull). The pull gets a new one and succeeds.
#[test]
fn an_expired_token_is_renewed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let registry = HostileRegistry::expiring_tokens();
    let reference = format!("{}/hostile/image:latest", registry.host());
    let docker_config = tmp.path().join("docker");
    std::fs::create_dir_all(&docker_config).expect("creating an empty Docker config directory");
    let out = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .args(["pull", &reference])
        .env("NBRT_HOME", tmp.path().join("store"))
        .env("DOCKER_CONFIG", &docker_config)
        .output()
        .expect("running nbrt pull");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(registry.tokens_granted(), 2);
}

/// Push logs in the same way: an endless token reply stops at the same limit.
#[test]
fn push_with_an_endless_token_reply() {
    if !require("/usr/bin/time", &["-f", "%M", "true"], "time") {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&rootfs).expect("creating a tar"));
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, "etc/marker", &b"x\n"[..])
        .expect("writing the tar");
    b.finish().expect("finishing the tar");
    let out = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .args([
            "import",
            rootfs.to_str().expect("UTF-8 path"),
            "-t",
            "tiny:a",
        ])
        .env("NBRT_HOME", tmp.path().join("store"))
        .output()
        .expect("running nbrt import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registry = HostileRegistry::start(Endless::Token);
    let target = format!("{}/hostile/image:latest", registry.host());
    let p = nbrt_measured(tmp.path(), &["push", "tiny:a", &target]);
    eprintln!(
        "push, endless token: peak RSS {} KiB; stderr: {}",
        p.max_rss_kib,
        p.stderr.trim()
    );
    assert!(!p.success, "the push succeeded: {}", p.stderr);
    assert!(
        p.max_rss_kib < CEILING_KIB,
        "peak RSS {} KiB",
        p.max_rss_kib
    );
    assert!(
        p.stderr.contains("over the limit of 1048576 bytes"),
        "{}",
        p.stderr
    );
}
