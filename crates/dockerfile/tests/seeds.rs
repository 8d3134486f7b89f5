//! The seeds' Dockerfiles, verbatim but for the base image name, built by nbrt and by
//! BuildKit and compared; nbrt's image then runs in Docker. The bases stand in for images
//! users own: minbase with a stand-in `conda` (nbrt's conda is not in this base), or a
//! kernel-image-like base (user jovyan 1000:100, `NB_UID`, a stand-in `pip`, `USER 1000`).

mod common;

use std::process::Command;

const CONDA_STUB: &[u8] = b"#!/bin/sh\n\
# Stand-in for conda: records what it was asked to install.\n\
mkdir -p /opt/conda/conda-meta\n\
case \"$1\" in\n\
  install) shift; for a in \"$@\"; do case \"$a\" in -*) ;; *) echo \"$a\" >> /opt/conda/conda-meta/installed ;; esac; done ;;\n\
  clean) rm -rf /opt/conda/pkgs ;;\n\
esac\n";

const PIP_STUB: &[u8] = b"#!/bin/sh\n\
# Stand-in for pip: records what it was asked to install.\n\
shift; echo \"$@\" >> /usr/local/lib/pip-installed\n";

/// A base built by nbrt from `dockerfile` (on minbase), named the same in the store and in
/// Docker; returns that name.
fn stub_base(name: &str, dockerfile: &str, files: &[common::File<'_>]) -> Option<String> {
    let fix = common::docker_fixture()?;
    let ctx = common::context(&dockerfile.replace("{BASE}", &fix.base), files);
    let (_, image) = common::nbrt_build(
        &fix.store,
        ctx.path(),
        &format!("nbrt-test/{name}:latest"),
        &[],
        None,
    )
    .unwrap_or_else(|e| panic!("building the stand-in base {name}: {e}"));
    let tag = format!("nbrt-test/{name}:{}", &image.digest().hex()[..12]);
    fix.store
        .tag(&image, &nbrt_oci::ImageName::parse(&tag).unwrap())
        .unwrap();
    nbrt_testkit::stock::load_into_docker(&fix.store, &tag, &format!("nbrt-test/{name}"))
}

fn conda_base() -> Option<String> {
    stub_base(
        "df-conda-standin",
        "FROM {BASE}\nCOPY conda /usr/local/bin/conda\nRUN mkdir -p /opt/conda/pkgs/cache\n",
        &[("conda", CONDA_STUB, 0o755)],
    )
}

/// Load nbrt's image into Docker and run `sh -c script` in it; returns stdout.
fn run_in_docker(image: &nbrt_oci::Image, repo: &str, script: &str) -> String {
    let fix = common::docker_fixture().unwrap();
    let tag = format!("{repo}:{}", &image.digest().hex()[..12]);
    fix.store
        .tag(image, &nbrt_oci::ImageName::parse(&tag).unwrap())
        .unwrap();
    let tag = nbrt_testkit::stock::load_into_docker(&fix.store, &tag, repo).unwrap();
    let out = Command::new(common::DOCKER)
        .args(["run", "--rm", "--entrypoint", "/bin/sh", &tag, "-c", script])
        .output()
        .unwrap();
    let _ = Command::new(common::DOCKER).args(["rmi", &tag]).output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Seed 000: graphviz added to an ArcGIS runtime.
#[test]
fn seed_000_graphviz() {
    let Some(base) = conda_base() else { return };
    let df = "# Specify the existing notebook runtime imageId as FROM\n\
              FROM arcgis-notebook-python-advanced:\n\
              RUN conda install graphviz \\\n  && conda clean -y -a\n"
        .replace("arcgis-notebook-python-advanced:", &base);
    let Some((image, _)) = common::same_as_buildkit("seed000-graphviz", &df, &[], &[]) else {
        return;
    };
    let out = run_in_docker(
        &image,
        "nbrt-test/seed000-graphviz",
        "cat /opt/conda/conda-meta/installed; ls /opt/conda",
    );
    assert_eq!(out, "graphviz\nconda-meta\n");
}

/// Seed 000: the arcgis_dl_backbones package installed offline from a file in the context.
#[test]
fn seed_000_backbones() {
    let Some(base) = conda_base() else { return };
    let df = "FROM arcgis-notebook-python-standard:\n\
              USER root\n\
              RUN mkdir -p /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              WORKDIR /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              COPY arcgis_dl_backbones-2.0.1-py_0.tar.bz2 /home/user/DUMP/arcgis_dl_backbones-2.0.1\n\
              RUN conda install --offline arcgis_dl_backbones-2.0.1-py_0.tar.bz2 -y\n\
              RUN conda clean -y -a\n"
        .replace("arcgis-notebook-python-standard:", &base);
    let files: &[common::File<'_>] = &[(
        "arcgis_dl_backbones-2.0.1-py_0.tar.bz2",
        b"BZh91AY&SY test package file",
        0o644,
    )];
    let Some((image, config)) = common::same_as_buildkit("seed000-backbones", &df, files, &[])
    else {
        return;
    };
    assert_eq!(config["User"], "root");
    assert_eq!(
        config["WorkingDir"],
        "/home/user/DUMP/arcgis_dl_backbones-2.0.1"
    );
    let out = run_in_docker(
        &image,
        "nbrt-test/seed000-backbones",
        "ls /home/user/DUMP/arcgis_dl_backbones-2.0.1; cat /opt/conda/conda-meta/installed",
    );
    assert_eq!(
        out,
        "arcgis_dl_backbones-2.0.1-py_0.tar.bz2\narcgis_dl_backbones-2.0.1-py_0.tar.bz2\n"
    );
}

fn kernel_base() -> Option<String> {
    stub_base(
        "df-kernel-standin",
        "FROM {BASE}\nRUN useradd -u 1000 -g 100 -m -s /bin/bash jovyan\n\
         COPY pip /usr/local/bin/pip\nENV NB_UID=1000 NB_USER=jovyan\nUSER 1000\n\
         WORKDIR /home/jovyan\nCMD [\"/bin/sh\"]\n",
        &[("pip", PIP_STUB, 0o755)],
    )
}

/// Seed 001: the documented extension fails at its USER line (the comment is part of the
/// user name); the corrected form builds.
#[test]
fn seed_001_kernel_image_extension() {
    let Some(base) = kernel_base() else { return };
    let fix = common::docker_fixture().unwrap();
    let documented = "FROM elyra/kernel-py:VERSION\n\n\
                      USER root  # switch to root user to perform installation (if necessary)\n\n\
                      RUN pip install my-libraries\n\n\
                      USER $NB_UID  # switch back to the jovyan user\n"
        .replace("elyra/kernel-py:VERSION", &base);
    let ctx = common::context(&documented, &[]);
    let err = common::nbrt_build(&fix.store, ctx.path(), "nbrt-test/seed001-bad:x", &[], None)
        .unwrap_err();
    assert!(
        err.starts_with(
            "Dockerfile:3: USER root  # switch to root user to perform installation (if necessary): \
             unable to find user root  # switch"
        ),
        "{err}"
    );
    assert!(err.contains("a comment after an instruction is part of it in Dockerfiles"));
    // BuildKit refuses it too.
    assert!(common::buildkit_build(
        &fix.store,
        ctx.path(),
        "nbrt-test/seed001-bad:bk",
        &[],
        None
    )
    .is_err());

    let corrected = "FROM elyra/kernel-py:VERSION\n\nUSER root\n\nRUN pip install my-libraries\n\nUSER $NB_UID\n"
        .replace("elyra/kernel-py:VERSION", &base);
    let Some((image, config)) = common::same_as_buildkit("seed001", &corrected, &[], &[]) else {
        return;
    };
    assert_eq!(config["User"], "1000");
    let out = run_in_docker(
        &image,
        "nbrt-test/seed001",
        "id -u; cat /usr/local/lib/pip-installed",
    );
    assert_eq!(out, "1000\nmy-libraries\n");
}

/// A Kubeflow-style jupyter image: ARG, TARGETARCH, old-form ENV, SHELL, COPY --chown and
/// --chmod of s6 files, USER $NB_UID, ENTRYPOINT.
#[test]
fn kubeflow_style_jupyter() {
    let Some(fix) = common::docker_fixture() else {
        return;
    };
    let df = format!(
        "ARG BASE_IMG={}\n\
FROM $BASE_IMG\n\
\n\
ARG TARGETARCH\n\
\n\
USER root\n\
\n\
# common environment variables\n\
ENV NB_USER jovyan\n\
ENV NB_UID 1000\n\
ENV NB_PREFIX /\n\
ENV HOME /home/$NB_USER\n\
ENV SHELL /bin/bash\n\
\n\
# set shell to bash\n\
SHELL [\"/bin/bash\", \"-c\"]\n\
\n\
# s6 for this architecture\n\
RUN case \"${{TARGETARCH}}\" in \\\n\
      amd64) S6_ARCH=\"x86_64\" ;; \\\n\
      arm64) S6_ARCH=\"aarch64\" ;; \\\n\
      ppc64le) S6_ARCH=\"ppc64le\" ;; \\\n\
      *) echo \"Unsupported architecture: ${{TARGETARCH}}\"; exit 1 ;; \\\n\
    esac \\\n\
 && echo \"$S6_ARCH\" > /etc/s6-arch\n\
\n\
# create user and set required ownership\n\
RUN useradd -M -s /bin/bash -N -u ${{NB_UID}} ${{NB_USER}} \\\n\
 && mkdir -p ${{HOME}} \\\n\
 && chown -R ${{NB_USER}}:users ${{HOME}} \\\n\
 && chown -R ${{NB_USER}}:users /usr/local/bin\n\
\n\
# copy s6-overlay scripts\n\
COPY --chown=${{NB_USER}}:users --chmod=755 s6/ /etc\n\
COPY --chown=${{NB_USER}}:users start.sh /usr/local/bin/\n\
\n\
USER $NB_UID\n\
WORKDIR $HOME\n\
EXPOSE 8888\n\
ENTRYPOINT [\"/init\"]\n",
        fix.base
    );
    let files: &[common::File<'_>] = &[
        (
            "s6/cont-init.d/01-copy-tmp-home",
            b"#!/command/with-contenv bash\necho home\n",
            0o644,
        ),
        (
            "s6/services.d/jupyterlab/run",
            b"#!/command/with-contenv bash\nexec jupyter lab\n",
            0o644,
        ),
        ("start.sh", b"#!/bin/sh\n", 0o755),
    ];
    let Some((image, config)) = common::same_as_buildkit("kubeflow", &df, files, &[]) else {
        return;
    };
    assert_eq!(config["User"], "1000");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/init"]));
    let tree = common::tree(&fix.store, &image);
    let run = &tree["etc/services.d/jupyterlab/run"];
    assert_eq!((run.mode, run.uid, run.gid), (0o755, 1000, 100));
    assert_eq!(
        tree["etc"].uid, 0,
        "an existing destination keeps its owner"
    );
    let out = run_in_docker(&image, "nbrt-test/kubeflow", "cat /etc/s6-arch; id -u");
    assert!(
        out.ends_with("\n1000\n") && !out.starts_with("Unsupported"),
        "{out}"
    );
}
