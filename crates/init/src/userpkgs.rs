//! Where a session user's own packages go: `pip install --user`, conda environments made
//! with `conda create -n`, conda's package cache and the kernels of those environments, all
//! under the home (which a volume keeps between sessions), in a directory keyed by the
//! runtime and its Python ABI:
//!
//! ```text
//! ~/.local/share/nbrt/<runtime>-<abi>/   PYTHONUSERBASE (lib/pythonX.Y/site-packages, bin,
//!                                        share/jupyter/kernels)
//!                         envs/          CONDA_ENVS_PATH (then <CONDA_DIR>/envs)
//!                         pkgs/          CONDA_PKGS_DIRS
//! ```
//!
//! The runtime is the image's `NBRT_RUNTIME` (the builder sets it to the runtime's name), the
//! ABI that of the image's environment (`cp313` for Python 3.13, from `<CONDA_DIR>/pyvenv.cfg`
//! or its `python_abi` conda record). Another runtime, or this one on a new Python, gets
//! another directory, so packages built for one are never imported by the other (seed 003's
//! `pip install --user` trap). Inside one runtime the image's packages still come first: the
//! environment's `_nbrt_site.pth` (the builder's python step) puts the user site after the
//! image's site-packages, so an older numpy in the home never shadows the image's.
//!
//! Variables the user or the platform already set are kept. Removing the directory clears
//! everything the user installed for that runtime.

use std::path::{Path, PathBuf};

use crate::env::Env;

/// The variable naming the runtime the image was built as.
pub const RUNTIME_VAR: &str = "NBRT_RUNTIME";

/// The directory name of a runtime's user packages: the runtime's name (characters other
/// than ASCII letters, digits, `.`, `_` and `-` made `_`, no leading dot), `-`, the ABI. The
/// image's `_nbrt_site.py` makes the same name.
pub fn key(runtime: &str, abi: &str) -> String {
    let name: String = runtime
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    let name = if name.is_empty() { "_" } else { name };
    format!("{name}-{abi}")
}

/// `cp313` from a Python version (`3.13.5`).
fn abi_of_version(version: &str) -> Option<String> {
    let mut parts = version.trim().split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(format!("cp{major}{minor}"))
}

/// The Python ABI of the environment at `prefix` (a path on this machine): its
/// `pyvenv.cfg` version, else its `conda-meta/python-X.Y.Z-*.json` record.
pub fn python_abi(prefix: &Path) -> Option<String> {
    if let Ok(cfg) = std::fs::read_to_string(prefix.join("pyvenv.cfg")) {
        let version = cfg
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
            .and_then(|(_, v)| abi_of_version(v));
        if version.is_some() {
            return version;
        }
    }
    let entries = std::fs::read_dir(prefix.join("conda-meta")).ok()?;
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix("python-")?.strip_suffix(".json")?;
            let version = rest.split('-').next()?;
            abi_of_version(version)
        })
        .collect();
    found.sort();
    found.pop()
}

/// What [`apply`] set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPackages {
    /// `~/.local/share/nbrt/<runtime>-<abi>`.
    pub dir: PathBuf,
    /// The variables set (those already set are kept and not listed).
    pub set: Vec<&'static str>,
}

/// Set the user-package variables in `env` for the user whose home is `home`, when the image
/// names its runtime and has a Python environment at `conda_dir` (`image_root` is where the
/// image's files are: `/`, a temporary directory in tests). `None` when it does not.
pub fn apply(
    env: &mut Env,
    image_root: &Path,
    home: &Path,
    conda_dir: &Path,
) -> Option<UserPackages> {
    let runtime = env.non_empty(RUNTIME_VAR)?;
    let prefix_on_disk = image_root.join(conda_dir.strip_prefix("/").unwrap_or(conda_dir));
    let abi = python_abi(&prefix_on_disk)?;
    let dir = home.join(".local/share/nbrt").join(key(&runtime, &abi));
    let mut set = Vec::new();
    let mut set_default = |env: &mut Env, name: &'static str, value: String| {
        if !env.contains(name) {
            env.set(name, value);
            set.push(name);
        }
    };
    set_default(env, "PYTHONUSERBASE", dir.display().to_string());
    set_default(
        env,
        "CONDA_ENVS_PATH",
        format!(
            "{}:{}",
            dir.join("envs").display(),
            conda_dir.join("envs").display()
        ),
    );
    set_default(
        env,
        "CONDA_PKGS_DIRS",
        dir.join("pkgs").display().to_string(),
    );
    // Commands of `pip install --user` packages, after the image's own.
    let user_base = env
        .get("PYTHONUSERBASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.clone());
    let bin = user_base.join("bin").display().to_string();
    let path = env.get("PATH").unwrap_or_default();
    if !path.split(':').any(|p| p == bin) {
        let value = if path.is_empty() {
            bin
        } else {
            format!("{path}:{bin}")
        };
        env.set("PATH", value);
        set.push("PATH");
    }
    Some(UserPackages { dir, set })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key("scipy", "cp313"), "scipy-cp313");
        assert_eq!(key("my runtime/2", "cp311"), "my_runtime_2-cp311");
        assert_eq!(key("..", "cp313"), "_-cp313");
        assert_eq!(abi_of_version("3.13.5").as_deref(), Some("cp313"));
        assert_eq!(abi_of_version("3.14.0rc1").as_deref(), Some("cp314"));
        assert_eq!(abi_of_version("3").as_deref(), None);
    }

    /// The Python side (`_nbrt_site.py`, written by the builder) makes the same key.
    #[test]
    fn the_image_hook_keys_the_same_way() {
        let hook = include_str!("../../builder/src/steps/python.rs");
        assert!(hook.contains(
            "ok = \"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-\""
        ));
        assert!(hook.contains(".lstrip(\".\")"));
        assert!(hook.contains("\"%s-cp%d%d\" % (name or \"_\""));
        assert!(hook.contains("\".local\", \"share\", \"nbrt\""));
    }

    #[test]
    fn variables_for_a_runtime_with_python() {
        let root = tempfile::tempdir().unwrap();
        let prefix = root.path().join("opt/conda");
        std::fs::create_dir_all(&prefix).unwrap();
        std::fs::write(
            prefix.join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.13.5\n",
        )
        .unwrap();
        let mut env = Env::from_pairs([
            ("NBRT_RUNTIME", "scipy"),
            ("PATH", "/opt/conda/bin:/usr/bin"),
        ]);
        let got = apply(
            &mut env,
            root.path(),
            Path::new("/home/alice"),
            Path::new("/opt/conda"),
        )
        .unwrap();
        let dir = "/home/alice/.local/share/nbrt/scipy-cp313";
        assert_eq!(got.dir, PathBuf::from(dir));
        assert_eq!(env.get("PYTHONUSERBASE").unwrap(), dir);
        assert_eq!(
            env.get("CONDA_ENVS_PATH").unwrap(),
            format!("{dir}/envs:/opt/conda/envs")
        );
        assert_eq!(env.get("CONDA_PKGS_DIRS").unwrap(), format!("{dir}/pkgs"));
        assert_eq!(
            env.get("PATH").unwrap(),
            format!("/opt/conda/bin:/usr/bin:{dir}/bin")
        );

        // What the user or platform set is kept; applying twice changes nothing.
        let mut env = Env::from_pairs([
            ("NBRT_RUNTIME", "scipy"),
            ("PYTHONUSERBASE", "/data/mine"),
            ("PATH", "/usr/bin"),
        ]);
        let got = apply(
            &mut env,
            root.path(),
            Path::new("/h"),
            Path::new("/opt/conda"),
        )
        .unwrap();
        assert_eq!(env.get("PYTHONUSERBASE").unwrap(), "/data/mine");
        assert_eq!(env.get("PATH").unwrap(), "/usr/bin:/data/mine/bin");
        assert!(!got.set.contains(&"PYTHONUSERBASE"));
        let before = env.clone();
        apply(
            &mut env,
            root.path(),
            Path::new("/h"),
            Path::new("/opt/conda"),
        )
        .unwrap();
        assert_eq!(env, before);

        // No runtime name, or no Python: nothing.
        let mut env = Env::from_pairs([("PATH", "/usr/bin")]);
        assert!(apply(
            &mut env,
            root.path(),
            Path::new("/h"),
            Path::new("/opt/conda")
        )
        .is_none());
        let mut env = Env::from_pairs([("NBRT_RUNTIME", "r")]);
        assert!(apply(
            &mut env,
            root.path(),
            Path::new("/h"),
            Path::new("/nothing")
        )
        .is_none());
    }

    #[test]
    fn abi_from_conda_meta() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conda-meta")).unwrap();
        std::fs::write(
            dir.path().join("conda-meta/python-3.12.8-h0_cpython.json"),
            "{}",
        )
        .unwrap();
        assert_eq!(python_abi(dir.path()).as_deref(), Some("cp312"));
    }
}
