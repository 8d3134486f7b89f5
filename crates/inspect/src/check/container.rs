//! A check's container in the Docker engine ([`Engine`]): the image loaded from the store
//! when the engine lacks it, started with what the platform would give it, watched (state,
//! logs, processes, listening ports) and always removed.

use std::collections::HashMap;
use std::time::Duration;

use nbrt_oci::engine::{engine_name, ContainerSpec};
use nbrt_oci::label;
use nbrt_oci::{Engine, Image, OciError, Store};

use crate::error::{InspectError, Result};

/// Engine errors as the checks report them.
fn engine_error(e: OciError) -> InspectError {
    match e {
        OciError::Engine(m) => InspectError::Engine(m),
        other => InspectError::Oci(other),
    }
}

/// Make sure the engine has `image` (loading it from the store if not) under its engine
/// name ([`engine_name`]); returns the reference to create containers from (the engine's
/// image ID).
pub async fn ensure_image(engine: &Engine, store: &Store, image: &Image) -> Result<String> {
    let names = store
        .resolve(&image.digest().to_string())
        .map(|found| found.names)
        .unwrap_or_default();
    let name = engine_name(image, &names);
    let ensured = engine
        .ensure(store, image, &name)
        .await
        .map_err(engine_error)?;
    Ok(ensured.reference)
}

/// The bridge network's gateway: the host address containers on it reach.
pub async fn bridge_gateway(engine: &Engine) -> Result<String> {
    engine.bridge_gateway().await.map_err(engine_error)
}

/// How to start the container.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub env: Vec<String>,
    /// `--user`; `None` keeps the image's.
    pub user: Option<String>,
    /// `host:container[:opts]` bind mounts.
    pub binds: Vec<String>,
    pub group_add: Vec<String>,
    pub cmd: Option<Vec<String>>,
}

pub struct Container {
    engine: Engine,
    pub id: String,
}

/// What the engine says of a container.
#[derive(Debug, Clone)]
pub struct State {
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub ip: Option<String>,
    pub gateway: Option<String>,
}

impl Container {
    /// Create and start a check container (labelled [`label::CHECK`]).
    pub async fn start(engine: &Engine, image: &str, spec: &RunSpec) -> Result<Self> {
        let spec = ContainerSpec {
            image: image.to_string(),
            env: spec.env.clone(),
            user: spec.user.clone(),
            cmd: spec.cmd.clone(),
            labels: HashMap::from([(label::CHECK.name.to_string(), "1".to_string())]),
            binds: spec.binds.clone(),
            group_add: spec.group_add.clone(),
            ..Default::default()
        };
        let id = engine.run(&spec).await.map_err(engine_error)?;
        Ok(Container {
            engine: engine.clone(),
            id,
        })
    }

    pub async fn state(&self) -> Result<State> {
        let info = self
            .engine
            .inspect_container(&self.id)
            .await
            .map_err(engine_error)?;
        let net = info.address("bridge").cloned().unwrap_or_default();
        Ok(State {
            running: info.running,
            exit_code: info.exit_code,
            oom_killed: info.oom_killed,
            ip: net.ip,
            gateway: net.gateway,
        })
    }

    /// The last `lines` lines of stdout and stderr.
    pub async fn logs(&self, lines: usize) -> String {
        self.engine.logs(&self.id, lines).await
    }

    /// The uid and command of every process (`docker top`).
    pub async fn processes(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .engine
            .processes(&self.id)
            .await
            .map_err(engine_error)?
            .into_iter()
            .map(|p| (p.uid, p.command))
            .collect())
    }

    /// Run a command in the container as its user; returns (exit code, output).
    pub async fn exec(&self, cmd: &[&str]) -> Result<(i64, String)> {
        let out = self
            .engine
            .exec(&self.id, cmd)
            .await
            .map_err(engine_error)?;
        Ok((out.exit_code, out.output))
    }

    /// TCP ports something listens on in the container (from /proc/net/tcp{,6}).
    pub async fn listening_ports(&self) -> Vec<u16> {
        let Ok((_, text)) = self.exec(&["cat", "/proc/net/tcp", "/proc/net/tcp6"]).await else {
            return Vec::new();
        };
        let mut ports: Vec<u16> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 4 || f[3] != "0A" {
                    return None;
                }
                let port = f[1].rsplit(':').next()?;
                u16::from_str_radix(port, 16).ok()
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    pub async fn remove(&self) {
        let _ = self.engine.remove(&self.id).await;
    }
}

/// Wait until `probe` gives an answer, failing fast when the container stops.
pub enum Waited<T> {
    Ready(T),
    Exited { code: i64, oom: bool, logs: String },
    TimedOut { logs: String },
}

pub async fn wait_for<T, F, Fut>(
    c: &Container,
    timeout: Duration,
    mut probe: F,
) -> Result<Waited<T>>
where
    F: FnMut(State) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        let st = c.state().await?;
        if !st.running {
            // One last look: it may have answered just before it stopped.
            return Ok(Waited::Exited {
                code: st.exit_code,
                oom: st.oom_killed,
                logs: c.logs(20).await,
            });
        }
        if let Some(v) = probe(st).await {
            return Ok(Waited::Ready(v));
        }
        if start.elapsed() > timeout {
            return Ok(Waited::TimedOut {
                logs: c.logs(20).await,
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Indent log lines under a message.
pub fn indent(logs: &str) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    if lines.is_empty() {
        return " (no output)".to_string();
    }
    format!(
        ":\n{}",
        lines
            .iter()
            .map(|l| format!("       | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}
