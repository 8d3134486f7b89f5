//! ArcGIS's "Restore Factory Runtimes": the stock stacks in the store registered with the
//! `[runtime]` defaults their images carry (`nbrt_oci::label::RuntimeDefaults`, the one
//! type the builder writes that label with).

use std::collections::BTreeMap;

use nbrt_oci::label::{self, HttpContract, RuntimeDefaults};
use serde::Serialize;

use super::fields::Given;
use super::input::{positive, RuntimeInput};
use super::record::{Runtime, Unit};
use super::{register, repo, update};
use crate::error::{Result, SiteError};
use crate::Site;

/// The factory runtimes (ArcGIS's Esri-provided ones): the stock stacks that serve
/// notebooks, found in the store under the tags `nbrt build stacks/` gives them
/// (`<stack>:latest`). `base` is their parent and serves none, so it is not one.
pub const FACTORY: &[(&str, &str)] = &[("jupyter", "nbrt jupyter"), ("scipy", "nbrt scipy")];

/// Limits for a stock image whose label sets none: ArcGIS's Standard runtime (1 core, 4 GB).
const FALLBACK_CPU: f64 = 1.0;
const FALLBACK_MEMORY: &str = "4g";

/// What a restore did, runtime by runtime.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Factory runtimes registered by this restore.
    pub added: Vec<Runtime>,
    /// Factory runtimes reset to their factory settings (limits, image, not deprecated).
    pub updated: Vec<Runtime>,
    /// Factory runtimes that had their factory settings already: not touched.
    pub unchanged: Vec<Runtime>,
    /// Tags of factory stacks the store does not hold (build them with `nbrt build stacks/`).
    pub missing: Vec<String>,
    /// Factory stacks present but not restored, with the reason.
    pub skipped: Vec<String>,
}

/// `"4g"`, `"512m"`, `"1.5G"`, `"100"` (bytes) → value and unit.
fn parse_size(field: &str, s: &str) -> Result<(f64, Unit)> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], Unit::parse(field, &s[i..])?),
        _ => (s, Unit::B),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| SiteError::invalid(field, format!("{s:?} is not a size like 4g or 512m")))?;
    Ok((positive(field, v)?, unit))
}

/// A size and its unit as input fields; both [`unset`] without a size.
fn size_fields(field: &str, size: Option<&str>, null: bool) -> Result<(Given<f64>, Given<String>)> {
    match size {
        Some(s) => {
            let (v, u) = parse_size(field, s)?;
            Ok((v.into(), u.as_str().to_string().into()))
        }
        None => Ok((unset(null), unset(null))),
    }
}

/// A field the defaults do not set: null (given, clearing) or absent.
fn unset<T>(null: bool) -> Given<T> {
    if null {
        Given::Null
    } else {
        Given::Absent
    }
}

/// The image's `[runtime]` defaults label (`nbrt_oci::label::RuntimeDefaults`, the one type
/// the builder writes it with) and version label as register input: the fields the image
/// sets, the others [`Given::Absent`]. A label that is not the builder's shape is a 400
/// naming the label.
pub fn label_input(labels: &BTreeMap<String, String>) -> Result<RuntimeInput> {
    let defaults = label_defaults(labels)?;
    defaults_input(&defaults, labels, false)
}

/// The image's `[runtime]` defaults label; none when absent, a 400 naming the label when it
/// is not the builder's shape.
fn label_defaults(labels: &BTreeMap<String, String>) -> Result<RuntimeDefaults> {
    Ok(RuntimeDefaults::from_labels(labels)
        .map_err(|e| SiteError::invalid(label::RUNTIME_DEFAULTS.name, e))?
        .unwrap_or_default())
}

/// How sessions of the image with these labels are reached over HTTP (its `[runtime]`
/// label's `server`, `http-rewrite-uri`, `ready-path`, `http-headers-request-set`; a Jupyter
/// server under its prefix without them).
pub fn label_http(labels: &BTreeMap<String, String>) -> Result<HttpContract> {
    let defaults = label_defaults(labels)?;
    let http = defaults.http();
    if let Some((_, problem)) = http.problem() {
        return Err(SiteError::invalid(
            label::RUNTIME_DEFAULTS.name,
            format!("the image's {problem}"),
        ));
    }
    Ok(http)
}

/// The GPU count the image's `[runtime]` label sets (`gpus`), if any; a 400 naming the label
/// when it is not the builder's shape.
pub fn label_gpus(labels: &BTreeMap<String, String>) -> Result<Option<u32>> {
    Ok(label_defaults(labels)?.gpus)
}

/// The defaults as input; fields they do not set are null when `null`, else absent.
fn defaults_input(
    defaults: &RuntimeDefaults,
    labels: &BTreeMap<String, String>,
    null: bool,
) -> Result<RuntimeInput> {
    let (max_memory, max_memory_unit) =
        size_fields("maxMemory", defaults.max_memory.as_deref(), null)?;
    let (max_swap_memory, max_swap_memory_unit) =
        size_fields("maxSwapMemory", defaults.max_swap.as_deref(), null)?;
    let (shared_memory, shared_memory_unit) =
        size_fields("sharedMemory", defaults.shared_memory.as_deref(), null)?;
    Ok(RuntimeInput {
        version: labels
            .get(label::VERSION)
            .map_or(Given::Absent, |v| v.clone().into()),
        max_cpu: defaults.max_cpu.map_or(unset(null), Given::Value),
        max_memory,
        max_memory_unit,
        max_swap_memory,
        max_swap_memory_unit,
        shared_memory,
        shared_memory_unit,
        docker_runtime: defaults
            .gpu_runtime
            .clone()
            .map_or(unset(null), Given::Value),
        gpus: defaults
            .gpus
            .map_or(unset(null), |n| Given::Value(f64::from(n))),
        requires_advanced_privileges: defaults.advanced_privileges.into(),
        ..Default::default()
    })
}

/// Register input for a factory stack from its image's `[runtime]` defaults label. Every
/// field of the defaults is given (absent values as null), so an update resets what an
/// admin changed.
fn factory_input(
    name: &str,
    image_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<RuntimeInput> {
    let mut defaults = label_defaults(labels)?;
    defaults.max_cpu = defaults.max_cpu.or(Some(FALLBACK_CPU));
    defaults.max_memory = defaults
        .max_memory
        .or_else(|| Some(FALLBACK_MEMORY.to_string()));
    Ok(RuntimeInput {
        name: name.to_string().into(),
        image_id: image_id.to_string().into(),
        ..defaults_input(&defaults, labels, true)?
    })
}

/// The store's image behind `<stack>:latest`: its ID and config labels.
fn factory_image(site: &Site, stack: &str) -> Result<Option<(String, BTreeMap<String, String>)>> {
    let Some(store) = site.open_store()? else {
        return Ok(None);
    };
    let found = match store.resolve(&format!("{stack}:latest")) {
        Ok(f) => f,
        Err(nbrt_oci::OciError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some((found.image.id().to_string(), found.image.labels())))
}

/// Every stock stack image in the store is registered, or reset to its factory settings
/// (the stack's `[runtime]` limits, the current image and its manifest, not deprecated) if
/// it is registered already. Custom runtimes are left alone, and so is a custom runtime that
/// took a factory runtime's name.
pub async fn restore_factory(site: &Site) -> Result<RestoreReport> {
    let mut report = RestoreReport {
        added: Vec::new(),
        updated: Vec::new(),
        unchanged: Vec::new(),
        missing: Vec::new(),
        skipped: Vec::new(),
    };
    for (stack, name) in FACTORY {
        let tag = format!("{stack}:latest");
        let Some((image_id, labels)) = factory_image(site, stack)? else {
            report.missing.push(tag);
            continue;
        };
        let input = match factory_input(name, &image_id, &labels) {
            Ok(i) => i,
            Err(e) => {
                report.skipped.push(format!("{tag}: {e}"));
                continue;
            }
        };
        match repo::by_name(&site.db, name)? {
            Some(current) if !current.builtin => {
                report.skipped.push(format!(
                    "{tag}: a custom runtime is registered as {name:?}; rename or unregister it"
                ));
            }
            Some(current)
                if !current.deprecated
                    && !current.disabled
                    && input.applied_to(&current).validate()?.same_as(&current) =>
            {
                super::engine::pin(site, &current)?;
                report.unchanged.push(current);
            }
            Some(current) => {
                update(site, &current, &input).await?;
                repo::clear_deprecated_and_disabled(&site.db, &current.id)?;
                report.updated.push(repo::get(&site.db, &current.id)?);
            }
            None => report.added.push(register(site, &input, true).await?),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factory_limits_come_from_the_image_label() {
        let labels = BTreeMap::from([(
            label::RUNTIME_DEFAULTS.name.to_string(),
            r#"{"max-cpu":2.0,"max-memory":"8g","max-swap":null,"shared-memory":"512m","gpu-runtime":null,"advanced-privileges":false}"#
                .to_string(),
        )]);
        let id = format!("sha256:{}", "b".repeat(64));
        let s = factory_input("nbrt scipy", &id, &labels)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            (s.max_cpu, s.max_memory, s.max_memory_unit),
            (2.0, 8.0, Unit::G)
        );
        assert_eq!((s.max_swap_memory, s.max_swap_memory_unit), (16.0, Unit::G));
        assert_eq!(s.shared_memory, Some((512.0, Unit::M)));
        // No label: ArcGIS's Standard limits.
        let s = factory_input("x", &id, &BTreeMap::new())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            (s.max_cpu, s.max_memory, s.max_memory_unit),
            (1.0, 4.0, Unit::G)
        );
        assert_eq!(s.shared_memory, None);
        assert_eq!(parse_size("f", "100").unwrap(), (100.0, Unit::B));
        assert!(parse_size("f", "4x").is_err());
        assert!(parse_size("f", "-1g").is_err());
    }

    #[test]
    fn the_label_is_read_as_the_builder_writes_it() {
        let id = format!("sha256:{}", "b".repeat(64));
        let written = RuntimeDefaults {
            max_cpu: Some(0.5),
            max_memory: Some("1g".into()),
            gpu_runtime: Some("nvidia".into()),
            advanced_privileges: true,
            ..Default::default()
        };
        let labels = BTreeMap::from([
            (label::RUNTIME_DEFAULTS.name.to_string(), written.to_label()),
            (label::VERSION.to_string(), "2.1".to_string()),
        ]);
        let s = factory_input("x", &id, &labels)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!((s.max_cpu, s.max_memory), (0.5, 1.0));
        assert_eq!(s.docker_runtime.as_deref(), Some("nvidia"));
        assert_eq!(s.gpus, None, "the label sets no count");
        assert!(s.requires_advanced);
        assert_eq!(s.version.as_deref(), Some("2.1"));
        // A label that is not the builder's shape is refused, naming the label.
        let bad = BTreeMap::from([(
            label::RUNTIME_DEFAULTS.name.to_string(),
            r#"{"max-cpu":"lots"}"#.to_string(),
        )]);
        let err = factory_input("x", &id, &bad).unwrap_err();
        assert_eq!(err.field(), Some(label::RUNTIME_DEFAULTS.name));
    }

    /// The runtime file's `gpus`, as the builder writes it into the label, is the runtime's
    /// GPU count at registration (and a factory restore resets it to the label's).
    #[test]
    fn the_gpu_count_comes_from_the_label() {
        let id = format!("sha256:{}", "b".repeat(64));
        let written = RuntimeDefaults {
            max_cpu: Some(4.0),
            max_memory: Some("16g".into()),
            gpu_runtime: Some("nvidia".into()),
            gpus: Some(2),
            ..Default::default()
        };
        let labels =
            BTreeMap::from([(label::RUNTIME_DEFAULTS.name.to_string(), written.to_label())]);
        assert_eq!(label_gpus(&labels).unwrap(), Some(2));
        assert_eq!(label_gpus(&BTreeMap::new()).unwrap(), None);
        // Registration: what it leaves out comes from the label.
        let given = RuntimeInput {
            name: "cuda".to_string().into(),
            image_id: id.clone().into(),
            ..Default::default()
        };
        let s = given
            .or_defaults(label_input(&labels).unwrap())
            .validate()
            .unwrap();
        assert_eq!(
            (s.docker_runtime.as_deref(), s.gpus),
            (Some("nvidia"), Some(2))
        );
        // A factory runtime gets every field of the label, the count too.
        let s = factory_input("x", &id, &labels)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(s.gpus, Some(2));
        // A label count past what the site takes is refused, naming the field.
        let labels = BTreeMap::from([(
            label::RUNTIME_DEFAULTS.name.to_string(),
            RuntimeDefaults {
                gpus: Some(65),
                ..written
            }
            .to_label(),
        )]);
        let err = factory_input("x", &id, &labels)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), Some("gpus"));
    }
}
