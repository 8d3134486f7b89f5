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
