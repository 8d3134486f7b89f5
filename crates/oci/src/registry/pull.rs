//! Pull: the manifest resolved (an index or manifest list to the host's entry, chosen by
//! [`Platform::select`]), its digest verified, the config fetched and checked, and every
//! blob streamed through the store's verification. Nothing is named, and no new blob stays,
//! unless the whole image arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::client::{RegistryOptions, Remote, CONCURRENCY};
use super::image_blobs;
use super::reference::RemoteRef;
use super::remotes::RemoteRecord;
use crate::digest::Digest;
use crate::error::{IoContext, OciError, Result};
use crate::image::{check_config, check_layer, check_stored_layer, is_entry_error};
use crate::image::{Image, ImageSink, Raw};
use crate::json::{parse_bounded, MAX_JSON_SIZE};
use crate::layer::budget::{Budget, Limits};
use crate::name::ImageName;
use crate::platform::Platform;
use crate::progress::{Bar, Progress};
use crate::spec::{media, Descriptor, Index, Manifest};
use crate::store::{BlobWriter, Store, StoreSink};

#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    /// The name the image got in the store (the reference as given, tag `latest` by
    /// default; a pull by digest alone is named `<repository>:sha256-<hex>`).
    pub reference: String,
    /// Digest of the image manifest (for an index: of the manifest picked for this host).
    pub manifest_digest: Digest,
    /// The image ID: the config digest.
    pub image_id: Digest,
    /// Blobs fetched from the registry.
    pub downloaded: Vec<Digest>,
    /// Blobs the store already had.
    pub existing: Vec<Digest>,
}

/// The name a pulled image gets in the store: the reference as given without the digest
/// (tag `latest` by default); by digest alone, `<repository>:sha256-<hex>`.
fn store_name(given: &str, r: &RemoteRef) -> Result<ImageName> {
    let name_tag = given.split('@').next().unwrap_or(given);
    let name = match (&r.tag, &r.digest) {
        (None, Some(d)) => format!("{name_tag}:sha256-{}", d.hex()),
        _ => name_tag.to_string(),
    };
    ImageName::parse(&name).map_err(|e| match e {
        OciError::InvalidName { reason, .. } => OciError::InvalidName {
            name: given.to_string(),
            reason: format!("cannot name the pulled image {name:?} in the store: {reason}"),
        },
        other => other,
    })
}

impl Remote {
    /// Resolve the reference to one image manifest (through an index when there is one).
    async fn resolve_manifest(&self) -> Result<Raw<Manifest>> {
        let (body, digest) = self
            .fetch_manifest(&self.reference, &format!("the manifest of {}", self.r))
            .await?;
        let body = if document_kind(&body, &self.r)? == DocumentKind::Index {
            let index: Index = parse_bounded(&body, &format!("image index of {}", self.r))?;
            let host = Platform::host();
            let entry = host.select(&index).ok_or_else(|| {
                self.fail(host.no_entry(&format!("{} ({digest})", self.r), &index))
            })?;
            if entry.size > MAX_JSON_SIZE {
                return Err(OciError::TooLarge {
                    what: format!("manifest {}", entry.digest),
                    size: entry.size,
                    limit: MAX_JSON_SIZE,
                });
            }
            let what = format!("the {} manifest of {}", host.os_arch(), self.r);
            let (body, _) = self
                .fetch_manifest(
                    &self.reference.clone_with_digest(entry.digest.to_string()),
                    &what,
                )
                .await?;
            if body.len() as u64 != entry.size {
                return Err(OciError::SizeMismatch {
                    what,
                    expected: entry.size,
                    actual: body.len() as u64,
                });
            }
            if document_kind(&body, &self.r)? != DocumentKind::Manifest {
                return Err(self.fail(format!(
                    "{what} is an index again; nested indexes are not supported"
                )));
            }
            body
        } else {
            body
        };
        Raw::from_bytes(body.to_vec(), &format!("image manifest of {}", self.r))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocumentKind {
    Manifest,
    Index,
}

/// Whether a registry document is an image manifest or an index, by its `mediaType` or,
/// when it has none, by its shape.
fn document_kind(body: &[u8], r: &RemoteRef) -> Result<DocumentKind> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        layers: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = parse_bounded(body, &format!("manifest of {r}"))?;
    match probe.media_type.as_deref() {
        Some(m) if media::is_manifest(m) => Ok(DocumentKind::Manifest),
        Some(m) if media::is_index(m) => Ok(DocumentKind::Index),
        Some(m) => Err(OciError::Unsupported {
            what: format!("manifest media type of {r}"),
            value: m.to_string(),
        }),
        None if probe.manifests.is_some() => Ok(DocumentKind::Index),
        None if probe.layers.is_some() => Ok(DocumentKind::Manifest),
        None => Err(OciError::InvalidImage(format!(
            "the manifest of {r} is neither an image manifest nor an index"
        ))),
    }
}

/// Pull `reference` (`[host[:port]/]repository[:tag][@sha256:…]`) into the store and name it
/// there as given. Every blob is verified; on failure nothing new stays in the store.
pub async fn pull(
    store: &Store,
    reference: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<(Image, PullReport)> {
    let r = RemoteRef::parse(reference)?;
    let name = store_name(reference, &r)?;
    let remote =
        Remote::connect(&r, opts, vec![format!("repository:{}:pull", r.repository)]).await?;

    let manifest = remote.resolve_manifest().await?;
    let config_desc = manifest.value().config.clone();
    if config_desc.size > MAX_JSON_SIZE {
        return Err(OciError::TooLarge {
            what: format!("image config {}", config_desc.digest),
            size: config_desc.size,
            limit: MAX_JSON_SIZE,
        });
    }
    if !matches!(
        config_desc.media_type.as_str(),
        media::OCI_CONFIG | media::DOCKER_CONFIG
    ) {
        return Err(OciError::Unsupported {
            what: format!("config media type of {}", remote.r),
            value: config_desc.media_type.clone(),
        });
    }
    let hidden = Progress::hidden().bytes("config", config_desc.size);
    let mut config_bytes = Vec::with_capacity(config_desc.size as usize);
    remote
        .download(&config_desc, &hidden, async |chunk: Bytes| {
            config_bytes.extend_from_slice(&chunk);
            Ok(())
        })
        .await?;
    let (actual, len) = (Digest::of_bytes(&config_bytes), config_bytes.len() as u64);
    if len != config_desc.size {
        return Err(OciError::SizeMismatch {
            what: format!("image config {}", config_desc.digest),
            expected: config_desc.size,
            actual: len,
        });
    }
    config_desc
        .digest
        .verify(&actual, || format!("image config of {}", remote.r))?;
    let config = Raw::from_bytes(config_bytes, &format!("image config of {}", remote.r))?;
    let image = Image::from_parts(manifest, config)?;

    let sink = Mutex::new(store.sink(vec![name.clone()]));
    // One bound for what the whole image may expand to, shared by the layers' checks.
    let budget = Arc::new(Budget::new(Limits::from_env()?));
    // A fetched layer is checked as it arrives, as the first layer of the image with its
    // digest; any other layer, from the store once all are in.
    let mut first_index: BTreeMap<&Digest, usize> = BTreeMap::new();
    for (i, layer) in image.layers().iter().enumerate() {
        first_index.entry(&layer.digest).or_insert(i);
    }
    let blobs = image_blobs(&image);
    let (present, missing): (Vec<&Descriptor>, Vec<&Descriptor>) =
        blobs.iter().partition(|d| store.has_blob(&d.digest));
    let total: u64 = missing.iter().map(|d| d.size).sum();
    let bar = progress.bytes("pulling", total);
    let fetched: Vec<Digest> = stream::iter(missing.iter().copied())
        .map(|desc| {
            let remote = &remote;
            let bar = &bar;
            let sink = &sink;
            let image = &image;
            let config_desc = &config_desc;
            let first_index = &first_index;
            let budget = &budget;
            async move {
                if desc.digest == config_desc.digest {
                    // Already here, verified: let the store verify it once more as it lands.
                    let mut sink = sink.lock().map_err(|_| poisoned())?;
                    sink.put_blob(desc, &mut image.config.bytes())?;
                    bar.inc(desc.size);
                    return Ok(desc.digest.clone());
                }
                let mut blob = store.new_blob()?;
                match first_index.get(&desc.digest) {
                    Some(&i) => {
                        let diff_id = image.diff_ids()[i].clone();
                        fetch_checked(remote, desc, bar, blob, sink, i, diff_id, budget).await?
                    }
                    None => {
                        remote
                            .download(desc, bar, async |chunk: Bytes| {
                                write_chunk(&mut blob, desc, &chunk)
                            })
                            .await?;
                        commit(blob, desc, sink)?;
                    }
                }
                Ok::<_, OciError>(desc.digest.clone())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut sink = sink.into_inner().map_err(|_| poisoned())?;
    // Layers from a registry are read through the same checks as an import's (entries,
    // links, the layer rules, diff IDs) before the image is named: fetched ones as they
    // arrived, the rest here. A refused pull removes the blobs it added (the sink's drop).
    check_config(&image, store)?;
    let streamed: BTreeSet<usize> = fetched
        .iter()
        .filter(|d| **d != config_desc.digest)
        .filter_map(|d| first_index.get(d).copied())
        .collect();
    for (i, (layer, diff_id)) in image.layers().iter().zip(image.diff_ids()).enumerate() {
        if !streamed.contains(&i) {
            check_stored_layer(i, layer, diff_id, store, &budget)?;
        }
    }
    sink.put_image(&image)?;
    drop(sink);
    bar.finish();

    let fetched: BTreeSet<Digest> = fetched.into_iter().collect();
    let report = PullReport {
        reference: name.to_string(),
        manifest_digest: image.digest().clone(),
        image_id: image.id().clone(),
        downloaded: blobs
            .iter()
            .filter(|d| fetched.contains(&d.digest))
            .map(|d| d.digest.clone())
            .collect(),
        existing: present.iter().map(|d| d.digest.clone()).collect(),
    };
    let digests: Vec<Digest> = blobs.into_iter().map(|d| d.digest).collect();
    if let Err(e) = RemoteRecord::remember(store, &digests, &r.repo_key()) {
        tracing::warn!("could not record where the pulled blobs are: {e}");
    }
    Ok((image, report))
}

/// Fetch layer `i` into `blob`, committed as `desc` says (and left to `sink`), while a
/// blocking thread checks it as a layer ([`check_layer`]). Errors come in the order
/// [`check_stored_layer`] gives them: a blob that is not what its descriptor says first, then
/// what the check found; but a check that stopped at an entry cuts the download short, and
/// its error is the one reported.
#[allow(clippy::too_many_arguments)]
async fn fetch_checked(
    remote: &Remote,
    desc: &Descriptor,
    bar: &Bar,
    mut blob: BlobWriter<'_>,
    sink: &Mutex<StoreSink<'_>>,
    i: usize,
    diff_id: Digest,
    budget: &Arc<Budget>,
) -> Result<()> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(CHECK_CHUNKS);
    let checker = {
        let layer = desc.clone();
        let budget = Arc::clone(budget);
        tokio::task::spawn_blocking(move || {
            let mut input = ChunkReader {
                rx,
                chunk: Bytes::new(),
            };
            let checked = check_layer(i, &layer, &diff_id, &mut input, &budget);
            if checked.as_ref().is_err_and(|e| !is_entry_error(e)) {
                // Bytes that do not read as a layer may be a blob that is not what its
                // descriptor says; the download goes on so that the store can say so.
                input.drain();
            }
            checked
        })
    };
    let mut cut_short = false;
    let downloaded = remote
        .download(desc, bar, async |chunk: Bytes| {
            write_chunk(&mut blob, desc, &chunk)?;
            if tx.send(chunk).await.is_err() {
                cut_short = true;
                return Err(OciError::InvalidImage(format!(
                    "the check of layer {i} ({}) stopped before its end",
                    desc.digest
                )));
            }
            Ok(())
        })
        .await;
    // The end of the stream for the checker (or of what arrived, when the download failed).
    drop(tx);
    let checked = checker
        .await
        .unwrap_or_else(|_| Err(OciError::InvalidImage("the layer check panicked".into())));
    if cut_short {
        // The check stopped at an entry; what arrived of the blob says nothing.
        checked?;
        return downloaded;
    }
    downloaded?;
    commit(blob, desc, sink)?;
    checked
}

/// Commit a downloaded blob, which the sink removes again unless the image is named.
fn commit(blob: BlobWriter<'_>, desc: &Descriptor, sink: &Mutex<StoreSink<'_>>) -> Result<()> {
    blob.commit_expecting(desc)?;
    sink.lock()
        .map_err(|_| poisoned())?
        .track(desc.digest.clone());
    Ok(())
}

fn write_chunk(blob: &mut BlobWriter<'_>, desc: &Descriptor, chunk: &[u8]) -> Result<()> {
    blob.write_all(chunk)
        .io_context(|| format!("writing blob {} into the store", desc.digest))
}

/// Chunks in flight from a download to its layer check.
const CHECK_CHUNKS: usize = 16;

/// The chunks of a download, in order, as a stream, for a blocking thread.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl ChunkReader {
    /// Take the rest of the download without looking at it.
    fn drain(&mut self) {
        while self.rx.blocking_recv().is_some() {}
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.chunk = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

fn poisoned() -> OciError {
    OciError::InvalidImage("a blob download panicked".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_pulled_images() {
        let given = "127.0.0.1:5000/nb/base";
        let r = RemoteRef::parse(given).unwrap();
        assert_eq!(
            store_name(given, &r).unwrap().to_string(),
            "127.0.0.1:5000/nb/base:latest"
        );
        let d = Digest::of_bytes(b"x");
        let given = format!("127.0.0.1:5000/nb/base@{d}");
        let r = RemoteRef::parse(&given).unwrap();
        assert_eq!(
            store_name(&given, &r).unwrap().to_string(),
            format!("127.0.0.1:5000/nb/base:sha256-{}", d.hex())
        );
        let given = format!("nb/base:v2@{d}");
        let r = RemoteRef::parse(&given).unwrap();
        assert_eq!(store_name(&given, &r).unwrap().to_string(), "nb/base:v2");
    }
}
