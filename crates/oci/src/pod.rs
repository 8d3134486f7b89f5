//! The conventions every Kubernetes pod nbrt describes follows — a session's pod
//! (`nbrt serve --backend kubernetes`) and a remote kernel's pod (`nbrt kernelspec
//! --provisioner kubernetes`, whose launch script gets them as JSON from [`conventions_json`]).
//! One home, so the two cannot drift apart.
//!
//! They are the stock images' contract (docker-stacks' `jovyan`, uid 1000, group `users` 100)
//! and what JupyterHub's KubeSpawner and Gateway Provisioners' kernel pods do, tightened where
//! those left a gap (see docs/backends.md).

/// The user the notebook server (or kernel) runs as: docker-stacks' `jovyan`.
pub const RUN_AS_USER: i64 = 1000;
/// Its primary group: `users`.
pub const RUN_AS_GROUP: i64 = 100;
/// The group volumes are made writable for (`fsGroup`): the same `users`.
pub const FS_GROUP: i64 = 100;
/// Volumes already owned by the group are not walked again at every start.
pub const FS_GROUP_CHANGE_POLICY: &str = "OnRootMismatch";
/// The container runtime's default seccomp profile.
pub const SECCOMP_PROFILE: &str = "RuntimeDefault";
/// A pod that ends stays ended: the site (or the kernel's provisioner) decides what comes
/// next. `OnFailure` would restart an out-of-memory pod behind the site's back.
pub const RESTART_POLICY: &str = "Never";
/// Asks the cluster autoscaler not to evict a running session or kernel to shrink the
/// cluster.
pub const SAFE_TO_EVICT_ANNOTATION: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
pub const SAFE_TO_EVICT: &str = "false";
/// The extended resource a GPU runtime asks for (NVIDIA's device plugin).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Capabilities dropped from every container that does not need the advanced privilege.
pub const DROP_CAPABILITIES: &str = "ALL";

/// The conventions as one JSON object, for scripts that describe pods themselves.
pub fn conventions_json() -> serde_json::Value {
    serde_json::json!({
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": FS_GROUP,
        "fsGroupChangePolicy": FS_GROUP_CHANGE_POLICY,
        "seccompProfile": SECCOMP_PROFILE,
        "restartPolicy": RESTART_POLICY,
        "annotations": { SAFE_TO_EVICT_ANNOTATION: SAFE_TO_EVICT },
        "gpuResource": GPU_RESOURCE,
        "dropCapabilities": [DROP_CAPABILITIES],
    })
}
