//! `nbrt serve --log-format json`: every line on standard error is one JSON object, and each
//! request has its access-log line (method, path without the query, status, duration,
//! user); a change has its audit line with the token's ID, never the token.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One HTTP/1.1 request on a fresh connection; the status line's code.
fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connecting to nbrt serve");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("sending the request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("reading the answer");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

#[test]
fn json_log_has_an_access_line_per_request_and_audit_lines() {
    if !nbrt_testkit::require_docker() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--json",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--database")
        .arg(dir.path().join("site.db"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nbrt serve");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).expect("the start report");
    let report: Value = serde_json::from_str(&first).expect("the start report as JSON");
    let addr = report["listen"].as_str().unwrap().to_string();
    let admin = report["adminToken"].as_str().unwrap().to_string();

    assert_eq!(request(&addr, "GET", "/api/health?x=1", None, ""), 200);
    assert_eq!(request(&addr, "GET", "/api/me", Some(&admin), ""), 200);
    assert_eq!(
        request(
            &addr,
            "POST",
            "/api/users",
            Some(&admin),
            r#"{"name": "ann"}"#
        ),
        201
    );
    child.kill().expect("stopping nbrt serve");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();

    let lines: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "nbrt::access")
        .collect();
    let seen: Vec<(&str, &str, u64, &str)> = access
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap(),
                l["path"].as_str().unwrap(),
                l["status"].as_u64().unwrap(),
                l["user"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/api/health", 200, "-"),
            ("GET", "/api/me", 200, "admin"),
            ("POST", "/api/users", 201, "admin"),
        ],
        "{err}"
    );
    assert!(access.iter().all(|l| l["duration_ms"].is_number()
        && l["level"] == "INFO"
        && l["timestamp"].is_string()));
    let audit = lines
        .iter()
        .find(|l| l["target"] == "nbrt::audit")
        .unwrap_or_else(|| panic!("no audit line in:\n{err}"));
    assert_eq!(audit["action"], "user.create");
    assert_eq!(audit["user"], "admin");
    assert_eq!(
        audit["token_id"].as_str().unwrap(),
        &nbrt_site::auth::hash_token(&admin)[..16]
    );
    assert!(!err.contains(&admin), "a token in the log");
}
