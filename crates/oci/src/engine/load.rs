//! Loading an image into the engine (what `docker load` does), streamed as our combined
//! archive without a temporary file.

use std::io::{self, Write};
use std::path::PathBuf;

use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use super::Engine;
use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::image::Image;
use crate::name::ImageName;
use crate::progress::Progress;
use crate::store::Store;
use crate::transfer::{write_archive, ExportFormat};

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The image ID the engine reports (the config digest on the classic store).
    pub engine_id: String,
    pub id: Digest,
    pub names: Vec<String>,
}

/// Sends what is written to it as chunks over a channel, from a blocking thread.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

/// Load an image from the store into the Docker engine under `names` (connecting to the
/// engine first; see [`Engine::load`]).
pub async fn load(
    store_root: PathBuf,
    image: &Image,
    names: &[ImageName],
    progress: &Progress,
) -> Result<LoadReport> {
    Engine::connect()
        .await?
        .load(store_root, image, names, progress)
        .await
}

impl Engine {
    /// Load an image from the store at `store_root` into the engine under `names`, whether
    /// or not the engine has it already (see [`Engine::ensure`] for loading only when it
    /// lacks it).
    pub async fn load(
        &self,
        store_root: PathBuf,
        image: &Image,
        names: &[ImageName],
        progress: &Progress,
    ) -> Result<LoadReport> {
        let docker = self.docker.clone().with_timeout(super::TRANSFER_TIMEOUT);
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let writer_image = image.clone();
        let writer_names = names.to_vec();
        let writer_progress = progress.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<()> {
            let store = Store::open(&store_root)?;
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = write_archive(
                &store,
                &writer_image,
                &writer_names,
                ExportFormat::Combined,
                &mut out,
                &writer_progress,
            )
            .and_then(|_| {
                out.flush()
                    .map_err(|e| OciError::Engine(format!("streaming the image: {e}")))
            });
            if let Err(e) = &result {
                // Make the engine see a broken upload rather than a short, valid-looking tar.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            result
        });
        let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut messages = docker.import_image_stream(
            ImportImageOptions {
                quiet: true,
                platform: None,
            },
            body,
            None,
        );
        let mut engine_error = None;
        let mut stream_text = String::new();
        while let Some(msg) = messages.next().await {
            match msg {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        engine_error = Some(detail.message.unwrap_or_default());
                    }
                    if let Some(s) = info.stream {
                        stream_text.push_str(&s);
                    }
                }
                Err(e) => {
                    engine_error = Some(e.to_string());
                    break;
                }
            }
        }
        let written = writer
            .await
            .map_err(|e| OciError::Engine(format!("the archive writer failed: {e}")))?;
        written?;
        if let Some(e) = engine_error {
            return Err(OciError::Engine(format!("loading the image failed: {e}")));
        }
        // The classic store knows the image by its config digest, Docker's containerd image
        // store by its manifest digest.
        let inspect = match docker.inspect_image(&image.id().to_string()).await {
            Ok(found) => found,
            Err(first) => docker
                .inspect_image(&image.digest().to_string())
                .await
                .map_err(|_| {
                    OciError::Engine(format!(
                        "the engine accepted the image but does not show {} ({first}); it said: {}",
                        image.id(),
                        stream_text.trim()
                    ))
                })?,
        };
        Ok(LoadReport {
            engine_id: inspect.id.unwrap_or_default(),
            id: image.id().clone(),
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    }
}
