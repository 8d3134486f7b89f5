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
