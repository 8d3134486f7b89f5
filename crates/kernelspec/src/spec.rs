//! A kernel spec directory: `kernel.json` (`metadata.kernel_provisioner`, the launcher's
//! argv) and `scripts/launch_docker.py` or `scripts/launch_kubernetes.py` beside it, written
//! where Jupyter looks, through a temporary directory renamed into place.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{io, KernelspecError, Result};

// Each launch script is one file for the kernel spec directory: the shared part (arguments,
// the kernel's environment) followed by its provisioner's part.
const LAUNCH_DOCKER: &str = include_str!("scripts/launch_docker.py");
// The Kubernetes part reads the pod conventions it shares with `nbrt serve --backend
// kubernetes` from `POD_CONVENTIONS`, written between the two from `nbrt_oci::pod`.
const LAUNCH_COMMON: &str = include_str!("scripts/launch_common.py");
const LAUNCH_KUBERNETES: &str = include_str!("scripts/launch_kubernetes.py");

/// The ipykernel class a Python kernel spec names unless told otherwise.
pub const DEFAULT_CLASS: &str = "ipykernel.ipkernel.IPythonKernel";

/// Which Gateway Provisioners provisioner launches the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioner {
    Docker,
    Kubernetes,
}

impl Provisioner {
    /// The provisioner's entry point name (`metadata.kernel_provisioner.provisioner_name`).
    pub fn entry_point(self) -> &'static str {
        match self {
            Provisioner::Docker => "docker-provisioner",
            Provisioner::Kubernetes => "kubernetes-provisioner",
        }
    }

    /// The launch script's file name and text.
    pub fn script(self) -> (&'static str, String) {
        match self {
            Provisioner::Docker => (
                "launch_docker.py",
                format!("{LAUNCH_COMMON}{LAUNCH_DOCKER}"),
            ),
            Provisioner::Kubernetes => {
                // A JSON string is a Python string literal too.
                let conventions = nbrt_oci::pod::conventions_json().to_string();
                let literal = serde_json::to_string(&conventions).unwrap_or_default();
                let text = format!(
                    "{LAUNCH_COMMON}\n# nbrt_oci::pod: the conventions of every pod nbrt describes.\n\
                     POD_CONVENTIONS = json.loads({literal})\n\n{LAUNCH_KUBERNETES}"
                );
                ("launch_kubernetes.py", text)
            }
        }
    }

    /// How notebooks see the engine in a default display name.
    pub fn engine_title(self) -> &'static str {
        match self {
            Provisioner::Docker => "Docker",
            Provisioner::Kubernetes => "Kubernetes",
        }
    }
}

/// When the engine may pull the kernel's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pull {
    /// Never pull: an image missing from the engine fails the launch at once.
    Never,
    /// Pull only when the engine (node) lacks the image.
    Missing,
    /// Pull at every launch.
    Always,
}

impl Pull {
    pub fn as_str(self) -> &'static str {
        match self {
            Pull::Never => "never",
            Pull::Missing => "missing",
            Pull::Always => "always",
        }
    }

    /// The default of each provisioner: never for docker (the image is in the local
    /// engine), missing for kubernetes (nodes pull by name).
    pub fn default_for(provisioner: Provisioner) -> Self {
        match provisioner {
            Provisioner::Docker => Pull::Never,
            Provisioner::Kubernetes => Pull::Missing,
        }
    }
}

/// What the spec is made of, once the image is resolved.
#[derive(Debug, Clone)]
pub struct SpecInput {
    pub provisioner: Provisioner,
    pub kernel_name: String,
    pub display_name: String,
    pub language: String,
    pub image_name: String,
    pub launch_timeout: u64,
    pub port_range: String,
    pub kernel_class_name: Option<String>,
    pub authorized_users: Vec<String>,
    pub unauthorized_users: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Names passed from the server's environment (declared by the image or `--pass-env`).
    pub pass_env: Vec<String>,
    pub pull: Pull,
    pub python: String,
    /// Whether the image's kernel can provision CurveZMQ keys (ipykernel ≥ 7.3).
    pub curve: bool,
    /// Where the image came from: `{"store": name, "digest": …}` and the like.
    pub source: Value,
}

#[derive(Serialize)]
struct KernelJson<'a> {
    argv: Vec<String>,
    env: serde_json::Map<String, Value>,
    display_name: &'a str,
    language: &'a str,
    interrupt_mode: &'a str,
    metadata: Value,
    kernel_protocol_version: &'a str,
}

/// The `kernel.json` for a spec installed at `dir`.
pub fn kernel_json(input: &SpecInput, dir: &Path) -> Value {
    let (script, _) = input.provisioner.script();
    let python = input.language == "python";
    let mut argv: Vec<String> = vec![
        input.python.clone(),
        dir.join("scripts").join(script).display().to_string(),
    ];
    for (flag, value) in [
        ("--kernel-id", "{kernel_id}"),
        ("--port-range", "{port_range}"),
        ("--response-address", "{response_address}"),
        ("--public-key", "{public_key}"),
    ] {
        argv.push(flag.into());
        argv.push(value.into());
    }
    if python && input.curve {
        argv.push("--transport-encryption".into());
        argv.push("{transport_encryption}".into());
    }
    if python {
        argv.push("--kernel-class-name".into());
        argv.push(
            input
                .kernel_class_name
                .clone()
                .unwrap_or_else(|| DEFAULT_CLASS.into()),
        );
    }
    argv.push("--kernel-spec".into());
    argv.push(input.kernel_name.clone());
    argv.push("--pull".into());
    argv.push(input.pull.as_str().into());
    let names: BTreeSet<&str> = input
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(input.pass_env.iter().map(String::as_str))
        .collect();
    if !names.is_empty() {
        argv.push("--env-names".into());
        argv.push(names.into_iter().collect::<Vec<_>>().join(","));
    }

    let mut config = serde_json::Map::new();
    config.insert("image_name".into(), json!(input.image_name));
    if !input.authorized_users.is_empty() {
        config.insert("authorized_users".into(), json!(input.authorized_users));
    }
    // The provisioner refuses root by default: like the installers, write only other lists.
    if !input.unauthorized_users.is_empty() && input.unauthorized_users != ["root"] {
        config.insert("unauthorized_users".into(), json!(input.unauthorized_users));
    }
    if input.port_range != "0..0" {
        config.insert("port_range".into(), json!(input.port_range));
    }
    config.insert("launch_timeout".into(), json!(input.launch_timeout));

    let mut metadata = serde_json::Map::new();
    if python && input.curve {
        metadata.insert("supported_encryption".into(), json!(["curve"]));
    }
    metadata.insert("debugger".into(), json!(python));
    metadata.insert(
        "kernel_provisioner".into(),
        json!({"provisioner_name": input.provisioner.entry_point(), "config": config}),
    );
    metadata.insert("nbrt".into(), input.source.clone());

    let doc = KernelJson {
        argv,
        env: input
            .env
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect(),
        display_name: &input.display_name,
        language: &input.language,
        interrupt_mode: "signal",
        metadata: Value::Object(metadata),
        kernel_protocol_version: "",
    };
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

/// Where Jupyter looks for kernel specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `PREFIX/share/jupyter/kernels` (e.g. the server's venv).
    Prefix(PathBuf),
    /// The user's Jupyter data directory (`JUPYTER_DATA_DIR`, `XDG_DATA_HOME/jupyter`, or
    /// `~/.local/share/jupyter`).
    User,
    /// `/usr/local/share/jupyter/kernels`.
    System,
}

impl Location {
    /// The `kernels` directory itself.
    pub fn kernels_dir(&self) -> Result<PathBuf> {
        match self {
            Location::Prefix(p) => Ok(p.join("share/jupyter/kernels")),
            Location::User => {
                if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR") {
                    return Ok(PathBuf::from(d).join("kernels"));
                }
                if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
                    return Ok(PathBuf::from(d).join("jupyter/kernels"));
                }
                let Some(home) = std::env::var_os("HOME") else {
                    return Err(crate::error::invalid("--user: HOME is not set"));
                };
                Ok(PathBuf::from(home).join(".local/share/jupyter/kernels"))
            }
            Location::System => Ok(PathBuf::from("/usr/local/share/jupyter/kernels")),
        }
    }
}

/// Write the spec directory `kernels/<name>` through a temporary directory renamed into
/// place; an existing spec is kept unless `replace`.
pub fn write_spec(input: &SpecInput, kernels: &Path, replace: bool) -> Result<(PathBuf, Value)> {
    let dir = kernels.join(&input.kernel_name);
    if dir.exists() && !replace {
        return Err(KernelspecError::Exists(dir));
    }
    fs::create_dir_all(kernels).map_err(io(format!("creating {}", kernels.display())))?;
    let tmp = kernels.join(format!(
        ".{}.nbrt-{}",
        input.kernel_name,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    let write = || -> std::io::Result<Value> {
        fs::create_dir_all(tmp.join("scripts"))?;
        let (script, text) = input.provisioner.script();
        fs::write(tmp.join("scripts").join(script), text)?;
        let doc = kernel_json(input, &dir);
        let mut f = fs::File::create(tmp.join("kernel.json"))?;
        serde_json::to_writer_pretty(&mut f, &doc)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok(doc)
    };
    let doc = match write() {
        Ok(d) => d,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io(format!("writing {}", tmp.display()))(e));
        }
    };
    if dir.exists() {
        let old = kernels.join(format!(".{}.old-{}", input.kernel_name, std::process::id()));
        fs::rename(&dir, &old).map_err(io(format!("moving {} aside", dir.display())))?;
        fs::rename(&tmp, &dir).map_err(io(format!("renaming into {}", dir.display())))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&tmp, &dir).map_err(io(format!("renaming into {}", dir.display())))?;
    }
    Ok((dir, doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            provisioner: Provisioner::Docker,
            kernel_name: "kpy".into(),
            display_name: "Kernel Py".into(),
            language: "python".into(),
            image_name: "kernel-py:0123456789ab".into(),
            launch_timeout: 60,
            port_range: "0..0".into(),
            kernel_class_name: None,
            authorized_users: vec![],
            unauthorized_users: vec![],
            env: vec![("MY_SETTING".into(), "1".into())],
            pass_env: vec!["SPARK_CONF".into()],
            pull: Pull::Never,
            python: "python".into(),
            curve: true,
            source: json!({}),
        }
    }

    #[test]
    fn docker_python_spec_has_the_installers_fields() {
        let doc = kernel_json(&input(), Path::new("/k/kpy"));
        let argv: Vec<&str> = doc["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(&argv[..2], ["python", "/k/kpy/scripts/launch_docker.py"]);
        for pair in [
            ["--kernel-id", "{kernel_id}"],
            ["--port-range", "{port_range}"],
            ["--response-address", "{response_address}"],
            ["--public-key", "{public_key}"],
            ["--transport-encryption", "{transport_encryption}"],
            ["--kernel-class-name", DEFAULT_CLASS],
            ["--env-names", "MY_SETTING,SPARK_CONF"],
        ] {
            assert!(argv.windows(2).any(|w| w == pair), "{pair:?} in {argv:?}");
        }
        assert_eq!(doc["language"], "python");
        assert_eq!(doc["interrupt_mode"], "signal");
        assert_eq!(doc["env"], json!({"MY_SETTING": "1"}));
        let p = &doc["metadata"]["kernel_provisioner"];
        assert_eq!(p["provisioner_name"], "docker-provisioner");
        assert_eq!(
            p["config"],
            json!({"image_name": "kernel-py:0123456789ab", "launch_timeout": 60})
        );
        assert_eq!(doc["metadata"]["supported_encryption"], json!(["curve"]));
        assert_eq!(doc["metadata"]["debugger"], true);
    }

    #[test]
    fn kubernetes_r_spec() {
        let mut i = input();
        i.provisioner = Provisioner::Kubernetes;
        i.language = "R".into();
        i.port_range = "40000..41000".into();
        i.unauthorized_users = vec!["root".into(), "admin".into()];
        let doc = kernel_json(&i, Path::new("/k/kr"));
        let argv = doc["argv"].to_string();
        assert!(argv.contains("launch_kubernetes.py"));
        assert!(!argv.contains("--kernel-class-name"));
        assert!(!argv.contains("--transport-encryption"));
        let c = &doc["metadata"]["kernel_provisioner"]["config"];
        assert_eq!(c["port_range"], "40000..41000");
        assert_eq!(c["unauthorized_users"], json!(["root", "admin"]));
        assert_eq!(
            doc["metadata"]["kernel_provisioner"]["provisioner_name"],
            "kubernetes-provisioner"
        );
        assert!(doc["metadata"].get("supported_encryption").is_none());
    }

    #[test]
    fn kubernetes_script_carries_the_shared_pod_conventions() {
        let (_, text) = Provisioner::Kubernetes.script();
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("POD_CONVENTIONS = json.loads("))
            .and_then(|l| l.strip_suffix(')'))
            .expect("a POD_CONVENTIONS line");
        let inner: String = serde_json::from_str(line).unwrap();
        let value: Value = serde_json::from_str(&inner).unwrap();
        assert_eq!(value, nbrt_oci::pod::conventions_json());
        // Defined before the Kubernetes part uses it, after the imports.
        let (defined, used) = (
            text.find("POD_CONVENTIONS =").unwrap(),
            text.find("POD_CONVENTIONS[").unwrap(),
        );
        assert!(text.find("import json").unwrap() < defined && defined < used);
        // Python reads it (where there is a python3).
        let tmp = std::env::temp_dir().join(format!("nbrt-ks-k8s-{}.py", std::process::id()));
        fs::write(&tmp, &text).unwrap();
        if let Ok(out) = std::process::Command::new("python3")
            .args(["-m", "py_compile"])
            .arg(&tmp)
            .output()
        {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::remove_file(&tmp).ok();
    }

    #[test]
    fn writes_and_replaces_atomically() {
        let tmp = std::env::temp_dir().join(format!("nbrt-ks-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let (dir, _) = write_spec(&input(), &tmp, false).unwrap();
        assert!(dir.join("kernel.json").is_file());
        assert!(dir.join("scripts/launch_docker.py").is_file());
        assert!(write_spec(&input(), &tmp, false).is_err());
        write_spec(&input(), &tmp, true).unwrap();
        let left: Vec<_> = fs::read_dir(&tmp).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "{left:?}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
