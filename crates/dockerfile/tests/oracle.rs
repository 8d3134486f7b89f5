//! The semantics matrix: one tiny Dockerfile per semantic row, built by nbrt and by
//! BuildKit (`DOCKER_BUILDKIT=1 /usr/bin/docker build`), the two images compared entry by
//! entry (path, type, mode, owner, content, link target) and config by config; only times
//! and history may differ.

mod common;

use common::same_as_buildkit;

#[test]
fn env_both_forms_see_values_from_before() {
    same_as_buildkit(
        "env",
        "FROM {BASE}\n\
         ENV A=1 B=\"two words\" C=${A:+set}\n\
         ENV OLD old form  value\n\
         ENV P=${PATH}:/x D=${NOPE:-dflt} E='$A' F=\\$A\n\
         RUN echo \"$A|$B|$C|$OLD|$P|$D|$E|$F\" > /env.txt\n",
        &[],
        &[],
    );
}

#[test]
fn run_shell_exec_and_continuations() {
    same_as_buildkit(
        "run",
        "FROM {BASE}\n\
         RUN [\"/bin/sh\", \"-c\", \"echo exec > /exec.txt\"]\n\
         RUN echo one \\\n  # a comment inside the continuation\n  && echo two > /cont.txt\n\
         RUN rm /etc/debian_version && rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d\n\
         RUN mkdir -p /a/b && ln -s b /a/link && chmod 700 /a/b && echo x > /a/b/f\n",
        &[],
        &[],
    );
}

/// The comparison itself: a file of different content and a different config are seen.
#[test]
fn comparison_sees_differences() {
    let Some(fix) = common::docker_fixture() else {
        return;
    };
    let a = common::context(
        &format!("FROM {}\nRUN echo a > /x\nENV K=1\n", fix.base),
        &[],
    );
    let b = common::context(
        &format!("FROM {}\nRUN echo b > /x\nENV K=2\n", fix.base),
        &[],
    );
    let ours = common::nbrt_build(&fix.store, a.path(), "nbrt-oracle/cmp:nbrt", &[], None)
        .unwrap()
        .1;
    let theirs =
        common::buildkit_build(&fix.store, b.path(), "nbrt-oracle/cmp:buildkit", &[], None)
            .unwrap();
    let tree = common::tree(&fix.store, &ours);
    assert!(tree.len() > 1000, "a minbase tree has thousands of entries");
    assert!(tree.contains_key("x") && tree.contains_key("etc/passwd"));
    let diffs = common::differences(&fix.store, &ours, &theirs);
    assert!(
        diffs.iter().any(|d| d.starts_with("differs: x")),
        "{diffs:?}"
    );
    assert!(diffs.iter().any(|d| d.starts_with("config:")), "{diffs:?}");
    assert_eq!(diffs.len(), 2, "{diffs:?}");
}
