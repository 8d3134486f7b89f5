//! Shared by the Dockerfile tests: the base image (Debian minbase, imported once into a
//! store kept between runs and loaded into Docker), contexts written from literals, nbrt
//! builds, BuildKit builds (`DOCKER_BUILDKIT=1 /usr/bin/docker build`, saved with `docker
//! save` and imported), and the comparison of two images' file systems and configs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nbrt_dockerfile::{BuildOptions, BuildReport};
use nbrt_oci::{Image, ImageName, Progress, Store};
use sha2::{Digest as _, Sha256};

pub const DOCKER: &str = "/usr/bin/docker";

pub struct Fixture {
    pub store: Store,
    /// The base image's name, the same in the store and in Docker.
    pub base: String,
}

/// Whether BuildKit in Debian's engine answers: fails with what to install unless
/// NBRT_SKIP_DOCKER=1.
pub fn require_buildkit() -> bool {
    nbrt_testkit::require(
        DOCKER,
        &["info", "--format", "{{.ServerVersion}}"],
        "docker.io (Debian's engine, whose /usr/bin/docker runs BuildKit; then run `dockerd &`)",
    )
}

/// Whether nbrt can build here (runc, mmdebstrap for the base, root).
pub fn require_builder() -> bool {
    nbrt_testkit::require("runc", &["--version"], "runc")
        && nbrt_testkit::require("mmdebstrap", &["--version"], "mmdebstrap")
}

/// The store and base image every test of this binary shares (built once per binary).
pub fn fixture() -> Option<&'static Fixture> {
    static FIX: OnceLock<Option<Fixture>> = OnceLock::new();
    FIX.get_or_init(|| {
        if !require_builder() {
            return None;
        }
        let rootfs = nbrt_testkit::minbase_rootfs()?;
        let dir = nbrt_testkit::fixture_dir().join("dockerfile-store");
        let store = Store::open(&dir).expect("opening the test store");
        let lock = std::fs::File::create(nbrt_testkit::fixture_dir().join("dockerfile-store.lock"))
            .expect("creating the lock");
        lock.lock().expect("locking");
        let plain = "nbrt-test/df-minbase:bookworm";
        let image = match store.resolve(plain) {
            Ok(found) => found.image,
            Err(_) => {
                let opts = nbrt_oci::transfer::ImportOptions {
                    names: vec![ImageName::parse(plain).unwrap()],
                    ..Default::default()
                };
                nbrt_oci::transfer::import(&store, &rootfs, &opts, &Progress::hidden())
                    .expect("importing the minbase root file system")
                    .0
            }
        };
        let base = format!("nbrt-test/df-minbase:{}", &image.digest().hex()[..12]);
        store
            .tag(&image, &ImageName::parse(&base).unwrap())
            .expect("tagging the base");
        Some(Fixture { store, base })
    })
    .as_ref()
}

/// The fixture with the base loaded into Docker too.
pub fn docker_fixture() -> Option<&'static Fixture> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let fix = fixture()?;
    let ok = *LOADED.get_or_init(|| {
        if !require_buildkit() {
            return false;
        }
        nbrt_testkit::stock::load_into_docker(&fix.store, &fix.base, "nbrt-test/df-minbase")
            .is_some()
    });
    ok.then_some(fix)
}

/// A file of a test context: path, content, mode; a content starting with `->` is a
/// symlink to the rest.
pub type File<'a> = (&'a str, &'a [u8], u32);

/// Write a context (with its Dockerfile) into a new directory.
pub fn context(dockerfile: &str, files: &[File<'_>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_files(dir.path(), files);
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    dir
}

pub fn write_files(root: &Path, files: &[File<'_>]) {
    use std::os::unix::fs::PermissionsExt;
    for (path, content, mode) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if let Some(target) = content.strip_prefix(b"->") {
            let _ = std::fs::remove_file(&p);
            std::os::unix::fs::symlink(std::str::from_utf8(target).unwrap(), &p).unwrap();
            continue;
        }
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// Build with nbrt.
pub fn nbrt_build(
    store: &Store,
    ctx: &Path,
    tag: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) -> Result<(BuildReport, Image), String> {
    nbrt_build_with_secrets(store, ctx, tag, args, target, &[])
}

/// [`nbrt_build`] with build secrets (`--secret id=…`).
pub fn nbrt_build_with_secrets(
    store: &Store,
    ctx: &Path,
    tag: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
    secrets: &[(&str, &[u8])],
) -> Result<(BuildReport, Image), String> {
    let opts = BuildOptions {
        dockerfile: ctx.join("Dockerfile"),
        context: ctx.to_path_buf(),
        tags: vec![ImageName::parse(tag).unwrap()],
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        no_cache: false,
        secrets: secrets
            .iter()
            .map(|(id, v)| (id.to_string(), nbrt_dockerfile::Secret::new(*v)))
            .collect(),
    };
    let mut log = Vec::new();
    match nbrt_dockerfile::build(store, &opts, &Progress::hidden(), &mut log) {
        Ok(report) => {
            let image = store.resolve(tag).unwrap().image;
            Ok((report, image))
        }
        Err(e) => Err(format!("{e}\n--- log:\n{}", String::from_utf8_lossy(&log))),
    }
}

/// Build with BuildKit, save the result and import it into `store` as `tag`.
pub fn buildkit_build(
    store: &Store,
    ctx: &Path,
    tag: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
) -> Result<Image, String> {
    buildkit_build_with(store, ctx, tag, args, target, &[])
}

/// [`buildkit_build`] with more `docker build` options (`--network host`, `--secret …`).
pub fn buildkit_build_with(
    store: &Store,
    ctx: &Path,
    tag: &str,
    args: &[(&str, &str)],
    target: Option<&str>,
    flags: &[&str],
) -> Result<Image, String> {
    let mut cmd = Command::new(DOCKER);
    cmd.env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "-t", tag])
        .args(flags);
    for (k, v) in args {
        cmd.args(["--build-arg", &format!("{k}={v}")]);
    }
    if let Some(t) = target {
        cmd.args(["--target", t]);
    }
    cmd.arg(ctx);
    let mut out = cmd
        .output()
        .map_err(|e| format!("running docker build: {e}"))?;
    if !out.status.success() {
        // The engine is shared with other test processes: a transient failure is retried
        // once (its log kept); a Dockerfile BuildKit refuses fails again.
        eprintln!(
            "docker build failed, retrying once: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out = cmd
            .output()
            .map_err(|e| format!("running docker build: {e}"))?;
    }
    if !out.status.success() {
        return Err(format!(
            "docker build failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tar = ctx.join("..").join(format!(
        "{}.saved.tar",
        ctx.file_name().unwrap().to_string_lossy()
    ));
    let out = Command::new(DOCKER)
        .args(["save", "-o"])
        .arg(&tar)
        .arg(tag)
        .output()
        .map_err(|e| format!("running docker save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker save: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let opts = nbrt_oci::transfer::ImportOptions {
        names: vec![ImageName::parse(tag).unwrap()],
        ..Default::default()
    };
    let image = nbrt_oci::transfer::import(store, &tar, &opts, &Progress::hidden())
        .map_err(|e| format!("importing the saved image: {e}"))?
        .0;
    let _ = std::fs::remove_file(&tar);
    let _ = Command::new(DOCKER).args(["rmi", "-f", tag]).output();
    Ok(image)
}

/// An entry of a flattened file system, times left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub content: String,
}

/// The merged file system of an image: path → entry.
pub fn tree(store: &Store, image: &Image) -> BTreeMap<String, Entry> {
    let bytes = nbrt_oci::layer::flatten::flatten(image, store, Vec::new(), &Progress::hidden())
        .expect("flattening");
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let kind = format!("{:?}", h.entry_type());
        let content = if h.entry_type().is_file() {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            untimed(&path, &mut data);
            hex::encode(Sha256::digest(&data))
        } else {
            h.link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        out.insert(
            path,
            Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                content,
            },
        );
    }
    out
}

/// The config fields the matrix compares, with Docker's empty forms (null, "", [], {})
/// taken as absent.
pub fn config_fields(image: &Image) -> BTreeMap<String, serde_json::Value> {
    let v = serde_json::to_value(&image.config.value().config).unwrap();
    let mut out = BTreeMap::new();
    for f in [
        "Env",
        "User",
        "WorkingDir",
        "Entrypoint",
        "Cmd",
        "ExposedPorts",
        "Healthcheck",
        "Labels",
        "Volumes",
        "StopSignal",
        "Shell",
        "OnBuild",
    ] {
        let x = v.get(f).cloned().unwrap_or(serde_json::Value::Null);
        let empty = match &x {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.insert(f.to_string(), x);
        }
    }
    out
}

/// The differences between two images' file systems and configs, one line each.
pub fn differences(store: &Store, ours: &Image, theirs: &Image) -> Vec<String> {
    let a = tree(store, ours);
    let b = tree(store, theirs);
    let mut diffs = Vec::new();
    for (p, e) in &a {
        match b.get(p) {
            None => diffs.push(format!("only nbrt: {p} {e:?}")),
            Some(f) if f != e => {
                diffs.push(format!("differs: {p}\n  nbrt     {e:?}\n  buildkit {f:?}"))
            }
            _ => {}
        }
    }
    for (p, f) in &b {
        if !a.contains_key(p) {
            diffs.push(format!("only buildkit: {p} {f:?}"));
        }
    }
    let ca = config_fields(ours);
    let cb = config_fields(theirs);
    if ca != cb {
        diffs.push(format!(
            "config:\n  nbrt     {}\n  buildkit {}",
            serde_json::to_string(&ca).unwrap(),
            serde_json::to_string(&cb).unwrap()
        ));
    }
    diffs
}

/// Build `dockerfile` (with `{BASE}` replaced by the base image) and `files` with nbrt and
/// with BuildKit, and assert both images are the same but for times and history. Returns
/// nbrt's image and its config fields (`None` when skipping).
pub fn same_as_buildkit(
    row: &str,
    dockerfile: &str,
    files: &[File<'_>],
    args: &[(&str, &str)],
) -> Option<(Image, BTreeMap<String, serde_json::Value>)> {
    let fix = docker_fixture()?;
    let text = dockerfile.replace("{BASE}", &fix.base);
    let ctx = context(&text, files);
    let ours = nbrt_build(
        &fix.store,
        ctx.path(),
        &format!("nbrt-oracle/{row}:nbrt"),
        args,
        None,
    )
    .unwrap_or_else(|e| panic!("{row}: nbrt build failed: {e}"))
    .1;
    let theirs = buildkit_build(
        &fix.store,
        ctx.path(),
        &format!("nbrt-oracle/{row}:buildkit"),
        args,
        None,
    )
    .unwrap_or_else(|e| panic!("{row}: {e}"));
    let diffs = differences(&fix.store, &ours, &theirs);
    assert!(
        diffs.is_empty(),
        "{row}: nbrt and BuildKit differ:\n{}",
        diffs.join("\n")
    );
    let fields = config_fields(&ours);
    Some((ours, fields))
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The entries of an image's layer (by index from the top: 0 is the last layer), times
/// left out: `path kind mode uid:gid`.
pub fn layer_entries(store: &Store, image: &Image, from_top: usize) -> Vec<String> {
    use nbrt_oci::layer::compression::{decompress, Compression};
    let layers = image.layers();
    let desc = &layers[layers.len() - 1 - from_top];
    let blob = nbrt_oci::image::open_verified(store, desc).unwrap();
    let reader = decompress(
        blob,
        Compression::from_media_type(&desc.media_type).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    nbrt_oci::layer::reader::for_each_entry(reader, |e, _| {
        use nbrt_oci::layer::EntryKind;
        // A whiteout or opaque marker's own mode and owner mean nothing (nbrt writes 0,
        // BuildKit the directory's).
        if matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque) {
            out.push(format!("{} {:?}", e.path, e.kind));
        } else {
            out.push(format!(
                "{} {:?} {:o} {}:{}",
                e.path, e.kind, e.mode, e.uid, e.gid
            ));
        }
        Ok(())
    })
    .unwrap();
    out.sort();
    out
}

/// The file system the layers above the first `skip` ones make, times left out: what a
/// build on a shared base added, changed (`Whiteout` entries for what it deleted, `Opaque`
/// for directories it replaced), without reading the base's layers.
pub fn upper_tree(store: &Store, image: &Image, skip: usize) -> BTreeMap<String, Entry> {
    use nbrt_oci::layer::compression::{decompress, Compression};
    use nbrt_oci::layer::EntryKind;
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for desc in &image.layers()[skip..] {
        let blob = nbrt_oci::image::open_verified(store, desc).unwrap();
        let reader = decompress(
            blob,
            Compression::from_media_type(&desc.media_type).unwrap(),
        )
        .unwrap();
        let mut layer: Vec<(String, Entry)> = Vec::new();
        nbrt_oci::layer::reader::for_each_entry(reader, |e, data| {
            let (kind, content) = match &e.kind {
                EntryKind::File => {
                    let mut bytes = Vec::new();
                    data.read_to_end(&mut bytes).unwrap();
                    untimed(&e.path, &mut bytes);
                    ("File".to_string(), hex::encode(Sha256::digest(&bytes)))
                }
                EntryKind::Symlink(t) => ("Symlink".to_string(), t.clone()),
                EntryKind::Hardlink(t) => ("Link".to_string(), t.clone()),
                other => (format!("{other:?}"), String::new()),
            };
            let marker = matches!(e.kind, EntryKind::Whiteout | EntryKind::Opaque);
            layer.push((
                e.path.trim_end_matches('/').to_string(),
                Entry {
                    kind,
                    mode: if marker { 0 } else { e.mode & 0o7777 },
                    uid: if marker { 0 } else { e.uid },
                    gid: if marker { 0 } else { e.gid },
                    content,
                },
            ));
            Ok(())
        })
        .unwrap();
        for (path, entry) in layer {
            let under = format!("{path}/");
            match entry.kind.as_str() {
                "Whiteout" => out.retain(|p, _| p != &path && !p.starts_with(&under)),
                "Opaque" => out.retain(|p, _| !p.starts_with(&under)),
                _ => {}
            }
            let key = if entry.kind == "Opaque" {
                format!("{path}/.opaque")
            } else {
                path
            };
            out.insert(key, entry);
        }
    }
    out
}

/// The times tools write into files, taken out: the day of the last password change in
/// `/etc/shadow` (useradd's; two builds on either side of midnight differ), the
/// `==> time <==` lines of conda's `conda-meta/history` and the source time in a
/// timestamp-checked `.pyc` header (pip compiles what it installs; the time is the
/// install's).
fn untimed(path: &str, bytes: &mut Vec<u8>) {
    if path == "etc/shadow" || path == "etc/shadow-" {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(':').collect();
                if f.len() > 2 {
                    f[2] = "";
                }
                f.join(":")
            })
            .collect();
        *bytes = lines.join("\n").into_bytes();
    } else if path.ends_with("conda-meta/history") {
        let text = String::from_utf8_lossy(bytes);
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !(l.starts_with("==> ") && l.ends_with(" <==")))
            .collect();
        *bytes = kept.join("\n").into_bytes();
    } else if path.ends_with(".pyc") && bytes.len() >= 16 && bytes[4..8] == [0, 0, 0, 0] {
        bytes[8..12].fill(0);
    }
}

/// [`differences`] for two images on `base` (its layers are the first of both): the layers
/// above it and the configs. A directory entry only one side's layers carry, the same as
/// the base's, is no difference (BuildKit's RUN layers carry `etc/` for their mount points).
pub fn differences_above(store: &Store, ours: &Image, theirs: &Image, base: &Image) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let skip = base.layers().len();
    let mut a = upper_tree(store, ours, skip);
    let mut b = upper_tree(store, theirs, skip);
    let layers: Vec<_> = base.layers().iter().zip(base.diff_ids()).collect();
    let lowers = nbrt_build::snapshot::Snapshots::open(store)
        .unwrap()
        .ensure_all(store, &layers)
        .unwrap();
    let view = nbrt_build::snapshot::MergedView::new(lowers);
    let same_as_base = |p: &str, e: &Entry| {
        e.kind == "Dir"
            && view.symlink_metadata(p).ok().flatten().is_some_and(|m| {
                m.is_dir()
                    && m.mode() & 0o7777 == e.mode
                    && u64::from(m.uid()) == e.uid
                    && u64::from(m.gid()) == e.gid
            })
    };
    let only_a: Vec<String> = a.keys().filter(|p| !b.contains_key(*p)).cloned().collect();
    let only_b: Vec<String> = b.keys().filter(|p| !a.contains_key(*p)).cloned().collect();
    for p in only_a {
        if same_as_base(&p, &a[&p]) {
            a.remove(&p);
        }
    }
    for p in only_b {
        if same_as_base(&p, &b[&p]) {
            b.remove(&p);
        }
    }
    let mut diffs = Vec::new();
    for (p, e) in &a {
        match b.get(p) {
            None => diffs.push(format!("only nbrt: {p} {e:?}")),
            Some(f) if f != e => {
                diffs.push(format!("differs: {p}\n  nbrt     {e:?}\n  buildkit {f:?}"))
            }
            _ => {}
        }
    }
    for (p, f) in &b {
        if !a.contains_key(p) {
            diffs.push(format!("only buildkit: {p} {f:?}"));
        }
    }
    let ca = config_fields(ours);
    let cb = config_fields(theirs);
    if ca != cb {
        diffs.push(format!(
            "config:\n  nbrt     {}\n  buildkit {}",
            serde_json::to_string(&ca).unwrap(),
            serde_json::to_string(&cb).unwrap()
        ));
    }
    diffs
}
