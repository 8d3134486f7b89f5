//! Runtimes: ArcGIS Notebook Server's record (an image plus per-container limits and a
//! library manifest), validated field by field. Bad input names the field and stores nothing.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::db::{new_id, now_ms};
use crate::error::{Result, SiteError};
use crate::Site;

/// Memory units of ArcGIS's `*Unit` fields (Docker's suffixes, powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    B,
    K,
    M,
    G,
}

impl Unit {
    pub fn parse(field: &str, s: &str) -> Result<Unit> {
        match s.to_ascii_lowercase().as_str() {
            "b" => Ok(Unit::B),
            "k" => Ok(Unit::K),
            "m" => Ok(Unit::M),
            "g" => Ok(Unit::G),
            _ => Err(SiteError::invalid(
                field,
                format!("unknown unit {s:?}: use g, m, k or b"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::B => "b",
            Unit::K => "k",
            Unit::M => "m",
            Unit::G => "g",
        }
    }
    pub fn bytes(self, value: f64) -> i64 {
        let mult = match self {
            Unit::B => 1.0,
            Unit::K => 1024.0,
            Unit::M => 1024.0 * 1024.0,
            Unit::G => 1024.0 * 1024.0 * 1024.0,
        };
        (value * mult).round() as i64
    }
}

/// A registered runtime as the API shows it (ArcGIS's response names).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Runtime {
    pub id: String,
    pub name: String,
    pub version: Option<String>,
    pub container_type: String,
    pub image_id: String,
    pub max_cpu: f64,
    pub max_memory: f64,
    pub max_memory_unit: String,
    /// Memory plus swap, like Docker's `--memory-swap`.
    pub max_swap_memory: f64,
    pub max_swap_memory_unit: String,
    pub shared_memory: Option<f64>,
    pub shared_memory_unit: Option<String>,
    pub docker_runtime: Option<String>,
    #[serde(rename = "useGPU")]
    pub use_gpu: bool,
    pub requires_advanced_privileges: bool,
    /// A factory runtime (ArcGIS's `esriProvidedRuntime`): a stock stack image.
    pub builtin: bool,
    pub deprecated: bool,
    pub deprecation_date: Option<i64>,
    pub disabled: bool,
    /// nbrt's own field: whether a library manifest is stored for this runtime.
    pub is_manifest_supported: bool,
    pub library_count: usize,
    pub created: i64,
    pub updated: i64,
}

impl Runtime {
    pub fn memory_bytes(&self) -> i64 {
        unit_or_b(&self.max_memory_unit).bytes(self.max_memory)
    }
    pub fn swap_bytes(&self) -> i64 {
        unit_or_b(&self.max_swap_memory_unit).bytes(self.max_swap_memory)
    }
    pub fn shm_bytes(&self) -> Option<i64> {
        let u = unit_or_b(self.shared_memory_unit.as_deref().unwrap_or("b"));
        self.shared_memory.map(|v| u.bytes(v))
    }
    pub fn nano_cpus(&self) -> i64 {
        (self.max_cpu * 1e9).round() as i64
    }
}

fn unit_or_b(s: &str) -> Unit {
    Unit::parse("unit", s).unwrap_or(Unit::B)
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
    pub shared_memory: Option<(f64, Unit)>,
    pub docker_runtime: Option<String>,
    pub requires_advanced: bool,
    pub manifest: Option<Vec<Value>>,
}

/// Fields accepted on input, with the spelling variants ArcGIS's documents use.
const FIELDS: &[(&str, &[&str])] = &[
    ("name", &[]),
    ("version", &[]),
    ("containerType", &[]),
    ("imageId", &[]),
    ("imagePullString", &[]),
    ("maxCpu", &["maxCPU"]),
    ("maxMemory", &[]),
    ("maxMemoryUnit", &[]),
    ("maxSwapMemory", &[]),
    ("maxSwapMemoryUnit", &[]),
    ("sharedMemory", &["sharedMemorySize"]),
    ("sharedMemoryUnit", &["sharedMemorySizeUnit"]),
    ("dockerRuntime", &[]),
    ("requiresAdvancedPrivileges", &[]),
    ("manifest", &["libraries"]),
    ("f", &[]),
];

/// Fields the API shows but ignores on input (so a GET → edit → update round trip works).
const READ_ONLY: &[&str] = &[
    "id",
    "useGPU",
    "builtin",
    "deprecated",
    "deprecationDate",
    "disabled",
    "isManifestSupported",
    "libraryCount",
    "created",
    "updated",
];

/// Map variant spellings to the canonical names; reject unknown fields.
fn canonical(input: &Map<String, Value>) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for (k, v) in input {
        if READ_ONLY.contains(&k.as_str()) {
            continue;
        }
        let Some((canon, _)) = FIELDS
            .iter()
            .find(|(c, alts)| *c == k.as_str() || alts.contains(&k.as_str()))
        else {
            return Err(SiteError::invalid(k, "unknown field"));
        };
        if out.contains_key(*canon) {
            return Err(SiteError::invalid(
                canon,
                format!("given twice (as {canon} and a variant spelling)"),
            ));
        }
        out.insert(canon.to_string(), v.clone());
    }
    Ok(out)
}

fn get_str<'a>(m: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => Err(SiteError::invalid(
            field,
            format!("expected a string, got {other}"),
        )),
    }
}

fn get_num(m: &Map<String, Value>, field: &str) -> Result<Option<f64>> {
    let v = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        // Form posts and ArcGIS clients send numbers as strings.
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(SiteError::invalid(
            field,
            format!("expected a number, got {}", m[field]),
        )),
    }
}

fn get_bool(m: &Map<String, Value>, field: &str) -> Result<Option<bool>> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "on" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" || s.is_empty() => Ok(Some(false)),
        Some(other) => Err(SiteError::invalid(
            field,
            format!("expected true or false, got {other}"),
        )),
    }
}

fn positive(field: &str, v: f64) -> Result<f64> {
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

const DOCKER_MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Validate register/update input. Checks needing the store or the engine (image exists,
/// Docker runtime known) are done by the caller.
pub fn validate(input: &Map<String, Value>) -> Result<RuntimeSpec> {
    let m = canonical(input)?;
    let name = get_str(&m, "name")?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| SiteError::invalid("name", "required"))?;
    if name.chars().count() > 120 || name.chars().any(char::is_control) {
        return Err(SiteError::invalid(
            "name",
            "at most 120 characters, no control characters",
        ));
    }
    let version = get_str(&m, "version")?.map(str::to_string);
    if version.as_ref().is_some_and(|v| v.len() > 40) {
        return Err(SiteError::invalid("version", "at most 40 characters"));
    }
    if let Some(ct) = get_str(&m, "containerType")? {
        if ct != "docker" {
            return Err(SiteError::invalid(
                "containerType",
                format!("{ct:?} is not supported: the only container type is \"docker\""),
            ));
        }
    }
    if let Some(f) = get_str(&m, "f")? {
        if !matches!(f, "json" | "pjson") {
            return Err(SiteError::invalid("f", "this API answers json only"));
        }
    }
    let image_id = normalize_image_id(
        get_str(&m, "imageId")?.ok_or_else(|| SiteError::invalid("imageId", "required"))?,
    )?;
    let max_cpu = positive(
        "maxCpu",
        get_num(&m, "maxCpu")?.ok_or_else(|| SiteError::invalid("maxCpu", "required"))?,
    )?;
    if !(0.01..=1024.0).contains(&max_cpu) {
        return Err(SiteError::invalid(
            "maxCpu",
            format!("{max_cpu} cores is out of range (0.01 to 1024)"),
        ));
    }
    let max_memory = positive(
        "maxMemory",
        get_num(&m, "maxMemory")?.ok_or_else(|| SiteError::invalid("maxMemory", "required"))?,
    )?;
    let max_memory_unit = Unit::parse(
        "maxMemoryUnit",
        get_str(&m, "maxMemoryUnit")?
            .ok_or_else(|| SiteError::invalid("maxMemoryUnit", "required"))?,
    )?;
    let mem_bytes = max_memory_unit.bytes(max_memory);
    if mem_bytes < DOCKER_MIN_MEMORY {
        return Err(SiteError::invalid(
            "maxMemory",
            "must be at least 6 MiB (Docker's minimum)",
        ));
    }
    let (max_swap_memory, max_swap_memory_unit) = match (
        get_num(&m, "maxSwapMemory")?,
        get_str(&m, "maxSwapMemoryUnit")?,
    ) {
        (None, None) => (max_memory * 2.0, max_memory_unit),
        (None, Some(u)) => {
            let unit = Unit::parse("maxSwapMemoryUnit", u)?;
            let _ = unit;
            return Err(SiteError::invalid(
                "maxSwapMemory",
                "a unit was given without a value",
            ));
        }
        (Some(v), u) => {
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
        get_num(&m, "sharedMemory")?,
        get_str(&m, "sharedMemoryUnit")?,
    ) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(SiteError::invalid(
                "sharedMemory",
                "a unit was given without a value",
            ))
        }
        (Some(v), u) => {
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
    let docker_runtime = get_str(&m, "dockerRuntime")?
        .map(str::trim)
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
    let requires_advanced = get_bool(&m, "requiresAdvancedPrivileges")?.unwrap_or(false);
    let manifest = match m.get("manifest") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => {
            let v: Value = serde_json::from_str(s)
                .map_err(|e| SiteError::invalid("manifest", format!("not JSON ({e})")))?;
            Some(parse_manifest(&v)?)
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
        shared_memory,
        docker_runtime,
        requires_advanced,
        manifest,
    })
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

const SELECT: &str = "SELECT id, name, version, container_type, image_id, max_cpu, max_memory,
    max_memory_unit, max_swap_memory, max_swap_memory_unit, shared_memory, shared_memory_unit,
    docker_runtime, requires_advanced, builtin, deprecated, deprecation_date, disabled,
    manifest IS NOT NULL, created_at, updated_at, COALESCE(json_array_length(manifest), 0)
    FROM runtimes";

/// A runtime row. The manifest itself stays in the database (SQLite counts its libraries):
/// listing runtimes must not parse every runtime's library list.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Runtime> {
    let has_manifest: bool = r.get(18)?;
    let library_count: i64 = r.get(21)?;
    let docker_runtime: Option<String> = r.get(12)?;
    Ok(Runtime {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        container_type: r.get(3)?,
        image_id: r.get(4)?,
        max_cpu: r.get(5)?,
        max_memory: r.get(6)?,
        max_memory_unit: r.get(7)?,
        max_swap_memory: r.get(8)?,
        max_swap_memory_unit: r.get(9)?,
        shared_memory: r.get(10)?,
        shared_memory_unit: r.get(11)?,
        use_gpu: docker_runtime.as_deref() == Some("nvidia"),
        docker_runtime,
        requires_advanced_privileges: r.get(13)?,
        builtin: r.get(14)?,
        deprecated: r.get(15)?,
        deprecation_date: r.get(16)?,
        disabled: r.get(17)?,
        is_manifest_supported: has_manifest,
        library_count: usize::try_from(library_count).unwrap_or(0),
        created: r.get(19)?,
        updated: r.get(20)?,
    })
}

pub fn list(site: &Site) -> Result<Vec<Runtime>> {
    site.db.with(|c| {
        let mut st = c.prepare_cached(&format!("{SELECT} ORDER BY name"))?;
        let rows = st.query_map([], row)?.collect();
        rows
    })
}

pub fn get(site: &Site, id: &str) -> Result<Runtime> {
    site.db
        .with(|c| {
            c.query_row(&format!("{SELECT} WHERE id = ?1"), [id], row)
                .optional()
        })?
        .ok_or_else(|| SiteError::NotFound(format!("no runtime with id {id}")))
}

pub fn manifest(site: &Site, id: &str) -> Result<Vec<Value>> {
    let m: Option<Option<String>> = site.db.with(|c| {
        c.query_row("SELECT manifest FROM runtimes WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()
    })?;
    match m {
        None => Err(SiteError::NotFound(format!("no runtime with id {id}"))),
        Some(None) => Ok(Vec::new()),
        Some(Some(s)) => serde_json::from_str(&s)
            .map_err(|e| SiteError::Internal(format!("stored manifest of {id}: {e}"))),
    }
}

/// Where the image is: the store (its config digest is the image ID), the engine, or neither.
pub async fn image_exists(site: &Site, image_id: &str) -> Result<bool> {
    if site.store_has_image(image_id)? {
        return Ok(true);
    }
    match site.docker.inspect_image(image_id).await {
        Ok(i) => Ok(i.id.as_deref() == Some(image_id)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(SiteError::engine(e)),
    }
}

async fn check_external(site: &Site, spec: &RuntimeSpec) -> Result<()> {
    if !image_exists(site, &spec.image_id).await? {
        return Err(SiteError::invalid(
            "imageId",
            format!(
                "no image {} in the store or the Docker engine (build, pull or load it first)",
                spec.image_id
            ),
        ));
    }
    if let Some(rt) = &spec.docker_runtime {
        let info = site.docker.info().await.map_err(SiteError::engine)?;
        let known = info.runtimes.unwrap_or_default();
        if !known.contains_key(rt) {
            let mut names: Vec<_> = known.keys().cloned().collect();
            names.sort();
            return Err(SiteError::invalid(
                "dockerRuntime",
                format!(
                    "the Docker engine has no runtime {rt:?} (it has {})",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn name_taken(
    c: &rusqlite::Connection,
    name: &str,
    except: Option<&str>,
) -> rusqlite::Result<bool> {
    let other: Option<String> = c
        .query_row("SELECT id FROM runtimes WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(other.is_some_and(|o| Some(o.as_str()) != except))
}

/// Register a runtime. The manifest comes from the input, else from the image (see
/// [`crate::manifest::from_image`]).
pub async fn register(site: &Site, input: &Map<String, Value>, builtin: bool) -> Result<Runtime> {
    let mut spec = validate(input)?;
    check_external(site, &spec).await?;
    if spec.manifest.is_none() {
        spec.manifest = crate::manifest::from_image(site, &spec.image_id).await?;
    }
    let id = new_id()?;
    let now = now_ms();
    site.db.try_with(|c| {
        let tx = c.transaction()?;
        if name_taken(&tx, &spec.name, None)? {
            return Err(SiteError::conflict(
                Some("name"),
                format!("a runtime named {:?} is registered", spec.name),
            ));
        }
        tx.execute(
            "INSERT INTO runtimes (id, name, version, container_type, image_id, max_cpu, max_memory,
             max_memory_unit, max_swap_memory, max_swap_memory_unit, shared_memory, shared_memory_unit,
             docker_runtime, requires_advanced, builtin, manifest, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'docker', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)",
            params![
                id,
                spec.name,
                spec.version,
                spec.image_id,
                spec.max_cpu,
                spec.max_memory,
                spec.max_memory_unit.as_str(),
                spec.max_swap_memory,
                spec.max_swap_memory_unit.as_str(),
                spec.shared_memory.map(|s| s.0),
                spec.shared_memory.map(|s| s.1.as_str()),
                spec.docker_runtime,
                spec.requires_advanced,
                builtin,
                spec.manifest.as_ref().map(|m| Value::Array(m.clone()).to_string()),
                now,
            ],
        )?;
        tx.commit()?;
        Ok(())
    })?;
    get(site, &id)
}

/// The stored record as register input (for partial updates).
fn as_input(rt: &Runtime) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), rt.name.clone().into());
    if let Some(v) = &rt.version {
        m.insert("version".into(), v.clone().into());
    }
    m.insert("imageId".into(), rt.image_id.clone().into());
    m.insert("maxCpu".into(), rt.max_cpu.into());
    m.insert("maxMemory".into(), rt.max_memory.into());
    m.insert("maxMemoryUnit".into(), rt.max_memory_unit.clone().into());
    m.insert("maxSwapMemory".into(), rt.max_swap_memory.into());
    m.insert(
        "maxSwapMemoryUnit".into(),
        rt.max_swap_memory_unit.clone().into(),
    );
    if let (Some(v), Some(u)) = (rt.shared_memory, &rt.shared_memory_unit) {
        m.insert("sharedMemory".into(), v.into());
        m.insert("sharedMemoryUnit".into(), u.clone().into());
    }
    if let Some(r) = &rt.docker_runtime {
        m.insert("dockerRuntime".into(), r.clone().into());
    }
    m.insert(
        "requiresAdvancedPrivileges".into(),
        rt.requires_advanced_privileges.into(),
    );
    m
}

/// Update a runtime: the given fields replace the stored ones, the result is validated as a
/// whole. Applies to sessions started afterwards (running ones keep their limits).
pub async fn update(site: &Site, id: &str, input: &Map<String, Value>) -> Result<Runtime> {
    let current = get(site, id)?;
    let given = canonical(input)?;
    let mut merged = as_input(&current);
    // A new memory value without a swap value gets the default (twice the memory) again.
    if (given.contains_key("maxMemory") || given.contains_key("maxMemoryUnit"))
        && !given.contains_key("maxSwapMemory")
    {
        merged.remove("maxSwapMemory");
        merged.remove("maxSwapMemoryUnit");
    }
    for (k, v) in given {
        merged.insert(k, v);
    }
    let mut spec = validate(&merged)?;
    let image_changed = spec.image_id != current.image_id;
    if image_changed || spec.docker_runtime != current.docker_runtime {
        check_external(site, &spec).await?;
    }
    // A new image brings its own libraries: the given manifest, else the image's, else none
    // (the old image's list would be wrong).
    let replace_manifest = spec.manifest.is_some() || image_changed;
    if spec.manifest.is_none() && image_changed {
        spec.manifest = crate::manifest::from_image(site, &spec.image_id).await?;
    }
    site.db.try_with(|c| {
        let tx = c.transaction()?;
        if name_taken(&tx, &spec.name, Some(id))? {
            return Err(SiteError::conflict(
                Some("name"),
                format!("a runtime named {:?} is registered", spec.name),
            ));
        }
        tx.execute(
            "UPDATE runtimes SET name = ?2, version = ?3, image_id = ?4, max_cpu = ?5, max_memory = ?6,
             max_memory_unit = ?7, max_swap_memory = ?8, max_swap_memory_unit = ?9, shared_memory = ?10,
             shared_memory_unit = ?11, docker_runtime = ?12, requires_advanced = ?13,
             manifest = CASE WHEN ?16 THEN ?14 ELSE manifest END, updated_at = ?15 WHERE id = ?1",
            params![
                id,
                spec.name,
                spec.version,
                spec.image_id,
                spec.max_cpu,
                spec.max_memory,
                spec.max_memory_unit.as_str(),
                spec.max_swap_memory,
                spec.max_swap_memory_unit.as_str(),
                spec.shared_memory.map(|s| s.0),
                spec.shared_memory.map(|s| s.1.as_str()),
                spec.docker_runtime,
                spec.requires_advanced,
                spec.manifest.as_ref().map(|m| Value::Array(m.clone()).to_string()),
                now_ms(),
                replace_manifest,
            ],
        )?;
        tx.commit()?;
        Ok(())
    })?;
    get(site, id)
}

pub fn set_manifest(site: &Site, id: &str, libraries: &[Value]) -> Result<Runtime> {
    get(site, id)?;
    site.db.with(|c| {
        c.execute(
            "UPDATE runtimes SET manifest = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, Value::Array(libraries.to_vec()).to_string(), now_ms()],
        )
    })?;
    get(site, id)
}

pub fn set_deprecated(site: &Site, id: &str, deprecated: bool) -> Result<Runtime> {
    get(site, id)?;
    site.db.with(|c| {
        c.execute(
            "UPDATE runtimes SET deprecated = ?2, deprecation_date = CASE WHEN ?2 THEN ?3 ELSE NULL END,
             updated_at = ?3 WHERE id = ?1",
            params![id, deprecated, now_ms()],
        )
    })?;
    get(site, id)
}

/// Remove a runtime; refused while notebooks name it or sessions run on it.
pub fn unregister(site: &Site, id: &str) -> Result<()> {
    get(site, id)?;
    site.db.try_with(|c| {
        let tx = c.transaction()?;
        let notebooks: i64 = tx.query_row(
            "SELECT count(*) FROM notebooks WHERE runtime_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if notebooks > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{notebooks} notebook(s) use this runtime: migrate them first"),
            ));
        }
        let sessions: i64 = tx.query_row(
            "SELECT count(*) FROM sessions WHERE runtime_id = ?1 AND state IN ('starting', 'ready')",
            [id],
            |r| r.get(0),
        )?;
        if sessions > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{sessions} session(s) run on this runtime: stop them first"),
            ));
        }
        // Ended sessions keep no reference worth keeping.
        tx.execute("DELETE FROM sessions WHERE runtime_id = ?1", [id])?;
        tx.execute("DELETE FROM runtimes WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    })
}

/// The factory runtimes (ArcGIS's Esri-provided ones): the stock stacks that serve
/// notebooks, found in the store under the tags `nbrt build stacks/` gives them
/// (`<stack>:latest`). `base` is their parent and serves none, so it is not one.
pub const FACTORY: &[(&str, &str)] = &[("jupyter", "nbrt jupyter"), ("scipy", "nbrt scipy")];

/// The image label a built runtime carries its `[runtime]` defaults in (JSON, kebab-case
/// keys; written by nbrt-build).
pub const DEFAULTS_LABEL: &str = "io.nbrt.runtime";

/// Limits for a stock image whose label sets none: ArcGIS's Standard runtime (1 core, 4 GB).
const FALLBACK_CPU: f64 = 1.0;
const FALLBACK_MEMORY: &str = "4g";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub restored: Vec<Runtime>,
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

/// Register input for a factory stack from its image's `io.nbrt.runtime` label. Every field
/// is present (absent values as null), so an update resets what an admin changed.
fn factory_input(
    name: &str,
    image_id: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Map<String, Value>> {
    let defaults: Map<String, Value> = match labels.get(DEFAULTS_LABEL) {
        Some(s) => serde_json::from_str(s).map_err(|e| {
            SiteError::invalid(
                DEFAULTS_LABEL,
                format!("the image's label is not JSON: {e}"),
            )
        })?,
        None => Map::new(),
    };
    let text = |k: &str| defaults.get(k).and_then(Value::as_str).map(str::to_string);
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    m.insert("imageId".into(), image_id.into());
    if let Some(v) = labels.get("org.opencontainers.image.version") {
        m.insert("version".into(), v.clone().into());
    }
    let cpu = defaults
        .get("max-cpu")
        .and_then(Value::as_f64)
        .unwrap_or(FALLBACK_CPU);
    m.insert("maxCpu".into(), cpu.into());
    let memory = text("max-memory").unwrap_or_else(|| FALLBACK_MEMORY.to_string());
    let (v, u) = parse_size("maxMemory", &memory)?;
    m.insert("maxMemory".into(), v.into());
    m.insert("maxMemoryUnit".into(), u.as_str().into());
    for (key, field) in [
        ("max-swap", "maxSwapMemory"),
        ("shared-memory", "sharedMemory"),
    ] {
        let (v, u) = match text(key) {
            Some(s) => {
                let (v, u) = parse_size(field, &s)?;
                (Value::from(v), Value::from(u.as_str()))
            }
            None => (Value::Null, Value::Null),
        };
        m.insert(field.into(), v);
        m.insert(format!("{field}Unit"), u);
    }
    m.insert(
        "dockerRuntime".into(),
        text("gpu-runtime").map_or(Value::Null, Value::from),
    );
    m.insert(
        "requiresAdvancedPrivileges".into(),
        defaults
            .get("advanced-privileges")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .into(),
    );
    Ok(m)
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
    let labels = found
        .image
        .config
        .value()
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    Ok(Some((found.image.id().to_string(), labels)))
}

/// ArcGIS's "Restore Factory Runtimes": every stock stack image in the store is registered,
/// or reset to its factory settings (the stack's `[runtime]` limits, the current image and
/// its manifest, not deprecated) if it is registered already. Custom runtimes are left
/// alone, and so is a custom runtime that took a factory runtime's name.
pub async fn restore_factory(site: &Site) -> Result<RestoreReport> {
    let mut report = RestoreReport {
        restored: Vec::new(),
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
        let existing: Option<(String, bool)> = site.db.with(|c| {
            c.query_row(
                "SELECT id, builtin FROM runtimes WHERE name = ?1",
                [*name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        let rt = match existing {
            Some((_, false)) => {
                report.skipped.push(format!(
                    "{tag}: a custom runtime is registered as {name:?}; rename or unregister it"
                ));
                continue;
            }
            Some((id, true)) => {
                update(site, &id, &input).await?;
                site.db.with(|c| {
                    c.execute(
                        "UPDATE runtimes SET deprecated = 0, deprecation_date = NULL, disabled = 0
                         WHERE id = ?1",
                        [&id],
                    )
                })?;
                get(site, &id)?
            }
            None => register(site, &input, true).await?,
        };
        report.restored.push(rt);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn good() -> Value {
        json!({"name": "py", "imageId": format!("sha256:{}", "a".repeat(64)),
               "maxCpu": 1.5, "maxMemory": 2, "maxMemoryUnit": "g"})
    }

    fn field_of(v: Value) -> String {
        validate(&input(v))
            .unwrap_err()
            .field()
            .unwrap()
            .to_string()
    }

    #[test]
    fn swap_defaults_to_twice_memory() {
        let s = validate(&input(good())).unwrap();
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
    fn factory_limits_come_from_the_image_label() {
        let labels = BTreeMap::from([(
            DEFAULTS_LABEL.to_string(),
            r#"{"max-cpu":2.0,"max-memory":"8g","max-swap":null,"shared-memory":"512m","gpu-runtime":null,"advanced-privileges":false}"#
                .to_string(),
        )]);
        let id = format!("sha256:{}", "b".repeat(64));
        let s = validate(&factory_input("nbrt scipy", &id, &labels).unwrap()).unwrap();
        assert_eq!(
            (s.max_cpu, s.max_memory, s.max_memory_unit),
            (2.0, 8.0, Unit::G)
        );
        assert_eq!((s.max_swap_memory, s.max_swap_memory_unit), (16.0, Unit::G));
        assert_eq!(s.shared_memory, Some((512.0, Unit::M)));
        // No label: ArcGIS's Standard limits.
        let s = validate(&factory_input("x", &id, &BTreeMap::new()).unwrap()).unwrap();
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
    fn variant_spellings() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("maxCpu");
        v["maxCPU"] = json!("2");
        v["sharedMemorySize"] = json!(512);
        v["sharedMemorySizeUnit"] = json!("m");
        let s = validate(&input(v)).unwrap();
        assert_eq!(s.max_cpu, 2.0);
        assert_eq!(s.shared_memory, Some((512.0, Unit::M)));
    }

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
