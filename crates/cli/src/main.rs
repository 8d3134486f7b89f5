//! The `nbrt` command: argument parsing and wiring only. Every command is one call into a
//! library crate.

mod build;
mod images;
mod inspect;
mod kernelspec;
mod output;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nbrt",
    version,
    about = "Notebook runtime images: build, ship, check and run them"
)]
struct Cli {
    /// The image store (default: $NBRT_HOME, else $XDG_DATA_HOME/nbrt, else ~/.local/share/nbrt)
    #[arg(long, global = true, value_name = "DIR")]
    store: Option<PathBuf>,
    /// More log output (repeat for more); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// The log's format on standard error: text (one line per event, fields as key=value)
    /// or json (one JSON object per line: timestamp, level, target, fields)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a root file system tar, a docker-archive (`docker save`), an OCI archive or an
    /// OCI layout directory into the store
    Import(images::ImportArgs),
    /// Write an image out of the store: a tar that `docker load` and OCI tools read (default),
    /// a classic docker-archive, an OCI layout directory, or the flattened root file system
    Export(images::ExportArgs),
    /// List the images in the store
    Images(images::ImagesArgs),
    /// Show an image: ID, manifest digest, layers, config
    Inspect(images::InspectArgs),
    /// Give an image another name
    Tag(images::TagArgs),
    /// Remove image names (and the blobs no other image uses)
    Rm(images::RmArgs),
    /// Delete blobs that no named image uses
    Gc(images::GcArgs),
    /// Put an image into the local Docker engine (through its API)
    Load(images::LoadArgs),
    /// Build runtimes from runtime files (a stack directory in dependency order, or one file),
    /// or an image from a Dockerfile (`-f`, `-t`, or a directory with a Dockerfile)
    Build(build::BuildArgs),
    /// Write a Dockerfile as the runtime file that builds the same image: pip, conda and apt
    /// lines become [pip], [conda] and [apt] steps where that keeps their meaning; the report
    /// says which lines stayed [[run]] steps and why
    Convert(build::ConvertArgs),
    /// Print a stack's runtime graph as a Mermaid flowchart
    Graph(build::GraphArgs),
    /// Move a runtime's own layers onto a new base: layers whose inputs the new base did not
    /// change are reused as they are (files; pip, conda and apt when what they install over
    /// is the same), the others are run again
    Rebase(build::RebaseArgs),
    /// Push an image to a registry
    Push(images::PushArgs),
    /// Pull an image from a registry into the store
    Pull(images::PullArgs),
    /// List the packages in an image (conda, Python, Debian) without running it
    Manifest(inspect::ManifestArgs),
    /// What changes between two images: packages, files, config
    Diff(inspect::DiffArgs),
    /// Check an image against a platform's contract (non-zero exit when a check fails)
    Check(inspect::CheckArgs),
    /// Write a Gateway Provisioners kernel spec (kernel.json and launch script) for a kernel
    /// image: docker-provisioner or kubernetes-provisioner
    Kernelspec(Box<kernelspec::KernelspecArgs>),
    /// Run the site: runtimes with limits, notebooks, sessions on the Docker engine, web UI
    Serve(serve::ServeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// One format for every event of the process. `nbrt serve` logs at info by default (its
/// access and audit logs, targets `nbrt::access` and `nbrt::audit`); the other commands warn.
fn init_logging(verbose: u8, format: LogFormat, serve: bool) {
    let default = match verbose {
        0 if serve => "warn,nbrt_site=info,nbrt=info",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_target(serve).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.verbose,
        cli.log_format,
        matches!(cli.command, Command::Serve(_)),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = images::Context { store: cli.store };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Import(a) => images::import(&ctx, a),
            Command::Export(a) => images::export(&ctx, a),
            Command::Images(a) => images::list(&ctx, a),
            Command::Inspect(a) => images::inspect(&ctx, a),
            Command::Tag(a) => images::tag(&ctx, a),
            Command::Rm(a) => images::rm(&ctx, a),
            Command::Gc(a) => images::gc(&ctx, a),
            Command::Load(a) => images::load(&ctx, a).await,
            Command::Build(a) => build::build(&ctx, a),
            Command::Convert(a) => build::convert(&ctx, a),
            Command::Graph(a) => build::graph(&ctx, a),
            Command::Rebase(a) => build::rebase(&ctx, a),
            Command::Push(a) => images::push(&ctx, a).await,
            Command::Pull(a) => images::pull(&ctx, a).await,
            Command::Manifest(a) => inspect::manifest(&ctx, a),
            Command::Diff(a) => inspect::diff(&ctx, a),
            Command::Check(a) => inspect::check(&ctx, a).await,
            Command::Kernelspec(a) => kernelspec::kernelspec(&ctx, *a).await,
            Command::Serve(a) => serve::serve(&ctx, a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_closed_pipe(&e) => output::exit_on_closed_pipe(),
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code(&e)
        }
    }
}

/// 3 when a lock pins what its mirror no longer has (a script's cue to refresh the lock with
/// `--update-lock`); 1 for every other failure.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    let lost_pin = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<nbrt_build::BuildError>(),
            Some(nbrt_build::BuildError::LostPin(_))
        )
    });
    if lost_pin {
        ExitCode::from(3)
    } else {
        ExitCode::FAILURE
    }
}
