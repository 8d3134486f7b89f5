//! Bytecode for the Python files a step installs, so that a notebook does not compile its
//! imports again at every container start.
//!
//! The image's own interpreter compiles them in the sandbox (over the parent layers with the
//! step's staging tree on top), so magic number, code and `co_filename` are the image's and
//! no host path gets in. The pycs are hash-checked (PEP 552): valid whatever the mtimes, so
//! layers stay reproducible. A step run again (one package more, say) compiles only the new
//! distributions' files: the others come with their pieces (`steps::pieces`).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nbrt_oci::Digest;

use crate::error::{BuildError, IoContext, Result};
use crate::sandbox::{self, RunSpec};
use crate::snapshot::MergedView;

/// Compiles the files listed (one image path per line) in the file named by argv[1]; a file
/// that does not compile is reported and skipped, as pip does. Each run of 16 consecutive
/// files is compiled in a process of its own, forked for it: marshal's output depends on
/// what the process compiled before (objects' reference counts decide its back-references),
/// so a pool's workers, which take files as they come free, wrote different bytes from run
/// to run. The same list gives the same bytes.
const COMPILE_SCRIPT: &str = r#"
import multiprocessing, py_compile, sys
def one(path):
    try:
        py_compile.compile(path, doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    except Exception as e:
        return f"{path}: {e}"
files = open(sys.argv[1]).read().splitlines()
with multiprocessing.get_context("fork").Pool(maxtasksperchild=1) as pool:
    for failed in pool.imap(one, files, chunksize=16):
        if failed:
            print("not compiled:", failed, file=sys.stderr)
"#;

/// Where the list of files to compile appears inside the sandbox.
const LIST_PATH: &str = "nbrt-bytecode.list";

/// What [`compile`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BytecodeReport {
    /// Files the image's interpreter compiled.
    pub compiled: usize,
    /// Files it could not compile (left as sources).
    pub failed: usize,
}

fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("bytecode", message)
}

/// The digest of the interpreter at `<prefix>/bin/python` in `view`, if there is one: what
/// the bytecode it writes depends on.
pub fn interpreter_digest(view: &MergedView, prefix: &str) -> Result<Option<Digest>> {
    let interpreter = format!("{}/bin/python", prefix.trim_matches('/'));
    Ok(view.read(&interpreter)?.map(|b| Digest::of_bytes(&b)))
}

/// Compile the `.py` files under `<prefix>/lib` in `staging` (the step's new files, standing
/// for the image root), but those in `skip`, with the interpreter at `<prefix>/bin/python`
/// of the image made of `staging` over `lowers`. `python` is the environment's version, for
/// the pyc names.
pub fn compile(
    lowers: &[PathBuf],
    staging: &Path,
    prefix: &str,
    python: (u64, u64),
    skip: &BTreeSet<PathBuf>,
    scratch: &Path,
    log: &mut dyn std::io::Write,
) -> Result<BytecodeReport> {
    let prefix_rel = prefix.trim_matches('/');
    let lib = staging.join(prefix_rel).join("lib");
    let mut sources = Vec::new();
    if lib.is_dir() {
        python_sources(&lib, &mut sources)?;
    }
    sources.retain(|s| !skip.contains(s));
    if sources.is_empty() {
        return Ok(BytecodeReport::default());
    }
    let mut view_dirs = vec![staging.to_path_buf()];
    view_dirs.extend(lowers.iter().cloned());
    let view = MergedView::new(view_dirs.clone());
    let interpreter = format!("{prefix_rel}/bin/python");
    if !view.exists(&interpreter) {
        writeln!(
            log,
            "bytecode: no /{interpreter} in the image; Python files left uncompiled"
        )
        .ok();
        return Ok(BytecodeReport::default());
    }
    let tag = format!("cpython-{}{}", python.0, python.1);
    // (pyc path in staging, image path of the source).
    let mut todo: Vec<(PathBuf, String)> = Vec::new();
    for source in sources {
        let rel = source
            .strip_prefix(staging)
            .map_err(|_| err(format!("{} is outside the staging tree", source.display())))?;
        let image_path = format!("/{}", rel.to_string_lossy());
        if image_path.contains('\n') {
            continue; // cannot go in the list; Python compiles it when it imports it
        }
        todo.push((pyc_path(&source, &tag)?, image_path));
    }
    if todo.is_empty() {
        return Ok(BytecodeReport::default());
    }

    // The list of files goes in a directory of its own, as the topmost lower: seen by the
    // interpreter, never part of the layer.
    let input = scratch.join("bytecode-input");
    fs::create_dir_all(&input).io_context(|| format!("creating {}", input.display()))?;
    let mut list = String::new();
    for (_, image_path) in &todo {
        list.push_str(image_path);
        list.push('\n');
    }
    fs::write(input.join(LIST_PATH), list).io_context(|| "writing the list of Python files")?;
    let mut lowers_with_input = vec![input];
    lowers_with_input.extend(view_dirs);
    let spec = RunSpec {
        argv: vec![
            format!("/{interpreter}"),
            "-c".into(),
            COMPILE_SCRIPT.into(),
            format!("/{LIST_PATH}"),
        ],
        user: "root".into(),
        // Set constants' order, which bytecode keeps, follows string hashes.
        env: crate::epoch::command_env(&[], None),
        workdir: String::new(),
        network: false,
        host_ca_bundle: None,
    };
    let run = sandbox::run(&lowers_with_input, &spec, &scratch.join("bytecode"), log)?;
    let upper = run.upper_dir();
    let mut report = BytecodeReport::default();
    for (pyc, _) in &todo {
        let rel = pyc
            .strip_prefix(staging)
            .map_err(|_| err(format!("{} is outside the staging tree", pyc.display())))?;
        let made = upper.join(rel);
        if !made.is_file() {
            report.failed += 1; // the interpreter said why
            continue;
        }
        place(&made, pyc)?;
        report.compiled += 1;
    }
    Ok(report)
}

/// Every regular `*.py` file below `dir`, in a stable order, but for packages' own test
/// suites (`tests` / `test` subpackages: half of numpy's, scipy's and pandas's files, which
/// notebooks do not import; Python compiles them on the day someone runs them).
fn python_sources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let in_package = dir.join("__init__.py").is_file();
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(dir)
        .io_context(|| format!("listing {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .io_context(|| format!("listing {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let kind = entry
            .file_type()
            .io_context(|| format!("reading {}", entry.path().display()))?;
        let name = entry.file_name();
        let test_suite = in_package && (name == "tests" || name == "test");
        if kind.is_dir() && name != "__pycache__" && !test_suite {
            python_sources(&entry.path(), out)?;
        } else if kind.is_file() && name.to_string_lossy().ends_with(".py") {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// `dir/name.py` → `dir/__pycache__/name.<tag>.pyc`, where Python looks for it.
fn pyc_path(source: &Path, tag: &str) -> Result<PathBuf> {
    let dir = source
        .parent()
        .ok_or_else(|| err(format!("{} has no directory", source.display())))?;
    let stem = source
        .file_stem()
        .ok_or_else(|| err(format!("{} has no name", source.display())))?;
    Ok(dir
        .join("__pycache__")
        .join(format!("{}.{tag}.pyc", stem.to_string_lossy())))
}

/// Move a pyc from the sandbox's upper directory to where it belongs in the staging tree,
/// with fixed modes (the sandbox's umask is not the layer's business).
fn place(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        if !dir.is_dir() {
            fs::create_dir(dir).io_context(|| format!("creating {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .io_context(|| format!("setting the mode of {}", dir.display()))?;
        }
    }
    fs::rename(from, to).io_context(|| format!("moving {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))
        .io_context(|| format!("setting the mode of {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyc_names() {
        let p = pyc_path(
            Path::new("/s/opt/conda/lib/python3.11/site-packages/a/b.py"),
            "cpython-311",
        )
        .expect("a path");
        assert_eq!(
            p,
            Path::new("/s/opt/conda/lib/python3.11/site-packages/a/__pycache__/b.cpython-311.pyc")
        );
    }

    #[test]
    fn packages_test_suites_are_left_as_sources() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let site = tmp.path();
        for f in [
            "pkg/__init__.py",
            "pkg/core.py",
            "pkg/tests/__init__.py",
            "pkg/tests/test_core.py",
            "pkg/sub/__init__.py",
            "pkg/sub/test/test_x.py",
            "pkg/__pycache__/core.py",
            "tests/helper.py",
            "data.txt",
        ] {
            let p = site.join(f);
            fs::create_dir_all(p.parent().expect("a parent")).expect("a directory");
            fs::write(&p, "").expect("a file");
        }
        let mut found = Vec::new();
        python_sources(site, &mut found).expect("a walk");
        let rel: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(site).expect("inside").display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "pkg/__init__.py",
                "pkg/core.py",
                "pkg/sub/__init__.py",
                "tests/helper.py"
            ]
        );
    }
}
