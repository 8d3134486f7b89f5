//! `fix-permissions DIR...`: docker-stacks' fix-permissions, as an nbrt-init name.
//!
//! After an install, makes each tree usable by every user of the notebook group (`NB_GID`,
//! default 100): every entry gets group `NB_GID` and group read and write (and execute for
//! directories and for files executable by someone), and every directory the setgid bit, so
//! what is created in it later inherits the group. The owner never changes.
//!
//! Only entries that are not so already are touched, one `chown`/`chmod` each at most: in a
//! container build a touched file is copied into the new layer, so a tree that is right
//! costs nothing. Symbolic links are never followed: a link's own group is set, its target
//! is left alone (docker-stacks' `find … -exec chgrp` changes a link's target).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries looked at.
    pub seen: usize,
    /// Entries changed.
    pub changed: usize,
    /// What could not be read or changed (path: reason).
    pub errors: Vec<String>,
}

/// The group from `NB_GID` (default 100).
pub fn gid_from_env(value: Option<&str>) -> Result<u32, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(100),
        Some(v) => v
            .parse()
            .map_err(|_| format!("invalid NB_GID={v:?}: expected a numeric group id")),
    }
}

/// The mode an entry should have, if it is not right (None: leave it).
fn wanted_mode(mode: u32, is_dir: bool, right_group: bool) -> Option<u32> {
    let group_ok = mode & 0o060 == 0o060 && (!is_dir || mode & 0o010 != 0);
    let mut want = mode;
    if !(right_group && group_ok) {
        want |= 0o060;
        if is_dir || mode & 0o111 != 0 {
            want |= 0o010;
        }
    }
    if is_dir {
        want |= 0o2000;
    }
    (want != mode).then_some(want)
}

fn fix_entry(path: &Path, meta: &fs::Metadata, gid: u32) -> std::io::Result<bool> {
    let mut changed = false;
    if meta.file_type().is_symlink() {
        if meta.gid() != gid {
            std::os::unix::fs::lchown(path, None, Some(gid))?;
            changed = true;
        }
        return Ok(changed);
    }
    let right_group = meta.gid() == gid;
    let mut mode = meta.mode() & 0o7777;
    if !right_group {
        std::os::unix::fs::lchown(path, None, Some(gid))?;
        changed = true;
        // chown clears setuid/setgid on files: what chmod builds on is the mode after it.
        mode = fs::symlink_metadata(path)?.mode() & 0o7777;
    }
    if let Some(want) = wanted_mode(mode, meta.is_dir(), right_group) {
        fs::set_permissions(path, fs::Permissions::from_mode(want))?;
        changed = true;
    }
    Ok(changed)
}

/// Fix one tree (the path itself and everything below it, without following links).
pub fn fix_tree(root: &Path, gid: u32, report: &mut Report) {
    let mut stack: Vec<PathBuf> = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                report.errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        report.seen += 1;
        match fix_entry(&path, &meta, gid) {
            Ok(true) => report.changed += 1,
            Ok(false) => {}
            Err(e) => report.errors.push(format!("{}: {e}", path.display())),
        }
        if meta.is_dir() {
            match fs::read_dir(&path) {
                Ok(rd) => {
                    for entry in rd {
                        match entry {
                            Ok(e) => stack.push(e.path()),
                            Err(e) => report.errors.push(format!("{}: {e}", path.display())),
                        }
                    }
                }
                Err(e) => report.errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
}

/// The `fix-permissions` program; returns the exit code.
pub fn main(args: &[OsString]) -> i32 {
    if args.first().is_some_and(|a| a == "-h" || a == "--help") {
        println!("usage: fix-permissions DIR...\n\nGives every entry under each DIR the group NB_GID (default 100) and group\nread/write (execute for directories), and setgid directories, touching only\nwhat is not so already. Owners are kept; links are not followed.");
        return 0;
    }
    let gid = match gid_from_env(std::env::var("NB_GID").ok().as_deref()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("fix-permissions: {e}");
            return 2;
        }
    };
    let mut report = Report::default();
    for a in args {
        fix_tree(Path::new(a), gid, &mut report);
    }
    for e in &report.errors {
        eprintln!("fix-permissions: {e}");
    }
    if report.errors.is_empty() {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        // Right already: untouched.
        assert_eq!(wanted_mode(0o664, false, true), None);
        assert_eq!(wanted_mode(0o2775, true, true), None);
        // Group needs write; execute only where someone may execute.
        assert_eq!(wanted_mode(0o644, false, true), Some(0o664));
        assert_eq!(wanted_mode(0o755, false, true), Some(0o775));
        assert_eq!(wanted_mode(0o744, false, false), Some(0o774));
        // A file in the wrong group with the right mode keeps its mode.
        assert_eq!(wanted_mode(0o660, false, false), None);
        // Directories: group rwx and setgid.
        assert_eq!(wanted_mode(0o755, true, true), Some(0o2775));
        assert_eq!(wanted_mode(0o775, true, true), Some(0o2775));
        assert_eq!(wanted_mode(0o700, true, false), Some(0o2770));
        assert_eq!(
            wanted_mode(0o6775, true, true),
            None,
            "old images' setuid stays"
        );
    }

    #[test]
    fn nb_gid() {
        assert_eq!(gid_from_env(None), Ok(100));
        assert_eq!(gid_from_env(Some(" 2345 ")), Ok(2345));
        assert!(gid_from_env(Some("users")).is_err());
    }

    #[test]
    fn a_tree_as_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root for chown");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("env");
        let outside = d.path().join("outside");
        fs::write(&outside, "x").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        fs::create_dir_all(r.join("lib/pkg")).unwrap();
        fs::write(r.join("lib/pkg/mod.py"), "").unwrap();
        fs::write(r.join("lib/run"), "").unwrap();
        fs::set_permissions(r.join("lib/run"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(r.join("right"), "").unwrap();
        std::os::unix::fs::symlink(&outside, r.join("link")).unwrap();
        for p in ["", "lib", "lib/pkg", "lib/pkg/mod.py", "lib/run", "link"] {
            std::os::unix::fs::lchown(r.join(p), Some(0), Some(0)).unwrap();
        }
        for p in ["lib", "lib/pkg"] {
            fs::set_permissions(r.join(p), fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::os::unix::fs::lchown(r.join("right"), Some(0), Some(4321)).unwrap();
        fs::set_permissions(r.join("right"), fs::Permissions::from_mode(0o664)).unwrap();
        std::os::unix::fs::lchown(&outside, Some(0), Some(0)).unwrap();

        let mut rep = Report::default();
        fix_tree(&r, 4321, &mut rep);
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!((rep.seen, rep.changed), (7, 6), "all but `right`");
        let st = |p: &str| {
            let m = fs::symlink_metadata(r.join(p)).unwrap();
            (m.uid(), m.gid(), m.mode() & 0o7777)
        };
        assert_eq!(st("lib"), (0, 4321, 0o2775));
        assert_eq!(st("lib/pkg/mod.py"), (0, 4321, 0o664));
        assert_eq!(
            st("lib/run"),
            (0, 4321, 0o775),
            "chgrp cleared setuid, as chgrp does"
        );
        assert_eq!(st("right"), (0, 4321, 0o664));
        assert_eq!(st("link").1, 4321);
        let o = fs::metadata(&outside).unwrap();
        assert_eq!(
            (o.gid(), o.mode() & 0o777),
            (0, 0o644),
            "link target untouched"
        );

        let ctimes = |root: &Path| {
            let mut v = Vec::new();
            let mut stack = vec![root.to_owned()];
            while let Some(p) = stack.pop() {
                let m = fs::symlink_metadata(&p).unwrap();
                v.push((p.clone(), m.ctime(), m.ctime_nsec()));
                if m.is_dir() {
                    stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
            v.sort();
            v
        };
        let before = ctimes(&r);
        let mut again = Report::default();
        fix_tree(&r, 4321, &mut again);
        assert_eq!((again.seen, again.changed), (7, 0));
        assert_eq!(ctimes(&r), before, "nothing touched the second time");

        let mut missing = Report::default();
        fix_tree(&d.path().join("nope"), 4321, &mut missing);
        assert_eq!(missing.errors.len(), 1);
    }
}
