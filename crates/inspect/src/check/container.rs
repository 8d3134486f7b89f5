//! A check's container in the Docker engine: the image loaded from the store when the engine
//! lacks it, started with what the platform would give it, watched (state, logs, processes,
//! listening ports) and always removed.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, RemoveContainerOptions,
    TopOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use nbrt_oci::{Image, ImageName, Progress, Store};

use crate::error::{InspectError, Result};

fn engine(what: &str) -> impl FnOnce(bollard::errors::Error) -> InspectError + '_ {
    move |e| InspectError::Engine(format!("{what}: {e}"))
}

/// Make sure the engine has `image` (loading it from the store if not); returns the
/// reference to create containers from (the image ID).
pub async fn ensure_image(docker: &Docker, store: &Store, image: &Image) -> Result<String> {
    let id = image.id().to_string();
    if docker.inspect_image(&id).await.is_ok() {
        return Ok(id);
    }
    let name = ImageName::parse(&format!("nbrt-check:{}", &image.id().hex()[..12]))?;
    let report = nbrt_oci::engine::load(
        store.root().to_path_buf(),
        image,
        std::slice::from_ref(&name),
        &Progress::hidden(),
    )
    .await?;
    Ok(if report.engine_id.is_empty() {
        name.to_string()
    } else {
        report.engine_id
    })
}

/// The bridge network's gateway: the host address containers on it reach.
pub async fn bridge_gateway(docker: &Docker) -> Result<String> {
    let net = docker
        .inspect_network(
            "bridge",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .map_err(|e| InspectError::Engine(format!("inspecting the bridge network: {e}")))?;
    let config = net.ipam.and_then(|i| i.config).unwrap_or_default();
    if let Some(g) = config
        .iter()
        .find_map(|c| c.gateway.clone().filter(|g| g.contains('.')))
    {
        return Ok(g);
    }
    // An engine that reuses an existing docker0 reports only the subnet; the gateway is then
    // its first address, as Docker assigns it.
    config
        .iter()
        .filter_map(|c| c.subnet.as_deref())
        .find_map(|s| s.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
        .map(|base| std::net::Ipv4Addr::from(u32::from(base) + 1).to_string())
        .ok_or_else(|| InspectError::Engine("the bridge network has no IPv4 gateway".into()))
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
    docker: Docker,
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
    pub async fn start(docker: &Docker, image: &str, spec: &RunSpec) -> Result<Self> {
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            env: Some(spec.env.clone()),
            user: spec.user.clone(),
            cmd: spec.cmd.clone(),
            labels: Some(HashMap::from([(
                "org.nbrt.check".to_string(),
                "1".to_string(),
            )])),
            host_config: Some(HostConfig {
                binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
                group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(engine("creating the container"))?;
        let c = Container {
            docker: docker.clone(),
            id: created.id,
        };
        if let Err(e) = docker.start_container(&c.id, None).await {
            c.remove().await;
            return Err(InspectError::Engine(format!("starting the container: {e}")));
        }
        Ok(c)
    }

    pub async fn state(&self) -> Result<State> {
        let info = self
            .docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .map_err(engine("inspecting the container"))?;
        let st = info.state.unwrap_or_default();
        let net = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get("bridge").cloned().or_else(|| n.into_values().next()));
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(State {
            running: st.running.unwrap_or(false),
            exit_code: st.exit_code.unwrap_or(0),
            oom_killed: st.oom_killed.unwrap_or(false),
            ip: nonempty(net.as_ref().and_then(|n| n.ip_address.clone())),
            gateway: nonempty(net.and_then(|n| n.gateway)),
        })
    }

    /// The last `lines` lines of stdout and stderr.
    pub async fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut s = self.docker.logs(
            &self.id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        while let Some(Ok(chunk)) = s.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }

    /// The uid and command of every process (`docker top`).
    pub async fn processes(&self) -> Result<Vec<(String, String)>> {
        let top = self
            .docker
            .top_processes(
                &self.id,
                Some(TopOptions {
                    ps_args: "-o pid,uid,args".to_string(),
                }),
            )
            .await
            .map_err(engine("listing the container's processes"))?;
        let titles = top.titles.unwrap_or_default();
        let ui = titles.iter().position(|t| t == "UID").unwrap_or(0);
        let ci = titles
            .iter()
            .position(|t| t == "COMMAND" || t == "ARGS" || t == "CMD")
            .unwrap_or(1);
        Ok(top
            .processes
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.get(ui).cloned().unwrap_or_default(),
                    p.get(ci).cloned().unwrap_or_default(),
                )
            })
            .collect())
    }

    /// Run a command in the container as its user; returns (exit code, output).
    pub async fn exec(&self, cmd: &[&str]) -> Result<(i64, String)> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .docker
            .create_exec(
                &self.id,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(engine("exec in the container"))?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(engine("exec in the container"))?
        {
            while let Some(Ok(chunk)) = output.next().await {
                if text.len() < 1 << 20 {
                    text.push_str(&chunk.to_string());
                }
            }
        }
        let code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(engine("exec in the container"))?
            .exit_code
            .unwrap_or(-1);
        Ok((code, text))
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
        let _ = self
            .docker
            .remove_container(
                &self.id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await;
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
