//! FROM an image that only a registry has: pulled into the store (Debian's
//! `docker-registry` on loopback, which speaks plain HTTP).

mod common;

#[test]
fn from_an_image_only_a_registry_has() {
    let Some(fix) = common::fixture() else { return };
    if !nbrt_testkit::Registry::available() {
        return;
    }
    let registry = nbrt_testkit::Registry::start();
    // A parent that only the registry will have.
    let parent = common::context(
        &format!("FROM {}\nRUN echo remote > /remote.txt\n", fix.base),
        &[],
    );
    let (_, image) = common::nbrt_build(
        &fix.store,
        parent.path(),
        "nbrt-registry/parent:local",
        &[],
        None,
    )
    .unwrap();
    let remote = format!("{}/nbrt-test/parent:v1", registry.host());
    let opts = nbrt_oci::registry::RegistryOptions {
        insecure: false,
        docker_config: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(nbrt_oci::registry::push(
        &fix.store,
        &image,
        &remote,
        &opts,
        &nbrt_oci::Progress::hidden(),
    ))
    .unwrap();
    assert!(fix.store.resolve(&remote).is_err());
    let child = common::context(
        &format!("FROM {remote}\nRUN cat /remote.txt > /seen.txt\n"),
        &[],
    );
    let (_, built) = common::nbrt_build(
        &fix.store,
        child.path(),
        "nbrt-registry/child:test",
        &[],
        None,
    )
    .unwrap();
    let tree = common::tree(&fix.store, &built);
    assert_eq!(tree["seen.txt"], tree["remote.txt"]);
    assert!(
        fix.store.resolve(&remote).is_ok(),
        "the pulled image is in the store"
    );
}
