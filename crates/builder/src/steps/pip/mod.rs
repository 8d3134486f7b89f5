//! The pip step: uv installs into the staging tree ([`uv`]), the image's interpreter
//! compiles the new files ([`bytecode`]), the layer is put together from per-distribution
//! pieces ([`pieces`]), and the lock is read while the layer is written.
//!
//! A step run again after packages were only added (the earlier run's requirements are all
//! still there, same parent, indexes and files) offers uv the distributions of that run as
//! installed: uv keeps them where the requirements allow, as it keeps what an environment
//! has, and installs only what is new; their files come from their pieces. A package that
//! was removed or changed in the runtime file makes the step resolve from scratch, and
//! `--no-cache` or `--locked` never use the earlier run.

pub mod bytecode;
pub mod pieces;
pub mod uv;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use nbrt_oci::facts::dist_info;
use nbrt_oci::layer::LayerInfo;
use nbrt_oci::{Digest, Store};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::lock::{LockSection, LockedWheel, StepLock};
use crate::runtime_file::{Pip, RuntimeFile};
use crate::snapshot::MergedView;
use crate::steps::{env, LockContext, Rebase, RebaseContext, RunContext, StepKind, StepOutput};
use pieces::{Piece, PieceCache, Source};

/// Store refs of this kind hold, per runtime, parent and pip definition, what the step's
/// last runs installed.
struct PipPrevious;
impl nbrt_oci::RefKind for PipPrevious {
    const NAME: &'static str = "pip-previous";
    type Payload = Runs;
}

/// What a run of the step installed: its requirements and the pieces of its distributions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Previous {
    packages: Vec<String>,
    pieces: Vec<String>,
    /// The run's lock entries: a later run's lock takes the wheels of the distributions it
    /// kept from here instead of asking the index again.
    #[serde(default)]
    wheels: Vec<LockedWheel>,
}

/// The last runs of a step (most recent first), one per set of requirements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Runs {
    runs: Vec<Previous>,
}

/// Store refs of this kind name, per layer (diff ID), the pieces it is made of: `nbrt gc`
/// keeps the pieces of the layers stored images have.
struct PipLayer;
impl nbrt_oci::RefKind for PipLayer {
    const NAME: &'static str = "pip-layer";
    type Payload = LayerPieces;
}

/// The pieces (keys, hex) a pip layer is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerPieces {
    pieces: Vec<String>,
}

/// How many earlier runs of a step are remembered.
const RUNS_KEPT: usize = 8;

impl StepKind for Pip {
    fn label(&self) -> String {
        format!(
            "pip {}",
            self.packages
                .iter()
                .map(|s| s.get_ref().clone())
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn inputs(&self, rt: &RuntimeFile) -> Result<Vec<PathBuf>> {
        Ok(self
            .requirements
            .iter()
            .chain(&self.constraints)
            .chain(&self.wheelhouse)
            .map(|p| rt.dir.join(p))
            .collect())
    }

    fn lock_section(&self) -> Option<LockSection> {
        Some(LockSection::Pip)
    }

    fn run(&self, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput> {
        run(self, cx, log)
    }

    fn lock(&self, cx: &LockContext<'_>) -> Result<Option<StepLock>> {
        let python = env::python_version(&cx.after, &self.prefix)?;
        pip_lock(cx.store, cx.rt, self, &cx.own, python, &[]).map(Some)
    }

    fn rebase(&self, cx: &RebaseContext<'_>) -> Result<Rebase> {
        env::rebase_decision(cx, &self.prefix, env::Installed::DistInfo)
    }
}

fn run(p: &Pip, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput> {
    let RunContext {
        store,
        rt,
        lowers,
        parent,
        reuse,
        staging,
        scratch,
        ..
    } = *cx;
    let locked = match cx.pins {
        Some(StepLock::Pip(w)) => Some(w.clone()),
        _ => None,
    };
    let view = MergedView::new(lowers.to_vec());
    let unlocked = locked.is_none();
    let req = pip_request(rt, p, locked);
    let cache = reuse.then(|| PieceCache::open(store)).transpose()?;
    let previous_key = previous_key(rt, p, parent, cx.epoch)?;
    // The earlier runs of the step this unlocked run may build on.
    let earlier = match (&cache, unlocked) {
        (Some(_), true) => read_runs(store, &previous_key),
        _ => Runs::default(),
    };
    let previous = match &cache {
        Some(cache) => previous_pieces(cache, &earlier, p),
        None => Vec::new(),
    };
    let preferred: Vec<uv::Preferred> = previous
        .iter()
        .map(|piece| uv::Preferred {
            dist_info: piece.info.dist_info.clone(),
            seed: piece.seed_dir(),
        })
        .collect();
    let step_started = Instant::now();
    let out = uv::install(
        &view,
        &req,
        staging,
        &store.cache(nbrt_oci::Bucket::Uv),
        &preferred,
        log,
    )?;
    let kept: Vec<Piece> = previous
        .into_iter()
        .filter(|piece| out.kept.contains(&piece.info.dist_info))
        .collect();
    let site_rel = dist_info::site_packages(&p.prefix, out.python);
    // The lock reads every distribution's dist-info: the staging tree's, and the kept ones'
    // from their seeds.
    let kept_meta = scratch.join("kept");
    for k in &kept {
        let dir = kept_meta.join(&site_rel).join(&k.info.dist_info);
        fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        for entry in fs::read_dir(k.seed_dir()).io_context(|| "reading a piece's seed")? {
            let entry = entry.io_context(|| "reading a piece's seed")?;
            fs::copy(entry.path(), dir.join(entry.file_name()))
                .io_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    // Wheels earlier runs locked: those of the kept distributions need no lookup.
    let known: Vec<LockedWheel> = earlier.runs.into_iter().flat_map(|r| r.wheels).collect();
    let lock_view = MergedView::new(vec![staging.to_path_buf(), kept_meta.clone()]);
    // The lock (uv's wheel lookup) runs from here on, beside the bytecode and the layer: it
    // reads only the dist-info directories uv wrote, which nothing below changes.
    let (layer, lock) = std::thread::scope(|s| {
        let lock =
            unlocked.then(|| s.spawn(|| pip_lock(store, rt, p, &lock_view, out.python, &known)));
        let layer = write_pip_layer(cx, p, &view, &out, cache.as_ref(), &kept, step_started, log);
        let lock = lock.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(uv::err("reading the lock panicked")))
        });
        (layer, lock)
    });
    let ((layer, report, piece_keys), lock) = (layer?, lock.transpose()?);
    writeln!(
        log,
        "pip: {} distributions kept from an earlier run, {} taken from the piece cache, {} new",
        kept.len(),
        report.cached - kept.len(),
        report.made
    )
    .ok();
    if let (Some(pieces), true) = (&piece_keys, reuse) {
        store.put_ref::<PipLayer>(
            layer.diff_id.hex(),
            &[],
            &LayerPieces {
                pieces: pieces.clone(),
            },
        )?;
    }
    // A run that followed the lock is recorded too: adding a package to a runtime built from
    // its committed lock then keeps everything it had.
    if let (Some(pieces), true) = (piece_keys, reuse) {
        let mut packages: Vec<String> = p.packages.iter().map(|s| s.get_ref().clone()).collect();
        packages.sort();
        packages.dedup();
        let mut runs = read_runs(store, &previous_key);
        runs.runs.retain(|r| r.packages != packages);
        let wheels = match (&lock, cx.pins) {
            (Some(StepLock::Pip(wheels)), _) | (None, Some(StepLock::Pip(wheels))) => {
                wheels.clone()
            }
            _ => Vec::new(),
        };
        runs.runs.insert(
            0,
            Previous {
                packages,
                pieces,
                wheels,
            },
        );
        runs.runs.truncate(RUNS_KEPT);
        store.put_ref::<PipPrevious>(&previous_key, &[], &runs)?;
    }
    // The staging tree is this layer's snapshot only when every file came from it: pieces
    // from the cache carry the times of the run that made them.
    if report.cached == 0 {
        cx.adopt_staging(&layer);
    }
    tracing::debug!(
        seconds = step_started.elapsed().as_secs_f64(),
        "pip step done"
    );
    Ok(StepOutput { layer, lock })
}

/// What [`write_pip_layer`] made: the layer, how its pieces came, and the pieces' keys (none
/// when a piece cannot be kept).
type PipLayerOut = (LayerInfo, pieces::LayerReport, Option<Vec<String>>);

/// The step's layer from what uv installed in the staging tree: the distributions split into
/// pieces (those the cache has reused), bytecode for the new ones, the environment's owner
/// and the whiteouts, then the layer written from the pieces.
#[allow(clippy::too_many_arguments)]
fn write_pip_layer(
    cx: &RunContext<'_>,
    p: &Pip,
    view: &MergedView,
    out: &uv::PipOutcome,
    cache: Option<&PieceCache>,
    kept: &[Piece],
    step_started: Instant,
    log: &mut dyn Write,
) -> Result<PipLayerOut> {
    let (staging, scratch, lowers) = (cx.staging, cx.scratch, cx.lowers);
    // Nothing under /usr/share/doc: the step's time is the runtime's start time.
    let clamp = crate::epoch::as_clamp(cx.epoch);
    let ctx = pieces::Context::new(
        &p.prefix,
        out.python,
        bytecode::interpreter_digest(view, &p.prefix)?.as_ref(),
        env::owner(view, &p.prefix)?,
        clamp,
    );
    let site_rel = dist_info::site_packages(&p.prefix, out.python);
    // Distributions made into pieces before need neither bytecode nor compression.
    let mut fresh = Vec::new();
    let mut sources: Vec<Source> = kept.iter().cloned().map(Source::Cached).collect();
    let mut skip = BTreeSet::new();
    tracing::debug!(
        seconds = step_started.elapsed().as_secs_f64(),
        "uv installed"
    );
    for dist in pieces::claim(staging, &site_rel, &ctx)? {
        match cache.and_then(|c| c.get(&dist.key)) {
            Some(piece) => {
                skip.extend(
                    dist.files
                        .iter()
                        .filter(|f| f.ends_with(".py"))
                        .map(|f| staging.join(f)),
                );
                sources.push(Source::Cached(piece));
            }
            None => fresh.push(dist),
        }
    }
    let started = Instant::now();
    let compiled = bytecode::compile(lowers, staging, &p.prefix, out.python, &skip, scratch, log)?;
    tracing::debug!(
        ?compiled,
        seconds = started.elapsed().as_secs_f64(),
        "bytecode"
    );
    pieces::add_bytecode(staging, &mut fresh, out.python);
    sources.extend(fresh.into_iter().map(Source::Staging));
    // A kept piece writes its files itself: no whiteout for them.
    let kept_files: BTreeSet<&str> = kept
        .iter()
        .flat_map(|k| k.info.files.iter().map(String::as_str))
        .collect();
    let whiteouts: Vec<String> = out
        .whiteouts
        .iter()
        .filter(|w| !kept_files.contains(w.as_str()))
        .cloned()
        .collect();
    env::finish_staging(view, &p.prefix, staging, &whiteouts)?;
    tracing::debug!(
        seconds = step_started.elapsed().as_secs_f64(),
        "owner and whiteouts"
    );
    pieces::ensure_dirs(
        staging,
        sources.iter().filter_map(|s| match s {
            Source::Cached(piece) => Some(piece),
            Source::Staging(_) => None,
        }),
    )?;
    let piece_keys: Option<Vec<String>> = sources
        .iter()
        .map(|s| match s {
            Source::Cached(piece) => Some(piece.key()),
            Source::Staging(d) => d.cacheable.then(|| d.key.hex().to_string()),
        })
        .collect();
    let started = Instant::now();
    let (layer, report) = pieces::write_layer(cx.store, cache, staging, sources, scratch, clamp)?;
    tracing::debug!(
        ?report,
        kept = kept.len(),
        seconds = started.elapsed().as_secs_f64(),
        "pip layer"
    );
    Ok((layer, report, piece_keys))
}

/// The key of the earlier run this step may build on: the runtime, its parent, and the pip
/// definition but for its package list, with the files it reads.
fn previous_key(
    rt: &RuntimeFile,
    p: &Pip,
    parent: &[Digest],
    epoch: Option<i64>,
) -> Result<String> {
    let mut def = serde_json::to_value(p).map_err(|e| uv::err(e.to_string()))?;
    if let Some(map) = def.as_object_mut() {
        map.remove("packages");
    }
    let doc = serde_json::json!({
        "v": 1,
        "runtime": rt.name,
        "parent": parent,
        "pip": def,
        "epoch": epoch,
    });
    let mut h = nbrt_oci::digest::Hasher::new();
    h.update(&nbrt_oci::json::to_canonical_vec(&doc, "pip step key")?);
    for path in p.inputs(rt)? {
        crate::cache::hash_path(&path, &mut h)?;
    }
    Ok(h.finish().0.hex().to_string())
}

fn read_runs(store: &Store, key: &str) -> Runs {
    store
        .get_ref::<PipPrevious>(key)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The pieces of the earlier run to build on: of the runs whose requirements are all still
/// asked for and whose pieces are all still in the cache, the one with the most
/// requirements (the most recent among equals); else none.
fn previous_pieces(cache: &PieceCache, earlier: &Runs, p: &Pip) -> Vec<Piece> {
    let now: BTreeSet<&str> = p.packages.iter().map(|s| s.get_ref().as_str()).collect();
    let mut best: Option<(usize, Vec<Piece>)> = None;
    for run in &earlier.runs {
        if !run.packages.iter().all(|r| now.contains(r.as_str()))
            || best.as_ref().is_some_and(|(n, _)| *n >= run.packages.len())
        {
            continue;
        }
        let pieces: Option<Vec<Piece>> = run
            .pieces
            .iter()
            .map(|hex| Digest::from_hex(hex).ok().and_then(|k| cache.get(&k)))
            .map(|piece| piece.filter(|p| p.seed_dir().join("METADATA").is_file()))
            .collect();
        if let Some(pieces) = pieces {
            best = Some((run.packages.len(), pieces));
        }
    }
    best.map(|(_, pieces)| pieces).unwrap_or_default()
}

/// Remove the pieces that no layer in `live` (the diff IDs of the stored images) is made of.
/// `None` when the store has no pieces.
pub fn prune_pieces(
    store: &Store,
    live: &std::collections::HashSet<Digest>,
) -> Result<Option<crate::snapshot::PruneReport>> {
    if !store.cache(nbrt_oci::Bucket::PipPieces).is_dir() {
        return Ok(None);
    }
    let mut keep = BTreeSet::new();
    for diff_id in live {
        if let Some(layer) = store.get_ref::<PipLayer>(diff_id.hex())? {
            keep.extend(layer.pieces);
        }
    }
    let cache = PieceCache::open(store)?;
    cache.prune(|key| keep.contains(key)).map(Some)
}

/// What the pip step asks uv for (`locked`: the pins of `runtime.lock`).
fn pip_request(rt: &RuntimeFile, p: &Pip, locked: Option<Vec<LockedWheel>>) -> uv::PipRequest {
    uv::PipRequest {
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

/// The pins of a pip step from its own layer's tree (`own`: the layer alone, a snapshot or
/// the step's staging tree): every distribution there, with the wheel it came from (taken
/// from `known`, earlier locks of the step, where they name the same wheel).
fn pip_lock(
    store: &Store,
    rt: &RuntimeFile,
    p: &Pip,
    own: &MergedView,
    python: (u64, u64),
    known: &[LockedWheel],
) -> Result<StepLock> {
    let site = dist_info::site_packages(&p.prefix, python);
    let mut pins = Vec::new();
    // The tags of the wheel each distribution was installed from, to pin that one.
    let mut tags = std::collections::BTreeMap::new();
    for dist in dist_info::distributions(own, &site).into_items() {
        let (dist_info::Format::DistInfo, Some((name, version))) = (dist.format, dist.dir_name)
        else {
            continue;
        };
        tags.insert(name.clone(), dist.wheel_tags);
        pins.push(LockedWheel {
            name,
            version,
            url: None,
            sha256: None,
        });
    }
    pins.sort();
    let req = pip_request(rt, p, None);
    let started = std::time::Instant::now();
    let (mut wheels, unknown) = uv::split_known(&pins, known, &tags);
    wheels.extend(uv::wheel_artifacts(
        python,
        &req,
        &unknown,
        &tags,
        &store.cache(nbrt_oci::Bucket::Uv),
    )?);
    wheels.sort();
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        looked_up = unknown.len(),
        "pip lock"
    );
    Ok(StepLock::Pip(wheels))
}

/// The pins the step would write, resolved on the layers below it (`below`) without
/// installing anything: uv's dry run for the versions, then the wheels' URLs and hashes as
/// [`pip_lock`] finds them (the most specific wheel for the platform, as uv installs).
pub(crate) fn resolve_lock(
    store: &Store,
    rt: &RuntimeFile,
    p: &Pip,
    below: &MergedView,
) -> Result<StepLock> {
    let req = pip_request(rt, p, None);
    let cache = store.cache(nbrt_oci::Bucket::Uv);
    let (python, pins) = uv::resolve(below, &req, &cache)?;
    let wheels = uv::wheel_artifacts(
        python,
        &req,
        &pins,
        &std::collections::BTreeMap::new(),
        &cache,
    )?;
    Ok(StepLock::Pip(wheels))
}
