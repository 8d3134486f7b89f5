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
