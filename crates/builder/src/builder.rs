//! Building stacks: each runtime becomes its parent's layers plus one layer per step, every
//! step's layer cached in the store under a key made of the layers below it, its definition
//! and the content of its inputs. A rebuild with nothing changed assembles the image from the
//! cache without running anything; a change rebuilds from the first step it touches.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nbrt_oci::layer::{Compression, LayerInfo};
use nbrt_oci::spec::{annotation, source_date_epoch, Descriptor};
use nbrt_oci::{Digest, Image, ImageName, Progress, RefKind, Store};
use serde::{Deserialize, Serialize};

use crate::config::{runtime_config, step_env, AddedLayer};
use crate::error::{BuildError, IoContext, Result};
use crate::layer_dir::{layer_from_dir, DirLayerOptions};
use crate::lock::{RuntimeLock, StepLock};
use crate::runtime_file::{FileSpec, RuntimeFile};
use crate::sandbox::{self, RunSpec};
use crate::snapshot::{MergedView, Snapshots};
use crate::stack::{Parent, Stack};
use crate::steps;

/// Bumped when a step's output for the same inputs changes.
const CACHE_VERSION: &str = "nbrt-build/3";

/// The build cache: a step's layer under its cache key.
pub(crate) struct BuildCache;
impl RefKind for BuildCache {
    const NAME: &'static str = "build-cache";
    type Payload = CachedStep;
}

/// Parents given as a path, imported once per (path, size, mtime): the image's manifest.
struct PathImport;
impl RefKind for PathImport {
    const NAME: &'static str = "path-import";
    type Payload = Descriptor;
}

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Run every step again, ignoring the cache.
    pub no_cache: bool,
    /// Build exactly what `runtime.lock` records (see [`crate::lock`]); fail when it is
    /// missing or stale.
    pub locked: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub cached: bool,
    pub layer: Digest,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimeReport {
    pub name: String,
    pub id: Digest,
    pub digest: Digest,
    pub steps: Vec<StepReport>,
}

/// One step of a runtime, in build order.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    Bootstrap(crate::runtime_file::Bootstrap),
    Apt(crate::runtime_file::Apt),
    User(crate::runtime_file::User),
    Conda(crate::runtime_file::Conda),
    Pip(crate::runtime_file::Pip),
    Files { files: Vec<FileSpec> },
    Run(crate::runtime_file::RunStep),
}

impl Step {
    pub(crate) fn label(&self) -> String {
        match self {
            Step::Bootstrap(b) => format!("bootstrap {} ({})", b.suite, b.variant),
            Step::Apt(a) => format!("apt {}", a.packages.join(" ")),
            Step::User(u) => format!("user {} {}:{}", u.name, u.uid, u.gid),
            Step::Conda(c) => format!(
                "conda {}",
                c.packages
                    .iter()
                    .chain(&c.files)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Step::Pip(p) => format!(
                "pip {}",
                p.packages
                    .iter()
                    .map(|s| s.get_ref().clone())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Step::Files { files } => format!(
                "files {}",
                files
                    .iter()
                    .map(|f| f.destination.clone())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Step::Run(r) => format!("run {}", r.command),
        }
    }
}

pub(crate) fn plan(rt: &RuntimeFile) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(b) = &rt.bootstrap {
        steps.push(Step::Bootstrap(b.clone()));
    }
    if let Some(a) = rt.apt.as_ref().filter(|a| !a.packages.is_empty()) {
        steps.push(Step::Apt(a.clone()));
    }
    if let Some(u) = &rt.user {
        steps.push(Step::User(u.clone()));
    }
    if let Some(c) = rt
        .conda
        .as_ref()
        .filter(|c| !c.packages.is_empty() || !c.files.is_empty())
    {
        steps.push(Step::Conda(c.clone()));
    }
    if let Some(p) = rt
        .pip
        .as_ref()
        .filter(|p| !p.packages.is_empty() || p.requirements.is_some())
    {
        steps.push(Step::Pip(p.clone()));
    }
    if !rt.files.is_empty() {
        steps.push(Step::Files {
            files: rt.files.clone(),
        });
    }
    for r in &rt.run {
        steps.push(Step::Run(r.clone()));
    }
    steps
}

/// What the cache keeps for a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedStep {
    pub(crate) layer: Descriptor,
    pub(crate) diff_id: Digest,
    pub(crate) created_by: String,
}

pub(crate) fn hash_path(path: &Path, hasher: &mut nbrt_oci::digest::Hasher) -> Result<()> {
    let meta = fs::metadata(path).io_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(path)
            .io_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for n in names {
            hasher.update(
                n.file_name()
                    .map(|f| f.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hash_path(&n, hasher)?;
        }
    } else {
        let bytes = fs::read(path).io_context(|| format!("reading {}", path.display()))?;
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        hasher.update(&std::os::unix::fs::PermissionsExt::mode(&meta.permissions()).to_le_bytes());
    }
    Ok(())
}

/// The file a `files` entry copies: from the stack, or one nbrt provides.
fn file_source(rt: &RuntimeFile, f: &FileSpec) -> Result<PathBuf> {
    match (&f.source, &f.builtin) {
        (Some(src), _) => Ok(rt.dir.join(src)),
        (None, Some(name)) => crate::builtin::resolve(name),
        (None, None) => Err(step_err("files", "an entry without `source` or `builtin`")),
    }
}

/// The files a step reads, which its cache key covers by content.
pub(crate) fn step_inputs(rt: &RuntimeFile, step: &Step) -> Result<Vec<PathBuf>> {
    let rel = |p: &String| rt.dir.join(p);
    Ok(match step {
        Step::Files { files } => files
            .iter()
            .map(|f| file_source(rt, f))
            .collect::<Result<_>>()?,
        Step::Pip(p) => p
            .requirements
            .iter()
            .chain(&p.constraints)
            .chain(&p.wheelhouse)
            .map(rel)
            .collect(),
        Step::Conda(c) => c
            .files
            .iter()
            .map(rel)
            .chain(
                c.channels
                    .iter()
                    .map(|ch| rt.dir.join(ch))
                    .filter(|p| p.is_dir()),
            )
            .collect(),
        _ => Vec::new(),
    })
}

pub(crate) fn step_key(
    parent: &[Digest],
    step: &Step,
    env: &[String],
    pins: Option<&StepLock>,
    inputs: &[PathBuf],
) -> Result<String> {
    let mut h = nbrt_oci::digest::Hasher::new();
    let mut doc = serde_json::json!({ "v": CACHE_VERSION, "parent": parent, "step": step,
        "sde": source_date_epoch() });
    // Commands in the sandbox see the environment; steps that write files directly do not.
    if matches!(step, Step::Run(_) | Step::Apt(_)) {
        doc["env"] = serde_json::json!(env);
    }
    // A locked build installs the lock's pins: its layers are cached apart.
    if let Some(p) = pins {
        doc["locked"] = serde_json::to_value(p).map_err(|e| step_err("lock", e.to_string()))?;
    }
    h.update(&nbrt_oci::json::to_canonical_vec(&doc, "step key")?);
    for p in inputs {
        hash_path(p, &mut h)?;
    }
    Ok(h.finish().0.hex().to_string())
}

/// Build the runtimes of a stack (all, or what `only` needs), parents first.
pub fn build_stack(
    store: &Store,
    stack: &Stack,
    only: Option<&str>,
    opts: &BuildOptions,
    progress: &Progress,
    log: &mut dyn Write,
) -> Result<Vec<RuntimeReport>> {
    let names = match only {
        Some(n) => stack.needed_for(n)?,
        None => stack.order.clone(),
    };
    crate::leftovers::sweep_before_build(&store.tmp(), log);
    let mut built: BTreeMap<String, Image> = BTreeMap::new();
    let mut reports = Vec::new();
    let snapshots = Snapshots::open(store)?;
    for name in names {
        let rt = &stack.runtimes[&name];
        let parent = match &stack.parents[&name] {
            Parent::Scratch => None,
            Parent::Runtime(p) => Some(match built.get(p) {
                Some(i) => i.clone(),
                None => store.resolve(&format!("{p}:latest"))?.image,
            }),
            Parent::Image(r) => Some(store.resolve(r)?.image),
            Parent::Path(p) => Some(import_path_parent(store, &name, p, progress)?),
            Parent::Registry(r) => {
                let opts = nbrt_oci::registry::RegistryOptions {
                    insecure: false,
                    docker_config: None,
                };
                Some(block_on(|| nbrt_oci::registry::pull(store, r, &opts, progress))??.0)
            }
        };
        let (image, steps) = build_runtime(
            store,
            &snapshots,
            rt,
            parent.as_ref(),
            opts,
            &BTreeMap::new(),
            log,
        )?;
        store.tag(&image, &ImageName::parse(&format!("{name}:latest"))?)?;
        writeln!(log, "built {name}: {}", image.id()).ok();
        reports.push(RuntimeReport {
            name: name.clone(),
            id: image.id().clone(),
            digest: image.digest().clone(),
            steps,
        });
        built.insert(name, image);
    }
    Ok(reports)
}

/// Import a parent given as a file or layout path, once per (path, size, mtime): importing
/// a root file system re-reads and compresses it, which a cached rebuild must not pay for.
fn import_path_parent(
    store: &Store,
    name: &str,
    path: &Path,
    progress: &Progress,
) -> Result<Image> {
    let meta = fs::metadata(path).io_context(|| format!("reading {}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = Digest::of_bytes(format!("{}\0{}\0{mtime}", real.display(), meta.len()).as_bytes())
        .hex()
        .to_string();
    if let Some(desc) = store.get_ref::<PathImport>(&key)? {
        if let Ok(image) = store.load_image(&desc) {
            return Ok(image);
        }
    }
    let opts = nbrt_oci::transfer::ImportOptions {
        names: vec![ImageName::parse(&format!("nbrt-base/{name}:from-path"))?],
        ..Default::default()
    };
    let image = nbrt_oci::transfer::import(store, path, &opts, progress)?.0;
    let mut blobs = vec![image.digest().clone(), image.id().clone()];
    blobs.extend(image.layers().iter().map(|l| l.digest.clone()));
    store.put_ref::<PathImport>(&key, &blobs, &image.manifest_descriptor())?;
    Ok(image)
}

/// Build one runtime on `parent`. Steps in `moved` (by index in the plan; see
/// [`crate::rebase`]) take the given layer as it is instead of running or looking in the cache.
pub(crate) fn build_runtime(
    store: &Store,
    snapshots: &Snapshots,
    rt: &RuntimeFile,
    parent: Option<&Image>,
    opts: &BuildOptions,
    moved: &BTreeMap<usize, CachedStep>,
    log: &mut dyn Write,
) -> Result<(Image, Vec<StepReport>)> {
    let mut layers: Vec<Descriptor> = parent.map(|p| p.layers().to_vec()).unwrap_or_default();
    let mut diff_ids: Vec<Digest> = parent.map(|p| p.diff_ids().to_vec()).unwrap_or_default();
    let mut added = Vec::new();
    let mut reports = Vec::new();
    let mut locks = Vec::new();
    let env = step_env(parent.map(|p| p.config.value()), rt);
    let lock_in = if opts.locked {
        let lock = RuntimeLock::read_current(rt)?;
        lock.check_parent(rt, parent)?;
        Some(lock)
    } else {
        None
    };
    for (index, step) in plan(rt).into_iter().enumerate() {
        let started = Instant::now();
        let label = step.label();
        let pins = lock_in.as_ref().and_then(|l| l.pins(&step));
        let key = step_key(
            &diff_ids,
            &step,
            &env,
            pins.as_ref(),
            &step_inputs(rt, &step)?,
        )?;
        let cached = if opts.no_cache || moved.contains_key(&index) {
            None
        } else {
            store.get_ref::<BuildCache>(&key)?
        };
        let (entry, was_cached) = match (cached, moved.get(&index)) {
            (Some(c), _) => (c, true),
            (None, Some(m)) => {
                // Recorded under this parent too, so a later build on it finds the layer.
                store.put_ref::<BuildCache>(&key, std::slice::from_ref(&m.layer.digest), m)?;
                (m.clone(), false)
            }
            (None, None) => {
                writeln!(log, "{}: {label}", rt.name).ok();
                let below: Vec<(&Descriptor, &Digest)> = layers.iter().zip(&diff_ids).collect();
                let lowers = snapshots.ensure_all(store, &below)?;
                tracing::debug!(seconds = started.elapsed().as_secs_f64(), "lowers ready");
                let (info, lock) = run_step(
                    store,
                    snapshots,
                    rt,
                    &step,
                    pins.as_ref(),
                    Below {
                        lowers: &lowers,
                        parent: &diff_ids,
                        env: &env,
                        reuse: !opts.no_cache,
                    },
                    log,
                )?;
                if let Some(lock) = &lock {
                    crate::lock::record(store, &key, lock)?;
                }
                let entry = CachedStep {
                    layer: info.descriptor(),
                    diff_id: info.diff_id.clone(),
                    created_by: label.clone(),
                };
                store.put_ref::<BuildCache>(&key, std::slice::from_ref(&info.digest), &entry)?;
                (entry, false)
            }
        };
        reports.push(StepReport {
            step: label,
            cached: was_cached,
            layer: entry.layer.digest.clone(),
            seconds: started.elapsed().as_secs_f64(),
        });
        layers.push(entry.layer.clone());
        diff_ids.push(entry.diff_id.clone());
        if !opts.locked {
            locks.extend(crate::lock::step_lock(
                store, snapshots, rt, &step, &key, &layers, &diff_ids,
            )?);
        }
        added.push(AddedLayer {
            diff_id: entry.diff_id,
            created_by: entry.created_by,
        });
    }
    let config = runtime_config(parent.map(|p| p.config.value()), rt, &added);
    let mut annotations = BTreeMap::new();
    if let Some(p) = parent {
        annotations.insert(annotation::BASE_DIGEST.to_string(), p.digest().to_string());
    }
    let image = Image::assemble(config, layers, annotations)?;
    if !opts.locked {
        crate::lock::write(rt, parent, locks)?;
    }
    crate::rebase::record_build(store, rt, &image)?;
    Ok((image, reports))
}

/// Run one async operation (registry pull, conda solve) from the synchronous builder. Called
/// from inside an async runtime (the CLI runs in one), a runtime may not be started on that
/// thread, so it runs on a thread of its own then.
fn block_on<M, F>(make: M) -> Result<F::Output>
where
    M: FnOnce() -> F + Send,
    F: std::future::Future,
    F::Output: Send,
{
    let run = move || -> Result<F::Output> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .io_context(|| "starting an async runtime")?;
        Ok(runtime.block_on(make()))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| s.spawn(run).join()).unwrap_or_else(|_| {
        Err(BuildError::Step {
            step: "async".to_string(),
            message: "the async operation panicked".to_string(),
        })
    })
}

fn step_err(step: &str, message: impl Into<String>) -> BuildError {
    BuildError::Step {
        step: step.to_string(),
        message: message.into(),
    }
}

/// The host's CA bundle, given to steps that reach package registries.
fn host_ca() -> Option<PathBuf> {
    let p = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    p.is_file().then_some(p)
}

fn dir_layer(store: &Store, dir: &Path, overlay_upper: bool) -> Result<LayerInfo> {
    layer_from_dir(
        store,
        dir,
        &DirLayerOptions {
            overlay_upper,
            clamp_mtime: source_date_epoch().map(|s| s.max(0) as u64),
            compression: Compression::Gzip,
            exclude: Vec::new(),
        },
    )
}

/// The staging tree of a pip or conda step becomes the snapshot of its layer: the next step
/// (or the child runtime) needs it as a lower, and unpacking thousands of files again costs
/// more than the step's own work. A failure only means the blob is unpacked when needed.
pub(crate) fn adopt_staging(snapshots: &Snapshots, layer: &LayerInfo, staging: &Path) {
    let clamp = source_date_epoch().map(|s| s.max(0) as u64);
    if let Err(e) = snapshots.adopt(&layer.diff_id, staging, clamp) {
        tracing::debug!("the step's tree was not kept as a snapshot: {e}");
    }
}

/// What a step runs on: the parent's layer directories (top first) and the image's
/// environment; and whether it may reuse parts of earlier steps (pip pieces; not with
/// `--no-cache`).
struct Below<'a> {
    lowers: &'a [PathBuf],
    /// Diff IDs of the parent's layers, bottom first.
    parent: &'a [Digest],
    env: &'a [String],
    reuse: bool,
}

fn run_step(
    store: &Store,
    snapshots: &Snapshots,
    rt: &RuntimeFile,
    step: &Step,
    pins: Option<&StepLock>,
    below: Below<'_>,
    log: &mut dyn Write,
) -> Result<(LayerInfo, Option<StepLock>)> {
    let Below {
        lowers,
        parent,
        env,
        reuse,
    } = below;
    let scratch = crate::leftovers::StepDir::new(&store.tmp())?;
    // Steps that write files directly fill this tree, which stands for the image root.
    let staging = scratch.path().join("root");
    fs::create_dir_all(&staging).io_context(|| "creating the staging directory")?;
    let sandboxed =
        |argv: Vec<String>, user: &str, network: bool, log: &mut dyn Write| -> Result<LayerInfo> {
            let spec = RunSpec {
                argv,
                user: user.to_string(),
                env: env.to_vec(),
                workdir: String::new(),
                network,
                host_ca_bundle: if network { host_ca() } else { None },
            };
            let run = sandbox::run(lowers, &spec, scratch.path(), log)?;
            dir_layer(store, &run.upper_dir(), true)
        };
    match step {
        Step::Bootstrap(b) => {
            let tar = scratch.path().join("rootfs.tar");
            let mut cmd = std::process::Command::new("mmdebstrap");
            cmd.args(["--quiet", &format!("--variant={}", b.variant)]);
            let packages = crate::lock::deb_args(pins, &b.packages);
            if !packages.is_empty() {
                cmd.arg(format!("--include={}", packages.join(",")));
            }
            cmd.arg(&b.suite).arg(&tar).arg(&b.mirror);
            let out = cmd.output().map_err(|e| {
                step_err(
                    "bootstrap",
                    format!("cannot run mmdebstrap (apt-get install mmdebstrap): {e}"),
                )
            })?;
            if !out.status.success() {
                return Err(step_err(
                    "bootstrap",
                    format!(
                        "mmdebstrap failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ));
            }
            let file = fs::File::open(&tar).io_context(|| "reading the bootstrap tar")?;
            let (info, _) = nbrt_oci::format::rootfs::write_layer(
                store,
                std::io::BufReader::new(file),
                Compression::Gzip,
                &Progress::hidden().spinner("bootstrap"),
            )?;
            Ok((info, None))
        }
        Step::Apt(a) => {
            let script = format!(
                "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
                 apt-get install -y -qq --no-install-recommends {}; apt-get clean; rm -rf /var/lib/apt/lists/*",
                crate::lock::deb_args(pins, &a.packages).join(" ")
            );
            Ok((
                sandboxed(
                    vec!["/bin/sh".into(), "-c".into(), script],
                    "root",
                    true,
                    log,
                )?,
                None,
            ))
        }
        Step::Run(r) => Ok((
            sandboxed(
                vec!["/bin/sh".into(), "-c".into(), r.command.clone()],
                &r.user,
                r.network,
                log,
            )?,
            None,
        )),
        Step::User(u) => {
            steps::user::apply(&MergedView::new(lowers.to_vec()), u, &staging)?;
            Ok((dir_layer(store, &staging, false)?, None))
        }
        Step::Files { files } => {
            let view = MergedView::new(lowers.to_vec());
            for f in files {
                copy_file_spec(rt, f, &view, &staging)?;
            }
            Ok((dir_layer(store, &staging, false)?, None))
        }
        Step::Pip(p) => crate::pip_step::run(
            crate::pip_step::PipRun {
                store,
                snapshots,
                rt,
                pip: p,
                locked: match pins {
                    Some(StepLock::Pip(w)) => Some(w.clone()),
                    _ => None,
                },
                lowers,
                parent,
                reuse,
                staging: &staging,
                scratch: scratch.path(),
            },
            log,
        ),
        Step::Conda(c) => {
            let view = MergedView::new(lowers.to_vec());
            let meta_dir = format!("{}/conda-meta", c.prefix.trim_start_matches('/'));
            let mut installed = Vec::new();
            if view.exists(&meta_dir) {
                for n in view
                    .read_dir(&meta_dir)?
                    .into_iter()
                    .filter(|n| n.ends_with(".json"))
                {
                    if let Some(b) = view.read(&format!("{meta_dir}/{n}"))? {
                        installed.push(b);
                    }
                }
            }
            let python = steps::pip::python_version(&view, &c.prefix).ok();
            let req = steps::conda::CondaRequest {
                prefix: c.prefix.clone(),
                channels: c
                    .channels
                    .iter()
                    .map(|ch| {
                        if rt.dir.join(ch).is_dir() {
                            rt.dir.join(ch).display().to_string()
                        } else {
                            ch.clone()
                        }
                    })
                    .collect(),
                specs: c.packages.clone(),
                package_files: c.files.iter().map(|f| rt.dir.join(f)).collect(),
                platform: "linux-64".into(),
                locked: match pins {
                    Some(StepLock::Conda(c)) => Some(c.clone()),
                    _ => None,
                },
            };
            let cache = store.cache(nbrt_oci::Bucket::Conda);
            let out =
                block_on(|| steps::conda::install(&installed, python, &req, &staging, &cache))??;
            finish_env_staging(&view, &c.prefix, &staging, &out.whiteouts)?;
            let layer = dir_layer(store, &staging, true)?;
            adopt_staging(snapshots, &layer, &staging);
            Ok((layer, None))
        }
    }
}

/// What the pip step asks uv for (`locked`: the pins of `runtime.lock`).
pub(crate) fn pip_request(
    rt: &RuntimeFile,
    p: &crate::runtime_file::Pip,
    locked: Option<Vec<steps::pip::LockedWheel>>,
) -> steps::pip::PipRequest {
    steps::pip::PipRequest {
        prefix: p.prefix.clone(),
        packages: p.packages.iter().map(|s| s.get_ref().clone()).collect(),
        requirements: p.requirements.as_ref().map(|r| rt.dir.join(r)),
        constraints: p.constraints.as_ref().map(|r| rt.dir.join(r)),
        index_url: p.index_url.clone(),
        extra_index_urls: p.extra_index_urls.clone(),
        wheelhouses: p.wheelhouse.iter().map(|w| rt.dir.join(w)).collect(),
        locked,
    }
}

/// Who owns the environment at `prefix` when it is not root: (uid, gid, setgid directory).
pub(crate) fn env_owner(view: &MergedView, prefix: &str) -> Result<Option<(u32, u32, bool)>> {
    use std::os::unix::fs::MetadataExt;
    Ok(view
        .symlink_metadata(prefix.trim_start_matches('/'))?
        .filter(|m| m.uid() != 0)
        .map(|m| (m.uid(), m.gid(), m.mode() & 0o2000 != 0)))
}

/// New files of an environment take its owner (the notebook user in the docker-stacks
/// layout), group-writable; replaced files become overlay whiteouts in the staging tree.
pub(crate) fn finish_env_staging(
    view: &MergedView,
    prefix: &str,
    staging: &Path,
    whiteouts: &[String],
) -> Result<()> {
    let rel = prefix.trim_start_matches('/');
    if let Some((uid, gid, setgid)) = env_owner(view, prefix)? {
        let dir = staging.join(rel);
        if dir.exists() {
            steps::user::own_tree(&dir, uid, gid, setgid)?;
        }
    }
    for w in whiteouts {
        let path = staging.join(w);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).io_context(|| format!("creating {}", parent.display()))?;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| step_err("whiteout", format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// The directories above `rel` that the image already has get their owner, mode and time
/// from the image: the layer carries entries for them, which would otherwise hand, say,
/// jovyan's `/opt/conda` to root. Directories the step creates take the owner and mode of
/// the directory they are made in (jovyan's setgid tree stays jovyan's).
fn mirror_parents(view: &MergedView, staging: &Path, rel: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = String::new();
    // (uid, gid, mode) of the nearest directory the image has.
    let mut above: Option<(u32, u32, u32)> = None;
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(part);
        let dir = staging.join(&path);
        let existing = view.symlink_metadata(&path)?.filter(|m| m.is_dir());
        if let Some(meta) = &existing {
            above = Some((meta.uid(), meta.gid(), meta.mode() & 0o7777));
        }
        let Some((uid, gid, mode)) = above else {
            continue;
        };
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .io_context(|| format!("setting the owner of {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .io_context(|| format!("setting the mode of {}", dir.display()))?;
        if let Some(meta) = existing {
            let time = |sec, nsec| rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec as _,
            };
            let times = rustix::fs::Timestamps {
                last_access: time(meta.atime(), meta.atime_nsec()),
                last_modification: time(meta.mtime(), meta.mtime_nsec()),
            };
            rustix::fs::utimensat(rustix::fs::CWD, &dir, &times, rustix::fs::AtFlags::empty())
                .map_err(|e| step_err("files", format!("{}: {e}", dir.display())))?;
        }
    }
    Ok(())
}

fn copy_file_spec(rt: &RuntimeFile, f: &FileSpec, view: &MergedView, staging: &Path) -> Result<()> {
    let src = file_source(rt, f)?;
    let mut dest_rel = f.destination.trim_start_matches('/').to_string();
    if f.destination.ends_with('/') {
        let name = src
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        dest_rel = format!("{}{name}", dest_rel);
    }
    // Through the image's symlinks (`/bin` → `usr/bin`): a directory in the layer would
    // replace the link.
    let dest_rel = view.resolve_lenient(&dest_rel)?;
    let dest = staging.join(&dest_rel);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).io_context(|| format!("creating {}", parent.display()))?;
    }
    if src.is_dir() {
        steps::user::copy_tree(&src, &dest)?;
    } else {
        fs::copy(&src, &dest).io_context(|| format!("copying {}", src.display()))?;
    }
    if let Some(mode) = &f.mode {
        let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| step_err("files", format!("bad mode {mode}")))?;
        fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(m))
            .io_context(|| format!("setting the mode of {}", dest.display()))?;
    }
    let (uid, gid) = match &f.owner {
        Some(owner) => {
            let text = |p: &str| -> Result<String> {
                Ok(view
                    .read(p)?
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default())
            };
            let u = sandbox::resolve_user(owner, &text("etc/passwd")?, &text("etc/group")?)?;
            (u.uid, u.gid)
        }
        None => (0, 0),
    };
    steps::user::own_tree(&dest, uid, gid, false)?;
    // Last, so that creating the file does not change its directory's time again.
    mirror_parents(view, staging, &dest_rel)
}
