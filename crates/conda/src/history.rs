//! `conda-meta/history` in conda's format: one entry per transaction,
//!
//! ```text
//! ==> 2024-05-01 12:00:00 <==
//! # cmd: /opt/conda/bin/conda install -y scrapy
//! # conda version: 24.11.0
//! -conda-forge/linux-64::old-1.0-h0_0
//! +conda-forge/noarch::scrapy-2.11.0-pyhd8ed1ab_0
//! # update specs: ['scrapy']
//! ```
//!
//! and what `conda env export --from-history` reads back from it: the specs asked for
//! (`update`/`install`/`create` add them by name, `remove` takes them out).

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Which kind of specs an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    Update,
    Remove,
}

/// One transaction to append.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Seconds since the epoch (UTC).
    pub time: u64,
    pub cmd: Vec<String>,
    pub conda_version: String,
    /// `channel/subdir::name-version-build` of each package removed.
    pub removed: Vec<String>,
    /// Of each package added.
    pub added: Vec<String>,
    pub kind: SpecKind,
    pub specs: Vec<String>,
}

/// A date and time in UTC, `YYYY-MM-DD HH:MM:SS` (civil from days, Howard Hinnant's
/// algorithm).
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A Python list literal of strings, as conda writes specs: `['a', 'b >=1']`.
fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|i| format!("'{}'", i.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", quoted.join(", "))
}

impl Entry {
    pub fn to_text(&self) -> String {
        let mut out = format!("==> {} <==\n", format_time(self.time));
        out.push_str(&format!("# cmd: {}\n", self.cmd.join(" ")));
        out.push_str(&format!("# conda version: {}\n", self.conda_version));
        for r in &self.removed {
            out.push_str(&format!("-{r}\n"));
        }
        for a in &self.added {
            out.push_str(&format!("+{a}\n"));
        }
        let kind = match self.kind {
            SpecKind::Update => "update",
            SpecKind::Remove => "remove",
        };
        out.push_str(&format!("# {kind} specs: {}\n", python_list(&self.specs)));
        out
    }
}

/// Append an entry to `<prefix>/conda-meta/history`.
pub fn append(prefix: &Path, entry: &Entry) -> Result<()> {
    let path = prefix.join("conda-meta/history");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .io_context(|| format!("open {}", path.display()))?;
    file.write_all(entry.to_text().as_bytes())
        .io_context(|| format!("write {}", path.display()))
}

/// The items of a Python list literal of strings.
fn parse_python_list(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' || c == '"' {
            let quote = c;
            let mut item = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            item.push(n);
                        }
                    }
                    c if c == quote => break,
                    c => item.push(c),
                }
            }
            out.push(item);
        }
    }
    out
}

/// The name a spec is about: what comes before a version, build or bracket, without a
/// channel prefix (`conda-forge::x`).
pub fn spec_name(spec: &str) -> String {
    let spec = spec.trim();
    let spec = spec.rsplit("::").next().unwrap_or(spec);
    spec.chars()
        .take_while(|c| !c.is_whitespace() && !"=<>!~[".contains(*c))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The specs asked for over the prefix's history, in the order first asked, each name's
/// latest spec: what `env export --from-history` lists.
pub fn requested_specs(prefix: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(prefix.join("conda-meta/history")).unwrap_or_default();
    requested_specs_in(&text)
}

pub fn requested_specs_in(text: &str) -> Vec<String> {
    let mut specs: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((kind, list)) = rest.split_once(" specs: ") else {
            continue;
        };
        let items = parse_python_list(list);
        match kind {
            "update" | "install" | "create" => {
                for item in items {
                    let name = spec_name(&item);
                    match specs.iter_mut().find(|(n, _)| *n == name) {
                        Some(entry) => entry.1 = item,
                        None => specs.push((name, item)),
                    }
                }
            }
            "remove" => {
                for item in items {
                    let name = spec_name(&item);
                    specs.retain(|(n, _)| *n != name);
                }
            }
            _ => {}
        }
    }
    specs.into_iter().map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_condas_and_back() {
        let entry = Entry {
            time: 1_714_564_800,
            cmd: vec![
                "/opt/conda/bin/conda".into(),
                "install".into(),
                "-y".into(),
                "scrapy".into(),
            ],
            conda_version: "24.11.0".into(),
            removed: vec!["conda-forge/linux-64::old-1.0-h0_0".into()],
            added: vec!["conda-forge/noarch::scrapy-2.11-py_0".into()],
            kind: SpecKind::Update,
            specs: vec!["scrapy".into(), "it's >=1".into()],
        };
        assert_eq!(
            entry.to_text(),
            "==> 2024-05-01 12:00:00 <==\n# cmd: /opt/conda/bin/conda install -y scrapy\n\
             # conda version: 24.11.0\n-conda-forge/linux-64::old-1.0-h0_0\n\
             +conda-forge/noarch::scrapy-2.11-py_0\n# update specs: ['scrapy', 'it\\'s >=1']\n"
        );
        let mut text = entry.to_text();
        text.push_str("==> x <==\n# update specs: [\"alpha=1.0\", 'beta']\n");
        text.push_str("==> y <==\n# remove specs: ['scrapy']\n# update specs: ['alpha >=2']\n");
        assert_eq!(requested_specs_in(&text), ["it's >=1", "alpha >=2", "beta"]);
        assert_eq!(spec_name("conda-forge::NumPy>=1"), "numpy");
    }
}
