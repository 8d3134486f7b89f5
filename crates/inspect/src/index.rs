//! One layer, read once: every entry with its metadata and a digest of its content, plus the
//! few small files the rest of the crate reads (package metadata, passwd, launchers), reduced
//! to what is used and bounded in size. The layer is verified against its diff ID while it is
//! read. Indexes are cached in the store under `cache/inspect-v4/<diff ID hex>.json` (the
//! store's [`nbrt_oci::Bucket::Inspect`]), so a layer shared by many images is read once.
//!
//! What a captured file is reduced to is what the shared readers of [`nbrt_oci::facts`] read
//! of it, so they give the same answer on the view of these indexes as on the unpacked
//! layers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nbrt_oci::digest::{Hasher, HashingReader};
use nbrt_oci::facts::conda_meta::CondaMetaRecord;
use nbrt_oci::facts::{dist_info, dpkg};
use nbrt_oci::image::{open_verified, unwrap_io};
use nbrt_oci::layer::compression::{decompress, Compression};
use nbrt_oci::layer::reader::{read_layer, EntryKind};
use nbrt_oci::spec::Descriptor;
use nbrt_oci::{Digest, OciError, Store};
use serde::{Deserialize, Serialize};

use crate::error::{io, InspectError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Symlink,
    #[serde(rename = "h")]
    Hardlink,
    #[serde(rename = "c")]
    Device,
    #[serde(rename = "p")]
    Fifo,
    #[serde(rename = "w")]
    Whiteout,
    #[serde(rename = "o")]
    Opaque,
}

/// One entry of a layer (field names short: a big layer has tens of thousands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    #[serde(rename = "p")]
    pub path: String,
    #[serde(rename = "k")]
    pub kind: Kind,
    #[serde(rename = "m")]
    pub mode: u32,
    #[serde(rename = "u")]
    pub uid: u64,
    #[serde(rename = "g")]
    pub gid: u64,
    #[serde(rename = "s", default)]
    pub size: u64,
    /// Hex SHA-256 of a regular file's content (hard links: of their target's).
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Symlink target as written, or the hard link's target path.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerIndex {
    pub diff_id: Digest,
    pub entries: Vec<FileMeta>,
    /// Captured files (see [`capture_kind`]), reduced, by path.
    pub captured: BTreeMap<String, String>,
    /// Files that matched but could not be captured (too large, unreadable), with the reason.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What is kept of a file the crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// `conda-meta/<dist>.json`: reduced to the fields a package record needs.
    CondaMeta,
    /// `METADATA`, `PKG-INFO`, or an `.egg-info` file: the header block only.
    PyMetadata,
    /// `*.dist-info/INSTALLER`.
    Installer,
    /// `*.dist-info/WHEEL` (the tags of the wheel a distribution came from).
    Wheel,
    /// `var/lib/dpkg/status`, `status.d/*`: the fields of each paragraph we use.
    Dpkg,
    /// Small text files read by checks.
    Text,
}

impl Capture {
    fn limit(self) -> u64 {
        match self {
            Capture::CondaMeta => 256 << 20,
            Capture::PyMetadata => 16 << 20,
            Capture::Installer => 4 << 10,
            Capture::Wheel => 64 << 10,
            Capture::Dpkg => 256 << 20,
            Capture::Text => 1 << 20,
        }
    }
}

/// Files read by the checks, exactly.
const TEXT_FILES: &[&str] = &[
    "etc/passwd",
    "etc/group",
    "etc/os-release",
    "usr/lib/os-release",
    "usr/local/bin/bootstrap-kernel.sh",
    "usr/local/bin/start.sh",
    "usr/local/bin/start-notebook.py",
    "usr/local/bin/start-notebook.sh",
    "usr/local/bin/start-singleuser.py",
    "usr/local/bin/start-singleuser.sh",
];

/// Which files are captured, by path alone (so the answer is the same in every layer).
pub fn capture_kind(path: &str) -> Option<Capture> {
    let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
    let parent = dir.rsplit('/').next().unwrap_or(dir);
    if parent == "conda-meta" && base.ends_with(".json") {
        return Some(Capture::CondaMeta);
    }
    let in_site = |d: &str| {
        d.rsplit_once('/')
            .map(|(p, _)| p)
            .is_some_and(|p| p.ends_with("site-packages"))
    };
    if parent.ends_with(".dist-info") && in_site(dir) {
        return match base {
            "METADATA" => Some(Capture::PyMetadata),
            "INSTALLER" => Some(Capture::Installer),
            "WHEEL" => Some(Capture::Wheel),
            _ => None,
        };
    }
    if parent.ends_with(".egg-info") && base == "PKG-INFO" && in_site(dir) {
        return Some(Capture::PyMetadata);
    }
    if base.ends_with(".egg-info") && dir.ends_with("site-packages") {
        // distutils writes the metadata as a single file
        return Some(Capture::PyMetadata);
    }
    if path == "var/lib/dpkg/status" || dir == "var/lib/dpkg/status.d" {
        return Some(Capture::Dpkg);
    }
    if TEXT_FILES.contains(&path)
        || is_server_config(dir, base)
        || (dir.starts_with("usr/local/bin/kernel-launchers/") && dir.ends_with("/scripts"))
        || is_kernel_json(path)
    {
        return Some(Capture::Text);
    }
    None
}

/// A system-wide Jupyter Server config file (`etc/jupyter`, `usr/local/etc/jupyter`, an
/// environment's `etc/jupyter`): where images keep the server's defaults (NB_PREFIX, …).
fn is_server_config(dir: &str, base: &str) -> bool {
    base == "jupyter_server_config.py" && (dir == "etc/jupyter" || dir.ends_with("/etc/jupyter"))
}

fn is_kernel_json(path: &str) -> bool {
    path.ends_with("/kernel.json") && path.contains("share/jupyter/kernels/")
}

/// Keep only what is used of a captured file.
fn reduce(kind: Capture, bytes: &[u8]) -> std::result::Result<String, String> {
    match kind {
        Capture::CondaMeta => {
            let rec: CondaMetaRecord = serde_json::from_slice(bytes)
                .map_err(|e| format!("not a conda-meta record: {e}"))?;
            serde_json::to_string(&rec).map_err(|e| e.to_string())
        }
        Capture::PyMetadata => {
            Ok(dist_info::header_block(&String::from_utf8_lossy(bytes)).to_string())
        }
        Capture::Installer | Capture::Wheel | Capture::Text => {
            Ok(String::from_utf8_lossy(bytes).into_owned())
        }
        Capture::Dpkg => Ok(dpkg::reduce(&String::from_utf8_lossy(bytes))),
    }
}

impl LayerIndex {
    /// Read a layer blob (verified against its descriptor and its diff ID) into an index.
    pub fn read(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<Self> {
        let compression = Compression::from_media_type(&layer.media_type)?;
        let blob = open_verified(store, layer)?;
        let mut tar = HashingReader::new(decompress(blob, compression)?);
        let mut entries = Vec::new();
        let mut captured = BTreeMap::new();
        let mut warnings = Vec::new();
        // What each path is so far (a hard link shares its target's inode: a file's content,
        // mode and owners, or a symlink, a device…).
        let mut inodes: HashMap<String, FileMeta> = HashMap::new();
        // Which entry a captured file came from (the last entry of a path wins).
        let mut captured_from: HashMap<String, usize> = HashMap::new();
        let outcome = read_layer(&mut tar, None, |entry, data| {
            let index = entries.len();
            let (kind, link) = match &entry.kind {
                EntryKind::File => (Kind::File, None),
                EntryKind::Dir => (Kind::Dir, None),
                EntryKind::Symlink(t) => (Kind::Symlink, Some(t.clone())),
                EntryKind::Hardlink(t) => (Kind::Hardlink, Some(t.clone())),
                EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => {
                    (Kind::Device, None)
                }
                EntryKind::Fifo => (Kind::Fifo, None),
                EntryKind::Whiteout => (Kind::Whiteout, None),
                EntryKind::Opaque => (Kind::Opaque, None),
            };
            let mut meta = FileMeta {
                path: entry.path.clone(),
                kind,
                mode: entry.mode,
                uid: entry.uid,
                gid: entry.gid,
                size: entry.size,
                digest: None,
                link,
            };
            match kind {
                Kind::File => {
                    let want = capture_kind(&entry.path);
                    let mut hasher = Hasher::new();
                    let mut kept = Vec::new();
                    let limit = want.map(Capture::limit).unwrap_or(0);
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = data.read(&mut buf).map_err(|e| OciError::Io {
                            context: format!("reading {:?}", entry.path),
                            source: e,
                        })?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        if want.is_some() && (kept.len() as u64) < limit {
                            kept.extend_from_slice(&buf[..n]);
                        }
                    }
                    let (digest, _) = hasher.finish();
                    let hex = digest.hex().to_string();
                    if let Some(c) = want {
                        if entry.size > limit {
                            warnings.push(format!(
                                "{}: {} bytes, over the limit of {limit}; not read",
                                entry.path, entry.size
                            ));
                        } else {
                            match reduce(c, &kept) {
                                Ok(text) => {
                                    captured.insert(entry.path.clone(), text);
                                    captured_from.insert(entry.path.clone(), index);
                                }
                                Err(e) => warnings.push(format!("{}: {e}", entry.path)),
                            }
                        }
                    }
                    meta.digest = Some(hex);
                }
                Kind::Hardlink => {
                    let target = meta.link.clone().unwrap_or_default();
                    if let Some(t) = inodes.get(&target) {
                        (meta.mode, meta.uid, meta.gid) = (t.mode, t.uid, t.gid);
                        match t.kind {
                            Kind::File | Kind::Hardlink => {
                                meta.digest = t.digest.clone();
                                meta.size = t.size;
                            }
                            // A hard link to a symlink (or a device, a fifo) is one.
                            other => {
                                meta.kind = other;
                                meta.link = t.link.clone();
                            }
                        }
                    }
                    if capture_kind(&entry.path).is_some() {
                        if let Some(text) = captured.get(&target).cloned() {
                            captured.insert(entry.path.clone(), text);
                            captured_from.insert(entry.path.clone(), index);
                        }
                    }
                }
                _ => {}
            }
            if !matches!(meta.kind, Kind::Whiteout | Kind::Opaque) {
                inodes.insert(meta.path.clone(), meta.clone());
            }
            entries.push(meta);
            Ok(())
        })
        .map_err(|e| {
            InspectError::Oci(OciError::InvalidLayer(format!(
                "layer {}: {e}",
                layer.digest
            )))
        })?;
        // What the layer's entries came to: an entry a later one replaced is not indexed.
        let mut index = 0usize;
        entries.retain(|_| {
            index += 1;
            outcome.kept[index - 1]
        });
        let finals: HashMap<&str, usize> = outcome
            .kept
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .zip(entries.iter())
            .filter(|(_, e)| !matches!(e.kind, Kind::Whiteout | Kind::Opaque))
            .map(|(i, e)| (e.path.as_str(), i))
            .collect();
        captured.retain(|path, _| {
            captured_from
                .get(path)
                .is_some_and(|i| finals.get(path.as_str()) == Some(i))
        });
        std::io::copy(&mut tar, &mut std::io::sink())
            .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)))?;
        let (actual, _) = tar.finish();
        diff_id.verify(&actual, || format!("diff ID of layer {}", layer.digest))?;
        Ok(Self {
            diff_id: diff_id.clone(),
            entries,
            captured,
            warnings,
        })
    }

    fn cache_path(store: &Store, diff_id: &Digest) -> PathBuf {
        store
            .cache(nbrt_oci::Bucket::Inspect)
            .join(format!("{}.json", diff_id.hex()))
    }

    /// The index of a layer, from the cache when it is there, else read and cached.
    pub fn load(store: &Store, layer: &Descriptor, diff_id: &Digest) -> Result<Self> {
        let path = Self::cache_path(store, diff_id);
        if let Ok(bytes) = std::fs::read(&path) {
            match serde_json::from_slice::<LayerIndex>(&bytes) {
                Ok(index) if &index.diff_id == diff_id => return Ok(index),
                _ => tracing::warn!("ignoring a bad cached index {}", path.display()),
            }
        }
        let index = Self::read(store, layer, diff_id)?;
        if let Err(e) = index.save(store, &path) {
            tracing::warn!("cannot cache the index of layer {diff_id}: {e}");
        }
        Ok(index)
    }

    fn save(&self, store: &Store, path: &Path) -> Result<()> {
        let dir = store.cache(nbrt_oci::Bucket::Inspect);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let bytes = serde_json::to_vec(self).map_err(|e| InspectError::Invalid(e.to_string()))?;
        nbrt_oci::fsutil::write_atomic(&store.tmp(), path, &bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_paths() {
        assert_eq!(
            capture_kind("opt/conda/conda-meta/numpy-2.0-py311_0.json"),
            Some(Capture::CondaMeta)
        );
        assert_eq!(
            capture_kind("opt/conda/lib/python3.11/site-packages/six-1.17.0.dist-info/METADATA"),
            Some(Capture::PyMetadata)
        );
        assert_eq!(
            capture_kind("opt/conda/lib/python3.11/site-packages/six-1.17.0.dist-info/INSTALLER"),
            Some(Capture::Installer)
        );
        assert_eq!(
            capture_kind("opt/conda/lib/python3.11/site-packages/six-1.17.0.dist-info/WHEEL"),
            Some(Capture::Wheel)
        );
        assert_eq!(
            capture_kind("usr/lib/python3/dist-packages/six-1.17.0.dist-info/METADATA"),
            None
        );
        assert_eq!(
            capture_kind("opt/conda/lib/python3.11/site-packages/foo-1.0.egg-info"),
            Some(Capture::PyMetadata)
        );
        assert_eq!(
            capture_kind("opt/conda/lib/python3.11/site-packages/foo-1.0.egg-info/PKG-INFO"),
            Some(Capture::PyMetadata)
        );
        assert_eq!(capture_kind("var/lib/dpkg/status"), Some(Capture::Dpkg));
        assert_eq!(
            capture_kind("var/lib/dpkg/status.d/base"),
            Some(Capture::Dpkg)
        );
        assert_eq!(capture_kind("var/lib/dpkg/status-old"), None);
        assert_eq!(capture_kind("etc/passwd"), Some(Capture::Text));
        assert_eq!(
            capture_kind("usr/local/bin/kernel-launchers/python/scripts/launch_ipykernel.py"),
            Some(Capture::Text)
        );
        assert_eq!(
            capture_kind("opt/conda/share/jupyter/kernels/python3/kernel.json"),
            Some(Capture::Text)
        );
        assert_eq!(capture_kind("usr/bin/python3"), None);
    }
}
