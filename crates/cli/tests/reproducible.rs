//! Reproducible by default: the same runtime files give the same image IDs with nothing set
//! (no `SOURCE_DATE_EPOCH`), from two checkouts at two paths into two stores, on a "second
//! machine" with a clock three days ahead (faketime) and a hostname of its own (a UTS
//! namespace); `--check-reproducible` names the file that makes two builds differ; and a
//! lock pinning a Debian version the mirror no longer has fails (exit status 3, with or
//! without `--locked`) with the package's name and the refresh command, leaving the store and
//! the lock as they were, and `--update-lock` refreshes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
use common::ok;

fn can_build() -> bool {
    nbrt_testkit::require("runc", &["--version"], "runc")
        && nbrt_testkit::require("faketime", &["-f", "+3d", "true"], "faketime")
        && nbrt_testkit::require("unshare", &["--version"], "util-linux")
        && rustix::process::geteuid().is_root()
}

/// A stack of two runtimes on the minbase fixture: `tiny` (files and env only) and `runner`
/// (a run step writing files, a symlink and a directory), written at `dir`.
fn write_stack(dir: &Path, rootfs: &Path) {
    std::fs::create_dir_all(dir.join("tiny")).unwrap();
    std::fs::create_dir_all(dir.join("runner")).unwrap();
    std::fs::write(
        dir.join("tiny/runtime.toml"),
        format!(
            r#"name = "tiny"
from = "{}"

[[files]]
source = "hello.txt"
destination = "/etc/nbrt-hello/hello.txt"
mode = "0644"

[env]
GREETING = "hello"
"#,
            rootfs.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("tiny/hello.txt"), "hello\n").unwrap();
    std::fs::write(
        dir.join("runner/runtime.toml"),
        r#"name = "runner"
from = "tiny"

[[run]]
network = false
command = """
set -e
mkdir -p /opt/app/data
printf 'made by a run step\n' > /opt/app/data/note
ln -s data/note /opt/app/note
cp -a /etc/nbrt-hello /opt/app/hello
chmod 0750 /opt/app/data
"""
"#,
    )
    .unwrap();
}

/// `nbrt --store STORE build STACK --json`, optionally on the "second machine": another
/// hostname (unshare -u) and a clock three days ahead (faketime).
fn build(store: &Path, stack: &Path, second_machine: bool) -> Value {
    let mut cmd = if second_machine {
        common::nbrt_on_second_machine()
    } else {
        Command::new(env!("CARGO_BIN_EXE_nbrt"))
    };
    cmd.arg("--store")
        .arg(store)
        .args(["build", "--json"])
        .arg(stack)
        .env_remove("SOURCE_DATE_EPOCH");
    serde_json::from_str(&ok(cmd.output().unwrap(), "nbrt build")).unwrap()
}

fn ids(reports: &Value) -> Vec<(String, String)> {
    reports
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn created(store: &Path, image: &str) -> String {
    let out = common::nbrt(store, &["inspect", image, "--json"]);
    let v: Value = serde_json::from_str(&ok(out, "nbrt inspect")).unwrap();
    v["config"]["created"].as_str().unwrap().to_string()
}

#[test]
fn two_machines_two_checkouts_give_the_same_image_ids() {
    if !can_build() {
        return;
    }
    let Some(rootfs) = nbrt_testkit::minbase_rootfs() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let checkout_a = tmp.path().join("a/stacks");
    let checkout_b = tmp.path().join("elsewhere/second/checkout/stacks");
    write_stack(&checkout_a, &rootfs);
    write_stack(&checkout_b, &rootfs);
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));

    let first = ids(&build(&store_a, &checkout_a, false));
    let second = ids(&build(&store_b, &checkout_b, true));
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        first, second,
        "two builds of the same runtime files differ (nbrt build --check-reproducible says where)"
    );

    // The creation time is the inputs' (the parent's: the newest file of the fixture's
    // root file system), the same on both machines, and not 1970.
    let (ca, cb) = (
        created(&store_a, "runner:latest"),
        created(&store_b, "runner:latest"),
    );
    assert_eq!(ca, cb);
    let base = created(&store_a, "nbrt-base/tiny:from-path");
    assert_eq!(
        ca, base,
        "runner's time is its parent's (no packages were added)"
    );
    assert!(!ca.starts_with("1970"), "created {ca}");
}

#[test]
fn check_reproducible_names_the_file_a_run_step_stamps() {
    if !can_build() {
        return;
    }
    let Some(rootfs) = nbrt_testkit::minbase_rootfs() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    std::fs::create_dir_all(stack.join("stamped")).unwrap();
    std::fs::write(
        stack.join("stamped/runtime.toml"),
        format!(
            r#"name = "stamped"
from = "{}"

[[run]]
network = false
command = "mkdir -p /etc/stamps && echo kept > /etc/stamps/a-kept && date +%s.%N > /etc/stamps/built-at"
"#,
            rootfs.display()
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let out = common::nbrt(
        &store,
        &["build", "--check-reproducible", stack.to_str().unwrap()],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("first different file: /etc/stamps/built-at: content"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("run mkdir -p /etc/stamps"), "{stdout}");
    assert!(stderr.contains("the two builds differ"), "{stderr}");
    // The user's store got nothing, and the stack no lock.
    let images = ok(common::nbrt(&store, &["images", "--json"]), "nbrt images");
    assert_eq!(
        serde_json::from_str::<Value>(&images).unwrap(),
        Value::Array(vec![])
    );
    assert!(!stack.join("stamped/runtime.lock").exists());
}

/// Every file under `dir` but the store's temporary directory and its (empty) lock files,
/// with its size.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel.starts_with("tmp") || rel.to_string_lossy().ends_with(".lock") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((rel, meta.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_lock_pinning_a_version_the_mirror_lost_names_it_and_the_refresh_mends_it() {
    if !nbrt_testkit::require("mmdebstrap", &["--version"], "mmdebstrap") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack/pinned");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("runtime.toml");
    std::fs::write(
        &file,
        r#"name = "pinned"

[bootstrap]
suite = "bookworm"
variant = "minbase"
packages = ["tree"]
"#,
    )
    .unwrap();
    let rt = nbrt_build::runtime_file::RuntimeFile::load(&file, &dir).unwrap();
    let inputs = nbrt_build::lock::inputs_digest(&rt).unwrap();
    std::fs::write(
        dir.join("runtime.lock"),
        format!(
            "version = 1\nruntime = \"pinned\"\ninputs = \"{inputs}\"\n\n\
             [[bootstrap]]\nname = \"tree\"\nversion = \"0.0.1-nbrt-long-gone\"\narch = \"amd64\"\n"
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    ok(common::nbrt(&store, &["images"]), "nbrt images");
    let before = listing(&store);
    let stack = tmp.path().join("stack");
    let lock_before = std::fs::read_to_string(dir.join("runtime.lock")).unwrap();
    // A plain build follows the lock as `--locked` does: neither builds another version.
    for flags in [&[][..], &["--locked"][..]] {
        let mut args = vec!["build"];
        args.extend_from_slice(flags);
        args.push(stack.to_str().unwrap());
        let out = common::nbrt(&store, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(3),
            "nbrt {args:?}: exit 3: {stderr}"
        );
        assert!(
            stderr.contains("tree 0.0.1-nbrt-long-gone")
                && stderr.contains("no longer has")
                && stderr.contains("--update-lock"),
            "{stderr}"
        );
        assert_eq!(
            listing(&store),
            before,
            "the failed build changed the store"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("runtime.lock")).unwrap(),
            lock_before,
            "a failed build rewrote the lock"
        );
    }
    // The refresh the error names resolves again and pins the version the mirror has.
    let out = common::nbrt(&store, &["build", "--update-lock", stack.to_str().unwrap()]);
    ok(out, "nbrt build --update-lock");
    let lock = std::fs::read_to_string(dir.join("runtime.lock")).unwrap();
    let tree = lock
        .split("[[bootstrap]]")
        .find(|section| section.contains("name = \"tree\""))
        .unwrap_or_else(|| panic!("no tree in the refreshed lock:\n{lock}"));
    assert!(
        !tree.contains("nbrt-long-gone") && tree.contains("version = "),
        "{tree}"
    );
    // And the refreshed lock is followed: a plain build runs nothing again.
    let out = common::nbrt(&store, &["build", "--json", stack.to_str().unwrap()]);
    let reports: Value = serde_json::from_str(&ok(out, "nbrt build (following the lock)")).unwrap();
    assert!(
        reports[0]["steps"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["cached"] == true)),
        "{reports}"
    );
}
