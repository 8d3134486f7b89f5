//! User packages in the stock images (built by nbrt, run in Docker with the home on a named
//! volume, as sites run sessions): `pip install --user` and `conda create -n` in one
//! container are there in the next; another runtime on the same home does not see them; a
//! user copy of a package the image has never shadows the image's; a conda environment with
//! ipykernel is a Jupyter kernel.
//!
//! Installs come from a test index and a test channel served on loopback (the containers
//! share the host's network; Jupyter listens on a free port through `JUPYTER_PORT`), and run
//! inside the session, from a kernel, as a user's `!pip` and `!conda` do.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nbrt_testkit::conda_pkg::{channel, Pkg};
use nbrt_testkit::jupyter::Jupyter;
use serde_json::json;

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("running docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A container or volume removed when the test ends, however it ends.
struct Removed(&'static str, String);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = match self.0 {
            "volume" => docker(&["volume", "rm", "-f", &self.1]),
            _ => docker(&["rm", "-fv", &self.1]),
        };
    }
}

/// Pure-Python wheels and a PEP 503 index of them under `dir` (made by the image's Python:
/// a wheel is a zip file).
fn make_index(image: &str, dir: &Path) {
    const MAKE: &str = r#"
import os, zipfile
def wheel(name, version, files):
    dist = f"{name}-{version}"
    path = f"/out/wheels/{dist}-py3-none-any.whl"
    os.makedirs("/out/wheels", exist_ok=True)
    meta = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: nbrt-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files = {**files, **meta}
    record = "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
        z.writestr(f"{dist}.dist-info/RECORD", record)
    project = name.replace("_", "-").lower()
    os.makedirs(f"/out/simple/{project}", exist_ok=True)
    with open(f"/out/simple/{project}/index.html", "w") as f:
        f.write(f'<html><body><a href="../../wheels/{os.path.basename(path)}">{os.path.basename(path)}</a></body></html>\n')
wheel("userpkg", "1.0", {"userpkg/__init__.py": "VALUE = 'userpkg 1.0'\n"})
# An old copy of a package the image has (seed 003's trap: jupyter_server#496 was an old
# jupyter_core in ~/.local shadowing the environment's).
wheel("jupyter_core", "0.0.1", {"jupyter_core/__init__.py": "__version__ = '0.0.1'\n"})
"#;
    docker_ok(&[
        "run",
        "--rm",
        "-u",
        "0",
        "--entrypoint",
        "/opt/conda/bin/python",
        "-v",
        &format!("{}:/out", dir.display()),
        image,
        "-c",
        MAKE,
    ]);
}

/// The test channel: a `python` that is the image's own interpreter made into a venv (so
/// `conda create` works offline), an `ipykernel` that lends the image's ipykernel to the
/// environment, and a small package.
fn make_channel(dir: &Path, python: &str) {
    let mm: String = python.split('.').take(2).collect::<Vec<_>>().join(".");
    let pkgs = vec![
        Pkg::new("python", python)
            .file(
                "pyvenv.cfg",
                &format!(
                    "home = /usr/bin\ninclude-system-site-packages = false\nversion = {python}\n"
                ),
            )
            .symlink("bin/python", &format!("/usr/bin/python{mm}"))
            .symlink("bin/python3", "python"),
        Pkg::new("ipykernel", "6.29.5")
            .noarch_python()
            .depends("python")
            .file(
                "site-packages/nbrt_image_kernel.pth",
                &format!("/opt/conda/lib/python{mm}/site-packages\n"),
            ),
        Pkg::new("envpkg", "1.0")
            .noarch_python()
            .depends("python")
            .file("site-packages/envpkg/__init__.py", "VALUE = 'envpkg 1.0'\n"),
    ];
    channel(&dir.join("channel"), &pkgs);
}

struct Session {
    _container: Removed,
    name: String,
    jupyter: Jupyter,
}

/// A session of `image` with the home on `volume`, on the host's network.
fn session(image: &str, volume: &str, tag: &str) -> Session {
    let port = nbrt_testkit::free_port();
    let token = "nbrt-userpkgs";
    let name = format!("nbrt-userpkgs-{}-{tag}", std::process::id());
    let _ = docker(&["rm", "-f", &name]);
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-v",
        &format!("{volume}:/home/jovyan"),
        "-e",
        &format!("JUPYTER_PORT={port}"),
        "-e",
        &format!("JUPYTER_TOKEN={token}"),
        "-e",
        "NBRT_IP=127.0.0.1",
        image,
        "start-notebook.py",
    ]);
    let container = Removed("container", name.clone());
    let jupyter = Jupyter::new(port, token);
    if let Err(e) = jupyter.wait_ready(Duration::from_secs(180)) {
        let logs = docker(&["logs", &name]);
        panic!("{e}\n{}", text(&logs));
    }
    Session {
        _container: container,
        name,
        jupyter,
    }
}

impl Session {
    /// Run Python code in a new kernel of `kernel_name` (the default when `None`); its
    /// standard output.
    fn run(&self, kernel_name: Option<&str>, code: &str) -> String {
        let id = match kernel_name {
            None => self.jupyter.start_kernel().expect("starting a kernel"),
            Some(n) => {
                let r = self
                    .jupyter
                    .post("/api/kernels", &json!({ "name": n }))
                    .expect("starting a kernel");
                assert_eq!(r.status, 201, "{}", r.body);
                r.json().expect("kernel JSON")["id"]
                    .as_str()
                    .expect("kernel id")
                    .to_string()
            }
        };
        let run = self
            .jupyter
            .execute(&id, code, Duration::from_secs(300))
            .expect("executing code");
        let _ = self.jupyter.delete(&format!("/api/kernels/{id}"));
        assert_eq!(run.error, None, "{code}\n{run:?}");
        run.stdout
    }

    /// A command run from a kernel, as `!command` in a notebook; must succeed.
    fn shell(&self, args: &[&str]) -> String {
        let code = format!(
            "import subprocess\nr = subprocess.run({args:?}, capture_output=True, text=True)\n\
             print(r.stdout + r.stderr)\nassert r.returncode == 0, r.returncode\n",
            args = args
        );
        self.run(None, &code)
    }

    fn kernelspecs(&self) -> serde_json::Value {
        let r = self.jupyter.get("/api/kernelspecs").expect("kernelspecs");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().expect("kernelspecs JSON")
    }
}

#[test]
fn user_packages_last_are_keyed_by_runtime_and_never_shadow_the_image() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let Some(jupyter_image) = nbrt_testkit::stock::docker_image("jupyter") else {
        return;
    };
    let Some(base_image) = nbrt_testkit::stock::docker_image("base") else {
        return;
    };
    let python = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/opt/conda/bin/python",
        &jupyter_image,
        "-c",
        "import sys, jupyter_core; print('%d.%d.%d' % sys.version_info[:3]); print(jupyter_core.__version__)",
    ]);
    let mut lines = python.lines();
    let python = lines.next().expect("python version").to_string();
    let image_jupyter_core = lines.next().expect("jupyter_core version").to_string();
    let abi = format!("cp{}", python.split('.').take(2).collect::<String>());

    let served = tempfile::tempdir().expect("tempdir");
    make_index(&jupyter_image, served.path());
    make_channel(served.path(), &python);
    let url = nbrt_testkit::serve_dir(served.path());
    let index = format!("{url}/simple/");
    let chan = format!("{url}/channel");

    let volume = format!("nbrt-userpkgs-{}", std::process::id());
    let _ = docker(&["volume", "rm", "-f", &volume]);
    docker_ok(&["volume", "create", &volume]);
    let _volume = Removed("volume", volume.clone());
    let userbase = format!("/home/jovyan/.local/share/nbrt/jupyter-{abi}");

    // First session: install.
    {
        let s = session(&jupyter_image, &volume, "a");
        let env = s.run(
            None,
            "import os\nfor k in ('PYTHONUSERBASE', 'CONDA_ENVS_PATH', 'CONDA_PKGS_DIRS'): print(os.environ.get(k))",
        );
        assert_eq!(
            env,
            format!("{userbase}\n{userbase}/envs:/opt/conda/envs\n{userbase}/pkgs\n")
        );
        s.shell(&[
            "/opt/conda/bin/python",
            "-m",
            "pip",
            "install",
            "--user",
            "--index-url",
            &index,
            "userpkg",
        ]);
        // An old copy of an image package forced into the user site.
        s.shell(&[
            "/opt/conda/bin/python",
            "-m",
            "pip",
            "install",
            "--user",
            "--ignore-installed",
            "--no-deps",
            "--index-url",
            &index,
            "jupyter_core==0.0.1",
        ]);
        let out = s.shell(&[
            "conda",
            "create",
            "--yes",
            "-n",
            "myenv",
            "-c",
            &chan,
            "--override-channels",
            "ipykernel",
        ]);
        assert!(out.contains("conda activate myenv"), "{out}");
        s.shell(&[
            "conda",
            "install",
            "--yes",
            "-n",
            "myenv",
            "-c",
            &chan,
            "--override-channels",
            "envpkg",
        ]);
        let listed = s.shell(&["conda", "env", "list", "--json"]);
        assert!(
            listed.contains(&format!("{userbase}/envs/myenv")),
            "{listed}"
        );
    }

    // Second session, a new container on the same home: everything is there.
    let s = session(&jupyter_image, &volume, "b");
    let seen = s.run(
        None,
        "import userpkg, jupyter_core\nprint(userpkg.VALUE)\nprint(userpkg.__file__)\n\
         print(jupyter_core.__version__)\nprint(jupyter_core.__file__)",
    );
    let seen: Vec<&str> = seen.lines().collect();
    assert_eq!(seen[0], "userpkg 1.0");
    assert!(
        seen[1].starts_with(&format!("{userbase}/lib/python")),
        "{seen:?}"
    );
    assert_eq!(
        seen[2], image_jupyter_core,
        "the image's jupyter_core, not the user's 0.0.1: {seen:?}"
    );
    assert!(seen[3].starts_with("/opt/conda/lib/"), "{seen:?}");
    // The user copy is there, behind the image's.
    let behind = s.run(
        None,
        "import sys, site\nu = site.getusersitepackages()\n\
         i = [p for p in sys.path if p.startswith('/opt/conda/lib/') and p.endswith('site-packages')][0]\n\
         print(sys.path.index(i) < sys.path.index(u))",
    );
    assert_eq!(behind.trim(), "True");

    // The environment with ipykernel is a kernel, which runs in the environment.
    let specs = s.kernelspecs();
    let spec = &specs["kernelspecs"]["conda-env-myenv-py"];
    assert_eq!(
        spec["spec"]["display_name"], "Python [conda env:myenv]",
        "{specs}"
    );
    let in_env = s.run(
        Some("conda-env-myenv-py"),
        "import sys, envpkg\nprint(sys.prefix)\nprint(envpkg.VALUE)",
    );
    assert_eq!(in_env, format!("{userbase}/envs/myenv\nenvpkg 1.0\n"));

    // `docker exec` (no nbrt-init in between): the image's site hook keys pip's user base
    // the same way.
    let exec = docker_ok(&[
        "exec",
        &s.name,
        "/opt/conda/bin/python",
        "-c",
        "import os, userpkg; print(os.environ['PYTHONUSERBASE'])",
    ]);
    assert_eq!(exec.trim(), userbase);

    // Removing the environment removes its kernel.
    s.shell(&["conda", "env", "remove", "--yes", "-n", "myenv"]);
    assert!(
        s.kernelspecs()["kernelspecs"]["conda-env-myenv-py"].is_null(),
        "{}",
        s.kernelspecs()
    );

    // `!conda install` into the image's own environment, as seed 000's authors do: a new
    // kernel imports it from /opt/conda; `conda remove` takes it away again.
    s.shell(&[
        "conda",
        "install",
        "--yes",
        "-c",
        &chan,
        "--override-channels",
        "envpkg",
    ]);
    let imported = s.run(
        None,
        "import envpkg\nprint(envpkg.VALUE)\nprint(envpkg.__file__.startswith('/opt/conda/lib/'))",
    );
    assert_eq!(imported, "envpkg 1.0\nTrue\n");
    s.shell(&["conda", "remove", "--yes", "envpkg"]);
    let gone = s.run(
        None,
        "import importlib.util\nprint(importlib.util.find_spec('envpkg'))",
    );
    assert_eq!(gone, "None\n");
    drop(s);

    // Another runtime (base) on the same home sees none of it.
    let other = docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/home/jovyan"),
        &base_image,
        "/opt/conda/bin/python",
        "-c",
        "import importlib.util, os, jupyter_core\n\
         print(os.environ['PYTHONUSERBASE'])\n\
         print(importlib.util.find_spec('userpkg'))\n\
         print(jupyter_core.__version__)",
    ]);
    assert_eq!(
        other,
        format!("/home/jovyan/.local/share/nbrt/base-{abi}\nNone\n{image_jupyter_core}\n")
    );
    let envs = docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/home/jovyan"),
        &base_image,
        "conda",
        "info",
        "--envs",
        "--json",
    ]);
    let envs: serde_json::Value = serde_json::from_str(&envs).expect("conda info JSON");
    assert_eq!(envs["envs"], json!(["/opt/conda"]), "{envs}");
}
