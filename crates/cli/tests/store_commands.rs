//! The store commands through the binary, on a tiny root file system made in the test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn nbrt(home: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .args(args)
        .env("NBRT_HOME", home)
        .output()
        .expect("running nbrt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(home: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = nbrt(home, args);
    assert!(success, "nbrt {args:?}: {stderr}");
    stdout
}

fn tiny_rootfs(path: &Path, marker: &str) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in [
        ("etc/marker", marker.as_bytes()),
        ("bin/tool", b"#!/bin/sh\n".as_slice()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn tag_rm_gc_and_listing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    tiny_rootfs(&a, "a");
    tiny_rootfs(&b, "b");
    let imported: Value = serde_json::from_str(&ok(
        &home,
        &["import", a.to_str().unwrap(), "-t", "tiny:a", "--json"],
    ))
    .unwrap();
    ok(
        &home,
        &[
            "import",
            b.to_str().unwrap(),
            "--tag",
            "tiny:b",
            "--compression",
            "zstd",
        ],
    );
    let id = imported["id"].as_str().unwrap();

    // Names, IDs, digests and short prefixes all find the image.
    ok(&home, &["tag", "tiny:a", "other/name:1"]);
    for reference in [
        "tiny:a",
        "other/name:1",
        id,
        &id[7..19],
        imported["digest"].as_str().unwrap(),
    ] {
        let info: Value =
            serde_json::from_str(&ok(&home, &["inspect", reference, "--json"])).unwrap();
        assert_eq!(info["id"], id, "{reference}");
    }
    let list: Value = serde_json::from_str(&ok(&home, &["images", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = ok(&home, &["images"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("other/name") && table.contains(&id[7..19]),
        "{table}"
    );

    // rm removes one name; the image stays while another name holds it.
    ok(&home, &["rm", "tiny:a"]);
    ok(&home, &["inspect", "other/name:1"]);
    let (found, _, err) = nbrt(&home, &["inspect", "tiny:a"]);
    assert!(!found && err.contains("no image named"), "{err}");
    // Removing by ID removes every name and collects the blobs.
    let out = ok(&home, &["rm", id]);
    assert!(
        out.contains("Untagged: other/name:1") && out.contains("Deleted 3 blobs"),
        "{out}"
    );
    let gc: Value = serde_json::from_str(&ok(&home, &["gc", "--json"])).unwrap();
    assert_eq!(gc["blobs_removed"], 0);
    assert_eq!(gc["blobs_kept"], 3, "tiny:b's layer, config and manifest");

    // Errors say what is wrong.
    let (success, _, err) = nbrt(&home, &["import", a.to_str().unwrap()]);
    assert!(!success && err.contains("--tag"), "{err}");
    let (success, _, err) = nbrt(&home, &["tag", "tiny:b", "Bad Name"]);
    assert!(!success && err.contains("invalid image name"), "{err}");
    let (success, _, err) = nbrt(&home, &["export", "tiny:b", "-o", "x", "--format", "zip"]);
    assert!(!success && err.contains("export format"), "{err}");
}

/// An image a site pinned (a registered runtime's) outlives its names: `nbrt rm` says it
/// stays and who holds it, `nbrt gc` keeps it after its tag moved to another image.
#[test]
fn rm_and_gc_keep_a_pinned_image_and_name_its_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    tiny_rootfs(&a, "a");
    tiny_rootfs(&b, "b");
    let imported: Value = serde_json::from_str(&ok(
        &home,
        &["import", a.to_str().unwrap(), "-t", "py:latest", "--json"],
    ))
    .unwrap();
    let id = imported["id"].as_str().unwrap().to_string();
    {
        let store = nbrt_oci::Store::open(&home).unwrap();
        let image = store.resolve(&id).unwrap().image;
        store
            .pin(
                "site-x-runtime-1",
                &image,
                "runtime \"py\" of the site at /srv/site.db",
            )
            .unwrap();
    }
    // `nbrt build` moves the tag: the pinned image has no name left.
    ok(&home, &["import", b.to_str().unwrap(), "-t", "py:latest"]);
    let gc: Value = serde_json::from_str(&ok(&home, &["gc", "--json"])).unwrap();
    assert_eq!(
        (gc["blobs_removed"].as_u64(), gc["pins"].as_u64()),
        (Some(0), Some(1))
    );
    let info: Value = serde_json::from_str(&ok(&home, &["inspect", &id, "--json"])).unwrap();
    assert_eq!(info["id"], id.as_str());
    // Listed, nameless, with who holds it.
    let list: Value = serde_json::from_str(&ok(&home, &["images", "--json"])).unwrap();
    let pinned = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .expect("the pinned image is listed");
    assert_eq!(pinned["names"], serde_json::json!([]));
    assert_eq!(
        pinned["pinned_by"],
        serde_json::json!(["runtime \"py\" of the site at /srv/site.db"])
    );
    let table = ok(&home, &["images"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("<none>") && l.contains(&id[7..19])),
        "{table}"
    );
    // rm says it stays, naming the runtime; gc still keeps it.
    let (success, _, err) = nbrt(&home, &["rm", &id]);
    assert!(success, "{err}");
    assert!(
        err.contains("stays in the store: pinned by runtime \"py\" of the site at /srv/site.db"),
        "{err}"
    );
    ok(&home, &["inspect", &id]);
}

#[test]
fn gc_prunes_the_builders_unpacked_layers_of_removed_images() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let rootfs = tmp.path().join("tiny.tar");
    tiny_rootfs(&rootfs, "base");
    ok(
        &home,
        &["import", rootfs.to_str().unwrap(), "--tag", "tiny:base"],
    );
    // A files step with a numeric owner reads the parent through its unpacked layer.
    let stack = tmp.path().join("stack");
    std::fs::create_dir_all(&stack).unwrap();
    std::fs::write(stack.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        stack.join("runtime.toml"),
        "name = \"child\"\nfrom = \"tiny:base\"\n\n[[files]]\nsource = \"hello.txt\"\n\
         destination = \"/etc/hello.txt\"\nowner = \"1000:100\"\n",
    )
    .unwrap();
    ok(
        &home,
        &["build", stack.join("runtime.toml").to_str().unwrap()],
    );
    let unpacked = |home: &Path| -> usize {
        std::fs::read_dir(home.join("snapshots"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let before = unpacked(&home);
    assert!(before >= 1, "the build unpacked its parent's layer");

    // While the images are there, gc keeps their unpacked layers.
    let gc: Value = serde_json::from_str(&ok(&home, &["gc", "--json"])).unwrap();
    assert_eq!(gc["snapshots"]["removed"], 0, "{gc}");
    assert_eq!(unpacked(&home), before);

    ok(&home, &["rm", "child:latest"]);
    ok(&home, &["rm", "tiny:base"]);
    let gc: Value = serde_json::from_str(&ok(&home, &["gc", "--json"])).unwrap();
    assert_eq!(gc["snapshots"]["removed"], before, "{gc}");
    assert_eq!(unpacked(&home), 0);
}

/// Issue 17, item 3: a killed import's temporary file is removed when nbrt next opens the
/// store and `nbrt gc` says what it freed (it said "removed 0 blobs (0B)" before); an
/// import over `--max-expand-bytes` is refused with the limit named, leaving nothing.
#[test]
fn gc_reports_temporary_files_and_imports_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let a = tmp.path().join("a.tar");
    tiny_rootfs(&a, "a");
    ok(&home, &["import", a.to_str().unwrap(), "-t", "tiny:a"]);
    // What `kill -9` in the middle of an import leaves: a process-named temporary file.
    let dead = (4_000_000..4_194_304)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap();
    let left = home.join(format!("tmp/.nbrt-{dead}-x1y2z3"));
    std::fs::write(&left, vec![0u8; 5 << 20]).unwrap();
    let out = ok(&home, &["gc"]);
    assert!(!left.exists());
    assert!(
        out.contains("removed 1 temporary files (5.24MB)"),
        "gc does not say what it freed: {out}"
    );

    // A gzip bomb: 16 MiB of zeros in a few KiB.
    let bomb = tmp.path().join("bomb.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&bomb).unwrap(),
            flate2::Compression::best(),
        );
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(16 << 20);
        h.set_mode(0o644);
        b.append_data(
            &mut h,
            "zeros",
            std::io::Read::take(std::io::repeat(0), 16 << 20),
        )
        .unwrap();
        b.into_inner().unwrap().finish().unwrap();
    }
    let (success, _, stderr) = nbrt(
        &home,
        &[
            "import",
            bomb.to_str().unwrap(),
            "-t",
            "bomb:1",
            "--max-expand-bytes",
            "4M",
        ],
    );
    assert!(!success);
    assert!(
        stderr.contains("4194304 bytes") && stderr.contains("--max-expand-bytes"),
        "{stderr}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(home.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!ok(&home, &["images"]).contains("bomb"));
}

/// `nbrt inspect X | grep -q ID`, `nbrt manifest X | head`: the reader closes the pipe before
/// nbrt has written everything. nbrt stops quietly with status 0, with no panic or backtrace.
/// The pipe's read end is closed before nbrt starts, so every write meets a closed pipe.
#[test]
fn a_closed_stdout_pipe_ends_commands_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let a = tmp.path().join("a.tar");
    tiny_rootfs(&a, "a");
    ok(&home, &["import", a.to_str().unwrap(), "-t", "tiny:a"]);
    for args in [
        &["images"][..],
        &["images", "--json"],
        &["inspect", "tiny:a"],
        &["inspect", "tiny:a", "--json"],
        &["export", "tiny:a", "--format", "rootfs", "-o", "-"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_nbrt"))
            .args(args)
            .env("NBRT_HOME", &home)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("running nbrt");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "nbrt {args:?} with a closed stdout: {:?}, stderr: {stderr}",
            out.status
        );
    }
}

/// Issue 17, item 10: `nbrt gc` behind another nbrt process (here a stopped one, as after
/// Ctrl-Z) says that it is waiting and why, instead of hanging silently; it finishes once the
/// other process is gone.
#[test]
fn gc_says_it_waits_for_another_process() {
    use std::io::Read;
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("store");
    let a = tmp.path().join("a.tar");
    tiny_rootfs(&a, "a");
    ok(&home, &["import", a.to_str().unwrap(), "-t", "tiny:a"]);
    // What another nbrt process holds while it works in the store (here as if stopped with
    // Ctrl-Z): the shared gc lock.
    let other = std::fs::File::open(home.join("gc.lock")).unwrap();
    other.lock_shared().unwrap();
    let mut gc = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .args(["gc"])
        .env("NBRT_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The warning comes at once; gc is still waiting.
    let mut stderr = gc.stderr.take().unwrap();
    let mut said = Vec::new();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    while !said.ends_with(b"\n") && started.elapsed() < std::time::Duration::from_secs(20) {
        if stderr.read(&mut byte).unwrap() == 0 {
            break;
        }
        said.push(byte[0]);
    }
    let said = String::from_utf8_lossy(&said).into_owned();
    assert!(
        said.contains("waiting for the other nbrt processes using")
            && said.contains("gc needs the store to itself"),
        "{said:?}"
    );
    assert!(gc.try_wait().unwrap().is_none(), "gc did not wait");
    // The other process ends; gc goes on.
    drop(other);
    let out = gc.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
