//! `nbrt-init healthcheck`: is the Jupyter server in this container answering?
//!
//! Instead of guessing the server's runtime directory from the checker's own HOME (the
//! reason docker-stacks' check reports "unhealthy" when NB_USER is set without a root start),
//! the check finds the server *process* in /proc, reads that process's environment to work
//! out its runtime directory (JUPYTER_RUNTIME_DIR, JUPYTER_DATA_DIR, XDG_DATA_HOME, HOME, as
//! Jupyter does), reads `jpserver-<pid>.json` there and GETs `<url>api`. When the server runs
//! as another user whose environment or files the check may not read, it says exactly that
//! instead of reporting a false state.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::Env;
use crate::http;

/// Where a root-started nbrt-init records the server's user and runtime directory, for a
/// check that may not read the server's environment: in a container, root lacks
/// CAP_SYS_PTRACE, so `/proc/<pid>/environ` of another user's process is off limits even
/// to root. World-readable; holds no secrets.
pub const STATE_FILE: &str = "/run/nbrt-init/server";

/// Record `uid` and `runtime_dir` in `path` (directories created as needed).
pub fn write_state(path: &Path, uid: u32, runtime_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(
        &tmp,
        format!("uid={uid}\nruntime_dir={}\n", runtime_dir.display()),
    )?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))?;
    fs::rename(&tmp, path)
}

/// Read what [`write_state`] wrote.
pub fn read_state(path: &Path) -> Option<(u32, PathBuf)> {
    let text = fs::read_to_string(path).ok()?;
    let mut uid = None;
    let mut dir = None;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("uid=") {
            uid = v.parse().ok();
        } else if let Some(v) = l.strip_prefix("runtime_dir=") {
            dir = Some(PathBuf::from(v));
        }
    }
    Some((uid?, dir?))
}

/// A Jupyter server process found in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProc {
    pub pid: i32,
    pub uid: Option<u32>,
    pub argv: Vec<String>,
}

const SERVER_PROGRAMS: [&str; 7] = [
    "jupyter-lab",
    "jupyter-server",
    "jupyter-notebook",
    "jupyter-nbclassic",
    "jupyter-retro",
    "jupyterhub-singleuser",
    "jupyter-labhub",
];

/// Whether a command line is a Jupyter server (`python …/jupyter-lab …`, `jupyter-server …`,
/// `python -m jupyter_server …`).
pub fn is_server_cmdline(argv: &[String]) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    argv.iter().take(3).enumerate().any(|(i, a)| {
        let b = base(a);
        SERVER_PROGRAMS.contains(&b.as_str())
            || (i > 0
                && a == "-m"
                && argv.get(i + 1).is_some_and(|m| {
                    matches!(
                        m.as_str(),
                        "jupyter_server" | "jupyterlab" | "notebook" | "jupyterhub.singleuser"
                    )
                }))
    })
}

/// Jupyter's data directory for a process environment (`jupyter_core.paths.jupyter_data_dir`
/// on Linux).
pub fn data_dir(env: &Env) -> Option<PathBuf> {
    Some(if let Some(d) = env.non_empty("JUPYTER_DATA_DIR") {
        PathBuf::from(d)
    } else if let Some(x) = env.non_empty("XDG_DATA_HOME") {
        PathBuf::from(x).join("jupyter")
    } else {
        PathBuf::from(env.non_empty("HOME")?).join(".local/share/jupyter")
    })
}

/// Jupyter's runtime directory for a process environment.
pub fn runtime_dir(env: &Env) -> Option<PathBuf> {
    if let Some(d) = env.non_empty("JUPYTER_RUNTIME_DIR") {
        return Some(PathBuf::from(d));
    }
    Some(data_dir(env)?.join("runtime"))
}

pub fn find_servers(proc_root: &Path) -> Vec<ServerProc> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(proc_root) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !is_server_cmdline(&argv) {
            continue;
        }
        let uid = fs::read_to_string(e.path().join("status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|u| u.parse().ok())
            });
        out.push(ServerProc { pid, uid, argv });
    }
    out.sort_by_key(|s| s.pid);
    out
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy(String),
    Unhealthy(String),
}

/// Read the `url` field of a server state file.
fn url_from_state(text: &str) -> Option<String> {
    // The files are small flat JSON objects written by Jupyter; find "url": "…".
    let i = text.find("\"url\"")?;
    let rest = &text[i + 5..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                '/' => out.push('/'),
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                c => {
                    out.push('\\');
                    out.push(c)
                }
            },
            c => out.push(c),
        }
    }
    None
}

fn state_files(dir: &Path, pid: i32) -> [PathBuf; 2] {
    [
        dir.join(format!("jpserver-{pid}.json")),
        dir.join(format!("nbserver-{pid}.json")),
    ]
}

/// Check the servers under `proc_root` (normally `/proc`), with the state file of a
/// root-started nbrt-init as the fallback for an unreadable environment.
pub fn check(proc_root: &Path, timeout: Duration) -> Health {
    check_with_state(proc_root, Path::new(STATE_FILE), timeout)
}

pub fn check_with_state(proc_root: &Path, state: &Path, timeout: Duration) -> Health {
    let servers = find_servers(proc_root);
    if servers.is_empty() {
        return Health::Unhealthy("no Jupyter server process is running in this container".into());
    }
    let me = nix::unistd::geteuid().as_raw();
    let mut problems = Vec::new();
    for s in &servers {
        let environ = fs::read(proc_root.join(s.pid.to_string()).join("environ"));
        let recorded = read_state(state).filter(|(uid, _)| Some(*uid) == s.uid);
        let dir = match (environ, recorded) {
            (Ok(b), _) => runtime_dir(&Env::from_nul_records(&b)),
            (Err(_), Some((_, dir))) => Some(dir),
            (Err(e), None) => {
                problems.push(format!(
                    "server pid {} runs as uid {}, this check as uid {me}: cannot read its environment ({e}); \
                     run the check as root or as uid {}",
                    s.pid,
                    s.uid.map_or("?".into(), |u| u.to_string()),
                    s.uid.map_or("?".into(), |u| u.to_string()),
                ));
                continue;
            }
        };
        let Some(dir) = dir else {
            problems.push(format!(
                "server pid {}: no HOME or JUPYTER_RUNTIME_DIR in its environment",
                s.pid
            ));
            continue;
        };
        let mut state = None;
        for f in state_files(&dir, s.pid) {
            match fs::read_to_string(&f) {
                Ok(t) => {
                    state = Some((f, t));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => problems.push(format!(
                    "server pid {} (uid {}): cannot read {} as uid {me}: {e}",
                    s.pid,
                    s.uid.map_or("?".into(), |u| u.to_string()),
                    f.display()
                )),
            }
        }
        let Some((file, text)) = state else {
            problems.push(format!(
                "server pid {} has not written {} yet (still starting?)",
                s.pid,
                state_files(&dir, s.pid)[0].display()
            ));
            continue;
        };
        let Some(url) = url_from_state(&text) else {
            problems.push(format!("{}: no url field", file.display()));
            continue;
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Health::Healthy(format!(
                "server pid {} listens on {url} (not TCP): nothing to probe",
                s.pid
            ));
        }
        let probe = format!("{}{}api", url, if url.ends_with('/') { "" } else { "/" });
        match http::get(&probe, timeout) {
            Ok(r) if (200..300).contains(&r.status) => {
                return Health::Healthy(format!("{probe} answered {}", r.status))
            }
            Ok(r) => problems.push(format!("{probe} answered {}", r.status)),
            Err(e) => problems.push(format!("{probe}: {e}")),
        }
    }
    Health::Unhealthy(problems.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn recognises_server_command_lines() {
        assert!(is_server_cmdline(&s(&[
            "/opt/conda/bin/python3",
            "/opt/conda/bin/jupyter-lab",
            "--x"
        ])));
        assert!(is_server_cmdline(&s(&[
            "/opt/conda/bin/python",
            "/opt/conda/bin/jupyterhub-singleuser"
        ])));
        assert!(is_server_cmdline(&s(&["python", "-m", "jupyter_server"])));
        assert!(!is_server_cmdline(&s(&[
            "/opt/conda/bin/python",
            "-m",
            "ipykernel_launcher",
            "-f",
            "x.json"
        ])));
        assert!(!is_server_cmdline(&s(&["bash", "-c", "echo jupyter-lab"])));
    }

    #[test]
    fn runtime_dir_like_jupyter() {
        let e = |p: &[(&str, &str)]| Env::from_pairs(p.iter().map(|(a, b)| (*a, *b)));
        assert_eq!(
            runtime_dir(&e(&[("HOME", "/home/a")])),
            Some("/home/a/.local/share/jupyter/runtime".into())
        );
        assert_eq!(
            runtime_dir(&e(&[("HOME", "/h"), ("XDG_DATA_HOME", "/x")])),
            Some("/x/jupyter/runtime".into())
        );
        assert_eq!(
            runtime_dir(&e(&[("HOME", "/h"), ("JUPYTER_DATA_DIR", "/d")])),
            Some("/d/runtime".into())
        );
        assert_eq!(
            runtime_dir(&e(&[("HOME", "/h"), ("JUPYTER_RUNTIME_DIR", "/r")])),
            Some("/r".into())
        );
        assert_eq!(runtime_dir(&e(&[])), None);
    }

    #[test]
    fn url_field() {
        let t = r#"{"base_url": "/", "hostname": "x", "pid": 7, "url": "https:\/\/abc:8888\/p\/", "version": "2"}"#;
        assert_eq!(url_from_state(t).as_deref(), Some("https://abc:8888/p/"));
        assert_eq!(url_from_state("{}"), None);
    }

    #[test]
    fn state_file_stands_in_for_an_unreadable_environment() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("proc/77");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("cmdline"),
            b"python\0/opt/conda/bin/jupyter-server\0",
        )
        .unwrap();
        fs::write(p.join("status"), "Uid:\t1234\t1234\t1234\t1234\n").unwrap();
        let rt = d.path().join("rt");
        fs::create_dir_all(&rt).unwrap();
        fs::write(rt.join("jpserver-77.json"), r#"{"url": "http+unix://x/"}"#).unwrap();
        let state = d.path().join("run/nbrt-init/server");
        // Without the state file: an honest failure.
        assert!(matches!(
            check_with_state(&d.path().join("proc"), &state, Duration::from_secs(1)),
            Health::Unhealthy(_)
        ));
        write_state(&state, 1234, &rt).unwrap();
        assert_eq!(read_state(&state), Some((1234, rt.clone())));
        assert!(matches!(
            check_with_state(&d.path().join("proc"), &state, Duration::from_secs(1)),
            Health::Healthy(_)
        ));
        // A state file for another uid is not used.
        write_state(&state, 1, &rt).unwrap();
        assert!(matches!(
            check_with_state(&d.path().join("proc"), &state, Duration::from_secs(1)),
            Health::Unhealthy(_)
        ));
    }

    #[test]
    fn fake_proc_tree() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("4242");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("cmdline"),
            b"/opt/conda/bin/python\0/opt/conda/bin/jupyter-lab\0",
        )
        .unwrap();
        fs::write(
            p.join("status"),
            "Name:\tjupyter-lab\nUid:\t1000\t1000\t1000\t1000\n",
        )
        .unwrap();
        let rt = d.path().join("rt");
        fs::create_dir_all(&rt).unwrap();
        fs::write(
            p.join("environ"),
            format!("HOME=/nowhere\0JUPYTER_RUNTIME_DIR={}\0", rt.display()),
        )
        .unwrap();
        let servers = find_servers(d.path());
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].uid, Some(1000));
        // No state file yet.
        match check(d.path(), Duration::from_millis(200)) {
            Health::Unhealthy(m) => assert!(m.contains("has not written"), "{m}"),
            h => panic!("{h:?}"),
        }
        // A server that answers.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 512];
            let _ = c.read(&mut b);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        });
        fs::write(
            rt.join("jpserver-4242.json"),
            format!(r#"{{"url": "http://somehost:{port}/base/"}}"#),
        )
        .unwrap();
        match check(d.path(), Duration::from_secs(2)) {
            Health::Healthy(m) => assert!(m.contains("/base/api answered 200"), "{m}"),
            h => panic!("{h:?}"),
        }
        fs::write(
            rt.join("jpserver-4242.json"),
            r#"{"url": "http+unix://%2Ftmp%2Fs/"}"#,
        )
        .unwrap();
        assert!(matches!(
            check(d.path(), Duration::from_secs(1)),
            Health::Healthy(_)
        ));
    }
}
