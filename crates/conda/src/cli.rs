//! The `conda` / `mamba` command line (one static binary, called by either name): conda's
//! options and output shapes where users and tools depend on them.
//!
//! The root prefix is the one the binary is called from (`<root>/bin/conda`), else
//! `$CONDA_ROOT`, `$CONDA_DIR`, `/opt/conda`. The target prefix is `-p PREFIX`, `-n NAME`
//! (found in `envs_dirs`; `base` is the root), else `$CONDA_PREFIX`, else the root.

use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use rattler_conda_types::{MatchSpec, Matches, ParseStrictness, PrefixRecord, RepoDataRecord};

use crate::config::{Config, RcFile};
use crate::error::{conda, CondaError, Result};
use crate::fetch::Fetcher;
use crate::history::{self, SpecKind};
use crate::list::{self, Export};
use crate::prefix::{self, Action, Transaction};
use crate::solve::SolveOptions;
use crate::CondaRequest;

/// The conda release whose command line and output this one follows.
pub const CONDA_VERSION: &str = "24.11.0";
/// What `mamba --version` reports.
pub const MAMBA_VERSION: &str = "1.5.12";

#[derive(Parser, Debug)]
#[command(
    name = "conda",
    disable_version_flag = true,
    disable_help_subcommand = true,
    about = "conda-compatible package manager of nbrt images (nbrt-conda, on the rattler crates)"
)]
struct Cli {
    /// Show the conda version.
    #[arg(short = 'V', long)]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug, Clone, Default)]
struct Target {
    /// Name of the environment.
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// Full path to the environment.
    #[arg(short = 'p', long = "prefix")]
    prefix: Option<PathBuf>,
}

#[derive(Args, Debug, Clone, Default)]
struct Common {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Only report what would be done.
    #[arg(short = 'd', long = "dry-run")]
    dry_run: bool,
    /// Report as JSON.
    #[arg(long)]
    json: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Args, Debug, Clone, Default)]
struct ChannelArgs {
    /// Additional channel to search for packages (before the configured ones).
    #[arg(short = 'c', long = "channel")]
    channel: Vec<String>,
    /// Do not search the configured channels (only -c ones).
    #[arg(long = "override-channels")]
    override_channels: bool,
    /// Offline mode: no remote channel is contacted.
    #[arg(long)]
    offline: bool,
    /// Accepted for compatibility; priority is always strict.
    #[arg(long = "strict-channel-priority", hide = true)]
    strict_channel_priority: bool,
    #[arg(long = "use-local", hide = true)]
    use_local: bool,
}

#[derive(Args, Debug, Clone, Default)]
struct InstallArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    channels: ChannelArgs,
    /// Read package specs from a file.
    #[arg(long = "file")]
    file: Vec<PathBuf>,
    /// Ignore conda-meta/pinned.
    #[arg(long = "no-pin")]
    no_pin: bool,
    /// Update every installed package (update).
    #[arg(long)]
    all: bool,
    #[arg(long = "freeze-installed", hide = true)]
    freeze_installed: bool,
    #[arg(long = "update-deps", hide = true)]
    update_deps: bool,
    #[arg(long = "no-update-deps", hide = true)]
    no_update_deps: bool,
    #[arg(long = "solver", hide = true)]
    solver: Option<String>,
    /// Package specs or package files (.conda, .tar.bz2).
    packages: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct RemoveArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    channels: ChannelArgs,
    /// Remove every package, i.e. the whole environment.
    #[arg(long)]
    all: bool,
    packages: Vec<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    json: bool,
    /// The archive URLs, for `conda create --file`.
    #[arg(long)]
    explicit: bool,
    /// With --explicit: each URL's md5.
    #[arg(long)]
    md5: bool,
    /// `name=version=build` lines.
    #[arg(short = 'e', long)]
    export: bool,
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Only packages whose name matches.
    regex: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
struct ExportArgs {
    #[command(flatten)]
    target: Target,
    #[arg(long)]
    json: bool,
    #[arg(long = "no-builds", alias = "no-build")]
    no_builds: bool,
    /// Only the specs asked for (conda-meta/history).
    #[arg(long = "from-history")]
    from_history: bool,
    /// Write to a file instead of standard output.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    #[arg(short = 'c', long = "channel")]
    channel: Vec<String>,
    #[arg(long = "override-channels")]
    override_channels: bool,
}

#[derive(Subcommand, Debug)]
enum EnvCommand {
    /// Export the environment.
    Export(ExportArgs),
    /// List the environments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an environment.
    Remove(RemoveArgs),
    /// Create an environment from an environment file: not supported.
    Create {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

#[derive(Args, Debug, Clone, Default)]
struct CleanArgs {
    #[arg(short = 'a', long)]
    all: bool,
    #[arg(short = 'i', long = "index-cache")]
    index_cache: bool,
    #[arg(short = 'p', long = "packages")]
    packages: bool,
    #[arg(short = 't', long = "tarballs")]
    tarballs: bool,
    #[arg(short = 'l', long = "logfiles")]
    logfiles: bool,
    #[arg(short = 'c', long = "tempfiles")]
    tempfiles: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug, Clone, Default)]
struct ConfigArgs {
    /// Show the configuration (or only the keys named).
    #[arg(long, num_args = 0..)]
    show: Option<Vec<String>>,
    #[arg(long = "show-sources")]
    show_sources: bool,
    /// Add a value to the front of a list (highest priority).
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"])]
    add: Option<Vec<String>>,
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"])]
    prepend: Option<Vec<String>>,
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"])]
    append: Option<Vec<String>>,
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"])]
    remove: Option<Vec<String>>,
    #[arg(long, num_args = 2, value_names = ["KEY", "VALUE"])]
    set: Option<Vec<String>>,
    #[arg(long, num_args = 0..)]
    get: Option<Vec<String>>,
    /// Write the system file (<root prefix>/.condarc).
    #[arg(long)]
    system: bool,
    /// Write the active environment's file (<prefix>/.condarc).
    #[arg(long)]
    env: bool,
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Args, Debug, Clone, Default)]
struct SearchArgs {
    #[command(flatten)]
    channels: ChannelArgs,
    #[arg(long)]
    json: bool,
    #[arg(short = 'i', long)]
    info: bool,
    spec: String,
}

#[derive(Args, Debug, Clone, Default)]
struct InfoArgs {
    #[arg(long)]
    json: bool,
    #[arg(short = 'e', long)]
    envs: bool,
    #[arg(short = 'a', long)]
    all: bool,
    #[arg(short = 's', long)]
    system: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Install packages into an environment.
    Install(InstallArgs),
    /// Update packages.
    #[command(alias = "upgrade")]
    Update(InstallArgs),
    /// Remove packages.
    #[command(alias = "uninstall")]
    Remove(RemoveArgs),
    /// Create an environment.
    Create(InstallArgs),
    /// List the packages of an environment.
    List(ListArgs),
    /// Environments: export, list, remove.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Remove cached packages.
    Clean(CleanArgs),
    /// Information about this conda.
    Info(InfoArgs),
    /// Read and change .condarc.
    Config(ConfigArgs),
    /// Search the channels.
    Search(SearchArgs),
    /// Activation is a shell function conda's installer adds; not available here.
    Activate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    Deactivate {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    Init {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Who is calling and where: what every command needs.
struct Context {
    argv: Vec<String>,
    root: PathBuf,
    home: Option<PathBuf>,
    platform: String,
}

/// The platform (conda subdir) of this machine, or `$CONDA_SUBDIR`.
fn platform() -> String {
    if let Ok(s) = std::env::var("CONDA_SUBDIR") {
        if !s.trim().is_empty() {
            return s.trim().to_string();
        }
    }
    match std::env::consts::ARCH {
        "aarch64" => "linux-aarch64",
        "powerpc64" => "linux-ppc64le",
        "s390x" => "linux-s390x",
        _ => "linux-64",
    }
    .to_string()
}

/// `$HOME`, else this user's home in /etc/passwd (no NSS in a static binary).
fn home_dir() -> Option<PathBuf> {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(h));
    }
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 6 && fields[2].parse::<u32>().ok() == Some(uid))
            .then(|| PathBuf::from(fields[5]))
    })
}

/// The root prefix: the one the binary is called from, else `$CONDA_ROOT`, `$CONDA_DIR`,
/// `/opt/conda`.
fn root_prefix(argv0: &str) -> PathBuf {
    if let Some(root) = ["CONDA_ROOT", "MAMBA_ROOT_PREFIX"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|p| p.is_dir())
    {
        return root;
    }
    let called = if argv0.contains('/') {
        Some(PathBuf::from(argv0))
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(argv0))
                .find(|p| p.is_file())
        })
    };
    let from = |bin: &Path| -> Option<PathBuf> {
        let dir = bin.parent()?;
        let dir = if dir.as_os_str().is_empty() {
            std::env::current_dir().ok()?
        } else if dir.is_relative() {
            std::env::current_dir().ok()?.join(dir)
        } else {
            dir.to_path_buf()
        };
        (dir.file_name()? == "bin")
            .then(|| dir.parent().map(Path::to_path_buf))
            .flatten()
            .filter(|root| prefix::is_prefix(root) || root.join("bin/python").exists())
    };
    if let Some(root) = called.as_deref().and_then(from) {
        return root;
    }
    if let Some(root) = std::env::current_exe().ok().as_deref().and_then(from) {
        return root;
    }
    std::env::var_os("CONDA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/conda"))
}

impl Context {
    fn config(&self, target: Option<&Path>) -> Result<Config> {
        Config::load(&self.root, self.home.as_deref(), target)
    }

    /// The environment a command works on.
    fn target(&self, target: &Target) -> Result<PathBuf> {
        if let Some(p) = &target.prefix {
            return Ok(absolute(p));
        }
        if let Some(name) = &target.name {
            if name == "base" || name == "root" {
                return Ok(self.root.clone());
            }
            if name.contains('/') {
                return Ok(absolute(Path::new(name)));
            }
            let config = self.config(None)?;
            for dir in config.envs_dirs() {
                let candidate = dir.join(name);
                if prefix::is_prefix(&candidate) {
                    return Ok(candidate);
                }
            }
            return Err(conda(format!(
                "EnvironmentLocationNotFound: Not a conda environment: {name}\n\
                 (looked in {})",
                config
                    .envs_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(p) = std::env::var_os("CONDA_PREFIX").map(PathBuf::from) {
            if prefix::is_prefix(&p) {
                return Ok(p);
            }
        }
        Ok(self.root.clone())
    }

    /// The name conda shows for a prefix: `base`, the directory name inside an envs dir, else
    /// the path.
    fn env_name(&self, prefix: &Path) -> String {
        if prefix == self.root {
            return "base".to_string();
        }
        let in_envs_dir = self
            .config(None)
            .map(|c| c.envs_dirs())
            .unwrap_or_default()
            .iter()
            .any(|d| prefix.parent() == Some(d.as_path()));
        match (in_envs_dir, prefix.file_name()) {
            (true, Some(n)) => n.to_string_lossy().into_owned(),
            _ => prefix.display().to_string(),
        }
    }

    /// Every environment: the root and each prefix in the `envs_dirs`.
    fn environments(&self) -> Vec<PathBuf> {
        let mut out = vec![self.root.clone()];
        if let Ok(config) = self.config(None) {
            for dir in config.envs_dirs() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut found: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| prefix::is_prefix(p))
                    .collect();
                found.sort();
                for p in found {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
        out
    }
}

fn absolute(p: &Path) -> PathBuf {
    let p = if let Some(rest) = p.to_str().and_then(|s| s.strip_prefix("~/")) {
        home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| p.to_path_buf())
    } else {
        p.to_path_buf()
    };
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

/// conda's `EnvironmentNotWritableError` unless this user can write to the environment.
fn check_writable(target: &Path) -> Result<()> {
    if crate::config::writable_dir(target)
        && crate::config::writable_dir(&target.join("conda-meta"))
    {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or_default();
    Err(conda(format!(
        "EnvironmentNotWritableError: The current user does not have write permissions to the \
         target environment.\n  environment location: {}\n  uid: {uid}\n  gid: {gid}",
        target.display()
    )))
}

fn truthy(value: Option<String>) -> bool {
    value.is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "yes" | "1"))
}

/// Run the command line `argv` (argv[0] included); the exit code.
pub fn main_with(argv: Vec<OsString>) -> i32 {
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv0 = argv.first().cloned().unwrap_or_else(|| "conda".to_string());
    let base = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let flavor = if base.starts_with("mamba") || base.starts_with("micromamba") {
        "mamba"
    } else {
        "conda"
    };
    let cli = match Cli::try_parse_from(
        std::iter::once(flavor.to_string()).chain(argv.iter().skip(1).cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let ctx = Context {
        argv: argv.clone(),
        root: root_prefix(&argv0),
        home: home_dir(),
        platform: platform(),
    };
    if cli.version {
        if flavor == "mamba" {
            println!("mamba {MAMBA_VERSION}\nconda {CONDA_VERSION}");
        } else {
            println!("conda {CONDA_VERSION}");
        }
        return 0;
    }
    let Some(command) = cli.command else {
        let _ = <Cli as clap::CommandFactory>::command()
            .name(flavor)
            .print_help();
        return 0;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("CondaError: cannot start: {e}");
            return 1;
        }
    };
    let json = argv.iter().skip(1).any(|a| a == "--json");
    match runtime.block_on(run(&ctx, command)) {
        Ok(code) => code,
        Err(e) => {
            report(&e, json);
            1
        }
    }
}

/// An error on stderr as conda prints it: `\n<ErrorName>: message`; with `--json`, conda's
/// JSON error document on stdout (`exception_name`, `error`, `message`, …).
fn report(e: &CondaError, json: bool) {
    let text = error_text(e);
    if json {
        let (name, message) = match text.split_once(": ") {
            Some((n, m)) if !n.contains(' ') => (n.to_string(), m.to_string()),
            _ => ("CondaError".to_string(), text.clone()),
        };
        let mut doc = serde_json::json!({
            "caused_by": "None",
            "error": text.trim_end(),
            "exception_name": name,
            "exception_type": format!("<class 'conda.exceptions.{name}'>"),
            "message": message.trim_end(),
        });
        if let CondaError::PackagesNotFound { packages, channels } = e {
            doc["packages"] = serde_json::json!(packages);
            doc["channel_urls"] = serde_json::json!(channels);
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    eprintln!("\n{}", text.trim_end());
}

fn error_text(e: &CondaError) -> String {
    match e {
        CondaError::Unsolvable {
            explanation, hint, ..
        } => format!(
            "LibMambaUnsatisfiableError: Encountered problems while solving:\n{}{hint}\n\n\
             Could not solve for environment specs",
            explanation
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        CondaError::PackagesNotFound { .. } => e.to_string(),
        CondaError::Http {
            url,
            status,
            detail,
            ..
        } => {
            let what = match status {
                Some(code) => format!("HTTP {code}"),
                None => "HTTP 000 CONNECTION FAILED".to_string(),
            };
            format!(
                "CondaHTTPError: {what} for url <{url}>\n\n{detail}\n\nAn HTTP error occurred \
                 when trying to retrieve this URL.\nHTTP errors are often intermittent, and a \
                 simple retry will get you on your way."
            )
        }
        CondaError::Message(m)
            if m.split(':').next().is_some_and(|h| {
                h.ends_with("Error") || h.ends_with("Exit") || h.ends_with("NotFound")
            }) =>
        {
            m.clone()
        }
        other => format!("CondaError: {other}"),
    }
}

async fn run(ctx: &Context, command: Command) -> Result<i32> {
    let changes_envs = matches!(
        command,
        Command::Install(_)
            | Command::Update(_)
            | Command::Create(_)
            | Command::Remove(_)
            | Command::Env {
                command: EnvCommand::Remove(_)
            }
    );
    let result = run_command(ctx, command).await;
    if changes_envs && matches!(result, Ok(0)) {
        sync_kernels(ctx);
    }
    result
}

/// Kernelspecs for the environments with ipykernel (see [`crate::kernels`]); a failure is a
/// warning, the command itself succeeded.
fn sync_kernels(ctx: &Context) {
    let Some(dir) = crate::kernels::kernels_dir(ctx.home.as_deref()) else {
        return;
    };
    let envs: Vec<crate::kernels::KernelEnv> = ctx
        .environments()
        .into_iter()
        .filter(|p| *p != ctx.root)
        .map(|prefix| crate::kernels::KernelEnv {
            name: ctx.env_name(&prefix),
            prefix,
        })
        .collect();
    if let Err(e) = crate::kernels::sync(&dir, &envs) {
        eprintln!(
            "WARNING: the Jupyter kernels of conda environments in {} were not updated: {e}",
            dir.display()
        );
    }
}

async fn run_command(ctx: &Context, command: Command) -> Result<i32> {
    match command {
        Command::Install(a) => install(ctx, a, Mode::Install).await,
        Command::Update(a) => install(ctx, a, Mode::Update).await,
        Command::Create(a) => install(ctx, a, Mode::Create).await,
        Command::Remove(a) => remove(ctx, a).await,
        Command::List(a) => list_cmd(ctx, a),
        Command::Env { command } => match command {
            EnvCommand::Export(a) => export(ctx, a),
            EnvCommand::List { json } => envs(ctx, json),
            EnvCommand::Remove(mut a) => {
                a.all = true;
                remove(ctx, a).await
            }
            EnvCommand::Create { .. } => Err(conda(
                "CondaError: `conda env create` from an environment file is not supported by \
                 nbrt-conda; use `conda create -n NAME SPEC…`",
            )),
        },
        Command::Clean(a) => clean(ctx, a),
        Command::Info(a) => info(ctx, a),
        Command::Config(a) => config_cmd(ctx, a),
        Command::Search(a) => search(ctx, a).await,
        Command::Activate { .. } | Command::Deactivate { .. } | Command::Init { .. } => {
            eprintln!(
                "\nCondaError: activation is a shell function that nbrt images do not set up; \
                 run the environment's programs by path (<prefix>/bin/…) or add <prefix>/bin \
                 to PATH"
            );
            Ok(1)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Install,
    Update,
    Create,
}

fn is_package_file(arg: &str) -> bool {
    (arg.ends_with(".tar.bz2") || arg.ends_with(".conda"))
        && (arg.contains('/') || Path::new(arg).is_file() || arg.starts_with("file:"))
}

/// Channels for a command: `-c` ones, then (unless `--override-channels`) the configured
/// ones, as URLs or directories; remote ones left out offline.
fn channel_list(config: &Config, args: &ChannelArgs, offline: bool) -> Vec<String> {
    let mut names: Vec<String> = args.channel.clone();
    if !args.override_channels {
        names.extend(config.channels());
    }
    let mut out: Vec<String> = Vec::new();
    for n in names {
        for url in config.channel_url(&n) {
            let remote = url.starts_with("http://") || url.starts_with("https://");
            if offline && remote {
                continue;
            }
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    out
}

/// `channel/subdir::name-version-build`, as conda's plans and history name a package.
fn dist_str(record: &RepoDataRecord) -> String {
    let p = &record.package_record;
    let channel = record
        .channel
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| crate::channels::channel_of(&record.url))
        .map(|c| list::channel_of(&c).0)
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "<unknown>".to_string());
    format!(
        "{channel}/{}::{}-{}-{}",
        p.subdir,
        p.name.as_normalized(),
        p.version,
        p.build
    )
}

fn prefix_dist_str(record: &PrefixRecord) -> String {
    dist_str(&record.repodata_record)
}

fn print_plan(tx: &Transaction, specs: &[String], removing: bool) {
    let mut out = String::new();
    out.push_str("\n## Package Plan ##\n\n");
    out.push_str(&format!(
        "  environment location: {}\n\n",
        tx.prefix.display()
    ));
    if !specs.is_empty() {
        out.push_str(if removing {
            "  removed specs:\n"
        } else {
            "  added / updated specs:\n"
        });
        for s in specs {
            out.push_str(&format!("    - {s}\n"));
        }
        out.push_str("\n\n");
    }
    let changed: std::collections::HashSet<&str> =
        tx.plan.changed.iter().map(|(n, _, _)| n.as_str()).collect();
    let new: Vec<&RepoDataRecord> = tx
        .plan
        .to_link
        .iter()
        .filter(|r| !changed.contains(r.package_record.name.as_normalized()))
        .collect();
    if !new.is_empty() {
        out.push_str("The following NEW packages will be INSTALLED:\n\n");
        let mut lines: Vec<String> = new
            .iter()
            .map(|r| {
                format!(
                    "  {:<18} {}\n",
                    r.package_record.name.as_normalized(),
                    dist_str(r)
                )
            })
            .collect();
        lines.sort();
        out.push_str(&lines.concat());
        out.push('\n');
    }
    let gone: Vec<&PrefixRecord> = tx
        .plan
        .to_unlink
        .iter()
        .filter(|r| !changed.contains(r.repodata_record.package_record.name.as_normalized()))
        .collect();
    if !gone.is_empty() {
        out.push_str("The following packages will be REMOVED:\n\n");
        let mut lines: Vec<String> = gone
            .iter()
            .map(|r| {
                let p = &r.repodata_record.package_record;
                format!("  {}-{}-{}\n", p.name.as_normalized(), p.version, p.build)
            })
            .collect();
        lines.sort();
        out.push_str(&lines.concat());
        out.push('\n');
    }
    if !tx.plan.changed.is_empty() {
        out.push_str("The following packages will be UPDATED:\n\n");
        for (name, old, new) in &tx.plan.changed {
            out.push_str(&format!(
                "  {name:<18} {} --> {}\n",
                old.replace('=', "-"),
                new.replace('=', "-")
            ));
        }
        out.push('\n');
    }
    print!("{out}");
}

/// `Proceed ([y]/n)?`; true to go on. End of input counts as yes (a notebook's `!conda`
/// has no terminal), as does an empty answer.
fn confirm() -> bool {
    print!("\nProceed ([y]/n)? ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => {
            println!();
            true
        }
        Ok(_) => !matches!(line.trim().to_ascii_lowercase().as_str(), "n" | "no"),
    }
}

/// A package URL of an explicit file (`https://…/conda-forge/linux-64/x-1.0-h0_0.conda`,
/// `#md5` after it allowed) as its channel and an exact spec (`x ==1.0 h0_0`).
fn explicit_url(line: &str) -> Option<(String, String)> {
    let url = line.split('#').next()?.trim();
    if !url.contains("://") || !(url.ends_with(".conda") || url.ends_with(".tar.bz2")) {
        return None;
    }
    let (dir, file) = url.rsplit_once('/')?;
    let (channel, _subdir) = dir.rsplit_once('/')?;
    let stem = file
        .strip_suffix(".conda")
        .or_else(|| file.strip_suffix(".tar.bz2"))?;
    let (rest, build) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some((channel.to_string(), format!("{name} =={version} {build}")))
}

fn specs_from_files(files: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| conda(format!("CondaFileIOError: '{}'. {e}", f.display())))?;
        for line in text.lines() {
            if explicit_url(line).is_some() {
                out.push(line.trim().to_string());
                continue;
            }
            let l = line.split('#').next().unwrap_or("").trim();
            if l.is_empty() || l.starts_with('@') {
                continue;
            }
            out.push(l.to_string());
        }
    }
    Ok(out)
}

async fn install(ctx: &Context, a: InstallArgs, mode: Mode) -> Result<i32> {
    let mut target = if mode == Mode::Create {
        create_target(ctx, &a.target)?
    } else {
        ctx.target(&a.target)?
    };
    if mode != Mode::Create && !prefix::is_prefix(&target) {
        return Err(conda(format!(
            "EnvironmentLocationNotFound: Not a conda environment: {}",
            target.display()
        )));
    }
    if mode != Mode::Create && !a.common.dry_run {
        check_writable(&target)?;
    }
    let config = ctx.config(Some(&target))?;
    let offline = a.channels.offline
        || truthy(std::env::var("CONDA_OFFLINE").ok())
        || truthy(config.scalar("offline"));
    let yes = a.common.yes
        || a.common.dry_run
        || truthy(std::env::var("CONDA_ALWAYS_YES").ok())
        || truthy(config.scalar("always_yes"));

    let mut specs: Vec<String> = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    // Channels that explicit package URLs (`conda list --explicit` files) come from.
    let mut explicit_channels: Vec<String> = Vec::new();
    for p in a.packages.iter().cloned().chain(specs_from_files(&a.file)?) {
        if let Some((channel, spec)) = explicit_url(&p) {
            if !explicit_channels.contains(&channel) {
                explicit_channels.push(channel);
            }
            specs.push(spec);
        } else if is_package_file(&p) {
            let path = match p.strip_prefix("file://") {
                Some(rest) => PathBuf::from(rest),
                None => absolute(Path::new(&p)),
            };
            files.push(path);
        } else {
            specs.push(p);
        }
    }
    if mode == Mode::Create && target.exists() {
        if prefix::is_prefix(&target) && !yes {
            return Err(conda(format!(
                "CondaValueError: prefix already exists: {} (add --yes to replace it)",
                target.display()
            )));
        }
        if prefix::is_prefix(&target) {
            std::fs::remove_dir_all(&target)
                .map_err(|e| conda(format!("cannot remove {}: {e}", target.display())))?;
        }
    }
    if mode == Mode::Create {
        std::fs::create_dir_all(target.join("conda-meta")).map_err(|e| {
            conda(format!(
                "NotWritableError: The current user does not have write permissions to a \
                 required path.\n  path: {}\n  ({e})",
                target.display()
            ))
        })?;
        target = absolute(&target);
    }
    if mode == Mode::Update && specs.is_empty() && files.is_empty() && !a.all {
        return Err(conda(
            "CondaValueError: no package names supplied\n# Example: conda update -n myenv scipy",
        ));
    }
    if mode != Mode::Create && specs.is_empty() && files.is_empty() && !a.all {
        return Err(conda(
            "CondaValueError: too few arguments, must supply command line package specs or \
             --file",
        ));
    }
    let mut channels = channel_list(&config, &a.channels, offline);
    for c in explicit_channels.into_iter().rev() {
        if !channels.contains(&c) {
            channels.insert(0, c);
        }
    }
    let pkgs_dir = config.writable_pkgs_dir()?;
    let client = crate::net::client(config.scalar("ssl_verify").as_deref())?;
    let mut fetcher = Fetcher::with_client(&pkgs_dir, client);

    if !a.common.json && !a.common.quiet {
        println!("Channels:");
        for c in &channels {
            println!(" - {}", list::channel_of(c).0);
        }
        println!("Platform: {}", ctx.platform);
        println!("Collecting package metadata (repodata.json): done");
    }
    let options = SolveOptions {
        constraints: if a.no_pin {
            Vec::new()
        } else {
            prefix::pinned(&target)
        },
        unlock: match mode {
            Mode::Update if a.all => vec!["*".to_string()],
            Mode::Update => specs.iter().map(|s| history::spec_name(s)).collect(),
            _ => Vec::new(),
        },
        real_local_urls: true,
        skip_unreachable: true,
    };
    let target_text = target
        .to_str()
        .ok_or_else(|| conda(format!("prefix {} is not UTF-8", target.display())))?
        .to_string();
    let request = CondaRequest {
        prefix: target_text,
        channels,
        specs: specs.clone(),
        package_files: files.clone(),
        platform: ctx.platform.clone(),
        locked: None,
    };
    let action = Action::Install { request, options };
    let _lock = if a.common.dry_run {
        None
    } else {
        Some(prefix::lock(&target)?)
    };
    let tx = prefix::plan(&target, &action, &ctx.platform, &mut fetcher).await;
    let tx = match tx {
        Ok(tx) => {
            if !a.common.json && !a.common.quiet {
                println!("Solving environment: done");
            }
            tx
        }
        Err(e) => {
            if !a.common.json && !a.common.quiet {
                println!("Solving environment: failed");
            }
            if mode == Mode::Create {
                let _ = std::fs::remove_dir_all(&target);
            }
            return Err(e);
        }
    };
    let mut asked: Vec<String> = specs.clone();
    for file in &files {
        // A package file's request is its package name.
        if let Some(r) = tx.plan.to_link.iter().find(|r| {
            crate::channels::url_file_name(&r.url).as_deref()
                == file.file_name().and_then(|n| n.to_str())
        }) {
            asked.push(r.package_record.name.as_normalized().to_string());
        }
    }
    if tx.is_empty() && mode != Mode::Create {
        if a.common.json {
            println!(
                "{}",
                serde_json::json!({"message": "All requested packages already installed.", "success": true})
            );
        } else {
            println!("\n# All requested packages already installed.\n");
        }
        return Ok(0);
    }
    let shown_specs = if specs.is_empty() {
        asked.clone()
    } else {
        specs.clone()
    };
    if !a.common.json {
        print_plan(&tx, &shown_specs, false);
    }
    if a.common.dry_run {
        if a.common.json {
            println!("{}", json_actions(&tx, true));
        } else {
            println!("\nDryRunExit: Dry run. Exiting.\n");
        }
        return Ok(0);
    }
    if !yes && !a.common.json && !confirm() {
        eprintln!("\nCondaSystemExit: Exiting.\n");
        if mode == Mode::Create {
            let _ = std::fs::remove_dir_all(&target);
        }
        return Ok(1);
    }
    if !a.common.json && !a.common.quiet && !tx.plan.to_link.is_empty() {
        println!("\nDownloading and Extracting Packages:\n");
    }
    let done = prefix::execute(&tx, &mut fetcher, &pkgs_dir).await?;
    history::append(
        &target,
        &history::Entry {
            time: now(),
            cmd: ctx.argv.clone(),
            conda_version: CONDA_VERSION.to_string(),
            removed: done.unlinked.iter().map(prefix_dist_str).collect(),
            added: done.linked.iter().map(dist_str).collect(),
            kind: SpecKind::Update,
            specs: asked,
        },
    )?;
    if a.common.json {
        println!("{}", json_actions(&tx, false));
    } else {
        println!(
            "Preparing transaction: done\nVerifying transaction: done\nExecuting transaction: done"
        );
        if mode == Mode::Create {
            let name = ctx.env_name(&target);
            let how = if name.contains('/') {
                target.display().to_string()
            } else {
                name
            };
            println!(
                "#\n# To activate this environment, use\n#\n#     $ conda activate {how}\n#\n\
                 # To deactivate an active environment, use\n#\n#     $ conda deactivate\n"
            );
        }
    }
    Ok(0)
}

fn json_actions(tx: &Transaction, dry_run: bool) -> String {
    let link: Vec<serde_json::Value> = tx
        .plan
        .to_link
        .iter()
        .map(|r| {
            let l = list::ListRecord {
                ..list::conda_record(&PrefixRecord::from_repodata_record(r.clone(), Vec::new()))
            };
            serde_json::to_value(&l).unwrap_or_default()
        })
        .collect();
    let unlink: Vec<serde_json::Value> = tx
        .plan
        .to_unlink
        .iter()
        .map(|r| serde_json::to_value(list::conda_record(r)).unwrap_or_default())
        .collect();
    let value = serde_json::json!({
        "actions": {"LINK": link, "UNLINK": unlink, "PREFIX": tx.prefix.display().to_string()},
        "dry_run": dry_run,
        "prefix": tx.prefix.display().to_string(),
        "success": true,
    });
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where `create` puts the environment: `-p`, or `-n NAME` in the first writable `envs_dirs`
/// entry.
fn create_target(ctx: &Context, target: &Target) -> Result<PathBuf> {
    if let Some(p) = &target.prefix {
        return Ok(absolute(p));
    }
    let Some(name) = &target.name else {
        return Err(conda(
            "CondaValueError: either -n NAME or -p PREFIX option required,\n\
             try \"conda create -h\" for more details",
        ));
    };
    if name == "base" || name == "root" || name.contains('/') || name.contains(' ') {
        return Err(conda(format!(
            "CondaValueError: Invalid environment name: '{name}'"
        )));
    }
    let config = ctx.config(None)?;
    let dirs = config.envs_dirs();
    for dir in &dirs {
        if std::fs::create_dir_all(dir).is_ok() && crate::config::writable_dir(dir) {
            return Ok(dir.join(name));
        }
    }
    Err(conda(format!(
        "NoWritableEnvsDirError: No writeable envs directories configured.\n  - {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join("\n  - ")
    )))
}

async fn remove(ctx: &Context, a: RemoveArgs) -> Result<i32> {
    let target = ctx.target(&a.target)?;
    if !prefix::is_prefix(&target) {
        return Err(conda(format!(
            "EnvironmentLocationNotFound: Not a conda environment: {}",
            target.display()
        )));
    }
    if !a.common.dry_run {
        check_writable(&target)?;
    }
    let config = ctx.config(Some(&target))?;
    let yes = a.common.yes
        || a.common.dry_run
        || truthy(std::env::var("CONDA_ALWAYS_YES").ok())
        || truthy(config.scalar("always_yes"));
    if a.all {
        if target == ctx.root {
            return Err(conda(
                "CondaEnvironmentError: cannot remove root environment, add -n NAME or -p PREFIX",
            ));
        }
        if !a.common.json {
            println!(
                "\nRemove all packages in environment {}:\n",
                target.display()
            );
        }
        if a.common.dry_run {
            return Ok(0);
        }
        if !yes && !a.common.json && !confirm() {
            return Ok(1);
        }
        std::fs::remove_dir_all(&target)
            .map_err(|e| conda(format!("cannot remove {}: {e}", target.display())))?;
        if a.common.json {
            println!("{}", serde_json::json!({"success": true}));
        }
        return Ok(0);
    }
    if a.packages.is_empty() {
        return Err(conda(
            "CondaValueError: no package names supplied,\n       try \"conda remove -h\" for more details",
        ));
    }
    let pkgs_dir = config.writable_pkgs_dir()?;
    let client = crate::net::client(None)?;
    let mut fetcher = Fetcher::with_client(&pkgs_dir, client);
    let _lock = if a.common.dry_run {
        None
    } else {
        Some(prefix::lock(&target)?)
    };
    let action = Action::Remove {
        names: a.packages.iter().map(|p| history::spec_name(p)).collect(),
    };
    let tx = prefix::plan(&target, &action, &ctx.platform, &mut fetcher).await?;
    if !a.common.json {
        print_plan(&tx, &a.packages, true);
    }
    if a.common.dry_run {
        println!("\nDryRunExit: Dry run. Exiting.\n");
        return Ok(0);
    }
    if !yes && !a.common.json && !confirm() {
        eprintln!("\nCondaSystemExit: Exiting.\n");
        return Ok(1);
    }
    let done = prefix::execute(&tx, &mut fetcher, &pkgs_dir).await?;
    history::append(
        &target,
        &history::Entry {
            time: now(),
            cmd: ctx.argv.clone(),
            conda_version: CONDA_VERSION.to_string(),
            removed: done.unlinked.iter().map(prefix_dist_str).collect(),
            added: done.linked.iter().map(dist_str).collect(),
            kind: SpecKind::Remove,
            specs: a.packages.clone(),
        },
    )?;
    if a.common.json {
        println!("{}", json_actions(&tx, false));
    } else {
        println!(
            "Preparing transaction: done\nVerifying transaction: done\nExecuting transaction: done"
        );
    }
    Ok(0)
}

/// A conda environment, or a Python environment without `conda-meta` yet (a plain venv,
/// whose pip distributions are still listed).
fn listable(target: &Path) -> bool {
    prefix::is_prefix(target) || !list::site_packages(target).is_empty()
}

fn list_cmd(ctx: &Context, a: ListArgs) -> Result<i32> {
    let target = ctx.target(&a.target)?;
    if !listable(&target) {
        return Err(conda(format!(
            "EnvironmentLocationNotFound: Not a conda environment: {}",
            target.display()
        )));
    }
    let installed = prefix::installed(&target)?;
    let mut records = list::records(&target, &installed);
    if let Some(pattern) = &a.regex {
        let p = pattern.to_ascii_lowercase();
        let anchored = p.starts_with('^') || p.ends_with('$');
        let needle = p.trim_start_matches('^').trim_end_matches('$').to_string();
        records.retain(|r| {
            let n = r.name.to_ascii_lowercase();
            if anchored {
                (!p.starts_with('^') || n.starts_with(&needle))
                    && (!p.ends_with('$') || n.ends_with(&needle))
            } else {
                n.contains(&needle)
            }
        });
    }
    if a.explicit {
        print!("{}", list::to_explicit(&ctx.platform, &records, a.md5));
    } else if a.json {
        println!("{}", list::to_json(&records));
    } else if a.export {
        print!(
            "# This file may be used to create an environment using:\n\
             # $ conda create --name <env> --file <this file>\n# platform: {}\n",
            ctx.platform
        );
        for r in &records {
            println!("{}={}={}", r.name, r.version, r.build_string);
        }
    } else {
        print!("{}", list::to_text(&target, &records));
    }
    Ok(0)
}

fn export(ctx: &Context, a: ExportArgs) -> Result<i32> {
    let target = ctx.target(&a.target)?;
    if !listable(&target) {
        return Err(conda(format!(
            "EnvironmentLocationNotFound: Not a conda environment: {}",
            target.display()
        )));
    }
    let config = ctx.config(Some(&target))?;
    let installed = prefix::installed(&target)?;
    let name = ctx.env_name(&target);
    let mut channels: Vec<String> = a.channel.clone();
    let export = if a.from_history {
        if !a.override_channels {
            for c in config.channels() {
                if !channels.contains(&c) {
                    channels.push(c);
                }
            }
        }
        Export {
            name,
            channels,
            // Specs asked for whose package is still there (a removal may have taken
            // along packages asked for earlier).
            dependencies: history::requested_specs(&target)
                .into_iter()
                .filter(|spec| {
                    let name = history::spec_name(spec);
                    installed
                        .iter()
                        .any(|r| r.repodata_record.package_record.name.as_normalized() == name)
                })
                .map(serde_json::Value::String)
                .collect(),
            prefix: target.display().to_string(),
        }
    } else {
        let records = list::records(&target, &installed);
        for r in &records {
            if r.channel != "pypi" && !r.channel.is_empty() && !channels.contains(&r.channel) {
                channels.push(r.channel.clone());
            }
        }
        if !a.override_channels {
            for c in config.channels() {
                if !channels.contains(&c) {
                    channels.push(c);
                }
            }
        }
        Export::new(&name, &target, channels, &records, a.no_builds)
    };
    let text = if a.json {
        let value = serde_json::json!({
            "channels": export.channels,
            "dependencies": export.dependencies,
            "name": export.name,
            "prefix": export.prefix,
        });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        )
    } else {
        export.to_yaml()
    };
    match &a.file {
        Some(f) => prefix::write_atomic(f, text.as_bytes())?,
        None => print!("{text}"),
    }
    Ok(0)
}

fn envs(ctx: &Context, json: bool) -> Result<i32> {
    let envs = ctx.environments();
    let active = std::env::var_os("CONDA_PREFIX").map(PathBuf::from);
    if json {
        let list: Vec<String> = envs.iter().map(|e| e.display().to_string()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "envs": list })).unwrap_or_default()
        );
        return Ok(0);
    }
    println!("# conda environments:\n#");
    for e in &envs {
        let name = ctx.env_name(e);
        let name = if name.contains('/') {
            String::new()
        } else {
            name
        };
        let star = if active.as_deref() == Some(e.as_path()) || (active.is_none() && *e == ctx.root)
        {
            "*"
        } else {
            " "
        };
        println!("{name:<25}{star}  {}", e.display());
    }
    println!();
    Ok(0)
}

fn dir_size(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|es| es.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1024 * 1024 => format!("{:.0} KB", b as f64 / 1024.0),
        b if b < 1024 * 1024 * 1024 => format!("{:.1} MB", b as f64 / 1024.0 / 1024.0),
        b => format!("{:.1} GB", b as f64 / 1024.0 / 1024.0 / 1024.0),
    }
}

fn clean(ctx: &Context, a: CleanArgs) -> Result<i32> {
    let config = ctx.config(None)?;
    let (tarballs, packages, index) = if a.all {
        (true, true, true)
    } else {
        (a.tarballs, a.packages, a.index_cache)
    };
    if !(tarballs || packages || index || a.logfiles || !a.tempfiles.is_empty()) {
        return Err(conda(
            "ArgumentError: At least one removal target must be given. See 'conda clean --help'.",
        ));
    }
    let mut tarball_paths: Vec<PathBuf> = Vec::new();
    let mut package_paths: Vec<PathBuf> = Vec::new();
    let mut index_paths: Vec<PathBuf> = Vec::new();
    for dir in config.pkgs_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "downloads" && path.is_dir() {
                tarball_paths.push(path);
            } else if name == "cache" && path.is_dir() {
                index_paths.push(path);
            } else if name.ends_with(".tar.bz2") || name.ends_with(".conda") {
                tarball_paths.push(path);
            } else if (path.is_dir() && path.join("info").is_dir())
                || (packages && (name.ends_with(".lock") || name == "urls.txt" || name == "urls"))
            {
                package_paths.push(path);
            }
        }
    }
    let mut removed = Vec::new();
    let mut say = |what: &str, paths: &[PathBuf], on: bool| {
        if !on {
            return;
        }
        let size: u64 = paths.iter().map(|p| dir_size(p)).sum();
        if !a.common.json {
            if paths.is_empty() {
                println!("There are no unused {what} to remove.");
            } else {
                println!("Will remove {} ({}) {what}.", paths.len(), human(size));
            }
        }
        removed.extend(paths.iter().cloned());
    };
    say("tarball(s)", &tarball_paths, tarballs);
    say("package(s)", &package_paths, packages);
    if index && !a.common.json {
        println!("Will remove {} index cache(s).", index_paths.len());
    }
    if index {
        removed.extend(index_paths.iter().cloned());
    }
    if a.common.dry_run {
        println!("\nDryRunExit: Dry run. Exiting.\n");
        return Ok(0);
    }
    if removed.is_empty() {
        return Ok(0);
    }
    let yes = a.common.yes || truthy(config.scalar("always_yes"));
    if !yes && !a.common.json && !confirm() {
        return Ok(1);
    }
    for p in &removed {
        let r = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("WARNING: cannot remove {}: {e}", p.display());
            }
        }
    }
    if a.common.json {
        println!("{}", serde_json::json!({"success": true}));
    }
    Ok(0)
}

fn info(ctx: &Context, a: InfoArgs) -> Result<i32> {
    if a.envs && !a.json {
        return envs(ctx, false);
    }
    let config = ctx.config(None)?;
    let active = std::env::var_os("CONDA_PREFIX")
        .map(PathBuf::from)
        .filter(|p| prefix::is_prefix(p));
    let env_list: Vec<String> = ctx
        .environments()
        .iter()
        .map(|e| e.display().to_string())
        .collect();
    let channels: Vec<String> = config
        .channels()
        .iter()
        .flat_map(|c| config.channel_url(c))
        .flat_map(|u| {
            [
                format!("{}/{}", u.trim_end_matches('/'), ctx.platform),
                format!("{}/noarch", u.trim_end_matches('/')),
            ]
        })
        .collect();
    let rc_paths: Vec<String> = config
        .files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    let pkgs_dirs: Vec<String> = config
        .pkgs_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let envs_dirs: Vec<String> = config
        .envs_dirs()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let python = prefix::installed(&ctx.root)
        .ok()
        .and_then(|i| prefix::python_version(&ctx.root, &i))
        .map(|(a, b)| format!("{a}.{b}"));
    let virtual_pkgs: Vec<Vec<String>> = crate::solve::virtual_package_list(&ctx.platform)
        .unwrap_or_default()
        .into_iter()
        .map(|v| {
            vec![
                v.name.as_normalized().to_string(),
                v.version.to_string(),
                v.build_string.to_string(),
            ]
        })
        .collect();
    let root_writable = crate::config::writable_dir(&ctx.root);
    if a.json {
        let value = serde_json::json!({
            "active_prefix": active.as_ref().map(|p| p.display().to_string()),
            "active_prefix_name": active.as_ref().map(|p| ctx.env_name(p)),
            "av_data_dir": ctx.root.join("etc/conda").display().to_string(),
            "channels": channels,
            "conda_build_version": "not installed",
            "conda_env_version": CONDA_VERSION,
            "conda_location": ctx.root.display().to_string(),
            "conda_prefix": ctx.root.display().to_string(),
            "conda_version": CONDA_VERSION,
            "config_files": rc_paths,
            "default_prefix": ctx.root.display().to_string(),
            "envs": env_list,
            "envs_dirs": envs_dirs,
            "netrc_file": null,
            "nbrt_conda_version": env!("CARGO_PKG_VERSION"),
            "offline": truthy(config.scalar("offline")),
            "pkgs_dirs": pkgs_dirs,
            "platform": ctx.platform,
            "python_version": python,
            "rc_path": config.user_rc_path().map(|p| p.display().to_string()),
            "requests_version": null,
            "root_prefix": ctx.root.display().to_string(),
            "root_writable": root_writable,
            "site_dirs": [],
            "sys_rc_path": ctx.root.join(".condarc").display().to_string(),
            "user_agent": format!("conda/{CONDA_VERSION} nbrt-conda/{}", env!("CARGO_PKG_VERSION")),
            "user_rc_path": config.user_rc_path().map(|p| p.display().to_string()),
            "virtual_pkgs": virtual_pkgs,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(0);
    }
    let row = |k: &str, v: &str| println!("{k:>26} : {v}");
    println!();
    row(
        "active environment",
        &active
            .as_ref()
            .map(|p| ctx.env_name(p))
            .unwrap_or_else(|| "None".into()),
    );
    if let Some(p) = &active {
        row("active env location", &p.display().to_string());
    }
    row(
        "user config file",
        &config
            .user_rc_path()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    row(
        "populated config files",
        &rc_paths.join("\n                              "),
    );
    row("conda version", CONDA_VERSION);
    row("nbrt-conda version", env!("CARGO_PKG_VERSION"));
    row("python version", python.as_deref().unwrap_or("unknown"));
    row(
        "virtual packages",
        &virtual_pkgs
            .iter()
            .map(|v| v.join("="))
            .collect::<Vec<_>>()
            .join("\n                              "),
    );
    row(
        "base environment",
        &format!(
            "{}  ({})",
            ctx.root.display(),
            if root_writable {
                "writable"
            } else {
                "read only"
            }
        ),
    );
    row(
        "channel URLs",
        &channels.join("\n                              "),
    );
    row(
        "package cache",
        &pkgs_dirs.join("\n                              "),
    );
    row(
        "envs directories",
        &envs_dirs.join("\n                              "),
    );
    row("platform", &ctx.platform);
    println!();
    if a.envs {
        envs(ctx, false)?;
    }
    Ok(0)
}

/// The `.condarc` a `config` change writes: `--file`, `--system` (root prefix), `--env`
/// (target prefix), else the user's `~/.condarc` (the root prefix's when there is no home).
fn config_file(ctx: &Context, a: &ConfigArgs) -> Result<PathBuf> {
    if let Some(f) = &a.file {
        return Ok(absolute(f));
    }
    if a.system {
        return Ok(ctx.root.join(".condarc"));
    }
    if a.env {
        return Ok(ctx.target(&a.target)?.join(".condarc"));
    }
    if let Ok(p) = std::env::var("CONDARC") {
        if !p.is_empty() {
            return Ok(PathBuf::from(p));
        }
    }
    Ok(ctx
        .home
        .as_ref()
        .map(|h| h.join(".condarc"))
        .unwrap_or_else(|| ctx.root.join(".condarc")))
}

const LIST_KEYS: &[&str] = &["channels", "default_channels", "envs_dirs", "pkgs_dirs"];

fn config_cmd(ctx: &Context, a: ConfigArgs) -> Result<i32> {
    let change = a.add.is_some()
        || a.prepend.is_some()
        || a.append.is_some()
        || a.remove.is_some()
        || a.set.is_some();
    if change {
        let path = config_file(ctx, &a)?;
        let mut rc = RcFile::read(&path)?.unwrap_or_default();
        for (values, prepend) in [(&a.add, true), (&a.prepend, true), (&a.append, false)] {
            if let Some(v) = values {
                let (key, value) = (&v[0], &v[1]);
                let already = rc.list(key).is_some_and(|l| l.contains(value));
                if already && !a.json {
                    eprintln!(
                        "Warning: '{value}' already in '{key}' list, moving to the {}",
                        if prepend { "top" } else { "bottom" }
                    );
                }
                if rc.get(key).is_none() && !LIST_KEYS.contains(&key.as_str()) {
                    return Err(conda(format!(
                        "CondaValueError: Key '{key}' is not a known sequence parameter."
                    )));
                }
                rc.add(key, value, prepend)?;
            }
        }
        if let Some(v) = &a.remove {
            rc.remove(&v[0], &v[1])?;
        }
        if let Some(v) = &a.set {
            rc.set(&v[0], &v[1]);
        }
        rc.write(&path)?;
        return Ok(0);
    }
    let target = ctx.target(&a.target).ok();
    let config = ctx.config(target.as_deref())?;
    if a.show_sources {
        for (path, file) in &config.files {
            println!("==> {} <==", path.display());
            print!("{}", file.to_yaml());
            println!();
        }
        return Ok(0);
    }
    if let Some(keys) = &a.get {
        for (path, file) in config.files.iter().rev() {
            for (key, value) in &file.entries {
                if !keys.is_empty() && !keys.contains(key) {
                    continue;
                }
                match value {
                    crate::config::Value::List(items) => {
                        for (i, item) in items.iter().enumerate().rev() {
                            let note = if i == 0 && items.len() > 1 {
                                "   # highest priority"
                            } else if i == items.len() - 1 && items.len() > 1 {
                                "   # lowest priority"
                            } else {
                                ""
                            };
                            println!("--add {key} '{item}'{note}");
                        }
                    }
                    crate::config::Value::Scalar(s) => println!("--set {key} {s}"),
                    crate::config::Value::Raw(_) => {}
                }
            }
            let _ = path;
        }
        return Ok(0);
    }
    // --show (all keys or the named ones).
    let mut shown = RcFile::default();
    let mut keys: Vec<String> = Vec::new();
    for (_, file) in &config.files {
        for (k, _) in &file.entries {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    for k in ["channels", "envs_dirs", "pkgs_dirs", "channel_alias"] {
        if !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    }
    keys.sort();
    let wanted = a.show.clone().unwrap_or_default();
    for key in keys {
        if !wanted.is_empty() && !wanted.contains(&key) {
            continue;
        }
        let value = match key.as_str() {
            "channels" => crate::config::Value::List(config.channels()),
            "envs_dirs" => crate::config::Value::List(
                config
                    .envs_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect(),
            ),
            "pkgs_dirs" => crate::config::Value::List(
                config
                    .pkgs_dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect(),
            ),
            "channel_alias" => crate::config::Value::Scalar(config.channel_alias()),
            k if LIST_KEYS.contains(&k) => crate::config::Value::List(config.merged_list(k)),
            k => match config.scalar(k) {
                Some(s) => crate::config::Value::Scalar(s),
                None => match config
                    .files
                    .iter()
                    .rev()
                    .find_map(|(_, f)| f.get(k).cloned())
                {
                    Some(v) => v,
                    None => continue,
                },
            },
        };
        shown.entries.push((key, value));
    }
    if a.json {
        let mut map = serde_json::Map::new();
        for (k, v) in &shown.entries {
            let value = match v {
                crate::config::Value::Scalar(s) => serde_json::Value::String(s.clone()),
                crate::config::Value::List(l) => serde_json::json!(l),
                crate::config::Value::Raw(l) => serde_json::json!(l.join("\n")),
            };
            map.insert(k.clone(), value);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default()
        );
    } else {
        print!("{}", shown.to_yaml());
    }
    Ok(0)
}

async fn search(ctx: &Context, a: SearchArgs) -> Result<i32> {
    let config = ctx.config(None)?;
    let offline = a.channels.offline || truthy(config.scalar("offline"));
    let channels = channel_list(&config, &a.channels, offline);
    let pkgs_dir = config.writable_pkgs_dir()?;
    let client = crate::net::client(config.scalar("ssl_verify").as_deref())?;
    let mut fetcher = Fetcher::with_client(&pkgs_dir, client);
    if !a.json {
        println!("Loading channels: done");
    }
    let records = crate::channels::load_channels(&channels, &ctx.platform, &mut fetcher).await?;
    let spec_text = a.spec.trim();
    let glob = spec_text.contains('*');
    let spec = if glob {
        None
    } else {
        Some(
            MatchSpec::from_str(spec_text, ParseStrictness::Lenient)
                .map_err(|e| conda(format!("InvalidMatchSpec: Invalid spec '{spec_text}': {e}")))?,
        )
    };
    let pattern = spec_text.to_ascii_lowercase();
    let mut found: Vec<&RepoDataRecord> = records
        .iter()
        .filter(|r| match &spec {
            Some(s) => s.matches(&r.package_record),
            None => glob_match(&pattern, r.package_record.name.as_normalized()),
        })
        .collect();
    found.sort_by(|a, b| {
        (
            a.package_record.name.as_normalized(),
            &a.package_record.version,
            a.package_record.build_number,
        )
            .cmp(&(
                b.package_record.name.as_normalized(),
                &b.package_record.version,
                b.package_record.build_number,
            ))
    });
    if found.is_empty() {
        return Err(CondaError::PackagesNotFound {
            packages: vec![spec_text.to_string()],
            channels: channels
                .iter()
                .flat_map(|c| {
                    let c = c.trim_end_matches('/');
                    [format!("{c}/{}", ctx.platform), format!("{c}/noarch")]
                })
                .collect(),
        });
    }
    if a.json {
        let mut map: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
            std::collections::BTreeMap::new();
        for r in &found {
            let mut v = serde_json::to_value(&r.package_record).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("url".into(), r.url.to_string().into());
                o.insert(
                    "channel".into(),
                    r.channel.clone().unwrap_or_default().into(),
                );
                o.insert("fn".into(), r.identifier.to_file_name().into());
            }
            map.entry(r.package_record.name.as_normalized().to_string())
                .or_default()
                .push(v);
        }
        println!("{}", serde_json::to_string_pretty(&map).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "# {:<24} {:>15} {:>15}  Channel",
        "Name", "Version", "Build"
    );
    for r in found {
        let p = &r.package_record;
        let channel = r
            .channel
            .as_deref()
            .map(|c| list::channel_of(c).0)
            .unwrap_or_default();
        println!(
            "{:<26} {:>15} {:>15}  {channel}",
            p.name.as_normalized(),
            p.version.to_string(),
            p.build
        );
        if a.info {
            println!("  url: {}\n  depends: {:?}", r.url, p.depends);
        }
    }
    Ok(0)
}

/// `*` wildcards over a whole name.
fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    pattern.ends_with('*') || rest.is_empty() || parts.len() > 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_package_files() {
        assert!(glob_match("alp*", "alpha"));
        assert!(glob_match("*ph*", "alpha"));
        assert!(glob_match("*pha", "alpha"));
        assert!(!glob_match("*phz", "alpha"));
        assert!(!glob_match("bet*", "alpha"));
        assert!(is_package_file("./x-1.0-py_0.tar.bz2"));
        assert_eq!(
            explicit_url("https://h/conda-forge/linux-64/x-y-1.0-h0_0.conda#0123"),
            Some((
                "https://h/conda-forge".to_string(),
                "x-y ==1.0 h0_0".to_string()
            ))
        );
        assert_eq!(explicit_url("numpy >=1"), None);
        assert!(!is_package_file("numpy"));
    }

    #[test]
    fn command_lines_parse_as_condas() {
        let cli = Cli::try_parse_from([
            "conda",
            "install",
            "--yes",
            "-c",
            "http://x/c",
            "--override-channels",
            "-p",
            "/p",
            "alpha>=1",
            "x-1.0-py_0.tar.bz2",
        ])
        .unwrap();
        let Some(Command::Install(a)) = cli.command else {
            panic!("not install");
        };
        assert!(a.common.yes && a.channels.override_channels);
        assert_eq!(a.packages, ["alpha>=1", "x-1.0-py_0.tar.bz2"]);
        let cli = Cli::try_parse_from([
            "mamba",
            "env",
            "export",
            "--no-build",
            "--json",
            "--from-history",
        ])
        .unwrap();
        let Some(Command::Env {
            command: EnvCommand::Export(e),
        }) = cli.command
        else {
            panic!("not env export");
        };
        assert!(e.no_builds && e.json && e.from_history);
        let cli = Cli::try_parse_from(["conda", "config", "--add", "channels", "x"]).unwrap();
        let Some(Command::Config(c)) = cli.command else {
            panic!("not config");
        };
        assert_eq!(c.add.unwrap(), ["channels", "x"]);
        assert!(Cli::try_parse_from(["conda", "clean", "-y", "-a"]).is_ok());
        assert!(Cli::try_parse_from(["conda", "config", "--show"]).is_ok());
        assert!(Cli::try_parse_from(["conda", "info", "--envs", "--json"]).is_ok());
    }
}
