//! Platform contracts: whether an image will work where it is registered. Static checks read
//! the image config and the merged file view; live checks start the image in the Docker
//! engine. Every failure says what is wrong and how to fix it.

pub mod container;
pub mod facts;
pub mod hub;
pub mod launcher;
pub mod live;

pub mod profiles;

use serde::Serialize;

pub use facts::Facts;

/// The platform whose contract is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Kubeflow Notebooks: HTTP on 8888 under NB_PREFIX, CORS, jovyan 1000, empty home volume.
    Kubeflow,
    /// jupyter/docker-stacks' base-notebook contract.
    DockerStacks,
    /// JupyterHub's DockerSpawner / KubeSpawner single-user servers.
    Jupyterhub,
    /// Gateway Provisioners / Enterprise Gateway remote kernel images.
    GatewayKernel,
    /// ArcGIS Notebook Server runtimes.
    Arcgis,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Kubeflow,
        Profile::DockerStacks,
        Profile::Jupyterhub,
        Profile::GatewayKernel,
        Profile::Arcgis,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Kubeflow => "kubeflow",
            Profile::DockerStacks => "docker-stacks",
            Profile::Jupyterhub => "jupyterhub",
            Profile::GatewayKernel => "gateway-kernel",
            Profile::Arcgis => "arcgis",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// Not required by the platform, but likely to bite.
    Warn,
    Fail,
    /// Could not be decided (e.g. statically; `--live` decides).
    Skip,
}

/// The outcome of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Stable identifier, e.g. `user.uid`, `live.nb-prefix`.
    pub id: String,
    pub status: Status,
    /// What was found (for a failure: what is wrong).
    pub message: String,
    /// How to fix it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Whether it needed a running container.
    pub live: bool,
}

impl CheckResult {
    pub fn pass(id: &str, message: impl Into<String>) -> Self {
        Self {
            id: id.to_string(),
            status: Status::Pass,
            message: message.into(),
            fix: None,
            live: false,
        }
    }

    pub fn fail(id: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            id: id.to_string(),
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
            live: false,
        }
    }

    pub fn warn(id: &str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(id, message, fix)
        }
    }

    pub fn skip(id: &str, message: impl Into<String>) -> Self {
        Self {
            status: Status::Skip,
            ..Self::pass(id, message)
        }
    }

    /// The same result, marked as coming from a running container.
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }

    /// Turn a failure into a warning (for platforms that only recommend something).
    pub fn soft(mut self) -> Self {
        if self.status == Status::Fail {
            self.status = Status::Warn;
        }
        self
    }
}

/// All results of checking one image against one profile.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub profile: Profile,
    pub passed: bool,
    pub results: Vec<CheckResult>,
}

impl Report {
    pub fn new(image: &str, profile: Profile, results: Vec<CheckResult>) -> Self {
        let passed = results.iter().all(|r| r.status != Status::Fail);
        Self {
            image: image.to_string(),
            profile,
            passed,
            results,
        }
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| r.status == Status::Fail)
    }

    /// The result with this id, if the profile has it.
    pub fn get(&self, id: &str) -> Option<&CheckResult> {
        self.results.iter().find(|r| r.id == id)
    }
}

/// The static checks of `profile` for an image already read.
pub fn static_report(
    name: &str,
    image: &nbrt_oci::Image,
    view: &crate::View,
    packages: &[crate::packages::Package],
    profile: Profile,
) -> Report {
    let facts = Facts::new(image, view, packages);
    Report::new(name, profile, profiles::run(profile, &facts))
}
