//! The builder commands: build, graph and rebase.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_build::builder::{build_stack, BuildOptions};
use nbrt_build::rebase::{Action, RebaseOptions};
use nbrt_build::stack::Stack;

use crate::images::{progress, Context};
use crate::output::json;

#[derive(Args)]
pub struct BuildArgs {
    /// A stack directory (runtimes in <name>/runtime.toml) or one runtime file
    stack: PathBuf,
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

pub fn build(ctx: &Context, a: BuildArgs) -> Result<()> {
    let store = ctx.store()?;
    let stack = Stack::load(&a.stack, &store)?;
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
    .with_context(|| format!("building {}", a.stack.display()))?;
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
