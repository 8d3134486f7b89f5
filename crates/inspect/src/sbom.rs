//! Software bills of materials: SPDX 2.3 and CycloneDX 1.5, both JSON. Output is a function
//! of the image alone (its digest names the document, its `created` time dates it), so the
//! same image always gives the same bytes. Packages carry package URLs: `pkg:conda`,
//! `pkg:pypi`, `pkg:deb/debian`.

use serde_json::{json, Value};

use crate::packages::{python, Package, Source};

/// What the document says about the image itself.
pub struct Subject<'a> {
    /// The name the image was asked for (`scipy:latest`).
    pub name: &'a str,
    /// The manifest digest (`sha256:…`).
    pub digest: &'a str,
    /// RFC 3339 creation time of the image, if its config has one.
    pub created: Option<&'a str>,
}

const TOOL: &str = concat!("nbrt-", env!("CARGO_PKG_VERSION"));

/// Percent-encode everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of a package.
pub fn purl(p: &Package) -> String {
    match p.source {
        Source::Pypi => format!(
            "pkg:pypi/{}@{}",
            pct(&python::normalize(&p.name)),
            pct(&p.version)
        ),
        Source::Conda => {
            let mut q = vec![format!("build={}", pct(&p.build_string))];
            if !p.channel.is_empty() {
                q.push(format!("channel={}", pct(&p.channel)));
            }
            if let Some(s) = &p.platform {
                q.push(format!("subdir={}", pct(s)));
            }
            format!(
                "pkg:conda/{}@{}?{}",
                pct(&p.name),
                pct(&p.version),
                q.join("&")
            )
        }
        Source::Debian => {
            let arch = p
                .platform
                .as_deref()
                .map(|a| format!("?arch={}", pct(a)))
                .unwrap_or_default();
            format!("pkg:deb/debian/{}@{}{arch}", pct(&p.name), pct(&p.version))
        }
    }
}

fn created(subject: &Subject) -> String {
    subject
        .created
        .filter(|c| !c.is_empty())
        .unwrap_or("1970-01-01T00:00:00Z")
        .to_string()
}

pub fn spdx(subject: &Subject, packages: &[Package]) -> Value {
    let hex = subject.digest.trim_start_matches("sha256:");
    let mut pkgs = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": subject.name,
        "versionInfo": subject.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{}", p.source.as_str(), i + 1);
        pkgs.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("{} package in {}", p.source.as_str(), p.location),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(p),
            }],
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": format!("https://nbrt.invalid/spdx/{hex}"),
        "creationInfo": {"created": created(subject), "creators": [format!("Tool: {TOOL}")]},
        "packages": pkgs,
        "relationships": rels,
    })
}

/// A UUID-shaped serial number derived from the image digest.
fn serial(hex: &str) -> String {
    let h: String = hex.chars().chain(std::iter::repeat('0')).take(32).collect();
    format!(
        "urn:uuid:{}-{}-5{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

pub fn cyclonedx(subject: &Subject, packages: &[Package]) -> Value {
    let hex = subject.digest.trim_start_matches("sha256:");
    let components: Vec<Value> = packages
        .iter()
        .map(|p| {
            let purl = purl(p);
            json!({
                "type": "library",
                "bom-ref": purl,
                "name": p.name,
                "version": p.version,
                "purl": purl,
                "properties": [
                    {"name": "nbrt:source", "value": p.source.as_str()},
                    {"name": "nbrt:location", "value": p.location},
                ],
            })
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial(hex),
        "version": 1,
        "metadata": {
            "timestamp": created(subject),
            "tools": [{"vendor": "nbrt", "name": "nbrt", "version": env!("CARGO_PKG_VERSION")}],
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": subject.name,
                "version": subject.digest,
                "hashes": [{"alg": "SHA-256", "content": hex}],
            },
        },
        "components": components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(source: Source, name: &str, version: &str, platform: Option<&str>) -> Package {
        Package {
            source,
            name: name.into(),
            version: version.into(),
            build_string: "py_0".into(),
            build_number: 0,
            channel: "conda-forge".into(),
            base_url: None,
            platform: platform.map(str::to_string),
            location: "/".into(),
            license: None,
        }
    }

    #[test]
    fn purls() {
        assert_eq!(
            purl(&pkg(
                Source::Debian,
                "libc6",
                "2.36-9+deb12u10",
                Some("amd64")
            )),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64"
        );
        assert_eq!(
            purl(&pkg(Source::Pypi, "Jupyter_Server", "2.0", None)),
            "pkg:pypi/jupyter-server@2.0"
        );
        assert_eq!(
            purl(&pkg(Source::Conda, "numpy", "2.1", Some("linux-64"))),
            "pkg:conda/numpy@2.1?build=py_0&channel=conda-forge&subdir=linux-64"
        );
        assert_eq!(
            serial("0123456789abcdef0123456789abcdef"),
            "urn:uuid:01234567-89ab-5def-a123-456789abcdef"
        );
    }
}
