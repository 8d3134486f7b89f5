//! The pip step's layer from per-distribution pieces: a step run again with one package
//! more keeps the distributions of its earlier run and compresses only the new one, and
//! every image is byte for byte the image a build into an empty store makes of the same
//! runtime file. Needs root, runc, uv and PyPI, like the other end-to-end builder tests.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use common::{can_build, write};
use nbrt_build::builder::{build_stack, BuildOptions};
use nbrt_build::lock::RuntimeLock;
use nbrt_build::stack::Stack;
use nbrt_build::steps::pip::pieces::PieceCache;
use nbrt_build::steps::pip::prune_pieces;
use nbrt_oci::{Digest, Progress, Store};

const SDE: &str = "1700000000";

/// `pybase` (the minbase root with the shape of a Python environment) and `app` on it with
/// the given pip packages.
fn stack(dir: &Path, rootfs: &Path, packages: &[&str]) {
    write(
        &dir.join("pybase/runtime.toml"),
        &format!(
            "name = \"pybase\"\nfrom = \"{}\"\n[[files]]\nsource = \"conda\"\ndestination = \"/opt/conda\"\n",
            rootfs.display()
        ),
    );
    write(
        &dir.join("pybase/conda/lib/python3.11/site-packages/.keep"),
        "",
    );
    let list: Vec<String> = packages.iter().map(|p| format!("{p:?}")).collect();
    write(
        &dir.join("app/runtime.toml"),
        &format!(
            "name = \"app\"\nfrom = \"pybase\"\n[pip]\npackages = [{}]\n",
            list.join(", ")
        ),
    );
}

/// Build the stack into `store`; the app's image digest and the build's log.
fn build(store: &Store, dir: &Path) -> (String, String) {
    let s = Stack::load(dir, store).unwrap();
    let mut log = Vec::new();
    build_stack(
        store,
        &s,
        None,
        &BuildOptions::default(),
        &Progress::hidden(),
        &mut log,
    )
    .unwrap();
    let digest = store
        .resolve("app:latest")
        .unwrap()
        .image
        .digest()
        .to_string();
    (digest, String::from_utf8_lossy(&log).into_owned())
}

fn locked_names(dir: &Path) -> Vec<String> {
    let text = fs::read_to_string(dir.join("app/runtime.lock")).unwrap();
    let lock: RuntimeLock = toml::from_str(&text).unwrap();
    lock.pip.into_iter().map(|w| w.name).collect()
}

#[test]
fn a_package_more_reuses_the_pieces_and_gives_the_cold_build_bytes() {
    let Some(rootfs) = can_build() else { return };
    if !nbrt_testkit::require(
        "uv",
        &["--version"],
        "uv (scripts/setup installs it from PyPI)",
    ) {
        return;
    }
    std::env::set_var("SOURCE_DATE_EPOCH", SDE);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stack");
    let two = ["six==1.17.0", "pyflakes==3.2.0"];
    let three = ["six==1.17.0", "pyflakes==3.2.0", "tabulate==0.9.0"];

    // Store a: two packages, then one more.
    let a = Store::open(tmp.path().join("a")).unwrap();
    stack(&dir, &rootfs, &two);
    let (_, log) = build(&a, &dir);
    assert!(log.contains("0 taken from the piece cache, 2 new"), "{log}");
    stack(&dir, &rootfs, &three);
    let (incremental, log) = build(&a, &dir);
    assert!(
        log.contains(
            "pip: 2 distributions kept from an earlier run, 0 taken from the piece cache, 1 new"
        ),
        "{log}"
    );
    assert_eq!(locked_names(&dir), ["pyflakes", "six", "tabulate"]);

    // Store b, empty: the three at once. The same image, byte for byte.
    let b = Store::open(tmp.path().join("b")).unwrap();
    let (cold, log) = build(&b, &dir);
    assert!(log.contains("0 taken from the piece cache, 3 new"), "{log}");
    assert_eq!(incremental, cold, "incremental = cold build");

    // Store b built that from the lock (as a stock stack is built from its committed lock):
    // one package more keeps all three.
    stack(
        &dir,
        &rootfs,
        &[
            "six==1.17.0",
            "pyflakes==3.2.0",
            "tabulate==0.9.0",
            "toolz==1.0.0",
        ],
    );
    let (_, log) = build(&b, &dir);
    assert!(
        log.contains(
            "pip: 3 distributions kept from an earlier run, 0 taken from the piece cache, 1 new"
        ),
        "{log}"
    );

    // A package taken out: no earlier run has only what is asked for now, so uv resolves
    // afresh (the pieces of what it installs again still come from the cache) and pyflakes
    // is gone, as from a cold build.
    let fewer = ["six==1.17.0", "tabulate==0.9.0"];
    stack(&dir, &rootfs, &fewer);
    let (removed, log) = build(&a, &dir);
    assert!(
        log.contains(
            "pip: 0 distributions kept from an earlier run, 2 taken from the piece cache, 0 new"
        ),
        "{log}"
    );
    assert_eq!(locked_names(&dir), ["six", "tabulate"]);
    let c = Store::open(tmp.path().join("c")).unwrap();
    assert_eq!(removed, build(&c, &dir).0, "after a removal = cold build");

    // The earlier runs of the step are remembered apart: two packages plus a different one
    // builds on the run with the two.
    stack(
        &dir,
        &rootfs,
        &["six==1.17.0", "pyflakes==3.2.0", "tabulate==0.8.10"],
    );
    let (_, log) = build(&a, &dir);
    assert!(
        log.contains(
            "pip: 2 distributions kept from an earlier run, 0 taken from the piece cache, 1 new"
        ),
        "{log}"
    );

    // --no-cache uses neither pieces nor earlier runs.
    let s = Stack::load(&dir, &a).unwrap();
    let mut log = Vec::new();
    let opts = BuildOptions {
        no_cache: true,
        ..Default::default()
    };
    build_stack(&a, &s, None, &opts, &Progress::hidden(), &mut log).unwrap();
    let log = String::from_utf8_lossy(&log);
    assert!(
        log.contains(
            "pip: 0 distributions kept from an earlier run, 0 taken from the piece cache, 3 new"
        ),
        "{log}"
    );

    // gc keeps the pieces of the layers stored images have, and only those; not while a
    // build has the cache open.
    let live: HashSet<Digest> = a
        .resolve("app:latest")
        .unwrap()
        .image
        .diff_ids()
        .iter()
        .cloned()
        .collect();
    let in_use = PieceCache::open(&a).unwrap();
    let err = prune_pieces(&a, &live).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
    drop(in_use);
    let report = prune_pieces(&a, &live).unwrap().unwrap();
    assert_eq!((report.removed, report.kept), (1, 3), "tabulate 0.9.0 goes");
    let report = prune_pieces(&a, &HashSet::new()).unwrap().unwrap();
    assert_eq!((report.removed, report.kept), (3, 0));
}
