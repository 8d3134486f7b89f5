//! `nbrt serve --backend` and the backend in `--config`: names checked before anything
//! starts, the Kubernetes backend's settings checked before it looks for a cluster, the
//! file's unknown keys are refused. None of these reach an engine or a cluster.

use std::process::{Command, Output};

fn serve(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(dir.join("store"))
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database")
        .arg(dir.join("site.db"))
        .args(args)
        .output()
        .expect("running nbrt serve")
}

fn failed_with(out: &Output, words: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nbrt serve should fail: {stderr}");
    assert!(stderr.contains(words), "expected {words:?} in:\n{stderr}");
}

#[test]
fn kubernetes_without_a_cluster_backend_needs_a_registry_and_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(dir.path(), &["--backend", "kubernetes"]);
    failed_with(&out, "the kubernetes backend needs the site's registry");
    let missing = dir.path().join("no-such-kubeconfig");
    let out = serve(
        dir.path(),
        &[
            "--backend",
            "kubernetes",
            "--registry",
            "127.0.0.1:5000",
            "--kubeconfig",
            missing.to_str().unwrap(),
        ],
    );
    failed_with(&out, "no-such-kubeconfig");
}

#[test]
fn unknown_backend_names_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(dir.path(), &["--backend", "nomad"]);
    failed_with(&out, "known: docker, swarm, kubernetes");
}

#[test]
fn backend_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("serve.toml");
    std::fs::write(
        &file,
        "backend = \"kubernetes\"\n[kubernetes]\nregistry = \"127.0.0.1:5000\"\ncpu-request = 2.0\n",
    )
    .unwrap();
    let out = serve(dir.path(), &["--config", file.to_str().unwrap()]);
    failed_with(&out, "is not a fraction between 0 and 1");
    std::fs::write(
        &file,
        "backend = \"kubernetes\"\n[kubernetes]\nregistry = \"r:5000\"\nstorage-clas = \"x\"\n",
    )
    .unwrap();
    let out = serve(dir.path(), &["--config", file.to_str().unwrap()]);
    failed_with(&out, "storage-clas");
    std::fs::write(&file, "backend = \"kubernetes\"\n").unwrap();

    // A flag wins over the file: the file's backend is never reached.
    let out = serve(
        dir.path(),
        &["--config", file.to_str().unwrap(), "--backend", "nomad"],
    );
    failed_with(&out, "unknown session backend \"nomad\"");

    std::fs::write(&file, "backend = \"docker\"\nbakend = \"swarm\"\n").unwrap();
    let out = serve(dir.path(), &["--config", file.to_str().unwrap()]);
    failed_with(&out, "bakend");
}
