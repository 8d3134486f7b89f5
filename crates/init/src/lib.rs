//! nbrt-init: PID 1 and start logic for notebook images.
//!
//! One static binary that replaces tini + docker-stacks' start scripts + s6-overlay:
//! it reaps zombies and forwards signals ([`supervise`]), applies the docker-stacks start
//! contract (user, home, ownership, sudo, hooks, server arguments: [`start`]), the Kubeflow
//! contract (NB_PREFIX, CORS, an empty home volume filled from the skeleton), runs
//! s6-style cont-init scripts and supervised services, and checks the server's health
//! ([`health`]).

pub mod cert;
pub mod cli;
pub mod env;
pub mod error;
pub mod health;
pub mod home;
pub mod hooks;
pub mod http;
pub mod install;
pub mod log;
pub mod perms;
pub mod proc;
pub mod start;
pub mod supervise;
pub mod userdb;
pub mod userpkgs;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use cli::{Cmd, Program, Start};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const STARTED_MARK: &str = "NBRT_INIT_STARTED";

fn exe_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/nbrt-init"))
}

/// The whole program; returns the exit code.
pub fn main_with(argv0: OsString, args: Vec<OsString>) -> i32 {
    let t0 = Instant::now();
    let cmd = match cli::parse(&argv0, args.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nbrt-init: {e}\n\n{}", cli::USAGE);
            return e.exit_code();
        }
    };
    match cmd {
        Cmd::Help => {
            print!("{}", cli::USAGE);
            0
        }
        Cmd::Version => {
            println!("nbrt-init {VERSION}");
            0
        }
        Cmd::DumpEnv(rc) => {
            let code = hooks::dump_env_to_fd3(&rc);
            if code != 0 {
                code
            } else {
                rc.parse().unwrap_or(0)
            }
        }
        Cmd::Healthcheck { timeout, quiet } => {
            match health::check(std::path::Path::new("/proc"), timeout) {
                health::Health::Healthy(m) => {
                    if !quiet {
                        println!("healthy: {m}");
                    }
                    0
                }
                health::Health::Unhealthy(m) => {
                    println!("unhealthy: {m}");
                    1
                }
            }
        }
        Cmd::FixPermissions(dirs) => perms::main(&dirs),
        Cmd::Install(dir) => match install::install(&dir, &exe_path()) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("nbrt-init: {e}");
                e.exit_code()
            }
        },
        Cmd::Start(start) => start_main(&argv0, start, args, t0),
    }
}

fn start_main(argv0: &std::ffi::OsStr, start: Start, args: Vec<OsString>, t0: Instant) -> i32 {
    log::init(log::Settings::from_env());
    if let Err(e) = supervise::block_signals() {
        log::fatal(e.to_string());
        return 1;
    }
    let mut environment = env::Env::from_process();
    let reentry = environment.contains(STARTED_MARK);
    // start-notebook.py and friends run again inside a started container are docker-stacks'
    // Python launchers, which say nothing of start.sh.
    if !(reentry && start.launcher.is_some()) {
        log::info(format!(
            "Entered start.sh with args: {}",
            env::plain_join(&args)
        ));
    }
    if let Some(name) = &start.entrypoint_in_cmd {
        log::warning(format!(
            "{name} is the default ENTRYPOINT, do not include it in CMD"
        ));
    }
    if reentry {
        let name = std::path::Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "nbrt-init".into());
        return reentered(&name, start, environment);
    }
    environment.set(STARTED_MARK, "1");
    let layout = start::Layout::system();
    let prepared = match start::prepare(start, &layout, environment, &exe_path(), t0) {
        Ok(p) => p,
        Err(e) => {
            if !matches!(
                e,
                error::Error::HookExited { .. } | error::Error::ContInit { .. }
            ) {
                log::fatal(e.to_string());
            }
            return e.exit_code();
        }
    };
    match supervise::run(prepared.plan) {
        Ok(code) => code,
        Err(e) => {
            log::fatal(format!("{} ({})", e, prepared.describe));
            e.exit_code()
        }
    }
}

/// nbrt-init started again inside a container it already set up (`start.sh` or `nbrt-init`
/// in CMD under the nbrt-init ENTRYPOINT, `start-notebook.py` in a terminal): run the
/// command directly, as docker-stacks' re-entered start.sh and its launchers do.
fn reentered(name: &str, start: Start, environment: env::Env) -> i32 {
    let argv = match &start.program {
        Program::Notebook(extra) | Program::Singleuser(extra) => {
            match env::ServerSettings::from_env(&environment) {
                Ok(s) => {
                    let singleuser = matches!(start.program, Program::Singleuser(_)) || s.hub;
                    let argv = start::server_argv(&s, singleuser, extra);
                    let lines = start::launcher_lines(&start, singleuser, &argv);
                    start::print_stdout(&lines);
                    argv
                }
                Err(e) => {
                    log::fatal(e.to_string());
                    return 1;
                }
            }
        }
        Program::Command(w) => {
            if start.entrypoint_in_cmd.is_none() {
                log::warning(format!(
                    "{name} is the default ENTRYPOINT, do not include it in CMD"
                ));
            }
            log::info(format!("Executing the command: {}", env::plain_join(w)));
            w.clone()
        }
        Program::ServicesOnly => {
            log::fatal("services are already supervised by the container's nbrt-init");
            return 1;
        }
    };
    let l = proc::Launch::new(argv, environment);
    let err = {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&l.argv[0]);
        c.args(&l.argv[1..]).env_clear().envs(l.env.iter());
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&nix::sys::signal::SigSet::empty()),
            None,
        );
        c.exec()
    };
    let e = error::Error::Exec {
        program: l.argv[0].to_string_lossy().into_owned(),
        source: err,
    };
    log::fatal(e.to_string());
    e.exit_code()
}
