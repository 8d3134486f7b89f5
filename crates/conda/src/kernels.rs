//! Jupyter kernels for the user's conda environments: after `create`, `install`, `remove`
//! and `env remove`, every environment in the `envs_dirs` that has `ipykernel` gets a
//! kernelspec (`conda-env-<name>-py`, shown as `Python [conda env:<name>]`, as
//! nb_conda_kernels names them), and the kernelspecs this made for environments that are
//! gone or lost ipykernel are removed.
//!
//! The kernelspecs go to `$PYTHONUSERBASE/share/jupyter/kernels` when it is set (nbrt-init
//! sets it to the runtime's user-package directory, which Jupyter searches when the user
//! site is enabled), else `$JUPYTER_DATA_DIR/kernels`, else
//! `~/.local/share/jupyter/kernels`. A kernel runs the environment's own Python with the
//! environment's `bin` first on `PATH` (docker-stacks' custom-environment kernels ran with
//! the base environment's PATH until they did the same).

use std::path::{Path, PathBuf};

/// The key in a kernelspec's `metadata` that marks it as made here (with the environment's
/// prefix): only those are ever removed.
const MARK: &str = "nbrt_conda_env";

/// A conda environment that may get a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEnv {
    /// Its name (the directory name inside an envs dir).
    pub name: String,
    pub prefix: PathBuf,
}

/// Where kernelspecs go, from the process environment and the home.
pub fn kernels_dir(home: Option<&Path>) -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(base) = var("PYTHONUSERBASE") {
        return Some(base.join("share/jupyter/kernels"));
    }
    if let Some(data) = var("JUPYTER_DATA_DIR") {
        return Some(data.join("kernels"));
    }
    home.map(|h| h.join(".local/share/jupyter/kernels"))
}

/// Whether the environment has ipykernel (a conda record of it) and a Python to run it.
pub fn has_ipykernel(prefix: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(prefix.join("conda-meta")) else {
        return false;
    };
    let recorded = entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_prefix("ipykernel-").is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_digit()) && name.ends_with(".json")
        })
    });
    recorded && prefix.join("bin/python").exists()
}

/// The kernel name of an environment: `conda-env-<name>-py`, with characters Jupyter does
/// not allow in kernel names made `_`.
pub fn kernel_name(env: &KernelEnv) -> String {
    let name: String = env
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("conda-env-{name}-py")
}

/// The kernelspec (`kernel.json`) of an environment.
pub fn spec(env: &KernelEnv) -> serde_json::Value {
    let prefix = env.prefix.display().to_string();
    serde_json::json!({
        "argv": [format!("{prefix}/bin/python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": format!("Python [conda env:{}]", env.name),
        "language": "python",
        "env": {
            "CONDA_PREFIX": prefix,
            "CONDA_DEFAULT_ENV": env.name,
            "PATH": format!("{prefix}/bin:${{PATH}}"),
        },
        "metadata": { "debugger": true, MARK: prefix },
    })
}

/// What [`sync`] changed: kernel names written and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub written: Vec<String>,
    pub removed: Vec<String>,
}

/// Make the kernelspecs in `dir` match `envs` (those with ipykernel get one; those this
/// made earlier for anything else go).
pub fn sync(dir: &Path, envs: &[KernelEnv]) -> std::io::Result<Changes> {
    let mut changes = Changes::default();
    let mut wanted = Vec::new();
    for env in envs.iter().filter(|e| has_ipykernel(&e.prefix)) {
        let name = kernel_name(env);
        let text = serde_json::to_string_pretty(&spec(env)).unwrap_or_default() + "\n";
        let path = dir.join(&name).join("kernel.json");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::create_dir_all(dir.join(&name))?;
            crate::prefix::write_atomic(&path, text.as_bytes())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            changes.written.push(name.clone());
        }
        wanted.push(name);
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(changes);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if wanted.contains(&name) {
            continue;
        }
        let ours = std::fs::read_to_string(e.path().join("kernel.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["metadata"][MARK].is_string());
        if ours {
            std::fs::remove_dir_all(e.path())?;
            changes.removed.push(name);
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(dir: &Path, name: &str, ipykernel: bool) -> KernelEnv {
        let prefix = dir.join("envs").join(name);
        std::fs::create_dir_all(prefix.join("conda-meta")).unwrap();
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::write(prefix.join("bin/python"), "").unwrap();
        if ipykernel {
            std::fs::write(prefix.join("conda-meta/ipykernel-6.29.5-pyh0_0.json"), "{}").unwrap();
        }
        // A package whose name starts the same is not ipykernel.
        std::fs::write(prefix.join("conda-meta/ipykernel-extra-1.0-0.json"), "{}").unwrap();
        KernelEnv {
            name: name.to_string(),
            prefix,
        }
    }

    #[test]
    fn kernels_follow_the_environments() {
        let tmp = tempfile::tempdir().unwrap();
        let kernels = tmp.path().join("kernels");
        let a = env_with(tmp.path(), "myenv", true);
        let b = env_with(tmp.path(), "plain", false);
        // Someone else's kernel is never touched.
        std::fs::create_dir_all(kernels.join("python3")).unwrap();
        std::fs::write(kernels.join("python3/kernel.json"), "{\"argv\": []}").unwrap();

        let c = sync(&kernels, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.written, ["conda-env-myenv-py"]);
        let spec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(kernels.join("conda-env-myenv-py/kernel.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(spec["display_name"], "Python [conda env:myenv]");
        assert_eq!(
            spec["argv"][0],
            format!("{}/bin/python", a.prefix.display())
        );
        assert_eq!(
            spec["env"]["PATH"],
            format!("{}/bin:${{PATH}}", a.prefix.display())
        );
        // Again: nothing to do.
        assert_eq!(
            sync(&kernels, &[a.clone(), b.clone()]).unwrap(),
            Changes::default()
        );
        // The environment is removed: its kernel goes, python3 stays.
        std::fs::remove_dir_all(&a.prefix).unwrap();
        let c = sync(&kernels, &[b]).unwrap();
        assert_eq!(c.removed, ["conda-env-myenv-py"]);
        assert!(kernels.join("python3/kernel.json").is_file());
    }

    #[test]
    fn names() {
        let e = KernelEnv {
            name: "my env".into(),
            prefix: "/x".into(),
        };
        assert_eq!(kernel_name(&e), "conda-env-my_env-py");
    }
}
