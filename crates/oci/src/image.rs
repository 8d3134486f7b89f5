//! An image, wherever it lives: its manifest and config as exact bytes, and its blobs opened
//! on demand through a [`BlobSource`]. Places that hold images read into this shape and write
//! from it, so copying between any two places is one function ([`copy_image`]).

use std::collections::BTreeMap;
use std::io::{self, Read};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::digest::{Digest, Hasher};
use crate::error::{OciError, Result};
use crate::json::{parse_bounded, to_canonical_vec};
use crate::layer::compression::{decompress, Compression};
use crate::progress::Progress;
use crate::spec::{media, Descriptor, ImageConfig, Manifest};

/// A JSON document together with the exact bytes it came from. Documents we did not change
/// are never serialized again: their digest covers those bytes.
#[derive(Debug, Clone)]
pub struct Raw<T> {
    value: T,
    bytes: Vec<u8>,
    digest: Digest,
}

impl<T: DeserializeOwned + Serialize> Raw<T> {
    pub fn from_bytes(bytes: Vec<u8>, what: &str) -> Result<Self> {
        let value = parse_bounded(&bytes, what)?;
        let digest = Digest::of_bytes(&bytes);
        Ok(Self {
            value,
            bytes,
            digest,
        })
    }

    /// Serialize canonically (sorted keys, compact).
    pub fn from_value(value: T, what: &str) -> Result<Self> {
        let bytes = to_canonical_vec(&value, what)?;
        let digest = Digest::of_bytes(&bytes);
        Ok(Self {
            value,
            bytes,
            digest,
        })
    }
}

impl<T> Raw<T> {
    pub fn value(&self) -> &T {
        &self.value
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

/// A single-platform image: manifest plus config.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Raw<Manifest>,
    pub config: Raw<ImageConfig>,
}

impl Image {
    /// The labels of its config (none when it has no config section).
    pub fn labels(&self) -> std::collections::BTreeMap<String, String> {
        self.config
            .value()
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }

    /// Assemble from documents read elsewhere, checking that they belong together.
    pub fn from_parts(manifest: Raw<Manifest>, config: Raw<ImageConfig>) -> Result<Self> {
        let image = Self { manifest, config };
        image.check_documents()?;
        Ok(image)
    }

    /// Build a new OCI image from a config and the descriptors of its layers. The manifest is
    /// written canonically, so the same inputs always give the same digest.
    pub fn assemble(
        config: ImageConfig,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Self> {
        Self::around_config(
            Raw::from_value(config, "image config")?,
            layers,
            annotations,
        )
    }

    /// Like [`Image::assemble`], keeping config bytes read elsewhere exactly as they are
    /// (so the image ID does not change).
    pub fn around_config(
        config: Raw<ImageConfig>,
        layers: Vec<Descriptor>,
        annotations: BTreeMap<String, String>,
    ) -> Result<Self> {
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_string()),
            config: Descriptor::new(
                media::OCI_CONFIG,
                config.digest().clone(),
                config.bytes().len() as u64,
            ),
            layers,
            annotations,
            extra: BTreeMap::new(),
        };
        Self::from_parts(Raw::from_value(manifest, "image manifest")?, config)
    }

    /// The image ID Docker shows on its classic store: the config digest.
    pub fn id(&self) -> &Digest {
        self.config.digest()
    }

    /// The manifest digest: the image's identity in registries and OCI layouts.
    pub fn digest(&self) -> &Digest {
        self.manifest.digest()
    }

    pub fn layers(&self) -> &[Descriptor] {
        &self.manifest.value().layers
    }

    pub fn diff_ids(&self) -> &[Digest] {
        &self.config.value().rootfs.diff_ids
    }

    pub fn media_type(&self) -> &str {
        self.manifest
            .value()
            .media_type
            .as_deref()
            .unwrap_or(media::OCI_MANIFEST)
    }

    pub fn manifest_descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type(),
            self.digest().clone(),
            self.manifest.bytes().len() as u64,
        )
    }

    /// Total size of the layer blobs as stored.
    pub fn size(&self) -> u64 {
        self.layers().iter().map(|l| l.size).sum()
    }

    /// Chain IDs of the layers (Docker's identity of a layer stack).
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::new();
        for d in self.diff_ids() {
            let next = match out.last() {
                None => d.clone(),
                Some(prev) => Digest::of_bytes(format!("{prev} {d}").as_bytes()),
            };
            out.push(next);
        }
        out
    }

    /// Invariants that need no blob: the config descriptor matches the config bytes, media
    /// types are known, and there is one diff ID per layer.
    fn check_documents(&self) -> Result<()> {
        let m = self.manifest.value();
        if m.schema_version != 2 {
            return Err(OciError::InvalidImage(format!(
                "manifest schemaVersion is {}, expected 2",
                m.schema_version
            )));
        }
        if let Some(mt) = &m.media_type {
            if !media::is_manifest(mt) {
                return Err(OciError::InvalidImage(format!(
                    "manifest media type {mt:?} is not an image manifest"
                )));
            }
        }
        let cfg = &m.config;
        self.config
            .digest()
            .verify(&cfg.digest, || "image config".to_string())
            .map_err(|_| {
                OciError::InvalidImage(format!(
                    "manifest names config {} but the config bytes hash to {}",
                    cfg.digest,
                    self.config.digest()
                ))
            })?;
        if cfg.size != self.config.bytes().len() as u64 {
            return Err(OciError::InvalidImage(format!(
                "manifest says the config is {} bytes, it is {}",
                cfg.size,
                self.config.bytes().len()
            )));
        }
        if m.layers.len() != self.diff_ids().len() {
            return Err(OciError::InvalidImage(format!(
                "manifest lists {} layers but the config lists {} diff IDs",
                m.layers.len(),
                self.diff_ids().len()
            )));
        }
        for layer in &m.layers {
            Compression::from_media_type(&layer.media_type)?;
        }
        Ok(())
    }
}

/// Anything that can hand out an image's blobs: the store, a layout directory, an archive.
pub trait BlobSource {
    /// Open a blob. Implementations need not verify it; [`open_verified`] does.
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;
}

/// Anything an image can be written to.
pub trait ImageSink {
    /// Whether the sink already holds this blob (so a copy can skip it).
    fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Take a blob. `data` is a verifying reader: it fails at the end when the content does
    /// not match `desc`, and the sink must then keep nothing of it.
    fn put_blob(&mut self, desc: &Descriptor, data: &mut dyn Read) -> Result<()>;
    /// Record the image (manifest and config) once all its blobs are in.
    fn put_image(&mut self, image: &Image) -> Result<()>;
}

/// Open a blob so that reading it fails unless it has exactly the descriptor's size and digest.
pub fn open_verified<'a>(
    source: &'a dyn BlobSource,
    desc: &Descriptor,
) -> Result<VerifyingReader<Box<dyn Read + Send + 'a>>> {
    Ok(VerifyingReader::new(source.open_blob(desc)?, desc))
}

/// A reader that checks size and digest against a descriptor. It refuses to read past the
/// declared size and reports a mismatch as an error on the read that reaches the end.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Digest,
    size: u64,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, desc: &Descriptor) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
            expected: desc.digest.clone(),
            size: desc.size,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if self.hasher.len() > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                OciError::SizeMismatch {
                    what: format!("blob {}", self.expected),
                    expected: self.size,
                    actual: self.hasher.len(),
                },
            ));
        }
        if n == 0 {
            self.done = true;
            let (actual, len) = std::mem::take(&mut self.hasher).finish();
            if len != self.size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    OciError::SizeMismatch {
                        what: format!("blob {}", self.expected),
                        expected: self.size,
                        actual: len,
                    },
                ));
            }
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    OciError::DigestMismatch {
                        what: "blob".to_string(),
                        expected: self.expected.to_string(),
                        actual: actual.to_string(),
                    },
                ));
            }
        }
        Ok(n)
    }
}

/// Turn an I/O error that carries one of our errors (from a verifying reader) back into it.
pub fn unwrap_io(err: io::Error, context: impl FnOnce() -> String) -> OciError {
    if !err.get_ref().is_some_and(|e| e.is::<OciError>()) {
        return OciError::Io {
            context: context(),
            source: err,
        };
    }
    let kind = err.kind();
    match err.into_inner().map(|inner| inner.downcast::<OciError>()) {
        Some(Ok(oci)) => *oci,
        _ => OciError::Io {
            context: context(),
            source: io::Error::from(kind),
        },
    }
}

/// Copy an image's blobs (layers, then config) and then the image itself from a source to a
/// sink, skipping blobs the sink already has. Returns the descriptors actually copied.
pub fn copy_image(
    image: &Image,
    source: &dyn BlobSource,
    sink: &mut dyn ImageSink,
    progress: &Progress,
) -> Result<Vec<Descriptor>> {
    let mut copied = Vec::new();
    let total: u64 = image.size() + image.config.bytes().len() as u64;
    let bar = progress.bytes("copying", total);
    for desc in image.layers() {
        if sink.has_blob(desc)? {
            bar.inc(desc.size);
            continue;
        }
        let mut reader = bar.wrap_read(open_verified(source, desc)?);
        sink.put_blob(desc, &mut reader)?;
        copied.push(desc.clone());
    }
    let copied = finish_copy(image, sink, copied)?;
    bar.finish();
    Ok(copied)
}

/// The end of a copy whose layers are in: the config, then the image itself.
fn finish_copy(
    image: &Image,
    sink: &mut dyn ImageSink,
    mut copied: Vec<Descriptor>,
) -> Result<Vec<Descriptor>> {
    // The config's bytes are part of the image (checked against its digest when it was read),
    // so they need not come from the source.
    let config = &image.manifest.value().config;
    if !sink.has_blob(config)? {
        sink.put_blob(
            config,
            &mut VerifyingReader::new(image.config.bytes(), config),
        )?;
        copied.push(config.clone());
    }
    sink.put_image(image)?;
    Ok(copied)
}

/// Everything that can be checked about an image and its blobs: documents consistent, every
/// blob present with the right size and digest, every layer decompressing to its diff ID and
/// parsing as a safe layer. Every format's tests call this on what they produce.
pub fn validate(image: &Image, source: &dyn BlobSource) -> Result<()> {
    let budget = crate::layer::budget::Budget::new(Default::default());
    validate_within(image, source, &budget).map_err(|e| match e {
        OciError::InvalidImage(_) => e,
        other => OciError::InvalidImage(other.to_string()),
    })
}

/// [`validate`] within a budget (what the layers may expand to), with each layer's own error
/// (an unsafe entry, a digest that does not match, a limit) as it is: what an import checks
/// before anything of the image reaches the store.
pub fn validate_within(
    image: &Image,
    source: &dyn BlobSource,
    budget: &crate::layer::budget::Budget,
) -> Result<()> {
    check_config(image, source)?;
    for (i, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
        check_stored_layer(i, layer, diff_id, source, budget)?;
    }
    Ok(())
}

/// Layer `i` checked from `source` ([`check_layer`] on its verified blob).
pub(crate) fn check_stored_layer(
    i: usize,
    layer: &Descriptor,
    diff_id: &Digest,
    source: &dyn BlobSource,
    budget: &crate::layer::budget::Budget,
) -> Result<()> {
    let mut blob = open_verified(source, layer)?;
    let checked = check_layer(i, layer, diff_id, &mut blob, budget);
    if checked.is_err() {
        // A blob that is not what its descriptor says is the first thing wrong with it (a
        // corrupt stream or a bad entry follows from that).
        let rest = io::copy(&mut blob, &mut io::sink())
            .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)));
        if let Err(e @ (OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. })) = rest {
            return Err(e);
        }
    }
    checked
}

/// The check of one layer, as `blob` streams it: decompressed, every entry checked by the
/// layer rules within `budget`, read to its very end (bytes after the tar too), and the tar's
/// digest compared with `diff_id`. Whether the blob's own bytes match its descriptor is the
/// caller's to know (for an uncompressed layer the diff ID is taken to be its digest).
pub(crate) fn check_layer(
    i: usize,
    layer: &Descriptor,
    diff_id: &Digest,
    blob: &mut dyn Read,
    budget: &crate::layer::budget::Budget,
) -> Result<()> {
    let actual = read_layer_stream(i, layer, blob, budget)?;
    io::copy(blob, &mut io::sink())
        .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)))?;
    diff_id.verify(&actual, || {
        format!("diff ID of layer {i} ({})", layer.digest)
    })
}

/// Whether an error of [`check_layer`] is about what the layer holds (an entry the rules
/// refuse, a bound passed) rather than about bytes that do not read as a layer, which may
/// only be a blob that is not what its descriptor says.
pub(crate) fn is_entry_error(e: &OciError) -> bool {
    matches!(
        e,
        OciError::UnsafeEntry { .. } | OciError::ExpansionLimit { .. }
    )
}

/// The image's documents are consistent and the source's config blob is the image's config.
pub(crate) fn check_config(image: &Image, source: &dyn BlobSource) -> Result<()> {
    image.check_documents()?;
    let mut config = Vec::new();
    open_verified(source, &image.manifest.value().config)?
        .read_to_end(&mut config)
        .map_err(|e| unwrap_io(e, || "reading config blob".to_string()))?;
    if config != image.config.bytes() {
        return Err(OciError::InvalidImage(
            "config blob differs from the image's config".to_string(),
        ));
    }
    Ok(())
}

/// Read layer `i`'s blob as a layer (decompressed, every entry checked, within `budget`) to
/// its end; the digest of the uncompressed tar (its diff ID).
fn read_layer_stream(
    i: usize,
    layer: &Descriptor,
    blob: &mut dyn Read,
    budget: &crate::layer::budget::Budget,
) -> Result<Digest> {
    let compression = Compression::from_media_type(&layer.media_type)?;
    let tar = decompress(blob, compression)?;
    if compression == Compression::None {
        // An uncompressed blob is its own tar: its diff ID is its digest, which the reader
        // of the blob verifies, so it is not hashed a second time.
        drain_layer(i, layer, tar, budget)?;
        return Ok(layer.digest.clone());
    }
    let mut hashed = crate::digest::HashingReader::new(tar);
    drain_layer(i, layer, &mut hashed, budget)?;
    Ok(hashed.finish().0)
}

/// Read a layer's tar to its end, every entry checked within `budget`.
fn drain_layer(
    i: usize,
    layer: &Descriptor,
    mut tar: impl Read,
    budget: &crate::layer::budget::Budget,
) -> Result<()> {
    crate::layer::reader::read_layer(&mut tar, Some(budget), |_entry, _data| Ok(())).map_err(
        |e| match e {
            OciError::Io { context, source } => OciError::Io {
                context: format!("layer {i} ({}): {context}", layer.digest),
                source,
            },
            other => other,
        },
    )?;
    io::copy(&mut tar, &mut io::sink())
        .map_err(|e| unwrap_io(e, || format!("reading layer {}", layer.digest)))?;
    Ok(())
}

/// [`validate_within`] and [`copy_image`] in one read of each layer: the bytes a layer's copy
/// reads are handed to a second thread that checks them as a layer, so an import reads its
/// source once. The image is named only when every layer passed; a layer that fails leaves
/// the sink to discard what it took. Layers the sink already has are checked from the source.
pub fn copy_validated(
    image: &Image,
    source: &dyn BlobSource,
    sink: &mut dyn ImageSink,
    budget: &crate::layer::budget::Budget,
    progress: &Progress,
) -> Result<Vec<Descriptor>> {
    check_config(image, source)?;
    let mut copied = Vec::new();
    let total: u64 = image.size() + image.config.bytes().len() as u64;
    let bar = progress.bytes("copying", total);
    for (i, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
        if sink.has_blob(layer)? {
            // Its bytes are the store's already; what the image says of them is checked.
            check_stored_layer(i, layer, diff_id, source, budget)?;
            bar.inc(layer.size);
            continue;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(TEE_CHUNKS);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(TEE_CHUNKS + 2);
        let (put, checked) = std::thread::scope(|scope| {
            let checker = scope.spawn(move || {
                let mut stream = ChannelReader {
                    rx,
                    spare: spare_tx,
                    chunk: Vec::new(),
                    at: 0,
                };
                check_layer(i, layer, diff_id, &mut stream, budget)
            });
            let mut tee = TeeReader {
                inner: bar.wrap_read(open_verified(source, layer)?),
                tx: Some(tx),
                spare: spare_rx,
                pending: Vec::with_capacity(TEE_CHUNK),
            };
            let put = sink.put_blob(layer, &mut tee);
            // The end of the stream (or of the copy, when it failed) for the checker.
            drop(tee);
            let checked = checker
                .join()
                .unwrap_or_else(|_| Err(OciError::InvalidImage("the layer check panicked".into())));
            Ok::<_, OciError>((put, checked))
        })?;
        // A blob that is not what its descriptor says is the first thing wrong with it.
        put?;
        checked?;
        copied.push(layer.clone());
    }
    let copied = finish_copy(image, sink, copied)?;
    bar.finish();
    Ok(copied)
}

/// What a [`TeeReader`] gathers before handing it over: big enough that the two threads
/// meet about once per MiB rather than once per read (a copy reads 8 KiB at a time, and a
/// hand-over per read cost more than the check itself).
const TEE_CHUNK: usize = 1 << 20;
/// Chunks in flight between the copy and the check.
const TEE_CHUNKS: usize = 4;

/// A reader that hands a copy of what it reads to a channel (while anyone listens), in chunks
/// of [`TEE_CHUNK`] bytes; the rest when it is dropped. Buffers come back through `spare`, so
/// a layer of any size is copied through a few buffers.
struct TeeReader<R> {
    inner: R,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl<R> TeeReader<R> {
    fn hand_over(&mut self) {
        let next = match self.spare.try_recv() {
            Ok(mut buffer) => {
                buffer.clear();
                buffer
            }
            Err(_) => Vec::with_capacity(TEE_CHUNK),
        };
        let chunk = std::mem::replace(&mut self.pending, next);
        // A checker that stopped (it found something wrong) no longer listens.
        if let Some(tx) = &self.tx {
            if tx.send(chunk).is_err() {
                self.tx = None;
            }
        }
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 && self.tx.is_some() {
            if !self.pending.is_empty() && self.pending.len() + n > TEE_CHUNK {
                self.hand_over();
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl<R> Drop for TeeReader<R> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.hand_over();
        }
    }
}

/// The other end of a [`TeeReader`]: its chunks, in order, as a stream; each chunk read goes
/// back for reuse.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    // Full when the copy has enough: then the buffer is simply dropped.
                    let _ = self.spare.try_send(done);
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
