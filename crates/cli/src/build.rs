//! The builder commands: build and graph.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use nbrt_build::builder::{build_stack, BuildOptions};
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
    #[arg(long)]
    json: bool,
}

pub fn build(ctx: &Context, a: BuildArgs) -> Result<()> {
    let store = ctx.store()?;
    let stack = Stack::load(&a.stack, &store)?;
    let opts = BuildOptions {
        no_cache: a.no_cache,
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
