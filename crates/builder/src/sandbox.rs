//! `run` and `apt` steps: a command executed with runc (Debian's `runc`, no Docker daemon)
//! over an overlayfs mount of the image's layer snapshots. What the command changes lands in
//! the overlay's upper directory, which becomes the step's layer
//! ([`crate::layer_dir::layer_from_dir`] with `overlay_upper`).
//!
//! The container gets its own pid, mount, ipc and uts namespaces, and its own network
//! namespace (loopback only) unless the step asks for the network; then it shares the host's,
//! so apt and pip reach the package registries. For such a step only, the host's
//! `/etc/resolv.conf` and (when given) the host's CA bundle are bind-mounted read-only — the
//! bundle at [`CA_BUNDLE_PATH`], with the usual variables pointing at it. Mount points runc
//! had to create for them (or for `/proc`, `/dev`, `/sys` when the image lacks them) are
//! removed from the upper directory afterwards, so none of it reaches the layer.
//!
//! Root in the container has Docker's default capabilities (so apt can chown and install
//! setuid files) and no others; other users get none, within the same bounding set. The
//! environment is the step's plus a default `PATH` and the user's `HOME`, nothing from the
//! host. There is no seccomp or AppArmor profile: build steps are trusted code.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nbrt_oci::facts::passwd;
use serde_json::{json, Value};

use crate::error::{BuildError, IoContext, Result};
use crate::snapshot::{build_err, is_opaque, MergedView};

/// Where the host's CA bundle appears in the container during a step that has one.
pub const CA_BUNDLE_PATH: &str = "/run/nbrt/ca-certificates.crt";
/// Variables that point TLS clients (OpenSSL, Python requests, pip, curl, Node) at the
/// bundle.
pub const CA_BUNDLE_VARS: [&str; 5] = [
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
];
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Debian's runc.
pub const RUNC: &str = "/usr/sbin/runc";
/// How much of the command's output is kept for [`SandboxRun::log`] and errors.
const TAIL_BYTES: usize = 64 << 10;
const TAIL_LINES: usize = 60;

/// Docker's default capabilities.
const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The host's CA bundle, given to steps that reach package registries.
pub fn host_ca_bundle() -> Option<PathBuf> {
    let p = PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
    p.is_file().then_some(p)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub argv: Vec<String>,
    /// `root`, `1000`, `1000:100`, `name`, `name:group`: names are looked up in the image's
    /// `/etc/passwd` and `/etc/group`. Empty means root.
    pub user: String,
    /// `KEY=value` entries; the only environment the command gets besides a default `PATH`,
    /// the user's `HOME` and, with a CA bundle, the variables pointing at it.
    pub env: Vec<String>,
    /// Absolute working directory (created by runc when missing); empty means `/`.
    pub workdir: String,
    /// Share the host's network (and its resolv.conf) for this step.
    pub network: bool,
    /// The host's CA bundle, mounted read-only at [`CA_BUNDLE_PATH`] for this step only.
    pub host_ca_bundle: Option<PathBuf>,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            argv: Vec::new(),
            user: "root".to_string(),
            env: Vec::new(),
            workdir: "/".to_string(),
            network: false,
            host_ca_bundle: None,
        }
    }
}

/// A mount a step asks for besides the usual ones (a Dockerfile's `RUN --mount`): a host
/// directory or file bound at `destination` (read-only unless `writable`), or a fresh tmpfs
/// when `source` is `None`. Unlike the usual mount points, a directory runc creates for one
/// stays in the layer, as BuildKit leaves a `--mount` target.
#[derive(Debug, Clone)]
pub struct ExtraMount {
    pub destination: String,
    pub source: Option<PathBuf>,
    pub writable: bool,
}

/// A finished, successful run.
#[derive(Debug)]
pub struct SandboxRun {
    /// Holds `upper`, the overlay upper directory (the step's changes, in overlay form).
    pub upper: tempfile::TempDir,
    pub exit_code: i32,
    /// The last lines of the command's output.
    pub log: String,
}

impl SandboxRun {
    /// The overlay upper directory.
    pub fn upper_dir(&self) -> PathBuf {
        self.upper.path().join("upper")
    }
}

/// The user a step runs as, resolved against the image.
pub use nbrt_oci::facts::passwd::ResolvedUser;

/// Resolve `user` (`uid`, `uid:gid`, `name`, `name:group`, …) with the image's
/// `/etc/passwd` and `/etc/group` text (either may be empty), by the rules of the shared
/// reader [`nbrt_oci::facts::passwd`] (Docker's): a numeric user not in passwd gets gid 0 and
/// home `/`; a user that has a passwd entry gets the supplementary groups that list it.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<ResolvedUser> {
    passwd::resolve_user(
        user,
        &passwd::parse_passwd(passwd),
        &passwd::parse_group(group),
    )
    .map_err(|e| sandbox_err(e.to_string()))
}

/// [`resolve_user`] with the passwd and group of the image in `view`.
pub fn resolve_user_in(view: &MergedView, user: &str) -> Result<ResolvedUser> {
    let users = passwd::read_passwd(view).map_err(build_err)?;
    let groups = passwd::read_group(view).map_err(build_err)?;
    passwd::resolve_user(user, &users, &groups).map_err(|e| sandbox_err(e.to_string()))
}

fn sandbox_err(message: impl Into<String>) -> BuildError {
    BuildError::Sandbox(message.into())
}

/// The runc binary: Debian's, else one on PATH.
pub fn find_runc() -> Result<PathBuf> {
    let debian = Path::new(RUNC);
    if debian.is_file() {
        return Ok(debian.to_path_buf());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("runc");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(sandbox_err(
        "runc is not installed (run steps need it): install it with `apt-get install runc`",
    ))
}

/// Everything a run step needs from the host: root, runc and overlayfs.
pub fn check_host() -> Result<PathBuf> {
    if !rustix::process::geteuid().is_root() {
        return Err(sandbox_err(
            "run and apt steps must be built as root (they mount overlayfs and start runc); \
             run nbrt build as root, e.g. with sudo",
        ));
    }
    let runc = find_runc()?;
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        // The module may just not be loaded yet.
        let _ = Command::new("modprobe").arg("overlay").output();
        let again = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !again
            .lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
        {
            return Err(sandbox_err(
                "the kernel has no overlay file system, which run steps need: load it with \
                 `modprobe overlay` (in a container, on the host)",
            ));
        }
    }
    Ok(runc)
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn container_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "nbrt-{}-{}-{nanos:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Cleans up whatever a run left behind, on every path out of [`run`]: the container (with
/// `runc delete --force`) and the overlay mount.
struct Guard {
    runc: PathBuf,
    id: String,
    started: bool,
    merged: PathBuf,
    mounted: bool,
}

impl Guard {
    fn delete_container(&mut self) {
        if !self.started {
            return;
        }
        self.started = false;
        // `runc run` deletes the container when its process exits; this is for the paths
        // where it did not get that far. "does not exist" is the normal answer.
        let _ = Command::new(&self.runc)
            .args(["delete", "--force", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..20 {
            match rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::empty()) {
                Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {
                    self.mounted = false;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Still busy: detach it, so it goes away once the last user lets go.
        let detached =
            rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH).is_ok();
        self.mounted = false;
        let e = last.unwrap_or(rustix::io::Errno::BUSY);
        Err(BuildError::Io {
            context: format!(
                "unmounting the step's overlay at {} ({})",
                self.merged.display(),
                if detached {
                    "detached instead; its upper directory may still change"
                } else {
                    "it is still mounted"
                }
            ),
            source: e.into(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.delete_container();
        if let Err(e) = self.unmount() {
            tracing::warn!("{e}");
        }
    }
}

/// Mount an overlay at `target`. The new mount API (`lowerdir+`, one layer per call, Linux
/// 6.8+) has no limit on the number of layers; older kernels get one `mount(2)` call whose
/// options must fit in a page.
fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    match mount_overlay_fsopen(lowers, upper, work, target) {
        Ok(()) => return Ok(()),
        Err(FsMountError::Unsupported) => {}
        Err(FsMountError::Failed(msg)) => return Err(sandbox_err(msg)),
    }
    mount_overlay_legacy(lowers, upper, work, target)
}

/// One `mount(2)` call with every option in a string (at most a page; ':' and ','
/// separate options, so paths may not contain them).
fn mount_overlay_legacy(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    let option_path = |p: &Path| -> Result<String> {
        let s = p
            .to_str()
            .ok_or_else(|| sandbox_err(format!("{} is not UTF-8", p.display())))?;
        if s.contains([':', ',', '\\']) {
            return Err(sandbox_err(format!(
                "{s:?} contains ':', ',' or '\\', which this kernel's overlay mount options \
                 cannot carry; use a NBRT_HOME and scratch directory without them"
            )));
        }
        Ok(s.to_string())
    };
    let lowerdir = lowers
        .iter()
        .map(|l| option_path(l))
        .collect::<Result<Vec<_>>>()?
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off,xino=off",
        option_path(upper)?,
        option_path(work)?
    );
    if data.len() >= 4096 {
        return Err(sandbox_err(format!(
            "{} layers are too many for one overlay mount on this kernel (its options are \
             {} bytes, the limit is 4095); Linux 6.8 or later has no such limit",
            lowers.len(),
            data.len()
        )));
    }
    let data = std::ffi::CString::new(data)
        .map_err(|_| sandbox_err("overlay mount options contain a NUL byte"))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(|e| BuildError::Io {
        context: format!("mounting overlayfs at {}", target.display()),
        source: e.into(),
    })
}

enum FsMountError {
    Unsupported,
    Failed(String),
}

fn mount_overlay_fsopen(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> std::result::Result<(), FsMountError> {
    use rustix::io::Errno;
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
        Ok(fd) => fd,
        Err(Errno::NOSYS) | Err(Errno::PERM) => return Err(FsMountError::Unsupported),
        Err(e) => {
            return Err(FsMountError::Failed(format!(
                "opening overlayfs for mounting: {e}"
            )))
        }
    };
    // The kernel explains a rejected option in messages read from the fs descriptor.
    let explain = |what: &str, e: Errno| -> FsMountError {
        let mut msgs = String::new();
        let mut buf = [0u8; 1024];
        while let Ok(n) = rustix::io::read(&fs, &mut buf[..]) {
            if n == 0 {
                break;
            }
            msgs.push_str(&String::from_utf8_lossy(&buf[..n]));
            msgs.push(' ');
        }
        FsMountError::Failed(format!(
            "mounting the step's overlay: {what}: {e} {}",
            msgs.trim()
        ))
    };
    for (i, lower) in lowers.iter().enumerate() {
        match fsconfig_set_string(&fs, "lowerdir+", lower.as_path()) {
            Ok(()) => {}
            // A kernel before 6.8 does not know `lowerdir+`.
            Err(Errno::INVAL) if i == 0 => return Err(FsMountError::Unsupported),
            Err(e) => return Err(explain(&format!("layer {}", lower.display()), e)),
        }
    }
    let options: [(&str, &Path); 2] = [("upperdir", upper), ("workdir", work)];
    for (key, value) in options {
        fsconfig_set_string(&fs, key, value).map_err(|e| explain(key, e))?;
    }
    for key in ["index", "redirect_dir", "metacopy", "xino"] {
        fsconfig_set_string(&fs, key, "off").map_err(|e| explain(&format!("{key}=off"), e))?;
    }
    fsconfig_create(&fs).map_err(|e| explain("creating the overlay", e))?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| explain("mounting", e))?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| {
        FsMountError::Failed(format!(
            "attaching the step's overlay at {}: {e}",
            target.display()
        ))
    })
}

/// One OCI runtime mount.
fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": source, "options": options})
}

/// The mounts of a step: the usual kernel file systems, plus resolv.conf and the CA bundle
/// when the step has them.
fn mounts(spec: &RunSpec, ca: Option<&str>, extra: &[ExtraMount]) -> Vec<Value> {
    let mut m = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
    ];
    if spec.network && Path::new("/etc/resolv.conf").exists() {
        m.push(mount(
            "/etc/resolv.conf",
            "bind",
            "/etc/resolv.conf",
            &["rbind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    if let Some(ca) = ca {
        m.push(mount(
            CA_BUNDLE_PATH,
            "bind",
            ca,
            &["bind", "ro", "nosuid", "nodev", "noexec"],
        ));
    }
    for e in extra {
        let rw = if e.writable { "rw" } else { "ro" };
        match &e.source {
            Some(src) => m.push(mount(
                &e.destination,
                "bind",
                &src.to_string_lossy(),
                &["rbind", rw],
            )),
            None => m.push(mount(
                &e.destination,
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "mode=755"],
            )),
        }
    }
    m
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map(|(k, _)| k).unwrap_or(entry)
}

/// Open files: a soft limit of 1024 (tools that close every descriptor up to the limit, like
/// apt, stay fast) under the host's hard limit, which the container cannot raise.
fn nofile_limit() -> Value {
    let host = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = host.maximum.unwrap_or(1 << 20);
    json!({"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard.min(1024)})
}

/// The OCI runtime configuration of a step.
fn runtime_config(
    spec: &RunSpec,
    user: &ResolvedUser,
    rootfs: &Path,
    ca: Option<&Path>,
    extra: &[ExtraMount],
) -> Result<Value> {
    let rootfs = rootfs
        .to_str()
        .ok_or_else(|| sandbox_err(format!("{} is not UTF-8", rootfs.display())))?;
    let ca_str = match ca {
        Some(p) => Some(p.to_str().ok_or_else(|| {
            sandbox_err(format!("the CA bundle path {} is not UTF-8", p.display()))
        })?),
        None => None,
    };
    let mut env: Vec<String> = Vec::new();
    for e in &spec.env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => env.push(e.clone()),
            _ => {
                return Err(sandbox_err(format!(
                    "environment entry {e:?} is not KEY=value"
                )))
            }
        }
    }
    let has = |env: &[String], key: &str| env.iter().any(|e| env_key(e) == key);
    let mut defaults = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOME={}", user.home),
    ];
    if ca.is_some() {
        defaults.extend(
            CA_BUNDLE_VARS
                .iter()
                .map(|v| format!("{v}={CA_BUNDLE_PATH}")),
        );
    }
    for d in defaults {
        if !has(&env, env_key(&d)) {
            env.push(d);
        }
    }
    let workdir = if spec.workdir.is_empty() {
        "/"
    } else {
        spec.workdir.as_str()
    };
    if !workdir.starts_with('/') {
        return Err(sandbox_err(format!(
            "working directory {workdir:?} is not absolute"
        )));
    }
    let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
    let none: Vec<&str> = Vec::new();
    let (effective, permitted) = if user.uid == 0 {
        (&caps, &caps)
    } else {
        (&none, &none)
    };
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if !spec.network {
        namespaces.push(json!({"type": "network"}));
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": spec.argv,
            "env": env,
            "cwd": workdir,
            "capabilities": {
                "bounding": caps,
                "effective": effective,
                "permitted": permitted,
                "inheritable": none,
                "ambient": none,
            },
            "rlimits": [nofile_limit()],
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": "nbrt-build",
        "mounts": mounts(spec, ca_str, extra),
        "linux": {
            "namespaces": namespaces,
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}

/// The last lines of a stream, bounded in bytes.
struct Tail {
    buf: VecDeque<u8>,
}

impl Tail {
    fn new() -> Self {
        Self {
            buf: VecDeque::with_capacity(TAIL_BYTES),
        }
    }
    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.buf.len() + data.len()).saturating_sub(TAIL_BYTES);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }
    fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).into_owned();
        let lines: Vec<&str> = text.trim_end().lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `spec` over the layers `lowers` (top first): mount an overlay of them with a fresh
/// upper directory under `scratch`, run the command with runc, stream its output to
/// `output`, and return the upper directory. A command that fails gives
/// [`BuildError::Sandbox`] with its exit code and last lines of output. The container and
/// the mount are gone when this returns, whatever happened.
pub fn run(
    lowers: &[PathBuf],
    spec: &RunSpec,
    scratch: &Path,
    output: &mut dyn Write,
) -> Result<SandboxRun> {
    run_with_mounts(lowers, spec, &[], scratch, output)
}

/// [`run`] with the step's own mounts besides the usual ones (see [`ExtraMount`]).
pub fn run_with_mounts(
    lowers: &[PathBuf],
    spec: &RunSpec,
    extra: &[ExtraMount],
    scratch: &Path,
    output: &mut dyn Write,
) -> Result<SandboxRun> {
    let runc = check_host()?;
    if spec.argv.is_empty() {
        return Err(sandbox_err("a run step needs a command"));
    }
    let ca = match &spec.host_ca_bundle {
        Some(p) => {
            let real = fs::canonicalize(p)
                .io_context(|| format!("finding the host CA bundle {}", p.display()))?;
            if !real.is_file() {
                return Err(sandbox_err(format!(
                    "the host CA bundle {} is not a file",
                    p.display()
                )));
            }
            Some(real)
        }
        None => None,
    };
    let view = MergedView::new(lowers.to_vec());
    let user = resolve_user_in(&view, &spec.user)?;

    fs::create_dir_all(scratch).io_context(|| format!("creating {}", scratch.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("nbrt-run-")
        .tempdir_in(scratch)
        .io_context(|| format!("creating a directory in {}", scratch.display()))?;
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    let merged = dir.path().join("merged");
    let bundle = dir.path().join("bundle");
    for d in [&upper, &work, &merged, &bundle] {
        fs::create_dir(d).io_context(|| format!("creating {}", d.display()))?;
    }
    // The upper directory's root is the container's `/`.
    fs::set_permissions(&upper, fs::Permissions::from_mode(0o755))
        .io_context(|| format!("setting the mode of {}", upper.display()))?;
    let mut lower_dirs = lowers.to_vec();
    if lower_dirs.is_empty() {
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).io_context(|| format!("creating {}", empty.display()))?;
        lower_dirs.push(empty);
    }

    let mut guard = Guard {
        runc: runc.clone(),
        id: container_id(),
        started: false,
        merged: merged.clone(),
        mounted: false,
    };
    mount_overlay(&lower_dirs, &upper, &work, &merged)?;
    guard.mounted = true;

    // runc refuses a root file system whose path goes through a symlink (a store reached
    // through one): it gets the real path.
    let root = fs::canonicalize(&merged)
        .io_context(|| format!("finding the real path of {}", merged.display()))?;
    let config = runtime_config(spec, &user, &root, ca.as_deref(), extra)?;
    let config_path = bundle.join("config.json");
    let bytes = serde_json::to_vec_pretty(&config)
        .map_err(|e| sandbox_err(format!("writing config.json: {e}")))?;
    fs::write(&config_path, bytes).io_context(|| format!("writing {}", config_path.display()))?;

    let (exit_code, log) = run_runc(&mut guard, &bundle, output)?;
    guard.delete_container();
    guard.unmount()?;

    let destinations: Vec<String> = config["mounts"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["destination"].as_str().map(str::to_string))
                .filter(|d| !extra.iter().any(|e| &e.destination == d))
                .collect()
        })
        .unwrap_or_default();
    clean_mount_points(&upper, &view, &destinations)?;
    for d in [&work, &merged, &bundle] {
        fs::remove_dir_all(d).io_context(|| format!("removing {}", d.display()))?;
    }
    if exit_code != 0 {
        return Err(sandbox_err(format!(
            "`{}` exited with code {exit_code}; the last lines of its output:\n{log}",
            shell_words(&spec.argv)
        )));
    }
    Ok(SandboxRun {
        upper: dir,
        exit_code,
        log,
    })
}

/// Start `runc run` and stream its output (the command's stdout and stderr, merged) until
/// the container is gone. Returns the exit code and the tail of the output.
fn run_runc(guard: &mut Guard, bundle: &Path, output: &mut dyn Write) -> Result<(i32, String)> {
    let (mut reader, writer) = io::pipe().io_context(|| "creating a pipe for the step's output")?;
    let writer2 = writer
        .try_clone()
        .io_context(|| "creating a pipe for the step's output")?;
    let mut child = {
        let mut cmd = Command::new(&guard.runc);
        cmd.arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(&guard.id)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(writer2);
        guard.started = true;
        cmd.spawn()
            .io_context(|| format!("starting {}", guard.runc.display()))?
        // `cmd` (and with it our copies of the pipe's write end) is dropped here, so the
        // reader sees the end once runc and the container are gone.
    };
    let mut tail = Tail::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut output_ok = true;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BuildError::Io {
                    context: "reading the step's output".to_string(),
                    source: e,
                });
            }
        };
        tail.push(&buf[..n]);
        if output_ok {
            if let Err(e) = output.write_all(&buf[..n]).and_then(|_| output.flush()) {
                tracing::warn!("could not show the step's output any more: {e}");
                output_ok = false;
            }
        }
    }
    let status = child
        .wait()
        .io_context(|| format!("waiting for {}", guard.runc.display()))?;
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };
    Ok((code, tail.text()))
}

/// Remove from `upper` what runc created only to mount something on: mount points that did
/// not exist in the image (an empty file or directory) and directories around them that are
/// empty and either new or unchanged copies of the image's. Anything else is the command's
/// doing and stays.
fn clean_mount_points(upper: &Path, view: &MergedView, destinations: &[String]) -> Result<()> {
    let mut candidates: Vec<String> = Vec::new();
    for dest in destinations {
        let plain: String = dest
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect::<Vec<_>>()
            .join("/");
        // runc follows symlinks in the image to place a mount point.
        let resolved = view.resolve_lenient(dest)?;
        for c in [plain, resolved] {
            if !c.is_empty() && !candidates.contains(&c) {
                candidates.push(c);
            }
        }
    }
    // Deepest first, so a directory is looked at after what runc put in it.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.matches('/').count()));
    for rel in candidates {
        remove_trace(upper, view, &rel)?;
    }
    Ok(())
}

fn remove_trace(upper: &Path, view: &MergedView, rel: &str) -> Result<()> {
    let comps: Vec<&str> = rel.split('/').collect();
    // Every directory on the way must be a real directory of the upper directory: never
    // follow a symlink the command left there.
    let mut metas = Vec::with_capacity(comps.len());
    for i in 0..comps.len() {
        let p = upper.join(comps[..=i].join("/"));
        match fs::symlink_metadata(&p) {
            Ok(m) => {
                let last = i + 1 == comps.len();
                if !last && !m.is_dir() {
                    return Ok(());
                }
                metas.push(m);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => {
                return Err(BuildError::Io {
                    context: format!("reading {}", p.display()),
                    source: e,
                })
            }
        }
    }
    for depth in (1..=metas.len()).rev() {
        let path_rel = comps[..depth].join("/");
        let p = upper.join(&path_rel);
        let meta = &metas[depth - 1];
        let in_image = view.symlink_metadata(&path_rel)?;
        let removable = if depth == comps.len() && in_image.is_none() {
            // The mount point itself, made by runc: an empty file or an empty directory.
            (meta.is_file() && meta.len() == 0) || (meta.is_dir() && dir_is_empty(&p)?)
        } else {
            meta.is_dir()
                && !is_opaque(&p)
                && dir_is_empty(&p)?
                && match &in_image {
                    None => true,
                    Some(m) => {
                        m.is_dir()
                            && m.mode() == meta.mode()
                            && m.uid() == meta.uid()
                            && m.gid() == meta.gid()
                    }
                }
        };
        if !removable {
            return Ok(());
        }
        if meta.is_dir() {
            fs::remove_dir(&p)
        } else {
            fs::remove_file(&p)
        }
        .io_context(|| format!("removing the mount point {}", p.display()))?;
    }
    Ok(())
}

fn dir_is_empty(path: &Path) -> Result<bool> {
    Ok(fs::read_dir(path)
        .io_context(|| format!("listing {}", path.display()))?
        .next()
        .is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        jovyan:x:1000:100::/home/jovyan:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nsudo:x:27:jovyan\naudio:x:29:daemon,jovyan\n";

    #[test]
    fn resolves_users() {
        let r = |u: &str| resolve_user(u, PASSWD, GROUP);
        assert_eq!(
            r("root").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
                home: "/root".into()
            }
        );
        let j = r("jovyan").unwrap();
        assert_eq!((j.uid, j.gid, j.home.as_str()), (1000, 100, "/home/jovyan"));
        assert_eq!(j.additional_gids, vec![27, 29]);
        assert_eq!(r("1000").unwrap(), j);
        let n = r("1000:100").unwrap();
        assert_eq!((n.uid, n.gid), (1000, 100));
        let g = r("jovyan:sudo").unwrap();
        assert_eq!(
            (g.uid, g.gid, g.additional_gids.clone()),
            (1000, 27, vec![29])
        );
        let unknown = r("4242").unwrap();
        assert_eq!(
            (unknown.uid, unknown.gid, unknown.home.as_str()),
            (4242, 0, "/")
        );
        assert!(r("nobody-here").is_err());
        assert!(r("jovyan:nogroup").is_err());
        assert_eq!(resolve_user("", "", "").unwrap().uid, 0);
    }

    #[test]
    fn mounts_overlays_both_ways() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: mounting needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let d = |n: &str| {
            let p = tmp.path().join(n);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let (l1, l2) = (d("l1"), d("l2"));
        fs::write(l1.join("top"), "1").unwrap();
        fs::write(l2.join("top"), "2").unwrap();
        fs::write(l2.join("bottom"), "2").unwrap();
        let lowers = [l1, l2];
        type Mounter = fn(&[PathBuf], &Path, &Path, &Path) -> Result<()>;
        let ways: [(&str, Mounter); 2] = [
            ("fsopen", |l, u, w, t| {
                match mount_overlay_fsopen(l, u, w, t) {
                    Ok(()) => Ok(()),
                    Err(FsMountError::Unsupported) => mount_overlay_legacy(l, u, w, t),
                    Err(FsMountError::Failed(m)) => Err(sandbox_err(m)),
                }
            }),
            ("legacy", mount_overlay_legacy),
        ];
        for (name, mount) in ways {
            let (upper, work, merged) = (
                d(&format!("{name}-u")),
                d(&format!("{name}-w")),
                d(&format!("{name}-m")),
            );
            mount(&lowers, &upper, &work, &merged).unwrap();
            let top = fs::read_to_string(merged.join("top"));
            let bottom = fs::read_to_string(merged.join("bottom"));
            let removed = fs::remove_file(merged.join("bottom"));
            rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty()).unwrap();
            assert_eq!(top.unwrap(), "1", "{name}");
            assert_eq!(bottom.unwrap(), "2", "{name}");
            removed.unwrap();
            let wh = fs::symlink_metadata(upper.join("bottom")).unwrap();
            assert!(crate::snapshot::is_whiteout(&wh), "{name}");
        }
        let comma = tmp.path().join("a,b");
        assert!(
            mount_overlay_legacy(std::slice::from_ref(&comma), &comma, &comma, &comma).is_err()
        );
    }

    #[test]
    fn keeps_a_bounded_tail() {
        let mut t = Tail::new();
        for i in 0..10_000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        let text = t.text();
        assert_eq!(text.lines().count(), TAIL_LINES);
        assert!(text.ends_with("line 9999"));
        t.push(&vec![b'x'; TAIL_BYTES * 2]);
        assert_eq!(t.buf.len(), TAIL_BYTES);
    }

    #[test]
    fn extra_mounts_are_binds_and_tmpfs() {
        let spec = RunSpec {
            argv: vec!["true".into()],
            ..Default::default()
        };
        let user = resolve_user("0", PASSWD, GROUP).unwrap();
        let extra = [
            ExtraMount {
                destination: "/src".into(),
                source: Some(PathBuf::from("/host/src")),
                writable: false,
            },
            ExtraMount {
                destination: "/cache".into(),
                source: Some(PathBuf::from("/host/cache")),
                writable: true,
            },
            ExtraMount {
                destination: "/tmp".into(),
                source: None,
                writable: true,
            },
        ];
        let c = runtime_config(&spec, &user, Path::new("/r"), None, &extra).unwrap();
        let find = |d: &str| {
            c["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["destination"] == d)
                .cloned()
                .unwrap()
        };
        assert_eq!(find("/src")["options"], json!(["rbind", "ro"]));
        assert_eq!(find("/src")["source"], "/host/src");
        assert_eq!(find("/cache")["options"], json!(["rbind", "rw"]));
        assert_eq!(find("/tmp")["type"], "tmpfs");
    }

    #[test]
    fn config_has_only_our_environment() {
        let spec = RunSpec {
            argv: vec!["true".into()],
            env: vec!["A=1".into(), "PATH=/x".into()],
            network: true,
            ..Default::default()
        };
        let user = resolve_user("1000:100", PASSWD, GROUP).unwrap();
        let c = runtime_config(&spec, &user, Path::new("/r"), Some(Path::new("/ca")), &[]).unwrap();
        let env: Vec<&str> = c["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(env[..3], ["A=1", "PATH=/x", "HOME=/home/jovyan"]);
        assert!(env.contains(&"SSL_CERT_FILE=/run/nbrt/ca-certificates.crt"));
        assert_eq!(c["process"]["capabilities"]["effective"], json!([]));
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert!(c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == CA_BUNDLE_PATH));
        assert_eq!(
            shell_words(&["sh".into(), "-c".into(), "echo 'hi'".into()]),
            "sh -c 'echo '\\''hi'\\'''"
        );
    }
}
