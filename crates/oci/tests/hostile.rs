//! Untrusted layers and blobs: nothing may be written outside the root, nothing may land in
//! the store unverified, and each refusal says what was wrong.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use nbrt_oci::image::{copy_image, validate, Image};
use nbrt_oci::layer::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use nbrt_oci::layer::flatten::flatten;
use nbrt_oci::layer::{Compression, Entry, EntryKind, LayerWriter};
use nbrt_oci::spec::{ImageConfig, RootFs};
use nbrt_oci::store::RefKind;
use nbrt_oci::transfer::{import, ImportOptions};
use nbrt_oci::{ImageName, OciError, Progress, Store};

/// One tar member written by hand, so names the `tar` crate would refuse can be made.
struct Raw<'a> {
    name: &'a str,
    kind: u8,
    link: &'a str,
    size: u64,
    data: &'a [u8],
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: b'0',
        link: "",
        size: data.len() as u64,
        data,
    }
}
fn dir(name: &str) -> Raw<'_> {
    Raw {
        name,
        kind: b'5',
        link: "",
        size: 0,
        data: b"",
    }
}
fn symlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind: b'2',
        link: target,
        size: 0,
        data: b"",
    }
}
fn hardlink<'a>(name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind: b'1',
        link: target,
        size: 0,
        data: b"",
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}\0", v, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn raw_tar(members: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = [0u8; 512];
        h[..m.name.len()].copy_from_slice(m.name.as_bytes());
        octal(&mut h[100..108], if m.kind == b'5' { 0o755 } else { 0o644 });
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        if m.size < 0o77777777777 {
            octal(&mut h[124..136], m.size);
        } else {
            // base-256 for sizes that do not fit in 11 octal digits
            h[124] = 0x80;
            h[128..136].copy_from_slice(&m.size.to_be_bytes());
        }
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = m.kind;
        h[157..157 + m.link.len()].copy_from_slice(m.link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        octal(&mut h[148..155], sum as u64);
        h[155] = b' ';
        out.extend_from_slice(&h);
        out.extend_from_slice(m.data);
        let pad = (512 - m.data.len() % 512) % 512;
        out.extend(std::iter::repeat_n(0u8, pad));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A root to apply into, beside an `outside` directory holding one file.
struct Scene {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"keep").unwrap();
        Self {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn apply(&self, members: &[Raw]) -> nbrt_oci::Result<()> {
        apply_layer(&self.root, &raw_tar(members)[..], ApplyOptions::default())
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"keep");
        let meta = fs::metadata(self.outside.join("secret")).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::nlink(&meta),
            1,
            "secret was hard-linked"
        );
    }
}

fn assert_unsafe(result: nbrt_oci::Result<()>, needle: &str) {
    match result {
        Err(OciError::UnsafeEntry { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} lacks {needle:?}"
            )
        }
        other => panic!("expected an unsafe-entry error about {needle:?}, got {other:?}"),
    }
}

#[test]
fn path_traversal_is_refused() {
    let s = Scene::new();
    assert_unsafe(s.apply(&[file("../outside/pwned", b"x")]), "'..'");
    assert_unsafe(s.apply(&[file("a/../../outside/pwned", b"x")]), "'..'");
    s.assert_outside_untouched();
}

/// No character of `text` may drive a terminal (C0, DEL, C1 controls).
fn assert_no_controls(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "a control character in {text:?}"
    );
}

#[test]
fn terminal_escapes_in_names_are_refused_and_never_printed() {
    let s = Scene::new();
    let name = "a/\x1b]0;owned\x07\x1b[2J\u{9b}31m/../../outside/pwned";
    let err = s.apply(&[file(name, b"x")]).unwrap_err();
    assert!(matches!(err, OciError::UnsafeEntry { .. }), "{err:?}");
    let text = err.to_string();
    assert_no_controls(&text);
    assert!(text.contains("'..'"), "{text}");
    assert!(
        text.contains("\\x1b]0;owned\\x07\\x1b[2J\\x9b31m"),
        "{text}"
    );
    s.assert_outside_untouched();

    // The same tar imported as a root file system: refused, nothing stored, nothing printed.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let path = tmp.path().join("escapes.tar");
    fs::write(&path, raw_tar(&[file("ok", b"1"), file(name, b"x")])).unwrap();
    let opts = ImportOptions {
        names: vec![ImageName::parse("h:1").unwrap()],
        ..Default::default()
    };
    let err = import(&store, &path, &opts, &Progress::hidden()).unwrap_err();
    assert!(matches!(err, OciError::UnsafeEntry { .. }), "{err:?}");
    assert_no_controls(&err.to_string());
    assert!(blob_names(&root).is_empty());

    // Text a registry sends is escaped the same way.
    let err = OciError::Registry {
        registry: "r\x1b[1m".into(),
        message: "HTTP 500: \x1b]8;;http://evil/\x07click\x1b]8;;\x07".into(),
    };
    assert_no_controls(&err.to_string());
}

#[test]
fn absolute_names_are_refused() {
    let s = Scene::new();
    let abs = format!("{}/pwned", s.outside.display());
    assert_unsafe(s.apply(&[file(&abs, b"x")]), "absolute");
    s.assert_outside_untouched();
}

#[test]
fn symlinks_that_leave_the_root_are_refused() {
    let s = Scene::new();
    assert_unsafe(s.apply(&[symlink("up", "../outside")]), "leaves the root");
    assert_unsafe(
        s.apply(&[dir("a"), symlink("a/up", "../../outside")]),
        "leaves the root",
    );
    s.assert_outside_untouched();
}

#[test]
fn writing_through_a_symlink_stays_inside_the_root() {
    let s = Scene::new();
    // An absolute symlink is legitimate in an image, and means the image's own root: a
    // later layer writing through it writes inside the root...
    s.apply(&[symlink("etc-link", "/etc"), dir("etc")]).unwrap();
    s.apply(&[file("etc-link/motd", b"hi")]).unwrap();
    assert_eq!(fs::read(s.root.join("etc/motd")).unwrap(), b"hi");
    // ...(the same layer writing through its own symlink is refused: see layer::rules)...
    assert_unsafe(
        s.apply(&[symlink("l2", "/etc"), file("l2/x", b"x")]),
        "write through a symlink",
    );
    // ...so one pointing at the host's directory leads nowhere on the host.
    let host_outside = s.outside.display().to_string();
    s.apply(&[symlink("jump", &host_outside)]).unwrap();
    let result = s.apply(&[file("jump/pwned", b"x")]);
    assert!(
        result.is_err(),
        "a write through a dangling in-root symlink must fail"
    );
    // `..` in an absolute target is clamped at the image root.
    s.apply(&[symlink("climb", "/../../../..")]).unwrap();
    s.apply(&[file("climb/at-root", b"x")]).unwrap();
    assert!(s.root.join("at-root").is_file());
    s.assert_outside_untouched();
}

#[test]
fn hard_links_out_of_the_root_are_refused() {
    let s = Scene::new();
    assert_unsafe(
        s.apply(&[hardlink("hl", "../outside/secret")]),
        "hard link target",
    );
    let abs = format!("{}/secret", s.outside.display());
    assert_unsafe(s.apply(&[hardlink("hl", &abs)]), "hard link target");
    // Through a symlink to the host path: resolved in the root, where it does not exist.
    let result = s.apply(&[
        symlink("s", &s.outside.display().to_string()),
        hardlink("hl", "s/secret"),
    ]);
    assert!(result.is_err());
    s.assert_outside_untouched();
    // A hard link inside the root works.
    s.apply(&[file("a", b"data"), hardlink("b", "a")]).unwrap();
    assert_eq!(fs::read(s.root.join("b")).unwrap(), b"data");
}

#[test]
fn huge_and_short_sizes_are_refused() {
    let s = Scene::new();
    let huge = Raw {
        name: "big",
        kind: b'0',
        link: "",
        size: 1 << 40,
        data: b"",
    };
    assert_unsafe(s.apply(&[huge]), "over the limit");
    let short = Raw {
        name: "short",
        kind: b'0',
        link: "",
        size: 1 << 20,
        data: b"only this",
    };
    let err = s.apply(&[short]).unwrap_err();
    assert!(
        err.to_string().contains("declared size") || err.to_string().contains("bytes"),
        "{err}"
    );
    s.assert_outside_untouched();
}

#[test]
fn whiteouts_and_opaque_directories_apply() {
    let s = Scene::new();
    s.apply(&[
        dir("a"),
        file("a/b", b"1"),
        file("a/c", b"2"),
        dir("d"),
        file("d/e", b"3"),
        dir("g"),
        file("g/h", b"4"),
    ])
    .unwrap();
    s.apply(&[
        file("a/.wh.b", b""),
        file("d/.wh..wh..opq", b""),
        file("d/f", b"5"),
        file(".wh.g", b""),
    ])
    .unwrap();
    assert!(!s.root.join("a/b").exists());
    assert!(s.root.join("a/c").exists());
    assert!(!s.root.join("d/e").exists());
    assert!(s.root.join("d/f").exists());
    assert!(!s.root.join("g").exists());
}

/// A whiteout of `.` or `..` is refused by its name (the kernel would refuse to remove
/// either, but the refusal must not rest on that).
#[test]
fn whiteouts_of_dot_and_dot_dot_are_refused_by_name() {
    let s = Scene::new();
    s.apply(&[dir("a"), file("a/b", b"1")]).unwrap();
    for name in ["a/.wh..", "a/.wh...", ".wh..", ".wh..."] {
        assert_unsafe(s.apply(&[file(name, b"")]), "whiteout of . or ..");
    }
    assert!(s.root.join("a/b").exists());
    s.assert_outside_untouched();
}

#[test]
fn overlay_mode_records_whiteouts() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: overlay whiteouts need root (mknod, trusted.* xattrs)");
        return;
    }
    let s = Scene::new();
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay,
        chown: true,
    };
    apply_layer(
        &s.root,
        &raw_tar(&[dir("d"), file("d/.wh..wh..opq", b""), file("a/.wh.b", b"")])[..],
        opts,
    )
    .unwrap();
    let meta = fs::symlink_metadata(s.root.join("a/b")).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    let v = rustix::fs::getxattr(
        s.root.join("d").as_path(),
        "trusted.overlay.opaque",
        &mut [0u8; 4],
    )
    .unwrap();
    assert_eq!(v, 1);
    // A directory that replaces a whiteout in the same layer hides the lower one.
    let layer = raw_tar(&[file(".wh.x", b""), dir("x"), file("x/new", b"1")]);
    apply_layer(&s.root, &layer[..], opts).unwrap();
    let opaque = rustix::fs::getxattr(
        s.root.join("x").as_path(),
        "trusted.overlay.opaque",
        &mut [0u8; 4],
    );
    assert_eq!(opaque.ok(), Some(1));
}

// ---- the store ----

fn entry(path: &str, kind: EntryKind, size: u64) -> Entry {
    Entry {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1,
        size,
        xattrs: vec![],
    }
}

/// Put a layer made of `(entry, data)` pairs into the store.
fn layer(store: &Store, entries: &[(Entry, &[u8])]) -> nbrt_oci::layer::LayerInfo {
    let mut w = LayerWriter::new(store.new_blob().unwrap(), Compression::Gzip, None).unwrap();
    for (e, d) in entries {
        w.append(e, &mut &d[..]).unwrap();
    }
    let (info, blob) = w.finish().unwrap();
    blob.commit().unwrap();
    info
}

fn image_of(layers: &[nbrt_oci::layer::LayerInfo]) -> Image {
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        ..Default::default()
    };
    Image::assemble(
        config,
        layers.iter().map(|l| l.descriptor()).collect(),
        BTreeMap::new(),
    )
    .unwrap()
}

fn blob_names(store_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn flatten_honours_whiteouts_across_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let l1 = layer(
        &store,
        &[
            (entry("a", EntryKind::Dir, 0), b""),
            (entry("a/b", EntryKind::File, 3), b"old"),
            (entry("a/c", EntryKind::File, 1), b"c"),
            (entry("d", EntryKind::Dir, 0), b""),
            (entry("d/e", EntryKind::File, 1), b"e"),
            (entry("x", EntryKind::Dir, 0), b""),
            (entry("x/y", EntryKind::File, 1), b"y"),
        ],
    );
    let l2 = layer(
        &store,
        &[
            (entry("a/b", EntryKind::File, 3), b"new"),
            (entry("a/c", EntryKind::Whiteout, 0), b""),
            (entry("d", EntryKind::Opaque, 0), b""),
            (entry("d/f", EntryKind::File, 1), b"f"),
            (entry("x", EntryKind::File, 1), b"!"),
        ],
    );
    let image = image_of(&[l1, l2]);
    store
        .tag(&image, &ImageName::parse("flat:1").unwrap())
        .unwrap();
    validate(&image, &store).unwrap();
    let out = flatten(&image, &store, Vec::new(), &Progress::hidden()).unwrap();
    let mut files = BTreeMap::new();
    nbrt_oci::layer::reader::for_each_entry(&out[..], |e, data| {
        let mut s = String::new();
        std::io::Read::read_to_string(data, &mut s).unwrap();
        files.insert(e.path.clone(), s);
        Ok(())
    })
    .unwrap();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["a", "a/b", "d", "d/f", "x"]);
    assert_eq!(files["a/b"], "new");
    assert_eq!(files["x"], "!");
}

#[test]
fn a_blob_that_does_not_match_is_refused_and_the_store_is_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let info = layer(&store, &[(entry("f", EntryKind::File, 2), b"hi")]);
    let before = blob_names(tmp.path());
    let mut desc = info.descriptor();
    desc.digest = nbrt_oci::Digest::of_bytes(b"something else");
    let err = store.put_blob(&desc, &mut &b"whatever"[..]).unwrap_err();
    assert!(
        matches!(
            err,
            OciError::SizeMismatch { .. } | OciError::DigestMismatch { .. }
        ),
        "{err}"
    );
    let mut desc = info.descriptor();
    desc.digest = nbrt_oci::Digest::of_bytes(b"12345678");
    desc.size = 8;
    let err = store.put_blob(&desc, &mut &b"87654321"[..]).unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert_eq!(blob_names(tmp.path()), before);
    assert!(
        fs::read_dir(tmp.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "temporary file left"
    );
}

#[test]
fn a_tampered_layout_imports_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Store::open(tmp.path().join("src")).unwrap();
    let l1 = layer(&src, &[(entry("one", EntryKind::File, 1), b"1")]);
    let l2 = layer(&src, &[(entry("two", EntryKind::File, 1), b"2")]);
    let image = image_of(&[l1, l2.clone()]);
    let name = ImageName::parse("t:1").unwrap();
    copy_image(
        &image,
        &src,
        &mut src.sink(vec![name.clone()]),
        &Progress::hidden(),
    )
    .unwrap();
    // Our store is an OCI layout: corrupt its second layer and import it elsewhere.
    let blob = tmp.path().join("src/blobs/sha256").join(l2.digest.hex());
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    let dst_root = tmp.path().join("dst");
    let dst = Store::open(&dst_root).unwrap();
    let before = blob_names(&dst_root);
    let opts = ImportOptions {
        names: vec![name.clone()],
        select: Some("t:1".into()),
        ..Default::default()
    };
    let err = import(&dst, &tmp.path().join("src"), &opts, &Progress::hidden()).unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    assert_eq!(
        blob_names(&dst_root),
        before,
        "the first layer was left behind"
    );
    assert!(dst.list().unwrap().is_empty());
}

#[test]
fn a_docker_archive_whose_layer_lies_imports_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let layer_tar = raw_tar(&[file("hello", b"world")]);
    let fake_diff = nbrt_oci::Digest::of_bytes(b"not the layer");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{fake_diff}"]}}}}"#
    );
    let config_digest = nbrt_oci::Digest::of_bytes(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["liar:1"],"Layers":["l/layer.tar"]}}]"#,
        config_digest.hex()
    );
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        (
            format!("{}.json", config_digest.hex()),
            config.as_bytes().to_vec(),
        ),
        ("l/layer.tar".to_string(), layer_tar),
        ("manifest.json".to_string(), manifest.into_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let archive = tmp.path().join("liar.tar");
    fs::File::create(&archive)
        .unwrap()
        .write_all(&b.into_inner().unwrap())
        .unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    let err = import(
        &store,
        &archive,
        &ImportOptions::default(),
        &Progress::hidden(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    assert!(blob_names(&root).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn a_hostile_rootfs_tar_imports_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root).unwrap();
    for (i, members) in [
        vec![file("ok", b"1"), file("../escape", b"x")],
        vec![file("/etc/passwd", b"x")],
        vec![symlink("l", "../../..")],
        vec![hardlink("h", "../x")],
    ]
    .iter()
    .enumerate()
    {
        let path = tmp.path().join(format!("hostile{i}.tar"));
        fs::write(&path, raw_tar(members)).unwrap();
        let opts = ImportOptions {
            names: vec![ImageName::parse("h:1").unwrap()],
            ..Default::default()
        };
        let err = import(&store, &path, &opts, &Progress::hidden()).unwrap_err();
        assert!(matches!(err, OciError::UnsafeEntry { .. }), "{err}");
    }
    assert!(blob_names(&root).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn gc_keeps_what_names_use_and_removes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let shared = layer(&store, &[(entry("s", EntryKind::File, 1), b"s")]);
    let only_a = layer(&store, &[(entry("a", EntryKind::File, 1), b"a")]);
    let only_b = layer(&store, &[(entry("b", EntryKind::File, 1), b"b")]);
    let a = image_of(&[shared.clone(), only_a.clone()]);
    let b = image_of(&[shared.clone(), only_b.clone()]);
    store.tag(&a, &ImageName::parse("a:1").unwrap()).unwrap();
    store.tag(&b, &ImageName::parse("b:1").unwrap()).unwrap();
    assert_eq!(store.gc().unwrap().blobs_removed, 0);
    store.untag(&ImageName::parse("a:1").unwrap()).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(
        report.blobs_removed, 3,
        "a's own layer, config and manifest"
    );
    assert!(store.has_blob(&shared.digest));
    assert!(!store.has_blob(&only_a.digest));
    validate(&b, &store).unwrap();

    // A reference (the build cache's kind of owner) keeps a blob no name uses.
    let cached = layer(&store, &[(entry("c", EntryKind::File, 1), b"c")]);
    struct BuildCache;
    impl RefKind for BuildCache {
        const NAME: &'static str = "build-cache";
        type Payload = serde_json::Value;
    }
    struct Escaping;
    impl RefKind for Escaping {
        const NAME: &'static str = "../x";
        type Payload = serde_json::Value;
    }
    let payload = serde_json::json!({"step": "pip"});
    store
        .put_ref::<BuildCache>("k1", std::slice::from_ref(&cached.digest), &payload)
        .unwrap();
    assert_eq!(store.gc().unwrap().blobs_removed, 0);
    assert_eq!(store.get_ref::<BuildCache>("k1").unwrap(), Some(payload));
    assert!(store
        .put_ref::<Escaping>("k", &[], &serde_json::Value::Null)
        .is_err());
    store.clear_refs::<BuildCache>().unwrap();
    assert_eq!(store.gc().unwrap().blobs_removed, 1);
    assert_eq!(store.get_ref::<BuildCache>("k1").unwrap(), None);
}

/// A pinned image (a site's registered runtime) outlives its names: `gc` keeps it after its
/// tag moves to another image, `resolve` still finds it by ID, and the pin says who holds it.
#[test]
fn gc_keeps_pinned_images_after_their_names_move() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let old_layer = layer(&store, &[(entry("v1", EntryKind::File, 1), b"1")]);
    let new_layer = layer(&store, &[(entry("v2", EntryKind::File, 1), b"2")]);
    let old = image_of(std::slice::from_ref(&old_layer));
    let new = image_of(std::slice::from_ref(&new_layer));
    let latest = ImageName::parse("py:latest").unwrap();
    store.tag(&old, &latest).unwrap();
    store
        .pin("site-abc-rt1", &old, "runtime \"py\" of a site")
        .unwrap();
    // `nbrt build` moves the tag: the old image has no name left.
    store.tag(&new, &latest).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.blobs_removed, report.pins), (0, 1));
    validate(&old, &store).unwrap();
    let found = store.resolve(&old.id().to_string()).unwrap();
    assert_eq!(found.image.digest(), old.digest());
    assert!(found.names.is_empty());
    let pins = store.pins_of(&old).unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(
        (pins[0].key.as_str(), pins[0].holder.as_str()),
        ("site-abc-rt1", "runtime \"py\" of a site")
    );
    assert!(store.pins_of(&new).unwrap().is_empty());
    // A pin key cannot leave pins/.
    assert!(store.pin("../x", &old, "h").is_err());
    // Unpinned, the nameless image goes.
    assert!(store.unpin("site-abc-rt1").unwrap());
    assert!(!store.unpin("site-abc-rt1").unwrap());
    let report = store.gc().unwrap();
    assert_eq!(report.blobs_removed, 3, "its layer, config and manifest");
    assert!(store.resolve(&old.id().to_string()).is_err());
    validate(&new, &store).unwrap();
}

/// A cheap stand-in for the cargo-fuzz target that runs in every test run: thousands of
/// deterministic mutations of a valid layer must never panic the reader, and whatever it
/// accepts must be safe.
#[test]
fn reader_survives_mutated_layers() {
    let seed = raw_tar(&[
        dir("a"),
        file("a/b", b"hello world"),
        symlink("a/l", "b"),
        hardlink("a/h", "a/b"),
        file("a/.wh.gone", b""),
    ]);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..5000 {
        let mut data = seed.clone();
        for _ in 0..(next() % 8 + 1) {
            let i = (next() as usize) % data.len();
            data[i] = next() as u8;
        }
        let _ = nbrt_oci::layer::reader::for_each_entry(&data[..], |e, body| {
            assert!(!e.path.starts_with('/'));
            assert!(!e.path.split('/').any(|c| c == ".."));
            if let EntryKind::Hardlink(t) = &e.kind {
                assert!(!t.starts_with('/') && !t.split('/').any(|c| c == ".."));
            }
            std::io::copy(body, &mut std::io::sink()).ok();
            Ok(())
        });
    }
}

/// One image ID, two manifests (the same config and layers, the manifests differing as they
/// do when a layer was compressed on another machine): the ID finds one of them, the named
/// one first, where it used to be "matches 2 images; give more digits" for a full ID.
#[test]
fn an_id_shared_by_two_manifests_finds_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let l = layer(&store, &[(entry("f", EntryKind::File, 1), b"f")]);
    let first = image_of(std::slice::from_ref(&l));
    let second = Image::assemble(
        first.config.value().clone(),
        vec![l.descriptor()],
        BTreeMap::from([("org.example.other".to_string(), "manifest".to_string())]),
    )
    .unwrap();
    assert_eq!(first.id(), second.id());
    assert_ne!(first.digest(), second.digest());
    store.pin("unnamed", &first, "a test").unwrap();
    store
        .tag(&second, &ImageName::parse("named:1").unwrap())
        .unwrap();
    let by_id = store.resolve(&first.id().to_string()).unwrap();
    assert_eq!(by_id.image.digest(), second.digest(), "the named one");
    assert_eq!(
        store
            .resolve(&first.digest().to_string())
            .unwrap()
            .image
            .digest(),
        first.digest()
    );
    let other = image_of(&[layer(&store, &[(entry("g", EntryKind::File, 1), b"g")])]);
    store
        .tag(&other, &ImageName::parse("other:1").unwrap())
        .unwrap();
    // A short prefix still finds the one image it names.
    let short = &other.id().hex()[..12];
    assert_eq!(store.resolve(short).unwrap().image.id(), other.id());
}
