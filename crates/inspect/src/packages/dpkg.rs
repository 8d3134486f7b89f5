//! Debian packages: the installed packages of `var/lib/dpkg/status` and of the files in
//! `var/lib/dpkg/status.d/` (distroless images), read by the shared reader
//! [`nbrt_oci::facts::dpkg`], whose rule for "installed" the builder's lock uses too.

use nbrt_oci::facts::dpkg;

use super::{Package, Source};
use crate::view::View;

/// Keep only the fields the reader uses of each paragraph (continuation lines dropped).
pub fn reduce_status(text: &str) -> String {
    dpkg::reduce(text)
}

pub fn packages(view: &View) -> Vec<Package> {
    // A status file the index could not keep has a warning in the view already.
    dpkg::installed(view)
        .into_items()
        .into_iter()
        .map(|p| Package {
            source: Source::Debian,
            name: p.name,
            version: p.version,
            build_string: crate::manifest::DEBIAN_BUILD.to_string(),
            build_number: 0,
            channel: "debian".to_string(),
            base_url: None,
            platform: p.architecture,
            location: "/".to_string(),
            license: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_paragraphs() {
        let status = "Package: bash\nEssential: yes\nStatus: install ok installed\nVersion: 5.2.15-2+b7\nArchitecture: amd64\nDescription: GNU\n Bourne\n\nPackage: gone\nStatus: purge ok not-installed\nVersion: 1\nArchitecture: all\n";
        let r = reduce_status(status);
        assert_eq!(
            r,
            "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\nArchitecture: amd64\n\nPackage: gone\nStatus: purge ok not-installed\nVersion: 1\nArchitecture: all\n\n"
        );
        assert_eq!(
            dpkg::parse_status(&r).first().map(|p| p.version.as_str()),
            Some("5.2.15-2+b7")
        );
    }
}
