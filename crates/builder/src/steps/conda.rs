//! Conda packages solved and linked with the rattler crates, as one layer's worth of files.
//!
//! [`install`] takes the image's installed `conda-meta` records, solves the request against
//! them (installed packages are favoured, so they stay unless a spec needs a change), and links
//! only the delta into a staging directory that stands for the image root. Files of removed or
//! replaced packages come back as whiteout paths for the caller to write.
//!
//! Decisions worth knowing:
//!
//! - **Where packages come from.** Channels are `http(s)://` URLs (their `repodata.json.zst` or
//!   `repodata.json` is fetched for `<platform>` and `noarch`) or local directories (a path or
//!   a `file://` URL) holding `<platform>/` and/or `noarch/`. A local subdirectory with a
//!   `repodata.json` is read from it; one without is indexed in memory from its archives
//!   (nothing is ever written into the user's directory, and no copy is made). Package files
//!   (`.conda`, `.tar.bz2`) are read from the archive itself and installed exactly (a spec on
//!   their sha256); their dependencies are solved like any other. Priority is strict: package
//!   files first, then channels in the order given.
//! - **Canonical URLs.** Nothing in a record or the lock names a host path. A local channel
//!   directory is called `file:///<directory name>/` (a name used twice gets `-2`, `-3`, … in
//!   channel order), so a package in it is `file:///<name>/<subdir>/<file>`; a package file is
//!   `file:///<file name>`. Remote channels keep their URL. Two builds from copies of the same
//!   channel in different temporary directories therefore write identical bytes, and a locked
//!   rebuild finds each archive again by file name (and sha256) in the channels and package
//!   files of the build.
//! - **`conda-meta/*.json`.** Records are built from the archive's own `info/index.json` plus
//!   the archive's sha256, md5 and size, in both solved and locked builds, so a locked rebuild
//!   writes the same bytes. They carry no `extracted_package_dir`, `package_tarball_full_path`,
//!   `link`, `indexed_timestamp` or `requested_specs`, and are written as canonical JSON
//!   (sorted keys), never depending on `serde_json::Value` map order.
//! - **`conda-meta/history` and `CACHEDIR.TAG`** that rattler's `Prefix::create` writes are
//!   removed from the staging directory (unless a linked package ships them): a layer copy of
//!   `history` would hide the base image's history, and its content cannot be merged without
//!   reading it. Requested specs belong to the runtime file and `runtime.lock`.
//! - **Link scripts** (`post-link`, `pre-link`, `pre-unlink`) are never run; packages that have
//!   them are named in a warning.
//! - **Clobbering.** Packages are linked in dependency order, each with its own install
//!   driver, so when two new packages ship the same path the later one wins (no
//!   `__clobbers__` directory in the layer).
//! - **Virtual packages** for the solve: `__unix`, `__linux` (5.10), `__glibc` (2.28) and
//!   `__archspec`; `CONDA_OVERRIDE_LINUX`, `CONDA_OVERRIDE_GLIBC` and `CONDA_OVERRIDE_CUDA`
//!   (which adds `__cuda`) override them, as with conda.
//! - File mtimes in the staging directory are whatever rattler writes; the layer writer clamps.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use rattler::install::{
    link_package, InstallDriver, InstallOptions, PythonInfo, Transaction, TransactionOperation,
};
use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::package::{
    BuildString, DistArchiveIdentifier, IndexJson, LinkJson, NoArchLinks, PackageFile, PathsJson,
};
use rattler_conda_types::prefix::Prefix;
use rattler_conda_types::{
    Channel, GenericVirtualPackage, MatchSpec, PackageName, PackageNameMatcher, PackageRecord,
    ParseStrictness, PrefixRecord, RepoData, RepoDataRecord, Subdir, Version,
};
use rattler_digest::digest::Digest;
use rattler_solve::{ChannelPriority, SolveError, SolverImpl, SolverTask};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{BuildError, IoContext, Result};

/// What to install into a conda prefix of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaRequest {
    /// The prefix inside the image, e.g. `/opt/conda`.
    pub prefix: String,
    /// Channel URLs (`https://…`, `file://…`) or local channel directories, highest priority
    /// first.
    pub channels: Vec<String>,
    /// Match specs, e.g. `graphviz >=2.50`, `alpha=1.0`.
    pub specs: Vec<String>,
    /// `.conda` / `.tar.bz2` files installed offline.
    pub package_files: Vec<PathBuf>,
    /// The conda platform (subdir) of the image, e.g. `linux-64`.
    pub platform: String,
    /// When rebuilding from `runtime.lock`: install exactly these, without solving.
    pub locked: Option<Vec<LockedCondaPackage>>,
}

/// One conda package as `runtime.lock` records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LockedCondaPackage {
    pub name: String,
    pub version: String,
    pub build: String,
    pub subdir: String,
    /// Canonical URL (see the module documentation); never a host temporary path.
    pub url: String,
    /// Hex sha256 of the archive; empty when an image's record did not carry one.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl Ord for LockedCondaPackage {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (
            &self.name,
            &self.version,
            &self.build,
            &self.subdir,
            &self.url,
            &self.sha256,
            &self.md5,
        )
            .cmp(&(
                &other.name,
                &other.version,
                &other.build,
                &other.subdir,
                &other.url,
                &other.sha256,
                &other.md5,
            ))
    }
}

impl PartialOrd for LockedCondaPackage {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What an [`install`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CondaOutcome {
    /// Every package of the prefix after the step (sorted by name), for `runtime.lock`.
    pub installed: Vec<LockedCondaPackage>,
    /// Packages new to the prefix, as `name=version=build`, sorted.
    pub added: Vec<String>,
    /// Packages gone from the prefix, as `name=version=build`, sorted.
    pub removed: Vec<String>,
    /// Packages replaced (or relinked): `(name, old "version=build", new "version=build")`.
    pub changed: Vec<(String, String, String)>,
    /// Paths relative to the image root (`opt/conda/lib/old.so`) of files of removed or
    /// replaced packages that the new files do not overwrite, to be written as whiteouts.
    pub whiteouts: Vec<String>,
}

/// Solve (or take from the lock) and link the delta into `staging`.
///
/// `installed_meta` holds the image's `conda-meta/*.json` documents (may be empty); `python` is
/// the image's Python `(major, minor)` when known, used for `noarch: python` packages when the
/// prefix has no `python` package; `staging` is an empty directory standing for the image
/// root; `cache_dir` keeps extracted packages and downloads between builds.
pub async fn install(
    installed_meta: &[Vec<u8>],
    python: Option<(u64, u64)>,
    req: &CondaRequest,
    staging: &Path,
    cache_dir: &Path,
) -> Result<CondaOutcome> {
    let platform = parse_platform(&req.platform)?;
    let prefix = normalize_prefix(&req.prefix)?;
    let installed = parse_installed(installed_meta)?;
    let mut fetcher = Fetcher::new(cache_dir);
    let mut sources = Sources::default();

    let desired = match &req.locked {
        Some(locked) => {
            resolve_locked(
                locked,
                &installed,
                req,
                platform,
                &mut fetcher,
                &mut sources,
            )
            .await?
        }
        None => solve(&installed, req, platform, &mut fetcher, &mut sources).await?,
    };

    let transaction = Transaction::from_current_and_desired(
        installed.iter().cloned(),
        desired.iter().cloned(),
        None,
        None,
        platform,
    )
    .map_err(|e| conda(format!("cannot plan the conda transaction: {}", chain(&e))))?;

    let python_info = match (&transaction.python_info, python) {
        (Some(info), _) => Some(info.clone()),
        (None, Some((major, minor))) => {
            let version = Version::from_str(&format!("{major}.{minor}"))
                .map_err(|e| conda(format!("bad Python version {major}.{minor}: {e}")))?;
            Some(
                PythonInfo::from_version(&version, None, platform)
                    .map_err(|e| conda(format!("bad Python version {major}.{minor}: {e}")))?,
            )
        }
        (None, None) => None,
    };

    let mut outcome = CondaOutcome::default();
    let mut to_link = Vec::new();
    let mut to_unlink = Vec::new();
    for operation in transaction.operations {
        match operation {
            TransactionOperation::Install(new) => {
                outcome.added.push(label(&new.package_record));
                to_link.push(new);
            }
            TransactionOperation::Change { old, new }
            | TransactionOperation::Reinstall { old, new } => {
                let old_record = &old.repodata_record.package_record;
                outcome.changed.push((
                    old_record.name.as_normalized().to_string(),
                    version_build(old_record),
                    version_build(&new.package_record),
                ));
                to_unlink.push(old);
                to_link.push(new);
            }
            TransactionOperation::Remove(old) => {
                outcome
                    .removed
                    .push(label(&old.repodata_record.package_record));
                to_unlink.push(old);
            }
        }
    }
    outcome.added.sort();
    outcome.removed.sort();
    outcome.changed.sort();

    // Dependencies first, so that a package linked later wins a shared path.
    let to_link = PackageRecord::sort_topologically(to_link);
    let mut archives = Vec::with_capacity(to_link.len());
    for record in &to_link {
        let path = sources.archive_for(record, &mut fetcher).await?;
        let archive = fetcher.archive_record(&path).await?;
        check_hashes(record, &archive, &path)?;
        archives.push((path, archive));
    }

    let prefix_dir = staging.join(&prefix);
    let mut linked_paths: HashSet<PathBuf> = HashSet::new();
    let mut written: HashMap<String, LockedCondaPackage> = HashMap::new();
    if !to_link.is_empty() {
        let target = Prefix::create(&prefix_dir)
            .io_context(|| format!("create {}", prefix_dir.display()))?;
        let cache = PackageCache::new(cache_dir.join("pkgs"));
        let target_prefix = PathBuf::from(format!("/{prefix}"));
        for (record, (path, archive)) in to_link.iter().zip(&archives) {
            let name = record.package_record.name.as_normalized().to_string();
            let entry = cache
                .get_or_fetch_from_path(path, Some(archive), None)
                .await
                .map_err(|e| {
                    conda(format!(
                        "cannot extract conda package {}: {}",
                        path.display(),
                        chain(&e)
                    ))
                })?;
            let package_dir = entry.path();
            let paths_json =
                PathsJson::from_package_directory_with_deprecated_fallback(package_dir)
                    .map_err(|e| conda(format!("{name}: cannot read info/paths.json: {e}")))?;
            let index_json = IndexJson::from_package_directory(package_dir)
                .map_err(|e| conda(format!("{name}: cannot read info/index.json: {e}")))?;
            for entry in &paths_json.paths {
                if !is_safe_relative(&entry.relative_path) {
                    return Err(conda(format!(
                        "conda package {} has an unsafe path {:?}",
                        path.display(),
                        entry.relative_path
                    )));
                }
            }
            if index_json.noarch.is_python() {
                check_entry_points(&name, package_dir)?;
            }
            if index_json.noarch.is_python() && python_info.is_none() {
                return Err(conda(format!(
                    "{name} is a noarch: python package, but the image's Python version is \
                     unknown (no python package in {} and none given)",
                    req.prefix
                )));
            }
            warn_link_scripts(&name, package_dir, &paths_json);

            let paths = link_package(
                package_dir,
                &target,
                &InstallDriver::default(),
                InstallOptions {
                    target_prefix: Some(target_prefix.clone()),
                    paths_json: Some(paths_json),
                    index_json: Some(index_json),
                    allow_symbolic_links: Some(true),
                    allow_hard_links: Some(false),
                    allow_ref_links: Some(false),
                    platform: Some(platform),
                    python_info: python_info.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| conda(format!("cannot link {name}: {}", chain(&e))))?;
            linked_paths.extend(paths.iter().map(|p| p.relative_path.clone()));

            let mut package_record = archive.clone();
            package_record.run_exports = None;
            package_record.indexed_timestamp = None;
            let repodata_record = RepoDataRecord {
                package_record,
                identifier: record.identifier.clone(),
                url: record.url.clone(),
                channel: channel_of(&record.url),
            };
            let locked = locked_entry(&repodata_record);
            let prefix_record = PrefixRecord::from_repodata_record(repodata_record, paths);
            let mut bytes = nbrt_oci::json::to_canonical_vec(&prefix_record, "conda-meta record")?;
            bytes.push(b'\n');
            let meta = prefix_dir
                .join("conda-meta")
                .join(prefix_record.file_name());
            write_file(&meta, &bytes)?;
            written.insert(name, locked);
        }
        // Side files of `Prefix::create`, unless a package really ships them.
        for side in ["CACHEDIR.TAG", "conda-meta/history"] {
            if !linked_paths.contains(Path::new(side)) {
                let path = prefix_dir.join(side);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(BuildError::Io {
                            context: format!("remove {}", path.display()),
                            source: e,
                        })
                    }
                }
            }
        }
    }

    let mut whiteouts = BTreeSet::new();
    for old in &to_unlink {
        let name = old.repodata_record.package_record.name.as_normalized();
        let mut paths: BTreeSet<&Path> = old.files.iter().map(PathBuf::as_path).collect();
        paths.extend(
            old.paths_data
                .paths
                .iter()
                .map(|p| p.relative_path.as_path()),
        );
        let pre_unlink = format!("bin/.{name}-pre-unlink.sh");
        if paths.contains(Path::new(&pre_unlink)) {
            tracing::warn!(
                package = name,
                "conda package has a pre-unlink script; nbrt does not run link scripts"
            );
        }
        let meta = format!("conda-meta/{}", old.file_name());
        for path in paths.into_iter().chain(std::iter::once(Path::new(&meta))) {
            if !is_safe_relative(path) {
                tracing::warn!(
                    package = name,
                    path = %path.display(),
                    "ignoring an unsafe path in an installed conda-meta record"
                );
                continue;
            }
            let Some(relative) = path.to_str() else {
                tracing::warn!(
                    package = name,
                    path = %path.display(),
                    "ignoring a non-UTF-8 path in an installed conda-meta record"
                );
                continue;
            };
            if std::fs::symlink_metadata(prefix_dir.join(path)).is_ok() {
                // The new layer has a file there, which hides the old one anyway.
                continue;
            }
            whiteouts.insert(format!("{prefix}/{relative}"));
        }
    }
    outcome.whiteouts = whiteouts.into_iter().collect();

    let mut installed_after: Vec<LockedCondaPackage> = desired
        .iter()
        .map(|record| {
            written
                .get(record.package_record.name.as_normalized())
                .cloned()
                .unwrap_or_else(|| locked_entry(record))
        })
        .collect();
    installed_after.sort();
    outcome.installed = installed_after;
    Ok(outcome)
}

fn conda(message: impl Into<String>) -> BuildError {
    BuildError::Conda(message.into())
}

/// An error and its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            let _ = write!(out, ": {text}");
        }
        source = e.source();
    }
    out
}

fn parse_platform(platform: &str) -> Result<Subdir> {
    let subdir = Subdir::from_str(platform)
        .map_err(|e| conda(format!("unknown conda platform {platform:?}: {e}")))?;
    if !subdir.is_linux() {
        return Err(conda(format!(
            "conda platform {platform:?} is not supported: images are Linux (linux-64, linux-aarch64, …)"
        )));
    }
    Ok(subdir)
}

/// `/opt/conda/` → `opt/conda`.
fn normalize_prefix(prefix: &str) -> Result<String> {
    let path = Path::new(prefix);
    let ok = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && path.components().count() > 1;
    if !ok || prefix.contains(['\n', '\\']) {
        return Err(conda(format!(
            "conda prefix {prefix:?} must be an absolute path below / without '..', e.g. /opt/conda"
        )));
    }
    Ok(prefix.trim_matches('/').to_string())
}

fn parse_installed(documents: &[Vec<u8>]) -> Result<Vec<PrefixRecord>> {
    let mut records: Vec<PrefixRecord> = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        let record: PrefixRecord = serde_json::from_slice(document).map_err(|e| {
            let name = serde_json::from_slice::<serde_json::Value>(document)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(String::from))
                .unwrap_or_else(|| format!("#{}", index + 1));
            conda(format!(
                "cannot read the image's conda-meta record of {name}: {e}"
            ))
        })?;
        if let Some(other) = records.iter().find(|r| {
            r.repodata_record.package_record.name == record.repodata_record.package_record.name
        }) {
            return Err(conda(format!(
                "the image's conda-meta has two records for {} ({} and {})",
                record.repodata_record.package_record.name.as_normalized(),
                other.file_name(),
                record.file_name()
            )));
        }
        records.push(record);
    }
    Ok(records)
}

fn parse_spec(spec: &str) -> Result<MatchSpec> {
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(conda("bad match spec \"\": empty"));
    }
    let parsed = MatchSpec::from_str(trimmed, ParseStrictness::Lenient)
        .map_err(|e| conda(format!("bad match spec {spec:?}: {e}")))?;
    if parsed.name.as_exact().is_none() {
        return Err(conda(format!(
            "bad match spec {spec:?}: the package name must be exact (no wildcards)"
        )));
    }
    Ok(parsed)
}

fn label(record: &PackageRecord) -> String {
    format!(
        "{}={}={}",
        record.name.as_normalized(),
        record.version,
        record.build
    )
}

fn version_build(record: &PackageRecord) -> String {
    format!("{}={}", record.version, record.build)
}

fn to_hex(digest: impl AsRef<[u8]>) -> String {
    hex::encode(digest)
}

fn hex_sha256(record: &PackageRecord) -> String {
    record.sha256.map(to_hex).unwrap_or_default()
}

fn locked_entry(record: &RepoDataRecord) -> LockedCondaPackage {
    let p = &record.package_record;
    LockedCondaPackage {
        name: p.name.as_normalized().to_string(),
        version: p.version.to_string(),
        build: p.build.to_string(),
        subdir: p.subdir.clone(),
        url: record.url.to_string(),
        sha256: hex_sha256(p),
        md5: p.md5.map(to_hex),
    }
}

/// The channel part of a package URL: everything before `/<subdir>/<file>`.
fn channel_of(url: &Url) -> Option<String> {
    let segments: Vec<&str> = url.path_segments()?.collect();
    if segments.len() < 2 {
        return None;
    }
    let subdir = segments[segments.len() - 2];
    Subdir::from_str(subdir).ok()?;
    let mut channel = url.clone();
    channel.set_path(&segments[..segments.len() - 2].join("/"));
    Some(channel.to_string().trim_end_matches('/').to_string())
}

/// Whether a path from a package or a record stays below the prefix.
fn is_safe_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| conda(format!("no parent directory for {}", path.display())))?;
    std::fs::create_dir_all(parent).io_context(|| format!("create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .io_context(|| format!("create a temporary file in {}", parent.display()))?;
    tmp.write_all(bytes)
        .io_context(|| format!("write {}", path.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .io_context(|| format!("write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .io_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn warn_link_scripts(name: &str, package_dir: &Path, paths_json: &PathsJson) {
    let scripts: Vec<String> = ["pre-link", "post-link", "pre-unlink"]
        .into_iter()
        .map(|kind| format!("bin/.{name}-{kind}.sh"))
        .filter(|script| {
            paths_json
                .paths
                .iter()
                .any(|p| p.relative_path == Path::new(script))
                || package_dir.join(script).exists()
        })
        .collect();
    if !scripts.is_empty() {
        tracing::warn!(
            package = name,
            scripts = scripts.join(", "),
            "conda package has link scripts; nbrt does not run them"
        );
    }
}

/// Entry points of a `noarch: python` package become `bin/<command>`: a command must be a
/// plain file name.
fn check_entry_points(name: &str, package_dir: &Path) -> Result<()> {
    let link = match LinkJson::from_package_directory(package_dir) {
        Ok(link) => link,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(conda(format!("{name}: cannot read info/link.json: {e}"))),
    };
    if let NoArchLinks::Python(entry_points) = link.noarch {
        for entry_point in entry_points.entry_points {
            let command = Path::new(&entry_point.command);
            if !is_safe_relative(command) || command.components().count() != 1 {
                return Err(conda(format!(
                    "{name}: bad entry point command {:?} in info/link.json",
                    entry_point.command
                )));
            }
        }
    }
    Ok(())
}

fn check_hashes(record: &RepoDataRecord, archive: &PackageRecord, path: &Path) -> Result<()> {
    let expected = &record.package_record;
    if let (Some(want), Some(have)) = (expected.sha256, archive.sha256) {
        if want != have {
            return Err(conda(format!(
                "{}: the archive {} has sha256 {}, but {} says {} (stale index?)",
                expected.name.as_normalized(),
                path.display(),
                to_hex(have),
                record.url,
                to_hex(want)
            )));
        }
    } else if let (Some(want), Some(have)) = (expected.md5, archive.md5) {
        if want != have {
            return Err(conda(format!(
                "{}: the archive {} has md5 {}, but {} says {} (stale index?)",
                expected.name.as_normalized(),
                path.display(),
                to_hex(have),
                record.url,
                to_hex(want)
            )));
        }
    }
    if archive.name != expected.name
        || archive.version != expected.version
        || archive.build != expected.build
    {
        return Err(conda(format!(
            "{}: the archive {} holds {}, not {}",
            record.url,
            path.display(),
            label(archive),
            label(expected)
        )));
    }
    Ok(())
}

const DEFAULT_LINUX: &str = "5.10";
const DEFAULT_GLIBC: &str = "2.28";

fn virtual_packages(platform: Subdir) -> Result<Vec<GenericVirtualPackage>> {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let archspec = match platform.as_str() {
        "linux-64" => "x86_64".to_string(),
        "linux-32" => "x86".to_string(),
        other => other.trim_start_matches("linux-").to_string(),
    };
    let mut packages = vec![
        virtual_package("__unix", "0", "0")?,
        virtual_package(
            "__linux",
            &env("CONDA_OVERRIDE_LINUX").unwrap_or_else(|| DEFAULT_LINUX.to_string()),
            "0",
        )?,
        virtual_package(
            "__glibc",
            &env("CONDA_OVERRIDE_GLIBC").unwrap_or_else(|| DEFAULT_GLIBC.to_string()),
            "0",
        )?,
        virtual_package("__archspec", "1", &archspec)?,
    ];
    if let Some(cuda) = env("CONDA_OVERRIDE_CUDA") {
        packages.push(virtual_package("__cuda", &cuda, "0")?);
    }
    Ok(packages)
}

fn virtual_package(name: &str, version: &str, build: &str) -> Result<GenericVirtualPackage> {
    Ok(GenericVirtualPackage {
        name: PackageName::try_from(name)
            .map_err(|e| conda(format!("virtual package {name}: {e}")))?,
        version: Version::from_str(version).map_err(|e| {
            conda(format!(
                "virtual package {name}: bad version {version:?}: {e}"
            ))
        })?,
        build_string: BuildString::new_unchecked(build),
    })
}

/// Where the archive behind a canonical URL is.
#[derive(Default)]
struct Sources {
    by_url: HashMap<Url, Source>,
}

#[derive(Clone)]
enum Source {
    Local(PathBuf),
    Remote(Url),
}

impl Sources {
    fn insert(&mut self, url: Url, source: Source) {
        self.by_url.entry(url).or_insert(source);
    }

    async fn archive_for(
        &self,
        record: &RepoDataRecord,
        fetcher: &mut Fetcher<'_>,
    ) -> Result<PathBuf> {
        let source = match self.by_url.get(&record.url) {
            Some(source) => source.clone(),
            None if matches!(record.url.scheme(), "http" | "https") => {
                Source::Remote(record.url.clone())
            }
            None => {
                return Err(conda(format!(
                    "cannot (re)install {}: its archive {} is in none of the channels or \
                     package files of this build",
                    label(&record.package_record),
                    record.url
                )))
            }
        };
        match source {
            Source::Local(path) => Ok(path),
            Source::Remote(url) => fetcher.download(&url, &record.package_record).await,
        }
    }
}

/// Local channel directories or remote channel base URLs, as given.
enum ChannelSpec {
    Local { dir: PathBuf, canonical: Url },
    Remote(Url),
}

fn channel_specs(channels: &[String]) -> Result<Vec<ChannelSpec>> {
    let mut used_names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        let trimmed = channel.trim();
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            let mut url = Url::parse(trimmed)
                .map_err(|e| conda(format!("bad channel URL {channel:?}: {e}")))?;
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            out.push(ChannelSpec::Remote(url));
            continue;
        }
        let dir = if trimmed.starts_with("file:") {
            Url::parse(trimmed)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| conda(format!("bad channel URL {channel:?}")))?
        } else if trimmed.contains("://") {
            return Err(conda(format!(
                "channel {channel:?}: only http(s):// and file:// URLs and local directories \
                 are supported"
            )));
        } else {
            PathBuf::from(trimmed)
        };
        if !dir.is_dir() {
            let hint = if !trimmed.contains('/') && !trimmed.starts_with("file:") {
                " (channel names are not supported: give a URL such as \
                 https://conda.anaconda.org/<name>, or a directory)"
            } else {
                ""
            };
            return Err(conda(format!(
                "conda channel directory {} does not exist{hint}",
                dir.display()
            )));
        }
        let base = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "channel".to_string());
        let count = used_names.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
        };
        let canonical = Url::parse("file:///")
            .and_then(|root| root.join(&format!("{}/", encode_segment(&name))))
            .map_err(|e| conda(format!("channel {channel:?}: {e}")))?;
        out.push(ChannelSpec::Local { dir, canonical });
    }
    Ok(out)
}

/// Everything but unreserved characters percent-encoded: the name stays one path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'=')
    .remove(b',')
    .remove(b'@');

fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

fn package_file_url(file_name: &str) -> Result<Url> {
    Url::parse("file:///")
        .and_then(|root| root.join(&encode_segment(file_name)))
        .map_err(|e| conda(format!("package file {file_name}: {e}")))
}

fn archive_identifier(file_name: &str, origin: &str) -> Result<DistArchiveIdentifier> {
    let is_conda = file_name.ends_with(".conda") || file_name.ends_with(".tar.bz2");
    DistArchiveIdentifier::try_from_filename(file_name)
        .filter(|_| is_conda)
        .ok_or_else(|| {
            conda(format!(
                "{origin}: {file_name:?} is not a conda package file name (.conda or .tar.bz2)"
            ))
        })
}

fn check_subdir(record: &PackageRecord, platform: Subdir, origin: &str) -> Result<()> {
    if record.subdir != platform.as_str() && record.subdir != "noarch" {
        return Err(conda(format!(
            "{origin} is built for {}, not {} or noarch",
            record.subdir,
            platform.as_str()
        )));
    }
    Ok(())
}

async fn solve(
    installed: &[PrefixRecord],
    req: &CondaRequest,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let mut specs = req
        .specs
        .iter()
        .map(|s| parse_spec(s))
        .collect::<Result<Vec<_>>>()?;
    let channels = channel_specs(&req.channels)?;
    if specs.is_empty() && req.package_files.is_empty() {
        return Ok(installed
            .iter()
            .map(|r| r.repodata_record.clone())
            .collect());
    }

    let mut tiers: Vec<Vec<RepoDataRecord>> = Vec::new();
    if !req.package_files.is_empty() {
        let mut tier = Vec::new();
        let mut names: HashMap<String, &Path> = HashMap::new();
        for path in &req.package_files {
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| conda(format!("bad package file name {}", path.display())))?;
            let identifier = archive_identifier(file_name, &path.display().to_string())?;
            if let Some(other) = names.insert(file_name.to_string(), path) {
                return Err(conda(format!(
                    "two package files are named {file_name}: {} and {}",
                    other.display(),
                    path.display()
                )));
            }
            if !path.is_file() {
                return Err(conda(format!(
                    "conda package file {} does not exist",
                    path.display()
                )));
            }
            let record = fetcher.archive_record(path).await?;
            check_subdir(
                &record,
                platform,
                &format!("package file {}", path.display()),
            )?;
            specs.push(MatchSpec {
                name: PackageNameMatcher::Exact(record.name.clone()),
                sha256: record.sha256,
                ..Default::default()
            });
            let url = package_file_url(file_name)?;
            sources.insert(url.clone(), Source::Local(path.clone()));
            tier.push(RepoDataRecord {
                package_record: record,
                identifier,
                url,
                channel: None,
            });
        }
        tiers.push(tier);
    }
    for channel in &channels {
        let tier = match channel {
            ChannelSpec::Local { dir, canonical } => {
                load_local_channel(dir, canonical, platform, fetcher, sources).await?
            }
            ChannelSpec::Remote(base) => {
                load_remote_channel(base, platform, fetcher, sources).await?
            }
        };
        tiers.push(tier);
    }

    // Keep every installed package (at its installed version when possible: they are favoured).
    let named: HashSet<PackageName> = specs
        .iter()
        .filter_map(|s| s.name.as_exact().cloned())
        .collect();
    for record in installed {
        let name = &record.repodata_record.package_record.name;
        if !named.contains(name) {
            specs.push(MatchSpec {
                name: PackageNameMatcher::Exact(name.clone()),
                ..Default::default()
            });
        }
    }

    let requested = if req.specs.is_empty() {
        req.package_files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        req.specs.join(", ")
    };
    let virtual_packages = virtual_packages(platform)?;
    let hint = missing_virtual_packages(installed, &virtual_packages);
    let task = SolverTask {
        locked_packages: installed.iter().map(|r| &r.repodata_record).collect(),
        virtual_packages,
        specs,
        channel_priority: ChannelPriority::Strict,
        ..SolverTask::from_iter(tiers.iter())
    };
    let solution = rattler_solve::resolvo::Solver
        .solve(task)
        .map_err(|e| match e {
            SolveError::Unsolvable(explanations) => conda(format!(
                "cannot install {requested}:\n{}{hint}",
                explanations.join("\n").trim_end()
            )),
            other => conda(format!("cannot install {requested}: {}", chain(&other))),
        })?;
    Ok(solution.records)
}

/// A hint for an unsolvable error: virtual packages (`__cuda`, …) that the image's packages
/// depend on but this build does not provide.
fn missing_virtual_packages(
    installed: &[PrefixRecord],
    provided: &[GenericVirtualPackage],
) -> String {
    let provided: HashSet<&str> = provided.iter().map(|v| v.name.as_normalized()).collect();
    let missing: BTreeSet<String> = installed
        .iter()
        .flat_map(|r| &r.repodata_record.package_record.depends)
        .filter_map(|spec| {
            let name: String = spec
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
                .collect();
            (name.starts_with("__") && !provided.contains(name.as_str())).then_some(name)
        })
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    let names: Vec<String> = missing.into_iter().collect();
    format!(
        "\n(the image's packages depend on {}, which this build does not provide; for __cuda \
         set CONDA_OVERRIDE_CUDA to the CUDA version the image is meant for)",
        names.join(", ")
    )
}

async fn load_local_channel(
    dir: &Path,
    canonical: &Url,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let mut records = Vec::new();
    let mut found_subdir = false;
    for subdir in [platform.as_str(), "noarch"] {
        let subdir_path = dir.join(subdir);
        if !subdir_path.is_dir() {
            continue;
        }
        found_subdir = true;
        let subdir_url = canonical
            .join(&format!("{subdir}/"))
            .map_err(|e| conda(format!("channel {}: {e}", dir.display())))?;
        let repodata_path = subdir_path.join("repodata.json");
        if repodata_path.is_file() {
            let bytes = std::fs::read(&repodata_path)
                .io_context(|| format!("read {}", repodata_path.display()))?;
            let repodata: RepoData = serde_json::from_slice(&bytes)
                .map_err(|e| conda(format!("bad {}: {e}", repodata_path.display())))?;
            for (identifier, package_record) in
                repodata.packages.into_iter().chain(repodata.conda_packages)
            {
                let file_name = identifier.to_file_name();
                let url = subdir_url
                    .join(&encode_segment(&file_name))
                    .map_err(|e| conda(format!("channel {}: {e}", dir.display())))?;
                sources.insert(url.clone(), Source::Local(subdir_path.join(&file_name)));
                records.push(RepoDataRecord {
                    package_record,
                    identifier,
                    url,
                    channel: channel_of_base(canonical),
                });
            }
        } else {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&subdir_path)
                .io_context(|| format!("read {}", subdir_path.display()))?
            {
                let entry = entry.io_context(|| format!("read {}", subdir_path.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if (name.ends_with(".conda") || name.ends_with(".tar.bz2"))
                    && entry.path().is_file()
                {
                    files.push(name);
                }
            }
            files.sort();
            for file_name in files {
                let path = subdir_path.join(&file_name);
                let origin = path.display().to_string();
                let identifier = archive_identifier(&file_name, &origin)?;
                let package_record = fetcher.archive_record(&path).await?;
                if package_record.subdir != subdir {
                    tracing::warn!(
                        file = %origin,
                        subdir = package_record.subdir,
                        "conda package in the wrong channel subdirectory; ignored"
                    );
                    continue;
                }
                let url = subdir_url
                    .join(&encode_segment(&file_name))
                    .map_err(|e| conda(format!("channel {}: {e}", dir.display())))?;
                sources.insert(url.clone(), Source::Local(path));
                records.push(RepoDataRecord {
                    package_record,
                    identifier,
                    url,
                    channel: channel_of_base(canonical),
                });
            }
        }
    }
    if !found_subdir {
        return Err(conda(format!(
            "{} is not a conda channel: it has neither {}/ nor noarch/",
            dir.display(),
            platform.as_str()
        )));
    }
    Ok(records)
}

fn channel_of_base(base: &Url) -> Option<String> {
    Some(base.as_str().trim_end_matches('/').to_string())
}

async fn load_remote_channel(
    base: &Url,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let channel = Channel::from_url(base.clone());
    let mut records = Vec::new();
    let mut found_subdir = false;
    for subdir in [platform.as_str(), "noarch"] {
        let subdir_url = base
            .join(&format!("{subdir}/"))
            .map_err(|e| conda(format!("channel {base}: {e}")))?;
        let Some(bytes) = fetcher.fetch_repodata(&subdir_url).await? else {
            continue;
        };
        found_subdir = true;
        let repodata: RepoData = serde_json::from_slice(&bytes)
            .map_err(|e| conda(format!("bad repodata.json at {subdir_url}: {e}")))?;
        for record in repodata.into_repo_data_records(&channel) {
            sources.insert(record.url.clone(), Source::Remote(record.url.clone()));
            records.push(record);
        }
    }
    if !found_subdir {
        return Err(conda(format!(
            "{base} is not a conda channel: no repodata.json for {} or noarch",
            platform.as_str()
        )));
    }
    Ok(records)
}

async fn resolve_locked(
    locked: &[LockedCondaPackage],
    installed: &[PrefixRecord],
    req: &CondaRequest,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let local_dirs: Vec<PathBuf> = channel_specs(&req.channels)?
        .into_iter()
        .filter_map(|c| match c {
            ChannelSpec::Local { dir, .. } => Some(dir),
            ChannelSpec::Remote(_) => None,
        })
        .collect();
    let mut names = HashSet::new();
    let mut desired = Vec::with_capacity(locked.len());
    for entry in locked {
        let what = format!(
            "locked conda package {}={}={}",
            entry.name, entry.version, entry.build
        );
        if !names.insert(entry.name.as_str()) {
            return Err(conda(format!(
                "{what}: the lock names {} twice",
                entry.name
            )));
        }
        if entry.subdir != platform.as_str() && entry.subdir != "noarch" {
            return Err(conda(format!(
                "{what} is for {}, not {}",
                entry.subdir,
                platform.as_str()
            )));
        }
        let same_installed = installed.iter().find(|r| {
            let p = &r.repodata_record.package_record;
            let sha = hex_sha256(p);
            p.name.as_normalized() == entry.name
                && p.version.to_string() == entry.version
                && p.build == entry.build
                && (sha.is_empty() || entry.sha256.is_empty() || sha == entry.sha256)
        });
        if let Some(record) = same_installed {
            desired.push(record.repodata_record.clone());
            continue;
        }

        let url = Url::parse(&entry.url)
            .map_err(|e| conda(format!("{what}: bad URL {:?}: {e}", entry.url)))?;
        let file_name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .map(percent_decode)
            .unwrap_or_default();
        let identifier = archive_identifier(&file_name, &what)?;
        if entry.sha256.is_empty() {
            return Err(conda(format!(
                "{what}: the lock has no sha256 and the image does not have the package"
            )));
        }

        let mut candidates: Vec<PathBuf> = req
            .package_files
            .iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()) == Some(file_name.as_str()))
            .cloned()
            .collect();
        candidates.extend(
            local_dirs
                .iter()
                .map(|dir| dir.join(&entry.subdir).join(&file_name)),
        );
        let mut found = None;
        for candidate in candidates {
            if !candidate.is_file() {
                continue;
            }
            let record = fetcher.archive_record(&candidate).await?;
            if hex_sha256(&record) == entry.sha256 {
                found = Some((candidate, record));
                break;
            }
        }
        if found.is_none() && matches!(url.scheme(), "http" | "https") {
            let mut expected = PackageRecord::new(
                PackageName::try_from(entry.name.as_str())
                    .map_err(|e| conda(format!("{what}: {e}")))?,
                Version::from_str(&entry.version).map_err(|e| conda(format!("{what}: {e}")))?,
                BuildString::new_unchecked(entry.build.as_str()),
            );
            expected.sha256 =
                rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&entry.sha256);
            let path = fetcher.download(&url, &expected).await?;
            let record = fetcher.archive_record(&path).await?;
            found = Some((path, record));
        }
        let Some((path, record)) = found else {
            return Err(conda(format!(
                "{what} ({}, sha256 {}) is in none of the channels or package files of this build",
                entry.url, entry.sha256
            )));
        };
        if hex_sha256(&record) != entry.sha256 {
            return Err(conda(format!(
                "{what}: {} has sha256 {}, the lock says {}",
                entry.url,
                hex_sha256(&record),
                entry.sha256
            )));
        }
        if record.name.as_normalized() != entry.name
            || record.version.to_string() != entry.version
            || record.build != entry.build
        {
            return Err(conda(format!(
                "{what}: the archive {} holds {}",
                path.display(),
                label(&record)
            )));
        }
        sources.insert(url.clone(), Source::Local(path));
        desired.push(RepoDataRecord {
            package_record: record,
            identifier,
            channel: channel_of(&url),
            url,
        });
    }
    Ok(desired)
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Archive records (hashed once per build) and HTTP downloads into the cache.
struct Fetcher<'a> {
    cache_dir: &'a Path,
    client: Option<reqwest::Client>,
    records: HashMap<PathBuf, PackageRecord>,
}

impl<'a> Fetcher<'a> {
    fn new(cache_dir: &'a Path) -> Self {
        Self {
            cache_dir,
            client: None,
            records: HashMap::new(),
        }
    }

    fn client(&mut self) -> Result<reqwest::Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("nbrt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| conda(format!("cannot set up HTTP: {}", chain(&e))))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// A package record read from the archive itself: `info/index.json` plus the archive's
    /// sha256, md5 and size.
    async fn archive_record(&mut self, path: &Path) -> Result<PackageRecord> {
        if let Some(record) = self.records.get(path) {
            return Ok(record.clone());
        }
        let owned = path.to_path_buf();
        let record = tokio::task::spawn_blocking(move || read_archive_record(&owned))
            .await
            .map_err(|e| conda(format!("reading {} failed: {e}", path.display())))??;
        self.records.insert(path.to_path_buf(), record.clone());
        Ok(record)
    }

    /// `repodata.json.zst` or `repodata.json` of a channel subdirectory; `None` when the
    /// channel has neither.
    async fn fetch_repodata(&mut self, subdir_url: &Url) -> Result<Option<Vec<u8>>> {
        let client = self.client()?;
        for (name, compressed) in [("repodata.json.zst", true), ("repodata.json", false)] {
            let url = subdir_url
                .join(name)
                .map_err(|e| conda(format!("{subdir_url}: {e}")))?;
            let response = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| conda(format!("cannot fetch {url}: {}", chain(&e))))?;
            if matches!(response.status().as_u16(), 404 | 403 | 410) {
                continue;
            }
            let response = response
                .error_for_status()
                .map_err(|e| conda(format!("cannot fetch {url}: {}", chain(&e))))?;
            let bytes = response
                .bytes()
                .await
                .map_err(|e| conda(format!("cannot fetch {url}: {}", chain(&e))))?;
            if compressed {
                let decoded = zstd_decode(&bytes)
                    .map_err(|e| conda(format!("cannot decompress {url}: {e}")))?;
                return Ok(Some(decoded));
            }
            return Ok(Some(bytes.to_vec()));
        }
        Ok(None)
    }

    /// Download a package archive into `<cache>/downloads/`, checking its sha256 (or md5)
    /// against `expected`. A verified earlier download is reused.
    async fn download(&mut self, url: &Url, expected: &PackageRecord) -> Result<PathBuf> {
        let file_name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .map(percent_decode)
            .filter(|n| is_safe_relative(Path::new(n)) && !n.contains('/'))
            .ok_or_else(|| conda(format!("bad package URL {url}")))?;
        let key = match (expected.sha256, expected.md5) {
            (Some(sha), _) => to_hex(sha),
            (None, Some(md5)) => format!("md5-{}", to_hex(md5)),
            (None, None) => format!(
                "url-{}",
                to_hex(
                    rattler_digest::compute_bytes_digest::<rattler_digest::Sha256>(url.as_str())
                )
            ),
        };
        let dir = self.cache_dir.join("downloads").join(key);
        let path = dir.join(&file_name);
        if path.is_file() {
            if let Ok(record) = self.archive_record(&path).await {
                if hashes_match(expected, &record) {
                    return Ok(path);
                }
            }
            self.records.remove(&path);
        }
        std::fs::create_dir_all(&dir).io_context(|| format!("create {}", dir.display()))?;
        let client = self.client()?;
        let mut response = client
            .get(url.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| conda(format!("cannot download {url}: {}", chain(&e))))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .io_context(|| format!("create a temporary file in {}", dir.display()))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| conda(format!("cannot download {url}: {}", chain(&e))))?
        {
            tmp.write_all(&chunk)
                .io_context(|| format!("write {}", path.display()))?;
        }
        tmp.persist(&path)
            .map_err(|e| e.error)
            .io_context(|| format!("write {}", path.display()))?;
        self.records.remove(&path);
        let record = self.archive_record(&path).await?;
        if !hashes_match(expected, &record) {
            let _ = std::fs::remove_file(&path);
            return Err(conda(format!(
                "{url}: the download has sha256 {}, expected {}",
                hex_sha256(&record),
                hex_sha256(expected)
            )));
        }
        Ok(path)
    }
}

fn hashes_match(expected: &PackageRecord, actual: &PackageRecord) -> bool {
    match (expected.sha256, expected.md5) {
        (Some(sha), _) => actual.sha256 == Some(sha),
        (None, Some(md5)) => actual.md5 == Some(md5),
        (None, None) => true,
    }
}

fn zstd_decode(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::decode_all(bytes)
}

fn read_archive_record(path: &Path) -> Result<PackageRecord> {
    let corrupt = |e: &dyn std::fmt::Display| {
        conda(format!(
            "corrupt conda package file {}: {e}",
            path.display()
        ))
    };
    let index: IndexJson = rattler_package_streaming::seek::read_package_file(path)
        .map_err(|e| corrupt(&chain(&e)))?;
    let mut file = std::fs::File::open(path).io_context(|| format!("open {}", path.display()))?;
    let mut sha256 = rattler_digest::Sha256::new();
    let mut md5 = rattler_digest::Md5::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .io_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha256.update(&buffer[..n]);
        md5.update(&buffer[..n]);
        size += n as u64;
    }
    let mut record = PackageRecord::from_index_json(
        index,
        Some(size),
        Some(sha256.finalize()),
        Some(md5.finalize()),
    )
    .map_err(|e| corrupt(&e))?;
    record.indexed_timestamp = None;
    record.run_exports = None;
    Ok(record)
}
