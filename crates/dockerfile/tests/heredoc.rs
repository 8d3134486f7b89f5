//! RUN heredocs (BuildKit 1.4+ syntax). Debian's BuildKit has no heredocs without a
//! `# syntax=` line, so these are checked on nbrt's image alone.

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
