//! Import into and export out of the store: the operations behind `nbrt import` and
//! `nbrt export`, each a choice of source or sink plus [`copy_image`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::digest::Digest;
use crate::error::{IoContext, OciError, Result};
use crate::format::archive::{
    measure_layers, ArchiveKind, ArchiveLayout, ArchiveWriter, TarArchive,
};
use crate::format::layout::LayoutDir;
use crate::format::rootfs;
use crate::image::{copy_image, copy_validated, BlobSource, Image, ImageSink};
use crate::layer::budget::{Budget, Limits};
use crate::layer::compression::Compression;
use crate::layer::flatten::{flatten_to_file, flatten_within};
use crate::name::ImageName;
use crate::progress::Progress;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Names to give the image; when empty, the names the source carries are used.
    pub names: Vec<ImageName>,
    /// Which image of a multi-image archive or layout (a tag or full name).
    pub select: Option<String>,
    /// Compression of the layer made from a root file system tar.
    pub compression: Compression,
    /// What the import may expand to (decompressed bytes, entries).
    pub limits: Limits,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            select: None,
            compression: Compression::Gzip,
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// What the source was: rootfs, docker-archive, oci-archive or oci-layout.
    pub source_kind: &'static str,
    pub id: Digest,
    pub digest: Digest,
    pub names: Vec<String>,
    pub layers: usize,
    pub size: u64,
    pub blobs_written: usize,
}

/// Import a root file system tar, a docker-archive, an OCI archive or an OCI layout
/// directory into the store. Nothing is named and no new blob stays unless it all succeeds.
/// Every layer is checked as a root file system import checks its tar (names, links, sizes,
/// the rules of `layer::rules`) and against its diff ID before anything is copied, and what
/// the import expands to is bounded by `opts.limits`.
pub fn import(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
    progress: &Progress,
) -> Result<(Image, ImportReport)> {
    let budget = Budget::new(opts.limits);
    let (kind, image, names, written) = if path.is_dir() {
        let layout = LayoutDir::open(path)?;
        let (image, name) = layout.image(opts.select.as_deref())?;
        let names = pick_names(opts, name.into_iter().collect(), path)?;
        let written = copy_into(store, &image, &layout, &names, &budget, progress)?;
        ("oci-layout", image, names, written)
    } else {
        let archive = TarArchive::open_within(path, &store.tmp(), opts.limits)?;
        match archive.kind() {
            ArchiveKind::RootFs => {
                let names = pick_names(opts, Vec::new(), path)?;
                let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                let bar = progress.bytes("importing", size);
                let mut sink = store.sink(names.clone());
                let file_name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let image = rootfs::import_within(
                    store,
                    std::io::BufReader::with_capacity(1 << 20, archive.tar_file()?),
                    &file_name,
                    opts.compression,
                    &bar,
                    &budget,
                )?;
                for layer in image.layers() {
                    sink.track(layer.digest.clone());
                }
                sink.put_image(&image)?;
                bar.finish();
                let written = image.layers().len();
                ("rootfs", image, names, written)
            }
            kind => {
                let source_kind = if kind == ArchiveKind::OciLayout {
                    "oci-archive"
                } else {
                    "docker-archive"
                };
                let found = archive.image(opts.select.as_deref())?;
                let names = pick_names(opts, found.names.clone(), path)?;
                let image = found.image.clone();
                let written = copy_into(store, &image, &found, &names, &budget, progress)?;
                (source_kind, image, names, written)
            }
        }
    };
    let report = ImportReport {
        source_kind: kind,
        id: image.id().clone(),
        digest: image.digest().clone(),
        names: names.iter().map(|n| n.to_string()).collect(),
        layers: image.layers().len(),
        size: image.size(),
        blobs_written: written,
    };
    Ok((image, report))
}

fn pick_names(opts: &ImportOptions, found: Vec<ImageName>, path: &Path) -> Result<Vec<ImageName>> {
    if !opts.names.is_empty() {
        return Ok(opts.names.clone());
    }
    if found.is_empty() {
        return Err(OciError::Format {
            path: path.to_path_buf(),
            reason: "the source names no image: give one with --tag NAME[:TAG]".to_string(),
        });
    }
    Ok(found)
}

/// Copy and check the image in one read of its layers (see [`copy_validated`]).
fn copy_into(
    store: &Store,
    image: &Image,
    source: &dyn BlobSource,
    names: &[ImageName],
    budget: &Budget,
    progress: &Progress,
) -> Result<usize> {
    let mut sink = store.sink(names.to_vec());
    Ok(copy_validated(image, source, &mut sink, budget, progress)?.len())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One tar that is an OCI layout and a docker-archive at once (the default).
    Combined,
    /// Classic `docker save` layout with uncompressed layers.
    DockerArchive,
    /// An OCI image layout directory.
    OciDir,
    /// The flattened root file system as a tar.
    RootFs,
}

impl ExportFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "tar" | "combined" => Ok(Self::Combined),
            "docker-archive" => Ok(Self::DockerArchive),
            "oci-dir" => Ok(Self::OciDir),
            "rootfs" => Ok(Self::RootFs),
            other => Err(OciError::Unsupported {
                what: "export format (use tar, docker-archive, oci-dir or rootfs)".to_string(),
                value: other.to_string(),
            }),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub id: Digest,
    pub digest: Digest,
    pub output: PathBuf,
    pub bytes: u64,
}

/// Write an image out of the store. A file output appears only when complete (written under
/// a temporary name beside it, then renamed); `-` writes to standard output.
pub fn export(
    store: &Store,
    image: &Image,
    names: &[ImageName],
    format: ExportFormat,
    out: &Path,
    progress: &Progress,
) -> Result<ExportReport> {
    export_within(
        store,
        image,
        names,
        format,
        out,
        progress,
        Limits::default(),
    )
}

/// [`export`], bounding what layers may expand to (a rootfs export, or a legacy
/// docker-archive's uncompressed layers) by `limits`.
///
/// Every output appears only when complete: a file is written under `.nbrt-export-<pid>-…`
/// beside it and renamed; a new OCI layout directory is made the same way; an existing
/// layout gets its blobs (each renamed into place) before its `index.json`. Leftovers of a
/// killed export (`.nbrt-export-*` of a process that is gone) are removed by the next one.
/// Symlinks in an existing layout are never followed.
pub fn export_within(
    store: &Store,
    image: &Image,
    names: &[ImageName],
    format: ExportFormat,
    out: &Path,
    progress: &Progress,
    limits: Limits,
) -> Result<ExportReport> {
    let budget = Budget::new(limits);
    let report = |bytes: u64| ExportReport {
        id: image.id().clone(),
        digest: image.digest().clone(),
        output: out.to_path_buf(),
        bytes,
    };
    let beside = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if format == ExportFormat::OciDir {
        crate::fsutil::sweep_export_leftovers(&beside);
        export_oci_dir(store, image, names, out, &beside, progress)?;
        return Ok(report(image.size()));
    }
    let write = |w: &mut dyn Write| -> Result<()> {
        match format {
            ExportFormat::RootFs => {
                flatten_within(image, store, w, progress, &budget)?;
            }
            ExportFormat::Combined | ExportFormat::DockerArchive => {
                write_archive_within(store, image, names, format, w, progress, limits)?;
            }
            ExportFormat::OciDir => {}
        }
        Ok(())
    };
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut lock = BufWriter::with_capacity(1 << 20, stdout.lock());
        write(&mut lock)?;
        lock.flush().io_context(|| "writing to standard output")?;
        return Ok(report(0));
    }
    crate::fsutil::sweep_export_leftovers(&beside);
    let tmp = tempfile::Builder::new()
        .prefix(&crate::fsutil::export_temp_prefix())
        .tempfile_in(&beside)
        .io_context(|| format!("creating a temporary file in {}", beside.display()))?;
    let (file, tmp_path) = tmp.into_parts();
    let file: File = if format == ExportFormat::RootFs {
        // Into a file, most layers are read once (see `flatten_to_file`).
        flatten_to_file(image, store, file, progress, &budget)?
    } else {
        let mut w = BufWriter::with_capacity(1 << 20, file);
        write_archive_to_file(store, image, names, format, &mut w, progress, limits)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .io_context(|| format!("writing {}", out.display()))?
    };
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    // Temporary files are created 0600; an export is an ordinary file.
    std::fs::set_permissions(
        &tmp_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .io_context(|| format!("setting permissions of {}", out.display()))?;
    tmp_path
        .persist(out)
        .map_err(|e| e.error)
        .io_context(|| format!("renaming into {}", out.display()))?;
    Ok(report(bytes))
}

/// An OCI layout directory: a new one is made beside `out` and renamed into place when
/// whole; an existing one is added to.
fn export_oci_dir(
    store: &Store,
    image: &Image,
    names: &[ImageName],
    out: &Path,
    beside: &Path,
    progress: &Progress,
) -> Result<()> {
    let is_new = match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => {
            return Err(OciError::Io {
                context: format!("reading {}", out.display()),
                source: e,
            })
        }
        Ok(m) if m.is_dir() => std::fs::read_dir(out)
            .io_context(|| format!("listing {}", out.display()))?
            .next()
            .is_none(),
        Ok(_) => {
            return Err(OciError::Format {
                path: out.to_path_buf(),
                reason: "exists and is not a directory (an OCI layout is written as a \
                         directory)"
                    .to_string(),
            })
        }
    };
    if !is_new {
        let layout = LayoutDir::open_for_writing(out)?;
        let mut sink = layout.sink(names.to_vec());
        copy_image(image, store, &mut sink, progress)?;
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(&crate::fsutil::export_temp_prefix())
        .tempdir_in(beside)
        .io_context(|| format!("creating a temporary directory in {}", beside.display()))?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .io_context(|| format!("setting permissions of {}", tmp.path().display()))?;
    let layout = LayoutDir::create(tmp.path())?;
    let mut sink = layout.sink(names.to_vec());
    copy_image(image, store, &mut sink, progress)?;
    let path = tmp.keep();
    std::fs::rename(&path, out).map_err(|e| {
        let _ = std::fs::remove_dir_all(&path);
        OciError::Io {
            context: format!("renaming into {}", out.display()),
            source: e,
        }
    })
}

/// Write an image archive (combined or legacy docker-archive) to `w`, a stream.
pub fn write_archive(
    source: &dyn BlobSource,
    image: &Image,
    names: &[ImageName],
    format: ExportFormat,
    w: &mut dyn Write,
    progress: &Progress,
) -> Result<()> {
    write_archive_within(source, image, names, format, w, progress, Limits::default())
}

/// [`write_archive`] with a bound on what a legacy archive's layers may decompress to. A
/// legacy archive on a stream has its layers' sizes measured first (each layer decompressed
/// twice; into a file, [`export_within`] decompresses once).
pub fn write_archive_within(
    source: &dyn BlobSource,
    image: &Image,
    names: &[ImageName],
    format: ExportFormat,
    w: &mut dyn Write,
    progress: &Progress,
    limits: Limits,
) -> Result<()> {
    let layout = archive_layout(format);
    let mut writer = ArchiveWriter::new(w, image, names.to_vec(), layout).with_limits(limits);
    if layout == ArchiveLayout::DockerLegacy {
        let _span = tracing::info_span!("measuring layers").entered();
        writer = writer.with_layer_sizes(measure_layers(source, image, limits)?);
    }
    copy_image(image, source, &mut writer, progress)?;
    writer.finish()?;
    Ok(())
}

/// An image archive into a file being written (positioned at its end).
fn write_archive_to_file(
    source: &dyn BlobSource,
    image: &Image,
    names: &[ImageName],
    format: ExportFormat,
    file: &mut BufWriter<File>,
    progress: &Progress,
    limits: Limits,
) -> Result<()> {
    let mut writer = ArchiveWriter::new(file, image, names.to_vec(), archive_layout(format))
        .with_limits(limits)
        .seekable();
    copy_image(image, source, &mut writer, progress)?;
    writer.finish()?;
    Ok(())
}

fn archive_layout(format: ExportFormat) -> ArchiveLayout {
    if format == ExportFormat::DockerArchive {
        ArchiveLayout::DockerLegacy
    } else {
        ArchiveLayout::Combined
    }
}
