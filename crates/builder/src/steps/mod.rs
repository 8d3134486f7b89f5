//! The steps of a runtime, one module per kind. Each kind owns what the driver and rebase
//! ask of it, behind [`StepKind`]: its label, the files its cache key covers, its run, its
//! part of `runtime.lock` and whether its layer may move onto a new base.
//!
//! - [`bootstrap`]: a root file system made by mmdebstrap;
//! - [`apt`]: Debian packages, installed by apt in the sandbox;
//! - [`user`]: the notebook user, written into passwd, group and shadow;
//! - [`python`]: the Python environment (a venv of the image's interpreter, with conda-meta);
//! - [`conda`]: conda packages, solved and linked through the rattler crates;
//! - [`pip`]: Python packages through uv, with bytecode and per-distribution pieces;
//! - [`files`]: files copied from the stack directory (or provided by nbrt);
//! - [`run`]: a shell command in the sandbox.
//!
//! [`env`] holds what the pip and conda steps share about a Python environment in an image.

pub mod apt;
pub mod bootstrap;
pub mod conda;
pub mod env;
pub mod files;
pub mod pip;
pub mod python;
pub mod run;
pub mod user;

use std::io::Write;
use std::path::{Path, PathBuf};

use nbrt_oci::digest::Hasher;
use nbrt_oci::layer::{Compression, LayerInfo};
use nbrt_oci::spec::{source_date_epoch, Descriptor};
use nbrt_oci::{Digest, Store};
use serde::Serialize;
use std::cell::Cell;

use crate::error::{BuildError, Result};
use crate::layer_dir::{layer_from_dir, DirLayerOptions};
use crate::lock::{LockSection, StepLock};
use crate::runtime_file::RuntimeFile;
use crate::sandbox::{self, RunSpec};
use crate::snapshot::{MergedView, Snapshots};

/// One step of a runtime, in build order. Its JSON form is part of the step's cache key.
/// Bumped when a step's output for the same inputs changes (part of every cache key).
const CACHE_VERSION: &str = "nbrt-build/10";

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    Bootstrap(crate::runtime_file::Bootstrap),
    Apt(crate::runtime_file::Apt),
    User(crate::runtime_file::User),
    Python(crate::runtime_file::Python),
    Conda(crate::runtime_file::Conda),
    Pip(crate::runtime_file::Pip),
    Files(files::Files),
    Run(crate::runtime_file::RunStep),
}

impl Step {
    /// The step's own code.
    pub fn kind(&self) -> &dyn StepKind {
        match self {
            Step::Bootstrap(s) => s,
            Step::Apt(s) => s,
            Step::User(s) => s,
            Step::Python(s) => s,
            Step::Conda(s) => s,
            Step::Pip(s) => s,
            Step::Files(s) => s,
            Step::Run(s) => s,
        }
    }

    /// What the image's history says made the step's layer.
    pub fn label(&self) -> String {
        self.kind().label()
    }

    /// The cache key of the step on the layers `parent` (diff IDs, bottom first): the layers
    /// below it, its definition and the content of its inputs (and, for steps whose commands
    /// see it, the image's environment `env`; in a `--locked` build, the lock's `pins`), and
    /// the runtime's start time `epoch` (see [`crate::epoch`]).
    pub fn cache_key(
        &self,
        parent: &[Digest],
        env: &[String],
        pins: Option<&StepLock>,
        inputs: &[PathBuf],
        epoch: Option<i64>,
    ) -> Result<String> {
        let mut h = Hasher::new();
        let mut doc = serde_json::json!({ "v": CACHE_VERSION, "parent": parent, "step": self,
            "epoch": epoch });
        // Commands in the sandbox see the environment; steps that write files directly do not.
        if self.kind().sees_env() {
            doc["env"] = serde_json::json!(env);
        }
        // A locked build installs the lock's pins: its layers are cached apart.
        if let Some(p) = pins {
            doc["locked"] = serde_json::to_value(p).map_err(|e| BuildError::Lock(e.to_string()))?;
        }
        h.update(&nbrt_oci::json::to_canonical_vec(&doc, "step key")?);
        for p in inputs {
            crate::cache::hash_path(p, &mut h)?;
        }
        Ok(h.finish().0.hex().to_string())
    }
}

/// The steps a runtime file asks for, in the order they are built.
pub fn plan(rt: &RuntimeFile) -> Vec<Step> {
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
    if let Some(p) = &rt.python {
        steps.push(Step::Python(p.clone()));
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
        steps.push(Step::Files(files::Files {
            files: rt.files.clone(),
        }));
    }
    for r in &rt.run {
        steps.push(Step::Run(r.clone()));
    }
    steps
}

/// What every kind of step answers.
pub trait StepKind {
    /// What the image's history says made the layer (`pip jupyterlab notebook`).
    fn label(&self) -> String;

    /// The files the step reads, which its cache key covers by content.
    fn inputs(&self, _rt: &RuntimeFile) -> Result<Vec<PathBuf>> {
        Ok(Vec::new())
    }

    /// Whether the step's commands see the image's environment (then it is part of the key).
    fn sees_env(&self) -> bool {
        false
    }

    /// The part of `runtime.lock` the step fills and, in a `--locked` build, installs.
    fn lock_section(&self) -> Option<LockSection> {
        None
    }

    /// Run the step on what is below it: its layer, and its lock entry when the run has it
    /// at hand (otherwise [`StepKind::lock`] derives it from the layer).
    fn run(&self, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput>;

    /// The step's lock entry, from its layer and the image below it. Only asked of steps
    /// with a [`StepKind::lock_section`].
    fn lock(&self, _cx: &LockContext<'_>) -> Result<Option<StepLock>> {
        Ok(None)
    }

    /// Whether the step's layer may move as it is onto a new base (see [`crate::rebase`]).
    fn rebase(&self, cx: &RebaseContext<'_>) -> Result<Rebase>;
}

/// A step's result.
pub struct StepOutput {
    pub layer: LayerInfo,
    pub lock: Option<StepLock>,
}

impl From<LayerInfo> for StepOutput {
    fn from(layer: LayerInfo) -> Self {
        Self { layer, lock: None }
    }
}

/// What a step runs on and with.
pub struct RunContext<'a> {
    pub store: &'a Store,
    pub snapshots: &'a Snapshots,
    pub rt: &'a RuntimeFile,
    /// The step's pins in a `--locked` build.
    pub pins: Option<&'a StepLock>,
    /// The parent's layer directories, top first.
    pub lowers: &'a [PathBuf],
    /// Diff IDs of the parent's layers, bottom first.
    pub parent: &'a [Digest],
    /// The image's environment, for commands in the sandbox.
    pub env: &'a [String],
    /// Whether parts of earlier runs may be reused (pip pieces; not with `--no-cache`).
    pub reuse: bool,
    /// The step's own directory, removed when the step ends.
    pub scratch: &'a Path,
    /// A tree inside `scratch` standing for the image root, for steps that write files
    /// directly; it becomes the layer.
    pub staging: &'a Path,
    /// The runtime's start time (see [`crate::epoch`]): what commands see as
    /// `SOURCE_DATE_EPOCH`, and the least the step's time can be.
    pub epoch: Option<i64>,
    /// When the step started, by the file system's clock ([`crate::epoch::step_start`]).
    pub started: i64,
    /// The step's time, once its layer is written (the start time until then).
    pub step_epoch: Cell<Option<i64>>,
}

impl RunContext<'_> {
    /// The image's file system below the step.
    pub fn view(&self) -> MergedView {
        MergedView::new(self.lowers.to_vec())
    }

    /// Run `argv` in the sandbox over the layers below; the overlay's upper directory
    /// becomes the layer. Network steps get the host's CA bundle.
    pub fn sandboxed(
        &self,
        argv: Vec<String>,
        user: &str,
        network: bool,
        log: &mut dyn Write,
    ) -> Result<LayerInfo> {
        self.sandboxed_with(argv, user, network, log, |_| Ok(()))
    }

    /// [`RunContext::sandboxed`], with `finish` given the upper directory (the image root's
    /// changes) after the command succeeded and before it becomes the layer.
    pub fn sandboxed_with(
        &self,
        argv: Vec<String>,
        user: &str,
        network: bool,
        log: &mut dyn Write,
        finish: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<LayerInfo> {
        let spec = RunSpec {
            argv,
            user: user.to_string(),
            env: crate::epoch::command_env(self.env, self.epoch),
            workdir: String::new(),
            network,
            host_ca_bundle: if network {
                sandbox::host_ca_bundle()
            } else {
                None
            },
        };
        let run = sandbox::run(self.lowers, &spec, self.scratch, log)?;
        crate::leaks::remove_from_upper(&run.upper_dir())?;
        finish(&run.upper_dir())?;
        self.dir_layer(&run.upper_dir(), true)
    }

    /// The staging tree as the step's layer.
    pub fn staging_layer(&self) -> Result<LayerInfo> {
        self.dir_layer(self.staging, false)
    }

    /// A directory as a layer (`overlay_upper`: whiteouts in overlay form), file times
    /// clamped to the step's time ([`crate::epoch`]), which this sets.
    pub fn dir_layer(&self, dir: &Path, overlay_upper: bool) -> Result<LayerInfo> {
        let found = crate::epoch::newest_doc_time(dir, self.started)?;
        let time = crate::epoch::step_time(self.epoch, found);
        self.step_epoch.set(time);
        layer_from_dir(
            self.store,
            dir,
            &DirLayerOptions {
                overlay_upper,
                clamp_mtime: crate::epoch::as_clamp(time),
                compression: Compression::Gzip,
                exclude: Vec::new(),
            },
        )
    }

    /// The staging tree becomes the snapshot of its layer: the next step (or the child
    /// runtime) needs it as a lower, and unpacking thousands of files again costs more
    /// than the step's own work. A failure only means the blob is unpacked when needed.
    pub fn adopt_staging(&self, layer: &LayerInfo) {
        let clamp = crate::epoch::as_clamp(self.step_epoch.get());
        if let Err(e) = self.snapshots.adopt(&layer.diff_id, self.staging, clamp) {
            tracing::debug!("the step's tree was not kept as a snapshot: {e}");
        }
    }
}

/// Newest file time a layer may carry: `SOURCE_DATE_EPOCH` when set (public for the
/// Dockerfile front end, whose layers are clamped the same way).
pub fn clamp() -> Option<u64> {
    source_date_epoch().map(|s| s.max(0) as u64)
}

/// What deriving a step's lock entry reads: the step's layer alone, and the image's file
/// system with and without it.
pub struct LockContext<'a> {
    pub store: &'a Store,
    pub rt: &'a RuntimeFile,
    pub own: MergedView,
    pub after: MergedView,
    pub before: MergedView,
}

/// What a step's rebase decision may look at.
pub struct RebaseContext<'a> {
    pub store: &'a Store,
    pub snapshots: &'a Snapshots,
    /// The layers below the step in the image being rebased (bottom first).
    pub old_below: &'a [(Descriptor, Digest)],
    /// The layers it would land on: the new base and the steps moved before it.
    pub new_below: &'a [(Descriptor, Digest)],
    /// The step's own layer in the image being rebased.
    pub layer: &'a (Descriptor, Digest),
    /// The environment commands of the runtime saw on the old base, and would see on the new.
    pub old_env: &'a [String],
    pub new_env: &'a [String],
    /// Whether every earlier step of the runtime moves.
    pub earlier_moved: bool,
}

impl RebaseContext<'_> {
    /// The step's own layer as a directory (extracted once, like every snapshot).
    pub fn layer_dir(&self) -> Result<std::path::PathBuf> {
        self.snapshots
            .ensure(self.store, &self.layer.0, &self.layer.1)
    }

    /// The file system of a list of layers (bottom first).
    pub fn view(&self, layers: &[(Descriptor, Digest)]) -> Result<MergedView> {
        let below: Vec<(&Descriptor, &Digest)> = layers.iter().map(|(l, d)| (l, d)).collect();
        Ok(MergedView::new(
            self.snapshots.ensure_all(self.store, &below)?,
        ))
    }
}

/// A step's rebase decision (the driver still confirms a move against the build cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebase {
    /// The layer does not depend on what is below it: it may move as it is.
    Move(String),
    /// The step must run again on the new base, for this reason.
    Rebuild(String),
}
