//! Choosing one image among the entries of an OCI index (a layout's `index.json`).

use crate::digest::Digest;
use crate::error::{OciError, Result};
use crate::image::Image;
use crate::json::parse_bounded;
use crate::name::ImageName;
use crate::platform::Platform;
use crate::spec::{annotation, media, Descriptor, Index};

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
/// for the host platform, chosen by [`Platform::select`] as a registry pull chooses it.
/// `read` fetches and verifies a JSON blob.
pub fn load_image(
    desc: &Descriptor,
    read: &dyn Fn(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Image> {
    let mut desc = desc.clone();
    for _ in 0..4 {
        if media::is_index(&desc.media_type) {
            let index: Index = parse_bounded(&read(&desc)?, "image index")?;
            let host = Platform::host();
            desc = host.select(&index).cloned().ok_or_else(|| {
                OciError::InvalidImage(host.no_entry(&desc.digest.to_string(), &index))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::to_canonical_vec;
    use crate::spec::{ImageConfig, RootFs};
    use std::collections::BTreeMap;

    fn image(arch: &str, variant: Option<&str>) -> Image {
        let config = ImageConfig {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
            rootfs: RootFs {
                kind: "layers".to_string(),
                diff_ids: Vec::new(),
            },
            ..Default::default()
        };
        Image::assemble(config, Vec::new(), BTreeMap::new()).unwrap()
    }

    fn entry(desc: Descriptor, arch: &str, variant: Option<&str>) -> Descriptor {
        let mut desc = desc;
        desc.platform = Some(crate::spec::Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
            extra: BTreeMap::new(),
        });
        desc
    }

    /// An index in memory and `load_image` over it: every blob it names is readable.
    fn load(entries: Vec<Descriptor>, blobs: Vec<Vec<u8>>) -> Result<Image> {
        let mut index = Index::empty();
        index.manifests = entries;
        let index_bytes = to_canonical_vec(&index, "index").unwrap();
        let top = Descriptor::new(
            media::OCI_INDEX,
            Digest::of_bytes(&index_bytes),
            index_bytes.len() as u64,
        );
        let mut blobs: BTreeMap<Digest, Vec<u8>> = blobs
            .into_iter()
            .map(|b| (Digest::of_bytes(&b), b))
            .collect();
        blobs.insert(top.digest.clone(), index_bytes);
        load_image(&top, &|d| {
            blobs
                .get(&d.digest)
                .cloned()
                .ok_or_else(|| OciError::BlobNotFound(d.digest.to_string()))
        })
    }

    #[test]
    fn an_index_resolves_as_a_registry_resolves_it() {
        let host = Platform::host();
        let arch = host.architecture.as_str();
        let other = if arch == "s390x" { "riscv64" } else { "s390x" };
        let (native, odd, foreign) = (
            image(arch, None),
            image(arch, Some("v7-odd")),
            image(other, None),
        );
        let blobs = |images: &[&Image]| {
            images
                .iter()
                .flat_map(|i| [i.manifest.bytes().to_vec(), i.config.bytes().to_vec()])
                .collect::<Vec<_>>()
        };
        // Nested indexes are not candidates, another architecture is not, and the host's
        // variant (none) wins over an odd one listed first.
        let mut nested = entry(native.manifest_descriptor(), arch, None);
        nested.media_type = media::OCI_INDEX.to_string();
        let picked = load(
            vec![
                entry(foreign.manifest_descriptor(), other, None),
                nested,
                entry(odd.manifest_descriptor(), arch, Some("v7-odd")),
                entry(native.manifest_descriptor(), arch, None),
            ],
            blobs(&[&native, &odd, &foreign]),
        )
        .unwrap();
        assert_ne!(native.digest(), odd.digest());
        assert_eq!(picked.digest(), native.digest());

        // A lone entry for another platform is not taken; the error lists what there is.
        let err = load(
            vec![entry(foreign.manifest_descriptor(), other, Some("v1"))],
            blobs(&[&foreign]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, OciError::InvalidImage(_)), "{text}");
        assert!(
            text.ends_with(&format!(
                "is an index without an image for {host}; it has: linux/{other}/v1"
            )),
            "{text}"
        );
    }
}
