//! Command line of nbrt-init.
//!
//! ```text
//! nbrt-init                            start the notebook server (same as start-notebook)
//! nbrt-init start-notebook [ARG...]    jupyter ${DOCKER_STACKS_JUPYTER_CMD:-lab} + settings + ARGs
//!                                      (jupyterhub-singleuser when JUPYTERHUB_API_TOKEN is set)
//! nbrt-init start-singleuser [ARG...]  jupyterhub-singleuser + NOTEBOOK_ARGS + ARGs
//! nbrt-init [--] COMMAND [ARG...]      run COMMAND with the same start logic (like start.sh)
//! nbrt-init services                   run only the supervised services (no main command)
//! nbrt-init healthcheck [--timeout S]  exit 0 when the Jupyter server answers <url>api
//! nbrt-init install DIR                docker-stacks' script names and helper scripts in DIR
//! nbrt-init version | help
//! ```
//!
//! docker-stacks names work too, as the first word or as the program name (a symlink):
//! `start-notebook`, `start-notebook.py`, `start-notebook.sh`, `start-singleuser(.py|.sh)`,
//! `start.sh`; and `fix-permissions` as the program name. A leading `nbrt-init` or `start.sh`
//! word is dropped (someone put the ENTRYPOINT in CMD) and warned about.

use std::ffi::{OsStr, OsString};
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The notebook server (or single-user server under JupyterHub), with extra arguments.
    Notebook(Vec<OsString>),
    /// jupyterhub-singleuser, with extra arguments.
    Singleuser(Vec<OsString>),
    /// An explicit command.
    Command(Vec<OsString>),
    /// No main command: services only.
    ServicesOnly,
}

/// What to start, and how it was asked for (docker-stacks' log lines quote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub program: Program,
    /// The command as named (CMD without a leading `start.sh` / `nbrt-init`), for the
    /// `Executing the command:` and `Running as USER:` lines.
    pub command: Vec<OsString>,
    /// The entrypoint's name when CMD repeats it (`start.sh`, `nbrt-init`): docker-stacks
    /// warns `start.sh is the default ENTRYPOINT, do not include it in CMD`.
    pub entrypoint_in_cmd: Option<String>,
    /// The docker-stacks launcher named (`start-notebook.py`, `start-singleuser.sh`, …).
    pub launcher: Option<String>,
}

impl Start {
    /// The docker-stacks shim name used (`start-notebook.sh`, `start-singleuser.sh`), whose
    /// scripts print `WARNING: Use start-….py instead`.
    pub fn shim(&self) -> Option<&str> {
        self.launcher
            .as_deref()
            .filter(|l| matches!(*l, "start-notebook.sh" | "start-singleuser.sh"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Start(Start),
    Healthcheck {
        timeout: Duration,
        quiet: bool,
    },
    /// `fix-permissions DIR...` (called by that name).
    FixPermissions(Vec<OsString>),
    /// `nbrt-init install DIR`: docker-stacks' script names and helper scripts in DIR.
    Install(std::path::PathBuf),
    DumpEnv(String),
    Version,
    Help,
}

pub const USAGE: &str = "\
nbrt-init: PID 1 and start logic for notebook images

usage:
  nbrt-init                            start the notebook server (as start-notebook)
  nbrt-init start-notebook [ARG...]    jupyter ${DOCKER_STACKS_JUPYTER_CMD:-lab} with the image's
                                       settings, NOTEBOOK_ARGS, then ARGs (jupyterhub-singleuser
                                       when JUPYTERHUB_API_TOKEN is set)
  nbrt-init start-singleuser [ARG...]  jupyterhub-singleuser, NOTEBOOK_ARGS, ARGs
  nbrt-init [--] COMMAND [ARG...]      run COMMAND with the same user/home/hook handling
  nbrt-init services                   run /etc/services.d only, until stopped
  nbrt-init healthcheck [--timeout SECONDS] [--quiet]
                                       exit 0 when the Jupyter server answers <url>api
  nbrt-init install DIR                put docker-stacks' names in DIR: start.sh,
                                       start-notebook(.py|.sh), start-singleuser(.py|.sh),
                                       fix-permissions (links to nbrt-init),
                                       _docker_stacks_log.sh and run-hooks.sh (scripts)
  nbrt-init version | help

As fix-permissions (a link): fix-permissions DIR...  group NB_GID, group-writable,
setgid directories, touching only what is not so already.

See crates/init/README.md for the environment variables.
";

fn base(s: &OsStr) -> &OsStr {
    std::path::Path::new(s).file_name().unwrap_or(s)
}

const NOTEBOOK_NAMES: [&str; 3] = ["start-notebook", "start-notebook.py", "start-notebook.sh"];
const SINGLEUSER_NAMES: [&str; 3] = [
    "start-singleuser",
    "start-singleuser.py",
    "start-singleuser.sh",
];

/// The program a docker-stacks launcher name stands for.
fn launcher(name: &str, rest: Vec<OsString>) -> Option<Program> {
    if NOTEBOOK_NAMES.contains(&name) {
        Some(Program::Notebook(rest))
    } else if SINGLEUSER_NAMES.contains(&name) {
        Some(Program::Singleuser(rest))
    } else {
        None
    }
}

/// What the words of CMD (the arguments of the entrypoint) ask for.
fn start_of(words: Vec<OsString>) -> Start {
    let mut words = words;
    let mut entrypoint_in_cmd = None;
    while let Some(name) = words
        .first()
        .and_then(|w| base(w).to_str())
        .filter(|n| matches!(*n, "nbrt-init" | "start.sh"))
        .map(str::to_owned)
    {
        entrypoint_in_cmd = Some(name);
        words.remove(0);
    }
    let Some(first) = words.first() else {
        // `start.sh` alone runs bash, as docker-stacks' does; nothing at all is the server.
        let (program, command) = if entrypoint_in_cmd.as_deref() == Some("start.sh") {
            (Program::Command(vec!["bash".into()]), vec!["bash".into()])
        } else {
            (
                Program::Notebook(Vec::new()),
                vec!["start-notebook.py".into()],
            )
        };
        return Start {
            program,
            command,
            entrypoint_in_cmd,
            launcher: None,
        };
    };
    let name = base(first).to_str().map(str::to_owned);
    let rest = words[1..].to_vec();
    match name.as_deref().and_then(|n| launcher(n, rest)) {
        Some(program) => Start {
            program,
            command: words,
            entrypoint_in_cmd,
            launcher: name,
        },
        None => Start {
            program: Program::Command(words.clone()),
            command: words,
            entrypoint_in_cmd,
            launcher: None,
        },
    }
}

/// Parse the command line (`argv0` is the program name, for multi-call use).
pub fn parse(argv0: &OsStr, args: Vec<OsString>) -> Result<Cmd> {
    let name = base(argv0).to_str().unwrap_or_default().to_owned();
    if name == "fix-permissions" {
        return Ok(Cmd::FixPermissions(args));
    }
    if name == "start.sh" {
        // docker-stacks' entrypoint name: the arguments are CMD, bash when there are none.
        if args.is_empty() {
            return Ok(Cmd::Start(Start {
                program: Program::Command(vec!["bash".into()]),
                command: vec!["bash".into()],
                entrypoint_in_cmd: None,
                launcher: None,
            }));
        }
        return Ok(Cmd::Start(start_of(args)));
    }
    let mut command = vec![OsString::from(&name)];
    command.extend(args.iter().cloned());
    if let Some(program) = launcher(&name, args.clone()) {
        return Ok(Cmd::Start(Start {
            program,
            command,
            entrypoint_in_cmd: None,
            launcher: Some(name),
        }));
    }
    let Some(first) = args.first().and_then(|a| a.to_str()).map(str::to_owned) else {
        return Ok(Cmd::Start(start_of(args)));
    };
    match first.as_str() {
        "--" => {
            let rest = args[1..].to_vec();
            if rest.is_empty() {
                return Ok(Cmd::Start(start_of(rest)));
            }
            Ok(Cmd::Start(Start {
                program: Program::Command(rest.clone()),
                command: rest,
                entrypoint_in_cmd: None,
                launcher: None,
            }))
        }
        "install" => match &args[1..] {
            [dir] => Ok(Cmd::Install(dir.into())),
            _ => Err(Error::Usage(
                "install needs exactly one directory (e.g. /usr/local/bin)".into(),
            )),
        },
        "-h" | "--help" | "help" => Ok(Cmd::Help),
        "-V" | "--version" | "version" => Ok(Cmd::Version),
        "services" => Ok(Cmd::Start(Start {
            program: Program::ServicesOnly,
            command: Vec::new(),
            entrypoint_in_cmd: None,
            launcher: None,
        })),
        "__dump-env" => Ok(Cmd::DumpEnv(
            args.get(1)
                .and_then(|a| a.to_str())
                .unwrap_or("0")
                .to_owned(),
        )),
        "healthcheck" => {
            let mut timeout = Duration::from_secs(3);
            let mut quiet = false;
            let mut it = args[1..].iter();
            while let Some(a) = it.next() {
                match a.to_str() {
                    Some("--timeout") => {
                        let v = it.next().and_then(|v| v.to_str()).ok_or_else(|| {
                            Error::Usage("--timeout needs a number of seconds".into())
                        })?;
                        let secs: f64 = v
                            .parse()
                            .ok()
                            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 3600.0)
                            .ok_or_else(|| Error::Usage(format!("invalid --timeout {v:?}")))?;
                        timeout = Duration::from_secs_f64(secs);
                    }
                    Some("--quiet" | "-q") => quiet = true,
                    _ => {
                        return Err(Error::Usage(format!(
                            "unknown healthcheck argument {:?}",
                            a.to_string_lossy()
                        )))
                    }
                }
            }
            Ok(Cmd::Healthcheck { timeout, quiet })
        }
        _ => Ok(Cmd::Start(start_of(args))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(argv0: &str, args: &[&str]) -> Cmd {
        parse(OsStr::new(argv0), args.iter().map(OsString::from).collect()).unwrap()
    }
    fn start(argv0: &str, args: &[&str]) -> Start {
        match p(argv0, args) {
            Cmd::Start(s) => s,
            other => panic!("not a start: {other:?}"),
        }
    }
    fn prog(argv0: &str, args: &[&str]) -> Program {
        start(argv0, args).program
    }
    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn subcommands() {
        assert_eq!(prog("nbrt-init", &[]), Program::Notebook(vec![]));
        assert_eq!(
            prog("/usr/local/bin/nbrt-init", &["start-notebook", "--x"]),
            Program::Notebook(v(&["--x"]))
        );
        assert_eq!(
            prog("nbrt-init", &["start-singleuser"]),
            Program::Singleuser(vec![])
        );
        assert_eq!(
            prog("nbrt-init", &["id", "-u"]),
            Program::Command(v(&["id", "-u"]))
        );
        assert_eq!(
            prog("nbrt-init", &["--", "healthcheck"]),
            Program::Command(v(&["healthcheck"]))
        );
        assert_eq!(prog("nbrt-init", &["services"]), Program::ServicesOnly);
        assert_eq!(p("nbrt-init", &["--version"]), Cmd::Version);
        assert_eq!(
            p("nbrt-init", &["__dump-env", "3"]),
            Cmd::DumpEnv("3".into())
        );
        assert_eq!(
            p("nbrt-init", &["healthcheck", "--timeout", "0.5", "-q"]),
            Cmd::Healthcheck {
                timeout: Duration::from_millis(500),
                quiet: true
            }
        );
        assert!(parse(
            OsStr::new("nbrt-init"),
            v(&["healthcheck", "--timeout", "x"])
        )
        .is_err());
        assert_eq!(
            p("nbrt-init", &["install", "/usr/local/bin"]),
            Cmd::Install("/usr/local/bin".into())
        );
        assert!(parse(OsStr::new("nbrt-init"), v(&["install"])).is_err());
        assert_eq!(
            p(
                "/usr/local/bin/fix-permissions",
                &["/opt/conda", "/home/jovyan"]
            ),
            Cmd::FixPermissions(v(&["/opt/conda", "/home/jovyan"]))
        );
    }

    #[test]
    fn docker_stacks_names() {
        assert_eq!(
            prog("nbrt-init", &["start-notebook.py", "--y"]),
            Program::Notebook(v(&["--y"]))
        );
        assert_eq!(
            prog("nbrt-init", &["/usr/local/bin/start-singleuser.sh"]),
            Program::Singleuser(vec![])
        );
        assert_eq!(
            prog("nbrt-init", &["start.sh"]),
            Program::Command(v(&["bash"]))
        );
        assert_eq!(
            prog("nbrt-init", &["start.sh", "ipython"]),
            Program::Command(v(&["ipython"]))
        );
        assert_eq!(
            prog("nbrt-init", &["nbrt-init", "start-notebook"]),
            Program::Notebook(vec![])
        );
        assert_eq!(
            prog("/usr/local/bin/start-notebook.py", &["--z"]),
            Program::Notebook(v(&["--z"]))
        );
        assert_eq!(
            prog("start.sh", &["jupyter", "lab"]),
            Program::Command(v(&["jupyter", "lab"]))
        );
    }

    #[test]
    fn how_the_start_was_asked_for() {
        let s = start("nbrt-init", &["start-notebook.py", "--ip=::"]);
        assert_eq!(s.command, v(&["start-notebook.py", "--ip=::"]));
        assert_eq!(
            (
                s.launcher.as_deref(),
                s.shim(),
                s.entrypoint_in_cmd.as_deref()
            ),
            (Some("start-notebook.py"), None, None)
        );

        let s = start("nbrt-init", &["start.sh", "start-singleuser.sh", "--x"]);
        assert_eq!(s.program, Program::Singleuser(v(&["--x"])));
        assert_eq!(s.command, v(&["start-singleuser.sh", "--x"]));
        assert_eq!(s.shim(), Some("start-singleuser.sh"));
        assert_eq!(s.entrypoint_in_cmd.as_deref(), Some("start.sh"));

        let s = start("/usr/local/bin/start-notebook", &[]);
        assert_eq!(s.command, v(&["start-notebook"]));
        assert_eq!(s.entrypoint_in_cmd, None);

        let s = start("nbrt-init", &[]);
        assert_eq!(s.command, v(&["start-notebook.py"]));

        let s = start("start.sh", &["start.sh", "id"]);
        assert_eq!(
            (s.program, s.entrypoint_in_cmd.as_deref()),
            (Program::Command(v(&["id"])), Some("start.sh"))
        );
        assert_eq!(start("start.sh", &["id"]).entrypoint_in_cmd, None);
        assert_eq!(
            prog("/usr/local/bin/start.sh", &[]),
            Program::Command(v(&["bash"]))
        );
    }
}
