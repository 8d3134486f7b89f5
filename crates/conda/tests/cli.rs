//! The `conda` / `mamba` command (nbrt-conda) against channels made here: package files
//! built by the tests, `repodata.json`, served over HTTP on loopback and as `file://`.
//!
//! `commands_on_a_prefix` runs the workspace build on a prefix in a temporary directory;
//! `static_binary_in_docker_as_a_non_root_user` runs the static build in a Debian container
//! with Python, on a venv at /opt/conda whose interpreter has a conda-meta `python` record,
//! as uid 1000.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nbrt_testkit::conda_pkg::{channel, Pkg};

const PYTHON_RECORD_NAME: &str = "python-3.11.2-0_debian.json";

/// The conda-meta record of a prefix's own interpreter (what the builder's `[python]` step
/// writes for the Debian build).
fn python_record() -> serde_json::Value {
    serde_json::json!({
        "name": "python", "version": "3.11.2", "build": "0_debian", "build_number": 0,
        "depends": [], "subdir": "linux-64", "license": "PSF-2.0",
        "fn": "python-3.11.2-0_debian.conda", "url": "file:///python-3.11.2-0_debian.conda",
        "channel": "", "files": [], "paths_data": {"paths_version": 1, "paths": []},
        "requested_specs": [],
    })
}

/// The test channel: noarch python packages and a linux-64 one.
fn packages() -> Vec<Pkg> {
    let py = |name: &str, version: &str, value: &str| {
        Pkg::new(name, version)
            .noarch_python()
            .depends("python")
            .file(
                &format!("site-packages/{name}/__init__.py"),
                &format!("VALUE = {value:?}\n"),
            )
    };
    vec![
        py("alpha", "1.0", "alpha 1.0"),
        py("gamma", "0.3", "gamma").depends("alpha"),
        // Needs an alpha the channel does not have: a conflict.
        py("beta", "2.0", "beta").depends("alpha >=2"),
        // Needs a Python the prefix does not have (pinned to 3.11).
        py("newpy", "1.0", "newpy").depends("python >=3.12"),
        Pkg::new("tool", "1.0").script("bin/tool", "echo tool from @P@"),
    ]
}

/// The offline package of seed 000, depending on python like every real noarch package.
fn offline_package(dir: &Path) -> PathBuf {
    Pkg::new("arcgis_dl_backbones", "2.0.1")
        .noarch_python()
        .depends("python")
        .file(
            "site-packages/arcgis_dl_backbones/__init__.py",
            "BACKBONES = ['resnet']\n",
        )
        .tar_bz2(dir)
}

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn list_names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// On this machine

struct Local {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
}

impl Local {
    fn new() -> Local {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("opt/conda");
        let home = tmp.path().join("home");
        let work = tmp.path().join("work");
        for d in [
            root.join("conda-meta"),
            root.join("bin"),
            root.join("lib/python3.11/site-packages"),
            home.clone(),
            work.clone(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(
            root.join("conda-meta").join(PYTHON_RECORD_NAME),
            python_record().to_string(),
        )
        .unwrap();
        std::fs::write(root.join("conda-meta/pinned"), "python 3.11.*\n").unwrap();
        for name in ["conda", "mamba"] {
            std::os::unix::fs::symlink(
                env!("CARGO_BIN_EXE_nbrt-conda"),
                root.join("bin").join(name),
            )
            .unwrap();
        }
        Local {
            _tmp: tmp,
            root,
            home,
            work,
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new(self.root.join("bin").join(program))
            .args(args)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env_remove("CONDA_PREFIX")
            .env_remove("CONDA_PKGS_DIRS")
            .env_remove("CONDA_ENVS_PATH")
            .env_remove("CONDARC")
            .env_remove("CONDA_ROOT")
            .output()
            .unwrap()
    }

    fn conda(&self, args: &[&str]) -> Output {
        self.run("conda", args)
    }

    fn site(&self) -> PathBuf {
        self.root.join("lib/python3.11/site-packages")
    }
}

#[test]
fn commands_on_a_prefix() {
    let local = Local::new();
    let served = tempfile::tempdir().unwrap();
    channel(&served.path().join("channel"), &packages());
    let url = format!("{}/channel", nbrt_testkit::serve_dir(served.path()));

    assert_eq!(ok(local.conda(&["--version"])), "conda 24.11.0\n");
    assert!(ok(local.run("mamba", &["--version"])).starts_with("mamba "));

    // Install over HTTP: the dependency comes along, into the prefix's site-packages.
    let out = ok(local.conda(&[
        "install",
        "--yes",
        "-c",
        &url,
        "--override-channels",
        "gamma",
    ]));
    assert!(
        out.contains("The following NEW packages will be INSTALLED"),
        "{out}"
    );
    assert!(local.site().join("gamma/__init__.py").is_file());
    assert!(local.site().join("alpha/__init__.py").is_file());
    let history = std::fs::read_to_string(local.root.join("conda-meta/history")).unwrap();
    assert!(history.contains("# update specs: ['gamma']"), "{history}");
    assert!(
        history.contains("+channel/noarch::alpha-1.0-py_0"),
        "{history}"
    );

    // Again: nothing to do.
    let out = ok(local.conda(&["install", "-y", "-c", &url, "--override-channels", "gamma"]));
    assert!(
        out.contains("All requested packages already installed"),
        "{out}"
    );

    // conda list --json: conda's record shape, pip distributions as pypi.
    let dist = local.site().join("six-1.16.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n",
    )
    .unwrap();
    let json = ok(local.conda(&["list", "--json"]));
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list_names(&json), ["alpha", "gamma", "python", "six"]);
    assert_eq!(
        records[0],
        serde_json::json!({
            "base_url": url, "build_number": 0, "build_string": "py_0", "channel": "channel",
            "dist_name": "alpha-1.0-py_0", "name": "alpha", "platform": "noarch",
            "version": "1.0",
        })
    );
    assert_eq!(records[3]["channel"], "pypi");
    assert_eq!(records[3]["build_string"], "pypi_0");
    let explicit = ok(local.conda(&["list", "--explicit"]));
    assert!(
        explicit.contains(&format!("@EXPLICIT\n{url}/noarch/alpha-1.0-py_0.tar.bz2\n")),
        "{explicit}"
    );

    // A conflict names it; exit 1. So does a Python the pin rules out.
    let err = fails(local.conda(&["install", "-y", "-c", &url, "--override-channels", "beta"]));
    assert!(err.contains("beta") && err.contains("alpha"), "{err}");
    let err = fails(local.conda(&["install", "-y", "-c", &url, "--override-channels", "newpy"]));
    assert!(err.contains("python"), "{err}");
    let err = fails(local.conda(&["install", "-y", "-c", &url, "--override-channels", "zeta"]));
    assert!(
        err.contains("PackagesNotFoundError: The following packages are not available from current channels:\n\n  - zeta"),
        "{err}"
    );

    // A channel that does not answer: conda's CondaHTTPError.
    let err = fails(local.conda(&[
        "search",
        "-c",
        "http://127.0.0.1:1/none",
        "--override-channels",
        "x",
    ]));
    assert!(
        err.contains("CondaHTTPError: HTTP 000 CONNECTION FAILED for url <http://127.0.0.1:1/none/linux-64/repodata.json.zst>"),
        "{err}"
    );

    // With --json the error is conda's JSON document on stdout.
    let out = local.conda(&[
        "install",
        "-y",
        "--json",
        "-c",
        &url,
        "--override-channels",
        "zeta",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["exception_name"], "PackagesNotFoundError");
    assert_eq!(doc["packages"], serde_json::json!(["zeta"]));

    // Offline package file depending on python (seed 000's command).
    let file = offline_package(&local.work);
    assert!(file.is_file());
    ok(local.conda(&[
        "install",
        "--offline",
        "arcgis_dl_backbones-2.0.1-py_0.tar.bz2",
        "-y",
    ]));
    assert!(local
        .site()
        .join("arcgis_dl_backbones/__init__.py")
        .is_file());

    // Removing what is not there: conda's words.
    let err = fails(local.conda(&["remove", "-y", "zeta"]));
    assert!(
        err.contains("PackagesNotFoundError: The following packages are missing from the target environment:\n  - zeta"),
        "{err}"
    );
    let listing = ok(local.conda(&["list"]));
    assert!(
        listing.starts_with(&format!(
            "# packages in environment at {}:\n#\n# Name",
            local.root.display()
        )),
        "{listing}"
    );
    assert!(
        listing.contains("\nalpha                     1.0                        py_0  channel\n"),
        "{listing}"
    );

    // Removing alpha takes gamma along.
    ok(local.conda(&["remove", "-y", "alpha"]));
    assert!(!local.site().join("alpha").exists());
    assert!(!local.site().join("gamma").exists());
    let json = ok(local.conda(&["list", "--json"]));
    assert_eq!(list_names(&json), ["arcgis_dl_backbones", "python", "six"]);

    // What was asked for, not every dependency.
    ok(local.conda(&["install", "-y", "-c", &url, "--override-channels", "gamma"]));
    let export = ok(local.run(
        "mamba",
        &["env", "export", "--no-build", "--json", "--from-history"],
    ));
    let export: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(
        export["dependencies"],
        serde_json::json!(["gamma", "arcgis_dl_backbones"])
    );
    let full = ok(local.conda(&["env", "export", "--no-builds"]));
    assert!(
        full.contains("  - alpha=1.0\n") && full.contains("  - pip:\n      - six==1.16.0\n"),
        "{full}"
    );

    // The package cache is in the root prefix (writable) and clean empties it.
    let pkgs = local.root.join("pkgs");
    assert!(std::fs::read_dir(&pkgs).unwrap().next().is_some());
    ok(local.conda(&["clean", "-y", "-a"]));
    assert!(std::fs::read_dir(&pkgs).unwrap().next().is_none());

    // Channels from .condarc; `config --add` writes ~/.condarc; file:// channels.
    let file_url = format!("file://{}", served.path().join("channel").display());
    ok(local.conda(&["config", "--add", "channels", &file_url]));
    let rc = std::fs::read_to_string(local.home.join(".condarc")).unwrap();
    assert_eq!(rc, format!("channels:\n  - {file_url}\n"));
    let shown = ok(local.conda(&["config", "--show", "channels"]));
    assert_eq!(shown, format!("channels:\n  - {file_url}\n"));
    let found = ok(local.conda(&["search", "--offline", "alpha"]));
    assert!(found.contains("alpha") && found.contains("1.0"), "{found}");
    ok(local.conda(&["install", "-y", "--offline", "tool"]));
    let tool = std::fs::read_to_string(local.root.join("bin/tool")).unwrap();
    assert!(
        tool.contains(&format!("echo tool from {}", local.root.display())),
        "{tool}"
    );

    // update: a newer build in the channel replaces the installed one (installs keep it).
    let file_channel = served.path().join("channel");
    channel(
        &file_channel,
        &[
            packages(),
            vec![Pkg::new("tool", "1.1").script("bin/tool", "echo tool 1.1")],
        ]
        .concat(),
    );
    let out = ok(local.conda(&["install", "-y", "--offline", "tool"]));
    assert!(
        out.contains("All requested packages already installed"),
        "{out}"
    );
    let out = ok(local.conda(&["update", "-y", "--offline", "tool"]));
    assert!(
        out.contains("The following packages will be UPDATED"),
        "{out}"
    );
    let tool = std::fs::read_to_string(local.root.join("bin/tool")).unwrap();
    assert!(tool.contains("echo tool 1.1"), "{tool}");
    // --all keeps what no channel has (the interpreter's record, the offline package).
    let out = ok(local.conda(&["update", "--all", "-y", "--offline"]));
    assert!(
        out.contains("All requested packages already installed"),
        "{out}"
    );

    // create -n: an environment in envs_dirs, listed by info --envs.
    ok(local.conda(&["create", "-y", "-n", "myenv", "--offline", "tool"]));
    let env = local.root.join("envs/myenv");
    assert!(env.join("bin/tool").is_file());
    let envs: serde_json::Value =
        serde_json::from_str(&ok(local.conda(&["info", "--envs", "--json"]))).unwrap();
    assert_eq!(
        envs["envs"],
        serde_json::json!([local.root.display().to_string(), env.display().to_string()])
    );
    let json = ok(local.conda(&["list", "-n", "myenv", "--json"]));
    assert_eq!(list_names(&json), ["tool"]);
    // An explicit file from `conda list --explicit` makes the same environment again.
    let explicit = local.work.join("explicit.txt");
    std::fs::write(
        &explicit,
        ok(local.conda(&["list", "-n", "myenv", "--explicit", "--md5"])),
    )
    .unwrap();
    ok(local.conda(&[
        "create",
        "-y",
        "-n",
        "again",
        "--override-channels",
        "--offline",
        "--file",
        explicit.to_str().unwrap(),
    ]));
    let again = ok(local.conda(&["list", "-n", "again", "--json"]));
    assert_eq!(again, json);
    // A plain venv without conda-meta: its pip distributions are still listed.
    let venv = local.work.join("venv");
    let dist = venv.join("lib/python3.11/site-packages/Six-1.16.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(dist.join("METADATA"), "Name: six\nVersion: 1.16.0\n").unwrap();
    let json = ok(local.conda(&["list", "--json", "-p", venv.to_str().unwrap()]));
    assert_eq!(list_names(&json), ["six"]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(local.conda(&["info", "--json"]))).unwrap();
    assert_eq!(info["root_prefix"], local.root.display().to_string());
    assert_eq!(info["conda_version"], "24.11.0");
}

// ---------------------------------------------------------------------------------------------
// In Docker, the static binary, as a non-root user

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.0]);
    }
}

impl Container {
    fn exec_as(&self, user: &str, args: &[&str]) -> Output {
        let mut all = vec![
            "exec",
            "-u",
            user,
            "-e",
            "HOME=/home/jovyan",
            "-w",
            "/home/jovyan",
            &self.0,
        ];
        all.extend_from_slice(args);
        docker(&all)
    }

    fn user(&self, args: &[&str]) -> Output {
        self.exec_as("1000:100", args)
    }

    fn sh(&self, script: &str) -> Output {
        docker(&["exec", "-u", "0", &self.0, "sh", "-ec", script])
    }
}

/// A Debian image with Python (mmdebstrap, imported into Docker once).
fn python_image() -> Option<String> {
    let rootfs = nbrt_testkit::python_rootfs()?;
    let tag = "nbrt-test/conda-python:bookworm";
    if !docker(&["image", "inspect", tag]).status.success() {
        let out = Command::new("docker")
            .args(["import", &rootfs.display().to_string(), tag])
            .output()
            .unwrap();
        assert!(out.status.success(), "docker import: {}", text(&out));
    }
    Some(tag.to_string())
}

#[test]
fn static_binary_in_docker_as_a_non_root_user() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let Some(image) = python_image() else {
        return;
    };
    let bin = nbrt_testkit::static_nbrt_conda();
    let served = tempfile::tempdir().unwrap();
    channel(&served.path().join("channel"), &packages());
    let url = format!("{}/channel", nbrt_testkit::serve_dir(served.path()));
    let files = tempfile::tempdir().unwrap();
    offline_package(files.path());
    std::fs::write(
        files.path().join(PYTHON_RECORD_NAME),
        python_record().to_string(),
    )
    .unwrap();
    // The site's own channel (empty here) instead of conda-forge, which tests cannot reach:
    // what an admin puts in /opt/conda/.condarc.
    channel(&files.path().join("site-channel"), &[]);

    let name = format!("nbrt-conda-test-{}", std::process::id());
    let out = docker(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "host",
        "--name",
        &name,
        "-v",
        &format!("{}:/usr/local/bin/nbrt-conda:ro", bin.display()),
        "-v",
        &format!("{}:/files:ro", files.path().display()),
        &image,
        "sleep",
        "600",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let c = Container(name);

    // The image's Python environment, as the stock images have it: a venv at /opt/conda
    // owned by jovyan, with a conda-meta record for its interpreter and its pin.
    ok(c.sh(&format!(
        "useradd -m -u 1000 -g 100 jovyan
         python3 -m venv --without-pip /opt/conda
         mkdir -p /opt/conda/conda-meta
         cp /files/{PYTHON_RECORD_NAME} /opt/conda/conda-meta/
         echo 'python 3.11.*' > /opt/conda/conda-meta/pinned
         printf 'channels:\n  - file:///files/site-channel\n' > /opt/conda/.condarc
         ln -s /usr/local/bin/nbrt-conda /opt/conda/bin/conda
         ln -s /usr/local/bin/nbrt-conda /opt/conda/bin/mamba
         mkdir -p /opt/readonly/conda-meta
         d=/opt/conda/lib/python3.11/site-packages/six-1.16.0.dist-info
         mkdir -p $d
         printf 'Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\n' > $d/METADATA
         echo pip > $d/INSTALLER
         cp /files/arcgis_dl_backbones-2.0.1-py_0.tar.bz2 /home/jovyan/
         chown -R 1000:100 /opt/conda /home/jovyan"
    )));

    assert_eq!(
        ok(c.user(&["/opt/conda/bin/conda", "--version"])),
        "conda 24.11.0\n"
    );
    assert!(ok(c.user(&["/opt/conda/bin/mamba", "--version"])).starts_with("mamba "));
    assert_eq!(ok(c.user(&["id", "-u"])), "1000\n");
    assert_eq!(
        ok(c.user(&["/opt/conda/bin/conda", "config", "--show", "channels"])),
        "channels:\n  - file:///files/site-channel\n"
    );

    ok(c.user(&[
        "/opt/conda/bin/conda",
        "install",
        "--yes",
        "-c",
        &url,
        "gamma",
    ]));
    let imported = ok(c.user(&[
        "/opt/conda/bin/python",
        "-c",
        "import alpha, gamma; print(alpha.VALUE, gamma.VALUE)",
    ]));
    assert_eq!(imported, "alpha 1.0 gamma\n");

    let err = fails(c.user(&[
        "/opt/conda/bin/conda",
        "install",
        "--yes",
        "-c",
        &url,
        "beta",
    ]));
    assert!(err.contains("beta") && err.contains("alpha"), "{err}");

    // A configured channel that does not answer (an air-gapped site's conda-forge) is
    // skipped with a warning; -c channels still work.
    ok(c.sh("printf 'channels:\\n  - http://127.0.0.1:1/unreachable\\n' > /opt/conda/.condarc"));
    let out = c.user(&[
        "/opt/conda/bin/conda",
        "install",
        "--dry-run",
        "-c",
        &url,
        "tool",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("WARNING: channel http://127.0.0.1:1/unreachable/ is unreachable"),
        "{}",
        text(&out)
    );
    ok(c.sh("printf 'channels:\\n  - file:///files/site-channel\\n' > /opt/conda/.condarc"));

    // An environment this user cannot write to (root's): conda's error.
    let err = fails(c.user(&[
        "/opt/conda/bin/conda",
        "install",
        "--yes",
        "-p",
        "/opt/readonly",
        "-c",
        &url,
        "alpha",
    ]));
    assert!(
        err.contains("EnvironmentNotWritableError: The current user does not have write permissions to the target environment.\n  environment location: /opt/readonly\n  uid: 1000"),
        "{err}"
    );

    ok(c.user(&["/opt/conda/bin/conda", "remove", "--yes", "gamma"]));
    let gone = c.user(&["/opt/conda/bin/python", "-c", "import gamma"]);
    assert!(!gone.status.success(), "{}", text(&gone));

    ok(c.user(&[
        "/opt/conda/bin/conda",
        "install",
        "--offline",
        "arcgis_dl_backbones-2.0.1-py_0.tar.bz2",
        "-y",
    ]));
    let imported = ok(c.user(&[
        "/opt/conda/bin/python",
        "-c",
        "import arcgis_dl_backbones as a; print(a.BACKBONES)",
    ]));
    assert_eq!(imported, "['resnet']\n");

    ok(c.user(&["/opt/conda/bin/conda", "clean", "-y", "-a"]));
    let json = ok(c.user(&["/opt/conda/bin/conda", "list", "--json"]));
    assert_eq!(
        list_names(&json),
        ["alpha", "arcgis_dl_backbones", "python", "six"]
    );
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&String> = records[0].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "base_url",
            "build_number",
            "build_string",
            "channel",
            "dist_name",
            "name",
            "platform",
            "version"
        ]
    );

    // nbrt's manifest of the container's file system has the same libraries (its Debian
    // packages are a list apart).
    let exported = files.path().join("rootfs.tar");
    let out = docker(&["export", "-o", exported.to_str().unwrap(), &c.0]);
    assert!(out.status.success(), "{}", text(&out));
    let store = nbrt_oci::Store::open(files.path().join("store")).unwrap();
    let options = nbrt_oci::transfer::ImportOptions {
        names: vec![nbrt_oci::ImageName::parse("conda-test:latest").unwrap()],
        ..Default::default()
    };
    let (image, _) =
        nbrt_oci::transfer::import(&store, &exported, &options, &nbrt_oci::Progress::hidden())
            .unwrap();
    let packages =
        nbrt_inspect::image_packages(&store, &image, &nbrt_oci::Progress::hidden()).unwrap();
    let manifest = nbrt_inspect::manifest::Manifest::of(&packages).libraries;
    assert_eq!(serde_json::to_value(&manifest).unwrap(), records);

    let export = ok(c.user(&[
        "/opt/conda/bin/mamba",
        "env",
        "export",
        "--no-build",
        "--json",
        "--from-history",
    ]));
    let export: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(
        export["dependencies"],
        serde_json::json!(["arcgis_dl_backbones"]),
        "gamma was asked for and removed; alpha was never asked for"
    );
}
