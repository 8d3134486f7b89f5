//! ArcGIS Notebook Server's Administrator Directory runtime operations under
//! `/arcgis/admin/notebooks/runtimes`, called the way ArcGIS scripts call them: real `curl`
//! processes posting form fields (`curl -d f=json -d runtimeName=…`) with `token=`. Register,
//! update, manifest, list, unregister and restore factory runtimes, on the same registry as
//! `/api` (and in the same audit log).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn docker() -> bool {
    nbrt_testkit::require_docker()
}

fn have_curl() -> bool {
    nbrt_testkit::require("curl", &["--version"], "curl")
}

/// `curl -sS -w '\n%{http_code}' <args> <base><path>`: the HTTP status and the body.
fn curl(t: &TestSite, path: &str, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("{}{path}", t.base))
        .output()
        .expect("running curl");
    assert!(
        out.status.success(),
        "curl {args:?} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    (
        code.trim().parse().expect("an HTTP status"),
        body.to_string(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const RUNTIMES: &str = "/arcgis/admin/notebooks/runtimes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arcgis_calls_with_curl_register_update_list_unregister_and_restore() {
    if !docker() || !have_curl() {
        return;
    }
    // The stock jupyter stack in the store, for restore (None: skipping is allowed and the
    // tools to build it are missing).
    let store = nbrt_testkit::stock::store_with("jupyter");
    let t = start_site(|c| {
        if store.is_some() {
            c.store = Some(nbrt_testkit::stock::store_dir());
        }
    })
    .await;
    let image = jupyter_image();
    let token = format!("token={}", t.admin);
    let image_field = format!("imageId={image}");

    // Register with seed 000's fields, form-encoded as ArcGIS's register takes them.
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/register"),
        &[
            "-d",
            "f=json",
            "-d",
            &token,
            "-d",
            "runtimeName=Notebook Custom Runtime Python 3",
            "-d",
            "version=10.0",
            "-d",
            "containerType=docker",
            "-d",
            &image_field,
            "-d",
            "maxCpu=2.0",
            "-d",
            "maxMemory=4",
            "-d",
            "maxMemoryUnit=g",
            "-d",
            "maxSwapMemory=6",
            "-d",
            "maxSwapMemoryUnit=g",
            "-d",
            "sharedMemory=512",
            "-d",
            "sharedMemoryUnit=m",
            "-d",
            "requiresAdvancedPrivileges=false",
        ],
    );
    assert_eq!(status, 200, "{text}");
    let reg = json(&text);
    assert_eq!(reg["status"], "success", "{text}");
    let rt = &reg["notebookRuntime"];
    assert_eq!(rt["name"], "Notebook Custom Runtime Python 3");
    assert_eq!(rt["version"], "10.0");
    assert_eq!(rt["maxCpu"], 2.0);
    assert_eq!(
        (&rt["maxMemory"], &rt["maxMemoryUnit"]),
        (&4.0.into(), &"g".into())
    );
    assert_eq!(rt["maxSwapMemory"], 6.0);
    assert_eq!(
        (&rt["sharedMemory"], &rt["sharedMemoryUnit"]),
        (&512.0.into(), &"m".into())
    );
    assert_eq!(rt["requiresAdvancedPrivileges"], false);
    let id = rt["id"].as_str().unwrap().to_string();

    // The same record through the site's own API.
    let own = t
        .call("GET", &format!("/api/runtimes/{id}"), Some(&t.admin), None)
        .await;
    assert_eq!(own.body["imageId"], image.as_str());

    // Update: the fields given change, the others stay; a manifest file goes up as a field
    // (Manager's "Library manifest").
    let manifest = t.dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        r#"[{"base_url": null, "build_number": 0, "build_string": "py_0", "channel": "pkgs/main",
             "dist_name": "graphviz-2.50.0-py_0", "name": "graphviz", "platform": "linux-64",
             "version": "2.50.0"}]"#,
    )
    .unwrap();
    let manifest_field = format!("libraryManifest@{}", manifest.display());
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}/update"),
        &[
            "-d",
            "f=json",
            "-d",
            &token,
            "-d",
            "maxCpu=1.5",
            "-d",
            "requiresAdvancedPrivileges=true",
            "--data-urlencode",
            &manifest_field,
        ],
    );
    assert_eq!(status, 200, "{text}");
    let up = json(&text);
    assert_eq!(up["status"], "success", "{text}");
    assert_eq!(up["notebookRuntime"]["maxCpu"], 1.5);
    assert_eq!(up["notebookRuntime"]["requiresAdvancedPrivileges"], true);
    assert_eq!(up["notebookRuntime"]["maxSwapMemory"], 6.0);
    assert_eq!(up["notebookRuntime"]["libraryCount"], 1);
    let (status, text) = curl(&t, &format!("{RUNTIMES}/{id}/manifest?f=json&{token}"), &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["libraries"][0]["name"], "graphviz");

    // List (GET with the query string; pjson is indented), and one runtime.
    let (status, text) = curl(&t, &format!("{RUNTIMES}?f=pjson&{token}"), &[]);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\n  \"runtimes\""), "{text}");
    let names: Vec<String> = json(&text)["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Notebook Custom Runtime Python 3"]);
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}"),
        &["-d", "f=json", "-d", &token],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["id"], id.as_str());

    // Errors in ArcGIS's shape, naming the field; the token's codes.
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}/update"),
        &["-d", "f=json", "-d", &token, "-d", "maxMemoryUnit=gb"],
    );
    assert_eq!(status, 400, "{text}");
    let err = json(&text);
    assert_eq!(err["status"], "error");
    assert_eq!(err["code"], 400);
    assert!(
        err["messages"][0]
            .as_str()
            .unwrap()
            .starts_with("maxMemoryUnit:"),
        "{text}"
    );
    let (status, text) = curl(&t, &format!("{RUNTIMES}/register"), &["-d", "f=json"]);
    assert_eq!(
        (status, json(&text)["code"].as_u64()),
        (401, Some(499)),
        "{text}"
    );
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/register"),
        &["-d", "f=json", "-d", "token=nbrt_not_a_token"],
    );
    assert_eq!(
        (status, json(&text)["code"].as_u64()),
        (401, Some(498)),
        "{text}"
    );
    let ann = t.user("ann", "author", false).await;
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}/unregister"),
        &["-d", "f=json", "-d", &format!("token={ann}")],
    );
    assert_eq!(
        (status, json(&text)["code"].as_u64()),
        (403, Some(403)),
        "{text}"
    );
    // The site's bearer token works too, with a JSON body.
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}/update"),
        &[
            "-H",
            &format!("Authorization: Bearer {}", t.admin),
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"f": "json", "version": "10.1"}"#,
        ],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text)["notebookRuntime"]["version"], "10.1");

    // Unregister: gone from the list.
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/{id}/unregister"),
        &["-d", "f=json", "-d", &token],
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text), serde_json::json!({"status": "success"}));
    let (_, text) = curl(&t, &format!("{RUNTIMES}?f=json&{token}"), &[]);
    assert_eq!(json(&text)["runtimes"], serde_json::json!([]));

    // Restore factory runtimes: the stock jupyter stack of the store.
    let (status, text) = curl(
        &t,
        &format!("{RUNTIMES}/restoreFactoryRuntimes"),
        &["-d", "f=json", "-d", &token],
    );
    assert_eq!(status, 200, "{text}");
    let restored = json(&text);
    assert_eq!(restored["status"], "success", "{text}");
    let names: Vec<&str> = restored["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    if store.is_some() {
        assert!(names.contains(&"nbrt jupyter"), "{text}");
        let (_, text) = curl(&t, &format!("{RUNTIMES}?f=json&{token}"), &[]);
        let listed = json(&text);
        let factory = listed["runtimes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "nbrt jupyter")
            .expect("the factory runtime is listed");
        assert_eq!(factory["builtin"], true);
    } else {
        assert!(names.is_empty(), "{text}");
    }

    // Every change above is in the audit log, by admin.
    let log = t
        .call("GET", "/api/audit?limit=1000", Some(&t.admin), None)
        .await;
    let actions: Vec<(&str, &str)> = log.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| (r["action"].as_str().unwrap(), r["user"].as_str().unwrap()))
        .filter(|(a, _)| a.starts_with("runtime."))
        .collect();
    assert_eq!(
        actions,
        [
            ("runtime.register", "admin"),
            ("runtime.update", "admin"),
            ("runtime.update", "admin"),
            ("runtime.unregister", "admin"),
            ("runtime.restore", "admin"),
        ]
    );
}
