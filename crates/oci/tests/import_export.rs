//! Issue 17, items 3, 6 and 9: imports in every format validate every layer and refuse
//! without changing the store; what one import or export expands to is bounded; temporary
//! files of a killed process do not stay; exports never write through a symlink of an
//! existing layout and appear only when whole. Archives and layers are written here with the
//! `tar` crate.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use nbrt_oci::layer::budget::Limits;
use nbrt_oci::spec::{media, Descriptor, ImageConfig, RootFs};
use nbrt_oci::transfer::{export, export_within, import, ExportFormat, ImportOptions};
use nbrt_oci::{Digest, Image, ImageName, OciError, Progress, Store};
use nbrt_testkit::tar_header as header;

/// A tar member whose name (and link target) are written into the header as they are, so
/// names the tar crate's own path setters refuse (`..`, absolute) can be made.
fn raw_member(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = header(kind, data.len() as u64);
    {
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

enum L<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn layer_tar(members: &[L]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            L::File(n, d) => raw_member(&mut b, tar::EntryType::Regular, n, "", d),
            L::Symlink(n, t) => raw_member(&mut b, tar::EntryType::Symlink, n, t, b""),
            L::Hardlink(n, t) => raw_member(&mut b, tar::EntryType::Link, n, t, b""),
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn config_for(diff_ids: &[Digest]) -> Vec<u8> {
    let ids: Vec<String> = diff_ids.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
    .into_bytes()
}

/// A docker-archive (`docker save`) holding one image with these layer files.
fn docker_archive(layers: &[Vec<u8>], diff_ids: &[Digest]) -> Vec<u8> {
    let config = config_for(diff_ids);
    let config_name = format!("{}.json", Digest::of_bytes(&config).hex());
    let layer_names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["hostile:1"],
        "Layers": layer_names,
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = header(tar::EntryType::Regular, data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    for (n, l) in layer_names.iter().zip(layers) {
        add(n, l);
    }
    add("manifest.json", manifest.to_string().as_bytes());
    b.into_inner().unwrap()
}

/// An OCI image layout directory holding one image with these (gzip) layer blobs.
fn oci_layout(dir: &Path, layers: &[Vec<u8>], diff_ids: &[Digest]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> Digest {
        let d = Digest::of_bytes(bytes);
        fs::write(blobs.join(d.hex()), bytes).unwrap();
        d
    };
    let config = config_for(diff_ids);
    let config_digest = put(&config);
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            serde_json::json!({
                "mediaType": media::OCI_LAYER_GZIP,
                "digest": put(l).to_string(),
                "size": l.len(),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len()},
        "layers": layer_descs,
    })
    .to_string()
    .into_bytes();
    let manifest_digest = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "1"},
        }],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Every file of the store with its size and digest (the lock files aside).
fn listing(root: &Path) -> BTreeMap<String, (u64, Digest)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (u64, Digest)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if rel.ends_with(".lock") {
                    continue;
                }
                let bytes = fs::read(&p).unwrap();
                out.insert(rel, (bytes.len() as u64, Digest::of_bytes(&bytes)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn named(name: &str) -> ImportOptions {
    ImportOptions {
        names: vec![ImageName::parse(name).unwrap()],
        ..Default::default()
    }
}

/// The hostile layers rootfs import refuses, each with what the refusal must say.
fn hostile_layers() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut bad_sum = layer_tar(&[L::File("ok", b"1")]);
    bad_sum[148] ^= 0x07; // the header checksum no longer matches
    vec![
        (
            "dotdot",
            layer_tar(&[L::File("ok", b"1"), L::File("../escape", b"x")]),
            "'..'",
        ),
        (
            "absolute",
            layer_tar(&[L::File("/etc/passwd", b"x")]),
            "absolute",
        ),
        (
            "symlink out",
            layer_tar(&[L::Symlink("l", "../../..")]),
            "leaves the root",
        ),
        (
            "hard link out",
            layer_tar(&[L::Hardlink("h", "../x")]),
            "hard link target",
        ),
        (
            "hard link to nothing",
            layer_tar(&[L::Hardlink("h", "etc/shadow")]),
            "hard link to",
        ),
        ("bad checksum", bad_sum, "header"),
    ]
}

/// Item 6: docker-archive and OCI layout imports refuse what rootfs import refuses, and
/// the store is as it was.
#[test]
fn every_import_format_validates_every_layer_and_changes_nothing_when_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    // Something in the store already, so "unchanged" means more than "empty".
    let good = layer_tar(&[L::File("hello", b"world")]);
    let good_path = tmp.path().join("good.tar");
    fs::write(
        &good_path,
        docker_archive(std::slice::from_ref(&good), &[Digest::of_bytes(&good)]),
    )
    .unwrap();
    import(
        &store,
        &good_path,
        &ImportOptions::default(),
        &Progress::hidden(),
    )
    .unwrap();
    let before = listing(&root);

    for (what, layer, needle) in hostile_layers() {
        // The good layer first: it must not stay behind either.
        let layers = [gzip(&good), gzip(&layer)];
        let diff_ids = [Digest::of_bytes(&good), Digest::of_bytes(&layer)];
        let check = |err: OciError, format: &str| {
            let text = err.to_string();
            assert!(text.contains(needle), "{format}, {what}: {text}");
            assert_eq!(
                listing(&root),
                before,
                "{format}, {what}: the store changed"
            );
        };

        let archive = tmp.path().join("hostile-docker.tar");
        fs::write(&archive, docker_archive(&layers, &diff_ids)).unwrap();
        let err = import(&store, &archive, &named("h:1"), &Progress::hidden()).unwrap_err();
        check(err, "docker-archive");

        let layout = tmp
            .path()
            .join(format!("layout-{}", what.replace(' ', "-")));
        oci_layout(&layout, &layers, &diff_ids);
        let err = import(&store, &layout, &named("h:1"), &Progress::hidden()).unwrap_err();
        check(err, "OCI layout");

        // The same layout as a tar (an OCI archive).
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all(".", &layout).unwrap();
        let oci_tar = tmp.path().join("hostile-oci.tar");
        fs::write(&oci_tar, b.into_inner().unwrap()).unwrap();
        let err = import(&store, &oci_tar, &named("h:1"), &Progress::hidden()).unwrap_err();
        check(err, "OCI archive");

        // And the layer itself as a root file system.
        let rootfs = tmp.path().join("hostile-rootfs.tar");
        fs::write(&rootfs, &layer).unwrap();
        let err = import(&store, &rootfs, &named("h:1"), &Progress::hidden()).unwrap_err();
        check(err, "rootfs");
    }
}

/// Item 6: an OCI layout whose config lists a diff ID its layer does not have.
#[test]
fn an_oci_import_checks_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let layer = layer_tar(&[L::File("hello", b"world")]);
    let layout = tmp.path().join("layout");
    oci_layout(
        &layout,
        &[gzip(&layer)],
        &[Digest::of_bytes(b"some other layer")],
    );
    let before = listing(&root);
    let err = import(&store, &layout, &named("d:1"), &Progress::hidden()).unwrap_err();
    assert!(
        matches!(&err, OciError::DigestMismatch { what, .. } if what.contains("diff ID")),
        "{err}"
    );
    assert_eq!(listing(&root), before);
}

/// A gzip of `n` bytes of zeros as a one-file root file system tar.
fn zero_bomb(n: u64) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    {
        let mut b = tar::Builder::new(&mut e);
        let mut h = header(tar::EntryType::Regular, n);
        b.append_data(&mut h, "zeros", std::io::repeat(0).take_n(n))
            .unwrap();
        b.finish().unwrap();
    }
    e.finish().unwrap()
}

trait TakeN: std::io::Read + Sized {
    fn take_n(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeN for R {}

/// Item 3: what an import expands to is bounded, with the limit named; nothing stays.
#[test]
fn imports_stop_at_the_expansion_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let before = listing(&root);
    let bomb = tmp.path().join("bomb.tar.gz");
    let data = zero_bomb(64 << 20);
    assert!(
        data.len() < 1 << 20,
        "the bomb is small: {} bytes",
        data.len()
    );
    fs::write(&bomb, &data).unwrap();
    let small = Limits {
        max_bytes: 8 << 20,
        max_entries: 1000,
    };
    let opts = ImportOptions {
        limits: small,
        ..named("bomb:1")
    };
    let err = import(&store, &bomb, &opts, &Progress::hidden()).unwrap_err();
    assert!(
        matches!(err, OciError::ExpansionLimit { unit: "bytes", .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("8388608 bytes") && text.contains("--max-expand-bytes"),
        "{text}"
    );
    assert_eq!(listing(&root), before, "the decompressed copy stayed");

    // The same bytes as the layer of a docker-archive.
    let layer = {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut plain)
            .unwrap();
        Digest::of_bytes(&plain)
    };
    let archive = tmp.path().join("bomb-docker.tar");
    fs::write(
        &archive,
        docker_archive(std::slice::from_ref(&data), &[layer]),
    )
    .unwrap();
    let err = import(&store, &archive, &opts, &Progress::hidden()).unwrap_err();
    assert!(matches!(err, OciError::ExpansionLimit { .. }), "{err}");
    assert_eq!(listing(&root), before);

    // Entries: many small files.
    let many: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let members: Vec<L> = many.iter().map(|n| L::File(n, b"")).collect();
    let path = tmp.path().join("many.tar");
    fs::write(&path, layer_tar(&members)).unwrap();
    let opts = ImportOptions {
        limits: Limits {
            max_bytes: 1 << 30,
            max_entries: 10,
        },
        ..named("many:1")
    };
    let err = import(&store, &path, &opts, &Progress::hidden()).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::ExpansionLimit {
                unit: "entries",
                limit: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--max-expand-entries"));
    assert_eq!(listing(&root), before);
}

/// Item 3: an export is bounded the same way (the rootfs export of an image whose layer
/// expands past the bound), and leaves nothing beside its output.
#[test]
fn exports_stop_at_the_expansion_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let bomb = tmp.path().join("bomb.tar.gz");
    fs::write(&bomb, zero_bomb(32 << 20)).unwrap();
    let (image, _) = import(&store, &bomb, &named("bomb:1"), &Progress::hidden()).unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let limits = Limits {
        max_bytes: 4 << 20,
        max_entries: 100,
    };
    for format in [ExportFormat::RootFs, ExportFormat::DockerArchive] {
        let err = export_within(
            &store,
            &image,
            &[],
            format,
            &out_dir.join("x.tar"),
            &Progress::hidden(),
            limits,
        )
        .unwrap_err();
        assert!(
            matches!(err, OciError::ExpansionLimit { .. }),
            "{format:?}: {err}"
        );
        assert_eq!(
            fs::read_dir(&out_dir).unwrap().count(),
            0,
            "{format:?}: leftovers"
        );
    }
}

/// A process ID no process has.
fn dead_pid() -> u32 {
    (4_000_000..4_194_304)
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

/// Item 3: temporary files of a killed process are removed when the store is next opened,
/// older leftovers by `gc`, and `gc` says what it freed.
#[test]
fn temporary_files_of_a_dead_process_are_removed_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    drop(Store::open(&root).unwrap());
    let dead = root.join(format!("tmp/.nbrt-{}-abc123", dead_pid()));
    fs::write(&dead, vec![0u8; 3 << 20]).unwrap();
    let unnamed = root.join("tmp/.tmpXYZ");
    fs::write(&unnamed, vec![0u8; 1 << 20]).unwrap();
    let mine = root.join(format!("tmp/.nbrt-{}-live", std::process::id()));
    fs::write(&mine, b"in use").unwrap();

    let store = Store::open(&root).unwrap();
    assert!(!dead.exists(), "a dead process's temporary file stayed");
    assert!(mine.exists() && unnamed.exists());
    drop(fs::remove_file(&mine));
    let report = store.gc().unwrap();
    assert!(!unnamed.exists());
    assert_eq!(report.temp_files_removed, 2, "{report:?}");
    assert_eq!(report.temp_bytes_freed, 4 << 20, "{report:?}");
}

fn stored_image(tmp: &Path) -> (Store, Image) {
    let store = Store::open(tmp.join("store")).unwrap();
    let layer = layer_tar(&[L::File("hello", b"world")]);
    let digest = Digest::of_bytes(&layer);
    let desc = Descriptor::new(media::OCI_LAYER, digest.clone(), layer.len() as u64);
    store.put_blob(&desc, &mut &layer[..]).unwrap();
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![digest],
        },
        ..Default::default()
    };
    let image = Image::assemble(config, vec![desc], BTreeMap::new()).unwrap();
    store
        .tag(&image, &ImageName::parse("e:1").unwrap())
        .unwrap();
    (store, image)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// Item 9: an existing layout with a symlink where a write would go is refused, and
/// nothing lands where the symlink points.
#[test]
fn oci_dir_export_never_writes_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = stored_image(tmp.path());
    let names = [ImageName::parse("e:1").unwrap()];
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fn sha256_link(l: &Path, o: &Path) {
        fs::create_dir(l.join("blobs")).unwrap();
        std::os::unix::fs::symlink(o, l.join("blobs/sha256")).unwrap();
    }
    fn blobs_link(l: &Path, o: &Path) {
        std::os::unix::fs::symlink(o, l.join("blobs")).unwrap();
    }
    fn index_link(l: &Path, o: &Path) {
        fs::create_dir_all(l.join("blobs/sha256")).unwrap();
        fs::remove_file(l.join("index.json")).unwrap();
        fs::write(
            o.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        std::os::unix::fs::symlink(o.join("index.json"), l.join("index.json")).unwrap();
    }
    type Make = fn(&Path, &Path);
    let cases: [(&str, Make); 3] = [
        ("blobs/sha256", sha256_link),
        ("blobs", blobs_link),
        ("index.json", index_link),
    ];
    for (what, make) in cases {
        let layout = tmp
            .path()
            .join(format!("layout-{}", what.replace('/', "-")));
        fs::create_dir(&layout).unwrap();
        fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        fs::write(
            layout.join("index.json"),
            r#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        make(&layout, &outside);
        let before = files_in(&outside);
        let err = export(
            &store,
            &image,
            &names,
            ExportFormat::OciDir,
            &layout,
            &Progress::hidden(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("symlink"), "{what}: {err}");
        assert_eq!(
            files_in(&outside),
            before,
            "{what}: written through the symlink"
        );
        for f in &before {
            assert!(!f.is_dir(), "{what}");
        }
    }
    // An ordinary existing layout is added to.
    let layout = tmp.path().join("layout-ok");
    export(
        &store,
        &image,
        &names,
        ExportFormat::OciDir,
        &layout,
        &Progress::hidden(),
    )
    .unwrap();
    let again = ImageName::parse("e:2").unwrap();
    export(
        &store,
        &image,
        &[again],
        ExportFormat::OciDir,
        &layout,
        &Progress::hidden(),
    )
    .unwrap();
    let index = fs::read_to_string(layout.join("index.json")).unwrap();
    assert_eq!(index.matches("\"digest\"").count(), 2, "{index}");
}

/// Item 9: exports appear only when whole, in every format, and leftovers of a killed
/// export are swept by the next one.
#[test]
fn exports_appear_whole_or_not_at_all() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, image) = stored_image(tmp.path());
    let names = [ImageName::parse("e:1").unwrap()];
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let dead = dead_pid();
    fs::write(
        out.join(format!(".nbrt-export-{dead}-abc")),
        b"half an export",
    )
    .unwrap();
    fs::create_dir(out.join(format!(".nbrt-export-{dead}-dir"))).unwrap();
    fs::write(
        out.join(format!(".nbrt-export-{dead}-dir/index.json")),
        b"{}",
    )
    .unwrap();
    // Its blob missing from the store, an export fails part way: nothing appears.
    let layer_blob = store.blob_path(&image.layers()[0].digest);
    let saved = fs::read(&layer_blob).unwrap();
    fs::remove_file(&layer_blob).unwrap();
    for (format, name) in [
        (ExportFormat::OciDir, "layout"),
        (ExportFormat::Combined, "image.tar"),
        (ExportFormat::DockerArchive, "docker.tar"),
        (ExportFormat::RootFs, "rootfs.tar"),
    ] {
        let target = out.join(name);
        assert!(
            export(&store, &image, &names, format, &target, &Progress::hidden()).is_err(),
            "{format:?}"
        );
        assert!(!target.exists(), "{format:?}: a partial export appeared");
        assert_eq!(
            files_in(&out),
            Vec::<PathBuf>::new(),
            "{format:?}: leftovers"
        );
    }
    fs::write(&layer_blob, saved).unwrap();
    for (format, name) in [
        (ExportFormat::OciDir, "layout"),
        (ExportFormat::RootFs, "rootfs.tar"),
    ] {
        export(
            &store,
            &image,
            &names,
            format,
            &out.join(name),
            &Progress::hidden(),
        )
        .unwrap();
    }
    assert_eq!(files_in(&out), [out.join("layout"), out.join("rootfs.tar")]);
    let layout = nbrt_oci::format::LayoutDir::open(out.join("layout")).unwrap();
    assert_eq!(layout.index().unwrap().manifests.len(), 1);
}

/// Issue 20 item 2: a legacy docker-archive's layers stream from their decompressor with no
/// decompressed copy written: into a file each header's size is filled in afterwards, into a
/// stream the sizes are measured first. Both give the same bytes, which import back to the
/// same image; a layer that does not decompress to its diff ID leaves no file.
#[test]
fn a_docker_archive_is_the_same_into_a_file_and_a_stream_and_reimports() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let big: Vec<u8> = (0..300_001u32).flat_map(|i| i.to_le_bytes()).collect();
    let layers = [
        layer_tar(&[L::File("a", b"one"), L::File("b", &big)]),
        layer_tar(&[L::File("c", b"odd-sized: not a whole block")]),
        layer_tar(&[L::File("a", b"one")]),
    ];
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for l in &layers {
        let blob = gzip(l);
        let desc = Descriptor::new(
            media::OCI_LAYER_GZIP,
            Digest::of_bytes(&blob),
            blob.len() as u64,
        );
        store.put_blob(&desc, &mut &blob[..]).unwrap();
        descs.push(desc);
        diff_ids.push(Digest::of_bytes(l));
    }
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: diff_ids.clone(),
        },
        ..Default::default()
    };
    let image = Image::assemble(config, descs, BTreeMap::new()).unwrap();
    let names = [ImageName::parse("legacy:1").unwrap()];
    let file = tmp.path().join("docker.tar");
    export(
        &store,
        &image,
        &names,
        ExportFormat::DockerArchive,
        &file,
        &Progress::hidden(),
    )
    .unwrap();
    let mut streamed = Vec::new();
    nbrt_oci::transfer::write_archive(
        &store,
        &image,
        &names,
        ExportFormat::DockerArchive,
        &mut streamed,
        &Progress::hidden(),
    )
    .unwrap();
    assert!(
        fs::read(&file).unwrap() == streamed,
        "a file and a stream differ"
    );
    let mut archive = tar::Archive::new(&streamed[..]);
    let mut found = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        found.insert(path, bytes);
    }
    for (l, d) in layers.iter().zip(&diff_ids) {
        assert!(
            found.get(&format!("{}/layer.tar", d.hex())) == Some(l),
            "layer {d} is not its decompressed tar"
        );
    }
    let again = Store::open(tmp.path().join("again")).unwrap();
    let (back, _) = import(&again, &file, &named("back:1"), &Progress::hidden()).unwrap();
    assert_eq!(back.diff_ids(), &diff_ids[..]);
    assert_eq!(back.id(), image.id());

    // A blob that decompresses to something else than its diff ID says.
    let liar = layer_tar(&[L::File("x", b"not what the config says")]);
    let blob = gzip(&liar);
    let desc = Descriptor::new(
        media::OCI_LAYER_GZIP,
        Digest::of_bytes(&blob),
        blob.len() as u64,
    );
    store.put_blob(&desc, &mut &blob[..]).unwrap();
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![diff_ids[0].clone()],
        },
        ..Default::default()
    };
    let bad = Image::assemble(config, vec![desc], BTreeMap::new()).unwrap();
    let out = tmp.path().join("bad");
    fs::create_dir(&out).unwrap();
    let err = export(
        &store,
        &bad,
        &names,
        ExportFormat::DockerArchive,
        &out.join("bad.tar"),
        &Progress::hidden(),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert_eq!(files_in(&out), Vec::<PathBuf>::new(), "leftovers");
    let err = nbrt_oci::transfer::write_archive(
        &store,
        &bad,
        &names,
        ExportFormat::DockerArchive,
        &mut Vec::new(),
        &Progress::hidden(),
    )
    .unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
}
