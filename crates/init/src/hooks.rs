//! Hook directories (docker-stacks' `start-notebook.d`, `before-notebook.d`) and s6-style
//! `cont-init.d` scripts.
//!
//! Hooks run in lexical (byte) order of their names; dot files are skipped. A `*.sh` hook is
//! *sourced* by bash (executable or not) so that what it exports or unsets reaches the rest of
//! the start and the server: nbrt-init runs `bash -c '. HOOK; exec nbrt-init __dump-env $?'`
//! and reads the resulting environment back through file descriptor 3 (closed for the hook
//! itself); docker-stacks' `_log`, `_log_info`, `_log_warn`, `_log_error` and `_log_fatal` are
//! defined in that shell. Other files are executed when executable, else ignored. A failing
//! hook is logged and the start continues; a sourced hook that exits the shell (`exit`, or
//! `set -e` and a failing command) stops the start, as it would stop docker-stacks' start.sh.

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::env::Env;
use crate::error::{Error, Result};
use crate::log;
use crate::proc::{exit_code_of, Launch};

/// Internal subcommand that writes the environment to fd 3.
pub const DUMP_ENV: &str = "__dump-env";

/// Names whose value the sourcing shell itself changes; never taken from a dump.
const SHELL_OWNED: [&str; 4] = ["_", "SHLVL", "PWD", "OLDPWD"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookKind {
    Source,
    Execute,
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub path: PathBuf,
    pub kind: HookKind,
}

/// The hooks of a directory, in the order they run. `None` when the directory is missing.
pub fn list(dir: &Path) -> Result<Option<Vec<Hook>>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
        Err(e) => return Err(Error::io("reading hook directory", dir, e)),
    };
    let mut names: Vec<OsString> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| !n.as_encoded_bytes().starts_with(b"."))
        .collect();
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(Some(
        names
            .into_iter()
            .map(|n| {
                let path = dir.join(&n);
                let meta = fs::metadata(&path).ok();
                let is_file = meta.as_ref().is_some_and(|m| m.is_file());
                let exec = meta
                    .as_ref()
                    .is_some_and(|m| m.permissions().mode() & 0o111 != 0);
                let kind = if is_file && n.as_encoded_bytes().ends_with(b".sh") {
                    HookKind::Source
                } else if is_file && exec {
                    HookKind::Execute
                } else {
                    HookKind::Ignore
                };
                Hook { path, kind }
            })
            .collect(),
    ))
}

fn shell() -> &'static str {
    if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// Source one `.sh` hook and return (its status, the environment after it).
/// `Ok(None)` environment means the hook exited the shell.
pub fn source(hook: &Path, env: &Env, exe: &Path) -> Result<(i32, Option<Env>)> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("creating a pipe", e))?;
    // docker-stacks' `_log*` functions are defined in the shell that sources the hook.
    let script = format!(
        "{}\n. \"$1\" 3>&-; __nbrt_rc=$?; exec \"$2\" __dump-env \"$__nbrt_rc\"",
        crate::install::LOG_SCRIPT
    );
    let launch = Launch::new(
        [
            OsString::from(shell()),
            "-c".into(),
            script.into(),
            hook.as_os_str().to_owned(),
            hook.as_os_str().to_owned(),
            exe.as_os_str().to_owned(),
        ],
        env.clone(),
    );
    let mut child = launch.spawn_with_fd3(Some(&wr))?;
    drop(wr);
    let mut dump = Vec::new();
    let mut f = fs::File::from(rd);
    let _ = f.read_to_end(&mut dump);
    let status = child
        .wait()
        .map_err(|e| Error::io("waiting for", hook, e))?;
    if dump.is_empty() {
        return Ok((exit_code_of(status), None));
    }
    let (rc, rest) = match dump.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&dump[..i])
                .parse::<i32>()
                .unwrap_or(1),
            &dump[i + 1..],
        ),
        None => (1, &dump[..0]),
    };
    let mut after = Env::from_nul_records(rest);
    for name in SHELL_OWNED {
        match env.get_os(name) {
            Some(v) => after.set(name, v),
            None => after.remove(name),
        }
    }
    Ok((rc, Some(after)))
}

/// Write `rc` and the process environment to fd 3 (the `__dump-env` subcommand).
pub fn dump_env_to_fd3(rc: &str) -> i32 {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = Vec::new();
    buf.extend_from_slice(rc.as_bytes());
    buf.push(0);
    for (k, v) in std::env::vars_os() {
        buf.extend_from_slice(k.as_bytes());
        buf.push(b'=');
        buf.extend_from_slice(v.as_bytes());
        buf.push(0);
    }
    // SAFETY: fd 3 was set up by the parent nbrt-init for exactly this write; it is not
    // used anywhere else in this short-lived process.
    let mut f = unsafe { fs::File::from_raw_fd(3) };
    match f.write_all(&buf) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Run every hook of `dir` (docker-stacks' run-hooks), updating `env` with what sourced
/// hooks export.
pub fn run_dir(dir: &Path, env: &mut Env, exe: &Path) -> Result<()> {
    let Some(hooks) = list(dir)? else {
        log::debug(format!("No hook directory {}, skipping", dir.display()));
        return Ok(());
    };
    log::info(format!(
        "Running hooks in: {} as uid: {} gid: {}",
        dir.display(),
        nix::unistd::getuid(),
        nix::unistd::getgid()
    ));
    for hook in hooks {
        let p = hook.path.display().to_string();
        match hook.kind {
            HookKind::Source => {
                log::info(format!("Sourcing shell script: {p}"));
                let (rc, after) = source(&hook.path, env, exe)?;
                match after {
                    Some(after) => {
                        *env = after;
                        if rc != 0 {
                            log::error(format!("{p} has failed, continuing execution"));
                        }
                    }
                    None => {
                        log::fatal(format!(
                            "{p} exited the start shell with status {rc} (exit, or set -e and a failing command)"
                        ));
                        return Err(Error::HookExited {
                            path: hook.path.clone(),
                            status: rc,
                        });
                    }
                }
            }
            HookKind::Execute => {
                log::info(format!("Running executable: {p}"));
                let ok = Launch::new([hook.path.as_os_str()], env.clone())
                    .spawn()
                    .and_then(|mut c| {
                        c.wait()
                            .map_err(|e| Error::io("waiting for", &hook.path, e))
                    })
                    .map(|st| st.success());
                match ok {
                    Ok(true) => {}
                    Ok(false) => log::error(format!("{p} has failed, continuing execution")),
                    Err(e) => log::error(format!("{p} has failed, continuing execution: {e}")),
                }
            }
            HookKind::Ignore => log::info(format!("Ignoring non-executable: {p}")),
        }
    }
    log::info(format!("Done running hooks in: {}", dir.display()));
    Ok(())
}

/// Run `/etc/cont-init.d/*` in order (executables; others are skipped with a warning).
/// The first failure stops the container.
pub fn run_cont_init(dir: &Path, env: &Env) -> Result<()> {
    let Some(hooks) = list(dir)? else {
        return Ok(());
    };
    log::info(format!("Running cont-init scripts in: {}", dir.display()));
    for hook in hooks {
        let p = hook.path.display().to_string();
        let executable = fs::metadata(&hook.path)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            log::warning(format!("Skipping non-executable cont-init script: {p}"));
            continue;
        }
        log::info(format!("Running cont-init script: {p}"));
        let status = Launch::new([hook.path.as_os_str()], env.clone())
            .spawn()
            .and_then(|mut c| {
                c.wait()
                    .map_err(|e| Error::io("waiting for", &hook.path, e))
            })
            .map(exit_code_of);
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                log::fatal(format!("cont-init script {p} could not run: {e}"));
                e.exit_code()
            }
        };
        if status != 0 {
            let err = Error::ContInit {
                path: hook.path.clone(),
                status,
            };
            log::fatal(err.to_string());
            return Err(err);
        }
    }
    log::info(format!(
        "Done running cont-init scripts in: {}",
        dir.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        fs::write(&p, body).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn lexical_order_and_kinds() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-b.sh", "", 0o644);
        write(d.path(), "10-a", "#!/bin/sh\n", 0o755);
        write(d.path(), "B-upper", "", 0o644);
        write(d.path(), ".hidden.sh", "", 0o755);
        write(d.path(), "a-lower.sh", "", 0o755);
        fs::create_dir(d.path().join("30-dir")).unwrap();
        let hooks = list(d.path()).unwrap().unwrap();
        let names: Vec<_> = hooks
            .iter()
            .map(|h| {
                (
                    h.path.file_name().unwrap().to_string_lossy().into_owned(),
                    h.kind.clone(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![
                ("10-a".into(), HookKind::Execute),
                ("20-b.sh".into(), HookKind::Source),
                ("30-dir".into(), HookKind::Ignore),
                ("B-upper".into(), HookKind::Ignore),
                ("a-lower.sh".into(), HookKind::Source),
            ]
        );
        assert!(list(&d.path().join("missing")).unwrap().is_none());
    }
}
