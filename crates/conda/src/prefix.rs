//! A conda prefix on this machine, changed in place (what the `conda` command does, where the
//! builder links into a staging directory instead): its installed records, its pins, its
//! Python, and a transaction that removes the files of unlinked packages, links the new ones
//! and appends to `conda-meta/history`.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use rattler_conda_types::{PrefixRecord, RepoDataRecord};

use crate::error::{conda, IoContext, Result};
use crate::fetch::{self, Fetcher, Sources};
use crate::link::{self, Plan};
use crate::solve::{self, SolveOptions};
use crate::CondaRequest;

/// Write a file through a temporary name in its directory, renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| conda(format!("no parent directory for {}", path.display())))?;
    std::fs::create_dir_all(parent).io_context(|| format!("create {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent)
        .io_context(|| format!("create a temporary file in {}", parent.display()))?;
    tmp.write_all(bytes)
        .io_context(|| format!("write {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o644);
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .io_context(|| format!("write {}", path.display()))?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .io_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Hold the prefix's transaction lock (`conda-meta/.nbrt-conda.lock`) until the returned
/// file is dropped: two commands changing one environment wait for each other instead of
/// reading each other's half-written state.
pub fn lock(prefix: &Path) -> Result<std::fs::File> {
    let path = prefix.join("conda-meta/.nbrt-conda.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .io_context(|| format!("open {}", path.display()))?;
    file.lock()
        .io_context(|| format!("lock {}", path.display()))?;
    Ok(file)
}

/// Whether `dir` is a conda environment (has `conda-meta`).
pub fn is_prefix(dir: &Path) -> bool {
    dir.join("conda-meta").is_dir()
}

/// The `conda-meta/*.json` documents of a prefix, sorted by file name.
pub fn meta_documents(prefix: &Path) -> Result<Vec<Vec<u8>>> {
    let dir = prefix.join("conda-meta");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).io_context(|| format!("read {}", dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.io_context(|| format!("read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    names
        .iter()
        .map(|n| std::fs::read(dir.join(n)).io_context(|| format!("read {}/{n}", dir.display())))
        .collect()
}

/// The installed records of a prefix.
pub fn installed(prefix: &Path) -> Result<Vec<PrefixRecord>> {
    solve::parse_installed(&meta_documents(prefix)?)
}

/// `conda-meta/pinned`: one match spec a line, `#` comments.
pub fn pinned(prefix: &Path) -> Vec<String> {
    std::fs::read_to_string(prefix.join("conda-meta/pinned"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The Python `(major, minor)` of a prefix: its `python` record, else its
/// `lib/pythonX.Y` directory.
pub fn python_version(prefix: &Path, installed: &[PrefixRecord]) -> Option<(u64, u64)> {
    let from_record = installed
        .iter()
        .find(|r| r.repodata_record.package_record.name.as_normalized() == "python")
        .and_then(|r| {
            let v = r.repodata_record.package_record.version.to_string();
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        });
    if from_record.is_some() {
        return from_record;
    }
    let mut found: Vec<(u64, u64)> = std::fs::read_dir(prefix.join("lib"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (major, minor) = name.strip_prefix("python")?.split_once('.')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect();
    found.sort();
    found.pop()
}

/// What a command asks of a prefix.
#[derive(Debug, Clone)]
pub enum Action {
    /// `install`, `create`, `update`: specs and package files solved with the installed
    /// packages favoured (those in `options.unlock` not).
    Install {
        request: CondaRequest,
        options: SolveOptions,
    },
    /// `remove`: these packages and everything installed that depends on them.
    Remove { names: Vec<String> },
}

/// A transaction planned for a prefix, not yet carried out.
pub struct Transaction {
    pub prefix: PathBuf,
    pub installed: Vec<PrefixRecord>,
    pub desired: Vec<RepoDataRecord>,
    pub plan: Plan,
    sources: Sources,
    platform: rattler_conda_types::Subdir,
}

impl Transaction {
    pub fn is_empty(&self) -> bool {
        self.plan.to_link.is_empty() && self.plan.to_unlink.is_empty()
    }
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Names of the installed packages that `names` and everything depending on them (through
/// the installed records' `depends`) make: what `conda remove` takes out.
pub fn removal_closure(installed: &[PrefixRecord], names: &[String]) -> BTreeSet<String> {
    let mut gone: BTreeSet<String> = names.iter().map(|n| lower(n.trim())).collect();
    loop {
        let before = gone.len();
        for record in installed {
            let p = &record.repodata_record.package_record;
            let name = p.name.as_normalized().to_string();
            if gone.contains(&name) {
                continue;
            }
            let depends_on_gone = p.depends.iter().any(|d| {
                let dep: String = d
                    .trim()
                    .chars()
                    .take_while(|c| !c.is_whitespace() && !"=<>!~[".contains(*c))
                    .collect();
                gone.contains(&lower(&dep))
            });
            if depends_on_gone {
                gone.insert(name);
            }
        }
        if gone.len() == before {
            return gone;
        }
    }
}

/// Solve (or, for a removal, compute) what the prefix holds after `action`.
pub async fn plan(
    prefix: &Path,
    action: &Action,
    platform: &str,
    fetcher: &mut Fetcher<'_>,
) -> Result<Transaction> {
    let platform = crate::channels::parse_platform(platform)?;
    let installed = installed(prefix)?;
    let python = python_version(prefix, &installed);
    let mut sources = Sources::default();
    let desired: Vec<RepoDataRecord> = match action {
        Action::Install { request, options } => {
            solve::solve_with(
                &installed,
                request,
                options,
                platform,
                fetcher,
                &mut sources,
            )
            .await?
        }
        Action::Remove { names } => {
            let missing: Vec<String> = names
                .iter()
                .filter(|n| {
                    !installed.iter().any(|r| {
                        r.repodata_record.package_record.name.as_normalized() == lower(n.trim())
                    })
                })
                .cloned()
                .collect();
            if !missing.is_empty() {
                return Err(conda(format!(
                    "PackagesNotFoundError: The following packages are missing from the target \
                     environment:\n{}",
                    missing
                        .iter()
                        .map(|p| format!("  - {p}\n"))
                        .collect::<String>()
                )));
            }
            let gone = removal_closure(&installed, names);
            installed
                .iter()
                .filter(|r| !gone.contains(r.repodata_record.package_record.name.as_normalized()))
                .map(|r| r.repodata_record.clone())
                .collect()
        }
    };
    let plan = link::plan(&installed, &desired, python, platform)?;
    Ok(Transaction {
        prefix: prefix.to_path_buf(),
        installed,
        desired,
        plan,
        sources,
        platform,
    })
}

/// Whether a path from a record stays below the prefix.
fn is_safe_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Remove an unlinked package's files and record from the prefix (and the bytecode Python
/// wrote for its `.py` files), then the directories that became empty.
fn unlink(prefix: &Path, record: &PrefixRecord) -> Result<()> {
    let mut paths: BTreeSet<&Path> = record.files.iter().map(PathBuf::as_path).collect();
    paths.extend(
        record
            .paths_data
            .paths
            .iter()
            .map(|p| p.relative_path.as_path()),
    );
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for path in paths {
        if !is_safe_relative(path) {
            tracing::warn!(path = %path.display(), "ignoring an unsafe path in a conda-meta record");
            continue;
        }
        let full = prefix.join(path);
        remove_file_if_there(&full)?;
        if path.extension().is_some_and(|e| e == "py") {
            if let (Some(parent), Some(stem)) = (full.parent(), full.file_stem()) {
                let cache = parent.join("__pycache__");
                if let Ok(entries) = std::fs::read_dir(&cache) {
                    let stem = format!("{}.", stem.to_string_lossy());
                    for e in entries.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with(&stem) && name.ends_with(".pyc") {
                            remove_file_if_there(&e.path())?;
                        }
                    }
                    dirs.insert(cache);
                }
            }
        }
        let mut parent = full.parent();
        while let Some(p) = parent {
            if p == prefix {
                break;
            }
            dirs.insert(p.to_path_buf());
            parent = p.parent();
        }
    }
    remove_file_if_there(&prefix.join("conda-meta").join(record.file_name()))?;
    // Deepest first; a directory that is not empty stays.
    let mut dirs: Vec<PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        let _ = std::fs::remove_dir(&d);
    }
    Ok(())
}

fn remove_file_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).io_context(|| format!("remove {}", path.display())),
    }
}

/// What a carried-out transaction did, as `name-version-build` dists with their channel.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub linked: Vec<RepoDataRecord>,
    pub unlinked: Vec<PrefixRecord>,
}

/// Carry out a planned transaction: fetch and check the archives, remove what goes, link
/// what comes. `pkgs_dir` holds downloads and extracted packages.
pub async fn execute(tx: &Transaction, fetcher: &mut Fetcher<'_>, pkgs_dir: &Path) -> Result<Done> {
    let archives = fetch::archives(&tx.plan.to_link, &tx.sources, fetcher).await?;
    for old in &tx.plan.to_unlink {
        unlink(&tx.prefix, old)?;
    }
    let prefix_text = tx
        .prefix
        .to_str()
        .ok_or_else(|| conda(format!("prefix {} is not UTF-8", tx.prefix.display())))?;
    let relative = link::normalize_prefix(prefix_text)?;
    let had_tag = tx.prefix.join("CACHEDIR.TAG").exists();
    let had_history = tx.prefix.join("conda-meta/history").exists();
    link::link_packages(
        &tx.plan,
        &archives,
        Path::new("/"),
        &relative,
        prefix_text,
        tx.platform,
        pkgs_dir,
        link::SideFiles::Keep,
    )
    .await?;
    if !had_tag {
        let _ = std::fs::remove_file(tx.prefix.join("CACHEDIR.TAG"));
    }
    if !had_history {
        // Prefix::create made an empty one; the caller writes the entry.
        let _ = std::fs::remove_file(tx.prefix.join("conda-meta/history"));
    }
    let _ = &tx.installed;
    let _ = &tx.desired;
    Ok(Done {
        linked: tx.plan.to_link.clone(),
        unlinked: tx.plan.to_unlink.clone(),
    })
}

/// Names of the packages a transaction links or unlinks.
pub fn touched_names(tx: &Transaction) -> HashSet<String> {
    tx.plan
        .to_link
        .iter()
        .map(|r| r.package_record.name.as_normalized().to_string())
        .chain(tx.plan.to_unlink.iter().map(|r| {
            r.repodata_record
                .package_record
                .name
                .as_normalized()
                .to_string()
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rattler_conda_types::package::{BuildString, DistArchiveIdentifier};
    use rattler_conda_types::{PackageName, PackageRecord, Version};
    use std::str::FromStr;

    fn record(name: &str, depends: &[&str]) -> PrefixRecord {
        let mut p = PackageRecord::new(
            PackageName::try_from(name).unwrap(),
            Version::from_str("1.0").unwrap(),
            BuildString::new_unchecked("h0_0"),
        );
        p.depends = depends.iter().map(|d| d.to_string()).collect();
        let file = format!("{name}-1.0-h0_0.tar.bz2");
        PrefixRecord::from_repodata_record(
            RepoDataRecord {
                package_record: p,
                identifier: DistArchiveIdentifier::try_from_filename(&file).unwrap(),
                url: url::Url::parse(&format!("file:///c/linux-64/{file}")).unwrap(),
                channel: None,
            },
            Vec::new(),
        )
    }

    #[test]
    fn removal_takes_the_dependents_along() {
        let installed = [
            record("alpha", &[]),
            record("beta", &["alpha >=1"]),
            record("gamma", &["beta"]),
            record("delta", &["python"]),
        ];
        let gone = removal_closure(&installed, &["Alpha".to_string()]);
        assert_eq!(
            gone.into_iter().collect::<Vec<_>>(),
            ["alpha", "beta", "gamma"]
        );
    }

    #[test]
    fn pins_and_python_version_are_read_from_the_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("conda-meta")).unwrap();
        std::fs::write(
            tmp.path().join("conda-meta/pinned"),
            "# pins\npython 3.11.*  # the image's\n\nnumpy <2\n",
        )
        .unwrap();
        assert_eq!(pinned(tmp.path()), ["python 3.11.*", "numpy <2"]);
        std::fs::create_dir_all(tmp.path().join("lib/python3.11/site-packages")).unwrap();
        assert_eq!(python_version(tmp.path(), &[]), Some((3, 11)));
    }

    #[test]
    fn unlink_removes_files_bytecode_record_and_empty_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let prefix = tmp.path();
        let pkg = prefix.join("lib/python3.11/site-packages/foo");
        std::fs::create_dir_all(pkg.join("__pycache__")).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(pkg.join("__pycache__/__init__.cpython-311.pyc"), "").unwrap();
        std::fs::create_dir_all(prefix.join("conda-meta")).unwrap();
        std::fs::write(prefix.join("conda-meta/foo-1.0-h0_0.json"), "{}").unwrap();
        std::fs::write(prefix.join("lib/python3.11/site-packages/other.py"), "").unwrap();
        let mut r = record("foo", &[]);
        r.files = vec![
            PathBuf::from("lib/python3.11/site-packages/foo/__init__.py"),
            PathBuf::from("../outside"),
        ];
        unlink(prefix, &r).unwrap();
        assert!(!pkg.exists());
        assert!(prefix
            .join("lib/python3.11/site-packages/other.py")
            .exists());
        assert!(!prefix.join("conda-meta/foo-1.0-h0_0.json").exists());
        assert!(prefix.join("conda-meta").is_dir());
    }
}
