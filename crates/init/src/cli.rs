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
//! nbrt-init version | help
//! ```
//!
//! docker-stacks names work too, as the first word or as the program name (a symlink):
//! `start-notebook.py`, `start-notebook.sh`, `start-singleuser.py`, `start-singleuser.sh`,
//! `start.sh`. A leading `nbrt-init` word is dropped (someone put the ENTRYPOINT in CMD).

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Start(Program),
    Healthcheck { timeout: Duration, quiet: bool },
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
  nbrt-init version | help

See crates/init/README.md for the environment variables.
";

fn base(s: &OsStr) -> &OsStr {
    std::path::Path::new(s).file_name().unwrap_or(s)
}

fn program_of(words: Vec<OsString>) -> Program {
    let mut words = words;
    while words.first().is_some_and(|w| base(w) == "nbrt-init") {
        words.remove(0);
    }
    let Some(first) = words.first() else {
        return Program::Notebook(Vec::new());
    };
    let rest = words[1..].to_vec();
    match base(first).to_str() {
        Some("start-notebook" | "start-notebook.py" | "start-notebook.sh") => {
            Program::Notebook(rest)
        }
        Some("start-singleuser" | "start-singleuser.py" | "start-singleuser.sh") => {
            Program::Singleuser(rest)
        }
        Some("start.sh") if rest.is_empty() => Program::Command(vec!["bash".into()]),
        Some("start.sh") => program_of(rest),
        _ => Program::Command(words),
    }
}

/// Parse the command line (`argv0` is the program name, for multi-call use).
pub fn parse(argv0: &OsStr, args: Vec<OsString>) -> Result<Cmd> {
    let mut args = args;
    let name = base(argv0);
    if name != "nbrt-init" && !name.is_empty() {
        let known = matches!(
            name.to_str(),
            Some(
                "start-notebook"
                    | "start-notebook.py"
                    | "start-notebook.sh"
                    | "start-singleuser"
                    | "start-singleuser.py"
                    | "start-singleuser.sh"
                    | "start.sh"
            )
        );
        if known {
            args.insert(0, name.to_owned());
            return Ok(Cmd::Start(program_of(args)));
        }
    }
    let Some(first) = args.first().and_then(|a| a.to_str()).map(str::to_owned) else {
        return Ok(Cmd::Start(program_of(args)));
    };
    match first.as_str() {
        "--" => {
            let rest = args[1..].to_vec();
            if rest.is_empty() {
                return Ok(Cmd::Start(Program::Notebook(Vec::new())));
            }
            Ok(Cmd::Start(Program::Command(rest)))
        }
        "-h" | "--help" | "help" => Ok(Cmd::Help),
        "-V" | "--version" | "version" => Ok(Cmd::Version),
        "services" => Ok(Cmd::Start(Program::ServicesOnly)),
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
        _ => Ok(Cmd::Start(program_of(args))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(argv0: &str, args: &[&str]) -> Cmd {
        parse(OsStr::new(argv0), args.iter().map(OsString::from).collect()).unwrap()
    }
    fn v(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn subcommands() {
        assert_eq!(p("nbrt-init", &[]), Cmd::Start(Program::Notebook(vec![])));
        assert_eq!(
            p("/usr/local/bin/nbrt-init", &["start-notebook", "--x"]),
            Cmd::Start(Program::Notebook(v(&["--x"])))
        );
        assert_eq!(
            p("nbrt-init", &["start-singleuser"]),
            Cmd::Start(Program::Singleuser(vec![]))
        );
        assert_eq!(
            p("nbrt-init", &["id", "-u"]),
            Cmd::Start(Program::Command(v(&["id", "-u"])))
        );
        assert_eq!(
            p("nbrt-init", &["--", "healthcheck"]),
            Cmd::Start(Program::Command(v(&["healthcheck"])))
        );
        assert_eq!(
            p("nbrt-init", &["services"]),
            Cmd::Start(Program::ServicesOnly)
        );
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
    }

    #[test]
    fn docker_stacks_names() {
        assert_eq!(
            p("nbrt-init", &["start-notebook.py", "--y"]),
            Cmd::Start(Program::Notebook(v(&["--y"])))
        );
        assert_eq!(
            p("nbrt-init", &["/usr/local/bin/start-singleuser.sh"]),
            Cmd::Start(Program::Singleuser(vec![]))
        );
        assert_eq!(
            p("nbrt-init", &["start.sh"]),
            Cmd::Start(Program::Command(v(&["bash"])))
        );
        assert_eq!(
            p("nbrt-init", &["start.sh", "ipython"]),
            Cmd::Start(Program::Command(v(&["ipython"])))
        );
        assert_eq!(
            p("nbrt-init", &["nbrt-init", "start-notebook"]),
            Cmd::Start(Program::Notebook(vec![]))
        );
        assert_eq!(
            p("/usr/local/bin/start-notebook.py", &["--z"]),
            Cmd::Start(Program::Notebook(v(&["--z"])))
        );
        assert_eq!(
            p("start.sh", &["jupyter", "lab"]),
            Cmd::Start(Program::Command(v(&["jupyter", "lab"])))
        );
    }
}
