//! Kernel images for remote kernels (issue 7): the stock `kernel-py` runtime, the kernel spec
//! `nbrt kernelspec` writes, and Gateway Provisioners itself as the client.
//!
//! The acceptance test makes a venv with `gateway_provisioners[docker]` and `jupyter_server`,
//! writes the spec with nbrt, starts Jupyter Server with only that kernel, and launches
//! `kernel-py` from the local Docker engine (no pull): `1+1`, an interrupted
//! `time.sleep(60)`, shutdown with the container removed, and no server variable in the
//! kernel's environment.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nbrt_testkit::jupyter::Jupyter;
use serde_json::{json, Value};

/// The Gateway Provisioners release the specs are compared with and the venv runs.
const GP: &str = "gateway_provisioners[docker]==0.5.0";

mod common;
use common::{nbrt, ok};

fn docker(args: &[&str]) -> String {
    ok(
        Command::new("docker").args(args).output().expect("docker"),
        &format!("docker {}", args.join(" ")),
    )
}

/// A venv with Gateway Provisioners and Jupyter Server, made once (kept in
/// target/nbrt-fixtures/gp-venv; delete it to remake). `None` when python3 is missing and
/// skipping is allowed.
fn gp_venv() -> Option<PathBuf> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(|| {
        if !nbrt_testkit::require("python3", &["-c", "import venv"], "python3-venv") {
            return None;
        }
        let dir = nbrt_testkit::fixture_dir();
        let venv = dir.join("gp-venv");
        let lock = fs::File::create(dir.join("gp-venv.lock")).expect("creating the venv lock");
        lock.lock().expect("locking the venv lock");
        if !venv.join(".complete").exists() {
            let _ = fs::remove_dir_all(&venv);
            ok(
                Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .output()
                    .expect("python3 -m venv"),
                "python3 -m venv",
            );
            ok(
                Command::new(venv.join("bin/pip"))
                    .args([
                        "install",
                        "--quiet",
                        "--progress-bar",
                        "off",
                        GP,
                        "jupyter_server",
                    ])
                    .output()
                    .expect("pip install"),
                "pip install gateway_provisioners[docker] jupyter_server (needs PyPI)",
            );
            fs::write(venv.join(".complete"), GP).expect("marking the venv complete");
        }
        Some(venv)
    })
    .clone()
}

/// The stock store with `runtime` (and base) built.
fn store(runtime: &str) -> Option<PathBuf> {
    nbrt_testkit::stock::store_with(runtime)?;
    Some(nbrt_testkit::stock::store_dir())
}

fn kernel_json(dir: &Path) -> Value {
    let text = fs::read_to_string(dir.join("kernel.json")).expect("reading kernel.json");
    serde_json::from_str(&text).expect("kernel.json is JSON")
}

fn argv_flags(spec: &Value) -> Vec<String> {
    spec["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// The spec nbrt writes has the fields and argv flags `jupyter docker-spec install` and
/// `jupyter k8s-spec install` write for the same options (plus nbrt's own flags).
#[test]
fn kernelspec_matches_the_gateway_provisioners_installers() {
    let Some(store) = store("kernel-py") else {
        return;
    };
    let Some(venv) = gp_venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for (provisioner, installer, image) in [
        ("docker", "docker-spec", None),
        (
            "kubernetes",
            "k8s-spec",
            Some("127.0.0.1:5000/nbrt/kernel-py:1"),
        ),
    ] {
        let ours = tmp.path().join(format!("ours-{provisioner}"));
        let theirs = tmp.path().join(format!("theirs-{provisioner}"));
        let mut args = vec![
            "kernelspec",
            "kernel-py",
            "--provisioner",
            provisioner,
            "--kernel-name",
            "kpy",
            "--display-name",
            "Kernel Py",
            "--launch-timeout",
            "90",
            "--port-range",
            "40000..41000",
            "--unauthorized-users",
            "root",
            "--prefix",
            ours.to_str().unwrap(),
            "--json",
        ];
        if let Some(i) = image {
            args.extend(["--image-name", i]);
        } else {
            // The docker spec loads the image: only where Docker runs.
            if !nbrt_testkit::require_docker() {
                continue;
            }
        }
        let out: Value = serde_json::from_str(&ok(nbrt(&store, &args), "nbrt kernelspec")).unwrap();
        let image_name = out["image_name"].as_str().unwrap().to_string();
        ok(
            Command::new(venv.join("bin/jupyter"))
                .args([installer, "install", "--image-name", &image_name])
                .args(["--kernel-name", "kpy", "--display-name", "Kernel Py"])
                .args(["--launch-timeout", "90", "--port-range", "40000..41000"])
                .args(["--unauthorized-users", "root", "--prefix"])
                .arg(&theirs)
                .env("GP_USE_INCLUSTER_CONFIG", "False")
                .output()
                .unwrap(),
            installer,
        );
        let k = "share/jupyter/kernels/kpy";
        let (o, t) = (kernel_json(&ours.join(k)), kernel_json(&theirs.join(k)));
        for field in ["display_name", "language", "interrupt_mode", "env"] {
            assert_eq!(o[field], t[field], "{provisioner}: {field}");
        }
        let mut ok_keys: Vec<&String> = o.as_object().unwrap().keys().collect();
        let mut gp_keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        ok_keys.sort();
        gp_keys.sort();
        assert_eq!(ok_keys, gp_keys, "{provisioner}: kernel.json fields");
        let (op, tp) = (
            &o["metadata"]["kernel_provisioner"],
            &t["metadata"]["kernel_provisioner"],
        );
        assert_eq!(op, tp, "{provisioner}: provisioner name and config");
        assert_eq!(
            o["metadata"]["supported_encryption"], t["metadata"]["supported_encryption"],
            "{provisioner}: kernel-py's ipykernel provisions curve keys"
        );
        let ours_flags = argv_flags(&o);
        for flag in argv_flags(&t) {
            assert!(
                ours_flags.contains(&flag),
                "{provisioner}: {flag} in {ours_flags:?}"
            );
        }
        // The launch script sits where argv says, under the same name.
        let script = o["argv"][1].as_str().unwrap();
        let theirs_script = t["argv"][1].as_str().unwrap();
        assert!(Path::new(script).is_file(), "{script}");
        assert_eq!(
            Path::new(script).file_name(),
            Path::new(theirs_script).file_name()
        );
    }
}

/// The launch scripts give the kernel the protocol's variables and the declared names, and
/// nothing else of the server's environment (research §2.4's leak).
#[test]
fn launch_scripts_pass_only_declared_variables() {
    if !nbrt_testkit::require("python3", &["--version"], "python3") {
        return;
    }
    let Some(store) = store("kernel-py") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for provisioner in ["docker", "kubernetes"] {
        let prefix = tmp.path().join(provisioner);
        ok(
            nbrt(
                &store,
                &[
                    "kernelspec",
                    "kernel-py",
                    "--provisioner",
                    provisioner,
                    "--kernel-name",
                    "kpy",
                    "--image-name",
                    "127.0.0.1:5000/nbrt/kernel-py:1",
                    "--env",
                    "SPEC_SETTING=from-spec",
                    "--pass-env",
                    "TEAM_BUCKET",
                    "--prefix",
                    prefix.to_str().unwrap(),
                ],
            ),
            "nbrt kernelspec",
        );
        let spec = kernel_json(&prefix.join("share/jupyter/kernels/kpy"));
        let argv: Vec<String> = spec["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("{kernel_id}", "3f1c2a0e-0000-4000-a000-000000000001")
                    .replace("{port_range}", "0..0")
                    .replace("{response_address}", "172.17.0.1:8877")
                    .replace("{public_key}", "MFwwDQYJKoZIhvcNAQEBBQADSwAwSAJBAK")
            })
            .collect();
        // The environment the provisioner gives the launcher: the server's plus its own.
        let out = Command::new("python3")
            .arg(&argv[1])
            .args(&argv[2..])
            .arg("--dry-run")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .env("AWS_SECRET_ACCESS_KEY", "server-secret")
            .env("JUPYTER_TOKEN", "server-token")
            .env("SPEC_SETTING", "from-spec")
            .env("TEAM_BUCKET", "s3://team")
            .env("KERNEL_ID", "3f1c2a0e-0000-4000-a000-000000000001")
            .env("KERNEL_LANGUAGE", "python")
            .env("KERNEL_USERNAME", "alice")
            .env("KERNEL_IMAGE", "127.0.0.1:5000/nbrt/kernel-py:1")
            .env("KERNEL_UID", "1000")
            .env("KERNEL_GID", "100")
            .env("KERNEL_POD_NAME", "alice-3f1c2a0e")
            .env("KERNEL_NAMESPACE", "default")
            .env("GP_DOCKER_NETWORK", "kernels")
            .output()
            .unwrap();
        let doc: Value = serde_json::from_str(&ok(out, "launch script --dry-run")).unwrap();
        let env: Vec<(String, String)> = if provisioner == "docker" {
            assert_eq!(doc["network"], "kernels", "the provisioner's network");
            assert_eq!(doc["user"], "1000:100");
            assert_eq!(
                doc["labels"]["kernel_id"],
                "3f1c2a0e-0000-4000-a000-000000000001"
            );
            doc["environment"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        } else {
            let c = &doc["spec"]["containers"][0];
            assert_eq!(c["imagePullPolicy"], "IfNotPresent");
            assert_eq!(doc["spec"]["securityContext"]["runAsUser"], 1000);
            // The conventions shared with the site's session pods (nbrt_oci::pod).
            assert_eq!(doc["spec"]["restartPolicy"], "Never");
            assert_eq!(
                doc["spec"]["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
            assert_eq!(
                doc["metadata"]["annotations"]["cluster-autoscaler.kubernetes.io/safe-to-evict"],
                "false"
            );
            assert_eq!(doc["metadata"]["labels"]["component"], "kernel");
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        for leaked in [
            "AWS_SECRET_ACCESS_KEY",
            "JUPYTER_TOKEN",
            "HOME",
            "PATH",
            "KERNEL_IMAGE",
        ] {
            assert!(
                !names.contains(&leaked),
                "{provisioner}: {leaked} leaked: {names:?}"
            );
        }
        for needed in [
            "KERNEL_ID",
            "KERNEL_LANGUAGE",
            "RESPONSE_ADDRESS",
            "PUBLIC_KEY",
            "PORT_RANGE",
            "SPEC_SETTING",
            "TEAM_BUCKET",
        ] {
            assert!(
                names.contains(&needed),
                "{provisioner}: {needed} missing: {names:?}"
            );
        }
    }
}

/// `nbrt check kernel-py --profile gateway-kernel --live`: our side of the launcher protocol.
#[test]
fn kernel_py_passes_the_live_gateway_kernel_check() {
    let Some(store) = store("kernel-py") else {
        return;
    };
    if !nbrt_testkit::require_docker() {
        return;
    }
    let out = ok(
        nbrt(
            &store,
            &[
                "check",
                "kernel-py",
                "--profile",
                "gateway-kernel",
                "--live",
            ],
        ),
        "nbrt check kernel-py --profile gateway-kernel --live",
    );
    for id in [
        "live.kernel.payload",
        "live.kernel.info",
        "live.kernel.shutdown",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(id)),
            "{id} passed:\n{out}"
        );
    }
}

/// Jupyter Server running in a clean environment; killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default bridge's gateway (the host, as kernels see it): IPAM's gateway, else the
/// first address of its subnet (Docker's choice when none is configured).
fn bridge_gateway() -> String {
    let config: Value = serde_json::from_str(&docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{json .IPAM.Config}}",
    ]))
    .expect("IPAM config JSON");
    let entries = config.as_array().cloned().unwrap_or_default();
    if let Some(g) = entries
        .iter()
        .filter_map(|c| c["Gateway"].as_str())
        .find(|g| g.contains('.'))
    {
        return g.to_string();
    }
    let subnet = entries
        .iter()
        .filter_map(|c| c["Subnet"].as_str())
        .find(|s| s.contains('.'))
        .expect("the bridge network has an IPv4 subnet");
    let base: std::net::Ipv4Addr = subnet.split('/').next().unwrap().parse().unwrap();
    std::net::Ipv4Addr::from(u32::from(base) + 1).to_string()
}

fn kernel_containers(id: &str, all: bool) -> Vec<String> {
    let filter = format!("label=kernel_id={id}");
    let mut args = vec!["ps", "--filter", &filter, "--format", "{{.ID}} {{.Image}}"];
    if all {
        args.push("-a");
    }
    docker(&args).lines().map(str::to_string).collect()
}

/// What differs between the Python and the R kernel in the round trip.
struct Lang {
    runtime: &'static str,
    /// Prints 2.
    two: &'static str,
    /// Prints a JSON object {uid, gid, home, env: [names]}.
    facts: &'static str,
    /// Sleeps 60 s, then prints "finished".
    sleep: &'static str,
}

const PYTHON: Lang = Lang {
    runtime: "kernel-py",
    two: "print(1+1)",
    facts: "import os, json; print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), \
            'home': os.environ.get('HOME'), 'env': sorted(os.environ)}))",
    sleep: "import time; time.sleep(60); print('finished')",
};

const R: Lang = Lang {
    runtime: "kernel-r",
    two: "cat(1+1, '\\n')",
    facts: "cat(jsonlite::toJSON(list(uid = as.integer(system('id -u', intern = TRUE)), \
            gid = as.integer(system('id -g', intern = TRUE)), home = Sys.getenv('HOME'), \
            env = names(Sys.getenv())), auto_unbox = TRUE), '\\n')",
    sleep: "Sys.sleep(60); cat('finished')",
};

#[test]
fn jupyter_server_with_gateway_provisioners_runs_kernel_py() {
    round_trip(&PYTHON);
}

#[test]
fn jupyter_server_with_gateway_provisioners_runs_kernel_r() {
    round_trip(&R);
}

/// Jupyter Server + Gateway Provisioners + the spec nbrt wrote: launch from the local
/// engine without a pull, run code, interrupt a sleep, shut down, container removed.
fn round_trip(lang: &Lang) {
    let Some(store) = store(lang.runtime) else {
        return;
    };
    if !nbrt_testkit::require_docker() {
        return;
    }
    let Some(venv) = gp_venv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let spec: Value = serde_json::from_str(&ok(
        nbrt(
            &store,
            &[
                "kernelspec",
                lang.runtime,
                "--provisioner",
                "docker",
                "--kernel-name",
                "nbrt_test_kernel",
                "--display-name",
                "nbrt test kernel (Docker)",
                "--launch-timeout",
                "120",
                "--python",
                venv.join("bin/python").to_str().unwrap(),
                "--prefix",
                prefix.to_str().unwrap(),
                "--json",
            ],
        ),
        "nbrt kernelspec",
    ))
    .unwrap();
    let image = spec["image_name"].as_str().unwrap().to_string();
    // The engine has it under that exact tag now; nothing may pull during the launch.
    docker(&["image", "inspect", &image]);
    let since = docker(&["system", "info", "--format", "{{.SystemTime}}"])
        .trim()
        .to_string();

    let port = nbrt_testkit::free_port();
    let token = "nbrt-kernels-test";
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let log = tmp.path().join("server.log");
    let mut cmd = Command::new(venv.join("bin/jupyter"));
    cmd.args(["server", "--ServerApp.ip=127.0.0.1"])
        .arg(format!("--ServerApp.port={port}"))
        .arg(format!("--IdentityProvider.token={token}"))
        .args([
            "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True",
            "--KernelSpecManager.allowed_kernelspecs=nbrt_test_kernel",
            "--MappingKernelManager.default_kernel_name=nbrt_test_kernel",
        ])
        .arg(format!("--ServerApp.root_dir={}", home.display()))
        // A clean environment, as the research recommends; the canary must not reach the kernel.
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", venv.join("bin").display()),
        )
        .env("HOME", &home)
        .env("JUPYTER_PATH", prefix.join("share/jupyter"))
        .env("JUPYTER_CONFIG_DIR", tmp.path().join("config"))
        .env("JUPYTER_DATA_DIR", tmp.path().join("data"))
        .env("JUPYTER_RUNTIME_DIR", tmp.path().join("runtime"))
        .env("KERNEL_USERNAME", "nbrt-test")
        .env("GP_RESPONSE_IP", bridge_gateway())
        .env("NBRT_SERVER_CANARY", "server-secret")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap());
    if let Some(h) = std::env::var_os("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", h);
    }
    let server = Server {
        child: cmd.spawn().expect("starting jupyter server"),
        log,
    };
    let j = Jupyter::new(port, token);
    j.wait_ready(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));

    let r = j
        .post("/api/kernels", &json!({"name": "nbrt_test_kernel"}))
        .unwrap();
    assert_eq!(
        r.status,
        201,
        "starting the kernel: {}\n{}",
        r.body,
        server.log()
    );
    let id = r.json().unwrap()["id"].as_str().unwrap().to_string();
    let running = kernel_containers(&id, false);
    assert_eq!(
        running.len(),
        1,
        "one container for the kernel: {running:?}"
    );
    assert!(running[0].ends_with(&image), "{running:?} runs {image}");

    let exec = |code: &str| {
        j.execute(&id, code, Duration::from_secs(50))
            .unwrap_or_else(|e| panic!("{code}: {e}\n{}", server.log()))
    };
    assert_eq!(exec(lang.two).stdout.trim(), "2");

    // Who and where the kernel is, and what it got from the server.
    let facts = exec(lang.facts);
    let facts: Value = serde_json::from_str(facts.stdout.trim()).expect("facts JSON");
    assert_eq!(facts["uid"], 1000);
    assert_eq!(facts["gid"], 100);
    assert_eq!(
        facts["home"], "/home/jovyan",
        "the image's HOME, not the server's"
    );
    let env = facts["env"].to_string();
    for leaked in [
        "NBRT_SERVER_CANARY",
        "JUPYTER_PATH",
        "GP_RESPONSE_IP",
        "JUPYTER_CONFIG_DIR",
    ] {
        assert!(!env.contains(leaked), "{leaked} reached the kernel: {env}");
    }

    // Interrupt a long sleep: the execution ends with KeyboardInterrupt.
    let sleeper = {
        let sleep = lang.sleep;
        let j = j.clone();
        let id = id.clone();
        std::thread::spawn(move || j.execute(&id, sleep, Duration::from_secs(55)))
    };
    let started = Instant::now();
    loop {
        let state = j
            .get(&format!("/api/kernels/{id}"))
            .unwrap()
            .json()
            .unwrap()["execution_state"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if state == "busy" || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = j
        .post(&format!("/api/kernels/{id}/interrupt"), &json!({}))
        .unwrap();
    assert_eq!(r.status, 204, "interrupt: {}", r.body);
    // Ending before its 55 s limit (the sleep is 60 s) without printing "finished" is the
    // interrupt; Python also reports KeyboardInterrupt (IRkernel just ends the cell).
    let interrupted = sleeper
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the interrupted cell ends: {e}\n{}", server.log()));
    assert!(!interrupted.stdout.contains("finished"), "{interrupted:?}");
    if lang.runtime == "kernel-py" {
        let error = interrupted.error.clone().unwrap_or_default();
        assert!(error.contains("KeyboardInterrupt"), "{interrupted:?}");
    }
    assert_eq!(
        exec(lang.two).stdout.trim(),
        "2",
        "alive after the interrupt"
    );

    let r = j.delete(&format!("/api/kernels/{id}")).unwrap();
    assert_eq!(r.status, 204, "shutdown: {}", r.body);
    let started = Instant::now();
    while !kernel_containers(&id, true).is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(
        kernel_containers(&id, true),
        Vec::<String>::new(),
        "the kernel's container is removed"
    );
    let until = docker(&["system", "info", "--format", "{{.SystemTime}}"])
        .trim()
        .to_string();
    let pulls = docker(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "type=image",
        "--filter",
        "event=pull",
    ]);
    assert_eq!(pulls.trim(), "", "no image was pulled");
    drop(server);
}
