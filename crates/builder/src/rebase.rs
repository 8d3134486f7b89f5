//! `nbrt rebase RUNTIME --onto NEW_BASE`: a runtime's own layers moved onto an upgraded base.
//!
//! A runtime image built by nbrt is its parent's layers plus one layer per step of its
//! runtime file, and its manifest names the parent (`org.opencontainers.image.base.digest`).
//! Rebasing keeps the runtime file's plan and puts it on NEW_BASE:
//!
//! - **moved** (the layer is reused byte for byte; only the manifest and config are new):
//!   - `files` steps whose entries have no owner or a numeric one: their layer holds files
//!     from the stack directory only, so it does not depend on what is below it;
//!   - `pip` and `conda` steps whose solve would read the same from the new base as it did
//!     from the old one: the same Python version at the prefix, the same installed packages
//!     (`*.dist-info` directory names in site-packages, `conda-meta` record names) and the
//!     same owner of the environment, with every earlier step of the runtime moved too. The
//!     solve depends on nothing else of the base (the wheel platform is fixed, conda's
//!     virtual packages too), so running it again would only pick up newer releases, which
//!     a rebase should not do silently (that is `nbrt build`'s job);
//!   - `apt` steps, with every earlier step of the runtime moved, when apt would start from
//!     the same place on the new base (the same dpkg database and apt configuration: the
//!     same packages installed at the same versions, so the same solve), the same
//!     environment, and nothing the layer writes, removes or makes opaque reads differently
//!     in the new base (the layer would hide that change, as a rebuilt `ld.so.cache` or
//!     `passwd` would).
//!
//!   The step's cache entry on the old base must confirm that the image's layer is what the
//!   runtime file makes today; otherwise the step is rebuilt.
//! - **rebuilt** (run again on the new base, or taken from the cache when the same step was
//!   already built on it): `pip` and `conda` steps whose solve inputs changed (say which),
//!   `apt` steps otherwise (say which path changed), `run` (it runs inside the base), `user`
//!   (writes the base's `/etc/passwd`, `group` and `shadow` with the user added, and copies
//!   its `/etc/skel`), and `files` steps with a named owner (looked up in the image's
//!   `/etc/passwd`). Later steps still move when they qualify: a moved `files` layer does not
//!   care what is below it.
//! - The image config is made again the way a build makes it: NEW_BASE's config with the
//!   runtime's `[env]`, `[image]` and labels applied, the runtime's history entries after
//!   NEW_BASE's (a three-way merge rather than crane's "keep the old config": values the old
//!   base set do not leak over the new base's).
//!
//! RUNTIME is a runtime file, or an image in the store that `nbrt build` made (a build
//! records which runtime file made each image). NEW_BASE is an image in the store. Before
//! anything is written, NEW_BASE is checked: same OS and architecture, and, for pip and conda
//! steps, a Python environment of the same version at the step's prefix. A failed check
//! leaves the store as it was. The result is tagged `<name>:latest` (or `--tag`), and
//! `runtime.lock` is written again for the new base.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use nbrt_oci::spec::{annotation, media, Descriptor};
use nbrt_oci::{Digest, Image, ImageName, Store};
use serde::Serialize;

use crate::builder::{self, BuildOptions, Moved};
use crate::cache;
use crate::config::step_env;
use crate::epoch;
use crate::error::{BuildError, Result};
use crate::lock::{self, LockState, RuntimeLock};
use crate::runtime_file::RuntimeFile;
use crate::snapshot::{MergedView, Snapshots};
use crate::steps::env::python_version;
use crate::steps::{self, Rebase, RebaseContext, Step};

#[derive(Debug, Clone, Default)]
pub struct RebaseOptions {
    /// Name for the result (default `<runtime name>:latest`).
    pub tag: Option<ImageName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The layer was reused as it is.
    Moved,
    /// The step ran again on the new base.
    Rebuilt,
    /// The step was rebuilt earlier on the same new base: its layer came from the cache.
    Cached,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Moved => "moved",
            Action::Rebuilt => "rebuilt",
            Action::Cached => "rebuilt (cached)",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RebaseStep {
    pub step: String,
    pub action: Action,
    /// Why the step was moved or rebuilt.
    pub reason: String,
    pub layer: Digest,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebaseReport {
    pub runtime: String,
    /// Manifest digest of the image that was rebased.
    pub from_image: Digest,
    /// Its base (manifest digest).
    pub old_base: String,
    /// NEW_BASE as given, and its manifest digest.
    pub onto: String,
    pub new_base: Digest,
    pub id: Digest,
    pub digest: Digest,
    pub tag: String,
    pub steps: Vec<RebaseStep>,
}

fn rebase_err(message: impl Into<String>) -> BuildError {
    BuildError::Rebase(message.into())
}

/// The stack directory of a runtime file: `<stack>/<name>/runtime.toml` or
/// `<stack>/<name>.toml`.
fn stack_dir_of(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap_or(Path::new("."));
    if file.file_name().is_some_and(|n| n == "runtime.toml") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The runtime file and the image of RUNTIME.
fn locate(store: &Store, runtime: &str) -> Result<(RuntimeFile, Image)> {
    let path = Path::new(runtime);
    if path.is_file() {
        let rt = RuntimeFile::load(path, &stack_dir_of(path))?;
        let tag = format!("{}:latest", rt.name);
        let image = store
            .resolve(&tag)
            .map_err(|e| {
                rebase_err(format!(
                    "{}: no image {tag} in the store ({e}); build it first",
                    path.display()
                ))
            })?
            .image;
        return Ok((rt, image));
    }
    let image = store
        .resolve(runtime)
        .map_err(|e| {
            rebase_err(format!(
                "{runtime} is neither a runtime file nor an image in the store: {e}"
            ))
        })?
        .image;
    let file = crate::record::runtime_file_of(store, &image)?.ok_or_else(|| {
        rebase_err(format!(
            "{runtime} ({}) was not built by `nbrt build` in this store, so its steps are \
                 unknown; give its runtime file instead",
            image.digest()
        ))
    })?;
    if !file.is_file() {
        return Err(rebase_err(format!(
            "{runtime} was built from {}, which no longer exists",
            file.display()
        )));
    }
    let rt = RuntimeFile::load(&file, &stack_dir_of(&file))?;
    Ok((rt, image))
}

/// The image a runtime was built on: by its digest among the store's images, or, when it has
/// lost its names since (its own rebase moved its tag on), from its manifest blob while the
/// store still holds it. `None` when it is gone (then nothing of the runtime is confirmed
/// from the cache, and every step is rebuilt).
fn old_base_image(store: &Store, digest: &str) -> Option<Image> {
    if let Ok(found) = store.resolve(digest) {
        return Some(found.image);
    }
    let digest = Digest::parse(digest).ok()?;
    let size = std::fs::metadata(store.blob_path(&digest)).ok()?.len();
    store
        .load_image(&Descriptor::new(media::OCI_MANIFEST, digest, size))
        .ok()
}

/// The merged file system of a list of layers (bottom first).
fn view_of(
    store: &Store,
    snapshots: &Snapshots,
    layers: &[(Descriptor, Digest)],
) -> Result<MergedView> {
    let below: Vec<(&Descriptor, &Digest)> = layers.iter().map(|(l, d)| (l, d)).collect();
    Ok(MergedView::new(snapshots.ensure_all(store, &below)?))
}

fn layer_list(image: &Image) -> Vec<(Descriptor, Digest)> {
    image
        .layers()
        .iter()
        .cloned()
        .zip(image.diff_ids().iter().cloned())
        .collect()
}

/// Rebase RUNTIME onto NEW_BASE (see the module documentation).
pub fn rebase(
    store: &Store,
    runtime: &str,
    onto: &str,
    opts: &RebaseOptions,
    log: &mut dyn Write,
) -> Result<RebaseReport> {
    crate::leftovers::sweep_before_build(&store.tmp(), log);
    let (rt, image) = locate(store, runtime)?;
    if rt.bootstrap.is_some() {
        return Err(rebase_err(format!(
            "{} bootstraps its own root file system: it has no base to change",
            rt.name
        )));
    }
    let old_base = image
        .manifest
        .value()
        .annotations
        .get(annotation::BASE_DIGEST)
        .cloned()
        .ok_or_else(|| {
            rebase_err(format!(
                "{runtime} names no base image ({}); only images nbrt built on a parent can be \
                 rebased",
                annotation::BASE_DIGEST
            ))
        })?;
    let plan = steps::plan(&rt);
    let own = plan.len();
    let base_len = image.layers().len().checked_sub(own).ok_or_else(|| {
        rebase_err(format!(
            "{runtime} has {} layers but {} has {own} steps: the runtime file changed since \
             the image was built; build it first",
            image.layers().len(),
            rt.path.display()
        ))
    })?;
    let history: Vec<&str> = image
        .config
        .value()
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .map(|h| h.created_by.as_deref().unwrap_or(""))
        .collect();
    let labels: Vec<String> = plan.iter().map(Step::label).collect();
    if history.len() < own
        || history[history.len() - own..]
            .iter()
            .zip(&labels)
            .any(|(h, l)| h != l)
    {
        return Err(rebase_err(format!(
            "the steps of {} do not match the layers of {runtime}: the runtime file changed \
             since the image was built; build it first",
            rt.path.display()
        )));
    }

    let new_base = store
        .resolve(onto)
        .map_err(|e| rebase_err(format!("--onto {onto}: {e}")))?
        .image;
    let (old_cfg, new_cfg) = (image.config.value(), new_base.config.value());
    if (old_cfg.os.as_str(), old_cfg.architecture.as_str())
        != (new_cfg.os.as_str(), new_cfg.architecture.as_str())
    {
        return Err(rebase_err(format!(
            "{onto} is {}/{}, but {runtime} is {}/{}",
            new_cfg.os, new_cfg.architecture, old_cfg.os, old_cfg.architecture
        )));
    }
    if new_base.layers().is_empty() {
        return Err(rebase_err(format!("{onto} has no layers")));
    }
    if new_base.diff_ids().starts_with(image.diff_ids()) {
        return Err(rebase_err(format!(
            "{onto} already contains {runtime}'s layers: it is the runtime or built on it"
        )));
    }

    let snapshots = Snapshots::open(store)?;
    let old_layers = layer_list(&image);
    // The environments the package steps install into must be there, with the same Python.
    let old_view = view_of(store, &snapshots, &old_layers[..base_len])?;
    let new_view = view_of(store, &snapshots, &layer_list(&new_base))?;
    for step in &plan {
        let prefix = match step {
            Step::Pip(p) => &p.prefix,
            Step::Conda(c) => &c.prefix,
            _ => continue,
        };
        if let Ok(old) = python_version(&old_view, prefix) {
            match python_version(&new_view, prefix) {
                Ok(new) if new == old => {}
                Ok(new) => {
                    return Err(rebase_err(format!(
                        "{onto} has Python {}.{} at {prefix}, the old base {}.{}: the \
                         runtime's `{}` step needs the same Python; build the runtime on it \
                         instead",
                        new.0,
                        new.1,
                        old.0,
                        old.1,
                        step.label()
                    )))
                }
                Err(_) => {
                    return Err(rebase_err(format!(
                        "{onto} has no Python environment at {prefix} (the old base has Python \
                         {}.{} there, which the runtime's `{}` step installs into): it is not a \
                         new version of this runtime's base",
                        old.0,
                        old.1,
                        step.label()
                    )))
                }
            }
        }
    }

    // Which layers move: those whose step says it may, and only when the build cache
    // confirms that the image's layer is what the runtime file makes today on the old base.
    // The old build's start time: the old base's (see `crate::epoch`), when the store has it.
    let old_base_image = old_base_image(store, &old_base);
    let old_base_config = old_base_image.as_ref().map(|b| b.config.value());
    let old_start = epoch::start(old_base_config);
    // The environment the steps ran with on the old base, and would run with on the new one.
    let old_env = step_env(old_base_config, &rt);
    let new_env = step_env(Some(new_base.config.value()), &rt);
    // A build that followed the runtime's lock cached its steps under the lock's pins; one
    // that resolved them, under no pins (and the pins it wrote).
    let current_lock = match RuntimeLock::read(&rt)? {
        LockState::Current(lock) => Some(lock),
        LockState::Missing | LockState::Stale(_) => None,
    };
    let confirmed = |i: usize, step: &Step| -> Result<Option<Moved>> {
        let at = base_len + i;
        let inputs = step.kind().inputs(&rt)?;
        let locked = current_lock
            .as_ref()
            .zip(step.kind().lock_section())
            .map(|(l, s)| l.section(s));
        for pins in [None, locked.as_ref()] {
            let key =
                step.cache_key(&image.diff_ids()[..at], &old_env, pins, &inputs, old_start)?;
            if let Some(c) =
                cache::get(store, &key)?.filter(|c| c.layer.digest == image.layers()[at].digest)
            {
                return Ok(Some(Moved {
                    step: c,
                    lock: lock::remembered(store, &key)?,
                }));
            }
        }
        Ok(None)
    };
    const NOT_CONFIRMED: &str = "the layer is not what the runtime file makes now (or not cached)";
    let mut moved: BTreeMap<usize, Moved> = BTreeMap::new();
    let mut reasons: BTreeMap<usize, String> = BTreeMap::new();
    // The new base plus the layers moved so far: what the next moved step lands on.
    let mut landing = layer_list(&new_base);
    let mut all_moved = true;
    for (i, step) in plan.iter().enumerate() {
        let at = base_len + i;
        let decision = step.kind().rebase(&RebaseContext {
            store,
            snapshots: &snapshots,
            old_below: &old_layers[..at],
            new_below: &landing,
            layer: &old_layers[at],
            old_env: &old_env,
            new_env: &new_env,
            earlier_moved: all_moved,
        })?;
        let (take, reason) = match decision {
            Rebase::Move(reason) => match confirmed(i, step)? {
                Some(c) => (Some(c), reason),
                None => (None, NOT_CONFIRMED.to_string()),
            },
            Rebase::Rebuild(reason) => (None, reason),
        };
        match take {
            Some(c) => {
                landing.push((c.step.layer.clone(), c.step.diff_id.clone()));
                moved.insert(i, c);
            }
            None => all_moved = false,
        }
        reasons.insert(i, reason);
    }

    writeln!(
        log,
        "rebasing {} onto {onto} ({}): {} of {own} layers move",
        rt.name,
        new_base.digest(),
        moved.len()
    )
    .ok();
    let (new_image, reports) = builder::build_runtime(
        store,
        &snapshots,
        &rt,
        Some(&new_base),
        // A rebase resolves the steps it runs again for the new base (its Python may have
        // moved), and writes the lock of what it built.
        &BuildOptions {
            lock: builder::LockMode::Update,
            ..Default::default()
        },
        &moved,
        log,
    )?;
    let tag = match &opts.tag {
        Some(t) => t.clone(),
        None => ImageName::parse(&format!("{}:latest", rt.name))?,
    };
    store.tag(&new_image, &tag)?;
    let steps = reports
        .into_iter()
        .enumerate()
        .map(|(i, r)| RebaseStep {
            step: r.step,
            action: if moved.contains_key(&i) {
                Action::Moved
            } else if r.cached {
                Action::Cached
            } else {
                Action::Rebuilt
            },
            reason: reasons.remove(&i).unwrap_or_default(),
            layer: r.layer,
        })
        .collect();
    Ok(RebaseReport {
        runtime: rt.name.clone(),
        from_image: image.digest().clone(),
        old_base,
        onto: onto.to_string(),
        new_base: new_base.digest().clone(),
        id: new_image.id().clone(),
        digest: new_image.digest().clone(),
        tag: tag.to_string(),
        steps,
    })
}
