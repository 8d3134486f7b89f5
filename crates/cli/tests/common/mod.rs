//! Running the nbrt binary from the CLI's integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `nbrt --store STORE ARGS…`, with the static builtins that stock images carry (nbrt-init,
/// nbrt-conda).
pub fn nbrt(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(store)
        .args(args)
        .envs(nbrt_testkit::builtin_envs())
        .output()
        .expect("running nbrt")
}

/// The command's stdout; panics with its output when it failed. The end of stderr (where
/// the error is) comes first: CI logs keep only part of a long message.
pub fn ok(out: Output, what: &str) -> String {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        panic!(
            "{what} failed ({}); last lines of stderr:\n{tail}\n--- whole stderr:\n{stderr}\n--- stdout:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nbrt` as on a second machine: a hostname of its own (a UTS namespace, `unshare -u`) and a
/// clock three days ahead (faketime), with the static builtins and no `SOURCE_DATE_EPOCH`.
/// Needs root, util-linux and faketime.
pub fn nbrt_on_second_machine() -> Command {
    let mut c = Command::new("unshare");
    c.args(["-u", "sh", "-c"]).arg(
        "hostname nbrt-other-machine && [ \"$(hostname)\" = nbrt-other-machine ] && \
         exec faketime -f +3d \"$@\"",
    );
    c.arg("sh").arg(env!("CARGO_BIN_EXE_nbrt"));
    // libfaketime also shifts the times stat reports of every file (tar's, dpkg's, nbrt's),
    // which a machine with another clock does not do: only the clock moves.
    c.env("NO_FAKE_STAT", "1");
    c.envs(nbrt_testkit::builtin_envs());
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}
