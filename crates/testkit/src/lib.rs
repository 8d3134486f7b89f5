//! Helpers for nbrt's integration tests.
//!
//! Tests that need a real component (Docker engine, registry, skopeo, umoci, mmdebstrap, …)
//! call [`require`] first. When the component is missing the test fails with a message that
//! says what to install, unless `NBRT_SKIP_DOCKER=1` is set, in which case it is skipped.

use std::net::TcpListener;
use std::process::Command;

pub mod conda_pkg;
pub mod container;
pub mod hostile;
pub mod jupyter;
pub mod registry;
pub mod stock;
pub use hostile::{Endless, HostileRegistry};
pub use registry::{Registry, RegistryConfig};

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
    require(
        "docker",
        &["info", "--format", "{{.ServerVersion}}"],
        "docker.io (then run `dockerd &`)",
    )
}

/// A tar header for test archives: `kind` and `size`, mode 0755 for directories and 0644
/// otherwise, a fixed mtime; no path or checksum yet.
pub fn tar_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_mtime(1_700_000_000);
    h
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port on 127.0.0.1");
    l.local_addr().expect("local address").port()
}

/// Where fixtures that are slow to make (root file systems) are kept between test runs.
pub fn fixture_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/nbrt-fixtures");
    std::fs::create_dir_all(&dir).expect("creating target/nbrt-fixtures");
    // Without `..` or symlinks: runc refuses a bundle root that is not a real absolute path.
    std::fs::canonicalize(&dir).expect("resolving target/nbrt-fixtures")
}

/// A Debian bookworm root file system tar made by `mmdebstrap --variant=minbase`, built once
/// and reused (delete target/nbrt-fixtures to rebuild). `None` when skipping is allowed and
/// mmdebstrap is missing.
pub fn minbase_rootfs() -> Option<std::path::PathBuf> {
    if !require("mmdebstrap", &["--version"], "mmdebstrap") {
        return None;
    }
    let dir = fixture_dir();
    let path = dir.join("minbase-bookworm.tar");
    let lock = std::fs::File::create(dir.join("minbase.lock")).expect("creating fixture lock");
    lock.lock().expect("locking fixture lock");
    if !path.exists() {
        // mmdebstrap picks the output format from the extension: keep `.tar`.
        let tmp = dir.join("minbase-bookworm.partial.tar");
        let out = Command::new("mmdebstrap")
            .args(["--quiet", "--variant=minbase", "bookworm"])
            .arg(&tmp)
            .output()
            .expect("running mmdebstrap");
        assert!(
            out.status.success(),
            "mmdebstrap failed (it needs root and access to the Debian mirror): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &path).expect("renaming the fixture into place");
    }
    Some(path)
}

/// The repository's root directory.
pub fn repo_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of the repository's `stacks/` (runtime files and their committed locks) at `dest`,
/// emptied first. Tests build the copy, so a lock refreshed on the way (the Debian mirror
/// moved past a pin) never rewrites the checkout's committed locks.
pub fn copy_of_stacks(dest: &std::path::Path) -> std::path::PathBuf {
    if dest.exists() {
        std::fs::remove_dir_all(dest)
            .unwrap_or_else(|e| panic!("emptying {}: {e}", dest.display()));
    }
    std::fs::create_dir_all(dest).unwrap_or_else(|e| panic!("creating {}: {e}", dest.display()));
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(repo_dir().join("stacks/."))
        .arg(dest)
        .status()
        .expect("running cp");
    assert!(status.success(), "copying stacks/ to {}", dest.display());
    dest.to_path_buf()
}

/// What a test says when the committed locks pin Debian packages the mirror has replaced
/// and the build refreshes the copy's locks (as `scripts/demo` does).
pub const LOCKS_REFRESHED: &str = "the committed stock locks pin Debian packages the mirror no \
     longer has; building a copy of stacks/ with --update-lock (refresh the committed locks: \
     nbrt build stacks/ --update-lock)";

/// The static nbrt-init that stock images carry: `$NBRT_INIT_STATIC_BIN`, else built once
/// per test process by `crates/init/build-static.sh`. Builds put it in images through
/// `NBRT_INIT_BIN` (see `nbrt_build::builtin`).
pub fn static_nbrt_init() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| static_binary("nbrt-init", "NBRT_INIT_STATIC_BIN", "crates/init"))
        .clone()
}

/// The static nbrt-conda (`conda`, `mamba` in stock images): `$NBRT_CONDA_STATIC_BIN`, else
/// built once per test process by `crates/conda/build-static.sh`. Builds put it in images
/// through `NBRT_CONDA_BIN` (see `nbrt_build::builtin`).
pub fn static_nbrt_conda() -> std::path::PathBuf {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| static_binary("nbrt-conda", "NBRT_CONDA_STATIC_BIN", "crates/conda"))
        .clone()
}

/// A static binary of this workspace: the path in `$override_var`, else what
/// `<crate_dir>/build-static.sh` builds and prints.
fn static_binary(name: &str, override_var: &str, crate_dir: &str) -> std::path::PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        return p.into();
    }
    let script = repo_dir().join(crate_dir).join("build-static.sh");
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "building the static {name} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// Whether the stock stacks (`stacks/*/runtime.toml`) name the `nbrt-conda` builtin, so
/// builds of them need `NBRT_CONDA_BIN` ([`static_nbrt_conda`] is only built then).
pub fn stacks_use_nbrt_conda() -> bool {
    std::fs::read_dir(repo_dir().join("stacks"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path().join("runtime.toml"))
                    .is_ok_and(|t| t.contains("\"nbrt-conda\""))
            })
        })
        .unwrap_or(false)
}

/// `(variable, path)` of the builtins a build of the stock stacks needs: the static
/// nbrt-init always, the static nbrt-conda when a stack names it.
pub fn builtin_envs() -> Vec<(&'static str, std::path::PathBuf)> {
    let mut out = vec![("NBRT_INIT_BIN", static_nbrt_init())];
    if stacks_use_nbrt_conda() {
        out.push(("NBRT_CONDA_BIN", static_nbrt_conda()));
    }
    out
}

/// A Debian bookworm root file system tar with Python 3 (`mmdebstrap --variant=minbase
/// --include=python3,python3-venv`), built once and reused like [`minbase_rootfs`]. `None`
/// when skipping is allowed and mmdebstrap is missing.
pub fn python_rootfs() -> Option<std::path::PathBuf> {
    if !require("mmdebstrap", &["--version"], "mmdebstrap") {
        return None;
    }
    let dir = fixture_dir();
    let path = dir.join("python-bookworm.tar");
    let lock =
        std::fs::File::create(dir.join("python-rootfs.lock")).expect("creating fixture lock");
    lock.lock().expect("locking fixture lock");
    if !path.exists() {
        let tmp = dir.join("python-bookworm.partial.tar");
        let out = Command::new("mmdebstrap")
            .args([
                "--quiet",
                "--variant=minbase",
                "--include=python3,python3-venv",
                "bookworm",
            ])
            .arg(&tmp)
            .output()
            .expect("running mmdebstrap");
        assert!(
            out.status.success(),
            "mmdebstrap failed (it needs root and access to the Debian mirror): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::rename(&tmp, &path).expect("renaming the fixture into place");
    }
    Some(path)
}

/// A tiny HTTP/1.1 server for the files below `root` on 127.0.0.1 (a thread per
/// connection, for the life of the test process); returns `http://127.0.0.1:<port>`. A
/// directory is answered with its `index.html` (a PEP 503 simple index is such a tree).
pub fn serve_dir(root: &std::path::Path) -> String {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let address = listener.local_addr().expect("local address");
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let root = root.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if request.len() > 64 << 10 {
                        return;
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut file = root.join(path.trim_start_matches('/'));
                if file.is_dir() {
                    file = file.join("index.html");
                }
                let response = match (path.contains(".."), std::fs::read(&file)) {
                    (false, Ok(body)) if file.is_file() => {
                        let kind = match file.extension().and_then(|e| e.to_str()) {
                            Some("html") => "text/html",
                            Some("json") => "application/json",
                            _ => "application/octet-stream",
                        };
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            });
        }
    });
    format!("http://{address}")
}
