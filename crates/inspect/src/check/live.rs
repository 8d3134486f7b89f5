//! Live checks: the image started in the Docker engine the way the platform starts it, and
//! probed from outside (HTTP on the container's address, its processes, its home). A
//! container that stops is reported at once with its exit code and last log lines.

use std::time::Duration;

use nbrt_oci::label::{self, HttpContract};
use nbrt_oci::{Engine, Image, Store};

use super::container::{ensure_image, indent, wait_for, Container, RunSpec, Waited};
use super::{CheckResult as R, Profile};
use crate::error::Result;

pub struct LiveOptions {
    /// How long to wait for the server or the kernel.
    pub timeout: Duration,
    /// The version the stand-in hub reports (best: the image's jupyterhub version).
    pub hub_version: String,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            hub_version: "5.0.0".to_string(),
        }
    }
}

const PORT: u16 = 8888;
const HOME: &str = "/home/jovyan";
/// The URL prefix Kubeflow gives a notebook: `/notebook/<namespace>/<name>/`.
pub const KUBEFLOW_PREFIX: &str = "/notebook/nbrt-check/probe/";
const HUB_USER: &str = "nbrt-check";

/// Run the live checks of `profile`. Problems reaching the engine are reported as a failed
/// `live.engine` check.
pub async fn run(store: &Store, image: &Image, profile: Profile, opts: &LiveOptions) -> Vec<R> {
    let engine = match Engine::connect().await {
        Ok(e) => e,
        Err(e) => {
            return vec![R::fail(
                "live.engine",
                format!("cannot reach the Docker engine: {e}"),
                "start dockerd (or set DOCKER_HOST), or check without --live",
            )
            .live()]
        }
    };
    let reference = match ensure_image(&engine, store, image).await {
        Ok(r) => r,
        Err(e) => {
            return vec![R::fail(
                "live.engine",
                format!("cannot load the image into Docker: {e}"),
                "check `nbrt load IMAGE` works",
            )
            .live()]
        }
    };
    let result = match profile {
        Profile::Kubeflow => kubeflow(&engine, &reference, &http_of(image), opts).await,
        Profile::DockerStacks => docker_stacks(&engine, &reference, opts).await,
        Profile::Jupyterhub => jupyterhub(&engine, &reference, opts).await,
        Profile::Arcgis => arcgis(&engine, &reference, opts).await,
        Profile::GatewayKernel => super::launcher::check(&engine, &reference, opts).await,
    };
    let mut out = match result {
        Ok(r) => r,
        Err(e) => vec![R::fail(
            "live.engine",
            format!("the live check could not run: {e}"),
            "check the Docker engine (`docker info`)",
        )],
    };
    for r in &mut out {
        r.live = true;
    }
    out
}

/// How the image's server is reached (its `[runtime]` label; Jupyter's rules without one).
fn http_of(image: &Image) -> HttpContract {
    label::RuntimeDefaults::http_of(&image.labels()).unwrap_or_default()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .unwrap_or_default()
}

fn token() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A response we keep: status, the CORS header, the body (bounded).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub allow_origin: Option<String>,
    pub body: String,
}

/// The origin the CORS probe claims (a dashboard on another host).
const ORIGIN: &str = "https://kubeflow.nbrt-check.invalid";

pub async fn get(url: &str, token: Option<&str>) -> Option<Answer> {
    request(url, token, None).await
}

async fn request(url: &str, token: Option<&str>, origin: Option<&str>) -> Option<Answer> {
    let mut req = client().get(url);
    if let Some(o) = origin {
        req = req.header("Origin", o);
    }
    if let Some(t) = token {
        req = req.header("Authorization", format!("token {t}"));
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let allow_origin = resp
        .headers()
        .get("access-control-allow-origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.ok()?;
    let body = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 16)]).into_owned();
    Some(Answer {
        status,
        allow_origin,
        body,
    })
}

fn exited(id: &str, what: &str, code: i64, oom: bool, logs: &str) -> R {
    let oom = if oom { " (killed: out of memory)" } else { "" };
    R::fail(
        id,
        format!(
            "the container exited with code {code}{oom} before {what}; last log lines{}",
            indent(logs)
        ),
        "run the image with `docker run` the same way and fix the error in its log",
    )
}

/// Wait for an HTTP answer with a status below `below` at `path` on port 8888.
async fn wait_http(
    c: &Container,
    path: &str,
    token: Option<&str>,
    below: u16,
    timeout: Duration,
) -> Result<Waited<(String, Answer)>> {
    wait_for(c, timeout, |st| async move {
        let ip = st.ip?;
        let a = get(&format!("http://{ip}:{PORT}{path}"), token).await?;
        (a.status < below).then_some((ip, a))
    })
    .await
}

/// After a grace period: something listens, but not on 8888 (a server on another port).
async fn wrong_port(c: &Container, since: std::time::Instant) -> bool {
    if since.elapsed() < Duration::from_secs(15) {
        return false;
    }
    let ports = c.listening_ports().await;
    !ports.is_empty() && !ports.contains(&PORT)
}

/// Why nothing answered on 8888: something listens elsewhere, or nothing at all.
async fn no_answer(c: &Container, id: &str, what: &str, timeout: Duration, logs: &str) -> R {
    let ports = c.listening_ports().await;
    let others: Vec<u16> = ports.into_iter().filter(|p| *p != PORT).collect();
    if !others.is_empty() {
        return R::fail(
            id,
            format!("nothing answers on port {PORT}: the container listens on {others:?} instead"),
            format!("serve on {PORT} (drop --port / ServerApp.port, or set JUPYTER_PORT={PORT})"),
        );
    }
    R::fail(
        id,
        format!(
            "no HTTP answer for {what} on port {PORT} within {}s; last log lines{}",
            timeout.as_secs(),
            indent(logs)
        ),
        "start the server on 0.0.0.0:8888 (or give it more time with --timeout)",
    )
}

async fn uid_check(c: &Container, want: u64) -> R {
    match c.processes().await {
        Ok(procs) if procs.is_empty() => R::skip("live.uid", "no processes listed"),
        Ok(procs) => {
            let wrong: Vec<String> = procs
                .iter()
                .filter(|(u, _)| u.parse::<u64>().ok() != Some(want))
                .map(|(u, cmd)| format!("uid {u}: {cmd}"))
                .collect();
            if wrong.is_empty() {
                R::pass("live.uid", format!("every process runs as uid {want}"))
            } else {
                R::fail(
                    "live.uid",
                    format!("processes not running as uid {want}: {}", wrong.join("; ")),
                    format!("run as uid {want}: `[image] user = \"{want}\"` and no privilege change in the start command"),
                )
            }
        }
        Err(e) => R::skip("live.uid", format!("cannot list processes: {e}")),
    }
}

async fn home_write(c: &Container) -> R {
    let script = "f=\"$HOME/.nbrt-check-$$\"; touch \"$f\" && rm -f \"$f\" && echo \"ok $HOME\"";
    match c.exec(&["sh", "-c", script]).await {
        Ok((0, out)) if out.contains("ok ") => R::pass(
            "live.home",
            format!(
                "the notebook user can write {}",
                out.trim().trim_start_matches("ok ")
            ),
        ),
        Ok((code, out)) => R::fail(
            "live.home",
            format!(
                "the notebook user cannot create a file in its home (exit {code}): {}",
                out.trim()
            ),
            "make the home owned by (or group-writable for) the notebook user",
        ),
        Err(e) => R::skip("live.home", format!("cannot exec in the container: {e}")),
    }
}

/// Kubeflow's CORS requirement, as its documentation states it: the server's HTTP responses
/// carry `Access-Control-Allow-Origin: *` (the dashboard shows notebooks in an iframe). The
/// API is asked with a foreign `Origin`: when it answers and allows that origin, all is well;
/// when the header is there but Jupyter's own origin check refuses the request (HTTP 404,
/// "Blocking Cross Origin API request"), the requirement is met and a warning says how to
/// open the API to other origins too (`--ServerApp.allow_origin='*'`, as Kubeflow's images
/// start Jupyter); no header at all fails.
async fn cors(url: &str) -> R {
    let Some(a) = request(url, None, Some(ORIGIN)).await else {
        return R::fail(
            "live.cors",
            format!("no answer to GET {url} with Origin {ORIGIN}"),
            "start the server with --ServerApp.allow_origin='*'",
        );
    };
    let allows = |v: Option<&str>| matches!(v, Some("*") | Some(ORIGIN));
    if a.status == 200 && allows(a.allow_origin.as_deref()) {
        return R::pass(
            "live.cors",
            format!(
                "Access-Control-Allow-Origin: {}; the API answers requests from another origin",
                a.allow_origin.as_deref().unwrap_or("")
            ),
        );
    }
    // The header as a same-origin request sees it (the iframe's own requests).
    let plain = request(url, None, None).await;
    let header = a
        .allow_origin
        .clone()
        .or_else(|| plain.as_ref().and_then(|p| p.allow_origin.clone()));
    match header.as_deref() {
        Some(h) if allows(Some(h)) => {
            if a.status == 200 {
                R::pass("live.cors", format!("Access-Control-Allow-Origin: {h}"))
            } else {
                R::warn(
                    "live.cors",
                    format!(
                        "responses carry Access-Control-Allow-Origin: {h} (Kubeflow's requirement), but Jupyter's origin check refuses API requests from another origin: GET with Origin {ORIGIN} gives HTTP {}",
                        a.status
                    ),
                    "to open the API to other origins as well, start the server with --ServerApp.allow_origin='*' (Kubeflow's images do)",
                )
            }
        }
        other => R::fail(
            "live.cors",
            format!(
                "the server's answers have {}: the Kubeflow dashboard cannot embed it",
                match other {
                    Some(v) => format!("Access-Control-Allow-Origin {v:?}"),
                    None => "no Access-Control-Allow-Origin header".to_string(),
                }
            ),
            "start the server with --ServerApp.allow_origin='*' (or a tornado header Access-Control-Allow-Origin: *, as nbrt-init sets)",
        ),
    }
}

/// A host directory standing for an empty volume with Kubernetes' fsGroup 100: root-owned,
/// group 100, setgid, group-writable.
fn empty_volume() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("nbrt-check-home-")
        .tempdir()?;
    let _ = rustix::fs::chown(
        dir.path(),
        Some(rustix::fs::Uid::ROOT),
        Some(rustix::fs::Gid::from_raw(100)),
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2775))?;
    Ok(dir)
}

async fn kubeflow(
    engine: &Engine,
    image: &str,
    http: &HttpContract,
    opts: &LiveOptions,
) -> Result<Vec<R>> {
    let vol = empty_volume().map_err(crate::error::io("creating an empty home volume"))?;
    let spec = RunSpec {
        env: vec![format!("NB_PREFIX={KUBEFLOW_PREFIX}")],
        binds: vec![format!("{}:{HOME}", vol.path().display())],
        group_add: vec!["100".to_string()],
        ..Default::default()
    };
    let c = Container::start(engine, image, &spec).await?;
    let out = kubeflow_probe(&c, http, opts).await;
    c.remove().await;
    out
}

async fn kubeflow_probe(c: &Container, http: &HttpContract, opts: &LiveOptions) -> Result<Vec<R>> {
    let mut out = Vec::new();
    // The path the server sees for its readiness path under the prefix: Jupyter's
    // `<prefix>api`, or the rewritten path of a server Kubeflow strips the prefix for.
    let path = http.ready_upstream_path(KUBEFLOW_PREFIX.trim_end_matches('/'));
    let jupyter = http.is_jupyter();
    // Ready when the prefix answers 200, or when / answers while the prefix does not (the
    // server ignores NB_PREFIX). Other answers (a server still loading) are waited out.
    let started_at = std::time::Instant::now();
    let waited = wait_for(c, opts.timeout, |st| {
        let path = path.clone();
        async move {
            let ip = st.ip?;
            match get(&format!("http://{ip}:{PORT}{path}"), None).await {
                Some(a) if a.status == 200 => Some(Ok(a)),
                Some(_) if !jupyter => None,
                Some(a) => match get(&format!("http://{ip}:{PORT}/api"), None).await {
                    Some(r) if r.status == 200 => Some(Err(Some(a.status))),
                    _ => None,
                },
                None if wrong_port(c, started_at).await => Some(Err(None)),
                None => None,
            }
        }
    })
    .await?;
    let started = || {
        R::pass(
            "live.start",
            format!("started with an empty volume on {HOME}"),
        )
    };
    match waited {
        Waited::Ready(Ok(a)) => {
            out.push(started());
            let under = match &http.http_rewrite_uri {
                Some(uri) => format!(
                    " ({KUBEFLOW_PREFIX} rewritten to {uri}, as Kubeflow's http-rewrite-uri does)"
                ),
                None => String::new(),
            };
            out.push(R::pass(
                "live.nb-prefix",
                format!(
                    "answers GET {path} on port {PORT}{under}: {}",
                    first_line(&a.body)
                ),
            ));
            if jupyter {
                let ip = c.state().await?.ip.unwrap_or_default();
                out.push(cors(&format!("http://{ip}:{PORT}{path}")).await);
            }
        }
        Waited::Ready(Err(None)) => {
            out.push(started());
            out.push(no_answer(c, "live.nb-prefix", &path, opts.timeout, "").await);
        }
        Waited::Ready(Err(Some(status))) => {
            out.push(started());
            out.push(R::fail(
                "live.nb-prefix",
                format!(
                    "the server answers /api but {path} gives HTTP {status}: it ignores NB_PREFIX"
                ),
                "serve under the prefix: set c.ServerApp.base_url from NB_PREFIX in /etc/jupyter/jupyter_server_config.py (as the stock jupyter stack does), or pass --ServerApp.base_url=\"$NB_PREFIX\"",
            ));
        }
        Waited::Exited { code, oom, logs } => {
            out.push(exited(
                "live.start",
                "the server answered",
                code,
                oom,
                &logs,
            ));
            return Ok(out);
        }
        Waited::TimedOut { logs } => {
            out.push(started());
            out.push(no_answer(c, "live.nb-prefix", &path, opts.timeout, &logs).await);
        }
    }
    out.push(uid_check(c, 1000).await);
    out.push(home_write(c).await);
    Ok(out)
}

/// The first line of an answer, at most 200 characters (a web page is not a message).
fn first_line(body: &str) -> String {
    body.trim()
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

async fn docker_stacks(engine: &Engine, image: &str, opts: &LiveOptions) -> Result<Vec<R>> {
    let t = token();
    let spec = RunSpec {
        env: vec![format!("JUPYTER_TOKEN={t}")],
        ..Default::default()
    };
    let c = Container::start(engine, image, &spec).await?;
    let mut out = Vec::new();
    let r = server_answers(&c, "/api", Some(&t), opts).await;
    let up = r.is_ok();
    out.push(r.unwrap_or_else(|e| e));
    if up || c.state().await.is_ok_and(|s| s.running) {
        out.push(uid_check(&c, 1000).await);
        out.push(home_write(&c).await);
    }
    c.remove().await;
    Ok(out)
}

/// `live.http`: the server answers `path` on 8888 with 200.
async fn server_answers(
    c: &Container,
    path: &str,
    token: Option<&str>,
    opts: &LiveOptions,
) -> std::result::Result<R, R> {
    match wait_http(c, path, token, 300, opts.timeout).await {
        Ok(Waited::Ready((_, a))) if a.status == 200 => Ok(R::pass(
            "live.http",
            format!("answers GET {path} on port {PORT}"),
        )),
        Ok(Waited::Ready((_, a))) => Err(R::fail(
            "live.http",
            format!("GET {path} on port {PORT} gives HTTP {}", a.status),
            "serve Jupyter at / on 8888",
        )),
        Ok(Waited::Exited { code, oom, logs }) => {
            Err(exited("live.http", "the server answered", code, oom, &logs))
        }
        Ok(Waited::TimedOut { logs }) => {
            Err(no_answer(c, "live.http", path, opts.timeout, &logs).await)
        }
        Err(e) => Err(R::fail(
            "live.http",
            format!("cannot watch the container: {e}"),
            "check the Docker engine",
        )),
    }
}

async fn jupyterhub(engine: &Engine, image: &str, opts: &LiveOptions) -> Result<Vec<R>> {
    let t = token();
    let prefix = format!("/user/{HUB_USER}/");
    let hub = super::hub::FakeHub::start(
        &super::container::bridge_gateway(engine).await?,
        &opts.hub_version,
    )
    .await?;
    let api = hub.url.clone();
    // The environment a JupyterHub spawner gives a single-user server.
    let env = vec![
        format!("JUPYTERHUB_API_TOKEN={t}"),
        format!("JPY_API_TOKEN={t}"),
        format!("JUPYTERHUB_CLIENT_ID=jupyterhub-user-{HUB_USER}"),
        format!("JUPYTERHUB_API_URL={api}"),
        format!("JUPYTERHUB_ACTIVITY_URL={api}/users/{HUB_USER}/activity"),
        format!("JUPYTERHUB_USER={HUB_USER}"),
        "JUPYTERHUB_SERVER_NAME=".to_string(),
        "JUPYTERHUB_BASE_URL=/".to_string(),
        format!("JUPYTERHUB_SERVICE_PREFIX={prefix}"),
        format!("JUPYTERHUB_SERVICE_URL=http://0.0.0.0:{PORT}{prefix}"),
        format!("JUPYTERHUB_OAUTH_CALLBACK_URL={prefix}oauth_callback"),
        format!("JUPYTERHUB_OAUTH_ACCESS_SCOPES=[\"access:servers!server={HUB_USER}/\", \"access:servers!user={HUB_USER}\"]"),
        format!("JUPYTERHUB_OAUTH_SCOPES=[\"access:servers!server={HUB_USER}/\", \"access:servers!user={HUB_USER}\"]"),
    ];
    let c = Container::start(
        engine,
        image,
        &RunSpec {
            env,
            ..Default::default()
        },
    )
    .await?;
    let path = format!("{prefix}api");
    let mut out = Vec::new();
    match wait_http(&c, &path, None, 500, opts.timeout).await? {
        Waited::Ready((_, a)) => out.push(R::pass(
            "live.singleuser",
            format!("the single-user server answers GET {path} (HTTP {}), as the hub's readiness check wants", a.status),
        )),
        Waited::Exited { code, oom, logs } => out.push(exited(
            "live.singleuser",
            "the single-user server answered",
            code,
            oom,
            &logs,
        )),
        Waited::TimedOut { logs } => {
            out.push(no_answer(&c, "live.singleuser", &path, opts.timeout, &logs).await)
        }
    }
    out.push(uid_check_nonroot(&c).await);
    c.remove().await;
    Ok(out)
}

async fn uid_check_nonroot(c: &Container) -> R {
    match c.processes().await {
        Ok(procs) => {
            let root: Vec<&String> = procs
                .iter()
                .filter(|(u, _)| u == "0" || u == "root")
                .map(|(_, c)| c)
                .collect();
            if root.is_empty() {
                R::pass("live.uid", "no process runs as root")
            } else {
                R::fail(
                    "live.uid",
                    format!("processes run as root: {root:?}"),
                    "run as an unprivileged user (`[image] user = \"1000\"`)",
                )
            }
        }
        Err(e) => R::skip("live.uid", format!("cannot list processes: {e}")),
    }
}

async fn arcgis(engine: &Engine, image: &str, opts: &LiveOptions) -> Result<Vec<R>> {
    let t = token();
    let c = Container::start(
        engine,
        image,
        &RunSpec {
            env: vec![format!("JUPYTER_TOKEN={t}")],
            ..Default::default()
        },
    )
    .await?;
    let mut out = Vec::new();
    match server_answers(&c, "/api", Some(&t), opts).await {
        Ok(r) => {
            out.push(r);
            let ip = c.state().await?.ip.unwrap_or_default();
            let specs = get(&format!("http://{ip}:{PORT}/api/kernelspecs"), Some(&t)).await;
            let names: Vec<String> = specs
                .as_ref()
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a.body).ok())
                .and_then(|v| {
                    v.get("kernelspecs")
                        .and_then(|k| k.as_object())
                        .map(|o| o.keys().cloned().collect())
                })
                .unwrap_or_default();
            if names.is_empty() {
                out.push(R::fail(
                    "live.kernelspecs",
                    "the server lists no kernel: a new notebook could not start",
                    "install ipykernel in the server's environment",
                ));
            } else {
                out.push(R::pass(
                    "live.kernelspecs",
                    format!("kernels: {}", names.join(", ")),
                ));
            }
        }
        Err(r) => out.push(r),
    }
    c.remove().await;
    Ok(out)
}
