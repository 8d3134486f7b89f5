//! The driver: each runtime of a stack becomes its parent's layers plus one layer per step.
//! For every step of the plan ([`steps::plan`]): its cache key ([`Step::cache_key`]), then
//! the layer from the cache or the step run ([`steps::StepKind::run`]), then its lock entry;
//! last the image is assembled, `runtime.lock` written and the build recorded. A rebuild
//! with nothing changed assembles the image from the cache without running anything; a
//! change rebuilds from the first step it touches.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use nbrt_oci::spec::{annotation, Descriptor};
use nbrt_oci::{Digest, Image, ImageName, Progress, RefKind, Store};
use serde::Serialize;

use crate::cache::{self, CachedStep};
use crate::config::{runtime_config, step_env, AddedLayer};
use crate::epoch;
use crate::error::{BuildError, IoContext, Result};
use crate::lock::{self, RuntimeLock, StepLock};
use crate::runtime_file::RuntimeFile;
use crate::snapshot::{MergedView, Snapshots};
use crate::stack::{Parent, Stack};
use crate::steps::{self, LockContext, RunContext, Step};

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
    /// How `runtime.lock` is used (see [`crate::lock`]).
    pub lock: LockMode,
}

/// How a build uses each runtime's `runtime.lock`, as Cargo uses `Cargo.lock`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Build what a current lock pins and write the lock again (its parent may have moved);
    /// resolve anew, and write the lock, only where there is none or the runtime file changed
    /// since it was written.
    #[default]
    Follow,
    /// Build exactly what the lock pins; fail when it is missing or stale, or was made on
    /// another parent. Writes nothing (`--locked`).
    Locked,
    /// Resolve every package anew and rewrite the lock (`--update-lock`).
    Update,
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
        let parent = parent_image(store, stack, &name, &built, progress)?;
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

/// The image the runtime `name` is built on: a runtime of the stack (from `built`, else its
/// `:latest` in the store), an image of the store, a path imported, or a registry pull.
fn parent_image(
    store: &Store,
    stack: &Stack,
    name: &str,
    built: &BTreeMap<String, Image>,
    progress: &Progress,
) -> Result<Option<Image>> {
    Ok(match &stack.parents[name] {
        Parent::Scratch => None,
        Parent::Runtime(p) => Some(match built.get(p) {
            Some(i) => i.clone(),
            None => store.resolve(&format!("{p}:latest"))?.image,
        }),
        Parent::Image(r) => Some(store.resolve(r)?.image),
        Parent::Path(p) => Some(import_path_parent(store, name, p, progress)?),
        Parent::Registry(r) => {
            let opts = nbrt_oci::registry::RegistryOptions {
                insecure: false,
                docker_config: None,
            };
            Some(
                crate::blocking::block_on(|| nbrt_oci::registry::pull(store, r, &opts, progress))??
                    .0,
            )
        }
    })
}

/// Write the `runtime.lock` of the runtime `name` without building it (`nbrt build --only
/// NAME --lock-only`), for runtimes too large to build where their lock is made: the
/// runtimes it is built on are built (following their locks, as `build_stack` does), then
/// its pip step is resolved on its parent's layers without installing anything
/// ([`steps::pip::uv::resolve`]). A later `nbrt build` installs exactly those pins. Only a
/// runtime whose package step is `[pip]` resolves so; bootstrap, apt, python and conda
/// steps resolve by running (`nbrt build` writes their lock). Returns the lock's path.
pub fn lock_only(
    store: &Store,
    stack: &Stack,
    name: &str,
    opts: &BuildOptions,
    progress: &Progress,
    log: &mut dyn Write,
) -> Result<std::path::PathBuf> {
    stack.needed_for(name)?;
    let rt = &stack.runtimes[name];
    let plan = steps::plan(rt);
    if let Some(step) = plan.iter().find(|s| {
        !matches!(
            s,
            Step::Pip(_) | Step::User(_) | Step::Files(_) | Step::Run(_)
        )
    }) {
        return Err(BuildError::Lock(format!(
            "{name}: its {} step resolves only when it runs; `nbrt build --only {name}` \
             writes its lock (--lock-only resolves runtimes whose package step is [pip])",
            step.kind().label()
        )));
    }
    if let Parent::Runtime(p) = &stack.parents[name] {
        build_stack(store, stack, Some(p), opts, progress, log)?;
    }
    let parent = parent_image(store, stack, name, &BTreeMap::new(), progress)?;
    let snapshots = Snapshots::open(store)?;
    let view = match &parent {
        Some(p) => {
            let below: Vec<(&Descriptor, &Digest)> = p.layers().iter().zip(p.diff_ids()).collect();
            MergedView::new(snapshots.ensure_all(store, &below)?)
        }
        None => MergedView::new(Vec::new()),
    };
    let mut locks = Vec::new();
    for step in &plan {
        if let Step::Pip(p) = step {
            writeln!(log, "{name}: resolving the pip step (nothing installed)").ok();
            locks.push(steps::pip::resolve_lock(store, rt, p, &view)?);
        }
    }
    lock::write(rt, parent.as_ref(), locks)
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

/// A layer a rebase moves (see [`crate::rebase`]), with the lock entry its step had on the
/// old base (the same on the new one: the layer is the same, and so is what it was solved
/// against), so the lock is not derived again.
#[derive(Debug, Clone)]
pub(crate) struct Moved {
    pub step: CachedStep,
    pub lock: Option<StepLock>,
}

/// Build one runtime on `parent`. Steps in `moved` (by index in the plan) take the given
/// layer as it is instead of running or looking in the cache.
pub(crate) fn build_runtime(
    store: &Store,
    snapshots: &Snapshots,
    rt: &RuntimeFile,
    parent: Option<&Image>,
    opts: &BuildOptions,
    moved: &BTreeMap<usize, Moved>,
    log: &mut dyn Write,
) -> Result<(Image, Vec<StepReport>)> {
    let mut layers: Vec<Descriptor> = parent.map(|p| p.layers().to_vec()).unwrap_or_default();
    let mut diff_ids: Vec<Digest> = parent.map(|p| p.diff_ids().to_vec()).unwrap_or_default();
    let mut added = Vec::new();
    let mut reports = Vec::new();
    let mut locks = Vec::new();
    let env = step_env(parent.map(|p| p.config.value()), rt);
    let lock_in = match opts.lock {
        LockMode::Locked => {
            let lock = RuntimeLock::read_current(rt)?;
            lock.check_parent(rt, parent)?;
            Some(lock)
        }
        LockMode::Follow => lock::follow(rt, parent, log)?,
        LockMode::Update => None,
    };
    let write_lock = opts.lock != LockMode::Locked;
    // The runtime's start time and its steps' times (see `crate::epoch`): never the clock.
    let mut start = epoch::start(parent.map(|p| p.config.value()));
    let mut newest = start;
    let plan = steps::plan(rt);
    for (index, step) in plan.iter().enumerate() {
        let started = Instant::now();
        let kind = step.kind();
        let label = kind.label();
        let pins = lock_in
            .as_ref()
            .zip(kind.lock_section())
            .map(|(l, s)| l.section(s));
        let inputs = kind.inputs(rt)?;
        let key = step.cache_key(&diff_ids, &env, pins.as_ref(), &inputs, start)?;
        let cached = if opts.no_cache || moved.contains_key(&index) {
            None
        } else {
            cache::get(store, &key)?
        };
        let (entry, was_cached) = match (cached, moved.get(&index)) {
            (Some(c), _) => (c, true),
            (None, Some(m)) => {
                // Recorded under this parent too, so a later build on it finds the layer.
                cache::put(store, &key, &m.step)?;
                if let Some(lock) = &m.lock {
                    lock::remember(store, &key, lock)?;
                }
                (m.step.clone(), false)
            }
            (None, None) => {
                writeln!(log, "{}: {label}", rt.name).ok();
                let below: Vec<(&Descriptor, &Digest)> = layers.iter().zip(&diff_ids).collect();
                let lowers = snapshots.ensure_all(store, &below)?;
                tracing::debug!(seconds = started.elapsed().as_secs_f64(), "lowers ready");
                let scratch = crate::leftovers::StepDir::new(&store.tmp())?;
                let staging = scratch.path().join("root");
                fs::create_dir_all(&staging).io_context(|| "creating the staging directory")?;
                let cx = RunContext {
                    store,
                    snapshots,
                    rt,
                    pins: pins.as_ref(),
                    lowers: &lowers,
                    parent: &diff_ids,
                    env: &env,
                    reuse: !opts.no_cache,
                    scratch: scratch.path(),
                    staging: &staging,
                    epoch: start,
                    started: epoch::step_start(scratch.path())?,
                    step_epoch: Cell::new(start),
                };
                let out = kind.run(&cx, log)?;
                if let Some(lock) = &out.lock {
                    lock::remember(store, &key, lock)?;
                }
                let entry = CachedStep {
                    layer: out.layer.descriptor(),
                    diff_id: out.layer.diff_id.clone(),
                    created_by: label.clone(),
                    epoch: cx.step_epoch.get(),
                };
                cache::put(store, &key, &entry)?;
                (entry, false)
            }
        };
        reports.push(StepReport {
            step: label,
            cached: was_cached,
            layer: entry.layer.digest.clone(),
            seconds: started.elapsed().as_secs_f64(),
        });
        let (below, step_start) = (diff_ids.len(), start);
        // A bootstrap gives a runtime without a parent its start time.
        start = start.or(entry.epoch);
        newest = newest.max(entry.epoch);
        layers.push(entry.layer.clone());
        diff_ids.push(entry.diff_id.clone());
        if write_lock {
            let derived = step_lock(store, snapshots, rt, step, &key, &layers, &diff_ids)?;
            if let (None, Some(derived)) = (&pins, &derived) {
                // The next build follows the lock written now and asks for exactly these
                // pins: the layer just resolved is theirs, so it is cached under that key too.
                let pinned =
                    step.cache_key(&diff_ids[..below], &env, Some(derived), &inputs, step_start)?;
                cache::put(store, &pinned, &entry)?;
                lock::remember(store, &pinned, derived)?;
            }
            locks.extend(derived);
        }
        added.push(AddedLayer {
            diff_id: entry.diff_id,
            created_by: entry.created_by,
        });
    }
    let wanted = crate::config::version_label_names(parent.map(|p| p.config.value()), rt);
    let prefix = rt.pip.as_ref().map_or("/opt/conda", |p| p.prefix.as_str());
    // What the pip step installed, from its lock: most builds then need not unpack the new
    // layers to read their versions.
    let pip_versions = || -> BTreeMap<String, String> {
        locks
            .iter()
            .chain(&lock_in.as_ref().map(|l| l.section(lock::LockSection::Pip)))
            .filter_map(|l| match l {
                StepLock::Pip(wheels) => Some(wheels),
                _ => None,
            })
            .flatten()
            .map(|w| {
                (
                    nbrt_oci::facts::dist_info::normalize(&w.name),
                    w.version.clone(),
                )
            })
            .collect()
    };
    let versions = if wanted.is_empty() {
        BTreeMap::new()
    } else if let Some(versions) = crate::config::version_labels_without_files(
        parent.map(|p| p.config.value()),
        &plan,
        prefix,
        &pip_versions(),
        &wanted,
    ) {
        versions
    } else {
        let below: Vec<(&Descriptor, &Digest)> = layers.iter().zip(&diff_ids).collect();
        let view = MergedView::new(snapshots.ensure_all(store, &below)?);
        crate::config::version_labels(&view, prefix, &wanted)?
    };
    let created = epoch::fixed().or(newest);
    let config = runtime_config(
        parent.map(|p| p.config.value()),
        rt,
        &added,
        &versions,
        created,
    );
    let mut annotations = BTreeMap::new();
    if let Some(p) = parent {
        annotations.insert(annotation::BASE_DIGEST.to_string(), p.digest().to_string());
    }
    let image = Image::assemble(config, layers, annotations)?;
    if write_lock {
        lock::write(rt, parent, locks)?;
    }
    crate::record::record_build(store, rt, &image)?;
    Ok((image, reports))
}

/// A step's contribution to the lock, derived from its layer (`layers`/`diff_ids` end with
/// the step's own layer), or remembered from when this step key was locked before.
pub fn step_lock(
    store: &Store,
    snapshots: &Snapshots,
    rt: &RuntimeFile,
    step: &Step,
    key: &str,
    layers: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<Option<StepLock>> {
    if step.kind().lock_section().is_none() {
        return Ok(None);
    }
    if let Some(found) = lock::remembered(store, key)? {
        return Ok(Some(found));
    }
    let below: Vec<(&Descriptor, &Digest)> = layers.iter().zip(diff_ids).collect();
    let dirs = snapshots.ensure_all(store, &below)?;
    let cx = LockContext {
        store,
        rt,
        own: MergedView::new(vec![dirs[0].clone()]),
        after: MergedView::new(dirs.clone()),
        before: MergedView::new(dirs[1..].to_vec()),
    };
    let found = step.kind().lock(&cx)?;
    if let Some(found) = &found {
        lock::remember(store, key, found)?;
    }
    Ok(found)
}
