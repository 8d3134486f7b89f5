//! The platform an image is for: `os/architecture[/variant]` with the OCI image spec's
//! (GOARCH) names, the host's platform, and which entry of a multi-platform index is the
//! one for a platform — one rule for registries, OCI layouts and archives alike.

use std::fmt;
use std::str::FromStr;

use crate::error::{OciError, Result};
use crate::spec::{self, media, Descriptor, Index};

/// An image platform: `linux/amd64`, `linux/arm64/v8`, `linux/arm/v7`.
///
/// Not to be confused with [`spec::Platform`], the `platform` object of a descriptor as it
/// is read and written (with its extra fields); this type is what nbrt decides with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// The GOARCH name: `amd64`, `arm64`, `386`, `ppc64le`, `loong64`, `s390x`, …
    pub architecture: String,
    /// `v7` (arm), `v8` (arm64), `v2` / `v3` (amd64); none for most images.
    pub variant: Option<String>,
}

/// The GOARCH name (what OCI platforms use) of a Rust target architecture, as in
/// `std::env::consts::ARCH`. Names that are the same in both pass through (`arm`, `s390x`,
/// `riscv64`, …).
pub fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Longest platform string [`Platform::parse`] takes.
const MAX_PLATFORM_LEN: usize = 128;

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// This machine: `linux`, the GOARCH name of the architecture nbrt was built for, and no
    /// variant (for arm64 that is the same as `v8`, see [`Platform::select`]).
    pub fn host() -> Self {
        Self::new("linux", goarch(std::env::consts::ARCH), None)
    }

    /// Parse `os/architecture[/variant]`, e.g. `linux/amd64` or `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || OciError::Unsupported {
            what: "platform (expected os/architecture[/variant], e.g. linux/amd64)".to_string(),
            value: s.to_string(),
        };
        if s.len() > MAX_PLATFORM_LEN {
            return Err(bad());
        }
        let part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if part(os) && part(arch) => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if part(os) && part(arch) && part(variant) => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(bad()),
        }
    }

    /// `os/architecture`, without the variant.
    pub fn os_arch(&self) -> String {
        format!("{}/{}", self.os, self.architecture)
    }

    /// Whether an index entry's platform is this one: the same OS and architecture. The
    /// variant does not decide a match; [`Platform::select`] prefers the same variant.
    pub fn matches(&self, p: &spec::Platform) -> bool {
        p.os == self.os && p.architecture == self.architecture
    }

    /// Whether `p` has this platform's variant, no variant and `v8` counting as the same for
    /// arm64 (the variant the image spec gives arm64 when none is named).
    fn same_variant(&self, p: &spec::Platform) -> bool {
        let normal = |variant: Option<&str>| match variant {
            Some("v8") if self.architecture == "arm64" => None,
            v => v.map(str::to_string),
        };
        normal(p.variant.as_deref()) == normal(self.variant.as_deref())
    }

    /// The entry of a multi-platform index for this platform. The rule, the same for
    /// registries (pull) and for OCI layouts and archives (`load_image`):
    ///
    /// 1. only image manifests (OCI or Docker) are candidates: nested indexes and entries
    ///    without a platform never are;
    /// 2. of those, the ones whose platform [`matches`](Platform::matches) (same OS and
    ///    architecture);
    /// 3. of those, the first with this platform's variant (for arm64, `v8` or none), else
    ///    the first of any variant;
    /// 4. when none is for any platform, an index of one image manifest that names no
    ///    platform gives that one (tools that write a single image's index often leave the
    ///    platform out).
    ///
    /// `None` when no entry is for this platform ([`Platform::no_entry`] says so).
    pub fn select<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        let candidates: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| media::is_manifest(&d.media_type))
            .filter(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
            .collect();
        let chosen = candidates
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.same_variant(p)))
            .or(candidates.first())
            .copied();
        chosen.or(match index.manifests.as_slice() {
            [only] if only.platform.is_none() && media::is_manifest(&only.media_type) => Some(only),
            _ => None,
        })
    }

    /// The message for an index `what` (e.g. `127.0.0.1:5000/nb/x:1 (sha256:…)`) that has
    /// no entry for this platform, listing the platforms it does have.
    pub fn no_entry(&self, what: &str, index: &Index) -> String {
        let offered: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref())
            .map(|p| Platform::from(p).to_string())
            .collect();
        format!(
            "{what} is an index without an image for {self}; it has: {}",
            if offered.is_empty() {
                "no platforms".to_string()
            } else {
                offered.join(", ")
            }
        )
    }
}

impl From<&spec::Platform> for Platform {
    fn from(p: &spec::Platform) -> Self {
        Self::new(&p.os, &p.architecture, p.variant.as_deref())
    }
}

impl fmt::Display for Platform {
    /// `os/architecture[/variant]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = OciError;

    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use std::collections::BTreeMap;

    fn descriptor(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        let mut d = Descriptor::new(media::OCI_MANIFEST, Digest::of_bytes(&[n]), 10);
        d.platform = Some(crate::spec::Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: variant.map(str::to_string),
            extra: BTreeMap::new(),
        });
        d
    }

    fn index(entries: Vec<Descriptor>) -> Index {
        let mut index = Index::empty();
        index.manifests = entries;
        index
    }

    #[test]
    fn names_architectures_as_goarch() {
        for (rust, go) in [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("x86", "386"),
            ("powerpc64", "ppc64le"),
            ("loongarch64", "loong64"),
            ("s390x", "s390x"),
            ("riscv64", "riscv64"),
            ("arm", "arm"),
        ] {
            assert_eq!(goarch(rust), go, "{rust}");
        }
    }

    #[test]
    fn knows_the_host() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(host.architecture, goarch(std::env::consts::ARCH));
        assert_eq!(host.variant, None);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host.to_string(), "linux/arm64");
        }
    }

    #[test]
    fn parses_and_prints() {
        for s in [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/arm/v7",
            "windows/amd64",
        ] {
            let p = Platform::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(s.parse::<Platform>().unwrap(), p);
        }
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
            ("linux", "arm", Some("v7"))
        );
        assert_eq!(p.os_arch(), "linux/arm");
        let long = format!("linux/{}", "a".repeat(200));
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux//v8",
            "linux/arm64/",
            "linux/arm/v7/x",
            "linux/amd 64",
            "linux/amd64\n",
            long.as_str(),
        ] {
            let err = Platform::parse(bad).unwrap_err();
            assert!(
                matches!(err, OciError::Unsupported { .. }),
                "{bad:?}: {err}"
            );
        }
        let spec = descriptor("arm64", Some("v8"), 0).platform.unwrap();
        assert_eq!(Platform::from(&spec).to_string(), "linux/arm64/v8");
    }

    #[test]
    fn matches_os_and_architecture() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let p = |arch: &str, variant: Option<&str>| descriptor(arch, variant, 0).platform.unwrap();
        assert!(amd64.matches(&p("amd64", None)));
        assert!(amd64.matches(&p("amd64", Some("v3"))));
        assert!(!amd64.matches(&p("arm64", None)));
        let mut windows = p("amd64", None);
        windows.os = "windows".to_string();
        assert!(!amd64.matches(&windows));
    }

    #[test]
    fn picks_the_host_platform() {
        let arch = Platform::host().architecture;
        let arch = arch.as_str();
        let mut index = Index::empty();
        index.manifests.push(descriptor("s390x-not-this", None, 1));
        index.manifests.push(descriptor(arch, Some("v7-odd"), 2));
        index.manifests.push(descriptor(arch, None, 3));
        let picked = Platform::host().select(&index).unwrap();
        assert_eq!(picked.digest, Digest::of_bytes(&[3]));
        index
            .manifests
            .retain(|d| d.digest != Digest::of_bytes(&[3]));
        assert_eq!(
            Platform::host().select(&index).unwrap().digest,
            Digest::of_bytes(&[2])
        );
        index
            .manifests
            .retain(|d| d.digest == Digest::of_bytes(&[1]));
        assert!(Platform::host().select(&index).is_none());
    }

    #[test]
    fn prefers_the_variant() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let picked = |p: &Platform, i: &Index| p.select(i).map(|d| d.digest.clone());
        let one = index(vec![
            descriptor("arm64", Some("v9"), 1),
            descriptor("arm64", Some("v8"), 2),
            descriptor("arm64", None, 3),
        ]);
        // For arm64, v8 and no variant are the same: the first of them wins.
        assert_eq!(picked(&arm64, &one), Some(Digest::of_bytes(&[2])));
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(picked(&v8, &one), Some(Digest::of_bytes(&[2])));
        let two = index(vec![
            descriptor("arm64", Some("v9"), 1),
            descriptor("arm64", None, 3),
        ]);
        assert_eq!(picked(&v8, &two), Some(Digest::of_bytes(&[3])));
        // No entry with the variant: the first of the architecture.
        let three = index(vec![
            descriptor("amd64", Some("v3"), 4),
            descriptor("amd64", Some("v2"), 5),
        ]);
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert_eq!(picked(&amd64, &three), Some(Digest::of_bytes(&[4])));
        let four = index(vec![
            descriptor("amd64", Some("v3"), 4),
            descriptor("amd64", None, 6),
        ]);
        assert_eq!(picked(&amd64, &four), Some(Digest::of_bytes(&[6])));
        let v2 = Platform::parse("linux/amd64/v2").unwrap();
        assert_eq!(picked(&v2, &three), Some(Digest::of_bytes(&[5])));
    }

    #[test]
    fn selects_only_image_manifests() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let mut nested = descriptor("amd64", None, 1);
        nested.media_type = media::OCI_INDEX.to_string();
        let mut bare = descriptor("amd64", None, 2);
        bare.platform = None;
        let mut docker = descriptor("amd64", None, 3);
        docker.media_type = media::DOCKER_MANIFEST.to_string();
        let i = index(vec![nested.clone(), bare.clone(), docker]);
        assert_eq!(amd64.select(&i).unwrap().digest, Digest::of_bytes(&[3]));
        // A lone image manifest naming no platform is taken; one for another platform, or a
        // nested index, is not.
        assert_eq!(
            amd64.select(&index(vec![bare])).unwrap().digest,
            Digest::of_bytes(&[2])
        );
        assert!(amd64.select(&index(vec![nested])).is_none());
        assert!(amd64
            .select(&index(vec![descriptor("arm64", None, 4)]))
            .is_none());
    }

    #[test]
    fn says_what_an_index_has_when_nothing_matches() {
        let amd64 = Platform::parse("linux/amd64").unwrap();
        let i = index(vec![
            descriptor("s390x", None, 1),
            descriptor("arm", Some("v7"), 2),
        ]);
        assert!(amd64.select(&i).is_none());
        assert_eq!(
            amd64.no_entry("r:1 (sha256:x)", &i),
            "r:1 (sha256:x) is an index without an image for linux/amd64; it has: \
             linux/s390x, linux/arm/v7"
        );
        assert_eq!(
            amd64.no_entry("r:1", &Index::empty()),
            "r:1 is an index without an image for linux/amd64; it has: no platforms"
        );
    }
}
