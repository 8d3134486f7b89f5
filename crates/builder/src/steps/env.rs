//! A Python environment in an image, as the pip and conda steps see it: its Python version
//! and `site-packages`, who owns it, how a step's staging tree of it is finished, and what
//! decides whether a step installing into it may move onto a new base.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use nbrt_oci::facts::conda_meta;
use nbrt_oci::facts::dist_info::{self, site_packages};

use crate::error::{BuildError, IoContext, Result};
use crate::snapshot::{build_err, MergedView};
use crate::steps::{Rebase, RebaseContext};

/// The Python version of the environment at `prefix`: the newest `lib/pythonX.Y` that has a
/// `site-packages`.
pub fn python_version(view: &MergedView, prefix: &str) -> Result<(u64, u64)> {
    let lib = format!("{}/lib", prefix.trim_start_matches('/'));
    let versions = match dist_info::python_versions(view, prefix) {
        Ok(v) if view.exists(&lib) => v,
        _ => {
            return Err(pip_err(format!(
                "no Python environment at {prefix} in the parent image (no {prefix}/lib); \
                 create one first, e.g. a run step `python3 -m venv {prefix}`"
            )))
        }
    };
    versions.last().copied().ok_or_else(|| {
        pip_err(format!(
            "no lib/pythonX.Y/site-packages under {prefix} in the parent image"
        ))
    })
}

/// Errors about the environment are the pip step's (the conda step reads the version only
/// where it may be missing).
fn pip_err(message: impl Into<String>) -> BuildError {
    BuildError::step("pip", message)
}

/// Who owns the environment at `prefix` when it is not root: (uid, gid, setgid directory).
pub fn owner(view: &MergedView, prefix: &str) -> Result<Option<(u32, u32, bool)>> {
    use std::os::unix::fs::MetadataExt;
    Ok(view
        .symlink_metadata(prefix.trim_start_matches('/'))?
        .filter(|m| m.uid() != 0)
        .map(|m| (m.uid(), m.gid(), m.mode() & 0o2000 != 0)))
}

/// New files of an environment take its owner (the notebook user in the docker-stacks
/// layout), group-writable; replaced files become overlay whiteouts in the staging tree.
pub fn finish_staging(
    view: &MergedView,
    prefix: &str,
    staging: &Path,
    whiteouts: &[String],
) -> Result<()> {
    let rel = prefix.trim_start_matches('/');
    if let Some((uid, gid, setgid)) = owner(view, prefix)? {
        let dir = staging.join(rel);
        if dir.exists() {
            crate::steps::user::own_tree(&dir, uid, gid, setgid)?;
        }
    }
    for w in whiteouts {
        let path = staging.join(w);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).io_context(|| format!("creating {}", parent.display()))?;
        }
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .map_err(|e| BuildError::step("whiteout", format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// Which records of installed packages a step's solve reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// `*.dist-info` directories in site-packages (pip).
    DistInfo,
    /// `conda-meta/*.json` records (conda).
    CondaMeta,
}

/// What a pip or conda step's solve reads from the image below it: the Python version, the
/// installed packages (record names) and the environment's owner (new files take it).
#[derive(Debug, PartialEq, Eq)]
struct SolveInputs {
    python: Option<(u64, u64)>,
    packages: BTreeSet<String>,
    owner: Option<(u32, u32, bool)>,
}

fn solve_inputs(view: &MergedView, prefix: &str, installed: Installed) -> Result<SolveInputs> {
    use std::os::unix::fs::MetadataExt;
    let rel = prefix.trim_matches('/');
    let python = python_version(view, prefix).ok();
    let packages: BTreeSet<String> = match (installed, python) {
        (Installed::CondaMeta, _) => conda_meta::record_files(view, prefix)
            .map_err(build_err)?
            .into_iter()
            .collect(),
        (Installed::DistInfo, Some(python)) => {
            dist_info::distributions(view, &site_packages(prefix, python))
                .into_items()
                .into_iter()
                .filter(|d| d.format == dist_info::Format::DistInfo)
                .map(|d| d.entry)
                .collect()
        }
        (Installed::DistInfo, None) => BTreeSet::new(),
    };
    let owner = view
        .symlink_metadata(rel)?
        .map(|m| (m.uid(), m.gid(), m.mode() & 0o2000 != 0));
    Ok(SolveInputs {
        python,
        packages,
        owner,
    })
}

/// Why two [`SolveInputs`] differ, for the report.
fn solve_change(old: &SolveInputs, new: &SolveInputs) -> String {
    if old.python != new.python {
        return format!(
            "the Python version changed ({:?} → {:?})",
            old.python, new.python
        );
    }
    if old.packages != new.packages {
        let added: Vec<&String> = new.packages.difference(&old.packages).collect();
        let gone: Vec<&String> = old.packages.difference(&new.packages).collect();
        return format!(
            "the installed packages its solve sees changed (+{} −{}{})",
            added.len(),
            gone.len(),
            added
                .first()
                .or(gone.first())
                .map(|n| format!(", e.g. {n}"))
                .unwrap_or_default()
        );
    }
    "the environment's owner changed".to_string()
}

/// A pip or conda step moves when every earlier step moves and its solve would read the
/// same from the new base as it did from the old one: the solve depends on nothing else of
/// the base (the wheel platform is fixed, conda's virtual packages too), so running it again
/// would only pick up newer releases, which a rebase should not do silently.
pub fn rebase_decision(
    cx: &RebaseContext<'_>,
    prefix: &str,
    installed: Installed,
) -> Result<Rebase> {
    if !cx.earlier_moved {
        return Ok(Rebase::Rebuild(
            "an earlier step of the runtime is rebuilt: its solve would see another environment"
                .into(),
        ));
    }
    let before = solve_inputs(&cx.view(cx.old_below)?, prefix, installed)?;
    let after = solve_inputs(&cx.view(cx.new_below)?, prefix, installed)?;
    Ok(if before != after {
        Rebase::Rebuild(solve_change(&before, &after))
    } else {
        Rebase::Move("same Python, installed packages and owner below it: same solve".into())
    })
}
