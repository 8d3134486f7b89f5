//! Acceptance for the image core against real components: mmdebstrap, the Docker engine
//! (Debian's docker.io), skopeo and umoci. See README for how CI provides them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nbrt_testkit::{minbase_rootfs, require, require_docker};
use serde_json::Value;

/// Runs the nbrt binary against one store.
struct Nbrt {
    home: PathBuf,
}

impl Nbrt {
    fn new(home: &Path) -> Self {
        Self {
            home: home.to_path_buf(),
        }
    }

    fn raw(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_nbrt"))
            .args(args)
            .env("NBRT_HOME", &self.home)
            .output()
            .expect("running nbrt")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.raw(args);
        assert!(
            out.status.success(),
            "nbrt {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("nbrt printed JSON")
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running a tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args))
}

/// A unique name for things this test run puts into the shared Docker engine.
fn unique(prefix: &str) -> String {
    format!(
        "nbrt-test/{prefix}:{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

struct DockerImage(String);
impl Drop for DockerImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
    }
}

#[test]
fn debian_rootfs_imports_exports_and_runs_in_docker() {
    let Some(rootfs) = minbase_rootfs() else {
        return;
    };
    if !require_docker() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let nbrt = Nbrt::new(&tmp.path().join("store"));
    let name = unique("debian");
    let imported = nbrt.json(&["import", rootfs.to_str().unwrap(), "--tag", &name]);
    assert_eq!(imported["source_kind"], "rootfs");
    let info = nbrt.json(&["inspect", &name]);
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(info["layers"].as_array().unwrap().len(), 1);

    // The default export is one tar that docker load reads.
    let tar = tmp.path().join("image.tar");
    nbrt.ok(&["export", &name, "-o", tar.to_str().unwrap()]);
    let _cleanup = DockerImage(name.clone());
    docker(&["load", "-i", tar.to_str().unwrap()]);
    assert_eq!(
        docker(&["inspect", "--format", "{{.Id}}", &name]).trim(),
        id
    );
    docker(&["rmi", &name]);

    // nbrt load goes through the engine API and gives the same ID.
    let loaded = nbrt.json(&["load", &name]);
    assert_eq!(loaded["engine_id"], id.as_str());
    assert_eq!(
        docker(&["inspect", "--format", "{{.Id}}", &name]).trim(),
        id
    );
    let version = docker(&["run", "--rm", &name, "cat", "/etc/debian_version"]);
    assert!(version.trim().starts_with("12."), "{version}");

    // docker save (the engine's own format) imports and exports again with the same ID.
    let saved = tmp.path().join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &name]);
    let again = Nbrt::new(&tmp.path().join("store2"));
    let re = again.json(&["import", saved.to_str().unwrap()]);
    assert_eq!(re["source_kind"], "docker-archive");
    assert_eq!(re["id"], id.as_str());
    assert_eq!(re["names"][0], name.as_str());
    let round = tmp.path().join("round.tar");
    again.ok(&["export", &name, "-o", round.to_str().unwrap()]);
    docker(&["rmi", &name]);
    docker(&["load", "-i", round.to_str().unwrap()]);
    assert_eq!(
        docker(&["inspect", "--format", "{{.Id}}", &name]).trim(),
        id
    );
    // Legacy docker-archive output loads too.
    let legacy = tmp.path().join("legacy.tar");
    again.ok(&[
        "export",
        &name,
        "-o",
        legacy.to_str().unwrap(),
        "--format",
        "docker-archive",
    ]);
    docker(&["rmi", &name]);
    docker(&["load", "-i", legacy.to_str().unwrap()]);
    assert_eq!(
        docker(&["inspect", "--format", "{{.Id}}", &name]).trim(),
        id
    );
}

#[test]
fn skopeo_and_umoci_read_our_layout_and_tar() {
    let Some(rootfs) = minbase_rootfs() else {
        return;
    };
    if !require("skopeo", &["--version"], "skopeo") || !require("umoci", &["--version"], "umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let nbrt = Nbrt::new(&tmp.path().join("store"));
    nbrt.ok(&[
        "import",
        rootfs.to_str().unwrap(),
        "--tag",
        "nbrt-test/deb:v1",
    ]);
    let digest = nbrt.json(&["inspect", "nbrt-test/deb:v1"])["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let layout = tmp.path().join("layout");
    let tar = tmp.path().join("image.tar");
    nbrt.ok(&[
        "export",
        "nbrt-test/deb:v1",
        "-o",
        layout.to_str().unwrap(),
        "--format",
        "oci-dir",
    ]);
    nbrt.ok(&["export", "nbrt-test/deb:v1", "-o", tar.to_str().unwrap()]);

    let inspect = |transport: String| -> Value {
        serde_json::from_str(&run(Command::new("skopeo").args(["inspect", &transport]))).unwrap()
    };
    assert_eq!(
        inspect(format!("oci:{}:v1", layout.display()))["Digest"],
        digest.as_str()
    );
    assert_eq!(
        inspect(format!("oci-archive:{}:v1", tar.display()))["Digest"],
        digest.as_str()
    );
    // The same tar read as a docker-archive: skopeo recomputes the manifest, the config (and
    // so the layers) must be ours.
    let as_docker = inspect(format!("docker-archive:{}", tar.display()));
    assert_eq!(as_docker["Layers"].as_array().unwrap().len(), 1);

    // skopeo copies out of both and the copies carry our image.
    let copied = tmp.path().join("copied");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:v1", layout.display()),
        &format!("oci:{}:copy", copied.display()),
    ]));
    assert_eq!(
        inspect(format!("oci:{}:copy", copied.display()))["Digest"],
        digest.as_str()
    );
    run(Command::new("skopeo").args([
        "copy",
        &format!("docker-archive:{}", tar.display()),
        &format!("oci:{}:fromtar", copied.display()),
    ]));
    // Our own store is an OCI layout as well.
    assert_eq!(
        inspect(format!(
            "oci:{}:nbrt-test/deb:v1",
            tmp.path().join("store").display()
        ))["Digest"],
        digest.as_str()
    );

    // umoci unpacks the layout into a runtime bundle.
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:v1", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    let version = std::fs::read_to_string(bundle.join("rootfs/etc/debian_version")).unwrap();
    assert!(version.starts_with("12."));

    // What skopeo wrote imports back into nbrt with the same digest.
    let back = Nbrt::new(&tmp.path().join("store2"));
    let re = back.json(&[
        "import",
        copied.to_str().unwrap(),
        "--image",
        "copy",
        "--tag",
        "back:1",
    ]);
    assert_eq!(re["digest"], digest.as_str());
}

#[test]
fn same_rootfs_gives_the_same_image_in_two_processes() {
    let Some(rootfs) = minbase_rootfs() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let import = |store: &str, sde: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nbrt"));
        cmd.args(["import", rootfs.to_str().unwrap(), "--tag", "d:1", "--json"])
            .env("NBRT_HOME", tmp.path().join(store));
        if let Some(s) = sde {
            cmd.env("SOURCE_DATE_EPOCH", s);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting nbrt")
    };
    // Two processes at once into two stores, and two at once into one shared store.
    let children = vec![
        import("a", None),
        import("b", None),
        import("shared", None),
        import("shared", None),
    ];
    let outs: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    for o in &outs[1..] {
        assert_eq!(o["id"], outs[0]["id"]);
        assert_eq!(o["digest"], outs[0]["digest"]);
    }
    let shared = Nbrt::new(&tmp.path().join("shared"));
    assert_eq!(shared.json(&["images"]).as_array().unwrap().len(), 1);

    // SOURCE_DATE_EPOCH fixes the creation time and clamps every mtime.
    let out = import("sde", Some("1000000000"))
        .wait_with_output()
        .unwrap();
    assert!(out.status.success());
    let sde = Nbrt::new(&tmp.path().join("sde"));
    let config = &sde.json(&["inspect", "d:1"])["config"];
    assert_eq!(config["created"], "2001-09-09T01:46:40Z");
    let flat = tmp.path().join("flat.tar");
    sde.ok(&[
        "export",
        "d:1",
        "-o",
        flat.to_str().unwrap(),
        "--format",
        "rootfs",
    ]);
    let mut archive = tar::Archive::new(std::fs::File::open(&flat).unwrap());
    let mut count = 0;
    for e in archive.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000_000_000);
        count += 1;
    }
    assert!(count > 1000, "the flattened rootfs has {count} entries");
}
