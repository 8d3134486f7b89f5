//! `nbrt serve --backend` and the backend in `--config`: names checked before anything
//! starts, a backend that is not built says so, the file's unknown keys are refused. None of
//! these reach an engine.

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
fn kubernetes_backend_is_refused_as_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let out = serve(dir.path(), &["--backend", "kubernetes"]);
    failed_with(&out, "the kubernetes session backend is not built yet");
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
    std::fs::write(&file, "backend = \"kubernetes\"\n").unwrap();
    let out = serve(dir.path(), &["--config", file.to_str().unwrap()]);
    failed_with(&out, "the kubernetes session backend is not built yet");

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
