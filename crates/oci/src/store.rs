//! The local content store. It is itself an OCI image layout, so OCI tools can read it:
//!
//! ```text
//! $NBRT_HOME/oci-layout
//! $NBRT_HOME/index.json          names → manifests (annotation org.opencontainers.image.ref.name)
//! $NBRT_HOME/blobs/sha256/<hex>  manifests, configs, layers
//! $NBRT_HOME/tmp/                blobs being written (renamed into blobs/ once verified)
//! $NBRT_HOME/gc.lock             shared while a process works, exclusive while collecting
//! $NBRT_HOME/index.lock          exclusive around every change to index.json
//! $NBRT_HOME/refs/<kind>/<key>   other owners of blobs (the build cache): JSON {"blobs": [...]}
//! $NBRT_HOME/pins/<key>          images kept whatever their names (a site's registered
//!                                runtimes): JSON {"holder": "...", "manifest": <descriptor>}
//! $NBRT_HOME/snapshots/          the builder's unpacked layers
//! $NBRT_HOME/cache/<bucket>/     caches of other crates (see [`Bucket`])
//! ```
//!
//! Other crates never build paths inside the store themselves: they ask for an area
//! ([`Store::tmp`], [`Store::snapshot_root`], [`Store::cache`]) and keep references through a
//! [`RefKind`] of their own, whose payload type is checked on both ends.
//!
//! Blobs are verified while written and renamed into place, so a blob in `blobs/` is always
//! whole and correct, and two processes writing the same blob both succeed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingWriter};
use crate::error::{IoContext, OciError, Result};
use crate::fsutil::{open_locked, LockMode};
use crate::image::{unwrap_io, BlobSource, Image, ImageSink, Raw};
use crate::json::{to_canonical_vec, MAX_JSON_SIZE};
use crate::name::ImageName;
use crate::spec::{annotation, media, Descriptor, Index};

pub struct Store {
    root: PathBuf,
    gc_lock: File,
    /// Temporary files of dead processes removed when the store was opened (files, bytes):
    /// the next `gc` reports them.
    swept: std::sync::Mutex<(usize, u64)>,
}

/// A cache directory of the store, kept by the crate that names it; `nbrt gc` prunes each
/// through its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// uv's wheel and HTTP cache (the builder's pip step).
    Uv,
    /// Downloaded and extracted conda packages and repodata (the builder's conda step).
    Conda,
    /// Per-distribution pieces of pip layers (the builder's pip step).
    PipPieces,
    /// Layer indexes and package lists (`nbrt-inspect`). The version in the name is bumped
    /// when the cached shape or the set of captured files changes.
    Inspect,
}

impl Bucket {
    /// The bucket's directory, relative to the store root.
    fn dir(self) -> &'static str {
        match self {
            Bucket::Uv => "cache/uv",
            Bucket::Conda => "cache/conda",
            Bucket::PipPieces => "cache/pip-pieces",
            Bucket::Inspect => "cache/inspect-v4",
        }
    }
}

/// A kind of store reference: its name under `refs/` and the payload it carries. Each owner
/// declares its kinds beside the code that reads them, so a payload is written and read as
/// one type.
pub trait RefKind {
    /// Letters, digits, `-`, `_` and `.`.
    const NAME: &'static str;
    type Payload: serde::Serialize + serde::de::DeserializeOwned;
}

#[derive(serde::Deserialize)]
struct RefDoc {
    blobs: Vec<Digest>,
    #[serde(default)]
    payload: serde_json::Value,
}

/// An image kept in the store whatever becomes of its names: `gc` keeps it (manifest, config,
/// layers), [`Store::resolve`] finds it by ID or digest, and `nbrt rm` says who holds it. A
/// site pins each registered runtime's image under a key of its own.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pin {
    /// The pin's name under `pins/` (letters, digits, `-`, `_`, `.`), chosen by its holder.
    #[serde(skip)]
    pub key: String,
    /// Who holds it, for people: `runtime "nbrt scipy" of the site at /srv/site.db`.
    pub holder: String,
    /// The pinned image's manifest.
    pub manifest: Descriptor,
}

/// An image in the store with the names that point at it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub image: Image,
    pub names: Vec<ImageName>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    pub blobs_removed: usize,
    /// Bytes of the blobs removed.
    pub bytes_freed: u64,
    pub blobs_kept: usize,
    /// Temporary files of processes that died (a killed import's decompressed archive…).
    pub temp_files_removed: usize,
    pub temp_bytes_freed: u64,
    /// Pins honoured (see [`Pin`]): their images were kept, named or not.
    pub pins: usize,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Temporary files in the store's `tmp/` start with this, then the process ID.
const TEMP_PREFIX: &str = ".nbrt-";

impl Store {
    /// `$NBRT_HOME`, else `$XDG_DATA_HOME/nbrt`, else `~/.local/share/nbrt`.
    pub fn default_root() -> Result<PathBuf> {
        if let Some(p) = std::env::var_os("NBRT_HOME").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p).join("nbrt"));
        }
        match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => Ok(PathBuf::from(home).join(".local/share/nbrt")),
            None => Err(OciError::Format {
                path: PathBuf::from("~"),
                reason: "no NBRT_HOME, XDG_DATA_HOME or HOME to place the store in".to_string(),
            }),
        }
    }

    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("tmp")] {
            fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        }
        let gc_lock = open_locked(&root.join("gc.lock"), LockMode::Shared)?;
        let store = Self {
            root,
            gc_lock,
            swept: std::sync::Mutex::new((0, 0)),
        };
        let swept = store.sweep_dead_temps();
        if swept.0 > 0 {
            tracing::info!(
                "removed {} temporary files ({} bytes) of nbrt processes that died",
                swept.0,
                swept.1
            );
        }
        if let Ok(mut s) = store.swept.lock() {
            *s = swept;
        }
        if !store.root.join("oci-layout").exists() {
            store.write_atomic(&store.root.join("oci-layout"), OCI_LAYOUT)?;
        }
        if !store.root.join("index.json").exists() {
            let _guard = store.index_lock()?;
            if !store.root.join("index.json").exists() {
                store.write_index(&Index::empty())?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for files being written (same file system as the blobs, so a rename
    /// moves a finished file into place). Files there are named by [`Store::temp_prefix`];
    /// those of processes that died are removed when the store is next opened, and `gc`
    /// clears every leftover.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The prefix of this process's temporary files in [`Store::tmp`]: `.nbrt-<pid>-`.
    pub fn temp_prefix() -> String {
        format!("{TEMP_PREFIX}{}-", std::process::id())
    }

    /// A temporary file in [`Store::tmp`] named for this process.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&Self::temp_prefix())
            .tempfile_in(self.tmp())
            .io_context(|| "creating a temporary file in the store")
    }

    /// Remove temporary files whose process is gone (killed in the middle of an import, an
    /// export or a build). Returns how many and their bytes.
    fn sweep_dead_temps(&self) -> (usize, u64) {
        let mut out = (0, 0);
        let Ok(entries) = fs::read_dir(self.tmp()) else {
            return out;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_none_or(crate::fsutil::process_alive) {
                continue;
            }
            let freed = crate::fsutil::remove_counting(&e.path());
            out.0 += 1;
            out.1 += freed;
        }
        out
    }

    /// Where the builder keeps unpacked layers (not created here).
    pub fn snapshot_root(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// A cache directory (not created here).
    pub fn cache(&self, bucket: Bucket) -> PathBuf {
        self.root.join(bucket.dir())
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Write a file of the store (index, references) atomically.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        crate::fsutil::write_atomic(&self.tmp(), path, bytes)
    }

    /// Start writing a blob whose digest is not known yet (a layer being made).
    pub fn new_blob(&self) -> Result<BlobWriter<'_>> {
        let tmp = self.temp_file()?;
        Ok(BlobWriter {
            store: self,
            file: HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp)),
        })
    }

    /// Write a blob that must match `desc`; nothing lands in `blobs/` unless it does.
    /// Returns whether the blob was new.
    pub fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<bool> {
        if self.has_blob(&desc.digest) {
            std::io::copy(data, &mut std::io::sink())
                .map_err(|e| unwrap_io(e, || format!("reading blob {}", desc.digest)))?;
            return Ok(false);
        }
        let mut w = self.new_blob()?;
        let mut limited = data.take(desc.size.saturating_add(1));
        std::io::copy(&mut limited, &mut w)
            .map_err(|e| unwrap_io(e, || format!("writing blob {}", desc.digest)))?;
        w.commit_expecting(desc)?;
        Ok(true)
    }

    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !self.has_blob(&digest) {
            self.write_atomic(&self.blob_path(&digest), bytes)?;
        }
        Ok(digest)
    }

    /// Read a small blob (a JSON document) whole, checking its digest.
    pub fn read_json_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_JSON_SIZE {
            return Err(OciError::TooLarge {
                what: format!("document {}", desc.digest),
                size: desc.size,
                limit: MAX_JSON_SIZE,
            });
        }
        let path = self.blob_path(&desc.digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::BlobNotFound(desc.digest.to_string()))
            }
            Err(e) => {
                return Err(OciError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        desc.digest.verify(&Digest::of_bytes(&bytes), || {
            format!("stored blob {}", desc.digest)
        })?;
        Ok(bytes)
    }

    pub fn load_image(&self, manifest: &Descriptor) -> Result<Image> {
        if !media::is_manifest(&manifest.media_type) {
            return Err(OciError::Unsupported {
                what: "manifest media type in the store".to_string(),
                value: manifest.media_type.clone(),
            });
        }
        let manifest: Raw<crate::spec::Manifest> =
            Raw::from_bytes(self.read_json_blob(manifest)?, "image manifest")?;
        let config_desc = &manifest.value().config;
        let config = Raw::from_bytes(self.read_json_blob(config_desc)?, "image config")?;
        Image::from_parts(manifest, config)
    }

    fn index_lock(&self) -> Result<File> {
        open_locked(&self.root.join("index.lock"), LockMode::Exclusive)
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).io_context(|| format!("reading {}", path.display()))?;
        crate::json::parse_bounded(&bytes, &path.display().to_string())
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = to_canonical_vec(index, "store index")?;
        self.write_atomic(&self.root.join("index.json"), &bytes)
    }

    /// Point `name` at `image` (whose blobs must already be in the store).
    pub fn tag(&self, image: &Image, name: &ImageName) -> Result<()> {
        self.put_bytes(image.config.bytes())?;
        self.put_bytes(image.manifest.bytes())?;
        let _guard = self.index_lock()?;
        let mut index = self.index()?;
        let ref_name = name.to_string();
        index
            .manifests
            .retain(|d| d.annotations.get(annotation::REF_NAME) != Some(&ref_name));
        let mut desc = image.manifest_descriptor();
        desc.annotations
            .insert(annotation::REF_NAME.to_string(), ref_name);
        index.manifests.push(desc);
        index.manifests.sort_by(|a, b| {
            a.annotations
                .get(annotation::REF_NAME)
                .cmp(&b.annotations.get(annotation::REF_NAME))
        });
        self.write_index(&index)
    }

    /// Remove a name. Returns the manifest digest it pointed at.
    pub fn untag(&self, name: &ImageName) -> Result<Digest> {
        let _guard = self.index_lock()?;
        let mut index = self.index()?;
        let ref_name = name.to_string();
        let pos = index
            .manifests
            .iter()
            .position(|d| d.annotations.get(annotation::REF_NAME) == Some(&ref_name))
            .ok_or_else(|| OciError::NotFound(ref_name.clone()))?;
        let removed = index.manifests.remove(pos);
        self.write_index(&index)?;
        Ok(removed.digest)
    }

    /// Every named image, with all its names.
    pub fn list(&self) -> Result<Vec<StoredImage>> {
        let index = self.index()?;
        let mut by_digest: BTreeMap<Digest, (Descriptor, Vec<ImageName>)> = BTreeMap::new();
        for desc in &index.manifests {
            let names = desc
                .annotations
                .get(annotation::REF_NAME)
                .and_then(|n| ImageName::parse(n).ok());
            let slot = by_digest
                .entry(desc.digest.clone())
                .or_insert_with(|| (desc.clone(), Vec::new()));
            slot.1.extend(names);
        }
        let mut out = Vec::new();
        for (_, (desc, names)) in by_digest {
            out.push(StoredImage {
                image: self.load_image(&desc)?,
                names,
            });
        }
        out.sort_by(|a, b| a.names.cmp(&b.names));
        Ok(out)
    }

    /// Every named image ([`Store::list`]), then the pinned images ([`Pin`]) that have no
    /// name left.
    pub fn list_with_pinned(&self) -> Result<Vec<StoredImage>> {
        self.with_pinned(self.list()?)
    }

    /// `images` (the named ones) and the pinned images with no name left.
    fn with_pinned(&self, mut images: Vec<StoredImage>) -> Result<Vec<StoredImage>> {
        for pin in self.pins()? {
            if images
                .iter()
                .any(|i| i.image.digest() == &pin.manifest.digest)
            {
                continue;
            }
            match self.load_image(&pin.manifest) {
                Ok(image) => images.push(StoredImage {
                    image,
                    names: Vec::new(),
                }),
                Err(e) => tracing::debug!("pin {}: {e}", pin.key),
            }
        }
        Ok(images)
    }

    /// Find an image by `name[:tag]`, by `sha256:<hex>` (image ID or manifest digest), or by
    /// a unique prefix of at least 4 hex digits of either. An ID that several manifests
    /// share (one image compressed two ways) finds one of them, a named one first.
    /// Pinned images ([`Pin`]) that lost every name are found by ID or digest too.
    pub fn resolve(&self, reference: &str) -> Result<StoredImage> {
        // A name, or a whole ID or digest, found among the named images needs no pin read
        // (a site pins each of its runtimes: a thousand runtimes are a thousand pin files).
        // A short prefix always looks at the pinned images too, so that it is refused when
        // one of them shares it.
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let whole = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        let named = self.list()?;
        if let Ok(name) = ImageName::parse(reference) {
            if let Some(found) = named.iter().find(|i| i.names.contains(&name)) {
                return Ok(found.clone());
            }
        }
        if whole {
            if let Ok(found) = Self::resolve_among(&named, reference) {
                return Ok(found);
            }
        }
        Self::resolve_among(&self.with_pinned(named)?, reference)
    }

    /// [`Store::resolve`] among `images` (a [`Store::list_with_pinned`] taken once, for many
    /// lookups: listing reads every pin).
    pub fn resolve_among(images: &[StoredImage], reference: &str) -> Result<StoredImage> {
        if let Ok(name) = ImageName::parse(reference) {
            if let Some(found) = images.iter().find(|i| i.names.contains(&name)) {
                return Ok(found.clone());
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let is_hex = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        if is_hex {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<&StoredImage> = images
                .iter()
                .filter(|i| {
                    i.image.id().hex().starts_with(&hex) || i.image.digest().hex().starts_with(&hex)
                })
                .collect();
            // One image ID can have several manifests (the same config and layers,
            // compressed differently): the same image as Docker names it, so an ID finds
            // one of them, a named one first.
            let one_id = matches
                .first()
                .map(|f| f.image.id())
                .filter(|id| matches.iter().all(|i| i.image.id() == *id));
            match matches.as_slice() {
                [one] => return Ok((*one).clone()),
                [] => {}
                [first, ..] if one_id.is_some() => {
                    let named = matches.iter().find(|i| !i.names.is_empty());
                    return Ok((*named.unwrap_or(first)).clone());
                }
                _ => {
                    return Err(OciError::InvalidName {
                        name: reference.to_string(),
                        reason: format!("matches {} images; give more digits", matches.len()),
                    })
                }
            }
        }
        Err(OciError::NotFound(reference.to_string()))
    }

    fn ref_path(&self, kind: &str, key: &str) -> Result<PathBuf> {
        if !file_key_ok(kind) || !file_key_ok(key) {
            return Err(OciError::InvalidName {
                name: format!("{kind}/{key}"),
                reason: "store references are letters, digits, '-', '_' and '.'".to_string(),
            });
        }
        Ok(self.root.join("refs").join(kind).join(key))
    }

    fn pin_path(&self, key: &str) -> Result<PathBuf> {
        if !file_key_ok(key) {
            return Err(OciError::InvalidName {
                name: key.to_string(),
                reason: "pins are named with letters, digits, '-', '_' and '.'".to_string(),
            });
        }
        Ok(self.root.join("pins").join(key))
    }

    /// Pin `image` (already in the store) under `key` for `holder` (see [`Pin`]), replacing
    /// what that key pinned before.
    pub fn pin(&self, key: &str, image: &Image, holder: &str) -> Result<()> {
        let path = self.pin_path(key)?;
        self.put_bytes(image.config.bytes())?;
        self.put_bytes(image.manifest.bytes())?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
        }
        let pin = Pin {
            key: key.to_string(),
            holder: holder.to_string(),
            manifest: image.manifest_descriptor(),
        };
        let bytes = to_canonical_vec(&pin, "store pin")?;
        // Pinned already (a site pins its runtimes again at every start): nothing to write.
        if fs::read(&path).is_ok_and(|held| held == bytes) {
            return Ok(());
        }
        self.write_atomic(&path, &bytes)
    }

    /// Remove the pin `key`; whether there was one.
    pub fn unpin(&self, key: &str) -> Result<bool> {
        let path = self.pin_path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(OciError::Io {
                context: format!("removing {}", path.display()),
                source: e,
            }),
        }
    }

    /// Every pin, by key. An unreadable pin file is skipped with a warning (and so does not
    /// keep its image through `gc`).
    pub fn pins(&self) -> Result<Vec<Pin>> {
        let dir = self.root.join("pins");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(OciError::Io {
                    context: format!("listing {}", dir.display()),
                    source: e,
                })
            }
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(key) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !file_key_ok(&key) {
                continue;
            }
            let parsed = fs::read(e.path())
                .map_err(|err| err.to_string())
                .and_then(|b| {
                    crate::json::parse_bounded::<Pin>(&b, "store pin").map_err(|e| e.to_string())
                });
            match parsed {
                Ok(pin) => out.push(Pin { key, ..pin }),
                Err(err) => tracing::warn!("ignoring unreadable store pin {key}: {err}"),
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The pins that hold `image`.
    pub fn pins_of(&self, image: &Image) -> Result<Vec<Pin>> {
        Ok(self
            .pins()?
            .into_iter()
            .filter(|p| &p.manifest.digest == image.digest())
            .collect())
    }

    /// Record a reference of kind `K` that keeps `blobs` alive through `gc` (the build cache
    /// uses this), with its payload.
    pub fn put_ref<K: RefKind>(
        &self,
        key: &str,
        blobs: &[Digest],
        payload: &K::Payload,
    ) -> Result<()> {
        let payload = serde_json::to_value(payload).map_err(|e| OciError::Format {
            path: self.root.join("refs").join(K::NAME),
            reason: format!("cannot encode a {} reference: {e}", K::NAME),
        })?;
        self.put_ref_value(K::NAME, key, blobs, &payload)
    }

    /// Read a reference's payload, if it exists, all its blobs are still in the store and
    /// it has `K`'s shape (one written by another version of nbrt may not: that is a miss).
    pub fn get_ref<K: RefKind>(&self, key: &str) -> Result<Option<K::Payload>> {
        Ok(self.get_ref_value(K::NAME, key)?.and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| tracing::debug!("ignoring a {} reference {key}: {e}", K::NAME))
                .ok()
        }))
    }

    /// Remove every reference of kind `K` (e.g. to drop the build cache).
    pub fn clear_refs<K: RefKind>(&self) -> Result<usize> {
        let dir = self.ref_path(K::NAME, "x")?.with_file_name("");
        let mut n = 0;
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                if fs::remove_file(e.path()).is_ok() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    fn put_ref_value(
        &self,
        kind: &str,
        key: &str,
        blobs: &[Digest],
        payload: &serde_json::Value,
    ) -> Result<()> {
        let path = self.ref_path(kind, key)?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
        }
        let doc = serde_json::json!({ "blobs": blobs, "payload": payload });
        self.write_atomic(&path, &to_canonical_vec(&doc, "store reference")?)
    }

    fn get_ref_value(&self, kind: &str, key: &str) -> Result<Option<serde_json::Value>> {
        let path = self.ref_path(kind, key)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(OciError::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })
            }
        };
        let doc: RefDoc = crate::json::parse_bounded(&bytes, &path.display().to_string())?;
        if doc.blobs.iter().all(|d| self.has_blob(d)) {
            Ok(Some(doc.payload))
        } else {
            Ok(None)
        }
    }

    fn ref_blobs(&self) -> Result<BTreeSet<Digest>> {
        let mut out = BTreeSet::new();
        let Ok(kinds) = fs::read_dir(self.root.join("refs")) else {
            return Ok(out);
        };
        for kind in kinds.flatten() {
            let Ok(refs) = fs::read_dir(kind.path()) else {
                continue;
            };
            for r in refs.flatten() {
                let Ok(bytes) = fs::read(r.path()) else {
                    continue;
                };
                match crate::json::parse_bounded::<RefDoc>(&bytes, "store reference") {
                    Ok(doc) => out.extend(doc.blobs),
                    Err(e) => tracing::warn!(
                        "ignoring unreadable store reference {}: {e}",
                        r.path().display()
                    ),
                }
            }
        }
        Ok(out)
    }

    /// Delete every blob no named image, pinned image or reference uses. Waits until no other nbrt process is working
    /// in the store.
    pub fn gc(&self) -> Result<GcReport> {
        if let Err(std::fs::TryLockError::WouldBlock) = self.gc_lock.try_lock() {
            // A stopped or hung nbrt holds its shared lock: say why nothing happens.
            tracing::warn!(
                "waiting for the other nbrt processes using {} to finish (gc needs the store \
                 to itself)",
                self.root.display()
            );
        }
        self.gc_lock
            .lock()
            .io_context(|| "waiting for other nbrt processes to finish with the store")?;
        let mut result = self.collect(|_| true);
        if let (Ok(report), Ok(mut swept)) = (result.as_mut(), self.swept.lock()) {
            report.temp_files_removed += swept.0;
            report.temp_bytes_freed += swept.1;
            *swept = (0, 0);
        }
        self.gc_lock
            .lock_shared()
            .io_context(|| "relocking the store")?;
        result
    }

    /// Remove unreferenced blobs for which `candidate` says yes. Caller holds the gc lock.
    fn collect(&self, candidate: impl Fn(&Digest) -> bool) -> Result<GcReport> {
        let mut live: BTreeSet<Digest> = self.ref_blobs()?;
        let index = self.index()?;
        for desc in &index.manifests {
            live.insert(desc.digest.clone());
            let image = self.load_image(desc)?;
            live.insert(image.id().clone());
            live.extend(image.layers().iter().map(|l| l.digest.clone()));
        }
        let mut report = GcReport::default();
        for pin in self.pins()? {
            // A pin whose image is gone already keeps nothing (and is left for its holder).
            let Ok(image) = self.load_image(&pin.manifest) else {
                tracing::warn!(
                    "pin {} ({}): its image is not in the store",
                    pin.key,
                    pin.holder
                );
                continue;
            };
            live.insert(pin.manifest.digest.clone());
            live.insert(image.id().clone());
            live.extend(image.layers().iter().map(|l| l.digest.clone()));
            report.pins += 1;
        }
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).io_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.io_context(|| format!("listing {}", dir.display()))?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
                continue;
            };
            if live.contains(&digest) || !candidate(&digest) {
                report.blobs_kept += 1;
                continue;
            }
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path())
                .io_context(|| format!("removing {}", entry.path().display()))?;
            report.blobs_removed += 1;
            report.bytes_freed += size;
        }
        // With the exclusive lock held no one else is writing: leftovers are from crashes.
        if let Ok(tmp) = fs::read_dir(self.tmp()) {
            for entry in tmp.flatten() {
                let freed = crate::fsutil::remove_counting(&entry.path());
                report.temp_files_removed += 1;
                report.temp_bytes_freed += freed;
            }
        }
        Ok(report)
    }

    /// Remove the given blobs if no image uses them, but only if no other process is working
    /// in the store right now (otherwise gc will find them later).
    fn discard_if_unused(&self, blobs: &[Digest]) {
        if blobs.is_empty() || self.gc_lock.try_lock().is_err() {
            return;
        }
        let set: BTreeSet<&Digest> = blobs.iter().collect();
        if let Err(e) = self.collect(|d| set.contains(d)) {
            tracing::warn!("could not remove blobs of a failed write: {e}");
        }
        let _ = self.gc_lock.lock_shared();
    }

    /// A sink that writes an image into the store and names it.
    pub fn sink(&self, names: Vec<ImageName>) -> StoreSink<'_> {
        StoreSink {
            store: self,
            names,
            created: Vec::new(),
            done: false,
        }
    }
}

/// A name of a file the store keeps for others (a reference's kind or key, a pin's key):
/// letters, digits, `-`, `_` and `.`, not starting with a dot, at most 128 bytes.
fn file_key_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.starts_with('.')
}

impl BlobSource for Store {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let path = self.blob_path(&desc.digest);
        match File::open(&path) {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(OciError::BlobNotFound(desc.digest.to_string()))
            }
            Err(e) => Err(OciError::Io {
                context: format!("opening {}", path.display()),
                source: e,
            }),
        }
    }
}

/// A blob being written into the store's temporary area.
pub struct BlobWriter<'a> {
    store: &'a Store,
    file: HashingWriter<std::io::BufWriter<tempfile::NamedTempFile>>,
}

impl Write for BlobWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter<'_> {
    /// Move the blob into place under its digest.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let (buf, digest, size) = self.file.finish();
        Self::persist(self.store, buf, &digest)?;
        Ok((digest, size))
    }

    /// Move the blob into place only if it is exactly what `desc` says; otherwise the
    /// temporary file is dropped and the store is unchanged.
    pub fn commit_expecting(self, desc: &Descriptor) -> Result<()> {
        let (buf, digest, size) = self.file.finish();
        if size != desc.size {
            return Err(OciError::SizeMismatch {
                what: format!("blob {}", desc.digest),
                expected: desc.size,
                actual: size,
            });
        }
        desc.digest
            .verify(&digest, || format!("blob {}", desc.digest))?;
        Self::persist(self.store, buf, &digest)
    }

    fn persist(
        store: &Store,
        buf: std::io::BufWriter<tempfile::NamedTempFile>,
        digest: &Digest,
    ) -> Result<()> {
        let tmp = buf
            .into_inner()
            .map_err(|e| e.into_error())
            .io_context(|| "flushing blob")?;
        let path = store.blob_path(digest);
        tmp.persist(&path)
            .map_err(|e| e.error)
            .io_context(|| format!("renaming blob into {}", path.display()))?;
        Ok(())
    }
}

/// Writes an image into the store. If the copy fails before the image is recorded, the
/// blobs it added are removed again (unless another process may be using them).
pub struct StoreSink<'a> {
    store: &'a Store,
    names: Vec<ImageName>,
    created: Vec<Digest>,
    done: bool,
}

impl ImageSink for StoreSink<'_> {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.store.has_blob(&desc.digest))
    }

    fn put_blob(&mut self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        if self.store.put_blob(desc, data)? {
            self.created.push(desc.digest.clone());
        }
        Ok(())
    }

    fn put_image(&mut self, image: &Image) -> Result<()> {
        for name in &self.names {
            self.store.tag(image, name)?;
        }
        if self.names.is_empty() {
            self.store.put_bytes(image.config.bytes())?;
            self.store.put_bytes(image.manifest.bytes())?;
        }
        self.done = true;
        Ok(())
    }
}

impl StoreSink<'_> {
    /// Record a blob this sink wrote by other means, so a failure removes it too.
    pub fn track(&mut self, digest: Digest) {
        self.created.push(digest);
    }
}

impl Drop for StoreSink<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.discard_if_unused(&self.created);
        }
    }
}
