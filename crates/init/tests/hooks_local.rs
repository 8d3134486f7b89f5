//! Sourcing hooks with the real nbrt-init binary (no container needed).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nbrt_init::env::Env;
use nbrt_init::hooks;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_nbrt-init"))
}

fn hook(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    fs::write(&p, body).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    p
}

#[test]
fn sourced_hook_exports_and_unsets_reach_the_environment() {
    let d = tempfile::tempdir().unwrap();
    let h = hook(d.path(), "10.sh", "export NEW='with\nnewline = and spaces'\nunset GONE\nCHANGED=2\nexport CHANGED\nLOCAL_ONLY=1\n");
    let env = Env::from_pairs([
        ("GONE", "1"),
        ("CHANGED", "1"),
        ("PATH", "/usr/bin:/bin"),
        ("SHLVL", "7"),
    ]);
    let (rc, after) = hooks::source(&h, &env, exe()).unwrap();
    assert_eq!(rc, 0);
    let after = after.unwrap();
    assert_eq!(
        after.get("NEW").as_deref(),
        Some("with\nnewline = and spaces")
    );
    assert_eq!(after.get("CHANGED").as_deref(), Some("2"));
    assert!(!after.contains("GONE") && !after.contains("LOCAL_ONLY"));
    assert_eq!(
        after.get("SHLVL").as_deref(),
        Some("7"),
        "shell bookkeeping variables are not taken"
    );
    assert!(!after.contains("_"));
}

#[test]
fn failing_and_exiting_hooks() {
    let d = tempfile::tempdir().unwrap();
    let h = hook(d.path(), "fail.sh", "export A=1\nfalse\n");
    let (rc, after) =
        hooks::source(&h, &Env::from_pairs([("PATH", "/usr/bin:/bin")]), exe()).unwrap();
    assert_eq!(rc, 1);
    assert_eq!(after.unwrap().get("A").as_deref(), Some("1"));

    let h = hook(d.path(), "exit.sh", "exit 4\n");
    let (rc, after) = hooks::source(&h, &Env::default(), exe()).unwrap();
    assert_eq!((rc, after), (4, None));

    let h = hook(d.path(), "strict.sh", "set -e\nfalse\necho not here\n");
    let (_, after) = hooks::source(&h, &Env::default(), exe()).unwrap();
    assert!(after.is_none());
}

#[test]
fn run_dir_threads_the_environment_through_hooks_in_order() {
    let d = tempfile::tempdir().unwrap();
    hook(d.path(), "10-a.sh", "export ORDER=a\n");
    hook(d.path(), "20-b.sh", "export ORDER=\"$ORDER,b\"\n");
    let x = d.path().join("30-c");
    fs::write(&x, "#!/bin/sh\n[ \"$ORDER\" = a,b ] || exit 1\n").unwrap();
    fs::set_permissions(&x, fs::Permissions::from_mode(0o755)).unwrap();
    hook(d.path(), "40-d.sh", "export ORDER=\"$ORDER,d\"\n");
    let mut env = Env::from_pairs([("PATH", "/usr/bin:/bin")]);
    hooks::run_dir(d.path(), &mut env, exe()).unwrap();
    assert_eq!(env.get("ORDER").as_deref(), Some("a,b,d"));
}

#[test]
fn sourced_hooks_have_docker_stacks_log_functions() {
    let d = tempfile::tempdir().unwrap();
    let h = hook(
        d.path(),
        "10.sh",
        "for f in _log _log_info _log_warn _log_error _log_fatal; do type \"$f\" >/dev/null || exit 9; done\n\
         _log_info \"from a hook\" 2>/dev/null\nexport HAS_LOG=yes\n",
    );
    let (rc, after) =
        hooks::source(&h, &Env::from_pairs([("PATH", "/usr/bin:/bin")]), exe()).unwrap();
    assert_eq!(rc, 0);
    assert_eq!(after.unwrap().get("HAS_LOG").as_deref(), Some("yes"));
}
