//! The builder commands: build, graph and rebase.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_build::builder::{build_stack, lock_only, BuildOptions, LockMode};
use nbrt_build::rebase::{Action, RebaseOptions};
use nbrt_build::reproducible::{check_reproducible, CheckReport, Difference};
use nbrt_build::stack::Stack;

use crate::images::{progress, Context};
use crate::output::json;
use crate::output::{out, outln};

/// `nbrt build` builds runtime files (a stack directory or one runtime file) or, in
/// Dockerfile mode, a Dockerfile. Dockerfile mode is chosen when `-f` or `-t` is given, or
/// when PATH is a directory holding a `Dockerfile` and no `runtime.toml`; PATH is then the
/// build context (default `.`) and the Dockerfile defaults to `PATH/Dockerfile`.
#[derive(Args)]
pub struct BuildArgs {
    /// A stack directory (runtimes in <name>/runtime.toml) or one runtime file; in
    /// Dockerfile mode, the build context
    stack: Option<PathBuf>,
    /// Dockerfile mode: the Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file", value_name = "DOCKERFILE")]
    file: Option<PathBuf>,
    /// Dockerfile mode: name the image NAME[:TAG] (repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    tag: Vec<String>,
    /// Dockerfile mode: a build argument K=V (repeatable)
    #[arg(long = "build-arg", value_name = "K=V")]
    build_arg: Vec<String>,
    /// Dockerfile mode: a secret for `RUN --mount=type=secret`: id=ID,src=PATH or
    /// id=ID,env=VAR, as docker build takes it (repeatable)
    #[arg(long = "secret", value_name = "id=ID,src=PATH|env=VAR")]
    secret: Vec<String>,
    /// Dockerfile mode: build this stage (default: the last)
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Build only this runtime and the runtimes it needs
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Run every step again instead of taking layers from the cache
    #[arg(long)]
    no_cache: bool,
    /// Build exactly what each runtime's runtime.lock records and write nothing; fail when a
    /// lock is missing, older than its runtime file, or made on another parent. (Without it,
    /// a build follows a current lock and resolves anew only where the runtime file changed.)
    #[arg(long, conflicts_with = "update_lock")]
    locked: bool,
    /// Resolve every package again and rewrite each runtime's runtime.lock (the refresh of
    /// a lock whose pins the package mirrors no longer have; exit status 3 says so)
    #[arg(long)]
    update_lock: bool,
    /// Build twice, each in a scratch store of its own from a copy of the stack at another
    /// path, and report the first layer and file where the images differ (non-zero exit
    /// when they do); the store and the stack are left as they are
    #[arg(long)]
    check_reproducible: bool,
    /// Write the --only runtime's runtime.lock without building it: the runtimes it needs are
    /// built, then its [pip] step is resolved (uv's dry run, metadata only). For runtimes
    /// too large to build where the lock is made; `nbrt build` then installs those pins
    #[arg(long, requires = "only", conflicts_with_all = ["locked", "check_reproducible"])]
    lock_only: bool,
    #[arg(long)]
    json: bool,
}

/// `--build-arg K=V` values; `--build-arg K` takes K from the environment, as docker does.
fn parse_build_args(given: &[String]) -> std::collections::BTreeMap<String, String> {
    let mut build_args = std::collections::BTreeMap::new();
    for kv in given {
        match kv.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
        }
    }
    build_args
}

/// `nbrt convert`: a Dockerfile written as the runtime file that builds the same image.
#[derive(Args)]
pub struct ConvertArgs {
    /// The Dockerfile
    dockerfile: PathBuf,
    /// Write the runtime file here (default: print it). Its directory must hold the files
    /// the Dockerfile copies: `[[files]]` sources are relative to it
    #[arg(short = 'o', long = "output", value_name = "RUNTIME.toml")]
    output: Option<PathBuf>,
    /// The build context (default: the Dockerfile's directory)
    #[arg(long, value_name = "DIR")]
    context: Option<PathBuf>,
    /// The runtime's name (default: the context directory's name)
    #[arg(long)]
    name: Option<String>,
    /// A build argument K=V (repeatable)
    #[arg(long = "build-arg", value_name = "K=V")]
    build_arg: Vec<String>,
    /// Print the runtime file and the report as JSON
    #[arg(long)]
    json: bool,
}

/// A runtime name from a directory name: lower case, other characters as `-`.
fn runtime_name(dir: &std::path::Path) -> String {
    let raw = std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if name.is_empty() {
        "converted".into()
    } else {
        name
    }
}

pub fn convert(ctx: &Context, a: ConvertArgs) -> Result<()> {
    let dir_of = |p: &std::path::Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let context = a.context.clone().unwrap_or_else(|| dir_of(&a.dockerfile));
    let output_dir = a
        .output
        .as_deref()
        .map(dir_of)
        .unwrap_or_else(|| context.clone());
    let name = a.name.clone().unwrap_or_else(|| runtime_name(&context));
    if !nbrt_build::runtime_file::valid_name(&name) {
        anyhow::bail!(
            "{name:?} is not a runtime name (lower-case letters, digits, -, _, .): give --name"
        );
    }
    // The base image is looked up in the store when there is one; convert works without.
    let store = match ctx.store_root() {
        Ok(root) if root.exists() => ctx.store().ok(),
        _ => None,
    };
    let opts = nbrt_dockerfile::convert::ConvertOptions {
        dockerfile: a.dockerfile.clone(),
        context,
        output_dir,
        name,
        build_args: parse_build_args(&a.build_arg),
    };
    let conversion = nbrt_dockerfile::convert::convert(store.as_ref(), &opts)
        .with_context(|| format!("converting {}", a.dockerfile.display()))?;
    if let Some(path) = &a.output {
        let tmp = path.with_extension("toml.partial");
        std::fs::write(&tmp, &conversion.runtime)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if a.json {
        return json(&conversion);
    }
    if a.output.is_none() {
        out!("{}", conversion.runtime);
    }
    let report: Box<dyn Fn(std::fmt::Arguments<'_>)> = if a.output.is_none() {
        // The runtime file is on stdout: the report goes to stderr.
        Box::new(|args| eprintln!("{args}"))
    } else {
        Box::new(|args| outln!("{args}"))
    };
    for n in &conversion.notes {
        report(format_args!("line {:<3} {}", n.line, n.instruction));
        match &n.why {
            Some(why) => report(format_args!("         -> {}: {why}", n.became)),
            None => report(format_args!("         -> {}", n.became)),
        }
    }
    if let Some(path) = &a.output {
        outln!("wrote {}", path.display());
    }
    Ok(())
}

/// Whether the arguments ask for Dockerfile mode (see [`BuildArgs`]).
fn dockerfile_mode(a: &BuildArgs) -> bool {
    if a.file.is_some() || !a.tag.is_empty() {
        return true;
    }
    match &a.stack {
        Some(p) => p.is_dir() && p.join("Dockerfile").is_file() && !p.join("runtime.toml").exists(),
        None => false,
    }
}

fn build_dockerfile(ctx: &Context, a: BuildArgs) -> Result<()> {
    let context = a.stack.clone().unwrap_or_else(|| PathBuf::from("."));
    let dockerfile = a.file.clone().unwrap_or_else(|| context.join("Dockerfile"));
    if a.tag.is_empty() {
        anyhow::bail!("a Dockerfile build needs a name for its image: give -t NAME[:TAG]");
    }
    if a.only.is_some() || a.locked || a.update_lock || a.check_reproducible || a.lock_only {
        anyhow::bail!(
            "--only, --locked, --update-lock, --lock-only and --check-reproducible are for \
             runtime files, not Dockerfiles"
        );
    }
    let build_args = parse_build_args(&a.build_arg);
    let mut secrets = std::collections::BTreeMap::new();
    for spec in &a.secret {
        let (id, value) = nbrt_dockerfile::parse_secret(spec)?;
        secrets.insert(id, value);
    }
    let tags = a
        .tag
        .iter()
        .map(|t| nbrt_oci::ImageName::parse(t))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let store = ctx.store()?;
    let opts = nbrt_dockerfile::BuildOptions {
        dockerfile: dockerfile.clone(),
        context,
        tags,
        build_args,
        target: a.target.clone(),
        no_cache: a.no_cache,
        secrets,
    };
    let mut log: Box<dyn std::io::Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let report = nbrt_dockerfile::build(&store, &opts, &progress(a.json), &mut log)
        .with_context(|| format!("building {}", dockerfile.display()))?;
    drop(log);
    if a.json {
        return json(&report);
    }
    let cached = report.steps.iter().filter(|s| s.cached).count();
    outln!(
        "{}  {}  ({} steps, {} from cache)",
        report.tags.join(", "),
        &report.id.hex()[..12],
        report.steps.len(),
        cached
    );
    Ok(())
}

pub fn build(ctx: &Context, a: BuildArgs) -> Result<()> {
    if dockerfile_mode(&a) {
        return build_dockerfile(ctx, a);
    }
    let Some(stack_path) = a.stack.clone() else {
        anyhow::bail!("give a stack directory, a runtime file, or a Dockerfile with -f");
    };
    if !a.build_arg.is_empty() || !a.secret.is_empty() || a.target.is_some() {
        anyhow::bail!("--build-arg, --secret and --target are for Dockerfiles (-f)");
    }
    let store = ctx.store()?;
    let stack = Stack::load(&stack_path, &store)?;
    let opts = BuildOptions {
        no_cache: a.no_cache,
        lock: match (a.locked, a.update_lock) {
            (true, _) => LockMode::Locked,
            (false, true) => LockMode::Update,
            (false, false) => LockMode::Follow,
        },
    };
    let mut log: Box<dyn std::io::Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if a.check_reproducible {
        let report = check_reproducible(
            &store,
            &stack_path,
            a.only.as_deref(),
            &opts,
            &progress(a.json),
            &mut log,
        )
        .with_context(|| format!("building {} twice", stack_path.display()))?;
        drop(log);
        return print_check(&report, a.json);
    }
    if let (true, Some(only)) = (a.lock_only, a.only.as_deref()) {
        let path = lock_only(&store, &stack, only, &opts, &progress(a.json), &mut log)
            .with_context(|| format!("locking {only} of {}", stack_path.display()))?;
        drop(log);
        if a.json {
            return json(&serde_json::json!({ "name": only, "lock": path }));
        }
        outln!("{only}: wrote {}", path.display());
        return Ok(());
    }
    let reports = build_stack(
        &store,
        &stack,
        a.only.as_deref(),
        &opts,
        &progress(a.json),
        &mut log,
    )
    .with_context(|| format!("building {}", stack_path.display()))?;
    drop(log);
    if a.json {
        return json(&reports);
    }
    for r in &reports {
        let cached = r.steps.iter().filter(|s| s.cached).count();
        outln!(
            "{}:latest  {}  ({} steps, {} from cache)",
            r.name,
            &r.id.hex()[..12],
            r.steps.len(),
            cached
        );
    }
    Ok(())
}

/// The report of `--check-reproducible`: one line per runtime, and where the images part.
fn print_check(report: &CheckReport, as_json: bool) -> Result<()> {
    if as_json {
        json(report)?;
    } else {
        for r in &report.runtimes {
            if r.same {
                outln!("{}  {}  same in both builds", r.name, &r.first.hex()[..12]);
                continue;
            }
            outln!(
                "{}  {} / {}  DIFFERENT",
                r.name,
                &r.first.hex()[..12],
                &r.second.hex()[..12]
            );
            match &r.difference {
                Some(Difference::Layer { index, step, file }) => {
                    outln!("  first different layer: {index} ({step})");
                    match file {
                        Some(f) => outln!("  first different file: {}: {}", f.path, f.what),
                        None => outln!("  (its files match; the layer's tar bytes differ)"),
                    }
                }
                Some(Difference::Config { fields }) => {
                    outln!(
                        "  every layer matches; the config differs: {}",
                        fields.join(", ")
                    );
                }
                None => {}
            }
        }
    }
    if !report.reproducible() {
        anyhow::bail!("the two builds differ (see above)");
    }
    Ok(())
}

#[derive(Args)]
pub struct GraphArgs {
    /// A stack directory
    stack: PathBuf,
}

pub fn graph(ctx: &Context, a: GraphArgs) -> Result<()> {
    let store = ctx.store()?;
    let stack = Stack::load(&a.stack, &store)?;
    out!("{}", stack.mermaid());
    Ok(())
}

#[derive(Args)]
pub struct RebaseArgs {
    /// The runtime: its runtime file, or an image in the store that `nbrt build` made
    runtime: String,
    /// The new base: an image in the store (name, ID or digest)
    #[arg(long, value_name = "NEW_BASE")]
    onto: String,
    /// Name of the result (default: <runtime name>:latest)
    #[arg(long, value_name = "NAME")]
    tag: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn rebase(ctx: &Context, a: RebaseArgs) -> Result<()> {
    let store = ctx.store()?;
    let opts = RebaseOptions {
        tag: a
            .tag
            .as_deref()
            .map(nbrt_oci::ImageName::parse)
            .transpose()?,
    };
    let mut log: Box<dyn std::io::Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let report = nbrt_build::rebase::rebase(&store, &a.runtime, &a.onto, &opts, &mut log)
        .with_context(|| format!("rebasing {} onto {}", a.runtime, a.onto))?;
    drop(log);
    if a.json {
        return json(&report);
    }
    for s in &report.steps {
        outln!("  {:<17} {}  ({})", s.action.as_str(), s.step, s.reason);
    }
    let moved = report
        .steps
        .iter()
        .filter(|s| s.action == Action::Moved)
        .count();
    outln!(
        "{}  {}  ({} layers moved, {} rebuilt)",
        report.tag,
        &report.id.hex()[..12],
        moved,
        report.steps.len() - moved
    );
    Ok(())
}
