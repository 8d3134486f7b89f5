//! The session environment from the site (issue 14, item 5): a site-level CA bundle and
//! index URL reach a session's `pip install` from a test index behind a certificate of a
//! test CA, served under a host name (`pyindex`, the index container's alias on the site's
//! Docker network, which is in the certificate); the API checks what is put, masks secrets
//! and keeps them when they are put back masked; a runtime's settings are laid over the
//! site's.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().expect("docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removed at the end of the test, however it ends.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let _ = Command::new("docker").args(args).output();
        }
    }
}

/// A test CA and a certificate for `pyindex` it signed: (CA PEM, server cert PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "nbrt test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["pyindex".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "pyindex");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// The index: a wheel and a PEP 503 page for it, served over HTTPS by the image's Python.
const INDEX: &str = r#"
import functools, http.server, os, ssl, zipfile
os.makedirs("/srv/index/wheels", exist_ok=True)
os.makedirs("/srv/index/simple/sitepkg", exist_ok=True)
dist = "sitepkg-1.0"
files = {"sitepkg/__init__.py": "VALUE = 'from the site index'\n",
         f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\nName: sitepkg\nVersion: 1.0\n",
         f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: nbrt-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
record = "".join(f"{p},,\n" for p in files) + f"{dist}.dist-info/RECORD,,\n"
with zipfile.ZipFile(f"/srv/index/wheels/{dist}-py3-none-any.whl", "w") as z:
    for p, d in files.items():
        z.writestr(p, d)
    z.writestr(f"{dist}.dist-info/RECORD", record)
with open("/srv/index/simple/sitepkg/index.html", "w") as f:
    f.write(f'<a href="../../wheels/{dist}-py3-none-any.whl">{dist}-py3-none-any.whl</a>\n')
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/srv/index")
server = http.server.ThreadingHTTPServer(("", 8443), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/srv/tls/cert.pem", "/srv/tls/key.pem")
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("serving", flush=True)
server.serve_forever()
"#;

async fn put(t: &TestSite, path: &str, body: Value) -> common::Answer {
    t.call("PUT", path, Some(&t.admin), Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_ca_bundle_and_index_url_reach_pip_in_a_session() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let image = jupyter_image();
    let pid = std::process::id();
    let network = format!("nbrt-session-env-{pid}");
    let index = format!("nbrt-session-env-index-{pid}");
    let _ = docker(&["rm", "-f", &index]);
    let _ = docker(&["network", "rm", &network]);
    docker_ok(&["network", "create", &network]);
    let _cleanup = Cleanup(vec![
        vec!["rm".into(), "-f".into(), index.clone()],
        vec!["network".into(), "rm".into(), network.clone()],
    ]);

    let (ca, cert, key) = certificates();
    let tls = tempfile::tempdir().unwrap();
    std::fs::write(tls.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(tls.path().join("key.pem"), &key).unwrap();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &index,
        "--network",
        &network,
        "--network-alias",
        "pyindex",
        "-u",
        "0",
        "--entrypoint",
        "/opt/conda/bin/python",
        "-v",
        &format!("{}:/srv/tls:ro", tls.path().display()),
        &image,
        "-c",
        INDEX,
    ]);

    let t = start_site(|c| c.network = Some(network.clone())).await;
    let ann = t.user("ann", "author", false).await;
    let rt = t.register(runtime_body("py", &image)).await;
    let rt_id = rt["id"].as_str().unwrap().to_string();

    // Checked, with the field at fault; authors may not read or change it.
    let bad = put(
        &t,
        "/api/site/session-env",
        json!({"env": [{"name": "PIP_INDEX_URL", "value": "pyindex/simple"}]}),
    )
    .await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("env[0].value")),
        "{}",
        bad.text
    );
    let bad = put(&t, "/api/site/session-env", json!({"caBundle": "not PEM"})).await;
    assert_eq!(bad.body["field"], "caBundle", "{}", bad.text);
    let bad = put(
        &t,
        "/api/site/session-env",
        json!({"files": [{"path": "/etc/hosts", "content": "x"}]}),
    )
    .await;
    assert_eq!(bad.body["field"], "files[0].path", "{}", bad.text);
    let denied = t
        .call("GET", "/api/site/session-env", Some(&ann), None)
        .await;
    assert_eq!(denied.status, 403);

    // The site: index URL, CA bundle, a secret, a file; the runtime overrides one variable.
    let a = put(
        &t,
        "/api/site/session-env",
        json!({
            "env": [{"name": "PIP_INDEX_URL", "value": "https://pyindex:8443/simple/"},
                    {"name": "INDEX_TOKEN", "value": "s3cr3t-value"},
                    {"name": "WHO", "value": "site"}],
            "files": [{"path": "/etc/nbrt-test/site.conf", "content": "from the site\n"}],
            "caBundle": ca,
        }),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(!a.text.contains("s3cr3t-value"), "{}", a.text);
    let shown = t
        .call("GET", "/api/site/session-env", Some(&t.admin), None)
        .await;
    assert!(!shown.text.contains("s3cr3t-value"), "{}", shown.text);
    assert_eq!(
        shown.body["sessionEnv"]["env"][1],
        json!({"name": "INDEX_TOKEN", "value": null, "secret": true, "set": true})
    );
    assert_eq!(shown.body["sessionEnv"]["caCertificates"], 1);
    // Put back as shown: the secret is kept.
    let again = put(
        &t,
        "/api/site/session-env",
        shown.body["sessionEnv"].clone(),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.text);
    let a = put(
        &t,
        &format!("/api/runtimes/{rt_id}/session-env"),
        json!({"env": [{"name": "WHO", "value": "runtime"}]}),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let effective = t
        .call(
            "GET",
            &format!("/api/runtimes/{rt_id}/session-env"),
            Some(&t.admin),
            None,
        )
        .await;
    assert_eq!(
        effective.body["effective"]["env"][2]["value"], "runtime",
        "{}",
        effective.text
    );

    // The index answers before the session needs it.
    for _ in 0..600 {
        let logs = docker(&["logs", &index]);
        if String::from_utf8_lossy(&logs.stdout).contains("serving") {
            break;
        }
        assert!(
            docker_ok(&["inspect", "-f", "{{.State.Running}}", &index]).trim() == "true",
            "the index container stopped: {}",
            text(&logs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let s = t
        .call(
            "POST",
            "/api/sessions",
            Some(&ann),
            Some(json!({"runtimeId": rt_id, "wait": true})),
        )
        .await;
    assert_eq!(s.body["session"]["state"], "ready", "{}", s.text);
    let cid = s.body["session"]["containerId"]
        .as_str()
        .unwrap()
        .to_string();

    let env: Vec<String> =
        serde_json::from_value(docker_inspect(&cid)["Config"]["Env"].clone()).unwrap();
    for want in [
        "PIP_INDEX_URL=https://pyindex:8443/simple/",
        "INDEX_TOKEN=s3cr3t-value",
        "WHO=runtime",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ] {
        assert!(env.contains(&want.to_string()), "{want} not in {env:?}");
    }
    assert_eq!(
        docker_ok(&["exec", &cid, "cat", "/etc/nbrt-test/site.conf"]),
        "from the site\n"
    );
    // The image's bundle keeps its own certificates and gains the site's.
    let bundle = docker_ok(&["exec", &cid, "cat", "/etc/ssl/certs/ca-certificates.crt"]);
    assert!(bundle.contains(ca.trim()), "the site's CA is in the bundle");
    assert!(
        bundle.matches("BEGIN CERTIFICATE").count() > 10,
        "the image's certificates are kept"
    );

    // What a user's `!pip install sitepkg` does in the session.
    let out = docker(&[
        "exec",
        &cid,
        "/opt/conda/bin/python",
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "sitepkg",
    ]);
    assert!(
        out.status.success(),
        "pip install in the session: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("https://pyindex:8443/simple/"),
        "{}",
        text(&out)
    );
    assert_eq!(
        docker_ok(&[
            "exec",
            &cid,
            "/opt/conda/bin/python",
            "-c",
            "import sitepkg; print(sitepkg.VALUE)"
        ]),
        "from the site index\n"
    );
}
