//! The start sequence: docker-stacks' start.sh + start-notebook + Kubeflow's cont-init and
//! services, in one process that then becomes the supervisor.
//!
//! Order: cont-init.d → start-notebook.d (as the start user) → user/home set-up (root start)
//! or checks and warnings (non-root start) → home skeleton → before-notebook.d (as root on a
//! root start) → JUPYTER_ENV_VARS_TO_UNSET → GEN_CERT → services and the main command.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::{access, AccessFlags};

use crate::cli::{Program, Start};
use crate::env::{plain_join, shell_join, Auth, Env, ServerSettings, UserSettings};
use crate::error::{Error, Result};
use crate::home::{self, Owner};
use crate::hooks;
use crate::log;
use crate::proc::{Cred, Launch};
use crate::supervise::{self, Plan, Service};
use crate::userdb::{write_file_atomic, Passwd, UserDb};

/// Where things are (all under `root`, which is `/` in a container; tests use a temp dir).
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub start_hooks: PathBuf,
    pub before_hooks: PathBuf,
    pub cont_init: PathBuf,
    pub services: PathBuf,
}

impl Layout {
    pub fn system() -> Layout {
        Layout::under(Path::new("/"))
    }

    pub fn under(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            start_hooks: root.join("usr/local/bin/start-notebook.d"),
            before_hooks: root.join("usr/local/bin/before-notebook.d"),
            cont_init: root.join("etc/cont-init.d"),
            services: root.join("etc/services.d"),
        }
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// Who the main command and the services run as, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
    /// Whether nbrt-init changes credentials before exec (root start, not the root triplet).
    pub switch: bool,
    /// New working directory (the home was renamed and the cwd was inside it).
    pub cwd: Option<PathBuf>,
}

impl Identity {
    pub fn cred(&self) -> Option<Cred> {
        self.switch.then(|| Cred {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        })
    }
}

const DEFAULT_USER: &str = "jovyan";

/// Root start: make the user database, home, ownership and sudo match the settings.
pub fn setup_root(us: &UserSettings, layout: &Layout, cwd: Option<&Path>) -> Result<Identity> {
    let mut db = UserDb::load(&layout.root)?;
    let default_home = PathBuf::from(format!("/home/{DEFAULT_USER}"));

    if us.is_root_triplet() {
        let home = PathBuf::from("/home/root");
        db.set_user_fields("root", |u| u.home = "/home/root".into());
        db.save()?;
        if !layout.path("/home/root").exists() {
            copy_or_link_home(layout, &default_home, &home, Owner::Copier)?;
        }
        apply_chowns(us, layout, &home, 0, 0)?;
        fill_from_skeleton(us, layout, &home, Some((0, 0)));
        write_sudo_files(us, layout)?;
        return Ok(Identity {
            name: "root".into(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            home,
            switch: false,
            cwd: relocate_cwd(cwd, &default_home, Path::new("/home/root")),
        });
    }

    let name = us.nb_user.clone();
    let home = PathBuf::from(format!("/home/{name}"));
    let home_text = home.display().to_string();
    let refit = match (db.user(DEFAULT_USER).is_some(), db.user(&name).is_some()) {
        // docker-stacks' `usermod --home /home/$NB_USER --login $NB_USER jovyan`.
        (true, false) => true,
        (true, true) => name == DEFAULT_USER,
        (false, true) => false,
        (false, false) => return Err(Error::NoSuchUser(name)),
    };
    if refit {
        let old_home = db.user(DEFAULT_USER).map(|u| u.home.clone());
        if name != DEFAULT_USER || old_home.as_deref() != Some(home_text.as_str()) {
            log::info("Updated the jovyan user:");
            log::info(format!("- username: {DEFAULT_USER}       -> {name}"));
            log::info(format!("- home dir: /home/{DEFAULT_USER} -> {home_text}"));
        }
        if name != DEFAULT_USER {
            db.rename_user(DEFAULT_USER, &name);
        }
    }
    db.set_user_fields(&name, |u| {
        if u.home != home_text {
            if !refit {
                log::info(format!("Setting the home of {name} to {home_text}"));
            }
            u.home = home_text.clone();
        }
    });
    let Some(current) = db.user(&name).cloned() else {
        return Err(Error::NoSuchUser(name));
    };
    let uid = us.nb_uid.unwrap_or(current.uid);
    let gid = us.nb_gid.unwrap_or(current.gid);
    if uid != current.uid || gid != current.gid {
        if gid != current.gid {
            let group = us.nb_group.clone().unwrap_or_else(|| name.clone());
            if db.ensure_group(&group, gid) {
                log::info(format!("Adding group {group} with gid {gid}"));
            }
        }
        if uid != current.uid {
            if let Some(other) = db.user_by_uid(uid).filter(|o| o.name != name) {
                log::warning(format!("uid {uid} is also used by user {}", other.name));
            }
        }
        log::info(format!("Update {name}'s UID:GID to {uid}:{gid}"));
        db.set_user_fields(&name, |u| {
            u.uid = uid;
            u.gid = gid;
        });
        // Keep the image's group (users, 100) so /opt/conda and the image home stay writable.
        db.add_member(100, &name);
    }
    db.save()?;

    let mut cwd_new = None;
    if name != DEFAULT_USER {
        if !layout.path(&home_text).exists() {
            copy_or_link_home(layout, &default_home, &home, Owner::Preserve)?;
        }
        cwd_new = relocate_cwd(cwd, &default_home, &home);
    }
    apply_chowns(us, layout, &home, uid, gid)?;
    fill_from_skeleton(us, layout, &home, Some((uid, gid)));
    write_sudo_files(us, layout)?;
    Ok(Identity {
        groups: db.group_ids_of(&name, gid),
        name,
        uid,
        gid,
        home,
        switch: true,
        cwd: cwd_new,
    })
}

/// The working directory moved from the image home `from` to the new home `to`, logged as
/// docker-stacks does (`Changing working directory to /home/alice/`).
fn relocate_cwd(cwd: Option<&Path>, from: &Path, to: &Path) -> Option<PathBuf> {
    let rel = cwd?.strip_prefix(from).ok()?;
    let new = if rel.as_os_str().is_empty() {
        to.to_owned()
    } else {
        to.join(rel)
    };
    log::info(format!(
        "Changing working directory to {}/{}",
        to.display(),
        rel.display()
    ));
    Some(new)
}

fn copy_or_link_home(layout: &Layout, from: &Path, to: &Path, owner: Owner) -> Result<()> {
    let (src, dst) = (
        layout.path(&from.display().to_string()),
        layout.path(&to.display().to_string()),
    );
    log::info(format!(
        "Attempting to copy {} to {}...",
        from.display(),
        to.display()
    ));
    let copied = (|| -> Result<()> {
        fs::create_dir_all(&dst).map_err(|e| Error::io("creating", &dst, e))?;
        if let Ok(m) = fs::metadata(&src) {
            let _ = fs::set_permissions(&dst, fs::Permissions::from_mode(m.mode() & 0o7777));
            if owner == Owner::Preserve {
                let _ = std::os::unix::fs::lchown(&dst, Some(m.uid()), Some(m.gid()));
            }
        }
        home::copy_tree(&src, &dst, owner, false).map(|_| ())
    })();
    match copied {
        Ok(()) => {
            log::info("Success!");
            Ok(())
        }
        Err(e) => {
            log::error(format!(
                "Failed to copy data from {} to {}: {e}",
                from.display(),
                to.display()
            ));
            let _ = fs::remove_dir_all(&dst);
            log::info(format!(
                "Attempting to symlink {} to {}...",
                from.display(),
                to.display()
            ));
            match std::os::unix::fs::symlink(from, &dst) {
                Ok(()) => {
                    log::info("Success creating symlink!");
                    Ok(())
                }
                Err(e2) => Err(Error::Home {
                    home: to.to_owned(),
                    reason: format!("copying failed ({e}) and linking failed ({e2})"),
                }),
            }
        }
    }
}

fn apply_chowns(us: &UserSettings, layout: &Layout, home: &Path, uid: u32, gid: u32) -> Result<()> {
    if us.chown_home {
        let r = if us.chown_home_opts.recursive {
            "(chown options: -R)"
        } else {
            ""
        };
        log::info(format!(
            "Ensuring {} is owned by {uid}:{gid} {r}",
            home.display()
        ));
        home::chown_path(
            &layout.path(&home.display().to_string()),
            uid,
            gid,
            us.chown_home_opts.recursive,
        )?;
    }
    for p in &us.chown_extra {
        let r = if us.chown_extra_opts.recursive {
            "(chown options: -R)"
        } else {
            ""
        };
        log::info(format!(
            "Ensuring {} is owned by {uid}:{gid} {r}",
            p.display()
        ));
        home::chown_path(
            &layout.path(&p.display().to_string()),
            uid,
            gid,
            us.chown_extra_opts.recursive,
        )?;
    }
    Ok(())
}

/// Kubeflow: copy what the home lacks from the image's skeleton, never overwriting.
fn fill_from_skeleton(us: &UserSettings, layout: &Layout, home: &Path, owner: Option<(u32, u32)>) {
    let Some(skel) = us
        .home_skel
        .iter()
        .map(|s| layout.path(&s.display().to_string()))
        .find(|s| s.is_dir())
    else {
        return;
    };
    let dst = layout.path(&home.display().to_string());
    if !dst.is_dir() {
        return;
    }
    let owner = match owner {
        Some((u, g)) => Owner::Set(u, g),
        None => Owner::Copier,
    };
    match home::copy_tree(&skel, &dst, owner, true) {
        Ok(st) if st.copied > 0 => log::info(format!(
            "Copied {} missing entries from the home skeleton {} into {} (nothing overwritten)",
            st.copied,
            skel.display(),
            home.display()
        )),
        Ok(_) => {}
        Err(e) => log::warning(format!(
            "Could not fill {} from {}: {e}",
            home.display(),
            skel.display()
        )),
    }
}

fn secure_path_of(sudoers: &str) -> Option<String> {
    sudoers.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("Defaults")?.trim_start();
        let v = rest
            .strip_prefix("secure_path")?
            .trim_start()
            .strip_prefix('=')?
            .trim();
        Some(v.trim_matches('"').to_owned())
    })
}

fn write_sudo_files(us: &UserSettings, layout: &Layout) -> Result<()> {
    let dir = layout.path("/etc/sudoers.d");
    if !dir.is_dir() {
        if us.grant_sudo {
            log::warning(
                "GRANT_SUDO is set but /etc/sudoers.d does not exist (is sudo installed?)",
            );
        }
        return Ok(());
    }
    let base = fs::read_to_string(layout.path("/etc/sudoers"))
        .ok()
        .and_then(|s| secure_path_of(&s))
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    let conda_bin = us.conda_dir.join("bin");
    let path = format!("Defaults secure_path=\"{}:{base}\"\n", conda_bin.display());
    write_0440(&dir.join("path"), &path)?;
    if us.grant_sudo {
        log::info(format!("Granting {} passwordless sudo rights!", us.nb_user));
        write_0440(
            &dir.join("added-by-start-script"),
            &format!("{} ALL=(ALL) NOPASSWD:ALL\n", us.nb_user),
        )?;
    }
    Ok(())
}

fn write_0440(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    if !path.exists() {
        fs::write(path, "").map_err(|e| Error::io("creating", path, e))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o440))
        .map_err(|e| Error::io("setting mode of", path, e))?;
    write_file_atomic(path, text.as_bytes())
}

/// Non-root start: fix a missing passwd entry if allowed, and warn about what needs root.
pub fn setup_non_root(us: &UserSettings, layout: &Layout, env: &Env) -> Result<Identity> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    if us.grant_sudo {
        log::warning("container must be started as root to grant sudo permissions!");
    }
    let mut db = UserDb::load(&layout.root)?;
    let default_uid = db.user(DEFAULT_USER).map(|u| u.uid);
    let default_gid = db.user(DEFAULT_USER).map(|u| u.gid);
    if db.user_by_uid(uid).is_none() {
        log::info(format!(
            "There is no entry in /etc/passwd for our UID={uid}. Attempting to fix..."
        ));
        let passwd = layout.path("/etc/passwd");
        if access(&passwd, AccessFlags::W_OK).is_ok() {
            if let Some(old) = db.user(DEFAULT_USER).cloned() {
                log::info(format!(
                    "Renaming old {DEFAULT_USER} user to nayvoj ({}:{})",
                    old.uid, old.gid
                ));
                db.rename_user(DEFAULT_USER, "nayvoj");
            }
            db.add_user(Passwd {
                name: us.nb_user.clone(),
                password: "x".into(),
                uid,
                gid,
                gecos: ",,,".into(),
                home: format!("/home/{DEFAULT_USER}"),
                shell: "/bin/bash".into(),
            });
            db.save()?;
            log::info(format!(
                "Added new {} user ({uid}:{gid}). Fixed UID!",
                us.nb_user
            ));
            if us.nb_user != DEFAULT_USER {
                log::warning(format!(
                    "user is {} but home is /home/{DEFAULT_USER}. You must run as root to rename the home directory!",
                    us.nb_user
                ));
            }
        } else {
            log::warning(format!(
                "unable to fix missing /etc/passwd entry because we don't have write permission. \
                 Try setting gid=0 with \"--user={uid}:0\"."
            ));
        }
    }
    let current = db.user_by_uid(uid).map(|u| u.name.clone());
    if us.nb_user != DEFAULT_USER && Some(&us.nb_user) != current.as_ref() {
        log::warning(format!(
            "container must be started as root to change the desired user's name with NB_USER=\"{}\"!",
            us.nb_user
        ));
    }
    if let Some(want) = us.nb_uid {
        if Some(want) != default_uid && want != uid {
            log::warning(format!(
                "container must be started as root to change the desired user's id with NB_UID=\"{want}\"!"
            ));
        }
    }
    if let Some(want) = us.nb_gid {
        if Some(want) != default_gid && want != gid {
            log::warning(format!(
                "container must be started as root to change the desired user's group id with NB_GID=\"{want}\"!"
            ));
        }
    }
    let image_home = layout.path(&format!("/home/{DEFAULT_USER}"));
    if access(&image_home, AccessFlags::W_OK).is_err() {
        log::warning(format!(
            "no write access to /home/{DEFAULT_USER}. Try starting the container with group 'users' (100), \
             e.g. using \"--group-add=users\"."
        ));
    }
    let home = env
        .non_empty("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/home/{DEFAULT_USER}")));
    fill_from_skeleton(us, layout, &home, None);
    Ok(Identity {
        name: current.unwrap_or_else(|| us.nb_user.clone()),
        uid,
        gid,
        groups: Vec::new(),
        home,
        switch: false,
        cwd: None,
    })
}

/// The server's command: docker-stacks' start-notebook.py (`jupyter
/// ${DOCKER_STACKS_JUPYTER_CMD:-lab}`) or start-singleuser.py (`jupyterhub-singleuser`), then
/// `NOTEBOOK_ARGS`, then the arguments given. nbrt-init adds no setting of its own: the
/// image's defaults (address, browser, base URL, CORS, no-token mode, certificate) are in
/// `/etc/jupyter/jupyter_server_config.py`, which every argument overrides.
pub fn server_argv(s: &ServerSettings, singleuser: bool, extra: &[OsString]) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if singleuser {
        v.push("jupyterhub-singleuser".into());
    } else {
        v.push("jupyter".into());
        v.push(s.jupyter_cmd.clone().into());
    }
    v.extend(s.notebook_args.iter().map(OsString::from));
    v.extend(extra.iter().cloned());
    v
}

fn parse_umask(env: &Env) -> Result<Option<u32>> {
    match env.get("NB_UMASK") {
        None => Ok(None),
        Some(m) => u32::from_str_radix(m.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(Some)
            .ok_or(Error::BadEnv {
                name: "NB_UMASK",
                value: m,
                reason: "expected an octal umask such as 002 or 0022".into(),
            }),
    }
}

/// GEN_CERT: a self-signed certificate at `jupyter_data_dir()/notebook.pem`, where the
/// image's jupyter_server_config.py (like docker-stacks') takes it from.
fn gen_cert(env: &Env, id: &Identity, as_root: bool) -> Result<PathBuf> {
    let data = crate::health::data_dir(env).unwrap_or_else(|| id.home.join(".local/share/jupyter"));
    let owner = (as_root && id.switch).then_some((id.uid, id.gid));
    home::create_dir_all_owned(&data, owner)?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let generated = crate::cert::generate(&[host])?;
    let path = data.join("notebook.pem");
    crate::cert::write_pem(&path, &generated, owner)?;
    log::info(format!(
        "Generated a self-signed certificate for HTTPS: {}",
        path.display()
    ));
    Ok(path)
}

/// Everything decided by the start sequence, ready for the supervisor.
pub struct Prepared {
    pub plan: Plan,
    pub describe: String,
}

/// Run the start sequence (hooks, user set-up) and build the supervisor's plan.
pub fn prepare(
    start: Start,
    layout: &Layout,
    mut env: Env,
    exe: &Path,
    t0: Instant,
) -> Result<Prepared> {
    let program = start.program.clone();
    let as_root = nix::unistd::geteuid().is_root();
    hooks::run_cont_init(&layout.cont_init, &env)?;
    hooks::run_dir(&layout.start_hooks, &mut env, exe)?;

    let us = UserSettings::from_env(&env)?;
    let cwd = std::env::current_dir().ok();
    let id = if as_root {
        setup_root(&us, layout, cwd.as_deref())?
    } else {
        setup_non_root(&us, layout, &env)?
    };
    if id.switch || us.is_root_triplet() && as_root {
        env.set("HOME", id.home.as_os_str());
        env.set("USER", &id.name);
        env.set("LOGNAME", &id.name);
    }
    if let Some(c) = &id.cwd {
        env.set("PWD", c.as_os_str());
    }
    // The user's own packages, under the home and keyed by the runtime (before the
    // before-notebook.d hooks, which may change them).
    if let Some(up) = crate::userpkgs::apply(&mut env, &layout.root, &id.home, &us.conda_dir) {
        log::info(format!(
            "User packages of this runtime go to {} (pip install --user, conda create -n)",
            up.dir.display()
        ));
    }

    hooks::run_dir(&layout.before_hooks, &mut env, exe)?;
    for name in env.apply_unset_list() {
        log::info(format!("Unset {name} due to JUPYTER_ENV_VARS_TO_UNSET"));
    }
    let umask = parse_umask(&env)?;

    // GEN_CERT: any Jupyter server of the container serves HTTPS (the config file picks the
    // certificate up), as with docker-stacks, whose config makes it at each server start.
    let gen_cert_for = |env: &Env| -> Result<()> {
        if env.contains("GEN_CERT") {
            gen_cert(env, &id, as_root)?;
        }
        Ok(())
    };
    let mut stdout_lines = Vec::new();
    let (argv, restart) = match &program {
        Program::Notebook(extra) | Program::Singleuser(extra) => {
            let s = ServerSettings::from_env(&env)?;
            let singleuser = matches!(program, Program::Singleuser(_)) || s.hub;
            if !singleuser {
                match s.auth {
                    Auth::Token => log::info(format!(
                        "Authentication: token ({}; JUPYTER_TOKEN sets it, else Jupyter makes one and logs it)",
                        s.auth_reason
                    )),
                    Auth::None => log::warning(format!(
                        "Authentication: none — {}. Only safe behind a platform that authenticates",
                        s.auth_reason
                    )),
                }
            }
            gen_cert_for(&env)?;
            let argv = server_argv(&s, singleuser, extra);
            stdout_lines = launcher_lines(&start, singleuser, &argv);
            (argv, s.restartable && !singleuser)
        }
        Program::Command(words) => {
            if let Err(e) = gen_cert_for(&env) {
                log::error(e.to_string());
            }
            (words.clone(), false)
        }
        Program::ServicesOnly => (Vec::new(), false),
    };

    let main = (!argv.is_empty()).then(|| {
        let mut l = Launch::new(argv.clone(), env.clone());
        l.cred = id.cred();
        l.cwd = id.cwd.clone();
        l.umask = umask;
        l.own_group = true;
        l.foreground = true;
        l
    });

    if as_root && matches!(program, Program::Notebook(_) | Program::Singleuser(_)) {
        if let Some(dir) = crate::health::runtime_dir(&env) {
            let state = layout.path(crate::health::STATE_FILE);
            if let Err(e) = crate::health::write_state(&state, id.uid, &dir) {
                log::debug(format!(
                    "Could not record the server's runtime directory in {}: {e}",
                    state.display()
                ));
            }
        }
    }
    let services = build_services(layout, &env, &id, as_root)?;
    let describe = shell_join(&argv);
    if std::env::var_os("NBRT_INIT_TIMING").is_some() {
        log::info(format!(
            "nbrt-init prepared the start in {:.2} ms",
            t0.elapsed().as_secs_f64() * 1000.0
        ));
    }
    if main.is_some() {
        let command = plain_join(&start.command);
        if as_root {
            log::info(format!("Running as {}: {command}", id.name));
        } else {
            log::info(format!("Executing the command: {command}"));
        }
        print_stdout(&stdout_lines);
    }
    Ok(Prepared {
        plan: Plan {
            main,
            restart_main: restart,
            services,
            grace: Duration::from_secs(5),
        },
        describe,
    })
}

/// What docker-stacks' launchers print on standard output before the server runs: the `.sh`
/// shims' `WARNING: Use start-….py instead`, start-notebook.py's JupyterHub hand-off, and
/// `Executing: <server command>`.
pub fn launcher_lines(start: &Start, singleuser: bool, argv: &[OsString]) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(shim) = start.shim() {
        lines.push(format!(
            "WARNING: Use {}.py instead",
            shim.trim_end_matches(".sh")
        ));
    }
    if singleuser && matches!(start.program, Program::Notebook(_)) {
        lines.push(
            "WARNING: using start-singleuser.py instead of start-notebook.py to start a server \
             associated with JupyterHub."
                .to_owned(),
        );
    }
    lines.push(format!("Executing: {}", plain_join(argv)));
    lines
}

/// Print lines on standard output (docker-stacks' launchers print there, not in the log).
pub fn print_stdout(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
}

fn build_services(
    layout: &Layout,
    env: &Env,
    id: &Identity,
    as_root: bool,
) -> Result<Vec<Service>> {
    let dirs = supervise::discover(&layout.services)?;
    if dirs.is_empty() {
        return Ok(Vec::new());
    }
    let db = UserDb::load(&layout.root).ok();
    let mut out = Vec::new();
    for d in dirs {
        let mut cred = id.cred();
        let mut senv = env.clone();
        if let Some(u) = &d.user {
            if !as_root {
                if u != &id.name && u != &id.uid.to_string() {
                    log::warning(format!(
                        "Service {} asks to run as {u}, but the container was not started as root: running it as uid {}",
                        d.name, id.uid
                    ));
                }
            } else {
                let found = db.as_ref().and_then(|db| {
                    db.user(u)
                        .or_else(|| u.parse().ok().and_then(|n| db.user_by_uid(n)))
                        .map(|p| (p.clone(), db.group_ids_of(&p.name, p.gid)))
                });
                match found {
                    Some((p, groups)) => {
                        cred = (p.uid != 0).then_some(Cred {
                            uid: p.uid,
                            gid: p.gid,
                            groups,
                        });
                        senv.set("HOME", &p.home);
                        senv.set("USER", &p.name);
                        senv.set("LOGNAME", &p.name);
                    }
                    None => {
                        log::error(format!(
                            "Service {}: unknown user {u:?} in its user file, skipping it",
                            d.name
                        ));
                        continue;
                    }
                }
            }
        }
        let mut launch = Launch::new([d.run.as_os_str()], senv.clone());
        launch.cred = cred.clone();
        launch.cwd = Some(d.dir.clone());
        launch.own_group = true;
        let finish = d.finish.as_ref().map(|f| {
            let mut l = Launch::new([f.as_os_str()], senv.clone());
            l.cred = cred.clone();
            l.cwd = Some(d.dir.clone());
            l.own_group = true;
            l
        });
        let who = match &cred {
            Some(c) => format!("uid {}", c.uid),
            None => format!("uid {}", nix::unistd::geteuid()),
        };
        log::info(format!("Supervising service {} as {who}", d.name));
        out.push(Service {
            name: d.name,
            dir: d.dir,
            launch,
            finish,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn notebook_arguments() {
        // Only the command, NOTEBOOK_ARGS and the arguments: the settings nbrt-init used to
        // add (address, browser, port, base URL, CORS, certificate) are the config file's,
        // so that any of them given by the user wins instead of clashing.
        let s = ServerSettings::from_env(&env(&[
            ("JUPYTER_PORT", "8888"),
            ("NB_PREFIX", "/notebook/ns/nb"),
            ("NOTEBOOK_ARGS", "--ServerApp.token=abc"),
            ("GEN_CERT", "1"),
        ]))
        .unwrap();
        let argv = server_argv(&s, false, &[OsString::from("--debug")]);
        assert_eq!(
            argv,
            ["jupyter", "lab", "--ServerApp.token=abc", "--debug"].map(OsString::from)
        );
    }

    #[test]
    fn singleuser_and_auth_none_arguments() {
        let s = ServerSettings::from_env(&env(&[("NOTEBOOK_ARGS", "--a"), ("NB_PREFIX", "/x")]))
            .unwrap();
        let argv = server_argv(&s, true, &[OsString::from("--b")]);
        assert_eq!(
            argv,
            vec![
                OsString::from("jupyterhub-singleuser"),
                "--a".into(),
                "--b".into()
            ]
        );

        let s = ServerSettings::from_env(&env(&[
            ("NBRT_AUTH", "none"),
            ("DOCKER_STACKS_JUPYTER_CMD", "server"),
        ]))
        .unwrap();
        let argv = server_argv(&s, false, &[]);
        assert_eq!(argv, ["jupyter", "server"].map(OsString::from));
    }

    #[test]
    fn launcher_lines_are_docker_stacks() {
        let start = |words: &[&str]| match crate::cli::parse(
            std::ffi::OsStr::new("nbrt-init"),
            words.iter().map(OsString::from).collect(),
        ) {
            Ok(crate::cli::Cmd::Start(s)) => s,
            other => panic!("{other:?}"),
        };
        let lab = ["jupyter", "lab", "--ip=::"].map(OsString::from);
        assert_eq!(
            launcher_lines(&start(&["start-notebook.py"]), false, &lab),
            ["Executing: jupyter lab --ip=::"]
        );
        assert_eq!(
            launcher_lines(
                &start(&["start-notebook.sh"]),
                true,
                &["jupyterhub-singleuser".into()]
            ),
            [
                "WARNING: Use start-notebook.py instead",
                "WARNING: using start-singleuser.py instead of start-notebook.py to start a server associated with JupyterHub.",
                "Executing: jupyterhub-singleuser",
            ]
        );
        assert_eq!(
            launcher_lines(
                &start(&["start-singleuser.sh"]),
                true,
                &["jupyterhub-singleuser".into()]
            ),
            [
                "WARNING: Use start-singleuser.py instead",
                "Executing: jupyterhub-singleuser"
            ]
        );
    }

    #[test]
    fn sudoers_secure_path() {
        let s = "Defaults\tenv_reset\nDefaults\tsecure_path=\"/usr/local/sbin:/usr/bin\"\n";
        assert_eq!(
            secure_path_of(s).as_deref(),
            Some("/usr/local/sbin:/usr/bin")
        );
        assert_eq!(secure_path_of("root ALL=(ALL) ALL"), None);
    }

    /// A root file system in a temporary directory with docker-stacks' user layout.
    fn fake_image() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "etc/sudoers.d",
            "home/jovyan/work",
            "usr/local/share/nbrt/home-skel/.jupyter",
        ] {
            fs::create_dir_all(r.join(dir)).unwrap();
        }
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n",
        )
        .unwrap();
        fs::write(r.join("etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
        fs::write(
            r.join("etc/shadow"),
            "root:*:1:0:99999:7:::\njovyan:!:1:0:99999:7:::\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/sudoers"),
            "Defaults\tsecure_path=\"/usr/sbin:/usr/bin\"\n",
        )
        .unwrap();
        fs::write(r.join("home/jovyan/.bashrc"), "rc").unwrap();
        fs::write(
            r.join("usr/local/share/nbrt/home-skel/.jupyter/marker"),
            "skel",
        )
        .unwrap();
        for p in ["home/jovyan", "home/jovyan/work", "home/jovyan/.bashrc"] {
            std::os::unix::fs::lchown(r.join(p), Some(1000), Some(100)).unwrap();
        }
        d
    }

    #[test]
    fn root_start_renames_changes_ids_copies_home_and_grants_sudo() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: needs root for chown");
            return;
        }
        let d = fake_image();
        let layout = Layout::under(d.path());
        let us = UserSettings::from_env(&env(&[
            ("NB_USER", "alice"),
            ("NB_UID", "1234"),
            ("NB_GID", "2345"),
            ("NB_GROUP", "lab"),
            ("CHOWN_HOME", "yes"),
            ("GRANT_SUDO", "yes"),
        ]))
        .unwrap();
        let id = setup_root(&us, &layout, Some(Path::new("/home/jovyan/work"))).unwrap();
        assert_eq!(
            id,
            Identity {
                name: "alice".into(),
                uid: 1234,
                gid: 2345,
                groups: vec![2345, 100],
                home: "/home/alice".into(),
                switch: true,
                cwd: Some("/home/alice/work".into()),
            }
        );
        let r = d.path();
        assert_eq!(
            fs::read_to_string(r.join("etc/passwd")).unwrap(),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:1234:2345::/home/alice:/bin/bash\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/group")).unwrap(),
            "root:x:0:\nusers:x:100:alice\nlab:x:2345:\n"
        );
        assert!(fs::read_to_string(r.join("etc/shadow"))
            .unwrap()
            .contains("\nalice:!:"));
        let home = r.join("home/alice");
        assert_eq!(fs::read_to_string(home.join(".bashrc")).unwrap(), "rc");
        assert_eq!(
            fs::read_to_string(home.join(".jupyter/marker")).unwrap(),
            "skel"
        );
        let owner = |p: &Path| {
            let m = fs::symlink_metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(owner(&home), (1234, 2345), "CHOWN_HOME: the home itself");
        assert_eq!(
            owner(&home.join("work")),
            (1000, 100),
            "not recursive without -R"
        );
        assert_eq!(
            owner(&home.join(".jupyter/marker")),
            (1234, 2345),
            "skeleton entries get the user"
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/sudoers.d/path")).unwrap(),
            "Defaults secure_path=\"/opt/conda/bin:/usr/sbin:/usr/bin\"\n"
        );
        assert_eq!(
            fs::read_to_string(r.join("etc/sudoers.d/added-by-start-script")).unwrap(),
            "alice ALL=(ALL) NOPASSWD:ALL\n"
        );
        assert_eq!(
            fs::metadata(r.join("etc/sudoers.d/added-by-start-script"))
                .unwrap()
                .mode()
                & 0o777,
            0o440
        );

        // The same container started again (restart): alice exists, nothing to copy.
        let again = setup_root(&us, &layout, Some(Path::new("/home/alice"))).unwrap();
        assert_eq!((again.uid, again.gid, again.cwd), (1234, 2345, None));
        // Another NB_USER now: neither jovyan nor bob exists.
        let bob = UserSettings::from_env(&env(&[("NB_USER", "bob")])).unwrap();
        assert!(matches!(
            setup_root(&bob, &layout, None),
            Err(Error::NoSuchUser(_))
        ));
    }

    #[test]
    fn root_triplet_keeps_root_and_moves_its_home() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = fake_image();
        let layout = Layout::under(d.path());
        let us = UserSettings::from_env(&env(&[
            ("NB_USER", "root"),
            ("NB_UID", "0"),
            ("NB_GID", "0"),
        ]))
        .unwrap();
        let id = setup_root(&us, &layout, Some(Path::new("/home/jovyan"))).unwrap();
        assert_eq!(
            (id.uid, id.switch, id.home.as_path()),
            (0, false, Path::new("/home/root"))
        );
        assert_eq!(id.cwd.as_deref(), Some(Path::new("/home/root")));
        assert!(fs::read_to_string(d.path().join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:root:/home/root:/bin/bash\n"));
        let m = fs::metadata(d.path().join("home/root/.bashrc")).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "copied without the owners");
    }

    #[test]
    fn cwd_follows_the_renamed_home() {
        let from = Path::new("/home/jovyan");
        assert_eq!(
            relocate_cwd(
                Some(Path::new("/home/jovyan/work/x")),
                from,
                Path::new("/home/a")
            ),
            Some("/home/a/work/x".into())
        );
        assert_eq!(
            relocate_cwd(Some(Path::new("/home/jovyan")), from, Path::new("/home/a")),
            Some("/home/a".into())
        );
        assert_eq!(
            relocate_cwd(Some(Path::new("/tmp")), from, Path::new("/home/a")),
            None
        );
    }
}
