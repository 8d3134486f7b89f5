//! The R stack (`stacks/r-tidyverse`): Debian's R, IRkernel and tidyverse on jupyter, the
//! part of Kubeflow's rstudio-tidyverse image that can be built here (Posit's RStudio Server
//! package is not reachable; `docs/rstudio.md` adds it from a package file). Built into the
//! shared stock store, then run in Docker: R starts, the tidyverse loads, and an R kernel
//! computes over Jupyter's REST and websocket API.

use std::time::{Duration, Instant};

use nbrt_testkit::container::Container;
use serde_json::Value;

mod common;
use common::{nbrt, ok};

/// The sizes of `image`'s layers (compressed, as stored).
fn layer_sizes(store: &std::path::Path, image: &str) -> Vec<u64> {
    let out = ok(nbrt(store, &["inspect", "--json", image]), "nbrt inspect");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .collect()
}

#[test]
fn r_tidyverse_runs_r_the_tidyverse_and_an_r_kernel() {
    let started = Instant::now();
    let Some(store) = nbrt_testkit::stock::store_with("r-tidyverse") else {
        return;
    };
    let built = started.elapsed();
    let store = store.root().to_path_buf();
    // CI's time and disk are tight: what this stack costs is in the test log. The build
    // time includes base and jupyter when no earlier test of the run built them.
    let (jupyter, r) = (
        layer_sizes(&store, "jupyter:latest"),
        layer_sizes(&store, "r-tidyverse:latest"),
    );
    assert_eq!(r[..jupyter.len()], jupyter[..], "r-tidyverse is on jupyter");
    let added: u64 = r[jupyter.len()..].iter().sum();
    eprintln!(
        "r-tidyverse: built in {:.1} s; {} layers on jupyter, {:.0} MiB compressed",
        built.as_secs_f64(),
        r.len() - jupyter.len(),
        added as f64 / 1048576.0
    );
    for profile in ["kubeflow", "docker-stacks"] {
        ok(
            nbrt(
                &store,
                &["check", "--profile", profile, "r-tidyverse:latest"],
            ),
            &format!("nbrt check --profile {profile} r-tidyverse"),
        );
    }

    let Some(image) = nbrt_testkit::stock::docker_image("r-tidyverse") else {
        return;
    };
    // Needed by no other test: out of the engine when this one ends (dropped after the
    // container, declared before it).
    let _removed = nbrt_testkit::stock::RemovedFromDocker(image.clone());
    let size = ok(
        std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Size}}", &image])
            .output()
            .unwrap(),
        "docker image inspect",
    );
    eprintln!(
        "r-tidyverse: {:.0} MiB in Docker",
        size.trim().parse::<f64>().unwrap() / 1048576.0
    );

    let (c, jupyter) = Container::jupyter(&image);
    // R itself, as the notebook user, and the tidyverse's members from Debian.
    let version = c.exec(&["R", "--version"]);
    assert!(version.starts_with("R version 4."), "{version}");
    let loaded = c.exec(&[
        "Rscript",
        "-e",
        "suppressPackageStartupMessages(library(tidyverse)); \
         cat(format(packageVersion('tidyverse')), format(packageVersion('dplyr')), \
         format(packageVersion('ggplot2')), sep = '\\n')",
    ]);
    assert_eq!(loaded.lines().count(), 3, "{loaded}");

    // The IR kernel is registered in the image's Jupyter, beside Python's.
    let specs = jupyter.get("/api/kernelspecs").unwrap().json().unwrap();
    assert_eq!(
        specs["kernelspecs"]["ir"]["spec"]["language"], "R",
        "{specs}"
    );
    assert!(specs["kernelspecs"]["python3"].is_object(), "{specs}");

    let kernel = jupyter.start_kernel_named("ir").unwrap();
    let run = jupyter
        .execute(
            &kernel,
            "suppressPackageStartupMessages(library(tidyverse))\n\
             df <- tibble(g = c('a', 'b', 'a', 'b'), x = c(1, 2, 3, 4))\n\
             s <- df %>% group_by(g) %>% summarise(total = sum(x))\n\
             cat(format(packageVersion('tidyverse')), '\\n')\n\
             cat(paste(s$g, s$total, sep = '=', collapse = ','), '\\n')\n\
             cat(R.version$major, '\\n')",
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("{e}\ncontainer log:\n{}", c.logs()));
    assert_eq!(run.error, None, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [loaded.lines().next().unwrap(), "a=4,b=6", "4"],
        "the kernel's tidyverse is the one R loads, and the sums: {run:?}"
    );
    eprintln!(
        "r-tidyverse: test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The fenced block (```` ```lang ````) that follows `heading` in `doc`.
fn block_after<'a>(doc: &'a str, heading: &str, lang: &str) -> &'a str {
    let rest = &doc[doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading:?} in the page"))..];
    let open = format!("```{lang}\n");
    let start = rest
        .find(&open)
        .unwrap_or_else(|| panic!("a {lang} block after {heading:?}"))
        + open.len();
    &rest[start..start + rest[start..].find("```").unwrap()]
}

/// A stand-in for Posit's package (which these machines cannot download): a `.deb` named
/// rstudio-server that depends on a Debian package Posit's depends on too (psmisc), whose
/// `rserver` records who runs it with which arguments and serves HTTP on `--www-port`.
fn stand_in_deb(dir: &std::path::Path) -> std::path::PathBuf {
    let pkg = dir.join("pkg");
    let bin = pkg.join("usr/lib/rstudio-server/bin");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(pkg.join("etc/rstudio")).unwrap();
    std::fs::write(pkg.join("etc/rstudio/rserver.conf"), "").unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        "Package: rstudio-server\nVersion: 0.0.0+nbrttest\nArchitecture: amd64\n\
         Maintainer: nbrt tests <nobody@example.invalid>\nDepends: psmisc\n\
         Description: stand-in for RStudio Server in nbrt's tests\n",
    )
    .unwrap();
    let rserver = bin.join("rserver");
    std::fs::write(
        &rserver,
        "#!/bin/bash\nport=8787\n\
         for a in \"$@\"; do case \"$a\" in --www-port=*) port=${a#--www-port=};; esac; done\n\
         { id -un; echo \"USER=$USER\"; printf '%s\\n' \"$@\"; } > /var/lib/rstudio-server/args\n\
         cd /var/lib/rstudio-server && exec python3 -m http.server --bind 0.0.0.0 \"$port\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rserver, std::fs::Permissions::from_mode(0o755)).unwrap();
    let deb = dir.join("rstudio-server.deb");
    let out = std::process::Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("--build")
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    ok(out, "dpkg-deb --build");
    deb
}

/// docs/rstudio.md's runtime file and service script, taken from the page as written, with
/// a stand-in package for Posit's: apt installs it and its dependency from Debian, nbrt-init
/// runs the service as jovyan with Kubeflow's rserver flags on 8888 and no Jupyter server,
/// and `nbrt check --profile kubeflow --live` reaches it through the prefix rewrite its
/// `[runtime]` table declares. What is not checked is RStudio itself.
#[test]
fn the_rstudio_runtime_of_the_docs_installs_a_package_and_serves_it_as_a_service() {
    let Some(store) = nbrt_testkit::stock::store_with("r-tidyverse") else {
        return;
    };
    if !nbrt_testkit::require("dpkg-deb", &["--version"], "dpkg") {
        return;
    }
    let started = Instant::now();
    let doc = std::fs::read_to_string(nbrt_testkit::repo_dir().join("docs/rstudio.md")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site-runtimes/rstudio");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("runtime.toml"),
        block_after(&doc, "### `site-runtimes/rstudio/runtime.toml`", "toml"),
    )
    .unwrap();
    std::fs::write(
        dir.join("run"),
        block_after(&doc, "### `site-runtimes/rstudio/run`", "bash"),
    )
    .unwrap();
    std::fs::rename(stand_in_deb(tmp.path()), dir.join("rstudio-server.deb")).unwrap();
    let root = store.root().to_path_buf();
    {
        // The shared store: one build at a time across test processes.
        let lock =
            std::fs::File::create(nbrt_testkit::fixture_dir().join("stock-store.lock")).unwrap();
        lock.lock().unwrap();
        let site = tmp.path().join("site-runtimes");
        ok(
            nbrt(&root, &["build", site.to_str().unwrap()]),
            "nbrt build of docs/rstudio.md's runtime",
        );
    }
    let out = ok(
        nbrt(&root, &["inspect", "--json", "rstudio:latest"]),
        "nbrt inspect",
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let runtime: Value = serde_json::from_str(
        v["config"]["config"]["Labels"]["io.nbrt.runtime"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            &runtime["server"],
            &runtime["http-rewrite-uri"],
            &runtime["ready-path"]
        ),
        (&"web".into(), &"/".into(), &"/".into()),
        "{runtime}"
    );

    let Some(image) = nbrt_testkit::stock::load_into_docker(
        &store,
        "rstudio:latest",
        "nbrt-test/rstudio-stand-in",
    ) else {
        return;
    };
    let _removed = nbrt_testkit::stock::RemovedFromDocker(image.clone());
    let (c, port) = Container::run(&image, &["-e", "NB_PREFIX=/user/a/rstudio"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match nbrt_testkit::jupyter::http("GET", port, "/", None) {
            Ok(r) if r.status == 200 => break,
            other if Instant::now() > deadline => {
                panic!("no answer on 8888: {other:?}\ncontainer log:\n{}", c.logs())
            }
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    assert_eq!(
        c.exec(&["cat", "/var/lib/rstudio-server/args"]),
        "jovyan\nUSER=jovyan\n--server-daemonize=0\n--server-working-dir=/home/jovyan\n\
         --server-user=jovyan\n--www-address=0.0.0.0\n--www-port=8888\n--auth-none=1\n\
         --auth-validate-users=0\n--rsession-which-r=/usr/bin/R\n",
        "rserver as the notebook user with Kubeflow's flags"
    );
    let procs = c.exec(&["ps", "-eo", "user=,args="]);
    assert!(
        procs.lines().all(|l| l.starts_with("jovyan ")) && !procs.contains("jupyter"),
        "nbrt-init services, the service, no Jupyter server, all as jovyan: {procs}"
    );
    // The package's Debian dependency came with it; the package file did not stay in /tmp.
    c.exec(&[
        "sh",
        "-c",
        "command -v killall && ! test -e /tmp/rstudio-server.deb",
    ]);
    drop(c);
    let report: Value = serde_json::from_str(&ok(
        nbrt(
            &root,
            &[
                "check",
                "--profile",
                "kubeflow",
                "--live",
                "--json",
                "rstudio:latest",
            ],
        ),
        "nbrt check --profile kubeflow --live rstudio",
    ))
    .unwrap();
    assert_eq!(report["passed"], true, "{report}");
    eprintln!(
        "rstudio (stand-in package): built, run and checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
