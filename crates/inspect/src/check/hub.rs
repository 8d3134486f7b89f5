//! A stand-in for the JupyterHub API during the jupyterhub live check: a single-user server
//! asks its hub for the hub's version at start and gives up when nobody answers. Every
//! request gets `200 {"version": …}` with the `X-JupyterHub-Version` header; nothing else
//! of the hub is needed for the server to start and answer the readiness probe.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::{io, Result};

pub struct FakeHub {
    pub url: String,
    task: JoinHandle<()>,
}

impl FakeHub {
    /// Listen on `ip` (the bridge gateway, so containers reach it).
    pub async fn start(ip: &str, version: &str) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0))
            .await
            .map_err(io(format!("listening on {ip}")))?;
        let port = listener.local_addr().map_err(io("hub address"))?.port();
        let body = format!("{{\"version\": \"{version}\"}}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-JupyterHub-Version: {version}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    // Read the request head (bounded), answer, close.
                    let mut buf = vec![0u8; 16 << 10];
                    let mut n = 0;
                    while n < buf.len() {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let _ = s.write_all(response.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        Ok(Self {
            url: format!("http://{ip}:{port}/hub/api"),
            task,
        })
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
