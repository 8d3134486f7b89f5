//! The stock stacks (`stacks/`: base, jupyter, scipy, …) built by nbrt, each runtime with
//! what it needs, into one store that every test binary shares
//! (`target/nbrt-fixtures/stock-store`). Unchanged steps come from the build cache, so after
//! the first build of a run the others cost a cache lookup. One build at a time across test
//! processes (a file lock).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use nbrt_build::builder::{build_stack, BuildOptions, LockMode};
use nbrt_build::stack::Stack;
use nbrt_build::BuildError;
use nbrt_oci::{ImageName, Progress, Store};

/// Stock stacks that tests building the whole of `stacks/` leave out: `tensorflow` (about
/// 1.5 GB) and the code-server stacks (minutes of npm install and native compiles) are
/// built once per run into the shared store by the tests that need them ([`store_with`]);
/// the CUDA stacks (several GB each) only by `bench/scale.sh`.
pub const NOT_IN_FULL_BUILDS: &[&str] = &[
    "tensorflow",
    "tensorflow-cuda",
    "pytorch-cuda",
    "r-tidyverse",
    "codeserver",
    "codeserver-python",
];

/// Whether this machine can build images (mmdebstrap, runc, uv, root). Fails with what to
/// install unless skipping is allowed.
pub fn can_build() -> bool {
    crate::require("mmdebstrap", &["--version"], "mmdebstrap")
        && crate::require("runc", &["--version"], "runc")
        && crate::require("uv", &["--version"], "uv (scripts/setup installs it)")
        && is_root()
}

fn is_root() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root && !crate::skipping_allowed() {
        panic!("building images needs root (mmdebstrap and runc run as root); run the tests as root or set NBRT_SKIP_DOCKER=1");
    }
    root
}

/// The shared store's directory.
pub fn store_dir() -> PathBuf {
    crate::fixture_dir().join("stock-store")
}

/// Build the stack directory `stack` (all of it, or what `only` needs) into the store at
/// `store`, holding the fixture lock; panics with the build log on failure.
pub fn build_into(store: &Path, stack: &Path, only: Option<&str>) -> Store {
    for (variable, path) in crate::builtin_envs() {
        std::env::set_var(variable, path);
    }
    let lock = fs::File::create(crate::fixture_dir().join("stock-store.lock"))
        .expect("creating the fixture lock");
    lock.lock().expect("locking the fixture store");
    let s = Store::open(store).expect("opening the fixture store");
    let st = Stack::load(stack, &s).unwrap_or_else(|e| panic!("loading {}: {e}", stack.display()));
    let mut log = Vec::new();
    let mut build = |lock| {
        let opts = BuildOptions {
            lock,
            ..Default::default()
        };
        build_stack(&s, &st, only, &opts, &Progress::hidden(), &mut log)
    };
    let built = match build(LockMode::Follow) {
        Err(BuildError::LostPin(why)) => {
            eprintln!("{}: {why}", crate::LOCKS_REFRESHED);
            build(LockMode::Update)
        }
        other => other,
    };
    built.unwrap_or_else(|e| {
        panic!(
            "building {}: {e}\n{}",
            stack.display(),
            String::from_utf8_lossy(&log)
        )
    });
    s
}

/// The shared store with the stock runtime `name` built, and what it needs (once per test
/// process and name). `None` when the tools are missing and skipping is allowed.
pub fn store_with(name: &str) -> Option<Store> {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    if !can_build() {
        return None;
    }
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.contains(name) {
        // A copy of its own per process (removed after): processes never share one.
        let stacks = crate::copy_of_stacks(
            &crate::fixture_dir().join(format!("stacks-src-{}", std::process::id())),
        );
        build_into(&store_dir(), &stacks, Some(name));
        let _ = fs::remove_dir_all(&stacks);
        built.insert(name.to_string());
    }
    Some(Store::open(store_dir()).expect("opening the fixture store"))
}

/// The shared store with base, jupyter and scipy built.
pub fn store() -> Option<Store> {
    store_with("scipy")
}

/// The stock runtime `name` loaded into the Docker engine, tagged
/// `nbrt-test/<name>:<first 12 hex of its digest>`; returns that tag. `None` when the tools
/// or Docker are missing and skipping is allowed.
pub fn docker_image(name: &str) -> Option<String> {
    let store = store_with(name)?;
    if !crate::require_docker() {
        return None;
    }
    load_into_docker(&store, name, &format!("nbrt-test/{name}"))
}

/// Removes a Docker image, every tag of it, when dropped: for a large image no other test of
/// the run needs, so the engine's disk does not hold it until the run ends.
pub struct RemovedFromDocker(pub String);

impl Drop for RemovedFromDocker {
    fn drop(&mut self) {
        let id = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &self.0])
            .output()
            .ok()
            .filter(|o| o.status.success());
        if let Some(out) = id {
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
        }
    }
}

/// Load the store's image `reference` into Docker as `<repo>:<12 hex of its digest>` unless
/// the engine has it already; returns the tag.
pub fn load_into_docker(store: &Store, reference: &str, repo: &str) -> Option<String> {
    let found = store
        .resolve(reference)
        .unwrap_or_else(|e| panic!("{reference} is not in the store: {e}"));
    let tag = format!("{repo}:{}", &found.image.digest().hex()[..12]);
    let have = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let name = ImageName::parse(&tag).unwrap_or_else(|e| panic!("tag {tag}: {e}"));
        // A thread of its own: async tests call this from inside their runtime.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(nbrt_oci::engine::load(
                    store.root().to_path_buf(),
                    &found.image,
                    &[name],
                    &Progress::hidden(),
                ))
                .unwrap_or_else(|e| panic!("loading {reference} into Docker: {e}"));
            })
            .join()
            .unwrap_or_else(|_| panic!("loading {reference} into Docker panicked"));
        });
    }
    Some(tag)
}
