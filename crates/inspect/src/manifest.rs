//! The one manifest definition, and packages as table rows.
//!
//! A [`Manifest`] is what `nbrt manifest`, the site's runtime registry, `nbrt check` and
//! the migration diff all mean by an image's manifest: its conda and Python packages as
//! `conda list --json` records (ArcGIS's `libraries`), and its Debian packages in a list
//! apart. Python distributions that conda did not install look the way conda shows
//! pip-installed packages (channel and platform `pypi`, build `pypi_0`). A manifest
//! uploaded in either ArcGIS shape (`conda list --json`'s bare array, or
//! `{"libraries": [...]}`) is normalised to the same definition ([`Manifest::normalise`]),
//! so a diff ([`Manifest::diff`]) never reports packages because two manifests were made
//! differently. Table rows and SBOMs list every package, Debian's with the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// A Debian package of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianRecord {
    pub name: String,
    pub version: String,
    /// The Debian architecture (`amd64`, `all`), when known.
    pub architecture: Option<String>,
}

/// An image's manifest (see the module's documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// conda and Python packages, sorted as `conda list` sorts them.
    pub libraries: Vec<CondaRecord>,
    /// Debian packages, sorted by name; `None` when the manifest does not say (an uploaded
    /// `conda list --json` knows nothing of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debian: Option<Vec<DebianRecord>>,
}

/// Why an uploaded manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// The build string nbrt gave Debian packages listed among conda records.
pub const DEBIAN_BUILD: &str = "deb_0";

/// The most records a manifest may hold (libraries and Debian packages each).
pub const MAX_RECORDS: usize = 20_000;
/// The largest build number a record may have (JSON's largest exact integer).
const MAX_BUILD_NUMBER: f64 = 9_007_199_254_740_991.0;
/// The longest string field a record may have.
const MAX_FIELD: usize = 300;

impl Manifest {
    /// The manifest of an image's packages.
    pub fn of(packages: &[Package]) -> Self {
        let mut debian: Vec<DebianRecord> = packages
            .iter()
            .filter(|p| p.source == Source::Debian)
            .map(|p| DebianRecord {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.platform.clone(),
            })
            .collect();
        debian.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
        Manifest {
            libraries: records(
                packages,
                Selection {
                    debian: false,
                    ..Selection::default()
                },
            ),
            debian: Some(debian),
        }
    }

    /// An uploaded manifest in the one definition: `conda list --json` output (a bare array
    /// of records), ArcGIS's `{"libraries": [...]}`, or this definition's own JSON (with
    /// `debian`). Every library record needs a string `name` and `version`; conda's other
    /// fields are filled as conda would print them when missing (nulls tolerated, `dist_name`
    /// made from name, version and build). Debian packages among the libraries (channel
    /// `debian`, build `deb_0`: what `nbrt manifest` printed before they had their own list)
    /// move to the Debian list; conda records of Debian's Python (channel `debian`, build
    /// `0_debian`) stay libraries.
    pub fn normalise(v: &Value) -> Result<Self, ManifestError> {
        let bad = |m: String| ManifestError(m);
        let (list, debian) =
            match v {
                Value::Array(a) => (a, None),
                Value::Object(o) => match o.get("libraries") {
                    Some(Value::Array(a)) => (a, o.get("debian")),
                    _ => return Err(bad(
                        "expected `conda list --json` output (an array) or {\"libraries\": [...]}"
                            .into(),
                    )),
                },
                _ => {
                    return Err(bad(
                        "expected an array of library records or {\"libraries\": [...]}".into(),
                    ))
                }
            };
        if list.len() > MAX_RECORDS {
            return Err(bad(format!("more than {MAX_RECORDS} libraries")));
        }
        let mut libraries = Vec::with_capacity(list.len());
        let mut moved = Vec::new();
        for (i, rec) in list.iter().enumerate() {
            let obj = rec
                .as_object()
                .ok_or_else(|| bad(format!("library {i} is not an object")))?;
            let text = |key: &str, required: bool| -> Result<Option<String>, ManifestError> {
                match obj.get(key) {
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FIELD => {
                        Ok(Some(s.clone()))
                    }
                    None | Some(Value::Null) if !required => Ok(None),
                    Some(Value::String(s)) if s.is_empty() && !required => Ok(None),
                    _ if required => Err(bad(format!("library {i} has no string `{key}`"))),
                    _ => Err(bad(format!(
                        "library {i}: `{key}` must be a string of at most {MAX_FIELD} bytes"
                    ))),
                }
            };
            let name = text("name", true)?.unwrap_or_default();
            let version = text("version", true)?.unwrap_or_default();
            let build_string = text("build_string", false)?
                .or(text("build", false)?)
                .unwrap_or_default();
            let channel = text("channel", false)?.unwrap_or_default();
            let platform = text("platform", false)?;
            if channel == "debian" && build_string == DEBIAN_BUILD {
                moved.push(DebianRecord {
                    name,
                    version,
                    architecture: platform,
                });
                continue;
            }
            let build_number = match obj.get("build_number") {
                None | Some(Value::Null) => 0,
                // JSON has one number type: 3.0 is the integer 3 (as JSON Schema says).
                Some(n) => n
                    .as_u64()
                    .or_else(|| {
                        n.as_f64()
                            .filter(|f| f.fract() == 0.0 && (0.0..=MAX_BUILD_NUMBER).contains(f))
                            .map(|f| f as u64)
                    })
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| {
                        bad(format!(
                            "library {i}: `build_number` must be a whole number"
                        ))
                    })?,
            };
            libraries.push(CondaRecord {
                base_url: text("base_url", false)?,
                build_number,
                dist_name: format!("{name}-{version}-{build_string}"),
                build_string,
                channel,
                name,
                platform,
                version,
            });
        }
        sort_records(&mut libraries);
        let debian = match debian {
            None | Some(Value::Null) => (!moved.is_empty()).then_some(moved),
            Some(Value::Array(a)) => {
                if a.len() > MAX_RECORDS {
                    return Err(bad(format!("more than {MAX_RECORDS} Debian packages")));
                }
                let mut list = moved;
                for (i, rec) in a.iter().enumerate() {
                    let r: DebianRecord = serde_json::from_value(rec.clone())
                        .map_err(|e| bad(format!("Debian package {i}: {e}")))?;
                    if r.name.is_empty() || r.name.len() > MAX_FIELD || r.version.len() > MAX_FIELD
                    {
                        return Err(bad(format!(
                            "Debian package {i}: a name and version of at most {MAX_FIELD} bytes"
                        )));
                    }
                    list.push(r);
                }
                Some(list)
            }
            Some(_) => return Err(bad("`debian` must be a list of packages".into())),
        };
        let debian = debian.map(|mut d| {
            d.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
            d
        });
        Ok(Manifest { libraries, debian })
    }

    /// What changed from `self` to `to`: libraries matched by name as pip and conda match
    /// them (case, `_` and `.` do not count), Debian packages only when both manifests list
    /// them.
    pub fn diff(&self, to: &Manifest) -> ManifestDiff {
        let libs = |m: &Manifest| -> BTreeMap<String, (String, String)> {
            m.libraries
                .iter()
                .map(|r| (library_key(&r.name), (r.name.clone(), r.version.clone())))
                .collect()
        };
        let debs = |d: &[DebianRecord]| -> BTreeMap<String, (String, String)> {
            d.iter()
                .map(|r| {
                    let key = match &r.architecture {
                        Some(a) if a != "all" => format!("{}:{a}", r.name),
                        _ => r.name.clone(),
                    };
                    (key, (r.name.clone(), r.version.clone()))
                })
                .collect()
        };
        ManifestDiff {
            libraries: ListDiff::between(&libs(self), &libs(to)),
            debian: match (&self.debian, &to.debian) {
                (Some(a), Some(b)) => Some(ListDiff::between(&debs(a), &debs(b))),
                _ => None,
            },
        }
    }
}

/// The name a library is matched by: lower case, runs of `-`, `_` and `.` as one `-` (as
/// pip normalises names; conda's names are already so).
fn library_key(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
            continue;
        }
        if sep && !out.is_empty() {
            out.push('-');
        }
        sep = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// A package in a diff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub name: String,
    pub version: String,
}

/// A package whose version changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub name: String,
    pub from: String,
    pub to: String,
}

/// The differences between two package lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListDiff {
    pub added: Vec<Listed>,
    pub removed: Vec<Listed>,
    pub changed: Vec<Changed>,
    pub unchanged: usize,
}

impl ListDiff {
    /// `a` and `b`: key → (name as listed, version).
    fn between(
        a: &BTreeMap<String, (String, String)>,
        b: &BTreeMap<String, (String, String)>,
    ) -> Self {
        let mut d = ListDiff::default();
        for (key, (name, va)) in a {
            match b.get(key) {
                None => d.removed.push(Listed {
                    name: name.clone(),
                    version: va.clone(),
                }),
                Some((_, vb)) if vb != va => d.changed.push(Changed {
                    name: name.clone(),
                    from: va.clone(),
                    to: vb.clone(),
                }),
                Some(_) => d.unchanged += 1,
            }
        }
        for (key, (name, vb)) in b {
            if !a.contains_key(key) {
                d.added.push(Listed {
                    name: name.clone(),
                    version: vb.clone(),
                });
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// What a migration changes in the libraries (`added`, `removed`, `changed`, `unchanged`
/// at the top, as before Debian packages had a list), and in the Debian packages when both
/// manifests list them (`null` otherwise: not compared, never reported as removed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ManifestDiff {
    #[serde(flatten)]
    pub libraries: ListDiff,
    pub debian: Option<ListDiff>,
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
    sort_records(&mut out);
    out
}

fn sort_records(out: &mut [CondaRecord]) {
    out.sort_by(|a, b| {
        (a.name.to_lowercase(), &a.channel, &a.version).cmp(&(
            b.name.to_lowercase(),
            &b.channel,
            &b.version,
        ))
    });
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

    fn pkg(source: Source, name: &str, version: &str) -> Package {
        let (channel, build, platform) = match source {
            Source::Debian => ("debian", "deb_0", Some("amd64".to_string())),
            Source::Pypi => ("pypi", "pypi_0", Some("pypi".to_string())),
            Source::Conda => ("conda-forge", "h123_0", Some("linux-64".to_string())),
        };
        Package {
            source,
            name: name.into(),
            version: version.into(),
            build_string: build.into(),
            build_number: 0,
            channel: channel.into(),
            base_url: None,
            platform,
            location: "/opt/conda".into(),
            license: None,
        }
    }

    #[test]
    fn uploads_in_either_shape_are_the_image_manifest() {
        // The [python] step's conda record of Debian's interpreter is on channel `debian`.
        let mut python = pkg(Source::Conda, "python", "3.13.5");
        python.channel = "debian".into();
        python.build_string = "0_debian".into();
        let image = Manifest::of(&[
            pkg(Source::Pypi, "PyYAML", "6.0.2"),
            python,
            pkg(Source::Debian, "libc6", "2.41-12"),
        ]);
        assert_eq!(image.libraries.len(), 2);
        assert_eq!(image.debian.as_ref().map(Vec::len), Some(1));
        let bare = serde_json::to_value(&image.libraries).unwrap();
        let wrapped = serde_json::json!({ "libraries": bare.clone() });
        // What `nbrt manifest --format arcgis` printed before: Debian among the libraries.
        let mut old = bare.as_array().unwrap().clone();
        old.push(
            serde_json::json!({"name": "libc6", "version": "2.41-12", "channel": "debian",
            "build_string": "deb_0", "build_number": 0, "platform": "amd64", "base_url": null,
            "dist_name": "libc6-2.41-12-deb_0"}),
        );
        for upload in [bare, wrapped, serde_json::Value::Array(old)] {
            let m = Manifest::normalise(&upload).unwrap();
            assert_eq!(m.libraries, image.libraries, "{upload}");
            let d = m.diff(&image);
            assert!(d.libraries.is_empty(), "{d:?}");
            assert!(d.debian.as_ref().is_none_or(ListDiff::is_empty), "{d:?}");
        }
        // Its own JSON round-trips.
        let own = serde_json::to_value(&image).unwrap();
        assert_eq!(Manifest::normalise(&own).unwrap(), image);
    }

    #[test]
    fn esri_records_are_filled_and_names_match_as_pip_matches_them() {
        let m = Manifest::normalise(&serde_json::json!({"libraries": [
            {"name": "absl-py", "version": "0.6.1", "build_string": "py36_0",
             "channel": "defaults", "base_url": null, "platform": null, "build_number": "0"},
            {"name": "six", "version": "1.16", "build_number": 3.0},
            {"name": "Jupyter_Server", "version": "2.14"}
        ]}))
        .unwrap();
        assert_eq!(m.libraries[0].dist_name, "absl-py-0.6.1-py36_0");
        assert_eq!(m.libraries[2].build_number, 3);
        assert_eq!(m.debian, None);
        let other = Manifest::normalise(&serde_json::json!([
            {"name": "jupyter-server", "version": "2.15"},
            {"name": "absl_py", "version": "0.6.1"},
            {"name": "numpy", "version": "2.1"}
        ]))
        .unwrap();
        let d = m.diff(&other);
        assert_eq!(d.libraries.unchanged, 1);
        assert_eq!(d.libraries.changed[0].name, "Jupyter_Server");
        assert_eq!(d.libraries.added[0].name, "numpy");
        assert_eq!(d.libraries.removed[0].name, "six");
        // Neither lists Debian packages: not compared.
        assert_eq!(d.debian, None);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["unchanged"], 1);
        assert!(json["debian"].is_null());
        for bad in [
            serde_json::json!("nope"),
            serde_json::json!([{"name": "x"}]),
            serde_json::json!([{"name": "x", "version": 1}]),
            serde_json::json!([{"name": "x", "version": "1", "build_number": -1}]),
            serde_json::json!({"libraries": [], "debian": "x"}),
        ] {
            assert!(Manifest::normalise(&bad).is_err(), "{bad}");
        }
    }
}
