//! A Docker container of an image under test, publishing 8888 on a free port of
//! 127.0.0.1, removed when dropped.

use std::process::{Command, Output};
use std::time::Duration;

use crate::jupyter::Jupyter;

/// A running container (its name); `docker rm -f` when dropped.
pub struct Container(pub String);

/// The command's stdout; panics with its stderr when it failed.
fn stdout_of(out: Output, what: &str) -> String {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n--- stdout:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Container {
    /// `docker run -d` of `image` with `args` before the image, 8888 published on a free
    /// port; the container and that port.
    pub fn run(image: &str, args: &[&str]) -> (Container, u16) {
        let port = crate::free_port();
        let name = format!("nbrt-test-{}-{port}", std::process::id());
        let publish = format!("127.0.0.1:{port}:8888");
        let out = Command::new("docker")
            .args(["run", "-d", "--name", &name, "-p", &publish])
            .args(args)
            .arg(image)
            .output()
            .expect("running docker");
        stdout_of(out, "docker run");
        (Container(name), port)
    }

    /// A container of `image` serving Jupyter with a token, once its API answers (panics
    /// with the container's log when it does not within two minutes).
    pub fn jupyter(image: &str) -> (Container, Jupyter) {
        let token = "nbrt-stacks-test";
        let (c, port) = Container::run(image, &["-e", &format!("JUPYTER_TOKEN={token}")]);
        let jupyter = Jupyter::new(port, token);
        if let Err(e) = jupyter.wait_ready(Duration::from_secs(120)) {
            panic!("{e}\ncontainer log:\n{}", c.logs());
        }
        (c, jupyter)
    }

    /// `docker exec` of `cmd`; its stdout (panics when it fails).
    pub fn exec(&self, cmd: &[&str]) -> String {
        let out = Command::new("docker")
            .args(["exec", &self.0])
            .args(cmd)
            .output()
            .expect("running docker");
        stdout_of(out, &format!("docker exec {cmd:?}"))
    }

    /// What the container wrote to stderr (where nbrt-init and Jupyter log).
    pub fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.0])
            .output()
            .expect("running docker");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}
