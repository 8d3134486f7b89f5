//! Building a small stack end to end without a Docker daemon (runc, overlayfs), then
//! checking the cache and running the result in Docker.

mod common;

use std::time::Instant;

use common::{can_build, docker_run, write};
use nbrt_build::builder::{build_stack, BuildOptions};
use nbrt_build::stack::Stack;
use nbrt_oci::{Progress, Store};

#[test]
fn builds_a_stack_caches_steps_and_runs_in_docker() {
    let Some(rootfs) = can_build() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack");
    write(
        &stack.join("base/runtime.toml"),
        &format!(
            r#"
name = "base"
from = "{}"
[user]
owns = ["/opt/conda"]
[[files]]
source = "hello.sh"
destination = "/usr/local/bin/"
mode = "0755"
[[run]]
command = "echo built > /etc/built-by-nbrt"
[env]
GREETING = "hello from nbrt"
[image]
cmd = ["/usr/local/bin/hello.sh"]
user = "1000"
"#,
            rootfs.display()
        ),
    );
    write(
        &stack.join("base/hello.sh"),
        "#!/bin/sh\necho \"$GREETING as $(id -u)\"\n",
    );
    write(
        &stack.join("child/runtime.toml"),
        "name = \"child\"\nfrom = \"base\"\n[[run]]\ncommand = \"id -u > /opt/conda/who\"\nuser = \"jovyan\"\n\
         [[files]]\nsource = \"note.txt\"\ndestination = \"/opt/conda/etc/extra/note.txt\"\n",
    );
    write(&stack.join("child/note.txt"), "a note\n");
    let store = Store::open(tmp.path().join("store")).unwrap();
    let build = |log: &mut Vec<u8>| {
        let s = Stack::load(&stack, &store).unwrap();
        build_stack(
            &store,
            &s,
            None,
            &BuildOptions::default(),
            &Progress::hidden(),
            log,
        )
        .unwrap()
    };
    let mut log = Vec::new();
    let first = build(&mut log);
    assert_eq!(first.len(), 2);
    assert!(first.iter().flat_map(|r| &r.steps).all(|s| !s.cached));
    let child = store.resolve("child:latest").unwrap().image;
    nbrt_oci::validate(&child, &store).unwrap();
    let flat =
        nbrt_oci::layer::flatten::flatten(&child, &store, Vec::new(), &Progress::hidden()).unwrap();
    let mut seen = std::collections::BTreeMap::new();
    nbrt_oci::layer::reader::for_each_entry(&flat[..], |e, data| {
        let mut s = String::new();
        std::io::Read::read_to_string(data, &mut s).ok();
        seen.insert(e.path.clone(), (e.uid, e.mode, s));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen["etc/built-by-nbrt"].2, "built\n");
    // A file under jovyan's environment leaves it jovyan's, and the directories made for it
    // are jovyan's too.
    for dir in ["opt/conda", "opt/conda/etc", "opt/conda/etc/extra"] {
        assert_eq!(seen[dir].0, 1000, "{dir}: {:?}", seen[dir]);
    }
    assert_eq!(seen["opt/conda/etc/extra/note.txt"].2, "a note\n");
    assert_eq!(seen["opt/conda/who"].2, "1000\n");
    assert_eq!(seen["usr/local/bin/hello.sh"].1, 0o755);
    assert_eq!(seen["home/jovyan"].0, 1000);
    assert!(seen["etc/passwd"].2.contains("jovyan:x:1000:100:"));

    // Nothing changed: every step from the cache, well under a second.
    let t = Instant::now();
    let again = build(&mut log);
    let took = t.elapsed();
    assert!(again.iter().flat_map(|r| &r.steps).all(|s| s.cached));
    assert_eq!(again[1].id, first[1].id, "same image ID");
    eprintln!("cached rebuild of the stack: {took:?}");

    // One changed file rebuilds that step and what follows, not the user step before it.
    write(
        &stack.join("base/hello.sh"),
        "#!/bin/sh\necho \"$GREETING (v2) as $(id -u)\"\n",
    );
    let third = build(&mut log);
    let cached: Vec<bool> = third[0].steps.iter().map(|s| s.cached).collect();
    assert_eq!(cached, [true, false, false], "{:?}", third[0].steps);
    assert!(third[1].steps.iter().all(|s| !s.cached));

    // The image runs in Docker with its config.
    if nbrt_testkit::require_docker() {
        assert_eq!(
            docker_run(&store, "child:latest", &[]),
            "hello from nbrt (v2) as 1000\n"
        );
    }
}
