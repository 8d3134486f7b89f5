//! The package records of a conda environment: `<prefix>/conda-meta/<name>-<version>-<build>.json`,
//! one per installed package (what `conda list` reads).
//!
//! [`records`] gives the fields the lock, the manifest and rebase use; [`documents`] gives
//! the records' bytes as they are, for a reader that needs all of a record (the conda step
//! hands them to its solver). Files in `conda-meta` that do not end in `.json` (`history`)
//! are not records.

use serde::{Deserialize, Serialize};

use super::{FactError, Scan};
use crate::fsview::{join, FileView, FsViewError};

/// The fields of a conda-meta record that readers use (the rest, such as the file list, is
/// not read; an index may drop it).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CondaMetaRecord {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub build: String,
    #[serde(default)]
    pub build_number: u64,
    /// The channel URL (`https://conda.anaconda.org/conda-forge/linux-64`), or a bare
    /// channel name in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// The package archive's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Hex SHA-256 of the package archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Hex MD5 of the package archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

impl CondaMetaRecord {
    /// The channel the package came from as a URL: `channel`, else the directory of `url`.
    pub fn channel_url(&self) -> Option<String> {
        self.channel.clone().filter(|c| !c.is_empty()).or_else(|| {
            self.url
                .as_deref()
                .and_then(|u| u.rsplit_once('/'))
                .map(|(c, _)| c.to_string())
        })
    }
}

/// A record file's bytes as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Path of the file, relative to the image root.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// `opt/conda/conda-meta` for prefix `/opt/conda`.
pub fn meta_dir(prefix: &str) -> String {
    join(prefix, "conda-meta")
}

/// Read one record.
pub fn parse_record(path: &str, bytes: &[u8]) -> Result<CondaMetaRecord, FactError> {
    serde_json::from_slice(bytes)
        .map_err(|e| FactError::invalid(path, format!("not a conda-meta record: {e}")))
}

/// The names of the record files of the environment at `prefix`, sorted; empty when it has
/// no `conda-meta`.
pub fn record_files(view: &impl FileView, prefix: &str) -> Result<Vec<String>, FsViewError> {
    Ok(view
        .read_dir(&meta_dir(prefix))?
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect())
}

/// Every record file of the environment at `prefix`, as bytes, by file name.
pub fn documents(view: &impl FileView, prefix: &str) -> Scan<Document> {
    let mut scan = Scan::default();
    let dir = meta_dir(prefix);
    let names = match record_files(view, prefix) {
        Ok(n) => n,
        Err(e) => {
            scan.problem(e);
            return scan;
        }
    };
    for name in names {
        let path = join(&dir, &name);
        match view.read(&path) {
            Ok(Some(bytes)) => scan.items.push(Document { path, bytes }),
            Ok(None) => {}
            Err(e) => scan.problem(e),
        }
    }
    scan
}

/// Every record of the environment at `prefix`, by file name.
pub fn records(view: &impl FileView, prefix: &str) -> Scan<CondaMetaRecord> {
    let docs = documents(view, prefix);
    let mut scan = Scan {
        items: Vec::with_capacity(docs.items.len()),
        problems: docs.problems,
    };
    for doc in docs.items {
        match parse_record(&doc.path, &doc.bytes) {
            Ok(r) => scan.items.push(r),
            Err(e) => scan.problem(e),
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsview::testing::MemView;

    #[test]
    fn reads_the_records_of_a_prefix() {
        let view = MemView::with(&[
            (
                "opt/conda/conda-meta/numpy-2.0.0-py311_0.json",
                r#"{"name":"numpy","version":"2.0.0","build":"py311_0","build_number":0,
                    "channel":"https://conda.anaconda.org/conda-forge/linux-64",
                    "subdir":"linux-64","url":"https://conda.anaconda.org/conda-forge/linux-64/numpy-2.0.0-py311_0.conda",
                    "sha256":"ab","md5":"cd","license":"BSD-3-Clause","files":["x"]}"#,
            ),
            (
                "opt/conda/conda-meta/six-1.0-0.json",
                r#"{"name":"six","version":"1.0","url":"https://repo.anaconda.com/pkgs/main/noarch/six-1.0-0.tar.bz2"}"#,
            ),
            ("opt/conda/conda-meta/history", "==> 2024 <==\n"),
            ("opt/conda/conda-meta/bad-1-0.json", "{"),
        ]);
        let scan = records(&view, "/opt/conda/");
        assert_eq!(scan.problems.len(), 1);
        assert!(
            scan.problems[0].to_string().contains("bad-1-0.json"),
            "{}",
            scan.problems[0]
        );
        let recs = scan.items;
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].name, "numpy");
        assert_eq!(recs[0].build, "py311_0");
        assert_eq!(recs[0].sha256.as_deref(), Some("ab"));
        assert_eq!(recs[0].md5.as_deref(), Some("cd"));
        assert_eq!(
            recs[0].channel_url().as_deref(),
            Some("https://conda.anaconda.org/conda-forge/linux-64")
        );
        assert_eq!(recs[1].build, "");
        assert_eq!(
            recs[1].channel_url().as_deref(),
            Some("https://repo.anaconda.com/pkgs/main/noarch")
        );
        let docs = documents(&view, "opt/conda").into_result().unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].path, "opt/conda/conda-meta/bad-1-0.json");
        assert!(records(&view, "/srv/none")
            .into_result()
            .unwrap()
            .is_empty());
        // What an index keeps of a record reads as the record.
        let kept = serde_json::to_string(&recs[0]).unwrap();
        assert_eq!(parse_record("x", kept.as_bytes()).unwrap(), recs[0]);
    }
}
