//! A runtime whose server is not Jupyter: the stock `codeserver` stack (code-server, which
//! answers at the root of its URL) as a site's runtime on the real Docker engine. The site
//! reads how to reach it off the image (`server = "web"`, `http-rewrite-uri = "/"`,
//! `ready-path = "/healthz"`), waits for `/healthz`, and its proxy strips the session's
//! prefix as Kubeflow's `notebooks.kubeflow.org/http-rewrite-uri: /` does.

mod common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// The stock codeserver image built by nbrt into the shared store and loaded into Docker:
/// its full ID.
fn codeserver_image() -> Option<String> {
    let tag = std::thread::spawn(|| nbrt_testkit::stock::docker_image("codeserver"))
        .join()
        .expect("building and loading the stock codeserver image")?;
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .expect("docker image inspect");
    assert!(out.status.success(), "{out:?}");
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_server_answers_under_the_sites_proxy_with_its_prefix_stripped() {
    let Some(image) = codeserver_image() else {
        return;
    };
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", false).await;
    let rt = t
        .register(json!({"name": "codeserver", "imageId": image}))
        .await;
    // Read off the image's [runtime] label, with its other defaults.
    assert_eq!(
        rt["server"],
        json!({"server": "web", "httpRewriteUri": "/", "readyPath": "/healthz"}),
        "{rt}"
    );
    assert_eq!(rt["maxCpu"], 2.0, "{rt}");
    let rt_id = rt["id"].as_str().unwrap();

    let s = t.start_ready(&ann, rt_id).await;
    let prefix = format!("/user/ann/{rt_id}");

    // code-server's own health endpoint, at /healthz of the server: reached under the prefix.
    let health = t
        .call("GET", &format!("{prefix}/healthz"), Some(&ann), None)
        .await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert!(
        health.body["status"].is_string(),
        "code-server's /healthz answers {{\"status\": …}}: {}",
        health.text
    );

    // The workbench page: code-server redirects to its folder with a relative URL, which
    // stays under the prefix; the page loads its scripts relative to it too.
    let page = t.call("GET", &format!("{prefix}/"), Some(&ann), None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains("vscode") || page.text.contains("code-server"),
        "not code-server's workbench: {}",
        &page.text[..page.text.len().min(400)]
    );
    assert!(
        !page.text.contains(&prefix),
        "the server saw no prefix, so its page names none: {}",
        &page.text[..page.text.len().min(400)]
    );
    // A static file of the workbench, by the path the page names relative to the root.
    let asset = t
        .call("GET", &format!("{prefix}/manifest.json"), Some(&ann), None)
        .await;
    assert_eq!(asset.status, 200, "{}", asset.text);
    assert_eq!(asset.body["name"], "code-server", "{}", asset.text);

    // Only the owner reaches it.
    let other = t
        .call("GET", &format!("{prefix}/healthz"), Some(&bob), None)
        .await;
    assert_eq!(other.status, 403, "{}", other.text);

    // The session in the API: ready, at its URL.
    let listed = t.call("GET", "/api/sessions", Some(&ann), None).await;
    let sessions: &Value = &listed.body["sessions"];
    assert_eq!(sessions[0]["url"], format!("{prefix}/"), "{}", listed.text);

    let id = s["id"].as_str().unwrap();
    let stop = t
        .call("DELETE", &format!("/api/sessions/{id}"), Some(&ann), None)
        .await;
    assert!(stop.status < 300, "{}", stop.text);
}
