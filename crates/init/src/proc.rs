//! Starting child processes: environment, working directory, credentials, umask, process
//! group and signal mask, all applied between fork and exec.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};

use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Pid, Uid};

use crate::env::Env;
use crate::error::{Error, Result};

/// The identity a child runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cred {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary gid may be among them).
    pub groups: Vec<u32>,
}

/// Everything about how one child is started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub argv: Vec<OsString>,
    pub env: Env,
    pub cwd: Option<PathBuf>,
    pub cred: Option<Cred>,
    pub umask: Option<u32>,
    /// Put the child in a process group of its own (signals go to the whole group).
    pub own_group: bool,
    /// Make that group the terminal's foreground group when stdin is a terminal.
    pub foreground: bool,
}

impl Launch {
    pub fn new<S: Into<OsString>>(argv: impl IntoIterator<Item = S>, env: Env) -> Launch {
        Launch {
            argv: argv.into_iter().map(Into::into).collect(),
            env,
            ..Launch::default()
        }
    }

    fn command(&self, extra_fd3: Option<&OwnedFd>) -> Result<Command> {
        let Some(program) = self.argv.first() else {
            return Err(Error::Usage("empty command".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(&self.argv[1..]);
        cmd.env_clear();
        cmd.envs(self.env.iter());
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if self.own_group {
            cmd.process_group(0);
        }
        let cred = self.cred.clone();
        let groups: Vec<Gid> = cred
            .as_ref()
            .map(|c| c.groups.iter().map(|g| Gid::from_raw(*g)).collect())
            .unwrap_or_default();
        let umask = self.umask;
        let foreground = self.own_group && self.foreground;
        let fd3 = extra_fd3.map(|f| f.as_raw_fd());
        // SAFETY: the closure runs in the child between fork and exec; it only makes system
        // calls (no allocation: everything it needs was prepared above).
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = fd3 {
                    if fd != 3 && nix::libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    nix::fcntl::fcntl(
                        std::os::fd::BorrowedFd::borrow_raw(3),
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .map_err(std::io::Error::from)?;
                }
                if foreground && nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
                    // SIGTTOU is still blocked here (inherited mask), so this cannot stop us.
                    let _ = nix::unistd::tcsetpgrp(std::io::stdin(), nix::unistd::getpid());
                }
                nix::sys::signal::sigprocmask(
                    SigmaskHow::SIG_SETMASK,
                    Some(&SigSet::empty()),
                    None,
                )
                .map_err(std::io::Error::from)?;
                if let Some(c) = &cred {
                    if nix::unistd::geteuid().is_root() {
                        nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
                    }
                    nix::unistd::setgid(Gid::from_raw(c.gid)).map_err(std::io::Error::from)?;
                    nix::unistd::setuid(Uid::from_raw(c.uid)).map_err(std::io::Error::from)?;
                }
                if let Some(m) = umask {
                    nix::sys::stat::umask(Mode::from_bits_truncate(m as nix::libc::mode_t));
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Start the child; returns once it has exec'd (or failed to).
    pub fn spawn(&self) -> Result<Child> {
        self.spawn_with_fd3(None)
    }

    /// Start the child with `fd` as its file descriptor 3.
    pub fn spawn_with_fd3(&self, fd: Option<&OwnedFd>) -> Result<Child> {
        let mut cmd = self.command(fd)?;
        cmd.spawn().map_err(|e| Error::Exec {
            program: self
                .argv
                .first()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: e,
        })
    }
}

/// Exit code for a wait status the way shells and tini report it: the code, or 128+signal.
pub fn exit_code_of(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        _ => 1,
    }
}

pub fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(child.id() as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_exact_env_and_cwd() {
        let d = tempfile::tempdir().unwrap();
        let mut l = Launch::new(
            [
                "/bin/sh",
                "-c",
                "test \"$FOO\" = bar && test -z \"$HOME\" && test \"$(pwd -P)\" = \"$WANT\"",
            ],
            Env::from_pairs([("FOO", "bar"), ("PATH", "/usr/bin:/bin")]),
        );
        let want = d.path().canonicalize().unwrap();
        l.env.set("WANT", want.as_os_str());
        l.cwd = Some(d.path().to_owned());
        l.own_group = true;
        let st = l.spawn().unwrap().wait().unwrap();
        assert!(st.success());
    }

    #[test]
    fn umask_is_applied_and_missing_program_is_reported() {
        let mut l = Launch::new(["/bin/sh", "-c", "test $(umask) = 0027"], Env::default());
        l.umask = Some(0o027);
        assert!(l.spawn().unwrap().wait().unwrap().success());
        let e = Launch::new(["/nonexistent/prog"], Env::default())
            .spawn()
            .unwrap_err();
        assert_eq!(e.exit_code(), 127);
    }

    #[test]
    fn exit_codes() {
        let st = Launch::new(["/bin/sh", "-c", "exit 3"], Env::default())
            .spawn()
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(exit_code_of(st), 3);
        let st = Launch::new(["/bin/sh", "-c", "kill -TERM $$"], Env::default())
            .spawn()
            .unwrap()
            .wait()
            .unwrap();
        assert_eq!(exit_code_of(st), 143);
    }
}
