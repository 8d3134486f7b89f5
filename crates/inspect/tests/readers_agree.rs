//! Every reader of a layer stack sees the same tree (issue 17, items 1 and 7): the rootfs
//! export (`layer::flatten`) extracted by GNU tar, the builder's merged view over its
//! unpacked snapshots, the inspector's index, and (for one stack) layers applied one after
//! the other to a directory. Layers are tar files the tests write with the `tar` crate.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use nbrt_build::snapshot::{MergedView, Snapshots};
use nbrt_inspect::index::{Kind, LayerIndex};
use nbrt_inspect::View;
use nbrt_oci::fsview::{FileKind, FileView};
use nbrt_oci::image::Image;
use nbrt_oci::layer::apply::{apply_layer, ApplyOptions, WhiteoutMode};
use nbrt_oci::layer::flatten::flatten;
use nbrt_oci::spec::{media, Descriptor, ImageConfig, RootFs};
use nbrt_oci::transfer::{export, ExportFormat};
use nbrt_oci::{Digest, Progress, Store};
use proptest::prelude::*;

/// One member of a test layer.
#[derive(Debug, Clone)]
enum M {
    Dir(&'static str),
    File(&'static str, &'static [u8], u32),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
    Whiteout(&'static str),
    Opaque(&'static str),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

fn whiteout_name(path: &str, base_name: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, base)) => format!("{dir}/{base_name}{base}"),
        None => format!("{base_name}{path}"),
    }
}

/// A layer tar made with the tar crate (it writes duplicates and any link as asked).
fn layer_tar(members: &[M]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for m in members {
        match m {
            M::Dir(p) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, format!("{p}/"), &[][..]).unwrap();
            }
            M::File(p, data, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            M::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            M::Hardlink(p, t) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            M::Whiteout(p) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, whiteout_name(p, ".wh."), &[][..])
                    .unwrap();
            }
            M::Opaque(p) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                b.append_data(&mut h, format!("{p}/.wh..wh..opq"), &[][..])
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Layers (bottom first) as an image in `store`.
fn image(store: &Store, layers: &[Vec<u8>]) -> Image {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for bytes in layers {
        let digest = Digest::of_bytes(bytes);
        let desc = Descriptor::new(media::OCI_LAYER, digest.clone(), bytes.len() as u64);
        store.put_blob(&desc, &mut &bytes[..]).unwrap();
        descs.push(desc);
        diff_ids.push(digest);
    }
    let config = ImageConfig {
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        ..Default::default()
    };
    Image::assemble(config, descs, BTreeMap::new()).unwrap()
}

/// What a reader sees at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Dir,
    File { content: Vec<u8>, mode: u32 },
    Symlink(String),
    Other,
}

type Tree = BTreeMap<String, Seen>;

/// Every path's ancestors are directories (a tar or an index may leave them implied).
fn with_implied_dirs(mut tree: Tree) -> Tree {
    let paths: Vec<String> = tree.keys().cloned().collect();
    for p in paths {
        for (i, _) in p.match_indices('/') {
            tree.entry(p[..i].to_string()).or_insert(Seen::Dir);
        }
    }
    tree
}

/// The rootfs export extracted by GNU tar; `Err` when the export or tar refuses.
fn through_gnu_tar(store: &Store, image: &Image, work: &Path) -> Result<Tree, String> {
    // `nbrt export --format rootfs` (into a file: most layers read once)...
    let tar_path = work.join("rootfs.tar");
    export(
        store,
        image,
        &[],
        ExportFormat::RootFs,
        &tar_path,
        &Progress::hidden(),
    )
    .map_err(|e| e.to_string())?;
    // ...says what flattening into a stream (every layer read twice) says.
    let flat = flatten(image, store, Vec::new(), &Progress::hidden()).map_err(|e| e.to_string())?;
    assert_eq!(
        fs::read(&tar_path).unwrap(),
        flat,
        "the rootfs export and the streamed flatten differ"
    );
    let root = work.join("gnu-tar");
    fs::create_dir_all(&root).unwrap();
    let out = Command::new("tar")
        .arg("-xpf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&root)
        .output()
        .expect("running GNU tar");
    assert!(
        out.status.success(),
        "GNU tar refused the rootfs export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tree = Tree::new();
    walk_dir(&root, "", &mut tree);
    Ok(tree)
}

fn walk_dir(root: &Path, rel: &str, tree: &mut Tree) {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(e.path()).unwrap();
        let seen = if meta.is_dir() {
            walk_dir(root, &path, tree);
            Seen::Dir
        } else if meta.file_type().is_symlink() {
            Seen::Symlink(
                fs::read_link(e.path())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        } else if meta.is_file() {
            Seen::File {
                content: fs::read(e.path()).unwrap(),
                mode: meta.mode() & 0o7777,
            }
        } else {
            Seen::Other
        };
        tree.insert(path, seen);
    }
}

/// The builder's merged view over its snapshots of the layers.
fn through_builder(store: &Store, image: &Image, work: &Path) -> Result<Tree, String> {
    let snaps = Snapshots::open_at(work.join("snapshots")).unwrap();
    let lowers = snaps.lowers(store, image).map_err(|e| e.to_string())?;
    let view = MergedView::new(lowers);
    let mut tree = Tree::new();
    walk_view(&view, "", &mut tree);
    Ok(tree)
}

fn walk_view(view: &MergedView, rel: &str, tree: &mut Tree) {
    let names = FileView::read_dir(view, rel).unwrap().unwrap_or_default();
    for name in names {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let info = FileView::metadata(view, &path, false).unwrap().unwrap();
        let seen = match info.kind {
            FileKind::Dir => {
                walk_view(view, &path, tree);
                Seen::Dir
            }
            FileKind::Symlink => Seen::Symlink(info.link.clone().unwrap_or_default()),
            FileKind::File => Seen::File {
                content: FileView::read(view, &path).unwrap().unwrap(),
                mode: info.mode,
            },
            _ => Seen::Other,
        };
        tree.insert(path, seen);
    }
}

/// The inspector's view of its layer indexes. Contents are compared by digest, so the
/// files the tree holds are digests here and in the others.
fn through_inspect(store: &Store, image: &Image) -> Result<Tree, String> {
    let mut indexes = Vec::new();
    for (l, d) in image.layers().iter().zip(image.diff_ids()) {
        indexes.push(LayerIndex::read(store, l, d).map_err(|e| e.to_string())?);
    }
    let view = View::merge(&indexes);
    let mut tree = Tree::new();
    for (path, located) in view.entries() {
        let m = &located.meta;
        let seen = match m.kind {
            Kind::Dir => Seen::Dir,
            Kind::File | Kind::Hardlink => Seen::File {
                content: m.digest.clone().unwrap_or_default().into_bytes(),
                mode: m.mode,
            },
            Kind::Symlink => Seen::Symlink(m.link.clone().unwrap_or_default()),
            _ => Seen::Other,
        };
        tree.insert(path.to_string(), seen);
    }
    Ok(with_implied_dirs(tree))
}

/// Layers applied one after the other to one directory (whiteouts deleting).
fn through_apply(layers: &[Vec<u8>], work: &Path) -> Result<Tree, String> {
    let root = work.join("applied");
    fs::create_dir_all(&root).unwrap();
    for l in layers {
        apply_layer(
            &root,
            &l[..],
            ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
                chown: true,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let mut tree = Tree::new();
    walk_dir(&root, "", &mut tree);
    Ok(tree)
}

/// File contents as digests (what the index keeps).
fn by_digest(tree: Tree) -> Tree {
    tree.into_iter()
        .map(|(p, s)| {
            let s = match s {
                Seen::File { content, mode } => Seen::File {
                    content: Digest::of_bytes(&content).hex().to_string().into_bytes(),
                    mode,
                },
                s => s,
            };
            (p, s)
        })
        .collect()
}

struct Readers {
    gnu_tar: Result<Tree, String>,
    builder: Result<Tree, String>,
    inspect: Result<Tree, String>,
}

fn read_all(layers: &[Vec<u8>]) -> Readers {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let image = image(&store, layers);
    Readers {
        gnu_tar: through_gnu_tar(&store, &image, tmp.path()).map(by_digest),
        builder: through_builder(&store, &image, tmp.path()).map(by_digest),
        inspect: through_inspect(&store, &image),
    }
}

fn assert_agree(layers: &[Vec<u8>]) -> Result<Tree, String> {
    let r = read_all(layers);
    match (&r.gnu_tar, &r.builder, &r.inspect) {
        (Ok(t), Ok(b), Ok(i)) => {
            assert_eq!(t, b, "GNU tar (rootfs export) and the builder disagree");
            assert_eq!(t, i, "GNU tar (rootfs export) and the inspector disagree");
            Ok(t.clone())
        }
        (Err(t), Err(b), Err(i)) => Err(format!("{t}\n{b}\n{i}")),
        _ => panic!(
            "one reader refused the layers and another did not: rootfs export {:?}, builder \
             {:?}, inspect {:?}",
            r.gnu_tar.as_ref().err(),
            r.builder.as_ref().err(),
            r.inspect.as_ref().err()
        ),
    }
}

const PASSWD: &[u8] =
    b"root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n";
const PASSWD_EVIL: &[u8] = b"root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\nbackdoor:x:0:0::/:/bin/sh\n";

/// Item 1: a layer with `etc/passwd` twice (the second adding a uid-0 user) and a file then
/// the same file with mode 4755: every reader sees the last entry.
#[test]
fn duplicate_entries_the_last_one_wins_in_every_reader() {
    let base = layer_tar(&[
        M::Dir("etc"),
        M::Dir("usr"),
        M::Dir("usr/bin"),
        M::File("usr/bin/sh", b"shell", 0o755),
    ]);
    let dup = layer_tar(&[
        M::Dir("etc"),
        M::File("etc/passwd", PASSWD, 0o644),
        M::File("usr/bin/helper", b"helper", 0o755),
        M::File("etc/passwd", PASSWD_EVIL, 0o644),
        M::File("usr/bin/helper", b"helper", 0o4755),
    ]);
    let layers = [base, dup];
    let tree = assert_agree(&layers).expect("a layer with duplicates is read");
    let passwd = Seen::File {
        content: Digest::of_bytes(PASSWD_EVIL).hex().to_string().into_bytes(),
        mode: 0o644,
    };
    assert_eq!(tree.get("etc/passwd"), Some(&passwd));
    let helper = Seen::File {
        content: Digest::of_bytes(b"helper").hex().to_string().into_bytes(),
        mode: 0o4755,
    };
    assert_eq!(tree.get("usr/bin/helper"), Some(&helper));
    // Layers applied to one directory (as `nbrt` unpacks a root) say the same.
    let tmp = tempfile::tempdir().unwrap();
    let applied = by_digest(through_apply(&layers, tmp.path()).unwrap());
    assert_eq!(applied, tree);

    // What the inspector reads from the file (its captured passwd) is the last one too.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let img = image(&store, &layers);
    let index = LayerIndex::read(&store, &img.layers()[1], &img.diff_ids()[1]).unwrap();
    assert!(index.captured["etc/passwd"].contains("backdoor:x:0:0"));
    let passwds = index
        .entries
        .iter()
        .filter(|e| e.path == "etc/passwd")
        .count();
    assert_eq!(passwds, 1, "the index keeps the last entry only");
}

/// Layers are indexed side by side (biggest first) and an image may hold one layer twice:
/// the view still stacks them in the image's order, the repeated layer read once.
#[test]
fn a_layer_held_twice_and_read_in_parallel_stays_in_its_place() {
    let a = layer_tar(&[M::Dir("etc"), M::File("etc/which", b"a", 0o644)]);
    let b = layer_tar(&[
        M::Dir("etc"),
        M::File("etc/which", b"b", 0o644),
        M::File("etc/big", &[7; 64 << 10], 0o644),
    ]);
    let c = layer_tar(&[M::Dir("etc"), M::Whiteout("etc/big")]);
    let layers = [a.clone(), b, c, a];
    let tree = assert_agree(&layers).expect("the stack is read");
    let top = Seen::File {
        content: Digest::of_bytes(b"a").hex().to_string().into_bytes(),
        mode: 0o644,
    };
    assert_eq!(tree.get("etc/which"), Some(&top));
    assert_eq!(tree.get("etc/big"), None);
}

/// Item 7: stacks GNU tar refused or that differed from the builder before.
#[test]
fn rootfs_export_is_a_tree_tar_accepts_and_the_builder_agrees_with() {
    // A child under a path that a lower layer made a symlink.
    let l1 = layer_tar(&[M::Dir("b"), M::Symlink("a", "b")]);
    let l2 = layer_tar(&[M::File("a/x", b"x", 0o644)]);
    let t = assert_agree(&[l1, l2]).unwrap();
    assert_eq!(t.get("a"), Some(&Seen::Dir));
    assert!(t.contains_key("a/x") && !t.contains_key("b/x"));

    // A hard link whose target an upper layer replaces: the link keeps the old contents.
    let l1 = layer_tar(&[
        M::File("t", b"old", 0o644),
        M::Hardlink("h1", "t"),
        M::Hardlink("h2", "t"),
    ]);
    let l2 = layer_tar(&[M::File("t", b"new", 0o644)]);
    let t = assert_agree(&[l1, l2]).unwrap();
    let old = Digest::of_bytes(b"old").hex().to_string().into_bytes();
    assert!(matches!(t.get("h1"), Some(Seen::File { content, .. }) if *content == old));
    assert!(matches!(t.get("h2"), Some(Seen::File { content, .. }) if *content == old));

    // A hard link whose target a whiteout of an upper layer hides.
    let l1 = layer_tar(&[M::File("t", b"old", 0o644), M::Hardlink("h", "t")]);
    let l2 = layer_tar(&[M::Whiteout("t")]);
    let t = assert_agree(&[l1, l2]).unwrap();
    assert!(!t.contains_key("t") && t.contains_key("h"));

    // Refused by every reader: a hard link ahead of its target, to a missing target, to a
    // directory, to a lower layer's file; a write through a same-layer symlink; replacing a
    // hard link's target.
    for (what, layers) in [
        (
            "link ahead of its target",
            vec![layer_tar(&[
                M::Hardlink("h", "t"),
                M::File("t", b"t", 0o644),
            ])],
        ),
        (
            "link to a missing target",
            vec![layer_tar(&[M::Hardlink("h", "nothing")])],
        ),
        (
            "link to a directory",
            vec![layer_tar(&[M::Dir("d"), M::Hardlink("h", "d")])],
        ),
        (
            "link to a lower layer",
            vec![
                layer_tar(&[M::File("t", b"t", 0o644)]),
                layer_tar(&[M::Hardlink("h", "t")]),
            ],
        ),
        (
            "write through a same-layer symlink",
            vec![layer_tar(&[
                M::Dir("etc"),
                M::Symlink("l", "etc"),
                M::File("l/passwd", PASSWD_EVIL, 0o644),
            ])],
        ),
        (
            "child under a same-layer file",
            vec![layer_tar(&[
                M::File("f", b"f", 0o644),
                M::File("f/x", b"x", 0o644),
            ])],
        ),
        (
            "replacing a link target",
            vec![layer_tar(&[
                M::File("t", b"1", 0o644),
                M::Hardlink("h", "t"),
                M::File("t", b"2", 0o644),
            ])],
        ),
    ] {
        let err = assert_agree(&layers).expect_err(what);
        assert!(err.contains("unsafe layer entry"), "{what}: {err}");
    }

    // Last wins across kinds: a directory replaced by a file drops what was under it; a
    // file replaced by a directory.
    let l = layer_tar(&[
        M::Dir("d"),
        M::File("d/x", b"x", 0o644),
        M::File("d", b"now a file", 0o644),
        M::File("e", b"a file", 0o644),
        M::Dir("e"),
        M::File("e/y", b"y", 0o644),
    ]);
    let t = assert_agree(&[l]).unwrap();
    assert!(matches!(t.get("d"), Some(Seen::File { .. })));
    assert!(!t.contains_key("d/x"));
    assert_eq!(t.get("e"), Some(&Seen::Dir));

    // A whiteout never removes its own layer's entry, wherever it comes.
    let l1 = layer_tar(&[M::Dir("d"), M::File("d/old", b"o", 0o644)]);
    let l2 = layer_tar(&[
        M::File("f", b"f", 0o644),
        M::Whiteout("f"),
        M::Dir("d"),
        M::File("d/new", b"n", 0o644),
        M::Whiteout("d"),
    ]);
    let t = assert_agree(&[l1, l2]).unwrap();
    assert!(t.contains_key("f") && t.contains_key("d/new") && !t.contains_key("d/old"));
}

// ---- property: random small stacks ----

const NAMES: &[&str] = &["a", "b", "a/x", "a/y", "b/z", "a/x/q"];
const TARGETS: &[&str] = &["b", "a/x", "/a", "x", "/a/x/q"];
const DATA: &[&[u8]] = &[b"one", b"two", b""];
const MODES: &[u32] = &[0o644, 0o755, 0o4755];

fn member() -> impl Strategy<Value = M> {
    let name = || prop::sample::select(NAMES);
    prop_oneof![
        3 => name().prop_map(M::Dir),
        4 => (name(), prop::sample::select(DATA), prop::sample::select(MODES))
            .prop_map(|(n, d, m)| M::File(n, d, m)),
        2 => (name(), prop::sample::select(TARGETS)).prop_map(|(n, t)| M::Symlink(n, t)),
        2 => (name(), name()).prop_map(|(n, t)| M::Hardlink(n, t)),
        2 => name().prop_map(M::Whiteout),
        1 => name().prop_map(M::Opaque),
    ]
}

/// Hard links mostly point at what is now a file earlier in their layer (a random target
/// would make nearly every layer one the rules refuse).
fn retarget_links(members: Vec<M>) -> Vec<M> {
    // The kind of each path so far (true: a file).
    let mut now: Vec<(&'static str, bool)> = Vec::new();
    let is_file = |now: &Vec<(&'static str, bool)>, p: &str| {
        now.iter()
            .rev()
            .find(|(q, _)| *q == p)
            .is_some_and(|(_, f)| *f)
    };
    let mut out = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        let m = match m {
            M::Hardlink(p, t) if !is_file(&now, t) && i % 4 != 3 => {
                let files: Vec<&'static str> = now
                    .iter()
                    .rev()
                    .map(|(q, _)| *q)
                    .filter(|q| *q != p && is_file(&now, q))
                    .collect();
                match files.first() {
                    Some(target) => M::Hardlink(p, target),
                    None => continue,
                }
            }
            m => m,
        };
        match &m {
            M::File(p, ..) => now.push((p, true)),
            M::Dir(p) | M::Symlink(p, _) | M::Hardlink(p, _) => now.push((p, false)),
            _ => {}
        }
        out.push(m);
    }
    out
}

proptest! {
    // PROPTEST_CASES=<n> runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_stacks_read_the_same_everywhere(
        stack in prop::collection::vec(prop::collection::vec(member(), 1..7), 1..4)
    ) {
        let layers: Vec<Vec<u8>> = stack
            .into_iter()
            .map(|members| layer_tar(&retarget_links(members)))
            .collect();
        // Agreement (or every reader refusing) is asserted inside.
        let _ = assert_agree(&layers);
    }
}
