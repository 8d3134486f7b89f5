//! The stock stacks, read without running them, against what their running containers say:
//! the manifest agrees with `pip list` and `dpkg-query -W`; every profile meant for them
//! passes, statically and live; the diff from jupyter to scipy is exactly scipy's additions.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use nbrt_inspect::check::{Profile, Status};
use nbrt_inspect::packages::{python::normalize, Source};

fn docker_run(image: &str, entrypoint: &str, args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", entrypoint, image])
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "{entrypoint} {args:?} in {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn manifest_agrees_with_pip_list_and_dpkg_query() {
    let Some(dir) = common::stock() else { return };
    if !nbrt_testkit::require_docker() {
        return;
    }
    let store = common::open(dir);
    for name in ["base:latest", "jupyter:latest", "scipy:latest"] {
        let r = common::read(&store, name);
        let reference = common::in_docker(&store, name);

        let pip: serde_json::Value = serde_json::from_str(&docker_run(
            &reference,
            "/opt/conda/bin/python",
            &["-m", "pip", "list", "--format", "json"],
        ))
        .unwrap();
        let want: BTreeSet<(String, String)> = pip
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    normalize(p["name"].as_str().unwrap()),
                    p["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        // pip lists every distribution; the manifest lists one with a conda record (pip
        // itself, whose record base's [python] step writes) as conda lists it: a conda package.
        let names: BTreeSet<String> = want.iter().map(|(n, _)| n.clone()).collect();
        let got: BTreeSet<(String, String)> = r
            .packages
            .iter()
            .filter(|p| p.location == "/opt/conda")
            .filter(|p| {
                p.source == Source::Pypi
                    || (p.source == Source::Conda && names.contains(&normalize(&p.name)))
            })
            .map(|p| (normalize(&p.name), p.version.clone()))
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{name}: manifest vs pip list");

        let dpkg = docker_run(&reference, "dpkg-query", &["-W"]);
        let want: BTreeSet<(String, String)> = dpkg
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, v)| {
                let n = n.split(':').next().unwrap_or(n);
                (n.to_string(), v.to_string())
            })
            .collect();
        let got: BTreeSet<(String, String)> = r
            .packages
            .iter()
            .filter(|p| p.source == Source::Debian)
            .map(|p| (p.name.clone(), p.version.clone()))
            .collect();
        assert!(want.len() > 50, "{dpkg}");
        assert_eq!(got, want, "{name}: manifest vs dpkg-query -W");
    }
}

#[test]
fn profiles_pass_for_the_stock_images() {
    let Some(dir) = common::stock() else { return };
    let store = common::open(dir);
    for (name, profiles) in [
        (
            "jupyter:latest",
            &[
                Profile::Kubeflow,
                Profile::DockerStacks,
                Profile::Jupyterhub,
                Profile::Arcgis,
            ][..],
        ),
        (
            "scipy:latest",
            &[
                Profile::Kubeflow,
                Profile::DockerStacks,
                Profile::Jupyterhub,
                Profile::Arcgis,
            ][..],
        ),
    ] {
        for profile in profiles {
            let report = common::check(&store, name, *profile, true);
            assert!(
                report.passed,
                "{name} should meet {}:\n{}",
                profile.as_str(),
                common::show(&report)
            );
            assert!(
                report
                    .results
                    .iter()
                    .any(|r| r.live && r.status == Status::Pass)
                    || nbrt_testkit::skipping_allowed()
            );
        }
    }
}

#[test]
fn diff_from_jupyter_to_scipy_is_what_scipy_adds() {
    let Some(dir) = common::stock() else { return };
    let store = common::open(dir);
    let a = common::read(&store, "jupyter:latest");
    let b = common::read(&store, "scipy:latest");
    let d = nbrt_inspect::diff::diff(
        (&a.image, &a.view, &a.packages),
        (&b.image, &b.view, &b.packages),
    );
    assert_eq!(
        d.shared_layers,
        a.image.layers().len(),
        "scipy is built on jupyter"
    );
    assert!(d.packages_removed.is_empty(), "{:?}", d.packages_removed);
    assert!(d.packages_changed.is_empty(), "{:?}", d.packages_changed);
    let names = |pkgs: &[nbrt_inspect::packages::Package]| -> BTreeSet<String> {
        pkgs.iter().map(|p| normalize(&p.name)).collect()
    };
    let expected: BTreeSet<String> = names(&b.packages)
        .difference(&names(&a.packages))
        .cloned()
        .collect();
    let added: BTreeSet<String> = d
        .packages_added
        .iter()
        .map(|p| normalize(&p.name))
        .collect();
    assert_eq!(added, expected);
    for requested in [
        "numpy",
        "pandas",
        "scipy",
        "matplotlib",
        "scikit-learn",
        "seaborn",
        "ipywidgets",
    ] {
        assert!(added.contains(requested), "{requested} not in {added:?}");
    }
    assert!(d.packages_added.iter().all(|p| p.source == Source::Pypi));
    // Files come only from scipy's own layers: the environment.
    assert!(
        d.files_removed.is_empty(),
        "{:?}",
        &d.files_removed[..d.files_removed.len().min(10)]
    );
    assert!(!d.files_added.is_empty());
    assert!(
        d.files_added.iter().all(|f| f.starts_with("/opt/conda/")),
        "{:?}",
        d.files_added
            .iter()
            .filter(|f| !f.starts_with("/opt/conda/"))
            .take(10)
            .collect::<Vec<_>>()
    );
}

#[test]
fn cached_package_list_is_the_same_as_reading_the_layers() {
    let Some(dir) = common::stock() else { return };
    let store = common::open(dir);
    let r = common::read(&store, "scipy:latest");
    let progress = nbrt_oci::Progress::hidden();
    // First call reads (or finds) the cache, second one surely comes from it.
    let first = nbrt_inspect::image_packages(&store, &r.image, &progress).unwrap();
    let cached = nbrt_inspect::image_packages(&store, &r.image, &progress).unwrap();
    assert_eq!(first, r.packages);
    assert_eq!(cached, r.packages);
    let file = std::fs::read_dir(store.cache(nbrt_oci::Bucket::Inspect))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("packages-v")
                && name.ends_with(&format!("{}.json", r.image.digest().hex()))
        });
    assert!(file, "no cached package list for {}", r.image.digest());
}
