//! Packages as `conda list --json` records (a bare array of eight-key objects), ArcGIS
//! Notebook Server's `{"libraries": [...]}`, or table rows.
//!
//! Every package is listed. Python distributions that conda did not install look the way
//! conda shows pip-installed packages (channel and platform `pypi`, build `pypi_0`); Debian
//! packages get channel `debian`, build `deb_0`, their Debian architecture as platform and no
//! base URL. [`Selection`] leaves sources out (`--no-debian` gives exactly what `conda list`
//! inside the image would show for its environments).

use serde::{Deserialize, Serialize};

use crate::packages::{Package, Source};

/// One record of `conda list --json` (conda's `dist_fields_dump`): exactly these eight keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CondaRecord {
    pub base_url: Option<String>,
    pub build_number: u64,
    pub build_string: String,
    pub channel: String,
    pub dist_name: String,
    pub name: String,
    pub platform: Option<String>,
    pub version: String,
}

impl From<&Package> for CondaRecord {
    fn from(p: &Package) -> Self {
        CondaRecord {
            base_url: p.base_url.clone(),
            build_number: p.build_number,
            build_string: p.build_string.clone(),
            channel: p.channel.clone(),
            dist_name: format!("{}-{}-{}", p.name, p.version, p.build_string),
            name: p.name.clone(),
            platform: p.platform.clone(),
            version: p.version.clone(),
        }
    }
}

/// ArcGIS's `runtimes/<id>/manifest` shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Libraries {
    pub libraries: Vec<CondaRecord>,
}

/// Which sources to list.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub conda: bool,
    pub pypi: bool,
    pub debian: bool,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            conda: true,
            pypi: true,
            debian: true,
        }
    }
}

impl Selection {
    pub fn keeps(&self, p: &Package) -> bool {
        match p.source {
            Source::Conda => self.conda,
            Source::Pypi => self.pypi,
            Source::Debian => self.debian,
        }
    }
}

/// Records sorted by name, as `conda list` sorts them.
pub fn records(packages: &[Package], sel: Selection) -> Vec<CondaRecord> {
    let mut out: Vec<CondaRecord> = packages
        .iter()
        .filter(|p| sel.keeps(p))
        .map(CondaRecord::from)
        .collect();
    out.sort_by(|a, b| {
        (a.name.to_lowercase(), &a.channel, &a.version).cmp(&(
            b.name.to_lowercase(),
            &b.channel,
            &b.version,
        ))
    });
    out
}

pub const TABLE_HEADER: &[&str] = &["NAME", "VERSION", "BUILD", "CHANNEL", "SOURCE", "LOCATION"];

pub fn table_rows(packages: &[Package], sel: Selection) -> Vec<Vec<String>> {
    packages
        .iter()
        .filter(|p| sel.keeps(p))
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.clone(),
                p.build_string.clone(),
                p.channel.clone(),
                p.source.as_str().to_string(),
                p.location.clone(),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_has_the_eight_keys() {
        let p = Package {
            source: Source::Pypi,
            name: "six".into(),
            version: "1.17.0".into(),
            build_string: "pypi_0".into(),
            build_number: 0,
            channel: "pypi".into(),
            base_url: Some("https://conda.anaconda.org/pypi".into()),
            platform: Some("pypi".into()),
            location: "/opt/conda".into(),
            license: None,
        };
        let v = serde_json::to_value(CondaRecord::from(&p)).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "base_url",
                "build_number",
                "build_string",
                "channel",
                "dist_name",
                "name",
                "platform",
                "version"
            ]
        );
        assert_eq!(v["dist_name"], "six-1.17.0-pypi_0");
    }
}
