//! Run steps for real: runc over overlayfs on the layers of a Debian minbase image, the upper
//! directory written as a layer, and the image checked by flattening, `validate` and Docker.
//! Needs root, runc and (once) mmdebstrap; test (b) needs the Debian mirror.
//!
//! The base image and its snapshot are kept in `target/nbrt-fixtures/build-sandbox` between
//! runs (delete it to start over); everything a test makes goes into its own temporary store.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use nbrt_build::layer_dir::{layer_from_dir, DirLayerOptions};
use nbrt_build::sandbox::{self, RunSpec, CA_BUNDLE_PATH};
use nbrt_build::snapshot::{MergedView, Snapshots};
use nbrt_build::BuildError;
use nbrt_oci::layer::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use nbrt_oci::layer::compression::{decompress, Compression};
use nbrt_oci::layer::reader::for_each_entry;
use nbrt_oci::layer::{Entry, EntryKind, LayerInfo};
use nbrt_oci::spec::History;
use nbrt_oci::transfer::{import, ImportOptions};
use nbrt_oci::{copy_image, validate, BlobSource, Digest, Image, ImageName, Progress, Store};
use nbrt_testkit::{fixture_dir, minbase_rootfs, require};

struct Base {
    store_root: PathBuf,
    image: Image,
    /// The base image's snapshot directories, top first.
    lowers: Vec<PathBuf>,
}

static BASE: OnceLock<Option<Base>> = OnceLock::new();

/// Root, runc, and the base image with its snapshot; `None` (after saying why) to skip.
fn setup() -> Option<&'static Base> {
    if !require("runc", &["--version"], "runc") {
        return None;
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: run steps need root (overlayfs and runc)");
        return None;
    }
    BASE.get_or_init(|| {
        let rootfs = minbase_rootfs()?;
        let store_root = fixture_dir().join("build-sandbox");
        let store = Store::open(&store_root).expect("opening the fixture store");
        let name = ImageName::parse("nbrt-test/minbase:sandbox").unwrap();
        let image = match store.resolve(&name.to_string()) {
            Ok(found) => found.image,
            Err(_) => {
                let opts = ImportOptions {
                    names: vec![name],
                    ..Default::default()
                };
                import(&store, &rootfs, &opts, &Progress::hidden())
                    .expect("importing the minbase rootfs")
                    .0
            }
        };
        let snapshots = Snapshots::open(&store).expect("opening snapshots");
        let lowers = snapshots
            .lowers(&store, &image)
            .expect("extracting the base layers");
        Some(Base {
            store_root,
            image,
            lowers,
        })
    })
    .as_ref()
}

fn sh(script: &str) -> RunSpec {
    RunSpec {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

fn run_ok(lowers: &[PathBuf], spec: &RunSpec, scratch: &Path) -> (sandbox::SandboxRun, String) {
    let mut out = Vec::new();
    let result = sandbox::run(lowers, spec, scratch, &mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    match result {
        Ok(run) => {
            assert_eq!(run.exit_code, 0);
            (run, text)
        }
        Err(e) => panic!("{:?} failed: {e}\noutput:\n{text}", spec.argv),
    }
}

fn overlay_layer(store: &Store, dir: &Path) -> LayerInfo {
    let opts = DirLayerOptions {
        overlay_upper: true,
        ..Default::default()
    };
    layer_from_dir(store, dir, &opts).expect("writing the upper directory as a layer")
}

/// Every entry of a layer in the store, with the data of files.
fn entries(store: &Store, info: &LayerInfo) -> Vec<(Entry, Vec<u8>)> {
    let blob = store.open_blob(&info.descriptor()).unwrap();
    let mut out = Vec::new();
    for_each_entry(decompress(blob, info.compression).unwrap(), |e, data| {
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).unwrap();
        out.push((e.clone(), bytes));
        Ok(())
    })
    .unwrap();
    out
}

fn find<'a>(entries: &'a [(Entry, Vec<u8>)], path: &str) -> Option<&'a (Entry, Vec<u8>)> {
    entries.iter().find(|(e, _)| e.path == path)
}

fn docker_available() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn unique_name(what: &str) -> ImageName {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    ImageName::parse(&format!("nbrt-test/{what}:{}-{nanos}", std::process::id())).unwrap()
}

/// Docker's default capability set, as /proc/self/status shows it.
const DOCKER_CAPS: &str = "00000000a80425fb";

#[test]
fn run_changes_become_a_layer_that_docker_runs() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = run_ok(
        &base.lowers,
        &sh(
            "echo hi > /etc/greeting; rm /etc/debian_version; mkdir -p /opt/x && touch /opt/x/y; \
             rm -rf /var/lib/apt/lists/*; grep CapEff /proc/self/status; ls /sys/class/net; env",
        ),
        tmp.path(),
    );
    assert!(out.contains(&format!("CapEff:\t{DOCKER_CAPS}")), "{out}");
    // No network of its own: loopback only. Nothing of the host's environment.
    let after_caps = out.split_once(DOCKER_CAPS).unwrap().1;
    assert!(after_caps.contains("lo\n"), "{out}");
    assert!(!after_caps.contains("eth0"), "{out}");
    assert!(!out.contains("CARGO"), "host environment leaked: {out}");
    assert!(out.contains("HOME=/root"), "{out}");

    let store = Store::open(tmp.path().join("store")).unwrap();
    let layer = overlay_layer(&store, &run.upper_dir());
    let got = entries(&store, &layer);
    let paths: Vec<&str> = got.iter().map(|(e, _)| e.path.as_str()).collect();
    let (greeting, data) = find(&got, "etc/greeting").expect("etc/greeting in the layer");
    assert_eq!(greeting.kind, EntryKind::File);
    assert_eq!(data, b"hi\n");
    assert_eq!(
        find(&got, "etc/debian_version").unwrap().0.kind,
        EntryKind::Whiteout
    );
    assert_eq!(find(&got, "opt/x").unwrap().0.kind, EntryKind::Dir);
    assert_eq!(find(&got, "opt/x/y").unwrap().0.kind, EntryKind::File);
    assert!(got
        .iter()
        .any(|(e, _)| e.kind == EntryKind::Whiteout && e.path.starts_with("var/lib/apt/lists/")));
    for absent in ["proc", "sys", "dev", "run", "tmp", "etc/resolv.conf"] {
        assert!(
            !paths
                .iter()
                .any(|p| *p == absent || p.starts_with(&format!("{absent}/"))),
            "{absent} in the layer: {paths:?}"
        );
    }

    // Base + the new layer: an image that validates and flattens to what the command did.
    let fixture = Store::open(&base.store_root).unwrap();
    let mut sink = store.sink(Vec::new());
    copy_image(&base.image, &fixture, &mut sink, &Progress::hidden()).unwrap();
    let mut config = base.image.config.value().clone();
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created_by: Some("nbrt run: sh -c …".into()),
        ..Default::default()
    });
    let mut layers = base.image.layers().to_vec();
    layers.push(layer.descriptor());
    let image = Image::assemble(config, layers, BTreeMap::new()).unwrap();
    let name = unique_name("sandbox-run");
    store.tag(&image, &name).unwrap();
    validate(&image, &store).unwrap();
    let flat_path = tmp.path().join("flat.tar");
    let flat = fs::File::create(&flat_path).unwrap();
    nbrt_oci::layer::flatten::flatten(&image, &store, flat, &Progress::hidden()).unwrap();
    let mut flat_paths = Vec::new();
    for_each_entry(fs::File::open(&flat_path).unwrap(), |e, _| {
        flat_paths.push(e.path.clone());
        Ok(())
    })
    .unwrap();
    assert!(flat_paths.iter().any(|p| p == "etc/greeting"));
    assert!(flat_paths.iter().any(|p| p == "opt/x/y"));
    assert!(flat_paths.iter().any(|p| p == "etc/passwd"));
    assert!(!flat_paths.iter().any(|p| p == "etc/debian_version"));

    if !docker_available() {
        eprintln!("Docker is not here: not loading the image into it");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(nbrt_oci::engine::load(
        store.root().to_path_buf(),
        &image,
        std::slice::from_ref(&name),
        &Progress::hidden(),
    ))
    .unwrap();
    let shown = Command::new("docker")
        .args(["run", "--rm", "--network", "none", &name.to_string()])
        .args([
            "sh",
            "-c",
            "cat /etc/greeting; test -e /etc/debian_version || echo gone; ls /opt/x",
        ])
        .output()
        .unwrap();
    let _ = Command::new("docker")
        .args(["rmi", "-f", &name.to_string()])
        .output();
    assert!(shown.status.success(), "{shown:?}");
    assert_eq!(String::from_utf8_lossy(&shown.stdout), "hi\ngone\ny\n");
}

#[test]
fn apt_install_with_network_leaves_no_host_files() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let host_ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    let mut spec = sh(
        "set -e; cat /etc/resolv.conf; echo ---; ls /sys/class/net; echo ---; \
         test -s \"$SSL_CERT_FILE\"; echo \"$SSL_CERT_FILE $REQUESTS_CA_BUNDLE $PIP_CERT \
         $CURL_CA_BUNDLE $NODE_EXTRA_CA_CERTS\"; \
         apt-get update -q; apt-get install -y -q --no-install-recommends hello; \
         rm -rf /var/lib/apt/lists/*",
    );
    spec.network = true;
    spec.env = vec!["DEBIAN_FRONTEND=noninteractive".into()];
    spec.host_ca_bundle = host_ca.exists().then(|| host_ca.to_path_buf());
    let (run, out) = run_ok(&base.lowers, &spec, tmp.path());
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap();
    assert!(out.starts_with(&format!("{host_resolv}---\n")), "{out}");
    let nets = out.split("---\n").nth(1).unwrap();
    assert!(nets.lines().any(|l| l != "lo"), "no host network: {nets}");
    if spec.host_ca_bundle.is_some() {
        assert!(
            out.contains(&format!("{CA_BUNDLE_PATH} ").repeat(4)),
            "{out}"
        );
    }

    let store = Store::open(tmp.path().join("store")).unwrap();
    let layer = overlay_layer(&store, &run.upper_dir());
    let got = entries(&store, &layer);
    let (hello, _) = find(&got, "usr/bin/hello").expect("usr/bin/hello in the layer");
    assert_eq!(hello.mode, 0o755);
    let ca_bytes = fs::read(host_ca).unwrap_or_default();
    for (e, data) in &got {
        assert!(
            e.path != "run" && !e.path.starts_with("run/"),
            "{} in the layer",
            e.path
        );
        assert!(!e.path.starts_with("etc/resolv.conf"), "{}", e.path);
        assert!(
            ca_bytes.is_empty() || data != &ca_bytes,
            "the host CA bundle is in the layer as {}",
            e.path
        );
    }
    assert!(!run.upper_dir().join("run").exists());

    // The upper directory is itself a valid lower layer: the next step sees the package.
    let mut lowers = vec![run.upper_dir()];
    lowers.extend(base.lowers.iter().cloned());
    let next = tempfile::tempdir().unwrap();
    let (_, out) = run_ok(&lowers, &sh("hello"), next.path());
    assert_eq!(out, "Hello, world!\n");
}

/// Everything under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn mount_points_leave_no_traces() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let host_resolv = fs::read_to_string("/etc/resolv.conf").unwrap();
    let ca = tmp.path().join("ca.pem");
    fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    // Images whose /etc/resolv.conf is missing (whited out by an upper layer) or a dangling
    // symlink (systemd-resolved style): runc has to create the mount point, in the overlay.
    let hidden = tmp.path().join("hidden");
    fs::create_dir_all(hidden.join("etc")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        hidden.join("etc/resolv.conf"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    let linked = tmp.path().join("linked");
    fs::create_dir_all(linked.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        linked.join("etc/resolv.conf"),
    )
    .unwrap();
    for top in [None, Some(&hidden), Some(&linked)] {
        for dir in [&hidden, &linked] {
            let m = fs::metadata(base.lowers[0].join("etc")).unwrap();
            fs::set_permissions(dir.join("etc"), m.permissions()).unwrap();
        }
        let mut lowers: Vec<PathBuf> = top.into_iter().cloned().collect();
        lowers.extend(base.lowers.iter().cloned());
        let mut spec = sh("cat /etc/resolv.conf; cat \"$SSL_CERT_FILE\"; ls -d /run/nbrt");
        spec.network = true;
        spec.host_ca_bundle = Some(ca.clone());
        let scratch = tmp.path().join("scratch");
        let (run, out) = run_ok(&lowers, &spec, &scratch);
        assert_eq!(
            out,
            format!("{host_resolv}-----BEGIN CERTIFICATE-----\n/run/nbrt\n"),
            "over {top:?}"
        );
        assert_eq!(tree(&run.upper_dir()), Vec::<String>::new(), "over {top:?}");
    }
}

#[test]
fn runs_as_another_user() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Numeric, with no passwd entry for it.
    let mut spec = sh("id -u; id -g; echo $HOME; grep CapEff /proc/self/status");
    spec.user = "1000:100".into();
    let (_, out) = run_ok(&base.lowers, &spec, tmp.path());
    assert_eq!(out, "1000\n100\n/\nCapEff:\t0000000000000000\n");

    // A name, created by an earlier step and resolved through the merged layers.
    let (created, _) = run_ok(
        &base.lowers,
        &sh("useradd -m -u 1000 -g 100 -G audio -s /bin/bash jovyan"),
        tmp.path(),
    );
    let mut lowers = vec![created.upper_dir()];
    lowers.extend(base.lowers.iter().cloned());
    let mut spec =
        sh("id -u; id -g; id -G; echo $HOME; touch $HOME/made; stat -c %u:%g $HOME/made");
    spec.user = "jovyan".into();
    spec.workdir = "/home/jovyan".into();
    let (run, out) = run_ok(&lowers, &spec, tmp.path());
    assert_eq!(out, "1000\n100\n100 29\n/home/jovyan\n1000:100\n");
    let made = fs::symlink_metadata(run.upper_dir().join("home/jovyan/made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1000, 100));

    let mut unknown = sh("true");
    unknown.user = "nobody-such".into();
    let err = sandbox::run(&lowers, &unknown, tmp.path(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("nobody-such"), "{err}");
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let needle = dir.to_string_lossy().into_owned();
    info.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn runc_containers_under(dir: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .args(["list", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|c| {
                    c["bundle"]
                        .as_str()
                        .is_some_and(|b| b.starts_with(&*dir.to_string_lossy()))
                })
                .map(|c| c["id"].to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_failing_command_reports_and_leaves_nothing() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    let err = sandbox::run(
        &base.lowers,
        &sh("echo first words; echo to stderr >&2; touch /etc/half-done; exit 7"),
        tmp.path(),
        &mut out,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BuildError::Sandbox(_)), "{err:?}");
    assert!(msg.contains("code 7"), "{msg}");
    assert!(
        msg.contains("first words") && msg.contains("to stderr"),
        "{msg}"
    );
    assert!(msg.contains("sh -c"), "{msg}");
    let streamed = String::from_utf8_lossy(&out);
    assert!(streamed.contains("first words\n") && streamed.contains("to stderr\n"));

    // A command that does not exist fails the same way (runc reports it).
    let err = sandbox::run(
        &base.lowers,
        &RunSpec {
            argv: vec!["/no/such/program".into()],
            ..Default::default()
        },
        tmp.path(),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");

    assert_eq!(mounts_under(tmp.path()), Vec::<String>::new());
    assert_eq!(runc_containers_under(tmp.path()), Vec::<String>::new());
    let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn layers_from_directories_are_deterministic() {
    if setup().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("tree");
    let mk = |rel: &str| fs::create_dir_all(d.join(rel)).unwrap();
    mk("b");
    mk("a");
    mk("o/keep");
    mk("tmp");
    mk("w");
    fs::write(d.join("b/a"), "linked").unwrap();
    // Made second, first in path order: it is the target of the link.
    fs::hard_link(d.join("b/a"), d.join("a/z")).unwrap();
    fs::write(d.join("a/suid"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(d.join("a/suid"), Some(1000), Some(100)).unwrap();
    fs::set_permissions(d.join("a/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("../b/a", d.join("a/link")).unwrap();
    fs::write(d.join("tmp/nbrt-ca.crt"), "secret").unwrap();
    fs::write(d.join("o/keep/f"), "f").unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(d.join("a/sock")).unwrap();
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(
        CWD,
        d.join("a/fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    mknodat(
        CWD,
        d.join("a/null"),
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    mknodat(
        CWD,
        d.join("w/gone"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    fs::write(d.join("w/zz"), "z").unwrap();
    rustix::fs::setxattr(
        d.join("o"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        d.join("o"),
        "trusted.overlay.origin",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::setxattr(
        d.join("a/suid"),
        "user.nbrt",
        b"1",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let store = Store::open(tmp.path().join("store")).unwrap();
    let opts = DirLayerOptions {
        overlay_upper: true,
        clamp_mtime: Some(1_000),
        compression: Compression::Gzip,
        exclude: vec!["/tmp/nbrt-ca.crt".into()],
    };
    let first = layer_from_dir(&store, &d, &opts).unwrap();
    // Reading the tree changes access times; the layer must not change.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = layer_from_dir(&store, &d, &opts).unwrap();
    assert_eq!(first, second);

    let got = entries(&store, &first);
    let order: Vec<String> = got
        .iter()
        .map(|(e, _)| match e.kind {
            EntryKind::Whiteout => format!("{} (whiteout)", e.path),
            EntryKind::Opaque => format!("{} (opaque)", e.path),
            _ => e.path.clone(),
        })
        .collect();
    assert_eq!(
        order,
        [
            "a",
            "a/fifo",
            "a/link",
            "a/null",
            "a/suid",
            "a/z",
            "b",
            "b/a",
            "o",
            "o (opaque)",
            "o/keep",
            "o/keep/f",
            "tmp",
            "w",
            "w/gone (whiteout)",
            "w/zz",
        ]
    );
    assert!(got.iter().all(|(e, _)| e.mtime <= 1_000));
    let suid = &find(&got, "a/suid").unwrap().0;
    assert_eq!((suid.mode, suid.uid, suid.gid), (0o4755, 1000, 100));
    assert_eq!(suid.xattrs, vec![("user.nbrt".to_string(), b"1".to_vec())]);
    assert_eq!(find(&got, "tmp").unwrap().0.mode, 0o1777);
    assert_eq!(find(&got, "a/z").unwrap().1, b"linked");
    assert_eq!(
        find(&got, "b/a").unwrap().0.kind,
        EntryKind::Hardlink("a/z".into())
    );
    assert_eq!(
        find(&got, "a/null").unwrap().0.kind,
        EntryKind::CharDevice { major: 1, minor: 3 }
    );
    assert!(
        find(&got, "o").unwrap().0.xattrs.is_empty(),
        "overlay xattrs leaked"
    );

    // Applied again, the link is one inode and the setuid bit is there.
    let applied = tmp.path().join("applied");
    fs::create_dir(&applied).unwrap();
    let blob = store.open_blob(&first.descriptor()).unwrap();
    apply_layer(
        &applied,
        decompress(blob, first.compression).unwrap(),
        ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
            chown: true,
        },
    )
    .unwrap();
    let (z, a) = (
        fs::metadata(applied.join("a/z")).unwrap(),
        fs::metadata(applied.join("b/a")).unwrap(),
    );
    assert_eq!(z.ino(), a.ino());
    assert_eq!(
        fs::metadata(applied.join("a/suid")).unwrap().mode() & 0o7777,
        0o4755
    );

    // Names that layers reserve are refused, not written as whiteouts by accident.
    fs::write(d.join("a/.wh.sneaky"), "").unwrap();
    assert!(layer_from_dir(&store, &d, &opts).is_err());
}

#[test]
fn merged_view_reads_through_layers_and_whiteouts() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // An upper layer in overlay form: a new file, a whiteout, an opaque directory.
    let up = tmp.path().join("up");
    fs::create_dir_all(up.join("etc")).unwrap();
    fs::create_dir_all(up.join("usr/share/doc")).unwrap();
    fs::write(up.join("etc/greeting"), "hi\n").unwrap();
    fs::write(up.join("usr/share/doc/only"), "only\n").unwrap();
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    mknodat(
        CWD,
        up.join("etc/debian_version"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    rustix::fs::setxattr(
        up.join("usr/share/doc"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    for p in ["etc", "usr", "usr/share", "usr/share/doc"] {
        fs::set_permissions(up.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for p in ["etc/greeting", "usr/share/doc/only"] {
        fs::set_permissions(up.join(p), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = Store::open(tmp.path().join("store")).unwrap();
    let opts = DirLayerOptions {
        overlay_upper: true,
        clamp_mtime: Some(1_000),
        ..Default::default()
    };
    let layer = layer_from_dir(&store, &up, &opts).unwrap();

    // Into the shared snapshots (the content is fixed, so this is one directory for good),
    // from two threads at once.
    let fixture = Store::open(&base.store_root).unwrap();
    let snapshots = Snapshots::open(&fixture).unwrap();
    let desc = layer.descriptor();
    let (a, b) = std::thread::scope(|s| {
        let t1 = s.spawn(|| snapshots.ensure(&store, &desc, &layer.diff_id).unwrap());
        let t2 = s.spawn(|| snapshots.ensure(&store, &desc, &layer.diff_id).unwrap());
        (t1.join().unwrap(), t2.join().unwrap())
    });
    assert_eq!(a, b);

    let mut lowers = vec![a.clone()];
    lowers.extend(base.lowers.iter().cloned());
    let view = MergedView::new(lowers);
    let os = String::from_utf8(view.read("/etc/os-release").unwrap().unwrap()).unwrap();
    assert!(os.contains("bookworm"), "{os}");
    assert_eq!(view.read("/etc/greeting").unwrap().unwrap(), b"hi\n");
    assert!(!view.exists("/etc/debian_version"));
    assert_eq!(view.read("/etc/debian_version").unwrap(), None);
    assert!(view.exists("/etc/passwd"));
    let etc = view.read_dir("/etc").unwrap();
    assert!(etc.contains(&"greeting".to_string()) && etc.contains(&"passwd".to_string()));
    assert!(!etc.contains(&"debian_version".to_string()));
    assert_eq!(view.read_dir("/usr/share/doc").unwrap(), ["only"]);
    assert!(!view.exists("/usr/share/doc/apt"));
    assert!(view.real_path("/etc/greeting").unwrap().starts_with(&a));
    assert!(view
        .real_path("/etc/passwd")
        .unwrap()
        .starts_with(&base.lowers[0]));
    // Through the usrmerge symlink /bin → usr/bin.
    assert!(view.exists("/bin/sh"));
    // Without layers on top, the base still has what the upper layer hid.
    let only_base = MergedView::new(base.lowers.clone());
    assert!(only_base.exists("/etc/debian_version"));

    // A layer that does not match its diff ID leaves no snapshot behind.
    let wrong = Digest::of_bytes(b"not this layer");
    assert!(snapshots.ensure(&store, &desc, &wrong).is_err());
    assert!(!snapshots.path(&wrong).exists());

    // Pruning: refused while someone else has the snapshots open, then removes what is
    // not kept.
    let own = Snapshots::open_at(tmp.path().join("snaps")).unwrap();
    let dir = own.ensure(&store, &desc, &layer.diff_id).unwrap();
    let other = Snapshots::open_at(tmp.path().join("snaps")).unwrap();
    assert!(own.prune(|_| false).is_err());
    drop(other);
    let report = own.prune(|_| false).unwrap();
    assert_eq!((report.removed, report.kept), (1, 0));
    assert!(!dir.exists());
}

/// A scratch directory reached through a symlink (a store or fixture directory linked from
/// elsewhere) still runs: runc is given the real path of the root file system.
#[test]
fn runs_in_a_scratch_directory_behind_a_symlink() {
    let Some(base) = setup() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir_all(&real).unwrap();
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    let (_run, _) = run_ok(&base.lowers, &sh("true"), &linked.join("scratch"));
}
