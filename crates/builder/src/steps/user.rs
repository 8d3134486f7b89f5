//! The user step: the notebook user in the docker-stacks layout, written directly into a
//! staging tree (no `useradd` in the image): `/etc/passwd`, `/etc/group` and `/etc/shadow`
//! entries, a home made from `/etc/skel`, and the directories the user owns — owned by
//! uid:gid, group-writable, directories setgid (what docker-stacks' `fix-permissions` does).
//! The parent's entries are read by the shared reader [`nbrt_oci::facts::passwd`].

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;

use nbrt_oci::facts::passwd;

use crate::error::{BuildError, IoContext, Result};
use crate::runtime_file::User;
use crate::snapshot::MergedView;
use crate::steps::{Rebase, RebaseContext, RunContext, StepKind, StepOutput};

impl StepKind for User {
    fn label(&self) -> String {
        format!("user {} {}:{}", self.name, self.uid, self.gid)
    }

    fn run(&self, cx: &RunContext<'_>, _log: &mut dyn std::io::Write) -> Result<StepOutput> {
        apply(&cx.view(), self, cx.staging)?;
        Ok(cx.staging_layer()?.into())
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(Rebase::Rebuild(
            "it writes the base's passwd, group, shadow and skel".into(),
        ))
    }
}

fn err(message: impl Into<String>) -> BuildError {
    BuildError::Step {
        step: "user".to_string(),
        message: message.into(),
    }
}

/// Lines of a colon-separated database with `name` (field 0) replaced or appended.
fn upsert(text: &str, name: &str, line: String) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut done = false;
    for l in text.lines() {
        if l.split(':').next() == Some(name) {
            if !done {
                out.push(line.clone());
                done = true;
            }
        } else if !l.trim().is_empty() {
            out.push(l.to_string());
        }
    }
    if !done {
        out.push(line);
    }
    out.join("\n") + "\n"
}

fn write(staging: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let path = staging.join(rel);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&path, text).io_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .io_context(|| format!("setting the mode of {}", path.display()))
}

/// Write the user's entries, home and owned directories into `staging` (the image root).
pub fn apply(view: &MergedView, user: &User, staging: &Path) -> Result<()> {
    let read = |p: &str| -> Result<String> {
        Ok(view
            .read(p)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    };
    let passwd = read("etc/passwd")?;
    if let Some(other) = passwd::parse_passwd(&passwd)
        .into_iter()
        .find(|e| e.uid == user.uid && e.name != user.name)
    {
        return Err(err(format!(
            "uid {} already belongs to {:?} in the parent image; choose another uid or name",
            user.uid, other.name
        )));
    }
    let home = user.home();
    let shell = if view.exists("bin/bash") {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    write(
        staging,
        "etc/passwd",
        &upsert(
            &passwd,
            &user.name,
            format!("{}:x:{}:{}::{home}:{shell}", user.name, user.uid, user.gid),
        ),
        0o644,
    )?;
    let group = read("etc/group")?;
    if !passwd::parse_group(&group)
        .iter()
        .any(|g| g.gid == user.gid)
    {
        write(
            staging,
            "etc/group",
            &upsert(&group, &user.name, format!("{}:x:{}:", user.name, user.gid)),
            0o644,
        )?;
    }
    let shadow = read("etc/shadow")?;
    write(
        staging,
        "etc/shadow",
        &upsert(
            &shadow,
            &user.name,
            format!("{}:!::0:99999:7:::", user.name),
        ),
        0o640,
    )?;
    if let Some(shadow_gid) = view
        .symlink_metadata("etc/shadow")?
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
    {
        chown(staging.join("etc/shadow"), Some(0), Some(shadow_gid))
            .io_context(|| "setting the group of /etc/shadow")?;
    }

    // The home, from /etc/skel.
    let home_rel = home.trim_start_matches('/');
    let home_dir = staging.join(home_rel);
    fs::create_dir_all(&home_dir).io_context(|| format!("creating {home}"))?;
    if view.exists("etc/skel") {
        for name in view.read_dir("etc/skel")? {
            if let Some(bytes) = view.read(&format!("etc/skel/{name}"))? {
                write(
                    staging,
                    &format!("{home_rel}/{name}"),
                    &String::from_utf8_lossy(&bytes),
                    0o644,
                )?;
            }
        }
    }
    own_tree(&home_dir, user.uid, user.gid, false)?;
    fs::set_permissions(&home_dir, fs::Permissions::from_mode(0o2775))
        .io_context(|| format!("setting the mode of {home}"))?;

    // Directories the user owns: created, or their current content re-owned.
    for dir in &user.owns {
        let rel = dir.trim_start_matches('/').trim_end_matches('/');
        let dest = staging.join(rel);
        if let Some(found) = view.real_path(rel).filter(|p| p.is_dir()) {
            copy_tree(&found, &dest)?;
        } else {
            fs::create_dir_all(&dest).io_context(|| format!("creating {dir}"))?;
        }
        own_tree(&dest, user.uid, user.gid, true)?;
    }
    Ok(())
}

/// Copy a directory tree as it is (symlinks as symlinks) — the visible copy in the top
/// layer holding it.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).io_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).io_context(|| format!("listing {}", from.display()))? {
        let entry = entry.io_context(|| format!("listing {}", from.display()))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta =
            fs::symlink_metadata(&src).io_context(|| format!("reading {}", src.display()))?;
        if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&src).io_context(|| format!("reading {}", src.display()))?;
            std::os::unix::fs::symlink(target, &dst)
                .io_context(|| format!("creating {}", dst.display()))?;
        } else if meta.is_file() {
            fs::copy(&src, &dst).io_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Owner uid:gid for everything; group-writable; directories setgid when `shared`.
pub(crate) fn own_tree(path: &Path, uid: u32, gid: u32, shared: bool) -> Result<()> {
    let meta = fs::symlink_metadata(path).io_context(|| format!("reading {}", path.display()))?;
    if meta.file_type().is_symlink() {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .io_context(|| format!("setting the owner of {}", path.display()))?;
        return Ok(());
    }
    chown(path, Some(uid), Some(gid))
        .io_context(|| format!("setting the owner of {}", path.display()))?;
    let mut mode = meta.permissions().mode() & 0o7777;
    if shared {
        mode |= 0o020;
        if meta.is_dir() {
            mode |= 0o2070;
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .io_context(|| format!("setting the mode of {}", path.display()))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).io_context(|| format!("listing {}", path.display()))? {
            let entry = entry.io_context(|| format!("listing {}", path.display()))?;
            own_tree(&entry.path(), uid, gid, shared)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn user() -> User {
        User {
            name: "jovyan".into(),
            uid: 1000,
            gid: 100,
            home: None,
            owns: vec!["/opt/conda".into(), "/srv/new".into()],
        }
    }

    #[test]
    fn writes_the_docker_stacks_layout() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: setting owners needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        fs::create_dir_all(lower.join("etc/skel")).unwrap();
        fs::create_dir_all(lower.join("opt/conda/bin")).unwrap();
        fs::create_dir_all(lower.join("bin")).unwrap();
        fs::write(lower.join("bin/bash"), "").unwrap();
        fs::write(lower.join("opt/conda/bin/python"), "").unwrap();
        fs::write(
            lower.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n",
        )
        .unwrap();
        fs::write(lower.join("etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
        fs::write(lower.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        fs::write(lower.join("etc/skel/.bashrc"), "# bashrc\n").unwrap();
        let view = MergedView::new(vec![lower]);
        let staging = tmp.path().join("staging");
        fs::create_dir_all(&staging).unwrap();
        apply(&view, &user(), &staging).unwrap();
        let passwd = fs::read_to_string(staging.join("etc/passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n"
        );
        assert!(
            !staging.join("etc/group").exists(),
            "gid 100 exists already"
        );
        assert!(fs::read_to_string(staging.join("etc/shadow"))
            .unwrap()
            .contains("jovyan:!:"));
        let home = fs::metadata(staging.join("home/jovyan")).unwrap();
        assert_eq!(
            (home.uid(), home.gid(), home.mode() & 0o7777),
            (1000, 100, 0o2775)
        );
        assert_eq!(
            fs::metadata(staging.join("home/jovyan/.bashrc"))
                .unwrap()
                .uid(),
            1000
        );
        let conda = fs::metadata(staging.join("opt/conda/bin")).unwrap();
        assert_eq!((conda.uid(), conda.mode() & 0o2070), (1000, 0o2070));
        let py = fs::metadata(staging.join("opt/conda/bin/python")).unwrap();
        assert_eq!((py.uid(), py.gid(), py.mode() & 0o020), (1000, 100, 0o020));
        assert!(staging.join("srv/new").is_dir());
        // Another name on uid 1000 is an error that says so.
        let tmp2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp2.path().join("etc")).unwrap();
        fs::write(
            tmp2.path().join("etc/passwd"),
            "ubuntu:x:1000:1000::/home/ubuntu:/bin/sh\n",
        )
        .unwrap();
        let view = MergedView::new(vec![tmp2.path().to_path_buf()]);
        let e = apply(&view, &user(), &tmp2.path().join("s"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uid 1000 already belongs to \"ubuntu\""), "{e}");
    }
}
