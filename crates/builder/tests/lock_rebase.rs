//! runtime.lock and `--locked` builds, rebase onto a changed base, and two builds of one
//! stack into one store at once. Needs root, runc, uv and PyPI (and Docker for the rebase
//! test's last check), like the other end-to-end builder tests.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::{build, can_build, docker_run, write};
use nbrt_build::builder::{lock_only, BuildOptions, LockMode};
use nbrt_build::lock::RuntimeLock;
use nbrt_build::rebase::{rebase, Action, RebaseOptions};
use nbrt_build::stack::Stack;
use nbrt_oci::spec::annotation;
use nbrt_oci::{Progress, Store};

const SDE: &str = "1700000000";

/// A stack of two: `pybase` (the minbase root with the shape of a Python environment at
/// /opt/conda and a release file) and `app` on it (a pip step and a files step).
fn two_runtime_stack(dir: &Path, rootfs: &Path, release: &str) {
    write(
        &dir.join("pybase/runtime.toml"),
        &format!(
            r#"
name = "pybase"
from = "{}"
[[files]]
source = "conda"
destination = "/opt/conda"
[[files]]
source = "release"
destination = "/etc/base-release"
"#,
            rootfs.display()
        ),
    );
    write(
        &dir.join("pybase/conda/lib/python3.11/site-packages/.keep"),
        "",
    );
    write(&dir.join("pybase/release"), release);
    write(
        &dir.join("app/runtime.toml"),
        r#"
name = "app"
from = "pybase"
[pip]
packages = ["six", "pyflakes==3.2.0"]
[[files]]
source = "hello.txt"
destination = "/srv/hello.txt"
mode = "0644"
"#,
    );
    write(&dir.join("app/hello.txt"), "hello\n");
}

fn needs_uv() -> bool {
    nbrt_testkit::require(
        "uv",
        &["--version"],
        "uv (scripts/setup installs it from PyPI)",
    )
}

fn locked() -> BuildOptions {
    BuildOptions {
        lock: LockMode::Locked,
        ..Default::default()
    }
}

fn digest_of(store: &Store, reference: &str) -> String {
    store.resolve(reference).unwrap().image.digest().to_string()
}

#[test]
fn two_locked_builds_into_empty_stores_are_byte_identical() {
    let Some(rootfs) = can_build() else { return };
    if !needs_uv() {
        return;
    }
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    two_runtime_stack(&stack, &rootfs, "v1\n");

    // A normal build writes the locks.
    let a = Store::open(tmp.path().join("a")).unwrap();
    build(&a, &stack, &BuildOptions::default()).unwrap();
    let text = fs::read_to_string(stack.join("app/runtime.lock")).unwrap();
    let lock: RuntimeLock = toml::from_str(&text).unwrap();
    assert_eq!(lock.runtime, "app");
    let parent = lock.parent.as_ref().unwrap();
    assert_eq!(parent.from, "pybase");
    assert_eq!(parent.digest, digest_of(&a, "pybase:latest"));
    let names: Vec<&str> = lock.pip.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["pyflakes", "six"], "{text}");
    for w in &lock.pip {
        let sha = w.sha256.as_deref().unwrap();
        assert!(
            sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
            "{text}"
        );
        let url = w.url.as_deref().unwrap();
        assert!(
            url.starts_with("https://") && url.ends_with(".whl"),
            "{text}"
        );
    }
    assert_eq!(lock.pip[0].version, "3.2.0");
    let base_lock: RuntimeLock =
        toml::from_str(&fs::read_to_string(stack.join("pybase/runtime.lock")).unwrap()).unwrap();
    assert!(base_lock.pip.is_empty() && base_lock.apt.is_empty());
    assert!(base_lock.parent.unwrap().digest.starts_with("sha256:"));

    // `nbrt build --only app --lock-only` into another store writes the same lock without
    // building app (its parent is built); a runtime whose packages come from a step that
    // must run is refused.
    fs::remove_file(stack.join("app/runtime.lock")).unwrap();
    let d = Store::open(tmp.path().join("d")).unwrap();
    let mut log = Vec::new();
    let opts = BuildOptions::default();
    let path = lock_only(
        &d,
        &Stack::load(&stack, &d).unwrap(),
        "app",
        &opts,
        &Progress::hidden(),
        &mut log,
    )
    .unwrap();
    assert_eq!(path, stack.join("app/runtime.lock"));
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        text,
        "{}",
        String::from_utf8_lossy(&log)
    );
    assert!(d.resolve("pybase:latest").is_ok(), "the parent is built");
    assert!(d.resolve("app:latest").is_err(), "app is not");
    write(
        &stack.join("debs/runtime.toml"),
        "name = \"debs\"\nfrom = \"pybase\"\n[apt]\npackages = [\"tree\"]\n",
    );
    let err = lock_only(
        &d,
        &Stack::load(&stack, &d).unwrap(),
        "debs",
        &opts,
        &Progress::hidden(),
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("resolves only when it runs"), "{err}");
    assert!(!stack.join("debs/runtime.lock").exists());
    fs::remove_dir_all(stack.join("debs")).unwrap();

    // Two locked builds into two empty stores: the same bytes, and the same as the build the
    // lock came from (the lock --lock-only wrote).
    let b = Store::open(tmp.path().join("b")).unwrap();
    let c = Store::open(tmp.path().join("c")).unwrap();
    build(&b, &stack, &locked()).unwrap();
    build(&c, &stack, &locked()).unwrap();
    let (db, dc) = (digest_of(&b, "app:latest"), digest_of(&c, "app:latest"));
    assert_eq!(db, dc, "two builds from one lock");
    assert_eq!(
        fs::read(b.blob_path(&b.resolve("app:latest").unwrap().image.digest().clone())).unwrap(),
        fs::read(c.blob_path(&c.resolve("app:latest").unwrap().image.digest().clone())).unwrap(),
        "manifest bytes"
    );
    assert_eq!(
        db,
        digest_of(&a, "app:latest"),
        "locked = the build it locked"
    );
    assert_eq!(
        fs::read_to_string(stack.join("app/runtime.lock")).unwrap(),
        text,
        "a locked build leaves the lock alone"
    );

    // A wheel whose hash is not the locked one fails the step.
    let real_sha = lock.pip[1].sha256.clone().unwrap();
    fs::write(
        stack.join("app/runtime.lock"),
        text.replace(&real_sha, &"0".repeat(64)),
    )
    .unwrap();
    let err = build(&b, &stack, &locked()).unwrap_err().to_string();
    assert!(
        err.contains("six") && err.to_lowercase().contains("hash"),
        "{err}"
    );
    fs::write(stack.join("app/runtime.lock"), &text).unwrap();

    // A runtime file changed since the lock: stale.
    let toml_path = stack.join("app/runtime.toml");
    let original = fs::read_to_string(&toml_path).unwrap();
    fs::write(
        &toml_path,
        original.replace("pyflakes==3.2.0", "pyflakes==3.1.0"),
    )
    .unwrap();
    let err = build(&b, &stack, &locked()).unwrap_err().to_string();
    assert!(err.contains("stale") && err.contains("app"), "{err}");
    fs::write(&toml_path, &original).unwrap();

    // No lock at all.
    fs::remove_file(stack.join("pybase/runtime.lock")).unwrap();
    let err = build(&b, &stack, &locked()).unwrap_err().to_string();
    assert!(
        err.contains("pybase") && err.contains("runtime.lock") && err.contains("without --locked"),
        "{err}"
    );
}

/// What a failed rebase must not touch: names, references (cache, records) and blobs.
fn store_state(root: &Path) -> (Vec<u8>, BTreeSet<PathBuf>) {
    let mut files = BTreeSet::new();
    for sub in ["refs", "blobs"] {
        let mut stack = vec![root.join(sub)];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    files.insert(e.path());
                }
            }
        }
    }
    (fs::read(root.join("index.json")).unwrap(), files)
}

#[test]
fn rebase_moves_files_layers_and_rebuilds_pip() {
    let Some(rootfs) = can_build() else { return };
    if !needs_uv() {
        return;
    }
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    two_runtime_stack(&stack, &rootfs, "v1\n");
    let store = Store::open(tmp.path().join("store")).unwrap();
    build(&store, &stack, &BuildOptions::default()).unwrap();
    let before = store.resolve("app:latest").unwrap().image;
    let n = before.layers().len();

    // The base changes (a file only); only the base is rebuilt.
    let build_base = |release: &str| {
        write(&stack.join("pybase/release"), release);
        let s = nbrt_build::stack::Stack::load(&stack, &store).unwrap();
        nbrt_build::builder::build_stack(
            &store,
            &s,
            Some("pybase"),
            &BuildOptions::default(),
            &nbrt_oci::Progress::hidden(),
            &mut Vec::new(),
        )
        .unwrap();
        store.resolve("pybase:latest").unwrap().image
    };
    let base2 = build_base("v2\n");
    assert_eq!(digest_of(&store, "app:latest"), before.digest().to_string());

    // Onto something that is not a new version of the base: refused, nothing written.
    let state = store_state(store.root());
    let err = rebase(
        &store,
        "app:latest",
        "no-such/image:1",
        &RebaseOptions::default(),
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such/image:1"), "{err}");
    let err = rebase(
        &store,
        "app:latest",
        "nbrt-base/pybase:from-path",
        &RebaseOptions::default(),
        &mut Vec::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no Python environment at /opt/conda") && err.contains("pip"),
        "{err}"
    );
    assert_eq!(
        store_state(store.root()),
        state,
        "a refused rebase changed the store"
    );

    // By image name (the build recorded its runtime file): the new base has the same Python
    // packages, so the pip layer moves as well as the files layer; only the manifest and
    // config are new.
    let report = rebase(
        &store,
        "app:latest",
        "pybase:latest",
        &RebaseOptions::default(),
        &mut Vec::new(),
    )
    .unwrap();
    let actions: Vec<Action> = report.steps.iter().map(|s| s.action).collect();
    assert_eq!(actions, [Action::Moved, Action::Moved], "{report:?}");
    let after = store.resolve("app:latest").unwrap().image;
    assert_eq!(after.digest(), &report.digest);
    nbrt_oci::validate(&after, &store).unwrap();
    assert_eq!(&after.layers()[..base2.layers().len()], base2.layers());
    assert_eq!(
        after.layers()[base2.layers().len()..],
        before.layers()[n - 2..],
        "both own layers reused byte for byte"
    );
    assert_eq!(
        after.manifest.value().annotations[annotation::BASE_DIGEST],
        base2.digest().to_string()
    );

    // The base gets another Python package: what the pip step's solve saw changed, so it is
    // rebuilt; the files layer still moves.
    write(
        &stack.join("pybase/conda/lib/python3.11/site-packages/extra_pkg-1.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: extra-pkg\nVersion: 1.0\n",
    );
    write(
        &stack.join("pybase/conda/lib/python3.11/site-packages/extra_pkg-1.0.dist-info/RECORD"),
        "extra_pkg-1.0.dist-info/METADATA,,\nextra_pkg-1.0.dist-info/RECORD,,\n",
    );
    let base3 = build_base("v3\n");
    let mut log = Vec::new();
    let report = rebase(
        &store,
        stack.join("app/runtime.toml").to_str().unwrap(),
        "pybase:latest",
        &RebaseOptions::default(),
        &mut log,
    )
    .unwrap();
    let actions: Vec<Action> = report.steps.iter().map(|s| s.action).collect();
    assert_eq!(actions, [Action::Rebuilt, Action::Moved], "{report:?}");
    assert!(
        report.steps[0].reason.contains("installed packages")
            && report.steps[0].reason.contains("extra_pkg-1.0.dist-info"),
        "{report:?}"
    );
    let after = store.resolve("app:latest").unwrap().image;
    assert_eq!(after.digest(), &report.digest);
    nbrt_oci::validate(&after, &store).unwrap();
    assert_eq!(
        after.manifest.value().annotations[annotation::BASE_DIGEST],
        base3.digest().to_string()
    );
    assert_eq!(&after.layers()[..base3.layers().len()], base3.layers());
    assert_eq!(
        after.layers().last(),
        before.layers().last(),
        "the files layer is reused byte for byte"
    );
    assert_eq!(after.diff_ids().last(), before.diff_ids().last());
    let history = &after.config.value().history;
    assert_eq!(history.len(), after.layers().len());
    let lock: RuntimeLock =
        toml::from_str(&fs::read_to_string(stack.join("app/runtime.lock")).unwrap()).unwrap();
    assert_eq!(
        lock.parent.unwrap().digest,
        base3.digest().to_string(),
        "the lock follows the new base"
    );

    // Building the stack now finds every step in the cache and makes the same image.
    let reports = build(&store, &stack, &BuildOptions::default()).unwrap();
    assert!(reports.iter().flat_map(|r| &r.steps).all(|s| s.cached));
    assert_eq!(digest_of(&store, "app:latest"), report.digest.to_string());

    // Rebasing again onto the same base changes nothing.
    let again = rebase(
        &store,
        "app:latest",
        "pybase:latest",
        &RebaseOptions::default(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(
        again.steps.iter().map(|s| s.action).collect::<Vec<_>>(),
        [Action::Moved, Action::Moved]
    );
    assert_eq!(again.digest, report.digest);

    if nbrt_testkit::require_docker() {
        let out = docker_run(
            &store,
            "app:latest",
            &[
                "sh",
                "-c",
                "cat /etc/base-release /srv/hello.txt; \
                 ls /opt/conda/lib/python3.11/site-packages/six.py /opt/conda/bin/pyflakes",
            ],
        );
        assert_eq!(
            out,
            "v3\nhello\n/opt/conda/bin/pyflakes\n/opt/conda/lib/python3.11/site-packages/six.py\n"
        );
    }
}

#[test]
fn two_builds_of_one_stack_at_once_share_the_cache_safely() {
    let Some(rootfs) = can_build() else { return };
    if !needs_uv() {
        return;
    }
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    two_runtime_stack(&stack, &rootfs, "v1\n");
    write(
        &stack.join("app/runtime.toml"),
        &format!(
            "{}\n[[run]]\ncommand = \"echo ran > /srv/ran\"\nnetwork = false\n",
            fs::read_to_string(stack.join("app/runtime.toml")).unwrap()
        ),
    );
    let root = tmp.path().join("store");
    Store::open(&root).unwrap();
    let digests: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (root, stack) = (root.clone(), stack.clone());
                scope.spawn(move || {
                    let store = Store::open(&root).unwrap();
                    build(&store, &stack, &BuildOptions::default()).unwrap();
                    digest_of(&store, "app:latest")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(digests[0], digests[1]);
    let store = Store::open(&root).unwrap();
    let image = store.resolve("app:latest").unwrap().image;
    nbrt_oci::validate(&image, &store).unwrap();
    // The cache the two builds wrote serves a third build completely.
    let reports = build(&store, &stack, &BuildOptions::default()).unwrap();
    assert!(reports.iter().flat_map(|r| &r.steps).all(|s| s.cached));
    assert_eq!(digest_of(&store, "app:latest"), digests[0]);
}

#[test]
fn apt_packages_are_locked_and_installed_by_version() {
    let Some(rootfs) = can_build() else { return };
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    write(
        &stack.join("tools/runtime.toml"),
        &format!(
            "name = \"tools\"\nfrom = \"{}\"\n[apt]\npackages = [\"tree\"]\n",
            rootfs.display()
        ),
    );
    let store = Store::open(tmp.path().join("store")).unwrap();
    build(&store, &stack, &BuildOptions::default()).unwrap();
    let path = stack.join("tools/runtime.lock");
    let text = fs::read_to_string(&path).unwrap();
    let lock: RuntimeLock = toml::from_str(&text).unwrap();
    let tree = lock
        .apt
        .iter()
        .find(|d| d.name == "tree")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!tree.version.is_empty() && tree.arch == "amd64", "{text}");
    assert!(
        lock.apt.iter().all(|d| d.name != "apt"),
        "only what the step added: {text}"
    );

    // The locked build asks apt for exactly that version: a version the mirror does not
    // have fails the step, naming it.
    fs::write(
        &path,
        text.replace(
            &format!("version = \"{}\"", tree.version),
            "version = \"0.0-nbrt-test\"",
        ),
    )
    .unwrap();
    let err = build(&store, &stack, &locked()).unwrap_err().to_string();
    assert!(
        err.contains("tree") && err.contains("0.0-nbrt-test"),
        "{err}"
    );
    fs::write(&path, &text).unwrap();
    build(&store, &stack, &locked()).unwrap();
    let view = store.resolve("tools:latest").unwrap().image;
    nbrt_oci::validate(&view, &store).unwrap();
}

/// An apt layer moves on a rebase when the new base changed nothing apt starts from (dpkg's
/// database, apt's settings) and nothing the layer writes over; otherwise it is rebuilt,
/// naming the path.
#[test]
fn rebase_moves_an_apt_layer_unless_the_base_changed_what_apt_reads_or_it_writes() {
    let Some(rootfs) = can_build() else { return };
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    let os_file = |extra: &str| {
        format!(
            "name = \"os\"\nfrom = \"{}\"\n[[files]]\nsource = \"note\"\ndestination = \
             \"/etc/os-note\"\n{extra}",
            rootfs.display()
        )
    };
    write(&stack.join("os/runtime.toml"), &os_file(""));
    write(&stack.join("os/note"), "v1\n");
    write(
        &stack.join("tools/runtime.toml"),
        "name = \"tools\"\nfrom = \"os\"\n[apt]\npackages = [\"tree\"]\n[[files]]\n\
         source = \"hello.txt\"\ndestination = \"/srv/hello.txt\"\n",
    );
    write(&stack.join("tools/hello.txt"), "hello\n");
    let store = Store::open(tmp.path().join("store")).unwrap();
    build(&store, &stack, &BuildOptions::default()).unwrap();
    let before = store.resolve("tools:latest").unwrap().image;
    let rebuild_os = |note: &str, extra: &str| {
        write(&stack.join("os/note"), note);
        write(&stack.join("os/runtime.toml"), &os_file(extra));
        let s = Stack::load(&stack, &store).unwrap();
        nbrt_build::builder::build_stack(
            &store,
            &s,
            Some("os"),
            &BuildOptions::default(),
            &Progress::hidden(),
            &mut Vec::new(),
        )
        .unwrap();
        store.resolve("os:latest").unwrap().image
    };
    let rebase_tools = || {
        rebase(
            &store,
            "tools:latest",
            "os:latest",
            &RebaseOptions::default(),
            &mut Vec::new(),
        )
        .unwrap()
    };

    // A file apt neither reads nor writes: both layers move, byte for byte.
    let os2 = rebuild_os("v2\n", "");
    let report = rebase_tools();
    let actions: Vec<Action> = report.steps.iter().map(|s| s.action).collect();
    assert_eq!(actions, [Action::Moved, Action::Moved], "{report:?}");
    assert!(
        report.steps[0].reason.contains("same Debian packages"),
        "{report:?}"
    );
    let after = store.resolve("tools:latest").unwrap().image;
    nbrt_oci::validate(&after, &store).unwrap();
    assert_eq!(&after.layers()[..os2.layers().len()], os2.layers());
    assert_eq!(
        after.layers()[os2.layers().len()..],
        before.layers()[before.layers().len() - 2..]
    );

    // The base writes a file the apt layer writes too: moving the layer would hide it.
    write(&stack.join("os/fake-tree"), "#!/bin/sh\necho not tree\n");
    rebuild_os(
        "v3\n",
        "[[files]]\nsource = \"fake-tree\"\ndestination = \"/usr/bin/tree\"\nmode = \"0755\"\n",
    );
    let report = rebase_tools();
    let actions: Vec<Action> = report.steps.iter().map(|s| s.action).collect();
    assert_eq!(actions, [Action::Rebuilt, Action::Moved], "{report:?}");
    assert!(
        report.steps[0].reason.contains("/usr/bin/tree"),
        "{report:?}"
    );

    // apt's settings changed: apt might choose otherwise.
    write(
        &stack.join("os/apt.conf"),
        "APT::Install-Recommends \"false\";\n",
    );
    rebuild_os(
        "v4\n",
        "[[files]]\nsource = \"apt.conf\"\ndestination = \"/etc/apt/apt.conf.d/99nbrt-test\"\n",
    );
    let report = rebase_tools();
    assert_eq!(report.steps[0].action, Action::Rebuilt, "{report:?}");
    assert!(
        report.steps[0].reason.contains("apt's settings")
            && report.steps[0].reason.contains("/etc/apt/apt.conf.d"),
        "{report:?}"
    );
    let after = store.resolve("tools:latest").unwrap().image;
    nbrt_oci::validate(&after, &store).unwrap();

    if nbrt_testkit::require_docker() {
        let out = docker_run(
            &store,
            "tools:latest",
            &[
                "sh",
                "-c",
                "cat /etc/os-note /srv/hello.txt; tree --version",
            ],
        );
        assert!(out.starts_with("v4\nhello\ntree v"), "{out}");
    }
}
