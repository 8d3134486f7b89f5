//! Issue 18's observability: an audit record for every change made through the API, with
//! the acting user and the ID of its token (never the token); `/metrics` read by a Prometheus
//! text-format parser, its gauges, histogram and counters moving as sessions start, are
//! proxied to, culled and OOM-killed.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn docker() -> bool {
    nbrt_testkit::require_docker()
}

/// The ID the token listings (and the audit log) name a token by.
fn token_id(token: &str) -> String {
    nbrt_site::auth::hash_token(token)[..16].to_string()
}

async fn audit(t: &TestSite, query: &str) -> Vec<Value> {
    let a = t
        .call("GET", &format!("/api/audit{query}"), Some(&t.admin), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["records"].as_array().expect("records").clone()
}

/// Every state-changing operation of the REST API (each documented non-GET operation under
/// /api) and the audit action it leaves. A new operation missing here fails the test.
const AUDITED: &[(&str, &str, &str)] = &[
    ("post", "/api/login", "login"),
    ("post", "/api/logout", "logout"),
    ("post", "/api/users", "user.create"),
    ("patch", "/api/users/{name}", "user.update"),
    ("delete", "/api/users/{name}", "user.delete"),
    ("post", "/api/users/{name}/tokens", "token.create"),
    ("delete", "/api/users/{name}/tokens/{id}", "token.revoke"),
    ("post", "/api/runtimes", "runtime.register"),
    ("post", "/api/runtimes/register", "runtime.register"),
    ("post", "/api/runtimes/restore", "runtime.restore"),
    ("patch", "/api/runtimes/{id}", "runtime.update"),
    ("post", "/api/runtimes/{id}/update", "runtime.update"),
    ("post", "/api/runtimes/{id}/deprecate", "runtime.deprecate"),
    ("delete", "/api/runtimes/{id}", "runtime.unregister"),
    (
        "post",
        "/api/runtimes/{id}/unregister",
        "runtime.unregister",
    ),
    ("put", "/api/runtimes/{id}/manifest", "runtime.manifest"),
    (
        "put",
        "/api/runtimes/{id}/session-env",
        "runtime.session-env",
    ),
    ("put", "/api/site/session-env", "site.session-env"),
    ("post", "/api/notebooks", "notebook.create"),
    ("patch", "/api/notebooks/{id}", "notebook.update"),
    ("delete", "/api/notebooks/{id}", "notebook.delete"),
    ("post", "/api/migrations", "migration.create"),
    (
        "post",
        "/api/migrations/{id}/rollback",
        "migration.rollback",
    ),
    ("post", "/api/sessions", "session.start"),
    ("delete", "/api/sessions/{id}", "session.stop"),
];

#[test]
fn every_changing_operation_has_an_audit_action() {
    let listed: BTreeSet<(&str, &str)> = AUDITED.iter().map(|(m, p, _)| (*m, *p)).collect();
    for (method, path, ..) in nbrt_site::openapi::OPERATIONS {
        if *method != "get" && path.starts_with("/api/") {
            assert!(
                listed.contains(&(*method, *path)),
                "{method} {path} changes state: give it an audit record and list it in AUDITED"
            );
        }
    }
}

/// Each state-changing call of the REST API (sessions are the next test's) leaves a record
/// naming the user and its token's ID; authors cannot read the log; it pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_audited_with_its_user_and_token() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let image = jupyter_image();
    let admin = t.admin.clone();
    let call = |method: &'static str, path: String, token: String, body: Option<Value>| {
        let t = &t;
        async move {
            let a = t.call(method, &path, Some(&token), body).await;
            assert!(a.status < 300, "{method} {path}: {}", a.text);
            a.body
        }
    };
    // Each step: the action it must leave, by whom, on what.
    let mut expected: Vec<(&str, String, String)> = Vec::new();

    let ann = call(
        "POST",
        "/api/users".into(),
        admin.clone(),
        Some(json!({"name": "ann", "role": "author"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("user.create", "admin".into(), "ann".into()));
    call(
        "PATCH",
        "/api/users/ann".into(),
        admin.clone(),
        Some(json!({"advanced": true})),
    )
    .await;
    expected.push(("user.update", "admin".into(), "ann".into()));
    let tok = call(
        "POST",
        "/api/users/ann/tokens".into(),
        ann.clone(),
        Some(json!({"label": "laptop"})),
    )
    .await;
    let second = tok["token"].as_str().unwrap().to_string();
    expected.push(("token.create", "ann".into(), "ann".into()));
    call(
        "DELETE",
        format!("/api/users/ann/tokens/{}", token_id(&second)),
        ann.clone(),
        None,
    )
    .await;
    expected.push(("token.revoke", "ann".into(), "ann".into()));
    // Login (a cookie token of its own) and logout (which revokes the token it carries).
    let login = t
        .call("POST", "/api/login", None, Some(json!({"token": ann})))
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    expected.push(("login", "ann".into(), "ann".into()));
    let bye = call(
        "POST",
        "/api/users/ann/tokens".into(),
        ann.clone(),
        Some(json!({"label": "bye"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("token.create", "ann".into(), "ann".into()));
    call("POST", "/api/logout".into(), bye.clone(), None).await;
    expected.push(("logout", "ann".into(), "ann".into()));

    let a = call(
        "POST",
        "/api/runtimes".into(),
        admin.clone(),
        Some(runtime_body("audit one", &image)),
    )
    .await["notebookRuntime"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("runtime.register", "admin".into(), a.clone()));
    let b = call(
        "POST",
        "/api/runtimes/register".into(),
        admin.clone(),
        Some(runtime_body("audit two", &image)),
    )
    .await["notebookRuntime"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("runtime.register", "admin".into(), b.clone()));
    call(
        "PATCH",
        format!("/api/runtimes/{a}"),
        admin.clone(),
        Some(json!({"maxCpu": 0.5})),
    )
    .await;
    expected.push(("runtime.update", "admin".into(), a.clone()));
    call(
        "POST",
        format!("/api/runtimes/{b}/update"),
        admin.clone(),
        Some(json!({"version": "2"})),
    )
    .await;
    expected.push(("runtime.update", "admin".into(), b.clone()));
    call(
        "PUT",
        format!("/api/runtimes/{b}/manifest"),
        admin.clone(),
        Some(json!({"libraries": [{"name": "numpy", "version": "2.0.0"}]})),
    )
    .await;
    expected.push(("runtime.manifest", "admin".into(), b.clone()));
    call(
        "PUT",
        "/api/site/session-env".into(),
        admin.clone(),
        Some(json!({"env": [{"name": "SITE_WIDE", "value": "1"}]})),
    )
    .await;
    expected.push(("site.session-env", "admin".into(), String::new()));
    call(
        "PUT",
        format!("/api/runtimes/{a}/session-env"),
        admin.clone(),
        Some(json!({"env": [{"name": "ONE", "value": "1"}]})),
    )
    .await;
    expected.push(("runtime.session-env", "admin".into(), a.clone()));
    let nb = call(
        "POST",
        "/api/notebooks".into(),
        ann.clone(),
        Some(json!({"name": "work", "runtimeId": a})),
    )
    .await["notebook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("notebook.create", "ann".into(), nb.clone()));
    call(
        "PATCH",
        format!("/api/notebooks/{nb}"),
        ann.clone(),
        Some(json!({"runtimeId": b})),
    )
    .await;
    expected.push(("notebook.update", "ann".into(), nb.clone()));
    // A dry run changes nothing and leaves no record; the migration does.
    call(
        "POST",
        "/api/migrations".into(),
        admin.clone(),
        Some(json!({"from": b, "to": a, "dryRun": true})),
    )
    .await;
    let mig = call(
        "POST",
        "/api/migrations".into(),
        admin.clone(),
        Some(json!({"from": b, "to": a})),
    )
    .await["migration"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    expected.push(("migration.create", "admin".into(), mig.clone()));
    call(
        "POST",
        format!("/api/migrations/{mig}/rollback"),
        admin.clone(),
        None,
    )
    .await;
    expected.push(("migration.rollback", "admin".into(), mig.clone()));
    call(
        "POST",
        format!("/api/runtimes/{a}/deprecate"),
        admin.clone(),
        None,
    )
    .await;
    expected.push(("runtime.deprecate", "admin".into(), a.clone()));
    call("DELETE", format!("/api/notebooks/{nb}"), ann.clone(), None).await;
    expected.push(("notebook.delete", "ann".into(), nb.clone()));
    call("DELETE", format!("/api/runtimes/{a}"), admin.clone(), None).await;
    expected.push(("runtime.unregister", "admin".into(), a.clone()));
    call(
        "POST",
        format!("/api/runtimes/{b}/unregister"),
        admin.clone(),
        None,
    )
    .await;
    expected.push(("runtime.unregister", "admin".into(), b.clone()));
    call("POST", "/api/runtimes/restore".into(), admin.clone(), None).await;
    expected.push(("runtime.restore", "admin".into(), String::new()));
    call(
        "PATCH",
        "/api/users/ann".into(),
        admin.clone(),
        Some(json!({"disabled": true})),
    )
    .await;
    expected.push(("user.update", "admin".into(), "ann".into()));
    call("DELETE", "/api/users/ann".into(), admin.clone(), None).await;
    expected.push(("user.delete", "admin".into(), "ann".into()));

    // Oldest first, the records are the steps, one each.
    let mut records = audit(&t, "?limit=1000").await;
    records.reverse();
    let got: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["user"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = expected
        .iter()
        .map(|(a, u, t)| (a.to_string(), u.clone(), t.clone()))
        .collect();
    assert_eq!(got, want);
    // Each with the ID of the token the call carried, and never a token.
    let tokens = |r: &Value| r["tokenId"].as_str().unwrap().to_string();
    for r in &records {
        let want = match (r["action"].as_str().unwrap(), r["user"].as_str().unwrap()) {
            ("logout", _) => token_id(&bye),
            (_, "admin") => token_id(&admin),
            (_, "ann") => token_id(&ann),
            other => panic!("unexpected record {other:?}"),
        };
        assert_eq!(tokens(r), want, "{r}");
        assert!(r["time"].as_i64().unwrap() > 0);
    }
    let text = serde_json::to_string(&records).unwrap();
    for secret in [&admin, &ann, &second, &bye] {
        assert!(!text.contains(secret.as_str()), "a token in the audit log");
    }
    assert_eq!(
        records[0]["detail"],
        json!({"role": "author", "advanced": false})
    );
    let update = records
        .iter()
        .find(|r| r["action"] == "runtime.update" && r["target"] == a.as_str())
        .unwrap();
    assert_eq!(update["detail"]["fields"], json!(["maxCpu"]));

    // Pages: newest first, `next` for the rest; filters.
    let page = t
        .call("GET", "/api/audit?limit=2", Some(&t.admin), None)
        .await;
    assert_eq!(page.body["records"].as_array().unwrap().len(), 2);
    let next = page.body["next"].as_i64().expect("a next page");
    let rest = audit(&t, &format!("?before={next}&limit=1000")).await;
    assert_eq!(rest.len(), records.len() - 2);
    let registers = audit(&t, "?action=runtime.register").await;
    assert_eq!(registers.len(), 2);
    let anns = audit(&t, "?user=ann").await;
    assert!(anns.iter().all(|r| r["user"] == "ann"));
    assert_eq!(
        t.call("GET", "/api/audit?limit=0", Some(&t.admin), None)
            .await
            .status,
        400
    );
    // Administrators only.
    let bob = t.user("bob", "author", false).await;
    assert_eq!(
        t.call("GET", "/api/audit", Some(&bob), None).await.status,
        403
    );
}

/// A Prometheus text-format scrape of /metrics, by a parser of the format.
async fn scrape(t: &TestSite, token: Option<&str>) -> prometheus_parse::Scrape {
    let a = t.call("GET", "/metrics", token, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let lines = a.text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

fn counter(s: &prometheus_parse::Scrape, name: &str) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("no {name} in the scrape"));
    match sample.value {
        prometheus_parse::Value::Counter(v) => v,
        ref other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn sessions_gauge(s: &prometheus_parse::Scrape, runtime_id: &str, state: &str) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "nbrt_sessions"
                && x.labels.get("runtime_id") == Some(runtime_id)
                && x.labels.get("state") == Some(state)
        })
        .unwrap_or_else(|| panic!("no nbrt_sessions{{runtime_id={runtime_id},state={state}}}"));
    match sample.value {
        prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("nbrt_sessions is not a gauge: {other:?}"),
    }
}

/// The start-latency histogram's count (its `+Inf` bucket).
fn starts(s: &prometheus_parse::Scrape) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == "nbrt_session_start_seconds")
        .expect("nbrt_session_start_seconds");
    match &sample.value {
        prometheus_parse::Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("a +Inf bucket"),
        other => panic!("nbrt_session_start_seconds is not a histogram: {other:?}"),
    }
}

/// /metrics needs a token (any user's) unless the site serves it publicly; the counters move
/// as the test starts a session, goes through the proxy, has it culled and OOM-killed; the
/// session records of each step are in the audit log with their user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_sessions_start_proxy_cull_and_die() {
    if !docker() {
        return;
    }
    let t = start_site(|c| {
        // Culled on the test's call (below), not by the background culler.
        c.cull_idle_timeout = Some(Duration::from_millis(1));
        c.cull_interval = Duration::from_secs(3600);
    })
    .await;
    let image = jupyter_image();
    let ann = t.user("ann", "author", false).await;
    let rt = t.register(runtime_body("metered", &image)).await;
    let rid = rt["id"].as_str().unwrap().to_string();

    assert_eq!(t.call("GET", "/metrics", None, None).await.status, 401);
    let before = scrape(&t, Some(&ann)).await;
    for name in [
        "nbrt_proxy_requests_total",
        "nbrt_proxy_errors_total",
        "nbrt_sessions_culled_total",
        "nbrt_sessions_oom_killed_total",
    ] {
        assert_eq!(counter(&before, name), 0.0, "{name}");
    }
    assert_eq!(starts(&before), 0.0);
    assert_eq!(sessions_gauge(&before, &rid, "ready"), 0.0);

    // Start without waiting and go through the proxy at once: while the session starts the
    // proxy answers 503 itself (an error); once ready, the notebook server answers.
    let s = t
        .call(
            "POST",
            "/api/sessions",
            Some(&ann),
            Some(json!({"runtimeId": rid})),
        )
        .await;
    assert!(s.status == 200 || s.status == 202, "{}", s.text);
    let sid = s.body["session"]["id"].as_str().unwrap().to_string();
    let prefix = s.body["session"]["url"].as_str().unwrap().to_string();
    let early = t
        .call("GET", &format!("{prefix}api"), Some(&ann), None)
        .await;
    let errors = u32::from(early.status >= 500);
    eprintln!(
        "a proxy request while the session started: {} {}",
        early.status, early.text
    );
    let ready = t.wait_session(&sid, &ann).await;
    assert_eq!(ready["state"], "ready", "{ready}");
    let mid = scrape(&t, Some(&ann)).await;
    assert_eq!(sessions_gauge(&mid, &rid, "ready"), 1.0);
    assert_eq!(starts(&mid), 1.0);
    for _ in 0..3 {
        let a = t
            .call("GET", &format!("{prefix}api/status"), Some(&ann), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
    }
    let after = scrape(&t, Some(&ann)).await;
    assert_eq!(counter(&after, "nbrt_proxy_requests_total"), 4.0);
    assert_eq!(
        counter(&after, "nbrt_proxy_errors_total"),
        f64::from(errors),
        "the early request answered {}",
        early.status
    );

    // The culler (idle past 1 ms) stops it: counted, and recorded as the site's action.
    let culled = nbrt_site::sessions::cull_once(&t.site).await.unwrap();
    assert_eq!(culled, vec![sid.clone()]);
    let after = scrape(&t, Some(&ann)).await;
    assert_eq!(counter(&after, "nbrt_sessions_culled_total"), 1.0);
    assert_eq!(sessions_gauge(&after, &rid, "ready"), 0.0);
    assert_eq!(sessions_gauge(&after, &rid, "culled"), 1.0);
    // A proxy request to a session that is gone is the user's 404, not a proxy error.
    let gone = t
        .call("GET", &format!("{prefix}api"), Some(&ann), None)
        .await;
    assert_eq!(gone.status, 404, "{}", gone.text);

    // Started again and stopped by its user.
    let s = t
        .call(
            "POST",
            "/api/sessions",
            Some(&ann),
            Some(json!({"runtimeId": rid, "wait": true})),
        )
        .await;
    let sid2 = s.body["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(s.body["session"]["state"], "ready", "{}", s.text);
    let stop = t
        .call("DELETE", &format!("/api/sessions/{sid2}"), Some(&ann), None)
        .await;
    assert_eq!(stop.status, 200, "{}", stop.text);

    // Out of memory: a process in a 256 MiB session allocates past it (touching every page).
    let small = t
        .register(json!({"name": "small", "imageId": image, "maxCpu": 1,
                         "maxMemory": 256, "maxMemoryUnit": "m", "maxSwapMemory": 256}))
        .await;
    let small_id = small["id"].as_str().unwrap().to_string();
    let s = t
        .call(
            "POST",
            "/api/sessions",
            Some(&ann),
            Some(json!({"runtimeId": small_id, "wait": true})),
        )
        .await;
    assert_eq!(s.body["session"]["state"], "ready", "{}", s.text);
    let sid3 = s.body["session"]["id"].as_str().unwrap().to_string();
    let container = s.body["session"]["containerName"].as_str().unwrap();
    let _ = Command::new("docker")
        .args(["exec", container, "python3", "-c"])
        .arg("x = b'x' * (600 << 20)")
        .output();
    let ended = t.wait_session_state(&sid3, &ann, "ready").await;
    assert_eq!(ended["state"], "oom-killed", "{ended}");
    let last = scrape(&t, Some(&ann)).await;
    assert_eq!(counter(&last, "nbrt_sessions_oom_killed_total"), 1.0);
    assert_eq!(sessions_gauge(&last, &small_id, "oom-killed"), 1.0);
    assert_eq!(starts(&last), 3.0);
    assert_eq!(counter(&last, "nbrt_proxy_errors_total"), f64::from(errors));

    // The audit log: ann's starts and stop, the site's cull.
    let records = audit(&t, "?limit=1000").await;
    let sessions: Vec<(String, String, String)> = records
        .iter()
        .rev()
        .filter(|r| r["action"].as_str().unwrap().starts_with("session."))
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["user"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = |a: &str, u: &str, id: &str| (a.to_string(), u.to_string(), id.to_string());
    assert_eq!(
        sessions,
        vec![
            s("session.start", "ann", &sid),
            s("session.cull", "(site)", &sid),
            s("session.start", "ann", &sid2),
            s("session.stop", "ann", &sid2),
            s("session.start", "ann", &sid3),
        ]
    );

    // Served publicly when the site says so.
    let open = start_site(|c| c.metrics_public = true).await;
    let a = open.call("GET", "/metrics", None, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.text.contains("nbrt_proxy_requests_total 0"), "{}", a.text);
}
