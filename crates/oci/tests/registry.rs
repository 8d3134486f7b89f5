//! The registry client against a real Distribution registry (Debian's `docker-registry`),
//! checked with skopeo and with the registry's own request log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use nbrt_oci::layer::{Compression, Entry, EntryKind, LayerWriter};
use nbrt_oci::registry::{self, RegistryOptions};
use nbrt_oci::spec::{media, ContainerConfig, Descriptor, ImageConfig, RootFs};
use nbrt_oci::{validate, Digest, Image, ImageName, OciError, Progress, Store};
use nbrt_testkit::{require, Registry, RegistryConfig};

fn tools_present() -> bool {
    Registry::available() && require("skopeo", &["--version"], "skopeo")
}

/// A layer in the store: a directory and a few files whose bytes derive from `seed`.
struct Layer {
    desc: Descriptor,
    diff_id: Digest,
}

fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut state =
        u64::from_str_radix(&Digest::of_bytes(seed.as_bytes()).hex()[..16], 16).unwrap() | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Half random, half text: compressible, but not to nothing.
            if state & 1 == 0 {
                b'a' + (state % 26) as u8
            } else {
                (state >> 24) as u8
            }
        })
        .collect()
}

/// `big`: size of one more file, so a layer can span many upload and download chunks.
fn make_layer(store: &Store, seed: &str, big: usize) -> Layer {
    let blob = store.new_blob().unwrap();
    let mut w = LayerWriter::new(blob, Compression::Gzip, None).unwrap();
    let dir = Entry {
        path: format!("opt/{seed}"),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
        size: 0,
        xattrs: vec![],
    };
    w.append(&dir, &mut std::io::empty()).unwrap();
    for (i, size) in [40_000usize, 150_000, 7, big].into_iter().enumerate() {
        let data = noise(&format!("{seed}/{i}"), size);
        let entry = Entry {
            path: format!("opt/{seed}/file{i}"),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 100,
            mtime: 1_700_000_000,
            size: data.len() as u64,
            xattrs: vec![],
        };
        w.append(&entry, &mut &data[..]).unwrap();
    }
    let (info, blob) = w.finish().unwrap();
    blob.commit_expecting(&info.descriptor()).unwrap();
    Layer {
        desc: info.descriptor(),
        diff_id: info.diff_id,
    }
}

fn make_image(store: &Store, layers: &[&Layer], arch: &str, name: &str) -> Image {
    let config = ImageConfig {
        architecture: arch.to_string(),
        os: "linux".to_string(),
        created: Some("2024-01-01T00:00:00Z".to_string()),
        config: Some(ContainerConfig {
            cmd: Some(vec!["/bin/sh".to_string()]),
            env: Some(vec![format!("IMAGE={name}")]),
            ..Default::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        ..Default::default()
    };
    let image = Image::assemble(
        config,
        layers.iter().map(|l| l.desc.clone()).collect(),
        BTreeMap::new(),
    )
    .unwrap();
    store.tag(&image, &ImageName::parse(name).unwrap()).unwrap();
    image
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Store,
    l1: Layer,
    l2: Layer,
    l3: Layer,
    l4: Layer,
    /// Layers l1, l2, l3.
    first: Image,
    /// Layers l1, l2, l4: shares the lower two with `first`.
    second: Image,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = Store::open(&root).unwrap();
    let l1 = make_layer(&store, "base", 0);
    let l2 = make_layer(&store, "python", 3 << 20);
    let l3 = make_layer(&store, "scipy", 0);
    let l4 = make_layer(&store, "pytorch", 1 << 20);
    let first = make_image(&store, &[&l1, &l2, &l3], "amd64", "nb/scipy:v1");
    let second = make_image(&store, &[&l1, &l2, &l4], "amd64", "nb/pytorch:v1");
    Fixture {
        _dir: dir,
        root,
        store,
        l1,
        l2,
        l3,
        l4,
        first,
        second,
    }
}

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

/// Options with a Docker config that has no credentials, so the tests never read the
/// user's own `~/.docker/config.json`.
fn anonymous(dir: &Path) -> RegistryOptions {
    let path = dir.join("empty-docker-config.json");
    std::fs::write(&path, br#"{"auths":{}}"#).unwrap();
    RegistryOptions {
        insecure: false,
        docker_config: Some(path),
    }
}

fn hidden() -> Progress {
    Progress::hidden()
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn digests(descs: &[&Descriptor]) -> BTreeSet<Digest> {
    descs.iter().map(|d| d.digest.clone()).collect()
}

fn set(v: &[Digest]) -> BTreeSet<Digest> {
    v.iter().cloned().collect()
}

fn strings(v: &BTreeSet<Digest>) -> BTreeSet<String> {
    v.iter().map(|d| d.to_string()).collect()
}

fn blob_files(store_root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn push_then_pull_round_trips_with_skopeo_agreeing() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    let target = format!("{}/nb/scipy:v1", reg.host());

    let report = registry::push(&fx.store, &fx.first, &target, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(report.reference, target);
    assert_eq!(&report.manifest_digest, fx.first.digest());
    let all = digests(&[
        &fx.l1.desc,
        &fx.l2.desc,
        &fx.l3.desc,
        &fx.first.manifest.value().config,
    ]);
    assert_eq!(set(&report.uploaded), all);
    assert!(report.existing.is_empty() && report.mounted.is_empty());
    assert_eq!(
        set(&reg
            .uploaded_blobs("nb/scipy")
            .iter()
            .map(|d| Digest::parse(d).unwrap())
            .collect::<Vec<_>>()),
        all
    );

    // skopeo sees the very manifest bytes we hold.
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{target}"),
    ]);
    assert_eq!(&Digest::of_bytes(&raw), fx.first.digest());
    assert_eq!(raw, fx.first.manifest.bytes());
    let inspect: serde_json::Value = serde_json::from_slice(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target}"),
    ]))
    .unwrap();
    assert_eq!(inspect["Digest"], fx.first.digest().to_string());
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 3);

    // Pushing again uploads nothing.
    let again = registry::push(&fx.store, &fx.first, &target, &opts, &hidden())
        .await
        .unwrap();
    assert!(again.uploaded.is_empty() && again.mounted.is_empty());
    assert_eq!(set(&again.existing), all);

    // Pull into an empty store.
    let (dir2, store2) = empty_store();
    let (pulled, report) = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), fx.first.digest());
    assert_eq!(pulled.id(), fx.first.id());
    assert_eq!(&report.manifest_digest, fx.first.digest());
    assert_eq!(&report.image_id, fx.first.id());
    assert_eq!(report.reference, target);
    assert_eq!(set(&report.downloaded), all);
    assert!(report.existing.is_empty());
    validate(&pulled, &store2).unwrap();
    let named = store2.resolve(&target).unwrap();
    assert_eq!(named.image.digest(), fx.first.digest());
    assert_eq!(named.image.manifest.bytes(), fx.first.manifest.bytes());

    // Again: everything is already there.
    let (_, report) = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap();
    assert!(report.downloaded.is_empty());
    assert_eq!(set(&report.existing), all);

    // The pull recorded where the blobs came from: pushing the pulled image to another
    // repository of the registry mounts every blob, the config too.
    let copy = format!("{}/nb/copy:v1", reg.host());
    let report = registry::push(&store2, &pulled, &copy, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(set(&report.mounted), all);
    assert!(report.uploaded.is_empty());

    // By digest: verified against the reference, named after the digest.
    let by_digest = format!("{}/nb/scipy@{}", reg.host(), fx.first.digest());
    let (pulled, report) = registry::pull(&store2, &by_digest, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), fx.first.digest());
    assert_eq!(
        report.reference,
        format!("{}/nb/scipy:sha256-{}", reg.host(), fx.first.digest().hex())
    );
    store2.resolve(&report.reference).unwrap();

    // A tag the registry does not have: a clear 404.
    let missing = format!("{}/nb/scipy:nope", reg.host());
    let err = registry::pull(&store2, &missing, &opts, &hidden())
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("error: {text}");
    assert!(matches!(err, OciError::Registry { .. }), "{err:?}");
    assert!(
        text.contains("404") && text.contains("MANIFEST_UNKNOWN"),
        "{text}"
    );
    drop(dir2);
}

#[tokio::test]
async fn second_image_uploads_only_its_new_layers() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    registry::push(
        &fx.store,
        &fx.first,
        &format!("{}/nb/stack:scipy", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    let before = reg.uploaded_blobs("nb/stack").len();
    assert_eq!(before, 4);

    let report = registry::push(
        &fx.store,
        &fx.second,
        &format!("{}/nb/stack:pytorch", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    let new = digests(&[&fx.l4.desc, &fx.second.manifest.value().config]);
    assert_eq!(set(&report.uploaded), new);
    assert_eq!(set(&report.existing), digests(&[&fx.l1.desc, &fx.l2.desc]));
    assert!(report.mounted.is_empty());

    // The registry's own log: exactly the new blobs were uploaded by the second push.
    let uploads = reg.uploaded_blobs("nb/stack");
    let second_push: BTreeSet<String> = uploads[before..].iter().cloned().collect();
    assert_eq!(second_push, strings(&new), "registry log:\n{}", reg.log());
    assert_eq!(uploads.len(), before + 2);
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/nb/stack:pytorch", reg.host()),
    ]);
    assert_eq!(&Digest::of_bytes(&raw), fx.second.digest());
}

#[tokio::test]
async fn push_to_another_repository_mounts_shared_blobs() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    registry::push(
        &fx.store,
        &fx.first,
        &format!("{}/nb/scipy:v1", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    // The store remembers where the blobs went.
    let record = std::fs::read_to_string(fx.root.join("remotes.json")).unwrap();
    assert!(
        record.contains(&format!("{}/nb/scipy", reg.host())),
        "{record}"
    );

    let report = registry::push(
        &fx.store,
        &fx.second,
        &format!("{}/nb/pytorch:v1", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    let shared = digests(&[&fx.l1.desc, &fx.l2.desc]);
    assert_eq!(set(&report.mounted), shared);
    assert_eq!(
        set(&report.uploaded),
        digests(&[&fx.l4.desc, &fx.second.manifest.value().config])
    );
    assert!(report.existing.is_empty());

    // The registry accepted a mount POST for each shared blob, and uploads only the rest.
    let mounts: BTreeSet<(String, String)> = reg.mounted_blobs("nb/pytorch").into_iter().collect();
    let expected: BTreeSet<(String, String)> = shared
        .iter()
        .map(|d| (d.to_string(), "nb/scipy".to_string()))
        .collect();
    assert_eq!(mounts, expected, "registry log:\n{}", reg.log());
    let uploads: BTreeSet<String> = reg.uploaded_blobs("nb/pytorch").into_iter().collect();
    assert_eq!(uploads, strings(&set(&report.uploaded)));

    // What was mounted is really there: a pull of the new repository is whole.
    let (_d, store2) = empty_store();
    let (pulled, _) = registry::pull(
        &store2,
        &format!("{}/nb/pytorch:v1", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    assert_eq!(pulled.digest(), fx.second.digest());
    validate(&pulled, &store2).unwrap();
}

#[tokio::test]
async fn refused_mount_falls_back_to_upload() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    // The record claims a repository that does not exist holds the layers.
    let mut blobs = serde_json::Map::new();
    for l in [&fx.l1, &fx.l2, &fx.l3] {
        blobs.insert(
            l.desc.digest.to_string(),
            serde_json::json!([format!("{}/nb/ghost", reg.host())]),
        );
    }
    std::fs::write(
        fx.root.join("remotes.json"),
        serde_json::json!({ "blobs": blobs }).to_string(),
    )
    .unwrap();

    let report = registry::push(
        &fx.store,
        &fx.first,
        &format!("{}/nb/scipy:v1", reg.host()),
        &opts,
        &hidden(),
    )
    .await
    .unwrap();
    assert!(report.mounted.is_empty());
    assert_eq!(report.uploaded.len(), 4);
    let tried: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.param("mount").is_some())
        .collect();
    assert_eq!(tried.len(), 3, "registry log:\n{}", reg.log());
    assert!(tried
        .iter()
        .all(|r| r.status != 201 && r.param("from") == Some("nb/ghost")));
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{}/nb/scipy:v1", reg.host()),
    ]);
    assert_eq!(&Digest::of_bytes(&raw), fx.first.digest());
}

fn bcrypt_htpasswd(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 5).unwrap())
}

fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join(format!("docker-config-{user}-{password}.json"));
    std::fs::write(
        &path,
        serde_json::json!({ "auths": { host: { "auth": auth } } }).to_string(),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn basic_auth_from_docker_config() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start_with(&RegistryConfig {
        htpasswd: Some(bcrypt_htpasswd("nbrt", "s3cret")),
    });
    let fx = fixture();
    let target = format!("{}/nb/private:v1", reg.host());

    // Without credentials: a clear refusal, and nothing pushed.
    let none = anonymous(fx._dir.path());
    let err = registry::push(&fx.store, &fx.first, &target, &none, &hidden())
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("error: {text}");
    assert!(matches!(err, OciError::Registry { .. }), "{err:?}");
    assert!(text.contains("HTTP 401 Unauthorized"), "{text}");
    assert!(
        text.contains("requires credentials") && text.contains("docker login"),
        "{text}"
    );

    // Wrong password: refused, naming the user and where the credentials came from.
    let wrong = RegistryOptions {
        insecure: false,
        docker_config: Some(docker_config(fx._dir.path(), &reg.host(), "nbrt", "wrong")),
    };
    let err = registry::push(&fx.store, &fx.first, &target, &wrong, &hidden())
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("error: {text}");
    assert!(
        text.contains("401") && text.contains("refused the credentials of user \"nbrt\""),
        "{text}"
    );

    // With the right ones from config.json: push and pull work.
    let good = RegistryOptions {
        insecure: false,
        docker_config: Some(docker_config(fx._dir.path(), &reg.host(), "nbrt", "s3cret")),
    };
    let report = registry::push(&fx.store, &fx.first, &target, &good, &hidden())
        .await
        .unwrap();
    assert_eq!(report.uploaded.len(), 4);
    let (_d, store2) = empty_store();
    let (pulled, _) = registry::pull(&store2, &target, &good, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), fx.first.digest());
    validate(&pulled, &store2).unwrap();

    // Pulling without credentials is refused as clearly.
    let (_d3, store3) = empty_store();
    let err = registry::pull(&store3, &target, &none, &hidden())
        .await
        .unwrap_err();
    let text = err.to_string();
    eprintln!("error: {text}");
    assert!(
        text.contains("HTTP 401") && text.contains("requires credentials"),
        "{text}"
    );
    assert!(blob_files(store3.root()).is_empty());
}

#[tokio::test]
async fn corrupted_blob_fails_the_pull_and_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    let target = format!("{}/nb/scipy:v1", reg.host());
    registry::push(&fx.store, &fx.first, &target, &opts, &hidden())
        .await
        .unwrap();

    // Flip bytes in the middle of a layer as the registry stores it; the size stays.
    let data = reg.blob_data_path(&fx.l2.desc.digest.to_string());
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&data, &bytes).unwrap();

    let (dir, store2) = empty_store();
    let root = dir.path().join("store");
    let err = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap_err();
    match &err {
        OciError::DigestMismatch { expected, .. } => {
            assert_eq!(expected, &fx.l2.desc.digest.to_string())
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(
        blob_files(&root).is_empty(),
        "blobs left behind: {:?}",
        blob_files(&root)
    );
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "temporary files left"
    );
    assert!(store2.list().unwrap().is_empty(), "the image was named");
    assert!(store2.resolve(&target).is_err());
    assert!(!root.join("remotes.json").exists());
}

#[tokio::test]
async fn pulls_docker_v2_manifests() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    let oci = format!("{}/nb/scipy:oci", reg.host());
    registry::push(&fx.store, &fx.first, &oci, &opts, &hidden())
        .await
        .unwrap();
    // skopeo rewrites it as a Docker schema 2 manifest in another repository.
    let policy = fx._dir.path().join("policy.json");
    std::fs::write(
        &policy,
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let docker = format!("{}/nb/docker:v2s2", reg.host());
    skopeo(&[
        "--policy",
        policy.to_str().unwrap(),
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("docker://{oci}"),
        &format!("docker://{docker}"),
    ]);
    let (_d, store2) = empty_store();
    let (pulled, report) = registry::pull(&store2, &docker, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.media_type(), media::DOCKER_MANIFEST);
    assert_ne!(pulled.digest(), fx.first.digest());
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{docker}"),
    ]);
    assert_eq!(&Digest::of_bytes(&raw), pulled.digest());
    assert_eq!(&report.manifest_digest, pulled.digest());
    assert_eq!(pulled.diff_ids(), fx.first.diff_ids());
    validate(&pulled, &store2).unwrap();
    // And it can be pushed back as it is: same bytes, same digest.
    let back = format!("{}/nb/back:v1", reg.host());
    let report = registry::push(&store2, &pulled, &back, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(&report.manifest_digest, pulled.digest());
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{back}"),
    ]);
    assert_eq!(&Digest::of_bytes(&raw), pulled.digest());
}

#[tokio::test]
async fn index_resolves_to_the_host_platform() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    let host_arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other_arch = if host_arch == "s390x" {
        "riscv64"
    } else {
        "s390x"
    };
    let native = make_image(&fx.store, &[&fx.l1, &fx.l2], host_arch, "nb/multi:native");
    let foreign = make_image(&fx.store, &[&fx.l1, &fx.l3], other_arch, "nb/multi:foreign");
    for (image, tag) in [(&native, "native"), (&foreign, "foreign")] {
        registry::push(
            &fx.store,
            image,
            &format!("{}/nb/multi:{tag}", reg.host()),
            &opts,
            &hidden(),
        )
        .await
        .unwrap();
    }
    // An OCI index naming both (foreign first), put with oci-client directly.
    let entry = |image: &Image, arch: &str| {
        serde_json::json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": image.digest().to_string(),
            "size": image.manifest.bytes().len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [entry(&foreign, other_arch), entry(&native, host_arch)],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference =
        format!("{}/nb/multi:latest", reg.host()).parse().unwrap();
    client
        .store_auth_if_needed(
            reference.resolve_registry(),
            &oci_client::secrets::RegistryAuth::Anonymous,
        )
        .await;
    client
        .push_manifest_raw(
            &reference,
            index_bytes.clone(),
            media::OCI_INDEX.parse().unwrap(),
        )
        .await
        .unwrap();

    let (_d, store2) = empty_store();
    let multi = format!("{}/nb/multi", reg.host());
    let (pulled, report) = registry::pull(&store2, &multi, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), native.digest());
    assert_eq!(pulled.config.value().architecture, host_arch);
    assert_eq!(report.reference, format!("{multi}:latest"));
    validate(&pulled, &store2).unwrap();
    // The foreign layer was never fetched.
    assert!(!store2.has_blob(&fx.l3.desc.digest));

    // By the index digest too.
    let by_digest = format!("{multi}@{}", Digest::of_bytes(&index_bytes));
    let (pulled, _) = registry::pull(&store2, &by_digest, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), native.digest());
}

/// Set in the child process that [`credential_helpers_from_docker_config`] starts with a
/// fake `docker-credential-nbrttest` on its PATH (PATH is not changed in this process).
const HELPER_CHILD: &str = "NBRT_TEST_CREDENTIAL_HELPER_CHILD";

#[test]
fn credential_helpers_from_docker_config() {
    if std::env::var_os(HELPER_CHILD).is_some() || !tools_present() {
        return;
    }
    let reg = Registry::start_with(&RegistryConfig {
        htpasswd: Some(bcrypt_htpasswd("helped", "h3lper")),
    });
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let helper = bin.join("docker-credential-nbrttest");
    // Knows the registry by its 127.0.0.1 address only.
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             read -r server || true\n\
             if [ \"$1\" = get ] && [ \"$server\" = \"{host}\" ]; then\n\
               printf '{{\"ServerURL\":\"%s\",\"Username\":\"helped\",\"Secret\":\"h3lper\"}}' \"$server\"\n\
               exit 0\n\
             fi\n\
             echo 'credentials not found in native keychain'\n\
             exit 1\n",
            host = reg.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "credential_helper_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_CHILD, "1")
        .env("NBRT_TEST_REGISTRY_PORT", reg.port().to_string())
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child test failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("CHILD-RAN"),
        "the child did not run:\n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn credential_helper_child() {
    let Some(port) =
        std::env::var_os(HELPER_CHILD).and_then(|_| std::env::var("NBRT_TEST_REGISTRY_PORT").ok())
    else {
        return;
    };
    let fx = fixture();
    let dir = fx._dir.path();
    let host = format!("127.0.0.1:{port}");
    let target = format!("{host}/nb/helped:v1");

    // credHelpers names the helper for this registry.
    let per_host = dir.join("cred-helpers.json");
    std::fs::write(
        &per_host,
        serde_json::json!({ "credHelpers": { &host: "nbrttest" } }).to_string(),
    )
    .unwrap();
    let opts = RegistryOptions {
        insecure: false,
        docker_config: Some(per_host),
    };
    let report = registry::push(&fx.store, &fx.first, &target, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(report.uploaded.len(), 4);

    // credsStore is the helper for every registry.
    let store_wide = dir.join("creds-store.json");
    std::fs::write(
        &store_wide,
        serde_json::json!({ "auths": { &host: {} }, "credsStore": "nbrttest" }).to_string(),
    )
    .unwrap();
    let opts = RegistryOptions {
        insecure: false,
        docker_config: Some(store_wide),
    };
    let (_d, store2) = empty_store();
    let (pulled, _) = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap();
    assert_eq!(pulled.digest(), fx.first.digest());

    // The helper does not know this name of the registry: no credentials, and the refusal
    // says why.
    let other_name = format!("localhost:{port}/nb/helped:v1");
    let err = registry::pull(&store2, &other_name, &opts, &hidden())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("docker-credential-nbrttest"),
        "{text}"
    );
    eprintln!("CHILD-RAN: {text}");
}

#[tokio::test]
async fn unreachable_registry_is_a_clear_error() {
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    // A port nothing listens on (it was free a moment ago).
    let port = nbrt_testkit::free_port();
    let err = registry::push(
        &fx.store,
        &fx.first,
        &format!("127.0.0.1:{port}/nb/x:v1"),
        &opts,
        &hidden(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    eprintln!("error: {text}");
    assert!(matches!(err, OciError::Registry { .. }), "{err:?}");
    assert!(
        text.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{text}"
    );
    let (_d, store2) = empty_store();
    let err = registry::pull(
        &store2,
        &format!("127.0.0.1:{port}/nb/x:v1"),
        &opts,
        &hidden(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // A bad reference fails before any connection.
    let err = registry::pull(&store2, "127.0.0.1:1/Nb/X", &opts, &hidden())
        .await
        .unwrap_err();
    assert!(matches!(err, OciError::InvalidName { .. }), "{err:?}");
}

/// Issue 17, item 6: a layer a rootfs import would refuse (a `..` name), pushed to a
/// registry by something other than nbrt, is refused by `pull` too, which leaves nothing.
#[tokio::test]
async fn a_hostile_layer_fails_the_pull_and_leaves_nothing() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let (src_dir, src) = empty_store();
    // The layer: one file named `../escape`, written into the header as it is.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let digest = Digest::of_bytes(&layer);
    let desc = Descriptor::new(media::OCI_LAYER, digest.clone(), layer.len() as u64);
    src.put_blob(&desc, &mut &layer[..]).unwrap();
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![digest],
        },
        ..Default::default()
    };
    let image = Image::assemble(config, vec![desc], BTreeMap::new()).unwrap();
    let opts = anonymous(src_dir.path());
    let target = format!("{}/nb/hostile:v1", reg.host());
    registry::push(&src, &image, &target, &opts, &hidden())
        .await
        .unwrap();

    let (dir, store2) = empty_store();
    let root = dir.path().join("store");
    let err = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::UnsafeEntry { reason, .. } if reason.contains("'..'")),
        "{err:?}"
    );
    assert!(
        blob_files(&root).is_empty(),
        "blobs left behind: {:?}",
        blob_files(&root)
    );
    assert!(store2.list().unwrap().is_empty());
}

/// An image of the given layer blobs (already in `store`) with the given diff IDs, pushed to
/// `target` as it is (push does not read layers as layers).
async fn push_crafted(
    store: &Store,
    layers: Vec<Descriptor>,
    diff_ids: Vec<Digest>,
    target: &str,
    opts: &RegistryOptions,
) -> Image {
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids,
        },
        ..Default::default()
    };
    let image = Image::assemble(config, layers, BTreeMap::new()).unwrap();
    registry::push(store, &image, target, opts, &hidden())
        .await
        .unwrap();
    image
}

fn assert_nothing_stayed(root: &Path, before: &[String], store: &Store, image: &Image) {
    assert_eq!(blob_files(root), before, "blobs left behind");
    assert_eq!(
        std::fs::read_dir(root.join("tmp")).unwrap().count(),
        0,
        "temporary files left"
    );
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .all(|s| s.image.digest() != image.digest()),
        "the image was named"
    );
}

/// A gzip layer whose first entry is `../escape`, followed by many MiB that a pull need not
/// fetch: the layer is checked while it downloads, so the pull stops at the entry and says
/// what is wrong with it (not that the blob came short), and keeps nothing.
#[tokio::test]
async fn a_bad_entry_at_the_start_of_a_big_layer_fails_the_pull_with_its_error() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let big = noise("after the escape", 24 << 20);
    let mut h = tar::Header::new_gnu();
    h.set_size(big.len() as u64);
    h.set_mode(0o644);
    h.set_path("opt/big").unwrap();
    h.set_cksum();
    b.append(&h, &big[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let gz = gz.finish().unwrap();
    let desc = Descriptor::new(
        media::OCI_LAYER_GZIP,
        Digest::of_bytes(&gz),
        gz.len() as u64,
    );
    fx.store.put_blob(&desc, &mut &gz[..]).unwrap();
    let opts = anonymous(fx._dir.path());
    let target = format!("{}/nb/escape:v1", reg.host());
    // Good layers beside it, downloading at the same time.
    let image = push_crafted(
        &fx.store,
        vec![fx.l1.desc.clone(), desc, fx.l2.desc.clone()],
        vec![
            fx.l1.diff_id.clone(),
            Digest::of_bytes(&tar),
            fx.l2.diff_id.clone(),
        ],
        &target,
        &opts,
    )
    .await;

    let (dir, store2) = empty_store();
    let root = dir.path().join("store");
    let err = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OciError::UnsafeEntry { path, reason } if path == "../escape" && reason.contains("'..'")),
        "{err:?}"
    );
    assert_nothing_stayed(&root, &[], &store2, &image);
}

/// A config whose diff ID does not match its layer fails the pull naming the diff ID, both
/// when the layer is fetched (checked as it downloads) and when the store already has it
/// (checked from the store); nothing of the image stays.
#[tokio::test]
async fn a_wrong_diff_id_fails_the_pull_naming_it() {
    if !tools_present() {
        return;
    }
    let reg = Registry::start();
    let fx = fixture();
    let opts = anonymous(fx._dir.path());
    let target = format!("{}/nb/lying:v1", reg.host());
    let image = push_crafted(
        &fx.store,
        vec![fx.l1.desc.clone(), fx.l2.desc.clone()],
        vec![fx.l1.diff_id.clone(), fx.l1.diff_id.clone()],
        &target,
        &opts,
    )
    .await;
    let names_the_diff_id = |err: &OciError| match err {
        OciError::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            what.contains("diff ID of layer 1")
                && expected == &fx.l1.diff_id.to_string()
                && actual == &fx.l2.diff_id.to_string()
        }
        _ => false,
    };

    // Fetched: checked while it downloads.
    let (dir, store2) = empty_store();
    let root = dir.path().join("store");
    let err = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap_err();
    assert!(names_the_diff_id(&err), "{err:?}");
    assert_nothing_stayed(&root, &[], &store2, &image);

    // Already in the store: checked from there.
    let good = format!("{}/nb/scipy:v1", reg.host());
    registry::push(&fx.store, &fx.first, &good, &opts, &hidden())
        .await
        .unwrap();
    registry::pull(&store2, &good, &opts, &hidden())
        .await
        .unwrap();
    let before = blob_files(&root);
    let err = registry::pull(&store2, &target, &opts, &hidden())
        .await
        .unwrap_err();
    assert!(names_the_diff_id(&err), "{err:?}");
    assert_nothing_stayed(&root, &before, &store2, &image);
}
