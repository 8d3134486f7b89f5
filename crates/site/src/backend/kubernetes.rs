//! Sessions on a Kubernetes cluster, through its API server (kube-rs, k8s-openapi).
//!
//! What one session is made of (see [`SessionObjects`], [`home_claim`] and
//! [`network_policy`]):
//!
//! - **a bare Pod**, named like the Docker backend's container (made a DNS-1123 label by
//!   [`object_name`]), as KubeSpawner and Gateway Provisioners make them: nbrt is the
//!   controller, so nothing restarts a pod behind the site's back (`restartPolicy: Never`).
//!   It follows [`nbrt_oci::pod`]'s conventions, which `nbrt kernelspec --provisioner
//!   kubernetes` shares: uid 1000, gid 100, fsGroup 100, `RuntimeDefault` seccomp, no
//!   service-account token, no service links, no privilege escalation and no capabilities
//!   unless the runtime needs the advanced privilege. CPU and memory limits are the
//!   runtime's, memory requested in full and CPU in part ([`KubernetesConfig::cpu_request`]);
//!   a GPU runtime (Docker runtime `nvidia`) gets the runtime class of its Docker runtime's
//!   name and its GPU count as `nvidia.com/gpu` (limit and request: the runtime's `gpus`,
//!   else [`KubernetesConfig::gpus`], else 1; a count of 0 asks for none and sets
//!   [`super::NO_GPUS_ENV`]); `/dev/shm` is a memory-backed emptyDir of the runtime's size;
//!   the readiness probe is `<prefix>/api`; the image is the runtime's, pushed to the site's
//!   registry and named by digest.
//! - **a Secret** with the session's token (the pod reads it through `secretKeyRef`, so the
//!   token is not in the pod's spec) and the session's files; owned by the pod once the pod
//!   exists, so it goes with it.
//! - **a PersistentVolumeClaim per user** for the home, owned by nothing: it outlives
//!   sessions and runtimes. A user's pods require to share a node with the user's other
//!   pods (pod affinity on the user label), so a ReadWriteOnce claim is never wanted on two
//!   nodes at once.
//! - **a Service** (optional, [`KubernetesConfig::service`]), owned by the pod.
//! - **one NetworkPolicy per site**: ingress to session pods only from the site, on the
//!   notebook port — sessions cannot reach each other.
//!
//! Pod states come back as [`Observed`] ([`observe_pod`]): a pod the scheduler cannot place,
//! an image that cannot be pulled and an eviction end the session at once with Kubernetes'
//! reason, rather than after the start time-out; `OOMKilled` ends it out of memory. A pod
//! left under the session's name by an earlier life is deleted and made again. One watch
//! per site ([`kube::runtime::watcher`] on the site's labels) tells the ends.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, LocalObjectReference, Node, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodAffinity,
    PodAffinityTerm, PodSecurityContext, PodSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use nbrt_oci::pod as conv;
use sha2::Digest as _;

use super::{
    BackendEvent, BackendKind, Capacity, Ended, Handle, HomeRef, ImageProgress, ImageRef,
    KubernetesConfig, Limits, Observed, Owned, SessionBackend, SessionSpec, Usage, UsageReport,
};
use crate::error::{Result, SiteError};
use crate::runtime::Runtime;
use crate::sessions::{HOME, PORT};

/// The field manager of nbrt's server-side applies.
pub const FIELD_MANAGER: &str = "nbrt";
/// Labels on everything the backend makes.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_SITE: &str = "nbrt.io/site";
pub const LABEL_SESSION: &str = "nbrt.io/session";
pub const LABEL_USER: &str = "nbrt.io/user";
pub const LABEL_RUNTIME: &str = "nbrt.io/runtime";
/// Annotations keeping the names labels could not hold as they are.
pub const ANNOTATION_USER: &str = "nbrt.io/user-name";
pub const ANNOTATION_RUNTIME: &str = "nbrt.io/runtime-name";
/// The `app.kubernetes.io/name` of session pods, and of the site's own pod when it runs in
/// the cluster (what the NetworkPolicy admits when the configuration names no other peer).
pub const SESSION_APP: &str = "nbrt-session";
pub const SITE_APP: &str = "nbrt-serve";
/// The container and port names in a session's pod.
pub const CONTAINER: &str = "notebook";
pub const PORT_NAME: &str = "notebook-port";
/// The Secret's key holding the token.
pub const TOKEN_KEY: &str = "token";
/// Defaults of [`KubernetesConfig`]'s optional settings.
pub const DEFAULT_HOME_SIZE: &str = "10Gi";
pub const DEFAULT_CPU_REQUEST: f64 = 0.25;
pub const DEFAULT_GPUS: u32 = super::DEFAULT_GPUS;
/// Docker's `/dev/shm` when a runtime names none: the same for sessions here.
pub const DEFAULT_SHM: i64 = 64 * 1024 * 1024;
/// The Docker runtime that makes a runtime a GPU runtime (as on the Docker backend).
pub const GPU_DOCKER_RUNTIME: &str = crate::runtime::GPU_DOCKER_RUNTIME;
/// How long a stale pod may take to go before its replacement is made.
const STALE_POD_WAIT: Duration = Duration::from_secs(30);
const STALE_POD_POLL: Duration = Duration::from_millis(200);

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("{what}: the API server said {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{what}: {source}")]
    Client {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the Kubernetes configuration: {0}")]
    Config(String),
    #[error("the stale pod {0} was still there after {1} s")]
    StalePod(String, u64),
}

impl KubernetesError {
    fn of(what: impl Into<String>, e: kube::Error) -> KubernetesError {
        let what = what.into();
        match e {
            kube::Error::Api(s) => KubernetesError::Api {
                what,
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            source => KubernetesError::Client { what, source },
        }
    }
}

impl From<KubernetesError> for SiteError {
    fn from(e: KubernetesError) -> SiteError {
        match e {
            KubernetesError::Config(m) => SiteError::invalid("kubernetes", m),
            other => SiteError::Engine(other.to_string()),
        }
    }
}

/// The API server's status code of a failed call.
fn code_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn sha_hex(s: &str, n: usize) -> String {
    let h = sha2::Sha256::digest(s.as_bytes());
    hex::encode(h)[..n].to_string()
}

/// A DNS-1123 label (at most 63 of `a-z0-9-`, alphanumeric at both ends) naming `wanted`:
/// `wanted` itself when it is one, else its lower-cased, dash-joined form cut short, with 10
/// hex digits of `wanted`'s SHA-256 after it so that two names that differ only in what had
/// to go stay apart. Pods, Services, claims and policies are named so.
pub fn object_name(wanted: &str) -> String {
    if is_dns_label(wanted) {
        return wanted.to_string();
    }
    let mut slug = String::new();
    for c in wanted.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.truncate(52);
    let slug = slug.trim_end_matches('-');
    let hash = sha_hex(wanted, 10);
    if slug.is_empty() {
        format!("nbrt-{hash}")
    } else {
        format!("{slug}-{hash}")
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A label value standing for `wanted`: itself when it is a valid one, else its allowed
/// characters (others as `-`) cut short, with 10 hex digits of its SHA-256 after them.
pub fn label_value(wanted: &str) -> String {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let ends_ok = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    if wanted.len() <= 63 && wanted.bytes().all(ok) && (wanted.is_empty() || ends_ok(wanted)) {
        return wanted.to_string();
    }
    let mut slug: String = wanted
        .chars()
        .map(|c| if c.is_ascii() && ok(c as u8) { c } else { '-' })
        .collect();
    slug.truncate(52);
    let slug = slug.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let hash = sha_hex(wanted, 10);
    if slug.is_empty() {
        hash
    } else {
        format!("{slug}-{hash}")
    }
}

/// A CPU quantity from nano-CPUs: millicores (`500m`), whole cores when it is whole (`2`);
/// at least `1m`, the API's resolution.
pub fn cpu_quantity(nano_cpus: i64) -> Quantity {
    let milli = ((nano_cpus.max(0) as f64) / 1e6).round().max(1.0) as i64;
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

/// A memory quantity from bytes: in the largest binary unit that divides it (`1Gi`, `128Mi`),
/// else plain bytes.
pub fn bytes_quantity(bytes: i64) -> Quantity {
    let bytes = bytes.max(0);
    for (unit, size) in [
        ("Ti", 1i64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return Quantity(format!("{}{unit}", bytes / size));
        }
    }
    Quantity(bytes.to_string())
}

/// A quantity's value (`3900m` → 3.9, `16Gi` → 17179869184, `1e3` → 1000): the API
/// server's suffixes; `None` for what is not a quantity.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(num * mult)
}

/// The label selector of everything a site made: `app.kubernetes.io/managed-by=nbrt,
/// nbrt.io/site=<site>`.
pub fn site_selector(site_id: &str) -> String {
    format!(
        "{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_SITE}={}",
        label_value(site_id)
    )
}

fn site_labels(site_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
        (LABEL_SITE.to_string(), label_value(site_id)),
    ])
}

/// The user's labels (site and user), what their pods' affinity selects.
fn user_labels(site_id: &str, user: &str) -> BTreeMap<String, String> {
    let mut l = site_labels(site_id);
    l.insert(LABEL_USER.to_string(), label_value(user));
    l
}

/// The name of a user's home claim: `nbrt-<site>-home-<user>` as a DNS label.
pub fn home_claim_name(site_id: &str, user: &str) -> String {
    object_name(&format!("nbrt-{site_id}-home-{user}"))
}

/// The name of the site's NetworkPolicy.
pub fn network_policy_name(site_id: &str) -> String {
    object_name(&format!("nbrt-{site_id}-sessions"))
}

/// The name of a session's Secret: `<pod>-token` as a DNS label.
pub fn secret_name(pod_name: &str) -> String {
    object_name(&format!("{pod_name}-token"))
}

fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// The user's home claim: ReadWriteOnce, the configured size and storage class, owned by
/// nothing (it outlives sessions).
pub fn home_claim(
    site_id: &str,
    user: &str,
    cfg: &KubernetesConfig,
    namespace: &str,
) -> PersistentVolumeClaim {
    let mut m = meta(
        &home_claim_name(site_id, user),
        namespace,
        user_labels(site_id, user),
    );
    m.annotations = Some(BTreeMap::from([(
        ANNOTATION_USER.to_string(),
        user.to_string(),
    )]));
    let size = cfg.home_size.as_deref().unwrap_or(DEFAULT_HOME_SIZE);
    PersistentVolumeClaim {
        metadata: m,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: cfg.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.to_string()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The site's NetworkPolicy: session pods of the site take ingress only from the site
/// (its pod's labels, or its addresses), on the notebook port.
pub fn network_policy(site_id: &str, cfg: &KubernetesConfig, namespace: &str) -> NetworkPolicy {
    let mut from: Vec<NetworkPolicyPeer> = cfg
        .site_cidrs
        .iter()
        .map(|cidr| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.clone(),
                except: None,
            }),
            ..Default::default()
        })
        .collect();
    if !cfg.site_pod_labels.is_empty() || cfg.site_cidrs.is_empty() {
        let labels = if cfg.site_pod_labels.is_empty() {
            BTreeMap::from([(LABEL_NAME.to_string(), SITE_APP.to_string())])
        } else {
            cfg.site_pod_labels.clone()
        };
        from.push(NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels),
                match_expressions: None,
            }),
            ..Default::default()
        });
    }
    let mut sessions = site_labels(site_id);
    sessions.insert(LABEL_NAME.to_string(), SESSION_APP.to_string());
    NetworkPolicy {
        metadata: meta(
            &network_policy_name(site_id),
            namespace,
            site_labels(site_id),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(sessions),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(PORT))),
                    protocol: Some("TCP".to_string()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }
}

/// Whether a runtime is a GPU runtime (its Docker runtime is `nvidia`).
pub fn is_gpu_runtime(rt: &Runtime) -> bool {
    rt.is_gpu()
}

/// The objects of one session, as the backend creates them.
#[derive(Debug, Clone)]
pub struct SessionObjects {
    pub secret: Secret,
    pub pod: Pod,
    /// Only when the configuration asks for Services.
    pub service: Option<Service>,
}

/// An owner reference to a pod (for its Secret and Service).
pub fn owned_by(pod_name: &str, pod_uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_string(),
        kind: "Pod".to_string(),
        name: pod_name.to_string(),
        uid: pod_uid.to_string(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    }
}

/// The session's objects (see the module's notes). `owner` is the pod's reference once it
/// exists: the Secret and the Service then carry it.
pub fn session_objects(
    spec: &SessionSpec,
    cfg: &KubernetesConfig,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> SessionObjects {
    let rt = &spec.runtime;
    let name = object_name(&spec.name);
    let secret_name = secret_name(&name);
    let mut labels = user_labels(&spec.site_id, &spec.user);
    labels.insert(LABEL_SESSION.to_string(), label_value(&spec.session_id));
    labels.insert(LABEL_RUNTIME.to_string(), label_value(&rt.id));
    let mut pod_labels = labels.clone();
    pod_labels.insert(LABEL_NAME.to_string(), SESSION_APP.to_string());
    let owners = owner.map(|o| vec![o.clone()]);

    // The session's files: keys of the Secret, each mounted at its path.
    let files = spec.session_env.files_to_write(None);
    let mut data = BTreeMap::new();
    let mut items = Vec::new();
    let mut file_mounts = Vec::new();
    for (i, (path, content, mode)) in files.into_iter().enumerate() {
        let key = format!("file-{i}");
        data.insert(key.clone(), ByteString(content));
        items.push(KeyToPath {
            key: key.clone(),
            path: key.clone(),
            mode: Some(mode as i32),
        });
        file_mounts.push(VolumeMount {
            name: "session-files".to_string(),
            mount_path: path,
            sub_path: Some(key),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let mut secret_meta = meta(&secret_name, namespace, labels.clone());
    secret_meta.owner_references = owners.clone();
    let secret = Secret {
        metadata: secret_meta,
        type_: Some("Opaque".to_string()),
        string_data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            spec.token.clone(),
        )])),
        data: (!data.is_empty()).then_some(data),
        ..Default::default()
    };

    let gpus = super::session_gpus(rt, cfg.gpus);
    // The notebook server's environment, the token read from the Secret.
    let mut env: Vec<EnvVar> = spec
        .env()
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some(if k == "JUPYTER_TOKEN" {
                EnvVar {
                    name: k.to_string(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret_name.clone(),
                            key: TOKEN_KEY.to_string(),
                            optional: Some(false),
                        }),
                        ..Default::default()
                    }),
                }
            } else {
                EnvVar {
                    name: k.to_string(),
                    value: Some(v.to_string()),
                    value_from: None,
                }
            })
        })
        .collect();
    if gpus == Some(0) {
        let (k, v) = super::NO_GPUS_ENV;
        env.push(EnvVar {
            name: k.to_string(),
            value: Some(v.to_string()),
            value_from: None,
        });
    }

    let mut limits = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity(rt.nano_cpus())),
        ("memory".to_string(), bytes_quantity(rt.memory_bytes())),
    ]);
    let cpu_request = cfg.cpu_request.unwrap_or(DEFAULT_CPU_REQUEST);
    let mut requests = BTreeMap::from([
        (
            "cpu".to_string(),
            cpu_quantity((rt.nano_cpus() as f64 * cpu_request).round() as i64),
        ),
        ("memory".to_string(), bytes_quantity(rt.memory_bytes())),
    ]);
    if let Some(n) = gpus.filter(|n| *n > 0) {
        let gpus = Quantity(n.to_string());
        limits.insert(conv::GPU_RESOURCE.to_string(), gpus.clone());
        requests.insert(conv::GPU_RESOURCE.to_string(), gpus);
    }

    let advanced = rt.requires_advanced_privileges;
    let container_security = if advanced {
        SecurityContext {
            allow_privilege_escalation: Some(true),
            ..Default::default()
        }
    } else {
        SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec![conv::DROP_CAPABILITIES.to_string()]),
                add: None,
            }),
            run_as_non_root: Some(true),
            ..Default::default()
        }
    };

    let mut mounts = vec![
        VolumeMount {
            name: "home".to_string(),
            mount_path: HOME.to_string(),
            ..Default::default()
        },
        VolumeMount {
            name: "dshm".to_string(),
            mount_path: "/dev/shm".to_string(),
            ..Default::default()
        },
    ];
    mounts.extend(file_mounts);
    let mut volumes = vec![
        Volume {
            name: "home".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: spec.home.volume.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        Volume {
            name: "dshm".to_string(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_string()),
                size_limit: Some(bytes_quantity(rt.shm_bytes().unwrap_or(DEFAULT_SHM))),
            }),
            ..Default::default()
        },
    ];
    if !items.is_empty() {
        volumes.push(Volume {
            name: "session-files".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret_name.clone()),
                items: Some(items),
                default_mode: None,
                optional: Some(false),
            }),
            ..Default::default()
        });
    }

    let container = Container {
        name: CONTAINER.to_string(),
        image: Some(spec.image.0.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_string()),
            container_port: i32::from(PORT),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            limits: Some(limits),
            requests: Some(requests),
            claims: None,
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(format!("{}/api", spec.prefix)),
                port: IntOrString::String(PORT_NAME.to_string()),
                scheme: Some("HTTP".to_string()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        security_context: Some(container_security),
        volume_mounts: Some(mounts),
        ..Default::default()
    };

    let mut pod_meta = meta(&name, namespace, pod_labels);
    pod_meta.annotations = Some(BTreeMap::from([
        (
            conv::SAFE_TO_EVICT_ANNOTATION.to_string(),
            conv::SAFE_TO_EVICT.to_string(),
        ),
        (ANNOTATION_USER.to_string(), spec.user.clone()),
        (ANNOTATION_RUNTIME.to_string(), rt.name.clone()),
    ]));
    let pod = Pod {
        metadata: pod_meta,
        spec: Some(PodSpec {
            restart_policy: Some(conv::RESTART_POLICY.to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(conv::RUN_AS_USER),
                run_as_group: Some(conv::RUN_AS_GROUP),
                fs_group: Some(conv::FS_GROUP),
                fs_group_change_policy: Some(conv::FS_GROUP_CHANGE_POLICY.to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: conv::SECCOMP_PROFILE.to_string(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            // One node for all of a user's pods: their ReadWriteOnce home can be attached
            // to one node only.
            affinity: Some(Affinity {
                pod_affinity: Some(PodAffinity {
                    required_during_scheduling_ignored_during_execution: Some(vec![
                        PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(user_labels(&spec.site_id, &spec.user)),
                                match_expressions: None,
                            }),
                            topology_key: "kubernetes.io/hostname".to_string(),
                            ..Default::default()
                        },
                    ]),
                    preferred_during_scheduling_ignored_during_execution: None,
                }),
                ..Default::default()
            }),
            runtime_class_name: rt.docker_runtime.clone(),
            node_selector: (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone()),
            tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
            image_pull_secrets: (!cfg.image_pull_secrets.is_empty()).then(|| {
                cfg.image_pull_secrets
                    .iter()
                    .map(|s| LocalObjectReference { name: s.clone() })
                    .collect()
            }),
            containers: vec![container],
            volumes: Some(volumes),
            termination_grace_period_seconds: Some(crate::sessions::STOP_GRACE.as_secs() as i64),
            ..Default::default()
        }),
        status: None,
    };

    let service = cfg.service.then(|| {
        let mut m = meta(&name, namespace, labels.clone());
        m.owner_references = owners;
        Service {
            metadata: m,
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_string()),
                selector: Some(BTreeMap::from([
                    (LABEL_SITE.to_string(), label_value(&spec.site_id)),
                    (LABEL_SESSION.to_string(), label_value(&spec.session_id)),
                ])),
                ports: Some(vec![ServicePort {
                    name: Some(PORT_NAME.to_string()),
                    port: i32::from(PORT),
                    target_port: Some(IntOrString::String(PORT_NAME.to_string())),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    });
    SessionObjects {
        secret,
        pod,
        service,
    }
}

/// What a pod's status says of its session; `address_of` gives where the site reaches a
/// running pod (its IP, or its Service's name).
pub fn observe_pod(pod: &Pod, address_of: impl Fn(&Pod) -> Option<String>) -> Observed {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let containers = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    // A container that ended: out of memory, or its exit.
    for c in containers {
        let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
            continue;
        };
        let reason = t.reason.as_deref().unwrap_or_default();
        let mut message = format!("the container exited with code {}", t.exit_code);
        if !reason.is_empty() {
            message.push_str(&format!(": {reason}"));
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(&format!(" ({m})"));
        }
        return Observed::Ended(Ended {
            oom: reason == "OOMKilled",
            message,
        });
    }
    let pod_reason = status.and_then(|s| s.reason.as_deref()).unwrap_or_default();
    let pod_message = status
        .and_then(|s| s.message.as_deref())
        .unwrap_or_default();
    if phase == "Failed" || phase == "Succeeded" {
        let what = if pod_reason == "Evicted" {
            "the pod was evicted".to_string()
        } else if pod_reason.is_empty() {
            format!("the pod {}", phase.to_lowercase())
        } else {
            format!("the pod {}: {pod_reason}", phase.to_lowercase())
        };
        return Observed::Ended(Ended {
            oom: false,
            message: join_message(&what, pod_message),
        });
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Observed::Ended(Ended {
            oom: false,
            message: "the pod was deleted".to_string(),
        });
    }
    // Pulls that failed and a scheduler that cannot place it: ended now, with its reason.
    for c in containers {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or_default();
        if matches!(
            reason,
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
        ) {
            return Observed::Ended(Ended {
                oom: false,
                message: join_message(
                    &format!("the image could not be pulled ({reason})"),
                    w.message.as_deref().unwrap_or_default(),
                ),
            });
        }
    }
    let conditions = status
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(c) = conditions.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        return Observed::Ended(Ended {
            oom: false,
            message: join_message(
                "no node can run the session (Unschedulable)",
                c.message.as_deref().unwrap_or_default(),
            ),
        });
    }
    if phase == "Running" {
        return Observed::Running {
            address: address_of(pod),
        };
    }
    let waiting = containers
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .next();
    let scheduled = conditions
        .iter()
        .any(|c| c.type_ == "PodScheduled" && c.status == "True");
    let reason = match (waiting, scheduled) {
        (Some(w), _) => format!("pod {w}"),
        (None, true) => "pod scheduled, starting".to_string(),
        (None, false) => "pod waiting to be scheduled".to_string(),
    };
    Observed::Pending { reason }
}

/// Whether a container of the pod ran and exited (it has output to show).
fn container_exited(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

/// A pod's metrics as `metrics.k8s.io/v1beta1` serves them (metrics-server): what each
/// container uses, as quantities.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PodMetrics {
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ContainerMetrics {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

/// A session's usage from its pod's metrics: the containers' CPU (cores) and memory (the
/// working set, bytes) summed; the limit is the runtime's, not the metrics'.
pub fn pod_usage(m: &PodMetrics) -> Usage {
    let sum = |key: &str| -> Option<f64> {
        m.containers
            .iter()
            .map(|c| c.usage.get(key).and_then(|q| parse_quantity(&q.0)))
            .sum()
    };
    Usage {
        cpu: sum("cpu"),
        memory: sum("memory").unwrap_or(0.0) as i64,
        memory_limit: None,
    }
}

fn join_message(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

/// What a watch event of the site's pods tells the site, once per pod: `told` holds the pods
/// whose end was told (kept until the pod is deleted), `listing` the pods seen while the
/// watch lists them again after a restart.
#[derive(Default)]
pub struct WatchState {
    told: HashSet<String>,
    listing: Option<HashSet<String>>,
}

impl WatchState {
    pub fn on_event(&mut self, ev: watcher::Event<Pod>) -> Option<BackendEvent> {
        match ev {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                None
            }
            watcher::Event::InitDone => {
                // Pods deleted while the watch was down are no longer remembered.
                if let Some(seen) = self.listing.take() {
                    self.told.retain(|n| seen.contains(n));
                }
                None
            }
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(name)) = (&mut self.listing, pod.metadata.name.clone()) {
                    seen.insert(name);
                }
                self.applied(&pod)
            }
            watcher::Event::Apply(pod) => self.applied(&pod),
            watcher::Event::Delete(pod) => {
                let name = pod.metadata.name.clone()?;
                let session = session_of(&pod)?;
                if self.told.remove(&name) {
                    return None;
                }
                Some(BackendEvent::Ended {
                    session,
                    handle: Handle(name),
                })
            }
        }
    }

    fn applied(&mut self, pod: &Pod) -> Option<BackendEvent> {
        let Observed::Ended(ended) = observe_pod(pod, |_| None) else {
            return None;
        };
        let name = pod.metadata.name.clone()?;
        let session = session_of(pod)?;
        if !self.told.insert(name.clone()) {
            return None;
        }
        let handle = Handle(name);
        Some(if ended.oom {
            BackendEvent::Oom { session, handle }
        } else {
            BackendEvent::Ended { session, handle }
        })
    }

    /// How many pods' ends are remembered (for the benchmark).
    pub fn remembered(&self) -> usize {
        self.told.len()
    }
}

fn session_of(pod: &Pod) -> Option<String> {
    pod.metadata
        .labels
        .as_ref()?
        .get(LABEL_SESSION)
        .filter(|s| !s.is_empty())
        .cloned()
}

/// The site's one watch: the pods with the site's labels, through [`kube::runtime::watcher`]
/// (it lists, watches, and lists again after a break, backing off), as [`BackendEvent`]s.
pub fn watch_pods(pods: Api<Pod>, site_id: &str) -> BoxStream<'static, BackendEvent> {
    let cfg = watcher::Config::default().labels(&site_selector(site_id));
    let events = kube::runtime::WatchStreamExt::default_backoff(watcher(pods, cfg));
    let mut state = WatchState::default();
    Box::pin(events.filter_map(move |ev| {
        let out = match ev {
            Ok(ev) => state.on_event(ev),
            Err(e) => {
                tracing::warn!("kubernetes watch: {e}");
                None
            }
        };
        futures_util::future::ready(out)
    }))
}

pub struct KubernetesBackend {
    client: kube::Client,
    namespace: String,
    cfg: KubernetesConfig,
    pushed: super::Pushed,
    /// The most GPUs one ready, schedulable node advertises (0: none has any), once the
    /// nodes were looked at.
    gpu_nodes: Mutex<Option<u64>>,
}

impl KubernetesBackend {
    /// A backend on `client` (any transport: the tests script one), with no look at the
    /// cluster yet.
    pub fn new(client: kube::Client, namespace: String, cfg: KubernetesConfig) -> Self {
        KubernetesBackend {
            client,
            namespace,
            cfg,
            pushed: Default::default(),
            gpu_nodes: Mutex::new(None),
        }
    }

    /// Connect as the configuration says (kubeconfig, context, namespace), check the
    /// settings, apply the site's NetworkPolicy and look at the nodes.
    pub async fn connect(cfg: &KubernetesConfig, site_id: &str) -> Result<KubernetesBackend> {
        if cfg.registry.is_none() {
            return Err(SiteError::invalid(
                "registry",
                "the kubernetes backend needs the site's registry (--registry HOST:PORT): \
                 nodes pull runtime images from it",
            ));
        }
        let cpu_request = cfg.cpu_request.unwrap_or(DEFAULT_CPU_REQUEST);
        if !(0.0..=1.0).contains(&cpu_request) {
            return Err(SiteError::invalid(
                "cpu-request",
                format!("{cpu_request} is not a fraction between 0 and 1"),
            ));
        }
        if let Some(size) = &cfg.home_size {
            if parse_quantity(size).is_none() {
                return Err(SiteError::invalid(
                    "home-size",
                    format!("{size:?} is not a Kubernetes quantity (10Gi, 500Mi)"),
                ));
            }
        }
        let opts = kube::config::KubeConfigOptions {
            context: cfg.context.clone(),
            ..Default::default()
        };
        let config = match &cfg.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    KubernetesError::Config(format!("reading {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kc, &opts)
                    .await
                    .map_err(|e| KubernetesError::Config(format!("{}: {e}", path.display())))?
            }
            None if cfg.context.is_some() => kube::Config::from_kubeconfig(&opts)
                .await
                .map_err(|e| KubernetesError::Config(e.to_string()))?,
            None => kube::Config::infer().await.map_err(|e| {
                KubernetesError::Config(format!(
                    "no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and not in a \
                     cluster: {e}"
                ))
            })?,
        };
        let namespace = cfg
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| KubernetesError::Config(format!("making the client: {e}")))?;
        let backend = KubernetesBackend::new(client, namespace, cfg.clone());
        backend.prepare(site_id).await?;
        Ok(backend)
    }

    /// Apply the site's NetworkPolicy; look at the nodes (GPUs).
    pub async fn prepare(&self, site_id: &str) -> Result<()> {
        let np = network_policy(site_id, &self.cfg, &self.namespace);
        let name = network_policy_name(site_id);
        self.apply::<NetworkPolicy>(&name, &np, "applying the site's NetworkPolicy")
            .await?;
        if let Err(e) = self.capacity().await {
            // Listing nodes needs a ClusterRole: without one, capacity is not checked.
            tracing::warn!(
                "kubernetes: cannot look at the nodes ({e}); limits are not checked against them"
            );
        }
        Ok(())
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn apply<K>(&self, name: &str, obj: &K, what: &str) -> Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        self.api::<K>()
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(|e| KubernetesError::of(what, e).into())
    }

    /// Delete `name` (gone already is fine).
    async fn delete<K>(&self, name: &str, dp: &DeleteParams, what: &str) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self.api::<K>().delete(name, dp).await {
            Ok(_) => Ok(()),
            Err(e) if code_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(KubernetesError::of(what, e).into()),
        }
    }

    /// The last lines of the session container's output ([`super::last_output`]); nothing
    /// when the API server does not give them.
    async fn container_output(&self, pod: &str) -> String {
        let params = LogParams {
            container: Some(CONTAINER.to_string()),
            tail_lines: Some(super::LAST_LINES as i64),
            limit_bytes: Some(64 * 1024),
            ..Default::default()
        };
        match self.api::<Pod>().logs(pod, &params).await {
            Ok(out) => super::last_output(&out),
            Err(e) => {
                tracing::warn!("kubernetes: the logs of {pod}: {e}");
                String::new()
            }
        }
    }

    fn address(&self, pod: &Pod) -> Option<String> {
        if self.cfg.service {
            let name = pod.metadata.name.as_deref()?;
            return Some(format!("{name}.{}.svc:{PORT}", self.namespace));
        }
        let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
        if ip.contains(':') {
            Some(format!("[{ip}]:{PORT}"))
        } else {
            Some(format!("{ip}:{PORT}"))
        }
    }

    /// Create the pod; a pod left under its name by an earlier life is deleted (at once)
    /// and, once gone, made again.
    async fn create_pod(&self, pod: &Pod, name: &str) -> Result<Pod> {
        let pods = self.api::<Pod>();
        match pods.create(&PostParams::default(), pod).await {
            Ok(p) => return Ok(p),
            Err(e) if code_of(&e) == Some(409) => {
                tracing::info!("kubernetes: replacing the stale pod {name}");
            }
            Err(e) => return Err(KubernetesError::of("creating the pod", e).into()),
        }
        let old_uid = match pods.get_opt(name).await {
            Ok(p) => p.and_then(|p| p.metadata.uid),
            Err(e) => return Err(KubernetesError::of("looking at the stale pod", e).into()),
        };
        self.delete::<Pod>(
            name,
            &DeleteParams::default().grace_period(0),
            "deleting the stale pod",
        )
        .await?;
        let deadline = tokio::time::Instant::now() + STALE_POD_WAIT;
        loop {
            match pods.get_opt(name).await {
                Ok(None) => break,
                Ok(Some(p)) if p.metadata.uid != old_uid => break,
                Ok(Some(_)) => {}
                Err(e) => {
                    return Err(KubernetesError::of("waiting for the stale pod to go", e).into())
                }
            }
            if tokio::time::Instant::now() > deadline {
                return Err(
                    KubernetesError::StalePod(name.to_string(), STALE_POD_WAIT.as_secs()).into(),
                );
            }
            tokio::time::sleep(STALE_POD_POLL).await;
        }
        pods.create(&PostParams::default(), pod)
            .await
            .map_err(|e| KubernetesError::of("creating the pod (after the stale one)", e).into())
    }
}

#[async_trait::async_trait]
impl SessionBackend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    fn refuse(&self, limits: &Limits) -> Result<()> {
        if limits.swap_given && limits.memory_swap > limits.memory {
            return Err(SiteError::conflict(
                Some("maxSwapMemory"),
                "the kubernetes backend cannot give a session swap: a pod has no swap setting \
                 (swap is the node's policy, if any); leave maxSwapMemory out or equal to \
                 maxMemory, or use the docker backend",
            ));
        }
        let most = *self.gpu_nodes.lock().unwrap_or_else(|p| p.into_inner());
        match (limits.session_gpus(self.cfg.gpus), most) {
            (Some(n), Some(0)) if n > 0 => Err(SiteError::conflict(
                Some("dockerRuntime"),
                format!(
                    "no schedulable node of the cluster advertises {}: a GPU runtime's \
                     session could never be placed",
                    conv::GPU_RESOURCE
                ),
            )),
            (Some(n), Some(most)) if u64::from(n) > most => Err(SiteError::conflict(
                Some("gpus"),
                format!(
                    "a session of this runtime asks for {n} {} and no schedulable node of the \
                     cluster has that many (the most on one node: {most}); give gpus at most \
                     {most}",
                    conv::GPU_RESOURCE
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The largest ready, schedulable node's allocatable CPU and memory.
    async fn capacity(&self) -> Result<Capacity> {
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| KubernetesError::of("listing the nodes", e))?;
        let mut cap = Capacity {
            cpus: 0.0,
            memory: 0,
        };
        let mut gpus = 0u64;
        for node in nodes {
            let unschedulable = node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false);
            let Some(status) = node.status else { continue };
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || unschedulable {
                continue;
            }
            let alloc = status.allocatable.unwrap_or_default();
            let get = |k: &str| alloc.get(k).and_then(|q| parse_quantity(&q.0));
            cap.cpus = cap.cpus.max(get("cpu").unwrap_or(0.0));
            cap.memory = cap.memory.max(get("memory").unwrap_or(0.0) as i64);
            gpus = gpus.max(get(conv::GPU_RESOURCE).unwrap_or(0.0).max(0.0) as u64);
        }
        *self.gpu_nodes.lock().unwrap_or_else(|p| p.into_inner()) = Some(gpus);
        Ok(cap)
    }

    async fn ensure_image(
        &self,
        store: Option<&nbrt_oci::Store>,
        rt: &Runtime,
        progress: &ImageProgress,
    ) -> Result<ImageRef> {
        let Some(registry) = &self.cfg.registry else {
            return Err(SiteError::invalid(
                "registry",
                "the kubernetes backend needs the site's registry (--registry HOST:PORT)",
            ));
        };
        super::push_to_registry(
            BackendKind::Kubernetes,
            &self.pushed,
            registry,
            self.cfg.registry_insecure,
            store,
            rt,
            progress,
        )
        .await
    }

    /// The user's claim: made if missing, else kept as it is (a 409 is the claim an earlier
    /// session made).
    async fn ensure_home(&self, site_id: &str, user: &str) -> Result<HomeRef> {
        let claim = home_claim(site_id, user, &self.cfg, &self.namespace);
        let name = home_claim_name(site_id, user);
        match self
            .api::<PersistentVolumeClaim>()
            .create(&PostParams::default(), &claim)
            .await
        {
            Ok(_) => tracing::info!("kubernetes: made {user}'s home claim {name}"),
            Err(e) if code_of(&e) == Some(409) => {}
            Err(e) => {
                return Err(KubernetesError::of("creating the home claim", e).into());
            }
        }
        Ok(HomeRef {
            volume: name,
            node: None,
        })
    }

    async fn launch(&self, spec: &SessionSpec) -> Result<Handle> {
        let objs = session_objects(spec, &self.cfg, &self.namespace, None);
        let name = object_name(&spec.name);
        let secret = secret_name(&name);
        // The Secret first (without an owner: an owner left from an earlier life would take
        // it with the stale pod), then the pod, then the Secret owned by the new pod.
        self.apply(&secret, &objs.secret, "applying the session's Secret")
            .await?;
        let pod = self.create_pod(&objs.pod, &name).await?;
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return Err(SiteError::Engine(format!(
                "the API server gave no uid for the pod {name}"
            )));
        };
        let owner = owned_by(&name, uid);
        let owned = session_objects(spec, &self.cfg, &self.namespace, Some(&owner));
        self.apply(&secret, &owned.secret, "owning the session's Secret")
            .await?;
        if let Some(service) = &owned.service {
            self.apply(&name, service, "applying the session's Service")
                .await?;
        }
        Ok(Handle(name))
    }

    /// `handle` is the pod's name, or the session's name before it became one (a session
    /// whose launch never finished): [`object_name`] of either is the pod's.
    /// A container that exited (not out of memory) adds its last output to the message.
    async fn observe(&self, handle: &Handle) -> Result<Observed> {
        let name = object_name(&handle.0);
        match self.api::<Pod>().get_opt(&name).await {
            Ok(None) => Ok(Observed::Gone),
            Ok(Some(pod)) => {
                let mut observed = observe_pod(&pod, |p| self.address(p));
                if let Observed::Ended(ended) = &mut observed {
                    if !ended.oom && container_exited(&pod) {
                        ended.message.push_str(&self.container_output(&name).await);
                    }
                }
                Ok(observed)
            }
            Err(e) => Err(KubernetesError::of("looking at the pod", e).into()),
        }
    }

    /// From the pod's metrics (`metrics.k8s.io`, served by metrics-server), when the
    /// cluster serves them.
    async fn usage(&self, handle: &Handle) -> Result<UsageReport> {
        let name = object_name(&handle.0);
        let path = format!(
            "/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods/{name}",
            self.namespace
        );
        let req = axum::http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| SiteError::Internal(format!("a metrics request for {name}: {e}")))?;
        match self.client.request::<PodMetrics>(req).await {
            Ok(m) => Ok(UsageReport::Now(pod_usage(&m))),
            Err(e) => match code_of(&e) {
                Some(404 | 503) => Ok(UsageReport::NotAvailable(
                    "the cluster has no metrics of the pod (metrics.k8s.io is served by \
                     metrics-server; a new pod has none for its first minute)"
                        .into(),
                )),
                Some(403) => Ok(UsageReport::NotAvailable(
                    "the site may not read metrics.k8s.io pods in its namespace (RBAC)".into(),
                )),
                _ => Err(KubernetesError::of("reading the pod's metrics", e).into()),
            },
        }
    }

    fn watch(&self, site_id: &str) -> BoxStream<'static, BackendEvent> {
        watch_pods(self.api::<Pod>(), site_id)
    }

    /// Delete the pod with `grace`; its Secret and Service (owned by it) go too, deleted
    /// here as well in case the owner was never set.
    async fn stop(&self, handle: &Handle, grace: Duration) -> Result<()> {
        let name = object_name(&handle.0);
        let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX);
        let dp = DeleteParams::default().grace_period(secs);
        self.delete::<Pod>(&name, &dp, "deleting the pod").await?;
        let dp = DeleteParams::default();
        self.delete::<Secret>(&secret_name(&name), &dp, "deleting the session's Secret")
            .await?;
        if self.cfg.service {
            self.delete::<Service>(&name, &dp, "deleting the session's Service")
                .await?;
        }
        Ok(())
    }

    async fn kill(&self, handle: &Handle) -> Result<()> {
        self.delete::<Pod>(
            &object_name(&handle.0),
            &DeleteParams::default().grace_period(0),
            "deleting the pod",
        )
        .await
    }

    async fn list_owned(&self, site_id: &str) -> Result<Vec<Owned>> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(&site_selector(site_id)))
            .await
            .map_err(|e| KubernetesError::of("listing the site's pods", e))?;
        Ok(pods
            .into_iter()
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                Some(Owned {
                    handle: Handle(name),
                    session: session_of(&p),
                    status: p
                        .status
                        .and_then(|s| s.phase)
                        .unwrap_or_else(|| "Pending".to_string()),
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_quantity(500_000_000).0, "500m");
        assert_eq!(cpu_quantity(2_000_000_000).0, "2");
        assert_eq!(cpu_quantity(1).0, "1m");
        assert_eq!(bytes_quantity(1 << 30).0, "1Gi");
        assert_eq!(bytes_quantity(128 << 20).0, "128Mi");
        assert_eq!(bytes_quantity(1000).0, "1000");
        assert_eq!(parse_quantity("3900m"), Some(3.9));
        assert_eq!(parse_quantity("16Gi"), Some(17179869184.0));
        assert_eq!(parse_quantity("16432124Ki"), Some(16432124.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("1GB"), None);
    }

    #[test]
    fn names() {
        assert_eq!(object_name("nbrt-abc-alice-0123"), "nbrt-abc-alice-0123");
        let n = object_name("nbrt-abc-Ann Ö-0123");
        assert!(n.starts_with("nbrt-abc-ann-0123-"), "{n}");
        assert_ne!(n, object_name("nbrt-abc-ann-0123"));
        assert_eq!(label_value("alice"), "alice");
        assert!(label_value("Ann Ö").starts_with("Ann-"));
    }
}
