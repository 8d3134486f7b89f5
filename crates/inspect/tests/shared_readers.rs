//! The shared fact readers of `nbrt_oci::facts` give the same answer on the builder's view of
//! an image (its layers unpacked into snapshot directories, merged by `MergedView`) and on
//! the inspector's (its layer indexes, merged by `View`), for one image made by hand with
//! what makes them differ if anything does: dpkg states other than installed, a whited-out
//! conda record and dist-info, an opaque directory, a whiteout and a new directory of one
//! name in one layer, a directory replaced by a file, a file between two directories, and
//! symlinks. And the lock's Debian packages agree with the manifest's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use nbrt_build::builder::step_lock;
use nbrt_build::lock::StepLock;
use nbrt_build::runtime_file::RuntimeFile;
use nbrt_build::snapshot::{MergedView, Snapshots};
use nbrt_build::steps::Step;
use nbrt_inspect::packages::Source;
use nbrt_inspect::View;
use nbrt_oci::facts::{conda_meta, dist_info, dpkg, passwd};
use nbrt_oci::fsview::{FileKind, FileView, FsViewError};
use nbrt_oci::layer::{Compression, Entry, EntryKind, LayerInfo, LayerWriter};
use nbrt_oci::spec::{ContainerConfig, ImageConfig, RootFs};
use nbrt_oci::{Image, Progress, Store};

const SITE: &str = "opt/conda/lib/python3.11/site-packages";

const STATUS: &str = "Package: bash\nStatus: install ok installed\nPriority: required\n\
Version: 5.2.15-2+b7\nArchitecture: amd64\nDescription: GNU Bourne Again SHell\n Bash is an \
sh-compatible command language interpreter.\n .\n Package: not-a-field\n\n\
Package: halfway\nStatus: install reinstreq half-installed\nVersion: 1.0-1\nArchitecture: amd64\n\
Source: halfway-src (1.0)\n\n\
Package: removed\nStatus: deinstall ok config-files\nVersion: 2.0-1\nArchitecture: amd64\n\n\
Package: purged\nStatus: purge ok not-installed\nArchitecture: amd64\n\n\
Package: unpacked\nStatus: install ok unpacked\nVersion: 3.0\nArchitecture: all\n\n\
Package: tzdata\nStatus: hold ok installed\nVersion: 2024a-0+deb12u1\nArchitecture: all\n";

fn conda_record(name: &str, version: &str, build: &str) -> String {
    format!(
        r#"{{"name":"{name}","version":"{version}","build":"{build}","build_number":0,
"channel":"https://conda.anaconda.org/conda-forge/linux-64","subdir":"linux-64",
"url":"https://conda.anaconda.org/conda-forge/linux-64/{name}-{version}-{build}.conda",
"sha256":"{}","md5":"{}","license":"BSD-3-Clause",
"files":["lib/lib{name}.so"],"paths_data":{{"paths":[]}},"depends":["python >=3.11"]}}"#,
        "ab".repeat(32),
        "cd".repeat(16)
    )
}

enum E {
    Dir(&'static str),
    File(String, String),
    Link(&'static str, &'static str),
    Whiteout(&'static str),
    Opaque(&'static str),
}

fn file(path: impl Into<String>, text: impl Into<String>) -> E {
    E::File(path.into(), text.into())
}

fn layer(store: &Store, entries: &[E]) -> LayerInfo {
    let mut w = LayerWriter::new(store.new_blob().unwrap(), Compression::Gzip, None).unwrap();
    for e in entries {
        let (path, kind, mode, data): (&str, EntryKind, u32, &[u8]) = match e {
            E::Dir(p) => (p, EntryKind::Dir, 0o755, b""),
            E::File(p, t) => (p, EntryKind::File, 0o644, t.as_bytes()),
            E::Link(p, t) => (p, EntryKind::Symlink(t.to_string()), 0o777, b""),
            E::Whiteout(p) => (p, EntryKind::Whiteout, 0, b""),
            E::Opaque(p) => (p, EntryKind::Opaque, 0, b""),
        };
        let entry = Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1,
            size: data.len() as u64,
            xattrs: vec![],
        };
        w.append(&entry, &mut &data[..]).unwrap();
    }
    let (info, blob) = w.finish().unwrap();
    blob.commit().unwrap();
    info
}

fn site(rel: &str) -> String {
    format!("{SITE}/{rel}")
}

/// A three-layer image: the base, a middle layer and a top one.
fn image(store: &Store) -> Image {
    let bottom = vec![
        E::Dir("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        file("etc/group", "root:x:0:\nusers:x:100:\n"),
        E::Dir("var"),
        E::Dir("var/lib"),
        E::Dir("var/lib/dpkg"),
        file("var/lib/dpkg/status", STATUS),
        E::Dir("var/lib/dpkg/status.d"),
        file(
            "var/lib/dpkg/status.d/base-files",
            "Package: base-files\nVersion: 12.4+deb12u5\nArchitecture: amd64\n",
        ),
        file(
            "var/lib/dpkg/status.d/base-files.md5sums",
            "0123456789abcdef  etc/debian_version\n",
        ),
        E::Dir("opt"),
        E::Dir("opt/conda"),
        E::Dir("opt/conda/conda-meta"),
        file(
            "opt/conda/conda-meta/numpy-2.0.0-py311_0.json",
            conda_record("numpy", "2.0.0", "py311_0"),
        ),
        file(
            "opt/conda/conda-meta/six-1.16.0-pyh_0.json",
            conda_record("six", "1.16.0", "pyh_0"),
        ),
        file("opt/conda/conda-meta/broken-1-0.json", "{\"name\": "),
        file("opt/conda/conda-meta/history", "==> 2024-01-01 <==\n+numpy\n"),
        E::Dir("opt/conda/lib"),
        E::Dir("opt/conda/lib/python3.11"),
        E::Dir(SITE),
        E::Dir("opt/conda/lib/python3.11/site-packages/requests-2.32.0.dist-info"),
        file(
            site("requests-2.32.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.32.0\nLicense: Apache-2.0\n\n\
             # Requests\nLicense: not a header\n",
        ),
        file(site("requests-2.32.0.dist-info/INSTALLER"), "uv\n"),
        file(
            site("requests-2.32.0.dist-info/WHEEL"),
            "Wheel-Version: 1.0\nGenerator: x\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        file(site("requests-2.32.0.dist-info/RECORD"), "requests/__init__.py,,\n"),
        E::Dir("opt/conda/lib/python3.11/site-packages/old-1.0.dist-info"),
        file(
            site("old-1.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: old\nVersion: 1.0\n",
        ),
        E::Dir("opt/conda/lib/python3.11/site-packages/numpy-2.0.0.dist-info"),
        file(
            site("numpy-2.0.0.dist-info/METADATA"),
            "Metadata-Version: 2.1\nName: numpy\nVersion: 2.0.0\nLicense-Expression: BSD-3-Clause\n",
        ),
        file(site("numpy-2.0.0.dist-info/INSTALLER"), "conda\n"),
        E::Dir("opt/conda/lib/python3.11/site-packages/legacy-0.9-py3.11.egg-info"),
        file(
            site("legacy-0.9-py3.11.egg-info/PKG-INFO"),
            "Metadata-Version: 1.1\nName: legacy\nVersion: 0.9\n",
        ),
        file(
            site("single-0.1.egg-info"),
            "Metadata-Version: 1.0\nName: single\nVersion: 0.1\n",
        ),
        E::Dir("srv"),
        E::Dir("srv/data"),
        file("srv/data/a", "a"),
        file("srv/data/b", "b"),
        E::Dir("opt/tools"),
        file("opt/tools/x", "x"),
        E::Dir("opt/replaced"),
        file("opt/replaced/z", "z"),
        E::Dir("opt/flip"),
        file("opt/flip/x", "x"),
    ];
    let middle = vec![
        E::Dir("opt"),
        // A file between the lower and the upper directory ends the merge of opt/flip.
        file("opt/flip", "a file for a while"),
    ];
    let top = vec![
        E::Dir("etc"),
        file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\njovyan:x:1000:100::/home/jovyan:/bin/bash\n",
        ),
        file("etc/group", "root:x:0:\nusers:x:100:\nstaff:x:50:jovyan\n"),
        E::Dir("opt"),
        E::Link("opt/env", "/opt/conda"),
        E::Dir("opt/conda"),
        E::Dir("opt/conda/conda-meta"),
        E::Whiteout("opt/conda/conda-meta/six-1.16.0-pyh_0.json"),
        file(
            "opt/conda/conda-meta/pandas-2.2.0-py311_0.json",
            conda_record("pandas", "2.2.0", "py311_0"),
        ),
        E::Dir("opt/conda/lib"),
        E::Dir("opt/conda/lib/python3.11"),
        E::Dir(SITE),
        E::Whiteout("opt/conda/lib/python3.11/site-packages/old-1.0.dist-info"),
        E::Dir("srv"),
        E::Dir("srv/data"),
        E::Opaque("srv/data"),
        file("srv/data/c", "c"),
        // A whiteout and a new directory of that name in one layer: a fresh directory.
        E::Whiteout("opt/tools"),
        E::Dir("opt/tools"),
        file("opt/tools/y", "y"),
        file("opt/replaced", "now a file"),
        E::Dir("opt/flip"),
        file("opt/flip/y", "y"),
    ];
    let layers = [
        layer(store, &bottom),
        layer(store, &middle),
        layer(store, &top),
    ];
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(ContainerConfig {
            user: Some("jovyan".into()),
            ..Default::default()
        }),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        ..Default::default()
    };
    let image = Image::assemble(
        config,
        layers.iter().map(|l| l.descriptor()).collect(),
        BTreeMap::new(),
    )
    .unwrap();
    store
        .tag(
            &image,
            &nbrt_oci::ImageName::parse("shared-readers:1").unwrap(),
        )
        .unwrap();
    nbrt_oci::validate(&image, store).unwrap();
    image
}

struct Views {
    tmp: tempfile::TempDir,
    store: Store,
    image: Image,
    snapshots: Snapshots,
    merged: MergedView,
    index: View,
}

/// The image in a new store, and its two views; `None` (after saying why) without root,
/// which unpacking in overlay form needs (whiteout devices, trusted.* attributes).
fn views() -> Option<Views> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: unpacking layers in overlay form needs root");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let image = image(&store);
    let snapshots = Snapshots::open(&store).unwrap();
    let merged = MergedView::new(snapshots.lowers(&store, &image).unwrap());
    let index = View::open(&store, &image, &Progress::hidden()).unwrap();
    Some(Views {
        tmp,
        store,
        image,
        snapshots,
        merged,
        index,
    })
}

#[test]
fn dpkg_reads_the_same_on_both_views() {
    let Some(v) = views() else { return };
    let a = dpkg::installed(&v.merged);
    let b = dpkg::installed(&v.index);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(a.items, b.items);
    let names: Vec<&str> = a.items.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["bash", "halfway", "unpacked", "tzdata", "base-files"]
    );
    assert_eq!(a.items[1].source.as_deref(), Some("halfway-src (1.0)"));
    // Every paragraph, whatever its state, reads the same too.
    assert_eq!(
        dpkg::read_all(&v.merged).into_result().unwrap(),
        dpkg::read_all(&v.index).into_result().unwrap()
    );
}

#[test]
fn conda_meta_reads_the_same_on_both_views() {
    let Some(v) = views() else { return };
    for prefix in ["/opt/conda", "opt/env"] {
        let a = conda_meta::records(&v.merged, prefix);
        let b = conda_meta::records(&v.index, prefix);
        assert_eq!(a.items, b.items, "{prefix}");
        let names: Vec<&str> = a.items.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["numpy", "pandas"], "{prefix}");
        assert_eq!(a.items[0].sha256, Some("ab".repeat(32)));
        assert_eq!(a.items[0].md5, Some("cd".repeat(16)));
        // The malformed record is a problem in both (the index could not keep it).
        assert_eq!((a.problems.len(), b.problems.len()), (1, 1), "{prefix}");
        assert!(matches!(
            b.problems[0],
            nbrt_oci::facts::FactError::View(FsViewError::NotCaptured { .. })
        ));
        assert_eq!(
            conda_meta::record_files(&v.merged, prefix).unwrap(),
            conda_meta::record_files(&v.index, prefix).unwrap()
        );
    }
}

#[test]
fn dist_info_reads_the_same_on_both_views() {
    let Some(v) = views() else { return };
    let a = dist_info::distributions(&v.merged, SITE);
    let b = dist_info::distributions(&v.index, SITE);
    assert!(a.problems.is_empty(), "{:?}", a.problems);
    assert!(b.problems.is_empty(), "{:?}", b.problems);
    assert_eq!(a.items, b.items);
    let entries: Vec<&str> = a.items.iter().map(|d| d.entry.as_str()).collect();
    assert_eq!(
        entries,
        [
            "legacy-0.9-py3.11.egg-info",
            "numpy-2.0.0.dist-info",
            "requests-2.32.0.dist-info",
            "single-0.1.egg-info"
        ]
    );
    let requests = &a.items[2];
    assert_eq!(requests.license.as_deref(), Some("Apache-2.0"));
    assert_eq!(requests.installer.as_deref(), Some("uv"));
    assert_eq!(
        requests.wheel_tags,
        BTreeSet::from(["py3-none-any".to_string()])
    );
    assert_eq!(
        dist_info::python_versions(&v.merged, "/opt/conda").unwrap(),
        dist_info::python_versions(&v.index, "/opt/conda").unwrap()
    );
    assert_eq!(
        dist_info::python_versions(&v.index, "/opt/env").unwrap(),
        [(3, 11)]
    );
}

#[test]
fn passwd_reads_the_same_on_both_views() {
    let Some(v) = views() else { return };
    let users = passwd::read_passwd(&v.merged).unwrap();
    let groups = passwd::read_group(&v.merged).unwrap();
    assert_eq!(users, passwd::read_passwd(&v.index).unwrap());
    assert_eq!(groups, passwd::read_group(&v.index).unwrap());
    assert_eq!(users.len(), 2);
    for spec in ["jovyan", "1000", "1000:100", "jovyan:staff", "", "4242"] {
        assert_eq!(
            passwd::resolve_in(&v.merged, spec).unwrap(),
            passwd::resolve_in(&v.index, spec).unwrap(),
            "{spec:?}"
        );
    }
    let j = passwd::resolve_in(&v.index, "jovyan").unwrap();
    assert_eq!((j.uid, j.gid, j.additional_gids), (1000, 100, vec![50]));
    assert!(passwd::resolve_in(&v.merged, "ghost").is_err());
    // The builder's sandbox resolves the same.
    assert_eq!(
        nbrt_build::sandbox::resolve_user_in(&v.merged, "jovyan").unwrap(),
        passwd::resolve_in(&v.index, "jovyan").unwrap()
    );
}

#[test]
fn the_file_views_merge_the_same() {
    let Some(v) = views() else { return };
    let (m, x) = (&v.merged, &v.index);
    let dirs = [
        "",
        "etc",
        "opt",
        "opt/conda/conda-meta",
        SITE,
        "srv/data",
        "opt/tools",
        "opt/flip",
        "opt/env",
        "var/lib/dpkg/status.d",
    ];
    for d in dirs {
        assert_eq!(
            FileView::read_dir(m, d).unwrap(),
            FileView::read_dir(x, d).unwrap(),
            "{d:?}"
        );
    }
    let names = |d: &str| FileView::read_dir(x, d).unwrap().unwrap();
    assert_eq!(names("srv/data"), ["c"], "opaque directory");
    assert_eq!(names("opt/tools"), ["y"], "whiteout and new directory");
    assert_eq!(names("opt/flip"), ["y"], "a file between two directories");
    assert!(!names(SITE).contains(&"old-1.0.dist-info".to_string()));
    for p in ["opt/replaced", "etc/passwd"] {
        assert!(matches!(
            FileView::read_dir(m, p),
            Err(FsViewError::NotADirectory { .. })
        ));
        assert!(matches!(
            FileView::read_dir(x, p),
            Err(FsViewError::NotADirectory { .. })
        ));
    }
    assert_eq!(FileView::read_dir(m, "nowhere").unwrap(), None);
    assert_eq!(FileView::read_dir(x, "nowhere").unwrap(), None);
    let paths = [
        "etc",
        "etc/passwd",
        "opt/env",
        "opt/env/conda-meta",
        "opt/replaced",
        "opt/replaced/z",
        "opt/tools/x",
        "opt/flip",
        "opt/flip/x",
        "srv/data/a",
        "srv/data/c",
        "opt/conda/conda-meta/six-1.16.0-pyh_0.json",
    ];
    for p in paths {
        for follow in [false, true] {
            let (a, b) = (
                FileView::metadata(m, p, follow).unwrap(),
                FileView::metadata(x, p, follow).unwrap(),
            );
            assert_eq!(a, b, "{p:?} follow={follow}");
        }
    }
    let link = FileView::metadata(x, "opt/env", false).unwrap().unwrap();
    assert_eq!(
        (link.kind, link.link.as_deref()),
        (FileKind::Symlink, Some("/opt/conda"))
    );
    assert_eq!(
        FileView::metadata(x, "opt/replaced", true)
            .unwrap()
            .unwrap()
            .kind,
        FileKind::File
    );
    for p in [
        "/opt/env/../../etc/passwd",
        "etc/group",
        "srv/data/a",
        "nope",
    ] {
        assert_eq!(
            FileView::read(m, p).unwrap(),
            FileView::read(x, p).unwrap(),
            "{p:?}"
        );
    }
    assert!(matches!(
        FileView::read(x, "opt/conda/conda-meta/history"),
        Err(FsViewError::NotCaptured { .. })
    ));
    assert!(matches!(
        FileView::read(m, "etc"),
        Err(FsViewError::IsADirectory { .. })
    ));
    assert!(matches!(
        FileView::read(x, "etc"),
        Err(FsViewError::IsADirectory { .. })
    ));
}

/// The lock's Debian packages (those a bootstrap step locks, read from the builder's view)
/// are the manifest's (read from the layer indexes): a half-installed package is in both, a
/// removed one whose configuration files remain in neither. Before they shared a reader,
/// the lock left the half-installed package out and the manifest listed the removed one.
#[test]
fn the_lock_and_the_manifest_list_the_same_debian_packages() {
    let Some(v) = views() else { return };
    let dir = v.tmp.path().join("rt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runtime.toml");
    let text = "name = \"shared\"\n[bootstrap]\n";
    std::fs::write(&path, text).unwrap();
    let rt = RuntimeFile::parse(text, &path, &dir, Path::new(&dir)).unwrap();
    let step = Step::Bootstrap(rt.bootstrap.clone().unwrap());
    let lock = step_lock(
        &v.store,
        &v.snapshots,
        &rt,
        &step,
        "shared-readers-test",
        v.image.layers(),
        v.image.diff_ids(),
    )
    .unwrap();
    let Some(StepLock::Bootstrap(debs)) = lock else {
        panic!("not a bootstrap lock: {lock:?}")
    };
    let locked: BTreeSet<(String, String, String)> = debs
        .into_iter()
        .map(|d| (d.name, d.version, d.arch))
        .collect();
    let (_, packages) = nbrt_inspect::read_image(&v.store, &v.image, &Progress::hidden()).unwrap();
    let listed: BTreeSet<(String, String, String)> = packages
        .into_iter()
        .filter(|p| p.source == Source::Debian)
        .map(|p| {
            let arch = p.platform.unwrap_or_else(|| "all".into());
            (p.name, p.version, arch)
        })
        .collect();
    assert_eq!(locked, listed);
    let names: BTreeSet<&str> = locked.iter().map(|(n, _, _)| n.as_str()).collect();
    assert!(names.contains("halfway"), "{names:?}");
    assert!(names.contains("unpacked"), "{names:?}");
    assert!(!names.contains("removed"), "{names:?}");
    assert!(!names.contains("purged"), "{names:?}");
}
