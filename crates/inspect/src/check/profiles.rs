//! Static checks, from the image config and its file view, and which of them each profile
//! requires (a failure), recommends (a warning) or leaves out.

use super::facts::Facts;
use super::{CheckResult as R, Profile};
use nbrt_oci::label;

const NB_UID: u32 = 1000;
const NB_GID: u32 = 100;
const HOME: &str = "/home/jovyan";
const PORT: &str = "8888";

/// The static checks of a profile, in a stable order.
pub fn run(profile: Profile, f: &Facts) -> Vec<R> {
    use Profile::*;
    let mut out = Vec::new();
    match profile {
        Kubeflow => {
            out.push(uid(f, "Kubeflow"));
            out.push(user_name(f));
            out.push(home(f));
            out.push(home_writable(f));
            out.push(workdir(f).soft());
            out.push(port(f));
            out.push(entrypoint(f));
            if f.http().is_jupyter() {
                out.push(nb_prefix(f));
                out.push(python_with(f, "ipykernel"));
                out.push(jupyter_server(f));
                out.push(python_writable(f).soft());
            } else {
                // Kubeflow's code-server and RStudio images: no Jupyter server, no kernel.
                out.push(web_prefix(f));
            }
        }
        DockerStacks => {
            out.push(uid(f, "docker-stacks"));
            out.push(user_name(f));
            out.push(gid(f));
            out.push(home(f));
            out.push(home_writable(f));
            out.push(workdir(f));
            out.push(port(f));
            out.push(entrypoint(f));
            out.push(start_scripts(f));
            out.push(hook_dirs(f));
            out.push(env_vars(f).soft());
            out.push(python_with(f, "ipykernel"));
            out.push(jupyter_server(f));
            out.push(python_writable(f));
        }
        Jupyterhub => {
            out.push(non_root(f));
            out.push(home_writable(f));
            out.push(port(f).soft());
            out.push(entrypoint(f));
            out.push(singleuser(f));
            out.push(hub_versions(f));
            out.push(python_with(f, "ipykernel"));
        }
        GatewayKernel => {
            out.push(kernel_user(f));
            out.push(kernel_cmd(f));
            out.push(bootstrap(f));
            out.push(bash(f));
            out.push(launcher(f));
            out.push(python_named_python(f));
            out.push(kernel_python_module(f, "ipykernel", "ipykernel"));
            out.push(kernel_python_module(f, "pycryptodomex", "Cryptodome"));
            out.push(home_writable(f));
        }
        Arcgis => {
            out.push(manifest(f));
            out.push(python_with(f, "ipykernel"));
            out.push(jupyter_server(f));
            out.push(entrypoint(f));
            out.push(non_root(f).soft());
        }
    }
    out
}

fn user_desc(f: &Facts) -> String {
    if f.user.spec.is_empty() {
        "the config sets no User (root)".to_string()
    } else {
        format!("the config's User is {:?}", f.user.spec)
    }
}

fn uid(f: &Facts, platform: &str) -> R {
    match f.user.uid {
        Some(NB_UID) => R::pass("user.uid", format!("runs as uid {NB_UID}")),
        Some(u) => R::fail(
            "user.uid",
            format!("the image runs as uid {u} ({}); {platform} requires uid {NB_UID}", user_desc(f)),
            format!("create the user with uid {NB_UID} and set `[image] user = \"{NB_UID}\"` in the runtime file (Dockerfile: `USER {NB_UID}`)"),
        ),
        None => R::fail(
            "user.uid",
            format!("{}, which /etc/passwd does not define", user_desc(f)),
            format!("add the user (`[user]` in the runtime file) or set `[image] user = \"{NB_UID}\"`"),
        ),
    }
}

fn non_root(f: &Facts) -> R {
    match f.user.uid {
        Some(0) => R::fail(
            "user.non-root",
            format!("the image runs as root ({})", user_desc(f)),
            format!("run as an unprivileged user: `[image] user = \"{NB_UID}\"` (Dockerfile: `USER {NB_UID}`)"),
        ),
        Some(u) => R::pass("user.non-root", format!("runs as uid {u}")),
        None => R::fail(
            "user.non-root",
            format!("{}, which /etc/passwd does not define", user_desc(f)),
            "add the user to the image (`[user]` in the runtime file)",
        ),
    }
}

fn user_name(f: &Facts) -> R {
    match f.passwd.iter().find(|p| p.uid == NB_UID) {
        Some(p) if p.name == "jovyan" => R::pass("user.name", "uid 1000 is jovyan"),
        Some(p) => R::fail(
            "user.name",
            format!(
                "uid {NB_UID} is named {:?} in /etc/passwd, not jovyan",
                p.name
            ),
            "name the notebook user jovyan (`[user] name = \"jovyan\"`)",
        ),
        None => R::fail(
            "user.name",
            format!("/etc/passwd has no user with uid {NB_UID}"),
            "add `[user]` (jovyan, uid 1000, gid 100) to the runtime file",
        ),
    }
}

fn gid(f: &Facts) -> R {
    match f.user.gid {
        Some(NB_GID) => R::pass("user.gid", "primary group is 100 (users)"),
        Some(g) => R::fail(
            "user.gid",
            format!("the notebook user's primary group is {g}; docker-stacks uses 100 (users)"),
            "create the user with gid 100 (`[user] gid = 100`)",
        ),
        None => R::fail(
            "user.gid",
            "the primary group of the image's user is unknown",
            "set `[image] user = \"1000\"` with a passwd entry for it",
        ),
    }
}

fn home(f: &Facts) -> R {
    let entry = f.passwd.iter().find(|p| p.uid == NB_UID);
    match entry {
        Some(p) if p.home != HOME => R::fail(
            "user.home",
            format!(
                "the home of uid {NB_UID} in /etc/passwd is {:?}, expected {HOME}",
                p.home
            ),
            format!("set `[user] home = \"{HOME}\"`"),
        ),
        _ if !f.is_dir(HOME) => R::fail(
            "user.home",
            format!("{HOME} does not exist in the image"),
            "create it with `[user]` (the builder creates and owns the home)",
        ),
        _ => R::pass("user.home", format!("{HOME} exists")),
    }
}

fn home_writable(f: &Facts) -> R {
    let home = f
        .user
        .entry
        .as_ref()
        .map(|e| e.home.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| HOME.to_string());
    let Some(uid) = f.user.uid else {
        return R::skip("home.writable", "the run user is unknown");
    };
    if !f.is_dir(&home) {
        return R::fail(
            "home.writable",
            format!("the home {home} does not exist"),
            "create the home with `[user]`",
        );
    }
    if f.user_writable(&home) {
        return R::pass("home.writable", format!("uid {uid} can write {home}"));
    }
    let (owner, mode) = f
        .view
        .lookup(&home)
        .map(|(_, e)| (format!("{}:{}", e.meta.uid, e.meta.gid), e.meta.mode))
        .unwrap_or_default();
    R::fail(
        "home.writable",
        format!("uid {uid} cannot write its home {home} (owner {owner}, mode {mode:o})"),
        format!("make the home owned by the user: `[user]` creates it so, or `chown {uid}:{} {home}` in a root `[[run]]` step", f.user.gid.unwrap_or(NB_GID)),
    )
}

fn workdir(f: &Facts) -> R {
    let wd = f.config().working_dir.unwrap_or_default();
    if wd.trim_end_matches('/') == HOME {
        R::pass("image.workdir", format!("working directory {HOME}"))
    } else {
        R::fail(
            "image.workdir",
            format!(
                "the working directory is {:?}, expected {HOME}",
                if wd.is_empty() { "/" } else { &wd }
            ),
            format!("set `[image] workdir = \"{HOME}\"`"),
        )
    }
}

/// Ports the start command or the environment point the server at.
fn configured_port(f: &Facts) -> Option<(String, String)> {
    if let Some(p) = f.env.get("JUPYTER_PORT").filter(|p| p.as_str() != PORT) {
        return Some((p.clone(), format!("JUPYTER_PORT={p}")));
    }
    let cmd = f.command().join(" ");
    for key in ["--port=", "--ServerApp.port=", "--NotebookApp.port="] {
        if let Some(i) = cmd.find(key) {
            let p: String = cmd[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if !p.is_empty() && p != PORT {
                return Some((p.clone(), format!("{key}{p} in the command")));
            }
        }
    }
    None
}

fn port(f: &Facts) -> R {
    if let Some((p, why)) = configured_port(f) {
        return R::fail(
            "image.port",
            format!("the server is set to listen on port {p} ({why}), not {PORT}"),
            format!("serve on {PORT}: drop the port setting or set JUPYTER_PORT={PORT}"),
        );
    }
    let exposed = f.config().exposed_ports.unwrap_or_default();
    if exposed.contains_key(&format!("{PORT}/tcp")) {
        R::pass("image.port", format!("exposes {PORT}/tcp"))
    } else {
        let list: Vec<&String> = exposed.keys().collect();
        R::fail(
            "image.port",
            format!("the image does not expose {PORT}/tcp (exposed: {list:?})"),
            format!("set `[image] ports = [{PORT}]` (Dockerfile: `EXPOSE {PORT}`)"),
        )
    }
}

fn entrypoint(f: &Facts) -> R {
    let cmd = f.command();
    let Some(first) = cmd.first() else {
        return R::fail(
            "image.command",
            "the image has neither ENTRYPOINT nor CMD",
            "set `[image] entrypoint` / `cmd` (e.g. entrypoint [\"/usr/local/bin/nbrt-init\"], cmd [\"start-notebook.py\"])",
        );
    };
    match f.which(first) {
        Some(p) => R::pass("image.command", format!("{first} is {p}")),
        None => R::fail(
            "image.command",
            format!(
                "the command's program {first:?} is not an executable file in the image (PATH {})",
                f.path_dirs().join(":")
            ),
            "install the program or fix `[image] entrypoint` / `cmd`",
        ),
    }
}

fn uses_nbrt_init(f: &Facts) -> bool {
    f.command()
        .first()
        .is_some_and(|c| c.ends_with("nbrt-init"))
}

/// The system-wide Jupyter Server config files the image has, with their text:
/// `/etc/jupyter`, `/usr/local/etc/jupyter` and the Python environment's `etc/jupyter`
/// (where the stock jupyter stack and docker-stacks keep the server's defaults).
fn server_config_files<'f>(f: &Facts<'f>) -> Vec<(String, &'f str)> {
    let mut dirs = vec![
        "/etc/jupyter".to_string(),
        "/usr/local/etc/jupyter".to_string(),
    ];
    if let Some(env) = f.any_python() {
        dirs.push(format!("{}/etc/jupyter", env.prefix.trim_end_matches('/')));
    }
    let view = f.view;
    dirs.iter()
        .map(|d| format!("{d}/jupyter_server_config.py"))
        .filter_map(|p| view.text(&p).map(|t| (p, t)))
        .collect()
}

fn nb_prefix(f: &Facts) -> R {
    // nbrt-init passes no server setting; the image's config file reads NB_PREFIX.
    if let Some((file, _)) = server_config_files(f)
        .into_iter()
        .find(|(_, text)| text.contains("NB_PREFIX"))
    {
        return R::pass(
            "nb-prefix",
            format!("the server's config file {file} reads NB_PREFIX"),
        );
    }
    let cmd = f.command();
    let scripts: Vec<&str> = cmd
        .iter()
        .filter_map(|c| f.which(c).and_then(|p| f.view.text(&p)))
        .collect();
    let text = format!("{} {}", cmd.join(" "), scripts.join("\n"));
    if text.contains("NB_PREFIX") {
        return R::pass("nb-prefix", "the start command reads NB_PREFIX");
    }
    let direct = cmd.iter().any(|c| {
        c.ends_with("jupyter")
            || c.ends_with("jupyter-lab")
            || c.contains("jupyter lab")
            || c.contains("jupyter server")
    });
    if direct {
        R::fail(
            "nb-prefix",
            format!("the start command {cmd:?} starts Jupyter without NB_PREFIX: under Kubeflow the server would not answer at its URL prefix"),
            "pass the prefix: `sh -c 'exec jupyter lab --ServerApp.base_url=\"${NB_PREFIX:-/}\" …'`, or use nbrt-init as the entrypoint",
        )
    } else {
        R::skip(
            "nb-prefix",
            format!("cannot tell from the command {cmd:?} whether NB_PREFIX is honoured; --live checks it"),
        )
    }
}

/// A server that is not Jupyter (`server = "web"`): how it is reached under Kubeflow's
/// `/notebook/<namespace>/<name>/` prefix.
fn web_prefix(f: &Facts) -> R {
    let http = f.http();
    let headers = match http.http_headers_request_set.is_empty() {
        true => String::new(),
        false => format!(
            ", and notebooks.kubeflow.org/http-headers-request-set: {} (with the notebook's \
             prefix for {})",
            serde_json::json!(http.http_headers_request_set),
            label::NB_PREFIX_PLACEHOLDER
        ),
    };
    match &http.http_rewrite_uri {
        Some(uri) => R::pass(
            "nb-prefix",
            format!(
                "a {} server answering at {uri}: Kubeflow replaces the prefix with it given the \
                 Notebook annotation notebooks.kubeflow.org/http-rewrite-uri: {uri}{headers}",
                http.server.as_str()
            ),
        ),
        None => R::skip(
            "nb-prefix",
            "a web server that keeps the URL prefix (no http-rewrite-uri): it must serve under \
             NB_PREFIX itself; --live checks it",
        ),
    }
}

fn python_with(f: &Facts, module: &str) -> R {
    let id = format!("python.{module}");
    let Some(py) = f.any_python() else {
        return R::fail(
            &id,
            format!("no python or python3 on PATH ({})", f.path_dirs().join(":")),
            "install Python (e.g. `[apt] packages = [\"python3\", \"python3-venv\"]` and a venv in /opt/conda)",
        );
    };
    match f.env_package(&py, module) {
        Some(p) => R::pass(
            &id,
            format!("{} ({}) has {module} {}", py.command, py.path, p.version),
        ),
        None => R::fail(
            &id,
            format!(
                "{} on PATH ({}) has no {module} in {}",
                py.command, py.path, py.prefix
            ),
            format!(
                "install it into that environment: `[pip] packages = [\"{module}\"]` (prefix {})",
                py.prefix
            ),
        ),
    }
}

fn jupyter_server(f: &Facts) -> R {
    let Some(py) = f.any_python() else {
        return R::fail(
            "jupyter.server",
            "no Python on PATH",
            "install Python and jupyter_server",
        );
    };
    let server = f
        .env_package(&py, "jupyter_server")
        .or_else(|| f.env_package(&py, "notebook"));
    match (server, f.which("jupyter")) {
        (Some(p), Some(j)) => R::pass(
            "jupyter.server",
            format!("{} {} and {j}", p.name, p.version),
        ),
        (None, _) => R::fail(
            "jupyter.server",
            format!("no jupyter_server (or notebook) in {}", py.prefix),
            "install a server: `[pip] packages = [\"jupyterlab\"]`",
        ),
        (Some(_), None) => R::fail(
            "jupyter.server",
            "`jupyter` is not on PATH",
            format!(
                "put {}/bin on PATH (`[env] PATH = \"{}/bin:…\"`)",
                py.prefix, py.prefix
            ),
        ),
    }
}

fn python_writable(f: &Facts) -> R {
    let Some(py) = f.any_python() else {
        return R::skip("python.writable", "no Python on PATH");
    };
    let site = f
        .packages
        .iter()
        .find(|p| p.location == py.prefix)
        .map(|_| py.prefix.clone());
    let Some(prefix) = site else {
        return R::skip(
            "python.writable",
            format!("no packages found in {}", py.prefix),
        );
    };
    // The site-packages directory is what `pip install` writes to.
    let site_packages: Vec<String> = f
        .view
        .children(&format!("{prefix}/lib"))
        .filter(|(n, _)| n.starts_with("python"))
        .map(|(n, _)| format!("{prefix}/lib/{n}/site-packages"))
        .filter(|p| f.is_dir(p))
        .collect();
    let target = site_packages.first().cloned().unwrap_or(prefix.clone());
    if f.user_writable(&target) && f.user_writable(&format!("{prefix}/bin")) {
        R::pass(
            "python.writable",
            format!("the notebook user can install into {prefix}"),
        )
    } else {
        R::fail(
            "python.writable",
            format!("the notebook user cannot write {target}: `pip install` in a notebook fails or goes to ~/.local"),
            format!("give the environment to the user: `[user] owns = [\"{prefix}\"]`"),
        )
    }
}

fn start_scripts(f: &Facts) -> R {
    if uses_nbrt_init(f) {
        return R::pass(
            "start.scripts",
            "nbrt-init is the entrypoint (start.sh, start-notebook and start-singleuser in one)",
        );
    }
    let missing: Vec<&str> = ["start.sh", "start-notebook.py", "start-singleuser.py"]
        .into_iter()
        .filter(|s| {
            f.which(&format!("/usr/local/bin/{s}")).is_none()
                && f.which(&format!("/usr/local/bin/{}", s.replace(".py", ".sh")))
                    .is_none()
        })
        .collect();
    if missing.is_empty() {
        R::pass(
            "start.scripts",
            "start.sh, start-notebook and start-singleuser are in /usr/local/bin",
        )
    } else {
        R::fail(
            "start.scripts",
            format!("missing start scripts in /usr/local/bin: {}", missing.join(", ")),
            "use nbrt-init as the entrypoint (`[image] entrypoint = [\"/usr/local/bin/nbrt-init\"]`, `cmd = [\"start-notebook.py\"]`) or add the scripts",
        )
    }
}

fn hook_dirs(f: &Facts) -> R {
    let missing: Vec<&str> = [
        "/usr/local/bin/start-notebook.d",
        "/usr/local/bin/before-notebook.d",
    ]
    .into_iter()
    .filter(|d| !f.is_dir(d))
    .collect();
    if missing.is_empty() {
        R::pass(
            "start.hooks",
            "hook directories start-notebook.d and before-notebook.d exist",
        )
    } else {
        R::fail(
            "start.hooks",
            format!("missing hook directories: {}", missing.join(", ")),
            "create them (a `[[files]]` entry or `mkdir -p` in a `[[run]]` step)",
        )
    }
}

fn env_vars(f: &Facts) -> R {
    let missing: Vec<&str> = ["NB_USER", "NB_UID", "NB_GID", "HOME"]
        .into_iter()
        .filter(|k| !f.env.contains_key(*k))
        .collect();
    if missing.is_empty() {
        R::pass("image.env", "NB_USER, NB_UID, NB_GID and HOME are set")
    } else {
        R::fail(
            "image.env",
            format!("environment lacks {}", missing.join(", ")),
            "set them in `[env]` (NB_USER = \"jovyan\", NB_UID = \"1000\", NB_GID = \"100\", HOME = \"/home/jovyan\")",
        )
    }
}

fn singleuser(f: &Facts) -> R {
    match f.which("jupyterhub-singleuser") {
        Some(p) => R::pass("jupyterhub.singleuser", format!("jupyterhub-singleuser is {p}")),
        None => R::fail(
            "jupyterhub.singleuser",
            "jupyterhub-singleuser is not on PATH: the spawner's start command fails",
            "install jupyterhub in the image's environment, at the hub's version (`[pip] packages = [\"jupyterhub==<hub version>\"]`)",
        ),
    }
}

/// The jupyterhub and JupyterLab versions the image carries, from its labels (what `nbrt
/// build` read off the image) checked against its Python packages.
fn hub_versions(f: &Facts) -> R {
    let labels = f.image.labels();
    let installed = |name: &str| {
        f.packages
            .iter()
            .find(|p| p.source != crate::packages::Source::Debian && p.name == name)
            .map(|p| p.version.as_str())
    };
    let mut said = Vec::new();
    for (key, dist, shown) in [
        (label::JUPYTERHUB_VERSION, "jupyterhub", "jupyterhub"),
        (label::JUPYTERLAB_VERSION, "jupyterlab", "JupyterLab"),
    ] {
        match (key.get(&labels), installed(dist)) {
            (Some(l), Some(i)) if l != i => {
                return R::fail(
                    "jupyterhub.version",
                    format!("label {} says {shown} {l}, the image has {i}", key.name),
                    "rebuild the image with nbrt build, which writes the label from what it installs",
                )
            }
            (Some(l), _) => said.push(format!("{shown} {l} ({})", key.name)),
            (None, Some(i)) if dist == "jupyterhub" => {
                return R::warn(
                    "jupyterhub.version",
                    format!(
                        "the image has jupyterhub {i} but no {} label: nothing outside the image says which Hub it is for",
                        key.name
                    ),
                    "add `[image.version-labels] \"io.nbrt.jupyterhub.version\" = \"jupyterhub\"` to the runtime file",
                )
            }
            _ => {}
        }
    }
    match said.first() {
        Some(_) => R::pass(
            "jupyterhub.version",
            format!(
                "{}: the Hub should run the same jupyterhub major version",
                said.join(", ")
            ),
        ),
        None => R::warn(
            "jupyterhub.version",
            "no jupyterhub version in the image's labels or packages",
            "install jupyterhub at the Hub's version and record it with `[image.version-labels]`",
        ),
    }
}

fn manifest(f: &Facts) -> R {
    let n = crate::manifest::Manifest::of(f.packages).libraries.len();
    if n > 0 {
        R::pass(
            "manifest",
            format!("{n} conda/Python packages for the runtime manifest"),
        )
    } else {
        R::fail(
            "manifest",
            "no conda or Python packages found: the runtime's library manifest would be empty",
            "install the runtime's libraries with `[conda]` or `[pip]`",
        )
    }
}

const BOOTSTRAP: &str = "/usr/local/bin/bootstrap-kernel.sh";
const LAUNCHERS: &str = "/usr/local/bin/kernel-launchers/python/scripts";

fn kernel_user(f: &Facts) -> R {
    match f.passwd.iter().find(|p| p.uid == NB_UID) {
        Some(p) if p.gid == NB_GID => R::pass("kernel.user", format!("{} is {NB_UID}:{NB_GID} (KERNEL_UID/KERNEL_GID)", p.name)),
        Some(p) => R::warn(
            "kernel.user",
            format!("uid {NB_UID} ({}) has primary group {}; launchers start kernels as KERNEL_UID 1000 with KERNEL_GID 100", p.name, p.gid),
            "create the user with gid 100 (`[user] gid = 100`)",
        ),
        None => R::fail(
            "kernel.user",
            format!("/etc/passwd has no uid {NB_UID}: kernels start as KERNEL_UID 1000 and find no home"),
            "add `[user]` (jovyan 1000:100) to the runtime file",
        ),
    }
}

fn kernel_cmd(f: &Facts) -> R {
    let cmd = f.command();
    if cmd.iter().any(|c| c.contains("bootstrap-kernel.sh")) {
        R::pass(
            "kernel.command",
            "the image's command starts bootstrap-kernel.sh",
        )
    } else {
        R::fail(
            "kernel.command",
            format!("the image's command {cmd:?} does not start {BOOTSTRAP}; the Docker and Kubernetes launchers pass no command"),
            format!("set `[image] cmd = [\"{BOOTSTRAP}\"]`"),
        )
    }
}

fn bootstrap(f: &Facts) -> R {
    if !f.is_executable(BOOTSTRAP) {
        return R::fail(
            "kernel.bootstrap",
            format!("{BOOTSTRAP} is missing or not executable"),
            "add it (`jupyter image-bootstrap install` at build time, or a `[[files]]` entry with mode 0755)",
        );
    }
    match f.view.text(BOOTSTRAP) {
        Some(t) if !t.contains("KERNEL_LANGUAGE") || !t.contains("RESPONSE_ADDRESS") => R::fail(
            "kernel.bootstrap",
            format!("{BOOTSTRAP} does not read KERNEL_LANGUAGE and RESPONSE_ADDRESS: not a kernel bootstrap"),
            "install the bootstrap from gateway_provisioners (`jupyter image-bootstrap install`)",
        ),
        _ => R::pass("kernel.bootstrap", format!("{BOOTSTRAP} is present")),
    }
}

fn bash(f: &Facts) -> R {
    if f.is_executable("/bin/bash") {
        R::pass("kernel.bash", "/bin/bash is present")
    } else {
        R::fail(
            "kernel.bash",
            "/bin/bash is missing: bootstrap-kernel.sh needs bash",
            "`[apt] packages = [\"bash\"]`",
        )
    }
}

fn launcher(f: &Facts) -> R {
    let launch = format!("{LAUNCHERS}/launch_ipykernel.py");
    let listener = format!("{LAUNCHERS}/server_listener.py");
    if f.view.lookup(&launch).is_none() {
        return R::fail(
            "kernel.launcher",
            format!("the Python kernel launcher {launch} is missing"),
            "install the launchers (`jupyter image-bootstrap install --languages Python` at build time)",
        );
    }
    match f.view.text(&listener) {
        None => R::fail(
            "kernel.launcher",
            format!("{listener} is missing: the launcher cannot send the connection info"),
            "install the launchers with `jupyter image-bootstrap install` (it copies the real listener)",
        ),
        Some(t) if t.contains("NotImplementedError") && !t.contains("def setup_server_listener") => R::fail(
            "kernel.launcher",
            format!("{listener} is the source tree's placeholder (it raises NotImplementedError)"),
            "copy the real server_listener.py from gateway_provisioners' shared scripts (`jupyter image-bootstrap install` does)",
        ),
        Some(_) => R::pass("kernel.launcher", format!("{launch} and server_listener.py are present")),
    }
}

fn python_named_python(f: &Facts) -> R {
    match (f.python("python"), f.which("python3")) {
        (Some(p), _) => R::pass("kernel.python", format!("python is {}", p.path)),
        (None, Some(p3)) => R::fail(
            "kernel.python",
            format!("PATH has python3 ({p3}) but no `python`: bootstrap-kernel.sh runs `python`"),
            "add a `python` (a venv has one; on Debian `[apt] packages = [\"python-is-python3\"]`)",
        ),
        (None, None) => R::fail(
            "kernel.python",
            "no Python on PATH",
            "install Python with ipykernel and pycryptodomex",
        ),
    }
}

fn kernel_python_module(f: &Facts, dist: &str, module: &str) -> R {
    let id = format!("kernel.{dist}");
    let Some(py) = f.python("python") else {
        return R::skip(&id, "no `python` on PATH");
    };
    match f.env_package(&py, dist) {
        Some(p) => R::pass(
            &id,
            format!("python can import {module} ({dist} {})", p.version),
        ),
        None => R::fail(
            &id,
            format!(
                "{} cannot import {module}: {dist} is not installed in {}",
                py.path, py.prefix
            ),
            format!("`[pip] packages = [\"{dist}\"]` (prefix {})", py.prefix),
        ),
    }
}
