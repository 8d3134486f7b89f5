//! nbrt-init starting the Jupyter server in a container: default start, the server settings
//! (GEN_CERT, JUPYTER_PORT, DOCKER_STACKS_JUPYTER_CMD, NOTEBOOK_ARGS, RESTARTABLE,
//! JUPYTERHUB_API_TOKEN), the Kubeflow contract (NB_PREFIX, CORS, auth, an empty home
//! volume) and the healthcheck.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const START: Duration = Duration::from_secs(90);

macro_rules! image_or_skip {
    () => {
        match image() {
            Some(i) => i,
            None => return,
        }
    };
}

fn healthcheck(c: &Container, user: Option<&str>) -> Run {
    let mut args = vec![];
    if let Some(u) = user {
        args.extend(["--user", u]);
    }
    c.exec(&args, &["nbrt-init", "healthcheck"])
}

#[test]
fn default_start_serves_with_token_cors_health_and_stops_on_sigterm() {
    let img = image_or_skip!();
    let c = Container::start(
        &img,
        &[
            "-p",
            "127.0.0.1::8888",
            "-e",
            "JUPYTER_TOKEN=sesame",
            "--health-cmd",
            "nbrt-init healthcheck",
            "--health-interval",
            "1s",
            "--health-retries",
            "60",
        ],
        &[],
    );
    let base = format!("http://127.0.0.1:{}", c.host_port(8888));
    let r = wait_http(&format!("{base}/api"), START);
    assert_eq!(
        r.header("Access-Control-Allow-Origin"),
        Some("*"),
        "CORS header for iframes"
    );
    assert_eq!(
        get(&format!("{base}/api/contents")).status,
        403,
        "token required by default"
    );
    assert_eq!(
        get(&format!("{base}/api/contents?token=sesame")).status,
        200
    );
    let h = healthcheck(&c, None);
    assert_eq!(h.code, 0, "{}{}", h.stdout, h.stderr);
    assert!(h.stdout.starts_with("healthy: http://"), "{}", h.stdout);
    let t = std::time::Instant::now();
    while c.inspect("{{.State.Health.Status}}") != "healthy" {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "Docker never saw the container healthy"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let logs = c.logs();
    assert_log(
        &logs.stderr,
        "INFO",
        "Entered start.sh with args: start-notebook",
    );
    // docker-stacks' start.sh line quotes CMD; start-notebook.py's says what it runs. The
    // server's settings are in /etc/jupyter/jupyter_server_config.py, not on its command line.
    assert_log(
        &logs.stderr,
        "INFO",
        "Executing the command: start-notebook.py",
    );
    assert_eq!(logs.stdout_lines().first(), Some(&"Executing: jupyter lab"));
    assert_log(&logs.stderr, "INFO", "Authentication: token");

    let _ = Command::new("docker")
        .args(["stop", "-t", "20", &c.id])
        .output();
    assert_eq!(
        c.wait(Duration::from_secs(5)),
        0,
        "the server exits cleanly on SIGTERM"
    );
    let logs = c.logs();
    assert_log(&logs.stderr, "INFO", "Received SIGTERM, stopping");
    assert!(
        logs.stderr.contains("received signal 15, stopping"),
        "the server saw the signal:\n{}",
        logs.stderr
    );
}

#[test]
fn gen_cert_port_jupyter_cmd_and_notebook_args() {
    let img = image_or_skip!();
    let c = Container::start(
        &img,
        &[
            "-p",
            "127.0.0.1::9443",
            "-e",
            "GEN_CERT=yes",
            "-e",
            "JUPYTER_PORT=9443",
            "-e",
            "DOCKER_STACKS_JUPYTER_CMD=server",
            "-e",
            "NOTEBOOK_ARGS=--ServerApp.token=abc '--ServerApp.shutdown_no_activity_timeout=0'",
        ],
        &["start-notebook", "--ServerApp.log_level=DEBUG"],
    );
    let port = c.host_port(9443);
    let r = wait_http(&format!("https://127.0.0.1:{port}/api"), START);
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&format!("https://127.0.0.1:{port}/api/contents?token=abc")).status,
        200
    );
    assert!(
        nbrt_init::http::get(
            &format!("http://127.0.0.1:{port}/api"),
            Duration::from_secs(3)
        )
        .map(|r| r.status != 200)
        .unwrap_or(true),
        "plain HTTP must not be served"
    );
    let pem = c.exec(
        &[],
        &[
            "stat",
            "-c",
            "%a %U",
            "/home/jovyan/.local/share/jupyter/notebook.pem",
        ],
    );
    assert_eq!(pem.stdout.trim(), "600 jovyan");
    let logs = c.logs();
    assert_log(
        &logs.stderr,
        "INFO",
        "Generated a self-signed certificate for HTTPS",
    );
    assert_log(
        &logs.stderr,
        "INFO",
        "Executing the command: start-notebook --ServerApp.log_level=DEBUG",
    );
    assert!(
        logs.stdout.lines().any(|l| l
            == "Executing: jupyter server --ServerApp.token=abc --ServerApp.shutdown_no_activity_timeout=0 --ServerApp.log_level=DEBUG"),
        "{}",
        logs.stdout
    );
    let h = healthcheck(&c, None);
    assert_eq!(h.code, 0, "{}", h.stdout);
    assert!(h.stdout.contains("https://"), "{}", h.stdout);
}

#[test]
fn kubeflow_prefix_no_token_and_empty_home_volume() {
    let img = image_or_skip!();
    let vol = Volume::new();
    let mount = format!(
        "type=volume,src={},dst=/home/jovyan,volume-nocopy=true",
        vol.name
    );
    // The volume as a Kubernetes PVC with fsGroup 100 would be: group-writable, with the
    // user's own files that must survive.
    let prep = run(
        &img,
        &["--user", "root", "--entrypoint", "sh", "--mount", &mount],
        &["-c", "cd /home/jovyan && echo mine > .bashrc && echo keep > keep.txt && chown -R 1000:100 . && chmod 2775 ."],
    );
    assert_eq!(prep.code, 0, "{}", prep.stderr);
    let c = Container::start(
        &img,
        &[
            "-p",
            "127.0.0.1::8888",
            "--mount",
            &mount,
            "-e",
            "NB_PREFIX=/notebook/team/nb1",
            "-e",
            "KUBERNETES_SERVICE_HOST=10.0.0.1",
        ],
        &[],
    );
    let base = format!("http://127.0.0.1:{}/notebook/team/nb1", c.host_port(8888));
    let r = wait_http(&format!("{base}/api"), START);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
    assert_eq!(
        get(&format!("{base}/api/contents")).status,
        200,
        "no token: the platform authenticates"
    );
    let files = c.exec(&[], &["sh", "-c", "cat .bashrc keep.txt; test -f .bash_logout && echo from the image skeleton; test -f .profile && echo has-profile"]);
    assert_eq!(
        files.stdout_lines(),
        ["mine", "keep", "from the image skeleton", "has-profile"]
    );
    let logs = c.logs();
    assert_log(&logs.stderr, "INFO", "missing entries from the home skeleton /usr/local/share/nbrt/home-skel into /home/jovyan (nothing overwritten)");
    assert_log(&logs.stderr, "WARNING", "Authentication: none");
    assert_eq!(healthcheck(&c, None).code, 0);
}

#[test]
fn healthcheck_is_honest_about_users_and_restarts() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        s.spawn(|| {
            // docker-stacks reports this one unhealthy (NB_USER without a root start).
            let c = Container::start(&img, &["-e", "NB_USER=testuser"], &[]);
            c.wait_log("is running at", START);
            let h = healthcheck(&c, None);
            assert_eq!(h.code, 0, "{}", h.stdout);
        });
        s.spawn(|| {
            // Root start, server as alice with another home; the check runs as root.
            let c = Container::start(
                &img,
                &["--user", "root", "-e", "NB_USER=alice", "-e", "NB_UID=1234", "-e", "RESTARTABLE=yes"],
                &[],
            );
            c.wait_log("is running at", START);
            let h = healthcheck(&c, None);
            assert_eq!(h.code, 0, "{}", h.stdout);
            // A user who may not read the server's environment gets told why, not a guess.
            let h = healthcheck(&c, Some("4321"));
            assert_eq!(h.code, 1);
            assert!(h.stdout.contains("(uid 1234): cannot read") && h.stdout.contains("as uid 4321"), "{}", h.stdout);
            // RESTARTABLE: kill the server; it comes back.
            let k = c.exec(&[], &["sh", "-c", "for p in /proc/[0-9]*; do grep -q bin/jupyter-la[b] $p/cmdline 2>/dev/null && kill -KILL ${p#/proc/}; done; true"]);
            assert_eq!(k.code, 0);
            c.wait_log("restarting it (RESTARTABLE=yes)", Duration::from_secs(20));
            let t = std::time::Instant::now();
            loop {
                if healthcheck(&c, None).code == 0 {
                    break;
                }
                assert!(t.elapsed() < START, "server did not come back");
                std::thread::sleep(Duration::from_millis(300));
            }
            assert!(c.running());
        });
        s.spawn(|| {
            // JupyterHub: the API token switches to the single-user server.
            let c = Container::start(
                &img,
                &[
                    "-e",
                    "JUPYTERHUB_API_TOKEN=x",
                    "-e",
                    "NOTEBOOK_ARGS=--debug",
                ],
                &[],
            );
            let logs = c.wait_stdout(
                "Executing: jupyterhub-singleuser --debug",
                Duration::from_secs(30),
            );
            assert!(
                logs.stdout.contains("WARNING: using start-singleuser.py instead of start-notebook.py to start a server associated with JupyterHub.\n"),
                "{}",
                logs.stdout
            );
        });
        s.spawn(|| {
            // No server at all: unhealthy, with the reason.
            let c = Container::start(&img, &[], &["sleep", "1000"]);
            let h = healthcheck(&c, None);
            assert_eq!(h.code, 1);
            assert!(
                h.stdout.contains("no Jupyter server process"),
                "{}",
                h.stdout
            );
        });
    });
}
