//! The stock stacks (`stacks/`): built by `nbrt build` without a Docker daemon, then run in
//! Docker the way users meet them — JupyterLab answering, a kernel running numpy — and
//! extended the way seed 000 extends an ArcGIS runtime.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nbrt_testkit::conda_pkg::Pkg;
use nbrt_testkit::container::Container;
use serde_json::Value;

mod common;
use common::{nbrt, ok};

fn can_build() -> bool {
    nbrt_testkit::require("mmdebstrap", &["--version"], "mmdebstrap")
        && nbrt_testkit::require("runc", &["--version"], "runc")
        && rustix::process::geteuid().is_root()
}

/// The stock stacks (but the large machine-learning ones,
/// [`nbrt_testkit::stock::NOT_IN_FULL_BUILDS`]) built once per test process into a fresh store, with `DOCKER_HOST`
/// pointing at a socket that records any connection: a build must never reach a daemon.
/// The store is under the fixture directory, emptied at the start of each run (a static is
/// never dropped, so a temporary directory would stay behind after every run).
struct Built {
    store: PathBuf,
    /// The copy of `stacks/` built (see [`nbrt_testkit::copy_of_stacks`]).
    stacks: PathBuf,
    reports: Value,
}

fn built() -> Option<&'static Built> {
    static BUILT: OnceLock<Option<Built>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            if !can_build() {
                return None;
            }
            let dir = nbrt_testkit::fixture_dir().join("stacks-test");
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            std::fs::create_dir_all(&dir).unwrap();
            let store = dir.join("store");
            let socket = dir.join("docker.sock");
            let trap = UnixListener::bind(&socket).unwrap();
            trap.set_nonblocking(true).unwrap();
            let stacks = nbrt_testkit::copy_of_stacks(&dir.join("stacks"));
            for name in nbrt_testkit::stock::NOT_IN_FULL_BUILDS {
                std::fs::remove_dir_all(stacks.join(name)).unwrap();
            }
            let build = |extra: &[&str]| {
                Command::new(env!("CARGO_BIN_EXE_nbrt"))
                    .arg("--store")
                    .arg(&store)
                    .args(["build", "--json"])
                    .args(extra)
                    .arg(&stacks)
                    .envs(nbrt_testkit::builtin_envs())
                    .env("DOCKER_HOST", format!("unix://{}", socket.display()))
                    .output()
                    .unwrap()
            };
            let mut out = build(&[]);
            if out.status.code() == Some(3) {
                eprintln!(
                    "{}: {}",
                    nbrt_testkit::LOCKS_REFRESHED,
                    String::from_utf8_lossy(&out.stderr)
                );
                out = build(&["--update-lock"]);
            }
            let stdout = ok(out, "nbrt build stacks/");
            assert!(
                trap.accept().is_err(),
                "nbrt build connected to DOCKER_HOST: builds must not need a Docker daemon"
            );
            let reports: Value = serde_json::from_str(&stdout).unwrap();
            Some(Built {
                store,
                stacks,
                reports,
            })
        })
        .as_ref()
}

fn report<'a>(reports: &'a Value, name: &str) -> &'a Value {
    reports
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no report for {name} in {reports}"))
}

/// `nbrt load` an image of `store` into Docker under a name unique to this test run.
fn load(store: &Path, image: &str) -> String {
    let name = format!("nbrt-test/{image}:{}", std::process::id());
    ok(
        nbrt(store, &["tag", &format!("{image}:latest"), &name]),
        "nbrt tag",
    );
    ok(nbrt(store, &["load", &name]), "nbrt load");
    name
}

#[test]
fn stock_stacks_build_without_docker_and_scipy_runs_a_kernel() {
    let Some(b) = built() else { return };
    let names: Vec<&str> = b
        .reports
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    // Parents first; other stock runtimes on base (kernel images) may come between.
    let notebook: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| ["base", "jupyter", "scipy"].contains(n))
        .collect();
    assert_eq!(notebook, ["base", "jupyter", "scipy"], "parents first");
    assert_eq!(names.first(), Some(&"base"), "parents first: {names:?}");
    if !nbrt_testkit::require_docker() {
        return;
    }
    let image = load(&b.store, "scipy");
    let (c, jupyter) = Container::jupyter(&image);
    let kernel = jupyter.start_kernel().unwrap();
    let run = jupyter
        .execute(
            &kernel,
            "import numpy, pandas; print(numpy.__version__)",
            Duration::from_secs(120),
        )
        .unwrap();
    assert_eq!(run.error, None, "{run:?}");
    let in_image = c.exec(&["python", "-c", "import numpy; print(numpy.__version__)"]);
    assert_eq!(run.stdout.trim(), in_image.trim());
    assert!(run.stdout.trim().starts_with('2'), "numpy 2: {run:?}");

    // The docker-stacks layout the stacks promise.
    assert_eq!(
        c.exec(&["id"]).trim(),
        "uid=1000(jovyan) gid=100(users) groups=100(users)"
    );
    let owners = c.exec(&["stat", "-c", "%U:%G %a", "/opt/conda", "/home/jovyan"]);
    assert_eq!(owners, "jovyan:users 2775\njovyan:users 2775\n");
    assert_eq!(
        c.exec(&[
            "sh",
            "-c",
            "echo $CONDA_DIR; command -v python; command -v jupyter"
        ]),
        "/opt/conda\n/opt/conda/bin/python\n/opt/conda/bin/jupyter\n"
    );
    let config = c.exec(&["cat", "/proc/1/cmdline"]);
    assert!(config.starts_with("/usr/local/bin/nbrt-init"), "{config:?}");

    // The pip steps left bytecode the image's Python accepts: hash-checked pycs (flags 3,
    // PEP 552) with the image's paths in the code, for jupyter's packages and scipy's.
    const PYC_CHECK: &str = r#"
import importlib.util, marshal, sys
for name in sys.argv[1:]:
    src = importlib.util.find_spec(name).origin
    data = open(importlib.util.cache_from_source(src), "rb").read()
    assert data[:4] == importlib.util.MAGIC_NUMBER, name
    print(name, int.from_bytes(data[4:8], "little"), marshal.loads(data[16:]).co_filename)
"#;
    let pycs = c.exec(&["python", "-c", PYC_CHECK, "numpy", "jupyter_server"]);
    assert_eq!(
        pycs,
        "numpy 3 /opt/conda/lib/python3.13/site-packages/numpy/__init__.py\n\
         jupyter_server 3 /opt/conda/lib/python3.13/site-packages/jupyter_server/__init__.py\n"
    );
}

/// Issue 20: the CPU-only tensorflow stack (built once per run into the shared stock store)
/// meets the profiles Kubeflow's jupyter-tensorflow must, statically and live, and a kernel
/// driven over Jupyter's REST and websocket API computes a matrix product with TensorFlow.
#[test]
fn tensorflow_meets_kubeflow_live_and_computes_a_matrix_product() {
    let Some(store) = nbrt_testkit::stock::store_with("tensorflow") else {
        return;
    };
    let store = store.root().to_path_buf();
    for profile in ["kubeflow", "docker-stacks", "jupyterhub"] {
        ok(
            nbrt(
                &store,
                &["check", "--profile", profile, "tensorflow:latest"],
            ),
            &format!("nbrt check --profile {profile} tensorflow"),
        );
    }
    let Some(image) = nbrt_testkit::stock::docker_image("tensorflow") else {
        return;
    };
    // About 1.5 GB in the engine, needed by no other test: gone when this one ends (dropped
    // after the container, declared before it).
    let _removed = nbrt_testkit::stock::RemovedFromDocker(image.clone());
    let report = check_passes(&store, "kubeflow", true, "tensorflow:latest");
    let live_passes = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["live"] == true && r["status"] == "pass")
        .count();
    assert!(live_passes > 0, "no live check ran: {report}");

    let (c, jupyter) = Container::jupyter(&image);
    let kernel = jupyter.start_kernel().unwrap();
    let run = jupyter
        .execute(
            &kernel,
            "import tensorflow as tf\n\
             a = tf.constant([[1.0, 2.0], [3.0, 4.0]])\n\
             b = tf.constant([[5.0, 6.0], [7.0, 8.0]])\n\
             print(tf.__version__)\n\
             print(tf.config.list_physical_devices('GPU'))\n\
             print(tf.linalg.matmul(a, b).numpy().tolist())",
            Duration::from_secs(300),
        )
        .unwrap();
    assert_eq!(run.error, None, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[1..],
        ["[]", "[[19.0, 22.0], [43.0, 50.0]]"],
        "no GPU, and the product: {run:?}"
    );
    // The TensorFlow the kernel imported is the CPU-only wheel the stack installs.
    let wheel = c.exec(&[
        "python",
        "-c",
        "import importlib.metadata as m; print(m.version('tensorflow-cpu'))",
    ]);
    assert_eq!(lines[0], wheel.trim(), "{run:?}");
}

/// `nbrt check --profile PROFILE [--live] --json IMAGE` of the stock store, passed: its
/// report.
fn check_passes(store: &Path, profile: &str, live: bool, image: &str) -> Value {
    let mut args = vec!["check", "--profile", profile, "--json", image];
    if live {
        args.insert(3, "--live");
    }
    let out = ok(nbrt(store, &args), &format!("nbrt {}", args.join(" ")));
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["passed"], true, "{report}");
    report
}

/// Check `id` of a report of `nbrt check --json` passed, and its message says `words`.
fn assert_passed_saying(report: &Value, id: &str, words: &str) {
    let result = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no {id} check: {report}"));
    assert_eq!(result["status"], "pass", "{report}");
    assert!(
        result["message"].as_str().unwrap().contains(words),
        "{id} does not say {words:?}: {report}"
    );
}

/// The code-server stacks: `codeserver-python` (and `codeserver` under it) meets Kubeflow's
/// static checks as a web server Kubeflow strips the prefix for, and live: started as
/// Kubeflow starts it (NB_PREFIX, an empty home volume), code-server answers /healthz on
/// 8888 as jovyan. The site's side (its proxy) is crates/site/tests/web_server.rs.
#[test]
fn codeserver_python_meets_kubeflow_live_with_node_and_ipykernel() {
    let Some(store) = nbrt_testkit::stock::store_with("codeserver-python") else {
        return;
    };
    let store = store.root().to_path_buf();
    for image in ["codeserver:latest", "codeserver-python:latest"] {
        let report = check_passes(&store, "kubeflow", false, image);
        assert_passed_saying(&report, "nb-prefix", "http-rewrite-uri: /");
    }
    if !nbrt_testkit::require_docker() {
        return;
    }
    let report = check_passes(&store, "kubeflow", true, "codeserver-python:latest");
    assert_passed_saying(&report, "live.nb-prefix", "GET /healthz");

    // What the Python extension needs, and Node.js for the terminal.
    let image = load(&store, "codeserver-python");
    let _removed = nbrt_testkit::stock::RemovedFromDocker(image.clone());
    let (c, _port) = Container::run(&image, &[]);
    let versions = c.exec(&[
        "sh",
        "-c",
        "python -c 'import ipykernel; print(ipykernel.__version__)' && node --version && code-server --version",
    ]);
    let lines: Vec<&str> = versions.lines().collect();
    assert!(lines.len() >= 3, "{versions}");
    assert!(lines[1].starts_with("v24."), "Node.js 24: {versions}");
    assert!(lines[2].starts_with("4.139.1"), "code-server: {versions}");
    // Its processes (Node.js names its main thread, not the program: matched by arguments).
    let procs = c.exec(&["ps", "-eo", "user=,args="]);
    let servers: Vec<&str> = procs
        .lines()
        .filter(|l| l.contains("code-server/out/node/entry.js"))
        .collect();
    assert!(
        !servers.is_empty() && servers.iter().all(|l| l.starts_with("jovyan ")),
        "code-server runs as jovyan:\n{procs}"
    );
}

/// The jupyterhub an image carries is a label read off the image, and the stock stacks
/// have a JupyterHub 5 runtime beside the newest one, in the same store.
#[test]
fn jupyterhub_versions_are_labels_and_a_hub_5_runtime_builds() {
    let Some(b) = built() else { return };
    let labels = |image: &str| -> Value {
        let out = ok(
            nbrt(&b.store, &["inspect", "--json", image]),
            "nbrt inspect",
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        v["config"]["config"]["Labels"].clone()
    };
    let hub5 = labels("jupyter-hub5:latest");
    let hub = hub5["io.nbrt.jupyterhub.version"]
        .as_str()
        .unwrap_or_default();
    assert!(
        hub.starts_with("5."),
        "jupyter-hub5 carries jupyterhub 5.x: {hub5}"
    );
    let newest = labels("jupyter:latest");
    let lab = newest["io.nbrt.jupyterlab.version"]
        .as_str()
        .unwrap_or_default();
    assert!(lab.starts_with("4."), "{newest}");
    assert_eq!(
        hub5["io.nbrt.jupyterlab.version"],
        newest["io.nbrt.jupyterlab.version"]
    );

    let out = ok(
        nbrt(
            &b.store,
            &[
                "check",
                "--profile",
                "jupyterhub",
                "--json",
                "jupyter-hub5:latest",
            ],
        ),
        "nbrt check --profile jupyterhub",
    );
    assert!(
        out.contains(&format!("jupyterhub {hub} (io.nbrt.jupyterhub.version)")),
        "{out}"
    );
    if !nbrt_testkit::require_docker() {
        return;
    }
    let image = load(&b.store, "jupyter-hub5");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "jupyterhub-singleuser",
            &image,
            "--version",
        ])
        .output()
        .unwrap();
    assert_eq!(ok(out, "jupyterhub-singleuser --version").trim(), hub);
}

#[test]
fn rebuild_with_nothing_changed_takes_every_step_from_the_cache() {
    let Some(b) = built() else { return };
    let started = Instant::now();
    let out = ok(
        nbrt(&b.store, &["build", "--json", b.stacks.to_str().unwrap()]),
        "second nbrt build",
    );
    let seconds = started.elapsed().as_secs_f64();
    let again: Value = serde_json::from_str(&out).unwrap();
    for name in ["base", "jupyter", "scipy"] {
        let (first, second) = (report(&b.reports, name), report(&again, name));
        assert_eq!(first["digest"], second["digest"], "{name}: same image");
        let steps = second["steps"].as_array().unwrap();
        assert!(!steps.is_empty());
        assert!(
            steps.iter().all(|s| s["cached"] == true),
            "{name}: every step from the cache: {second}"
        );
    }
    // Speed is the benchmark's business (bench/); this shows the figure in the test log.
    eprintln!("cached rebuild of stacks/ (3 runtimes, whole nbrt process): {seconds:.3} s");
}

/// Issue 19's bar for the stock images: base and jupyter built again from the same locks in
/// a second store, from a checkout at another path, on a "second machine" (another hostname,
/// a clock three days ahead), with nothing set, give the same image IDs and manifest
/// digests, and a creation date that is the packages' (not 1970, not the clock's).
#[test]
fn base_and_jupyter_are_the_same_images_when_built_on_a_second_machine() {
    let Some(b) = built() else { return };
    if !nbrt_testkit::require("faketime", &["-f", "+3d", "true"], "faketime")
        || !nbrt_testkit::require("unshare", &["--version"], "util-linux")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("another/checkout/stacks");
    std::fs::create_dir_all(&checkout).unwrap();
    // The fixture's copy: its locks are the committed ones (or their refresh, when Debian
    // moved since the commit), which is what both builds must follow.
    let status = Command::new("cp")
        .arg("-a")
        .arg(b.stacks.join("."))
        .arg(&checkout)
        .status()
        .unwrap();
    assert!(status.success(), "copying the stack");
    let store = tmp.path().join("store");
    let out = common::nbrt_on_second_machine()
        .arg("--store")
        .arg(&store)
        .args(["build", "--locked", "--json", "--only", "jupyter"])
        .arg(&checkout)
        .output()
        .unwrap();
    let again: Value = serde_json::from_str(&ok(out, "nbrt build on the second machine")).unwrap();
    for name in ["base", "jupyter"] {
        assert_eq!(
            report(&b.reports, name)["id"],
            report(&again, name)["id"],
            "{name}: another image on the second machine (nbrt build --check-reproducible \
             says where)"
        );
        // The manifest names layers by their compressed bytes: those must agree too.
        assert_eq!(
            report(&b.reports, name)["digest"],
            report(&again, name)["digest"],
            "{name}: the same image, compressed differently on the second machine"
        );
        let created = |store: &Path| {
            let out = nbrt(store, &["inspect", name, "--json"]);
            let v: Value = serde_json::from_str(&ok(out, "nbrt inspect")).unwrap();
            v["config"]["created"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let (first, second) = (created(&b.store), created(&store));
        assert_eq!(first, second, "{name}: created");
        assert!(
            first.as_str() > "2024" && first.as_str() < "2100",
            "{name}: created {first} is not a package date"
        );
    }
}

#[test]
fn seed_000_extension_adds_a_pip_package_and_an_offline_conda_package() {
    let Some(b) = built() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("site-runtimes");
    let dir = stack.join("jupyter-graphviz");
    // ArcGIS's example installs the `arcgis_dl_backbones` package file offline; like every
    // real noarch package it depends on `python`, which the stock environment's conda-meta
    // record of its interpreter satisfies.
    let pkg = Pkg::new("arcgis_dl_backbones", "2.0.1")
        .noarch_python()
        .depends("python >=3.9")
        .file(
            "site-packages/arcgis_dl_backbones/__init__.py",
            "VERSION = '2.0.1'\n",
        )
        .file(
            "share/arcgis_dl_backbones/README",
            "backbone weights go here\n",
        )
        .file("share/arcgis_dl_backbones/version", "2.0.1\n");
    pkg.tar_bz2(&dir.join("pkgs"));
    std::fs::write(
        dir.join("runtime.toml"),
        r#"name = "jupyter-graphviz"
description = "Seed 000: the jupyter runtime extended with graphviz and an offline package"
from = "jupyter"

[conda]
files = ["pkgs/arcgis_dl_backbones-2.0.1-py_0.tar.bz2"]

[pip]
packages = ["graphviz"]

[runtime]
max-cpu = 2.0
max-memory = "4g"
shared-memory = "1g"
"#,
    )
    .unwrap();
    ok(
        nbrt(&b.store, &["build", stack.to_str().unwrap()]),
        "nbrt build of the extension",
    );
    let inspect: Value = serde_json::from_str(&ok(
        nbrt(&b.store, &["inspect", "--json", "jupyter-graphviz:latest"]),
        "nbrt inspect",
    ))
    .unwrap();
    let jupyter: Value = serde_json::from_str(&ok(
        nbrt(&b.store, &["inspect", "--json", "jupyter:latest"]),
        "nbrt inspect",
    ))
    .unwrap();
    let layers = |v: &Value| v["layers"].as_array().unwrap().len();
    assert_eq!(
        layers(&inspect),
        layers(&jupyter) + 2,
        "one conda and one pip layer on top of jupyter's"
    );
    if !nbrt_testkit::require_docker() {
        return;
    }
    let image = load(&b.store, "jupyter-graphviz");
    let out = Command::new("docker")
        .args(["run", "--rm", &image, "sh", "-c"])
        .arg(
            "python -c 'import graphviz, arcgis_dl_backbones as a; print(graphviz.__name__, a.VERSION)' && \
             cat /opt/conda/share/arcgis_dl_backbones/version && \
             ls /opt/conda/conda-meta/ | grep arcgis && \
             stat -c %U /opt/conda/share/arcgis_dl_backbones",
        )
        .output()
        .unwrap();
    let text = ok(out, "docker run of the extension");
    assert_eq!(
        text,
        "graphviz 2.0.1\n2.0.1\narcgis_dl_backbones-2.0.1-py_0.json\njovyan\n"
    );

    // One package more: graphviz is kept from the earlier run (its piece, bytecode and
    // directories as they were), only tabulate is installed.
    let file = dir.join("runtime.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace(
            "packages = [\"graphviz\"]",
            "packages = [\"graphviz\", \"tabulate\"]",
        ),
    )
    .unwrap();
    let out = nbrt(&b.store, &["build", stack.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned()
        + &ok(out, "nbrt build with one package more");
    assert!(
        log.contains(
            "pip: 1 distributions kept from an earlier run, 0 taken from the piece cache, 1 new"
        ),
        "{log}"
    );
    let image = load(&b.store, "jupyter-graphviz");
    let out = Command::new("docker")
        .args(["run", "--rm", &image, "sh", "-c"])
        .arg(
            "python -c 'import graphviz, tabulate; print(tabulate.__name__)' && \
             cd /opt/conda/lib/python3.13/site-packages && \
             stat -c '%U %a' graphviz graphviz/__pycache__ tabulate/__pycache__ && \
             ls graphviz/__pycache__ | grep -c 'cpython-313.pyc$'",
        )
        .output()
        .unwrap();
    let text = ok(out, "docker run after one package more");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        ["tabulate", "jovyan 2775", "jovyan 2775", "jovyan 2775"],
        "{text}"
    );
    assert!(lines[4].parse::<u32>().unwrap() > 5, "{text}");
}

/// Everything under the store that says what it holds: names, blobs, cache entries.
fn store_listing(store: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["index.json", "blobs", "refs"] {
        let p = store.join(sub);
        if p.is_file() {
            out.push(format!("{sub} {}", std::fs::read_to_string(&p).unwrap()));
        }
        if p.is_dir() {
            for e in walk(&p) {
                out.push(e);
            }
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out.sort();
    out
}

#[test]
fn broken_runtime_files_name_file_and_line_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // A store with something in it, so "unchanged" means more than "still empty".
    let rootfs = tmp.path().join("tiny.tar");
    {
        let mut t = tar::Builder::new(std::fs::File::create(&rootfs).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        t.append_data(&mut h, "etc/hello", &b"hi\n"[..]).unwrap();
        t.finish().unwrap();
    }
    ok(
        nbrt(
            &store,
            &["import", rootfs.to_str().unwrap(), "--tag", "tiny:1"],
        ),
        "nbrt import",
    );
    let before = store_listing(&store);

    // (what, files of the stack, expected text in the error)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "an unknown key",
            &[(
                "a/runtime.toml",
                "name = \"a\"\nfrom = \"tiny:1\"\n\n[pip]\npackages = [\"x\"]\npackage = [\"y\"]\n",
            )],
            "a/runtime.toml:6",
        ),
        (
            "a bad version specifier",
            &[(
                "a/runtime.toml",
                "name = \"a\"\nfrom = \"tiny:1\"\n[pip]\npackages = [\n  \"numpy\",\n  \"pandas>>=2\",\n]\n",
            )],
            "a/runtime.toml:6",
        ),
        (
            "a missing parent",
            &[(
                "a/runtime.toml",
                "name = \"a\"\nfrom = \"./no-such-base.tar\"\n",
            )],
            "a/runtime.toml:2",
        ),
        (
            "a cycle",
            &[
                ("a/runtime.toml", "name = \"a\"\nfrom = \"b\"\n"),
                ("b/runtime.toml", "name = \"b\"\n\nfrom = \"a\"\n"),
            ],
            "cycle",
        ),
        (
            "a files source outside the stack",
            &[(
                "a/runtime.toml",
                "name = \"a\"\nfrom = \"tiny:1\"\n\n[[files]]\nsource = \"../../outside.txt\"\ndestination = \"/etc/x\"\n",
            )],
            "a/runtime.toml:4",
        ),
    ];
    std::fs::write(tmp.path().join("outside.txt"), "secret").unwrap();
    for (what, files, expect) in cases {
        let stack = tempfile::tempdir_in(tmp.path()).unwrap();
        for (rel, text) in *files {
            let p = stack.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        let out = nbrt(&store, &["build", stack.path().to_str().unwrap()]);
        assert!(!out.status.success(), "{what}: the build must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{what}: expected {expect:?} in: {err}"
        );
        assert_eq!(store_listing(&store), before, "{what}: the store changed");
    }
}
