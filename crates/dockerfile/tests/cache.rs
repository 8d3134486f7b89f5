//! The layer cache, BuildKit's way: an unchanged rebuild runs nothing; a touched file with
//! the same content and a change to an ignored file keep the cache; changed content or mode
//! rebuilds that COPY and what follows; a changed ARG rebuilds only the RUNs that see it.

mod common;

use std::os::unix::fs::PermissionsExt;

/// Which instructions (by line) ran instead of coming from the cache.
fn ran(report: &nbrt_dockerfile::BuildReport) -> Vec<usize> {
    report.ran().iter().map(|s| s.line).collect()
}

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

#[test]
fn copy_cache_follows_content_and_mode_not_times() {
    let Some(fix) = common::fixture() else { return };
    let u = unique();
    let df = format!(
        "FROM {}\nRUN echo {u} > /u\nCOPY app/ /app/\nRUN cat /app/main.py > /copy\nCOPY other.txt /other.txt\n",
        fix.base
    );
    let ctx = common::context(
        &df,
        &[
            ("app/main.py", b"print(1)\n", 0o644),
            ("other.txt", b"o\n", 0o644),
            (".dockerignore", b"app/*.pyc\n", 0o644),
        ],
    );
    let tag = "nbrt-cache/copy:test";
    let build = || common::nbrt_build(&fix.store, ctx.path(), tag, &[], None).unwrap();
    let (first, _) = build();
    assert_eq!(ran(&first), vec![2, 3, 4, 5]);
    let (again, img_again) = build();
    assert!(
        ran(&again).is_empty(),
        "an unchanged rebuild runs nothing: {:?}",
        ran(&again)
    );

    // Same content, new mtime.
    let main = ctx.path().join("app/main.py");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&main, b"print(1)\n").unwrap();
    let (touched, img_touched) = build();
    assert!(ran(&touched).is_empty(), "{:?}", ran(&touched));
    assert_eq!(img_again.id(), img_touched.id());

    // An ignored file appears.
    std::fs::write(ctx.path().join("app/cached.pyc"), b"junk").unwrap();
    let (ignored, _) = build();
    assert!(ran(&ignored).is_empty(), "{:?}", ran(&ignored));

    // New content: that COPY and what follows.
    std::fs::write(&main, b"print(2)\n").unwrap();
    let (changed, _) = build();
    assert_eq!(ran(&changed), vec![3, 4, 5]);

    // New mode.
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mode, _) = build();
    assert_eq!(ran(&mode), vec![3, 4, 5]);
}

#[test]
fn changed_arg_reruns_only_the_runs_that_see_it() {
    let Some(fix) = common::fixture() else { return };
    let u = unique();
    let df = format!(
        "FROM {}\nRUN echo {u} > /before\nARG V=one\nRUN echo $V > /v\nRUN echo after > /after\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    let tag = "nbrt-cache/arg:test";
    let (first, _) = common::nbrt_build(&fix.store, ctx.path(), tag, &[("V", "x")], None).unwrap();
    assert_eq!(ran(&first), vec![2, 4, 5]);
    let (same, _) = common::nbrt_build(&fix.store, ctx.path(), tag, &[("V", "x")], None).unwrap();
    assert!(ran(&same).is_empty());
    // The RUN before the ARG does not see it; the RUNs after it do.
    let (other, _) = common::nbrt_build(&fix.store, ctx.path(), tag, &[("V", "y")], None).unwrap();
    assert_eq!(ran(&other), vec![4, 5]);
    // An argument no instruction declares changes nothing.
    let (unused, _) = common::nbrt_build(
        &fix.store,
        ctx.path(),
        tag,
        &[("V", "y"), ("NOBODY", "z")],
        None,
    )
    .unwrap();
    assert!(ran(&unused).is_empty());
}

#[test]
fn no_cache_runs_everything() {
    let Some(fix) = common::fixture() else { return };
    let df = format!("FROM {}\nRUN echo x > /x\nWORKDIR /made/here\n", fix.base);
    let ctx = common::context(&df, &[]);
    common::nbrt_build(&fix.store, ctx.path(), "nbrt-cache/nocache:test", &[], None).unwrap();
    let opts = nbrt_dockerfile::BuildOptions {
        dockerfile: ctx.path().join("Dockerfile"),
        context: ctx.path().to_path_buf(),
        tags: vec![nbrt_oci::ImageName::parse("nbrt-cache/nocache:test").unwrap()],
        no_cache: true,
        secrets: Default::default(),
        ..Default::default()
    };
    let report = nbrt_dockerfile::build(
        &fix.store,
        &opts,
        &nbrt_oci::Progress::hidden(),
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(ran(&report), vec![2, 3]);
}
