//! Helpers for nbrt's integration tests.
//!
//! Tests that need a real component (Docker engine, registry, skopeo, umoci, mmdebstrap, …)
//! call [`require`] first. When the component is missing the test fails with a message that
//! says what to install, unless `NBRT_SKIP_DOCKER=1` is set, in which case it is skipped.

use std::net::TcpListener;
use std::process::Command;

/// Whether tests that need external components may be skipped on this machine.
pub fn skipping_allowed() -> bool {
    std::env::var("NBRT_SKIP_DOCKER").is_ok_and(|v| v == "1")
}

/// Check that `program` runs (`program --version` or the given probe args succeed).
/// Returns false (skip the test) only when `NBRT_SKIP_DOCKER=1`; otherwise panics with a
/// message naming the Debian package to install.
pub fn require(program: &str, probe_args: &[&str], debian_package: &str) -> bool {
    let ok = Command::new(program)
        .args(probe_args)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    if skipping_allowed() {
        eprintln!("skipping: {program} is not available and NBRT_SKIP_DOCKER=1");
        return false;
    }
    panic!(
        "this test needs `{program}`, which is missing or not working: install it with \
         `apt-get install {debian_package}` (and start it if it is a daemon, see .ci/run), \
         or set NBRT_SKIP_DOCKER=1 to skip tests that need external components"
    );
}

/// The Docker engine must answer (`docker info`).
pub fn require_docker() -> bool {
    require("docker", &["info", "--format", "{{.ServerVersion}}"], "docker.io (then run `dockerd &`)")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local address").port()
}
