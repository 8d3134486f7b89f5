//! The layer cache: every step's layer is kept in the store under a key made of the layers
//! below it, the step's definition and the content of its inputs (and, for steps whose
//! commands see it, the image's environment; in a `--locked` build, the lock's pins).

use std::fs;
use std::path::{Path, PathBuf};

use nbrt_oci::digest::Hasher;
use nbrt_oci::spec::{source_date_epoch, Descriptor};
use nbrt_oci::{Digest, RefKind, Store};
use serde::{Deserialize, Serialize};

use crate::error::{BuildError, IoContext, Result};
use crate::lock::StepLock;
use crate::steps::Step;

/// Bumped when a step's output for the same inputs changes.
const CACHE_VERSION: &str = "nbrt-build/3";

/// What the cache keeps for a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedStep {
    pub layer: Descriptor,
    pub diff_id: Digest,
    pub created_by: String,
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

/// The cache key of `step` on the layers `parent` (diff IDs, bottom first).
pub fn step_key(
    parent: &[Digest],
    step: &Step,
    env: &[String],
    pins: Option<&StepLock>,
    inputs: &[PathBuf],
) -> Result<String> {
    let mut h = Hasher::new();
    let mut doc = serde_json::json!({ "v": CACHE_VERSION, "parent": parent, "step": step,
        "sde": source_date_epoch() });
    // Commands in the sandbox see the environment; steps that write files directly do not.
    if step.kind().sees_env() {
        doc["env"] = serde_json::json!(env);
    }
    // A locked build installs the lock's pins: its layers are cached apart.
    if let Some(p) = pins {
        doc["locked"] = serde_json::to_value(p).map_err(|e| BuildError::Lock(e.to_string()))?;
    }
    h.update(&nbrt_oci::json::to_canonical_vec(&doc, "step key")?);
    for p in inputs {
        hash_path(p, &mut h)?;
    }
    Ok(h.finish().0.hex().to_string())
}
