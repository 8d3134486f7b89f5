//! A build killed outright (SIGKILL) in the middle of a run step leaves its runc container
//! running and its overlay mounted; the next build cleans both up.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{nbrt, ok};

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

fn containers_of(pid: u32) -> Vec<String> {
    let out = Command::new("runc").args(["list", "-q"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|id| id.starts_with(&format!("nbrt-{pid}-")))
        .map(str::to_string)
        .collect()
}

fn step_dirs(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nbrt-step-"))
        .collect()
}

#[test]
fn the_next_build_cleans_up_after_a_killed_one() {
    if !nbrt_testkit::require("runc", &["--version"], "runc") {
        return;
    }
    if !rustix::process::geteuid().is_root() {
        assert!(
            nbrt_testkit::skipping_allowed(),
            "building needs root (runc, overlayfs); run the tests as root"
        );
        return;
    }
    let Some(rootfs) = nbrt_testkit::minbase_rootfs() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let write = |name: &str, body: &str| {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("runtime.toml"),
            format!("name = \"{name}\"\nfrom = \"{}\"\n{body}", rootfs.display()),
        )
        .unwrap();
        dir.join("runtime.toml")
    };
    let sleeper = write(
        "sleeper",
        "[[run]]\nnetwork = false\ncommand = \"sleep 300\"\n",
    );
    let quick = write("quick", "[env]\nQUICK = \"1\"\n");

    let mut child = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(&store)
        .arg("build")
        .arg(&sleeper)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let store_tmp = store.join("tmp");
    let started = Instant::now();
    while mounts_under(&store_tmp).is_empty() || containers_of(pid).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the run step never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What the killed build left: its container, its overlay, its step directory.
    assert!(!containers_of(pid).is_empty());
    assert!(!mounts_under(&store_tmp).is_empty());
    assert!(!step_dirs(&store_tmp).is_empty());

    let out = ok(
        nbrt(&store, &["build", quick.to_str().unwrap()]),
        "the next build",
    );
    assert!(out.contains("quick"), "{out}");
    assert_eq!(containers_of(pid), Vec::<String>::new());
    assert_eq!(mounts_under(&store_tmp), Vec::<String>::new());
    assert_eq!(step_dirs(&store_tmp), Vec::<String>::new());
}
