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

#[test]
fn arg_scoping_and_platform_args() {
    same_as_buildkit(
        "args",
        "ARG PRE=pre\nARG GLOBAL_ONLY=g\nFROM {BASE}\nARG PRE\nARG IN=in-${PRE}\nARG UNSET\n\
         ARG GIVEN=default\nARG TARGETARCH\nARG TARGETOS\nARG TARGETPLATFORM\nARG BUILDPLATFORM\n\
         RUN echo \"pre=$PRE in=$IN unset=${UNSET-none} given=$GIVEN global=$GLOBAL_ONLY\" > /args.txt\n\
         RUN echo $TARGETARCH $TARGETOS $TARGETPLATFORM $BUILDPLATFORM > /platform.txt\n\
         ENV FROM_ARG=$IN\n",
        &[],
        &[("GIVEN", "from-cli")],
    );
}

#[test]
fn user_and_workdir() {
    same_as_buildkit(
        "user",
        "FROM {BASE}\n\
         RUN useradd -m -u 1001 alice && useradd -u 1000 -g 100 -m jovyan\n\
         USER alice\nWORKDIR /work/sub\nRUN touch mine && id > /tmp/id.txt && echo $HOME > /tmp/home.txt\n\
         WORKDIR rel/deeper\nUSER 1000:100\nWORKDIR /srv/j\nRUN touch j\nUSER root\nWORKDIR /etc\n",
        &[],
        &[],
    );
}

#[test]
fn shell_cmd_entrypoint_and_config() {
    let Some((_, c)) = same_as_buildkit(
        "config",
        "FROM {BASE}\n\
         SHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\n\
         RUN echo $0 > /shell.txt\n\
         CMD echo hi\n\
         HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --retries=3 CMD curl -f http://localhost/ || exit 1\n\
         EXPOSE 8888 53/udp\nLABEL a=b \"c d\"=\"e f\"\nLABEL old form\n\
         VOLUME [\"/data\"]\nVOLUME /v1 /v2\nSTOPSIGNAL SIGINT\nONBUILD RUN echo triggered\n",
        &[],
        &[],
    ) else {
        return;
    };
    // What both builders agree on, spelled out.
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["/bin/bash", "-o", "pipefail", "-c", "echo hi"])
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(c["Healthcheck"]["StartPeriod"], 60_000_000_000i64);
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo triggered"]));
    assert_eq!(c["StopSignal"], "SIGINT");
    assert!(c["ExposedPorts"].get("53/udp").is_some());
    assert_eq!(c["Labels"]["c d"], "e f");
}

#[test]
fn entrypoint_resets_inherited_cmd() {
    same_as_buildkit(
        "entrypoint",
        "FROM {BASE} AS one\nCMD [\"inherited\"]\nFROM one\nENTRYPOINT [\"/bin/echo\"]\n",
        &[],
        &[],
    );
    same_as_buildkit(
        "entrypoint-cmd",
        "FROM {BASE}\nCMD [\"kept\"]\nENTRYPOINT /bin/echo\nHEALTHCHECK NONE\n",
        &[],
        &[],
    );
}

const FILES: &[common::File<'static>] = &[
    ("a.txt", b"alpha\n", 0o644),
    ("b.txt", b"beta\n", 0o600),
    ("bin/run.sh", b"#!/bin/sh\necho run\n", 0o755),
    ("dir/sub/x", b"x\n", 0o640),
    ("dir/link", b"->sub/x", 0),
    ("s6/cont-init.d/01-x", b"#!/bin/sh\n", 0o644),
    ("s6/services.d/jupyter/run", b"#!/bin/sh\n", 0o644),
];

#[test]
fn copy_modes_globs_dirs_and_links() {
    same_as_buildkit(
        "copy",
        "FROM {BASE}\n\
         COPY a.txt /dst/\nCOPY bin/ /usr/local/bin/\nCOPY dir /opt/dir\nCOPY a.txt renamed.txt\n\
         COPY *.txt /glob/\nWORKDIR /w\nCOPY dir/link linked\nCOPY b.txt a.txt ./two/\n",
        FILES,
        &[],
    );
}

#[test]
fn copy_chown_chmod() {
    same_as_buildkit(
        "chown",
        "FROM {BASE}\n\
         RUN useradd -u 1000 -g 100 -m jovyan\n\
         COPY --chown=jovyan s6/ /etc/s6/\n\
         COPY --chown=1000:100 --chmod=755 a.txt /new/deep/a.sh\n\
         COPY --chmod=755 s6/ /etc\n\
         COPY --chown=1234 b.txt /owned/\n\
         COPY --chown=jovyan:root dir /opt/d\n",
        FILES,
        &[],
    );
}

#[test]
fn dockerignore_and_copy_everything() {
    let mut files = FILES.to_vec();
    files.extend_from_slice(&[
        (
            ".dockerignore",
            b"*.log\n!keep.log\nsecret/\n**/*.tmp\n",
            0o644,
        ),
        ("x.log", b"ignored\n", 0o644),
        ("keep.log", b"kept\n", 0o644),
        ("secret/key", b"k\n", 0o600),
        ("dir/sub/y.tmp", b"t\n", 0o644),
    ]);
    same_as_buildkit("ignore", "FROM {BASE}\nCOPY . /ctx/\n", &files, &[]);
}

#[test]
fn multistage_copy_from_and_unused_stages() {
    same_as_buildkit(
        "stages",
        "FROM {BASE} AS build\n\
         RUN mkdir /out && echo built > /out/b.txt && chown 123:456 /out/b.txt\n\
         FROM {BASE} AS unused\nRUN exit 1\n\
         FROM {BASE}\nCOPY --from=build /out/b.txt /b.txt\nCOPY --from=0 /out /out2\n",
        &[],
        &[],
    );
}

#[test]
fn add_extracts_local_archives() {
    let tgz = {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in [
            ("pkg/one", &b"1\n"[..], 0o644),
            ("pkg/bin/two", b"2\n", 0o755),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    let files: Vec<common::File<'_>> = vec![("files.tar", &tgz, 0o644), ("a.txt", b"a\n", 0o644)];
    same_as_buildkit(
        "add",
        "FROM {BASE}\nADD files.tar /unpacked/\nADD a.txt /added.txt\n",
        &files,
        &[],
    );
}

#[test]
fn run_mounts() {
    same_as_buildkit(
        "mounts",
        "FROM {BASE} AS src\nRUN mkdir /m && echo hello > /m/h\n\
         FROM {BASE}\n\
         RUN --mount=type=bind,from=src,source=/m,target=/mnt cat /mnt/h > /got.txt\n\
         RUN --mount=type=cache,target=/var/cache/thing echo c > /var/cache/thing/c && ls /var/cache/thing > /cache-list.txt\n\
         RUN --mount=type=tmpfs,target=/tmp touch /tmp/gone\n\
         RUN --mount=type=bind,source=dir,target=/srv cat /srv/sub/x > /x-copy.txt\n",
        FILES,
        &[],
    );
}

/// Layer by layer, not flattened: deleting a file and `rm -rf d && mkdir d` give the same
/// whiteout and opaque entries as BuildKit's.
#[test]
fn whiteouts_match_buildkit_layers() {
    let Some(fix) = common::docker_fixture() else {
        return;
    };
    let text = format!(
        "FROM {}\nRUN rm /etc/debian_version\nRUN rm -rf /etc/apt/apt.conf.d && mkdir /etc/apt/apt.conf.d\n",
        fix.base
    );
    let ctx = common::context(&text, &[]);
    let ours = common::nbrt_build(&fix.store, ctx.path(), "nbrt-oracle/wh:nbrt", &[], None)
        .unwrap()
        .1;
    let theirs =
        common::buildkit_build(&fix.store, ctx.path(), "nbrt-oracle/wh:buildkit", &[], None)
            .unwrap();
    for layer in 0..2 {
        let a = common::layer_entries(&fix.store, &ours, layer);
        let b = common::layer_entries(&fix.store, &theirs, layer);
        assert_eq!(a, b, "layer {layer} from the top differs");
        assert!(
            a.iter()
                .any(|e| e.contains("Whiteout") || e.contains("Opaque")),
            "{a:?}"
        );
    }
}

/// FROM finds an image that only the Docker engine has (read through its API).
#[test]
fn from_an_image_only_docker_has() {
    let Some(fix) = common::docker_fixture() else {
        return;
    };
    let tag = format!("nbrt-oracle/engine-only:{}", std::process::id());
    let parent = common::context(
        &format!("FROM {}\nRUN echo engine > /engine.txt\n", fix.base),
        &[],
    );
    let out = std::process::Command::new(common::DOCKER)
        .env("DOCKER_BUILDKIT", "1")
        .args(["build", "-q", "-t", &tag])
        .arg(parent.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fix.store.resolve(&tag).is_err());
    let child = common::context(
        &format!("FROM {tag}\nRUN cat /engine.txt > /seen.txt\n"),
        &[],
    );
    let built = common::nbrt_build(
        &fix.store,
        child.path(),
        "nbrt-oracle/engine-child:nbrt",
        &[],
        None,
    );
    let _ = std::process::Command::new(common::DOCKER)
        .args(["rmi", "-f", &tag])
        .output();
    let image = built.unwrap().1;
    let tree = common::tree(&fix.store, &image);
    assert_eq!(tree["seen.txt"], tree["engine.txt"]);
    assert!(
        fix.store.resolve(&tag).is_ok(),
        "the engine's image is now in the store"
    );
}

#[test]
fn copy_and_mount_from_an_image() {
    same_as_buildkit(
        "from-image",
        "FROM {BASE}\nCOPY --from={BASE} /etc/debian_version /dv\n\
         RUN --mount=type=bind,from={BASE},source=/etc,target=/baseetc cat /baseetc/debian_version > /mounted\n",
        &[],
        &[],
    );
}

/// Symlinks in the context resolve inside it: one to `/etc` means the context's `etc`.
#[test]
fn context_symlinks_stay_inside_the_context() {
    same_as_buildkit(
        "ctx-links",
        "FROM {BASE}\nCOPY abs/passwd /from-abs\nCOPY sub/rel/passwd /from-rel\n",
        &[
            ("abs", b"->/etc", 0),
            ("etc/passwd", b"the context's own passwd\n", 0o644),
            ("sub/rel", b"->../etc", 0),
        ],
        &[],
    );
}

/// Variables in every instruction that expands them.
#[test]
fn expansion_in_every_instruction() {
    same_as_buildkit(
        "expand",
        "FROM {BASE}\nARG PORT=8888 DIR=/srv/app OWNER=1000:100\n\
         ENV EMPTY= ALSO=\"\" NAME=app\nLABEL org.example.name=$NAME \"port\"=${PORT}\n\
         WORKDIR $DIR\nCOPY --chown=$OWNER a.txt ${DIR}/${NAME}.txt\nEXPOSE $PORT\n\
         VOLUME $DIR/data\nSTOPSIGNAL ${SIG:-SIGQUIT}\nUSER ${OWNER}\n",
        FILES,
        &[],
    );
}

#[test]
fn from_scratch() {
    same_as_buildkit(
        "scratch",
        "FROM scratch\nCOPY bin/ /bin/\nCOPY a.txt /\nCMD [\"/bin/run.sh\"]\n",
        FILES,
        &[],
    );
}

/// Destinations through the image's symlinks (merged /usr: /bin → usr/bin), files over
/// files, a stage's config inherited, ENV over ARG, named users and groups.
#[test]
fn symlinked_destinations_and_inheritance() {
    same_as_buildkit(
        "links-inherit",
        "FROM {BASE} AS parent\nSHELL [\"/bin/bash\", \"-c\"]\nENV PATH=/opt/bin:$PATH\n\
         RUN useradd -m -u 1000 -g 100 jovyan\nUSER jovyan:users\nWORKDIR /home/jovyan/work\n\
         HEALTHCHECK CMD [\"/bin/true\"]\n\
         FROM parent\nARG V=from-arg\nENV V=from-env\nRUN echo $V > /home/jovyan/v && echo $0 >> /home/jovyan/v\n\
         USER root\nCOPY bin/run.sh /bin/\nCOPY a.txt /etc/hostname\nWORKDIR /lib/nbrt-test\n\
         COPY --chown=jovyan:users dir /home/jovyan/deep/er/dir\n",
        FILES,
        &[],
    );
}

/// ADD from a URL (served by the test on loopback): the file's name, mode and owner.
#[test]
fn add_from_a_url() {
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("data.txt"), b"served\n").unwrap();
    let url = nbrt_testkit::serve_dir(served.path());
    same_as_buildkit(
        "add-url",
        &format!("FROM {{BASE}}\nADD {url}/data.txt /opt/\nADD {url}/data.txt /opt/renamed.txt\n"),
        &[],
        &[],
    );
}

/// `RUN --mount=type=secret` against `docker build --secret` (Debian's BuildKit has it
/// offline): the default target `/run/secrets/<id>` (0400 root), `target`, `mode`, `uid`,
/// `gid`, a read-only tmpfs; a secret not given is left out; nothing of it in a layer (the
/// `/run/secrets` directory made for the mount stays, as in BuildKit); the cache keys the
/// id, not the value.
#[test]
fn run_mount_secret() {
    let Some(fix) = common::docker_fixture() else {
        return;
    };
    const VALUE: &[u8] = b"s3cr3t-value-for-the-oracle";
    let df = format!(
        "FROM {}\n\
         RUN --mount=type=secret,id=tok sha256sum /run/secrets/tok | cut -c1-16 > /got \\\n\
          && stat -c '%a %u %g %s %n' /run/secrets /run/secrets/tok > /stat \\\n\
          && (echo x > /run/secrets/tok) 2>/dev/null || echo read-only > /ro\n\
         RUN --mount=type=secret,id=tok,target=/etc/app.conf,mode=0440,uid=1000,gid=100 \\\n\
          stat -c '%a %u %g %s' /etc/app.conf > /stat2 && grep -c s3cr3t /etc/app.conf > /got2\n\
         RUN --mount=type=secret,id=absent ls -A /run/secrets > /absent\n\
         RUN --mount=type=secret,id=tok,required=true wc -c < /run/secrets/tok > /size\n",
        fix.base
    );
    let ctx = common::context(&df, &[]);
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("tok");
    std::fs::write(&secret_file, VALUE).unwrap();
    let ours = common::nbrt_build_with_secrets(
        &fix.store,
        ctx.path(),
        "nbrt-oracle/secret:nbrt",
        &[],
        None,
        &[("tok", VALUE)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let theirs = common::buildkit_build_with(
        &fix.store,
        ctx.path(),
        "nbrt-oracle/secret:buildkit",
        &[],
        None,
        &["--secret", &format!("id=tok,src={}", secret_file.display())],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let diffs = common::differences(&fix.store, &ours.1, &theirs);
    assert!(
        diffs.is_empty(),
        "nbrt and BuildKit differ:\n{}",
        diffs.join("\n")
    );
    let tree = common::tree(&fix.store, &ours.1);
    assert!(tree.contains_key("run/secrets") && !tree.contains_key("run/secrets/tok"));
    assert!(!tree.contains_key("etc/app.conf"));
    // No layer holds the value.
    let flat = nbrt_oci::layer::flatten::flatten(
        &ours.1,
        &fix.store,
        Vec::new(),
        &nbrt_oci::Progress::hidden(),
    )
    .unwrap();
    assert!(!flat.windows(VALUE.len()).any(|w| w == VALUE));
    // Another value keeps the cache (BuildKit keys the id).
    let again = common::nbrt_build_with_secrets(
        &fix.store,
        ctx.path(),
        "nbrt-oracle/secret:nbrt",
        &[],
        None,
        &[("tok", b"another value")],
    )
    .unwrap();
    assert!(again.0.ran().is_empty(), "{:?}", again.0.steps);
    assert_eq!(again.1.digest(), ours.1.digest());
}

/// A directory inside a COPY that the image has already takes the copied directory's mode
/// and the copy's owner; the destination directory itself keeps its own.
#[test]
fn copy_over_existing_subdirectories() {
    same_as_buildkit(
        "copy-existing",
        "FROM {BASE}\n\
         RUN mkdir -p /dst/sub /dst/other && chmod 700 /dst/other && chmod 750 /dst\n\
         COPY --chown=1000:100 tree/ /dst\n\
         COPY --chmod=711 tree/ /dst\n",
        &[("tree/sub/f", b"x", 0o644), ("tree/other/g", b"y", 0o600)],
        &[],
    );
}
