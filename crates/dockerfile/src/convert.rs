//! `nbrt convert`: a Dockerfile written out as the runtime file that builds the same image.
//!
//! A runtime file's steps run in a fixed order (apt, conda, pip, files, then each run), so
//! a Dockerfile line becomes a package step only where that order keeps its meaning: a
//! `RUN apt-get install`, `conda install` or `pip install` line with nothing before it that
//! the step would now run ahead of (a COPY, another RUN). Such a line becomes `[apt]`,
//! `[conda]` or `[pip]` (with their locks and one-package-more rebuilds); every other RUN
//! stays a `[[run]]` with its environment, working directory, user and shell made explicit,
//! and the report says why for each. A COPY after a RUN stays in order as a `[[run]]` that
//! writes what it copies (file contents inlined), since `[[files]]` would run before the
//! earlier RUN. What a runtime file cannot say at all (several stages, `RUN --mount`, `VOLUME`,
//! `ONBUILD`, `ADD` of archives and URLs) is an error naming its line: the conversion never
//! builds a different image silently.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use nbrt_build::snapshot::{MergedView, Node, Snapshots};
use nbrt_oci::spec::Descriptor;
use nbrt_oci::{Digest, Store};
use serde::Serialize;

use crate::error::{DockerfileError, IoContext, Result};
use crate::ignore::clean;
use crate::parse::{self, Cmd, Instruction, Op};
use crate::words::{expand, split_words, Lookup};

/// What to convert and where the runtime file goes.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    pub dockerfile: PathBuf,
    /// The build context: COPY sources are taken from it.
    pub context: PathBuf,
    /// The directory the runtime file is written to: `[[files]]` sources are relative to
    /// it, so it must hold the copied files.
    pub output_dir: PathBuf,
    /// The runtime's `name`.
    pub name: String,
    /// `--build-arg NAME=value`.
    pub build_args: BTreeMap<String, String>,
}

/// What became of one Dockerfile line.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub line: usize,
    pub instruction: String,
    /// Where it went: `[pip]`, `[[run]]`, `[image] user`, `nothing` …
    pub became: String,
    /// Why a RUN stayed a `[[run]]`, or what differs from the Dockerfile's image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    /// The runtime file's text.
    pub runtime: String,
    pub notes: Vec<Note>,
}

/// Where a step stands in a runtime file's fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    None,
    Apt,
    Conda,
    Pip,
    Files,
    Run,
}

impl Phase {
    fn section(self) -> &'static str {
        match self {
            Phase::None => "",
            Phase::Apt => "[apt]",
            Phase::Conda => "[conda]",
            Phase::Pip => "[pip]",
            Phase::Files => "[[files]]",
            Phase::Run => "[[run]]",
        }
    }
}

#[derive(Default)]
struct Out {
    apt: Vec<String>,
    conda_packages: Vec<String>,
    conda_files: Vec<String>,
    conda_channels: Vec<String>,
    conda_prefix: Option<String>,
    pip_packages: Vec<String>,
    pip_requirements: Option<String>,
    pip_constraints: Option<String>,
    pip_index: Option<String>,
    pip_extra: Vec<String>,
    pip_wheelhouse: Vec<String>,
    pip_prefix: Option<String>,
    /// `(line, destination, source, mode, owner)`.
    files: Vec<(usize, String, String, String, Option<String>)>,
    /// `(line, command, user, network)`.
    runs: Vec<(usize, String, String, bool)>,
    env: Vec<(String, String)>,
    image: BTreeMap<&'static str, String>,
    labels: BTreeMap<String, String>,
    ports: BTreeSet<u16>,
}

/// A RUN that stays a `[[run]]`, with the environment and ARGs it sees at its line.
struct PendingRun {
    line: usize,
    env: Vec<(String, String)>,
    args: Vec<(String, String)>,
    workdir: String,
    body: String,
    user: String,
    network: bool,
}

/// The base image as far as the store knows it: its environment and files.
struct Base {
    env: Vec<(String, String)>,
    view: Option<MergedView>,
}

impl Base {
    fn is_dir(&self, path: &str) -> Option<bool> {
        let v = self.view.as_ref()?;
        Some(
            v.lookup(path.trim_start_matches('/'), true)
                .ok()
                .flatten()
                .is_some_and(|f| matches!(f.node, Node::Dir(_))),
        )
    }
    fn exists(&self, path: &str) -> Option<bool> {
        let v = self.view.as_ref()?;
        Some(
            v.lookup(path.trim_start_matches('/'), true)
                .ok()
                .flatten()
                .is_some(),
        )
    }
}

/// The state of the stage while converting.
struct St {
    env: Vec<(String, String)>,
    args: Vec<(String, String)>,
    user: String,
    workdir: String,
    shell: Vec<String>,
    /// The furthest step reached so far, and the line that reached it.
    phase: Phase,
    phase_line: usize,
    /// Image paths a COPY filled from the context (image path → context-relative path).
    copied: BTreeMap<String, String>,
}

impl St {
    fn scope(&self) -> Vec<(String, String)> {
        let mut s = self.args.clone();
        s.extend(self.env.iter().cloned());
        s
    }
    fn set_env(&mut self, k: &str, v: &str) {
        match self.env.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => self.env.push((k.to_string(), v.to_string())),
        }
    }
    fn get_env(&self, k: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// TOML's quoted form of a string.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn q_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// A word quoted for `/bin/sh`.
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn join_path(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        clean(rel)
    } else {
        clean(&format!("{}/{rel}", base.trim_end_matches('/')))
    }
}

/// A variable lookup that remembers names it did not find.
struct Recording<'a> {
    vars: &'a [(String, String)],
    missing: RefCell<Vec<String>>,
}

impl Lookup for Recording<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        let found = Lookup::get(self.vars, name);
        if found.is_none() {
            self.missing.borrow_mut().push(name.to_string());
        }
        found
    }
}

/// A shell command as a list of simple commands joined by `&&`, each split into words with
/// quotes removed and variables expanded from `vars`; `Err` says why it is not that simple.
fn simple_commands(
    text: &str,
    vars: &[(String, String)],
) -> std::result::Result<Vec<Vec<String>>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(qc) => {
                if c == qc {
                    quote = None;
                } else if c == '\\' && qc == '"' && i + 1 < chars.len() {
                    cur.push(c);
                    i += 1;
                    cur.push(chars[i]);
                    i += 1;
                    continue;
                } else if qc == '"' && (c == '`' || (c == '$' && chars.get(i + 1) == Some(&'('))) {
                    return Err("it runs a command substitution".into());
                }
                cur.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '\\' if i + 1 < chars.len() => {
                    cur.push(c);
                    i += 1;
                    cur.push(chars[i]);
                }
                '&' if chars.get(i + 1) == Some(&'&') => {
                    parts.push(std::mem::take(&mut cur));
                    i += 2;
                    continue;
                }
                '$' if chars.get(i + 1) == Some(&'(') => {
                    return Err("it runs a command substitution".into())
                }
                ';' | '|' | '&' | '<' | '>' | '`' | '(' | ')' | '\n' | '{' | '}' | '#' => {
                    return Err(format!(
                        "it is more than commands joined by && (the shell's `{c}`)"
                    ))
                }
                _ => cur.push(c),
            },
        }
        i += 1;
    }
    if quote.is_some() {
        return Err("an unterminated quote".into());
    }
    parts.push(cur);
    let mut out = Vec::new();
    for p in parts {
        let look = Recording {
            vars,
            missing: RefCell::new(Vec::new()),
        };
        let mut words = Vec::new();
        for w in split_words(&p, '\\') {
            words.push(expand(&w, &look, '\\').map_err(|e| e.0)?);
        }
        let missing = look.missing.into_inner();
        if let Some(m) = missing.first() {
            return Err(format!(
                "it uses ${m}, whose value is not known without running the image"
            ));
        }
        if words.is_empty() {
            return Err("an empty command".into());
        }
        out.push(words);
    }
    Ok(out)
}

/// One package line, as it would go into its step.
enum Package {
    Apt(Vec<String>),
    Conda {
        specs: Vec<String>,
        files: Vec<String>,
        channels: Vec<String>,
        prefix: Option<String>,
    },
    Pip {
        packages: Vec<String>,
        requirements: Option<String>,
        constraints: Option<String>,
        index: Option<String>,
        extra: Vec<String>,
        wheelhouse: Vec<String>,
        /// `pip`, `pip3` or `python3 -m pip`: which program to find in the image.
        program: String,
    },
}

impl Package {
    fn phase(&self) -> Phase {
        match self {
            Package::Apt(_) => Phase::Apt,
            Package::Conda { .. } => Phase::Conda,
            Package::Pip { .. } => Phase::Pip,
        }
    }
}

fn is_pip(argv: &[String]) -> Option<(String, usize)> {
    let first = argv.first()?.rsplit('/').next()?.to_string();
    if first == "pip"
        || (first.starts_with("pip3") && first[4..].chars().all(|c| c == '.' || c.is_ascii_digit()))
    {
        return Some((first, 1));
    }
    if first.starts_with("python") && argv.get(1)? == "-m" && argv.get(2)? == "pip" {
        return Some((first, 3));
    }
    None
}

/// The value of an option given as `--opt value` or `--opt=value`.
fn take_value(argv: &[String], i: &mut usize, opt: &str) -> std::result::Result<String, String> {
    if let Some(v) = argv[*i].split_once('=').map(|(_, v)| v.to_string()) {
        return Ok(v);
    }
    *i += 1;
    argv.get(*i)
        .cloned()
        .ok_or_else(|| format!("{opt} without a value"))
}

/// A `RUN` that is one package install (with its clean-up), or why it is not.
fn package_line(
    text: &str,
    st: &St,
    context_file: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Package, String> {
    let cmds = simple_commands(text, &st.scope())?;
    let mut found: Option<Package> = None;
    let mut set = |p: Package| -> std::result::Result<(), String> {
        if found.is_some() {
            return Err("it installs packages twice in one line".into());
        }
        found = Some(p);
        Ok(())
    };
    for argv in &cmds {
        let prog = argv[0].rsplit('/').next().unwrap_or_default();
        let sub = argv.get(1).map(String::as_str).unwrap_or_default();
        if let Some((program, at)) = is_pip(argv) {
            match argv.get(at).map(String::as_str) {
                Some("install") => set(pip_install(&argv[at + 1..], program, st, context_file)?)?,
                Some("cache") if argv.get(at + 1).map(String::as_str) == Some("purge") => {}
                _ => return Err(format!("`{}` is not a pip install", argv.join(" "))),
            }
            continue;
        }
        match (prog, sub) {
            ("conda" | "mamba" | "micromamba", "install") => {
                set(conda_install(&argv[2..], st, context_file)?)?
            }
            ("conda" | "mamba" | "micromamba", "clean") => {}
            ("apt-get" | "apt", "update" | "clean") => {}
            ("apt-get" | "apt", "install") => set(apt_install(&argv[2..])?)?,
            ("apt-get" | "apt", _) if argv[1..].iter().any(|a| a == "install") => {
                let at = argv.iter().position(|a| a == "install").unwrap_or(0);
                let mut rest: Vec<String> = argv[1..at].to_vec();
                rest.extend_from_slice(&argv[at + 1..]);
                set(apt_install(&rest)?)?
            }
            ("rm", _)
                if argv[1..].iter().all(|a| {
                    a.starts_with('-')
                        || a == "/var/lib/apt/lists"
                        || a.starts_with("/var/lib/apt/lists/")
                }) => {}
            _ => {
                return Err(format!(
                    "`{}` is not a package install (nor its clean-up)",
                    argv.join(" ")
                ))
            }
        }
    }
    let p = found.ok_or_else(|| "it installs no packages".to_string())?;
    if matches!(p, Package::Apt(_)) && !(st.user.is_empty() || st.user == "root" || st.user == "0")
    {
        return Err("apt runs as a user other than root".into());
    }
    Ok(p)
}

fn apt_install(args: &[String]) -> std::result::Result<Package, String> {
    let mut pkgs = Vec::new();
    let mut no_recommends = false;
    for a in args {
        match a.as_str() {
            "-y" | "--yes" | "-q" | "-qq" | "-yq" | "-qy" | "-yqq" | "--quiet" | "--assume-yes" => {
            }
            "--no-install-recommends" => no_recommends = true,
            o if o.starts_with('-') => return Err(format!("apt option {o} has no [apt] form")),
            p => pkgs.push(p.to_string()),
        }
    }
    if !no_recommends {
        return Err(
            "it installs recommended packages too (no --no-install-recommends); the [apt] step does not"
                .into(),
        );
    }
    if pkgs.is_empty() {
        return Err("apt-get install without packages".into());
    }
    Ok(Package::Apt(pkgs))
}

fn conda_install(
    args: &[String],
    st: &St,
    context_file: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Package, String> {
    let mut specs = Vec::new();
    let mut files = Vec::new();
    let mut channels = Vec::new();
    let mut prefix = None;
    let mut override_channels = false;
    let mut offline = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let name = a.split('=').next().unwrap_or(a);
        match name {
            "-y" | "--yes" | "-q" | "--quiet" | "--no-banner" => {}
            "--offline" => offline = true,
            "--override-channels" => override_channels = true,
            "-c" | "--channel" => channels.push(take_value(args, &mut i, name)?),
            "-p" | "--prefix" => prefix = Some(take_value(args, &mut i, name)?),
            "-n" | "--name" => {
                let n = take_value(args, &mut i, name)?;
                if n != "base" {
                    return Err(format!(
                        "it installs into the environment {n:?}, not the base one"
                    ));
                }
            }
            o if o.starts_with('-') => return Err(format!("conda option {o} has no [conda] form")),
            _ if a.ends_with(".tar.bz2") || a.ends_with(".conda") => {
                let image_path = join_path(&st.workdir, a);
                let ctx = context_file(&image_path).ok_or_else(|| {
                    format!("the package file {a} is not one a COPY took from the build context")
                })?;
                files.push(ctx);
            }
            _ => specs.push(a.to_string()),
        }
        i += 1;
    }
    if !channels.is_empty() && !override_channels {
        return Err(
            "-c adds to the image's configured channels, which the [conda] step does not read (add --override-channels)"
                .into(),
        );
    }
    if offline && !specs.is_empty() {
        return Err("--offline with package names installs from the image's package cache".into());
    }
    if specs.is_empty() && files.is_empty() {
        return Err("conda install without packages".into());
    }
    Ok(Package::Conda {
        specs,
        files,
        channels,
        prefix,
    })
}

fn pip_install(
    args: &[String],
    program: String,
    st: &St,
    context_file: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<Package, String> {
    let mut packages = Vec::new();
    let mut requirements = None;
    let mut constraints = None;
    let mut index = None;
    let mut extra = Vec::new();
    let mut wheelhouse = Vec::new();
    let mut no_index = false;
    let from_context = |what: &str, p: &str| {
        context_file(&join_path(&st.workdir, p))
            .ok_or_else(|| format!("the {what} {p} is not one a COPY took from the build context"))
    };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let name = a.split('=').next().unwrap_or(a);
        match name {
            "--no-cache-dir"
            | "-q"
            | "--quiet"
            | "--no-warn-script-location"
            | "--disable-pip-version-check"
            | "--root-user-action" => {
                if name == "--root-user-action" && !a.contains('=') {
                    i += 1;
                }
            }
            "--progress-bar" => {
                take_value(args, &mut i, name)?;
            }
            "-r" | "--requirement" => {
                if requirements.is_some() {
                    return Err("more than one requirements file".into());
                }
                requirements = Some(from_context(
                    "requirements file",
                    &take_value(args, &mut i, name)?,
                )?);
            }
            "-c" | "--constraint" => {
                if constraints.is_some() {
                    return Err("more than one constraints file".into());
                }
                constraints = Some(from_context(
                    "constraints file",
                    &take_value(args, &mut i, name)?,
                )?);
            }
            "-i" | "--index-url" => index = Some(take_value(args, &mut i, name)?),
            "--extra-index-url" => extra.push(take_value(args, &mut i, name)?),
            "--no-index" => no_index = true,
            "-f" | "--find-links" => {
                let dir = take_value(args, &mut i, name)?;
                wheelhouse.push(from_context("wheel directory", &dir)?);
            }
            "-U" | "--upgrade" => {
                return Err("--upgrade replaces what the image has; the [pip] step keeps it".into())
            }
            o if o.starts_with('-') => return Err(format!("pip option {o} has no [pip] form")),
            _ if a.contains('/') || a.ends_with(".whl") || a.ends_with(".tar.gz") || a == "." => {
                return Err(format!("{a} is a local path, not a requirement"))
            }
            _ => packages.push(a.to_string()),
        }
        i += 1;
    }
    if no_index && wheelhouse.is_empty() {
        return Err("--no-index without --find-links".into());
    }
    if !no_index && !wheelhouse.is_empty() {
        return Err("--find-links next to an index".into());
    }
    if packages.is_empty() && requirements.is_none() {
        return Err("pip install without packages".into());
    }
    Ok(Package::Pip {
        packages,
        requirements,
        constraints,
        index,
        extra,
        wheelhouse,
        program,
    })
}

/// Write the Dockerfile `opts.dockerfile` as a runtime file. The base image is looked up in
/// `store` (when given) for its environment and to find where `pip` and `conda` install;
/// without it, docker-stacks' layout (`/opt/conda`) is assumed and the notes say so.
pub fn convert(store: Option<&Store>, opts: &ConvertOptions) -> Result<Conversion> {
    let text = fs::read_to_string(&opts.dockerfile)
        .io_context(|| format!("reading {}", opts.dockerfile.display()))?;
    let file = opts
        .dockerfile
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let df = parse::parse(&file, &text)?;
    let err = |inst: &Instruction, message: String| DockerfileError::Instruction {
        file: file.clone(),
        line: inst.line,
        instruction: inst.text.clone(),
        message,
    };
    let mut global: Vec<(String, String)> = Vec::new();
    let mut from: Option<&Instruction> = None;
    let mut body: Vec<&Instruction> = Vec::new();
    for inst in &df.instructions {
        match (&inst.op, from) {
            (Op::From { .. }, Some(_)) => {
                return Err(err(
                    inst,
                    "a runtime file has one parent: multi-stage Dockerfiles have no runtime-file form (build them with `nbrt build -f`)".into(),
                ))
            }
            (Op::From { .. }, None) => from = Some(inst),
            (Op::Arg(args), None) => {
                for (k, v) in args {
                    let value = match (opts.build_args.get(k), v) {
                        (Some(g), _) => Some(g.clone()),
                        (None, Some(d)) => {
                            Some(expand(d, &global, df.escape).map_err(|e| err(inst, e.0))?)
                        }
                        (None, None) => None,
                    };
                    global.retain(|(n, _)| n != k);
                    if let Some(v) = value {
                        global.push((k.clone(), v));
                    }
                }
            }
            (_, None) => {
                return Err(err(inst, "only ARG may come before the first FROM".into()))
            }
            (_, Some(_)) => body.push(inst),
        }
    }
    let Some(from) = from else {
        return Err(DockerfileError::Parse {
            file,
            line: 1,
            message: "the Dockerfile has no FROM".into(),
        });
    };
    let Op::From { image, flags, .. } = &from.op else {
        return Err(err(from, "a stage must start with FROM".into()));
    };
    if let Some((n, _)) = flags.first() {
        return Err(err(from, format!("--{n} has no runtime-file form")));
    }
    let parent = expand(image, &global, df.escape).map_err(|e| err(from, e.0))?;
    if parent.eq_ignore_ascii_case("scratch") || parent.is_empty() {
        return Err(err(
            from,
            "a runtime file starts from an image (or [bootstrap]), not scratch".into(),
        ));
    }
    let base = load_base(store, &parent);
    let mut notes = vec![Note {
        line: from.line,
        instruction: from.text.clone(),
        became: format!("from = {}", q(&parent)),
        why: if base.view.is_some() {
            None
        } else {
            Some("the base is not in nbrt's store: docker-stacks' layout (/opt/conda) is assumed for pip and conda".into())
        },
    }];
    let mut st = St {
        env: base.env.clone(),
        args: Vec::new(),
        user: String::new(),
        workdir: "/".into(),
        shell: vec!["/bin/sh".into(), "-c".into()],
        phase: Phase::None,
        phase_line: from.line,
        copied: BTreeMap::new(),
    };
    let base_env = base.env.clone();
    let mut out = Out::default();
    // RUN lines in order, with the environment they see, for the exports written later.
    let mut pending_runs: Vec<PendingRun> = Vec::new();
    let context = fs::canonicalize(&opts.context)
        .io_context(|| format!("finding the build context {}", opts.context.display()))?;
    fs::create_dir_all(&opts.output_dir)
        .io_context(|| format!("creating {}", opts.output_dir.display()))?;
    let output_dir = fs::canonicalize(&opts.output_dir)
        .io_context(|| format!("finding {}", opts.output_dir.display()))?;
    let context_fs = crate::context::Context::open(&context)?;
    // A context path as the runtime file names it (relative to its directory).
    let relative = |ctx_rel: &str| -> Option<String> {
        let abs = context.join(ctx_rel);
        abs.strip_prefix(&output_dir)
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|p| !p.is_empty())
    };
    for inst in body {
        let scope = st.scope();
        let x = |w: &str| -> Result<String> {
            let look = Recording {
                vars: &scope,
                missing: RefCell::new(Vec::new()),
            };
            let v = expand(w, &look, df.escape).map_err(|e| err(inst, e.0))?;
            match look.missing.into_inner().first() {
                Some(m) if base.view.is_none() => Err(err(
                    inst,
                    format!(
                        "${m} is not set by the Dockerfile and may be the base image's, which \
                         is not in nbrt's store: pull or import {parent} first"
                    ),
                )),
                _ => Ok(v),
            }
        };
        let mut note = |became: String, why: Option<String>| {
            notes.push(Note {
                line: inst.line,
                instruction: inst.text.clone(),
                became,
                why,
            })
        };
        match &inst.op {
            Op::From { .. } => unreachable_from(inst, &err)?,
            Op::Arg(args) => {
                for (k, d) in args {
                    let v = match (opts.build_args.get(k), d) {
                        (Some(g), _) => Some(g.clone()),
                        (None, Some(d)) => Some(x(d)?),
                        (None, None) => global.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
                    };
                    st.args.retain(|(n, _)| n != k);
                    if let Some(v) = v {
                        st.args.push((k.clone(), v));
                    }
                }
                note("nothing (its value goes into the [[run]] steps that see it)".into(), None);
            }
            Op::Env(pairs) => {
                let mut set = Vec::new();
                for (k, v) in pairs {
                    set.push((x(k)?, x(v)?));
                }
                for (k, v) in &set {
                    st.set_env(k, v);
                }
                note("[env]".into(), None);
            }
            Op::Label(pairs) => {
                for (k, v) in pairs {
                    out.labels.insert(x(k)?, x(v)?);
                }
                note("[image] labels".into(), None);
            }
            Op::User(u) => {
                st.user = x(u)?;
                if st.user.contains('#') {
                    return Err(err(inst, format!("{:?}: a comment after an instruction is part of it in Dockerfiles", st.user)));
                }
                out.image.insert("user", st.user.clone());
                note("[image] user, and the user of the steps after it".into(), None);
            }
            Op::Workdir(w) => {
                let path = join_path(&st.workdir, &x(w)?);
                st.workdir = path.clone();
                out.image.insert("workdir", path.clone());
                if path == "/" || base.is_dir(&path) == Some(true) {
                    note("[image] workdir".into(), None);
                } else {
                    // BuildKit makes it (and its parents) owned by the current user.
                    let command = workdir_command(&path, &st.user);
                    pending_runs.push(PendingRun {
                        line: inst.line,
                        env: st.env.clone(),
                        args: st.args.clone(),
                        workdir: "/".into(),
                        body: command,
                        user: "root".into(),
                        network: false,
                    });
                    st.phase = Phase::Run;
                    st.phase_line = inst.line;
                    note(
                        "[image] workdir, and a [[run]] that makes the directory".into(),
                        Some("BuildKit creates a missing WORKDIR (owned by the current user)".into()),
                    );
                }
            }
            Op::Shell(args) => {
                st.shell = args.clone();
                note(
                    "nothing: the [[run]] steps after it run through this shell".into(),
                    Some("a runtime file does not record a SHELL in the image config".into()),
                );
            }
            Op::Cmd(c) | Op::Entrypoint(c) => {
                let argv = match c {
                    Cmd::Exec(v) => v.clone(),
                    Cmd::Shell(s) => {
                        let mut v = st.shell.clone();
                        v.push(s.clone());
                        v
                    }
                };
                let key = if matches!(inst.op, Op::Cmd(_)) { "cmd" } else { "entrypoint" };
                out.image.insert(key, q_list(&argv));
                note(format!("[image] {key}"), None);
            }
            Op::Expose(ports) => {
                for p in ports {
                    for word in split_words(&x(p)?, df.escape) {
                        let (port, proto) = word.split_once('/').unwrap_or((&word, "tcp"));
                        let n: u16 = port.parse().ok().filter(|_| proto.eq_ignore_ascii_case("tcp")).ok_or_else(|| {
                            err(inst, format!("{word}: a runtime file exposes single TCP ports only"))
                        })?;
                        out.ports.insert(n);
                    }
                }
                note("[image] ports".into(), None);
            }
            Op::StopSignal(s) => {
                out.image.insert("stop-signal", q(&x(s)?));
                note("[image] stop-signal".into(), None);
            }
            Op::Healthcheck { flags, cmd } => {
                let test = match cmd {
                    None => vec!["NONE".to_string()],
                    Some(Cmd::Exec(v)) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
                    Some(Cmd::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
                };
                let mut fields = vec![format!("test = {}", q_list(&test))];
                for (k, v) in flags {
                    let v = v.clone().unwrap_or_default();
                    match k.as_str() {
                        "interval" | "timeout" | "start-period" => fields.push(format!("{k} = {}", q(&v))),
                        "retries" => fields.push(format!(
                            "retries = {}",
                            v.parse::<u32>().map_err(|_| err(inst, "--retries must be a number".into()))?
                        )),
                        o => return Err(err(inst, format!("unknown flag: --{o}"))),
                    }
                }
                out.image.insert("healthcheck", format!("{{ {} }}", fields.join(", ")));
                note("[image] healthcheck".into(), None);
            }
            Op::Maintainer(_) => note(
                "nothing".into(),
                Some("MAINTAINER (deprecated) sets the image's author, which a runtime file does not".into()),
            ),
            Op::Volume(_) => {
                return Err(err(inst, "a runtime file declares no volumes (the site mounts the home directory)".into()))
            }
            Op::Onbuild(_) => return Err(err(inst, "a runtime file records no ONBUILD triggers".into())),
            Op::Copy { heredocs, .. } if !heredocs.is_empty() => {
                return Err(err(inst, "a COPY heredoc has no [[files]] form (write the file into the context and COPY it)".into()))
            }
            Op::Copy { add, flags, sources, dest, .. } => {
                let (planned, owner) =
                    plan_copy(inst, *add, flags, sources, dest, &st, &context_fs, &base, &x, &err)?;
                if st.phase > Phase::Files {
                    // [[files]] would run before the [[run]] of an earlier line: the copy
                    // stays in order as a [[run]] that writes its entries.
                    pending_runs.push(PendingRun {
                        line: inst.line,
                        env: st.env.clone(),
                        args: st.args.clone(),
                        workdir: "/".into(),
                        body: copy_script(inst, &planned, &owner, &err)?,
                        user: "root".into(),
                        network: false,
                    });
                    note(
                        "[[run]]".into(),
                        Some(format!(
                            "a runtime file copies its [[files]] before its [[run]] steps, and line {} (a RUN) comes before this line: kept in order as a [[run]] that writes what it copies, file contents inlined from the context (convert again after changing them)",
                            st.phase_line
                        )),
                    );
                    continue;
                }
                let file_entries = files_entries(inst, &planned, &owner, &base, &relative, &err)?;
                st.phase = Phase::Files;
                st.phase_line = inst.line;
                for (dest, ctx_rel, src, mode, owner) in file_entries {
                    st.copied.insert(dest.clone(), ctx_rel);
                    out.files.push((inst.line, dest, src, mode, owner));
                }
                note("[[files]]".into(), Some(FILES_DIRECTORIES.into()));
            }
            Op::Run { flags, cmd } => {
                let mut network = true;
                for (k, v) in flags {
                    match (k.as_str(), v.as_deref()) {
                        ("network", Some("none")) => network = false,
                        ("network", Some("default" | "host")) => {}
                        _ => {
                            return Err(err(
                                inst,
                                format!("RUN --{k} has no runtime-file form (build with `nbrt build -f`)"),
                            ))
                        }
                    }
                }
                let copied = st.copied.clone();
                let context_file = |image_path: &str| -> Option<String> {
                    copied.get(image_path).and_then(|c| relative(c))
                };
                let as_package = match cmd {
                    Cmd::Exec(_) => Err("it is in exec form".to_string()),
                    Cmd::Shell(_) if st.shell != ["/bin/sh", "-c"] && st.shell != ["/bin/bash", "-c"] => {
                        Err(format!("it runs through the SHELL {:?}", st.shell))
                    }
                    Cmd::Shell(_) if !network => Err("it runs without the network".into()),
                    Cmd::Shell(s) => package_line(s, &st, &context_file),
                };
                let as_package = as_package.and_then(|p| {
                    if p.phase() < st.phase {
                        Err(format!(
                            "a runtime file runs {} before its {}, and line {} comes before this line",
                            p.phase().section(),
                            st.phase.section(),
                            st.phase_line
                        ))
                    } else {
                        Ok(p)
                    }
                });
                let as_package = as_package.and_then(|p| match p {
                    Package::Pip { .. } => pip_prefix(&p, &st, &base).map(|prefix| (p, Some(prefix))),
                    Package::Conda { ref prefix, .. } => {
                        let prefix = prefix.clone().unwrap_or_else(|| "/opt/conda".into());
                        match base.exists(&format!("{prefix}/conda-meta")) {
                            Some(false) => Err(format!("{prefix} is not a conda environment in the base image")),
                            _ => Ok((p, Some(prefix))),
                        }
                    }
                    Package::Apt(_) => Ok((p, None)),
                });
                match as_package {
                    Ok((p, prefix)) => {
                        let phase = p.phase();
                        let why = add_package(&mut out, p, prefix).map_err(|m| err(inst, m))?;
                        st.phase = phase;
                        st.phase_line = inst.line;
                        note(phase.section().to_string(), why);
                    }
                    Err(why) => {
                        let body = match cmd {
                            Cmd::Exec(v) => format!("exec {}", v.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" ")),
                            Cmd::Shell(s) if st.shell == ["/bin/sh", "-c"] => s.clone(),
                            Cmd::Shell(s) => format!(
                                "exec {} {}",
                                st.shell.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" "),
                                sh_quote(s)
                            ),
                        };
                        let user = if st.user.is_empty() { "root".to_string() } else { st.user.clone() };
                        pending_runs.push(PendingRun {
                            line: inst.line,
                            env: st.env.clone(),
                            args: st.args.clone(),
                            workdir: st.workdir.clone(),
                            body,
                            user,
                            network,
                        });
                        st.phase = Phase::Run;
                        st.phase_line = inst.line;
                        note("[[run]]".into(), Some(format!("stayed a RUN: {why}")));
                    }
                }
            }
        }
    }
    // The image's [env]: what the Dockerfile set or changed.
    for (k, v) in &st.env {
        if base_env.iter().find(|(n, _)| n == k).map(|(_, bv)| bv) != Some(v) {
            out.env.push((k.clone(), v.clone()));
        }
    }
    // Each [[run]] sees the final [env]: it exports what differed at its line.
    for PendingRun {
        line,
        env,
        args,
        workdir,
        body,
        user,
        network,
    } in pending_runs
    {
        let mut pre = Vec::new();
        for (k, _) in &st.env {
            match env.iter().find(|(n, _)| n == k) {
                Some((_, v)) if st.get_env(k) != Some(v.as_str()) => {
                    pre.push(format!("export {k}={}", sh_quote(v)))
                }
                None => pre.push(format!("unset {k}")),
                _ => {}
            }
        }
        for (k, v) in &args {
            if !env.iter().any(|(n, _)| n == k) {
                pre.push(format!("export {k}={}", sh_quote(v)));
            }
        }
        if workdir != "/" {
            pre.push(format!("cd {} || exit 1", sh_quote(&workdir)));
        }
        pre.push(body);
        out.runs.push((line, pre.join("\n"), user, network));
    }
    Ok(Conversion {
        runtime: render(&opts.name, &parent, &file, &out),
        notes,
    })
}

fn unreachable_from(
    inst: &Instruction,
    err: &dyn Fn(&Instruction, String) -> DockerfileError,
) -> Result<()> {
    Err(err(inst, "FROM inside a stage".into()))
}

/// The shell commands that make a WORKDIR as BuildKit does: each missing directory 0755,
/// owned by `user` (its passwd group for a name).
fn workdir_command(path: &str, user: &str) -> String {
    let user = if user.is_empty() { "0" } else { user };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u.to_string(), g.to_string()),
        None if user.chars().all(|c| c.is_ascii_digit()) => (user.to_string(), user.to_string()),
        None => (user.to_string(), format!("$(id -g {})", sh_quote(user))),
    };
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(sh_quote)
        .collect();
    format!(
        "d=\nfor p in {}; do\n  d=\"$d/$p\"\n  [ -d \"$d\" ] || {{ mkdir \"$d\" && chmod 755 \"$d\" && chown {}:\"{}\" \"$d\"; }} || exit 1\ndone",
        parts.join(" "),
        sh_quote(&u),
        g
    )
}

/// Where `pip install` would install in the image: the environment whose `bin` holds the
/// first `pip` on PATH.
fn pip_prefix(p: &Package, st: &St, base: &Base) -> std::result::Result<String, String> {
    let Package::Pip { program, .. } = p else {
        return Err("not pip".into());
    };
    if let Some(v) = [
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
        "PIP_FIND_LINKS",
        "PIP_NO_INDEX",
        "PIP_TARGET",
        "PIP_PREFIX",
        "PIP_USER",
        "PIP_CONSTRAINT",
        "PIP_REQUIREMENT",
    ]
    .iter()
    .find(|v| st.get_env(v).is_some())
    {
        return Err(format!(
            "the image sets {v}, which the [pip] step does not read"
        ));
    }
    if base.view.is_none() {
        return Ok("/opt/conda".into());
    }
    let path = st
        .get_env("PATH")
        .unwrap_or(nbrt_build::sandbox::DEFAULT_PATH);
    let found = path
        .split(':')
        .filter(|d| d.starts_with('/'))
        .find(|d| base.exists(&format!("{d}/{program}")) == Some(true));
    let Some(dir) = found else {
        return Err(format!("the base image has no {program} on PATH"));
    };
    let prefix = dir.strip_suffix("/bin").unwrap_or_default();
    if prefix.is_empty()
        || prefix == "/usr"
        || prefix == "/usr/local"
        || base.exists(&format!("{prefix}/pyvenv.cfg")) != Some(true)
            && base.exists(&format!("{prefix}/conda-meta")) != Some(true)
    {
        return Err(format!(
            "{program} is {dir}/{program}, outside a Python environment the [pip] step installs into"
        ));
    }
    Ok(prefix.to_string())
}

/// Put a package line into its step; `Err` when it conflicts with the step's settings so
/// far, `Ok(note)` with what differs from the Dockerfile's image.
fn add_package(
    out: &mut Out,
    p: Package,
    prefix: Option<String>,
) -> std::result::Result<Option<String>, String> {
    let same = |a: &Option<String>, b: &Option<String>, what: &str| match (a, b) {
        (Some(x), Some(y)) if x != y => Err(format!("a second {what} ({y}, after {x})")),
        _ => Ok(()),
    };
    match p {
        Package::Apt(pkgs) => {
            out.apt.extend(pkgs);
            Ok(Some(
                "apt's lists and caches are not kept in the image".into(),
            ))
        }
        Package::Conda {
            specs,
            files,
            channels,
            ..
        } => {
            same(&out.conda_prefix, &prefix, "conda prefix")?;
            out.conda_prefix = prefix;
            out.conda_packages.extend(specs);
            out.conda_files.extend(files);
            for c in channels {
                if !out.conda_channels.contains(&c) {
                    out.conda_channels.push(c);
                }
            }
            Ok(Some(
                "linked by nbrt itself: link scripts are not run".into(),
            ))
        }
        Package::Pip {
            packages,
            requirements,
            constraints,
            index,
            extra,
            wheelhouse,
            ..
        } => {
            same(&out.pip_prefix, &prefix, "Python environment")?;
            same(&out.pip_requirements, &requirements, "requirements file")?;
            same(&out.pip_constraints, &constraints, "constraints file")?;
            same(&out.pip_index, &index, "index URL")?;
            out.pip_prefix = prefix;
            out.pip_requirements = out.pip_requirements.take().or(requirements);
            out.pip_constraints = out.pip_constraints.take().or(constraints);
            out.pip_index = out.pip_index.take().or(index);
            out.pip_packages.extend(packages);
            out.pip_extra.extend(extra);
            out.pip_wheelhouse.extend(wheelhouse);
            Ok(Some(
                "installed by uv, owned by the environment's owner (a RUN as root leaves root's files)".into(),
            ))
        }
    }
}

/// One entry a COPY writes into the image, as the conversion plans it.
struct Planned {
    /// Where it goes (absolute).
    path: String,
    /// A single file copied to a destination without a trailing `/`: the name it takes
    /// when that destination turns out to be a directory of the image.
    into_dir_named: Option<String>,
    kind: PlannedKind,
    /// Octal, as chmod takes it.
    mode: String,
    /// The destination directory of a directory copy: one the image has keeps its owner and
    /// mode, as BuildKit keeps them.
    top: bool,
}

enum PlannedKind {
    /// A context file: its path in the context, and where its bytes are.
    File(String, PathBuf),
    Dir,
    Link(String),
}

/// A COPY (or ADD of plain files) from the context, planned entry by entry as BuildKit
/// copies it: globs and `.dockerignore` applied, a directory source copied by its
/// contents, a single file into a destination directory under its own name. Returns the
/// entries and the owner they take (`--chown`, else root).
#[allow(clippy::too_many_arguments)]
fn plan_copy(
    inst: &Instruction,
    add: bool,
    flags: &parse::Flags,
    sources: &[String],
    dest: &str,
    st: &St,
    context: &crate::context::Context,
    base: &Base,
    x: &dyn Fn(&str) -> Result<String>,
    err: &dyn Fn(&Instruction, String) -> DockerfileError,
) -> Result<(Vec<Planned>, String)> {
    use crate::context::{expand_source, select, Kind, SourceError};
    let mut chown = None;
    let mut chmod = None;
    for (k, v) in flags {
        let v = v.clone().unwrap_or_default();
        match k.as_str() {
            "chown" => chown = Some(x(&v)?),
            "chmod" => chmod = Some(x(&v)?),
            "link" => {}
            o => {
                return Err(err(
                    inst,
                    format!("COPY --{o} has no [[files]] form (build with `nbrt build -f`)"),
                ))
            }
        }
    }
    let dest_word = x(dest)?;
    let dest_abs = join_path(&st.workdir, &dest_word);
    let mut selections = Vec::new();
    for s in sources {
        let s = x(s)?;
        if s.contains("://") {
            return Err(err(
                inst,
                format!("{s}: ADD from a URL has no [[files]] form"),
            ));
        }
        let paths = expand_source(context, &s).map_err(|e| {
            err(
                inst,
                match e {
                    SourceError::OutsideContext => {
                        format!("{s}: the source is outside the build context")
                    }
                    SourceError::NotFound => format!(
                        "{s}: not found in the build context (or excluded by .dockerignore)"
                    ),
                },
            )
        })?;
        for p in paths {
            let sel = select(context, &p)?;
            if add
                && !sel.is_dir
                && sel
                    .items
                    .first()
                    .is_some_and(|i| i.kind == Kind::File && crate::build::is_archive(&i.disk))
            {
                return Err(err(
                    inst,
                    format!("{p}: ADD unpacks this archive, which [[files]] does not"),
                ));
            }
            selections.push(sel);
        }
    }
    let many = selections.len() > 1;
    if many && !dest_word.ends_with('/') && base.is_dir(&dest_abs) != Some(true) {
        return Err(err(
            inst,
            "When using COPY with more than one source file, the destination must be a directory and end with a /".into(),
        ));
    }
    let into_dir = dest_word.ends_with('/')
        || many
        || base.is_dir(&dest_abs) == Some(true)
        || selections.iter().any(|s| s.is_dir);
    let mode_of = |m: u32| chmod.clone().unwrap_or_else(|| format!("{m:04o}"));
    let mut planned = Vec::new();
    for sel in &selections {
        for it in &sel.items {
            let path = if sel.is_dir {
                join_path(&dest_abs, &it.dest)
            } else if into_dir {
                join_path(&dest_abs, &sel.name)
            } else {
                dest_abs.clone()
            };
            let kind = match &it.kind {
                Kind::File => PlannedKind::File(it.src.clone(), it.disk.clone()),
                Kind::Dir => PlannedKind::Dir,
                Kind::Symlink(t) => PlannedKind::Link(t.clone()),
            };
            planned.push(Planned {
                into_dir_named: (!sel.is_dir && !into_dir).then(|| sel.name.clone()),
                top: sel.is_dir && it.dest.is_empty(),
                mode: mode_of(it.mode),
                kind,
                path,
            });
        }
    }
    Ok((planned, chown.unwrap_or_else(|| "0:0".into())))
}

/// What `[[files]]` says of directories it makes, against what BuildKit makes.
const FILES_DIRECTORIES: &str = "directories the copy creates take their parent directory's owner and mode (BuildKit: the source directory's mode, or 0755 above it, and the --chown owner)";

/// (image path, context path, source as the runtime file names it, mode, owner).
type FileEntry = (String, String, String, String, Option<String>);

/// A planned copy as `[[files]]` entries. Links and empty directories have no `[[files]]`
/// form.
fn files_entries(
    inst: &Instruction,
    planned: &[Planned],
    owner: &str,
    base: &Base,
    relative: &dyn Fn(&str) -> Option<String>,
    err: &dyn Fn(&Instruction, String) -> DockerfileError,
) -> Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    for p in planned {
        match &p.kind {
            PlannedKind::File(rel, _) => {
                let source = relative(rel).ok_or_else(|| {
                    err(inst, format!("{rel}: the runtime file must be written inside the build context, above its copied files (-o CONTEXT/runtime.toml)"))
                })?;
                let path = match &p.into_dir_named {
                    Some(name) if base.is_dir(&p.path) == Some(true) => join_path(&p.path, name),
                    _ => p.path.clone(),
                };
                entries.push((path, rel.clone(), source, p.mode.clone(), Some(owner.to_string())));
            }
            PlannedKind::Link(target) => {
                return Err(err(
                    inst,
                    format!("{} (a link to {target}): [[files]] copies regular files; move the COPY below a RUN line to keep it as a [[run]], or build with `nbrt build -f`", p.path),
                ))
            }
            PlannedKind::Dir => {
                let prefix = format!("{}/", p.path.trim_end_matches('/'));
                let holds_a_file = planned
                    .iter()
                    .any(|q| matches!(q.kind, PlannedKind::File(..)) && q.path.starts_with(&prefix));
                if !holds_a_file {
                    return Err(err(
                        inst,
                        format!("{}: an empty directory has no [[files]] form; move the COPY below a RUN line to keep it as a [[run]], or build with `nbrt build -f`", p.path),
                    ));
                }
            }
        }
    }
    Ok(entries)
}

/// The largest total of context files a COPY after a RUN inlines into its [[run]].
const INLINE_LIMIT: u64 = 256 << 10;

/// The shell commands that do what a planned COPY does, for a [[run]] that keeps it after
/// the RUN lines before it: missing parent directories made 0755 and owned as BuildKit
/// makes them, directories with the copy's mode and owner (the destination of a directory
/// copy keeps its own when the image has it), file contents inlined as printf formats of
/// octal escapes (any bytes survive), links as they are.
fn copy_script(
    inst: &Instruction,
    planned: &[Planned],
    owner: &str,
    err: &dyn Fn(&Instruction, String) -> DockerfileError,
) -> Result<String> {
    let chown = match owner.split_once(':') {
        Some(_) => owner.to_string(),
        None if owner.chars().all(|c| c.is_ascii_digit()) => format!("{owner}:{owner}"),
        None => format!("{owner}:"),
    };
    let mut total = 0u64;
    let mut lines = vec!["set -e".to_string(), "umask 022".to_string()];
    if let Some(first) = planned.first() {
        let parent = first.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        if !parent.is_empty() {
            lines.push(workdir_command(parent, owner));
        }
    }
    for p in planned {
        let t = sh_quote(&p.path);
        match &p.kind {
            PlannedKind::Dir if p.top => lines.push(format!(
                "[ -d {t} ] || {{ mkdir {t} && chown {} {t} && chmod {} {t}; }}",
                sh_quote(&chown),
                sh_quote(&p.mode)
            )),
            PlannedKind::Dir => lines.push(format!(
                "[ -d {t} ] || mkdir {t}\nchown {} {t}\nchmod {} {t}",
                sh_quote(&chown),
                sh_quote(&p.mode)
            )),
            PlannedKind::Link(target) => lines.push(format!(
                "rm -rf {t}\nln -s {} {t}\nchown -h {} {t}",
                sh_quote(target),
                sh_quote(&chown)
            )),
            PlannedKind::File(_, disk) => {
                let data = fs::read(disk).io_context(|| format!("reading {}", disk.display()))?;
                total += data.len() as u64;
                if total > INLINE_LIMIT {
                    return Err(err(
                        inst,
                        format!(
                            "{}: a COPY after a RUN becomes a [[run]] with its files inlined, and they come to more than {} KiB; move the COPY above the RUN lines if they do not need it, or build with `nbrt build -f`",
                            disk.display(),
                            INLINE_LIMIT >> 10
                        ),
                    ));
                }
                let mut format = String::with_capacity(data.len() * 2);
                for b in data {
                    match b {
                        b'%' => format.push_str("%%"),
                        b'\\' => format.push_str("\\\\"),
                        b'\'' => format.push_str("\\047"),
                        b'\n' => format.push_str("\\n"),
                        0x20..=0x7e => format.push(b as char),
                        _ => format.push_str(&format!("\\{b:03o}")),
                    }
                }
                let into = match &p.into_dir_named {
                    Some(name) => format!("\n[ -d \"$t\" ] && t=\"$t\"/{}", sh_quote(name)),
                    None => String::new(),
                };
                lines.push(format!(
                    "t={t}{into}\nrm -f \"$t\"\nprintf '{format}' > \"$t\"\nchown {} \"$t\"\nchmod {} \"$t\"",
                    sh_quote(&chown),
                    sh_quote(&p.mode),
                ));
            }
        }
    }
    Ok(lines.join("\n"))
}

/// The base image's environment and file system, when the store has it.
fn load_base(store: Option<&Store>, reference: &str) -> Base {
    let none = Base {
        env: Vec::new(),
        view: None,
    };
    let Some(store) = store else { return none };
    let Ok(found) = store.resolve(reference) else {
        return none;
    };
    let image = found.image;
    let env = image
        .config
        .value()
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e, String::new()),
        })
        .collect();
    let view = Snapshots::open(store).ok().and_then(|snaps| {
        let layers: Vec<(&Descriptor, &Digest)> =
            image.layers().iter().zip(image.diff_ids()).collect();
        snaps.ensure_all(store, &layers).ok().map(MergedView::new)
    });
    Base { env, view }
}

fn render(name: &str, parent: &str, file: &str, out: &Out) -> String {
    let mut t = String::new();
    t.push_str(&format!(
        "# Written by `nbrt convert` from {file}: each step names the line it came from.\nname = {}\nfrom = {}\n",
        q(name),
        q(parent)
    ));
    if !out.apt.is_empty() {
        t.push_str(&format!("\n[apt]\npackages = {}\n", q_list(&out.apt)));
    }
    if !out.conda_packages.is_empty() || !out.conda_files.is_empty() {
        t.push_str("\n[conda]\n");
        if !out.conda_channels.is_empty() {
            t.push_str(&format!("channels = {}\n", q_list(&out.conda_channels)));
        }
        if !out.conda_packages.is_empty() {
            t.push_str(&format!("packages = {}\n", q_list(&out.conda_packages)));
        }
        if !out.conda_files.is_empty() {
            t.push_str(&format!("files = {}\n", q_list(&out.conda_files)));
        }
        if let Some(p) = out.conda_prefix.as_ref().filter(|p| *p != "/opt/conda") {
            t.push_str(&format!("prefix = {}\n", q(p)));
        }
    }
    if !out.pip_packages.is_empty() || out.pip_requirements.is_some() {
        t.push_str("\n[pip]\n");
        if !out.pip_packages.is_empty() {
            t.push_str(&format!("packages = {}\n", q_list(&out.pip_packages)));
        }
        if let Some(r) = &out.pip_requirements {
            t.push_str(&format!("requirements = {}\n", q(r)));
        }
        if let Some(c) = &out.pip_constraints {
            t.push_str(&format!("constraints = {}\n", q(c)));
        }
        if let Some(i) = &out.pip_index {
            t.push_str(&format!("index-url = {}\n", q(i)));
        }
        if !out.pip_extra.is_empty() {
            t.push_str(&format!("extra-index-urls = {}\n", q_list(&out.pip_extra)));
        }
        if !out.pip_wheelhouse.is_empty() {
            t.push_str(&format!("wheelhouse = {}\n", q_list(&out.pip_wheelhouse)));
        }
        if let Some(p) = out.pip_prefix.as_ref().filter(|p| *p != "/opt/conda") {
            t.push_str(&format!("prefix = {}\n", q(p)));
        }
    }
    for (line, dest, src, mode, owner) in &out.files {
        t.push_str(&format!(
            "\n# {file}:{line}\n[[files]]\nsource = {}\ndestination = {}\nmode = {}\n",
            q(src),
            q(dest),
            q(mode)
        ));
        if let Some(o) = owner {
            t.push_str(&format!("owner = {}\n", q(o)));
        }
    }
    for (line, command, user, network) in &out.runs {
        t.push_str(&format!(
            "\n# {file}:{line}\n[[run]]\ncommand = {}\nuser = {}\n",
            q(command),
            q(user)
        ));
        if !network {
            t.push_str("network = false\n");
        }
    }
    if !out.env.is_empty() {
        t.push_str("\n[env]\n");
        for (k, v) in &out.env {
            t.push_str(&format!("{} = {}\n", q(k), q(v)));
        }
    }
    if !out.image.is_empty() || !out.labels.is_empty() || !out.ports.is_empty() {
        t.push_str("\n[image]\n");
        for (k, v) in &out.image {
            let v = if matches!(*k, "user" | "workdir") {
                q(v)
            } else {
                v.clone()
            };
            t.push_str(&format!("{k} = {v}\n"));
        }
        if !out.ports.is_empty() {
            let ports: Vec<String> = out.ports.iter().map(|p| p.to_string()).collect();
            t.push_str(&format!("ports = [{}]\n", ports.join(", ")));
        }
        if !out.labels.is_empty() {
            let labels: Vec<String> = out
                .labels
                .iter()
                .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                .collect();
            t.push_str(&format!("labels = {{ {} }}\n", labels.join(", ")));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbrt_build::runtime_file::RuntimeFile;

    fn conv(dockerfile: &str, files: &[(&str, &str)]) -> Result<(Conversion, RuntimeFile)> {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let path = dir.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, c).unwrap();
        }
        fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        let c = convert(
            None,
            &ConvertOptions {
                dockerfile: dir.path().join("Dockerfile"),
                context: dir.path().to_path_buf(),
                output_dir: dir.path().to_path_buf(),
                name: "converted".into(),
                build_args: BTreeMap::new(),
            },
        )?;
        // What it writes is a runtime file nbrt reads.
        let rt = RuntimeFile::parse(
            &c.runtime,
            &dir.path().join("runtime.toml"),
            dir.path(),
            dir.path(),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", c.runtime));
        Ok((c, rt))
    }

    fn why(c: &Conversion, line: usize) -> String {
        c.notes
            .iter()
            .find(|n| n.line == line)
            .and_then(|n| n.why.clone())
            .unwrap_or_default()
    }

    #[test]
    fn seed_001_extension_becomes_a_pip_step() {
        let (c, rt) = conv(
            "FROM elyra/kernel-py:3.2.3\n\nUSER root\n\nRUN pip install my-libraries\n\nUSER 1000\n",
            &[],
        )
        .unwrap();
        let pip: Vec<String> = rt
            .pip
            .unwrap()
            .packages
            .into_iter()
            .map(|p| p.into_inner())
            .collect();
        assert_eq!(pip, vec!["my-libraries"]);
        assert_eq!(
            rt.from,
            nbrt_build::runtime_file::From::Named("elyra/kernel-py:3.2.3".into())
        );
        assert!(rt.run.is_empty(), "{}", c.runtime);
        assert_eq!(rt.image.user.as_deref(), Some("1000"));
        assert_eq!(
            c.notes.iter().find(|n| n.line == 5).unwrap().became,
            "[pip]"
        );
        // `USER $NB_UID` needs the base's environment.
        let e = conv("FROM k\nUSER $NB_UID\n", &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("Dockerfile:2: USER $NB_UID: $NB_UID is not set by the Dockerfile"),
            "{e}"
        );
    }

    #[test]
    fn package_lines_and_what_stays_a_run() {
        let (c, rt) = conv(
            "FROM base\nARG V=1\n\
             RUN apt-get update && apt-get install -y --no-install-recommends tree && rm -rf /var/lib/apt/lists/*\n\
             RUN conda install -y graphviz && conda clean -afy\n\
             RUN pip install --no-cache-dir 'numpy>=2' six\n\
             COPY req.txt /tmp/req.txt\n\
             RUN echo $V && pip install tabulate\n\
             RUN pip install requests\n\
             WORKDIR /opt/app\nENV K=after\n\
             SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
             RUN echo \"$K\" | cat > k\n\
             CMD start.sh\nEXPOSE 8888\n",
            &[("req.txt", "six\n")],
        )
        .unwrap();
        let t = &c.runtime;
        assert_eq!(rt.apt.unwrap().packages, vec!["tree"], "{t}");
        assert_eq!(rt.conda.unwrap().packages, vec!["graphviz"], "{t}");
        let pip: Vec<String> = rt
            .pip
            .unwrap()
            .packages
            .into_iter()
            .map(|p| p.into_inner())
            .collect();
        assert_eq!(pip, vec!["numpy>=2", "six"]);
        assert_eq!(rt.files.len(), 1);
        assert_eq!(rt.files[0].source.as_deref(), Some("req.txt"));
        assert_eq!(rt.files[0].destination, "/tmp/req.txt");
        assert_eq!(rt.files[0].mode.as_deref(), Some("0644"));
        // A RUN with more than a package install, and a package line after it, stay runs.
        assert!(
            why(&c, 7).contains("`echo 1` is not a package install"),
            "{}",
            why(&c, 7)
        );
        assert!(
            why(&c, 8).contains("runs [pip] before its [[run]], and line 7"),
            "{}",
            why(&c, 8)
        );
        assert!(why(&c, 12).contains("SHELL"), "{}", why(&c, 12));
        // The ARG is exported for the run, the later ENV undone, the WORKDIR made and
        // entered, the SHELL used.
        let cmds: Vec<&str> = rt.run.iter().map(|r| r.command.as_str()).collect();
        assert_eq!(cmds.len(), 4, "{t}");
        assert_eq!(
            cmds[0],
            "unset K\nexport V=1\necho $V && pip install tabulate"
        );
        assert_eq!(cmds[1], "unset K\nexport V=1\npip install requests");
        assert!(cmds[2].contains("mkdir \"$d\""), "{}", cmds[2]);
        assert_eq!(
            cmds[3],
            "export V=1\ncd /opt/app || exit 1\nexec /bin/bash -o pipefail -c 'echo \"$K\" | cat > k'"
        );
        assert!(rt.run.iter().all(|r| r.user == "root"));
        assert_eq!(
            rt.image.cmd.unwrap(),
            vec!["/bin/bash", "-o", "pipefail", "-c", "start.sh"]
        );
        assert_eq!(rt.image.ports, vec![8888]);
        assert_eq!(rt.image.workdir.as_deref(), Some("/opt/app"));
        assert_eq!(rt.env.get("K").map(String::as_str), Some("after"));
        assert!(!rt.env.contains_key("V"), "ARGs are not in the image");
    }

    #[test]
    fn a_copy_after_a_run_stays_in_order() {
        let (c, rt) = conv(
            "FROM a\nCOPY first /first\nRUN mkdir /opt/app\nCOPY --chown=1000:100 --chmod=750 f /opt/app/new/\n",
            &[("first", "1"), ("f", "it's 100% \\ real\n")],
        )
        .unwrap();
        // The COPY before the RUN is a [[files]]; the one after it a [[run]] after the RUN's.
        assert_eq!(rt.files.len(), 1, "{}", c.runtime);
        assert_eq!(rt.run.len(), 2, "{}", c.runtime);
        assert_eq!(rt.run[0].command, "mkdir /opt/app");
        let copy = &rt.run[1];
        assert_eq!(copy.user, "root");
        assert!(!copy.network);
        assert!(
            copy.command
                .contains("printf 'it\\047s 100%% \\\\ real\\n' > \"$t\""),
            "{}",
            copy.command
        );
        assert!(copy
            .command
            .contains("chown 1000:100 \"$t\"\nchmod 750 \"$t\""));
        assert!(
            why(&c, 4)
                .contains("line 3 (a RUN) comes before this line: kept in order as a [[run]]"),
            "{}",
            why(&c, 4)
        );
        // What the printf writes is the file, byte for byte.
        let dir = tempfile::tempdir().unwrap();
        let printf = copy
            .command
            .lines()
            .find(|l| l.starts_with("printf "))
            .unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(printf)
            .env("t", dir.path().join("f"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("f")).unwrap(),
            "it's 100% \\ real\n"
        );
    }

    #[test]
    fn what_a_runtime_file_cannot_say_is_an_error() {
        for (df, msg) in [
            ("FROM a AS x\nFROM b\n", "Dockerfile:2: FROM b: a runtime file has one parent"),
            ("FROM a\nVOLUME /data\n", "Dockerfile:2:"),
            ("FROM a\nRUN --mount=type=cache,target=/c true\n", "Dockerfile:2:"),
            ("FROM a\nCOPY ../f /f\n", "Dockerfile:2: COPY ../f /f: ../f: the source is outside the build context"),
            ("FROM a\nCOPY f d /x\n", "Dockerfile:2: COPY f d /x: When using COPY with more than one source file"),
            ("FROM a\nUSER root  # switch\n", "Dockerfile:2: USER root  # switch: \"root  # switch\": a comment after an instruction is part of it"),
        ] {
            let e = conv(df, &[("f", "x"), ("d/x", "y")]).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{df}: {e}");
        }
    }

    #[test]
    fn shell_words() {
        let vars = vec![("A".to_string(), "1".to_string())];
        assert_eq!(
            simple_commands("pip install 'a b' \"$A\" && conda clean -a", &vars).unwrap(),
            vec![
                vec!["pip", "install", "a b", "1"],
                vec!["conda", "clean", "-a"]
            ]
        );
        assert!(simple_commands("pip install $B", &vars)
            .unwrap_err()
            .contains("$B"));
        assert!(simple_commands("a; b", &vars).is_err());
        assert!(simple_commands("a $(b)", &vars).is_err());
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
