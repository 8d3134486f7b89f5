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
//!   `link` or `indexed_timestamp`, their `requested_specs` is empty, and they are written as
//!   canonical JSON (sorted keys), never depending on `serde_json::Value` map order.
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

use crate::channels::channel_of;
use crate::error::{chain, conda};
use crate::error::{CondaError, IoContext, Result};
use crate::fetch::{self, label};
use crate::solve::locked_entry;
use crate::LockedCondaPackage;

/// `/opt/conda/` → `opt/conda`.
pub(crate) fn normalize_prefix(prefix: &str) -> Result<String> {
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
pub(crate) fn is_safe_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// What the step changes in the prefix.
pub struct Plan {
    /// New and replacing packages, dependencies first.
    pub to_link: Vec<RepoDataRecord>,
    /// Removed and replaced packages.
    pub to_unlink: Vec<PrefixRecord>,
    /// The Python of the prefix after the step, for `noarch: python` packages.
    pub python_info: Option<PythonInfo>,
    /// As [`crate::CondaOutcome`] has them, sorted.
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<(String, String, String)>,
}

/// The transaction from `installed` to `desired`. `python` is the image's Python
/// `(major, minor)`, used when the prefix has no `python` package.
pub(crate) fn plan(
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

/// What happens to the side files `Prefix::create` writes (`conda-meta/history`,
/// `CACHEDIR.TAG`): removed from a staging directory (a layer must not hide the image's
/// history), kept in a live prefix (the command writes the history entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideFiles {
    Remove,
    Keep,
}

/// Link `plan.to_link` (whose archives are `archives`, in the same order) into
/// `staging/<prefix>`, each with its `conda-meta` record; the lock entry of each linked
/// package, by name. `requested` is the prefix as the request spells it; `extracted_dir`
/// is the package cache the archives are extracted into.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn link_packages(
    plan: &Plan,
    archives: &[(PathBuf, PackageRecord)],
    staging: &Path,
    prefix: &str,
    requested: &str,
    platform: Subdir,
    extracted_dir: &Path,
    side_files: SideFiles,
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
    let cache = fetch::package_cache(extracted_dir);
    let mut linked_paths: HashSet<PathBuf> = HashSet::new();
    for (record, (path, archive)) in plan.to_link.iter().zip(archives) {
        let name = record.package_record.name.as_normalized().to_string();
        let package_dir = fetch::extract(&cache, path, archive).await?;
        let paths = link_one(&target, &name, &package_dir, path).await?;
        linked_paths.extend(paths.iter().map(|p| p.relative_path.clone()));
        let locked = write_prefix_record(&prefix_dir, record, archive, paths)?;
        written.insert(name, locked);
    }
    if side_files == SideFiles::Remove {
        remove_side_files(&prefix_dir, &linked_paths)?;
    }
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
    let mut bytes = crate::json::to_canonical_vec(&prefix_record, "conda-meta record")?;
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
                    return Err(CondaError::Io {
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
pub(crate) fn whiteouts(to_unlink: &[PrefixRecord], staging: &Path, prefix: &str) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use rattler_conda_types::package::{BuildString, DistArchiveIdentifier};
    use rattler_conda_types::PackageName;
    use sha2::Digest as _;
    use url::Url;

    use super::*;

    const PLACEHOLDER: &str = nbrt_testkit::conda_pkg::PLACEHOLDER;

    fn error(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    fn record(name: &str, version: &str, depends: &[&str]) -> RepoDataRecord {
        let mut package_record = PackageRecord::new(
            PackageName::try_from(name).unwrap(),
            Version::from_str(version).unwrap(),
            BuildString::new_unchecked("h0_0"),
        );
        package_record.subdir = "linux-64".into();
        package_record.depends = depends.iter().map(|d| d.to_string()).collect();
        let file_name = format!("{name}-{version}-h0_0.tar.bz2");
        RepoDataRecord {
            package_record,
            identifier: DistArchiveIdentifier::try_from_filename(&file_name).unwrap(),
            url: Url::parse(&format!("file:///chan/linux-64/{file_name}")).unwrap(),
            channel: Some("file:///chan".into()),
        }
    }

    fn installed(record: RepoDataRecord) -> PrefixRecord {
        PrefixRecord::from_repodata_record(record, Vec::new())
    }

    /// An extracted package directory: `info/index.json`, `info/paths.json` (a file with a
    /// mode, `text` or `binary`, has the placeholder), the files, and `info/link.json`.
    fn package_dir(
        root: &Path,
        index: serde_json::Value,
        files: &[(&str, &[u8], Option<&str>)],
        link_json: Option<serde_json::Value>,
    ) -> PathBuf {
        let dir = root.join(format!(
            "{}-{}-{}",
            index["name"].as_str().unwrap(),
            index["version"].as_str().unwrap(),
            index["build"].as_str().unwrap()
        ));
        std::fs::create_dir_all(dir.join("info")).unwrap();
        let mut paths = Vec::new();
        for (path, data, mode) in files {
            let target = dir.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, data).unwrap();
            let mut entry = serde_json::json!({
                "_path": path,
                "path_type": "hardlink",
                "sha256": hex::encode(sha2::Sha256::digest(data)),
                "size_in_bytes": data.len(),
            });
            if let Some(mode) = mode {
                entry["prefix_placeholder"] = PLACEHOLDER.into();
                entry["file_mode"] = (*mode).into();
            }
            paths.push(entry);
        }
        let paths_json = serde_json::json!({"paths_version": 1, "paths": paths});
        std::fs::write(dir.join("info/index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("info/paths.json"), paths_json.to_string()).unwrap();
        if let Some(link) = link_json {
            std::fs::write(dir.join("info/link.json"), link.to_string()).unwrap();
        }
        dir
    }

    fn index(name: &str, noarch_python: bool) -> serde_json::Value {
        let mut index = serde_json::json!({
            "name": name, "version": "1.0", "build": "h0_0", "build_number": 0,
            "depends": [], "subdir": "linux-64",
        });
        if noarch_python {
            index["noarch"] = "python".into();
            index["subdir"] = "noarch".into();
        }
        index
    }

    fn target(staging: &Path, python: Option<&str>) -> Target<'static> {
        Target {
            prefix: Prefix::create(staging.join("opt/conda")).unwrap(),
            image_prefix: PathBuf::from("/opt/conda"),
            requested: "/opt/conda",
            platform: Subdir::Linux64,
            python_info: python.map(|v| {
                PythonInfo::from_version(&Version::from_str(v).unwrap(), None, Subdir::Linux64)
                    .unwrap()
            }),
        }
    }

    fn relative_paths(paths: &[PathsEntry]) -> Vec<String> {
        let mut out: Vec<String> = paths
            .iter()
            .map(|p| p.relative_path.display().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_prefix_must_be_an_absolute_path_below_the_root() {
        assert_eq!(normalize_prefix("/opt/conda/").unwrap(), "opt/conda");
        assert_eq!(normalize_prefix("/conda").unwrap(), "conda");
        for bad in [
            "opt/conda",
            "/",
            "",
            "/opt/../etc",
            "/opt/con\\da",
            "/opt/con\nda",
        ] {
            assert_eq!(
                error(normalize_prefix(bad)),
                format!(
                    "conda prefix {bad:?} must be an absolute path below / without \
                     '..', e.g. /opt/conda"
                )
            );
        }
    }

    #[test]
    fn package_paths_must_stay_below_the_prefix() {
        for good in ["lib/a.so", "bin", "share/doc/a b.txt"] {
            assert!(is_safe_relative(Path::new(good)), "{good}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "/etc/passwd",
            "./a",
            "share/x/../y",
            "a/../../b",
        ] {
            assert!(!is_safe_relative(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn the_plan_lists_the_delta_and_links_dependencies_first() {
        let image = [
            installed(record("alpha", "1.0", &[])),
            installed(record("gamma", "1.0", &[])),
            installed(record("delta", "1.0", &[])),
        ];
        let desired = [
            record("alpha", "2.0", &["beta"]),
            record("beta", "1.0", &[]),
            image[2].repodata_record.clone(),
        ];
        let plan = plan(&image, &desired, None, Subdir::Linux64).unwrap();
        assert_eq!(plan.added, ["beta=1.0=h0_0"]);
        assert_eq!(
            plan.changed,
            [(
                "alpha".to_string(),
                "1.0=h0_0".to_string(),
                "2.0=h0_0".to_string()
            )]
        );
        assert_eq!(plan.removed, ["gamma=1.0=h0_0"]);
        let to_link: Vec<String> = plan
            .to_link
            .iter()
            .map(|r| label(&r.package_record))
            .collect();
        assert_eq!(to_link, ["beta=1.0=h0_0", "alpha=2.0=h0_0"]);
        let mut to_unlink: Vec<String> = plan
            .to_unlink
            .iter()
            .map(|r| label(&r.repodata_record.package_record))
            .collect();
        to_unlink.sort();
        assert_eq!(to_unlink, ["alpha=1.0=h0_0", "gamma=1.0=h0_0"]);
        assert!(plan.python_info.is_none());

        // Without a python package, the image's Python version is used.
        let plan = super::plan(&image, &desired, Some((3, 11)), Subdir::Linux64).unwrap();
        let python = plan.python_info.unwrap();
        assert_eq!(python.short_version, (3, 11));
        assert_eq!(
            python.site_packages_path,
            Path::new("lib/python3.11/site-packages")
        );
    }

    #[tokio::test]
    async fn placeholders_become_the_image_prefix_in_text_and_binary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let text = format!("#!{PLACEHOLDER}/bin/sh\necho {PLACEHOLDER}/share\n");
        let binary = format!("\x7fELF\0{PLACEHOLDER}/lib\0end");
        let plain = format!("{PLACEHOLDER} is left alone here\n");
        let dir = package_dir(
            tmp.path(),
            index("alpha", false),
            &[
                ("bin/tool", text.as_bytes(), Some("text")),
                ("lib/libx.so", binary.as_bytes(), Some("binary")),
                ("share/doc.txt", plain.as_bytes(), None),
            ],
            None,
        );
        let staging = tmp.path().join("staging");
        let paths = link_one(
            &target(&staging, None),
            "alpha",
            &dir,
            Path::new("alpha.tar.bz2"),
        )
        .await
        .unwrap();
        assert_eq!(
            relative_paths(&paths),
            ["bin/tool", "lib/libx.so", "share/doc.txt"]
        );
        let prefix = staging.join("opt/conda");
        assert_eq!(
            std::fs::read_to_string(prefix.join("bin/tool")).unwrap(),
            "#!/opt/conda/bin/sh\necho /opt/conda/share\n"
        );
        // Binary: the C string is rewritten in place and padded with NULs to its length.
        let mut expected = b"\x7fELF\0/opt/conda/lib".to_vec();
        expected.extend([0u8; PLACEHOLDER.len() - "/opt/conda".len()]);
        expected.extend(b"\0end");
        assert_eq!(std::fs::read(prefix.join("lib/libx.so")).unwrap(), expected);
        assert_eq!(
            std::fs::read_to_string(prefix.join("share/doc.txt")).unwrap(),
            plain
        );
    }

    #[tokio::test]
    async fn noarch_python_goes_to_site_packages_with_entry_points() {
        let tmp = tempfile::tempdir().unwrap();
        let link_json = serde_json::json!({
            "noarch": {"type": "python", "entry_points": ["foo-cli = foo.cli:main"]},
            "package_metadata_version": 1,
        });
        let dir = package_dir(
            tmp.path(),
            index("foo", true),
            &[("site-packages/foo/__init__.py", b"x = 1\n", None)],
            Some(link_json),
        );
        let staging = tmp.path().join("staging");
        let paths = link_one(
            &target(&staging, Some("3.11")),
            "foo",
            &dir,
            Path::new("foo.tar.bz2"),
        )
        .await
        .unwrap();
        assert_eq!(
            relative_paths(&paths),
            [
                "bin/foo-cli",
                "lib/python3.11/site-packages/foo/__init__.py"
            ]
        );
        let prefix = staging.join("opt/conda");
        assert_eq!(
            std::fs::read_to_string(prefix.join("lib/python3.11/site-packages/foo/__init__.py"))
                .unwrap(),
            "x = 1\n"
        );
        assert_eq!(
            std::fs::read_to_string(prefix.join("bin/foo-cli")).unwrap(),
            "#!/opt/conda/bin/python3.11\n\
             # -*- coding: utf-8 -*-\n\
             import re\n\
             import sys\n\
             \n\
             from foo.cli import main\n\
             \n\
             if __name__ == '__main__':\n\
             \tsys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n\
             \tsys.exit(main())\n"
        );
        assert!(!prefix.join("site-packages").exists());

        // Without a Python version there is nowhere to put it.
        let other = tmp.path().join("other");
        assert_eq!(
            error(link_one(&target(&other, None), "foo", &dir, Path::new("foo.tar.bz2")).await),
            "foo is a noarch: python package, but the image's Python version is \
             unknown (no python package in /opt/conda and none given)"
        );
    }

    #[tokio::test]
    async fn paths_and_entry_points_that_escape_the_prefix_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join("staging");
        let escape = package_dir(
            tmp.path(),
            index("evil", false),
            &[("lib/ok", b"ok", None)],
            None,
        );
        // paths.json names a path above the prefix.
        let paths_json = serde_json::json!({
            "paths_version": 1,
            "paths": [{"_path": "../../../etc/evil", "path_type": "hardlink"}],
        });
        std::fs::write(escape.join("info/paths.json"), paths_json.to_string()).unwrap();
        assert_eq!(
            error(
                link_one(
                    &target(&staging, None),
                    "evil",
                    &escape,
                    Path::new("/x/evil.tar.bz2")
                )
                .await
            ),
            "conda package /x/evil.tar.bz2 has an unsafe path \"../../../etc/evil\""
        );
        for (i, command) in ["..", ".", "../../evil", "sub/cmd", "/bin/evil"]
            .into_iter()
            .enumerate()
        {
            let link_json = serde_json::json!({
                "noarch": {"type": "python", "entry_points": [format!("{command} = foo:main")]},
                "package_metadata_version": 1,
            });
            let dir = package_dir(
                &tmp.path().join(format!("command-{i}")),
                index("foo", true),
                &[("site-packages/foo/__init__.py", b"", None)],
                Some(link_json),
            );
            let message = error(
                link_one(
                    &target(&staging, Some("3.11")),
                    "foo",
                    &dir,
                    Path::new("foo.tar.bz2"),
                )
                .await,
            );
            // rattler (0.58) already refuses these when it reads link.json, before
            // check_entry_points' own test of the command; either way the package is refused.
            let prefix = "foo: cannot read info/link.json: entry point command must not ";
            assert!(message.starts_with(prefix), "{command}: {message}");
        }
        // A plain command name passes, and so does a package without link.json.
        let good = package_dir(
            &tmp.path().join("good"),
            index("foo", true),
            &[],
            Some(serde_json::json!({
                "noarch": {"type": "python", "entry_points": ["foo-cli = foo:main"]},
                "package_metadata_version": 1,
            })),
        );
        check_entry_points("foo", &good).unwrap();
        std::fs::remove_file(good.join("info/link.json")).unwrap();
        check_entry_points("foo", &good).unwrap();
        assert!(!tmp.path().join("etc").exists());
        assert!(!staging.join("opt/conda/bin").exists());
        assert!(!staging.join("opt/conda/lib").exists());
    }

    #[test]
    fn the_conda_meta_record_is_canonical_json_of_the_archive() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix_dir = tmp.path().join("opt/conda");
        let archive: PackageRecord = serde_json::from_value(serde_json::json!({
            "name": "alpha", "version": "1.0", "build": "h0_0", "build_number": 0,
            "depends": ["beta >=1"], "subdir": "linux-64", "license": "MIT",
            "timestamp": 1_700_000_000_000u64, "indexed_timestamp": 1_700_000_100_000u64,
            "run_exports": {"weak": ["alpha >=1.0"]},
            "sha256": "11".repeat(32), "md5": "22".repeat(16), "size": 1234,
        }))
        .unwrap();
        let paths: Vec<PathsEntry> = serde_json::from_value(serde_json::json!([{
            "_path": "bin/tool", "path_type": "hardlink", "file_mode": "text",
            "prefix_placeholder": PLACEHOLDER, "sha256": "33".repeat(32),
            "sha256_in_prefix": "44".repeat(32), "size_in_bytes": 20,
        }]))
        .unwrap();
        // The channel's record says otherwise about everything but the URL and file name:
        // the archive's record is what is written.
        let locked = write_prefix_record(
            &prefix_dir,
            &record("alpha", "1.0", &["something else"]),
            &archive,
            paths,
        )
        .unwrap();
        assert_eq!(
            locked,
            LockedCondaPackage {
                name: "alpha".into(),
                version: "1.0".into(),
                build: "h0_0".into(),
                subdir: "linux-64".into(),
                url: "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2".into(),
                sha256: "11".repeat(32),
                md5: Some("22".repeat(16)),
            }
        );
        let meta = prefix_dir.join("conda-meta/alpha-1.0-h0_0.json");
        let expected = format!(
            concat!(
                r#"{{"build":"h0_0","build_number":0,"channel":"file:///chan","#,
                r#""depends":["beta >=1"],"files":["bin/tool"],"fn":"alpha-1.0-h0_0.tar.bz2","#,
                r#""license":"MIT","md5":"{md5}","name":"alpha","#,
                r#""paths_data":{{"paths":[{{"_path":"bin/tool","file_mode":"text","#,
                r#""path_type":"hardlink","prefix_placeholder":"{placeholder}","#,
                r#""sha256":"{sha_file}","sha256_in_prefix":"{sha_prefix}","#,
                r#""size_in_bytes":20}}],"paths_version":1}},"requested_specs":[],"#,
                r#""sha256":"{sha}","size":1234,"subdir":"linux-64","#,
                r#""timestamp":1700000000000,"#,
                r#""url":"file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2","version":"1.0"}}"#,
                "\n"
            ),
            md5 = "22".repeat(16),
            placeholder = PLACEHOLDER,
            sha_file = "33".repeat(32),
            sha_prefix = "44".repeat(32),
            sha = "11".repeat(32),
        );
        assert_eq!(std::fs::read_to_string(&meta).unwrap(), expected);
        let mode = std::fs::metadata(&meta).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn side_files_of_prefix_create_are_removed_unless_a_package_ships_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("opt/conda");
        Prefix::create(&dir).unwrap();
        assert!(dir.join("conda-meta/history").is_file());
        assert!(dir.join("CACHEDIR.TAG").is_file());
        let shipped: HashSet<PathBuf> = [PathBuf::from("CACHEDIR.TAG")].into();
        remove_side_files(&dir, &shipped).unwrap();
        assert!(!dir.join("conda-meta/history").exists());
        assert!(dir.join("CACHEDIR.TAG").is_file());
        remove_side_files(&dir, &HashSet::new()).unwrap();
        assert!(!dir.join("CACHEDIR.TAG").exists());
        // Already gone is fine.
        remove_side_files(&dir, &HashSet::new()).unwrap();
    }

    #[tokio::test]
    async fn packages_are_linked_in_order_and_the_later_one_wins_a_shared_path() {
        use nbrt_testkit::conda_pkg::Pkg;

        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let built = tmp.path().join("built");
        let alpha = Pkg::new("alpha", "1.0").file("share/shared.txt", "alpha\n");
        let beta = Pkg::new("beta", "1.0")
            .depends("alpha")
            .file("share/shared.txt", "beta\n");
        let mut fetcher = fetch::Fetcher::new(&cache);
        let mut desired = Vec::new();
        let mut archives = Vec::new();
        for pkg in [&beta, &alpha] {
            let path = pkg.tar_bz2(&built);
            let archive = fetcher.archive_record(&path).await.unwrap();
            let mut channel_record = record(&pkg.name, "1.0", &[]);
            channel_record.package_record = archive.clone();
            desired.push(channel_record);
            archives.push((path, archive));
        }
        let plan = plan(&[], &desired, None, Subdir::Linux64).unwrap();
        let order: Vec<String> = plan
            .to_link
            .iter()
            .map(|r| r.package_record.name.as_normalized().to_string())
            .collect();
        assert_eq!(order, ["alpha", "beta"]);
        // Archives in the plan's order.
        archives.reverse();
        let staging = tmp.path().join("staging");
        let written = link_packages(
            &plan,
            &archives,
            &staging,
            "opt/conda",
            "/opt/conda",
            Subdir::Linux64,
            &cache.join("pkgs"),
            SideFiles::Remove,
        )
        .await
        .unwrap();
        let prefix = staging.join("opt/conda");
        assert_eq!(
            std::fs::read_to_string(prefix.join("share/shared.txt")).unwrap(),
            "beta\n"
        );
        let mut names: Vec<&String> = written.keys().collect();
        names.sort();
        assert_eq!(names, ["alpha", "beta"]);
        assert_eq!(written["beta"], locked_entry(&desired[0]));
        let mut meta: Vec<String> = std::fs::read_dir(prefix.join("conda-meta"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        meta.sort();
        assert_eq!(meta, ["alpha-1.0-h0_0.json", "beta-1.0-h0_0.json"]);
        assert!(!prefix.join("CACHEDIR.TAG").exists());
        assert!(cache.join("pkgs").read_dir().unwrap().next().is_some());

        // Nothing to link: nothing is created.
        let empty = super::plan(&[], &[], None, Subdir::Linux64).unwrap();
        let other = tmp.path().join("other");
        let written = link_packages(
            &empty,
            &[],
            &other,
            "opt/conda",
            "/opt/conda",
            Subdir::Linux64,
            &cache.join("pkgs"),
            SideFiles::Remove,
        )
        .await
        .unwrap();
        assert!(written.is_empty());
        assert!(!other.exists());
    }

    #[test]
    fn whiteouts_name_the_old_files_that_nothing_new_hides() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path();
        std::fs::create_dir_all(staging.join("opt/conda/lib")).unwrap();
        std::fs::write(staging.join("opt/conda/lib/kept.so"), "new").unwrap();
        std::os::unix::fs::symlink("nowhere", staging.join("opt/conda/lib/link")).unwrap();
        let mut old = installed(record("alpha", "1.0", &[]));
        old.files = [
            "lib/old.so",
            "lib/kept.so",
            "lib/link",
            "../escape",
            "/etc/passwd",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        old.paths_data.paths = serde_json::from_value(serde_json::json!([
            {"_path": "share/doc.txt", "path_type": "hardlink"},
            {"_path": "lib/old.so", "path_type": "hardlink"},
        ]))
        .unwrap();
        let removed = installed(record("gamma", "2.0", &[]));
        assert_eq!(
            whiteouts(&[old, removed], staging, "opt/conda"),
            [
                "opt/conda/conda-meta/alpha-1.0-h0_0.json",
                "opt/conda/conda-meta/gamma-2.0-h0_0.json",
                "opt/conda/lib/old.so",
                "opt/conda/share/doc.txt",
            ]
        );
        assert!(whiteouts(&[], staging, "opt/conda").is_empty());
    }
}
