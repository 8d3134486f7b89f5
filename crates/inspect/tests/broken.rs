//! Runtimes built broken on purpose on the stock jupyter image, and a kernel image with the
//! Gateway Provisioners launchers: each profile fails with the precise message (statically,
//! and live where a running container shows it), and the good kernel image passes the
//! launcher protocol end to end.

mod common;

use std::sync::OnceLock;

use nbrt_inspect::check::{Profile, Report, Status};
use nbrt_oci::Store;

const STACK: &[(&str, &str)] = &[
    (
        "insp-bad-uid/runtime.toml",
        "name = \"insp-bad-uid\"\nfrom = \"jupyter:latest\"\n[image]\nuser = \"1001\"\n",
    ),
    (
        "insp-no-prefix/runtime.toml",
        r#"name = "insp-no-prefix"
from = "jupyter:latest"
[image]
entrypoint = ["/opt/conda/bin/jupyter"]
cmd = ["lab", "--ServerApp.ip=0.0.0.0", "--ServerApp.open_browser=False", "--ServerApp.allow_origin=*"]
# Without the image's server config, which would serve under NB_PREFIX whatever starts it.
[[run]]
command = "rm /etc/jupyter/jupyter_server_config.py"
"#,
    ),
    (
        "insp-other-port/runtime.toml",
        "name = \"insp-other-port\"\nfrom = \"jupyter:latest\"\n[env]\nJUPYTER_PORT = \"8899\"\n",
    ),
    (
        "insp-home-ro/runtime.toml",
        "name = \"insp-home-ro\"\nfrom = \"jupyter:latest\"\n[[run]]\ncommand = \"chown 0:0 /home/jovyan && chmod 0755 /home/jovyan\"\n",
    ),
    (
        "insp-kernel/runtime.toml",
        r#"name = "insp-kernel"
from = "jupyter:latest"
[[run]]
user = "jovyan"
command = "/opt/conda/bin/pip install --no-cache-dir --progress-bar off gateway_provisioners pycryptodomex"
[[run]]
command = "/opt/conda/bin/jupyter image-bootstrap install --languages Python && chmod 0755 /usr/local/bin/bootstrap-kernel.sh"
[image]
cmd = ["/usr/local/bin/bootstrap-kernel.sh"]
"#,
    ),
    (
        "insp-kernel-no-launcher/runtime.toml",
        "name = \"insp-kernel-no-launcher\"\nfrom = \"insp-kernel\"\n[[run]]\ncommand = \"rm -rf /usr/local/bin/kernel-launchers/python\"\n",
    ),
];

fn store() -> Option<&'static Store> {
    static BUILT: OnceLock<Option<Store>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            common::stock()?;
            let dir = common::stack(STACK);
            Some(common::build(dir.path()))
        })
        .as_ref()
}

fn failed<'a>(r: &'a Report, id: &str) -> &'a str {
    let c = r
        .get(id)
        .unwrap_or_else(|| panic!("no check {id}:\n{}", common::show(r)));
    assert_eq!(
        c.status,
        Status::Fail,
        "{id} should fail:\n{}",
        common::show(r)
    );
    assert!(c.fix.is_some(), "{id} says no fix");
    assert!(!r.passed);
    &c.message
}

fn live() -> bool {
    nbrt_testkit::require_docker()
}

#[test]
fn wrong_uid() {
    let Some(s) = store() else { return };
    let r = common::check(s, "insp-bad-uid:latest", Profile::Kubeflow, live());
    let m = failed(&r, "user.uid");
    assert!(
        m.contains("runs as uid 1001") && m.contains("requires uid 1000"),
        "{m}"
    );
    if live() {
        let m = failed(&r, "live.uid");
        assert!(m.contains("uid 1001"), "{m}");
    }
}

#[test]
fn no_nb_prefix_support() {
    let Some(s) = store() else { return };
    let r = common::check(s, "insp-no-prefix:latest", Profile::Kubeflow, live());
    let m = failed(&r, "nb-prefix");
    assert!(m.contains("without NB_PREFIX"), "{m}");
    if live() {
        let m = failed(&r, "live.nb-prefix");
        assert!(m.contains("ignores NB_PREFIX"), "{m}");
    }
}

#[test]
fn server_on_another_port() {
    let Some(s) = store() else { return };
    let r = common::check(s, "insp-other-port:latest", Profile::Kubeflow, live());
    let m = failed(&r, "image.port");
    assert!(
        m.contains("port 8899") && m.contains("JUPYTER_PORT=8899"),
        "{m}"
    );
    if live() {
        let m = failed(&r, "live.nb-prefix");
        assert!(m.contains("listens on [8899] instead"), "{m}");
    }
}

#[test]
fn home_the_user_cannot_write() {
    let Some(s) = store() else { return };
    let r = common::check(s, "insp-home-ro:latest", Profile::DockerStacks, live());
    let m = failed(&r, "home.writable");
    assert!(
        m.contains("uid 1000 cannot write its home /home/jovyan (owner 0:0, mode"),
        "{m}"
    );
    if live() {
        // Jupyter cannot make its runtime directory and exits at once: reported with its
        // exit code (or, for a server that survives, the home write probe fails).
        match r.get("live.home") {
            Some(c) if c.status == Status::Fail => {
                assert!(c.message.contains("cannot create a file in its home"))
            }
            _ => {
                let m = failed(&r, "live.http");
                assert!(m.contains("exited with code"), "{m}");
            }
        }
    }
}

#[test]
fn missing_launcher() {
    let Some(s) = store() else { return };
    let r = common::check(
        s,
        "insp-kernel-no-launcher:latest",
        Profile::GatewayKernel,
        live(),
    );
    let m = failed(&r, "kernel.launcher");
    assert!(m.contains("launch_ipykernel.py is missing"), "{m}");
    if live() {
        // The bootstrap fails at once: reported with its exit code, not as a timeout.
        let m = failed(&r, "live.kernel.payload");
        assert!(m.contains("exited with code"), "{m}");
    }
}

#[test]
fn kernel_image_speaks_the_launcher_protocol() {
    let Some(s) = store() else { return };
    let r = common::check(s, "insp-kernel:latest", Profile::GatewayKernel, live());
    assert!(r.passed, "{}", common::show(&r));
    if live() {
        for id in [
            "live.kernel.payload",
            "live.kernel.info",
            "live.kernel.shutdown",
        ] {
            assert_eq!(
                r.get(id).map(|c| c.status),
                Some(Status::Pass),
                "{}",
                common::show(&r)
            );
        }
    }
    // The same image is no notebook server: the notebook profiles say so.
    let k = common::check(s, "insp-kernel:latest", Profile::DockerStacks, false);
    assert!(k.passed || k.failures().count() > 0);
}
