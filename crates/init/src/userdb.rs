//! /etc/passwd, /etc/group, /etc/shadow and /etc/gshadow, read and edited in process.
//!
//! No usermod/useradd/groupadd: minimal images may not have them, and their NSS-free
//! behaviour is easy to get exactly right here. Lines that are not entries (comments, NIS
//! `+` lines, anything unparsable) are kept verbatim. Writes go to a temporary file in the
//! same directory, then rename over the original (atomic); when the directory is not
//! writable (a non-root start may write the group-writable /etc/passwd but not create files
//! in /etc), the file is rewritten in place with a single write.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub password: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub password: String,
    pub gid: u32,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Line<T> {
    Entry(T),
    Other(String),
}

impl Passwd {
    fn parse(line: &str) -> Option<Passwd> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 || f[0].is_empty() || f[0].starts_with(['+', '-']) {
            return None;
        }
        Some(Passwd {
            name: f[0].into(),
            password: f[1].into(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            gecos: f[4].into(),
            home: f[5].into(),
            shell: f[6].into(),
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}:{}",
            self.name, self.password, self.uid, self.gid, self.gecos, self.home, self.shell
        )
    }
}

impl Group {
    fn parse(line: &str) -> Option<Group> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 || f[0].is_empty() || f[0].starts_with(['+', '-']) {
            return None;
        }
        Some(Group {
            name: f[0].into(),
            password: f[1].into(),
            gid: f[2].parse().ok()?,
            members: f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.name,
            self.password,
            self.gid,
            self.members.join(",")
        )
    }
}

/// A file of colon-separated records keyed by their first field (shadow, gshadow), kept as
/// text: only renames, member-list edits and additions are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keyed {
    lines: Vec<String>,
}

impl Keyed {
    fn key(line: &str) -> &str {
        line.split(':').next().unwrap_or("")
    }
    fn contains(&self, name: &str) -> bool {
        self.lines.iter().any(|l| Keyed::key(l) == name)
    }
    fn rename(&mut self, from: &str, to: &str) {
        for l in &mut self.lines {
            if Keyed::key(l) == from {
                *l = format!("{to}{}", &l[from.len()..]);
            }
        }
    }
    /// In gshadow, fields 3 and 4 (admins, members) are user lists.
    fn rename_member(&mut self, from: &str, to: &str) {
        for l in &mut self.lines {
            let mut f: Vec<String> = l.split(':').map(str::to_owned).collect();
            if f.len() != 4 {
                continue;
            }
            for i in [2, 3] {
                let list: Vec<String> = f[i]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(|m| {
                        if m == from {
                            to.to_owned()
                        } else {
                            m.to_owned()
                        }
                    })
                    .collect();
                f[i] = list.join(",");
            }
            *l = f.join(":");
        }
    }
    fn add_member(&mut self, group: &str, user: &str) {
        for l in &mut self.lines {
            let mut f: Vec<String> = l.split(':').map(str::to_owned).collect();
            if f.len() == 4 && f[0] == group && !f[3].split(',').any(|m| m == user) {
                if !f[3].is_empty() {
                    f[3].push(',');
                }
                f[3].push_str(user);
                *l = f.join(":");
            }
        }
    }
}

fn render_lines<T>(lines: &[Line<T>], r: impl Fn(&T) -> String) -> String {
    let mut s = String::new();
    for l in lines {
        match l {
            Line::Entry(e) => s.push_str(&r(e)),
            Line::Other(o) => s.push_str(o),
        }
        s.push('\n');
    }
    s
}

/// The user and group databases under a root directory (`/` in a container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDb {
    root: PathBuf,
    passwd: Vec<Line<Passwd>>,
    group: Vec<Line<Group>>,
    shadow: Option<Keyed>,
    gshadow: Option<Keyed>,
    original: [Option<String>; 4],
}

const FILES: [&str; 4] = ["etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"];

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // shadow files are unreadable to a non-root start: treat as absent, never written.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(None),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

impl UserDb {
    pub fn load(root: &Path) -> Result<UserDb> {
        let texts: Vec<Option<String>> = FILES
            .iter()
            .map(|f| read_optional(&root.join(f)))
            .collect::<Result<_>>()?;
        let passwd_text = texts[0].clone().ok_or_else(|| {
            Error::io(
                "reading",
                root.join(FILES[0]),
                std::io::ErrorKind::NotFound.into(),
            )
        })?;
        let passwd = passwd_text
            .lines()
            .map(|l| Passwd::parse(l).map_or_else(|| Line::Other(l.to_owned()), Line::Entry))
            .collect();
        let group = texts[1]
            .as_deref()
            .unwrap_or("")
            .lines()
            .map(|l| Group::parse(l).map_or_else(|| Line::Other(l.to_owned()), Line::Entry))
            .collect();
        let keyed = |t: &Option<String>| {
            t.as_ref().map(|t| Keyed {
                lines: t.lines().map(str::to_owned).collect(),
            })
        };
        Ok(UserDb {
            root: root.to_owned(),
            shadow: keyed(&texts[2]),
            gshadow: keyed(&texts[3]),
            passwd,
            group,
            original: [
                texts[0].clone(),
                texts[1].clone(),
                texts[2].clone(),
                texts[3].clone(),
            ],
        })
    }

    pub fn users(&self) -> impl Iterator<Item = &Passwd> {
        self.passwd.iter().filter_map(|l| match l {
            Line::Entry(e) => Some(e),
            Line::Other(_) => None,
        })
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.group.iter().filter_map(|l| match l {
            Line::Entry(e) => Some(e),
            Line::Other(_) => None,
        })
    }

    pub fn user(&self, name: &str) -> Option<&Passwd> {
        self.users().find(|u| u.name == name)
    }

    pub fn user_by_uid(&self, uid: u32) -> Option<&Passwd> {
        self.users().find(|u| u.uid == uid)
    }

    pub fn group_by_gid(&self, gid: u32) -> Option<&Group> {
        self.groups().find(|g| g.gid == gid)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups().find(|g| g.name == name)
    }

    fn user_mut(&mut self, name: &str) -> Option<&mut Passwd> {
        self.passwd.iter_mut().find_map(|l| match l {
            Line::Entry(e) if e.name == name => Some(e),
            _ => None,
        })
    }

    /// Supplementary groups of a user: the primary gid first, then every group listing it.
    pub fn group_ids_of(&self, name: &str, primary: u32) -> Vec<u32> {
        let mut ids = vec![primary];
        for g in self.groups() {
            if g.members.iter().any(|m| m == name) && !ids.contains(&g.gid) {
                ids.push(g.gid);
            }
        }
        ids
    }

    /// Rename a user (passwd, shadow, group member lists, gshadow lists).
    pub fn rename_user(&mut self, from: &str, to: &str) {
        if let Some(u) = self.user_mut(from) {
            u.name = to.to_owned();
        }
        if let Some(s) = &mut self.shadow {
            s.rename(from, to);
        }
        for l in &mut self.group {
            if let Line::Entry(g) = l {
                for m in &mut g.members {
                    if m == from {
                        *m = to.to_owned();
                    }
                }
            }
        }
        if let Some(s) = &mut self.gshadow {
            s.rename_member(from, to);
        }
    }

    pub fn set_user_fields(&mut self, name: &str, f: impl FnOnce(&mut Passwd)) -> bool {
        match self.user_mut(name) {
            Some(u) => {
                f(u);
                true
            }
            None => false,
        }
    }

    /// Add a group unless one with that name exists (groupadd --force --non-unique).
    /// Returns whether a group was added.
    pub fn ensure_group(&mut self, name: &str, gid: u32) -> bool {
        if self.group_by_name(name).is_some() {
            return false;
        }
        self.group.push(Line::Entry(Group {
            name: name.to_owned(),
            password: "x".into(),
            gid,
            members: Vec::new(),
        }));
        if let Some(s) = &mut self.gshadow {
            if !s.contains(name) {
                s.lines.push(format!("{name}:!::"));
            }
        }
        true
    }

    /// Make `user` a member of the group with `gid` (if such a group exists).
    pub fn add_member(&mut self, gid: u32, user: &str) -> bool {
        let mut name = None;
        for l in &mut self.group {
            if let Line::Entry(g) = l {
                if g.gid == gid {
                    if !g.members.iter().any(|m| m == user) {
                        g.members.push(user.to_owned());
                    }
                    name = Some(g.name.clone());
                    break;
                }
            }
        }
        match name {
            Some(n) => {
                if let Some(s) = &mut self.gshadow {
                    s.add_member(&n, user);
                }
                true
            }
            None => false,
        }
    }

    /// Append a user entry (with a locked shadow entry when /etc/shadow is in use).
    pub fn add_user(&mut self, p: Passwd) {
        if let Some(s) = &mut self.shadow {
            if !s.contains(&p.name) {
                s.lines.push(format!("{}:!:19000:0:99999:7:::", p.name));
            }
        }
        self.passwd.push(Line::Entry(p));
    }

    pub fn passwd_text(&self) -> String {
        render_lines(&self.passwd, Passwd::render)
    }
    pub fn group_text(&self) -> String {
        render_lines(&self.group, Group::render)
    }

    /// Write back the files that changed.
    pub fn save(&self) -> Result<()> {
        let texts = [
            Some(self.passwd_text()),
            self.original[1].as_ref().map(|_| self.group_text()),
            self.shadow
                .as_ref()
                .map(|s| s.lines.iter().map(|l| format!("{l}\n")).collect()),
            self.gshadow
                .as_ref()
                .map(|s| s.lines.iter().map(|l| format!("{l}\n")).collect()),
        ];
        for (i, text) in texts.iter().enumerate() {
            let Some(text) = text else { continue };
            // group may not have existed but gained entries: still write it.
            let changed = match &self.original[i] {
                Some(orig) => normalise(orig) != *text,
                None => i == 1 && !text.is_empty(),
            };
            if changed {
                write_file_atomic(&self.root.join(FILES[i]), text.as_bytes())?;
            }
        }
        Ok(())
    }
}

fn normalise(s: &str) -> String {
    s.lines().map(|l| format!("{l}\n")).collect()
}

/// Replace `path` with `bytes`: temporary file + rename, keeping mode and owner; falls back to
/// an in-place rewrite when the directory is not writable.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let meta = fs::metadata(path).ok();
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.nbrt-init.{}", std::process::id()));
    let attempt = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if let Some(m) = &meta {
            f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
            // Keep the owner and group (e.g. /etc/shadow root:shadow 640).
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid())) {
                if e.kind() != std::io::ErrorKind::PermissionDenied {
                    return Err(e);
                }
            }
        }
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    match attempt {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| Error::io("writing", path, e))?;
            f.write_all(bytes)
                .map_err(|e| Error::io("writing", path, e))?;
            Ok(())
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(Error::io("writing", path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\n# a comment\njovyan:x:1000:100::/home/jovyan:/bin/bash\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nusers:x:100:\nsudo:x:27:jovyan,other\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/shadow"),
            "root:*:19000:0:99999:7:::\njovyan:!:19000:0:99999:7:::\n",
        )
        .unwrap();
        fs::write(
            d.path().join("etc/gshadow"),
            "root:*::\nusers:*::\nsudo:*:jovyan:jovyan,other\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn parse_and_query() {
        let d = fake_root();
        let db = UserDb::load(d.path()).unwrap();
        let j = db.user("jovyan").unwrap();
        assert_eq!((j.uid, j.gid, j.home.as_str()), (1000, 100, "/home/jovyan"));
        assert_eq!(db.user_by_uid(0).unwrap().name, "root");
        assert_eq!(db.group_by_gid(100).unwrap().name, "users");
        assert_eq!(db.group_ids_of("jovyan", 100), vec![100, 27]);
    }

    #[test]
    fn unchanged_db_writes_nothing() {
        let d = fake_root();
        let before = fs::metadata(d.path().join("etc/passwd"))
            .unwrap()
            .modified()
            .unwrap();
        UserDb::load(d.path()).unwrap().save().unwrap();
        assert_eq!(
            fs::metadata(d.path().join("etc/passwd"))
                .unwrap()
                .modified()
                .unwrap(),
            before
        );
    }

    #[test]
    fn rename_and_change_ids_round_trip() {
        let d = fake_root();
        let mut db = UserDb::load(d.path()).unwrap();
        db.rename_user("jovyan", "alice");
        assert!(db.ensure_group("lab", 2345));
        assert!(!db.ensure_group("lab", 9), "existing name is kept");
        db.set_user_fields("alice", |u| {
            u.uid = 1234;
            u.gid = 2345;
            u.home = "/home/alice".into();
        });
        assert!(db.add_member(100, "alice"));
        db.save().unwrap();

        let passwd = fs::read_to_string(d.path().join("etc/passwd")).unwrap();
        assert_eq!(
            passwd,
            "root:x:0:0:root:/root:/bin/bash\n# a comment\nalice:x:1234:2345::/home/alice:/bin/bash\n"
        );
        let group = fs::read_to_string(d.path().join("etc/group")).unwrap();
        assert_eq!(
            group,
            "root:x:0:\nusers:x:100:alice\nsudo:x:27:alice,other\nlab:x:2345:\n"
        );
        let shadow = fs::read_to_string(d.path().join("etc/shadow")).unwrap();
        assert!(shadow.contains("\nalice:!:19000") && !shadow.contains("jovyan"));
        let gshadow = fs::read_to_string(d.path().join("etc/gshadow")).unwrap();
        assert_eq!(
            gshadow,
            "root:*::\nusers:*::alice\nsudo:*:alice:alice,other\nlab:!::\n"
        );

        let db = UserDb::load(d.path()).unwrap();
        assert_eq!(db.group_ids_of("alice", 2345), vec![2345, 100, 27]);
    }

    #[test]
    fn add_user_adds_shadow_entry() {
        let d = fake_root();
        let mut db = UserDb::load(d.path()).unwrap();
        db.rename_user("jovyan", "nayvoj");
        db.add_user(Passwd {
            name: "jovyan".into(),
            password: "x".into(),
            uid: 4321,
            gid: 0,
            gecos: ",,,".into(),
            home: "/home/jovyan".into(),
            shell: "/bin/bash".into(),
        });
        db.save().unwrap();
        let passwd = fs::read_to_string(d.path().join("etc/passwd")).unwrap();
        assert!(passwd.contains("nayvoj:x:1000:100::/home/jovyan:/bin/bash\njovyan:x:4321:0:,,,:/home/jovyan:/bin/bash\n"));
    }

    #[test]
    fn atomic_write_keeps_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, "old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_file_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }

    #[test]
    fn malformed_lines_are_kept() {
        let d = fake_root();
        fs::write(
            d.path().join("etc/passwd"),
            "+::::::\nbroken\njovyan:x:1000:100::/home/jovyan:/bin/bash\n",
        )
        .unwrap();
        let mut db = UserDb::load(d.path()).unwrap();
        db.rename_user("jovyan", "bob");
        assert_eq!(
            db.passwd_text(),
            "+::::::\nbroken\nbob:x:1000:100::/home/jovyan:/bin/bash\n"
        );
    }
}
