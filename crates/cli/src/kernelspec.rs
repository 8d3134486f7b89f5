//! `nbrt kernelspec`: the kernel specification directory Gateway Provisioners' installers
//! (`jupyter docker-spec install`, `jupyter k8s-spec install`) write, for a kernel image nbrt
//! knows: `kernel.json` with `metadata.kernel_provisioner` and the launcher's argv, and
//! `scripts/launch_docker.py` or `scripts/launch_kubernetes.py` beside it.
//!
//! The launch scripts are nbrt's own (same arguments as the installers' ones): the kernel's
//! container gets the launcher protocol's variables and the names the spec or the image
//! declares, never the server's whole environment; the Docker one attaches the container to
//! the network the provisioner looks on, runs it as `KERNEL_UID:KERNEL_GID`, and does not
//! pull unless the spec says so.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use nbrt_inspect::check::{self, Profile, Status};
use nbrt_oci::{ImageName, StoredImage};
use serde::Serialize;
use serde_json::{json, Value};

use crate::images::{progress, Context};
use crate::output::json as print_json;

// Each launch script is one file for the kernel spec directory: the shared part (arguments,
// the kernel's environment) followed by its provisioner's part.
const LAUNCH_DOCKER: &str = concat!(
    include_str!("kernelspec/launch_common.py"),
    include_str!("kernelspec/launch_docker.py")
);
const LAUNCH_KUBERNETES: &str = concat!(
    include_str!("kernelspec/launch_common.py"),
    include_str!("kernelspec/launch_kubernetes.py")
);

/// Image label naming the kernel language (`python`, `R`).
pub const LABEL_LANGUAGE: &str = "org.nbrt.kernel.language";
/// Image label listing environment variable names (comma-separated) the kernel accepts
/// from the server.
pub const LABEL_ENV: &str = "org.nbrt.kernel.env";
const DEFAULT_CLASS: &str = "ipykernel.ipkernel.IPythonKernel";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Provisioner {
    Docker,
    Kubernetes,
}

impl Provisioner {
    fn entry_point(self) -> &'static str {
        match self {
            Provisioner::Docker => "docker-provisioner",
            Provisioner::Kubernetes => "kubernetes-provisioner",
        }
    }
    fn script(self) -> (&'static str, &'static str) {
        match self {
            Provisioner::Docker => ("launch_docker.py", LAUNCH_DOCKER),
            Provisioner::Kubernetes => ("launch_kubernetes.py", LAUNCH_KUBERNETES),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pull {
    /// Never pull: an image missing from the engine fails the launch at once
    Never,
    /// Pull only when the engine (node) lacks the image
    Missing,
    /// Pull at every launch
    Always,
}

impl Pull {
    fn as_str(self) -> &'static str {
        match self {
            Pull::Never => "never",
            Pull::Missing => "missing",
            Pull::Always => "always",
        }
    }
}

#[derive(Args)]
pub struct KernelspecArgs {
    /// The kernel image: a name or ID in the store, else a name the Docker engine knows
    image: String,
    /// Which Gateway Provisioners provisioner launches the kernel
    #[arg(long, value_enum)]
    provisioner: Provisioner,
    /// The kernel spec's name (its directory; spaces become `_`, lower case)
    #[arg(long)]
    kernel_name: String,
    /// The name notebooks show (default: the image name and the provisioner)
    #[arg(long)]
    display_name: Option<String>,
    /// Seconds the server waits for the kernel to report its ports
    #[arg(long, default_value_t = 30, value_name = "S")]
    launch_timeout: u64,
    /// Ports the kernel may listen on, `A..B` (`0..0`: any)
    #[arg(long, default_value = "0..0", value_name = "A..B")]
    port_range: String,
    /// Install under DIR/share/jupyter/kernels (e.g. the server's venv)
    #[arg(long, value_name = "DIR", conflicts_with = "user")]
    prefix: Option<PathBuf>,
    /// Install in the user's Jupyter data directory (default: /usr/local/share/jupyter/kernels)
    #[arg(long)]
    user: bool,
    /// The kernel language (default: the image's org.nbrt.kernel.language label or
    /// KERNEL_LANGUAGE, else python)
    #[arg(long)]
    language: Option<String>,
    /// The ipykernel Kernel class (Python kernels)
    #[arg(long, value_name = "CLASS")]
    kernel_class_name: Option<String>,
    /// Users allowed to start this kernel (repeatable)
    #[arg(long = "authorized-users", value_name = "USER")]
    authorized_users: Vec<String>,
    /// Users refused (repeatable; the provisioner's default refuses root)
    #[arg(long = "unauthorized-users", value_name = "USER")]
    unauthorized_users: Vec<String>,
    /// A variable set for the kernel (the spec's `env`; repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// A variable passed from the server's environment to the kernel (repeatable)
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Write this image name as it is, without looking it up
    #[arg(long, value_name = "NAME")]
    image_name: Option<String>,
    /// When the engine may pull the image (default: never for docker, missing for kubernetes)
    #[arg(long, value_enum)]
    pull: Option<Pull>,
    /// Do not load a store image into the Docker engine; fail if the engine lacks it
    #[arg(long)]
    no_load: bool,
    /// The Python that runs the launch script on the server host (must import docker, or
    /// kubernetes)
    #[arg(long, default_value = "python", value_name = "PATH")]
    python: String,
    /// Overwrite an existing kernel spec of that name
    #[arg(long)]
    replace: bool,
    /// Write the spec even if the image fails the gateway-kernel checks
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
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

/// Jupyter kernel names: letters, digits, `-`, `.`, `_` (lower-cased, spaces made `_`, as
/// the installers do).
pub fn normalize_kernel_name(name: &str) -> Result<String> {
    let n = name.trim().replace(' ', "_").to_lowercase();
    if n.is_empty()
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        bail!("kernel name {name:?}: use letters, digits, '-', '.', '_' (spaces become '_')");
    }
    Ok(n)
}

/// `A..B` with A ≤ B; a real range spans at least 1000 ports (the launchers' minimum).
pub fn check_port_range(range: &str) -> Result<()> {
    let parse = |s: &str| s.trim().parse::<u16>();
    let Some((a, b)) = range.split_once("..") else {
        bail!("port range {range:?}: write it as LOWER..UPPER, e.g. 40000..41000 (0..0: any port)");
    };
    let (Ok(a), Ok(b)) = (parse(a), parse(b)) else {
        bail!("port range {range:?}: the bounds must be port numbers");
    };
    if (a, b) == (0, 0) {
        return Ok(());
    }
    if a > b || a < 1024 {
        bail!("port range {range:?}: need 1024 ≤ LOWER ≤ UPPER");
    }
    if b - a < 1000 {
        bail!(
            "port range {range:?} spans {} ports: the kernel launchers require at least 1000 \
             (MIN_PORT_RANGE_SIZE)",
            b - a
        );
    }
    Ok(())
}

/// `python` / `R` as Jupyter and the installers spell them.
pub fn normalize_language(lang: &str) -> Result<String> {
    match lang.trim().to_ascii_lowercase().as_str() {
        "python" | "python3" => Ok("python".into()),
        "r" => Ok("R".into()),
        other => bail!(
            "kernel language {other:?}: nbrt writes specs for python and R kernels \
             (the launchers in nbrt's kernel images)"
        ),
    }
}

fn valid_env_name(n: &str) -> bool {
    !n.is_empty()
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parse `--env KEY=VALUE` entries.
pub fn parse_env(entries: &[String]) -> Result<Vec<(String, String)>> {
    entries
        .iter()
        .map(|e| {
            let Some((k, v)) = e.split_once('=') else {
                bail!("--env {e:?}: write KEY=VALUE");
            };
            if !valid_env_name(k) {
                bail!("--env {e:?}: {k:?} is not a variable name");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Names from `org.nbrt.kernel.env` (comma or space separated).
pub fn declared_env(label: Option<&str>) -> Vec<String> {
    label
        .unwrap_or("")
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| valid_env_name(n))
        .map(str::to_string)
        .collect()
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

/// Where Jupyter looks for kernel specs: `--prefix`, `--user`, or the system directory.
fn kernels_dir(prefix: Option<&Path>, user: bool) -> Result<PathBuf> {
    if let Some(p) = prefix {
        return Ok(p.join("share/jupyter/kernels"));
    }
    if user {
        if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR") {
            return Ok(PathBuf::from(d).join("kernels"));
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
            return Ok(PathBuf::from(d).join("jupyter/kernels"));
        }
        let Some(home) = std::env::var_os("HOME") else {
            bail!("--user: HOME is not set");
        };
        return Ok(PathBuf::from(home).join(".local/share/jupyter/kernels"));
    }
    Ok(PathBuf::from("/usr/local/share/jupyter/kernels"))
}

/// Write the spec directory `kernels/<name>` through a temporary directory renamed into
/// place; an existing spec is kept unless `replace`.
pub fn write_spec(input: &SpecInput, kernels: &Path, replace: bool) -> Result<(PathBuf, Value)> {
    let dir = kernels.join(&input.kernel_name);
    if dir.exists() && !replace {
        bail!(
            "kernel spec {} exists; give --replace to overwrite it",
            dir.display()
        );
    }
    fs::create_dir_all(kernels).with_context(|| format!("creating {}", kernels.display()))?;
    let tmp = kernels.join(format!(
        ".{}.nbrt-{}",
        input.kernel_name,
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&tmp);
    let write = || -> Result<Value> {
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
            return Err(e.context(format!("writing {}", tmp.display())));
        }
    };
    if dir.exists() {
        let old = kernels.join(format!(".{}.old-{}", input.kernel_name, std::process::id()));
        fs::rename(&dir, &old).with_context(|| format!("moving {} aside", dir.display()))?;
        fs::rename(&tmp, &dir).with_context(|| format!("renaming into {}", dir.display()))?;
        let _ = fs::remove_dir_all(&old);
    } else {
        fs::rename(&tmp, &dir).with_context(|| format!("renaming into {}", dir.display()))?;
    }
    Ok((dir, doc))
}

/// What nbrt knows of the image: its config's env and labels, and the ipykernel version.
#[derive(Default)]
struct ImageFacts {
    env: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
    ipykernel: Option<String>,
}

impl ImageFacts {
    fn env(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

/// ipykernel ≥ 7.3 can provision CurveZMQ keys.
fn curve_capable(version: Option<&str>) -> bool {
    let Some(v) = version else { return false };
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u64>()
            .unwrap_or(0)
    });
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 3)
}

#[derive(Serialize)]
struct Outcome {
    directory: PathBuf,
    image_name: String,
    provisioner: &'static str,
    /// Whether the image was put into the Docker engine by this command.
    loaded: bool,
    kernel_json: Value,
}

pub async fn kernelspec(ctx: &Context, a: KernelspecArgs) -> Result<()> {
    let kernel_name = normalize_kernel_name(&a.kernel_name)?;
    check_port_range(&a.port_range)?;
    let env = parse_env(&a.env)?;
    for n in &a.pass_env {
        if !valid_env_name(n) {
            bail!("--pass-env {n:?} is not a variable name");
        }
    }
    let pull = a.pull.unwrap_or(match a.provisioner {
        Provisioner::Docker => Pull::Never,
        Provisioner::Kubernetes => Pull::Missing,
    });

    let mut loaded = false;
    let (image_name, facts, source) = if let Some(name) = &a.image_name {
        // The name is written as given; the image, when the store has it, still says what
        // the kernel is (language, ipykernel) and is checked.
        let store = ctx.store()?;
        match store.resolve(&a.image) {
            Ok(found) => (
                name.clone(),
                store_facts(&store, &found, &a)?,
                json!({
                    "image": a.image,
                    "digest": found.image.digest().to_string(),
                    "id": found.image.id().to_string(),
                }),
            ),
            Err(nbrt_oci::OciError::NotFound(_)) => (
                name.clone(),
                ImageFacts::default(),
                json!({"image": a.image, "image_name": "given"}),
            ),
            Err(e) => return Err(e.into()),
        }
    } else {
        let store = ctx.store()?;
        match store.resolve(&a.image) {
            Ok(found) => {
                let facts = store_facts(&store, &found, &a)?;
                let name = match a.provisioner {
                    Provisioner::Docker => {
                        let (n, l) =
                            docker_name_for_store_image(&store, &found, a.no_load, a.json).await?;
                        loaded = l;
                        n
                    }
                    Provisioner::Kubernetes => kubernetes_name(&a.image, &found)?,
                };
                let source = json!({
                    "image": a.image,
                    "digest": found.image.digest().to_string(),
                    "id": found.image.id().to_string(),
                });
                (name, facts, source)
            }
            Err(nbrt_oci::OciError::NotFound(_)) => {
                let facts = engine_facts(&a.image).await.with_context(|| {
                    format!(
                        "{} is neither in the image store nor in the Docker engine",
                        a.image
                    )
                })?;
                (
                    a.image.clone(),
                    facts,
                    json!({"image": a.image, "engine": true}),
                )
            }
            Err(e) => return Err(e.into()),
        }
    };

    let language = language_of(a.language.as_deref(), &facts)?;
    if language != "python" && a.kernel_class_name.is_some() {
        bail!("--kernel-class-name is for Python kernels");
    }
    let mut pass_env = declared_env(facts.labels.get(LABEL_ENV).map(String::as_str));
    pass_env.extend(a.pass_env.iter().cloned());
    let display_name = a.display_name.clone().unwrap_or_else(|| {
        let p = match a.provisioner {
            Provisioner::Docker => "Docker",
            Provisioner::Kubernetes => "Kubernetes",
        };
        format!("{image_name} ({p})")
    });
    let input = SpecInput {
        provisioner: a.provisioner,
        kernel_name,
        display_name,
        language,
        image_name: image_name.clone(),
        launch_timeout: a.launch_timeout,
        port_range: a.port_range.clone(),
        kernel_class_name: a.kernel_class_name.clone(),
        authorized_users: a.authorized_users.clone(),
        unauthorized_users: a.unauthorized_users.clone(),
        env,
        pass_env,
        pull,
        python: a.python.clone(),
        curve: curve_capable(facts.ipykernel.as_deref()),
        source,
    };
    let kernels = kernels_dir(a.prefix.as_deref(), a.user)?;
    let (dir, doc) = write_spec(&input, &kernels, a.replace)?;
    if a.json {
        return print_json(&Outcome {
            directory: dir,
            image_name,
            provisioner: a.provisioner.entry_point(),
            loaded,
            kernel_json: doc,
        });
    }
    println!(
        "Wrote kernel spec {} ({} for image {image_name})",
        dir.display(),
        a.provisioner.entry_point()
    );
    Ok(())
}

/// The language a spec is for: `--language`, else the image's label or KERNEL_LANGUAGE,
/// else python.
fn language_of(arg: Option<&str>, facts: &ImageFacts) -> Result<String> {
    normalize_language(arg.unwrap_or_else(|| {
        facts
            .labels
            .get(LABEL_LANGUAGE)
            .map(String::as_str)
            .or(facts.env("KERNEL_LANGUAGE"))
            .unwrap_or("python")
    }))
}

/// Checks of the Python launcher that do not apply to an R kernel image (its launcher is
/// launch_IRkernel.R; its `python` only runs the listener).
const PYTHON_ONLY: &[&str] = &["kernel.launcher", "kernel.ipykernel"];
const R_LAUNCHER: &str = "/usr/local/bin/kernel-launchers/R/scripts/launch_IRkernel.R";

/// Env, labels and ipykernel version of a store image; fails when it fails the static
/// gateway-kernel checks (unless --force).
fn store_facts(
    store: &nbrt_oci::Store,
    found: &StoredImage,
    a: &KernelspecArgs,
) -> Result<ImageFacts> {
    let (view, pkgs) = nbrt_inspect::read_image(store, &found.image, &progress(a.json))
        .with_context(|| format!("reading the layers of {}", a.image))?;
    let cfg = found
        .image
        .config
        .value()
        .config
        .clone()
        .unwrap_or_default();
    let facts = ImageFacts {
        env: cfg.env.unwrap_or_default(),
        labels: cfg.labels.unwrap_or_default(),
        ipykernel: pkgs
            .iter()
            .find(|p| p.name == "ipykernel")
            .map(|p| p.version.clone()),
    };
    let r = language_of(a.language.as_deref(), &facts)? == "R";
    let report = check::static_report(&a.image, &found.image, &view, &pkgs, Profile::GatewayKernel);
    let mut failures: Vec<String> = report
        .results
        .iter()
        .filter(|c| c.status == Status::Fail && !(r && PYTHON_ONLY.contains(&c.id.as_str())))
        .map(|c| format!("  {}: {}", c.id, c.message))
        .collect();
    if r && view.lookup(R_LAUNCHER).is_none() {
        failures.push(format!(
            "  kernel.launcher: the R kernel launcher {R_LAUNCHER} is missing"
        ));
    }
    if !failures.is_empty() {
        let text = failures.join("\n");
        if a.force {
            eprintln!(
                "warning: {} fails the gateway-kernel checks:\n{text}",
                a.image
            );
        } else {
            bail!(
                "{} is not a kernel image Gateway Provisioners can launch:\n{text}\n\
                 (`nbrt check {} --profile gateway-kernel` explains; --force writes the spec anyway)",
                a.image,
                a.image
            );
        }
    }
    Ok(facts)
}

/// The tag a store image gets in the Docker engine: its repository and the first 12 hex
/// digits of its manifest digest (exact, so the provisioner never pulls a `latest`).
fn engine_tag(found: &StoredImage) -> ImageName {
    let repository = found
        .names
        .first()
        .map(|n| n.repository.clone())
        .unwrap_or_else(|| "nbrt-kernel".into());
    ImageName {
        repository,
        tag: found.image.digest().hex()[..12].to_string(),
    }
}

/// Make sure the engine has the store image under its exact tag; returns the tag and
/// whether the image had to be loaded.
async fn docker_name_for_store_image(
    store: &nbrt_oci::Store,
    found: &StoredImage,
    no_load: bool,
    quiet: bool,
) -> Result<(String, bool)> {
    let tag = engine_tag(found);
    let docker = nbrt_oci::engine::connect()
        .await
        .context("the docker provisioner runs kernels on a Docker engine")?;
    let id = found.image.id().to_string();
    match docker.inspect_image(&id).await {
        Ok(info) => {
            let have = info
                .repo_tags
                .unwrap_or_default()
                .contains(&tag.to_string());
            if !have {
                docker
                    .tag_image(
                        &id,
                        Some(bollard::query_parameters::TagImageOptions {
                            repo: Some(tag.repository.clone()),
                            tag: Some(tag.tag.clone()),
                        }),
                    )
                    .await
                    .with_context(|| format!("tagging {id} as {tag} in the Docker engine"))?;
            }
            Ok((tag.to_string(), false))
        }
        Err(_) if no_load => bail!(
            "the Docker engine does not have this image (ID {id}); load it with `nbrt load` \
             or leave out --no-load"
        ),
        Err(_) => {
            nbrt_oci::engine::load(
                store.root().to_path_buf(),
                &found.image,
                std::slice::from_ref(&tag),
                &progress(quiet),
            )
            .await
            .with_context(|| format!("loading the image into the Docker engine as {tag}"))?;
            Ok((tag.to_string(), true))
        }
    }
}

/// Kubernetes nodes pull by name: the reference as given when it names a registry and a
/// tag, else the store's name that does.
fn kubernetes_name(reference: &str, found: &StoredImage) -> Result<String> {
    let remote = |n: &ImageName| {
        let first = n.repository.split('/').next().unwrap_or("");
        n.repository.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost")
    };
    if let Ok(n) = ImageName::parse(reference) {
        if remote(&n) && n.tag != "latest" {
            return Ok(n.to_string());
        }
    }
    if let Some(n) = found.names.iter().find(|n| remote(n) && n.tag != "latest") {
        return Ok(n.to_string());
    }
    bail!(
        "{reference} has no registry name the cluster can pull: push it \
         (`nbrt push {reference} REGISTRY/NAME:TAG`) and give that name, or write a name \
         with --image-name"
    )
}

/// An image the engine has but the store does not: its env and labels from the engine.
async fn engine_facts(name: &str) -> Result<ImageFacts> {
    let docker = nbrt_oci::engine::connect().await?;
    let info = docker.inspect_image(name).await?;
    let cfg = info.config.unwrap_or_default();
    Ok(ImageFacts {
        env: cfg.env.unwrap_or_default(),
        labels: cfg.labels.unwrap_or_default().into_iter().collect(),
        ipykernel: None,
    })
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
    fn arguments_are_checked() {
        assert_eq!(normalize_kernel_name("My Kernel").unwrap(), "my_kernel");
        assert!(normalize_kernel_name("a/b").is_err());
        assert!(check_port_range("0..0").is_ok());
        assert!(check_port_range("40000..41000").is_ok());
        assert!(check_port_range("40000..40100").is_err());
        assert!(check_port_range("41000..40000").is_err());
        assert!(check_port_range("40000-41000").is_err());
        assert_eq!(normalize_language("R").unwrap(), "R");
        assert_eq!(normalize_language("Python").unwrap(), "python");
        assert!(normalize_language("scala").is_err());
        assert!(parse_env(&["A=1".into(), "B_2=x=y".into()]).is_ok());
        assert!(parse_env(&["1A=1".into()]).is_err());
        assert!(parse_env(&["A".into()]).is_err());
        assert_eq!(declared_env(Some("A, B C,,bad-name")), ["A", "B", "C"]);
        assert!(curve_capable(Some("7.4.0")));
        assert!(!curve_capable(Some("6.29.5")));
        assert!(!curve_capable(None));
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
