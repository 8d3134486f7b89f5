//! A runtime's library manifest (ArcGIS's list of the libraries in the image): parsed from
//! what an admin uploads, read from the image itself when none is, and compared between
//! two runtimes for a migration.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Result, SiteError};
use crate::Site;

/// The library records of the image `image_id`, read without running it by nbrt-inspect
/// (conda and Python packages as `conda list --json` records, what ArcGIS's manifest lists):
/// the manifest of a runtime registered without one. `None` when only the engine has the
/// image (nothing to read layers from). This is the one place the site asks for an image's
/// manifest.
pub async fn from_image(site: &Site, image_id: &str) -> Result<Option<Vec<Value>>> {
    if !site.store_has_image(image_id)? {
        return Ok(None);
    }
    let root = site.store_root()?;
    let image_id = image_id.to_string();
    tokio::task::spawn_blocking(move || -> Result<Option<Vec<Value>>> {
        let store = nbrt_oci::Store::open(&root)?;
        let image = store.resolve(&image_id)?.image;
        let (_view, packages) =
            nbrt_inspect::read_image(&store, &image, &nbrt_oci::Progress::hidden()).map_err(
                |e| SiteError::Internal(format!("reading the packages of {image_id}: {e}")),
            )?;
        let sel = nbrt_inspect::manifest::Selection {
            conda: true,
            pypi: true,
            debian: false,
        };
        let kept: Vec<_> = packages.into_iter().filter(|p| sel.keeps(p)).collect();
        let records = nbrt_inspect::manifest::records(&kept, sel);
        let value = serde_json::to_value(records)
            .map_err(|e| SiteError::Internal(format!("manifest of {image_id}: {e}")))?;
        match value {
            Value::Array(a) => Ok(Some(a)),
            _ => Ok(None),
        }
    })
    .await
    .map_err(|e| SiteError::Internal(format!("manifest task: {e}")))?
}

const MAX_LIBRARIES: usize = 20_000;

/// A manifest: `conda list --json` (a bare array of records) or ArcGIS's
/// `{"libraries": [...]}`. Every record needs a string `name` and `version`; the other
/// conda fields are kept as given (nulls tolerated).
pub fn parse_manifest(v: &Value) -> Result<Vec<Value>> {
    let list = match v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("libraries") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(SiteError::invalid(
                    "manifest",
                    "expected `conda list --json` output (an array) or {\"libraries\": [...]}",
                ))
            }
        },
        _ => {
            return Err(SiteError::invalid(
                "manifest",
                "expected an array of library records or {\"libraries\": [...]}",
            ))
        }
    };
    if list.len() > MAX_LIBRARIES {
        return Err(SiteError::invalid(
            "manifest",
            format!("more than {MAX_LIBRARIES} libraries"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, rec) in list.iter().enumerate() {
        let obj = rec.as_object().ok_or_else(|| {
            SiteError::invalid("manifest", format!("library {i} is not an object"))
        })?;
        for key in ["name", "version"] {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 300 => {}
                _ => {
                    return Err(SiteError::invalid(
                        "manifest",
                        format!("library {i} has no string `{key}`"),
                    ))
                }
            }
        }
        out.push(rec.clone());
    }
    Ok(out)
}

/// Library differences between two manifests (keyed by name; a name owned twice, by conda
/// and pip, keeps its last record).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LibraryDiff {
    pub added: Vec<Value>,
    pub removed: Vec<Value>,
    pub changed: Vec<Value>,
    pub unchanged: usize,
}

pub fn diff_libraries(from: &[Value], to: &[Value]) -> LibraryDiff {
    let key = |v: &Value| -> (String, String) {
        (
            v["name"].as_str().unwrap_or_default().to_string(),
            v["version"].as_str().unwrap_or_default().to_string(),
        )
    };
    let a: BTreeMap<String, String> = from.iter().map(key).collect();
    let b: BTreeMap<String, String> = to.iter().map(key).collect();
    let mut d = LibraryDiff::default();
    for (name, va) in &a {
        match b.get(name) {
            None => d
                .removed
                .push(serde_json::json!({"name": name, "version": va})),
            Some(vb) if vb != va => d
                .changed
                .push(serde_json::json!({"name": name, "from": va, "to": vb})),
            Some(_) => d.unchanged += 1,
        }
    }
    for (name, vb) in &b {
        if !a.contains_key(name) {
            d.added
                .push(serde_json::json!({"name": name, "version": vb}));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_and_diff() {
        let conda = json!([{"name": "numpy", "version": "1.26.4", "channel": "conda-forge",
                            "base_url": null, "platform": null, "build_number": 0,
                            "build_string": "py311", "dist_name": "numpy-1.26.4-py311"},
                           {"name": "pandas", "version": "2.1.0"}]);
        let a = parse_manifest(&conda).unwrap();
        let b = parse_manifest(&json!({"libraries": [{"name": "numpy", "version": "2.0.0"},
                                                      {"name": "scipy", "version": "1.13"}]}))
        .unwrap();
        let d = diff_libraries(&a, &b);
        assert_eq!(d.added[0]["name"], "scipy");
        assert_eq!(d.removed[0]["name"], "pandas");
        assert_eq!(d.changed[0]["to"], "2.0.0");
        assert!(parse_manifest(&json!([{"name": "x"}])).is_err());
        assert!(parse_manifest(&json!("nope")).is_err());
    }
}
