//! The delta between the installed and the desired packages, linked into a staging directory
//! that stands for the image root, and the files of removed or replaced packages as whiteouts.
//!
//! - **Paths stay below the prefix.** Every path of a package's `info/paths.json`, every
//!   `noarch: python` entry point command and every path of an installed record must be
//!   relative without `..`; a package with one that is not is refused, a record's is ignored.
//! - **Prefix placeholders** of text and binary files become the image's prefix (not the
//!   staging directory's); `noarch: python` packages go to the site-packages of the prefix's
//!   `python` package or, without one, of the image's Python version.
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
//! - **Whiteouts**: the files and `conda-meta` record of a removed or replaced package that no
//!   new file hides, as paths relative to the image root.
//! - File mtimes in the staging directory are whatever rattler writes; the layer writer clamps.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use rattler::install::{
    link_package, InstallDriver, InstallOptions, PythonInfo, Transaction, TransactionOperation,
};
use rattler_conda_types::package::{IndexJson, LinkJson, NoArchLinks, PackageFile, PathsJson};
use rattler_conda_types::prefix::Prefix;
use rattler_conda_types::prefix_record::PathsEntry;
use rattler_conda_types::{PackageRecord, PrefixRecord, RepoDataRecord, Subdir, Version};

use super::channels::channel_of;
use super::error::{chain, conda};
use super::fetch::{self, label};
use super::solve::locked_entry;
use super::LockedCondaPackage;
use crate::error::{BuildError, IoContext, Result};

/// `/opt/conda/` → `opt/conda`.
pub(super) fn normalize_prefix(prefix: &str) -> Result<String> {
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

/// Whether a path from a package or a record stays below the prefix.
pub(super) fn is_safe_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// What the step changes in the prefix.
pub(super) struct Plan {
    /// New and replacing packages, dependencies first.
    pub(super) to_link: Vec<RepoDataRecord>,
    /// Removed and replaced packages.
    pub(super) to_unlink: Vec<PrefixRecord>,
    /// The Python of the prefix after the step, for `noarch: python` packages.
    pub(super) python_info: Option<PythonInfo>,
    /// As [`super::CondaOutcome`] has them, sorted.
    pub(super) added: Vec<String>,
    pub(super) removed: Vec<String>,
    pub(super) changed: Vec<(String, String, String)>,
}

/// The transaction from `installed` to `desired`. `python` is the image's Python
/// `(major, minor)`, used when the prefix has no `python` package.
pub(super) fn plan(
    installed: &[PrefixRecord],
    desired: &[RepoDataRecord],
    python: Option<(u64, u64)>,
    platform: Subdir,
) -> Result<Plan> {
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

    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    let mut to_link = Vec::new();
    let mut to_unlink = Vec::new();
    for operation in transaction.operations {
        match operation {
            TransactionOperation::Install(new) => {
                added.push(label(&new.package_record));
                to_link.push(new);
            }
            TransactionOperation::Change { old, new }
            | TransactionOperation::Reinstall { old, new } => {
                let old_record = &old.repodata_record.package_record;
                changed.push((
                    old_record.name.as_normalized().to_string(),
                    version_build(old_record),
                    version_build(&new.package_record),
                ));
                to_unlink.push(old);
                to_link.push(new);
            }
            TransactionOperation::Remove(old) => {
                removed.push(label(&old.repodata_record.package_record));
                to_unlink.push(old);
            }
        }
    }
    added.sort();
    removed.sort();
    changed.sort();

    Ok(Plan {
        // Dependencies first, so that a package linked later wins a shared path.
        to_link: PackageRecord::sort_topologically(to_link),
        to_unlink,
        python_info,
        added,
        removed,
        changed,
    })
}

fn version_build(record: &PackageRecord) -> String {
    format!("{}={}", record.version, record.build)
}

/// Where packages are linked.
struct Target<'a> {
    /// The prefix in the staging directory.
    prefix: Prefix,
    /// The prefix in the image (`/opt/conda`): what prefix placeholders become.
    image_prefix: PathBuf,
    /// The prefix as the request spells it, for messages.
    requested: &'a str,
    platform: Subdir,
    python_info: Option<PythonInfo>,
}

/// Link `plan.to_link` (whose archives are `archives`, in the same order) into
/// `staging/<prefix>`, each with its `conda-meta` record; the lock entry of each linked
/// package, by name. `requested` is the prefix as the request spells it.
pub(super) async fn link_packages(
    plan: &Plan,
    archives: &[(PathBuf, PackageRecord)],
    staging: &Path,
    prefix: &str,
    requested: &str,
    platform: Subdir,
    cache_dir: &Path,
) -> Result<HashMap<String, LockedCondaPackage>> {
    let prefix_dir = staging.join(prefix);
    let mut written: HashMap<String, LockedCondaPackage> = HashMap::new();
    if plan.to_link.is_empty() {
        return Ok(written);
    }
    let target = Target {
        prefix: Prefix::create(&prefix_dir)
            .io_context(|| format!("create {}", prefix_dir.display()))?,
        image_prefix: PathBuf::from(format!("/{prefix}")),
        requested,
        platform,
        python_info: plan.python_info.clone(),
    };
    let cache = fetch::package_cache(cache_dir);
    let mut linked_paths: HashSet<PathBuf> = HashSet::new();
    for (record, (path, archive)) in plan.to_link.iter().zip(archives) {
        let name = record.package_record.name.as_normalized().to_string();
        let package_dir = fetch::extract(&cache, path, archive).await?;
        let paths = link_one(&target, &name, &package_dir, path).await?;
        linked_paths.extend(paths.iter().map(|p| p.relative_path.clone()));
        let locked = write_prefix_record(&prefix_dir, record, archive, paths)?;
        written.insert(name, locked);
    }
    remove_side_files(&prefix_dir, &linked_paths)?;
    Ok(written)
}

/// Link one extracted package (`name`, from the archive at `archive_path`) into the target.
async fn link_one(
    target: &Target<'_>,
    name: &str,
    package_dir: &Path,
    archive_path: &Path,
) -> Result<Vec<PathsEntry>> {
    let paths_json = PathsJson::from_package_directory_with_deprecated_fallback(package_dir)
        .map_err(|e| conda(format!("{name}: cannot read info/paths.json: {e}")))?;
    let index_json = IndexJson::from_package_directory(package_dir)
        .map_err(|e| conda(format!("{name}: cannot read info/index.json: {e}")))?;
    for entry in &paths_json.paths {
        if !is_safe_relative(&entry.relative_path) {
            return Err(conda(format!(
                "conda package {} has an unsafe path {:?}",
                archive_path.display(),
                entry.relative_path
            )));
        }
    }
    if index_json.noarch.is_python() {
        check_entry_points(name, package_dir)?;
    }
    if index_json.noarch.is_python() && target.python_info.is_none() {
        return Err(conda(format!(
            "{name} is a noarch: python package, but the image's Python version is \
             unknown (no python package in {} and none given)",
            target.requested
        )));
    }
    warn_link_scripts(name, package_dir, &paths_json);

    link_package(
        package_dir,
        &target.prefix,
        &InstallDriver::default(),
        InstallOptions {
            target_prefix: Some(target.image_prefix.clone()),
            paths_json: Some(paths_json),
            index_json: Some(index_json),
            allow_symbolic_links: Some(true),
            allow_hard_links: Some(false),
            allow_ref_links: Some(false),
            platform: Some(target.platform),
            python_info: target.python_info.clone(),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| conda(format!("cannot link {name}: {}", chain(&e))))
}

/// Write `conda-meta/<name>-<version>-<build>.json` of a linked package: the archive's record
/// (`archive`) at `record`'s URL, with the linked `paths`. Its lock entry.
fn write_prefix_record(
    prefix_dir: &Path,
    record: &RepoDataRecord,
    archive: &PackageRecord,
    paths: Vec<PathsEntry>,
) -> Result<LockedCondaPackage> {
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
    Ok(locked)
}

/// Side files of `Prefix::create`, unless a package really ships them.
fn remove_side_files(prefix_dir: &Path, linked_paths: &HashSet<PathBuf>) -> Result<()> {
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
    Ok(())
}

/// Paths relative to the image root of the files and records of `to_unlink` that nothing in
/// `staging/<prefix>` hides, sorted.
pub(super) fn whiteouts(to_unlink: &[PrefixRecord], staging: &Path, prefix: &str) -> Vec<String> {
    let prefix_dir = staging.join(prefix);
    let mut whiteouts = BTreeSet::new();
    for old in to_unlink {
        let name = old.repodata_record.package_record.name.as_normalized();
        let mut paths: BTreeSet<&Path> = old.files.iter().map(PathBuf::as_path).collect();
        paths.extend(
            old.paths_data
                .paths
                .iter()
                .map(|p| p.relative_path.as_path()),
        );
        let pre_unlink = link_script(name, "pre-unlink");
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
    whiteouts.into_iter().collect()
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

/// A package's link script of a kind (`pre-link`, `post-link`, `pre-unlink`), relative to
/// the prefix.
fn link_script(name: &str, kind: &str) -> String {
    format!("bin/.{name}-{kind}.sh")
}

fn warn_link_scripts(name: &str, package_dir: &Path, paths_json: &PathsJson) {
    let scripts: Vec<String> = ["pre-link", "post-link", "pre-unlink"]
        .into_iter()
        .map(|kind| link_script(name, kind))
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
