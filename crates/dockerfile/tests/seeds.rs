//! The seeds' Dockerfiles, verbatim but for the base image name, built by nbrt and by
//! BuildKit and compared; nbrt's image then runs in Docker and passes the `nbrt check`
//! profile its seed implies (the static checks and the live ones, which start it in Docker):
//!
//! - seed 000 (ArcGIS Notebook Server): `arcgis`, on the stock `jupyter` runtime standing in
//!   for an ArcGIS runtime. Its `conda` is nbrt's (nbrt-conda, in every stock image), and
//!   the image's `.condarc` names a test channel served on loopback, as an ArcGIS runtime's
//!   names the channels its site reaches;
//! - seed 001 (Gateway Provisioners): `gateway-kernel`, on the stock `kernel-py` with
//!   `PIP_INDEX_URL` naming a test index on loopback; `nbrt convert` of the extension gives
//!   a runtime file whose image passes the same checks;
//! - seed 003 (Kubeflow): `kubeflow`, a Kubeflow-style jupyter Dockerfile on the stock
//!   `jupyter` runtime.
//!
//! The package servers listen on 127.0.0.1: nbrt's RUN has the host's network, and BuildKit
//! is given `--network host`. The stock runtimes come from the shared stock store
//! (`nbrt_testkit::stock`); these builds go into it too, and the images above the stock
//! bases are compared layer by layer (the bases are the same layers).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nbrt_inspect::check::{self, Profile, Status};
use nbrt_oci::{Image, ImageName, Progress, Store};
use nbrt_testkit::conda_pkg::{channel, Content, Pkg};

/// A stock runtime, in the shared stock store and in Docker under one name.
struct Stock {
    store: Store,
    name: String,
    image: Image,
}

fn stock(runtime: &str) -> Option<Stock> {
    if !common::require_buildkit() {
        return None;
    }
    let name = nbrt_testkit::stock::docker_image(runtime)?;
    let store = Store::open(nbrt_testkit::stock::store_dir()).expect("opening the stock store");
    let image = store.resolve(runtime).unwrap().image;
    store
        .tag(&image, &ImageName::parse(&name).unwrap())
        .unwrap();
    Some(Stock { store, name, image })
}

/// The test channel and index, served on loopback for the life of the test process:
/// `(channel URL, simple index URL)`.
fn servers() -> (&'static str, &'static str) {
    static SERVED: OnceLock<(tempfile::TempDir, String, String)> = OnceLock::new();
    let (_, channel_url, index_url) = SERVED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut graphviz = Pkg::new("graphviz", "2.50.0");
        graphviz.files.push((
            "bin/dot".into(),
            Content::File {
                data: b"#!/bin/sh\necho 'dot - graphviz version 2.50.0 (0)' >&2\n".to_vec(),
                mode: 0o755,
                placeholder: false,
            },
        ));
        channel(&dir.path().join("channel"), &[graphviz]);
        wheel_index(&dir.path().join("pypi"), "my_libraries", "1.0");
        let url = nbrt_testkit::serve_dir(dir.path());
        let channel_url = format!("{url}/channel");
        let index_url = format!("{url}/pypi/simple");
        (dir, channel_url, index_url)
    });
    (channel_url, index_url)
}

/// A pure-Python wheel of `name` and a PEP 503 index of it under `dir` (a wheel is a zip
/// file: the host's Python writes it).
fn wheel_index(dir: &Path, name: &str, version: &str) {
    let script = r#"
import os, sys, zipfile
out, name, version = sys.argv[1:4]
dist = f"{name}-{version}"
wheel = f"{dist}-py3-none-any.whl"
os.makedirs(f"{out}/wheels", exist_ok=True)
files = {
    f"{name}/__init__.py": f"VERSION = '{version}'\n",
    f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
    f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: nbrt-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n"
with zipfile.ZipFile(f"{out}/wheels/{wheel}", "w") as z:
    for p, data in {**files, f"{dist}.dist-info/RECORD": record}.items():
        z.writestr(zipfile.ZipInfo(p, date_time=(2020, 1, 1, 0, 0, 0)), data)
project = name.replace("_", "-").lower()
os.makedirs(f"{out}/simple/{project}", exist_ok=True)
with open(f"{out}/simple/{project}/index.html", "w") as f:
    f.write(f'<html><body><a href="../../wheels/{wheel}">{wheel}</a></body></html>\n')
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .args([name, version])
        .output()
        .expect("running python3 (the host's, to write a wheel)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A base image users would own, built by nbrt from `dockerfile` (`{BASE}` is the stock
/// runtime) and loaded into Docker under the same name; returns that name.
fn standin(base: &Stock, name: &str, dockerfile: &str, files: &[common::File<'_>]) -> String {
    let ctx = common::context(&dockerfile.replace("{BASE}", &base.name), files);
    let (_, image) = common::nbrt_build(
        &base.store,
        ctx.path(),
        &format!("nbrt-test/{name}:latest"),
        &[],
        None,
    )
    .unwrap_or_else(|e| panic!("building the stand-in base {name}: {e}"));
    let tag = format!("nbrt-test/{name}:{}", &image.digest().hex()[..12]);
    base.store
        .tag(&image, &ImageName::parse(&tag).unwrap())
        .unwrap();
    nbrt_testkit::stock::load_into_docker(&base.store, &tag, &format!("nbrt-test/{name}"))
        .expect("loading the stand-in base into Docker")
}

/// The stand-in for an ArcGIS runtime: the stock jupyter runtime (nbrt's conda in
/// /opt/conda/bin) whose `.condarc` names the test channel.
fn arcgis_base() -> Option<(Stock, String)> {
    let jupyter = stock("jupyter")?;
    let condarc = format!("channels:\n  - {}\n", servers().0);
    let name = standin(
        &jupyter,
        "df-arcgis-standin",
        "FROM {BASE}\nCOPY --chown=1000:100 condarc /opt/conda/.condarc\n",
        &[("condarc", condarc.as_bytes(), 0o664)],
    );
    Some((jupyter, name))
}

/// The stand-in for `elyra/kernel-py`: the stock kernel-py with pip's index on loopback.
fn kernel_base() -> Option<(Stock, String)> {
    let kernel = stock("kernel-py")?;
    let df = format!(
        "FROM {{BASE}}\nENV PIP_INDEX_URL={} PIP_NO_CACHE_DIR=1\n",
        servers().1
    );
    let name = standin(&kernel, "df-kernel-standin", &df, &[]);
    Some((kernel, name))
}

/// Build `dockerfile` on `base` (the stand-in named `base_name`) with nbrt and with
/// BuildKit (`--network host`: the package servers are on loopback) and assert the two
/// images' layers above the base and their configs are the same but for times. Returns
/// nbrt's image.
fn same_as_buildkit_on(
    base: &Stock,
    base_name: &str,
    row: &str,
    dockerfile: &str,
    files: &[common::File<'_>],
) -> (Image, std::collections::BTreeMap<String, serde_json::Value>) {
    let store = &base.store;
    let base_image = store.resolve(base_name).unwrap().image;
    let ctx = common::context(dockerfile, files);
    let ours = common::nbrt_build(
        store,
        ctx.path(),
        &format!("nbrt-oracle/{row}:nbrt"),
        &[],
        None,
    )
    .unwrap_or_else(|e| panic!("{row}: nbrt build failed: {e}"))
    .1;
    let theirs = common::buildkit_build_with(
        store,
        ctx.path(),
        &format!("nbrt-oracle/{row}:buildkit"),
        &[],
        None,
        &["--network", "host"],
    )
    .unwrap_or_else(|e| panic!("{row}: {e}"));
    let skip = base_image.layers().len();
    assert_eq!(
        &theirs.diff_ids()[..skip],
        base_image.diff_ids(),
        "{row}: BuildKit built on the same base layers"
    );
    let diffs = common::differences_above(store, &ours, &theirs, &base_image);
    assert!(
        diffs.is_empty(),
        "{row}: nbrt and BuildKit differ:\n{}",
        diffs.join("\n")
    );
    let fields = common::config_fields(&ours);
    (ours, fields)
}

/// `nbrt check IMAGE --profile PROFILE --live`, as the command runs it: the static checks,
/// then the live ones in Docker. Panics with the report when a check fails.
fn passes_check(store: &Store, image: &Image, name: &str, profile: Profile) {
    store.tag(image, &ImageName::parse(name).unwrap()).unwrap();
    let (view, pkgs) =
        nbrt_inspect::read_image(store, image, &Progress::hidden()).expect("reading the image");
    let report = check::static_report(name, image, &view, &pkgs, profile);
    let live = std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(check::live::run(
                    store,
                    image,
                    profile,
                    &check::live::LiveOptions::default(),
                ))
        })
        .join()
        .unwrap()
    });
    let report = check::Report::new(name, profile, [report.results, live].concat());
    let lines: Vec<String> = report
        .results
        .iter()
        .map(|r| {
            let live = if r.live { " (live)" } else { "" };
            format!("{:?} {}{live}: {}", r.status, r.id, r.message)
        })
        .collect();
    assert!(
        report.passed,
        "{name} fails the {} profile:\n{}",
        profile.as_str(),
        lines.join("\n")
    );
    assert!(
        report
            .results
            .iter()
            .any(|r| r.live && r.status == Status::Pass),
        "{name}: no live check ran:\n{}",
        lines.join("\n")
    );
    eprintln!(
        "{name} meets the {} profile:\n{}",
        profile.as_str(),
        lines.join("\n")
    );
}

/// Run `sh -c script` in nbrt's image in Docker; returns stdout.
fn run_in_docker(store: &Store, image: &Image, repo: &str, script: &str) -> String {
    let tag = format!("{repo}:{}", &image.digest().hex()[..12]);
    store.tag(image, &ImageName::parse(&tag).unwrap()).unwrap();
    let tag = nbrt_testkit::stock::load_into_docker(store, &tag, repo).unwrap();
    let out = Command::new(common::DOCKER)
        .args(["run", "--rm", "--entrypoint", "/bin/sh", &tag, "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Docker's copies of the images a test made (by ID: every tag of them goes; the stock
/// bases below them stay), removed when the test ends however it ends.
struct RemovedFromDocker(Vec<String>);

impl Drop for RemovedFromDocker {
    fn drop(&mut self) {
        for id in &self.0 {
            let _ = Command::new(common::DOCKER)
                .args(["rmi", "-f", id])
                .output();
        }
    }
}

/// Seed 000: graphviz added to an ArcGIS runtime with the runtime's own `conda`.
#[test]
fn seed_000_graphviz() {
    let Some((jupyter, base)) = arcgis_base() else {
        return;
    };
    let df = "# Specify the existing notebook runtime imageId as FROM\n\
              FROM arcgis-notebook-python-advanced:\n\
              RUN conda install graphviz \\\n  && conda clean -y -a\n"
        .replace("arcgis-notebook-python-advanced:", &base);
    let (image, _) = same_as_buildkit_on(&jupyter, &base, "seed000-graphviz", &df, &[]);
    let _cleanup = RemovedFromDocker(vec![image.id().to_string()]);
    let out = run_in_docker(
        &jupyter.store,
        &image,
        "nbrt-test/seed000-graphviz",
        "dot -V 2>&1; conda list --json | python -c \
         'import json,sys; print([p[\"version\"] for p in json.load(sys.stdin) if p[\"name\"] == \"graphviz\"])'; \
         ls /opt/conda/pkgs 2>/dev/null | grep graphviz | wc -l",
    );
    assert_eq!(
        out, "dot - graphviz version 2.50.0 (0)\n['2.50.0']\n0\n",
        "dot runs, conda lists graphviz for the runtime manifest, `conda clean -a` emptied the package cache"
    );
    passes_check(
        &jupyter.store,
        &image,
        &format!("nbrt-test/seed000-graphviz:{}", &image.digest().hex()[..12]),
        Profile::Arcgis,
    );
}

/// Seed 000: the arcgis_dl_backbones package installed offline from a file in the context.
#[test]
fn seed_000_backbones() {
    let Some((jupyter, base)) = arcgis_base() else {
        return;
    };
    let df = "FROM arcgis-notebook-python-standard:\n\
              USER root\n\
              RUN mkdir -p /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              WORKDIR /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              COPY arcgis_dl_backbones-2.0.1-py_0.tar.bz2 /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              RUN conda install --offline arcgis_dl_backbones-2.0.1-py_0.tar.bz2 -y\n\
              RUN conda clean -y -a\n"
        .replace("arcgis-notebook-python-standard:", &base);
    // Like every real noarch package it depends on `python`, which the stock environment's
    // conda-meta record of its interpreter satisfies.
    let pkgdir = tempfile::tempdir().unwrap();
    let pkg = Pkg::new("arcgis_dl_backbones", "2.0.1")
        .noarch_python()
        .depends("python >=3.9")
        .file(
            "site-packages/arcgis_dl_backbones/__init__.py",
            "VERSION = '2.0.1'\n",
        );
    let bytes = std::fs::read(pkg.tar_bz2(pkgdir.path())).unwrap();
    let files: &[common::File<'_>] = &[("arcgis_dl_backbones-2.0.1-py_0.tar.bz2", &bytes, 0o644)];
    let (image, config) = same_as_buildkit_on(&jupyter, &base, "seed000-backbones", &df, files);
    let _cleanup = RemovedFromDocker(vec![image.id().to_string()]);
    assert_eq!(config["User"], "root");
    assert_eq!(
        config["WorkingDir"],
        "/home/user/DUMP/arcgis_dl_backbones-2.0.1"
    );
    let out = run_in_docker(
        &jupyter.store,
        &image,
        "nbrt-test/seed000-backbones",
        "ls /home/user/DUMP/arcgis_dl_backbones-2.0.1; \
         python -c 'import arcgis_dl_backbones as b; print(b.VERSION)'",
    );
    assert_eq!(out, "arcgis_dl_backbones-2.0.1-py_0.tar.bz2\n2.0.1\n");
    passes_check(
        &jupyter.store,
        &image,
        &format!(
            "nbrt-test/seed000-backbones:{}",
            &image.digest().hex()[..12]
        ),
        Profile::Arcgis,
    );
}

const SEED_001_CORRECTED: &str =
    "FROM elyra/kernel-py:VERSION\n\nUSER root\n\nRUN pip install my-libraries\n\nUSER $NB_UID\n";

/// Seed 001: the documented extension fails at its USER line (the comment is part of the
/// user name); the corrected form builds on kernel-py and is a working kernel image.
#[test]
fn seed_001_kernel_image_extension() {
    let Some((kernel, base)) = kernel_base() else {
        return;
    };
    let documented = "FROM elyra/kernel-py:VERSION\n\n\
                      USER root  # switch to root user to perform installation (if necessary)\n\n\
                      RUN pip install my-libraries\n\n\
                      USER $NB_UID  # switch back to the jovyan user\n"
        .replace("elyra/kernel-py:VERSION", &base);
    let ctx = common::context(&documented, &[]);
    let err = common::nbrt_build(
        &kernel.store,
        ctx.path(),
        "nbrt-test/seed001-bad:x",
        &[],
        None,
    )
    .unwrap_err();
    assert!(
        err.starts_with(
            "Dockerfile:3: USER root  # switch to root user to perform installation (if necessary): \
             unable to find user root  # switch"
        ),
        "{err}"
    );
    assert!(err.contains("a comment after an instruction is part of it in Dockerfiles"));
    // BuildKit refuses it too.
    assert!(common::buildkit_build(
        &kernel.store,
        ctx.path(),
        "nbrt-test/seed001-bad:bk",
        &[],
        None
    )
    .is_err());

    let corrected = SEED_001_CORRECTED.replace("elyra/kernel-py:VERSION", &base);
    let (image, config) = same_as_buildkit_on(&kernel, &base, "seed001", &corrected, &[]);
    let _cleanup = RemovedFromDocker(vec![image.id().to_string()]);
    assert_eq!(config["User"], "1000");
    let out = run_in_docker(
        &kernel.store,
        &image,
        "nbrt-test/seed001",
        "id -u; python -c 'import my_libraries as m; print(m.VERSION)'",
    );
    assert_eq!(out, "1000\n1.0\n");
    passes_check(
        &kernel.store,
        &image,
        &format!("nbrt-test/seed001:{}", &image.digest().hex()[..12]),
        Profile::GatewayKernel,
    );
}

/// Seed 001 through `nbrt convert`: the extension written as a runtime file, built by the
/// runtime-file builder, passes the same checks as the Dockerfile's image.
#[test]
fn seed_001_converted_to_a_runtime_file() {
    let Some((kernel, base)) = kernel_base() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("seed001");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        SEED_001_CORRECTED.replace("elyra/kernel-py:VERSION", &base),
    )
    .unwrap();
    let conversion = nbrt_dockerfile::convert::convert(
        Some(&kernel.store),
        &nbrt_dockerfile::convert::ConvertOptions {
            dockerfile: ctx.join("Dockerfile"),
            context: ctx.clone(),
            output_dir: ctx.clone(),
            name: "seed001-converted".into(),
            build_args: Default::default(),
        },
    )
    .expect("nbrt convert");
    let report: Vec<String> = conversion
        .notes
        .iter()
        .map(|n| format!("{} {} -> {} {:?}", n.line, n.instruction, n.became, n.why))
        .collect();
    // The base names its own index in PIP_INDEX_URL, which uv's [pip] would not use: the
    // install stays the image's pip, and the report says why.
    let pip = conversion
        .notes
        .iter()
        .find(|n| n.instruction.contains("pip install"))
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(pip.became.contains("[[run]]"), "{report:?}");
    assert!(
        pip.why
            .as_deref()
            .unwrap_or_default()
            .contains("PIP_INDEX_URL"),
        "{report:?}"
    );
    let runtime_file: PathBuf = ctx.join("runtime.toml");
    std::fs::write(&runtime_file, &conversion.runtime).unwrap();

    let stack = nbrt_build::stack::Stack::load(&runtime_file, &kernel.store).unwrap_or_else(|e| {
        panic!(
            "loading the converted runtime file: {e}\n{}",
            conversion.runtime
        )
    });
    let mut log = Vec::new();
    nbrt_build::builder::build_stack(
        &kernel.store,
        &stack,
        None,
        &nbrt_build::builder::BuildOptions::default(),
        &Progress::hidden(),
        &mut log,
    )
    .unwrap_or_else(|e| {
        panic!(
            "building the converted runtime file: {e}\n{}\n{}",
            conversion.runtime,
            String::from_utf8_lossy(&log)
        )
    });
    let image = kernel.store.resolve("seed001-converted").unwrap().image;
    let _cleanup = RemovedFromDocker(vec![image.id().to_string()]);
    let config = common::config_fields(&image);
    assert_eq!(config["User"], "1000", "{}", conversion.runtime);
    let out = run_in_docker(
        &kernel.store,
        &image,
        "nbrt-test/seed001-converted",
        "id -u; python -c 'import my_libraries as m; print(m.VERSION)'",
    );
    assert_eq!(out, "1000\n1.0\n");
    passes_check(
        &kernel.store,
        &image,
        &format!(
            "nbrt-test/seed001-converted:{}",
            &image.digest().hex()[..12]
        ),
        Profile::GatewayKernel,
    );
}

/// A Kubeflow-style jupyter image (seed 003's hierarchy: a jupyter layer on a base): ARG,
/// TARGETARCH, old-form ENV, SHELL, COPY --chown and --chmod of s6 files, USER $NB_UID,
/// ENTRYPOINT. The user exists in the stock base, so the useradd line keeps it; `/init` is
/// nbrt-init, which runs `/etc/cont-init.d` and `/etc/services.d` as s6-overlay does.
#[test]
fn kubeflow_style_jupyter() {
    let Some(jupyter) = stock("jupyter") else {
        return;
    };
    let df = format!(
        "ARG BASE_IMG={}\n\
FROM $BASE_IMG\n\
\n\
ARG TARGETARCH\n\
\n\
USER root\n\
\n\
# common environment variables\n\
ENV NB_USER jovyan\n\
ENV NB_UID 1000\n\
ENV NB_PREFIX /\n\
ENV HOME /home/$NB_USER\n\
ENV SHELL /bin/bash\n\
\n\
# set shell to bash\n\
SHELL [\"/bin/bash\", \"-c\"]\n\
\n\
# s6 for this architecture\n\
RUN case \"${{TARGETARCH}}\" in \\\n\
      amd64) S6_ARCH=\"x86_64\" ;; \\\n\
      arm64) S6_ARCH=\"aarch64\" ;; \\\n\
      ppc64le) S6_ARCH=\"ppc64le\" ;; \\\n\
      *) echo \"Unsupported architecture: ${{TARGETARCH}}\"; exit 1 ;; \\\n\
    esac \\\n\
 && echo \"$S6_ARCH\" > /etc/s6-arch \\\n\
 && ln -s /usr/local/bin/nbrt-init /init\n\
\n\
# create user and set required ownership\n\
RUN (id -u ${{NB_USER}} >/dev/null 2>&1 || useradd -M -s /bin/bash -N -u ${{NB_UID}} ${{NB_USER}}) \\\n\
 && mkdir -p ${{HOME}} \\\n\
 && chown -R ${{NB_USER}}:users ${{HOME}}\n\
\n\
# copy s6-overlay scripts\n\
COPY --chown=${{NB_USER}}:users --chmod=755 s6/ /etc\n\
COPY --chown=${{NB_USER}}:users start-kubeflow.sh /usr/local/bin/\n\
\n\
USER $NB_UID\n\
WORKDIR $HOME\n\
EXPOSE 8888\n\
ENTRYPOINT [\"/init\"]\n",
        jupyter.name
    );
    let files: &[common::File<'_>] = &[
        (
            "s6/cont-init.d/01-copy-tmp-home",
            b"#!/bin/bash\necho \"home is $HOME\"\n",
            0o644,
        ),
        (
            "s6/services.d/heartbeat/run",
            b"#!/bin/bash\nexec sleep infinity\n",
            0o644,
        ),
        ("start-kubeflow.sh", b"#!/bin/sh\n", 0o755),
    ];
    let (image, config) = same_as_buildkit_on(&jupyter, &jupyter.name, "kubeflow", &df, files);
    let _cleanup = RemovedFromDocker(vec![image.id().to_string()]);
    assert_eq!(config["User"], "1000");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/init"]));
    let skip = jupyter.image.layers().len();
    let tree = common::upper_tree(&jupyter.store, &image, skip);
    let run = &tree["etc/services.d/heartbeat/run"];
    assert_eq!((run.mode, run.uid, run.gid), (0o755, 1000, 100));
    if let Some(etc) = tree.get("etc") {
        assert_eq!(
            (etc.mode, etc.uid, etc.gid),
            (0o755, 0, 0),
            "an existing destination keeps its owner and mode"
        );
    }
    let out = run_in_docker(
        &jupyter.store,
        &image,
        "nbrt-test/kubeflow",
        "cat /etc/s6-arch; id -u",
    );
    assert!(
        out.ends_with("\n1000\n") && !out.starts_with("Unsupported"),
        "{out}"
    );
    passes_check(
        &jupyter.store,
        &image,
        &format!("nbrt-test/kubeflow:{}", &image.digest().hex()[..12]),
        Profile::Kubeflow,
    );
}
