//! Debian packages: the paragraphs of `var/lib/dpkg/status` and of the files in
//! `var/lib/dpkg/status.d/` (distroless images), every package dpkg does not report as
//! `not-installed` (what `dpkg-query -W` lists).

use super::{Package, Source};
use crate::view::View;

const FIELDS: &[&str] = &["Package", "Status", "Version", "Architecture", "Source"];

/// Keep only the fields we read from each paragraph (continuation lines dropped).
pub fn reduce_status(text: &str) -> String {
    let mut out = String::new();
    for para in text.split("\n\n") {
        let mut kept = String::new();
        for line in para.lines() {
            if let Some((k, _)) = line.split_once(':') {
                if !line.starts_with([' ', '\t']) && FIELDS.contains(&k) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
        if !kept.is_empty() {
            out.push_str(&kept);
            out.push('\n');
        }
    }
    out
}

fn field<'a>(para: &'a str, key: &str) -> Option<&'a str> {
    para.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

pub fn packages(view: &View) -> Vec<Package> {
    let mut out = Vec::new();
    for (path, text) in view.captured() {
        if path != "var/lib/dpkg/status" && !path.starts_with("var/lib/dpkg/status.d/") {
            continue;
        }
        for para in text.split("\n\n") {
            let (Some(name), Some(version)) = (field(para, "Package"), field(para, "Version"))
            else {
                continue;
            };
            let installed = field(para, "Status")
                .map(|s| s.split_whitespace().last() != Some("not-installed"))
                .unwrap_or(true);
            if !installed {
                continue;
            }
            out.push(Package {
                source: Source::Debian,
                name: name.to_string(),
                version: version.to_string(),
                build_string: "deb_0".to_string(),
                build_number: 0,
                channel: "debian".to_string(),
                base_url: None,
                platform: field(para, "Architecture").map(str::to_string),
                location: "/".to_string(),
                license: None,
            });
        }
    }
    out
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
        assert_eq!(field(&r, "Version"), Some("5.2.15-2+b7"));
    }
}
