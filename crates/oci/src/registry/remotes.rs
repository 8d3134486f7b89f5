//! `$NBRT_HOME/remotes.json`: which repositories hold which blobs, remembered by every push
//! and pull (under `remotes.lock`) so a later push to another repository of the same
//! registry can mount a blob instead of uploading it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Result;
use crate::json::{parse_bounded, to_canonical_vec};
use crate::store::Store;

/// How many repositories are remembered per blob.
const MAX_REPOS_PER_BLOB: usize = 8;
/// How many blobs `remotes.json` remembers (first forgetting blobs no longer in the store).
/// With [`MAX_REPOS_PER_BLOB`] this keeps the file well under the JSON size limit.
const MAX_REMEMBERED_BLOBS: usize = 10_000;

/// `$NBRT_HOME/remotes.json`: blob digest → repositories (`host/repository`, most recent
/// first) known to hold it. A hint for cross-repository mounts, never trusted for content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RemoteRecord {
    #[serde(default)]
    blobs: BTreeMap<Digest, Vec<String>>,
}

impl RemoteRecord {
    fn path(store: &Store) -> PathBuf {
        store.root().join("remotes.json")
    }

    /// The record, or an empty one when it is missing or unreadable (it is only a hint).
    pub(super) fn load(store: &Store) -> Self {
        let path = Self::path(store);
        match std::fs::read(&path) {
            Ok(bytes) => parse_bounded(&bytes, &path.display().to_string()).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}: {e}", path.display());
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Other repositories of `host` known to hold `digest`.
    pub(super) fn sources(&self, digest: &Digest, host: &str, except: &str) -> Vec<String> {
        let prefix = format!("{host}/");
        self.blobs
            .get(digest)
            .into_iter()
            .flatten()
            .filter(|k| k.as_str() != except)
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    /// Record that `repo_key` holds `digests`: read, change and replace the file under
    /// `remotes.lock`, so concurrent pushes and pulls do not lose each other's entries.
    pub(super) fn remember(store: &Store, digests: &[Digest], repo_key: &str) -> Result<()> {
        let _lock = crate::fsutil::open_locked(
            &store.root().join("remotes.lock"),
            crate::fsutil::LockMode::Exclusive,
        )?;
        let mut record = Self::load(store);
        for d in digests {
            let repos = record.blobs.entry(d.clone()).or_default();
            repos.retain(|k| k != repo_key);
            repos.insert(0, repo_key.to_string());
            repos.truncate(MAX_REPOS_PER_BLOB);
        }
        if record.blobs.len() > MAX_REMEMBERED_BLOBS {
            record.blobs.retain(|d, _| store.has_blob(d));
        }
        if record.blobs.len() > MAX_REMEMBERED_BLOBS {
            let keep: BTreeSet<&Digest> = digests.iter().collect();
            let mut excess = record.blobs.len() - MAX_REMEMBERED_BLOBS;
            record.blobs.retain(|d, _| {
                if excess > 0 && !keep.contains(d) {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        let bytes = to_canonical_vec(&record, "remotes.json")?;
        store.write_atomic(&Self::path(store), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Digest::of_bytes(b"a");
        let b = Digest::of_bytes(b"b");
        RemoteRecord::remember(&store, &[a.clone(), b.clone()], "h:1/one").unwrap();
        RemoteRecord::remember(&store, std::slice::from_ref(&a), "h:1/two").unwrap();
        RemoteRecord::remember(&store, std::slice::from_ref(&a), "other/three").unwrap();
        let record = RemoteRecord::load(&store);
        assert_eq!(
            record.sources(&a, "h:1", "h:1/one"),
            vec!["two".to_string()]
        );
        assert_eq!(
            record.sources(&a, "h:1", "h:1/x"),
            vec!["two".to_string(), "one".to_string()]
        );
        assert_eq!(record.sources(&b, "h:1", "h:1/one"), Vec::<String>::new());
        assert_eq!(record.sources(&b, "other", "other/x"), Vec::<String>::new());
        // An unreadable record is an empty hint, not an error.
        std::fs::write(dir.path().join("remotes.json"), b"{not json").unwrap();
        assert!(RemoteRecord::load(&store).blobs.is_empty());
    }
}
