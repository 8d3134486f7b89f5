//! The driver: stages, ARG scoping and each instruction's semantics (BuildKit's), carried
//! out on nbrt's builder machinery. RUN runs in the runc sandbox over the stage's layers
//! ([`nbrt_build::sandbox`]); COPY, ADD and a WORKDIR that creates a directory write a staging
//! tree that becomes a layer ([`nbrt_build::layer_dir`]); every layer is kept in the
//! builder's layer cache ([`nbrt_build::cache`]) under a key made as BuildKit makes its own.
//! The other instructions change only the image config.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nbrt_build::cache::{self, CachedStep};
use nbrt_build::layer_dir::{layer_from_dir, DirLayerOptions};
use nbrt_build::leftovers::StepDir;
use nbrt_build::sandbox::{self, ExtraMount, RunSpec, DEFAULT_PATH};
use nbrt_build::snapshot::{MergedView, Snapshots};
use nbrt_build::steps::clamp;
use nbrt_oci::layer::apply::{apply_layer, ApplyOptions};
use nbrt_oci::layer::compression::{decompress_sniffed, Compression};
use nbrt_oci::spec::{
    annotation, rfc3339, source_date_epoch, ContainerConfig, Descriptor, Healthcheck, History,
    ImageConfig, RootFs,
};
use nbrt_oci::{Digest, Image, ImageName, Platform, Progress, Store};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::context::{self, Context, Item, Kind, SourceError, SourceFs, ViewFs};
use crate::error::{DockerfileError, IoContext, Result};
use crate::ignore::clean;
use crate::parse::{self, Cmd, Flags, Heredoc, Instruction, Op};
use crate::words::{expand, expand_raw, split_words};

/// Bumped when a step's layer for the same inputs changes (part of every cache key).
const CACHE_VERSION: &str = "nbrt-dockerfile/3";

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// Names the image gets in the store.
    pub tags: Vec<ImageName>,
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Run every step again instead of taking layers from the cache.
    pub no_cache: bool,
    /// Build secrets by id (`--secret id=…`), for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Secret>,
}

/// A build secret's value. Never printed (its `Debug` shows the size only), never part of
/// a cache key or a layer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Secret(value.into())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// A `--secret` option as docker build takes it: `id=X,src=PATH` (or `source=`),
/// `id=X,env=VAR`, with an optional `type=file|env`; with neither source, the environment
/// variable named by the id. Returns the id and the value (a file is read now).
pub fn parse_secret(spec: &str) -> Result<(String, Secret)> {
    let usage = |m: String| DockerfileError::Usage(format!("--secret {spec:?}: {m}"));
    let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
    for field in spec.split(',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| usage(format!("{field:?} is not KEY=VALUE")))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "id" => id = Some(v.to_string()),
            "src" | "source" => src = Some(v.to_string()),
            "env" => env = Some(v.to_string()),
            "type" => kind = Some(v.to_string()),
            other => return Err(usage(format!("unknown key {other:?} (id, src, env, type)"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| usage("an id is required: id=NAME,src=PATH or id=NAME,env=VAR".into()))?;
    match kind.as_deref() {
        None | Some("file") | Some("env") => {}
        Some(other) => return Err(usage(format!("unknown type {other:?} (file or env)"))),
    }
    let from_env = |var: &str| {
        std::env::var_os(var)
            .map(|v| Secret(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()))
            .ok_or_else(|| usage(format!("the environment variable {var} is not set")))
    };
    let value = match (src, env, kind.as_deref()) {
        (Some(_), Some(_), _) => return Err(usage("give src or env, not both".into())),
        (Some(path), None, Some("env")) | (None, Some(path), Some("env")) => from_env(&path)?,
        (Some(path), None, _) => Secret(
            fs::read(&path).map_err(|e| usage(format!("reading the secret file {path}: {e}")))?,
        ),
        (None, Some(var), _) => from_env(&var)?,
        (None, None, _) => from_env(&id)?,
    };
    Ok((id, value))
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub stage: String,
    pub line: usize,
    pub instruction: String,
    pub cached: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub id: Digest,
    pub digest: Digest,
    pub tags: Vec<String>,
    pub steps: Vec<StepReport>,
}

impl BuildReport {
    /// Steps that made a layer without the cache.
    pub fn ran(&self) -> Vec<&StepReport> {
        self.steps.iter().filter(|s| !s.cached).collect()
    }
}

/// A stage: its FROM and the instructions after it.
struct StageDef {
    index: usize,
    name: Option<String>,
    from: Instruction,
    body: Vec<Instruction>,
}

/// A stage's build state.
#[derive(Clone)]
struct State {
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    config: ImageConfig,
    /// ARGs in scope with their values (unset ones are left out).
    args: Vec<(String, String)>,
    shell: Vec<String>,
    cmd_set: bool,
    base_digest: Option<Digest>,
    /// The USER instruction that set the current user, for errors about it.
    user_set_by: Option<Instruction>,
}

impl State {
    fn cc(&mut self) -> &mut ContainerConfig {
        self.config.config.get_or_insert_with(Default::default)
    }
    fn env(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }
    fn env_pairs(&self) -> Vec<(String, String)> {
        self.env()
            .iter()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }
    /// What words are expanded with: the ARGs, then the environment (ENV wins over ARG).
    fn scope(&self) -> Vec<(String, String)> {
        let mut s = self.args.clone();
        s.extend(self.env_pairs());
        s
    }
    /// A RUN's environment: the image's, plus the ARGs it does not set.
    fn run_env(&self) -> Vec<String> {
        let mut env = self.env();
        let keys: BTreeSet<String> = self.env_pairs().into_iter().map(|(k, _)| k).collect();
        for (k, v) in &self.args {
            if !keys.contains(k) {
                env.push(format!("{k}={v}"));
            }
        }
        env
    }
    fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let env = self.cc().env.get_or_insert_with(Vec::new);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key))
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    fn user(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default()
    }
    fn workdir(&self) -> String {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }
}

struct Builder<'a> {
    store: &'a Store,
    snapshots: Snapshots,
    opts: &'a BuildOptions,
    progress: &'a Progress,
    log: &'a mut dyn Write,
    file: String,
    escape: char,
    /// Global ARGs (and the predefined platform ARGs) with their values.
    global: Vec<(String, String)>,
    done: BTreeMap<usize, State>,
    steps: Vec<StepReport>,
    created: Option<String>,
    /// Build arguments some ARG declared.
    consumed: BTreeSet<String>,
}

/// The predefined platform ARGs (BuildKit's; the target is the build host).
fn platform_args() -> Vec<(String, String)> {
    let host = Platform::host();
    let platform = match &host.variant {
        Some(v) => format!("{}/{}/{v}", host.os, host.architecture),
        None => format!("{}/{}", host.os, host.architecture),
    };
    let variant = host.variant.clone().unwrap_or_default();
    let mut out = Vec::new();
    for side in ["BUILD", "TARGET"] {
        out.push((format!("{side}PLATFORM"), platform.clone()));
        out.push((format!("{side}OS"), host.os.clone()));
        out.push((format!("{side}ARCH"), host.architecture.clone()));
        out.push((format!("{side}VARIANT"), variant.clone()));
    }
    out
}

/// Proxy ARGs: passed to RUN when given as build arguments, without being declared.
const PROXY_ARGS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Build the Dockerfile `opts.dockerfile` with the context `opts.context` into `store`,
/// naming the result `opts.tags`. Progress lines go to `log`.
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    progress: &Progress,
    log: &mut dyn Write,
) -> Result<BuildReport> {
    let text = fs::read_to_string(&opts.dockerfile)
        .io_context(|| format!("reading {}", opts.dockerfile.display()))?;
    let file = opts
        .dockerfile
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let df = parse::parse(&file, &text)?;
    nbrt_build::leftovers::sweep_before_build(&store.tmp(), log);
    let mut b = Builder {
        store,
        snapshots: Snapshots::open(store)?,
        opts,
        progress,
        log,
        file,
        escape: df.escape,
        global: platform_args(),
        done: BTreeMap::new(),
        steps: Vec::new(),
        created: source_date_epoch().map(rfc3339),
        consumed: BTreeSet::new(),
    };
    let stages = b.split(df.instructions)?;
    let target = b.target_index(&stages)?;
    let needed = b.needed(&stages, target)?;
    for s in &stages {
        if needed.contains(&s.index) {
            let state = b.stage(s, &stages)?;
            b.done.insert(s.index, state);
        }
    }
    let state = b
        .done
        .remove(&target)
        .ok_or_else(|| DockerfileError::Usage("the target stage was not built".into()))?;
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !b.consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        writeln!(
            b.log,
            "warning: build arguments no ARG declares: {}",
            unused
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .ok();
    }
    let image = b.assemble(state)?;
    for t in &opts.tags {
        store.tag(&image, t)?;
    }
    writeln!(b.log, "built {}", image.id()).ok();
    Ok(BuildReport {
        id: image.id().clone(),
        digest: image.digest().clone(),
        tags: opts.tags.iter().map(|t| t.to_string()).collect(),
        steps: b.steps,
    })
}

fn parse_flags(
    b: &Builder<'_>,
    inst: &Instruction,
    flags: &Flags,
    allowed: &[&str],
) -> Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in flags {
        if !allowed.contains(&name.as_str()) {
            return Err(b.err(inst, format!("unknown flag: --{name}")));
        }
        out.entry(name.clone())
            .or_default()
            .push(value.clone().unwrap_or_else(|| "true".into()));
    }
    Ok(out)
}

/// `0755`-style modes.
fn parse_mode(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// Go durations (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds.
fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * scale;
    }
    Some(total.round() as i64)
}

fn join_path(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        clean(rel)
    } else {
        clean(&format!("{}/{rel}", base.trim_end_matches('/')))
    }
}

fn hex(h: Sha256) -> String {
    hex::encode(h.finalize())
}

impl Builder<'_> {
    fn err(&self, inst: &Instruction, message: impl Into<String>) -> DockerfileError {
        DockerfileError::Instruction {
            file: self.file.clone(),
            line: inst.line,
            instruction: inst.text.clone(),
            message: message.into(),
        }
    }

    fn expand(&self, inst: &Instruction, word: &str, scope: &[(String, String)]) -> Result<String> {
        expand(word, scope, self.escape).map_err(|e| self.err(inst, e.0))
    }

    /// Global ARGs, then the stages.
    fn split(&mut self, instructions: Vec<Instruction>) -> Result<Vec<StageDef>> {
        let mut stages: Vec<StageDef> = Vec::new();
        for inst in instructions {
            match (&inst.op, stages.last_mut()) {
                (Op::From { alias, .. }, _) => {
                    let name = alias.as_ref().map(|a| a.to_ascii_lowercase());
                    if let Some(n) = &name {
                        if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                            return Err(self.err(&inst, format!("duplicate stage name {n:?}")));
                        }
                    }
                    stages.push(StageDef {
                        index: stages.len(),
                        name,
                        from: inst,
                        body: Vec::new(),
                    });
                }
                (_, Some(stage)) => stage.body.push(inst),
                (Op::Arg(args), None) => {
                    for (k, v) in args.clone() {
                        self.consumed.insert(k.clone());
                        let value = match (self.opts.build_args.get(&k), v) {
                            (Some(given), _) => Some(given.clone()),
                            (None, Some(d)) => Some(self.expand(&inst, &d, &self.global)?),
                            (None, None) => None,
                        };
                        self.global.retain(|(n, _)| n != &k);
                        if let Some(v) = value {
                            self.global.push((k, v));
                        }
                    }
                }
                (_, None) => return Err(self.err(
                    &inst,
                    "no build stage in current context (only ARG may come before the first FROM)",
                )),
            }
        }
        if stages.is_empty() {
            return Err(DockerfileError::Parse {
                file: self.file.clone(),
                line: 1,
                message: "the Dockerfile has no FROM".into(),
            });
        }
        Ok(stages)
    }

    fn target_index(&self, stages: &[StageDef]) -> Result<usize> {
        match &self.opts.target {
            None => Ok(stages.len() - 1),
            Some(t) => stages
                .iter()
                .find(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .map(|s| s.index)
                .ok_or_else(|| {
                    DockerfileError::Usage(format!("target stage {t:?} could not be found"))
                }),
        }
    }

    /// A stage named or numbered `name` before `before`.
    fn stage_ref(&self, stages: &[StageDef], name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(s) = stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(s.index);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    /// The stage a `--from` (of COPY or RUN --mount) names, if it names one.
    fn stages_named_by_from(
        &self,
        stages: &[StageDef],
        inst: &Instruction,
        at: usize,
    ) -> Result<Vec<usize>> {
        let mut out = Vec::new();
        let mut froms = Vec::new();
        match &inst.op {
            Op::Copy { flags, .. } => froms.extend(
                flags
                    .iter()
                    .filter(|(n, _)| n == "from")
                    .filter_map(|(_, v)| v.clone()),
            ),
            Op::Run { flags, .. } => {
                for (n, v) in flags {
                    if n == "mount" {
                        for part in v.as_deref().unwrap_or_default().split(',') {
                            if let Some(f) = part.strip_prefix("from=") {
                                froms.push(f.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        for f in froms {
            let f = self.expand(inst, &f, &self.global)?;
            if let Some(i) = self.stage_ref(stages, &f, at) {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn needed(&self, stages: &[StageDef], target: usize) -> Result<BTreeSet<usize>> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let s = &stages[i];
            if let Op::From { image, .. } = &s.from.op {
                let image = self.expand(&s.from, image, &self.global)?;
                if let Some(j) = self.stage_ref(stages, &image, i) {
                    todo.push(j);
                }
            }
            for inst in &s.body {
                todo.extend(self.stages_named_by_from(stages, inst, i)?);
            }
        }
        Ok(needed)
    }

    /// The image `reference` names: in the store, else in the Docker engine, else in a
    /// registry.
    fn base_image(&mut self, inst: &Instruction, reference: &str) -> Result<Image> {
        if let Ok(found) = self.store.resolve(reference) {
            return Ok(found.image);
        }
        let tmp = self.store.tmp();
        fs::create_dir_all(&tmp).io_context(|| format!("creating {}", tmp.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("nbrt-from-engine-")
            .tempdir_in(&tmp)
            .io_context(|| format!("creating a directory in {}", tmp.display()))?;
        let archive = dir.path().join("image.tar");
        let from_engine = nbrt_build::blocking::block_on(|| async {
            let engine = nbrt_oci::Engine::connect().await.ok()?;
            engine.image(reference).await.ok()??;
            engine.save_to(reference, &archive).await.ok()
        })?;
        if from_engine.is_some() {
            writeln!(self.log, "FROM {reference}: from the Docker engine").ok();
            let names = ImageName::parse(reference).into_iter().collect();
            let opts = nbrt_oci::transfer::ImportOptions {
                names,
                select: Some(reference.to_string()),
                ..Default::default()
            };
            let imported = nbrt_oci::transfer::import(self.store, &archive, &opts, self.progress)
                .or_else(|_| {
                let opts = nbrt_oci::transfer::ImportOptions {
                    select: None,
                    ..opts.clone()
                };
                nbrt_oci::transfer::import(self.store, &archive, &opts, self.progress)
            })?;
            return Ok(imported.0);
        }
        let ropts = nbrt_oci::registry::RegistryOptions {
            insecure: false,
            docker_config: None,
        };
        let progress = self.progress;
        let store = self.store;
        let pulled = nbrt_build::blocking::block_on(|| {
            nbrt_oci::registry::pull(store, reference, &ropts, progress)
        })?;
        match pulled {
            Ok((image, _)) => Ok(image),
            Err(e) => Err(self.err(
                inst,
                format!(
                    "{reference}: not in nbrt's store, not in the Docker engine, and the \
                     registry pull failed: {e}"
                ),
            )),
        }
    }

    fn stage(&mut self, s: &StageDef, stages: &[StageDef]) -> Result<State> {
        let Op::From { image, flags, .. } = &s.from.op else {
            return Err(self.err(&s.from, "a stage must start with FROM"));
        };
        for (n, v) in flags {
            if n != "platform" {
                return Err(self.err(&s.from, format!("unknown flag: --{n}")));
            }
            let p = self.expand(&s.from, v.as_deref().unwrap_or_default(), &self.global)?;
            let host = platform_args()[0].1.clone();
            if p != host && p != "$BUILDPLATFORM" {
                return Err(self.err(
                    &s.from,
                    format!("--platform={p}: nbrt builds for the host platform ({host}) only"),
                ));
            }
        }
        let reference = self.expand(&s.from, image, &self.global)?;
        if reference.is_empty() {
            return Err(self.err(&s.from, "base name should not be blank (is an ARG unset?)"));
        }
        let stage_label = s
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", s.index));
        writeln!(self.log, "[{stage_label}] FROM {reference}").ok();
        let mut state = if let Some(i) = self.stage_ref(stages, &reference, s.index) {
            let mut st =
                self.done.get(&i).cloned().ok_or_else(|| {
                    self.err(&s.from, format!("stage {reference:?} was not built"))
                })?;
            st.args.clear();
            st.cmd_set = false;
            st
        } else if reference.eq_ignore_ascii_case("scratch") {
            let host = Platform::host();
            State {
                layers: Vec::new(),
                diff_ids: Vec::new(),
                config: ImageConfig {
                    architecture: host.architecture,
                    os: host.os,
                    variant: host.variant,
                    rootfs: RootFs {
                        kind: "layers".into(),
                        diff_ids: Vec::new(),
                    },
                    // BuildKit's empty image: working directory `/` (the PATH comes below).
                    config: Some(ContainerConfig {
                        working_dir: Some("/".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                args: Vec::new(),
                shell: Vec::new(),
                cmd_set: false,
                base_digest: None,
                user_set_by: None,
            }
        } else {
            let image = self.base_image(&s.from, &reference)?;
            let mut config = image.config.value().clone();
            let onbuild = config
                .config
                .as_ref()
                .and_then(|c| c.extra.get("OnBuild"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if onbuild {
                return Err(self.err(
                    &s.from,
                    format!(
                        "{reference} has ONBUILD triggers, which nbrt does not run; build on \
                         an image without them"
                    ),
                ));
            }
            if self.created.is_none() {
                self.created = config.created.clone();
            }
            config.config.get_or_insert_with(Default::default);
            State {
                layers: image.layers().to_vec(),
                diff_ids: image.diff_ids().to_vec(),
                config,
                args: Vec::new(),
                shell: Vec::new(),
                cmd_set: false,
                base_digest: Some(image.digest().clone()),
                user_set_by: None,
            }
        };
        if let Some(cc) = state.config.config.as_mut() {
            cc.extra.remove("OnBuild");
        }
        if !state.env_pairs().iter().any(|(k, _)| k == "PATH") {
            state.set_env("PATH", DEFAULT_PATH);
        }
        if state.shell.is_empty() {
            state.shell = state
                .config
                .config
                .as_ref()
                .and_then(|c| c.extra.get("Shell"))
                .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        }
        for inst in &s.body {
            self.instruction(&mut state, inst, stages, s.index, &stage_label)?;
        }
        Ok(state)
    }

    fn history(&self, st: &mut State, created_by: String, layer: bool) {
        st.config.history.push(History {
            created: self.created.clone(),
            created_by: Some(created_by),
            comment: Some("nbrt dockerfile".into()),
            empty_layer: !layer,
            ..Default::default()
        });
    }

    fn instruction(
        &mut self,
        st: &mut State,
        inst: &Instruction,
        stages: &[StageDef],
        index: usize,
        stage: &str,
    ) -> Result<()> {
        let scope = st.scope();
        match &inst.op {
            Op::From { .. } => return Err(self.err(inst, "FROM inside a stage")),
            Op::Arg(args) => {
                for (k, default) in args {
                    self.consumed.insert(k.clone());
                    let value = if let Some(v) = self.opts.build_args.get(k) {
                        Some(v.clone())
                    } else if let Some(d) = default {
                        Some(self.expand(inst, d, &st.scope())?)
                    } else {
                        self.global
                            .iter()
                            .find(|(n, _)| n == k)
                            .map(|(_, v)| v.clone())
                    };
                    st.args.retain(|(n, _)| n != k);
                    if let Some(v) = value {
                        st.args.push((k.clone(), v));
                    }
                }
                self.history(st, format!("ARG {}", inst_args(inst)), false);
            }
            Op::Env(pairs) => {
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((self.expand(inst, k, &scope)?, self.expand(inst, v, &scope)?));
                }
                for (k, v) in &set {
                    st.set_env(k, v);
                }
                let text = set
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                self.history(st, format!("ENV {text}"), false);
            }
            Op::Label(pairs) => {
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((self.expand(inst, k, &scope)?, self.expand(inst, v, &scope)?));
                }
                let labels = st.cc().labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in set {
                    labels.insert(k, v);
                }
                self.history(st, format!("LABEL {}", inst_args(inst)), false);
            }
            Op::User(u) => {
                let u = self.expand(inst, u, &scope)?;
                st.cc().user = Some(u.clone());
                st.user_set_by = Some(inst.clone());
                self.history(st, format!("USER {u}"), false);
            }
            Op::Shell(args) => {
                if args.is_empty() {
                    return Err(self.err(inst, "SHELL requires at least one argument"));
                }
                st.shell = args.clone();
                st.cc().extra.insert("Shell".into(), json!(args));
                self.history(st, format!("SHELL {args:?}"), false);
            }
            Op::Cmd(c) => {
                let argv = self.argv(st, c);
                st.cc().cmd = Some(argv.clone());
                st.cmd_set = true;
                self.history(st, format!("CMD {argv:?}"), false);
            }
            Op::Entrypoint(c) => {
                let argv = self.argv(st, c);
                st.cc().entrypoint = Some(argv.clone());
                if !st.cmd_set {
                    st.cc().cmd = None;
                }
                self.history(st, format!("ENTRYPOINT {argv:?}"), false);
            }
            Op::Expose(ports) => {
                let mut add = Vec::new();
                for p in ports {
                    for word in split_words(&self.expand(inst, p, &scope)?, self.escape) {
                        add.extend(expose_ports(&word).map_err(|m| self.err(inst, m))?);
                    }
                }
                let map = st.cc().exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in &add {
                    map.insert(p.clone(), json!({}));
                }
                self.history(st, format!("EXPOSE {}", add.join(" ")), false);
            }
            Op::Volume(vols) => {
                let mut add = Vec::new();
                for v in vols {
                    let v = self.expand(inst, v, &scope)?;
                    if v.is_empty() {
                        return Err(self.err(inst, "VOLUME specified can not be an empty string"));
                    }
                    add.push(v);
                }
                let map = st.cc().volumes.get_or_insert_with(BTreeMap::new);
                for v in &add {
                    map.insert(v.clone(), json!({}));
                }
                self.history(st, format!("VOLUME {add:?}"), false);
            }
            Op::StopSignal(s) => {
                let s = self.expand(inst, s, &scope)?;
                st.cc().stop_signal = Some(s.clone());
                self.history(st, format!("STOPSIGNAL {s}"), false);
            }
            Op::Maintainer(m) => {
                st.config.author = Some(m.clone());
                self.history(st, format!("MAINTAINER {m}"), false);
            }
            Op::Onbuild(trigger) => {
                let cc = st.cc();
                let list = cc
                    .extra
                    .entry("OnBuild".to_string())
                    .or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(trigger));
                }
                self.history(st, format!("ONBUILD {trigger}"), false);
            }
            Op::Healthcheck { flags, cmd } => {
                let f = parse_flags(
                    self,
                    inst,
                    flags,
                    &["interval", "timeout", "start-period", "retries"],
                )?;
                let dur = |name: &str| -> Result<Option<i64>> {
                    match f.get(name).and_then(|v| v.last()) {
                        None => Ok(None),
                        Some(v) => match parse_duration(v) {
                            Some(0) => Ok(None),
                            Some(d) if d >= 1_000_000 => Ok(Some(d)),
                            _ => Err(self.err(
                                inst,
                                format!("--{name}: {v:?} is not a duration of at least 1ms"),
                            )),
                        },
                    }
                };
                let hc = match cmd {
                    None => Healthcheck {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                    Some(c) => {
                        let test = match c {
                            Cmd::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            Cmd::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        let retries = match f.get("retries").and_then(|v| v.last()) {
                            None => None,
                            Some(r) => match r.parse::<i64>() {
                                Ok(0) => None,
                                Ok(n) if n > 0 => Some(n),
                                _ => {
                                    return Err(
                                        self.err(inst, "--retries must be a positive number")
                                    )
                                }
                            },
                        };
                        Healthcheck {
                            test: Some(test),
                            interval: dur("interval")?,
                            timeout: dur("timeout")?,
                            start_period: dur("start-period")?,
                            retries,
                            extra: BTreeMap::new(),
                        }
                    }
                };
                st.cc().healthcheck = Some(hc);
                self.history(st, format!("HEALTHCHECK {}", inst_args(inst)), false);
            }
            Op::Workdir(w) => {
                let w = self.expand(inst, w, &scope)?;
                let path = join_path(&st.workdir(), &w);
                st.cc().working_dir = Some(path.clone());
                let started = Instant::now();
                let made = self.workdir(st, inst, &path)?;
                if let Some(cached) = made {
                    self.report(stage, inst, cached, started);
                }
            }
            Op::Run { flags, cmd } => {
                let started = Instant::now();
                let cached = self.run(st, inst, flags, cmd, stages, index)?;
                self.report(stage, inst, cached, started);
            }
            Op::Copy {
                add,
                flags,
                sources,
                heredocs,
                dest,
            } => {
                let started = Instant::now();
                let what = CopySources {
                    add: *add,
                    flags,
                    sources,
                    heredocs,
                    dest,
                };
                let cached = self.copy(st, inst, &what, stages, index)?;
                self.report(stage, inst, cached, started);
            }
        }
        Ok(())
    }

    fn report(&mut self, stage: &str, inst: &Instruction, cached: bool, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        writeln!(
            self.log,
            "[{stage}] {}{}",
            inst.text,
            if cached {
                "  (cached)".to_string()
            } else {
                format!("  ({seconds:.1}s)")
            }
        )
        .ok();
        self.steps.push(StepReport {
            stage: stage.to_string(),
            line: inst.line,
            instruction: inst.text.clone(),
            cached,
            seconds,
        });
    }

    fn argv(&self, st: &State, c: &Cmd) -> Vec<String> {
        match c {
            Cmd::Exec(v) => v.clone(),
            Cmd::Shell(s) => {
                let mut v = st.shell.clone();
                v.push(s.clone());
                v
            }
        }
    }

    fn view(&self, st: &State) -> Result<MergedView> {
        Ok(MergedView::new(self.lowers(st)?))
    }

    fn lowers(&self, st: &State) -> Result<Vec<PathBuf>> {
        let below: Vec<(&Descriptor, &Digest)> = st.layers.iter().zip(&st.diff_ids).collect();
        Ok(self.snapshots.ensure_all(self.store, &below)?)
    }

    /// The layer cached under `key`, unless `--no-cache`.
    fn cached(&self, key: &str) -> Result<Option<CachedStep>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        Ok(cache::get(self.store, key)?)
    }

    fn push_layer(&self, st: &mut State, entry: &CachedStep) {
        st.layers.push(entry.layer.clone());
        st.diff_ids.push(entry.diff_id.clone());
        self.history(st, entry.created_by.clone(), true);
    }

    /// Write `dir` as the step's layer, cache it under `key` and add it to the stage.
    fn commit(
        &self,
        st: &mut State,
        key: &str,
        dir: &Path,
        overlay: bool,
        created_by: String,
    ) -> Result<()> {
        let info = layer_from_dir(
            self.store,
            dir,
            &DirLayerOptions {
                overlay_upper: overlay,
                clamp_mtime: clamp(),
                compression: Compression::Gzip,
                exclude: Vec::new(),
            },
        )?;
        // The tree becomes the layer's snapshot (an overlay upper directory is already in
        // the snapshots' form): the next step needs it as a lower, and unpacking the blob
        // again costs more than the step. A failure only means it is unpacked when needed.
        if let Err(e) = self.snapshots.adopt(&info.diff_id, dir, clamp()) {
            tracing::debug!("the step's tree was not kept as a snapshot: {e}");
        }
        let entry = CachedStep {
            layer: info.descriptor(),
            diff_id: info.diff_id.clone(),
            created_by,
            epoch: None,
        };
        cache::put(self.store, key, &entry)?;
        self.push_layer(st, &entry);
        Ok(())
    }

    fn key(&self, st: &State, doc: Value, extra: Option<String>) -> Result<String> {
        let doc = json!({ "v": CACHE_VERSION, "parent": st.diff_ids, "step": doc,
            "sde": source_date_epoch(), "extra": extra });
        let bytes = nbrt_oci::json::to_canonical_vec(&doc, "step key")?;
        let mut h = Sha256::new();
        h.update(&bytes);
        Ok(hex(h))
    }

    /// The uid and gid of a user spec as BuildKit's file operations resolve it: a numeric
    /// user without a group takes its uid as gid; a name takes its passwd entry's.
    fn owner(&self, view: &MergedView, inst: &Instruction, spec: &str) -> Result<(u32, u32)> {
        let (u, g) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let uid_only = u.parse::<u32>().ok();
        let (uid, mut gid) = match uid_only {
            Some(n) => (n, n),
            None => {
                let r = sandbox::resolve_user_in(view, u).map_err(|_| {
                    self.err(
                        inst,
                        format!("unable to find user {u}: no matching entries in passwd file"),
                    )
                })?;
                (r.uid, r.gid)
            }
        };
        if let Some(g) = g {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => {
                    sandbox::resolve_user_in(view, &format!("0:{g}"))
                        .map_err(|_| {
                            self.err(
                                inst,
                                format!(
                                    "unable to find group {g}: no matching entries in group file"
                                ),
                            )
                        })?
                        .gid
                }
            };
        }
        Ok((uid, gid))
    }

    /// WORKDIR: the directory (and its parents) made as the current user when missing.
    /// Returns whether a layer came from the cache (`None`: nothing to make).
    fn workdir(&mut self, st: &mut State, inst: &Instruction, path: &str) -> Result<Option<bool>> {
        if path == "/" {
            self.history(st, format!("WORKDIR {path}"), false);
            return Ok(None);
        }
        let view = self.view(st)?;
        let rel = path.trim_start_matches('/');
        if view
            .lookup(rel, true)?
            .is_some_and(|f| matches!(f.node, nbrt_build::snapshot::Node::Dir(_)))
        {
            self.history(st, format!("WORKDIR {path}"), false);
            return Ok(None);
        }
        let user = st.user();
        let key = self.key(st, json!({"workdir": path, "user": user}), None)?;
        if let Some(entry) = self.cached(&key)? {
            self.push_layer(st, &entry);
            return Ok(Some(true));
        }
        let owner = if user.is_empty() {
            (0, 0)
        } else {
            self.owner(&view, inst, &user)?
        };
        let scratch = StepDir::new(&self.store.tmp())?;
        let staging = scratch.path().join("root");
        fs::create_dir_all(&staging).io_context(|| "creating the staging directory")?;
        let target = view.resolve_lenient(rel)?;
        let mut dirs = Vec::new();
        make_parents(&view, &staging, &format!("{target}/x"), owner, &mut dirs)?;
        set_dir_times(&dirs)?;
        self.commit(st, &key, &staging, false, format!("WORKDIR {path}"))?;
        Ok(Some(false))
    }

    fn run(
        &mut self,
        st: &mut State,
        inst: &Instruction,
        flags: &Flags,
        cmd: &Cmd,
        stages: &[StageDef],
        index: usize,
    ) -> Result<bool> {
        let f = parse_flags(self, inst, flags, &["mount", "network", "security"])?;
        if let Some(sec) = f.get("security") {
            if sec.iter().any(|s| s != "sandbox") {
                return Err(self.err(inst, "--security=insecure is not supported"));
            }
        }
        let network = match f.get("network").and_then(|v| v.last()).map(String::as_str) {
            None | Some("default") | Some("host") => true,
            Some("none") => false,
            Some(other) => {
                return Err(self.err(inst, format!("--network={other}: unknown network")))
            }
        };
        let scope = st.scope();
        let mut mounts = Vec::new();
        for m in f.get("mount").cloned().unwrap_or_default() {
            let m = self.expand(inst, &m, &scope)?;
            let mut spec = self.mount_spec(inst, &m, stages, index)?;
            if spec.kind == "secret" && spec.required {
                let id = spec.id.clone().unwrap_or_default();
                if !self.opts.secrets.contains_key(&id) {
                    return Err(self.err(
                        inst,
                        format!(
                            "secret {id:?} not found: the mount is required; give it with \
                             `nbrt build --secret id={id},src=PATH` (or id={id},env=VAR)"
                        ),
                    ));
                }
            }
            if let Some(MountFrom::Image(name)) = &spec.from {
                spec.from = Some(MountFrom::Loaded(Box::new(self.base_image(inst, name)?)));
            }
            mounts.push(spec);
        }
        let argv = self.argv(st, cmd);
        let mut env = st.run_env();
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(p) {
                if !env.iter().any(|e| e.starts_with(&format!("{p}="))) {
                    env.push(format!("{p}={v}"));
                }
            }
        }
        let user = st.user();
        let workdir = st.workdir();
        let mut mount_keys = Vec::new();
        for m in &mounts {
            mount_keys.push(self.mount_key(m)?);
        }
        let key = self.key(
            st,
            json!({"run": argv, "env": env, "user": user, "workdir": workdir,
                   "network": network, "mounts": mount_keys}),
            None,
        )?;
        let created_by = format!("RUN {}", shell_join(&argv));
        if let Some(entry) = self.cached(&key)? {
            self.push_layer(st, &entry);
            return Ok(true);
        }
        writeln!(self.log, "[{}] {}", index, inst.text).ok();
        let lowers = self.lowers(st)?;
        let view = MergedView::new(lowers.clone());
        if !user.is_empty() {
            sandbox::resolve_user_in(&view, &user).map_err(|_| {
                let mut msg =
                    format!("unable to find user {user}: no matching entries in passwd file");
                if user.contains('#') {
                    msg.push_str(" (a comment after an instruction is part of it in Dockerfiles)");
                }
                match &st.user_set_by {
                    Some(u) => {
                        self.err(u, format!("{msg}; needed by the RUN on line {}", inst.line))
                    }
                    None => self.err(inst, msg),
                }
            })?;
        }
        let scratch = StepDir::new(&self.store.tmp())?;
        let mut extra = Vec::new();
        let mut secrets: Option<SecretFiles> = None;
        let mut secret_targets = Vec::new();
        for (i, m) in mounts.iter().enumerate() {
            if m.kind == "secret" {
                // A secret that was not given (and is not required) is left out, as BuildKit
                // leaves it.
                let Some(value) = m.id.as_ref().and_then(|id| self.opts.secrets.get(id)) else {
                    continue;
                };
                if let Some(var) = &m.env {
                    let text = std::str::from_utf8(&value.0).map_err(|_| {
                        self.err(
                            inst,
                            format!("secret {var}: not UTF-8, cannot be a variable"),
                        )
                    })?;
                    env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(var.as_str()));
                    env.push(format!("{var}={text}"));
                }
                if m.target.is_empty() {
                    continue;
                }
                let target = join_path("/", &m.target);
                let files = match &mut secrets {
                    Some(f) => f,
                    None => secrets.insert(SecretFiles::new(scratch.path())?),
                };
                let file = files.write(
                    i,
                    value,
                    m.mode.unwrap_or(0o400),
                    (m.uid.unwrap_or(0), m.gid.unwrap_or(0)),
                )?;
                extra.push(ExtraMount {
                    destination: target.clone(),
                    source: Some(file),
                    writable: false,
                });
                secret_targets.push(target);
                continue;
            }
            extra.push(self.mount_source(inst, m, scratch.path(), i)?);
        }
        let spec = RunSpec {
            argv,
            user: if user.is_empty() { "root".into() } else { user },
            env,
            workdir,
            network,
            host_ca_bundle: None,
        };
        let run = sandbox::run_with_mounts(&lowers, &spec, &extra, scratch.path(), self.log)
            .map_err(|e| self.err(inst, e.to_string()))?;
        drop(secrets);
        remove_secret_stubs(&run.upper_dir(), &view, &secret_targets)?;
        self.commit(st, &key, &run.upper_dir(), true, created_by)?;
        Ok(false)
    }

    fn mount_spec(
        &self,
        inst: &Instruction,
        text: &str,
        stages: &[StageDef],
        index: usize,
    ) -> Result<MountSpec> {
        let mut m = MountSpec {
            kind: "bind".into(),
            target: String::new(),
            source: String::new(),
            from: None,
            readwrite: false,
            id: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            env: None,
        };
        let number = |k: &str, v: &str, radix: u32| {
            u32::from_str_radix(v, radix)
                .map_err(|_| self.err(inst, format!("--mount: {k}={v:?} is not a number")))
        };
        let mut target_given = false;
        for field in text.split(',') {
            let (k, v) = field.split_once('=').unwrap_or((field, "true"));
            match k {
                "target" | "dst" | "destination" => {
                    m.target = v.to_string();
                    target_given = true;
                }
                "required" => m.required = v != "false",
                "mode" => m.mode = Some(number(k, v, 8)?),
                "uid" => m.uid = Some(number(k, v, 10)?),
                "gid" => m.gid = Some(number(k, v, 10)?),
                "env" => m.env = Some(v.to_string()),
                "type" => m.kind = v.to_string(),
                "source" | "src" => m.source = v.to_string(),
                "from" => {
                    m.from = Some(match self.stage_ref(stages, v, index) {
                        Some(i) => MountFrom::Stage(i),
                        None => MountFrom::Image(v.to_string()),
                    })
                }
                "rw" | "readwrite" => m.readwrite = v != "false",
                "ro" | "readonly" => m.readwrite = v == "false",
                "id" => m.id = Some(v.to_string()),
                "sharing" | "size" => {}
                other => return Err(self.err(inst, format!("--mount: unknown option {other:?}"))),
            }
        }
        match m.kind.as_str() {
            "bind" | "cache" | "tmpfs" => {}
            "secret" => {
                // BuildKit: the id defaults to the target's file name, the target to
                // /run/secrets/<id>; with `env=` and no target the secret is only a variable.
                if m.id.is_none() && target_given {
                    m.id = m.target.rsplit('/').next().map(str::to_string);
                }
                let Some(id) = m.id.clone().filter(|i| !i.is_empty()) else {
                    return Err(
                        self.err(inst, "--mount=type=secret: an id or a target is required")
                    );
                };
                if !target_given && m.env.is_none() {
                    m.target = format!("/run/secrets/{id}");
                }
                if m.env.is_some() && !target_given {
                    return Ok(m);
                }
            }
            "ssh" => {
                return Err(self.err(
                    inst,
                    "--mount=type=ssh is not supported: nbrt forwards no SSH agent into builds \
                     (a key can reach a RUN as a build secret: --mount=type=secret with \
                     nbrt build --secret)",
                ))
            }
            other => {
                return Err(self.err(
                    inst,
                    format!("--mount=type={other}: nbrt supports bind, cache, tmpfs and secret"),
                ))
            }
        }
        if m.target.is_empty() {
            return Err(self.err(inst, "--mount: a target is required"));
        }
        Ok(m)
    }

    fn mount_key(&self, m: &MountSpec) -> Result<Value> {
        let source = match (&m.kind[..], &m.from) {
            ("bind", Some(MountFrom::Stage(i))) => {
                json!({"stage": self.done.get(i).map(|s| s.diff_ids.clone()), "path": m.source})
            }
            ("bind", Some(MountFrom::Loaded(image))) => {
                json!({"image": image.diff_ids(), "path": m.source})
            }
            ("bind", _) => {
                let ctx = Context::open(&self.opts.context)?;
                let mut h = Sha256::new();
                if let Ok(paths) = context::expand_source(&ctx, &m.source) {
                    for p in paths {
                        context::hash_items(&context::select(&ctx, &p)?.items, false, &mut h)?;
                    }
                }
                json!({"context": hex(h), "path": m.source})
            }
            // BuildKit keys a secret by its id and where it goes, never by its value.
            ("secret", _) => json!({"id": m.id, "mode": m.mode, "uid": m.uid, "gid": m.gid,
                                    "env": m.env, "required": m.required}),
            _ => json!(m.id.clone().unwrap_or_else(|| m.target.clone())),
        };
        Ok(json!({"type": m.kind, "target": m.target, "source": source, "rw": m.readwrite}))
    }

    /// A mount's host side: a copy of the bind source (from the context or a stage), a
    /// persistent cache directory, or a tmpfs.
    fn mount_source(
        &mut self,
        inst: &Instruction,
        m: &MountSpec,
        scratch: &Path,
        i: usize,
    ) -> Result<ExtraMount> {
        let target = if m.target.starts_with('/') {
            m.target.clone()
        } else {
            join_path("/", &m.target)
        };
        match m.kind.as_str() {
            "tmpfs" => Ok(ExtraMount {
                destination: target,
                source: None,
                writable: true,
            }),
            "cache" => {
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let mut h = Sha256::new();
                h.update(id.as_bytes());
                let dir = self
                    .store
                    .root()
                    .join("cache/dockerfile-run-mounts")
                    .join(hex(h));
                fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
                Ok(ExtraMount {
                    destination: target,
                    source: Some(dir),
                    writable: true,
                })
            }
            _ => {
                let copy = scratch.join(format!("mount-{i}"));
                fs::create_dir_all(&copy).io_context(|| format!("creating {}", copy.display()))?;
                let src: Box<dyn SourceFs> = match &m.from {
                    Some(MountFrom::Stage(s)) => {
                        let st = self.done.get(s).ok_or_else(|| {
                            self.err(inst, "--mount from a stage that was not built")
                        })?;
                        Box::new(ViewFs(self.view(st)?))
                    }
                    Some(MountFrom::Loaded(image)) => {
                        let layers: Vec<(&Descriptor, &Digest)> =
                            image.layers().iter().zip(image.diff_ids()).collect();
                        Box::new(ViewFs(MergedView::new(
                            self.snapshots.ensure_all(self.store, &layers)?,
                        )))
                    }
                    _ => Box::new(Context::open(&self.opts.context)?),
                };
                let rel = clean(&format!("/{}", m.source));
                let sel = context::select(src.as_ref(), rel.trim_start_matches('/'))?;
                if sel.items.is_empty() {
                    return Err(self.err(inst, format!("--mount source {:?} not found", m.source)));
                }
                let single = !sel.is_dir;
                let dest = if single {
                    copy.join("file")
                } else {
                    copy.clone()
                };
                let mut dirs = Vec::new();
                for it in &sel.items {
                    let p = if it.dest.is_empty() {
                        dest.clone()
                    } else {
                        dest.join(&it.dest)
                    };
                    write_item(it, &p, (it.uid, it.gid), None, None, &mut dirs)?;
                }
                set_dir_times(&dirs)?;
                Ok(ExtraMount {
                    destination: target,
                    source: Some(dest),
                    writable: m.readwrite,
                })
            }
        }
    }

    fn copy(
        &mut self,
        st: &mut State,
        inst: &Instruction,
        what: &CopySources<'_>,
        stages: &[StageDef],
        index: usize,
    ) -> Result<bool> {
        let CopySources {
            add,
            flags,
            sources,
            heredocs,
            dest,
        } = *what;
        let f = parse_flags(
            self,
            inst,
            flags,
            &["from", "chown", "chmod", "link", "checksum", "keep-git-dir"],
        )?;
        let scope = st.scope();
        let last = |n: &str| f.get(n).and_then(|v| v.last()).cloned();
        let chown = last("chown")
            .map(|c| self.expand(inst, &c, &scope))
            .transpose()?;
        let chmod = match last("chmod") {
            None => None,
            Some(c) => Some(
                parse_mode(&self.expand(inst, &c, &scope)?)
                    .ok_or_else(|| self.err(inst, format!("invalid chmod parameter: {c}")))?,
            ),
        };
        let from = last("from")
            .map(|v| self.expand(inst, &v, &self.global))
            .transpose()?;
        let mut srcs = Vec::new();
        for s in sources {
            srcs.push(self.expand(inst, s, &scope)?);
        }
        if f.contains_key("checksum")
            && (!add || srcs.iter().any(|s| !is_url(s)) || srcs.is_empty())
        {
            return Err(self.err(inst, "--checksum is for ADD from HTTP(S) URLs only"));
        }
        let dest_word = self.expand(inst, dest, &scope)?;
        let dest_abs = join_path(&st.workdir(), &dest_word);
        let view = self.view(st)?;
        // Where the copy reads from.
        let (fs_box, from_label, keep_owners): (Box<dyn SourceFs>, Value, bool) = match &from {
            None => {
                let ctx = Context::open(&self.opts.context)?;
                (Box::new(ctx), json!("context"), false)
            }
            Some(name) => match self.stage_ref(stages, name, index) {
                Some(i) => {
                    let other = self
                        .done
                        .get(&i)
                        .ok_or_else(|| self.err(inst, format!("stage {name:?} was not built")))?;
                    let v = self.view(other)?;
                    (Box::new(ViewFs(v)), json!({"stage": other.diff_ids}), true)
                }
                None => {
                    let image = self.base_image(inst, name)?;
                    let layers: Vec<(&Descriptor, &Digest)> =
                        image.layers().iter().zip(image.diff_ids()).collect();
                    let v = MergedView::new(self.snapshots.ensure_all(self.store, &layers)?);
                    (
                        Box::new(ViewFs(v)),
                        json!({"image": image.diff_ids()}),
                        true,
                    )
                }
            },
        };
        let src_fs = fs_box.as_ref();
        let mut selections = Vec::new();
        // Which selections ADD may unpack (not downloads, not heredocs).
        let mut unpackable = Vec::new();
        // Downloads and heredocs are written here before the cache key is made.
        let fetched = StepDir::new(&self.store.tmp())?;
        for s in &srcs {
            if is_url(s) {
                if !add {
                    return Err(self.err(
                        inst,
                        format!("{s}: COPY does not take URLs (ADD downloads them)"),
                    ));
                }
                let checksum = last("checksum")
                    .map(|c| self.expand(inst, &c, &scope))
                    .transpose()?;
                let sel = self.download(
                    inst,
                    s,
                    checksum.as_deref(),
                    fetched.path(),
                    selections.len(),
                )?;
                selections.push(sel);
                unpackable.push(false);
                continue;
            }
            let paths = context::expand_source(src_fs, s).map_err(|e| match e {
                SourceError::OutsideContext => self.err(
                    inst,
                    format!("{s}: the source is outside the build context"),
                ),
                SourceError::NotFound => self.err(
                    inst,
                    if from.is_none() {
                        format!(
                            "{s}: not found in the build context (or excluded by .dockerignore)"
                        )
                    } else {
                        format!("{s}: not found in {}", from.clone().unwrap_or_default())
                    },
                ),
            })?;
            for p in paths {
                selections.push(context::select(src_fs, &p)?);
                unpackable.push(true);
            }
        }
        for (i, doc) in heredocs.iter().enumerate() {
            let content = if doc.expand {
                expand_raw(&doc.content, &scope, self.escape).map_err(|e| self.err(inst, e.0))?
            } else {
                doc.content.clone()
            };
            let disk = fetched.path().join(format!("heredoc-{i}"));
            fs::write(&disk, &content).io_context(|| format!("writing {}", disk.display()))?;
            selections.push(single_file(&doc.name, disk, 0o664, content.len() as u64));
            unpackable.push(false);
        }
        let dest_exists_dir = view
            .lookup(dest_abs.trim_start_matches('/'), true)?
            .is_some_and(|f| matches!(f.node, nbrt_build::snapshot::Node::Dir(_)));
        let dest_is_dir = dest_word.ends_with('/')
            || selections.len() > 1
            || dest_exists_dir
            || selections.iter().any(|s| s.is_dir);
        if selections.len() > 1 && !dest_word.ends_with('/') && !dest_exists_dir {
            return Err(self.err(
                inst,
                "When using COPY with more than one source file, the destination must be a directory and end with a /",
            ));
        }
        let owner = match &chown {
            Some(c) => Some(self.owner(&view, inst, c)?),
            None => None,
        };
        // Which sources ADD unpacks.
        let mut archives = Vec::new();
        for (sel, may) in selections.iter().zip(&unpackable) {
            let unpack = add
                && *may
                && from.is_none()
                && !sel.is_dir
                && sel
                    .items
                    .first()
                    .is_some_and(|i| i.kind == Kind::File && is_archive(&i.disk));
            archives.push(unpack);
        }
        let mut h = Sha256::new();
        for sel in &selections {
            h.update(sel.name.as_bytes());
            h.update([u8::from(sel.is_dir)]);
            context::hash_items(&sel.items, keep_owners, &mut h)?;
        }
        let key = self.key(
            st,
            json!({"copy": add, "dest": dest_abs, "dest_is_dir": dest_is_dir, "owner": owner,
                   "chmod": chmod, "from": from_label, "sources": srcs, "unpack": archives}),
            Some(hex(h)),
        )?;
        let created_by = format!("{} {} {}", inst.keyword, srcs.join(" "), dest_abs);
        if let Some(entry) = self.cached(&key)? {
            self.push_layer(st, &entry);
            return Ok(true);
        }
        let scratch = StepDir::new(&self.store.tmp())?;
        let staging = scratch.path().join("root");
        fs::create_dir_all(&staging).io_context(|| "creating the staging directory")?;
        let root_rel = view.resolve_lenient(dest_abs.trim_start_matches('/'))?;
        let new_owner = owner.unwrap_or((0, 0));
        let mut dirs = Vec::new();
        for (sel, unpack) in selections.iter().zip(&archives) {
            let base_rel = if dest_is_dir && !sel.is_dir {
                join_rel(&root_rel, &sel.name)
            } else {
                root_rel.clone()
            };
            if *unpack {
                let into = root_rel.clone();
                make_parents(&view, &staging, &format!("{into}/x"), new_owner, &mut dirs)?;
                let disk = &sel.items[0].disk;
                let file =
                    fs::File::open(disk).io_context(|| format!("reading {}", disk.display()))?;
                let (_, reader) = decompress_sniffed(file)?;
                apply_layer(
                    &staging.join(&into),
                    reader,
                    ApplyOptions {
                        chown: true,
                        ..Default::default()
                    },
                )?;
                if let Some((u, g)) = owner {
                    chown_tree(&staging.join(&into), u, g)?;
                }
                continue;
            }
            make_parents(&view, &staging, &base_rel, new_owner, &mut dirs)?;
            for it in &sel.items {
                let rel = join_rel(&base_rel, &it.dest);
                let abs = staging.join(&rel);
                // The destination directory keeps its owner, mode and time; a directory
                // inside the copy that exists already takes the copy's, as a new one (as
                // BuildKit copies them).
                let existing = if it.kind == Kind::Dir && it.dest.is_empty() {
                    view.symlink_metadata(&rel)?.filter(|m| m.is_dir())
                } else {
                    None
                };
                let own = owner.unwrap_or(if keep_owners {
                    (it.uid, it.gid)
                } else {
                    (0, 0)
                });
                write_item(it, &abs, own, chmod, existing.as_ref(), &mut dirs)?;
            }
        }
        set_dir_times(&dirs)?;
        self.commit(st, &key, &staging, false, created_by)?;
        Ok(false)
    }

    /// ADD's download of `url` into `dir`: a file of mode 0600 named after the URL's last
    /// path segment, checked against `--checksum=sha256:…` when given.
    fn download(
        &mut self,
        inst: &Instruction,
        url: &str,
        checksum: Option<&str>,
        dir: &Path,
        n: usize,
    ) -> Result<context::Selected> {
        let expected = match checksum {
            None => None,
            Some(c) => Some(
                c.strip_prefix("sha256:")
                    .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| {
                        self.err(
                            inst,
                            format!("--checksum={c}: expected sha256:<64 hex digits>"),
                        )
                    })?,
            ),
        };
        let disk = dir.join(format!("download-{n}"));
        writeln!(self.log, "downloading {url}").ok();
        let fetched = nbrt_build::blocking::block_on(|| fetch(url, &disk))?;
        let (size, sha) = fetched.map_err(|m| self.err(inst, format!("{url}: {m}")))?;
        if let Some(e) = expected {
            if sha != e {
                return Err(self.err(
                    inst,
                    format!("{url}: the download's digest is sha256:{sha}, not the --checksum sha256:{e}"),
                ));
            }
        }
        Ok(single_file(&url_file_name(url), disk, 0o600, size))
    }

    fn assemble(&mut self, mut st: State) -> Result<Image> {
        st.config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: st.diff_ids.clone(),
        };
        st.config.created = Some(self.created.clone().unwrap_or_else(|| rfc3339(0)));
        let mut annotations = BTreeMap::new();
        if let Some(d) = &st.base_digest {
            annotations.insert(annotation::BASE_DIGEST.to_string(), d.to_string());
        }
        Ok(Image::assemble(st.config, st.layers, annotations)?)
    }
}

/// What a COPY or ADD copies, and where.
#[derive(Clone, Copy)]
struct CopySources<'a> {
    add: bool,
    flags: &'a Flags,
    sources: &'a [String],
    heredocs: &'a [Heredoc],
    dest: &'a str,
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// A source that is one file written by the build (a download, a heredoc), owned by root.
fn single_file(name: &str, disk: PathBuf, mode: u32, size: u64) -> context::Selected {
    context::Selected {
        items: vec![Item {
            src: name.to_string(),
            dest: String::new(),
            kind: Kind::File,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime: source_date_epoch().unwrap_or(0),
            disk,
        }],
        is_dir: false,
        name: name.to_string(),
    }
}

/// The largest file ADD downloads.
const MAX_DOWNLOAD: u64 = 8 << 30;

/// The name BuildKit gives a download: the URL path's last segment, else `__unnamed__`.
fn url_file_name(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
        })
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .unwrap_or_else(|| "__unnamed__".into())
}

/// Download `url` to `disk`; returns its size and sha256 (hex).
async fn fetch(url: &str, disk: &Path) -> std::result::Result<(u64, String), String> {
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client.get(url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("the server answered {}", resp.status()));
    }
    let mut file =
        fs::File::create(disk).map_err(|e| format!("writing {}: {e}", disk.display()))?;
    let mut h = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        size += chunk.len() as u64;
        if size > MAX_DOWNLOAD {
            return Err(format!("larger than {MAX_DOWNLOAD} bytes"));
        }
        h.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| format!("writing {}: {e}", disk.display()))?;
    }
    Ok((size, hex(h)))
}

/// Where a RUN's secrets are written for their bind mounts: a private directory on a tmpfs
/// (`/dev/shm`) when the host has one, else in the step's scratch directory; removed when
/// the step ends.
struct SecretFiles(tempfile::TempDir);

impl SecretFiles {
    fn new(scratch: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("nbrt-secrets-")
            .tempdir_in("/dev/shm")
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix("secrets-")
                    .tempdir_in(scratch)
            })
            .io_context(|| "creating a directory for the build secrets")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .io_context(|| format!("setting the mode of {}", dir.path().display()))?;
        Ok(SecretFiles(dir))
    }

    /// The secret as a file of `mode` owned by `uid:gid`.
    fn write(
        &self,
        i: usize,
        value: &Secret,
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> Result<PathBuf> {
        let path = self.0.path().join(format!("secret-{i}"));
        fs::write(&path, &value.0).io_context(|| format!("writing {}", path.display()))?;
        lchown(&path, uid, gid)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
            .io_context(|| format!("setting the mode of {}", path.display()))?;
        Ok(path)
    }
}

/// The empty files runc made as mount points for secret files, taken out of the step's
/// changes (BuildKit leaves no trace of the file; a directory made for it stays).
fn remove_secret_stubs(upper: &Path, view: &MergedView, targets: &[String]) -> Result<()> {
    for t in targets {
        let plain = clean(t).trim_start_matches('/').to_string();
        let resolved = view.resolve_lenient(t).unwrap_or_else(|_| plain.clone());
        for rel in [plain, resolved] {
            if rel.is_empty() || view.symlink_metadata(&rel).ok().flatten().is_some() {
                continue;
            }
            let p = upper.join(&rel);
            if let Ok(m) = fs::symlink_metadata(&p) {
                if m.is_file() && m.len() == 0 {
                    fs::remove_file(&p).io_context(|| format!("removing {}", p.display()))?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum MountFrom {
    Stage(usize),
    Image(String),
    /// An image named by `from=`, found (see [`Builder::base_image`]).
    Loaded(Box<Image>),
}

#[derive(Debug, Clone)]
struct MountSpec {
    kind: String,
    target: String,
    source: String,
    from: Option<MountFrom>,
    readwrite: bool,
    id: Option<String>,
    /// Secret mounts: fail when the secret was not given (default: skip the mount).
    required: bool,
    /// Secret mounts: the file's mode (default 0400) and owner (default 0:0).
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    /// Secret mounts: also (or only, without a target) an environment variable.
    env: Option<String>,
}

fn inst_args(inst: &Instruction) -> String {
    inst.text
        .split_once(char::is_whitespace)
        .map(|(_, r)| r.trim().to_string())
        .unwrap_or_default()
}

fn shell_join(argv: &[String]) -> String {
    argv.join(" ")
}

fn join_rel(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}/{b}"),
    }
}

/// EXPOSE's `80`, `80/udp`, `8000-8002/tcp` as config keys.
fn expose_ports(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let bad = || format!("invalid containerPort: {ports}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Whether a file is a tar archive (plain or compressed as nbrt reads layers).
pub(crate) fn is_archive(path: &Path) -> bool {
    let Ok(file) = fs::File::open(path) else {
        return false;
    };
    let Ok((_, mut reader)) = decompress_sniffed(file) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match std::io::Read::read(&mut reader, &mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n == 512 && &head[257..262] == b"ustar"
}

fn set_times(path: &Path, mtime: i64, follow: bool) -> Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let flags = if follow {
        rustix::fs::AtFlags::empty()
    } else {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, flags).map_err(|e| DockerfileError::Io {
        context: format!("setting the times of {}", path.display()),
        source: e.into(),
    })
}

fn lchown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .io_context(|| format!("setting the owner of {}", path.display()))
}

/// The directories above `rel` (not `rel` itself) in the staging tree: those the image has
/// keep its owner, mode and time (the layer carries entries for them); new ones are 0755
/// and owned by `owner`, as BuildKit makes them.
fn make_parents(
    view: &MergedView,
    staging: &Path,
    rel: &str,
    owner: (u32, u32),
    dirs: &mut Vec<(PathBuf, i64)>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    let mut path = String::new();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        path = join_rel(&path, part);
        let abs = staging.join(&path);
        if fs::symlink_metadata(&abs).is_ok() {
            continue;
        }
        fs::create_dir(&abs).io_context(|| format!("creating {}", abs.display()))?;
        match view.symlink_metadata(&path)?.filter(|m| m.is_dir()) {
            Some(meta) => {
                lchown(&abs, meta.uid(), meta.gid())?;
                fs::set_permissions(&abs, fs::Permissions::from_mode(meta.mode() & 0o7777))
                    .io_context(|| format!("setting the mode of {}", abs.display()))?;
                dirs.push((abs, meta.mtime()));
            }
            None => {
                lchown(&abs, owner.0, owner.1)?;
                fs::set_permissions(&abs, fs::Permissions::from_mode(0o755))
                    .io_context(|| format!("setting the mode of {}", abs.display()))?;
                dirs.push((abs, source_date_epoch().unwrap_or(0)));
            }
        }
    }
    Ok(())
}

/// Directory times are set last: writing into a directory changes its time.
fn set_dir_times(dirs: &[(PathBuf, i64)]) -> Result<()> {
    for (d, t) in dirs.iter().rev() {
        set_times(d, *t, true)?;
    }
    Ok(())
}

/// One copied entry at `abs`: a directory that the image has already keeps the image's
/// metadata (`existing`); everything else gets the source's mode (or `chmod`), `owner` and
/// the source's time.
fn write_item(
    it: &Item,
    abs: &Path,
    owner: (u32, u32),
    chmod: Option<u32>,
    existing: Option<&fs::Metadata>,
    dirs: &mut Vec<(PathBuf, i64)>,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    match &it.kind {
        Kind::Dir => {
            if !abs.is_dir() {
                fs::create_dir_all(abs).io_context(|| format!("creating {}", abs.display()))?;
            }
            let (uid, gid, mode, mtime) = match existing {
                Some(m) => (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime()),
                None => (owner.0, owner.1, chmod.unwrap_or(it.mode), it.mtime),
            };
            lchown(abs, uid, gid)?;
            fs::set_permissions(abs, fs::Permissions::from_mode(mode))
                .io_context(|| format!("setting the mode of {}", abs.display()))?;
            dirs.push((abs.to_path_buf(), mtime));
        }
        Kind::File => {
            if fs::symlink_metadata(abs).is_ok() {
                fs::remove_file(abs).ok();
            }
            fs::copy(&it.disk, abs).io_context(|| format!("copying {}", it.disk.display()))?;
            lchown(abs, owner.0, owner.1)?;
            fs::set_permissions(abs, fs::Permissions::from_mode(chmod.unwrap_or(it.mode)))
                .io_context(|| format!("setting the mode of {}", abs.display()))?;
            set_times(abs, it.mtime, true)?;
        }
        Kind::Symlink(target) => {
            if fs::symlink_metadata(abs).is_ok() {
                fs::remove_file(abs).ok();
            }
            std::os::unix::fs::symlink(target, abs)
                .io_context(|| format!("creating the symlink {}", abs.display()))?;
            lchown(abs, owner.0, owner.1)?;
            set_times(abs, it.mtime, false)?;
        }
    }
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, uid, gid)?;
    let meta = fs::symlink_metadata(path).io_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        for e in fs::read_dir(path).io_context(|| format!("listing {}", path.display()))? {
            let e = e.io_context(|| format!("listing {}", path.display()))?;
            chown_tree(&e.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_nanoseconds() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("x"), None);
    }

    #[test]
    fn exposed_ports() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002").unwrap(),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(expose_ports("http").is_err());
    }

    #[test]
    fn workdir_paths() {
        assert_eq!(join_path("/", "a/b"), "/a/b");
        assert_eq!(join_path("/a", "../c"), "/c");
        assert_eq!(join_path("/a", "/x/./y/"), "/x/y");
    }
}
