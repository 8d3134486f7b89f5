//! The images the inspect tests read: the stock stacks (`stacks/`) built by nbrt into a store
//! shared by the tests (target/nbrt-fixtures/stock-store, so unchanged steps come from the
//! build cache), and small runtimes built on top of them, broken on purpose.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nbrt_inspect::check::live::LiveOptions;
use nbrt_inspect::check::{self, Profile, Report};
use nbrt_inspect::packages::Package;
use nbrt_inspect::View;
use nbrt_oci::{Image, Progress, Store};

/// `NBRT_INSPECT_STOCK_STORE` names a store that already has the stock images (nothing is
/// built for them then); else the store shared by the tests (`nbrt_testkit::stock`).
fn store_dir() -> PathBuf {
    match std::env::var_os("NBRT_INSPECT_STOCK_STORE") {
        Some(p) => PathBuf::from(p),
        None => nbrt_testkit::stock::store_dir(),
    }
}

/// Build a stack directory into the test store (cached steps make a rebuild cheap).
pub fn build(stack: &Path) -> Store {
    nbrt_testkit::stock::build_into(&store_dir(), stack, None)
}

/// The store with the stock stacks built, once per test process.
pub fn stock() -> Option<&'static Path> {
    static DONE: OnceLock<Option<PathBuf>> = OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var_os("NBRT_INSPECT_STOCK_STORE").is_none() {
            nbrt_testkit::stock::store()?;
        }
        Some(store_dir())
    })
    .as_deref()
}

pub fn open(store: &Path) -> Store {
    Store::open(store).expect("opening the fixture store")
}

pub struct Read {
    pub image: Image,
    pub view: View,
    pub packages: Vec<Package>,
}

pub fn read(store: &Store, name: &str) -> Read {
    let image = store
        .resolve(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .image;
    let (view, packages) = nbrt_inspect::read_image(store, &image, &Progress::hidden())
        .unwrap_or_else(|e| panic!("reading {name}: {e}"));
    Read {
        image,
        view,
        packages,
    }
}

/// Static checks, plus live ones when `live` (and Docker is there).
pub fn check(store: &Store, name: &str, profile: Profile, live: bool) -> Report {
    let r = read(store, name);
    let mut report = check::static_report(name, &r.image, &r.view, &r.packages, profile);
    if live && nbrt_testkit::require_docker() {
        let mut opts = LiveOptions {
            timeout: std::time::Duration::from_secs(180),
            ..Default::default()
        };
        if let Some(hub) = r.packages.iter().find(|p| p.name == "jupyterhub") {
            opts.hub_version = hub.version.clone();
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let results = rt.block_on(check::live::run(store, &r.image, profile, &opts));
        report = Report::new(name, profile, [report.results, results].concat());
    }
    report
}

/// Every result, one per line, for assertion messages.
pub fn show(r: &Report) -> String {
    r.results
        .iter()
        .map(|c| format!("{:?} {}: {} ({:?})", c.status, c.id, c.message, c.fix))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Write a stack of runtime files (`name` → text) into a new directory.
pub fn stack(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    dir
}

/// The engine's reference for an image of the store (loaded when missing).
pub fn in_docker(store: &Store, name: &str) -> String {
    let image = store.resolve(name).unwrap().image;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let engine = nbrt_oci::Engine::connect().await.unwrap();
        check::container::ensure_image(&engine, store, &image)
            .await
            .unwrap()
    })
}
