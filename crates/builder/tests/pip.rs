//! The pip step against the real uv binary and PyPI, over a parent file system laid out by
//! hand (one snapshot directory).

use std::fs;
use std::path::Path;

use nbrt_build::snapshot::MergedView;
use nbrt_build::steps::pip::uv::{install, resolve, PipRequest};

const SITE: &str = "opt/conda/lib/python3.11/site-packages";

fn parent_with_old_six(root: &Path) {
    let site = root.join(SITE);
    fs::create_dir_all(site.join("six-1.16.0.dist-info")).unwrap();
    fs::write(site.join("six.py"), "# six 1.16\n").unwrap();
    fs::write(
        site.join("six-1.16.0.dist-info/METADATA"),
        "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n",
    )
    .unwrap();
    fs::write(site.join("six-1.16.0.dist-info/RECORD"), "six.py,,\nsix-1.16.0.dist-info/METADATA,,\nsix-1.16.0.dist-info/RECORD,,\nsix_old_helper.py,,\n").unwrap();
    fs::write(site.join("six_old_helper.py"), "").unwrap();
    fs::create_dir_all(root.join("opt/conda/bin")).unwrap();
}

/// uv's dry run on the parent's distributions names what an install adds or changes,
/// downloading no wheel.
#[test]
fn resolving_without_installing_names_what_an_install_adds_and_changes() {
    let Some((tmp, view)) = uv_and_old_six() else {
        return;
    };
    let req = PipRequest {
        prefix: "/opt/conda".into(),
        packages: vec!["six==1.17.0".into(), "pyflakes==3.2.0".into()],
        ..Default::default()
    };
    let cache = tmp.path().join("cache");
    let (python, pins) = resolve(&view, &req, &cache).unwrap();
    assert_eq!(python, (3, 11));
    let pins: Vec<String> = pins
        .iter()
        .map(|p| format!("{}=={}", p.name, p.version))
        .collect();
    assert_eq!(pins, ["pyflakes==3.2.0", "six==1.17.0"]);
    let wheels = walk(&cache)
        .into_iter()
        .filter(|e| e.ends_with(".py") || e.ends_with(".whl"))
        .count();
    assert_eq!(wheels, 0, "a dry run downloads no wheel");

    // What the install then does is what the dry run said.
    let staging = tmp.path().join("staging");
    fs::create_dir_all(&staging).unwrap();
    let out = install(&view, &req, &staging, &cache, &[], &mut Vec::new()).unwrap();
    let mut installed: Vec<String> = out.added.clone();
    installed.extend(out.changed.iter().map(|(n, _, v)| format!("{n}=={v}")));
    installed.sort();
    assert_eq!(installed, pins);
}

/// A parent with six 1.16 ([`parent_with_old_six`]) in a temporary directory, as a view;
/// `None` without uv.
fn uv_and_old_six() -> Option<(tempfile::TempDir, MergedView)> {
    if !nbrt_testkit::require(
        "uv",
        &["--version"],
        "uv (scripts/setup installs it from PyPI)",
    ) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    parent_with_old_six(&lower);
    Some((tmp, MergedView::new(vec![lower])))
}

#[test]
fn installs_for_the_image_python_and_records_what_changed() {
    let Some((tmp, view)) = uv_and_old_six() else {
        return;
    };
    let staging = tmp.path().join("staging");
    fs::create_dir_all(&staging).unwrap();
    let req = PipRequest {
        prefix: "/opt/conda".into(),
        packages: vec!["six==1.17.0".into(), "pyflakes==3.2.0".into()],
        ..Default::default()
    };
    let mut log = Vec::new();
    let out = install(
        &view,
        &req,
        &staging,
        &tmp.path().join("cache"),
        &[],
        &mut log,
    )
    .unwrap();
    assert_eq!(out.python, (3, 11));
    assert_eq!(out.added, ["pyflakes==3.2.0"]);
    assert_eq!(
        out.changed,
        [(
            "six".to_string(),
            "1.16.0".to_string(),
            "1.17.0".to_string()
        )]
    );
    // The replaced distribution's files the new layer does not overwrite are whited out.
    assert!(
        out.whiteouts
            .contains(&format!("{SITE}/six-1.16.0.dist-info")),
        "{:?}",
        out.whiteouts
    );
    assert!(
        out.whiteouts.contains(&format!("{SITE}/six_old_helper.py")),
        "{:?}",
        out.whiteouts
    );
    assert!(
        !out.whiteouts.contains(&format!("{SITE}/six.py")),
        "rewritten by the layer: {:?}",
        out.whiteouts
    );
    // The console script sits in the prefix with the image's Python.
    let script = fs::read_to_string(staging.join("opt/conda/bin/pyflakes")).unwrap();
    assert!(script.starts_with("#!/opt/conda/bin/python\n"), "{script}");
    assert!(!staging.join(SITE).join("bin").exists());
    let record =
        fs::read_to_string(staging.join(SITE).join("pyflakes-3.2.0.dist-info/RECORD")).unwrap();
    assert!(record.contains("../../../bin/pyflakes,sha256="), "{record}");
    // No host path and no lock or bytecode anywhere.
    let host = std::env::temp_dir().display().to_string();
    for entry in walk(&staging) {
        assert!(
            !entry.ends_with(".lock") && !entry.contains("__pycache__"),
            "{entry}"
        );
        if let Ok(text) = fs::read_to_string(&entry) {
            assert!(
                !text.contains(&host) && !text.contains("/root/"),
                "{entry} mentions a host path"
            );
        }
    }
    // A bad requirement is refused with uv's reason.
    let bad = PipRequest {
        prefix: "/opt/conda".into(),
        packages: vec!["no-such-package-nbrt-test==0.0.1".into()],
        ..Default::default()
    };
    let staging2 = tmp.path().join("staging2");
    fs::create_dir_all(&staging2).unwrap();
    let err = install(
        &view,
        &bad,
        &staging2,
        &tmp.path().join("cache"),
        &[],
        &mut log,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-package-nbrt-test"), "{err}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
