//! `nbrt build` in Dockerfile mode: `-f`, `-t`, `--build-arg`, `--target`, `--json`, a
//! Dockerfile found as CONTEXT/Dockerfile, and the runtime-file mode left as it was.

use std::path::Path;
use std::process::{Command, Output};

fn nbrt(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("running nbrt")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn build_from_a_dockerfile() {
    if !nbrt_testkit::require("runc", &["--version"], "runc") {
        return;
    }
    let Some(rootfs) = nbrt_testkit::minbase_rootfs() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let rootfs = rootfs.to_string_lossy().into_owned();
    ok(
        nbrt(s, &["import", &rootfs, "-t", "minbase:test"]),
        "import",
    );
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM minbase:test AS first\nARG WHO=nobody\nRUN echo $WHO > /who\n\
         FROM first AS second\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    std::fs::write(c.join("hello.txt"), "hello\n").unwrap();
    let ctx_str = c.to_string_lossy().into_owned();
    let df = c.join("Dockerfile").to_string_lossy().into_owned();

    // -f, -t, --build-arg, --target, --json.
    let out = ok(
        nbrt(
            s,
            &[
                "build",
                "-f",
                &df,
                &ctx_str,
                "-t",
                "app:one",
                "--build-arg",
                "WHO=me",
                "--target",
                "first",
                "--json",
            ],
        ),
        "build -f",
    );
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    assert_eq!(report["tags"][0], "app:one");
    assert_eq!(
        report["steps"].as_array().unwrap().len(),
        1,
        "only the target stage: {report}"
    );

    // The Dockerfile found in the context; the cache serves the first stage.
    let out = ok(
        nbrt(
            s,
            &[
                "build",
                &ctx_str,
                "-t",
                "app:two",
                "--build-arg",
                "WHO=me",
                "--json",
            ],
        ),
        "build CONTEXT",
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["cached"], true);
    assert_eq!(steps[1]["cached"], false);
    let images = ok(nbrt(s, &["images"]), "images");
    assert!(images.contains("app") && images.contains("two"), "{images}");

    // A bad Dockerfile: a line-numbered error, exit status non-zero.
    std::fs::write(c.join("Bad.Dockerfile"), "FROM minbase:test\nNOPE x\n").unwrap();
    let bad = c.join("Bad.Dockerfile").to_string_lossy().into_owned();
    let out = nbrt(s, &["build", "-f", &bad, &ctx_str, "-t", "app:bad"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Bad.Dockerfile:2:"), "{err}");

    // --secret, from a variable and from a file: the RUN sees it, the image does not.
    std::fs::write(
        c.join("Secret.Dockerfile"),
        "FROM minbase:test\nRUN --mount=type=secret,id=a --mount=type=secret,id=b,target=/b \\\n    \
         cat /run/secrets/a /b | wc -c > /n\n",
    )
    .unwrap();
    let secret_file = c.join("b.secret");
    std::fs::write(&secret_file, "from a file").unwrap();
    let sdf = c.join("Secret.Dockerfile").to_string_lossy().into_owned();
    let out = Command::new(env!("CARGO_BIN_EXE_nbrt"))
        .arg("--store")
        .arg(s)
        .args([
            "build",
            "-f",
            &sdf,
            &ctx_str,
            "-t",
            "app:secret",
            "--secret",
            "id=a,env=NBRT_TEST_SECRET",
        ])
        .arg("--secret")
        .arg(format!("id=b,src={}", secret_file.display()))
        .env("NBRT_TEST_SECRET", "from a variable")
        .output()
        .unwrap();
    ok(out, "build --secret");
    let out = nbrt(
        s,
        &[
            "build", "-f", &sdf, &ctx_str, "-t", "app:bad", "--secret", "a",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--secret \"a\": \"a\" is not KEY=VALUE"),
        "{err}"
    );

    // Without a name, Dockerfile mode asks for one.
    let out = nbrt(s, &["build", &ctx_str]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("-t NAME"));
}

/// `nbrt convert`: the runtime file written with `-o` (and printed without), with the
/// report of what each line became; `nbrt build -f` never converts.
#[test]
fn convert_a_dockerfile() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    std::fs::write(
        c.join("Dockerfile"),
        "FROM some/kernel:1\nUSER root\nRUN pip install my-libraries\nRUN make\nUSER 1000\n",
    )
    .unwrap();
    let df = c.join("Dockerfile").to_string_lossy().into_owned();
    let rt = c.join("runtime.toml");
    let out = ok(
        nbrt(
            s,
            &["convert", &df, "-o", &rt.to_string_lossy(), "--name", "ext"],
        ),
        "convert -o",
    );
    assert!(
        out.contains("line 3   RUN pip install my-libraries\n         -> [pip]"),
        "{out}"
    );
    assert!(
        out.contains("-> [[run]]: stayed a RUN: `make` is not a package install"),
        "{out}"
    );
    let written = std::fs::read_to_string(&rt).unwrap();
    assert!(written.contains("name = \"ext\""), "{written}");
    assert!(written.contains("[pip]"), "{written}");

    // Printed: the runtime file on stdout, the report on stderr.
    let printed = nbrt(s, &["convert", &df, "--name", "ext"]);
    let stdout = ok(printed.clone(), "convert");
    assert_eq!(stdout.trim_end(), written.trim_end());
    assert!(String::from_utf8_lossy(&printed.stderr).contains("-> [pip]"));

    // The documented seed-001 form fails at its USER line.
    std::fs::write(
        c.join("Documented"),
        "FROM some/kernel:1\n\nUSER root  # switch to root user to perform installation (if necessary)\n\nRUN pip install my-libraries\n",
    )
    .unwrap();
    let bad = c.join("Documented").to_string_lossy().into_owned();
    let out = nbrt(s, &["convert", &bad]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Documented:3: USER root  # switch"), "{err}");
    assert!(
        err.contains("a comment after an instruction is part of it"),
        "{err}"
    );
}
