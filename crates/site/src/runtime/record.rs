//! A registered runtime as it is stored and as the API shows it (ArcGIS's response names),
//! and the memory units of its `*Unit` fields.

use nbrt_oci::label::HttpContract;
use serde::Serialize;

use crate::error::{Result, SiteError};

/// The Docker runtime that makes a runtime a GPU runtime (ArcGIS's `useGPU`): the only one
/// the site gives GPUs to.
pub const GPU_DOCKER_RUNTIME: &str = "nvidia";

/// The most GPUs a runtime's sessions may ask for.
pub const MAX_GPUS: u32 = 64;

/// Whether a runtime with this Docker runtime is a GPU runtime.
pub fn is_gpu_docker_runtime(docker_runtime: Option<&str>) -> bool {
    docker_runtime == Some(GPU_DOCKER_RUNTIME)
}

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
    /// Whether `maxSwapMemory` was given (else derived from the memory, and derived again
    /// when the memory changes).
    #[serde(skip)]
    pub swap_given: bool,
    pub shared_memory: Option<f64>,
    pub shared_memory_unit: Option<String>,
    pub docker_runtime: Option<String>,
    #[serde(rename = "useGPU")]
    pub use_gpu: bool,
    /// The GPUs a session of this GPU runtime gets (0 to [`MAX_GPUS`]); `None`: the backend's
    /// default (see `crate::backend::session_gpus`). From the image's `[runtime]` label
    /// (`gpus`) at registration and when the image changes, else as given; only with a GPU
    /// runtime ([`GPU_DOCKER_RUNTIME`]).
    pub gpus: Option<u32>,
    pub requires_advanced_privileges: bool,
    /// A factory runtime (ArcGIS's `esriProvidedRuntime`): a stock stack image.
    pub builtin: bool,
    pub deprecated: bool,
    pub deprecation_date: Option<i64>,
    pub disabled: bool,
    /// nbrt's own field: whether a library manifest is stored for this runtime.
    pub is_manifest_supported: bool,
    pub library_count: usize,
    /// How many sessions the site keeps started for this runtime before anyone asks (a warm
    /// pool; see `crate::sessions::pool`).
    pub warm_pool: u32,
    /// How many of them are ready now (the API fills it in; not stored).
    pub warm_ready: usize,
    /// How its sessions are reached over HTTP (the kind of server, the URL rewrite, the
    /// readiness path): read off the image's `[runtime]` label when it is registered or
    /// its image changes; not an input.
    pub server: HttpContract,
    pub created: i64,
    pub updated: i64,
}

impl Runtime {
    /// A registered runtime for unit tests.
    #[cfg(test)]
    pub(crate) fn sample() -> Self {
        Self {
            id: "r".into(),
            name: "py".into(),
            version: Some("1".into()),
            container_type: "docker".into(),
            image_id: format!("sha256:{}", "a".repeat(64)),
            max_cpu: 1.0,
            max_memory: 2.0,
            max_memory_unit: "g".into(),
            max_swap_memory: 3.0,
            max_swap_memory_unit: "g".into(),
            swap_given: true,
            shared_memory: Some(64.0),
            shared_memory_unit: Some("m".into()),
            docker_runtime: None,
            use_gpu: false,
            gpus: None,
            requires_advanced_privileges: true,
            builtin: false,
            deprecated: false,
            deprecation_date: None,
            disabled: false,
            is_manifest_supported: false,
            library_count: 0,
            warm_pool: 0,
            warm_ready: 0,
            server: Default::default(),
            created: 0,
            updated: 0,
        }
    }

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
    /// Whether this is a GPU runtime (its Docker runtime is [`GPU_DOCKER_RUNTIME`]).
    pub fn is_gpu(&self) -> bool {
        is_gpu_docker_runtime(self.docker_runtime.as_deref())
    }
    pub fn nano_cpus(&self) -> i64 {
        (self.max_cpu * 1e9).round() as i64
    }
}

fn unit_or_b(s: &str) -> Unit {
    Unit::parse("unit", s).unwrap_or(Unit::B)
}
