//! `nbrt-init install DIR`: docker-stacks' names in an image, in one step of its build.
//!
//! - links to nbrt-init (multi-call names): `start.sh`, `start-notebook`,
//!   `start-notebook.py`, `start-notebook.sh`, `start-singleuser`, `start-singleuser.py`,
//!   `start-singleuser.sh` and `fix-permissions` ([`crate::perms`]);
//! - shell scripts, because docker-stacks users `source` them: `_docker_stacks_log.sh`
//!   (`_log`, `_log_info`, `_log_warn`, `_log_error`, `_log_fatal`) and `run-hooks.sh DIR`.
//!
//! The scripts' text is part of this binary ([`LOG_SCRIPT`], [`RUN_HOOKS_SCRIPT`]), so the
//! image gets the ones that match the nbrt-init it carries, and the shell that sources
//! `*.sh` hooks has the same `_log*` functions ([`crate::hooks`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `_docker_stacks_log.sh`.
pub const LOG_SCRIPT: &str = include_str!("../scripts/_docker_stacks_log.sh");
/// `run-hooks.sh`.
pub const RUN_HOOKS_SCRIPT: &str = include_str!("../scripts/run-hooks.sh");

/// The names that are links to nbrt-init.
pub const LINKS: [&str; 8] = [
    "start.sh",
    "start-notebook",
    "start-notebook.py",
    "start-notebook.sh",
    "start-singleuser",
    "start-singleuser.py",
    "start-singleuser.sh",
    "fix-permissions",
];

/// The scripts and their names.
pub const SCRIPTS: [(&str, &str); 2] = [
    ("_docker_stacks_log.sh", LOG_SCRIPT),
    ("run-hooks.sh", RUN_HOOKS_SCRIPT),
];

/// Put the links (to `exe`) and the scripts into `dir`, replacing what has those names.
/// Returns the paths written.
pub fn install(dir: &Path, exe: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "install: {} is not a directory",
            dir.display()
        )));
    }
    // A link beside nbrt-init names it relatively, so the directory can move.
    let same_dir = exe
        .parent()
        .zip(fs::canonicalize(dir).ok())
        .is_some_and(|(p, d)| fs::canonicalize(p).is_ok_and(|p| p == d));
    let target = match exe.file_name() {
        Some(n) if same_dir => PathBuf::from(n),
        _ => exe.to_owned(),
    };
    let mut written = Vec::new();
    for name in LINKS {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.nbrt-init-install"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("linking", &path, e)
            })?;
        written.push(path);
    }
    for (name, text) in SCRIPTS {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.nbrt-init-install"));
        let _ = fs::remove_file(&tmp);
        fs::write(&tmp, text)
            .and_then(|()| fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)))
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io("writing", &path, e)
            })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_scripts() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("nbrt-init");
        fs::write(&exe, "").unwrap();
        fs::write(d.path().join("start.sh"), "old").unwrap();
        install(d.path(), &exe).unwrap();
        for n in LINKS {
            assert_eq!(
                fs::read_link(d.path().join(n)).unwrap(),
                PathBuf::from("nbrt-init"),
                "{n}"
            );
        }
        let s = d.path().join("run-hooks.sh");
        assert_eq!(fs::read_to_string(&s).unwrap(), RUN_HOOKS_SCRIPT);
        assert_eq!(
            fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o755
        );
        // Again, from elsewhere: replaced, absolute.
        install(d.path(), Path::new("/usr/local/bin/nbrt-init")).unwrap();
        assert_eq!(
            fs::read_link(d.path().join("fix-permissions")).unwrap(),
            PathBuf::from("/usr/local/bin/nbrt-init")
        );
        assert!(install(&d.path().join("missing"), &exe).is_err());
    }
}
