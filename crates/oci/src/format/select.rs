//! Choosing one image among the entries of an OCI index (a layout's `index.json`).

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::image::Image;
use crate::json::parse_bounded;
use crate::name::ImageName;
use crate::spec::{annotation, media, Descriptor, Index};

/// The platform images are chosen for when an index offers several.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux", arch)
}

/// The names an index entry carries: the full name from `io.containerd.image.name`, or the
/// `ref.name` annotation when it is a full name itself.
pub fn entry_name(desc: &Descriptor) -> Option<ImageName> {
    desc.annotations
        .get(annotation::CONTAINERD_NAME)
        .or_else(|| desc.annotations.get(annotation::REF_NAME))
        .and_then(|n| ImageName::parse(n).ok())
}

fn matches(desc: &Descriptor, wanted: &str) -> bool {
    let ref_name = desc.annotations.get(annotation::REF_NAME);
    if ref_name.is_some_and(|r| r == wanted) {
        return true;
    }
    let Ok(wanted_name) = ImageName::parse(wanted) else {
        return false;
    };
    entry_name(desc).is_some_and(|n| n == wanted_name)
}

/// Pick the manifest descriptor named `wanted` (a `ref.name` such as a tag, or a full name),
/// or the only one when no name is given.
pub fn pick(index: &Index, wanted: Option<&str>, place: &str) -> Result<Descriptor> {
    let candidates: Vec<&Descriptor> = match wanted {
        Some(w) => index.manifests.iter().filter(|d| matches(d, w)).collect(),
        None => index.manifests.iter().collect(),
    };
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(OciError::InvalidImage(match wanted {
            Some(w) => format!("{place} has no image named {w:?}"),
            None => format!("{place} holds no image"),
        })),
        many => {
            let first = &many[0].digest;
            if many.iter().all(|d| &d.digest == first) {
                return Ok(many[0].clone());
            }
            let names: Vec<String> = many
                .iter()
                .filter_map(|d| d.annotations.get(annotation::REF_NAME).cloned())
                .collect();
            Err(OciError::InvalidImage(format!(
                "{place} holds {} images ({}); say which one",
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// Follow a descriptor to a single-platform image: an image index is resolved to the entry
/// for the host platform. `read` fetches and verifies a JSON blob.
pub fn load_image(
    desc: &Descriptor,
    read: &dyn Fn(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Image> {
    let mut desc = desc.clone();
    for _ in 0..4 {
        if media::is_index(&desc.media_type) {
            let index: Index = parse_bounded(&read(&desc)?, "image index")?;
            let (os, arch) = host_platform();
            desc = index
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| p.os == os && p.architecture == arch)
                })
                .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]))
                .cloned()
                .ok_or_else(|| {
                    OciError::InvalidImage(format!(
                        "the image index {} has no {os}/{arch} image",
                        desc.digest
                    ))
                })?;
            continue;
        }
        let manifest = crate::image::Raw::from_bytes(read(&desc)?, "image manifest")?;
        let config_desc: &Descriptor =
            &crate::image::Raw::<crate::spec::Manifest>::value(&manifest).config;
        let config = crate::image::Raw::from_bytes(read(config_desc)?, "image config")?;
        return Image::from_parts(manifest, config);
    }
    Err(OciError::InvalidImage(
        "image indexes nested too deeply".to_string(),
    ))
}

/// The index entry of an exported image under `name`: `ref.name` is the tag, as umoci and
/// skopeo's `oci:DIR:TAG` expect; the full name goes where containerd and Docker look for it.
pub fn named_descriptor(image: &Image, name: &ImageName) -> Descriptor {
    let mut desc = image.manifest_descriptor();
    desc.annotations
        .insert(annotation::REF_NAME.to_string(), name.tag.clone());
    desc.annotations
        .insert(annotation::CONTAINERD_NAME.to_string(), name.to_string());
    desc
}

/// Check bytes against a descriptor.
pub fn verify_bytes(desc: &Descriptor, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != desc.size {
        return Err(OciError::SizeMismatch {
            what: format!("blob {}", desc.digest),
            expected: desc.size,
            actual: bytes.len() as u64,
        });
    }
    desc.digest
        .verify(&Digest::of_bytes(bytes), || format!("blob {}", desc.digest))
}
