//! The builder commands: build, graph and rebase.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_build::builder::{build_stack, BuildOptions};
use nbrt_build::rebase::{Action, RebaseOptions};
use nbrt_build::stack::Stack;

use crate::images::{progress, Context};
use crate::output::json;

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
    /// Dockerfile mode: build this stage (default: the last)
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Build only this runtime and the runtimes it needs
    #[arg(long, value_name = "NAME")]
    only: Option<String>,
    /// Run every step again instead of taking layers from the cache
    #[arg(long)]
    no_cache: bool,
    /// Build exactly what each runtime's runtime.lock records (written by every other build);
    /// fail when a lock is missing or older than its runtime file
    #[arg(long)]
    locked: bool,
    #[arg(long)]
    json: bool,
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
    if a.only.is_some() || a.locked {
        anyhow::bail!("--only and --locked are for runtime files, not Dockerfiles");
    }
    let mut build_args = std::collections::BTreeMap::new();
    for kv in &a.build_arg {
        match kv.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_string(), v.to_string()),
            // `--build-arg K` takes K from the environment, as docker does.
            None => match std::env::var(kv) {
                Ok(v) => build_args.insert(kv.clone(), v),
                Err(_) => continue,
            },
        };
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
    println!(
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
    if !a.build_arg.is_empty() || a.target.is_some() {
        anyhow::bail!("--build-arg and --target are for Dockerfiles (-f)");
    }
    let store = ctx.store()?;
    let stack = Stack::load(&stack_path, &store)?;
    let opts = BuildOptions {
        no_cache: a.no_cache,
        locked: a.locked,
    };
    let mut log: Box<dyn std::io::Write> = if a.json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
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
        println!(
            "{}:latest  {}  ({} steps, {} from cache)",
            r.name,
            &r.id.hex()[..12],
            r.steps.len(),
            cached
        );
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
    print!("{}", stack.mermaid());
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
        println!("  {:<17} {}  ({})", s.action.as_str(), s.step, s.reason);
    }
    let moved = report
        .steps
        .iter()
        .filter(|s| s.action == Action::Moved)
        .count();
    println!(
        "{}  {}  ({} layers moved, {} rebuilt)",
        report.tag,
        &report.id.hex()[..12],
        moved,
        report.steps.len() - moved
    );
    Ok(())
}
