//! Debian packages as dpkg records them: the paragraphs of `var/lib/dpkg/status`, and of the
//! files in `var/lib/dpkg/status.d/` (distroless images, which have no dpkg: one file per
//! package, its control fields, no `Status`).
//!
//! # Which packages are installed
//!
//! A package counts when dpkg records its files as being on disk: its state (the last word of
//! `Status: <want> <flag> <state>`) is `half-installed`, `unpacked`, `half-configured`,
//! `triggers-awaited`, `triggers-pending` or `installed` — in dpkg's own order of states,
//! every state above `config-files`. It does not count when the state is `not-installed`
//! (nothing of it is on disk: a purged package dpkg still remembers) or `config-files`
//! (removed, only its configuration files left: `rc` in `dpkg -l`), nor when the state is one
//! dpkg does not write. A paragraph without `Status` (distroless `status.d`) counts: those
//! files are written for installed packages only.
//!
//! Why this line: the lock pins what an image has so a rebuild installs it again, and the
//! manifest and SBOM list what a scanner must see in the image. Both are about the files in
//! the image. A half-installed or unpacked package has its files there (apt finishes it on
//! its next run, and a vulnerability in them is in the image); a removed package whose
//! configuration files remain has no program left. The want flag (`install`, `hold`,
//! `deinstall`, `purge`) says what the administrator asked for, not what is on disk, so it
//! does not decide.

use super::Scan;
use crate::fsview::{join, FileView};

/// The status database.
pub const STATUS: &str = "var/lib/dpkg/status";
/// One file per package in distroless images.
pub const STATUS_D: &str = "var/lib/dpkg/status.d";
/// The fields of a paragraph the readers use: a reduced copy of a status file (the
/// inspector's layer index) keeps these.
pub const FIELDS: &[&str] = &["Package", "Status", "Version", "Architecture", "Source"];

/// A package's state, in dpkg's order (`dpkg/lib/dpkg/dpkg-db.h`, `enum pkgstatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    NotInstalled,
    ConfigFiles,
    HalfInstalled,
    Unpacked,
    HalfConfigured,
    TriggersAwaited,
    TriggersPending,
    Installed,
}

impl State {
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "not-installed" => State::NotInstalled,
            "config-files" => State::ConfigFiles,
            "half-installed" => State::HalfInstalled,
            "unpacked" => State::Unpacked,
            "half-configured" => State::HalfConfigured,
            "triggers-awaited" => State::TriggersAwaited,
            "triggers-pending" => State::TriggersPending,
            "installed" => State::Installed,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::NotInstalled => "not-installed",
            State::ConfigFiles => "config-files",
            State::HalfInstalled => "half-installed",
            State::Unpacked => "unpacked",
            State::HalfConfigured => "half-configured",
            State::TriggersAwaited => "triggers-awaited",
            State::TriggersPending => "triggers-pending",
            State::Installed => "installed",
        }
    }

    /// Whether dpkg has (some or all of) the package's files on disk in this state: every
    /// state above `config-files`. See the module documentation.
    pub fn files_on_disk(self) -> bool {
        self > State::ConfigFiles
    }
}

/// One paragraph of a status file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: Option<String>,
    /// `Source` as written (`glibc (2.36-9)`): the source package, when it is named otherwise.
    pub source: Option<String>,
    /// `Status` as written (`install ok installed`); `None` in distroless `status.d` files.
    pub status: Option<String>,
}

impl DebPackage {
    /// The state of the `Status` field (its last word), if dpkg knows it.
    pub fn state(&self) -> Option<State> {
        State::parse(self.status.as_deref()?.split_whitespace().last()?)
    }

    /// The one rule for whether the package is installed (see the module documentation).
    pub fn is_installed(&self) -> bool {
        match &self.status {
            None => true,
            Some(_) => self.state().is_some_and(State::files_on_disk),
        }
    }

    /// The architecture, `all` when the paragraph names none.
    pub fn arch_or_all(&self) -> &str {
        self.architecture.as_deref().unwrap_or("all")
    }
}

/// The paragraphs of a status file (separated by blank lines) that name a package and a
/// version, whatever their state. The first of a field wins; continuation lines (starting
/// with a space or a tab) are skipped.
pub fn parse_status(text: &str) -> Vec<DebPackage> {
    let mut out = Vec::new();
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut flush = |fields: &mut Vec<(&str, &str)>| {
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        if let (Some(name), Some(version)) = (get("Package"), get("Version")) {
            out.push(DebPackage {
                name,
                version,
                architecture: get("Architecture"),
                source: get("Source"),
                status: get("Status"),
            });
        }
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            fields.push((k.trim(), v.trim()));
        }
    }
    flush(&mut fields);
    out
}

/// Every paragraph of `var/lib/dpkg/status` and of the files in `var/lib/dpkg/status.d/`
/// (but their `*.md5sums`), in that order, whatever their state.
pub fn read_all(view: &impl FileView) -> Scan<DebPackage> {
    let mut scan = Scan::default();
    let mut files = vec![STATUS.to_string()];
    match view.read_dir(STATUS_D) {
        Ok(Some(names)) => files.extend(
            names
                .into_iter()
                .filter(|n| !n.ends_with(".md5sums"))
                .map(|n| join(STATUS_D, &n)),
        ),
        Ok(None) => {}
        Err(e) => scan.problem(e),
    }
    for file in files {
        match view.read(&file) {
            Ok(Some(bytes)) => scan
                .items
                .extend(parse_status(&String::from_utf8_lossy(&bytes))),
            Ok(None) => {}
            Err(e) => scan.problem(e),
        }
    }
    scan
}

/// The installed packages of the image (see the module documentation for the rule).
pub fn installed(view: &impl FileView) -> Scan<DebPackage> {
    let mut scan = read_all(view);
    scan.items.retain(DebPackage::is_installed);
    scan
}

/// A status file kept to [`FIELDS`] (continuation lines dropped), one paragraph per package,
/// for a reader that stores it: what [`parse_status`] reads of the copy is what it reads of
/// the file.
pub fn reduce(text: &str) -> String {
    let mut out = String::new();
    let mut kept = String::new();
    let end = |kept: &mut String, out: &mut String| {
        if !kept.is_empty() {
            out.push_str(kept);
            out.push('\n');
            kept.clear();
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            end(&mut kept, &mut out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, _)) = line.split_once(':') {
            if FIELDS.contains(&k.trim()) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    end(&mut kept, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::testing::MemView;

    const STATUS_TEXT: &str = "Package: bash\nEssential: yes\nStatus: install ok installed\n\
        Version: 5.2.15-2+b7\nArchitecture: amd64\nDescription: GNU\n Package: not-this\n\n\
        Package: gone\nStatus: purge ok not-installed\nVersion: 1\nArchitecture: all\n\n\
        Package: old\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: amd64\n\n\
        Package: broken\nStatus: install reinstreq half-installed\nVersion: 3\n\
        Architecture: amd64\nSource: brokensrc (3)\n\n\
        Package: leaving\nStatus: deinstall ok installed\nVersion: 4\nArchitecture: amd64\n\n\
        Package: noversion\nStatus: purge ok not-installed\n";

    #[test]
    fn parses_paragraphs() {
        let all = parse_status(STATUS_TEXT);
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "gone", "old", "broken", "leaving"]);
        assert_eq!(all[0].version, "5.2.15-2+b7");
        assert_eq!(all[0].architecture.as_deref(), Some("amd64"));
        assert_eq!(all[3].source.as_deref(), Some("brokensrc (3)"));
        assert_eq!(all[3].state(), Some(State::HalfInstalled));
        assert_eq!(all[2].state(), Some(State::ConfigFiles));
    }

    #[test]
    fn one_rule_for_installed() {
        let on_disk: Vec<&str> = [
            "not-installed",
            "config-files",
            "half-installed",
            "unpacked",
            "half-configured",
            "triggers-awaited",
            "triggers-pending",
            "installed",
        ]
        .into_iter()
        .filter(|w| State::parse(w).is_some_and(State::files_on_disk))
        .collect();
        assert_eq!(
            on_disk,
            [
                "half-installed",
                "unpacked",
                "half-configured",
                "triggers-awaited",
                "triggers-pending",
                "installed"
            ]
        );
        for s in [State::Installed, State::ConfigFiles, State::HalfInstalled] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        let pkg = |status: Option<&str>| DebPackage {
            name: "x".into(),
            version: "1".into(),
            architecture: None,
            source: None,
            status: status.map(str::to_string),
        };
        assert!(
            pkg(None).is_installed(),
            "distroless status.d has no Status"
        );
        assert!(pkg(Some("hold ok installed")).is_installed());
        assert!(pkg(Some("install ok unpacked")).is_installed());
        assert!(!pkg(Some("deinstall ok config-files")).is_installed());
        assert!(!pkg(Some("install ok something-new")).is_installed());
        assert_eq!(pkg(None).arch_or_all(), "all");
        let names: Vec<String> = parse_status(STATUS_TEXT)
            .into_iter()
            .filter(DebPackage::is_installed)
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["bash", "broken", "leaving"]);
    }

    #[test]
    fn reads_status_and_status_d_from_a_view() {
        let view = MemView::with(&[
            (STATUS, STATUS_TEXT),
            (
                "var/lib/dpkg/status.d/base-files",
                "Package: base-files\nVersion: 12.4\nArchitecture: amd64\n",
            ),
            (
                "var/lib/dpkg/status.d/base-files.md5sums",
                "0123  etc/debian_version\n",
            ),
        ]);
        let got = installed(&view).into_result().unwrap();
        let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bash", "broken", "leaving", "base-files"]);
        assert!(installed(&MemView::default())
            .into_result()
            .unwrap()
            .is_empty());
        // A status that is a directory is a problem, not a silent nothing.
        let mut odd = MemView::default();
        odd.dirs.push(STATUS.into());
        assert!(installed(&odd).into_result().is_err());
    }

    #[test]
    fn a_reduced_copy_reads_the_same() {
        let r = reduce(STATUS_TEXT);
        assert!(r.starts_with(
            "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\nArchitecture: amd64\n\n"
        ));
        assert!(!r.contains("Description") && !r.contains("not-this"));
        assert_eq!(parse_status(&r), parse_status(STATUS_TEXT));
    }
}
