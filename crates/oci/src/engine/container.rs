//! Containers in the engine — created and started from a [`ContainerSpec`], inspected into a
//! [`ContainerInfo`], their logs, processes and commands run in them, waited for, stopped
//! and removed — and the volumes and the bridge network they use.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions, TopOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;

use super::{failed, is_404, Engine};
use crate::error::{OciError, Result};

/// At most this much of a command's output is kept by [`Engine::exec`].
const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// How to create a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// The image: an engine image ID or name.
    pub image: String,
    /// The container's name; `None` lets the engine pick one.
    pub name: Option<String>,
    /// The command; `None` keeps the image's.
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries (nothing else of the caller's environment).
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// `--user`; `None` keeps the image's.
    pub user: Option<String>,
    /// Supplementary groups (`--group-add`).
    pub group_add: Vec<String>,
    /// `source:target[:options]` mounts, the source a host path or a volume name.
    pub binds: Vec<String>,
    /// Container TCP ports published on the host.
    pub ports: Vec<PublishedPort>,
    /// The network to attach to (`--network`); `None` is the engine's default bridge.
    pub network: Option<String>,
}

/// A container TCP port published on the host; in a [`ContainerInfo`], where it went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedPort {
    pub container: u16,
    /// The host address; `None` is every address.
    pub host_ip: Option<String>,
    /// The host port; `None` lets the engine pick one.
    pub host_port: Option<u16>,
}

/// A container's address on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkAddress {
    pub ip: Option<String>,
    pub gateway: Option<String>,
}

/// What the engine says of a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `created`, `running`, `exited`, … as the engine says.
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub labels: HashMap<String, String>,
    /// The container's address on each network it is attached to.
    pub networks: BTreeMap<String, NetworkAddress>,
    /// Where its published ports went.
    pub ports: Vec<PublishedPort>,
}

impl ContainerInfo {
    /// The address on `network`, else on any network the container is on.
    pub fn address(&self, network: &str) -> Option<&NetworkAddress> {
        self.networks
            .get(network)
            .or_else(|| self.networks.values().next())
    }
}

/// A process in a container (`docker top`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    pub uid: String,
    pub command: String,
}

/// What a command run in a container gave.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// `-1` when the engine reports none.
    pub exit_code: i64,
    /// Its stdout and stderr, interleaved (the first MiB).
    pub output: String,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl Engine {
    /// Create a container and start it; returns its ID. A container that does not start is
    /// removed again.
    pub async fn run(&self, spec: &ContainerSpec) -> Result<String> {
        let port_key = |p: &PublishedPort| format!("{}/tcp", p.container);
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            bindings
                .entry(port_key(p))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: p.host_port.map(|h| h.to_string()),
                });
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            env: Some(spec.env.clone()),
            user: spec.user.clone(),
            cmd: spec.cmd.clone(),
            labels: (!spec.labels.is_empty()).then(|| spec.labels.clone()),
            exposed_ports: (!spec.ports.is_empty())
                .then(|| spec.ports.iter().map(port_key).collect()),
            host_config: Some(HostConfig {
                binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
                group_add: (!spec.group_add.is_empty()).then(|| spec.group_add.clone()),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                network_mode: spec.network.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(
                spec.name.as_ref().map(|n| CreateContainerOptions {
                    name: Some(n.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(failed("creating the container"))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(failed("starting the container")(e));
        }
        Ok(created.id)
    }

    /// What the engine says of the container `id` (an ID or a name).
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInfo> {
        let info = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(failed("inspecting the container"))?;
        let st = info.state.unwrap_or_default();
        let settings = info.network_settings.unwrap_or_default();
        let networks = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ep)| {
                (
                    name,
                    NetworkAddress {
                        ip: nonempty(ep.ip_address),
                        gateway: nonempty(ep.gateway),
                    },
                )
            })
            .collect();
        let mut ports = Vec::new();
        for (key, bindings) in settings.ports.unwrap_or_default() {
            let Some(container) = key.strip_suffix("/tcp").and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                ports.push(PublishedPort {
                    container,
                    host_ip: nonempty(b.host_ip),
                    host_port: b.host_port.and_then(|p| p.parse().ok()),
                });
            }
        }
        ports.sort_by_key(|p| (p.container, p.host_port));
        Ok(ContainerInfo {
            id: info.id.unwrap_or_default(),
            name: info
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            image: info.image.unwrap_or_default(),
            status: st.status.map(|s| s.to_string()).unwrap_or_default(),
            running: st.running.unwrap_or(false),
            exit_code: st.exit_code.unwrap_or(0),
            oom_killed: st.oom_killed.unwrap_or(false),
            labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
            networks,
            ports,
        })
    }

    /// The last `lines` lines of the container's stdout and stderr: what the engine sends
    /// (a broken stream ends it; logs are for diagnosis).
    pub async fn logs(&self, id: &str, lines: usize) -> String {
        let mut out = String::new();
        let mut s = self.docker.logs(
            id,
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

    /// The uid and command of every process in the container (`docker top`).
    pub async fn processes(&self, id: &str) -> Result<Vec<Process>> {
        let top = self
            .docker
            .top_processes(
                id,
                Some(TopOptions {
                    ps_args: "-o pid,uid,args".to_string(),
                }),
            )
            .await
            .map_err(failed("listing the container's processes"))?;
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
            .map(|p| Process {
                uid: p.get(ui).cloned().unwrap_or_default(),
                command: p.get(ci).cloned().unwrap_or_default(),
            })
            .collect())
    }

    /// Run a command in the container as its user.
    pub async fn exec(&self, id: &str, cmd: &[&str]) -> Result<ExecOutput> {
        let what = "exec in the container";
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(failed(what))?;
        let mut output = String::new();
        if let StartExecResults::Attached { output: mut s, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(failed(what))?
        {
            while let Some(Ok(chunk)) = s.next().await {
                if output.len() < EXEC_OUTPUT_LIMIT {
                    output.push_str(&chunk.to_string());
                }
            }
        }
        let exit_code = self
            .docker
            .inspect_exec(&exec.id)
            .await
            .map_err(failed(what))?
            .exit_code
            .unwrap_or(-1);
        Ok(ExecOutput { exit_code, output })
    }

    /// Wait for the container to stop; returns its exit code.
    pub async fn wait(&self, id: &str) -> Result<i64> {
        let mut s = self.docker.wait_container(id, None::<WaitContainerOptions>);
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(failed("waiting for the container")(e)),
            None => Err(OciError::Engine(
                "waiting for the container: the engine closed the stream".into(),
            )),
        }
    }

    /// Stop the container (SIGTERM, then SIGKILL after `grace`, the engine's default when
    /// `None`); a container that is gone or stopped already is fine.
    pub async fn stop(&self, id: &str, grace: Option<Duration>) -> Result<()> {
        let options = StopContainerOptions {
            t: grace.map(|g| i32::try_from(g.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            // 304: not running.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(failed("stopping the container")(e)),
        }
    }

    /// Remove the container, running or not, with its anonymous volumes; a container that
    /// is gone or being removed already is fine.
    pub async fn remove(&self, id: &str) -> Result<()> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(failed("removing the container")(e)),
        }
    }

    /// Create the named volume (an existing one is kept as it is).
    pub async fn create_volume(&self, name: &str, labels: &HashMap<String, String>) -> Result<()> {
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: (!labels.is_empty()).then(|| labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(failed(format!("creating the volume {name}")))?;
        Ok(())
    }

    /// Remove the named volume; one that is gone already is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match self
            .docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_404(&e) => Ok(()),
            Err(e) => Err(failed(format!("removing the volume {name}"))(e)),
        }
    }

    /// The bridge network's gateway: the host address containers on it reach.
    pub async fn bridge_gateway(&self) -> Result<String> {
        let net = self
            .docker
            .inspect_network("bridge", None::<InspectNetworkOptions>)
            .await
            .map_err(failed("inspecting the bridge network"))?;
        let config = net.ipam.and_then(|i| i.config).unwrap_or_default();
        if let Some(g) = config
            .iter()
            .find_map(|c| c.gateway.clone().filter(|g| g.contains('.')))
        {
            return Ok(g);
        }
        // An engine that reuses an existing docker0 reports only the subnet; the gateway is
        // then its first address, as Docker assigns it.
        config
            .iter()
            .filter_map(|c| c.subnet.as_deref())
            .find_map(|s| s.split('/').next()?.parse::<std::net::Ipv4Addr>().ok())
            .map(|base| std::net::Ipv4Addr::from(u32::from(base) + 1).to_string())
            .ok_or_else(|| OciError::Engine("the bridge network has no IPv4 gateway".into()))
    }
}
