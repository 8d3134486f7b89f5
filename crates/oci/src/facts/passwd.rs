//! The image's users and groups (`/etc/passwd`, `/etc/group`), and how a `User` of an image
//! config or a step (`uid`, `uid:gid`, `name`, `name:group`) resolves against them, the way
//! Docker resolves it: a numeric user needs no passwd entry (it then runs with gid 0 and home
//! `/`); a user with an entry gets its primary group and, as supplementary groups, every
//! group that lists it by name; an empty user is uid 0.

use super::FactError;
use crate::fsview::{FileView, FsViewError};
use crate::text::Quoted;

pub const PASSWD: &str = "etc/passwd";
pub const GROUP: &str = "etc/group";

/// A line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// A line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The entries of a passwd file: lines of seven fields with numeric uid and gid (others are
/// skipped, as the C library skips them).
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// The entries of a group file: lines of four fields with a numeric gid.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// The image's `/etc/passwd` entries (none when it has no such file).
pub fn read_passwd(view: &impl FileView) -> Result<Vec<PasswdEntry>, FsViewError> {
    Ok(parse_passwd(&view.read_text(PASSWD)?.unwrap_or_default()))
}

/// The image's `/etc/group` entries (none when it has no such file).
pub fn read_group(view: &impl FileView) -> Result<Vec<GroupEntry>, FsViewError> {
    Ok(parse_group(&view.read_text(GROUP)?.unwrap_or_default()))
}

/// What a user spec resolves to, with the parts the files do not define left unknown (for a
/// reader that reports them rather than fails).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLookup {
    /// `None`: a name that is not in passwd (`root` is uid 0 even then).
    pub uid: Option<u32>,
    /// `None`: a group name that is not in group.
    pub gid: Option<u32>,
    /// The passwd entry of the user, if it has one.
    pub entry: Option<PasswdEntry>,
    /// Groups listing the user by name, other than `gid`, sorted.
    pub additional_gids: Vec<u32>,
    /// The entry's home; else `/root` for uid 0 and `/` for others.
    pub home: String,
}

/// A user resolved completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// Why a user spec does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error(
        "user {} is not in the image's /etc/passwd; create it in an earlier step or give a \
         numeric uid",
        Quoted(.0)
    )]
    UnknownUser(String),
    #[error(
        "group {} is not in the image's /etc/group; create it in an earlier step or give a \
         numeric gid",
        Quoted(.0)
    )]
    UnknownGroup(String),
}

fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    }
}

/// Resolve `spec` as far as `passwd` and `groups` allow.
pub fn lookup_user(spec: &str, passwd: &[PasswdEntry], groups: &[GroupEntry]) -> UserLookup {
    let (u, g) = split_spec(spec);
    let numeric = u.parse::<u32>().ok();
    let entry = if u.is_empty() {
        passwd.iter().find(|e| e.uid == 0)
    } else if let Some(n) = numeric {
        passwd.iter().find(|e| e.uid == n)
    } else {
        passwd.iter().find(|e| e.name == u)
    };
    let uid = match (u, numeric, entry) {
        ("", _, _) => Some(0),
        (_, Some(n), _) => Some(n),
        (_, None, Some(e)) => Some(e.uid),
        // root without a passwd file
        ("root", None, None) => Some(0),
        (_, None, None) => None,
    };
    let gid = match g {
        Some(g) => g
            .parse::<u32>()
            .ok()
            .or_else(|| groups.iter().find(|x| x.name == g).map(|x| x.gid)),
        // Docker: a uid without a passwd entry runs with gid 0.
        None => Some(entry.map(|e| e.gid).unwrap_or(0)),
    };
    let mut additional_gids: Vec<u32> = match entry {
        Some(e) => groups
            .iter()
            .filter(|x| Some(x.gid) != gid && x.members.contains(&e.name))
            .map(|x| x.gid)
            .collect(),
        None => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    let home = match entry {
        Some(e) if !e.home.is_empty() => e.home.clone(),
        _ if uid == Some(0) => "/root".to_string(),
        _ => "/".to_string(),
    };
    UserLookup {
        uid,
        gid,
        entry: entry.cloned(),
        additional_gids,
        home,
    }
}

/// Resolve `spec` completely: a name that is not in passwd, or a group name not in group,
/// is an error.
pub fn resolve_user(
    spec: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, UserError> {
    let (u, g) = split_spec(spec);
    let found = lookup_user(spec, passwd, groups);
    let uid = found
        .uid
        .ok_or_else(|| UserError::UnknownUser(u.to_string()))?;
    let gid = found
        .gid
        .ok_or_else(|| UserError::UnknownGroup(g.unwrap_or_default().to_string()))?;
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: found.additional_gids,
        home: found.home,
    })
}

/// Read the image's passwd and group and resolve `spec` against them.
pub fn resolve_in(view: &impl FileView, spec: &str) -> Result<ResolvedUser, ResolveError> {
    let passwd = read_passwd(view).map_err(FactError::from)?;
    let groups = read_group(view).map_err(FactError::from)?;
    Ok(resolve_user(spec, &passwd, &groups)?)
}

/// Why [`resolve_in`] failed: the files could not be read, or the user is not in them.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    Read(#[from] FactError),
    #[error(transparent)]
    User(#[from] UserError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::testing::MemView;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        jovyan:x:1000:100::/home/jovyan:/bin/bash\n\
        short:x:5:5\n\
        bad:x:notanumber:5::/:/bin/sh\n";
    const GROUP_TEXT: &str =
        "root:x:0:\nusers:x:100:\nsudo:x:27:jovyan\naudio:x:29:daemon,jovyan\nstaff:x:50:jovyan\n";

    #[test]
    fn parses_entries() {
        let pw = parse_passwd(PASSWD_TEXT);
        assert_eq!(pw.len(), 3);
        assert_eq!(
            pw[2],
            PasswdEntry {
                name: "jovyan".into(),
                uid: 1000,
                gid: 100,
                gecos: String::new(),
                home: "/home/jovyan".into(),
                shell: "/bin/bash".into()
            }
        );
        let gr = parse_group(GROUP_TEXT);
        assert_eq!(gr[3].members, ["daemon", "jovyan"]);
        assert!(gr[0].members.is_empty());
    }

    #[test]
    fn resolves_like_docker() {
        let pw = parse_passwd(PASSWD_TEXT);
        let gr = parse_group(GROUP_TEXT);
        let r = |u: &str| resolve_user(u, &pw, &gr);
        assert_eq!(
            r("root").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                home: "/root".into()
            }
        );
        let j = r("jovyan").unwrap();
        assert_eq!((j.uid, j.gid, j.home.as_str()), (1000, 100, "/home/jovyan"));
        assert_eq!(j.additional_gids, [27, 29, 50]);
        assert_eq!(r("1000").unwrap(), j);
        assert_eq!(r("jovyan:sudo").unwrap().additional_gids, [29, 50]);
        assert_eq!(r("1000:27").unwrap().gid, 27);
        let unknown = r("4242").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        assert_eq!(r("").unwrap(), r("root").unwrap());
        assert_eq!(
            r("nobody-here").unwrap_err().to_string(),
            "user \"nobody-here\" is not in the image's /etc/passwd; create it in an earlier \
             step or give a numeric uid"
        );
        assert_eq!(
            r("jovyan:nogroup").unwrap_err(),
            UserError::UnknownGroup("nogroup".into())
        );
        assert_eq!(resolve_user("", &[], &[]).unwrap().home, "/root");
        assert_eq!(resolve_user("root", &[], &[]).unwrap().uid, 0);
        // Reporting instead of failing.
        let x = lookup_user("nobody:users", &pw, &gr);
        assert_eq!((x.uid, x.gid, x.entry), (None, Some(100), None));
        let y = lookup_user("jovyan:nogroup", &pw, &gr);
        assert_eq!((y.uid, y.gid), (Some(1000), None));
    }

    #[test]
    fn reads_from_a_view() {
        let view = MemView::with(&[(PASSWD, PASSWD_TEXT), (GROUP, GROUP_TEXT)]);
        assert_eq!(resolve_in(&view, "jovyan").unwrap().gid, 100);
        assert_eq!(read_group(&MemView::default()).unwrap(), []);
        assert!(matches!(
            resolve_in(&view, "ghost"),
            Err(ResolveError::User(UserError::UnknownUser(_)))
        ));
    }
}
