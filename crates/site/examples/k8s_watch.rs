//! Benchmark (issue 16): the site's memory and CPU while its one Kubernetes watch takes
//! `N` pods' worth of events, from a scripted API server (no cluster can be had where this
//! was written). The API answers the watcher's list with `N` running session pods (in the
//! pages the watcher asks for, as an API server does), then its
//! watch with, for each pod, the event that ends it (half out of memory, half failed) and its
//! deletion; later watches wait forever. The site's own stream
//! ([`KubernetesBackend::watch`]) is read until it has told every pod's end.
//!
//! `cargo run -p nbrt-site --example k8s_watch -- [N] [--unpaged]` prints one JSON line: peak RSS
//! (`VmHWM`) and RSS before the watch, CPU (user, system) and wall time of the whole watch.
//! Bodies are made as they are sent, so the figures are the site's, not the script's.

use std::convert::Infallible;
use std::future::Ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use http::{Request, Response};
use http_body_util::StreamBody;
use hyper::body::Frame;
use nbrt_site::backend::kubernetes::{object_name, session_objects, KubernetesBackend};
use nbrt_site::backend::{BackendEvent, KubernetesConfig, SessionBackend};

#[path = "../tests/common/kubernetes_fixture.rs"]
mod fixture;
use fixture::{fixture_runtime, fixture_spec, NAMESPACE, SITE};

type Body = StreamBody<BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A session pod as the API server would send it, with `@NAME@`, `@SESSION@` and
/// `@STATUS@` to fill in.
fn pod_template() -> String {
    let spec = fixture_spec("user", fixture_runtime());
    let mut pod = serde_json::to_value(
        session_objects(&spec, &KubernetesConfig::default(), NAMESPACE, None).pod,
    )
    .expect("a pod is JSON");
    pod["metadata"]["name"] = "@NAME@".into();
    pod["metadata"]["labels"]["nbrt.io/session"] = "@SESSION@".into();
    pod["metadata"]["uid"] = "uid-@NAME@".into();
    pod["metadata"]["resourceVersion"] = "1".into();
    pod["status"] = "@STATUS@".into();
    pod.to_string()
}

const RUNNING: &str = r#"{"phase":"Running","podIP":"10.42.0.7"}"#;
const OOM: &str = r#"{"phase":"Failed","containerStatuses":[{"name":"notebook","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":137,"reason":"OOMKilled"}}}]}"#;
const FAILED: &str = r#"{"phase":"Failed","containerStatuses":[{"name":"notebook","image":"x","imageID":"","ready":false,"restartCount":0,"state":{"terminated":{"exitCode":1,"reason":"Error"}}}]}"#;

fn pod(template: &str, i: usize, status: &str) -> String {
    template
        .replace("\"@STATUS@\"", status)
        .replace(
            "@NAME@",
            &object_name(&format!("nbrt-{SITE}-user{i}-5f0c7a2e91d4")),
        )
        .replace("@SESSION@", &format!("session-{i}"))
}

#[derive(Clone)]
struct ScriptedApi {
    pods: usize,
    /// Answer the list in one page whatever its `limit` (an API server serving the list from
    /// its watch cache, `resourceVersion=0`, may).
    unpaged: bool,
    template: Arc<String>,
    watches: Arc<AtomicUsize>,
}

fn body(chunks: BoxStream<'static, String>) -> Response<Body> {
    let frames = chunks.map(|s| Ok(Frame::data(Bytes::from(s)))).boxed();
    Response::builder()
        .header("content-type", "application/json")
        .body(StreamBody::new(frames))
        .expect("a response")
}

impl tower_service::Service<Request<kube::client::Body>> for ScriptedApi {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let watch = req.uri().query().unwrap_or("").contains("watch=true");
        let (n, t) = (self.pods, self.template.clone());
        let resp = if !watch {
            // The list, every pod running, in pages as the API server gives them (`limit`,
            // `continue`: the watcher asks for 500 at a time).
            let query = req.uri().query().unwrap_or("");
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<usize>().ok())
            };
            let from = param("continue").unwrap_or(0).min(n);
            let limit = if self.unpaged { None } else { param("limit") };
            let to = limit.map_or(n, |l| (from + l).min(n));
            let more = if to < n {
                format!(r#","continue":"{to}""#)
            } else {
                String::new()
            };
            let head = stream::iter([format!(
                r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"1"{more}}},"items":["#
            )]);
            let items = stream::iter(from..to).map(move |i| {
                let sep = if i == from { "" } else { "," };
                format!("{sep}{}", pod(&t, i, RUNNING))
            });
            body(
                head.chain(items)
                    .chain(stream::iter(["]}".to_string()]))
                    .boxed(),
            )
        } else if self.watches.fetch_add(1, Ordering::SeqCst) == 0 {
            // Each pod ends (half out of memory), then is deleted.
            let events = stream::iter(0..n).flat_map(move |i| {
                let status = if i % 2 == 0 { OOM } else { FAILED };
                let p = pod(&t, i, status);
                stream::iter([
                    format!("{{\"type\":\"MODIFIED\",\"object\":{p}}}\n"),
                    format!("{{\"type\":\"DELETED\",\"object\":{p}}}\n"),
                ])
            });
            body(events.boxed())
        } else {
            body(stream::pending().boxed())
        };
        std::future::ready(Ok(resp))
    }
}

/// (VmHWM, VmRSS) in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// (user, system) CPU seconds of this process.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let pods: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let unpaged = std::env::args().any(|a| a == "--unpaged");
    let api = ScriptedApi {
        pods,
        unpaged,
        template: Arc::new(pod_template()),
        watches: Arc::new(AtomicUsize::new(0)),
    };
    let client = kube::Client::new(api, NAMESPACE);
    let backend = KubernetesBackend::new(client, NAMESPACE.into(), KubernetesConfig::default());
    let (_, rss_before) = memory_kib();
    let (u0, s0) = cpu_seconds();
    let start = Instant::now();
    let mut events = backend.watch(SITE);
    let (mut oom, mut ended) = (0usize, 0usize);
    while oom + ended < pods {
        match events.next().await {
            Some(BackendEvent::Oom { .. }) => oom += 1,
            Some(BackendEvent::Ended { .. }) => ended += 1,
            None => break,
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    let (peak, rss_after) = memory_kib();
    println!(
        "{}",
        serde_json::json!({
            "pods": pods,
            "listPages": if unpaged { "one" } else { "as asked (limit)" },
            "watchEvents": pods * 2,
            "listedPods": pods,
            "told": {"oomKilled": oom, "ended": ended},
            "rssBeforeKiB": rss_before,
            "rssAfterKiB": rss_after,
            "peakRssKiB": peak,
            "cpuUserS": u1 - u0,
            "cpuSystemS": s1 - s0,
            "wallS": wall,
        })
    );
}
