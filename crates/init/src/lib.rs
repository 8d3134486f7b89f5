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
pub mod log;
pub mod proc;
pub mod start;
pub mod supervise;
pub mod userdb;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use cli::{Cmd, Program};

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
        Cmd::Start(program) => start_main(program, args, t0),
    }
}

fn start_main(program: Program, args: Vec<OsString>, t0: Instant) -> i32 {
    log::init(log::Settings::from_env());
    if let Err(e) = supervise::block_signals() {
        log::fatal(e.to_string());
        return 1;
    }
    log::info(format!(
        "Entered start.sh with args: {}",
        env::shell_join(&args)
    ));
    let mut environment = env::Env::from_process();
    if environment.contains(STARTED_MARK) {
        return reentered(program, environment);
    }
    environment.set(STARTED_MARK, "1");
    let layout = start::Layout::system();
    let prepared = match start::prepare(program, &layout, environment, &exe_path(), t0) {
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

/// nbrt-init started again inside a container it already set up (e.g. `nbrt-init` in CMD
/// under the nbrt-init ENTRYPOINT, or by hand in a terminal): run the command directly.
fn reentered(program: Program, environment: env::Env) -> i32 {
    log::warning("nbrt-init is already the container's init (ENTRYPOINT); do not include it in CMD: running the command directly");
    let argv = match &program {
        Program::Notebook(extra) | Program::Singleuser(extra) => {
            match env::ServerSettings::from_env(&environment) {
                Ok(s) => start::server_argv(
                    &s,
                    matches!(program, Program::Singleuser(_)) || s.hub,
                    extra,
                    None,
                ),
                Err(e) => {
                    log::fatal(e.to_string());
                    return 1;
                }
            }
        }
        Program::Command(w) => w.clone(),
        Program::ServicesOnly => {
            log::fatal("services are already supervised by the container's nbrt-init");
            return 1;
        }
    };
    log::info(format!("Executing the command: {}", env::shell_join(&argv)));
    let mut l = proc::Launch::new(argv, environment);
    l.own_group = false;
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
