//! docker-stacks compatibility of the stock jupyter image (issue 21): server arguments and
//! aliases a user gives win over the image's defaults, the server listens on IPv4 and IPv6,
//! docker-stacks' helper scripts (fix-permissions, _docker_stacks_log.sh, run-hooks.sh)
//! behave as theirs, the start logs carry docker-stacks' lines verbatim, and
//! `start-notebook.py` works as the entrypoint.

mod common;

use common::*;
use std::time::Duration;

const START: Duration = Duration::from_secs(240);

macro_rules! image_or_skip {
    () => {
        match image() {
            Some(i) => i,
            None => return,
        }
    };
}

/// /proc/net/tcp's IPv4 wildcard and loopback, /proc/net/tcp6's wildcard.
const V4_ANY: &str = "00000000";
const V4_LOOPBACK: &str = "0100007F";
const V6_ANY: &str = "00000000000000000000000000000000";

/// One of the invocations that crashed with traitlets' "ip only accepts one value, got 2"
/// while nbrt-init put its settings on the command line.
struct Case {
    what: &'static str,
    docker_args: &'static [&'static str],
    cmd: &'static [&'static str],
    /// Where the server must answer, inside the container.
    url: &'static str,
    /// Listening sockets (address, port) there must be, and ones there must not be.
    listening: &'static [(&'static str, u16)],
    not_listening: &'static [(&'static str, u16)],
}

const CASES: &[Case] = &[
    Case {
        what: "start-notebook.sh --ip=0.0.0.0 --no-browser",
        docker_args: &[],
        cmd: &["start-notebook.sh", "--ip=0.0.0.0", "--no-browser"],
        url: "http://127.0.0.1:8888/api",
        listening: &[(V4_ANY, 8888)],
        not_listening: &[(V6_ANY, 8888)],
    },
    Case {
        what: "--port=9999",
        docker_args: &[],
        cmd: &["start-notebook.py", "--port=9999"],
        url: "http://127.0.0.1:9999/api",
        listening: &[(V4_ANY, 9999), (V6_ANY, 9999)],
        not_listening: &[(V4_ANY, 8888)],
    },
    Case {
        what: "--ServerApp.port=9999",
        docker_args: &[],
        cmd: &["start-notebook.py", "--ServerApp.port=9999"],
        url: "http://127.0.0.1:9999/api",
        listening: &[(V4_ANY, 9999), (V6_ANY, 9999)],
        not_listening: &[(V4_ANY, 8888)],
    },
    Case {
        what: "--ServerApp.open_browser=False",
        docker_args: &[],
        cmd: &["start-notebook.py", "--ServerApp.open_browser=False"],
        url: "http://127.0.0.1:8888/api",
        listening: &[(V4_ANY, 8888), (V6_ANY, 8888)],
        not_listening: &[],
    },
    Case {
        what: "--ip=127.0.0.1",
        docker_args: &[],
        cmd: &["start-notebook.py", "--ip=127.0.0.1"],
        url: "http://127.0.0.1:8888/api",
        listening: &[(V4_LOOPBACK, 8888)],
        not_listening: &[(V4_ANY, 8888), (V6_ANY, 8888)],
    },
    Case {
        what: "NOTEBOOK_ARGS=--ServerApp.ip=",
        docker_args: &["-e", "NOTEBOOK_ARGS=--ServerApp.ip= --port=8899"],
        cmd: &[],
        url: "http://127.0.0.1:8899/api",
        listening: &[(V4_ANY, 8899), (V6_ANY, 8899)],
        not_listening: &[],
    },
    Case {
        what: "NB_PREFIX=/user/x with --ServerApp.base_url=/user/x",
        docker_args: &["-e", "NB_PREFIX=/user/x"],
        cmd: &["start-notebook.py", "--ServerApp.base_url=/user/x"],
        url: "http://127.0.0.1:8888/user/x/api",
        listening: &[(V4_ANY, 8888), (V6_ANY, 8888)],
        not_listening: &[],
    },
];

#[test]
fn the_users_server_arguments_win_over_the_images_defaults() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        for case in CASES {
            let img = &img;
            s.spawn(move || {
                let c = Container::start(img, case.docker_args, case.cmd);
                wait_http_inside(&c, case.url, START);
                let l = listeners(&c);
                for want in case.listening {
                    assert!(
                        l.iter().any(|(a, p)| a == want.0 && *p == want.1),
                        "{}: no listener {want:?} in {l:?}",
                        case.what
                    );
                }
                for unwanted in case.not_listening {
                    assert!(
                        !l.iter().any(|(a, p)| a == unwanted.0 && *p == unwanted.1),
                        "{}: listener {unwanted:?} in {l:?}",
                        case.what
                    );
                }
                let logs = c.logs();
                assert!(
                    !logs.stderr.contains("only accepts one value"),
                    "{}:\n{}",
                    case.what,
                    logs.stderr
                );
            });
        }
    });
}

#[test]
fn the_server_answers_on_ipv4_and_ipv6() {
    let img = image_or_skip!();
    let net = Network::ipv6();
    let c = Container::start(&img, &["--network", &net.name], &[]);
    let addrs = c.inspect(&format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}} {{{{(index .NetworkSettings.Networks \"{}\").GlobalIPv6Address}}}}",
        net.name, net.name
    ));
    let (v4, v6) = addrs
        .split_once(' ')
        .unwrap_or_else(|| panic!("addresses of {}: {addrs:?}", c.id));
    assert!(!v4.is_empty() && v6.contains(':'), "{addrs:?}");
    // A second container on the network asks both addresses.
    let client = r#"
import sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[3])
for url in (f"http://{sys.argv[1]}:8888/api", f"http://[{sys.argv[2]}]:8888/api"):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                print(url, r.status, flush=True)
                break
        except Exception as e:
            if time.monotonic() > deadline:
                print(url, "failed:", e, flush=True)
                sys.exit(1)
            time.sleep(0.3)
"#;
    let secs = START.as_secs().to_string();
    let r = run(
        &img,
        &["--network", &net.name, "--entrypoint", "python3"],
        &["-c", client, v4, v6, &secs],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout_lines(),
        [
            format!("http://{v4}:8888/api 200"),
            format!("http://[{v6}]:8888/api 200")
        ]
    );
    drop(c);
}

#[test]
fn start_notebook_as_the_entrypoint_serves() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        for entrypoint in ["start-notebook.py", "start-notebook"] {
            let img = &img;
            s.spawn(move || {
                let c = Container::start(
                    img,
                    &["--entrypoint", entrypoint, "-p", "127.0.0.1::8888"],
                    &[],
                );
                let r = wait_http(
                    &format!("http://127.0.0.1:{}/api", c.host_port(8888)),
                    START,
                );
                assert_eq!(r.status, 200, "{entrypoint}");
                assert!(c.logs().stdout.contains("Executing: jupyter lab"));
            });
        }
    });
}

/// What docker-stacks users run without thinking about it: Python 3.13 pinned, the
/// `jupyter` command (in base too), pandoc for nbconvert, and nbclassic through
/// `DOCKER_STACKS_JUPYTER_CMD=nbclassic` on a port of the user's choice.
#[test]
fn docker_stacks_software_is_there() {
    let img = image_or_skip!();
    let r = run(
        &img,
        &["--entrypoint", "sh"],
        &[
            "-c",
            "python --version && cat /opt/conda/conda-meta/pinned && jupyter --version && \
             pandoc --version | head -1 && jupyter nbclassic --version",
        ],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("Python 3.13."), "{}", r.stdout);
    assert_eq!(lines[1], "python 3.13.*", "{}", r.stdout);
    assert!(r.stdout.contains("jupyter_core"), "{}", r.stdout);
    assert!(
        lines.iter().any(|l| l.starts_with("pandoc 3.")),
        "{}",
        r.stdout
    );

    let base = nbrt_testkit::stock::docker_image("base").expect("the stock base image");
    let r = run(&base, &["--entrypoint", "jupyter"], &["--paths"]);
    assert_eq!(
        r.code, 0,
        "jupyter --paths in base: {}{}",
        r.stdout, r.stderr
    );
    assert!(
        r.stdout.contains("/opt/conda/share/jupyter"),
        "{}",
        r.stdout
    );

    let c = Container::start(
        &img,
        &["-e", "DOCKER_STACKS_JUPYTER_CMD=nbclassic"],
        &["start-notebook.py", "--port=9988"],
    );
    wait_http_inside(&c, "http://127.0.0.1:9988/tree", START);
    assert!(
        c.logs().stdout.contains("Executing: jupyter nbclassic"),
        "{}",
        c.logs().stdout
    );
}

#[test]
fn start_logs_carry_docker_stacks_lines() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Default start.
            let c = Container::start(&img, &[], &[]);
            let l = c.wait_log("is running at", START);
            assert_messages(
                &l.stderr,
                "INFO",
                &[
                    "Entered start.sh with args: start-notebook.py",
                    "Running hooks in: /usr/local/bin/start-notebook.d as uid: 1000 gid: 100",
                    "Done running hooks in: /usr/local/bin/start-notebook.d",
                    "Running hooks in: /usr/local/bin/before-notebook.d as uid: 1000 gid: 100",
                    "Done running hooks in: /usr/local/bin/before-notebook.d",
                    "Executing the command: start-notebook.py",
                ],
            );
            assert_eq!(l.stdout_lines().first(), Some(&"Executing: jupyter lab"));
            let w = unexpected_warnings(&format!("{}{}", l.stdout, l.stderr), &[]);
            assert!(w.is_empty(), "{w:?}");
        });
        s.spawn(|| {
            // JupyterHub: start-notebook.py hands over to start-singleuser.py.
            let hand_over = "WARNING: using start-singleuser.py instead of start-notebook.py to start a server associated with JupyterHub.";
            // A spawner's environment, with no hub behind the API URL: the single-user
            // server starts, then says it cannot reach the hub.
            let c = Container::start(
                &img,
                &[
                    "-e",
                    "JUPYTERHUB_API_TOKEN=x",
                    "-e",
                    "JUPYTERHUB_API_URL=http://127.0.0.1:1/hub/api",
                    "-e",
                    "JUPYTERHUB_USER=u",
                    "-e",
                    "JUPYTERHUB_CLIENT_ID=jupyterhub-user-u",
                    "-e",
                    "JUPYTERHUB_BASE_URL=/",
                    "-e",
                    "JUPYTERHUB_SERVICE_PREFIX=/user/u/",
                    "-e",
                    "JUPYTERHUB_SERVICE_URL=http://0.0.0.0:8888/user/u/",
                    "-e",
                    "JUPYTERHUB_OAUTH_CALLBACK_URL=/user/u/oauth_callback",
                ],
                &[],
            );
            let l = c.wait_log("Failed to connect to my Hub", START);
            assert_messages(
                &l.stderr,
                "INFO",
                &["Executing the command: start-notebook.py"],
            );
            assert_eq!(
                l.stdout_lines()[..2],
                [hand_over, "Executing: jupyterhub-singleuser"]
            );
            let w = unexpected_warnings(&format!("{}{}", l.stdout, l.stderr), &[hand_over]);
            assert!(w.is_empty(), "{w:?}");
        });
        s.spawn(|| {
            // Root start renaming the user.
            let c = Container::start(&img, &["--user", "root", "-e", "NB_USER=nayvoj"], &[]);
            let l = c.wait_log("is running at", START);
            assert_messages(
                &l.stderr,
                "INFO",
                &[
                    "Entered start.sh with args: start-notebook.py",
                    "Running hooks in: /usr/local/bin/start-notebook.d as uid: 0 gid: 0",
                    "Updated the jovyan user:",
                    "- username: jovyan       -> nayvoj",
                    "- home dir: /home/jovyan -> /home/nayvoj",
                    "Attempting to copy /home/jovyan to /home/nayvoj...",
                    "Success!",
                    "Changing working directory to /home/nayvoj/",
                    "Running hooks in: /usr/local/bin/before-notebook.d as uid: 0 gid: 0",
                    "Done running hooks in: /usr/local/bin/before-notebook.d",
                    "Running as nayvoj: start-notebook.py",
                ],
            );
            assert_eq!(l.stdout_lines().first(), Some(&"Executing: jupyter lab"));
            let w = unexpected_warnings(&format!("{}{}", l.stdout, l.stderr), &[]);
            assert!(w.is_empty(), "{w:?}");
            let who = c.exec(
                &["--user", "nayvoj"],
                &["sh", "-c", "ps -o user= -C jupyter-lab; readlink /proc/$(pgrep -f jupyter-lab | head -1)/cwd"],
            );
            assert_eq!(who.stdout_lines(), ["nayvoj", "/home/nayvoj"], "{}", who.stderr);
        });
        s.spawn(|| {
            // start.sh put in CMD.
            let r = run(&img, &[], &["start.sh", "id", "-u"]);
            assert_eq!(r.stdout.trim(), "1000", "{}", r.stderr);
            assert_messages(
                &r.stderr,
                "WARNING",
                &["start.sh is the default ENTRYPOINT, do not include it in CMD"],
            );
            assert_messages(&r.stderr, "INFO", &["Executing the command: id -u"]);
        });
    });
}

/// A pure-Python wheel, `/tmp/rootpkg-1.0-py3-none-any.whl`.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, zipfile
files = {
    "rootpkg/__init__.py": b"VALUE = 1\n",
    "rootpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: rootpkg\nVersion: 1.0\n",
    "rootpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: nbrt-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
record = []
with zipfile.ZipFile("/tmp/rootpkg-1.0-py3-none-any.whl", "w") as z:
    for name, data in files.items():
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("rootpkg-1.0.dist-info/RECORD,,")
    z.writestr("rootpkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;

#[test]
fn fix_permissions_after_a_root_install() {
    let img = image_or_skip!();
    let c = Container::start(
        &img,
        &["--user", "root", "--entrypoint", "sleep"],
        &["1000"],
    );
    let sh = |user: &str, script: &str| -> Run {
        c.exec(&["--user", user, "-e", "HOME=/tmp"], &["sh", "-c", script])
    };
    let changed_since = |marker: &str| -> Vec<String> {
        sh(
            "root",
            &format!("find /opt/conda /home/jovyan -cnewer {marker} | sort"),
        )
        .stdout_lines()
        .into_iter()
        .map(str::to_owned)
        .collect()
    };
    let not_right = "find /opt/conda ! \\( -group 100 -a -perm -g+rwX \\) -o -type d ! -perm -2000";

    // The stock image is right already: nothing to change.
    let r = sh(
        "root",
        &format!("{not_right} | head; touch /tmp/m0 && fix-permissions /opt/conda /home/jovyan"),
    );
    assert_eq!((r.code, r.stdout.as_str()), (0, ""), "{}", r.stderr);
    assert_eq!(changed_since("/tmp/m0"), Vec::<String>::new());

    // A root install (offline: a wheel made here, installed by root's pip).
    let r = c.exec(&["--user", "root"], &["python3", "-c", MAKE_WHEEL]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = sh(
        "root",
        "touch /tmp/m1 && python3 -m pip install -q --no-index --no-cache-dir /tmp/rootpkg-1.0-py3-none-any.whl",
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let installed = changed_since("/tmp/m1");
    let site = "/opt/conda/lib/python3.13/site-packages";
    assert!(
        installed.contains(&format!("{site}/rootpkg/__init__.py")),
        "{installed:?}"
    );
    let r = sh("root", &format!("{not_right} | wc -l"));
    assert_ne!(r.stdout.trim(), "0", "the install left root-only files");

    let r = sh("root", "touch /tmp/m2 && fix-permissions /opt/conda");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fixed = changed_since("/tmp/m2");
    assert!(!fixed.is_empty());
    let outside: Vec<&String> = fixed.iter().filter(|p| !installed.contains(p)).collect();
    assert!(
        outside.is_empty(),
        "fix-permissions touched entries the install did not: {outside:?}"
    );
    let r = sh(
        "root",
        &format!("{not_right}; stat -c '%U:%G %a' {site}/rootpkg {site}/rootpkg/__init__.py"),
    );
    assert_eq!(
        r.stdout_lines(),
        ["root:users 2775", "root:users 664"],
        "{}",
        r.stderr
    );
    // Again: nothing left to do.
    let r = sh("root", "touch /tmp/m3 && fix-permissions /opt/conda");
    assert_eq!(r.code, 0);
    assert_eq!(changed_since("/tmp/m3"), Vec::<String>::new());

    // jovyan and another uid of group 100 can change, add to and remove the install.
    let r = sh(
        "1000:100",
        &format!("echo 'VALUE = 2' >> {site}/rootpkg/__init__.py && touch {site}/rootpkg/by_jovyan.py && stat -c '%G' {site}/rootpkg/by_jovyan.py"),
    );
    assert_eq!((r.code, r.stdout.trim()), (0, "users"), "{}", r.stderr);
    let r = sh(
        "4321:100",
        &format!("touch {site}/rootpkg/by_4321.py && python3 -m pip uninstall -q -y rootpkg && test ! -e {site}/rootpkg/__init__.py && echo uninstalled"),
    );
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "uninstalled"),
        "{}",
        r.stderr
    );
    drop(c);
}

/// Lines of a `docker run -t` output (one stream, CR LF line ends).
fn tty_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.trim_end_matches('\r').to_owned())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A coloured log line: `\e[<colour>m` LEVEL[timestamp] message `\e[0m`.
fn coloured(line: &str, colour: &str, level: &str, message: &str) -> bool {
    line.strip_prefix(&format!("\x1b[{colour}m"))
        .and_then(|l| l.strip_suffix("\x1b[0m"))
        .is_some_and(|l| is_log_line(l, level) && l.ends_with(&format!("] {message}")))
}

#[test]
fn docker_stacks_log_script() {
    let img = image_or_skip!();
    let script = r#". /usr/local/bin/_docker_stacks_log.sh
_log_info "an info"
_log_warn "a warning"
_log_error "an error"
_log DEBUG "a debug"
_log "no level given"
(_log_fatal "a fatal"; echo "not reached")
echo "fatal exit: $?""#;
    std::thread::scope(|s| {
        s.spawn(|| {
            // Not a terminal: plain lines on stderr.
            let r = run(&img, &["--entrypoint", "bash"], &["-c", script]);
            assert_eq!(r.stdout.trim(), "fatal exit: 1", "{}", r.stderr);
            assert_eq!(
                r.stderr
                    .lines()
                    .map(|l| l.split_once('[').map(|(lv, _)| lv).unwrap_or(l))
                    .collect::<Vec<_>>(),
                ["INFO", "WARNING", "ERROR", "DEBUG", "INFO", "FATAL"],
                "{}",
                r.stderr
            );
            assert_messages(&r.stderr, "INFO", &["an info", "no level given"]);
            assert_messages(&r.stderr, "WARNING", &["a warning"]);
            assert_messages(&r.stderr, "ERROR", &["an error"]);
            assert_messages(&r.stderr, "DEBUG", &["a debug"]);
            assert_messages(&r.stderr, "FATAL", &["a fatal"]);
        });
        s.spawn(|| {
            // A terminal: docker-stacks' colours.
            let r = run(&img, &["-t", "--entrypoint", "bash"], &["-c", script]);
            let l = tty_lines(&r.stdout);
            assert_eq!(l.len(), 7, "{l:?}");
            assert!(
                is_log_line(&l[0], "INFO") && l[0].ends_with("] an info"),
                "{l:?}"
            );
            assert!(coloured(&l[1], "0;33", "WARNING", "a warning"), "{l:?}");
            assert!(coloured(&l[2], "0;31", "ERROR", "an error"), "{l:?}");
            assert!(coloured(&l[3], "0;36", "DEBUG", "a debug"), "{l:?}");
            assert!(is_log_line(&l[4], "INFO"), "{l:?}");
            assert!(coloured(&l[5], "0;1;31", "FATAL", "a fatal"), "{l:?}");
            assert_eq!(l[6], "fatal exit: 1");
        });
        s.spawn(|| {
            // A terminal with NO_COLOR, quiet, and POSIX sh sourcing it.
            let r = run(
                &img,
                &[
                    "-t",
                    "-e",
                    "NO_COLOR=1",
                    "-e",
                    "JUPYTER_DOCKER_STACKS_QUIET=1",
                    "--entrypoint",
                    "sh",
                ],
                &["-c", script],
            );
            let l = tty_lines(&r.stdout);
            assert!(!r.stdout.contains('\x1b'), "{l:?}");
            assert_eq!(l.len(), 4, "INFO and DEBUG hidden: {l:?}");
            assert!(is_log_line(&l[0], "WARNING") && is_log_line(&l[1], "ERROR"));
            assert!(is_log_line(&l[2], "FATAL") && l[3] == "fatal exit: 1");
        });
    });
}

#[test]
fn run_hooks_script_and_log_functions_in_hooks() {
    let img = image_or_skip!();
    let f = Files::new();
    f.add(
        "hooks/10-log.sh",
        "_log_info \"hello from a hook\"\nexport FROM_HOOK=yes\n",
        0o644,
    )
    .add("hooks/20-exec", "#!/bin/sh\necho exec-ran\nexit 4\n", 0o755)
    .add("hooks/30-notes.txt", "not a hook\n", 0o644)
    .add(
        "start/10-log.sh",
        "_log_info \"hello from a start hook\"\n_log_warn \"careful\"\n",
        0o644,
    );
    let hooks = format!("{}:/hooks:ro", f.path("hooks"));
    let start = format!("{}:/usr/local/bin/start-notebook.d:ro", f.path("start"));
    std::thread::scope(|s| {
        s.spawn(|| {
            let script = r#"set -e
. /usr/local/bin/run-hooks.sh || echo "zero: $?"
. /usr/local/bin/run-hooks.sh a b || echo "two: $?"
. /usr/local/bin/run-hooks.sh /nonexistent || echo "missing: $?"
. /usr/local/bin/run-hooks.sh /etc/passwd || echo "file: $?"
source /usr/local/bin/run-hooks.sh /hooks
echo "dir: $? FROM_HOOK=$FROM_HOOK errexit=${-//[^e]/}""#;
            let r = run(
                &img,
                &["-v", &hooks, "--entrypoint", "bash"],
                &["-c", script],
            );
            assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
            assert_eq!(
                r.stdout_lines(),
                [
                    "zero: 1",
                    "two: 1",
                    "missing: 1",
                    "file: 1",
                    "exec-ran",
                    "dir: 0 FROM_HOOK=yes errexit=e"
                ],
                "{}",
                r.stderr
            );
            assert_eq!(
                log_messages(&r.stderr, "ERROR"),
                [
                    "Should pass exactly one directory",
                    "Should pass exactly one directory",
                    "Directory /nonexistent doesn't exist or is not a directory",
                    "Directory /etc/passwd doesn't exist or is not a directory",
                    "/hooks/20-exec has failed, continuing execution",
                ]
            );
            assert_eq!(
                log_messages(&r.stderr, "INFO"),
                [
                    "Running hooks in: /hooks as uid: 1000 gid: 100",
                    "Sourcing shell script: /hooks/10-log.sh",
                    "hello from a hook",
                    "Running executable: /hooks/20-exec",
                    "Ignoring non-executable: /hooks/30-notes.txt",
                    "Done running hooks in: /hooks",
                ]
            );
        });
        s.spawn(|| {
            // nbrt-init's own hook runner: the _log functions are there too.
            let r = run(&img, &["-v", &start], &["true"]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_messages(&r.stderr, "INFO", &["hello from a start hook"]);
            assert_messages(&r.stderr, "WARNING", &["careful"]);
        });
    });
}
