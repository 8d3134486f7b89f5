//! The environment nbrt-init works on, and the settings read from it.
//!
//! Hooks may change the environment (a sourced `.sh` hook's exports reach the server), so the
//! environment is a value that the start sequence threads through, and settings are parsed
//! from it at the point where docker-stacks' scripts would read them: user settings after
//! `start-notebook.d`, server settings after `before-notebook.d`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// An environment: names to values, byte-exact (values need not be UTF-8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<OsString, OsString>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os().collect(),
        }
    }

    pub fn from_pairs<K: Into<OsString>, V: Into<OsString>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value as text (lossy for non-UTF-8 bytes), if set.
    pub fn get(&self, name: &str) -> Option<String> {
        self.vars
            .get(OsStr::new(name))
            .map(|v| v.to_string_lossy().into_owned())
    }

    pub fn get_os(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(name)).map(|v| v.as_os_str())
    }

    /// Set and non-empty.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.vars.contains_key(OsStr::new(name))
    }

    pub fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        self.vars.insert(name.into(), value.into());
    }

    pub fn remove(&mut self, name: &str) {
        self.vars.remove(OsStr::new(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    /// Parse an environment dump: `NAME=VALUE` records separated by NUL bytes.
    pub fn from_nul_records(bytes: &[u8]) -> Env {
        let vars = bytes
            .split(|b| *b == 0)
            .filter(|r| !r.is_empty())
            .filter_map(|r| {
                let eq = r.iter().position(|b| *b == b'=')?;
                if eq == 0 {
                    return None;
                }
                Some((
                    OsStr::from_bytes(&r[..eq]).to_owned(),
                    OsStr::from_bytes(&r[eq + 1..]).to_owned(),
                ))
            })
            .collect();
        Env { vars }
    }

    /// Unset the comma-separated names in `JUPYTER_ENV_VARS_TO_UNSET`, then that variable.
    /// Returns the names unset.
    pub fn apply_unset_list(&mut self) -> Vec<String> {
        let names: Vec<String> = self
            .get("JUPYTER_ENV_VARS_TO_UNSET")
            .map(|l| split_list(&l))
            .unwrap_or_default();
        for n in &names {
            self.remove(n);
        }
        self.remove("JUPYTER_ENV_VARS_TO_UNSET");
        names
    }
}

/// A comma-separated list, blanks trimmed, empty items dropped.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// docker-stacks' `1` or `yes` switches (CHOWN_HOME, GRANT_SUDO).
pub fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("1") | Some("yes"))
}

fn parse_id(env: &Env, name: &'static str) -> Result<Option<u32>> {
    match env.get(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|_| Error::BadEnv {
                name,
                value: v.clone(),
                reason: "expected a non-negative integer".into(),
            }),
    }
}

/// Extra options for chown (`CHOWN_HOME_OPTS`, `CHOWN_EXTRA_OPTS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChownOpts {
    pub recursive: bool,
}

impl ChownOpts {
    pub fn parse(name: &'static str, value: Option<&str>) -> Result<ChownOpts> {
        let mut o = ChownOpts::default();
        for word in value.unwrap_or("").split_whitespace() {
            match word {
                "-R" | "--recursive" => o.recursive = true,
                // Symbolic links are never followed inside a tree (chown -R's default -P).
                "-P" | "-h" | "--no-dereference" => {}
                other => {
                    return Err(Error::BadEnv {
                        name,
                        value: value.unwrap_or("").to_owned(),
                        reason: format!(
                            "unsupported option {other:?} (supported: -R, --recursive)"
                        ),
                    })
                }
            }
        }
        Ok(o)
    }
}

/// Settings about the user, read after the `start-notebook.d` hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub nb_user: String,
    pub nb_uid: Option<u32>,
    pub nb_gid: Option<u32>,
    pub nb_group: Option<String>,
    pub chown_home: bool,
    pub chown_home_opts: ChownOpts,
    pub chown_extra: Vec<PathBuf>,
    pub chown_extra_opts: ChownOpts,
    pub grant_sudo: bool,
    pub conda_dir: PathBuf,
    /// Where missing home entries are copied from (Kubeflow: an empty volume on the home).
    pub home_skel: Vec<PathBuf>,
}

/// The default location of the image's home skeleton.
pub const DEFAULT_HOME_SKEL: &str = "/usr/local/share/nbrt/home-skel";

impl UserSettings {
    pub fn from_env(env: &Env) -> Result<UserSettings> {
        let nb_user = env.non_empty("NB_USER").unwrap_or_else(|| "jovyan".into());
        if !valid_user_name(&nb_user) {
            return Err(Error::BadEnv {
                name: "NB_USER",
                value: nb_user,
                reason:
                    "not a valid user name (letters, digits, '.', '_', '-'; not starting with '-')"
                        .into(),
            });
        }
        let nb_group = env.non_empty("NB_GROUP");
        if let Some(g) = &nb_group {
            if !valid_user_name(g) {
                return Err(Error::BadEnv {
                    name: "NB_GROUP",
                    value: g.clone(),
                    reason: "not a valid group name".into(),
                });
            }
        }
        let home_skel = match env.non_empty("NBRT_HOME_SKEL") {
            Some(v) => v
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => {
                let mut v = vec![PathBuf::from(DEFAULT_HOME_SKEL)];
                // Kubeflow's example images keep the skeleton in $HOME_TMP.
                if let Some(t) = env.non_empty("HOME_TMP") {
                    v.push(PathBuf::from(t));
                }
                v
            }
        };
        Ok(UserSettings {
            nb_uid: parse_id(env, "NB_UID")?,
            nb_gid: parse_id(env, "NB_GID")?,
            nb_group,
            chown_home: truthy(env.get("CHOWN_HOME").as_deref()),
            chown_home_opts: ChownOpts::parse(
                "CHOWN_HOME_OPTS",
                env.get("CHOWN_HOME_OPTS").as_deref(),
            )?,
            chown_extra: env
                .get("CHOWN_EXTRA")
                .map(|l| split_list(&l).into_iter().map(PathBuf::from).collect())
                .unwrap_or_default(),
            chown_extra_opts: ChownOpts::parse(
                "CHOWN_EXTRA_OPTS",
                env.get("CHOWN_EXTRA_OPTS").as_deref(),
            )?,
            grant_sudo: truthy(env.get("GRANT_SUDO").as_deref()),
            conda_dir: PathBuf::from(
                env.non_empty("CONDA_DIR")
                    .unwrap_or_else(|| "/opt/conda".into()),
            ),
            home_skel,
            nb_user,
        })
    }

    /// docker-stacks' "rootless" triplet: NB_USER=root, NB_UID=0, NB_GID=0.
    pub fn is_root_triplet(&self) -> bool {
        self.nb_user == "root" && self.nb_uid == Some(0) && self.nb_gid == Some(0)
    }
}

/// A name safe to put in /etc/passwd and a path under /home.
pub fn valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('-')
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'$'))
}

/// How the server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Jupyter's own token (random unless JUPYTER_TOKEN is set) — the default.
    Token,
    /// No authentication in the container: only behind a platform that authenticates.
    None,
}

/// Settings about the server, read after the `before-notebook.d` hooks. nbrt-init checks
/// them and logs what they mean; the server itself takes the image's defaults (address, base
/// URL from `NB_PREFIX`, CORS from `NBRT_CORS_ORIGIN`, the authentication mode below) from
/// `/etc/jupyter/jupyter_server_config.py` (`stacks/jupyter`), which reads the same variables
/// with the same rules, and `JUPYTER_PORT` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub jupyter_cmd: String,
    pub notebook_args: Vec<String>,
    pub port: Option<u16>,
    pub base_url: Option<String>,
    pub gen_cert: bool,
    pub umask: Option<u32>,
    pub restartable: bool,
    pub hub: bool,
    pub auth: Auth,
    /// Why `auth` was chosen, for the log.
    pub auth_reason: &'static str,
}

impl ServerSettings {
    pub fn from_env(env: &Env) -> Result<ServerSettings> {
        let notebook_args = match env.get("NOTEBOOK_ARGS") {
            Some(a) => shell_split(&a).map_err(|reason| Error::BadEnv {
                name: "NOTEBOOK_ARGS",
                value: a.clone(),
                reason,
            })?,
            None => Vec::new(),
        };
        let port =
            match env.non_empty("JUPYTER_PORT") {
                None => None,
                Some(p) => Some(p.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(
                    || Error::BadEnv {
                        name: "JUPYTER_PORT",
                        value: p.clone(),
                        reason: "expected a TCP port number (1-65535)".into(),
                    },
                )?),
            };
        let umask = match env.get("NB_UMASK") {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m.trim(), 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| Error::BadEnv {
                        name: "NB_UMASK",
                        value: m.clone(),
                        reason: "expected an octal umask such as 002 or 0022".into(),
                    })?,
            ),
        };
        let base_url = env.non_empty("NB_PREFIX");
        let kubernetes = env.non_empty("KUBERNETES_SERVICE_HOST").is_some();
        let (auth, auth_reason) = match env.non_empty("NBRT_AUTH").as_deref() {
            Some("token") => (Auth::Token, "NBRT_AUTH=token"),
            Some("none") => (Auth::None, "NBRT_AUTH=none"),
            Some(other) => {
                return Err(Error::BadEnv {
                    name: "NBRT_AUTH",
                    value: other.to_owned(),
                    reason: "expected token or none".into(),
                })
            }
            // Same rule in stacks/jupyter/jupyter_server_config.py.
            None if base_url.is_some() && kubernetes => (
                Auth::None,
                "Kubeflow (NB_PREFIX set on Kubernetes): the gateway in front authenticates",
            ),
            None => (Auth::Token, "default"),
        };
        Ok(ServerSettings {
            jupyter_cmd: env
                .non_empty("DOCKER_STACKS_JUPYTER_CMD")
                .unwrap_or_else(|| "lab".into()),
            notebook_args,
            port,
            base_url,
            gen_cert: env.contains("GEN_CERT"),
            umask,
            restartable: env.get("RESTARTABLE").as_deref() == Some("yes"),
            hub: env.contains("JUPYTERHUB_API_TOKEN"),
            auth,
            auth_reason,
        })
    }
}

/// Split like a POSIX shell (Python's `shlex.split`): blanks separate words, single quotes
/// keep everything, double quotes keep everything but `\"`, `\\`, `\$`, `` \` ``, a backslash
/// outside quotes escapes the next character. No expansion of any kind.
pub fn shell_split(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Words joined by single spaces, unquoted, as docker-stacks' scripts print a command
/// (`"$*"` in start.sh, `" ".join(command)` in start-notebook.py).
pub fn plain_join<S: AsRef<OsStr>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| w.as_ref().to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quote words for a log line the way a shell would read them back.
pub fn shell_join<S: AsRef<OsStr>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| {
            let w = w.as_ref().to_string_lossy();
            if !w.is_empty()
                && w.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(
                            b,
                            b'-' | b'_' | b'.' | b'/' | b'=' | b':' | b',' | b'+' | b'@' | b'%'
                        )
                })
            {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn split_like_shlex() {
        assert_eq!(shell_split("").unwrap(), Vec::<String>::new());
        assert_eq!(
            shell_split(r#" --a=1  --b='x y' "c \"d\"" e\ f '' "#).unwrap(),
            vec!["--a=1", "--b=x y", "c \"d\"", "e f", ""]
        );
        assert_eq!(shell_split(r#"--x="a\nb""#).unwrap(), vec!["--x=a\\nb"]);
        assert!(shell_split("'open").is_err());
        assert!(shell_split("\"open").is_err());
        assert!(shell_split("end\\").is_err());
    }

    #[test]
    fn join_quotes_what_needs_it() {
        assert_eq!(
            shell_join(&["jupyter", "lab", "--x=a b", "it's", ""]),
            "jupyter lab '--x=a b' 'it'\\''s' ''"
        );
    }

    #[test]
    fn switches() {
        assert!(truthy(Some("1")) && truthy(Some("yes")));
        assert!(
            !truthy(Some("true")) && !truthy(Some("YES")) && !truthy(Some("")) && !truthy(None)
        );
    }

    #[test]
    fn user_settings_defaults_and_values() {
        let u = UserSettings::from_env(&env(&[])).unwrap();
        assert_eq!(u.nb_user, "jovyan");
        assert_eq!((u.nb_uid, u.nb_gid), (None, None));
        assert!(!u.chown_home && !u.grant_sudo);
        assert_eq!(u.conda_dir, PathBuf::from("/opt/conda"));
        assert_eq!(u.home_skel, vec![PathBuf::from(DEFAULT_HOME_SKEL)]);

        let u = UserSettings::from_env(&env(&[
            ("NB_USER", "alice"),
            ("NB_UID", " 1234 "),
            ("NB_GID", "2345"),
            ("NB_GROUP", "lab"),
            ("CHOWN_HOME", "yes"),
            ("CHOWN_HOME_OPTS", "-R"),
            ("CHOWN_EXTRA", "/data, /opt/x,,"),
            ("GRANT_SUDO", "1"),
            ("HOME_TMP", "/tmp_home/jovyan"),
        ]))
        .unwrap();
        assert_eq!(u.nb_user, "alice");
        assert_eq!((u.nb_uid, u.nb_gid), (Some(1234), Some(2345)));
        assert_eq!(u.nb_group.as_deref(), Some("lab"));
        assert!(u.chown_home && u.chown_home_opts.recursive && u.grant_sudo);
        assert_eq!(
            u.chown_extra,
            vec![PathBuf::from("/data"), PathBuf::from("/opt/x")]
        );
        assert!(!u.chown_extra_opts.recursive);
        assert_eq!(u.home_skel.len(), 2);
    }

    #[test]
    fn user_settings_reject_bad_input() {
        for (k, v) in [
            ("NB_UID", "abc"),
            ("NB_GID", "-1"),
            ("NB_USER", "../etc"),
            ("NB_USER", "a:b"),
            ("NB_GROUP", "x y"),
            ("CHOWN_HOME_OPTS", "--from=0"),
        ] {
            let e = UserSettings::from_env(&env(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn root_triplet() {
        let u = UserSettings::from_env(&env(&[
            ("NB_USER", "root"),
            ("NB_UID", "0"),
            ("NB_GID", "0"),
        ]))
        .unwrap();
        assert!(u.is_root_triplet());
        let u = UserSettings::from_env(&env(&[("NB_USER", "root"), ("NB_UID", "0")])).unwrap();
        assert!(!u.is_root_triplet());
    }

    #[test]
    fn server_settings() {
        let s = ServerSettings::from_env(&env(&[])).unwrap();
        assert_eq!(s.jupyter_cmd, "lab");
        assert_eq!(s.port, None);
        assert!(!s.gen_cert && !s.restartable && !s.hub);
        assert_eq!(s.auth, Auth::Token);

        let s = ServerSettings::from_env(&env(&[
            ("DOCKER_STACKS_JUPYTER_CMD", "server"),
            ("NOTEBOOK_ARGS", "--ServerApp.token=abc '--x=a b'"),
            ("JUPYTER_PORT", "9999"),
            ("GEN_CERT", ""),
            ("NB_UMASK", "002"),
            ("RESTARTABLE", "yes"),
            ("JUPYTERHUB_API_TOKEN", "t"),
            ("NB_PREFIX", "/notebook/ns/nb"),
        ]))
        .unwrap();
        assert_eq!(s.jupyter_cmd, "server");
        assert_eq!(s.notebook_args, vec!["--ServerApp.token=abc", "--x=a b"]);
        assert_eq!(s.port, Some(9999));
        assert!(s.gen_cert && s.restartable && s.hub);
        assert_eq!(s.umask, Some(0o002));
        assert_eq!(s.base_url.as_deref(), Some("/notebook/ns/nb"));
        assert_eq!(s.auth, Auth::Token, "NB_PREFIX alone is not Kubeflow");

        assert!(
            !ServerSettings::from_env(&env(&[("RESTARTABLE", "1")]))
                .unwrap()
                .restartable
        );
        for (k, v) in [
            ("JUPYTER_PORT", "0"),
            ("JUPYTER_PORT", "70000"),
            ("NB_UMASK", "9"),
            ("NOTEBOOK_ARGS", "'"),
            ("NBRT_AUTH", "off"),
        ] {
            assert!(
                ServerSettings::from_env(&env(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn auth_modes() {
        let kf = env(&[
            ("NB_PREFIX", "/notebook/a/b"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
        ]);
        assert_eq!(ServerSettings::from_env(&kf).unwrap().auth, Auth::None);
        let mut kf_token = kf.clone();
        kf_token.set("NBRT_AUTH", "token");
        assert_eq!(
            ServerSettings::from_env(&kf_token).unwrap().auth,
            Auth::Token
        );
        assert_eq!(
            ServerSettings::from_env(&env(&[("NBRT_AUTH", "none")]))
                .unwrap()
                .auth,
            Auth::None
        );
    }

    #[test]
    fn unset_list_and_dump_parsing() {
        let mut e = env(&[
            ("A", "1"),
            ("B", "2"),
            ("C", "3"),
            ("JUPYTER_ENV_VARS_TO_UNSET", "A, C,NOPE"),
        ]);
        assert_eq!(e.apply_unset_list(), vec!["A", "C", "NOPE"]);
        assert_eq!(e, env(&[("B", "2")]));

        let d = Env::from_nul_records(b"A=1\0B=x=y\nz\0=bad\0noeq\0\0");
        assert_eq!(d, env(&[("A", "1"), ("B", "x=y\nz")]));
    }
}
