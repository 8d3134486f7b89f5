//! The Kubernetes backend (issue 16). No Kubernetes API server can be had on the machines
//! these tests were written on, so every test but the last group runs without a cluster and
//! says so in its name:
//!
//! - `kubernetes_without_a_cluster_golden_objects_*`: the Secret, PVC, Pod, Service and
//!   NetworkPolicy of a fixture session (0.5 CPU, 1 GiB, 128 MiB shm, 1 GPU) against the
//!   golden files in `tests/golden/kubernetes/`, and those files against the upstream
//!   schemas (`kubernetes-validate --strict`, from scripts/setup) of the oldest and newest
//!   Kubernetes it carries. `NBRT_BLESS=1` rewrites the golden files.
//! - `kubernetes_without_a_cluster_names_*`: property tests — any user or runtime name gives
//!   valid object names, label values and quantities.
//! - `kubernetes_without_a_cluster_kubespawner_*`: KubeSpawner's own `make_pod` (PyPI
//!   `jupyterhub-kubespawner`, run offline) describes the same session; the fields where the
//!   two should agree are compared one by one, the ones that differ on purpose are listed.
//! - `kubernetes_without_a_cluster_nbrt_reacts_to_*`: nbrt's reactions to a scripted API
//!   server (a mock transport under kube's `Client`). They test what nbrt does with the
//!   answers, not what Kubernetes answers.
//! - `kubernetes_real_cluster_*`: only with `NBRT_KUBECONFIG` (skipped with a printed reason
//!   otherwise). Written, compiled, never run here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use futures_util::StreamExt;
use nbrt_site::backend::kubernetes::{
    self as k8s, bytes_quantity, cpu_quantity, home_claim, label_value, network_policy,
    object_name, observe_pod, owned_by, parse_quantity, session_objects, KubernetesBackend,
};
use nbrt_site::backend::{
    BackendEvent, Ended, Handle, ImageRef, KubernetesConfig, Limits, Observed, SessionBackend,
    SessionSpec, Usage, UsageReport,
};
use nbrt_site::sessions::{state_of, SessionState};
use serde_json::{json, Value};

#[path = "common/kubernetes_fixture.rs"]
mod fixture;
use fixture::{fixture_config, fixture_runtime, fixture_spec, NAMESPACE, SITE};

/// The fixture session's five objects, as JSON, with `apiVersion` and `kind`.
fn fixture_objects() -> Vec<(&'static str, Value)> {
    let spec = fixture_spec("alice", fixture_runtime());
    let cfg = fixture_config();
    let owner = owned_by(
        &object_name(&spec.name),
        "00000000-0000-4000-8000-000000000001",
    );
    let objs = session_objects(&spec, &cfg, NAMESPACE, Some(&owner));
    vec![
        ("secret", typed(&objs.secret)),
        ("pvc", typed(&home_claim(SITE, "alice", &cfg, NAMESPACE))),
        ("pod", typed(&objs.pod)),
        ("service", typed(objs.service.as_ref().expect("a Service"))),
        (
            "networkpolicy",
            typed(&network_policy(SITE, &cfg, NAMESPACE)),
        ),
    ]
}

/// An object as JSON with its `apiVersion` and `kind` (k8s-openapi writes both).
fn typed<K: serde::Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).expect("serializable")
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kubernetes")
}

fn tools_python() -> Option<PathBuf> {
    let p = std::env::var_os("NBRT_K8S_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nbrt-k8s"))
        .join("bin/python");
    p.exists().then_some(p)
}

fn need_tools() -> PathBuf {
    tools_python().unwrap_or_else(|| {
        panic!(
            "this test needs kubernetes-validate and jupyterhub-kubespawner in /opt/nbrt-k8s \
             (or NBRT_K8S_VENV): run scripts/setup, which installs both from PyPI"
        )
    })
}

#[test]
fn kubernetes_without_a_cluster_golden_objects_match_the_files() {
    let bless = std::env::var_os("NBRT_BLESS").is_some();
    std::fs::create_dir_all(golden_dir()).unwrap();
    for (name, obj) in fixture_objects() {
        let path = golden_dir().join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(&obj).unwrap() + "\n";
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (NBRT_BLESS=1 writes it)", path.display()));
        assert_eq!(
            text,
            golden,
            "{name} differs from {} (NBRT_BLESS=1 rewrites it after a deliberate change)",
            path.display()
        );
    }
}

#[test]
fn kubernetes_without_a_cluster_golden_objects_pass_strict_schemas_oldest_and_newest() {
    let python = need_tools();
    // The Kubernetes versions kubernetes-validate carries.
    let out = Command::new(&python)
        .args([
            "-c",
            "import kubernetes_validate.utils as u; print('\\n'.join(u.all_versions()))",
        ])
        .output()
        .expect("running the venv's python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut versions: Vec<(u32, u32, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|v| {
            let mut it = v.trim().split('.');
            let major = it.next()?.parse().ok()?;
            let minor = it.next()?.parse().ok()?;
            Some((major, minor, v.trim().to_string()))
        })
        .collect();
    versions.sort();
    assert!(
        versions.len() >= 2,
        "kubernetes-validate lists {versions:?}"
    );
    let (oldest, newest) = (&versions[0].2, &versions[versions.len() - 1].2);
    let validate = python.with_file_name("kubernetes-validate");
    for (name, _) in fixture_objects() {
        let path = golden_dir().join(format!("{name}.json"));
        for version in [oldest, newest] {
            let out = Command::new(&validate)
                .args(["--strict", "-k", version])
                .arg(&path)
                .output()
                .expect("running kubernetes-validate");
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && !text.contains("ERROR"),
                "{name} fails strict validation for Kubernetes {version}:\n{text}"
            );
            println!("{name}: valid (strict) for Kubernetes {version}");
        }
    }
}

#[test]
fn kubernetes_without_a_cluster_golden_objects_carry_the_conventions() {
    let objs: BTreeMap<&str, Value> = fixture_objects().into_iter().collect();
    let pod = &objs["pod"];
    let spec = &pod["spec"];
    let c = &spec["containers"][0];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
    assert_eq!(spec["runtimeClassName"], "nvidia");
    assert_eq!(
        spec["securityContext"],
        json!({"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
               "fsGroupChangePolicy": "OnRootMismatch",
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"})
    );
    assert_eq!(c["resources"]["requests"]["memory"], "1Gi");
    let dshm = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "dshm")
        .unwrap();
    assert_eq!(
        dshm["emptyDir"],
        json!({"medium": "Memory", "sizeLimit": "128Mi"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"],
        format!("/user/alice/{}/api", fixture_runtime().id)
    );
    assert!(c["image"].as_str().unwrap().contains("@sha256:"));
    // The token is not in the pod: only a reference to the Secret.
    assert!(!pod.to_string().contains("fixture-token-not-a-secret"));
    assert_eq!(
        objs["secret"]["stringData"]["token"],
        "fixture-token-not-a-secret"
    );
    // The home claim is owned by nothing; the Secret and Service by the pod.
    assert!(objs["pvc"]["metadata"].get("ownerReferences").is_none());
    assert_eq!(
        objs["secret"]["metadata"]["ownerReferences"][0]["kind"],
        "Pod"
    );
    assert_eq!(
        objs["service"]["metadata"]["ownerReferences"][0]["kind"],
        "Pod"
    );
    // An advanced runtime may escalate (sudo); others may not.
    let mut rt = fixture_runtime();
    rt.requires_advanced_privileges = true;
    let adv = session_objects(
        &fixture_spec("alice", rt),
        &fixture_config(),
        NAMESPACE,
        None,
    );
    let v = typed(&adv.pod);
    assert_eq!(
        v["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
        true
    );
}

/// A GPU runtime's pod asks for the runtime's GPU count (limit and request), else the site's
/// `gpus` setting, else 1; a count of 0 asks for none and hides the node's GPUs. No GPU and
/// no cluster: the pod spec only.
#[test]
fn kubernetes_without_a_cluster_pods_ask_for_the_runtimes_gpu_count() {
    let pod = |gpus: Option<u32>, site: Option<u32>| {
        let mut rt = fixture_runtime();
        rt.gpus = gpus;
        let cfg = KubernetesConfig {
            gpus: site,
            ..fixture_config()
        };
        typed(&session_objects(&fixture_spec("alice", rt), &cfg, NAMESPACE, None).pod)
    };
    let resources = |pod: &Value| pod["spec"]["containers"][0]["resources"].clone();
    let gpu_env = |pod: &Value| {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "NVIDIA_VISIBLE_DEVICES")
            .cloned()
    };
    for (gpus, site, want) in [
        (Some(2), None, "2"),
        (Some(2), Some(4), "2"),
        (None, Some(4), "4"),
        (None, None, "1"),
    ] {
        let p = pod(gpus, site);
        let r = resources(&p);
        assert_eq!(
            r["limits"]["nvidia.com/gpu"], want,
            "{gpus:?} {site:?}: {r}"
        );
        assert_eq!(
            r["requests"]["nvidia.com/gpu"], want,
            "{gpus:?} {site:?}: {r}"
        );
        assert_eq!(p["spec"]["runtimeClassName"], "nvidia");
        assert_eq!(gpu_env(&p), None);
    }
    let none = pod(Some(0), Some(4));
    let r = resources(&none);
    assert!(r["limits"].get("nvidia.com/gpu").is_none(), "{r}");
    assert!(r["requests"].get("nvidia.com/gpu").is_none(), "{r}");
    assert_eq!(
        gpu_env(&none),
        Some(json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}))
    );
    // A runtime that is no GPU runtime asks for none, whatever the site's setting.
    let mut rt = fixture_runtime();
    (rt.docker_runtime, rt.use_gpu) = (None, false);
    let cfg = KubernetesConfig {
        gpus: Some(4),
        ..fixture_config()
    };
    let cpu = typed(&session_objects(&fixture_spec("alice", rt), &cfg, NAMESPACE, None).pod);
    assert!(resources(&cpu)["limits"].get("nvidia.com/gpu").is_none());
    assert!(cpu["spec"].get("runtimeClassName").is_none());
}

// ---- names, labels and quantities -------------------------------------------------------

/// DNS-1123 label: what pods, Services and claims may be named (a Service, DNS-1035, also
/// starts with a letter: every name here starts with `nbrt-`).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// The API server's quantity grammar: a signed decimal number, then a binary-SI suffix, a
/// decimal-SI suffix or a decimal exponent.
fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(end);
    let digits_ok =
        !num.is_empty() && num.matches('.').count() <= 1 && num.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    digits_ok && suffix_ok
}

mod names {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn kubernetes_without_a_cluster_names_are_valid_for_any_user_and_runtime(
            user in "\\PC{0,80}",
            runtime_name in "\\PC{0,120}",
            runtime_id in "[ -~]{1,60}",
            session_id in "[ -~]{0,70}",
        ) {
            let mut rt = fixture_runtime();
            rt.name = runtime_name;
            rt.id = runtime_id;
            let mut spec = fixture_spec(&user, rt);
            spec.session_id = session_id;
            let cfg = fixture_config();
            let objs = session_objects(&spec, &cfg, NAMESPACE, None);
            let pod_name = objs.pod.metadata.name.clone().unwrap();
            prop_assert!(is_dns_label(&pod_name), "pod {pod_name:?}");
            let svc = objs.service.as_ref().unwrap().metadata.name.clone().unwrap();
            prop_assert!(is_dns_label(&svc) && svc.as_bytes()[0].is_ascii_lowercase(), "service {svc:?}");
            let secret = objs.secret.metadata.name.clone().unwrap();
            // A DNS-1123 subdomain would do for a Secret; nbrt keeps it a label too.
            prop_assert!(is_dns_label(&secret), "secret {secret:?}");
            let claim = home_claim(SITE, &user, &cfg, NAMESPACE);
            let claim_name = claim.metadata.name.clone().unwrap();
            prop_assert!(is_dns_label(&claim_name), "claim {claim_name:?}");
            prop_assert_eq!(&claim_name, &spec.home.volume);
            for labels in [&objs.pod.metadata.labels, &objs.secret.metadata.labels, &claim.metadata.labels] {
                for (k, v) in labels.as_ref().unwrap() {
                    prop_assert!(is_label_value(v), "label {k}={v:?}");
                }
            }
            // The pod's affinity selects the user's label as the pod carries it.
            let pod = typed(&objs.pod);
            let sel = &pod["spec"]["affinity"]["podAffinity"]
                ["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]["matchLabels"];
            prop_assert_eq!(&sel["nbrt.io/user"], &pod["metadata"]["labels"]["nbrt.io/user"]);
        }

        #[test]
        fn kubernetes_without_a_cluster_names_of_two_users_stay_apart(a in "\\PC{1,40}", b in "\\PC{1,40}") {
            prop_assume!(a != b);
            prop_assert_ne!(label_value(&a), label_value(&b));
            prop_assert_ne!(k8s::home_claim_name(SITE, &a), k8s::home_claim_name(SITE, &b));
        }

        #[test]
        fn kubernetes_without_a_cluster_quantities_follow_the_api_grammar(
            cpu in 1i64..=256_000_000_000i64,
            bytes in 0i64..=(1i64 << 44),
        ) {
            let c = cpu_quantity(cpu).0;
            prop_assert!(is_quantity(&c), "cpu {c:?}");
            let parsed = parse_quantity(&c).unwrap();
            prop_assert!((parsed * 1e9 - cpu as f64).abs() <= 0.5e6 + 1.0, "{cpu} → {c}");
            let m = bytes_quantity(bytes).0;
            prop_assert!(is_quantity(&m), "memory {m:?}");
            prop_assert_eq!(parse_quantity(&m).unwrap() as i64, bytes);
        }
    }
}

// ---- KubeSpawner's make_pod ---------------------------------------------------------------

/// KubeSpawner's own `make_pod` given the fixture session: the same name, image, port,
/// user, limits, guarantees, GPUs, token setting, environment and shm volume (the one z2jh
/// tells users to add).
const KUBESPAWNER_POD: &str = r#"
import asyncio, json, sys
from kubespawner.objects import make_pod
from kubernetes_asyncio.client import ApiClient

a = json.load(sys.stdin)
pod = make_pod(
    name=a["name"], cmd=["start-notebook.py"], port=8888, image=a["image"],
    image_pull_policy="IfNotPresent", image_pull_secrets=a["pullSecrets"],
    node_selector=a["nodeSelector"], tolerations=a["tolerations"],
    uid=1000, gid=100, fs_gid=100,
    allow_privilege_escalation=False,
    cpu_limit=a["cpuLimit"], cpu_guarantee=a["cpuGuarantee"],
    mem_limit=a["memLimit"], mem_guarantee=a["memGuarantee"],
    extra_resource_limits={"nvidia.com/gpu": "1"},
    extra_resource_guarantees={"nvidia.com/gpu": "1"},
    automount_service_account_token=False,
    env=a["env"],
    volumes=[{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": a["shm"]}}],
    volume_mounts=[{"name": "dshm", "mountPath": "/dev/shm"}],
)

async def main():
    async with ApiClient() as c:
        print(json.dumps(c.sanitize_for_serialization(pod)))

asyncio.run(main())
"#;

/// The effective value of a security setting: the container's, else the pod's.
fn effective(pod: &Value, key: &str) -> Value {
    let c = &pod["spec"]["containers"][0]["securityContext"][key];
    if !c.is_null() {
        return c.clone();
    }
    pod["spec"]["securityContext"][key].clone()
}

fn quantity_of(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) => parse_quantity(s).unwrap_or_else(|| panic!("quantity {s:?}")),
        other => panic!("not a quantity: {other}"),
    }
}

#[test]
fn kubernetes_without_a_cluster_kubespawner_make_pod_agrees_where_it_should() {
    let python = need_tools();
    let spec = fixture_spec("alice", fixture_runtime());
    let cfg = fixture_config();
    let ours = typed(&session_objects(&spec, &cfg, NAMESPACE, None).pod);
    let c = &ours["spec"]["containers"][0];
    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    let args = json!({
        "name": ours["metadata"]["name"],
        "image": c["image"],
        "pullSecrets": cfg.image_pull_secrets,
        "nodeSelector": cfg.node_selector,
        "tolerations": cfg.tolerations,
        "cpuLimit": 0.5,
        "cpuGuarantee": 0.125,
        "memLimit": 1i64 << 30,
        "memGuarantee": 1i64 << 30,
        "env": env,
        "shm": "128Mi",
    });
    let mut child = Command::new(&python)
        .args(["-c", KUBESPAWNER_POD])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running KubeSpawner's make_pod");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(args.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tc = &theirs["spec"]["containers"][0];

    // Where the two agree, field by field.
    let mut agreed: Vec<String> = Vec::new();
    let same = |agreed: &mut Vec<String>, what: &str, a: Value, b: Value| {
        assert_eq!(a, b, "{what}: nbrt {a} vs KubeSpawner {b}");
        agreed.push(what.to_string());
    };
    same(
        &mut agreed,
        "metadata.name",
        ours["metadata"]["name"].clone(),
        theirs["metadata"]["name"].clone(),
    );
    same(
        &mut agreed,
        "container name",
        c["name"].clone(),
        tc["name"].clone(),
    );
    same(
        &mut agreed,
        "image",
        c["image"].clone(),
        tc["image"].clone(),
    );
    same(
        &mut agreed,
        "imagePullPolicy",
        c["imagePullPolicy"].clone(),
        tc["imagePullPolicy"].clone(),
    );
    same(
        &mut agreed,
        "port",
        json!([c["ports"][0]["name"], c["ports"][0]["containerPort"]]),
        json!([tc["ports"][0]["name"], tc["ports"][0]["containerPort"]]),
    );
    for key in [
        "runAsUser",
        "runAsGroup",
        "fsGroup",
        "allowPrivilegeEscalation",
    ] {
        same(
            &mut agreed,
            key,
            effective(&ours, key),
            effective(&theirs, key),
        );
    }
    same(
        &mut agreed,
        "automountServiceAccountToken",
        ours["spec"]["automountServiceAccountToken"].clone(),
        theirs["spec"]["automountServiceAccountToken"].clone(),
    );
    for side in ["limits", "requests"] {
        for r in ["cpu", "memory", "nvidia.com/gpu"] {
            let (a, b) = (&c["resources"][side][r], &tc["resources"][side][r]);
            assert_eq!(
                quantity_of(a),
                quantity_of(b),
                "resources.{side}.{r}: nbrt {a} vs KubeSpawner {b}"
            );
            agreed.push(format!("resources.{side}.{r}"));
        }
    }
    let shm = |pod: &Value| {
        let v = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "dshm")
            .cloned()
            .unwrap();
        let m = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "dshm")
            .cloned()
            .unwrap();
        json!([v["emptyDir"], m["mountPath"]])
    };
    same(&mut agreed, "/dev/shm volume", shm(&ours), shm(&theirs));
    same(
        &mut agreed,
        "nodeSelector",
        ours["spec"]["nodeSelector"].clone(),
        theirs["spec"]["nodeSelector"].clone(),
    );
    same(
        &mut agreed,
        "tolerations",
        ours["spec"]["tolerations"].clone(),
        theirs["spec"]["tolerations"].clone(),
    );
    same(
        &mut agreed,
        "imagePullSecrets",
        ours["spec"]["imagePullSecrets"].clone(),
        theirs["spec"]["imagePullSecrets"].clone(),
    );
    let their_env: BTreeMap<String, String> = tc["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.into(), e["value"].as_str()?.into())))
        .collect();
    same(
        &mut agreed,
        "env (plain values)",
        json!(env),
        json!(their_env),
    );

    // Where nbrt differs on purpose (see docs/backends.md).
    let differ = [
        ("restartPolicy", ours["spec"]["restartPolicy"].clone(), theirs["spec"]["restartPolicy"].clone(),
         "Never: an OOM-killed pod must end the session, not restart behind the site (kubespawner #223)"),
        ("enableServiceLinks", ours["spec"]["enableServiceLinks"].clone(), theirs["spec"]["enableServiceLinks"].clone(),
         "false: no other Services' addresses in the notebook's environment"),
        ("seccompProfile", effective(&ours, "seccompProfile"), effective(&theirs, "seccompProfile"),
         "RuntimeDefault: the restricted Pod Security Standard's profile"),
        ("capabilities", effective(&ours, "capabilities"), effective(&theirs, "capabilities"),
         "drop ALL: a notebook server needs none"),
        ("readinessProbe", c["readinessProbe"].clone(), tc["readinessProbe"].clone(),
         "<prefix>/api: the site's own readiness rule, told to Kubernetes too"),
        ("affinity", ours["spec"]["affinity"].clone(), theirs["spec"]["affinity"].clone(),
         "one node per user: the ReadWriteOnce home cannot attach to two"),
        ("runtimeClassName", ours["spec"]["runtimeClassName"].clone(), theirs["spec"]["runtimeClassName"].clone(),
         "the GPU runtime's class, from the runtime's Docker runtime"),
        ("JUPYTER_TOKEN", json!(c["env"].as_array().unwrap().iter().any(|e| e["name"] == "JUPYTER_TOKEN" && !e["valueFrom"].is_null())),
         json!(false), "from a Secret, not in the pod's spec"),
        ("args", c["args"].clone(), tc["args"].clone(),
         "none: the image's entry point (nbrt-init) starts the server"),
    ];
    for (field, a, b, why) in differ {
        assert_ne!(a, b, "{field} was expected to differ: {why}");
        println!("differs on purpose: {field}: nbrt {a} / KubeSpawner {b} — {why}");
    }
    println!("agrees with KubeSpawner 7.1.0 on: {}", agreed.join(", "));
}

// ---- nbrt's reactions to a scripted API ---------------------------------------------------

mod scripted {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    /// One request nbrt is expected to make and the answer the script gives.
    pub struct Step {
        pub method: &'static str,
        /// The request's path and query start with this.
        pub path: String,
        pub status: u16,
        pub body: Value,
        /// Words the request's body must contain.
        pub sends: Option<String>,
        /// A plain-text answer (a log) instead of `body`.
        pub text: Option<String>,
    }

    pub fn step(method: &'static str, path: impl Into<String>, status: u16, body: Value) -> Step {
        Step {
            method,
            path: path.into(),
            status,
            body,
            sends: None,
            text: None,
        }
    }

    pub fn pods_path() -> String {
        format!("/api/v1/namespaces/{NAMESPACE}/pods")
    }

    pub fn status(code: u16, reason: &str, message: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
    }

    /// A kube client whose API server is `steps`, in order; the task returns what was asked.
    pub fn client(steps: Vec<Step>) -> (kube::Client, tokio::task::JoinHandle<Vec<String>>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for s in steps {
                let (req, send) = handle
                    .next_request()
                    .await
                    .unwrap_or_else(|| panic!("nbrt stopped before {} {}", s.method, s.path));
                let line = format!(
                    "{} {}",
                    req.method(),
                    req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                );
                assert!(
                    req.method().as_str() == s.method
                        && line[s.method.len() + 1..].starts_with(&s.path),
                    "expected {} {}, nbrt asked {line}",
                    s.method,
                    s.path
                );
                if let Some(words) = &s.sends {
                    let body = req.into_body().collect_bytes().await.unwrap();
                    let body = String::from_utf8_lossy(&body);
                    assert!(
                        body.contains(words.as_str()),
                        "{line}: {words:?} not in {body}"
                    );
                }
                seen.push(line);
                let (content_type, body) = match s.text {
                    Some(text) => ("text/plain", text.into_bytes()),
                    None => ("application/json", serde_json::to_vec(&s.body).unwrap()),
                };
                send.send_response(
                    Response::builder()
                        .status(s.status)
                        .header("content-type", content_type)
                        .body(Body::from(body))
                        .unwrap(),
                );
            }
            seen
        });
        (kube::Client::new(service, NAMESPACE), task)
    }

    pub fn backend(client: kube::Client) -> KubernetesBackend {
        KubernetesBackend::new(client, NAMESPACE.to_string(), fixture_config())
    }
}

use scripted::{pods_path, status, step};

fn pod_json(phase: &str, status_extra: Value) -> Value {
    let spec = fixture_spec("alice", fixture_runtime());
    let mut pod = typed(&session_objects(&spec, &fixture_config(), NAMESPACE, None).pod);
    pod["metadata"]["uid"] = json!("00000000-0000-4000-8000-00000000000a");
    pod["metadata"]["resourceVersion"] = json!("7");
    let mut st = json!({"phase": phase});
    if let Value::Object(extra) = status_extra {
        for (k, v) in extra {
            st[k] = v;
        }
    }
    pod["status"] = st;
    pod
}

/// What launch does once the pod is made: the Secret applied again, owned by the new pod
/// (the fixture pod's uid), and the Service.
fn owned_after_create(name: &str) -> Vec<scripted::Step> {
    let ns = format!("/api/v1/namespaces/{NAMESPACE}");
    let secret = k8s::secret_name(name);
    vec![
        scripted::Step {
            sends: Some("00000000-0000-4000-8000-00000000000a".into()),
            ..step(
                "PATCH",
                format!("{ns}/secrets/{secret}"),
                200,
                json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": secret}}),
            )
        },
        step(
            "PATCH",
            format!("{ns}/services/{name}"),
            200,
            json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": name}}),
        ),
    ]
}

fn pod_name() -> String {
    object_name(&fixture_spec("alice", fixture_runtime()).name)
}

async fn observed_with(pod: Value) -> Observed {
    let name = pod_name();
    let (client, task) = scripted::client(vec![step(
        "GET",
        format!("{}/{name}", pods_path()),
        200,
        pod,
    )]);
    let got = scripted::backend(client)
        .observe(&Handle(name))
        .await
        .expect("observe");
    task.await.unwrap();
    got
}

fn ended(o: &Observed) -> &Ended {
    match o {
        Observed::Ended(e) => e,
        other => panic!("expected an end, got {other:?}"),
    }
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_created_pod_and_reused_claim() {
    // Tests nbrt's reaction to a scripted API, not Kubernetes.
    let spec = fixture_spec("alice", fixture_runtime());
    let name = pod_name();
    let secret = k8s::secret_name(&name);
    let ns = format!("/api/v1/namespaces/{NAMESPACE}");
    let claim = k8s::home_claim_name(SITE, "alice");
    let created = pod_json("Pending", json!({}));
    let (client, task) = scripted::client(vec![
        // ensure_home: made, then (a second start) already there: reused as it is.
        step(
            "POST",
            format!("{ns}/persistentvolumeclaims"),
            201,
            json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": {"name": claim}}),
        ),
        step(
            "POST",
            format!("{ns}/persistentvolumeclaims"),
            409,
            status(
                409,
                "AlreadyExists",
                "persistentvolumeclaims already exists",
            ),
        ),
        // launch: the Secret (applied), the pod, the Secret owned by the pod, the Service.
        step(
            "PATCH",
            format!("{ns}/secrets/{secret}?&force=true&fieldManager=nbrt"),
            200,
            json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": secret}}),
        ),
        step("POST", pods_path(), 201, created.clone()),
    ]
    .into_iter()
    .chain(owned_after_create(&name))
    .chain([
        // observe: scheduled and pulling, then running.
        step(
            "GET",
            format!("{}/{name}", pods_path()),
            200,
            pod_json(
                "Pending",
                json!({
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
            ),
        ),
        step(
            "GET",
            format!("{}/{name}", pods_path()),
            200,
            pod_json("Running", json!({"podIP": "10.42.0.7"})),
        ),
    ])
    .collect());
    let b = scripted::backend(client);
    let home = b.ensure_home(SITE, "alice").await.unwrap();
    assert_eq!(home.volume, claim);
    assert_eq!(b.ensure_home(SITE, "alice").await.unwrap(), home);
    let handle = b.launch(&spec).await.unwrap();
    assert_eq!(handle, Handle(name.clone()));
    assert_eq!(
        b.observe(&handle).await.unwrap(),
        Observed::Pending {
            reason: "pod ContainerCreating".into()
        }
    );
    // With Services on, the site reaches the session by the Service's name.
    assert_eq!(
        b.observe(&handle).await.unwrap(),
        Observed::Running {
            address: Some(format!("{name}.{NAMESPACE}.svc:8888"))
        }
    );
    let seen = task.await.unwrap();
    assert_eq!(seen.len(), 8, "{seen:#?}");
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_conflict_by_replacing_the_stale_pod() {
    // Tests nbrt's reaction to a scripted API (409 AlreadyExists on create), not Kubernetes.
    let spec = fixture_spec("alice", fixture_runtime());
    let name = pod_name();
    let secret = k8s::secret_name(&name);
    let ns = format!("/api/v1/namespaces/{NAMESPACE}");
    let mut stale = pod_json("Failed", json!({}));
    stale["metadata"]["uid"] = json!("00000000-0000-4000-8000-0000000000ff");
    let fresh = pod_json("Pending", json!({}));
    let (client, task) = scripted::client(
        vec![
            step(
                "PATCH",
                format!("{ns}/secrets/{secret}"),
                200,
                json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": secret}}),
            ),
            step(
                "POST",
                pods_path(),
                409,
                status(
                    409,
                    "AlreadyExists",
                    &format!("pods \"{name}\" already exists"),
                ),
            ),
            step("GET", format!("{}/{name}", pods_path()), 200, stale.clone()),
            // Deleted at once: the replacement waits for it.
            scripted::Step {
                sends: Some("\"gracePeriodSeconds\":0".into()),
                ..step(
                    "DELETE",
                    format!("{}/{name}", pods_path()),
                    200,
                    stale.clone(),
                )
            },
            step(
                "GET",
                format!("{}/{name}", pods_path()),
                404,
                status(404, "NotFound", "pods not found"),
            ),
            step("POST", pods_path(), 201, fresh),
        ]
        .into_iter()
        .chain(owned_after_create(&name))
        .collect(),
    );
    let handle = scripted::backend(client).launch(&spec).await.unwrap();
    assert_eq!(handle, Handle(name));
    let seen = task.await.unwrap();
    assert_eq!(seen.len(), 8, "{seen:#?}");
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_unschedulable_by_ending_the_session() {
    // Tests nbrt's reaction to a scripted pod status, not Kubernetes' scheduler.
    let o = observed_with(pod_json(
        "Pending",
        json!({"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
    ))
    .await;
    let e = ended(&o);
    assert!(!e.oom);
    assert!(
        e.message.contains("Unschedulable") && e.message.contains("3 Insufficient nvidia.com/gpu"),
        "{e:?}"
    );
    assert_eq!(state_of(e), SessionState::Failed);
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_image_pull_back_off_by_ending_the_session() {
    // Tests nbrt's reaction to a scripted pod status, not the kubelet.
    for reason in ["ErrImagePull", "ImagePullBackOff"] {
        let o = observed_with(pod_json("Pending", json!({"containerStatuses": [{
            "name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": "Back-off pulling image \"registry.example:5000/nbrt/x@sha256:cd\""}}}]})))
        .await;
        let e = ended(&o);
        assert!(
            e.message.contains(reason) && e.message.contains("Back-off pulling"),
            "{e:?}"
        );
        assert_eq!(state_of(e), SessionState::Failed);
    }
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_oomkilled_and_eviction() {
    // Tests nbrt's reaction to scripted pod statuses, not the kernel's OOM killer or the
    // kubelet's evictions.
    let o = observed_with(pod_json(
        "Failed",
        json!({"containerStatuses": [{
        "name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    ))
    .await;
    assert_eq!(state_of(ended(&o)), SessionState::OomKilled);
    // No output asked for (the kill says it all).
    assert!(!ended(&o).message.contains("last output"), "{o:?}");
    let o = observed_with(pod_json("Failed", json!({"reason": "Evicted",
        "message": "Pod ephemeral local storage usage exceeds the total limit of containers 128Mi."})))
    .await;
    let e = ended(&o);
    assert!(
        e.message.contains("evicted") && e.message.contains("exceeds"),
        "{e:?}"
    );
    assert_eq!(state_of(e), SessionState::Failed);
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_deleted_pod() {
    // Tests nbrt's reaction to a scripted API (404s), not Kubernetes.
    let name = pod_name();
    let ns = format!("/api/v1/namespaces/{NAMESPACE}");
    let (client, task) = scripted::client(vec![
        step(
            "GET",
            format!("{}/{name}", pods_path()),
            404,
            status(404, "NotFound", "pods not found"),
        ),
        // stop: a pod gone already is stopped; its Secret and Service go too.
        step(
            "DELETE",
            format!("{}/{name}", pods_path()),
            404,
            status(404, "NotFound", "pods not found"),
        ),
        step(
            "DELETE",
            format!("{ns}/secrets/{}", k8s::secret_name(&name)),
            200,
            status(200, "", ""),
        ),
        step(
            "DELETE",
            format!("{ns}/services/{name}"),
            404,
            status(404, "NotFound", "services not found"),
        ),
    ]);
    let b = scripted::backend(client);
    assert_eq!(
        b.observe(&Handle(name.clone())).await.unwrap(),
        Observed::Gone
    );
    b.stop(&Handle(name), std::time::Duration::from_secs(10))
        .await
        .unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_watch_events_once_per_pod() {
    // Tests what nbrt makes of a scripted watch (list, then events), not Kubernetes' watch.
    let running = pod_json("Running", json!({"podIP": "10.42.0.7"}));
    let oom = pod_json(
        "Failed",
        json!({"containerStatuses": [{
        "name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    );
    let mut other = pod_json(
        "Pending",
        json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no nodes"}]}),
    );
    other["metadata"]["name"] = json!("nbrt-other");
    other["metadata"]["labels"]["nbrt.io/session"] = json!("other-session");
    let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": [running]});
    let events: String = [
        json!({"type": "MODIFIED", "object": oom}),
        json!({"type": "MODIFIED", "object": oom}),
        json!({"type": "ADDED", "object": other}),
        json!({"type": "DELETED", "object": oom}),
        json!({"type": "DELETED", "object": other}),
    ]
    .iter()
    .map(|e| e.to_string() + "\n")
    .collect();
    let (service, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.unwrap();
        let q = req.uri().query().unwrap_or("").to_string();
        assert!(q.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dnbrt%2Cnbrt.io%2Fsite%3D0a1b2c3d4e5f"), "{q}");
        send.send_response(http::Response::new(kube::client::Body::from(
            list.to_string().into_bytes(),
        )));
        let (req, send) = handle.next_request().await.unwrap();
        assert!(
            req.uri().query().unwrap_or("").contains("watch=true"),
            "{:?}",
            req.uri()
        );
        send.send_response(http::Response::new(kube::client::Body::from(
            events.into_bytes(),
        )));
        // Keep answering nothing more: the watch would reconnect after its body ends.
        let _ = handle.next_request().await;
    });
    let b = KubernetesBackend::new(
        kube::Client::new(service, NAMESPACE),
        NAMESPACE.into(),
        fixture_config(),
    );
    let spec = fixture_spec("alice", fixture_runtime());
    let mut stream = b.watch(SITE);
    let got: Vec<BackendEvent> = (&mut stream).take(2).collect().await;
    assert_eq!(
        got,
        vec![
            BackendEvent::Oom {
                session: spec.session_id.clone(),
                handle: Handle(pod_name())
            },
            BackendEvent::Ended {
                session: "other-session".into(),
                handle: Handle("nbrt-other".into())
            },
        ],
        "the second MODIFIED and both DELETEDs of pods already told are not told again"
    );
    drop(stream);
    server.abort();
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_refuses_swap_and_missing_gpus() {
    // Tests nbrt's refusals against a scripted node list, not Kubernetes.
    let node = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [{
        "metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                   "allocatable": {"cpu": "3900m", "memory": "16Gi"}}}]});
    let (client, task) = scripted::client(vec![step("GET", "/api/v1/nodes", 200, node)]);
    let b = scripted::backend(client);
    let mut limits = Limits::of_runtime(&fixture_runtime());
    // Before the nodes were looked at, a GPU runtime is not refused.
    b.refuse(&limits).unwrap();
    let cap = b.capacity().await.unwrap();
    assert_eq!((cap.cpus, cap.memory), (3.9, 16 << 30));
    task.await.unwrap();
    let field_of = |e: nbrt_site::SiteError| match e {
        nbrt_site::SiteError::Conflict { field, .. } => field,
        other => panic!("expected a 409, got {other:?}"),
    };
    assert_eq!(
        field_of(b.refuse(&limits).unwrap_err()).as_deref(),
        Some("dockerRuntime")
    );
    // A GPU runtime without GPUs is not refused.
    limits.gpus = Some(0);
    b.refuse(&limits).unwrap();
    limits.gpus = None;
    limits.docker_runtime = None;
    b.refuse(&limits).unwrap();
    limits.memory_swap = limits.memory * 2;
    assert_eq!(
        field_of(b.refuse(&limits).unwrap_err()).as_deref(),
        Some("maxSwapMemory")
    );
    // A swap derived (never given) is Docker's default, not a demand: accepted.
    limits.swap_given = false;
    b.refuse(&limits).unwrap();
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_refuses_more_gpus_than_a_node_has() {
    // Tests nbrt's refusal against a scripted node list, not Kubernetes: two GPU nodes with
    // 2 and 4 GPUs, and one with 8 that is not ready.
    let node = |name: &str, ready: &str, gpus: &str| {
        json!({"metadata": {"name": name},
               "status": {"conditions": [{"type": "Ready", "status": ready}],
                          "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": gpus}}})
    };
    let nodes = json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [
        node("n1", "True", "2"), node("n2", "True", "4"), node("n3", "False", "8")]});
    let (client, task) = scripted::client(vec![step("GET", "/api/v1/nodes", 200, nodes)]);
    let b = scripted::backend(client);
    b.capacity().await.unwrap();
    task.await.unwrap();
    let mut limits = Limits::of_runtime(&fixture_runtime());
    for ok in [None, Some(0), Some(1), Some(4)] {
        limits.gpus = ok;
        b.refuse(&limits).unwrap();
    }
    limits.gpus = Some(5);
    match b.refuse(&limits).unwrap_err() {
        nbrt_site::SiteError::Conflict { field, message } => {
            assert_eq!(field.as_deref(), Some("gpus"));
            assert!(message.contains("the most on one node: 4"), "{message}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reacts_to_a_crash_with_the_containers_last_output() {
    // Tests what nbrt makes of a scripted pod status and log, not the kubelet.
    let name = pod_name();
    let crashed = pod_json(
        "Failed",
        json!({"containerStatuses": [{
        "name": "notebook", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}),
    );
    let output: String = (1..=30).map(|i| format!("line {i}\n")).collect::<String>()
        + "crasher: no notebook server today\n";
    let (client, task) = scripted::client(vec![
        step("GET", format!("{}/{name}", pods_path()), 200, crashed),
        scripted::Step {
            text: Some(output),
            ..step(
                "GET",
                format!("{}/{name}/log?", pods_path()),
                200,
                json!(null),
            )
        },
    ]);
    let o = scripted::backend(client)
        .observe(&Handle(name))
        .await
        .expect("observe");
    let asked = task.await.unwrap();
    assert!(
        asked[1].contains("container=notebook") && asked[1].contains("tailLines=10"),
        "{asked:?}"
    );
    let e = ended(&o);
    assert_eq!(state_of(e), SessionState::Failed);
    assert!(
        e.message
            .starts_with("the container exited with code 3: Error"),
        "{e:?}"
    );
    // The last 10 lines, as the Docker backend keeps them.
    let (_, last) = e
        .message
        .split_once("; last output:\n")
        .expect("the output");
    assert!(last.starts_with("line 22\n"), "{last}");
    assert!(
        last.ends_with("crasher: no notebook server today"),
        "{last}"
    );
}

#[tokio::test]
async fn kubernetes_without_a_cluster_nbrt_reads_usage_from_pod_metrics_when_served() {
    // Tests what nbrt makes of a scripted metrics.k8s.io answer, not metrics-server.
    let name = pod_name();
    let path = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/pods/{name}");
    let metrics = json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "timestamp": "2026-01-01T00:00:00Z", "window": "10.5s",
        "containers": [{"name": "notebook", "usage": {"cpu": "250m", "memory": "120Mi"}}]});
    let (client, task) = scripted::client(vec![
        step("GET", path.clone(), 200, metrics),
        step(
            "GET",
            path.clone(),
            404,
            status(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    ]);
    let b = scripted::backend(client);
    let now = b.usage(&Handle(name.clone())).await.expect("usage");
    assert_eq!(
        now,
        UsageReport::Now(Usage {
            cpu: Some(0.25),
            memory: 120 * 1024 * 1024,
            memory_limit: None,
        })
    );
    let none = b.usage(&Handle(name)).await.expect("usage");
    assert!(
        matches!(&none, UsageReport::NotAvailable(why) if why.contains("metrics.k8s.io")),
        "{none:?}"
    );
    task.await.unwrap();
}

#[test]
fn kubernetes_without_a_cluster_pod_status_mapping_is_pure() {
    // observe_pod on its own: a pod deleted while pending ends the session.
    let mut pod: k8s_openapi::api::core::v1::Pod =
        serde_json::from_value(pod_json("Pending", json!({}))).unwrap();
    assert!(matches!(
        observe_pod(&pod, |_| None),
        Observed::Pending { .. }
    ));
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().unwrap(),
    ));
    assert!(matches!(observe_pod(&pod, |_| None), Observed::Ended(_)));
}

// ---- a real cluster -----------------------------------------------------------------------

mod real_cluster {
    //! Against a real cluster: `NBRT_KUBECONFIG` names its kubeconfig, `NBRT_K8S_NAMESPACE`
    //! a namespace to use (default `nbrt-test`), `NBRT_K8S_IMAGE` an image reference nodes
    //! can pull that runs the stock Jupyter runtime (nbrt-init, `<prefix>/api`). Never run
    //! where these tests were written: there is no cluster there.
    use super::*;

    pub struct Cluster {
        pub backend: KubernetesBackend,
        pub image: String,
    }

    pub async fn cluster(test: &str) -> Option<Cluster> {
        let Some(kubeconfig) = std::env::var_os("NBRT_KUBECONFIG") else {
            println!("skipped {test}: no cluster (NBRT_KUBECONFIG is not set)");
            return None;
        };
        let Ok(image) = std::env::var("NBRT_K8S_IMAGE") else {
            panic!("{test}: NBRT_K8S_IMAGE must name an image the nodes can pull");
        };
        let cfg = KubernetesConfig {
            kubeconfig: Some(kubeconfig.into()),
            namespace: Some(
                std::env::var("NBRT_K8S_NAMESPACE").unwrap_or_else(|_| "nbrt-test".into()),
            ),
            registry: Some("unused.invalid".into()),
            ..Default::default()
        };
        let backend = KubernetesBackend::connect(&cfg, SITE)
            .await
            .expect("connecting to the cluster");
        Some(Cluster { backend, image })
    }

    /// A small CPU-only runtime with the image the cluster can pull.
    pub fn spec(c: &Cluster, user: &str) -> SessionSpec {
        let mut rt = fixture_runtime();
        rt.docker_runtime = None;
        rt.use_gpu = false;
        rt.max_memory = 512.0;
        rt.max_memory_unit = "m".into();
        rt.swap_given = false;
        let mut s = fixture_spec(user, rt);
        s.image = ImageRef(c.image.clone());
        s.session_id = format!("real-{user}");
        s
    }

    pub async fn start(c: &Cluster, spec: &mut SessionSpec) -> (Handle, String) {
        spec.home = c.backend.ensure_home(SITE, &spec.user).await.unwrap();
        let h = c.backend.launch(spec).await.unwrap();
        loop {
            match c.backend.observe(&h).await.unwrap() {
                Observed::Running { address: Some(a) } => {
                    let pod: k8s_openapi::api::core::v1::Pod =
                        kube::Api::namespaced(kube_client().await, c.backend.namespace())
                            .get(&h.0)
                            .await
                            .unwrap();
                    let ready = pod
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    if ready {
                        return (h, a);
                    }
                }
                Observed::Ended(e) => panic!("the session ended: {e:?}"),
                Observed::Gone => panic!("the pod vanished"),
                _ => {}
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// A client of the test's own on the same kubeconfig.
    pub async fn kube_client() -> kube::Client {
        let path = std::env::var_os("NBRT_KUBECONFIG").expect("NBRT_KUBECONFIG");
        let kc = kube::config::Kubeconfig::read_from(PathBuf::from(path)).expect("the kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("the kubeconfig's cluster");
        kube::Client::try_from(cfg).expect("a client")
    }

    /// Run `sh -c script` in the session's pod through `kubectl exec` (the kubeconfig's).
    pub fn exec(c: &Cluster, pod: &str, script: &str) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(std::env::var_os("NBRT_KUBECONFIG").unwrap())
            .args([
                "-n",
                c.backend.namespace(),
                "exec",
                pod,
                "--",
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("running kubectl");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

#[tokio::test]
async fn kubernetes_real_cluster_start_ready_limits_shm_token_isolation_stop() {
    let Some(c) = real_cluster::cluster(
        "kubernetes_real_cluster_start_ready_limits_shm_token_isolation_stop",
    )
    .await
    else {
        return;
    };
    let mut a = real_cluster::spec(&c, "alice");
    let mut b = real_cluster::spec(&c, "bob");
    let (ha, _addr_a) = real_cluster::start(&c, &mut a).await;
    let (hb, addr_b) = real_cluster::start(&c, &mut b).await;
    // cgroup v2 limits equal the runtime's.
    let cpu_max = real_cluster::exec(&c, &ha.0, "cat /sys/fs/cgroup/cpu.max");
    assert_eq!(cpu_max, "50000 100000");
    let mem_max = real_cluster::exec(&c, &ha.0, "cat /sys/fs/cgroup/memory.max");
    assert_eq!(mem_max, (512i64 << 20).to_string());
    // /dev/shm has the runtime's size.
    let shm = real_cluster::exec(&c, &ha.0, "df -B1 --output=size /dev/shm | tail -1");
    assert_eq!(shm.trim(), (128i64 << 20).to_string());
    // No service-account token.
    let token = real_cluster::exec(
        &c,
        &ha.0,
        "ls /var/run/secrets/kubernetes.io/serviceaccount 2>&1 || true",
    );
    assert!(!token.contains("token"), "{token}");
    // alice's session cannot reach bob's notebook port.
    let reach = real_cluster::exec(
        &c,
        &ha.0,
        &format!("python3 -c \"import socket; s=socket.socket(); s.settimeout(5); print(s.connect_ex(('{}', 8888)))\"", addr_b.split(':').next().unwrap()),
    );
    assert_ne!(reach, "0", "alice's pod reached bob's port");
    c.backend
        .stop(&ha, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    c.backend
        .stop(&hb, std::time::Duration::from_secs(5))
        .await
        .unwrap();
}
