//! Helpers for nbrt-init's Docker tests: the stock jupyter image, containers
//! that clean up after themselves, and polling.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(cmd: &mut Command, what: &str) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// The stock jupyter stack built by nbrt (`nbrt_testkit::stock`, its ENTRYPOINT is the static
/// nbrt-init) and loaded into Docker, once per test process. `NBRT_INIT_TEST_IMAGE` overrides
/// it. `None` when Docker or the build tools are missing and skipping is allowed.
pub fn image() -> Option<String> {
    static IMAGE: OnceLock<Option<String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if !nbrt_testkit::require_docker() {
                return None;
            }
            if let Ok(i) = std::env::var("NBRT_INIT_TEST_IMAGE") {
                return Some(i);
            }
            nbrt_testkit::stock::docker_image("jupyter")
        })
        .clone()
}

/// `docker run --rm ARGS IMAGE CMD…` to completion.
pub fn run(image: &str, docker_args: &[&str], cmd: &[&str]) -> Run {
    let name = unique("nbrt-init-test");
    let mut c = Command::new("docker");
    c.args(["run", "--rm", "--name", &name])
        .args(docker_args)
        .arg(image)
        .args(cmd);
    let out = c.output().expect("running docker");
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    Run::from(out)
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A detached container, removed (with its anonymous volumes) when dropped.
pub struct Container {
    pub id: String,
}

impl Container {
    pub fn start(image: &str, docker_args: &[&str], cmd: &[&str]) -> Container {
        let name = unique("nbrt-init-test");
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name])
            .args(docker_args)
            .arg(image)
            .args(cmd)
            .output()
            .expect("running docker");
        assert!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Container { id: name }
    }

    pub fn logs(&self) -> Run {
        Run::from(
            Command::new("docker")
                .args(["logs", &self.id])
                .output()
                .expect("docker logs"),
        )
    }

    pub fn exec(&self, args: &[&str], cmd: &[&str]) -> Run {
        Run::from(
            Command::new("docker")
                .arg("exec")
                .args(args)
                .arg(&self.id)
                .args(cmd)
                .output()
                .expect("docker exec"),
        )
    }

    /// The host port published for a container port (`-p 127.0.0.1::PORT`).
    pub fn host_port(&self, port: u16) -> u16 {
        let out = Command::new("docker")
            .args(["port", &self.id, &format!("{port}/tcp")])
            .output()
            .expect("docker port");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or_else(|| panic!("no published port for {port}: {text}"))
    }

    pub fn inspect(&self, format: &str) -> String {
        let out = Command::new("docker")
            .args(["inspect", "--format", format, &self.id])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// Wait for the container to exit; returns its exit code.
    pub fn wait(&self, timeout: Duration) -> i32 {
        let t = Instant::now();
        while self.running() {
            assert!(
                t.elapsed() < timeout,
                "container {} still running after {timeout:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.inspect("{{.State.ExitCode}}").parse().unwrap_or(-1)
    }

    /// Wait until the logs (stdout + stderr) contain `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Run {
        self.wait_until(needle, timeout, |l| {
            l.stdout.contains(needle) || l.stderr.contains(needle)
        })
    }

    /// Like [`Container::wait_log`], looking at standard output only (nbrt-init's own log
    /// lines on stderr quote the command, so a needle from the command line shows up there
    /// before the command has run).
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> Run {
        self.wait_until(needle, timeout, |l| l.stdout.contains(needle))
    }

    fn wait_until(&self, needle: &str, timeout: Duration, done: impl Fn(&Run) -> bool) -> Run {
        let t = Instant::now();
        loop {
            let l = self.logs();
            if done(&l) {
                return l;
            }
            assert!(
                t.elapsed() < timeout,
                "{needle:?} not in the logs of {} after {timeout:?}:\n{}\n{}",
                self.id,
                l.stdout,
                l.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

/// A named Docker volume, removed when dropped.
pub struct Volume {
    pub name: String,
}

impl Volume {
    pub fn new() -> Volume {
        let name = unique("nbrt-init-test-vol");
        let out = Command::new("docker")
            .args(["volume", "create", &name])
            .output()
            .expect("docker volume create");
        assert!(out.status.success());
        Volume { name }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.name])
            .output();
    }
}

/// Poll `url` until it answers with `status` (any 2xx when None).
pub fn wait_http(url: &str, timeout: Duration) -> nbrt_init::http::Response {
    let t = Instant::now();
    loop {
        match nbrt_init::http::get(url, Duration::from_secs(2)) {
            Ok(r) if (200..300).contains(&r.status) => return r,
            other => {
                assert!(
                    t.elapsed() < timeout,
                    "{url} did not answer 2xx within {timeout:?}: {other:?}"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn get(url: &str) -> nbrt_init::http::Response {
    nbrt_init::http::get(url, Duration::from_secs(5)).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A directory of files (with modes) to bind-mount into a container.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Files {
        let dir = tempfile::tempdir().expect("tempdir");
        set_mode(dir.path(), 0o755);
        Files { dir }
    }
    pub fn add(&self, rel: &str, body: &str, mode: u32) -> &Files {
        let p = self.dir.path().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
            let mut d = parent;
            while d != self.dir.path() {
                set_mode(d, 0o755);
                d = d.parent().expect("parent");
            }
        }
        std::fs::write(&p, body).expect("write");
        set_mode(&p, mode);
        self
    }
    pub fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// docker-stacks' log line shape: LEVEL[YYYY-MM-DD HH:MM:SS] message.
pub fn is_log_line(line: &str, level: &str) -> bool {
    let Some(rest) = line.strip_prefix(level).and_then(|r| r.strip_prefix('[')) else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 21
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
        && &rest[19..21] == "] "
}

pub fn has_log(stderr: &str, level: &str, needle: &str) -> bool {
    stderr
        .lines()
        .any(|l| is_log_line(l, level) && l.contains(needle))
}

pub fn assert_log(stderr: &str, level: &str, needle: &str) {
    assert!(
        has_log(stderr, level, needle),
        "no {level} line containing {needle:?} in:\n{stderr}"
    );
}

/// The messages of the log lines of `level` (what follows `LEVEL[timestamp] `).
pub fn log_messages<'a>(text: &'a str, level: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| is_log_line(l, level))
        .map(|l| &l[level.len() + 22..])
        .collect()
}

/// Assert that each message is, verbatim, the message of a `level` log line.
pub fn assert_messages(text: &str, level: &str, messages: &[&str]) {
    let have = log_messages(text, level);
    for m in messages {
        assert!(
            have.contains(m),
            "no {level} line with exactly {m:?} in:\n{text}"
        );
    }
}

/// Lines that start with WARNING or ERROR (log lines or plain text), without their
/// timestamps, whose text is not in `allowed`.
pub fn unexpected_warnings(text: &str, allowed: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
        .map(|l| {
            for level in ["WARNING", "ERROR"] {
                if is_log_line(l, level) {
                    return format!("{level} {}", &l[level.len() + 22..]);
                }
            }
            l.to_owned()
        })
        .filter(|l| !allowed.iter().any(|a| l == a))
        .collect()
}

/// GET `url` from inside the container (its own Python) until it answers 2xx.
pub fn wait_http_inside(c: &Container, url: &str, timeout: Duration) {
    let script = "import sys, urllib.request\n\
                  with urllib.request.urlopen(sys.argv[1], timeout=3) as r:\n    print(r.status)";
    let t = Instant::now();
    loop {
        let r = c.exec(&[], &["python3", "-c", script, url]);
        if r.code == 0 && r.stdout.trim().starts_with('2') {
            return;
        }
        if !c.running() {
            let l = c.logs();
            panic!(
                "container {} exited before {url} answered:\n{}\n{}",
                c.id, l.stdout, l.stderr
            );
        }
        assert!(
            t.elapsed() < timeout,
            "{url} did not answer 2xx inside {} within {timeout:?}: {}{}",
            c.id,
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The TCP sockets listening in the container: (address as in /proc/net/tcp{,6}, port).
pub fn listeners(c: &Container) -> Vec<(String, u16)> {
    let r = c.exec(&[], &["cat", "/proc/net/tcp", "/proc/net/tcp6"]);
    r.stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[3] != "0A" {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            Some((addr.to_owned(), u16::from_str_radix(port, 16).ok()?))
        })
        .collect()
}

/// A user-defined Docker network with IPv6 (and IPv4), internal, removed when dropped.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn ipv6() -> Network {
        let name = unique("nbrt-init-test-v6");
        // A unique-local /64 per test process.
        let subnet = format!("fd00:6e62:{:x}::/64", std::process::id() & 0xffff);
        let out = Command::new("docker")
            .args([
                "network",
                "create",
                "--ipv6",
                "--subnet",
                &subnet,
                "--internal",
                &name,
            ])
            .output()
            .expect("docker network create");
        assert!(
            out.status.success(),
            "docker network create --ipv6 --subnet {subnet} --internal: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}
