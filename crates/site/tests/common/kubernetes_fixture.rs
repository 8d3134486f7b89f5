//! The fixture session of the Kubernetes backend's tests and benchmark: a runtime of 0.5 CPU,
//! 1 GiB, 128 MiB shm and a GPU, one user's session of it, a site configuration that sets
//! every optional field.
#![allow(dead_code)]

use std::collections::BTreeMap;

use nbrt_site::backend::kubernetes as k8s;
use nbrt_site::backend::{HomeRef, ImageRef, KubernetesConfig, SessionSpec};
use nbrt_site::runtime::Runtime;
use serde_json::json;

pub const NAMESPACE: &str = "notebooks";
pub const SITE: &str = "0a1b2c3d4e5f";

/// The fixture runtime: 0.5 CPU, 1 GiB, 128 MiB shm, a GPU runtime.
pub fn fixture_runtime() -> Runtime {
    Runtime {
        id: "5f0c7a2e-91d4-4f7b-8c1e-3a2b1c0d9e8f".into(),
        name: "nbrt SciPy (GPU) 3.1".into(),
        version: Some("3.1".into()),
        container_type: "docker".into(),
        image_id: format!("sha256:{}", "ab".repeat(32)),
        max_cpu: 0.5,
        max_memory: 1.0,
        max_memory_unit: "g".into(),
        max_swap_memory: 1.0,
        max_swap_memory_unit: "g".into(),
        swap_given: true,
        shared_memory: Some(128.0),
        shared_memory_unit: Some("m".into()),
        docker_runtime: Some("nvidia".into()),
        use_gpu: true,
        gpus: None,
        requires_advanced_privileges: false,
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

pub fn fixture_spec(user: &str, rt: Runtime) -> SessionSpec {
    let short: String = rt.id.chars().filter(|c| *c != '-').take(12).collect();
    SessionSpec {
        site_id: SITE.into(),
        session_id: "7d9e8f00-1111-4222-8333-444455556666".into(),
        name: format!("nbrt-{SITE}-{user}-{short}"),
        user: user.into(),
        token: "fixture-token-not-a-secret".into(),
        image: ImageRef(format!(
            "registry.example:5000/nbrt/scipy-gpu@sha256:{}",
            "cd".repeat(32)
        )),
        home: HomeRef {
            volume: k8s::home_claim_name(SITE, user),
            node: None,
        },
        prefix: format!("/user/{user}/{}", rt.id),
        home_slot: None,
        runtime: rt,
        session_env: Default::default(),
    }
}

pub fn fixture_config() -> KubernetesConfig {
    KubernetesConfig {
        namespace: Some(NAMESPACE.into()),
        registry: Some("registry.example:5000".into()),
        storage_class: Some("standard".into()),
        home_size: Some("10Gi".into()),
        node_selector: BTreeMap::from([("nbrt.io/sessions".into(), "yes".into())]),
        tolerations: vec![serde_json::from_value(json!({
            "key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"
        }))
        .unwrap()],
        image_pull_secrets: vec!["site-registry".into()],
        service: true,
        site_pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "nbrt-serve".into())]),
        site_cidrs: vec!["10.0.0.5/32".into()],
        ..Default::default()
    }
}
