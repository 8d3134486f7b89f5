//! The layer cache: every step's layer is kept in the store under its cache key
//! ([`crate::steps::Step::cache_key`]), and the hashing of input files that keys use.

use std::fs;
use std::path::{Path, PathBuf};

use nbrt_oci::digest::Hasher;
use nbrt_oci::spec::Descriptor;
use nbrt_oci::{Digest, RefKind, Store};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// What the cache keeps for a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedStep {
    pub layer: Descriptor,
    pub diff_id: Digest,
    pub created_by: String,
    /// The step's time ([`crate::epoch`]): its layer's newest file time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// The build cache: a step's layer under its cache key.
struct BuildCache;
impl RefKind for BuildCache {
    const NAME: &'static str = "build-cache";
    type Payload = CachedStep;
}

/// The layer cached under `key`.
pub fn get(store: &Store, key: &str) -> Result<Option<CachedStep>> {
    Ok(store.get_ref::<BuildCache>(key)?)
}

/// Keep `entry` (and its layer) under `key`.
pub fn put(store: &Store, key: &str, entry: &CachedStep) -> Result<()> {
    store.put_ref::<BuildCache>(key, std::slice::from_ref(&entry.layer.digest), entry)?;
    Ok(())
}

/// Hash a file or a directory tree (names, sizes, contents, modes) into `hasher`.
pub fn hash_path(path: &Path, hasher: &mut Hasher) -> Result<()> {
    let meta = fs::metadata(path).io_context(|| format!("reading {}", path.display()))?;
    if meta.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(path)
            .io_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for n in names {
            hasher.update(
                n.file_name()
                    .map(|f| f.as_encoded_bytes())
                    .unwrap_or_default(),
            );
            hash_path(&n, hasher)?;
        }
    } else {
        let bytes = fs::read(path).io_context(|| format!("reading {}", path.display()))?;
        hasher.update(&(bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
        hasher.update(&std::os::unix::fs::PermissionsExt::mode(&meta.permissions()).to_le_bytes());
    }
    Ok(())
}
