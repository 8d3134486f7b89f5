//! Tar archives of images. Reading understands three kinds: an OCI layout in a tar (including
//! the combined form Docker ≥ 25 writes), a docker-archive (`docker save`: `manifest.json`,
//! config and layer files), and anything else is a root file system. Writing produces either
//! the combined form (an OCI layout plus `manifest.json` and `repositories`, read by old and new
//! Docker and by OCI tools alike) or the legacy docker-archive with uncompressed `layer.tar`s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingReader};
use crate::error::{IoContext, OciError, Result};
use crate::format::select;
use crate::image::{unwrap_io, BlobSource, Image, ImageSink, Raw};
use crate::json::{parse_bounded, to_canonical_vec, MAX_JSON_SIZE};
use crate::layer::budget::{Budget, Limits};
use crate::layer::compression::{decompress, Compression};
use crate::layer::reader::normalize_path;
use crate::name::ImageName;
use crate::spec::Descriptor;
use crate::spec::{ImageConfig, Index};

/// Most entries an image archive may list (guards the in-memory entry table).
const MAX_ARCHIVE_ENTRIES: usize = 1_000_000;

/// A tar file with a table of where each member's bytes are, so blobs can be read in place.
pub struct TarArchive {
    path: PathBuf,
    file: File,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
    /// Holds the decompressed copy of a compressed archive while it is in use.
    _decompressed: Option<tempfile::TempPath>,
}

/// What an archive holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    OciLayout,
    DockerArchive,
    RootFs,
}

/// One entry of a docker-archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl TarArchive {
    /// Open and index a tar. A gzip- or zstd-compressed tar is first decompressed into a
    /// temporary file beside `tmp_dir`.
    pub fn open(path: &Path, tmp_dir: &Path) -> Result<Self> {
        Self::open_within(path, tmp_dir, Limits::default())
    }

    /// [`TarArchive::open`], decompressing at most `limits.max_bytes` (a bound of one import).
    pub fn open_within(path: &Path, tmp_dir: &Path, limits: Limits) -> Result<Self> {
        let mut file = File::open(path).io_context(|| format!("opening {}", path.display()))?;
        let mut head = [0u8; 4];
        let n = file
            .read_at(&mut head, 0)
            .io_context(|| format!("reading {}", path.display()))?;
        let compression = Compression::sniff(&head[..n]);
        let mut decompressed = None;
        if compression != Compression::None {
            let mut tmp = tempfile::Builder::new()
                .prefix(&format!(".nbrt-{}-", std::process::id()))
                .tempfile_in(tmp_dir)
                .io_context(|| "creating a temporary file")?;
            let budget = Budget::new(limits);
            let mut reader = budget.reader(decompress(file, compression)?);
            io::copy(&mut reader, &mut tmp)
                .map_err(|e| unwrap_io(e, || format!("decompressing {}", path.display())))?;
            let (f, temp_path) = tmp.into_parts();
            file = f;
            decompressed = Some(temp_path);
        }
        file.rewind()
            .io_context(|| format!("reading {}", path.display()))?;
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        {
            let mut archive = tar::Archive::new(&file);
            let entries = archive.entries_with_seek().map_err(|e| OciError::Format {
                path: path.to_path_buf(),
                reason: format!("not a tar archive: {e}"),
            })?;
            for entry in entries {
                let entry = entry.map_err(|e| OciError::Format {
                    path: path.to_path_buf(),
                    reason: format!("bad tar entry: {e}"),
                })?;
                if members.len() + links.len() > MAX_ARCHIVE_ENTRIES {
                    break;
                }
                let Ok(name) = std::str::from_utf8(&entry.path_bytes()).map(str::to_string) else {
                    continue;
                };
                let Ok(name) = normalize_path(&name) else {
                    continue;
                };
                match entry.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members.insert(name, (entry.raw_file_position(), entry.size()));
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Some(target) = entry.link_name_bytes() {
                            let target = String::from_utf8_lossy(&target).into_owned();
                            let base = match name.rsplit_once('/') {
                                Some((dir, _))
                                    if entry.header().entry_type() == tar::EntryType::Symlink =>
                                {
                                    format!("{dir}/{target}")
                                }
                                _ => target,
                            };
                            if let Ok(t) = normalize_dotdot(&base) {
                                links.insert(name, t);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            members,
            links,
            _decompressed: decompressed,
        })
    }

    pub fn kind(&self) -> ArchiveKind {
        if self.lookup("oci-layout").is_some() && self.lookup("index.json").is_some() {
            ArchiveKind::OciLayout
        } else if self.lookup("manifest.json").is_some() {
            ArchiveKind::DockerArchive
        } else {
            ArchiveKind::RootFs
        }
    }

    /// The underlying (decompressed) tar file, for reading it as a root file system.
    pub fn tar_file(&self) -> Result<File> {
        let mut f = self
            .file
            .try_clone()
            .io_context(|| format!("reading {}", self.path.display()))?;
        f.rewind()
            .io_context(|| format!("reading {}", self.path.display()))?;
        Ok(f)
    }

    fn lookup(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = normalize_path(name).ok()?;
        for _ in 0..8 {
            if let Some(m) = self.members.get(&name) {
                return Some(*m);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn member(&self, name: &str) -> Result<(u64, u64)> {
        self.lookup(name).ok_or_else(|| OciError::Format {
            path: self.path.clone(),
            reason: format!("the archive has no file {name:?}"),
        })
    }

    fn open_member(&self, name: &str) -> Result<MemberReader<'_>> {
        let (offset, size) = self.member(name)?;
        Ok(MemberReader {
            file: &self.file,
            pos: offset,
            end: offset + size,
        })
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let (_, size) = self.member(name)?;
        if size > MAX_JSON_SIZE {
            return Err(OciError::TooLarge {
                what: format!("{name} in {}", self.path.display()),
                size,
                limit: MAX_JSON_SIZE,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        self.open_member(name)?
            .read_to_end(&mut buf)
            .io_context(|| format!("reading {name} in {}", self.path.display()))?;
        Ok(buf)
    }

    /// Read the image named `name` (or the only one) out of the archive.
    pub fn image(self, name: Option<&str>) -> Result<ArchiveImage> {
        match self.kind() {
            ArchiveKind::OciLayout => self.oci_image(name),
            ArchiveKind::DockerArchive => self.docker_image(name),
            ArchiveKind::RootFs => Err(OciError::Format {
                path: self.path.clone(),
                reason: "this tar is a root file system, not an image archive".to_string(),
            }),
        }
    }

    fn oci_image(self, name: Option<&str>) -> Result<ArchiveImage> {
        let index: Index = parse_bounded(&self.read_small("index.json")?, "index.json")?;
        let desc = select::pick(&index, name, &self.path.display().to_string())?;
        let image = select::load_image(&desc, &|d| {
            let bytes = self.read_small(&blob_name(&d.digest))?;
            select::verify_bytes(d, &bytes)?;
            Ok(bytes)
        })?;
        let mut blobs = HashMap::new();
        for l in image.layers() {
            blobs.insert(l.digest.clone(), blob_name(&l.digest));
        }
        blobs.insert(image.id().clone(), blob_name(image.id()));
        Ok(ArchiveImage {
            names: select::entry_name(&desc).into_iter().collect(),
            image,
            blobs,
            archive: self,
        })
    }

    fn docker_image(self, name: Option<&str>) -> Result<ArchiveImage> {
        let entries: Vec<DockerManifestEntry> =
            parse_bounded(&self.read_small("manifest.json")?, "manifest.json")?;
        let wanted = name.map(ImageName::parse).transpose()?;
        let picked: Vec<&DockerManifestEntry> = entries
            .iter()
            .filter(|e| match &wanted {
                None => true,
                Some(w) => e
                    .repo_tags
                    .iter()
                    .flatten()
                    .filter_map(|t| ImageName::parse(t).ok())
                    .any(|t| &t == w || strip_docker_io(&t) == *w),
            })
            .collect();
        let entry = match picked.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(OciError::Format {
                    path: self.path.clone(),
                    reason: match name {
                        Some(n) => format!("no image tagged {n:?} in manifest.json"),
                        None => "manifest.json lists no image".to_string(),
                    },
                })
            }
            _ => {
                return Err(OciError::Format {
                    path: self.path.clone(),
                    reason: "manifest.json lists several images; say which one".to_string(),
                })
            }
        };
        let config: Raw<ImageConfig> =
            Raw::from_bytes(self.read_small(&entry.config)?, "image config")?;
        if let Some(hex) = Path::new(&entry.config)
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| Digest::from_hex(s.trim_start_matches("sha256:")).ok())
        {
            hex.verify(config.digest(), || format!("config {}", entry.config))?;
        }
        let diff_ids = config.value().rootfs.diff_ids.clone();
        if diff_ids.len() != entry.layers.len() {
            return Err(OciError::InvalidImage(format!(
                "manifest.json lists {} layers but the config has {} diff IDs",
                entry.layers.len(),
                diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        let mut blobs = HashMap::new();
        for (file, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let (offset, size) = self.member(file)?;
            let mut head = [0u8; 4];
            let n = self
                .file
                .read_at(&mut head, offset)
                .io_context(|| format!("reading {file}"))?;
            let compression = Compression::sniff(&head[..n.min(size as usize)]);
            let digest = if compression == Compression::None {
                // The blob is the uncompressed tar: its digest is the diff ID, which the copy
                // verifies as it reads.
                diff_id.clone()
            } else {
                // The diff ID is checked with the layer's entries (`image::validate_within`,
                // before an import copies anything).
                let mut blob = HashingReader::new(self.open_member(file)?);
                io::copy(&mut blob, &mut io::sink())
                    .io_context(|| format!("reading layer {file}"))?;
                blob.finish().0
            };
            layers.push(Descriptor::new(
                compression.oci_media_type(),
                digest.clone(),
                size,
            ));
            blobs.insert(digest, file.clone());
        }
        blobs.insert(config.digest().clone(), entry.config.clone());
        let image = Image::around_config(config, layers, BTreeMap::new())?;
        let names = entry
            .repo_tags
            .iter()
            .flatten()
            .filter_map(|t| ImageName::parse(t).ok())
            .map(|n| strip_docker_io(&n))
            .collect();
        Ok(ArchiveImage {
            archive: self,
            image,
            blobs,
            names,
        })
    }
}

/// `docker.io/library/debian:12` is what users call `debian:12`.
fn strip_docker_io(name: &ImageName) -> ImageName {
    let repo = name
        .repository
        .strip_prefix("docker.io/library/")
        .or_else(|| name.repository.strip_prefix("docker.io/"))
        .unwrap_or(&name.repository);
    ImageName {
        repository: repo.to_string(),
        tag: name.tag.clone(),
    }
}

/// Resolve `.`/`..` in a path inside the archive; `..` may not climb above the top.
fn normalize_dotdot(path: &str) -> std::result::Result<String, ()> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop().ok_or(())?;
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Reads one member of the archive in place.
struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member is cut short",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// An image found in an archive, with the names the archive gives it.
pub struct ArchiveImage {
    archive: TarArchive,
    pub image: Image,
    pub names: Vec<ImageName>,
    blobs: HashMap<Digest, String>,
}

impl BlobSource for ArchiveImage {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let name = self
            .blobs
            .get(&desc.digest)
            .cloned()
            .unwrap_or_else(|| blob_name(&desc.digest));
        Ok(Box::new(self.archive.open_member(&name)?))
    }
}

/// The two archive forms we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveLayout {
    /// OCI layout plus `manifest.json` and `repositories`, all pointing at `blobs/sha256/`.
    Combined,
    /// Classic `docker save`: `<id>.json`, `<diff id>/layer.tar` (uncompressed), `manifest.json`.
    DockerLegacy,
}

/// Writes one image as a tar archive to `out`. Entries get fixed metadata (mode 0644/0755,
/// owner 0, mtime 0), so the same image always gives the same bytes.
///
/// A legacy archive's `layer.tar` is the decompressed layer, and a tar header states its size
/// before its bytes. On an output that can seek ([`ArchiveWriter::seekable`]: a file) the
/// header is written with the size left open and filled in once the layer has streamed by; on
/// one that cannot (a pipe), the sizes are measured first ([`ArchiveWriter::with_layer_sizes`],
/// a decompression that writes nothing). Either way no decompressed copy is written anywhere.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<W>,
    layout: ArchiveLayout,
    names: Vec<ImageName>,
    diff_ids: HashMap<Digest, Digest>,
    written: HashSet<Digest>,
    dirs: HashSet<String>,
    /// Decompressed sizes of the layers by diff ID, measured before writing.
    layer_sizes: HashMap<Digest, u64>,
    /// How to go back over a header on a seekable output.
    rewind: Option<Rewind<W>>,
    /// Bounds what decompressing layers for a legacy archive may expand to.
    budget: Budget,
}

/// The two moves a header written ahead of its size needs from a seekable output.
struct Rewind<W> {
    position: fn(&mut W) -> io::Result<u64>,
    overwrite: fn(&mut W, u64, &[u8]) -> io::Result<()>,
}

impl<W: Write + Seek> ArchiveWriter<W> {
    /// Write each legacy layer straight from its decompressor, filling in its header's size
    /// afterwards (the output must be positioned at its end, as a file being written is).
    pub fn seekable(mut self) -> Self {
        self.rewind = Some(Rewind {
            position: |w| w.stream_position(),
            overwrite: |w, at, bytes| {
                let end = w.stream_position()?;
                w.seek(io::SeekFrom::Start(at))?;
                w.write_all(bytes)?;
                w.seek(io::SeekFrom::Start(end))?;
                Ok(())
            },
        });
        self
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// Bound what the layers of a legacy archive may decompress to (one export's limits).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.budget = Budget::new(limits);
        self
    }

    /// The decompressed size of each layer by diff ID (see [`measure_layers`]), for a legacy
    /// archive on an output that cannot seek.
    pub fn with_layer_sizes(mut self, sizes: HashMap<Digest, u64>) -> Self {
        self.layer_sizes = sizes;
        self
    }

    pub fn new(out: W, image: &Image, names: Vec<ImageName>, layout: ArchiveLayout) -> Self {
        let diff_ids = image
            .layers()
            .iter()
            .map(|l| l.digest.clone())
            .zip(image.diff_ids().iter().cloned())
            .collect();
        Self {
            tar: tar::Builder::new(out),
            layout,
            names,
            diff_ids,
            written: HashSet::new(),
            dirs: HashSet::new(),
            layer_sizes: HashMap::new(),
            rewind: None,
            budget: Budget::new(Limits::default()),
        }
    }

    fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
        h
    }

    fn ensure_dirs(&mut self, path: &str) -> Result<()> {
        let mut prefix = String::new();
        for comp in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            prefix.push_str(comp);
            prefix.push('/');
            if self.dirs.insert(prefix.clone()) {
                let mut h = Self::header(0, 0o755, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, &prefix, io::empty())
                    .io_context(|| format!("writing {prefix} to the archive"))?;
            }
        }
        Ok(())
    }

    fn add_file(&mut self, path: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        self.ensure_dirs(path)?;
        let mut h = Self::header(size, 0o644, tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, path, data)
            .map_err(|e| unwrap_io(e, || format!("writing {path} to the archive")))
    }

    fn add_bytes(&mut self, path: &str, bytes: &[u8]) -> Result<()> {
        self.add_file(path, bytes.len() as u64, &mut &bytes[..])
    }

    /// A compressed layer as its decompressed tar at `path`, checked against its diff ID.
    fn add_decompressed(
        &mut self,
        path: &str,
        desc: &Descriptor,
        diff_id: &Digest,
        compression: Compression,
        data: &mut dyn Read,
    ) -> Result<()> {
        self.ensure_dirs(path)?;
        let what = || format!("layer {}", desc.digest);
        let mut plain = HashingReader::new(self.budget.reader(decompress(data, compression)?));
        let mut header = Self::header(0, 0o644, tar::EntryType::Regular);
        header
            .set_path(path)
            .io_context(|| format!("naming {path} in the archive"))?;
        let size = match &self.rewind {
            Some(rewind) => {
                let out = self.tar.get_mut();
                let at = (rewind.position)(out).io_context(|| "finding the archive's end")?;
                header.set_cksum();
                let size = tar_append_at_most(out, &header, &mut plain, u64::MAX).map_err(|e| {
                    unwrap_io(e, || {
                        format!("decompressing {} into {path} of the archive", what())
                    })
                })?;
                header.set_size(size);
                header.set_cksum();
                (rewind.overwrite)(out, at, header.as_bytes())
                    .io_context(|| format!("writing the size of {path} into the archive"))?;
                size
            }
            None => {
                let Some(&size) = self.layer_sizes.get(diff_id) else {
                    return Err(OciError::Format {
                        path: PathBuf::from(path),
                        reason: "the layer's decompressed size was not measured before \
                                 writing to an output that cannot seek"
                            .to_string(),
                    });
                };
                header.set_size(size);
                header.set_cksum();
                let written = tar_append_at_most(self.tar.get_mut(), &header, &mut plain, size)
                    .map_err(|e| {
                        unwrap_io(e, || {
                            format!("decompressing {} into {path} of the archive", what())
                        })
                    })?;
                if written != size {
                    return Err(OciError::SizeMismatch {
                        what: format!("decompressed {}", what()),
                        expected: size,
                        actual: written,
                    });
                }
                size
            }
        };
        let (actual, read) = plain.finish();
        debug_assert_eq!(read, size);
        diff_id.verify(&actual, || format!("diff ID of {}", what()))
    }

    /// Finish the tar and return the output.
    pub fn finish(self) -> Result<W> {
        self.tar.into_inner().io_context(|| "finishing the archive")
    }
}

impl<W: Write> ImageSink for ArchiveWriter<W> {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.written.contains(&desc.digest))
    }

    fn put_blob(&mut self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let legacy_layer = match self.layout {
            ArchiveLayout::DockerLegacy => self.diff_ids.get(&desc.digest).cloned(),
            ArchiveLayout::Combined => None,
        };
        match legacy_layer {
            None => {
                let path = match self.layout {
                    ArchiveLayout::Combined => blob_name(&desc.digest),
                    ArchiveLayout::DockerLegacy => format!("{}.json", desc.digest.hex()),
                };
                self.add_file(&path, desc.size, data)?;
            }
            Some(diff_id) => {
                let path = format!("{}/layer.tar", diff_id.hex());
                let compression = Compression::from_media_type(&desc.media_type)?;
                if compression == Compression::None {
                    self.add_file(&path, desc.size, data)?;
                } else {
                    self.add_decompressed(&path, desc, &diff_id, compression, data)?;
                }
            }
        }
        self.written.insert(desc.digest.clone());
        Ok(())
    }

    fn put_image(&mut self, image: &Image) -> Result<()> {
        let tags: Vec<String> = self.names.iter().map(|n| n.to_string()).collect();
        let config_desc = image.manifest.value().config.clone();
        if !self.written.contains(&config_desc.digest) {
            self.put_blob(&config_desc, &mut image.config.bytes())?;
        }
        let (config_path, layer_paths): (String, Vec<String>) = match self.layout {
            ArchiveLayout::Combined => (
                blob_name(image.id()),
                image
                    .layers()
                    .iter()
                    .map(|l| blob_name(&l.digest))
                    .collect(),
            ),
            ArchiveLayout::DockerLegacy => (
                format!("{}.json", image.id().hex()),
                image
                    .diff_ids()
                    .iter()
                    .map(|d| format!("{}/layer.tar", d.hex()))
                    .collect(),
            ),
        };
        if self.layout == ArchiveLayout::Combined {
            self.add_bytes(&blob_name(image.digest()), image.manifest.bytes())?;
            let mut index = Index::empty();
            if self.names.is_empty() {
                index.manifests.push(image.manifest_descriptor());
            }
            for name in &self.names {
                index.manifests.push(select::named_descriptor(image, name));
            }
            self.add_bytes("index.json", &to_canonical_vec(&index, "index.json")?)?;
            self.add_bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let manifest = vec![DockerManifestEntry {
            config: config_path,
            repo_tags: Some(tags),
            layers: layer_paths,
        }];
        self.add_bytes(
            "manifest.json",
            &to_canonical_vec(&manifest, "manifest.json")?,
        )?;
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let Some(top) = image.diff_ids().last() {
            for name in &self.names {
                repositories
                    .entry(name.repository.clone())
                    .or_default()
                    .insert(name.tag.clone(), top.hex().to_string());
            }
        }
        self.add_bytes(
            "repositories",
            &to_canonical_vec(&repositories, "repositories")?,
        )?;
        Ok(())
    }
}

/// Write `header` and at most `limit` bytes of `data`, padded to a whole block; the bytes of
/// data written (the caller checks them against the header, or fills the header in after).
fn tar_append_at_most(
    out: &mut dyn Write,
    header: &tar::Header,
    data: &mut dyn Read,
    limit: u64,
) -> io::Result<u64> {
    out.write_all(header.as_bytes())?;
    let written = io::copy(&mut data.take(limit), out)?;
    let padding = (512 - written % 512) % 512;
    out.write_all(&[0u8; 512][..padding as usize])?;
    Ok(written)
}

/// The decompressed size of each compressed layer of `image` by diff ID, each checked against
/// its diff ID on the way (one decompression, nothing written): what a legacy archive on an
/// output that cannot seek needs before it starts.
pub fn measure_layers(
    source: &dyn BlobSource,
    image: &Image,
    limits: Limits,
) -> Result<HashMap<Digest, u64>> {
    let budget = Budget::new(limits);
    let mut sizes = HashMap::new();
    for (desc, diff_id) in image.layers().iter().zip(image.diff_ids()) {
        let compression = Compression::from_media_type(&desc.media_type)?;
        if compression == Compression::None || sizes.contains_key(diff_id) {
            continue;
        }
        let blob = crate::image::open_verified(source, desc)?;
        let mut plain = HashingReader::new(budget.reader(decompress(blob, compression)?));
        io::copy(&mut plain, &mut io::sink())
            .map_err(|e| unwrap_io(e, || format!("decompressing layer {}", desc.digest)))?;
        let (actual, size) = plain.finish();
        diff_id.verify(&actual, || format!("diff ID of layer {}", desc.digest))?;
        sizes.insert(diff_id.clone(), size);
    }
    Ok(sizes)
}
