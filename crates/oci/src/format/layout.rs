//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/sha256/…`), read and
//! written. Writing into an existing layout adds to it, as skopeo and umoci do.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, OciError, Result};
use crate::format::select;
use crate::image::{unwrap_io, BlobSource, Image, ImageSink};
use crate::json::{parse_bounded, to_canonical_vec, MAX_JSON_SIZE};
use crate::name::ImageName;
use crate::spec::{annotation, Descriptor, Index};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

pub struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    /// Open an existing layout.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let marker = root.join("oci-layout");
        let bytes = fs::read(&marker).map_err(|e| OciError::Format {
            path: root.clone(),
            reason: format!("not an OCI image layout (oci-layout: {e})"),
        })?;
        let v: serde_json::Value = parse_bounded(&bytes, "oci-layout")?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(OciError::Format {
                path: marker,
                reason: "imageLayoutVersion is not 1.0.0".to_string(),
            });
        }
        Ok(Self { root })
    }

    /// Open an existing layout to add to it. Nothing in it may be a symlink where a write
    /// goes (`blobs`, `blobs/sha256`, `index.json`, `oci-layout`): a write would follow it
    /// out of the layout. Leftovers of killed exports in it are removed.
    pub fn open_for_writing(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = Self::open(root)?;
        for (rel, dir) in [
            ("blobs", true),
            ("blobs/sha256", true),
            ("index.json", false),
            ("oci-layout", false),
        ] {
            let path = layout.root.join(rel);
            let meta =
                fs::symlink_metadata(&path).io_context(|| format!("reading {}", path.display()))?;
            if meta.file_type().is_symlink() || meta.is_dir() != dir {
                return Err(OciError::Format {
                    path: layout.root.clone(),
                    reason: format!(
                        "{rel} is {} in this layout; refusing to write through it",
                        if meta.file_type().is_symlink() {
                            "a symlink"
                        } else if dir {
                            "not a directory"
                        } else {
                            "not a file"
                        }
                    ),
                });
            }
        }
        crate::fsutil::sweep_export_leftovers(&layout.root);
        crate::fsutil::sweep_export_leftovers(&layout.root.join("blobs/sha256"));
        Ok(layout)
    }

    /// Open a layout for writing, creating it if the directory does not exist or is empty.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let empty = fs::read_dir(&root).map_or(true, |mut d| d.next().is_none());
        if !empty {
            return Self::open_for_writing(root);
        }
        fs::create_dir_all(root.join("blobs/sha256"))
            .io_context(|| format!("creating {}", root.display()))?;
        write_atomic(&root, &root.join("oci-layout"), OCI_LAYOUT)?;
        write_atomic(
            &root,
            &root.join("index.json"),
            &to_canonical_vec(&Index::empty(), "index.json")?,
        )?;
        Ok(Self { root })
    }

    pub fn index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        let bytes = fs::read(&path).io_context(|| format!("reading {}", path.display()))?;
        parse_bounded(&bytes, &path.display().to_string())
    }

    /// The image named `name` (a tag as in `ref.name`, or a full name), or the only one.
    pub fn image(&self, name: Option<&str>) -> Result<(Image, Option<ImageName>)> {
        let index = self.index()?;
        let desc = select::pick(&index, name, &self.root.display().to_string())?;
        let image = select::load_image(&desc, &|d| self.read_json(d))?;
        Ok((image, select::entry_name(&desc)))
    }

    fn blob_path(&self, desc: &Descriptor) -> PathBuf {
        self.root.join("blobs/sha256").join(desc.digest.hex())
    }

    fn read_json(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        if desc.size > MAX_JSON_SIZE {
            return Err(OciError::TooLarge {
                what: format!("document {}", desc.digest),
                size: desc.size,
                limit: MAX_JSON_SIZE,
            });
        }
        let path = self.blob_path(desc);
        let bytes = fs::read(&path).io_context(|| format!("reading {}", path.display()))?;
        select::verify_bytes(desc, &bytes)?;
        Ok(bytes)
    }

    /// A sink writing an image into this layout under the given names.
    pub fn sink(&self, names: Vec<ImageName>) -> LayoutSink<'_> {
        LayoutSink {
            layout: self,
            names,
        }
    }
}

impl BlobSource for LayoutDir {
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let path = self.blob_path(desc);
        let f = fs::File::open(&path).io_context(|| format!("opening {}", path.display()))?;
        Ok(Box::new(f))
    }
}

fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::Builder::new()
        .prefix(&crate::fsutil::export_temp_prefix())
        .tempfile_in(root)
        .io_context(|| format!("creating a temporary file in {}", root.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)
        .io_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .io_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

pub struct LayoutSink<'a> {
    layout: &'a LayoutDir,
    names: Vec<ImageName>,
}

impl ImageSink for LayoutSink<'_> {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        // A symlink in place of a blob is not the blob: it is replaced.
        Ok(fs::symlink_metadata(self.layout.blob_path(desc)).is_ok_and(|m| m.is_file()))
    }

    fn put_blob(&mut self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let root = &self.layout.root;
        let mut tmp = tempfile::Builder::new()
            .prefix(&crate::fsutil::export_temp_prefix())
            .tempfile_in(root.join("blobs/sha256"))
            .io_context(|| format!("creating a temporary file in {}", root.display()))?;
        std::io::copy(data, &mut tmp)
            .map_err(|e| unwrap_io(e, || format!("writing blob {}", desc.digest)))?;
        let path = self.layout.blob_path(desc);
        tmp.persist(&path)
            .map_err(|e| e.error)
            .io_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    }

    fn put_image(&mut self, image: &Image) -> Result<()> {
        let root = &self.layout.root;
        for (desc, bytes) in [
            (image.manifest.value().config.clone(), image.config.bytes()),
            (image.manifest_descriptor(), image.manifest.bytes()),
        ] {
            write_atomic(root, &self.layout.blob_path(&desc), bytes)?;
        }
        let mut index = self.layout.index()?;
        if self.names.is_empty() && !index.manifests.iter().any(|d| &d.digest == image.digest()) {
            index.manifests.push(image.manifest_descriptor());
        }
        for name in &self.names {
            index
                .manifests
                .retain(|d| d.annotations.get(annotation::REF_NAME) != Some(&name.tag));
            index.manifests.push(select::named_descriptor(image, name));
        }
        write_atomic(
            root,
            &root.join("index.json"),
            &to_canonical_vec(&index, "index.json")?,
        )
    }
}
