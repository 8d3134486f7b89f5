//! A step's own tree kept as the snapshot of its layer is what unpacking the layer gives:
//! the same entries, owners, modes, whole-second (clamped) times, contents, whiteouts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nbrt_build::layer_dir::{layer_from_dir, DirLayerOptions};
use nbrt_build::snapshot::Snapshots;
use nbrt_oci::spec::Descriptor;
use nbrt_oci::Store;

type Listing = BTreeMap<String, (u32, u32, u32, i64, Vec<u8>)>;

fn listing(root: &Path) -> Listing {
    fn walk(root: &Path, dir: &Path, out: &mut Listing) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // A whiteout's own time is never seen through the overlay (unpacking leaves it
            // at the time of unpacking).
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            let mtime = if whiteout { 0 } else { m.mtime() };
            out.insert(rel, (m.mode(), m.uid(), m.gid(), mtime, content));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Listing::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn an_adopted_tree_equals_the_unpacked_layer() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            nbrt_testkit::skipping_allowed(),
            "whiteouts and owners need root; run the tests as root"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let tree = tmp.path().join("tree");
    let site = tree.join("opt/conda/lib/python3.11/site-packages");
    fs::create_dir_all(site.join("pkg/__pycache__")).unwrap();
    fs::write(site.join("pkg/__init__.py"), "x = 1\n").unwrap();
    fs::write(
        site.join("pkg/__pycache__/__init__.cpython-311.pyc"),
        [1, 2, 3],
    )
    .unwrap();
    fs::create_dir_all(tree.join("opt/conda/bin")).unwrap();
    fs::write(tree.join("opt/conda/bin/tool"), "#!/opt/conda/bin/python\n").unwrap();
    fs::set_permissions(
        tree.join("opt/conda/bin/tool"),
        fs::Permissions::from_mode(0o775),
    )
    .unwrap();
    symlink("tool", tree.join("opt/conda/bin/tool2")).unwrap();
    // A whiteout in overlay form: a replaced distribution's file.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        site.join("old.py"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::empty(),
        0,
    )
    .unwrap();
    for p in [tree.join("opt"), site.join("pkg/__init__.py")] {
        std::os::unix::fs::lchown(&p, Some(1000), Some(100)).unwrap();
    }
    let clamp = Some(1_700_000_000);
    let info = layer_from_dir(
        &store,
        &tree,
        &DirLayerOptions {
            overlay_upper: true,
            clamp_mtime: clamp,
            ..Default::default()
        },
    )
    .unwrap();
    let desc: Descriptor = info.descriptor();

    let unpacked = Snapshots::open_at(tmp.path().join("unpacked")).unwrap();
    let from_blob = unpacked.ensure(&store, &desc, &info.diff_id).unwrap();
    let adopted = Snapshots::open_at(tmp.path().join("adopted")).unwrap();
    adopted.adopt(&info.diff_id, &tree, clamp).unwrap();
    assert!(!tree.exists(), "the tree moved");
    let kept = adopted.path(&info.diff_id);
    assert_eq!(listing(&kept), listing(&from_blob));
    assert_eq!(
        fs::symlink_metadata(&kept).unwrap().mode(),
        fs::symlink_metadata(&from_blob).unwrap().mode()
    );
}
