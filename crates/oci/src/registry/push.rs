//! Push: which blobs the repository already has (`HEAD`), cross-repository mounts from
//! repositories `remotes.json` knows, uploads streamed from the store's files, then the
//! manifest with its exact bytes, checked against the registry's digest.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde::Serialize;

use super::client::{RegistryOptions, Remote, CONCURRENCY};
use super::image_blobs;
use super::reference::{bad_ref, RemoteRef};
use super::remotes::RemoteRecord;
use crate::digest::Digest;
use crate::error::{IoContext, OciError, Result};
use crate::image::Image;
use crate::progress::{Bar, Progress};
use crate::spec::Descriptor;
use crate::store::Store;
use crate::text::{Escaped, Quoted};

/// Read size for uploads from the store.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Mount attempts per blob before uploading it.
const MAX_MOUNT_ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// What was pushed, normalized: `host/repository:tag` (or `@digest`).
    pub reference: String,
    pub manifest_digest: Digest,
    /// Blobs sent to the registry.
    pub uploaded: Vec<Digest>,
    /// Blobs the repository already had.
    pub existing: Vec<Digest>,
    /// Blobs mounted from another repository of the same registry.
    pub mounted: Vec<Digest>,
}

impl Remote {
    /// Make `desc` present in the target repository: already there, mounted, or uploaded.
    /// `inline`: the blob's bytes when they are at hand (the config), else it is streamed
    /// from the store's file.
    async fn push_blob(
        &self,
        store: &Store,
        desc: &Descriptor,
        inline: Option<Bytes>,
        mount_from: &[String],
        bar: &Bar,
    ) -> Result<BlobOutcome> {
        let digest = desc.digest.to_string();
        let doing = format!("checking whether {} has blob {digest}", self.r.repository);
        let url = self.url(&format!("blobs/{digest}"));
        let res = self
            .send(&doing, true, |auth| auth.apply(self.http.head(&url)))
            .await?;
        let exists = match res.status() {
            reqwest::StatusCode::OK => true,
            reqwest::StatusCode::NOT_FOUND => false,
            _ => return Err(self.refuse(&doing, &url, res).await),
        };
        if exists {
            bar.inc(desc.size);
            return Ok(BlobOutcome::Existing);
        }
        for from in mount_from.iter().take(MAX_MOUNT_ATTEMPTS) {
            let from_repo = self.r.in_repository(from);
            let mut url = reqwest::Url::parse(&self.url("blobs/uploads/"))
                .map_err(|e| self.fail(format!("mounting blob {digest}: bad URL: {e}")))?;
            url.query_pairs_mut()
                .append_pair("mount", &digest)
                .append_pair("from", from_repo.repository());
            let doing = format!("mounting blob {digest} from {from}");
            let res = self
                .send(&doing, true, |auth| auth.apply(self.http.post(url.clone())))
                .await;
            match res {
                Ok(res) if res.status() == reqwest::StatusCode::CREATED => {
                    bar.inc(desc.size);
                    return Ok(BlobOutcome::Mounted);
                }
                // The registry may refuse (no such blob there any more, no permission, or
                // no mount support, when it answers 202 and opens an upload): upload instead.
                Ok(res) => tracing::debug!("{doing}: refused with HTTP {}", res.status()),
                Err(e) => tracing::debug!("{doing}: {}", Escaped(&e)),
            }
        }
        let body = match inline {
            Some(bytes) => {
                if bytes.len() as u64 != desc.size {
                    return Err(OciError::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: desc.size,
                        actual: bytes.len() as u64,
                    });
                }
                bar.inc(desc.size);
                reqwest::Body::from(bytes)
            }
            None => {
                let path = store.blob_path(&desc.digest);
                let file = match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(OciError::BlobNotFound(digest))
                    }
                    Err(e) => {
                        return Err(OciError::Io {
                            context: format!("opening {}", path.display()),
                            source: e,
                        })
                    }
                };
                let len = file
                    .metadata()
                    .await
                    .io_context(|| format!("reading the size of {}", path.display()))?
                    .len();
                if len != desc.size {
                    return Err(OciError::SizeMismatch {
                        what: format!("stored blob {digest}"),
                        expected: desc.size,
                        actual: len,
                    });
                }
                let counter = bar.clone();
                reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK)
                        .inspect_ok(move |c| counter.inc(c.len() as u64)),
                )
            }
        };
        let doing = format!("uploading blob {digest} to {}", self.r.repository);
        // A monolithic upload: open it (POST), then PUT the whole blob to where it says.
        let start = self.url("blobs/uploads/");
        let res = self
            .send(&doing, true, |auth| auth.apply(self.http.post(&start)))
            .await?;
        if res.status() != reqwest::StatusCode::ACCEPTED {
            return Err(self.refuse(&doing, &start, res).await);
        }
        let location = res
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| {
                self.fail(format!(
                    "{doing}: the registry opened an upload without a Location"
                ))
            })?;
        let mut url = reqwest::Url::parse(&start)
            .and_then(|base| base.join(location))
            .map_err(|e| {
                self.fail(format!(
                    "{doing}: the upload location {} is not a URL: {e}",
                    Quoted(location)
                ))
            })?;
        drop(res);
        url.query_pairs_mut().append_pair("digest", &digest);
        let mut body = Some(body);
        let res = self
            .send(&doing, false, |auth| {
                auth.apply(self.http.put(url.clone()))
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, desc.size)
                    .body(
                        body.take()
                            .unwrap_or_else(|| reqwest::Body::from(Vec::new())),
                    )
            })
            .await?;
        if !res.status().is_success() {
            return Err(self.refuse(&doing, url.as_str(), res).await);
        }
        Ok(BlobOutcome::Uploaded)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobOutcome {
    Uploaded,
    Existing,
    Mounted,
}

/// Push an image from the store to `target` (`host[:port]/repository[:tag]`).
pub async fn push(
    store: &Store,
    image: &Image,
    target: &str,
    opts: &RegistryOptions,
    progress: &Progress,
) -> Result<PushReport> {
    let mut r = RemoteRef::parse(target)?;
    if let Some(d) = &r.digest {
        if d != image.digest() {
            return Err(bad_ref(
                target,
                &format!("the image's manifest digest is {}, not {d}", image.digest()),
            ));
        }
    }
    // With a tag, the manifest goes under the tag (its digest was just checked).
    if r.tag.is_some() {
        r.digest = None;
    }

    let blobs = image_blobs(image);
    let record = RemoteRecord::load(store);
    let repo_key = r.repo_key();
    let mount_sources: Vec<Vec<String>> = blobs
        .iter()
        .map(|d| record.sources(&d.digest, &r.host, &repo_key))
        .collect();
    let mut scopes = vec![format!("repository:{}:pull,push", r.repository)];
    let from_repos: BTreeSet<&String> = mount_sources.iter().flatten().collect();
    scopes.extend(
        from_repos
            .iter()
            .map(|repo| format!("repository:{repo}:pull")),
    );
    let remote = Remote::connect(&r, opts, scopes).await?;

    let total: u64 = blobs.iter().map(|d| d.size).sum();
    let bar = progress.bytes("pushing", total);
    let outcomes: Vec<(usize, BlobOutcome)> = stream::iter(blobs.iter().enumerate())
        .map(|(i, desc)| {
            let remote = &remote;
            let bar = &bar;
            let from = &mount_sources[i];
            // The config is at hand: send it from memory.
            let inline =
                (desc.digest == *image.id()).then(|| Bytes::copy_from_slice(image.config.bytes()));
            async move {
                let outcome = remote.push_blob(store, desc, inline, from, bar).await?;
                Ok::<_, OciError>((i, outcome))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut outcomes = outcomes;
    outcomes.sort_by_key(|(i, _)| *i);

    let content_type =
        reqwest::header::HeaderValue::from_str(image.media_type()).map_err(|_| {
            OciError::InvalidImage(format!(
                "media type {:?} is not a valid header",
                image.media_type()
            ))
        })?;
    let target = remote
        .reference
        .tag()
        .or(remote.reference.digest())
        .unwrap_or("latest")
        .to_string();
    let url = remote.url(&format!("manifests/{target}"));
    let doing = format!("putting the manifest of {}", remote.r);
    let manifest = Bytes::copy_from_slice(image.manifest.bytes());
    let res = remote
        .send(&doing, true, |auth| {
            auth.apply(remote.http.put(&url))
                .header(reqwest::header::CONTENT_TYPE, content_type.clone())
                .body(manifest.clone())
        })
        .await?;
    if !res.status().is_success() {
        return Err(remote.refuse(&doing, &url, res).await);
    }
    drop(res);
    // The registry must now know the manifest under our digest.
    let (_, stored) = remote
        .fetch_manifest(
            &remote.reference,
            &format!("the pushed manifest of {}", remote.r),
        )
        .await?;
    if stored != *image.digest() {
        return Err(OciError::DigestMismatch {
            what: format!("manifest of {} as the registry stored it", remote.r),
            expected: image.digest().to_string(),
            actual: stored.to_string(),
        });
    }
    bar.finish();

    let mut report = PushReport {
        reference: r.to_string(),
        manifest_digest: image.digest().clone(),
        uploaded: Vec::new(),
        existing: Vec::new(),
        mounted: Vec::new(),
    };
    for (i, outcome) in outcomes {
        let d = blobs[i].digest.clone();
        match outcome {
            BlobOutcome::Uploaded => report.uploaded.push(d),
            BlobOutcome::Existing => report.existing.push(d),
            BlobOutcome::Mounted => report.mounted.push(d),
        }
    }
    let digests: Vec<Digest> = blobs.into_iter().map(|d| d.digest).collect();
    if let Err(e) = RemoteRecord::remember(store, &digests, &repo_key) {
        tracing::warn!("could not record where the pushed blobs are: {e}");
    }
    Ok(report)
}
