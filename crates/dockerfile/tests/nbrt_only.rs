//! What Debian's BuildKit cannot check without a `# syntax=` line (heredocs, `RUN
//! --network`), checked on nbrt's image alone.

mod common;

#[test]
fn run_heredocs() {
    let Some(fix) = common::fixture() else { return };
    let df = format!(
        "FROM {}\nRUN <<EOF\necho a > /a\necho b > /b\nEOF\n\
         RUN <<EOF bash\nset -e\necho \"$0\" > /shell\nEOF\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    let (_, image) =
        common::nbrt_build(&fix.store, ctx.path(), "nbrt-heredoc/run:test", &[], None).unwrap();
    let tree = common::tree(&fix.store, &image);
    for p in ["a", "b", "shell"] {
        assert_eq!(tree[p].kind, "Regular", "{p}");
    }
}

#[test]
fn run_network_none_has_loopback_only() {
    let Some(fix) = common::fixture() else { return };
    let df = format!(
        "FROM {}\nRUN --network=none cat /proc/net/dev > /none\nRUN cat /proc/net/dev > /default\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    common::nbrt_build(&fix.store, ctx.path(), "nbrt-only/network:test", &[], None).unwrap();
    let view = |path: &str| {
        let image = fix.store.resolve("nbrt-only/network:test").unwrap().image;
        let bytes = nbrt_oci::layer::flatten::flatten(
            &image,
            &fix.store,
            Vec::new(),
            &nbrt_oci::Progress::hidden(),
        )
        .unwrap();
        let mut ar = tar::Archive::new(bytes.as_slice());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                return s;
            }
        }
        panic!("{path} not in the image")
    };
    let none = view("none");
    let interfaces: Vec<&str> = none.lines().skip(2).map(|l| l.trim()).collect();
    assert_eq!(interfaces.len(), 1, "{none}");
    assert!(interfaces[0].starts_with("lo:"), "{none}");
    assert!(
        view("default").lines().count() > 3,
        "the default network is the host's"
    );
}

/// COPY heredocs (mode 0664, `--chmod`, variables expanded unless the delimiter is quoted)
/// and ADD from a URL served on loopback (mode 0600, `--checksum`), which Debian's BuildKit
/// cannot build.
#[test]
fn copy_heredocs_and_add_urls() {
    use sha2::{Digest as _, Sha256};
    let Some(fix) = common::fixture() else { return };
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("data.txt"), b"served\n").unwrap();
    let url = nbrt_testkit::serve_dir(served.path());
    let sha = hex::encode(Sha256::digest(b"served\n"));
    let df = format!(
        "FROM {}\nARG WHO=world\nCOPY <<EOF /etc/greeting\nhello $WHO '$WHO'\nEOF\n\
         COPY --chmod=755 <<'EOF' /usr/local/bin/\necho $WHO\nEOF\n\
         ADD {url}/data.txt /opt/\nADD --checksum=sha256:{sha} {url}/data.txt /opt/checked.txt\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    let (_, image) = common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-only/heredoc-url:test",
        &[],
        None,
    )
    .unwrap();
    let tree = common::tree(&fix.store, &image);
    let digest = |b: &[u8]| hex::encode(Sha256::digest(b));
    let g = &tree["etc/greeting"];
    assert_eq!(
        (g.mode, g.uid, g.content.clone()),
        (0o664, 0, digest(b"hello world 'world'\n"))
    );
    let e = &tree["usr/local/bin/EOF"];
    assert_eq!((e.mode, e.content.clone()), (0o755, digest(b"echo $WHO\n")));
    for p in ["opt/data.txt", "opt/checked.txt"] {
        assert_eq!(
            (tree[p].mode, tree[p].content.clone()),
            (0o600, sha.clone()),
            "{p}"
        );
    }
    // Another checksum fails the step at its line.
    let bad = df.replace(&sha, &"0".repeat(64));
    let ctx = common::context(&bad, &[]);
    let err = common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-only/heredoc-url:bad",
        &[],
        None,
    )
    .unwrap_err();
    assert!(err.starts_with("Dockerfile:10: ADD --checksum"), "{err}");
    assert!(err.contains("not the --checksum"), "{err}");
}

/// `RUN --mount=type=secret,env=VAR` (BuildKit 0.13's form; Debian's BuildKit refuses the
/// key): the secret as a variable of that RUN only, with or without a file; a secret not
/// given leaves the variable unset.
#[test]
fn run_mount_secret_as_a_variable() {
    let Some(fix) = common::fixture() else { return };
    let df = format!(
        "FROM {}\n\
         RUN --mount=type=secret,id=tok,env=TOKEN echo \"${{#TOKEN}}\" > /len && test ! -e /run/secrets/tok\n\
         RUN --mount=type=secret,id=tok,env=TOKEN,target=/tok.txt [ \"$(cat /tok.txt)\" = \"$TOKEN\" ] && echo same > /same\n\
         RUN --mount=type=secret,id=absent,env=ABSENT echo \"${{ABSENT-unset}}\" > /absent\n\
         RUN echo \"${{TOKEN-unset}}\" > /after\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    let (_, image) = common::nbrt_build_with_secrets(
        &fix.store,
        ctx.path(),
        "nbrt-only/secret-env:test",
        &[],
        None,
        &[("tok", b"twelve chars")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let flat = nbrt_oci::layer::flatten::flatten(
        &image,
        &fix.store,
        Vec::new(),
        &nbrt_oci::Progress::hidden(),
    )
    .unwrap();
    let mut files = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(flat.as_slice());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if ["len", "same", "absent", "after", "tok.txt"].contains(&path.as_str()) {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut e, &mut text).unwrap();
            files.insert(path, text);
        }
    }
    assert_eq!(files["len"], "12\n");
    assert_eq!(files["same"], "same\n");
    assert_eq!(files["absent"], "unset\n");
    assert_eq!(files["after"], "unset\n");
    assert!(
        !files.contains_key("tok.txt"),
        "the mount point of a file secret goes"
    );
    assert!(!flat.windows(12).any(|w| w == b"twelve chars"));
}

/// `nbrt convert` of a COPY after a RUN: the copy stays after the RUN (a [[run]] writing
/// the file, not a [[files]] that would run first), and the converted runtime file builds
/// the same files as `nbrt build -f` (content, mode, owners, new directories).
#[test]
fn convert_keeps_a_copy_after_a_run_in_order() {
    let Some(fix) = common::fixture() else { return };
    let df = format!(
        "FROM {}\n\
         RUN mkdir -p /opt/app && echo old > /opt/app/conf\n\
         COPY --chmod=640 conf /opt/app/conf\n\
         COPY --chown=1000:100 data.bin /opt/app/data/\n\
         RUN cat /opt/app/conf > /opt/app/seen\n",
        fix.base
    );
    let bytes: Vec<u8> = (0..=255u8)
        .chain(b"it's 100% \\ done\n".iter().copied())
        .collect();
    let ctx = common::context(
        &df,
        &[("conf", b"new\n", 0o644), ("data.bin", &bytes, 0o600)],
    );
    let (_, from_dockerfile) = common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-only/convert-order:df",
        &[],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let conversion = nbrt_dockerfile::convert::convert(
        Some(&fix.store),
        &nbrt_dockerfile::convert::ConvertOptions {
            dockerfile: ctx.path().join("Dockerfile"),
            context: ctx.path().to_path_buf(),
            output_dir: ctx.path().to_path_buf(),
            name: "nbrt-only-convert-order".into(),
            build_args: Default::default(),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let why = |line: usize| {
        conversion
            .notes
            .iter()
            .find(|n| n.line == line)
            .map(|n| format!("{} {:?}", n.became, n.why))
            .unwrap_or_default()
    };
    assert!(
        why(3).starts_with("[[run]]") && why(3).contains("kept in order"),
        "{}",
        why(3)
    );
    assert!(why(4).starts_with("[[run]]"), "{}", why(4));
    let from_runtime_file =
        build_converted(fix, ctx.path(), &conversion, "nbrt-only-convert-order");
    let a = common::tree(&fix.store, &from_dockerfile);
    let b = common::tree(&fix.store, &from_runtime_file);
    for p in [
        "opt/app",
        "opt/app/conf",
        "opt/app/data",
        "opt/app/data/data.bin",
        "opt/app/seen",
    ] {
        assert_eq!(a.get(p), b.get(p), "{p}\n{}", conversion.runtime);
    }
    assert_eq!(
        a["opt/app/seen"].content, a["opt/app/conf"].content,
        "the RUN after the COPY saw it"
    );
    assert_eq!(
        (
            a["opt/app/data"].mode,
            a["opt/app/data"].uid,
            a["opt/app/data"].gid
        ),
        (0o755, 1000, 100)
    );
}

/// `nbrt convert` of directory and glob sources, before a RUN (as `[[files]]`, one entry
/// per file) and after one (in order, as a `[[run]]` writing every entry: subdirectories,
/// an empty directory, a link, `.dockerignore` applied): the runtime file's image has the
/// same entries as `nbrt build -f`'s (content, mode, owners, link targets). A link or an
/// empty directory copied before any RUN has no `[[files]]` form and is refused by line.
#[test]
fn convert_copies_directories_and_globs_in_order() {
    let Some(fix) = common::fixture() else { return };
    let df = format!(
        "FROM {}\n\
         COPY conf.d/ /etc/app/\n\
         COPY *.cfg /etc/app/cfgs/\n\
         RUN mkdir -p /opt/app && echo old > /opt/app/x\n\
         COPY --chown=1000:100 tree /opt/app/tree\n\
         COPY --chmod=600 *.txt /opt/app/\n\
         RUN find /opt/app | sort > /opt/listing\n",
        fix.base
    );
    let ctx = common::context(
        &df,
        &[
            ("conf.d/a.conf", b"a\n", 0o644),
            ("conf.d/sub/b.conf", b"b\n", 0o600),
            ("one.cfg", b"1\n", 0o644),
            ("two.cfg", b"2\n", 0o755),
            ("tree/top", b"top\n", 0o644),
            ("tree/deep/er/file", b"deep\n", 0o640),
            ("tree/link", b"->deep/er/file", 0),
            ("tree/secret.key", b"no\n", 0o600),
            ("x.txt", b"x\n", 0o644),
            ("y.txt", b"y\n", 0o644),
            (".dockerignore", b"tree/secret.key\n", 0o644),
        ],
    );
    std::fs::create_dir_all(ctx.path().join("tree/empty")).unwrap();
    let (_, from_dockerfile) = common::nbrt_build(
        &fix.store,
        ctx.path(),
        "nbrt-only/convert-dirs:df",
        &[],
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let options = nbrt_dockerfile::convert::ConvertOptions {
        dockerfile: ctx.path().join("Dockerfile"),
        context: ctx.path().to_path_buf(),
        output_dir: ctx.path().to_path_buf(),
        name: "nbrt-only-convert-dirs".into(),
        build_args: Default::default(),
    };
    let conversion = nbrt_dockerfile::convert::convert(Some(&fix.store), &options)
        .unwrap_or_else(|e| panic!("{e}"));
    let became = |line: usize| {
        conversion
            .notes
            .iter()
            .find(|n| n.line == line)
            .map(|n| n.became.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        (became(2), became(3), became(5), became(6)),
        (
            "[[files]]".into(),
            "[[files]]".into(),
            "[[run]]".into(),
            "[[run]]".into()
        ),
        "{}",
        conversion.runtime
    );
    assert!(
        !conversion.runtime.contains("secret.key"),
        "{}",
        conversion.runtime
    );
    let from_runtime_file = build_converted(fix, ctx.path(), &conversion, "nbrt-only-convert-dirs");
    let a = common::tree(&fix.store, &from_dockerfile);
    let b = common::tree(&fix.store, &from_runtime_file);
    let under = |t: &std::collections::BTreeMap<String, common::Entry>| -> Vec<String> {
        t.keys()
            .filter(|p| p.starts_with("etc/app") || p.starts_with("opt/"))
            .cloned()
            .collect()
    };
    assert_eq!(under(&a), under(&b), "{}", conversion.runtime);
    for p in under(&a) {
        assert_eq!(a.get(&p), b.get(&p), "{p}\n{}", conversion.runtime);
    }
    for p in [
        "etc/app/sub/b.conf",
        "etc/app/cfgs/two.cfg",
        "opt/app/tree/deep/er/file",
        "opt/app/tree/empty",
        "opt/app/tree/link",
        "opt/app/y.txt",
    ] {
        assert!(a.contains_key(p), "{p} missing: {:?}", under(&a));
    }
    assert!(!a.contains_key("opt/app/tree/secret.key"));
    assert_eq!(a["opt/app/tree/link"].content, "deep/er/file");
    assert_eq!(
        (a["opt/app/tree/deep"].uid, a["opt/app/tree/deep"].gid),
        (1000, 100)
    );
    assert_eq!(a["opt/app/y.txt"].mode, 0o600);

    // Before any RUN, an empty directory and a link have no [[files]] form: refused, by line.
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {}\nCOPY tree /opt/tree\n", fix.base),
    )
    .unwrap();
    let refused = || {
        nbrt_dockerfile::convert::convert(Some(&fix.store), &options)
            .map(|c| c.runtime)
            .unwrap_err()
            .to_string()
    };
    let empty = refused();
    assert!(
        empty.starts_with("Dockerfile:2:")
            && empty.contains("/opt/tree/empty: an empty directory has no [[files]] form"),
        "{empty}"
    );
    std::fs::remove_dir(ctx.path().join("tree/empty")).unwrap();
    let link = refused();
    assert!(
        link.starts_with("Dockerfile:2:") && link.contains("(a link to deep/er/file)"),
        "{link}"
    );
}

/// The converted runtime file written into the context and built by the runtime-file
/// builder; the image it tags `name`.
fn build_converted(
    fix: &common::Fixture,
    ctx: &std::path::Path,
    conversion: &nbrt_dockerfile::convert::Conversion,
    name: &str,
) -> nbrt_oci::Image {
    let runtime_file = ctx.join("runtime.toml");
    std::fs::write(&runtime_file, &conversion.runtime).unwrap();
    let stack = nbrt_build::stack::Stack::load(&runtime_file, &fix.store)
        .unwrap_or_else(|e| panic!("{e}\n{}", conversion.runtime));
    let mut log = Vec::new();
    nbrt_build::builder::build_stack(
        &fix.store,
        &stack,
        None,
        &nbrt_build::builder::BuildOptions::default(),
        &nbrt_oci::Progress::hidden(),
        &mut log,
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            conversion.runtime,
            String::from_utf8_lossy(&log)
        )
    });
    fix.store.resolve(name).unwrap().image
}
