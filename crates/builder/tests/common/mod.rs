//! Helpers shared by the builder's end-to-end tests (each test file uses a part of them).
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use nbrt_build::builder::{build_stack, BuildOptions, RuntimeReport};
use nbrt_build::stack::Stack;
use nbrt_oci::{ImageName, Progress, Store};

pub fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// The minbase root file system tar, when this machine can build stacks (root, runc,
/// mmdebstrap once); `None` after saying why.
pub fn can_build() -> Option<PathBuf> {
    let rootfs = nbrt_testkit::minbase_rootfs()?;
    if !nbrt_testkit::require("runc", &["--version"], "runc") {
        return None;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: building needs root (runc, overlayfs, owners)");
        return None;
    }
    Some(rootfs)
}

/// Build a stack directory (all of it) into `store`.
pub fn build(
    store: &Store,
    stack: &Path,
    opts: &BuildOptions,
) -> nbrt_build::Result<Vec<RuntimeReport>> {
    let s = Stack::load(stack, store)?;
    let mut log = Vec::new();
    build_stack(store, &s, None, opts, &Progress::hidden(), &mut log)
}

/// Load an image of the store into Docker, run `args` in it, remove it again; stdout, or a
/// panic with stderr.
pub fn docker_run(store: &Store, reference: &str, args: &[&str]) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = ImageName::parse(&format!(
        "nbrt-test/{}:{}",
        reference.replace([':', '/'], "-"),
        std::process::id()
    ))
    .unwrap();
    let image = store.resolve(reference).unwrap().image;
    rt.block_on(nbrt_oci::engine::load(
        store.root().to_path_buf(),
        &image,
        std::slice::from_ref(&name),
        &Progress::hidden(),
    ))
    .unwrap();
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", &name.to_string()])
        .args(args)
        .output()
        .unwrap();
    let _ = std::process::Command::new("docker")
        .args(["rmi", &name.to_string()])
        .output();
    assert!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
