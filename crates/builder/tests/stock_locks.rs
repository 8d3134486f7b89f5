//! The stock stacks' committed locks (`stacks/*/runtime.lock`) are current: made from the
//! runtime files as they are now, so `nbrt build stacks/` installs exactly what they pin. A
//! runtime file changed without its lock refreshed (`nbrt build stacks/ --only NAME` writes
//! it) fails here, before anybody builds something other than what is committed.

use nbrt_build::lock::{LockState, RuntimeLock};
use nbrt_build::runtime_file::RuntimeFile;

#[test]
fn every_stock_runtime_has_a_current_committed_lock() {
    let stacks = nbrt_testkit::repo_dir().join("stacks");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&stacks).expect("reading stacks/") {
        let dir = entry.expect("an entry of stacks/").path();
        let file = dir.join("runtime.toml");
        if !file.is_file() {
            continue;
        }
        let rt = RuntimeFile::load(&file, &dir)
            .unwrap_or_else(|e| panic!("loading {}: {e}", file.display()));
        match RuntimeLock::read(&rt).unwrap_or_else(|e| panic!("{}: {e}", rt.name)) {
            LockState::Current(lock) => {
                assert!(
                    !(lock.bootstrap.is_empty() && lock.parent.is_none()),
                    "{}: the lock pins neither a bootstrap nor a parent",
                    rt.name
                );
            }
            LockState::Missing => panic!(
                "stacks/{0}/runtime.lock is not committed: `nbrt build stacks/ --only {0}` \
                 writes it",
                rt.name
            ),
            LockState::Stale(why) => panic!(
                "stacks/{0}/runtime.lock {why}: `nbrt build stacks/ --only {0}` refreshes it",
                rt.name
            ),
        }
        checked.push(rt.name);
    }
    assert!(checked.len() >= 3, "stock runtimes found: {checked:?}");
}

/// `nbrt graph stacks/` draws seed 003's image hierarchy for the images nbrt has: base →
/// jupyter → scipy, TensorFlow and the CUDA variants of PyTorch and TensorFlow, all on
/// jupyter as Kubeflow has them, R with the tidyverse (RStudio's part that Debian has), and
/// base → code-server → code-server with Python.
#[test]
fn the_stock_graph_is_seed_003s_hierarchy() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let store = nbrt_oci::Store::open(tmp.path().join("store")).expect("a store");
    let stack = nbrt_build::stack::Stack::load(&nbrt_testkit::repo_dir().join("stacks"), &store)
        .expect("loading stacks/");
    let graph = stack.mermaid();
    for edge in [
        "base[base] --> jupyter[jupyter]",
        "jupyter[jupyter] --> scipy[scipy]",
        "jupyter[jupyter] --> tensorflow[tensorflow]",
        "jupyter[jupyter] --> tensorflow_cuda[tensorflow-cuda]",
        "jupyter[jupyter] --> pytorch_cuda[pytorch-cuda]",
        "jupyter[jupyter] --> r_tidyverse[r-tidyverse]",
        "base[base] --> codeserver[codeserver]",
        "codeserver[codeserver] --> codeserver_python[codeserver-python]",
    ] {
        assert!(graph.contains(edge), "{edge:?} is not in:\n{graph}");
    }
}
