//! What register and update take: ArcGIS's runtime fields, with the spellings its documents
//! use, and their validation. Bad input names the field (a 400) and nothing is stored.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::fields::{self, Given, Ignored};
use super::manifest::parse_manifest;
use super::record::{is_gpu_docker_runtime, Runtime, Unit, MAX_GPUS};
use crate::error::{Result, SiteError};

/// The body of register and update (and of a PATCH: see [`RuntimeInput::applied_to`]).
///
/// Every field deserializes from any JSON value (see [`fields`]): a value of the wrong kind is
/// refused by [`RuntimeInput::validate`], naming the field. Unknown fields are refused (a 400
/// naming the field, `deny_unknown_fields`); the fields of the [`Runtime`] record the API
/// answers with are accepted and ignored, so a GET → edit → update round trip works. A field
/// given under two of its spellings (`maxCpu` and `maxCPU`) is refused too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RuntimeInput {
    /// `runtimeName` too (how scripts for ArcGIS's admin API often call it).
    #[serde(alias = "runtimeName")]
    pub name: Given<String>,
    pub version: Given<String>,
    /// Only `docker`.
    pub container_type: Given<String>,
    /// The full image ID, `sha256:<64 hex>` (or the 64 hex digits).
    pub image_id: Given<String>,
    /// ArcGIS's pull string: accepted, not used (images are local).
    pub image_pull_string: Ignored,
    /// Cores.
    #[serde(alias = "maxCPU")]
    pub max_cpu: Given<f64>,
    pub max_memory: Given<f64>,
    pub max_memory_unit: Given<String>,
    /// Memory plus swap (default: twice `maxMemory`).
    pub max_swap_memory: Given<f64>,
    pub max_swap_memory_unit: Given<String>,
    /// `/dev/shm`.
    #[serde(alias = "sharedMemorySize")]
    pub shared_memory: Given<f64>,
    #[serde(alias = "sharedMemorySizeUnit")]
    pub shared_memory_unit: Given<String>,
    /// An engine runtime (`nvidia`).
    pub docker_runtime: Given<String>,
    /// The GPUs a session of a GPU runtime gets (0 to [`MAX_GPUS`]; nbrt's own field; only
    /// with `dockerRuntime` `nvidia`). Left out: the image label's, else the backend's
    /// default.
    pub gpus: Given<f64>,
    pub requires_advanced_privileges: Given<bool>,
    /// `conda list --json` output or `{"libraries": [...]}` (as JSON: a string holding JSON is
    /// refused; the ArcGIS endpoints read a form field's text as JSON first, see
    /// `crate::arcgis`). `libraryManifest` is the name of ArcGIS Manager's field.
    #[serde(alias = "libraries", alias = "libraryManifest")]
    pub manifest: Option<Value>,
    /// ArcGIS's response format: `json` or `pjson` (this API answers JSON only).
    pub f: Given<String>,
    /// Not stored: put the image where sessions run now (loaded into Docker, pushed to the
    /// site's registry), so the first session does not wait for it.
    pub preload_image: Given<bool>,
    /// How many sessions to keep started for this runtime before anyone asks (0 to
    /// [`MAX_WARM_POOL`]; nbrt's own field, default 0).
    pub warm_pool: Given<f64>,

    // The record's own fields (see `Runtime`): shown by the API, ignored on input.
    pub id: Ignored,
    #[serde(rename = "useGPU")]
    pub use_gpu: Ignored,
    pub builtin: Ignored,
    pub deprecated: Ignored,
    pub deprecation_date: Ignored,
    pub disabled: Ignored,
    pub is_manifest_supported: Ignored,
    pub library_count: Ignored,
    pub warm_ready: Ignored,
    pub server: Ignored,
    pub created: Ignored,
    pub updated: Ignored,
}

/// Validated input of register / update.
#[derive(Debug, Clone)]
pub struct RuntimeSpec {
    pub name: String,
    pub version: Option<String>,
    pub image_id: String,
    pub max_cpu: f64,
    pub max_memory: f64,
    pub max_memory_unit: Unit,
    pub max_swap_memory: f64,
    pub max_swap_memory_unit: Unit,
    /// Whether `maxSwapMemory` was given; if not, it was derived (twice `maxMemory`) and a
    /// later change of memory derives it again.
    pub swap_given: bool,
    pub shared_memory: Option<(f64, Unit)>,
    pub docker_runtime: Option<String>,
    /// The GPUs of a GPU runtime's session; `None`: the backend's default.
    pub gpus: Option<u32>,
    pub requires_advanced: bool,
    pub manifest: Option<nbrt_inspect::manifest::Manifest>,
    pub warm_pool: u32,
}

/// The most sessions a runtime's warm pool may keep started.
pub const MAX_WARM_POOL: u32 = 16;

const DOCKER_MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The rule runtime names follow, as the error states it.
pub const NAME_RULE: &str = "a runtime name is 1 to 120 characters: letters, digits, spaces and \
     . _ - ( ) +, starting with a letter or digit";

/// Whether `name` (trimmed) follows [`NAME_RULE`].
pub fn name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(char::is_alphanumeric)
        && name.chars().count() <= 120
        && chars.all(|c| c.is_alphanumeric() || " ._-()+".contains(c))
}

impl RuntimeInput {
    /// A request body (a JSON object): unknown fields and fields given twice are refused
    /// here, naming the field; the values are checked by [`RuntimeInput::validate`].
    pub fn from_map(body: Map<String, Value>) -> Result<RuntimeInput> {
        fields::from_map(body)
    }

    /// The stored record as input (the base of a partial update).
    pub fn from_record(rt: &Runtime) -> RuntimeInput {
        let opt = |v: &Option<String>| v.clone().map_or(Given::Absent, Given::Value);
        let (shared_memory, shared_memory_unit) = match (rt.shared_memory, &rt.shared_memory_unit) {
            (Some(v), Some(u)) => (v.into(), u.clone().into()),
            _ => (Given::Absent, Given::Absent),
        };
        RuntimeInput {
            name: rt.name.clone().into(),
            version: opt(&rt.version),
            image_id: rt.image_id.clone().into(),
            max_cpu: rt.max_cpu.into(),
            max_memory: rt.max_memory.into(),
            max_memory_unit: rt.max_memory_unit.clone().into(),
            // A derived swap is left to be derived again.
            max_swap_memory: if rt.swap_given {
                rt.max_swap_memory.into()
            } else {
                Given::Absent
            },
            max_swap_memory_unit: if rt.swap_given {
                rt.max_swap_memory_unit.clone().into()
            } else {
                Given::Absent
            },
            shared_memory,
            shared_memory_unit,
            docker_runtime: opt(&rt.docker_runtime),
            gpus: rt.gpus.map_or(Given::Absent, |n| f64::from(n).into()),
            requires_advanced_privileges: rt.requires_advanced_privileges.into(),
            warm_pool: f64::from(rt.warm_pool).into(),
            ..Default::default()
        }
    }

    /// This input as a partial update of `current` (PATCH, ArcGIS's update): every field
    /// given — `null` included, which clears — replaces the stored one, the others stay. A
    /// swap that was derived (never given) is derived again from the memory; one that was
    /// given stays. A GPU count goes with its GPU runtime: a patch that makes the runtime
    /// something else and gives no `gpus` drops the stored count. The result is validated as
    /// a whole.
    pub fn applied_to(&self, current: &Runtime) -> RuntimeInput {
        let mut base = RuntimeInput::from_record(current);
        if self.docker_runtime.is_given() && !self.gpus.is_given() && !self.names_gpu_runtime() {
            base.gpus = Given::Absent;
        }
        self.clone().or(base)
    }

    /// Whether `dockerRuntime` is given as a GPU runtime.
    fn names_gpu_runtime(&self) -> bool {
        matches!(&self.docker_runtime, Given::Value(r) if is_gpu_docker_runtime(Some(r.trim())))
    }

    /// This input for a runtime whose image changes to one whose `[runtime]` label sets
    /// `label_gpus`: the label's count, unless the change gives `gpus` itself
    /// (`patch_gives_gpus`) or this input is not a GPU runtime's (a count needs one). A
    /// label without a count leaves the count as it was.
    pub fn with_image_gpus(mut self, patch_gives_gpus: bool, label_gpus: Option<u32>) -> Self {
        if let Some(n) = label_gpus {
            if !patch_gives_gpus && self.names_gpu_runtime() {
                self.gpus = f64::from(n).into();
            }
        }
        self
    }

    /// This input, with the fields it leaves out taken from `defaults` (an image's
    /// `[runtime]` label as input: [`super::factory::label_input`]). A size and its unit come
    /// as one: neither from the defaults when the input gives either; the swap from the
    /// defaults only with their memory; their GPU count not when the input names a Docker
    /// runtime that is no GPU runtime.
    pub fn or_defaults(self, mut defaults: RuntimeInput) -> RuntimeInput {
        if self.docker_runtime.is_given() && !self.names_gpu_runtime() {
            defaults.gpus = Given::Absent;
        }
        if self.max_memory.is_given() || self.max_memory_unit.is_given() {
            defaults.max_memory = Given::Absent;
            defaults.max_memory_unit = Given::Absent;
            defaults.max_swap_memory = Given::Absent;
            defaults.max_swap_memory_unit = Given::Absent;
        }
        if self.max_swap_memory.is_given() || self.max_swap_memory_unit.is_given() {
            defaults.max_swap_memory = Given::Absent;
            defaults.max_swap_memory_unit = Given::Absent;
        }
        if self.shared_memory.is_given() || self.shared_memory_unit.is_given() {
            defaults.shared_memory = Given::Absent;
            defaults.shared_memory_unit = Given::Absent;
        }
        self.or(defaults)
    }

    /// Each field of this input if given, else `base`'s.
    fn or(self, base: RuntimeInput) -> RuntimeInput {
        let p = self;
        RuntimeInput {
            name: p.name.or(base.name),
            version: p.version.or(base.version),
            container_type: p.container_type.or(base.container_type),
            image_id: p.image_id.or(base.image_id),
            max_cpu: p.max_cpu.or(base.max_cpu),
            max_memory: p.max_memory.or(base.max_memory),
            max_memory_unit: p.max_memory_unit.or(base.max_memory_unit),
            max_swap_memory: p.max_swap_memory.or(base.max_swap_memory),
            max_swap_memory_unit: p.max_swap_memory_unit.or(base.max_swap_memory_unit),
            shared_memory: p.shared_memory.or(base.shared_memory),
            shared_memory_unit: p.shared_memory_unit.or(base.shared_memory_unit),
            docker_runtime: p.docker_runtime.or(base.docker_runtime),
            gpus: p.gpus.or(base.gpus),
            requires_advanced_privileges: p
                .requires_advanced_privileges
                .or(base.requires_advanced_privileges),
            // The stored libraries are not input: a manifest is replaced only when given.
            manifest: p.manifest,
            f: p.f,
            preload_image: p.preload_image,
            warm_pool: p.warm_pool.or(base.warm_pool),
            ..Default::default()
        }
    }

    /// Check every field. Checks needing the store or the engine (image exists, Docker
    /// runtime known) are [`super::engine::check`]'s.
    pub fn validate(&self) -> Result<RuntimeSpec> {
        let name = self
            .name
            .get("name")?
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SiteError::invalid("name", "required"))?;
        if !name_ok(name) {
            return Err(SiteError::invalid(
                "name",
                format!("{name:?} is not allowed: {NAME_RULE}"),
            ));
        }
        let version = self.version.get("version")?.cloned();
        if version.as_ref().is_some_and(|v| v.len() > 40) {
            return Err(SiteError::invalid("version", "at most 40 characters"));
        }
        if let Some(ct) = self.container_type.get("containerType")? {
            if ct != "docker" {
                return Err(SiteError::invalid(
                    "containerType",
                    format!("{ct:?} is not supported: the only container type is \"docker\""),
                ));
            }
        }
        if let Some(f) = self.f.get("f")? {
            if !matches!(f.as_str(), "json" | "pjson") {
                return Err(SiteError::invalid("f", "this API answers json only"));
            }
        }
        let image_id = normalize_image_id(
            self.image_id
                .get("imageId")?
                .ok_or_else(|| SiteError::invalid("imageId", "required"))?,
        )?;
        let max_cpu = positive(
            "maxCpu",
            *self
                .max_cpu
                .get("maxCpu")?
                .ok_or_else(|| SiteError::invalid("maxCpu", "required"))?,
        )?;
        if !(0.01..=1024.0).contains(&max_cpu) {
            return Err(SiteError::invalid(
                "maxCpu",
                format!("{max_cpu} cores is out of range (0.01 to 1024)"),
            ));
        }
        let max_memory = positive(
            "maxMemory",
            *self
                .max_memory
                .get("maxMemory")?
                .ok_or_else(|| SiteError::invalid("maxMemory", "required"))?,
        )?;
        let max_memory_unit = Unit::parse(
            "maxMemoryUnit",
            self.max_memory_unit
                .get("maxMemoryUnit")?
                .ok_or_else(|| SiteError::invalid("maxMemoryUnit", "required"))?,
        )?;
        let mem_bytes = max_memory_unit.bytes(max_memory);
        if mem_bytes < DOCKER_MIN_MEMORY {
            return Err(SiteError::invalid(
                "maxMemory",
                "must be at least 6 MiB (Docker's minimum)",
            ));
        }
        let swap_given = self.max_swap_memory.get("maxSwapMemory")?.is_some();
        let (max_swap_memory, max_swap_memory_unit) = match (
            self.max_swap_memory.get("maxSwapMemory")?,
            self.max_swap_memory_unit.get("maxSwapMemoryUnit")?,
        ) {
            (None, None) => (max_memory * 2.0, max_memory_unit),
            (None, Some(u)) => {
                // A unit that is no unit is the first thing wrong.
                Unit::parse("maxSwapMemoryUnit", u)?;
                return Err(SiteError::invalid(
                    "maxSwapMemory",
                    "a unit was given without a value",
                ));
            }
            (Some(&v), u) => {
                let v = positive("maxSwapMemory", v)?;
                let unit = match u {
                    Some(u) => Unit::parse("maxSwapMemoryUnit", u)?,
                    None => max_memory_unit,
                };
                (v, unit)
            }
        };
        if max_swap_memory_unit.bytes(max_swap_memory) < mem_bytes {
            return Err(SiteError::invalid(
                "maxSwapMemory",
                "is the total of memory and swap, so it cannot be less than maxMemory",
            ));
        }
        let shared_memory = match (
            self.shared_memory.get("sharedMemory")?,
            self.shared_memory_unit.get("sharedMemoryUnit")?,
        ) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(SiteError::invalid(
                    "sharedMemory",
                    "a unit was given without a value",
                ))
            }
            (Some(&v), u) => {
                let v = positive("sharedMemory", v)?;
                let unit = Unit::parse(
                    "sharedMemoryUnit",
                    u.ok_or_else(|| {
                        SiteError::invalid("sharedMemoryUnit", "required with sharedMemory")
                    })?,
                )?;
                Some((v, unit))
            }
        };
        let docker_runtime = self
            .docker_runtime
            .get("dockerRuntime")?
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        if let Some(r) = &docker_runtime {
            if r.len() > 64
                || !r
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(SiteError::invalid(
                    "dockerRuntime",
                    format!("{r:?} is not a runtime name"),
                ));
            }
        }
        let gpus = match self.gpus.get("gpus")? {
            None => None,
            Some(&n) if n.fract() == 0.0 && (0.0..=f64::from(MAX_GPUS)).contains(&n) => {
                Some(n as u32)
            }
            Some(n) => {
                return Err(SiteError::invalid(
                    "gpus",
                    format!("{n} is not a GPU count: give a whole number from 0 to {MAX_GPUS}"),
                ))
            }
        };
        if gpus.is_some() && !is_gpu_docker_runtime(docker_runtime.as_deref()) {
            return Err(SiteError::invalid(
                "gpus",
                format!(
                    "a GPU count needs a GPU runtime: give dockerRuntime \"{}\" too, or leave \
                     gpus out (null clears it)",
                    super::record::GPU_DOCKER_RUNTIME
                ),
            ));
        }
        self.preload_image.get("preloadImage")?;
        let warm_pool = match self.warm_pool.get("warmPool")? {
            None => 0,
            Some(&n) if n.fract() == 0.0 && (0.0..=f64::from(MAX_WARM_POOL)).contains(&n) => {
                n as u32
            }
            Some(n) => {
                return Err(SiteError::invalid(
                    "warmPool",
                    format!(
                        "{n} is not a pool size: give a whole number from 0 to {MAX_WARM_POOL}"
                    ),
                ))
            }
        };
        let requires_advanced = self
            .requires_advanced_privileges
            .get("requiresAdvancedPrivileges")?
            .copied()
            .unwrap_or(false);
        let manifest = match &self.manifest {
            None | Some(Value::Null) => None,
            Some(Value::String(_)) => {
                return Err(SiteError::invalid(
                    "manifest",
                    "a string is not a manifest: give `conda list --json` output (an array of \
                     records) or {\"libraries\": [...]} as JSON, not text holding JSON",
                ))
            }
            Some(v) => Some(parse_manifest(v)?),
        };
        Ok(RuntimeSpec {
            name: name.to_string(),
            version,
            image_id,
            max_cpu,
            max_memory,
            max_memory_unit,
            max_swap_memory,
            max_swap_memory_unit,
            swap_given,
            shared_memory,
            docker_runtime,
            gpus,
            requires_advanced,
            manifest,
            warm_pool,
        })
    }
}

impl RuntimeSpec {
    /// Whether storing this spec would leave `rt` as it is (limits compared as the engine
    /// gets them; a spec carrying a manifest is a change).
    pub fn same_as(&self, rt: &Runtime) -> bool {
        use crate::backend::Limits;
        Limits::of_spec(self) == Limits::of_runtime(rt)
            && self.name == rt.name
            && self.version == rt.version
            && self.image_id == rt.image_id
            && self.requires_advanced == rt.requires_advanced_privileges
            && self.swap_given == rt.swap_given
            && self.warm_pool == rt.warm_pool
            && self.manifest.is_none()
    }
}

pub(super) fn positive(field: &str, v: f64) -> Result<f64> {
    if v > 0.0 {
        Ok(v)
    } else {
        Err(SiteError::invalid(
            field,
            format!("must be greater than zero, got {v}"),
        ))
    }
}

/// `sha256:<64 hex>` or 64 hex digits (ArcGIS wants the full, non-truncated image ID).
pub fn normalize_image_id(s: &str) -> Result<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
    } else {
        Err(SiteError::invalid(
            "imageId",
            format!(
                "{s:?} is not a full image ID: give sha256:<64 hex digits> (`nbrt images` or `docker images --no-trunc`)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(v: Value) -> Result<RuntimeSpec> {
        let Value::Object(m) = v else {
            panic!("not an object: {v}")
        };
        RuntimeInput::from_map(m)?.validate()
    }

    fn good() -> Value {
        json!({"name": "py", "imageId": format!("sha256:{}", "a".repeat(64)),
               "maxCpu": 1.5, "maxMemory": 2, "maxMemoryUnit": "g"})
    }

    fn field_of(v: Value) -> String {
        validate(v).unwrap_err().field().unwrap().to_string()
    }

    #[test]
    fn swap_defaults_to_twice_memory() {
        let s = validate(good()).unwrap();
        assert_eq!(s.max_swap_memory, 4.0);
        assert_eq!(s.max_swap_memory_unit, Unit::G);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = good();
        v["maxMemoryUnit"] = json!("gb");
        assert_eq!(field_of(v), "maxMemoryUnit");
        let mut v = good();
        v["maxCpu"] = json!(0);
        assert_eq!(field_of(v), "maxCpu");
        let mut v = good();
        v["maxMemory"] = json!(-1);
        assert_eq!(field_of(v), "maxMemory");
        let mut v = good();
        v["imageId"] = json!("abc123");
        assert_eq!(field_of(v), "imageId");
        let mut v = good();
        v["maxSwapMemory"] = json!(1);
        assert_eq!(field_of(v), "maxSwapMemory");
        let mut v = good();
        v["sharedMemory"] = json!(64);
        v["sharedMemoryUnit"] = json!("q");
        assert_eq!(field_of(v), "sharedMemoryUnit");
        let mut v = good();
        v["colour"] = json!("red");
        assert_eq!(field_of(v), "colour");
        let mut v = good();
        v["containerType"] = json!("podman");
        assert_eq!(field_of(v), "containerType");
    }

    #[test]
    fn names_follow_the_rule_and_manifests_are_json() {
        for ok in [
            "py",
            "Python 3 Standard",
            "nbrt scipy",
            "GPU (beta) 3.1_a-b+c",
            "Géo",
        ] {
            let mut v = good();
            v["name"] = json!(ok);
            assert_eq!(validate(v).unwrap().name, ok);
        }
        for bad in ["Bad Name!", "-x", "(x)", "a/b", "a\tb", &"x".repeat(121)] {
            let mut v = good();
            v["name"] = json!(bad);
            let err = validate(v).unwrap_err();
            assert_eq!(err.field(), Some("name"), "{bad}");
            assert!(err.to_string().contains(NAME_RULE), "{err}");
        }
        let mut v = good();
        v["manifest"] = json!("[{\"name\": \"numpy\", \"version\": \"2\"}]");
        let err = validate(v).unwrap_err();
        assert_eq!(err.field(), Some("manifest"));
        assert!(
            err.to_string().contains("a string is not a manifest"),
            "{err}"
        );
    }

    #[test]
    fn warm_pool_sizes() {
        let mut v = good();
        assert_eq!(validate(v.clone()).unwrap().warm_pool, 0, "none by default");
        for (given, size) in [
            (json!(2), 2),
            (json!("3"), 3),
            (json!(16), 16),
            (json!(0), 0),
        ] {
            v["warmPool"] = given;
            assert_eq!(validate(v.clone()).unwrap().warm_pool, size);
        }
        for bad in [json!(17), json!(-1), json!(1.5), json!("many"), json!(true)] {
            v["warmPool"] = bad.clone();
            let err = validate(v.clone()).unwrap_err();
            assert_eq!(err.field(), Some("warmPool"), "{bad}: {err}");
        }
    }

    #[test]
    fn image_defaults_fill_what_registration_leaves_out() {
        let defaults = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            RuntimeInput::from_map(m).unwrap()
        };
        let label = defaults(json!({"maxCpu": 2, "maxMemory": 8, "maxMemoryUnit": "g",
            "maxSwapMemory": 10, "maxSwapMemoryUnit": "g", "sharedMemory": 1,
            "sharedMemoryUnit": "g", "version": "3.1"}));
        // Only name and image: everything else from the image.
        let given =
            defaults(json!({"name": "py", "imageId": format!("sha256:{}", "a".repeat(64))}));
        let s = given.clone().or_defaults(label.clone()).validate().unwrap();
        assert_eq!(
            (s.max_cpu, s.max_memory, s.max_memory_unit),
            (2.0, 8.0, Unit::G)
        );
        assert_eq!((s.max_swap_memory, s.swap_given), (10.0, true));
        assert_eq!(s.shared_memory, Some((1.0, Unit::G)));
        assert_eq!(s.version.as_deref(), Some("3.1"));
        // What the registration gives wins; memory and its swap come as one.
        let mut given = given;
        given.max_cpu = 0.5.into();
        given.max_memory = 512.0.into();
        given.max_memory_unit = "m".to_string().into();
        let s = given.or_defaults(label).validate().unwrap();
        assert_eq!(
            (s.max_cpu, s.max_memory, s.max_memory_unit),
            (0.5, 512.0, Unit::M)
        );
        assert_eq!(
            (s.max_swap_memory, s.max_swap_memory_unit),
            (1024.0, Unit::M)
        );
        assert!(!s.swap_given);
        assert_eq!(s.shared_memory, Some((1.0, Unit::G)));
    }

    #[test]
    fn variant_spellings() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("maxCpu");
        v["maxCPU"] = json!("2");
        v["sharedMemorySize"] = json!(512);
        v["sharedMemorySizeUnit"] = json!("m");
        let s = validate(v).unwrap();
        assert_eq!(s.max_cpu, 2.0);
        assert_eq!(s.shared_memory, Some((512.0, Unit::M)));
    }

    #[test]
    fn kinds_spellings_and_read_only_fields() {
        let err = |v: Value| validate(v).unwrap_err().to_string();
        let mut v = good();
        v["maxCpu"] = json!("lots");
        assert_eq!(err(v), "maxCpu: expected a number, got \"lots\"");
        let mut v = good();
        v["name"] = json!(7);
        assert_eq!(err(v), "name: expected a string, got 7");
        let mut v = good();
        v["requiresAdvancedPrivileges"] = json!("yes");
        assert_eq!(
            err(v),
            "requiresAdvancedPrivileges: expected true or false, got \"yes\""
        );
        let mut v = good();
        v["maxCPU"] = json!(2);
        assert_eq!(
            err(v),
            "maxCpu: given twice (as maxCpu and a variant spelling)"
        );
        let mut v = good();
        v["colour"] = json!("red");
        assert_eq!(err(v), "colour: unknown field");
        // What GET answers goes back in unchanged.
        let mut v = good();
        for k in ["id", "useGPU", "builtin", "libraryCount", "created"] {
            v[k] = json!({"any": "thing"});
        }
        v["imagePullString"] = json!(["ignored"]);
        v["requiresAdvancedPrivileges"] = json!("on");
        v["maxSwapMemory"] = json!("");
        v["libraries"] = json!([{"name": "numpy", "version": "2"}]);
        let s = validate(v).unwrap();
        assert!(s.requires_advanced);
        assert_eq!(s.max_swap_memory, 4.0);
        assert_eq!(s.manifest.map(|m| m.libraries.len()), Some(1));
    }

    fn patch(v: Value) -> Result<RuntimeSpec> {
        let Value::Object(m) = v else {
            panic!("not an object: {v}")
        };
        RuntimeInput::from_map(m)?
            .applied_to(&Runtime::sample())
            .validate()
    }

    #[test]
    fn a_patch_changes_what_it_gives() {
        let s = patch(json!({"maxCpu": 2})).unwrap();
        assert_eq!((s.max_cpu, s.max_memory), (2.0, 2.0));
        assert_eq!(s.max_swap_memory, 3.0);
        assert_eq!(s.shared_memory, Some((64.0, Unit::M)));
        assert_eq!(s.version.as_deref(), Some("1"));
        assert!(s.requires_advanced);
        // New memory without swap: a swap that was given stays...
        let s = patch(json!({"maxMemory": 2.5})).unwrap();
        assert_eq!((s.max_swap_memory, s.max_swap_memory_unit), (3.0, Unit::G));
        assert!(s.swap_given);
        // ...and is refused, naming it, when it no longer holds the memory.
        assert_eq!(
            patch(json!({"maxMemory": 4})).unwrap_err().field(),
            Some("maxSwapMemory")
        );
        // A derived swap is derived again.
        let mut derived = Runtime::sample();
        (derived.max_swap_memory, derived.swap_given) = (4.0, false);
        let Value::Object(m) = json!({"maxMemory": 4}) else {
            unreachable!()
        };
        let s = RuntimeInput::from_map(m)
            .unwrap()
            .applied_to(&derived)
            .validate()
            .unwrap();
        assert_eq!((s.max_swap_memory, s.max_swap_memory_unit), (8.0, Unit::G));
        assert!(!s.swap_given);
        // null clears a field...
        let s = patch(json!({"version": null})).unwrap();
        assert_eq!(s.version, None);
        // ...and a value without its unit is then refused.
        assert_eq!(
            patch(json!({"sharedMemory": null})).unwrap_err().field(),
            Some("sharedMemory")
        );
        assert_eq!(
            patch(json!({"name": null})).unwrap_err().field(),
            Some("name")
        );
    }

    #[test]
    fn gpu_counts_are_whole_numbers_up_to_64_with_a_gpu_runtime() {
        let mut v = good();
        assert_eq!(validate(v.clone()).unwrap().gpus, None, "none by default");
        v["dockerRuntime"] = json!("nvidia");
        assert_eq!(validate(v.clone()).unwrap().gpus, None);
        for (given, count) in [
            (json!(2), 2),
            (json!("4"), 4),
            (json!(0), 0),
            (json!(64), 64),
        ] {
            v["gpus"] = given;
            assert_eq!(validate(v.clone()).unwrap().gpus, Some(count));
        }
        v["gpus"] = json!(null);
        assert_eq!(validate(v.clone()).unwrap().gpus, None);
        for bad in [json!(65), json!(-1), json!(1.5), json!("many"), json!(true)] {
            v["gpus"] = bad.clone();
            let err = validate(v.clone()).unwrap_err();
            assert_eq!(err.field(), Some("gpus"), "{bad}: {err}");
        }
        v["gpus"] = json!(65);
        assert_eq!(
            validate(v.clone()).unwrap_err().to_string(),
            "gpus: 65 is not a GPU count: give a whole number from 0 to 64"
        );
        // Only a GPU runtime has a count.
        for runtime in [json!(null), json!("runsc"), json!("")] {
            let mut v = good();
            v["dockerRuntime"] = runtime.clone();
            v["gpus"] = json!(2);
            let err = validate(v).unwrap_err();
            assert_eq!(err.field(), Some("gpus"), "{runtime}: {err}");
            assert!(err.to_string().contains("needs a GPU runtime"), "{err}");
        }
    }

    fn gpu_stored(gpus: Option<u32>) -> Runtime {
        Runtime {
            docker_runtime: Some("nvidia".into()),
            use_gpu: true,
            gpus,
            ..Runtime::sample()
        }
    }

    fn patch_of(rt: &Runtime, v: Value) -> Result<RuntimeSpec> {
        let Value::Object(m) = v else {
            panic!("not an object: {v}")
        };
        RuntimeInput::from_map(m)?.applied_to(rt).validate()
    }

    #[test]
    fn a_gpu_count_is_patched_kept_and_goes_with_its_runtime() {
        let rt = gpu_stored(Some(2));
        // Kept through other changes, changed when given, cleared by null.
        assert_eq!(patch_of(&rt, json!({"maxCpu": 2})).unwrap().gpus, Some(2));
        assert_eq!(patch_of(&rt, json!({"gpus": 4})).unwrap().gpus, Some(4));
        assert_eq!(patch_of(&rt, json!({"gpus": null})).unwrap().gpus, None);
        assert_eq!(
            patch_of(&rt, json!({"gpus": 99})).unwrap_err().field(),
            Some("gpus")
        );
        // The runtime named again: the count stays.
        let s = patch_of(&rt, json!({"dockerRuntime": "nvidia"})).unwrap();
        assert_eq!(s.gpus, Some(2));
        // No GPU runtime any more: the count goes with it...
        let s = patch_of(&rt, json!({"dockerRuntime": null})).unwrap();
        assert_eq!((s.docker_runtime, s.gpus), (None, None));
        // ...unless the patch gives one, which is then refused.
        assert_eq!(
            patch_of(&rt, json!({"dockerRuntime": null, "gpus": 1}))
                .unwrap_err()
                .field(),
            Some("gpus")
        );
        // A count given to a runtime that is no GPU runtime is refused.
        assert_eq!(patch(json!({"gpus": 1})).unwrap_err().field(), Some("gpus"));
        // The record round-trips: no change is seen.
        let spec = patch_of(&rt, json!({})).unwrap();
        assert!(spec.same_as(&rt));
        assert!(!patch_of(&rt, json!({"gpus": 3})).unwrap().same_as(&rt));
    }

    #[test]
    fn a_new_images_gpu_count_replaces_the_stored_one_unless_given() {
        let rt = gpu_stored(Some(2));
        let input = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            RuntimeInput::from_map(m).unwrap()
        };
        let new_image = json!({"imageId": format!("sha256:{}", "b".repeat(64))});
        let p = input(new_image.clone());
        let gpus = |p: &RuntimeInput, label: Option<u32>| {
            p.applied_to(&rt)
                .with_image_gpus(p.gpus.is_given(), label)
                .validate()
                .unwrap()
                .gpus
        };
        assert_eq!(gpus(&p, Some(4)), Some(4), "the new image's label");
        assert_eq!(gpus(&p, None), Some(2), "a label without a count");
        let mut given = new_image.clone();
        given["gpus"] = json!(1);
        assert_eq!(gpus(&input(given), Some(4)), Some(1), "the patch's count");
        let mut cleared = new_image;
        cleared["gpus"] = json!(null);
        assert_eq!(gpus(&input(cleared), Some(4)), None, "the patch's null");
        // A runtime that is no GPU runtime takes no count from its image.
        let plain = Runtime::sample();
        let s = p
            .applied_to(&plain)
            .with_image_gpus(false, Some(4))
            .validate()
            .unwrap();
        assert_eq!(s.gpus, None);
    }

    #[test]
    fn the_image_gpu_count_fills_a_registration_with_its_runtime() {
        let input = |v: Value| {
            let Value::Object(m) = v else { unreachable!() };
            RuntimeInput::from_map(m).unwrap()
        };
        let label = input(json!({"maxCpu": 2, "maxMemory": 8, "maxMemoryUnit": "g",
            "dockerRuntime": "nvidia", "gpus": 2}));
        let given = json!({"name": "py", "imageId": format!("sha256:{}", "a".repeat(64))});
        let s = input(given.clone())
            .or_defaults(label.clone())
            .validate()
            .unwrap();
        assert_eq!(
            (s.docker_runtime.as_deref(), s.gpus),
            (Some("nvidia"), Some(2))
        );
        // The registration's own count wins.
        let mut mine = given.clone();
        mine["gpus"] = json!(1);
        let s = input(mine).or_defaults(label.clone()).validate().unwrap();
        assert_eq!(s.gpus, Some(1));
        // A registration naming no GPU runtime does not take the image's count.
        let mut cpu = given;
        cpu["dockerRuntime"] = json!(null);
        let s = input(cpu).or_defaults(label).validate().unwrap();
        assert_eq!((s.docker_runtime, s.gpus), (None, None));
    }
}
