//! What the checks need to know about an image, read once from its config and file view:
//! the user it runs as, its environment, its programs and its Python environments.

use std::collections::BTreeMap;

use nbrt_oci::facts::passwd::{self, PasswdEntry};
use nbrt_oci::Image;

pub use nbrt_oci::facts::passwd::{parse_group, parse_passwd, GroupEntry};

use crate::index::Kind;
use crate::packages::{python::normalize, Package, Source};
use crate::view::View;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A line of `/etc/passwd` (the shared reader's).
pub type PwEntry = PasswdEntry;

/// The user the image runs as (config `User`, resolved through `/etc/passwd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunUser {
    /// `User` as written in the config ("" = root).
    pub spec: String,
    /// `None` when a name in `User` is not in `/etc/passwd`.
    pub uid: Option<u32>,
    /// `None` when a group name in `User` is not in `/etc/group`.
    pub gid: Option<u32>,
    pub entry: Option<PwEntry>,
    /// Supplementary groups from `/etc/group` (those listing the user, but its primary one).
    pub groups: Vec<u32>,
}

/// A Python environment reachable from `PATH`.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    /// The command name found (`python`, `python3`).
    pub command: String,
    /// Where it was found on `PATH` (`/opt/conda/bin/python`).
    pub path: String,
    /// The environment prefix (`/opt/conda`): the directory above `bin`.
    pub prefix: String,
}

pub struct Facts<'a> {
    pub image: &'a Image,
    pub view: &'a View,
    pub packages: &'a [Package],
    pub env: BTreeMap<String, String>,
    pub passwd: Vec<PwEntry>,
    pub groups: Vec<GroupEntry>,
    pub user: RunUser,
}

impl<'a> Facts<'a> {
    pub fn new(image: &'a Image, view: &'a View, packages: &'a [Package]) -> Self {
        let cfg = image.config.value().config.clone().unwrap_or_default();
        let env: BTreeMap<String, String> = cfg
            .env
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // Not there, or not captured: no users.
        let passwd = passwd::read_passwd(view).unwrap_or_default();
        let groups = passwd::read_group(view).unwrap_or_default();
        let spec = cfg.user.unwrap_or_default();
        let user = resolve_user(&spec, &passwd, &groups);
        Self {
            image,
            view,
            packages,
            env,
            passwd,
            groups,
            user,
        }
    }

    pub fn config(&self) -> nbrt_oci::spec::ContainerConfig {
        self.image.config.value().config.clone().unwrap_or_default()
    }

    /// How the image's server is reached over HTTP (its `[runtime]` label; a Jupyter server
    /// under its prefix without one, or with one that cannot be read).
    pub fn http(&self) -> nbrt_oci::label::HttpContract {
        nbrt_oci::label::RuntimeDefaults::http_of(&self.image.labels()).unwrap_or_default()
    }

    /// The command the container runs: entrypoint followed by cmd.
    pub fn command(&self) -> Vec<String> {
        let c = self.config();
        let mut out = c.entrypoint.unwrap_or_default();
        out.extend(c.cmd.unwrap_or_default());
        out
    }

    pub fn path_dirs(&self) -> Vec<String> {
        self.env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Where `program` is found: itself if it has a `/`, else the first `PATH` directory
    /// holding an executable file of that name (symlinks followed).
    pub fn which(&self, program: &str) -> Option<String> {
        if program.contains('/') {
            return self.is_executable(program).then(|| program.to_string());
        }
        self.path_dirs()
            .into_iter()
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .find(|p| self.is_executable(p))
    }

    pub fn is_executable(&self, path: &str) -> bool {
        self.view.lookup(path).is_some_and(|(_, e)| {
            matches!(e.meta.kind, Kind::File | Kind::Hardlink) && e.meta.mode & 0o111 != 0
        })
    }

    pub fn is_dir(&self, path: &str) -> bool {
        match self.view.lookup(path) {
            Some((_, e)) => e.meta.kind == Kind::Dir,
            None => self.view.exists(path),
        }
    }

    /// Whether user `uid` (primary `gid`, supplementary `groups`) may write `path`.
    pub fn writable(&self, path: &str, uid: u32, gid: u32, groups: &[u32]) -> bool {
        if uid == 0 {
            return true;
        }
        let Some((_, e)) = self.view.lookup(path) else {
            return false;
        };
        let m = e.meta.mode;
        let in_group = |g: u32| e.meta.gid == u64::from(g);
        (e.meta.uid == u64::from(uid) && m & 0o200 != 0)
            || ((in_group(gid) || groups.iter().any(|g| in_group(*g))) && m & 0o020 != 0)
            || m & 0o002 != 0
    }

    /// Whether the run user may write `path`.
    pub fn user_writable(&self, path: &str) -> bool {
        match (self.user.uid, self.user.gid) {
            (Some(u), Some(g)) => self.writable(path, u, g, &self.user.groups),
            _ => false,
        }
    }

    /// The Python `command` on PATH and its environment.
    pub fn python(&self, command: &str) -> Option<PythonEnv> {
        let path = self.which(command)?;
        let prefix = path
            .rsplit_once("/bin/")
            .map(|(p, _)| p.to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        Some(PythonEnv {
            command: command.to_string(),
            path,
            prefix,
        })
    }

    /// The first of `python`, `python3` on PATH.
    pub fn any_python(&self) -> Option<PythonEnv> {
        self.python("python").or_else(|| self.python("python3"))
    }

    /// A package (conda or Python distribution, by normalized name) in an environment.
    pub fn env_package(&self, env: &PythonEnv, name: &str) -> Option<&Package> {
        let want = normalize(name);
        let prefix = if env.prefix == "/" {
            "/usr".to_string()
        } else {
            env.prefix.clone()
        };
        self.packages.iter().find(|p| {
            matches!(p.source, Source::Pypi | Source::Conda)
                && p.location == prefix
                && normalize(&p.name) == want
        })
    }

    /// A Debian package by name.
    pub fn deb(&self, name: &str) -> Option<&Package> {
        self.packages
            .iter()
            .find(|p| p.source == Source::Debian && p.name == name)
    }
}

/// The run user by the shared reader's rules (Docker's); what passwd and group do not
/// define is left unknown.
fn resolve_user(spec: &str, passwd: &[PwEntry], groups: &[GroupEntry]) -> RunUser {
    let found = passwd::lookup_user(spec, passwd, groups);
    RunUser {
        spec: spec.to_string(),
        uid: found.uid,
        gid: found.gid,
        entry: found.entry,
        groups: found.additional_gids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let pw = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n",
        );
        let gr = parse_group("root:x:0:\nusers:x:100:\nstaff:x:50:jovyan\n");
        let u = resolve_user("1000", &pw, &gr);
        assert_eq!((u.uid, u.gid), (Some(1000), Some(100)));
        assert_eq!(u.groups, [50]);
        let r = resolve_user("", &pw, &gr);
        assert_eq!((r.uid, r.gid), (Some(0), Some(0)));
        let n = resolve_user("jovyan:users", &pw, &gr);
        assert_eq!((n.uid, n.gid), (Some(1000), Some(100)));
        let x = resolve_user("nobody", &pw, &gr);
        assert_eq!(x.uid, None);
        let y = resolve_user("2000", &pw, &gr);
        assert_eq!((y.uid, y.gid, y.entry), (Some(2000), Some(0), None));
    }
}
