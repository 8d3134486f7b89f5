//! `steps::conda` against real rattler, with conda packages and channels made here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nbrt_build::steps::conda::{install, CondaOutcome, CondaRequest, LockedCondaPackage};
use nbrt_build::BuildError;
use nbrt_testkit::conda_pkg::{Content, Pkg, PLACEHOLDER};
use sha2::{Digest, Sha256};

// Small conda packages: `nbrt_testkit::conda_pkg`, plus the `.conda` format here (rattler's
// writer, a dependency of this crate only).

/// A `.conda` (zip of zstd tars) through rattler_package_streaming's writer.
fn conda_file(pkg: &Pkg, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let tree = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, content) in pkg.members() {
        let path = tree.path().join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match content {
            Content::File { data, mode, .. } => {
                std::fs::write(&path, data).unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Content::Symlink(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        }
        paths.push(path);
    }
    let out = dir.join(format!("{}.conda", pkg.dist_name()));
    let file = std::fs::File::create(&out).unwrap();
    rattler_package_streaming::write::write_conda_package(
        file,
        tree.path(),
        &paths,
        rattler_conda_types::compression_level::CompressionLevel::Numeric(3),
        Some(1),
        &pkg.dist_name(),
        None,
        None,
    )
    .unwrap();
    out
}

fn alpha(version: &str) -> Pkg {
    let mut pkg = Pkg::new("alpha", version)
        .script("bin/alpha", "echo alpha from @P@/share/alpha")
        .file("share/alpha/version.txt", version)
        .file("lib/libalpha.so.1", &format!("libalpha {version}"))
        .symlink("lib/libalpha.so", "libalpha.so.1");
    if version == "1.0" {
        pkg = pkg.file("lib/alpha-1.0-only.txt", "gone in 1.1");
    }
    pkg
}

fn beta() -> Pkg {
    Pkg::new("beta", "2.0")
        .depends("alpha >=1")
        .script("bin/beta", "exec @P@/bin/alpha \"$@\"")
        .file("share/beta.txt", "beta")
}

fn gamma() -> Pkg {
    Pkg::new("gamma", "0.3")
        .noarch_python()
        .file("site-packages/gamma/__init__.py", "VALUE = 3\n")
}

/// A channel directory `<parent>/channel` with linux-64/ and noarch/, not indexed.
fn make_channel(parent: &Path) -> PathBuf {
    let channel = parent.join("channel");
    alpha("1.0").tar_bz2(&channel.join("linux-64"));
    conda_file(&alpha("1.1"), &channel.join("linux-64"));
    beta().tar_bz2(&channel.join("linux-64"));
    gamma().tar_bz2(&channel.join("noarch"));
    channel
}

/// Write `repodata.json` for each subdirectory of a channel, as an indexer would.
fn index_channel(channel: &Path) {
    for subdir in ["linux-64", "noarch"] {
        let dir = channel.join(subdir);
        let mut packages = serde_json::Map::new();
        let mut conda_packages = serde_json::Map::new();
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conda") || n.ends_with(".tar.bz2"))
            .collect();
        names.sort();
        for name in names {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            let mut index = read_index_json(&dir.join(&name));
            index["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
            index["size"] = bytes.len().into();
            if name.ends_with(".conda") {
                conda_packages.insert(name, index);
            } else {
                packages.insert(name, index);
            }
        }
        let repodata = serde_json::json!({
            "info": {"subdir": subdir},
            "packages": packages,
            "packages.conda": conda_packages,
            "repodata_version": 1,
        });
        std::fs::write(
            dir.join("repodata.json"),
            serde_json::to_vec_pretty(&repodata).unwrap(),
        )
        .unwrap();
    }
}

fn read_index_json(archive: &Path) -> serde_json::Value {
    let index: rattler_conda_types::package::IndexJson =
        rattler_package_streaming::seek::read_package_file(archive).unwrap();
    serde_json::to_value(index).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn request(channels: &[&Path], specs: &[&str]) -> CondaRequest {
    CondaRequest {
        prefix: "/opt/conda".into(),
        channels: channels.iter().map(|c| c.display().to_string()).collect(),
        specs: specs.iter().map(|s| s.to_string()).collect(),
        package_files: Vec::new(),
        platform: "linux-64".into(),
        locked: None,
    }
}

/// Install into a fresh staging directory; returns it with the outcome.
async fn run(
    installed: &[Vec<u8>],
    python: Option<(u64, u64)>,
    req: &CondaRequest,
    cache: &Path,
) -> (tempfile::TempDir, CondaOutcome) {
    let staging = tempfile::tempdir().unwrap();
    let outcome = install(installed, python, req, staging.path(), cache)
        .await
        .unwrap_or_else(|e| panic!("install {:?} failed: {e}", req.specs));
    (staging, outcome)
}

async fn run_err(req: &CondaRequest, cache: &Path) -> String {
    run_err_over(&[], req, cache).await
}

async fn run_err_over(installed: &[Vec<u8>], req: &CondaRequest, cache: &Path) -> String {
    let staging = tempfile::tempdir().unwrap();
    match install(installed, None, req, staging.path(), cache).await {
        Ok(outcome) => panic!("expected an error, got {outcome:?}"),
        Err(BuildError::Conda(message)) => {
            eprintln!("conda error: {message}");
            message
        }
        Err(other) => panic!("expected BuildError::Conda, got {other:?}"),
    }
}

/// Every file below `root`, relative path → a description of type, mode and content.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(relative, format!("symlink {}", target.display()));
            } else if meta.is_dir() {
                out.insert(relative.clone(), "dir".into());
                walk(root, &path, out);
            } else {
                let data = std::fs::read(&path).unwrap();
                out.insert(
                    relative,
                    format!(
                        "file {:o} {}",
                        meta.permissions().mode() & 0o7777,
                        hex::encode(Sha256::digest(&data))
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn tree_hash(root: &Path) -> String {
    let mut hasher = Sha256::new();
    for (path, what) in tree(root) {
        hasher.update(format!("{path}\0{what}\n"));
    }
    hex::encode(hasher.finalize())
}

fn files(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .filter(|(_, what)| what != "dir")
        .map(|(p, _)| p)
        .collect()
}

fn meta_docs(staging: &Path) -> Vec<Vec<u8>> {
    let dir = staging.join("opt/conda/conda-meta");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

fn names(outcome: &CondaOutcome) -> Vec<String> {
    outcome
        .installed
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

fn assert_no_host_paths(staging: &Path, forbidden: &[&Path]) {
    for (path, what) in tree(staging) {
        if what.starts_with("file") {
            let text =
                String::from_utf8_lossy(&std::fs::read(staging.join(&path)).unwrap()).into_owned();
            for f in forbidden {
                let f = f.display().to_string();
                assert!(
                    !text.contains(&f),
                    "{path} mentions the host path {f}:\n{text}"
                );
            }
            // conda-meta names the placeholder (paths_data); linked files must not have it.
            if !path.contains("conda-meta/") {
                assert!(
                    !text.contains(PLACEHOLDER),
                    "{path} still has the placeholder"
                );
            }
            assert!(
                !text.contains("file:///tmp"),
                "{path} names a temporary file"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn package_files_install_offline_into_an_empty_prefix() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let pkgs = work.path().join("downloads");
    let alpha_file = alpha("1.0").tar_bz2(&pkgs);
    let beta_file = conda_file(&beta(), &pkgs);

    let mut req = request(&[], &[]);
    req.package_files = vec![alpha_file.clone(), beta_file.clone()];
    let (staging, outcome) = run(&[], None, &req, &cache).await;

    assert_eq!(names(&outcome), ["alpha=1.0", "beta=2.0"]);
    assert_eq!(outcome.added, ["alpha=1.0=h0_0", "beta=2.0=h0_0"]);
    assert!(outcome.removed.is_empty() && outcome.changed.is_empty());
    assert!(outcome.whiteouts.is_empty());
    assert_eq!(
        files(staging.path()),
        [
            "opt/conda/bin/alpha",
            "opt/conda/bin/beta",
            "opt/conda/conda-meta/alpha-1.0-h0_0.json",
            "opt/conda/conda-meta/beta-2.0-h0_0.json",
            "opt/conda/lib/alpha-1.0-only.txt",
            "opt/conda/lib/libalpha.so",
            "opt/conda/lib/libalpha.so.1",
            "opt/conda/share/alpha/version.txt",
            "opt/conda/share/beta.txt",
        ]
    );
    // No CACHEDIR.TAG, no conda-meta/history from rattler's Prefix::create.
    let root = staging.path().join("opt/conda");
    assert_eq!(
        std::fs::read_link(root.join("lib/libalpha.so")).unwrap(),
        Path::new("libalpha.so.1")
    );
    assert_no_host_paths(staging.path(), &[work.path(), staging.path()]);

    // The record names the file, not where it was on the host.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("conda-meta/alpha-1.0-h0_0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["url"], "file:///alpha-1.0-h0_0.tar.bz2");
    let mode = std::fs::metadata(root.join("conda-meta/alpha-1.0-h0_0.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(record["fn"], "alpha-1.0-h0_0.tar.bz2");
    assert_eq!(
        record["sha256"],
        hex::encode(Sha256::digest(std::fs::read(&alpha_file).unwrap()))
    );
    for field in [
        "extracted_package_dir",
        "package_tarball_full_path",
        "link",
        "indexed_timestamp",
    ] {
        assert!(record.get(field).is_none(), "{field} in {record}");
    }
    let locked_beta = outcome.installed.iter().find(|p| p.name == "beta").unwrap();
    assert_eq!(locked_beta.url, "file:///beta-2.0-h0_0.conda");
    assert_eq!(
        locked_beta.sha256,
        hex::encode(Sha256::digest(std::fs::read(&beta_file).unwrap()))
    );
    assert!(locked_beta.md5.is_some());
}

#[tokio::test]
async fn placeholder_is_rewritten_to_the_image_prefix() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let (staging, _) = run(
        &[],
        None,
        &request(&[&channel], &["beta"]),
        &work.path().join("cache"),
    )
    .await;
    let beta = std::fs::read_to_string(staging.path().join("opt/conda/bin/beta")).unwrap();
    assert_eq!(
        beta,
        "#!/opt/conda/bin/sh\nexec /opt/conda/bin/alpha \"$@\"\n"
    );
    let alpha = std::fs::read_to_string(staging.path().join("opt/conda/bin/alpha")).unwrap();
    assert_eq!(
        alpha,
        "#!/opt/conda/bin/sh\necho alpha from /opt/conda/share/alpha\n"
    );
    let mode = std::fs::metadata(staging.path().join("opt/conda/bin/beta"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "scripts stay executable");
    assert_no_host_paths(staging.path(), &[work.path(), staging.path()]);
}

#[tokio::test]
async fn local_channel_unindexed_and_indexed_picks_the_newest() {
    for indexed in [false, true] {
        let work = tempfile::tempdir().unwrap();
        let channel = make_channel(work.path());
        if indexed {
            index_channel(&channel);
        }
        let before = tree(&channel);
        let (staging, outcome) = run(
            &[],
            None,
            &request(&[&channel], &["alpha"]),
            &work.path().join("cache"),
        )
        .await;
        assert_eq!(names(&outcome), ["alpha=1.1"], "indexed={indexed}");
        let alpha = &outcome.installed[0];
        assert_eq!(alpha.url, "file:///channel/linux-64/alpha-1.1-h0_0.conda");
        assert_eq!(alpha.subdir, "linux-64");
        assert_eq!(
            std::fs::read_to_string(staging.path().join("opt/conda/share/alpha/version.txt"))
                .unwrap(),
            "1.1"
        );
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                staging
                    .path()
                    .join("opt/conda/conda-meta/alpha-1.1-h0_0.json"),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(record["channel"], "file:///channel");
        // Nothing was written into the user's channel directory.
        assert_eq!(tree(&channel), before, "indexed={indexed}");
    }
}

#[tokio::test]
async fn installed_packages_are_kept_and_only_the_delta_is_linked() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let cache = work.path().join("cache");

    // The "image": alpha 1.0 installed by an earlier step.
    let (base, first) = run(&[], None, &request(&[&channel], &["alpha=1.0"]), &cache).await;
    assert_eq!(names(&first), ["alpha=1.0"]);
    let installed = meta_docs(base.path());

    let (staging, outcome) = run(&installed, None, &request(&[&channel], &["beta"]), &cache).await;
    assert_eq!(names(&outcome), ["alpha=1.0", "beta=2.0"]);
    assert_eq!(outcome.added, ["beta=2.0=h0_0"]);
    assert!(outcome.changed.is_empty() && outcome.removed.is_empty());
    assert!(outcome.whiteouts.is_empty(), "{:?}", outcome.whiteouts);
    assert_eq!(
        files(staging.path()),
        [
            "opt/conda/bin/beta",
            "opt/conda/conda-meta/beta-2.0-h0_0.json",
            "opt/conda/share/beta.txt",
        ]
    );
    // The kept alpha is the image's record, unchanged.
    assert_eq!(
        outcome.installed[0], first.installed[0],
        "alpha stays as installed"
    );

    // Nothing to do: nothing staged.
    let (noop, outcome) = run(&installed, None, &request(&[&channel], &["alpha"]), &cache).await;
    assert_eq!(names(&outcome), ["alpha=1.0"]);
    assert!(outcome.added.is_empty() && outcome.whiteouts.is_empty());
    assert!(files(noop.path()).is_empty(), "{:?}", files(noop.path()));
}

#[tokio::test]
async fn installed_packages_constrain_the_solve() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    Pkg::new("delta", "1.0")
        .depends("alpha <1.1")
        .file("share/delta.txt", "delta")
        .tar_bz2(&channel.join("linux-64"));
    let cache = work.path().join("cache");
    let (base, _) = run(&[], None, &request(&[&channel], &["delta"]), &cache).await;
    let installed = meta_docs(base.path());
    // From now on delta exists only in the image (as with a base image's packages).
    std::fs::remove_file(channel.join("linux-64/delta-1.0-h0_0.tar.bz2")).unwrap();

    // beta needs alpha >=1: alpha 1.0 (kept for delta) will do.
    let (_, outcome) = run(&installed, None, &request(&[&channel], &["beta"]), &cache).await;
    assert_eq!(names(&outcome), ["alpha=1.0", "beta=2.0", "delta=1.0"]);

    // An upgrade that breaks an installed package is refused, with the solver's reason.
    let message = run_err_over(&installed, &request(&[&channel], &["alpha=1.1"]), &cache).await;
    assert!(
        message.contains("alpha") && message.contains("delta"),
        "{message}"
    );

    // The image's packages need a virtual package this build does not provide: say so.
    let mut record: serde_json::Value = serde_json::from_slice(&installed[1]).unwrap();
    assert_eq!(record["name"], "delta");
    record["depends"] = serde_json::json!(["alpha <1.1", "__cuda >=12"]);
    let with_cuda = vec![installed[0].clone(), serde_json::to_vec(&record).unwrap()];
    let message = run_err_over(&with_cuda, &request(&[&channel], &["beta"]), &cache).await;
    assert!(
        message.contains("__cuda") && message.contains("CONDA_OVERRIDE_CUDA"),
        "{message}"
    );
}

#[tokio::test]
async fn upgrade_whiteouts_the_old_files_and_record() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let cache = work.path().join("cache");
    let (base, _) = run(&[], None, &request(&[&channel], &["alpha=1.0"]), &cache).await;
    let installed = meta_docs(base.path());

    let (staging, outcome) = run(
        &installed,
        None,
        &request(&[&channel], &["alpha=1.1"]),
        &cache,
    )
    .await;
    assert_eq!(names(&outcome), ["alpha=1.1"]);
    assert_eq!(
        outcome.changed,
        [(
            "alpha".to_string(),
            "1.0=h0_0".to_string(),
            "1.1=h0_0".to_string()
        )]
    );
    assert_eq!(
        outcome.whiteouts,
        [
            "opt/conda/conda-meta/alpha-1.0-h0_0.json",
            "opt/conda/lib/alpha-1.0-only.txt",
        ]
    );
    assert!(staging
        .path()
        .join("opt/conda/conda-meta/alpha-1.1-h0_0.json")
        .is_file());
    assert_eq!(
        std::fs::read_to_string(staging.path().join("opt/conda/share/alpha/version.txt")).unwrap(),
        "1.1"
    );
}

#[tokio::test]
async fn noarch_python_goes_to_the_images_site_packages() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let cache = work.path().join("cache");
    let (staging, outcome) = run(
        &[],
        Some((3, 11)),
        &request(&[&channel], &["gamma"]),
        &cache,
    )
    .await;
    assert_eq!(names(&outcome), ["gamma=0.3"]);
    assert_eq!(outcome.installed[0].subdir, "noarch");
    assert_eq!(
        std::fs::read_to_string(
            staging
                .path()
                .join("opt/conda/lib/python3.11/site-packages/gamma/__init__.py")
        )
        .unwrap(),
        "VALUE = 3\n"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            staging
                .path()
                .join("opt/conda/conda-meta/gamma-0.3-py_0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["files"],
        serde_json::json!(["lib/python3.11/site-packages/gamma/__init__.py"])
    );

    // A python package in the prefix decides over the hint.
    let python = serde_json::json!({
        "name": "python", "version": "3.12.1", "build": "h0_0_cpython", "build_number": 0,
        "subdir": "linux-64", "depends": [], "fn": "python-3.12.1-h0_0_cpython.conda",
        "url": "https://conda.anaconda.org/conda-forge/linux-64/python-3.12.1-h0_0_cpython.conda",
        "channel": "https://conda.anaconda.org/conda-forge",
        "md5": "0123456789abcdef0123456789abcdef",
        "files": ["bin/python3.12"],
        "paths_data": {"paths_version": 1, "paths": [
            {"_path": "bin/python3.12", "path_type": "hardlink", "size_in_bytes": 1}
        ]},
        "requested_spec": "None",
    });
    let installed = vec![serde_json::to_vec(&python).unwrap()];
    let (staging, outcome) = run(
        &installed,
        Some((3, 11)),
        &request(&[&channel], &["gamma"]),
        &cache,
    )
    .await;
    assert_eq!(names(&outcome), ["gamma=0.3", "python=3.12.1"]);
    assert!(staging
        .path()
        .join("opt/conda/lib/python3.12/site-packages/gamma/__init__.py")
        .is_file());

    // Without any Python version it is an error that says so.
    let message = run_err(&request(&[&channel], &["gamma"]), &cache).await;
    assert!(
        message.contains("gamma") && message.contains("Python"),
        "{message}"
    );
}

#[tokio::test]
async fn locked_install_reproduces_the_same_bytes_without_solving() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let (first, outcome) = run(
        &[],
        None,
        &request(&[&channel], &["beta", "alpha=1.0"]),
        &work.path().join("cache"),
    )
    .await;
    assert_eq!(names(&outcome), ["alpha=1.0", "beta=2.0"]);

    // runtime.lock round trip.
    let lock_text = serde_json::to_string(&outcome.installed).unwrap();
    let locked: Vec<LockedCondaPackage> = serde_json::from_str(&lock_text).unwrap();

    // A fresh cache, the channel copied elsewhere, specs that could never solve: the lock
    // alone decides (alpha 1.1 is newer and would win a solve).
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = copy_dir(&channel, &elsewhere.path().join("channel"));
    let mut req = request(&[&copy], &["alpha", "no-such-package"]);
    req.locked = Some(locked.clone());
    let (second, again) = run(&[], None, &req, &elsewhere.path().join("cache")).await;
    assert_eq!(again.installed, outcome.installed);
    assert_eq!(again.added, outcome.added);
    assert_eq!(tree_hash(first.path()), tree_hash(second.path()));
    assert_eq!(tree(first.path()), tree(second.path()));

    // Locked over an image that has beta and alpha already: beta leaves the lock → removed.
    let installed = meta_docs(first.path());
    let only_alpha: Vec<_> = locked
        .iter()
        .filter(|p| p.name == "alpha")
        .cloned()
        .collect();
    req.locked = Some(only_alpha);
    let (third, outcome) = run(&installed, None, &req, &elsewhere.path().join("cache")).await;
    assert_eq!(names(&outcome), ["alpha=1.0"]);
    assert_eq!(outcome.removed, ["beta=2.0=h0_0"]);
    assert_eq!(
        outcome.whiteouts,
        [
            "opt/conda/bin/beta",
            "opt/conda/conda-meta/beta-2.0-h0_0.json",
            "opt/conda/share/beta.txt",
        ]
    );
    assert!(files(third.path()).is_empty());

    // A lock entry whose archive is nowhere is an error naming it.
    let mut bad = locked.clone();
    bad[0].sha256 = "00".repeat(32);
    req.locked = Some(bad);
    let message = run_err(&req, &elsewhere.path().join("cache")).await;
    assert!(message.contains("alpha=1.0=h0_0"), "{message}");
}

#[tokio::test]
async fn copies_of_a_channel_give_identical_conda_meta() {
    let work = tempfile::tempdir().unwrap();
    let original = make_channel(work.path());
    let mut results = Vec::new();
    for indexed in [false, true] {
        for _ in 0..2 {
            let place = tempfile::tempdir().unwrap();
            let copy = copy_dir(&original, &place.path().join("channel"));
            if indexed {
                index_channel(&copy);
            }
            let (staging, outcome) = run(
                &[],
                Some((3, 11)),
                &request(&[&copy], &["beta", "gamma"]),
                &place.path().join("cache"),
            )
            .await;
            assert_no_host_paths(staging.path(), &[place.path(), staging.path()]);
            results.push((
                meta_docs(staging.path()),
                outcome.installed,
                tree_hash(staging.path()),
            ));
        }
    }
    for other in &results[1..] {
        assert_eq!(other.0, results[0].0, "conda-meta bytes differ");
        assert_eq!(other.1, results[0].1);
        assert_eq!(other.2, results[0].2);
    }
}

#[tokio::test]
async fn package_file_dependencies_come_from_channels() {
    // The arcgis_dl_backbones case: one offline file, installed next to what the image has.
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let file = beta().tar_bz2(&work.path().join("files"));
    let mut req = request(&[&channel], &[]);
    req.package_files = vec![file];
    let (_staging, outcome) = run(&[], None, &req, &work.path().join("cache")).await;
    assert_eq!(names(&outcome), ["alpha=1.1", "beta=2.0"]);
    let beta = outcome.installed.iter().find(|p| p.name == "beta").unwrap();
    assert_eq!(beta.url, "file:///beta-2.0-h0_0.tar.bz2");
}

#[tokio::test]
async fn remote_channel_over_http_and_locked_download() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    index_channel(&channel);
    let base = serve(work.path());
    let url = format!("{base}/channel");
    let mut req = request(&[], &["beta"]);
    req.channels = vec![url.clone()];
    let (first, outcome) = run(&[], None, &req, &work.path().join("cache")).await;
    assert_eq!(names(&outcome), ["alpha=1.1", "beta=2.0"]);
    let alpha = &outcome.installed[0];
    assert_eq!(alpha.url, format!("{url}/linux-64/alpha-1.1-h0_0.conda"));

    // Locked: straight from the URLs in the lock, no channel needed.
    let mut req = request(&[], &[]);
    req.locked = Some(outcome.installed.clone());
    let fresh = tempfile::tempdir().unwrap();
    let (second, again) = run(&[], None, &req, fresh.path()).await;
    assert_eq!(again.installed, outcome.installed);
    assert_eq!(tree(first.path()), tree(second.path()));
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let work = tempfile::tempdir().unwrap();
    let channel = make_channel(work.path());
    let cache = work.path().join("cache");

    let message = run_err(&request(&[&channel], &["zeta"]), &cache).await;
    assert!(message.contains("zeta"), "{message}");

    let message = run_err(&request(&[&channel], &["alpha >=5"]), &cache).await;
    assert!(message.contains("alpha"), "{message}");

    let message = run_err(&request(&[&channel], &["alpha[version="]), &cache).await;
    assert!(
        message.contains("bad match spec") && message.contains("alpha[version="),
        "{message}"
    );

    let missing = work.path().join("no-channel-here");
    let message = run_err(&request(&[&missing], &["alpha"]), &cache).await;
    assert!(
        message.contains("does not exist") && message.contains("no-channel-here"),
        "{message}"
    );

    let not_a_channel = work.path().join("empty");
    std::fs::create_dir_all(&not_a_channel).unwrap();
    let message = run_err(&request(&[&not_a_channel], &["alpha"]), &cache).await;
    assert!(message.contains("not a conda channel"), "{message}");

    let corrupt = work.path().join("broken-1.0-0.tar.bz2");
    std::fs::write(&corrupt, b"this is not bzip2").unwrap();
    let mut req = request(&[], &[]);
    req.package_files = vec![corrupt];
    let message = run_err(&req, &cache).await;
    assert!(
        message.contains("corrupt") && message.contains("broken-1.0-0.tar.bz2"),
        "{message}"
    );

    let mut req = request(&[&channel], &["alpha"]);
    req.prefix = "opt/conda".into();
    let message = run_err(&req, &cache).await;
    assert!(message.contains("prefix"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Plumbing

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    to.to_path_buf()
}

/// A tiny HTTP/1.1 server for the files below `root`; returns `http://127.0.0.1:<port>`.
fn serve(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
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
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let response = match (path.contains(".."), std::fs::read(&file)) {
                    (false, Ok(body)) if file.is_file() => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
