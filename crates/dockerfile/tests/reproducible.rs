//! With SOURCE_DATE_EPOCH set, two builds of the same Dockerfile and context (the second
//! without the cache) give the same image ID. A test binary of its own: the variable is
//! process-wide.

mod common;

#[test]
fn two_builds_with_source_date_epoch_are_identical() {
    let Some(fix) = common::fixture() else { return };
    std::env::set_var("SOURCE_DATE_EPOCH", "1700000000");
    let df = format!(
        "FROM {}\nCOPY app/ /app/\nRUN echo built > /app/built && mkdir -p /var/x\n\
         WORKDIR /srv/work\nCOPY --chmod=755 run.sh ./\nENV A=1\nCMD [\"/srv/work/run.sh\"]\n",
        fix.base
    );
    let ctx = common::context(
        &df,
        &[
            ("app/main.py", b"print(1)\n", 0o644),
            ("run.sh", b"#!/bin/sh\n", 0o644),
        ],
    );
    let build = |no_cache: bool| {
        let opts = nbrt_dockerfile::BuildOptions {
            dockerfile: ctx.path().join("Dockerfile"),
            context: ctx.path().to_path_buf(),
            tags: vec![nbrt_oci::ImageName::parse("nbrt-repro/app:test").unwrap()],
            no_cache,
            secrets: Default::default(),
            ..Default::default()
        };
        nbrt_dockerfile::build(
            &fix.store,
            &opts,
            &nbrt_oci::Progress::hidden(),
            &mut Vec::new(),
        )
        .unwrap()
    };
    let first = build(false);
    // New mtimes for every context file, and no cache.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    common::write_files(
        ctx.path(),
        &[
            ("app/main.py", b"print(1)\n", 0o644),
            ("run.sh", b"#!/bin/sh\n", 0o644),
        ],
    );
    let second = build(true);
    assert!(second.steps.iter().all(|s| !s.cached));
    assert_eq!(first.id, second.id);
    assert_eq!(first.digest, second.digest);
    let image = fix.store.resolve("nbrt-repro/app:test").unwrap().image;
    assert_eq!(
        image.config.value().created.as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}
