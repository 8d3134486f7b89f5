//! The python step: the image's Python environment, a venv of the image's own interpreter
//! (Debian's `python3`) at the prefix (docker-stacks' `CONDA_DIR`, `/opt/conda`), made in the
//! sandbox as the prefix's owner, group-writable with setgid directories as docker-stacks'
//! `fix-permissions` leaves it. It is also a conda environment: `conda-meta` gets records
//! for what the venv already has (the interpreter, its ABI, pip), so conda packages that
//! depend on `python`, `python_abi` or `pip` solve and link against it; `conda-meta/pinned`
//! keeps python at the major.minor it was built with (docker-stacks pins the same way), and
//! `.condarc` names the channels.
//!
//! Users' own packages (`pip install --user`) are visible in it (`include-system-site-packages
//! = true`, which venvs need for a user site) but never shadow the image's: `_nbrt_site.pth`
//! moves the user site after the environment's site-packages, and keys it by the runtime
//! (`NBRT_RUNTIME`) and the Python ABI when nbrt-init has not set `PYTHONUSERBASE` (a
//! `docker exec`), so another runtime or the next Python never imports them.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::str::FromStr;

use rattler_conda_types::{ParseStrictness, Version, VersionSpec};

use nbrt_oci::spec::rfc3339;

use crate::error::{BuildError, IoContext, Result};
use crate::runtime_file::Python;
use crate::steps::{env, Rebase, RebaseContext, RunContext, StepKind, StepOutput};

/// The channel the synthesized records name: they come with the image, not from a channel.
const CHANNEL: &str = "debian";

fn err(message: impl Into<String>) -> BuildError {
    BuildError::step("python", message)
}

/// `python.version`, checked when the runtime file is read.
pub fn parse_version_spec(spec: &str) -> std::result::Result<VersionSpec, String> {
    VersionSpec::from_str(spec, ParseStrictness::Lenient).map_err(|e| e.to_string())
}

impl StepKind for Python {
    fn label(&self) -> String {
        match &self.version {
            Some(v) => format!("python {} {v}", self.prefix),
            None => format!("python {}", self.prefix),
        }
    }

    fn sees_env(&self) -> bool {
        true
    }

    fn run(&self, cx: &RunContext<'_>, log: &mut dyn Write) -> Result<StepOutput> {
        let view = cx.view();
        let rel = self.prefix.trim_start_matches('/');
        if view.exists(&format!("{rel}/pyvenv.cfg")) {
            return Err(err(format!(
                "{} is already a Python environment in the parent image; a python step makes \
                 a new one",
                self.prefix
            )));
        }
        let owner = env::owner(&view, &self.prefix)?;
        let user = match owner {
            Some((uid, gid, _)) => format!("{uid}:{gid}"),
            None => "root".to_string(),
        };
        let script = format!(
            "set -e\numask 0002\n{py} -m venv --system-site-packages {prefix}\n\
             mkdir -p {prefix}/conda-meta\n\
             {hook}\
             chmod -R g+w {prefix}\n\
             find {prefix} -type d -exec chmod g+s {{}} +\n\
             {prefix}/bin/python -m pip --version\n",
            py = shell_word(&self.interpreter),
            prefix = shell_word(&self.prefix),
            hook = site_hook_script(&shell_word(&self.prefix)),
        );
        let argv = vec!["/bin/sh".into(), "-c".into(), script];
        let mut said = String::new();
        let layer = cx.sandboxed_with(argv, &user, false, log, |upper| {
            let prefix = upper.join(rel);
            let facts = Facts::read(&prefix)?;
            if let Some(spec) = &self.version {
                let wanted = parse_version_spec(spec).map_err(err)?;
                let version = Version::from_str(&facts.python)
                    .map_err(|e| err(format!("python version {:?}: {e}", facts.python)))?;
                if !wanted.matches(&version) {
                    return Err(err(format!(
                        "the image's {} is Python {}, which does not match python.version {spec:?}",
                        self.interpreter, facts.python
                    )));
                }
            }
            let pin = self
                .version
                .clone()
                .unwrap_or_else(|| format!("{}.*", facts.major_minor()));
            write_conda_meta(&prefix, &facts, &pin, &self.channels, cx.epoch)?;
            said = format!(
                "python {} at {}: conda-meta records python, python_abi, pip; pinned python {pin}",
                facts.python, self.prefix
            );
            Ok(())
        })?;
        writeln!(log, "{said}").io_context(|| "writing the build log".to_string())?;
        Ok(layer.into())
    }

    fn rebase(&self, _cx: &RebaseContext<'_>) -> Result<Rebase> {
        Ok(Rebase::Rebuild(
            "the environment is made from the base's interpreter".into(),
        ))
    }
}

/// What the new venv has, read from its files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    /// The interpreter's full version (`pyvenv.cfg`'s `version`).
    python: String,
    /// pip's version, when the venv has pip.
    pip: Option<String>,
    /// Owner of the prefix directory.
    uid: u32,
    gid: u32,
}

impl Facts {
    fn read(prefix: &Path) -> Result<Self> {
        let cfg_path = prefix.join("pyvenv.cfg");
        let cfg = std::fs::read_to_string(&cfg_path)
            .io_context(|| format!("reading {}", cfg_path.display()))?;
        let python = cfg
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| matches!(k.trim(), "version" | "version_info"))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| v.split('.').count() >= 2 && v.split('.').all(|p| !p.is_empty()))
            .ok_or_else(|| err(format!("{} names no Python version", cfg_path.display())))?;
        let meta = std::fs::metadata(prefix).io_context(|| format!("{}", prefix.display()))?;
        let mut facts = Facts {
            python,
            pip: None,
            uid: meta.uid(),
            gid: meta.gid(),
        };
        let site = prefix
            .join("lib")
            .join(format!("python{}", facts.major_minor()))
            .join("site-packages");
        if let Ok(entries) = std::fs::read_dir(&site) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(v) = name
                    .strip_prefix("pip-")
                    .and_then(|r| r.strip_suffix(".dist-info"))
                {
                    facts.pip = Some(v.to_string());
                }
            }
        }
        Ok(facts)
    }

    fn major_minor(&self) -> String {
        self.python.split('.').take(2).collect::<Vec<_>>().join(".")
    }

    /// `cp313` for Python 3.13.
    fn abi_tag(&self) -> String {
        format!("cp{}", self.major_minor().replace('.', ""))
    }
}

/// One conda-meta record for something the environment has without conda having put it
/// there: no files of its own (conda must never remove the interpreter's links).
fn record(name: &str, version: &str, build: &str, depends: &[String]) -> serde_json::Value {
    let file_name = format!("{name}-{version}-{build}.conda");
    serde_json::json!({
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "subdir": "linux-64",
        "depends": depends,
        "constrains": [],
        "channel": CHANNEL,
        "url": format!("https://deb.debian.org/{CHANNEL}/{file_name}"),
        "fn": file_name,
        "files": [],
        "paths_data": { "paths_version": 1, "paths": [] },
        "requested_spec": "",
    })
}

/// The records, `pinned`, `history` and `.condarc` of the environment at `prefix` (a
/// directory on the host: the step's upper directory), owned like the prefix.
fn write_conda_meta(
    prefix: &Path,
    facts: &Facts,
    pin: &str,
    channels: &[String],
    epoch: Option<i64>,
) -> Result<()> {
    let meta = prefix.join("conda-meta");
    let abi = facts.abi_tag();
    let mm = facts.major_minor();
    // (name, version, build, depends) of what the venv has without conda.
    let mut records = vec![
        (
            "python",
            facts.python.clone(),
            "0_debian".to_string(),
            vec![format!("python_abi {mm}.* *_{abi}")],
        ),
        ("python_abi", mm.clone(), format!("0_{abi}"), Vec::new()),
    ];
    if let Some(pip) = &facts.pip {
        records.push((
            "pip",
            pip.clone(),
            "0_debian".to_string(),
            vec![format!("python >={mm}")],
        ));
    }
    let mut history = format!(
        "==> {} <==\n# cmd: nbrt build (python step)\n",
        history_time(epoch)
    );
    for (name, version, build, depends) in &records {
        let dist = format!("{name}-{version}-{build}");
        let r = record(name, version, build, depends);
        let text = serde_json::to_string_pretty(&r).map_err(|e| err(e.to_string()))?;
        write_owned(&meta.join(format!("{dist}.json")), &(text + "\n"), facts)?;
        history.push_str(&format!("+{CHANNEL}::{dist}\n"));
    }
    history.push_str(&format!("# update specs: [\"python={mm}\"]\n"));
    write_owned(&meta.join("history"), &history, facts)?;
    write_owned(&meta.join("pinned"), &format!("python {pin}\n"), facts)?;
    let mut condarc = String::from("channels:\n");
    for c in channels {
        condarc.push_str(&format!("  - {c}\n"));
    }
    write_owned(&prefix.join(".condarc"), &condarc, facts)
}

/// The module `_nbrt_site.pth` runs when Python starts (see the module's documentation).
/// The key must stay what `nbrt_init::userpkgs::key` makes.
pub const SITE_HOOK: &str = r#""""The image's packages before the user's (written by nbrt's python step).

Python adds the user site (PYTHONUSERBASE, else ~/.local) before the environment's
site-packages. This moves it after them, so `pip install --user` never shadows what the
image has (an older numpy in the home stays behind the image's). When PYTHONUSERBASE is
not set (nbrt-init sets it in sessions; `docker exec` does not), the user base is keyed by
the runtime and the Python ABI as nbrt-init keys it:
~/.local/share/nbrt/<NBRT_RUNTIME>-cp<major><minor>.
"""
import os
import site
import sys


def _key(runtime):
    ok = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
    name = "".join(c if c in ok else "_" for c in runtime).lstrip(".")
    return "%s-cp%d%d" % (name or "_", sys.version_info[0], sys.version_info[1])


def _main():
    enabled = site.ENABLE_USER_SITE
    if enabled is None:
        # site.py runs this environment's .pth files before deciding on (and adding) the
        # user site, which it then appends after them: only the base needs setting.
        enabled = site.check_enableusersite()
    if not enabled:
        return
    old = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    runtime = os.environ.get("NBRT_RUNTIME", "")
    if runtime and not os.environ.get("PYTHONUSERBASE"):
        base = os.path.join(
            os.path.expanduser("~"), ".local", "share", "nbrt", _key(runtime)
        )
        os.environ["PYTHONUSERBASE"] = base
        site.USER_BASE = base
        site.USER_SITE = None
    if old is None:
        return
    new = site.getusersitepackages()
    while old in sys.path:
        sys.path.remove(old)
    if new == old:
        if os.path.isdir(new):
            sys.path.append(new)
    elif os.path.isdir(new):
        site.addsitedir(new)


_main()
"#;

/// Shell lines that write `_nbrt_site.py` into the environment's site-packages, compile it
/// there (hash-checked bytecode: no file time in it, and nobody's first `python` writes a
/// root-owned `.pyc` into the image later), then the `.pth` that imports it.
fn site_hook_script(prefix: &str) -> String {
    format!(
        "site=$({prefix}/bin/python -c 'import sysconfig; print(sysconfig.get_path(\"purelib\"))')\n\
         cat > \"$site/_nbrt_site.py\" <<'NBRT_SITE_HOOK'\n{SITE_HOOK}NBRT_SITE_HOOK\n\
         {prefix}/bin/python -c 'import py_compile, sys; py_compile.compile(sys.argv[1], \
         doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)' \
         \"$site/_nbrt_site.py\"\n\
         echo 'import _nbrt_site' > \"$site/_nbrt_site.pth\"\n"
    )
}

/// The time of the history entry, in conda's format: the build's ([`crate::epoch`]).
fn history_time(epoch: Option<i64>) -> String {
    // `2026-12-06T02:05:00Z` → `2026-12-06 02:05:00`
    rfc3339(epoch.unwrap_or(0))
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_string()
}

/// Write `text` to `path`, group-writable and owned by the environment's owner.
fn write_owned(path: &Path, text: &str, facts: &Facts) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).io_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o664))
        .io_context(|| format!("setting the mode of {}", path.display()))?;
    std::os::unix::fs::lchown(path, Some(facts.uid), Some(facts.gid))
        .io_context(|| format!("setting the owner of {}", path.display()))
}

/// `s` quoted for `sh` when it is not a plain word.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rattler_conda_types::PrefixRecord;

    fn facts() -> Facts {
        Facts {
            python: "3.13.5".into(),
            pip: Some("25.1.1".into()),
            uid: rustix_uid(),
            gid: rustix_gid(),
        }
    }
    fn rustix_uid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0)
    }
    fn rustix_gid() -> u32 {
        std::fs::metadata("/proc/self")
            .map(|m| m.gid())
            .unwrap_or(0)
    }

    #[test]
    fn records_are_what_conda_and_rattler_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conda-meta")).unwrap();
        write_conda_meta(
            dir.path(),
            &facts(),
            "3.13.*",
            &["conda-forge".into()],
            Some(1_700_000_000),
        )
        .unwrap();
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir.path().join("conda-meta")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                let r = PrefixRecord::from_path(&p).unwrap();
                names.push(format!(
                    "{} {} {}",
                    r.repodata_record.package_record.name.as_normalized(),
                    r.repodata_record.package_record.version,
                    r.repodata_record.package_record.build
                ));
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "pip 25.1.1 0_debian",
                "python 3.13.5 0_debian",
                "python_abi 3.13 0_cp313"
            ]
        );
        let pinned = std::fs::read_to_string(dir.path().join("conda-meta/pinned")).unwrap();
        assert_eq!(pinned, "python 3.13.*\n");
        let history = std::fs::read_to_string(dir.path().join("conda-meta/history")).unwrap();
        assert!(
            history.starts_with("==> 2023-11-14 22:13:20 <=="),
            "{history}"
        );
        assert!(
            history.contains("+debian::python-3.13.5-0_debian\n"),
            "{history}"
        );
        assert!(history.ends_with("# update specs: [\"python=3.13\"]\n"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".condarc")).unwrap(),
            "channels:\n  - conda-forge\n"
        );
    }

    #[test]
    fn facts_come_from_pyvenv_cfg_and_dist_info() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("pyvenv.cfg"),
            "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.13.5\n",
        )
        .unwrap();
        std::fs::create_dir_all(
            dir.path()
                .join("lib/python3.13/site-packages/pip-25.1.1.dist-info"),
        )
        .unwrap();
        let f = Facts::read(dir.path()).unwrap();
        assert_eq!(f.python, "3.13.5");
        assert_eq!(f.pip.as_deref(), Some("25.1.1"));
        assert_eq!(f.abi_tag(), "cp313");
        std::fs::write(dir.path().join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
        assert!(Facts::read(dir.path()).is_err());
    }

    #[test]
    fn the_site_hook_fits_its_heredoc() {
        assert!(SITE_HOOK.ends_with('\n'));
        assert!(!SITE_HOOK.lines().any(|l| l == "NBRT_SITE_HOOK"));
        assert!(!SITE_HOOK.contains('\0'));
    }

    #[test]
    fn history_time_is_condas_format() {
        assert_eq!(history_time(Some(1_700_000_000)), "2023-11-14 22:13:20");
    }

    #[test]
    fn version_specs() {
        let s = parse_version_spec("3.13.*").unwrap();
        assert!(s.matches(&Version::from_str("3.13.5").unwrap()));
        assert!(!s.matches(&Version::from_str("3.11.2").unwrap()));
        assert!(parse_version_spec(">=3.12,<3.14").is_ok());
        assert!(parse_version_spec("3.13.*.*==").is_err());
    }
}
