//! The REST API without sessions: runtimes (validation, update, deprecate, unregister,
//! manifest, factory restore), roles and tokens, notebooks and migrations, the OpenAPI
//! document against the router.

mod common;

use common::*;
use serde_json::{json, Value};

fn docker() -> bool {
    nbrt_testkit::require_docker()
}

async fn runtime_count(t: &TestSite) -> usize {
    let a = t.call("GET", "/api/runtimes", Some(&t.admin), None).await;
    a.body["runtimes"].as_array().expect("runtimes").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_runtimes_name_the_field_and_store_nothing() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let image = jupyter_image();
    let good = runtime_body("py", &image);
    t.register(good.clone()).await;
    assert_eq!(runtime_count(&t).await, 1);

    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b["name"] = json!("other");
        b[k] = v;
        b
    };
    let cases: Vec<(Value, &str, u16)> = vec![
        (
            with("imageId", json!("sha256:".to_string() + &"0".repeat(64))),
            "imageId",
            400,
        ),
        (with("imageId", json!(&image[..19])), "imageId", 400),
        (with("maxMemoryUnit", json!("gb")), "maxMemoryUnit", 400),
        (
            with("maxSwapMemoryUnit", json!("t")),
            "maxSwapMemoryUnit",
            400,
        ),
        (with("maxCpu", json!(0)), "maxCpu", 400),
        (with("maxCpu", json!(-1)), "maxCpu", 400),
        (with("maxMemory", json!(0)), "maxMemory", 400),
        (with("maxMemory", json!(-512)), "maxMemory", 400),
        (with("sharedMemory", json!(-1)), "sharedMemory", 400),
        (with("maxSwapMemory", json!(0)), "maxSwapMemory", 400),
        (with("maxSwapMemory", json!(100)), "maxSwapMemory", 400),
        (
            with("dockerRuntime", json!("no-such-runtime")),
            "dockerRuntime",
            400,
        ),
        (
            with("containerType", json!("kubernetes")),
            "containerType",
            400,
        ),
        (with("maxCpu", json!("lots")), "maxCpu", 400),
        (with("bogus", json!(1)), "bogus", 400),
        (
            with("manifest", json!([{"name": "numpy"}])),
            "manifest",
            400,
        ),
        // duplicate name
        (runtime_body("py", &image), "name", 409),
    ];
    for (body, field, status) in cases {
        let a = t
            .call("POST", "/api/runtimes", Some(&t.admin), Some(body.clone()))
            .await;
        assert_eq!(a.status, status, "{body}: {}", a.text);
        assert_eq!(a.body["field"], field, "{body}: {}", a.text);
        assert!(
            a.body["error"].as_str().unwrap().contains(field),
            "{}",
            a.text
        );
        assert_eq!(runtime_count(&t).await, 1, "nothing stored after {body}");
    }
    // Not JSON at all.
    let resp = t
        .http
        .post(format!("{}/api/runtimes", t.base))
        .bearer_auth(&t.admin)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(runtime_count(&t).await, 1);

    // A failed update changes nothing either.
    let id = t
        .call("GET", "/api/runtimes", Some(&t.admin), None)
        .await
        .body["runtimes"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = t
        .call(
            "PATCH",
            &format!("/api/runtimes/{id}"),
            Some(&t.admin),
            Some(json!({"maxMemory": -1})),
        )
        .await;
    assert_eq!(
        (a.status, a.body["field"].as_str()),
        (400, Some("maxMemory"))
    );
    let rt = t
        .call("GET", &format!("/api/runtimes/{id}"), Some(&t.admin), None)
        .await
        .body;
    assert_eq!(rt["maxMemory"], 512.0);
}

/// What an operator expects of registration and change: the image's `[runtime]` defaults
/// fill what a registration leaves out; names and manifests are checked, saying the rule;
/// limits past what the engine has are refused at registration, naming the field; a PATCH
/// changes what it names (a given swap stays, a derived one follows the memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_and_changes_as_an_operator_expects() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let image = jupyter_image();
    // stacks/jupyter/runtime.toml [runtime]: 2 CPUs, 4g, shared memory 1g.
    let rt = t.register(json!({"name": "bare", "imageId": image})).await;
    assert_eq!(rt["maxCpu"], 2.0, "{rt}");
    assert_eq!(
        (&rt["maxMemory"], &rt["maxMemoryUnit"]),
        (&json!(4.0), &json!("g"))
    );
    assert_eq!(
        (&rt["maxSwapMemory"], &rt["maxSwapMemoryUnit"]),
        (&json!(8.0), &json!("g"))
    );
    assert_eq!(
        (&rt["sharedMemory"], &rt["sharedMemoryUnit"]),
        (&json!(1.0), &json!("g"))
    );
    // What the registration gives wins.
    let mine = t
        .register(
            json!({"name": "given", "imageId": image, "maxCpu": 0.5, "maxMemory": 1,
            "maxMemoryUnit": "g", "sharedMemory": 64, "sharedMemoryUnit": "m"}),
        )
        .await;
    assert_eq!(
        (&mine["maxCpu"], &mine["maxMemory"]),
        (&json!(0.5), &json!(1.0))
    );
    assert_eq!(mine["sharedMemory"], 64.0);

    let refused = |body: Value, field: &'static str, needle: &'static str| {
        let t = &t;
        async move {
            let a = t
                .call("POST", "/api/runtimes", Some(&t.admin), Some(body.clone()))
                .await;
            assert_eq!(a.status, 400, "{body}: {}", a.text);
            assert_eq!(a.body["field"], field, "{body}: {}", a.text);
            let msg = a.body["error"].as_str().unwrap();
            assert!(msg.contains(needle), "{body}: {msg}");
        }
    };
    let mut b = runtime_body("Bad Name!", &image);
    refused(b.clone(), "name", "letters, digits, spaces and . _ - ( ) +").await;
    b["name"] = json!("strings");
    b["manifest"] = json!(r#"[{"name": "numpy", "version": "2"}]"#);
    refused(b.clone(), "manifest", "a string is not a manifest").await;
    b.as_object_mut().unwrap().remove("manifest");
    b["maxCpu"] = json!(512);
    refused(b.clone(), "maxCpu", "CPUs").await;
    b["maxCpu"] = json!(1);
    b["maxMemory"] = json!(100_000);
    b["maxMemoryUnit"] = json!("g");
    refused(b.clone(), "maxMemory", "GiB of memory").await;
    assert_eq!(runtime_count(&t).await, 2, "nothing stored");

    // PATCH: an explicit swap survives a memory change; a derived one follows it.
    let explicit = t
        .register(
            json!({"name": "explicit", "imageId": image, "maxCpu": 1, "maxMemory": 1,
            "maxMemoryUnit": "g", "maxSwapMemory": 3, "maxSwapMemoryUnit": "g"}),
        )
        .await;
    let patch = |id: &Value, body: Value| {
        let t = &t;
        let path = format!("/api/runtimes/{}", id.as_str().unwrap());
        async move { t.call("PATCH", &path, Some(&t.admin), Some(body)).await }
    };
    let a = patch(&explicit["id"], json!({"maxMemory": 2})).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let r = &a.body["notebookRuntime"];
    assert_eq!(
        (&r["maxMemory"], &r["maxSwapMemory"]),
        (&json!(2.0), &json!(3.0)),
        "{r}"
    );
    let a = patch(&mine["id"], json!({"maxMemory": 2})).await;
    let r = &a.body["notebookRuntime"];
    assert_eq!(
        (&r["maxMemory"], &r["maxSwapMemory"]),
        (&json!(2.0), &json!(4.0)),
        "{r}"
    );
    // Past the engine on a change too, and the record stays as it was.
    let a = patch(&mine["id"], json!({"maxCpu": 512})).await;
    assert_eq!(
        (a.status, a.body["field"].as_str()),
        (400, Some("maxCpu")),
        "{}",
        a.text
    );
    let a = t
        .call(
            "GET",
            &format!("/api/runtimes/{}", mine["id"].as_str().unwrap()),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(a.body["maxCpu"], 0.5);

    // A GPU count: none unless set, and only for a GPU runtime (no GPU here: this one is
    // not), refused naming the field, the record unchanged.
    assert_eq!(a.body["gpus"], Value::Null, "{}", a.text);
    for (body, needle) in [
        (json!({"gpus": 2}), "needs a GPU runtime"),
        (json!({"gpus": 65}), "give a whole number from 0 to 64"),
        (json!({"gpus": "two"}), "expected a number"),
    ] {
        let a = patch(&mine["id"], body.clone()).await;
        assert_eq!(
            (a.status, a.body["field"].as_str()),
            (400, Some("gpus")),
            "{body}: {}",
            a.text
        );
        let msg = a.body["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let a = t
        .call(
            "GET",
            &format!("/api/runtimes/{}", mine["id"].as_str().unwrap()),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(a.body["gpus"], Value::Null, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_life_roles_and_migration() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let image = jupyter_image();
    let ann = t.user("ann", "author", false).await;

    // ArcGIS's spellings on input; swap defaults to twice the memory.
    let a = t.register(json!({"name": "Python 3 Standard", "version": "10.0", "imageId": image,
        "maxCPU": "2", "maxMemory": 4, "maxMemoryUnit": "g", "sharedMemorySize": 512,
        "sharedMemorySizeUnit": "m", "requiresAdvancedPrivileges": false,
        "manifest": [{"name": "numpy", "version": "1.26.4", "channel": "conda-forge", "base_url": null},
                     {"name": "pandas", "version": "2.1.0"}]}))
    .await;
    assert_eq!(a["maxCpu"], 2.0);
    assert_eq!(
        (a["maxSwapMemory"].as_f64(), a["maxSwapMemoryUnit"].as_str()),
        (Some(8.0), Some("g"))
    );
    assert_eq!(a["sharedMemory"], 512.0);
    assert_eq!(a["isManifestSupported"], true);
    let a_id = a["id"].as_str().unwrap().to_string();
    let b = t.register(json!({"name": "Python 3 Advanced", "imageId": image, "maxCpu": 1,
        "maxMemory": 6, "maxMemoryUnit": "g", "requiresAdvancedPrivileges": true,
        "manifest": {"libraries": [{"name": "numpy", "version": "2.0.0"}, {"name": "arcpy", "version": "3.4"}]}}))
    .await;
    let b_id = b["id"].as_str().unwrap().to_string();

    // Authors read, only admins write.
    assert_eq!(
        t.call("GET", "/api/runtimes", Some(&ann), None)
            .await
            .status,
        200
    );
    let denied = t
        .call(
            "POST",
            "/api/runtimes",
            Some(&ann),
            Some(runtime_body("x", &image)),
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.text);
    assert_eq!(t.call("GET", "/api/runtimes", None, None).await.status, 401);
    assert_eq!(
        t.call("GET", "/api/runtimes", Some("nbrt_00"), None)
            .await
            .status,
        401
    );
    assert_eq!(
        t.call("GET", "/api/users", Some(&ann), None).await.status,
        403
    );

    // Manifest as ArcGIS serves it.
    let m = t
        .call(
            "GET",
            &format!("/api/runtimes/{a_id}/manifest"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(m.body["libraries"].as_array().unwrap().len(), 2);
    assert_eq!(m.body["libraries"][0]["channel"], "conda-forge");

    // Update limits.
    let u = t
        .call(
            "POST",
            &format!("/api/runtimes/{a_id}/update"),
            Some(&t.admin),
            Some(json!({"maxMemory": 2, "maxMemoryUnit": "g"})),
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.body["notebookRuntime"]["maxSwapMemory"], 4.0);

    // Notebooks: ann may not use the advanced runtime.
    let nb = t
        .call(
            "POST",
            "/api/notebooks",
            Some(&ann),
            Some(json!({"name": "one", "runtimeId": a_id})),
        )
        .await;
    assert_eq!(nb.status, 201, "{}", nb.text);
    let adv = t
        .call(
            "POST",
            "/api/notebooks",
            Some(&ann),
            Some(json!({"name": "two", "runtimeId": b_id})),
        )
        .await;
    assert_eq!(adv.status, 403, "{}", adv.text);
    let admin_nb = t
        .call(
            "POST",
            "/api/notebooks",
            Some(&t.admin),
            Some(json!({"name": "a", "runtimeId": a_id})),
        )
        .await;
    assert_eq!(admin_nb.status, 201);
    let nope = t
        .call(
            "POST",
            "/api/notebooks",
            Some(&ann),
            Some(json!({"name": "x", "runtimeId": "nope"})),
        )
        .await;
    assert_eq!(
        (nope.status, nope.body["field"].as_str()),
        (404, Some("runtimeId"))
    );

    // Unregister refused while notebooks use it.
    let un = t
        .call(
            "DELETE",
            &format!("/api/runtimes/{a_id}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(un.status, 409, "{}", un.text);

    // Migration to the advanced runtime is blocked by ann's missing privilege; the dry run says so.
    let dry = t
        .call(
            "POST",
            "/api/migrations",
            Some(&t.admin),
            Some(json!({"from": a_id, "to": b_id, "dryRun": true})),
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.text);
    let d = &dry.body["migration"];
    assert_eq!(d["notebooks"].as_array().unwrap().len(), 2);
    assert_eq!(d["blockedOwners"], json!(["ann"]));
    assert_eq!(
        d["libraryDiff"]["added"],
        json!([{"name": "arcpy", "version": "3.4"}])
    );
    assert_eq!(
        d["libraryDiff"]["removed"],
        json!([{"name": "pandas", "version": "2.1.0"}])
    );
    assert_eq!(
        d["libraryDiff"]["changed"],
        json!([{"name": "numpy", "from": "1.26.4", "to": "2.0.0"}])
    );
    let refused = t
        .call(
            "POST",
            "/api/migrations",
            Some(&t.admin),
            Some(json!({"from": a_id, "to": b_id})),
        )
        .await;
    assert_eq!(refused.status, 409);

    // A third runtime everyone may use: migrate, check, roll back.
    let c = t
        .register(runtime_body("Python 3 Standard 11.0", &image))
        .await;
    let c_id = c["id"].as_str().unwrap().to_string();
    let mig = t
        .call(
            "POST",
            "/api/migrations",
            Some(&t.admin),
            Some(json!({"from": a_id, "to": c_id})),
        )
        .await;
    assert_eq!(mig.status, 201, "{}", mig.text);
    let mig_id = mig.body["migration"]["id"].as_str().unwrap().to_string();
    let nbs = t
        .call("GET", "/api/notebooks", Some(&t.admin), None)
        .await
        .body["notebooks"]
        .clone();
    assert!(
        nbs.as_array()
            .unwrap()
            .iter()
            .all(|n| n["runtimeId"] == c_id.as_str()),
        "{nbs}"
    );
    // Now the old runtime can be deprecated and unregistered... after a rollback test.
    let rb = t
        .call(
            "POST",
            &format!("/api/migrations/{mig_id}/rollback"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(rb.status, 200, "{}", rb.text);
    let nbs = t
        .call("GET", "/api/notebooks", Some(&t.admin), None)
        .await
        .body["notebooks"]
        .clone();
    assert!(
        nbs.as_array()
            .unwrap()
            .iter()
            .all(|n| n["runtimeId"] == a_id.as_str()),
        "{nbs}"
    );
    let again = t
        .call(
            "POST",
            &format!("/api/migrations/{mig_id}/rollback"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(again.status, 409);

    // Move for good, deprecate and unregister the old runtime.
    let mig = t
        .call(
            "POST",
            "/api/migrations",
            Some(&t.admin),
            Some(json!({"from": a_id, "to": c_id})),
        )
        .await;
    assert_eq!(mig.status, 201);
    let dep = t
        .call(
            "POST",
            &format!("/api/runtimes/{a_id}/deprecate"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(dep.body["notebookRuntime"]["deprecated"], true);
    assert!(dep.body["notebookRuntime"]["deprecationDate"].is_i64());
    let nb_on_dep = t
        .call(
            "POST",
            "/api/notebooks",
            Some(&ann),
            Some(json!({"name": "z", "runtimeId": a_id})),
        )
        .await;
    assert_eq!(nb_on_dep.status, 400);
    let un = t
        .call(
            "POST",
            &format!("/api/runtimes/{a_id}/unregister"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(un.status, 200, "{}", un.text);
    assert_eq!(
        t.call(
            "GET",
            &format!("/api/runtimes/{a_id}"),
            Some(&t.admin),
            None
        )
        .await
        .status,
        404
    );

    // Tokens: a second token for ann works; it is stored hashed.
    let tok = t
        .call(
            "POST",
            "/api/users/ann/tokens",
            Some(&ann),
            Some(json!({"label": "laptop"})),
        )
        .await;
    assert_eq!(tok.status, 201);
    let second = tok.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        t.call("GET", "/api/me", Some(&second), None).await.body["name"],
        "ann"
    );
    let stored: Vec<String> = t
        .site
        .db
        .with(|c| {
            let mut st = c.prepare("SELECT hash FROM tokens")?;
            let rows = st.query_map([], |r| r.get(0))?.collect();
            rows
        })
        .unwrap();
    assert!(!stored.iter().any(|h| h == &second || h == &t.admin));
    assert!(stored.contains(&nbrt_site::auth::hash_token(&second)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_factory_with_an_empty_store_says_what_is_missing() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let a = t
        .call("POST", "/api/runtimes/restore", Some(&t.admin), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["missing"], json!(["jupyter:latest", "scipy:latest"]));
    assert_eq!(runtime_count(&t).await, 0);
}

/// One manifest definition: the same image registered three times — with the manifest
/// ArcGIS's recipe makes (`conda list --json` run in a container of the image), with what
/// `nbrt manifest --format arcgis` printed before Debian packages had their own list, and
/// with none (the site reads the image) — gives migrations with no library changes and no
/// Debian package reported removed; the site-read one lists Debian packages apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_made_in_different_ways_agree() {
    if !docker() {
        return;
    }
    let Some(store) = nbrt_testkit::stock::store_with("jupyter") else {
        return;
    };
    let image = jupyter_image();
    let t = start_site(|c| c.store = Some(nbrt_testkit::stock::store_dir())).await;
    let out = std::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "--entrypoint",
            "/opt/conda/bin/conda",
            &image,
            "list",
            "--json",
        ])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conda_list: Value = serde_json::from_slice(&out.stdout).expect("conda list --json");
    let libraries = conda_list.as_array().map(|a| a.len() as u64);
    let found = store.resolve("jupyter:latest").expect("stock jupyter");
    let (_, packages) =
        nbrt_inspect::read_image(&store, &found.image, &nbrt_oci::Progress::hidden()).unwrap();
    let with_debian = nbrt_inspect::manifest::records(&packages, Default::default());
    let debian_count = packages
        .iter()
        .filter(|p| p.source == nbrt_inspect::packages::Source::Debian)
        .count();
    assert!(debian_count > 50, "{debian_count}");

    let mut ids = Vec::new();
    for (name, manifest) in [
        ("From Conda List", Some(conda_list.clone())),
        (
            "From Old Manifest",
            Some(json!({ "libraries": with_debian })),
        ),
        ("Read By The Site", None),
    ] {
        let mut body = runtime_body(name, &image);
        if let Some(m) = manifest {
            body["manifest"] = m;
        }
        let r = t.register(body).await;
        assert_eq!(r["libraryCount"].as_u64(), libraries, "{name}: {r}");
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let manifest_of = |i: usize| {
        let path = format!("/api/runtimes/{}/manifest", ids[i]);
        let t = &t;
        async move {
            let a = t.call("GET", &path, Some(&t.admin), None).await;
            assert_eq!(a.status, 200, "{}", a.text);
            a.body
        }
    };
    let read = manifest_of(2).await;
    assert_eq!(read["libraries"], conda_list);
    assert_eq!(read["debian"].as_array().map(Vec::len), Some(debian_count));
    // The legacy upload's Debian records moved to their own list.
    let old = manifest_of(1).await;
    assert_eq!(old["libraries"], conda_list);
    assert_eq!(old["debian"], read["debian"]);
    assert!(manifest_of(0).await["debian"].is_null());
    for (from, to) in [(0, 2), (2, 0), (1, 2), (0, 1)] {
        let dry = t
            .call(
                "POST",
                "/api/migrations",
                Some(&t.admin),
                Some(json!({"from": ids[from], "to": ids[to], "dryRun": true})),
            )
            .await;
        assert_eq!(dry.status, 200, "{}", dry.text);
        let d = &dry.body["migration"]["libraryDiff"];
        assert_eq!(
            (&d["added"], &d["removed"], &d["changed"]),
            (&json!([]), &json!([]), &json!([])),
            "{from} → {to}: {d}"
        );
        assert_eq!(d["unchanged"].as_u64(), libraries);
        // conda list knows no Debian packages: they are not compared, never "removed".
        if from == 0 || to == 0 {
            assert!(d["debian"].is_null(), "{d}");
        } else {
            assert_eq!(d["debian"]["removed"], json!([]), "{d}");
            assert_eq!(d["debian"]["unchanged"].as_u64(), Some(debian_count as u64));
        }
    }
}

/// The stock stacks built by nbrt into a store (`nbrt_testkit::stock`): restore registers
/// the ones that serve notebooks with their stacks' `[runtime]` limits and the libraries read
/// from the images, and a second restore resets what an admin changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_factory_registers_the_stock_stacks() {
    if !docker() {
        return;
    }
    let Some(_store) = nbrt_testkit::stock::store() else {
        return;
    };
    let t = start_site(|c| c.store = Some(nbrt_testkit::stock::store_dir())).await;
    let custom = t.register(runtime_body("mine", &jupyter_image())).await;
    let a = t
        .call("POST", "/api/runtimes/restore", Some(&t.admin), None)
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["missing"], json!([]), "{}", a.text);
    assert_eq!(a.body["skipped"], json!([]), "{}", a.text);
    assert_eq!(a.body["updated"], json!([]), "{}", a.text);
    assert_eq!(a.body["unchanged"], json!([]), "{}", a.text);
    let restored = a.body["added"].as_array().unwrap();
    let names: Vec<&str> = restored
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nbrt jupyter", "nbrt scipy"]);
    let jupyter = &restored[0];
    let scipy = &restored[1];
    // stacks/jupyter/runtime.toml [runtime]: 2 CPUs, 4g, shared memory 1g.
    assert_eq!(jupyter["maxCpu"], 2.0);
    assert_eq!(
        (&jupyter["maxMemory"], &jupyter["maxMemoryUnit"]),
        (&json!(4.0), &json!("g"))
    );
    assert_eq!(
        (&jupyter["maxSwapMemory"], &jupyter["maxSwapMemoryUnit"]),
        (&json!(8.0), &json!("g"))
    );
    assert_eq!(
        (&jupyter["sharedMemory"], &jupyter["sharedMemoryUnit"]),
        (&json!(1.0), &json!("g"))
    );
    // stacks/scipy/runtime.toml: 2 CPUs, 8g, 2g.
    assert_eq!(
        (&scipy["maxMemory"], &scipy["sharedMemory"]),
        (&json!(8.0), &json!(2.0))
    );
    for r in restored {
        assert_eq!(r["builtin"], true);
        assert_eq!(r["deprecated"], false);
        assert!(r["libraryCount"].as_u64().unwrap() > 10, "{r}");
    }
    // The image IDs are the store's images, and the manifest lists what the image holds.
    let store = nbrt_testkit::stock::store().unwrap();
    let want = store
        .resolve("jupyter:latest")
        .unwrap()
        .image
        .id()
        .to_string();
    assert_eq!(jupyter["imageId"], want.as_str());
    let jid = jupyter["id"].as_str().unwrap();
    let libs = t
        .call(
            "GET",
            &format!("/api/runtimes/{jid}/manifest"),
            Some(&t.admin),
            None,
        )
        .await;
    let libs = libs.body["libraries"].as_array().unwrap();
    assert!(libs.iter().any(|l| l["name"] == "jupyterlab"), "{libs:?}");
    let sid = scipy["id"].as_str().unwrap();
    let libs = t
        .call(
            "GET",
            &format!("/api/runtimes/{sid}/manifest"),
            Some(&t.admin),
            None,
        )
        .await;
    assert!(libs.body["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "scipy"));

    // An admin changes a factory runtime; restore puts it back, same ID.
    let changed = t
        .call(
            "POST",
            &format!("/api/runtimes/{jid}/update"),
            Some(&t.admin),
            Some(json!({"maxCpu": 0.5, "sharedMemory": 64, "sharedMemoryUnit": "m"})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let dep = t
        .call(
            "POST",
            &format!("/api/runtimes/{jid}/deprecate"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(dep.status, 200, "{}", dep.text);
    let again = t
        .call("POST", "/api/runtimes/restore", Some(&t.admin), None)
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    // It says what it changed: jupyter reset, scipy untouched.
    assert_eq!(again.body["added"], json!([]), "{}", again.text);
    assert_eq!(again.body["updated"].as_array().unwrap().len(), 1);
    let unchanged: Vec<&Value> = again.body["unchanged"].as_array().unwrap().iter().collect();
    assert_eq!(unchanged.len(), 1, "{}", again.text);
    assert_eq!(unchanged[0]["name"], "nbrt scipy");
    assert_eq!(unchanged[0]["updated"], scipy["updated"], "not written");
    let j2 = &again.body["updated"][0];
    assert_eq!(j2["id"], jid);
    assert_eq!(j2["maxCpu"], 2.0);
    assert_eq!(j2["sharedMemory"], 1.0);
    assert_eq!(j2["sharedMemoryUnit"], "g");
    assert_eq!(j2["deprecated"], false);
    // Custom runtimes are left alone; three runtimes in all.
    let mine = t
        .call(
            "GET",
            &format!("/api/runtimes/{}", custom["id"].as_str().unwrap()),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(mine.body["maxMemory"], 512.0);
    assert_eq!(mine.body["builtin"], false);
    assert_eq!(runtime_count(&t).await, 3);
    // Nothing to do: nothing is said to be restored.
    let third = t
        .call("POST", "/api/runtimes/restore", Some(&t.admin), None)
        .await;
    assert_eq!(third.body["added"], json!([]), "{}", third.text);
    assert_eq!(third.body["updated"], json!([]), "{}", third.text);
    assert_eq!(third.body["unchanged"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_router() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let doc = t.call("GET", "/api/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    // A runtime's GPU count is documented as input and as shown.
    let schemas = &doc.body["components"]["schemas"];
    let gpus = &schemas["RuntimeChange"]["properties"]["gpus"];
    assert_eq!(
        (&gpus["minimum"], &gpus["maximum"]),
        (&json!(0), &json!(64))
    );
    assert!(gpus["description"]
        .as_str()
        .unwrap()
        .contains("nvidia.com/gpu"));
    assert!(schemas["Runtime"]["properties"]["gpus"].is_object());
    let paths = doc.body["paths"].as_object().unwrap();
    let mut n = 0;
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            n += 1;
            let concrete = path
                .replace("{id}", "no-such-id")
                .replace("{name}", "no-such-user");
            let a = t
                .call(&method.to_uppercase(), &concrete, Some(&t.admin), None)
                .await;
            assert_ne!(
                a.status, 405,
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                a.body["route"], false,
                "{method} {path} is documented but not routed: {}",
                a.text
            );
        }
    }
    assert_eq!(n, nbrt_site::openapi::OPERATIONS.len());
    // And the other way: an undocumented path is the router's 404.
    let a = t.call("GET", "/api/nothing", Some(&t.admin), None).await;
    assert_eq!((a.status, &a.body["route"]), (404, &json!(false)));
}

/// Issue 17's token rules: tokens expire, are listed without being shown, are revoked by their
/// owner or an admin; logout revokes the token it was called with (the login cookie's own
/// token, so the typed one keeps working); a disabled user's tokens stop at once; the last
/// enabled administrator cannot be disabled or deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_are_revoked_and_users_are_disabled_or_deleted() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let ann = t.user("ann", "author", false).await;
    let bob = t.user("bob", "author", false).await;
    let me = |tok: &str| {
        let tok = tok.to_string();
        let t = &t;
        async move { t.call("GET", "/api/me", Some(&tok), None).await.status }
    };

    // A token that lives one second works, then does not.
    let short = t
        .call(
            "POST",
            "/api/users/ann/tokens",
            Some(&ann),
            Some(json!({"label": "short", "expiresIn": 1})),
        )
        .await;
    assert_eq!(short.status, 201, "{}", short.text);
    let short_token = short.body["token"].as_str().unwrap().to_string();
    assert!(short.body["info"]["expires"].as_i64().is_some());
    assert_eq!(me(&short_token).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(me(&short_token).await, 401, "an expired token still works");

    // Bad lifetimes name the field; only admins make tokens that never expire.
    for (body, who) in [
        (json!({"expiresIn": -5}), &ann),
        (json!({"expiresIn": "soon"}), &ann),
        (json!({"expiresIn": 0}), &ann),
        (json!({"label": "x".repeat(101)}), &ann),
    ] {
        let a = t
            .call(
                "POST",
                "/api/users/ann/tokens",
                Some(who),
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
    }
    let forever = t
        .call(
            "POST",
            "/api/users/ann/tokens",
            Some(&t.admin),
            Some(json!({"label": "service", "expiresIn": 0})),
        )
        .await;
    assert_eq!(forever.status, 201, "{}", forever.text);
    assert_eq!(forever.body["info"]["expires"], Value::Null);

    // The listing shows IDs and labels, marks the caller's token, never shows a token, and
    // leaves out the expired one. Users see only their own.
    let list = t
        .call("GET", "/api/users/ann/tokens", Some(&ann), None)
        .await;
    assert_eq!(list.status, 200, "{}", list.text);
    let tokens = list.body["tokens"].as_array().unwrap().clone();
    let labels: Vec<&str> = tokens
        .iter()
        .map(|k| k["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(labels.contains(&"initial") && labels.contains(&"service"));
    assert!(!list.text.contains(&ann) && !list.text.contains("nbrt_"));
    let initial = tokens.iter().find(|k| k["label"] == "initial").unwrap();
    assert_eq!(initial["current"], true);
    assert!(initial["lastUsed"].as_i64().is_some());
    assert_eq!(
        t.call("GET", "/api/users/ann/tokens", Some(&bob), None)
            .await
            .status,
        403
    );

    // Revocation by the owner and by an admin; unknown IDs are 404s.
    let service_id = tokens.iter().find(|k| k["label"] == "service").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let service = forever.body["token"].as_str().unwrap().to_string();
    assert_eq!(me(&service).await, 200);
    let del = t
        .call(
            "DELETE",
            &format!("/api/users/ann/tokens/{service_id}"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(me(&service).await, 401, "a revoked token still works");
    for id in [service_id.as_str(), "not-hex", "00000000000000000000"] {
        let a = t
            .call(
                "DELETE",
                &format!("/api/users/ann/tokens/{id}"),
                Some(&ann),
                None,
            )
            .await;
        assert_eq!(a.status, 404, "{id}: {}", a.text);
    }

    // Login gives the cookie a token of its own; logout revokes it and not the typed one.
    let login = t
        .http
        .post(format!("{}/api/login", t.base))
        .header("Content-Type", "application/json")
        .body(json!({"token": ann}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap()
        .to_string();
    assert!(
        cookie.contains("Max-Age=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    assert!(!pair.contains(&ann), "the cookie carries the typed token");
    let with_cookie = |path: &str, method: reqwest::Method| {
        t.http
            .request(method, format!("{}{path}", t.base))
            .header("Cookie", pair.clone())
    };
    let me_cookie = with_cookie("/api/me", reqwest::Method::GET)
        .send()
        .await
        .unwrap();
    assert_eq!(me_cookie.status(), 200);
    let out = with_cookie("/api/logout", reqwest::Method::POST)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let me_cookie = with_cookie("/api/me", reqwest::Method::GET)
        .send()
        .await
        .unwrap();
    assert_eq!(
        me_cookie.status(),
        401,
        "logout left the cookie's token valid"
    );
    assert_eq!(me(&ann).await, 200, "logout revoked the typed token");
    // Logout with a bearer token revokes that token.
    let extra = t
        .call("POST", "/api/users/bob/tokens", Some(&bob), Some(json!({})))
        .await;
    let extra = extra.body["token"].as_str().unwrap().to_string();
    assert_eq!(
        t.call("POST", "/api/logout", Some(&extra), None)
            .await
            .status,
        200
    );
    assert_eq!(me(&extra).await, 401);
    assert_eq!(me(&bob).await, 200);

    // Disabled users are refused with a 403 that says so; enabling restores them.
    let dis = t
        .call(
            "PATCH",
            "/api/users/ann",
            Some(&t.admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(dis.status, 200, "{}", dis.text);
    assert_eq!(dis.body["user"]["disabled"], true);
    let refused = t.call("GET", "/api/me", Some(&ann), None).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert!(refused.text.contains("disabled"), "{}", refused.text);
    assert_eq!(
        t.call(
            "PATCH",
            "/api/users/ann",
            Some(&bob),
            Some(json!({"disabled": false}))
        )
        .await
        .status,
        403
    );
    for body in [
        json!({"disabled": "yes"}),
        json!({"role": "root"}),
        json!({"name": "x"}),
    ] {
        let a = t
            .call(
                "PATCH",
                "/api/users/ann",
                Some(&t.admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, 400, "{body}: {}", a.text);
    }
    t.call(
        "PATCH",
        "/api/users/ann",
        Some(&t.admin),
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(me(&ann).await, 200);

    // The last enabled administrator stays.
    for (method, body) in [
        ("PATCH", Some(json!({"disabled": true}))),
        ("PATCH", Some(json!({"role": "author"}))),
        ("DELETE", None),
    ] {
        let a = t
            .call(method, "/api/users/admin", Some(&t.admin), body)
            .await;
        assert_eq!(a.status, 409, "{method}: {}", a.text);
    }

    // Deleting a user removes its tokens; the name can be used again.
    let del = t
        .call("DELETE", "/api/users/bob", Some(&t.admin), None)
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert_eq!(me(&bob).await, 401);
    assert_eq!(
        t.call("GET", "/api/users/bob", Some(&t.admin), None)
            .await
            .status,
        404
    );
    let left: i64 = t
        .site
        .db
        .with(|c| c.query_row("SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id WHERE u.name = 'bob'", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(left, 0);
    t.user("bob", "author", false).await;
}

/// Issue 17, item 10: a body over the limit gets the API's JSON error (it was axum's plain
/// text), and a state-changing call signed in with the login cookie must declare a JSON body
/// and come from this site: what another site's form or no-cors fetch can send is refused
/// even where `SameSite=Strict` is not honoured. Bearer tokens are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_get_json_and_cookie_calls_must_be_json_from_this_site() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let url = |p: &str| format!("{}{p}", t.base);

    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(33 << 20));
    // A client of its own: the server closes the connection after a 413 (the rest of the
    // body unread), which a pooled connection would carry into the next request.
    let r = reqwest::Client::new()
        .post(url("/api/users"))
        .bearer_auth(&t.admin)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.expect("a JSON 413");
    assert_eq!(body["status"], 413, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("32 MiB"),
        "{body}"
    );

    // Sign in as the UI does; the cookie is the credential from here on.
    let cookie = t.login_cookie(&t.admin).await;
    let host = t.base.trim_start_matches("http://").to_string();
    let post = |name: &str, content_type: Option<&str>, origin: Option<&str>| {
        let mut req = t
            .http
            .post(url("/api/users"))
            .header("Cookie", &cookie)
            .body(json!({"name": name, "role": "author"}).to_string());
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        async move {
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = post("eve1", Some("text/plain"), None).await;
    assert_eq!(status, 415, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap_or("")
        .contains("application/json"));
    let (status, body) = post("eve2", Some("application/x-www-form-urlencoded"), None).await;
    assert_eq!(status, 415, "{body}");
    let own = format!("http://{host}");
    let (status, body) = post(
        "eve3",
        Some("application/json"),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post("eve4", Some("application/json"), Some("null")).await;
    assert_eq!(status, 403, "{body}");
    // None of them made a user.
    let users = t.call("GET", "/api/users", Some(&t.admin), None).await;
    assert!(!users.text.contains("eve"), "{}", users.text);
    // What the UI sends works.
    let (status, body) = post("ann", Some("application/json"), Some(&own)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post("bob", Some("application/json; charset=utf-8"), None).await;
    assert_eq!(status, 201, "{body}");
    // Reads are not state changes; a bearer token is not a browser's credential.
    let r = t
        .http
        .get(url("/api/me"))
        .header("Cookie", &cookie)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let r = t
        .http
        .post(url("/api/users"))
        .bearer_auth(&t.admin)
        .header("Content-Type", "text/plain")
        .body(json!({"name": "cid", "role": "author"}).to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 201);
}

/// JupyterLab's hub menu on the site (`nbrt_site::hub`): "Hub Control Panel" and "Restart
/// Server" land on the sessions page; "Log Out" (the notebook server's `logout`) goes to the
/// site's logout, which revokes the login cookie's token, clears the cookie, is audited and
/// lands on the site's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlabs_hub_menu_lands_on_the_site() {
    if !docker() {
        return;
    }
    let t = start_site(|_| {}).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = http.get(format!("{}{path}", t.base));
        if let Some(c) = cookie {
            req = req.header("Cookie", c);
        }
        async move {
            let r = req.send().await.expect("request");
            let location = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let cookie = r
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (r.status().as_u16(), location, cookie)
        }
    };
    for path in [
        "/hub",
        "/hub/",
        "/hub/home",
        "/hub/spawn",
        "/hub/spawn/ann/rt",
    ] {
        let (status, location, _) = get(path, None).await;
        assert_eq!(
            (status, location.as_deref()),
            (302, Some("/#sessions")),
            "{path}"
        );
    }
    for path in ["/user/ann/some-runtime/logout", "/warm/some-session/logout"] {
        let (status, location, _) = get(path, None).await;
        assert_eq!(
            (status, location.as_deref()),
            (302, Some("/hub/logout")),
            "{path}"
        );
    }

    let cookie = t.login_cookie(&t.admin).await;
    let me = |cookie: String| {
        let req = t
            .http
            .get(format!("{}/api/me", t.base))
            .header("Cookie", cookie);
        async move { req.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(me(cookie.clone()).await, 200);
    let (status, location, cleared) = get("/hub/logout", Some(&cookie)).await;
    assert_eq!((status, location.as_deref()), (302, Some("/")));
    let cleared = cleared.expect("the cookie cleared");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(me(cookie).await, 401, "the cookie's token is revoked");
    assert_eq!(
        t.call("GET", "/api/me", Some(&t.admin), None).await.status,
        200,
        "the typed token still works"
    );
    let audit = t
        .call("GET", "/api/audit?action=logout", Some(&t.admin), None)
        .await;
    assert_eq!(audit.body["records"][0]["user"], "admin", "{}", audit.text);
    // Without a login, logout still lands on the site.
    let (status, location, _) = get("/hub/logout", None).await;
    assert_eq!((status, location.as_deref()), (302, Some("/")));
}
