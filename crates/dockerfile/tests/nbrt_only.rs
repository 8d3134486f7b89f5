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
