//! `runtime.lock`: what a build resolved, so that `nbrt build --locked` builds exactly that.
//!
//! A build writes the lock next to the runtime file (`runtime.lock` beside `runtime.toml`,
//! `<name>.lock` beside a flat `<name>.toml`). It records:
//!
//! - `inputs`: the sha256 of the runtime file and the requirements/constraints files its pip
//!   step reads; a `--locked` build refuses a lock whose inputs differ (the lock is stale);
//! - `[parent]`: the `from` and the manifest digest of the image built upon;
//! - `[[bootstrap]]` / `[[apt]]`: the Debian packages (name, version, architecture) the
//!   bootstrap installed, or the apt step added or changed, read from `var/lib/dpkg/status`
//!   of the step's layer and the view below it;
//! - `[[conda]]`: every package of the conda prefix after the conda step (name, version,
//!   build, subdir, canonical URL, sha256, md5), read from its `conda-meta`;
//! - `[[pip]]`: every distribution the pip step's layer installs (name, version) and the wheel
//!   uv takes for it for the image's Python and platform (URL and sha256).
//!
//! `run`, `files` and `user` steps have nothing to lock: they are their definition (a `run`
//! step that downloads things is as reproducible as its command).
//!
//! What each step contributes is derived from its layer (by the step's own module), so a
//! step taken from the cache locks the same as a step that ran; it is kept in the store (refs
//! kind `build-lock`, under the step's cache key) so a cached rebuild does not derive it
//! again. This module is the file's format and those records; it knows no step.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nbrt_oci::facts::{conda_meta, dpkg};
use nbrt_oci::{Image, Store};
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, IoContext, Result};
use crate::runtime_file::{From, RuntimeFile};
use crate::snapshot::MergedView;

pub const LOCK_VERSION: u32 = 1;

/// The lock of one runtime, as written to `runtime.lock` (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimeLock {
    pub version: u32,
    pub runtime: String,
    /// `sha256:<hex>` of the runtime file and the pip requirements/constraints files.
    pub inputs: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<LockedParent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<Deb>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apt: Vec<Deb>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conda: Vec<LockedCondaPackage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pip: Vec<LockedWheel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedParent {
    /// The runtime file's `from`.
    pub from: String,
    /// Manifest digest of the parent image the build used.
    pub digest: String,
}

/// A Debian package as dpkg records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deb {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// apt marked it automatically installed (see [`crate::apt_marks`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto: bool,
}

impl Deb {
    /// The apt / mmdebstrap argument that installs exactly this version.
    pub fn pin(&self) -> String {
        format!("{}={}", self.name, self.version)
    }
}

/// One distribution as `runtime.lock` records it: the version, and the wheel that was
/// installed (its URL, or `file:///<file name>` for a local wheel, and its sha256).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedWheel {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// One conda package as `runtime.lock` records it (defined with the conda code).
pub use nbrt_conda::LockedCondaPackage;

/// What one step contributes to the lock (and, in a `--locked` build, takes from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "packages", rename_all = "kebab-case")]
pub enum StepLock {
    Bootstrap(Vec<Deb>),
    Apt(Vec<Deb>),
    Conda(Vec<LockedCondaPackage>),
    Pip(Vec<LockedWheel>),
}

/// The sections of the lock a step may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockSection {
    Bootstrap,
    Apt,
    Conda,
    Pip,
}

/// Lock entries derived before, by the cache key of the step they belong to.
struct BuildLock;
impl nbrt_oci::RefKind for BuildLock {
    const NAME: &'static str = "build-lock";
    type Payload = StepLock;
}

/// The lock entry remembered for the step with cache key `key`.
pub(crate) fn remembered(store: &Store, key: &str) -> Result<Option<StepLock>> {
    Ok(store.get_ref::<BuildLock>(key)?)
}

/// Remember what the step with cache key `key` installed.
pub(crate) fn remember(store: &Store, key: &str, lock: &StepLock) -> Result<()> {
    store.put_ref::<BuildLock>(key, &[], lock)?;
    Ok(())
}

fn lock_err(message: impl Into<String>) -> BuildError {
    BuildError::Lock(message.into())
}

/// Where the lock of a runtime file lives.
pub fn lock_path(rt: &RuntimeFile) -> PathBuf {
    let dir = rt.path.parent().unwrap_or(Path::new("."));
    match rt.path.file_name().and_then(|n| n.to_str()) {
        Some("runtime.toml") | None => dir.join("runtime.lock"),
        Some(_) => dir.join(format!(
            "{}.lock",
            rt.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| rt.name.clone())
        )),
    }
}

/// `sha256:<hex>` over the runtime file and the files its pip step resolves from.
pub fn inputs_digest(rt: &RuntimeFile) -> Result<String> {
    let mut h = nbrt_oci::digest::Hasher::new();
    let mut files = vec![rt.path.clone()];
    if let Some(p) = &rt.pip {
        files.extend(p.requirements.iter().map(|r| rt.dir.join(r)));
        files.extend(p.constraints.iter().map(|r| rt.dir.join(r)));
    }
    for f in files {
        let bytes = fs::read(&f).io_context(|| format!("reading {}", f.display()))?;
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finish().0.to_string())
}

fn from_text(rt: &RuntimeFile) -> String {
    match &rt.from {
        From::Scratch => "bootstrap".to_string(),
        From::Named(n) => n.clone(),
    }
}

impl RuntimeLock {
    /// The lock of `rt` for a `--locked` build: present, readable, and made from the runtime
    /// file as it is now.
    pub fn read_current(rt: &RuntimeFile) -> Result<Self> {
        match Self::read(rt)? {
            LockState::Current(lock) => Ok(lock),
            LockState::Missing => Err(lock_err(format!(
                "{} does not exist: run `nbrt build` without --locked once to write it",
                lock_path(rt).display()
            ))),
            LockState::Stale(why) => Err(lock_err(format!(
                "{} {why}; run `nbrt build` without --locked to update it",
                lock_path(rt).display()
            ))),
        }
    }

    /// The lock of `rt` as it is on disk: missing, stale (with why), or current. A lock that
    /// cannot be read, or that locks another runtime, is an error: it is somebody's file.
    pub fn read(rt: &RuntimeFile) -> Result<LockState> {
        let path = lock_path(rt);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockState::Missing),
            Err(e) => {
                return Err(BuildError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        if text.len() > 64 << 20 {
            return Err(lock_err(format!(
                "{} is larger than 64 MiB",
                path.display()
            )));
        }
        let lock: RuntimeLock = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            lock_err(format!(
                "{}:{line}: {} (mend it, or rewrite it with --update-lock)",
                path.display(),
                e.message()
            ))
        })?;
        if lock.version != LOCK_VERSION {
            return Ok(LockState::Stale(format!(
                "is lock version {} (this nbrt reads version {LOCK_VERSION})",
                lock.version
            )));
        }
        if lock.runtime != rt.name {
            return Err(lock_err(format!(
                "{} locks runtime {:?}, not {:?}",
                path.display(),
                lock.runtime,
                rt.name
            )));
        }
        if lock.inputs != inputs_digest(rt)? {
            return Ok(LockState::Stale(format!(
                "is stale: {} (or a requirements file it names) changed since the lock was \
                 written",
                rt.path.display()
            )));
        }
        if lock.parent.as_ref().map(|p| p.from.as_str()) != Some(from_text(rt).as_str())
            && rt.bootstrap.is_none()
        {
            return Ok(LockState::Stale("was made for another `from`".to_string()));
        }
        Ok(LockState::Current(lock))
    }

    /// The pins the lock holds in one section.
    pub fn section(&self, section: LockSection) -> StepLock {
        match section {
            LockSection::Bootstrap => StepLock::Bootstrap(self.bootstrap.clone()),
            LockSection::Apt => StepLock::Apt(self.apt.clone()),
            LockSection::Conda => StepLock::Conda(self.conda.clone()),
            LockSection::Pip => StepLock::Pip(self.pip.clone()),
        }
    }

    /// Check that the parent image is the one the lock was made on.
    pub fn check_parent(&self, rt: &RuntimeFile, parent: Option<&Image>) -> Result<()> {
        let (Some(locked), Some(parent)) = (&self.parent, parent) else {
            return Ok(());
        };
        if locked.digest != parent.digest().to_string() {
            return Err(lock_err(format!(
                "{}: the lock was made on {} {}, but it is now {}; build the parent from its \
                 own lock, or run `nbrt build` without --locked to lock this base",
                lock_path(rt).display(),
                locked.from,
                locked.digest,
                parent.digest()
            )));
        }
        Ok(())
    }
}

/// A runtime's lock as found on disk.
#[derive(Debug)]
pub enum LockState {
    Missing,
    /// Made from another version of the runtime file (or another lock format): why.
    Stale(String),
    Current(RuntimeLock),
}

/// The pins of a default build (see [`crate::builder::LockMode::Follow`]): a current lock's,
/// else none (the build resolves anew and writes the lock), each case said in `log`. A lock
/// made on another parent still pins this build's packages; the new parent is said, and the
/// lock written after the build records it.
pub fn follow(
    rt: &RuntimeFile,
    parent: Option<&Image>,
    log: &mut dyn std::io::Write,
) -> Result<Option<RuntimeLock>> {
    let path = lock_path(rt);
    match RuntimeLock::read(rt)? {
        LockState::Missing => {
            writeln!(
                log,
                "{}: no lock yet; resolving packages, writing {}",
                rt.name,
                path.display()
            )
            .ok();
            Ok(None)
        }
        LockState::Stale(why) => {
            writeln!(
                log,
                "{}: {} {why}; resolving packages again",
                rt.name,
                path.display()
            )
            .ok();
            Ok(None)
        }
        LockState::Current(lock) => {
            if let (Some(locked), Some(parent)) = (&lock.parent, parent) {
                if locked.digest != parent.digest().to_string() {
                    writeln!(
                        log,
                        "{}: {} is now {} (the lock was made on {}); building the locked \
                         packages on it",
                        rt.name,
                        locked.from,
                        parent.digest(),
                        locked.digest
                    )
                    .ok();
                }
            }
            Ok(Some(lock))
        }
    }
}

/// Write the lock of a runtime built from `steps`' contributions (atomically; unchanged
/// bytes are not rewritten).
pub fn write(rt: &RuntimeFile, parent: Option<&Image>, steps: Vec<StepLock>) -> Result<PathBuf> {
    let mut lock = RuntimeLock {
        version: LOCK_VERSION,
        runtime: rt.name.clone(),
        inputs: inputs_digest(rt)?,
        parent: parent.map(|p| LockedParent {
            from: from_text(rt),
            digest: p.digest().to_string(),
        }),
        bootstrap: Vec::new(),
        apt: Vec::new(),
        conda: Vec::new(),
        pip: Vec::new(),
    };
    for s in steps {
        match s {
            StepLock::Bootstrap(d) => lock.bootstrap = d,
            StepLock::Apt(d) => lock.apt = d,
            StepLock::Conda(c) => lock.conda = c,
            StepLock::Pip(p) => lock.pip = p,
        }
    }
    let body = toml::to_string(&lock).map_err(|e| lock_err(format!("writing the lock: {e}")))?;
    let file = rt
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = format!(
        "# Written by `nbrt build` for {file}. Builds install what this pins until {file}\n\
         # changes; `nbrt build --update-lock` refreshes it.\n{body}"
    );
    let path = lock_path(rt);
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .io_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .io_context(|| format!("writing {}", path.display()))?;
    tmp.persist(&path)
        .map_err(|e| e.error)
        .io_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The packages an apt or bootstrap step asks for: the lock's `name=version` pins in a
/// locked build, else the runtime file's list.
pub fn deb_args(pins: Option<&StepLock>, packages: &[String]) -> Vec<String> {
    match pins {
        Some(StepLock::Apt(debs) | StepLock::Bootstrap(debs)) => {
            debs.iter().map(Deb::pin).collect()
        }
        _ => packages.to_vec(),
    }
}

/// The error of a locked apt or bootstrap step whose package manager (apt, through
/// mmdebstrap or apt-get; its output is `stderr`) did not find a version the lock pins: the
/// Debian mirror no longer has it. `None` when that is not what went wrong.
pub fn lost_pin(rt: &RuntimeFile, pins: Option<&StepLock>, stderr: &str) -> Option<BuildError> {
    let Some(StepLock::Apt(debs) | StepLock::Bootstrap(debs)) = pins else {
        return None;
    };
    // apt: "E: Version '1.2-3' for 'tree' was not found"
    let lost: Vec<&Deb> = debs
        .iter()
        .filter(|d| {
            stderr.contains(&format!(
                "Version '{}' for '{}' was not found",
                d.version, d.name
            )) || stderr.contains(&format!("Unable to locate package {}", d.name))
        })
        .collect();
    if lost.is_empty() {
        return None;
    }
    let names: Vec<String> = lost
        .iter()
        .map(|d| format!("{} {}", d.name, d.version))
        .collect();
    Some(BuildError::LostPin(format!(
        "{} pins {}, which the Debian mirror no longer has (Debian keeps only the current \
         version of a package); refresh the lock: `nbrt build <stack> --only {} --update-lock` \
         resolves the packages again and rewrites it",
        lock_path(rt).display(),
        names.join(", "),
        rt.name
    )))
}

/// Installed packages (`var/lib/dpkg/status`, `status.d/*`) by the shared reader's rule
/// ([`nbrt_oci::facts::dpkg`], the manifest's too), by `name:arch`.
pub(crate) fn dpkg_status(view: &MergedView) -> Result<BTreeMap<String, Deb>> {
    let found = dpkg::installed(view)
        .into_result()
        .map_err(|e| lock_err(format!("reading the Debian packages: {e}")))?;
    let mut debs = debs(found);
    let marks = view
        .read(crate::apt_marks::PATH)?
        .map(|b| crate::apt_marks::parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    for d in debs.values_mut() {
        d.auto = marks.contains_key(&d.name);
    }
    Ok(debs)
}

/// [`dpkg_status`] of one status file's text.
#[cfg(test)]
fn parse_dpkg_status(text: &str) -> BTreeMap<String, Deb> {
    debs(
        dpkg::parse_status(text)
            .into_iter()
            .filter(dpkg::DebPackage::is_installed),
    )
}

fn debs(found: impl IntoIterator<Item = dpkg::DebPackage>) -> BTreeMap<String, Deb> {
    found
        .into_iter()
        .map(|p| {
            let arch = p.arch_or_all().to_string();
            (
                format!("{}:{arch}", p.name),
                Deb {
                    name: p.name,
                    version: p.version,
                    arch,
                    auto: false,
                },
            )
        })
        .collect()
}

/// Every package of the prefix, from its `conda-meta/*.json` (the shared reader's records).
pub(crate) fn conda_packages(view: &MergedView, prefix: &str) -> Result<Vec<LockedCondaPackage>> {
    let records = conda_meta::records(view, prefix)
        .into_result()
        .map_err(|e| lock_err(format!("reading {e}")))?;
    let mut out: Vec<LockedCondaPackage> = records
        .into_iter()
        .map(|m| LockedCondaPackage {
            name: m.name,
            version: m.version,
            build: m.build,
            subdir: m.subdir.unwrap_or_default(),
            url: m.url.unwrap_or_default(),
            sha256: m.sha256.unwrap_or_default(),
            md5: m.md5,
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_installed_packages_from_dpkg_status() {
        let status = "Package: tree\nStatus: install ok installed\nArchitecture: amd64\n\
                      Version: 2.1.0-1\nDescription: x\n more\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: tzdata\nStatus: install ok installed\nArchitecture: all\nVersion: 2024a-0+deb12u1\n";
        let got = parse_dpkg_status(status);
        assert_eq!(got.len(), 2);
        assert_eq!(got["tree:amd64"].pin(), "tree=2.1.0-1");
        assert_eq!(got["tzdata:all"].version, "2024a-0+deb12u1");
    }

    #[test]
    fn lock_round_trips_through_toml() {
        let lock = RuntimeLock {
            version: LOCK_VERSION,
            runtime: "app".into(),
            inputs: "sha256:00".into(),
            parent: Some(LockedParent {
                from: "base".into(),
                digest: "sha256:11".into(),
            }),
            bootstrap: Vec::new(),
            apt: vec![Deb {
                name: "tree".into(),
                version: "2.1.0-1".into(),
                arch: "amd64".into(),
                auto: false,
            }],
            conda: Vec::new(),
            pip: vec![LockedWheel {
                name: "six".into(),
                version: "1.17.0".into(),
                url: Some("https://files.example/six.whl".into()),
                sha256: Some("ab".repeat(32)),
            }],
        };
        let text = toml::to_string(&lock).unwrap();
        assert!(text.contains("[[pip]]"), "{text}");
        assert_eq!(toml::from_str::<RuntimeLock>(&text).unwrap(), lock);
        assert!(toml::from_str::<RuntimeLock>(&format!("{text}\nsurprise = 1\n")).is_err());
    }
}
