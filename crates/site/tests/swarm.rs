//! The Swarm backend on a real three-node swarm: `scripts/swarm-lab up` (engines in network
//! namespaces, the site registry at 10.77.0.254:5000). Without the lab these tests fail
//! saying so, unless NBRT_SKIP_DOCKER=1.
//!
//! The backends' conformance suite (`conformance/mod.rs`) run on the lab, with what is the
//! Swarm backend's own checked on the way (the service's shape: image by digest from the
//! site registry, restart none, dnsrr, limits, `/dev/shm`, session files as configs and
//! secrets); limits the backend cannot enforce are refused.

mod common;
mod conformance;

use common::*;
use conformance::Fixture;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_backend_conforms() {
    conformance::run(Fixture::Swarm).await;
}

/// The conformance suite's site, in a process of its own (see `conformance::SiteProcess`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the conformance suite as its site process"]
async fn conformance_site() {
    conformance::site_process(Fixture::Swarm).await;
}

/// Swap and a Docker runtime are not the swarm's to set: refused with a 409 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swarm_backend_refuses_what_it_cannot_enforce() {
    if !Fixture::Swarm.available() {
        return;
    }
    let Some(images) = conformance::images() else {
        return;
    };
    let t = start_site(|c| {
        Fixture::Swarm.configure(c);
        c.store = Some(images.store.clone());
    })
    .await;
    let image = images.jupyter;
    for (extra, field) in [
        (json!({"maxSwapMemory": 512}), "maxSwapMemory"),
        (json!({"dockerRuntime": "nvidia"}), "dockerRuntime"),
    ] {
        let mut body = json!({"name": "refused", "imageId": image, "maxCpu": 1,
            "maxMemory": 512, "maxMemoryUnit": "m"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let a = t
            .call("POST", "/api/runtimes", Some(&t.admin), Some(body))
            .await;
        assert_eq!(a.status, 409, "{}", a.text);
        assert_eq!(a.body["field"], field, "{}", a.text);
    }
}
