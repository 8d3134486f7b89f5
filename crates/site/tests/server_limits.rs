//! The site's server limits over real TCP on loopback, against a site served the way
//! `nbrt serve` serves it (the harness uses `nbrt_site::server::serve`), with the
//! time-outs shortened: partial headers and idle keep-alive connections are closed, a
//! request body that stalls fails, and connections past the cap wait while the server keeps
//! answering. The bounds are generous; nothing here asserts speed.

mod common;

use std::time::{Duration, Instant};

use nbrt_site::ServerLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any close or answer may take here before the test calls it missing.
const BOUND: Duration = Duration::from_secs(30);

async fn site(limits: ServerLimits) -> Option<common::TestSite> {
    if !nbrt_testkit::require_docker() {
        return None;
    }
    Some(common::start_site(|c| c.limits = limits).await)
}

fn addr(site: &common::TestSite) -> String {
    site.base.trim_start_matches("http://").to_string()
}

/// What a connection received until the server closed it, and when its last byte came.
struct Closed {
    received: Vec<u8>,
    last_data: Instant,
    closed: Instant,
}

/// Read until the server closes the connection (end of stream or reset); panics after
/// [`BOUND`].
async fn read_until_closed(s: &mut TcpStream, what: &str) -> Closed {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut last_data = start;
    let mut buf = [0u8; 16 << 10];
    loop {
        let left = BOUND.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => panic!(
                "{what}: the server did not close the connection within {BOUND:?}; received {:?}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Closed {
                    received,
                    last_data,
                    closed: Instant::now(),
                }
            }
            Ok(Ok(n)) => {
                received.extend_from_slice(&buf[..n]);
                last_data = Instant::now();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_headers_are_closed_after_the_header_timeout() {
    let Some(site) = site(ServerLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(60),
        ..ServerLimits::default()
    })
    .await
    else {
        return;
    };
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    let sent = Instant::now();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        .await
        .expect("write");
    let c = read_until_closed(&mut s, "partial headers").await;
    assert!(
        c.closed - sent >= Duration::from_millis(900),
        "closed before the header time-out: {:?}",
        c.closed - sent
    );
    assert!(
        !String::from_utf8_lossy(&c.received).contains(" 200 "),
        "{:?}",
        String::from_utf8_lossy(&c.received)
    );

    // A connection that sends nothing at all is closed by the same time-out.
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    read_until_closed(&mut s, "silent connection").await;

    // The server still answers.
    let a = site.call("GET", "/api/health", None, None).await;
    assert_eq!(a.status, 200, "{}", a.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed() {
    let idle = Duration::from_secs(3);
    let Some(site) = site(ServerLimits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: idle,
        ..ServerLimits::default()
    })
    .await
    else {
        return;
    };
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .expect("write");
    let c = read_until_closed(&mut s, "idle keep-alive connection").await;
    let text = String::from_utf8_lossy(&c.received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The idle time-out closed it, not the (shorter) header time-out.
    assert!(
        c.closed - c.last_data >= idle - Duration::from_millis(200),
        "closed {:?} after the response, before the idle time-out",
        c.closed - c.last_data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_fails_after_the_body_timeout() {
    let Some(site) = site(ServerLimits {
        body_timeout: Duration::from_secs(1),
        ..ServerLimits::default()
    })
    .await
    else {
        return;
    };
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    let sent = Instant::now();
    s.write_all(
        b"POST /api/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\nConnection: close\r\n\r\n{\"token\":",
    )
    .await
    .expect("write");
    let c = read_until_closed(&mut s, "stalled body").await;
    let text = String::from_utf8_lossy(&c.received);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        c.last_data - sent >= Duration::from_millis(900),
        "answered before the body time-out: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_and_the_server_keeps_answering() {
    let Some(site) = site(ServerLimits {
        header_timeout: Duration::from_secs(120),
        max_connections: 4,
        ..ServerLimits::default()
    })
    .await
    else {
        return;
    };
    let request = b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n")
            .await
            .expect("write");
        held.push(s);
    }
    // Below the cap, a normal request is answered.
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    s.write_all(request).await.expect("write");
    let c = read_until_closed(&mut s, "request below the cap").await;
    assert!(
        String::from_utf8_lossy(&c.received).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&c.received)
    );

    // The fourth held connection fills the cap: the next one waits.
    let mut s = TcpStream::connect(addr(&site)).await.expect("connect");
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    held.push(s);
    // Let the server take the fourth before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = TcpStream::connect(addr(&site))
        .await
        .expect("connecting past the cap (the backlog takes it)");
    waiting.write_all(request).await.expect("write");
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf)).await {
        Err(_) => {}
        Ok(r) => panic!("a connection past the cap was served: {r:?}"),
    }

    // One held connection goes: the waiting one is served.
    drop(held.pop());
    let c = read_until_closed(&mut waiting, "the connection that waited").await;
    assert!(
        String::from_utf8_lossy(&c.received).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&c.received)
    );
    drop(held);
}
