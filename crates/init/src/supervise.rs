//! PID 1: the main command, s6-style services, signal forwarding, zombie reaping.
//!
//! All forwardable signals are blocked in nbrt-init and read from a signalfd; children get
//! an empty mask before exec. Every child runs in a process group of its own. A signal for
//! the container goes to the main command's group (tini -g); a stop signal (TERM, INT, QUIT,
//! HUP) also stops the services. Every exited process is reaped (`waitpid(-1)`), whoever its
//! parent was. When the main command ends, services get SIGTERM, then SIGKILL after a grace
//! period, and nbrt-init exits with the main command's code (128+N when killed by signal N).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::log;
use crate::proc::{Cred, Launch};

/// Signals nbrt-init handles (everything else keeps its default disposition).
pub const HANDLED: [Signal; 11] = [
    Signal::SIGCHLD,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTTOU,
];

fn handled_set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in HANDLED {
        s.add(sig);
    }
    s
}

/// Block the handled signals in this process (call first thing: before any child exists).
pub fn block_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None)
        .map_err(|e| Error::sys("blocking signals", e))
}

fn is_stop_signal(s: Signal) -> bool {
    matches!(
        s,
        Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGHUP
    )
}

/// A supervised service: `/etc/services.d/<name>/run` (+ optional `finish`).
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub dir: PathBuf,
    pub launch: Launch,
    pub finish: Option<Launch>,
}

/// Settings read from a service directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDir {
    pub name: String,
    pub dir: PathBuf,
    pub run: PathBuf,
    pub finish: Option<PathBuf>,
    /// Content of the `user` file (`root`, a name or a uid), when present.
    pub user: Option<String>,
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The services of a services.d directory, by name; directories with a `down` file are
/// left out (as in s6), and a missing or non-executable `run` is reported and skipped.
pub fn discover(dir: &Path) -> Result<Vec<ServiceDir>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", dir, e)),
    };
    let mut out = Vec::new();
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for d in entries {
        let name = d
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || !d.is_dir() {
            continue;
        }
        if d.join("down").exists() {
            log::info(format!("Service {name} has a down file, not starting it"));
            continue;
        }
        let run = d.join("run");
        if !is_executable(&run) {
            log::warning(format!(
                "Service {name}: {} is missing or not executable, skipping",
                run.display()
            ));
            continue;
        }
        let finish = Some(d.join("finish")).filter(|f| is_executable(f));
        let user = fs::read_to_string(d.join("user"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        out.push(ServiceDir {
            name,
            dir: d,
            run,
            finish,
            user,
        });
    }
    Ok(out)
}

/// What the supervisor runs.
pub struct Plan {
    pub main: Option<Launch>,
    /// Restart the main command whenever it exits (RESTARTABLE=yes).
    pub restart_main: bool,
    pub services: Vec<Service>,
    /// Time between SIGTERM and SIGKILL for services at shutdown.
    pub grace: Duration,
}

#[derive(Debug)]
enum Role {
    Main,
    Service(usize),
    Finish(usize),
}

struct SvcState {
    pid: Option<Pid>,
    finishing: Option<Pid>,
    last_start: Option<Instant>,
    restart_at: Option<Instant>,
    permanently_down: bool,
}

impl SvcState {
    /// Restart no sooner than RESTART_SPACING after the last start, so a service that exits
    /// at once does not spin.
    fn schedule_restart(&mut self) {
        let since = self
            .last_start
            .map(|t| t.elapsed())
            .unwrap_or(RESTART_SPACING);
        self.restart_at = Some(Instant::now() + RESTART_SPACING.saturating_sub(since));
    }
}

/// Minimum time between two starts of the same service (s6 waits one second too).
const RESTART_SPACING: Duration = Duration::from_secs(1);

pub fn status_code(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

fn signal_group(pid: Pid, sig: Signal) {
    match kill(Pid::from_raw(-pid.as_raw()), sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(_) => {
            let _ = kill(pid, sig);
        }
    }
}

fn start_service(svc: &Service, children: &mut BTreeMap<i32, Role>, i: usize) -> Option<Pid> {
    match svc.launch.spawn() {
        Ok(child) => {
            let pid = Pid::from_raw(child.id() as i32);
            children.insert(pid.as_raw(), Role::Service(i));
            log::info(format!("Started service {} (pid {pid})", svc.name));
            Some(pid)
        }
        Err(e) => {
            log::error(format!("Service {} could not start: {e}", svc.name));
            None
        }
    }
}

/// Run the plan to the end; returns the exit code for the container.
pub fn run(plan: Plan) -> Result<i32> {
    let mask = handled_set();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| Error::sys("blocking signals", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::sys("creating a signalfd", e))?;
    if std::process::id() != 1 {
        // Orphans of our children come to us even when we are not PID 1.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }

    let mut children: BTreeMap<i32, Role> = BTreeMap::new();
    let mut svc: Vec<SvcState> = plan
        .services
        .iter()
        .map(|_| SvcState {
            pid: None,
            finishing: None,
            last_start: None,
            restart_at: None,
            permanently_down: false,
        })
        .collect();
    for (i, s) in plan.services.iter().enumerate() {
        svc[i].pid = start_service(s, &mut children, i);
        svc[i].last_start = Some(Instant::now());
        if svc[i].pid.is_none() {
            svc[i].restart_at = Some(Instant::now() + RESTART_SPACING);
        }
    }

    let mut main_pid: Option<Pid> = None;
    let mut main_code: Option<i32> = None;
    let mut main_restart_at: Option<Instant> = None;
    let mut main_last_start = Instant::now();
    if let Some(m) = &plan.main {
        let child = m.spawn()?;
        let pid = Pid::from_raw(child.id() as i32);
        children.insert(pid.as_raw(), Role::Main);
        main_pid = Some(pid);
    }
    let mut stopping = false;
    let mut kill_at: Option<Instant> = None;
    let mut stop_signal: Option<Signal> = None;

    loop {
        // Reap everything that has exited.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(ws) => {
                    let Some(pid) = ws.pid() else { continue };
                    let Some(code) = status_code(ws) else {
                        continue;
                    };
                    match children.remove(&pid.as_raw()) {
                        Some(Role::Main) => {
                            main_pid = None;
                            if plan.restart_main && !stopping {
                                log::warning(format!(
                                    "The command exited with status {code}; restarting it (RESTARTABLE=yes)"
                                ));
                                let wait =
                                    RESTART_SPACING.saturating_sub(main_last_start.elapsed());
                                main_restart_at = Some(Instant::now() + wait);
                            } else {
                                main_code = Some(code);
                                if !stopping {
                                    stopping = true;
                                    kill_at = Some(Instant::now() + plan.grace);
                                    for s in &svc {
                                        if let Some(p) = s.pid {
                                            signal_group(p, Signal::SIGTERM);
                                        }
                                    }
                                }
                            }
                        }
                        Some(Role::Service(i)) => {
                            svc[i].pid = None;
                            let s = &plan.services[i];
                            let (exit, sig) = match ws {
                                WaitStatus::Signaled(_, sig, _) => (256, sig as i32),
                                _ => (code, 0),
                            };
                            if !stopping {
                                log::warning(format!(
                                    "Service {} exited with status {code}",
                                    s.name
                                ));
                            }
                            if let Some(f) = &s.finish {
                                let mut f = f.clone();
                                f.argv.push(OsString::from(exit.to_string()));
                                f.argv.push(OsString::from(sig.to_string()));
                                match f.spawn() {
                                    Ok(c) => {
                                        let fp = Pid::from_raw(c.id() as i32);
                                        children.insert(fp.as_raw(), Role::Finish(i));
                                        svc[i].finishing = Some(fp);
                                    }
                                    Err(e) => log::error(format!(
                                        "Service {}: finish could not run: {e}",
                                        s.name
                                    )),
                                }
                            }
                            if svc[i].finishing.is_none() && !stopping {
                                svc[i].schedule_restart();
                            }
                        }
                        Some(Role::Finish(i)) => {
                            svc[i].finishing = None;
                            if code == 125 {
                                log::warning(format!(
                                    "Service {}: finish exited 125, the service stays down",
                                    plan.services[i].name
                                ));
                                svc[i].permanently_down = true;
                            } else if !stopping {
                                svc[i].schedule_restart();
                            }
                        }
                        None => {} // an orphan: reaped, nothing else to do
                    }
                }
                Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("waitpid", e)),
            }
        }

        let now = Instant::now();
        // Restarts that are due.
        if !stopping {
            if let Some(t) = main_restart_at {
                if t <= now {
                    main_restart_at = None;
                    if let Some(m) = &plan.main {
                        match m.spawn() {
                            Ok(c) => {
                                let pid = Pid::from_raw(c.id() as i32);
                                children.insert(pid.as_raw(), Role::Main);
                                main_pid = Some(pid);
                                main_last_start = Instant::now();
                            }
                            Err(e) => {
                                log::fatal(format!("restarting the command failed: {e}"));
                                main_code = Some(e.exit_code());
                                stopping = true;
                                kill_at = Some(Instant::now() + plan.grace);
                            }
                        }
                    }
                }
            }
            for (i, s) in plan.services.iter().enumerate() {
                if svc[i].permanently_down || svc[i].pid.is_some() || svc[i].finishing.is_some() {
                    continue;
                }
                if let Some(t) = svc[i].restart_at {
                    if t <= now {
                        svc[i].restart_at = None;
                        svc[i].pid = start_service(s, &mut children, i);
                        svc[i].last_start = Some(Instant::now());
                        if svc[i].pid.is_none() {
                            svc[i].restart_at = Some(Instant::now() + RESTART_SPACING);
                        }
                    }
                }
            }
        }

        // Done?
        let services_running = svc.iter().any(|s| s.pid.is_some() || s.finishing.is_some());
        if stopping && main_pid.is_none() && !services_running {
            return Ok(main_code.unwrap_or_else(|| match stop_signal {
                Some(_) if plan.main.is_none() => 0,
                Some(s) => 128 + s as i32,
                None => 0,
            }));
        }
        if stopping && main_pid.is_none() && plan.main.is_some() && main_code.is_none() {
            // Stopped while waiting to restart the main command.
            main_code = Some(stop_signal.map(|s| 128 + s as i32).unwrap_or(0));
        }
        if let Some(t) = kill_at {
            if t <= now && services_running {
                for s in &svc {
                    for p in [s.pid, s.finishing].into_iter().flatten() {
                        signal_group(p, Signal::SIGKILL);
                    }
                }
                kill_at = None;
            }
        }

        // Wait for a signal or the next deadline.
        let next = [main_restart_at, kill_at]
            .into_iter()
            .chain(svc.iter().map(|s| s.restart_at))
            .flatten()
            .min();
        let timeout = match next {
            Some(t) => {
                let ms = t
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as u16;
                PollTimeout::from(ms.max(1))
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&sfd),
            PollFlags::POLLIN,
        )];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGTTOU => {}
                sig => {
                    if let Some(p) = main_pid {
                        signal_group(p, sig);
                    }
                    if is_stop_signal(sig) && !stopping {
                        log::info(format!("Received {sig}, stopping"));
                        stopping = true;
                        stop_signal = Some(sig);
                        main_restart_at = None;
                        kill_at = Some(Instant::now() + plan.grace);
                        for s in &svc {
                            if let Some(p) = s.pid {
                                signal_group(p, Signal::SIGTERM);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Credentials of a user for services and the main command.
pub fn cred_for(uid: u32, gid: u32, groups: Vec<u32>) -> Cred {
    Cred { uid, gid, groups }
}
