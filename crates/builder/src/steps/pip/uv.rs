//! uv for the pip step: wheels resolved and installed by the `uv` binary for the image's Python
//! version and platform, into a staging tree that stands for the image root. Nothing runs
//! in the image and no host path ends up in it.
//!
//! How: the parent's `*.dist-info` metadata is seeded into the target so uv treats those
//! packages as installed; `uv pip install --target <site-packages>` runs with the image's
//! Python version and a manylinux platform; afterwards seeded metadata uv left alone is
//! removed again, packages uv replaced become whiteouts, console scripts and data files move
//! from the target to the environment's prefix with the image's Python in their shebangs and
//! their `RECORD` entries (and hashes) corrected.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::{BuildError, IoContext, Result};
pub use crate::lock::LockedWheel;
use crate::snapshot::MergedView;
use crate::steps::env::python_version;
use nbrt_oci::facts::dist_info::{dist_info_name, normalize, site_packages};

/// Files of a dist-info directory uv needs to see a package as installed (and to uninstall
/// it when it replaces it).
pub(crate) const SEEDED_FILES: &[&str] =
    &["METADATA", "RECORD", "INSTALLER", "WHEEL", "top_level.txt"];

/// Top-level directories `uv pip install --target` fills from the scripts and data schemes;
/// in an environment they belong under the prefix, not in site-packages.
const PREFIX_DIRS: &[&str] = &["bin", "share", "etc", "include"];

#[derive(Debug, Clone, Default)]
pub struct PipRequest {
    /// The environment, e.g. `/opt/conda`.
    pub prefix: String,
    pub packages: Vec<String>,
    pub requirements: Option<PathBuf>,
    pub constraints: Option<PathBuf>,
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub wheelhouses: Vec<PathBuf>,
    /// Exact pins from `runtime.lock` (`name==version`); when set, installed without resolving
    /// anything else (`--no-deps`), and when the pins carry hashes, uv checks every wheel
    /// against them (`--require-hashes`): a wheel that is not the locked one fails the step.
    pub locked: Option<Vec<LockedWheel>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipOutcome {
    /// Every distribution in the environment after the step.
    pub installed: Vec<LockedWheel>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<(String, String, String)>,
    /// Paths (relative to the image root) of files of replaced distributions that the new
    /// layer does not overwrite.
    pub whiteouts: Vec<String>,
    /// The Python version installed for.
    pub python: (u64, u64),
    /// Dist-info directories of the preferred distributions uv kept as they were.
    pub kept: Vec<String>,
}

/// A distribution an earlier run of the step installed, offered to uv as installed: uv
/// keeps it when the requirements allow (and replaces it otherwise), as it keeps what an
/// environment has. Its files come from elsewhere (the step's pieces); only its metadata is
/// seeded.
#[derive(Debug, Clone)]
pub struct Preferred {
    /// `name-version.dist-info`.
    pub dist_info: String,
    /// A directory with its dist-info files (those of [`SEEDED_FILES`] it has).
    pub seed: PathBuf,
}

/// An error of the pip step.
pub(crate) fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("pip", message)
}

/// The uv binary: `$NBRT_UV`, else `uv` on PATH.
pub fn uv_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("NBRT_UV").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let ok = Command::new("uv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(PathBuf::from("uv"))
    } else {
        Err(err(
            "the pip step needs the uv binary: run scripts/setup (it installs uv from PyPI), \
             `pip install uv`, or point NBRT_UV at it",
        ))
    }
}

/// Install the request into `staging` (an empty directory standing for the image root),
/// with `preferred` seeded as installed (but those the parent has under the same name).
pub fn install(
    view: &MergedView,
    req: &PipRequest,
    staging: &Path,
    cache_dir: &Path,
    preferred: &[Preferred],
    output: &mut dyn std::io::Write,
) -> Result<PipOutcome> {
    let python = python_version(view, &req.prefix)?;
    let prefix_rel = req
        .prefix
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string();
    let site_rel = site_packages(&req.prefix, python);
    let target = staging.join(&site_rel);
    fs::create_dir_all(&target).io_context(|| format!("creating {}", target.display()))?;

    let seeded = seed_parent(view, &site_rel, &target)?;
    let parent_names: BTreeSet<String> = seeded.values().map(|(n, _)| n.clone()).collect();
    let mut offered = Vec::new();
    for p in preferred {
        let Some((name, _)) = dist_info_name(&p.dist_info) else {
            continue;
        };
        if parent_names.contains(&name) || p.dist_info.contains('/') {
            continue;
        }
        let dest = target.join(&p.dist_info);
        fs::create_dir_all(&dest).io_context(|| format!("creating {}", dest.display()))?;
        for f in SEEDED_FILES {
            let from = p.seed.join(f);
            if from.is_file() {
                fs::copy(&from, dest.join(f))
                    .io_context(|| format!("seeding {}/{f}", p.dist_info))?;
            }
        }
        offered.push(p.dist_info.clone());
    }

    let uv = uv_binary()?;
    let mut cmd = uv_pip(&uv, "install", python, req, cache_dir);
    cmd.arg("--target")
        .arg(&target)
        .args(["--link-mode", "copy"]);
    // Kept until uv has read it.
    let mut _pinned_file = None;
    match &req.locked {
        Some(pins) => {
            cmd.arg("--no-deps");
            if pins.iter().any(|p| p.sha256.is_some()) {
                let mut file = tempfile::Builder::new()
                    .prefix("nbrt-locked-")
                    .suffix(".txt")
                    .tempfile()
                    .io_context(|| "creating the locked requirements file")?;
                std::io::Write::write_all(&mut file, locked_requirements(pins)?.as_bytes())
                    .io_context(|| "writing the locked requirements file")?;
                cmd.arg("--require-hashes").arg("-r").arg(file.path());
                _pinned_file = Some(file);
            } else {
                for p in pins {
                    cmd.arg(format!("{}=={}", p.name, p.version));
                }
            }
        }
        None => requested(&mut cmd, req),
    }
    let out = cmd
        .output()
        .io_context(|| format!("running {}", uv.display()))?;
    output.write_all(&out.stderr).ok();
    if !out.status.success() {
        return Err(err(format!(
            "uv could not install the packages ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }

    // What is there now.
    let mut now: BTreeMap<String, (String, String)> = BTreeMap::new();
    for entry in fs::read_dir(&target).io_context(|| format!("listing {}", target.display()))? {
        let entry = entry.io_context(|| format!("listing {}", target.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(nv) = dist_info_name(&name) {
            now.insert(name, nv);
        }
    }
    let before: BTreeMap<&String, &String> = seeded.values().map(|(n, v)| (n, v)).collect();
    let mut kept = Vec::new();
    for dir in offered {
        let path = target.join(&dir);
        if path.exists() {
            fs::remove_dir_all(&path).io_context(|| format!("removing seeded {dir}"))?;
            kept.push(dir);
        }
    }
    let after: BTreeMap<&String, &String> = now.values().map(|(n, v)| (n, v)).collect();
    let mut outcome = PipOutcome {
        python,
        installed: after
            .iter()
            .map(|(n, v)| LockedWheel {
                name: (*n).clone(),
                version: (*v).clone(),
                url: None,
                sha256: None,
            })
            .collect(),
        kept,
        ..Default::default()
    };
    for (n, v) in &after {
        match before.get(n) {
            None => outcome.added.push(format!("{n}=={v}")),
            Some(old) if old != v => {
                outcome
                    .changed
                    .push(((*n).clone(), (*old).clone(), (*v).clone()))
            }
            _ => {}
        }
    }
    for (n, v) in &before {
        if !after.contains_key(n) {
            outcome.removed.push(format!("{n}=={v}"));
        }
    }

    // Seeded metadata uv did not touch goes again; what it removed becomes whiteouts.
    let mut whiteouts: BTreeSet<String> = BTreeSet::new();
    for dir in seeded.keys() {
        let path = target.join(dir);
        if path.exists() {
            fs::remove_dir_all(&path).io_context(|| format!("removing seeded {dir}"))?;
        } else {
            whiteouts.insert(format!("{site_rel}/{dir}"));
            if let Some(record) = view.read(&format!("{site_rel}/{dir}/RECORD"))? {
                for line in String::from_utf8_lossy(&record).lines() {
                    let Some(rel) = line.split(',').next().filter(|p| !p.is_empty()) else {
                        continue;
                    };
                    if let Some(p) = join_inside(&site_rel, rel) {
                        whiteouts.insert(p);
                    }
                }
            }
        }
    }
    let _ = fs::remove_file(target.join(".lock"));

    // Scripts and data files belong to the prefix.
    let packages = top_level_packages(&target)?;
    let mut moved: BTreeSet<String> = BTreeSet::new();
    for d in PREFIX_DIRS {
        let from = target.join(d);
        if !from.is_dir() || packages.contains(*d) {
            continue;
        }
        let to = staging.join(&prefix_rel).join(d);
        merge_move(&from, &to)?;
        moved.insert((*d).to_string());
    }
    let bin = staging.join(&prefix_rel).join("bin");
    let shebang = format!("#!{}/bin/python", req.prefix.trim_end_matches('/'));
    if moved.contains("bin") {
        for entry in fs::read_dir(&bin).io_context(|| "listing scripts")? {
            let entry = entry.io_context(|| "listing scripts")?;
            rewrite_shebang(&entry.path(), &shebang)?;
        }
    }
    fix_records(&target, &moved, &staging.join(&prefix_rel))?;
    remove_pycache(staging)?;

    // Paths the new layer writes anyway need no whiteout, nor do paths under a whiteout
    // (the replaced dist-info directory hides its RECORD's own entries).
    outcome.whiteouts = whiteouts
        .iter()
        .filter(|p| !under_any(p, &whiteouts) && !staging.join(p).exists())
        .cloned()
        .collect();
    Ok(outcome)
}

/// Seed the parent's distributions (`site_rel` in `view`) into `target` so uv counts them as
/// installed: each dist-info directory with its [`SEEDED_FILES`]. Returns them by directory.
fn seed_parent(
    view: &MergedView,
    site_rel: &str,
    target: &Path,
) -> Result<BTreeMap<String, (String, String)>> {
    let mut seeded = BTreeMap::new();
    for dir in view.read_dir(site_rel)? {
        let Some((name, version)) = dist_info_name(&dir) else {
            continue;
        };
        let dest = target.join(&dir);
        fs::create_dir_all(&dest).io_context(|| format!("creating {}", dest.display()))?;
        for f in SEEDED_FILES {
            if let Some(bytes) = view.read(&format!("{site_rel}/{dir}/{f}"))? {
                fs::write(dest.join(f), bytes).io_context(|| format!("seeding {dir}/{f}"))?;
            }
        }
        seeded.insert(dir, (name, version));
    }
    Ok(seeded)
}

/// The runtime file's requirements as uv arguments: files, constraints, packages.
fn requested(cmd: &mut Command, req: &PipRequest) {
    if let Some(r) = &req.requirements {
        cmd.arg("-r").arg(r);
    }
    if let Some(c) = &req.constraints {
        cmd.arg("-c").arg(c);
    }
    cmd.args(&req.packages);
}

/// What [`install`] would install on the parent's distributions, resolved without installing
/// (`uv pip install --dry-run`: uv reads the wheels' metadata, downloads none): every
/// distribution the step's layer would hold, new or at another version than the parent's,
/// as unhashed pins sorted by name, and the Python version resolved for.
pub fn resolve(
    view: &MergedView,
    req: &PipRequest,
    cache_dir: &Path,
) -> Result<((u64, u64), Vec<LockedWheel>)> {
    let python = python_version(view, &req.prefix)?;
    let site_rel = site_packages(&req.prefix, python);
    let scratch = tempfile::Builder::new()
        .prefix("nbrt-resolve-")
        .tempdir()
        .io_context(|| "creating a scratch directory")?;
    let target = scratch.path().join("site-packages");
    fs::create_dir_all(&target).io_context(|| format!("creating {}", target.display()))?;
    seed_parent(view, &site_rel, &target)?;
    let uv = uv_binary()?;
    let mut cmd = uv_pip(&uv, "install", python, req, cache_dir);
    cmd.arg("--dry-run").arg("--target").arg(&target);
    requested(&mut cmd, req);
    let out = cmd
        .output()
        .io_context(|| format!("running {}", uv.display()))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(err(format!(
            "uv could not resolve the packages ({}):\n{}",
            out.status,
            text.trim()
        )));
    }
    Ok((python, dry_run_pins(&text)))
}

/// The ` + name==version` lines of `uv pip install --dry-run`, sorted by name.
fn dry_run_pins(text: &str) -> Vec<LockedWheel> {
    let mut pins: Vec<LockedWheel> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("+ "))
        .filter_map(|l| l.trim().split_once("=="))
        .map(|(name, version)| LockedWheel {
            name: name.trim().to_string(),
            version: version.trim().to_string(),
            url: None,
            sha256: None,
        })
        .collect();
    pins.sort();
    pins
}

/// `uv pip <subcommand>` for the image's Python version and platform, wheels only, with the
/// request's indexes and wheelhouses and only what the runtime file says: no user or host
/// uv configuration. uv is handed the host interpreter it must have (see [`host_python`]).
fn uv_pip(
    uv: &Path,
    subcommand: &str,
    python: (u64, u64),
    req: &PipRequest,
    cache_dir: &Path,
) -> Command {
    let mut cmd = Command::new(uv);
    cmd.args(["pip", subcommand])
        .args(["--python-version", &format!("{}.{}", python.0, python.1)])
        .args(["--python-platform", &python_platform()])
        .args(["--only-binary", ":all:", "--no-progress"])
        .arg("--cache-dir")
        .arg(cache_dir)
        .env("UV_NO_CONFIG", "1")
        .env("UV_SYSTEM_CERTS", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env_remove("PIP_FIND_LINKS")
        .env_remove("UV_INDEX_URL")
        .env_remove("UV_EXTRA_INDEX_URL");
    if let Some(python) = host_python() {
        cmd.arg("--python").arg(python);
    }
    if let Some(url) = &req.index_url {
        cmd.args(["--index-url", url]);
    }
    for url in &req.extra_index_urls {
        cmd.args(["--extra-index-url", url]);
    }
    for w in &req.wheelhouses {
        cmd.arg("--find-links").arg(w);
    }
    cmd
}

/// `name==version --hash=sha256:…` lines for uv's `--require-hashes` mode; every pin must
/// carry a hash there.
fn locked_requirements(pins: &[LockedWheel]) -> Result<String> {
    let mut out = String::new();
    for p in pins {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+!".contains(&b))
        };
        let sha = p.sha256.as_deref().unwrap_or_default();
        if !ok(&p.name) || !ok(&p.version) {
            return Err(err(format!(
                "locked wheel {:?} {:?} is not a name and a version",
                p.name, p.version
            )));
        }
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err(format!(
                "locked wheel {}=={} has no valid sha256 in runtime.lock",
                p.name, p.version
            )));
        }
        out.push_str(&format!("{}=={} --hash=sha256:{sha}\n", p.name, p.version));
    }
    Ok(out)
}

/// The wheels uv picks for exactly these pins (`name==version`, no dependencies) for the
/// image's Python and platform from the request's indexes and wheelhouses: their URLs and
/// sha256, for `runtime.lock`. Asks `uv pip compile --format pylock.toml` (metadata comes from
/// uv's cache after an install). Local wheels are named `file:///<file name>`: no host path
/// goes into a lock.
pub fn wheel_artifacts(
    python: (u64, u64),
    req: &PipRequest,
    pins: &[LockedWheel],
    installed_tags: &BTreeMap<String, BTreeSet<String>>,
    cache_dir: &Path,
) -> Result<Vec<LockedWheel>> {
    if pins.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = tempfile::Builder::new()
        .prefix("nbrt-pylock-")
        .tempdir()
        .io_context(|| "creating a scratch directory")?;
    let input = scratch.path().join("pins.txt");
    let mut text = String::new();
    for p in pins {
        text.push_str(&format!("{}=={}\n", p.name, p.version));
    }
    fs::write(&input, text).io_context(|| format!("writing {}", input.display()))?;
    let output = scratch.path().join("pylock.toml");
    let uv = uv_binary()?;
    let compile = |offline: bool| {
        let mut cmd = uv_pip(&uv, "compile", python, req, cache_dir);
        cmd.args(["--no-deps", "--format", "pylock.toml", "--quiet"])
            .arg(&input)
            .arg("-o")
            .arg(&output);
        if offline {
            cmd.arg("--offline");
        }
        cmd.output()
            .io_context(|| format!("running {}", uv.display()))
    };
    // Right after an install or a resolve, the index pages of what it chose are in uv's
    // cache: read there, the lock names the wheels of the very pages it chose from, without
    // another round trip to the index. What the cache cannot answer is asked of the index.
    if compile(true)?.status.success() {
        if let Ok(found) = fs::read_to_string(&output)
            .map_err(|e| err(e.to_string()))
            .and_then(|text| parse_pylock(&text, pins, installed_tags))
        {
            return Ok(found);
        }
    }
    let out = compile(false)?;
    if !out.status.success() {
        return Err(err(format!(
            "uv could not find the wheels of the installed packages for the lock ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = fs::read_to_string(&output).io_context(|| "reading uv's pylock.toml")?;
    parse_pylock(&text, pins, installed_tags)
}

/// Split `pins` into those whose wheel an earlier lock of the step already names (`known`:
/// the same name and version, and a wheel file whose tags are the installed distribution's,
/// so the same wheel) and those left for [`wheel_artifacts`] to look up.
pub fn split_known(
    pins: &[LockedWheel],
    known: &[LockedWheel],
    installed_tags: &BTreeMap<String, BTreeSet<String>>,
) -> (Vec<LockedWheel>, Vec<LockedWheel>) {
    let mut found = Vec::new();
    let mut rest = Vec::new();
    for pin in pins {
        let tags = installed_tags
            .get(&normalize(&pin.name))
            .or_else(|| installed_tags.get(&pin.name));
        let same = known.iter().find(|k| {
            normalize(&k.name) == normalize(&pin.name)
                && k.version == pin.version
                && k.sha256.is_some()
                && k.url
                    .as_deref()
                    .and_then(|u| u.rsplit('/').next())
                    .map(wheel_name_tags)
                    .is_some_and(|t| !t.is_empty() && Some(&t) == tags)
        });
        match same {
            Some(k) => found.push(LockedWheel {
                name: pin.name.clone(),
                ..k.clone()
            }),
            None => rest.push(pin.clone()),
        }
    }
    (found, rest)
}

#[derive(Deserialize)]
struct PyLock {
    #[serde(default)]
    packages: Vec<PyLockPackage>,
}

#[derive(Deserialize)]
struct PyLockPackage {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<PyLockWheel>,
}

#[derive(Deserialize)]
struct PyLockWheel {
    url: Option<String>,
    path: Option<String>,
    name: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// The wheel's file name, from its URL, path or name.
fn wheel_file_name(w: &PyLockWheel) -> Option<&str> {
    w.url
        .as_deref()
        .or(w.path.as_deref())
        .or(w.name.as_deref())
        .and_then(|s| s.rsplit('/').next())
}

/// How much an installer prefers a wheel among those that fit the platform: a platform wheel
/// over a universal one, the interpreter's own ABI over `abi3` over `none`, and the newest
/// manylinux glibc among its platform tags.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WheelRank {
    platform_specific: bool,
    abi: u8,
    glibc: (u32, u32),
}

fn wheel_rank(file: &str) -> WheelRank {
    let stem = file.strip_suffix(".whl").unwrap_or(file);
    let tags: Vec<&str> = stem.rsplitn(4, '-').collect();
    let [platforms, abis, _python, ..] = tags.as_slice() else {
        return WheelRank::default();
    };
    let abi = abis
        .split('.')
        .map(|a| match a {
            "none" => 0,
            "abi3" => 1,
            _ => 2,
        })
        .max()
        .unwrap_or(0);
    let glibc = platforms
        .split('.')
        .filter_map(manylinux_glibc)
        .max()
        .unwrap_or((0, 0));
    WheelRank {
        platform_specific: platforms.split('.').any(|p| p != "any"),
        abi,
        glibc,
    }
}

/// The glibc version of a manylinux platform tag (`manylinux_2_28_x86_64`, and the legacy
/// aliases `manylinux2014` = 2.17, `manylinux2010` = 2.12, `manylinux1` = 2.5).
fn manylinux_glibc(tag: &str) -> Option<(u32, u32)> {
    if tag.starts_with("manylinux2014") {
        return Some((2, 17));
    }
    if tag.starts_with("manylinux2010") {
        return Some((2, 12));
    }
    if tag.starts_with("manylinux1") {
        return Some((2, 5));
    }
    let rest = tag.strip_prefix("manylinux_")?;
    let mut parts = rest.splitn(3, '_');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The tags a wheel file name stands for, its compressed tag sets expanded
/// (`py2.py3-none-any` is `py2-none-any` and `py3-none-any`).
fn wheel_name_tags(file: &str) -> BTreeSet<String> {
    let stem = file.strip_suffix(".whl").unwrap_or(file);
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    let [platforms, abis, pythons, ..] = parts.as_slice() else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for py in pythons.split('.') {
        for abi in abis.split('.') {
            for plat in platforms.split('.') {
                out.insert(format!("{py}-{abi}-{plat}"));
            }
        }
    }
    out
}

fn parse_pylock(
    text: &str,
    pins: &[LockedWheel],
    installed_tags: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<LockedWheel>> {
    let lock: PyLock = toml::from_str(text)
        .map_err(|e| err(format!("uv wrote a pylock.toml we cannot read: {e}")))?;
    let mut out = Vec::with_capacity(pins.len());
    for pin in pins {
        let package = lock
            .packages
            .iter()
            .find(|p| normalize(&p.name) == normalize(&pin.name))
            .ok_or_else(|| {
                err(format!(
                    "uv found no wheel for {}=={}",
                    pin.name, pin.version
                ))
            })?;
        // Several wheels can fit one platform (a universal one beside a platform one, as
        // debugpy ships; manylinux2014 beside manylinux_2_28, as aiohttp ships; cp38-abi3
        // beside cp311-abi3, as cryptography ships): pin the one the installed distribution
        // came from (its WHEEL tags), else the most specific.
        let installed = installed_tags
            .get(&normalize(&pin.name))
            .or_else(|| installed_tags.get(&pin.name));
        let exact: Vec<&PyLockWheel> = package
            .wheels
            .iter()
            .filter(|w| {
                installed.is_some_and(|t| {
                    !t.is_empty() && wheel_file_name(w).map(wheel_name_tags).as_ref() == Some(t)
                })
            })
            .collect();
        let mut ranked: Vec<(WheelRank, &PyLockWheel)> = package
            .wheels
            .iter()
            .map(|w| (wheel_file_name(w).map(wheel_rank).unwrap_or_default(), w))
            .collect();
        ranked.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        let wheel = match ranked.as_slice() {
            _ if exact.len() == 1 => exact[0],
            [] => {
                return Err(err(format!(
                    "uv found no wheel for {}=={}",
                    pin.name, pin.version
                )))
            }
            [(best, w), rest @ ..] if rest.first().is_none_or(|(r, _)| r < best) => *w,
            more => {
                return Err(err(format!(
                    "uv lists {} wheels for {}=={} for one platform and none is preferred",
                    more.len(),
                    pin.name,
                    pin.version
                )))
            }
        };
        let url = match (&wheel.url, &wheel.path) {
            (Some(u), _) if !u.starts_with("file:") => u.clone(),
            (u, p) => {
                let from = u.as_deref().or(p.as_deref()).or(wheel.name.as_deref());
                let file = from
                    .and_then(|s| s.rsplit('/').next())
                    .filter(|f| f.ends_with(".whl"))
                    .ok_or_else(|| {
                        err(format!(
                            "uv names no wheel file for {}=={}",
                            pin.name, pin.version
                        ))
                    })?;
                format!("file:///{file}")
            }
        };
        let sha256 = wheel.hashes.get("sha256").cloned().ok_or_else(|| {
            err(format!(
                "uv gives no sha256 for the wheel of {}=={}",
                pin.name, pin.version
            ))
        })?;
        out.push(LockedWheel {
            name: pin.name.clone(),
            version: package
                .version
                .clone()
                .unwrap_or_else(|| pin.version.clone()),
            url: Some(url),
            sha256: Some(sha256),
        });
    }
    Ok(out)
}

/// A Python 3 interpreter binary on the host's PATH (the first `python3`, symlinks
/// followed), found once per process. uv runs only with some interpreter at hand, though
/// what it picks is decided by the image's version and platform (`--python-version`,
/// `--python-platform`) and it installs into `--target`. Left to find one itself, uv runs
/// the first `python` on PATH: where that is a version manager's shim script (pyenv's), each
/// uv run spent 0.6 s in the shim, more than the rest of a one-package install. Shims and
/// other scripts are passed over; with no binary found, uv looks as before (a bare `python`
/// is not taken: it may be Python 2, which uv would refuse).
fn host_python() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join("python3"))
                .find(|candidate| is_binary(candidate))
        })
        .as_deref()
}

/// Whether `path` is an ELF executable (a symlink followed), not a script.
fn is_binary(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The manylinux platform for the build host's architecture (Debian bookworm has glibc 2.36).
fn python_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "aarch64",
        _ => "x86_64",
    };
    std::env::var("NBRT_PYTHON_PLATFORM").unwrap_or_else(|_| format!("{arch}-manylinux_2_36"))
}

/// Whether a proper ancestor of `path` is in `set`.
fn under_any(path: &str, set: &BTreeSet<String>) -> bool {
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if set.contains(parent) {
            return true;
        }
        p = parent;
    }
    false
}

/// `site_rel/rel` normalized; `None` if it would leave the image root.
pub(crate) fn join_inside(site_rel: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = site_rel.split('/').collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn top_level_packages(target: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for entry in fs::read_dir(target).io_context(|| format!("listing {}", target.display()))? {
        let entry = entry.io_context(|| format!("listing {}", target.display()))?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "dist-info") {
            if let Ok(text) = fs::read_to_string(path.join("top_level.txt")) {
                out.extend(
                    text.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        } else if path.join("__init__.py").exists() {
            out.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// Move the tree `from` into `to`, merging with what is there.
fn merge_move(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).io_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).io_context(|| format!("listing {}", from.display()))? {
        let entry = entry.io_context(|| format!("listing {}", from.display()))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if src.is_dir() && !src.is_symlink() && dst.is_dir() {
            merge_move(&src, &dst)?;
        } else {
            fs::rename(&src, &dst)
                .io_context(|| format!("moving {} to {}", src.display(), dst.display()))?;
        }
    }
    fs::remove_dir_all(from).io_context(|| format!("removing {}", from.display()))
}

fn rewrite_shebang(path: &Path, shebang: &str) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let bytes = fs::read(path).io_context(|| format!("reading {}", path.display()))?;
    if !bytes.starts_with(b"#!") {
        return Ok(());
    }
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let first = String::from_utf8_lossy(&bytes[..end]);
    if !first.contains("python") {
        return Ok(());
    }
    let mut out = shebang.as_bytes().to_vec();
    out.extend_from_slice(&bytes[end..]);
    fs::write(path, out).io_context(|| format!("writing {}", path.display()))
}

/// RECORD lines of moved files point from site-packages to the prefix, with their new hashes.
fn fix_records(target: &Path, moved: &BTreeSet<String>, prefix_dir: &Path) -> Result<()> {
    for entry in fs::read_dir(target).io_context(|| format!("listing {}", target.display()))? {
        let entry = entry.io_context(|| format!("listing {}", target.display()))?;
        let record = entry.path().join("RECORD");
        if !entry.file_name().to_string_lossy().ends_with(".dist-info") || !record.is_file() {
            continue;
        }
        let text =
            fs::read_to_string(&record).io_context(|| format!("reading {}", record.display()))?;
        let mut out = String::new();
        for line in text.lines() {
            let mut fields: Vec<String> = line.split(',').map(str::to_string).collect();
            let top = fields[0].split('/').next().unwrap_or("");
            if moved.contains(top) {
                let file = prefix_dir.join(&fields[0]);
                fields[0] = format!("../../../{}", fields[0]);
                if fields.len() >= 3 {
                    if let Ok(bytes) = fs::read(&file) {
                        let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(Sha256::digest(&bytes));
                        fields[1] = format!("sha256={hash}");
                        fields[2] = bytes.len().to_string();
                    }
                }
            }
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        fs::write(&record, out).io_context(|| format!("writing {}", record.display()))?;
    }
    Ok(())
}

fn remove_pycache(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).io_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.io_context(|| format!("listing {}", dir.display()))?;
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            if entry.file_name() == "__pycache__" {
                fs::remove_dir_all(&path).io_context(|| format!("removing {}", path.display()))?;
            } else {
                remove_pycache(&path)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_wheels_are_reused_only_for_the_installed_wheel() {
        let pin = |name: &str, version: &str| LockedWheel {
            name: name.into(),
            version: version.into(),
            url: None,
            sha256: None,
        };
        let known = vec![
            LockedWheel {
                url: Some("https://f/six-1.17.0-py2.py3-none-any.whl".into()),
                sha256: Some("a".repeat(64)),
                ..pin("six", "1.17.0")
            },
            LockedWheel {
                url: Some("https://f/numpy-2.3.0-cp312-cp312-manylinux_2_28_x86_64.whl".into()),
                sha256: Some("b".repeat(64)),
                ..pin("numpy", "2.3.0")
            },
        ];
        let tags: BTreeMap<String, BTreeSet<String>> = [
            (
                "six".to_string(),
                ["py2-none-any", "py3-none-any"].map(String::from).into(),
            ),
            // Installed for another Python than the known wheel's.
            (
                "numpy".to_string(),
                ["cp313-cp313-manylinux_2_28_x86_64".to_string()].into(),
            ),
        ]
        .into();
        let pins = [
            pin("numpy", "2.3.0"),
            pin("six", "1.17.0"),
            pin("toolz", "1.0.0"),
        ];
        let (found, rest) = split_known(&pins, &known, &tags);
        assert_eq!(found, [known[0].clone()]);
        assert_eq!(rest, [pin("numpy", "2.3.0"), pin("toolz", "1.0.0")]);
    }

    #[test]
    fn dry_run_lines_become_pins() {
        let text = "Resolved 3 packages in 10ms\nWould download 2 packages\n\
                    Would uninstall 1 package\nWould install 2 packages\n \
                    - six==1.16.0\n + six==1.17.0\n + pyflakes==3.2.0\n";
        let pins: Vec<(String, String)> = dry_run_pins(text)
            .into_iter()
            .map(|p| (p.name, p.version))
            .collect();
        assert_eq!(
            pins,
            [
                ("pyflakes".to_string(), "3.2.0".to_string()),
                ("six".to_string(), "1.17.0".to_string())
            ]
        );
    }

    #[test]
    fn whiteouts_under_a_whiteout_are_dropped() {
        let set: BTreeSet<String> = [
            "s/a-1.dist-info",
            "s/a-1.dist-info/RECORD",
            "s/a-10/x",
            "s/a",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert!(under_any("s/a-1.dist-info/RECORD", &set));
        assert!(under_any("s/a/b/c", &set));
        assert!(!under_any("s/a-1.dist-info", &set));
        assert!(!under_any("s/a-10/x", &set));
    }
    use nbrt_oci::facts::dist_info::wheel_file_tags;

    #[test]
    fn the_preferred_wheel_is_pinned() {
        let text = r#"
lock-version = "1.0"
[[packages]]
name = "aiohttp"
version = "3.14.5"
wheels = [
  { url = "https://files.example/aiohttp-3.14.5-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", hashes = { sha256 = "aa" } },
  { url = "https://files.example/aiohttp-3.14.5-cp311-cp311-manylinux_2_28_x86_64.whl", hashes = { sha256 = "bb" } },
]
[[packages]]
name = "debugpy"
version = "1.8.0"
wheels = [
  { url = "https://files.example/debugpy-1.8.0-py2.py3-none-any.whl", hashes = { sha256 = "cc" } },
  { url = "https://files.example/debugpy-1.8.0-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.whl", hashes = { sha256 = "dd" } },
]
[[packages]]
name = "twins"
version = "1"
wheels = [
  { url = "https://files.example/twins-1-py3-none-any.whl", hashes = { sha256 = "ee" } },
  { url = "https://mirror.example/twins-1-py3-none-any.whl", hashes = { sha256 = "ff" } },
]
"#;
        let pin = |name: &str, version: &str| LockedWheel {
            name: name.into(),
            version: version.into(),
            url: None,
            sha256: None,
        };
        let none = BTreeMap::new();
        let got = parse_pylock(
            text,
            &[pin("aiohttp", "3.14.5"), pin("debugpy", "1.8.0")],
            &none,
        )
        .expect("two pins");
        assert_eq!(got[0].sha256.as_deref(), Some("bb"));
        assert_eq!(got[1].sha256.as_deref(), Some("dd"));
        let e = parse_pylock(text, &[pin("twins", "1")], &none).expect_err("no preferred wheel");
        assert!(e.to_string().contains("none is preferred"), "{e}");

        // The installed distribution's WHEEL tags decide, even against the ranking.
        let tags = wheel_file_tags(
            b"Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_17_x86_64\nTag: cp311-cp311-manylinux2014_x86_64\n",
        );
        let installed = BTreeMap::from([("aiohttp".to_string(), tags)]);
        let got = parse_pylock(text, &[pin("aiohttp", "3.14.5")], &installed).expect("one pin");
        assert_eq!(got[0].sha256.as_deref(), Some("aa"));
    }

    #[test]
    fn shim_scripts_are_not_taken_for_the_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("python3");
        fs::write(
            &shim,
            "#!/usr/bin/env bash\nexec pyenv exec python3 \"$@\"\n",
        )
        .unwrap();
        assert!(!is_binary(&shim));
        assert!(!is_binary(&dir.path().join("missing")));
        // A binary through a symlink, as /usr/bin/python3 is.
        let link = dir.path().join("python3-link");
        std::os::unix::fs::symlink("/proc/self/exe", &link).unwrap();
        assert!(is_binary(&link));
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(normalize("Typing_Extensions"), "typing-extensions");
        assert_eq!(
            dist_info_name("jupyter_server-2.14.0.dist-info"),
            Some(("jupyter-server".into(), "2.14.0".into()))
        );
        assert_eq!(
            join_inside(
                "opt/conda/lib/python3.11/site-packages",
                "../../../bin/f2py"
            )
            .as_deref(),
            Some("opt/conda/bin/f2py")
        );
        assert_eq!(join_inside("a/b", "../../../../x"), None);
    }
}
