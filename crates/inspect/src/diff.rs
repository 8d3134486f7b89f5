//! What changes between two images: packages added, removed and changed (with versions),
//! files added, removed and modified (by content digest, type, mode, owner and link target),
//! and the config fields that differ.

use std::collections::BTreeMap;

use nbrt_oci::Image;
use serde::Serialize;

use crate::packages::{Package, Source};
use crate::view::View;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageRef {
    pub source: Source,
    pub name: String,
    pub version: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    pub source: Source,
    pub name: String,
    pub from: String,
    pub to: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigChange {
    pub field: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Diff {
    /// Layers both images start with (same diff IDs in the same order).
    pub shared_layers: usize,
    pub packages_added: Vec<PackageRef>,
    pub packages_removed: Vec<PackageRef>,
    pub packages_changed: Vec<PackageChange>,
    pub files_added: Vec<String>,
    pub files_removed: Vec<String>,
    pub files_modified: Vec<String>,
    pub config: Vec<ConfigChange>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.packages_added.is_empty()
            && self.packages_removed.is_empty()
            && self.packages_changed.is_empty()
            && self.files_added.is_empty()
            && self.files_removed.is_empty()
            && self.files_modified.is_empty()
            && self.config.is_empty()
    }
}

type Key = (Source, String, String);

fn by_key(pkgs: &[Package]) -> BTreeMap<Key, &Package> {
    pkgs.iter().map(|p| (p.key(), p)).collect()
}

fn pref(p: &Package) -> PackageRef {
    PackageRef {
        source: p.source,
        name: p.name.clone(),
        version: p.version.clone(),
        location: p.location.clone(),
    }
}

/// Compare packages of two images.
pub fn packages(a: &[Package], b: &[Package], out: &mut Diff) {
    let (ka, kb) = (by_key(a), by_key(b));
    for (k, p) in &kb {
        match ka.get(k) {
            None => out.packages_added.push(pref(p)),
            Some(old) if old.version != p.version || old.build_string != p.build_string => {
                out.packages_changed.push(PackageChange {
                    source: p.source,
                    name: p.name.clone(),
                    from: old.version.clone(),
                    to: p.version.clone(),
                    location: p.location.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for (k, p) in &ka {
        if !kb.contains_key(k) {
            out.packages_removed.push(pref(p));
        }
    }
}

/// Compare the merged file views of two images.
pub fn files(a: &View, b: &View, out: &mut Diff) {
    for (path, e) in b.entries() {
        match a.get(path) {
            None => out.files_added.push(format!("/{path}")),
            Some(old) if old.meta != e.meta => out.files_modified.push(format!("/{path}")),
            Some(_) => {}
        }
    }
    for (path, _) in a.entries() {
        if b.get(path).is_none() {
            out.files_removed.push(format!("/{path}"));
        }
    }
}

/// Compare the run settings of two images' configs.
pub fn config(a: &Image, b: &Image, out: &mut Diff) {
    let fields = |i: &Image| -> BTreeMap<String, serde_json::Value> {
        let v = serde_json::to_value(&i.config.value().config).unwrap_or_default();
        match v {
            serde_json::Value::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    };
    let (fa, fb) = (fields(a), fields(b));
    let mut keys: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (va, vb) = (
            fa.get(k).cloned().unwrap_or_default(),
            fb.get(k).cloned().unwrap_or_default(),
        );
        if va != vb {
            out.config.push(ConfigChange {
                field: k.clone(),
                from: va,
                to: vb,
            });
        }
    }
}

/// Everything: packages, files and config.
pub fn diff(a: (&Image, &View, &[Package]), b: (&Image, &View, &[Package])) -> Diff {
    let mut out = Diff {
        shared_layers: a
            .0
            .diff_ids()
            .iter()
            .zip(b.0.diff_ids())
            .take_while(|(x, y)| x == y)
            .count(),
        ..Diff::default()
    };
    packages(a.2, b.2, &mut out);
    files(a.1, b.1, &mut out);
    config(a.0, b.0, &mut out);
    out
}
