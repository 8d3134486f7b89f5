//! Bad Dockerfiles: errors name the Dockerfile line and instruction, and the store keeps
//! the images and names it had.

mod common;

/// Images other tests of the shared fixture store make while this one runs (tests run in
/// parallel): the oracle's and cache tests' images and the ONBUILD base below.
fn made_by_other_tests(i: &nbrt_oci::StoredImage) -> bool {
    i.names.iter().any(|n| {
        n.repository.starts_with("nbrt-oracle")
            || n.repository.starts_with("nbrt-cache")
            || n.repository == "nbrt-errors/onbuild"
    })
}

/// Build `dockerfile` (`{BASE}` replaced) with `files`; returns the error text and checks
/// that the store's images are unchanged.
fn fails(dockerfile: &str, files: &[common::File<'_>]) -> Option<String> {
    let fix = common::fixture()?;
    let ctx = common::context(&dockerfile.replace("{BASE}", &fix.base), files);
    let tag = "nbrt-errors/bad:test";
    let before: Vec<_> = fix
        .store
        .list()
        .unwrap()
        .into_iter()
        .filter(|i| !made_by_other_tests(i))
        .map(|i| (i.image.digest().clone(), i.names.clone()))
        .collect();
    let err = match common::nbrt_build(&fix.store, ctx.path(), tag, &[], None) {
        Ok(_) => panic!("the build of\n{dockerfile}\nsucceeded"),
        Err(e) => e.lines().next().unwrap_or_default().to_string(),
    };
    let after: Vec<_> = fix
        .store
        .list()
        .unwrap()
        .into_iter()
        .filter(|i| !made_by_other_tests(i))
        .map(|i| (i.image.digest().clone(), i.names.clone()))
        .collect();
    assert_eq!(before, after, "a failed build changed the store's images");
    Some(err)
}

#[test]
fn unknown_instruction() {
    let Some(e) = fails("FROM {BASE}\nRUN true\nFROBNICATE now\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:3:"), "{e}");
}

#[test]
fn unterminated_heredoc() {
    let Some(e) = fails("FROM {BASE}\nRUN <<EOF\necho hi\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:2:"), "{e}");
}

#[test]
fn heredoc_scripts_are_refused_with_their_line() {
    let Some(e) = fails("FROM {BASE}\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:2: RUN <<EOF:"), "{e}");
    assert!(e.contains("#!"), "{e}");
}

#[test]
fn copy_from_a_url_is_refused() {
    let Some(e) = fails("FROM {BASE}\nCOPY http://127.0.0.1:9/x /x\n", &[]) else {
        return;
    };
    assert!(
        e.starts_with("Dockerfile:2: COPY http://127.0.0.1:9/x /x:"),
        "{e}"
    );
    assert!(e.contains("ADD"), "{e}");
}

#[test]
fn copy_source_outside_the_context() {
    let Some(e) = fails("FROM {BASE}\n\nCOPY ../secret /x\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:3: COPY ../secret /x:"), "{e}");
    assert!(e.contains("outside the build context"), "{e}");
}

#[test]
fn missing_and_ignored_sources() {
    let Some(e) = fails("FROM {BASE}\nCOPY nothere /x\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:2: COPY nothere /x:"), "{e}");
    let Some(e) = fails(
        "FROM {BASE}\nCOPY *.txt /x/\nCOPY secret.key /k\n",
        &[
            ("a.txt", b"a", 0o644),
            ("secret.key", b"k", 0o600),
            (".dockerignore", b"*.key\n", 0o644),
        ],
    ) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:3:"), "{e}");
    assert!(e.contains(".dockerignore"), "{e}");
}

#[test]
fn missing_target_stage() {
    let Some(fix) = common::fixture() else { return };
    let ctx = common::context(&format!("FROM {} AS one\nRUN true\n", fix.base), &[]);
    let e = common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-errors/t:test",
        &[],
        Some("two"),
    )
    .unwrap_err();
    assert!(e.contains("target stage \"two\" could not be found"), "{e}");
}

/// Seed 001's documented Dockerfile: a comment after USER is part of the user name.
#[test]
fn user_with_a_trailing_comment() {
    let Some(e) = fails(
        "FROM {BASE}\n\nUSER root  # switch to root to install packages\nRUN true\n",
        &[],
    ) else {
        return;
    };
    assert!(
        e.starts_with(
            "Dockerfile:3: USER root  # switch to root to install packages: unable to find \
             user root  # switch to root to install packages: no matching entries in passwd file"
        ),
        "{e}"
    );
    assert!(e.ends_with("needed by the RUN on line 4"), "{e}");
    assert!(
        e.contains("a comment after an instruction is part of it"),
        "{e}"
    );
}

#[test]
fn failing_run_names_its_line() {
    let Some(e) = fails("FROM {BASE}\nRUN true\nRUN exit 3\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:3: RUN exit 3:"), "{e}");
    assert!(e.contains("exited with code 3"), "{e}");
}

#[test]
fn instructions_before_from_and_bad_flags() {
    let Some(e) = fails("ENV A=1\nFROM {BASE}\n", &[]) else {
        return;
    };
    assert!(e.starts_with("Dockerfile:1:") && e.contains("FROM"), "{e}");
    let Some(e) = fails("FROM {BASE}\nCOPY --bogus=1 a /a\n", &[("a", b"a", 0o644)]) else {
        return;
    };
    assert!(
        e.starts_with("Dockerfile:2:") && e.contains("--bogus"),
        "{e}"
    );
    let Some(e) = fails("FROM {BASE}\nENV X=${Y:?needs-Y}\n", &[]) else {
        return;
    };
    assert!(
        e.starts_with("Dockerfile:2:") && e.contains("Y: needs-Y"),
        "{e}"
    );
}

#[test]
fn onbuild_triggers_in_the_base_are_refused() {
    let Some(fix) = common::fixture() else { return };
    let ctx = common::context(&format!("FROM {}\nONBUILD RUN echo x\n", fix.base), &[]);
    common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-errors/onbuild:test",
        &[],
        None,
    )
    .unwrap();
    let Some(e) = fails("FROM nbrt-errors/onbuild:test\nRUN true\n", &[]) else {
        return;
    };
    assert!(
        e.starts_with("Dockerfile:1:") && e.contains("ONBUILD"),
        "{e}"
    );
}

#[test]
fn a_required_secret_not_given() {
    let Some(e) = fails(
        "FROM {BASE}\nRUN true\nRUN --mount=type=secret,id=token,required=true cat /run/secrets/token\n",
        &[],
    ) else {
        return;
    };
    assert!(
        e.starts_with(
            "Dockerfile:3: RUN --mount=type=secret,id=token,required=true cat /run/secrets/token: \
             secret \"token\" not found"
        ),
        "{e}"
    );
    assert!(e.contains("--secret id=token,src=PATH"), "{e}");
}

#[test]
fn ssh_mounts_are_refused_with_their_line() {
    let Some(e) = fails(
        "FROM {BASE}\nRUN --mount=type=ssh git clone git@example.com:x\n",
        &[],
    ) else {
        return;
    };
    assert!(
        e.starts_with("Dockerfile:2: RUN --mount=type=ssh git clone git@example.com:x: --mount=type=ssh is not supported"),
        "{e}"
    );
}
