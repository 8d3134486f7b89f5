//! Which runtime file made an image: every build records it (by manifest digest), so that
//! `nbrt rebase IMAGE` finds the steps of an image it is given by name.

use std::path::PathBuf;

use nbrt_oci::{Image, RefKind, Store};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::runtime_file::RuntimeFile;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BuildRecord {
    runtime_file: PathBuf,
}

struct Recorded;
impl RefKind for Recorded {
    const NAME: &'static str = "build-record";
    type Payload = BuildRecord;
}

/// Remember that `rt` made `image`.
pub fn record_build(store: &Store, rt: &RuntimeFile, image: &Image) -> Result<()> {
    let file = std::fs::canonicalize(&rt.path).unwrap_or_else(|_| rt.path.clone());
    store.put_ref::<Recorded>(
        image.digest().hex(),
        &[],
        &BuildRecord { runtime_file: file },
    )?;
    Ok(())
}

/// The runtime file that made `image`, if this store's builds made it.
pub fn runtime_file_of(store: &Store, image: &Image) -> Result<Option<PathBuf>> {
    Ok(store
        .get_ref::<Recorded>(image.digest().hex())?
        .map(|r| r.runtime_file))
}
