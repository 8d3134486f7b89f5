//! nbrt-init in a container: the docker-stacks start contract with explicit commands
//! (users, homes, ownership, sudo, environment, hooks, logs) and PID 1 duties (exit codes,
//! signals, zombies), plus s6-style cont-init scripts and services.
//!
//! Runs the stock jupyter image built by nbrt (`nbrt_testkit::stock`); its home skeleton is
//! Debian's /etc/skel (.bashrc, .profile, .bash_logout) and `work/`.

mod common;

use common::*;
use std::time::{Duration, Instant};

macro_rules! image_or_skip {
    () => {
        match image() {
            Some(i) => i,
            None => return,
        }
    };
}

#[test]
fn user_modes_give_the_documented_identity() {
    let img = image_or_skip!();
    let show = ["sh", "-c", "id; echo HOME=$HOME; pwd; echo USER=$USER"];
    std::thread::scope(|s| {
        // Default: the image's unprivileged user, nothing changed.
        s.spawn(|| {
            let r = run(&img, &[], &show);
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(
                r.stdout_lines()[0],
                "uid=1000(jovyan) gid=100(users) groups=100(users)"
            );
            assert!(
                r.stdout.contains("HOME=/home/jovyan\n/home/jovyan\n"),
                "{}",
                r.stdout
            );
            assert_log(&r.stderr, "INFO", "Entered start.sh with args: sh -c");
            assert_log(
                &r.stderr,
                "INFO",
                "Running hooks in: /usr/local/bin/start-notebook.d as uid: 1000 gid: 100",
            );
            assert_log(
                &r.stderr,
                "INFO",
                "Done running hooks in: /usr/local/bin/before-notebook.d",
            );
            assert_log(&r.stderr, "INFO", "Executing the command: sh -c");
        });
        // Root start with a new name, uid, gid and group name: home copied, cwd followed.
        s.spawn(|| {
            let r = run(
                &img,
                &["--user", "root", "-e", "NB_USER=alice", "-e", "NB_UID=1234", "-e", "NB_GID=2345", "-e", "NB_GROUP=lab"],
                &["sh", "-c", "id; echo HOME=$HOME; pwd; echo USER=$USER; test -f .bash_logout && echo from the image skeleton; stat -c '%u:%g' /home/alice; grep ^alice: /etc/passwd"],
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            let l = r.stdout_lines();
            assert_eq!(l[0], "uid=1234(alice) gid=2345(lab) groups=2345(lab),100(users)");
            assert_eq!(&l[1..5], ["HOME=/home/alice", "/home/alice", "USER=alice", "from the image skeleton"]);
            assert_eq!(l[5], "1000:100", "the copy keeps owners (no CHOWN_HOME)");
            assert_eq!(l[6], "alice:x:1234:2345::/home/alice:/bin/bash");
            assert_log(&r.stderr, "INFO", "Running hooks in: /usr/local/bin/before-notebook.d as uid: 0 gid: 0");
            assert_log(&r.stderr, "INFO", "- username: jovyan       -> alice");
            assert_log(&r.stderr, "INFO", "Running as alice: sh -c");
        });
        // Root start, rename only.
        s.spawn(|| {
            let r = run(&img, &["--user", "root", "-e", "NB_USER=bob"], &["id"]);
            assert_eq!(
                r.stdout.trim(),
                "uid=1000(bob) gid=100(users) groups=100(users)",
                "{}",
                r.stderr
            );
        });
        // Root start with nothing to change: runs as jovyan, not as root.
        s.spawn(|| {
            let r = run(&img, &["--user", "root"], &["id", "-u"]);
            assert_eq!(r.stdout.trim(), "1000", "{}", r.stderr);
        });
        // The root/0/0 triplet: stays root, home /home/root filled from /home/jovyan, owned by root.
        s.spawn(|| {
            let r = run(
                &img,
                &["--user", "root", "-e", "NB_USER=root", "-e", "NB_UID=0", "-e", "NB_GID=0"],
                &["sh", "-c", "id -u; echo HOME=$HOME; stat -c '%U' /home/root/.bash_logout; grep ^root: /etc/passwd"],
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(r.stdout_lines(), ["0", "HOME=/home/root", "root", "root:x:0:0:root:/home/root:/bin/bash"]);
            assert_log(&r.stderr, "INFO", "Running as root:");
        });
        // Arbitrary uid with gid 0 (OpenShift style): passwd entry fixed up.
        s.spawn(|| {
            let r = run(
                &img,
                &["--user", "4321:0"],
                &["sh", "-c", "id; grep -c ^nayvoj: /etc/passwd"],
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(
                r.stdout_lines(),
                ["uid=4321(jovyan) gid=0(root) groups=0(root)", "1"]
            );
        });
        // Arbitrary uid without gid 0: cannot fix passwd, says how; home not writable, says how.
        s.spawn(|| {
            let r = run(&img, &["--user", "4321:4321"], &["id", "-u"]);
            assert_eq!(r.stdout.trim(), "4321");
            assert_log(
                &r.stderr,
                "WARNING",
                "unable to fix missing /etc/passwd entry",
            );
            assert_log(&r.stderr, "WARNING", "--user=4321:0");
            assert_log(&r.stderr, "WARNING", "--group-add=users");
        });
        // Non-root start asking for root-only changes: warnings, no effect.
        s.spawn(|| {
            let r = run(
                &img,
                &[
                    "-e",
                    "NB_UID=1234",
                    "-e",
                    "NB_GID=2345",
                    "-e",
                    "NB_USER=carol",
                    "-e",
                    "GRANT_SUDO=yes",
                ],
                &["id", "-u"],
            );
            assert_eq!(r.stdout.trim(), "1000");
            assert_log(
                &r.stderr,
                "WARNING",
                "container must be started as root to grant sudo permissions!",
            );
            assert_log(
                &r.stderr,
                "WARNING",
                "change the desired user's name with NB_USER=\"carol\"",
            );
            assert_log(
                &r.stderr,
                "WARNING",
                "change the desired user's id with NB_UID=\"1234\"",
            );
            assert_log(
                &r.stderr,
                "WARNING",
                "change the desired user's group id with NB_GID=\"2345\"",
            );
        });
        // Quiet: no INFO lines, warnings stay.
        s.spawn(|| {
            let r = run(
                &img,
                &["-e", "JUPYTER_DOCKER_STACKS_QUIET=1", "-e", "GRANT_SUDO=1"],
                &["true"],
            );
            assert!(
                !r.stderr.lines().any(|l| is_log_line(l, "INFO")),
                "{}",
                r.stderr
            );
            assert_log(&r.stderr, "WARNING", "grant sudo");
        });
        // Invalid input is a clear FATAL line.
        s.spawn(|| {
            let r = run(&img, &["--user", "root", "-e", "NB_UID=abc"], &["true"]);
            assert_eq!(r.code, 1);
            assert_log(&r.stderr, "FATAL", "invalid NB_UID=\"abc\"");
        });
    });
}

#[test]
fn ownership_sudo_environment_and_umask() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        s.spawn(|| {
            // CHOWN_HOME without -R: only the home itself; CHOWN_EXTRA: each listed path.
            let r = run(
                &img,
                &[
                    "--user",
                    "root",
                    "-e",
                    "NB_UID=1234",
                    "-e",
                    "CHOWN_HOME=yes",
                    "-e",
                    "CHOWN_EXTRA=/data1,/data2",
                    "--tmpfs",
                    "/data1",
                    "--tmpfs",
                    "/data2",
                ],
                &[
                    "stat",
                    "-c",
                    "%n %u:%g",
                    "/home/jovyan",
                    "/home/jovyan/work",
                    "/data1",
                    "/data2",
                ],
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(
                r.stdout_lines(),
                [
                    "/home/jovyan 1234:100",
                    "/home/jovyan/work 1000:100",
                    "/data1 1234:100",
                    "/data2 1234:100"
                ]
            );
        });
        s.spawn(|| {
            let r = run(
                &img,
                &[
                    "--user",
                    "root",
                    "-e",
                    "NB_UID=1234",
                    "-e",
                    "NB_GID=2345",
                    "-e",
                    "CHOWN_HOME=1",
                    "-e",
                    "CHOWN_HOME_OPTS=-R",
                ],
                &[
                    "stat",
                    "-c",
                    "%u:%g",
                    "/home/jovyan",
                    "/home/jovyan/work",
                    "/home/jovyan/.bashrc",
                ],
            );
            assert_eq!(
                r.stdout_lines(),
                ["1234:2345", "1234:2345", "1234:2345"],
                "{}",
                r.stderr
            );
        });
        s.spawn(|| {
            // GRANT_SUDO: passwordless sudo, conda first on sudo's PATH; environment survives
            // the user switch (no sudo in between).
            let r = run(
                &img,
                &["--user", "root", "-e", "GRANT_SUDO=yes", "-e", "NB_UID=1234",
                  "-e", "LD_LIBRARY_PATH=/opt/lib", "-e", "PYTHONPATH=/opt/py", "-e", "MY_SETTING=kept"],
                &["sh", "-c", "sudo -n id -u; sudo -n sh -c 'command -v python'; echo $LD_LIBRARY_PATH $PYTHONPATH $MY_SETTING; echo $PATH"],
            );
            assert_eq!(r.code, 0, "{}", r.stderr);
            let l = r.stdout_lines();
            assert_eq!(&l[..3], ["0", "/opt/conda/bin/python", "/opt/lib /opt/py kept"]);
            assert!(l[3].starts_with("/opt/conda/bin:"), "{}", l[3]);
        });
        s.spawn(|| {
            let r = run(&img, &["--user", "root"], &["sudo", "-n", "true"]);
            assert_ne!(r.code, 0, "no sudo without GRANT_SUDO");
        });
        s.spawn(|| {
            let r = run(
                &img,
                &[
                    "-e",
                    "NB_UMASK=002",
                    "-e",
                    "SECRET=s",
                    "-e",
                    "OTHER=o",
                    "-e",
                    "KEEP=k",
                    "-e",
                    "JUPYTER_ENV_VARS_TO_UNSET=SECRET, OTHER",
                ],
                &[
                    "sh",
                    "-c",
                    "umask; env | sort | grep -E '^(SECRET|OTHER|KEEP|JUPYTER_ENV_VARS_TO_UNSET)='",
                ],
            );
            assert_eq!(r.stdout_lines(), ["0002", "KEEP=k"], "{}", r.stderr);
        });
    });
}

#[test]
fn hooks_run_in_order_and_exports_reach_the_command() {
    let img = image_or_skip!();
    let f = Files::new();
    f.add(
        "start/10-export.sh",
        "echo \"hook 10-export uid=$(id -u)\"\nexport FROM_START=one\nunset REMOVE_ME\n",
        0o644,
    )
    .add(
        "start/20-exec",
        "#!/bin/sh\necho \"hook 20-exec sees FROM_START=$FROM_START\"\nexport NOT_PROPAGATED=x\n",
        0o755,
    )
    .add("start/30-notes.txt", "not a hook\n", 0o644)
    .add(
        "start/40-fails.sh",
        "echo 'hook 40-fails'\nexport FROM_FAILING=still\nfalse\n",
        0o644,
    )
    .add(
        "before/10-before.sh",
        "echo \"hook before uid=$(id -u)\"\nexport FROM_BEFORE=two\n",
        0o644,
    );
    let mounts = [
        "-v",
        &format!("{}:/usr/local/bin/start-notebook.d:ro", f.path("start")),
        "-v",
        &format!("{}:/usr/local/bin/before-notebook.d:ro", f.path("before")),
    ];
    let cmd = ["sh", "-c", "echo \"main FROM_START=$FROM_START FROM_BEFORE=$FROM_BEFORE FROM_FAILING=$FROM_FAILING REMOVE_ME=${REMOVE_ME:-gone} NOT_PROPAGATED=${NOT_PROPAGATED:-unset}\""];
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut args = mounts.to_vec();
            args.extend(["-e", "REMOVE_ME=x"]);
            let r = run(&img, &args, &cmd);
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(
                r.stdout_lines(),
                [
                    "hook 10-export uid=1000",
                    "hook 20-exec sees FROM_START=one",
                    "hook 40-fails",
                    "hook before uid=1000",
                    "main FROM_START=one FROM_BEFORE=two FROM_FAILING=still REMOVE_ME=gone NOT_PROPAGATED=unset",
                ]
            );
            assert_log(&r.stderr, "INFO", "Running hooks in: /usr/local/bin/start-notebook.d as uid: 1000 gid: 100");
            assert_log(&r.stderr, "INFO", "Ignoring non-executable: /usr/local/bin/start-notebook.d/30-notes.txt");
            assert_log(&r.stderr, "ERROR", "/usr/local/bin/start-notebook.d/40-fails.sh has failed, continuing execution");
            assert_log(&r.stderr, "INFO", "Done running hooks in: /usr/local/bin/start-notebook.d");
        });
        s.spawn(|| {
            // Root start: both hook directories run as root, the command as the user.
            let mut args = mounts.to_vec();
            args.extend(["--user", "root"]);
            let r = run(
                &img,
                &args,
                &[
                    "sh",
                    "-c",
                    "echo main uid=$(id -u) FROM_BEFORE=$FROM_BEFORE",
                ],
            );
            let l = r.stdout_lines();
            assert_eq!(l[0], "hook 10-export uid=0", "{}", r.stderr);
            assert_eq!(l[3], "hook before uid=0");
            assert_eq!(l[4], "main uid=1000 FROM_BEFORE=two");
        });
        s.spawn(|| {
            // A sourced hook that leaves the shell (set -e + failure) stops the start.
            let g = Files::new();
            g.add(
                "start/10-strict.sh",
                "set -e\necho strict\nfalse\necho unreachable\n",
                0o644,
            );
            let r = run(
                &img,
                &[
                    "-v",
                    &format!("{}:/usr/local/bin/start-notebook.d:ro", g.path("start")),
                ],
                &["echo", "main-ran"],
            );
            assert_eq!(r.code, 1, "{}", r.stderr);
            assert_eq!(r.stdout.trim(), "strict");
            assert_log(
                &r.stderr,
                "FATAL",
                "10-strict.sh exited the start shell with status 1",
            );
        });
    });
}

#[test]
fn pid1_exit_codes_signals_and_zombies() {
    let img = image_or_skip!();
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(run(&img, &[], &["sh", "-c", "exit 3"]).code, 3));
        s.spawn(|| assert_eq!(run(&img, &[], &["sh", "-c", "kill -KILL $$"]).code, 137));
        s.spawn(|| {
            let r = run(&img, &[], &["no-such-program"]);
            assert_eq!(r.code, 127);
            assert_log(&r.stderr, "FATAL", "no-such-program");
        });
        s.spawn(|| {
            // 20 orphans exit while the command keeps running: PID 1 must reap them all.
            let script = r#"
import os, time, glob
for _ in range(20):
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.2); os._exit(0)
        os._exit(0)
    os.wait()
time.sleep(1.5)
z = 0
for p in glob.glob('/proc/[0-9]*/stat'):
    try:
        if open(p).read().rsplit(')', 1)[1].split()[0] == 'Z': z += 1
    except OSError: pass
print('zombies', z)
"#;
            let r = run(&img, &[], &["python3", "-c", script]);
            assert_eq!(r.stdout.trim(), "zombies 0", "{}", r.stderr);
        });
        s.spawn(|| {
            // docker stop: SIGTERM reaches the command's process group; its exit code is the container's.
            let c = Container::start(
                &img,
                &[],
                &[
                    "sh",
                    "-c",
                    "trap 'echo got-TERM; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
                ],
            );
            c.wait_stdout("ready", Duration::from_secs(30));
            let t = Instant::now();
            let _ = std::process::Command::new("docker")
                .args(["stop", "-t", "10", &c.id])
                .output();
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "stop took {:?}",
                t.elapsed()
            );
            assert_eq!(c.wait(Duration::from_secs(5)), 7);
            assert!(c.logs().stdout.contains("got-TERM"));
        });
        s.spawn(|| {
            // Other signals are forwarded too (docker kill -s USR1).
            let c = Container::start(
                &img,
                &[],
                &[
                    "sh",
                    "-c",
                    "trap 'echo got-USR1' USR1; echo ready; while :; do sleep 0.1; done",
                ],
            );
            c.wait_stdout("ready", Duration::from_secs(30));
            let _ = std::process::Command::new("docker")
                .args(["kill", "-s", "USR1", &c.id])
                .output();
            c.wait_stdout("got-USR1", Duration::from_secs(5));
            assert!(c.running());
        });
        s.spawn(|| {
            // nbrt-init named again in CMD is dropped; docker-stacks' script names work.
            assert_eq!(
                run(&img, &[], &["nbrt-init", "id", "-u"]).stdout.trim(),
                "1000"
            );
            assert_eq!(
                run(&img, &[], &["start.sh", "id", "-u"]).stdout.trim(),
                "1000"
            );
        });
    });
}

#[test]
fn cont_init_scripts_and_supervised_services() {
    let img = image_or_skip!();
    let f = Files::new();
    f.add(
        "cont-init.d/01-first",
        "#!/bin/sh\necho cont-init-1 >> /tmp/order\n",
        0o755,
    )
    .add(
        "cont-init.d/02-second",
        "#!/bin/sh\necho cont-init-2 >> /tmp/order\n",
        0o755,
    )
    .add(
        "services.d/ticker/run",
        "#!/bin/sh\necho \"run $(id -u) $$\" >> /tmp/ticker.log\nexec sleep 1000\n",
        0o755,
    )
    .add(
        "services.d/ticker/finish",
        "#!/bin/sh\necho \"finish $1 $2\" >> /tmp/ticker.log\n",
        0o755,
    )
    .add(
        "services.d/rootsvc/run",
        "#!/bin/sh\nid -u > /tmp/rootsvc.uid\nexec sleep 1000\n",
        0o755,
    )
    .add("services.d/rootsvc/user", "root\n", 0o644)
    .add(
        "services.d/off/run",
        "#!/bin/sh\ntouch /tmp/off-ran\n",
        0o755,
    )
    .add("services.d/off/down", "", 0o644);
    let c = Container::start(
        &img,
        &[
            "--user",
            "root",
            "-v",
            &format!("{}:/etc/cont-init.d:ro", f.path("cont-init.d")),
            "-v",
            &format!("{}:/etc/services.d:ro", f.path("services.d")),
        ],
        &[
            "sh",
            "-c",
            "cat /tmp/order; echo main-started; exec sleep 1000",
        ],
    );
    let logs = c.wait_stdout("main-started", Duration::from_secs(30));
    assert!(
        logs.stdout.starts_with("cont-init-1\ncont-init-2\n"),
        "{}",
        logs.stdout
    );
    let read = |p: &str| c.exec(&[], &["cat", p]).stdout;
    let t = Instant::now();
    while !read("/tmp/ticker.log").contains("run ") || read("/tmp/rootsvc.uid").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "services did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        read("/tmp/rootsvc.uid").trim(),
        "0",
        "a service with user=root runs as root"
    );
    let first = read("/tmp/ticker.log");
    let first_line = first.lines().next().unwrap_or_default().to_owned();
    let mut words = first_line.split_whitespace().skip(1);
    assert_eq!(
        words.next(),
        Some("1000"),
        "services run as NB_USER: {first}"
    );
    let pid = words.next().unwrap_or_default().to_owned();
    let k = c.exec(&[], &["sh", "-c", &format!("kill -KILL {pid}")]);
    assert_eq!(k.code, 0, "{}", k.stderr);
    let t = Instant::now();
    loop {
        let log = read("/tmp/ticker.log");
        let runs = log.lines().filter(|l| l.starts_with("run ")).count();
        if runs >= 2 {
            assert!(
                log.contains("finish 256 9"),
                "finish gets exit 256 and the signal: {log}"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "service not restarted: {log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(
        c.exec(&[], &["test", "-e", "/tmp/off-ran"]).code,
        0,
        "a service with a down file is not started"
    );
    let logs = c.logs();
    assert_log(
        &logs.stderr,
        "INFO",
        "Running cont-init script: /etc/cont-init.d/01-first",
    );
    assert_log(
        &logs.stderr,
        "WARNING",
        "Service ticker exited with status 137",
    );
    let _ = std::process::Command::new("docker")
        .args(["stop", "-t", "10", &c.id])
        .output();
    assert_eq!(
        c.wait(Duration::from_secs(10)),
        143,
        "exit code of the main command killed by SIGTERM"
    );
}

#[test]
fn a_failing_cont_init_script_stops_the_container() {
    let img = image_or_skip!();
    let f = Files::new();
    f.add("01-ok", "#!/bin/sh\necho cont-init-ok\n", 0o755)
        .add("02-fail", "#!/bin/sh\necho cont-init-fail\nexit 3\n", 0o755)
        .add("03-never", "#!/bin/sh\necho cont-init-never\n", 0o755);
    let r = run(
        &img,
        &["-v", &format!("{}:/etc/cont-init.d:ro", f.path(""))],
        &["echo", "main-ran"],
    );
    assert_eq!(r.code, 3);
    assert_eq!(r.stdout_lines(), ["cont-init-ok", "cont-init-fail"]);
    assert_log(
        &r.stderr,
        "FATAL",
        "cont-init script /etc/cont-init.d/02-fail failed with status 3: stopping the container",
    );
}
