//! What the prefix should hold after the step: the image's installed `conda-meta` records, the
//! request's specs and the virtual packages, solved with rattler_solve; or, when rebuilding from
//! `runtime.lock`, the locked builds found again without solving.
//!
//! - **Installed packages are favoured**: each one no spec names is kept by a name-only spec and
//!   given to the solver as locked, so it stays at its version unless a spec needs a change.
//! - **Package files** are installed exactly: a spec on their sha256.
//! - **Virtual packages** for the solve: `__unix`, `__linux` (5.10), `__glibc` (2.28) and
//!   `__archspec`; `CONDA_OVERRIDE_LINUX`, `CONDA_OVERRIDE_GLIBC` and `CONDA_OVERRIDE_CUDA`
//!   (which adds `__cuda`) override them, as with conda.
//! - **Locked builds** keep the image's package when it is the same build (and sha256);
//!   otherwise the archive is found by file name and sha256 among the package files and local
//!   channels of the build, or downloaded from its `http(s)` URL.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::str::FromStr;

use rattler_conda_types::package::BuildString;
use rattler_conda_types::{
    GenericVirtualPackage, MatchSpec, Matches, PackageName, PackageNameMatcher, PackageRecord,
    ParseStrictness, PrefixRecord, RepoDataRecord, Subdir, Version,
};
use rattler_solve::{ChannelPriority, SolveError, SolverImpl, SolverTask};
use url::Url;

use crate::channels::{
    channel_of, channel_specs, channel_specs_named, fits_platform, load_local_channel,
    load_remote_channel, url_file_name, ChannelSpec,
};
use crate::error::{chain, conda};
use crate::error::{CondaError, Result};
use crate::fetch::{self, archive_identifier, hex_sha256, label, to_hex, Fetcher, Source, Sources};
use crate::{CondaRequest, LockedCondaPackage};

/// The image's `conda-meta/*.json` documents as records; at most one per package name.
pub(crate) fn parse_installed(documents: &[Vec<u8>]) -> Result<Vec<PrefixRecord>> {
    let mut records: Vec<PrefixRecord> = Vec::with_capacity(documents.len());
    for (index, document) in documents.iter().enumerate() {
        let record: PrefixRecord = serde_json::from_slice(document).map_err(|e| {
            let name = serde_json::from_slice::<serde_json::Value>(document)
                .ok()
                .and_then(|v| v.get("name").and_then(|n| n.as_str()).map(String::from))
                .unwrap_or_else(|| format!("#{}", index + 1));
            conda(format!(
                "cannot read the image's conda-meta record of {name}: {e}"
            ))
        })?;
        if let Some(other) = records.iter().find(|r| {
            r.repodata_record.package_record.name == record.repodata_record.package_record.name
        }) {
            return Err(conda(format!(
                "the image's conda-meta has two records for {} ({} and {})",
                record.repodata_record.package_record.name.as_normalized(),
                other.file_name(),
                record.file_name()
            )));
        }
        records.push(record);
    }
    Ok(records)
}

fn parse_spec(spec: &str) -> Result<MatchSpec> {
    let trimmed = spec.trim();
    if trimmed.is_empty() {
        return Err(conda("bad match spec \"\": empty"));
    }
    let parsed = MatchSpec::from_str(trimmed, ParseStrictness::Lenient)
        .map_err(|e| conda(format!("bad match spec {spec:?}: {e}")))?;
    if parsed.name.as_exact().is_none() {
        return Err(conda(format!(
            "bad match spec {spec:?}: the package name must be exact (no wildcards)"
        )));
    }
    Ok(parsed)
}

/// A spec for exactly this archive: its name and sha256.
fn exact_spec(record: &PackageRecord) -> MatchSpec {
    MatchSpec {
        name: PackageNameMatcher::Exact(record.name.clone()),
        sha256: record.sha256,
        ..Default::default()
    }
}

/// Keep every installed package (at its installed version when possible: they are favoured):
/// a name-only spec for each one that no spec names.
fn keep_installed(specs: &mut Vec<MatchSpec>, installed: &[PrefixRecord]) {
    let named: HashSet<PackageName> = specs
        .iter()
        .filter_map(|s| s.name.as_exact().cloned())
        .collect();
    for record in installed {
        let name = &record.repodata_record.package_record.name;
        if !named.contains(name) {
            specs.push(MatchSpec {
                name: PackageNameMatcher::Exact(name.clone()),
                ..Default::default()
            });
        }
    }
}

/// What a command adds to a request beyond the builder's: match specs every package must
/// satisfy (`conda-meta/pinned`), and installed packages not to favour (`update`; `*` for
/// all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SolveOptions {
    pub constraints: Vec<String>,
    pub unlock: Vec<String>,
    /// Local channels keep their real `file://` URLs (see `channels::channel_specs_named`).
    pub real_local_urls: bool,
    /// A remote channel that does not answer at all is skipped with a warning on stderr
    /// (unless no channel is left), instead of failing the solve.
    pub skip_unreachable: bool,
}

/// Every package of the prefix after the step, solved from the request's specs and package
/// files with the installed packages favoured; the installed records when there is nothing to
/// install.
pub(crate) async fn solve(
    installed: &[PrefixRecord],
    req: &CondaRequest,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    solve_with(
        installed,
        req,
        &SolveOptions::default(),
        platform,
        fetcher,
        sources,
    )
    .await
}

/// The channels of a request as conda names them in `PackagesNotFoundError`: each with its
/// platform and `noarch` subdirectory.
fn channel_urls(channels: &[String], platform: Subdir) -> Vec<String> {
    channels
        .iter()
        .flat_map(|c| {
            let c = c.trim().trim_end_matches('/');
            [format!("{c}/{}", platform.as_str()), format!("{c}/noarch")]
        })
        .collect()
}

/// [`solve`] with a command's [`SolveOptions`].
pub(crate) async fn solve_with(
    installed: &[PrefixRecord],
    req: &CondaRequest,
    options: &SolveOptions,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let mut specs = req
        .specs
        .iter()
        .map(|s| parse_spec(s))
        .collect::<Result<Vec<_>>>()?;
    let constraints = options
        .constraints
        .iter()
        .map(|s| parse_spec(s))
        .collect::<Result<Vec<_>>>()?;
    let channels = channel_specs_named(&req.channels, options.real_local_urls)?;
    let unlock_all = options.unlock.iter().any(|u| u == "*");
    if specs.is_empty() && req.package_files.is_empty() && options.unlock.is_empty() {
        return Ok(installed
            .iter()
            .map(|r| r.repodata_record.clone())
            .collect());
    }

    let mut tiers: Vec<Vec<RepoDataRecord>> = Vec::new();
    if !req.package_files.is_empty() {
        let tier = fetch::package_files(&req.package_files, platform, fetcher, sources).await?;
        specs.extend(tier.iter().map(|r| exact_spec(&r.package_record)));
        tiers.push(tier);
    }
    let mut unreachable: Option<CondaError> = None;
    for channel in &channels {
        let tier = match channel {
            ChannelSpec::Local { dir, canonical } => {
                load_local_channel(dir, canonical, platform, fetcher, sources).await?
            }
            ChannelSpec::Remote(base) => {
                match load_remote_channel(base, platform, fetcher, sources).await {
                    Ok(tier) => tier,
                    // No answer at all (no route, no DNS): an air-gapped site's default
                    // channel. Skipped with a warning when the command allows it.
                    Err(e @ CondaError::Http { status: None, .. }) if options.skip_unreachable => {
                        eprintln!("WARNING: channel {base} is unreachable and was skipped: {e}");
                        unreachable.get_or_insert(e);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        tiers.push(tier);
    }
    if let Some(e) = unreachable {
        if tiers.is_empty() && !specs.is_empty() {
            return Err(e);
        }
    }

    // A spec that nothing matches, in the channels or the prefix: conda's PackagesNotFoundError.
    let missing: Vec<String> = req
        .specs
        .iter()
        .zip(&specs)
        .filter(|(_, spec)| {
            !tiers
                .iter()
                .flatten()
                .any(|r| spec.matches(&r.package_record))
                && !installed
                    .iter()
                    .any(|r| spec.matches(&r.repodata_record.package_record))
        })
        .map(|(text, _)| text.trim().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CondaError::PackagesNotFound {
            packages: missing,
            channels: channel_urls(&req.channels, platform),
        });
    }

    keep_installed(&mut specs, installed);

    let requested = if req.specs.is_empty() {
        req.package_files
            .iter()
            .map(|p| p.display().to_string())
            .chain(options.unlock.iter().cloned())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        req.specs.join(", ")
    };
    let virtual_packages = virtual_packages(platform)?;
    let hint = missing_virtual_packages(installed, &virtual_packages);
    // Installed packages no channel has (the image's own python) stay favoured even when
    // unlocked: their record is their only candidate.
    let available: HashSet<&str> = tiers
        .iter()
        .flatten()
        .map(|r| r.package_record.name.as_normalized())
        .collect();
    let task = SolverTask {
        locked_packages: installed
            .iter()
            .filter(|r| {
                let name = r.repodata_record.package_record.name.as_normalized();
                let unlocked = unlock_all || options.unlock.iter().any(|u| u == name);
                !unlocked || !available.contains(name)
            })
            .map(|r| &r.repodata_record)
            .collect(),
        virtual_packages,
        specs,
        constraints,
        channel_priority: ChannelPriority::Strict,
        ..SolverTask::from_iter(tiers.iter())
    };
    let solution = rattler_solve::resolvo::Solver
        .solve(task)
        .map_err(|e| match e {
            SolveError::Unsolvable(explanations) => CondaError::Unsolvable {
                requested: requested.clone(),
                explanation: explanations.join("\n").trim_end().to_string(),
                hint: hint.clone(),
            },
            other => conda(format!("cannot install {requested}: {}", chain(&other))),
        })?;
    Ok(solution.records)
}

/// A hint for an unsolvable error: virtual packages (`__cuda`, …) that the image's packages
/// depend on but this build does not provide.
fn missing_virtual_packages(
    installed: &[PrefixRecord],
    provided: &[GenericVirtualPackage],
) -> String {
    let provided: HashSet<&str> = provided.iter().map(|v| v.name.as_normalized()).collect();
    let missing: BTreeSet<String> = installed
        .iter()
        .flat_map(|r| &r.repodata_record.package_record.depends)
        .filter_map(|spec| {
            let name: String = spec
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
                .collect();
            (name.starts_with("__") && !provided.contains(name.as_str())).then_some(name)
        })
        .collect();
    if missing.is_empty() {
        return String::new();
    }
    let names: Vec<String> = missing.into_iter().collect();
    format!(
        "\n(the image's packages depend on {}, which this build does not provide; for __cuda \
         set CONDA_OVERRIDE_CUDA to the CUDA version the image is meant for)",
        names.join(", ")
    )
}

const DEFAULT_LINUX: &str = "5.10";
const DEFAULT_GLIBC: &str = "2.28";

/// The virtual packages a solve for `platform` sees (what `conda info` shows).
pub fn virtual_package_list(platform: &str) -> Result<Vec<GenericVirtualPackage>> {
    virtual_packages(crate::channels::parse_platform(platform)?)
}

fn virtual_packages(platform: Subdir) -> Result<Vec<GenericVirtualPackage>> {
    virtual_packages_from(platform, |name| std::env::var(name).ok())
}

/// [`virtual_packages`] with the environment variables read through `var`.
fn virtual_packages_from(
    platform: Subdir,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Vec<GenericVirtualPackage>> {
    let env = |name: &str| {
        var(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let archspec = match platform.as_str() {
        "linux-64" => "x86_64".to_string(),
        "linux-32" => "x86".to_string(),
        other => other.trim_start_matches("linux-").to_string(),
    };
    let mut packages = vec![
        virtual_package("__unix", "0", "0")?,
        virtual_package(
            "__linux",
            &env("CONDA_OVERRIDE_LINUX").unwrap_or_else(|| DEFAULT_LINUX.to_string()),
            "0",
        )?,
        virtual_package(
            "__glibc",
            &env("CONDA_OVERRIDE_GLIBC").unwrap_or_else(|| DEFAULT_GLIBC.to_string()),
            "0",
        )?,
        virtual_package("__archspec", "1", &archspec)?,
    ];
    if let Some(cuda) = env("CONDA_OVERRIDE_CUDA") {
        packages.push(virtual_package("__cuda", &cuda, "0")?);
    }
    Ok(packages)
}

fn virtual_package(name: &str, version: &str, build: &str) -> Result<GenericVirtualPackage> {
    Ok(GenericVirtualPackage {
        name: PackageName::try_from(name)
            .map_err(|e| conda(format!("virtual package {name}: {e}")))?,
        version: Version::from_str(version).map_err(|e| {
            conda(format!(
                "virtual package {name}: bad version {version:?}: {e}"
            ))
        })?,
        build_string: BuildString::new_unchecked(build),
    })
}

/// The records of a lock's packages, without solving: the image's own record when it is the
/// same build, else the archive found (or downloaded) by file name and sha256, registered in
/// `sources`.
pub(crate) async fn resolve_locked(
    locked: &[LockedCondaPackage],
    installed: &[PrefixRecord],
    req: &CondaRequest,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let local_dirs: Vec<PathBuf> = channel_specs(&req.channels)?
        .into_iter()
        .filter_map(|c| match c {
            ChannelSpec::Local { dir, .. } => Some(dir),
            ChannelSpec::Remote(_) => None,
        })
        .collect();
    let mut names = HashSet::new();
    let mut desired = Vec::with_capacity(locked.len());
    for entry in locked {
        let what = format!(
            "locked conda package {}={}={}",
            entry.name, entry.version, entry.build
        );
        if !names.insert(entry.name.as_str()) {
            return Err(conda(format!(
                "{what}: the lock names {} twice",
                entry.name
            )));
        }
        if !fits_platform(&entry.subdir, platform) {
            return Err(conda(format!(
                "{what} is for {}, not {}",
                entry.subdir,
                platform.as_str()
            )));
        }
        let same_installed = installed.iter().find(|r| {
            let p = &r.repodata_record.package_record;
            let sha = hex_sha256(p);
            p.name.as_normalized() == entry.name
                && p.version.to_string() == entry.version
                && p.build == entry.build
                && (sha.is_empty() || entry.sha256.is_empty() || sha == entry.sha256)
        });
        if let Some(record) = same_installed {
            desired.push(record.repodata_record.clone());
            continue;
        }

        let url = Url::parse(&entry.url)
            .map_err(|e| conda(format!("{what}: bad URL {:?}: {e}", entry.url)))?;
        let file_name = url_file_name(&url).unwrap_or_default();
        let identifier = archive_identifier(&file_name, &what)?;
        if entry.sha256.is_empty() {
            return Err(conda(format!(
                "{what}: the lock has no sha256 and the image does not have the package"
            )));
        }

        let mut candidates: Vec<PathBuf> = req
            .package_files
            .iter()
            .filter(|p| p.file_name().and_then(|n| n.to_str()) == Some(file_name.as_str()))
            .cloned()
            .collect();
        candidates.extend(
            local_dirs
                .iter()
                .map(|dir| dir.join(&entry.subdir).join(&file_name)),
        );
        let mut found = None;
        for candidate in candidates {
            if !candidate.is_file() {
                continue;
            }
            let record = fetcher.archive_record(&candidate).await?;
            if hex_sha256(&record) == entry.sha256 {
                found = Some((candidate, record));
                break;
            }
        }
        if found.is_none() && matches!(url.scheme(), "http" | "https") {
            let mut expected = PackageRecord::new(
                PackageName::try_from(entry.name.as_str())
                    .map_err(|e| conda(format!("{what}: {e}")))?,
                Version::from_str(&entry.version).map_err(|e| conda(format!("{what}: {e}")))?,
                BuildString::new_unchecked(entry.build.as_str()),
            );
            expected.sha256 =
                rattler_digest::parse_digest_from_hex::<rattler_digest::Sha256>(&entry.sha256);
            let path = fetcher.download(&url, &expected).await?;
            let record = fetcher.archive_record(&path).await?;
            found = Some((path, record));
        }
        let Some((path, record)) = found else {
            return Err(conda(format!(
                "{what} ({}, sha256 {}) is in none of the channels or package files of this build",
                entry.url, entry.sha256
            )));
        };
        if hex_sha256(&record) != entry.sha256 {
            return Err(conda(format!(
                "{what}: {} has sha256 {}, the lock says {}",
                entry.url,
                hex_sha256(&record),
                entry.sha256
            )));
        }
        if record.name.as_normalized() != entry.name
            || record.version.to_string() != entry.version
            || record.build != entry.build
        {
            return Err(conda(format!(
                "{what}: the archive {} holds {}",
                path.display(),
                label(&record)
            )));
        }
        sources.insert(url.clone(), Source::Local(path));
        desired.push(RepoDataRecord {
            package_record: record,
            identifier,
            channel: channel_of(&url),
            url,
        });
    }
    Ok(desired)
}

/// A record as `runtime.lock` pins it.
pub(crate) fn locked_entry(record: &RepoDataRecord) -> LockedCondaPackage {
    let p = &record.package_record;
    LockedCondaPackage {
        name: p.name.as_normalized().to_string(),
        version: p.version.to_string(),
        build: p.build.to_string(),
        subdir: p.subdir.clone(),
        url: record.url.to_string(),
        sha256: hex_sha256(p),
        md5: p.md5.map(to_hex),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use nbrt_testkit::conda_pkg::Pkg;

    use super::*;

    fn error(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    /// A record at `file:///chan/<subdir>/<name>-<version>-h0_0.tar.bz2`.
    fn record(name: &str, version: &str, depends: &[&str]) -> RepoDataRecord {
        let mut package_record = PackageRecord::new(
            PackageName::try_from(name).unwrap(),
            Version::from_str(version).unwrap(),
            BuildString::new_unchecked("h0_0"),
        );
        package_record.subdir = "linux-64".into();
        package_record.depends = depends.iter().map(|d| d.to_string()).collect();
        let file_name = format!("{name}-{version}-h0_0.tar.bz2");
        RepoDataRecord {
            package_record,
            identifier: archive_identifier(&file_name, "test").unwrap(),
            url: Url::parse(&format!("file:///chan/linux-64/{file_name}")).unwrap(),
            channel: Some("file:///chan".into()),
        }
    }

    fn installed(record: RepoDataRecord) -> PrefixRecord {
        PrefixRecord::from_repodata_record(record, Vec::new())
    }

    fn document(record: RepoDataRecord) -> Vec<u8> {
        serde_json::to_vec(&installed(record)).unwrap()
    }

    fn request(channels: &[&Path], specs: &[&str]) -> CondaRequest {
        CondaRequest {
            prefix: "/opt/conda".into(),
            channels: channels.iter().map(|c| c.display().to_string()).collect(),
            specs: specs.iter().map(|s| s.to_string()).collect(),
            platform: "linux-64".into(),
            ..Default::default()
        }
    }

    fn labels(records: &[RepoDataRecord]) -> Vec<String> {
        let mut out: Vec<String> = records.iter().map(|r| label(&r.package_record)).collect();
        out.sort();
        out
    }

    #[test]
    fn installed_records_are_read_one_per_name() {
        let records = parse_installed(&[
            document(record("alpha", "1.0", &[])),
            document(record("beta", "2.0", &["alpha"])),
        ])
        .unwrap();
        let names: Vec<String> = records
            .iter()
            .map(|r| label(&r.repodata_record.package_record))
            .collect();
        assert_eq!(names, ["alpha=1.0=h0_0", "beta=2.0=h0_0"]);
        assert_eq!(records[1].repodata_record.package_record.depends, ["alpha"]);

        assert_eq!(
            error(parse_installed(&[
                document(record("alpha", "1.0", &[])),
                document(record("alpha", "2.0", &[])),
            ])),
            "the image's conda-meta has two records for alpha (alpha-1.0-h0_0.json \
             and alpha-2.0-h0_0.json)"
        );
        let message = error(parse_installed(&[br#"{"name": "gamma"}"#.to_vec()]));
        assert!(
            message.starts_with("cannot read the image's conda-meta record of gamma: "),
            "{message}"
        );
        let message = error(parse_installed(&[b"{}".to_vec(), b"not json".to_vec()]));
        assert!(
            message.starts_with("cannot read the image's conda-meta record of #1: "),
            "{message}"
        );
        assert!(parse_installed(&[]).unwrap().is_empty());
    }

    #[test]
    fn specs_must_name_one_package_exactly() {
        assert_eq!(
            parse_spec(" graphviz >=2.50 ").unwrap().to_string(),
            "graphviz >=2.50"
        );
        assert_eq!(parse_spec("alpha=1.0").unwrap().to_string(), "alpha 1.0.*");
        assert_eq!(error(parse_spec("  ")), "bad match spec \"\": empty");
        // rattler's parser already refuses a name that is not exact; the check after it
        // stays as a guard.
        assert_eq!(
            error(parse_spec("graph*")),
            "bad match spec \"graph*\": \"graph*\" looks like a glob but only exact \
             package names are allowed, package names can only contain 0-9, a-z, A-Z, -, _, or ."
        );
        assert!(error(parse_spec("alpha >=<1")).starts_with("bad match spec \"alpha >=<1\": "));
    }

    #[test]
    fn package_files_are_pinned_by_sha256_and_installed_packages_kept() {
        let mut file = record("alpha", "2.0", &[]).package_record;
        file.sha256 = Some([0xab; 32].into());
        let mut specs = vec![parse_spec("beta >=1").unwrap(), exact_spec(&file)];
        keep_installed(
            &mut specs,
            &[
                installed(record("alpha", "1.0", &[])),
                installed(record("beta", "1.0", &[])),
                installed(record("gamma", "1.0", &[])),
            ],
        );
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            specs,
            [
                "beta >=1".to_string(),
                format!("alpha[sha256=\"{}\"]", "ab".repeat(32)),
                "gamma".to_string(),
            ]
        );
    }

    #[test]
    fn virtual_packages_default_and_overrides() {
        let names = |packages: Vec<GenericVirtualPackage>| -> Vec<String> {
            packages.iter().map(|p| p.to_string()).collect()
        };
        assert_eq!(
            names(virtual_packages_from(Subdir::Linux64, |_| None).unwrap()),
            [
                "__unix=0=0",
                "__linux=5.10=0",
                "__glibc=2.28=0",
                "__archspec=1=x86_64"
            ]
        );
        let overrides = |name: &str| match name {
            "CONDA_OVERRIDE_LINUX" => Some("  ".to_string()),
            "CONDA_OVERRIDE_GLIBC" => Some(" 2.31 ".to_string()),
            "CONDA_OVERRIDE_CUDA" => Some("12.2".to_string()),
            _ => None,
        };
        let aarch64 = Subdir::from_str("linux-aarch64").unwrap();
        assert_eq!(
            names(virtual_packages_from(aarch64, overrides).unwrap()),
            [
                "__unix=0=0",
                "__linux=5.10=0",
                "__glibc=2.31=0",
                "__archspec=1=aarch64",
                "__cuda=12.2=0"
            ]
        );
        let bad = |name: &str| (name == "CONDA_OVERRIDE_CUDA").then(|| "1..2".to_string());
        let message = error(virtual_packages_from(Subdir::Linux64, bad));
        assert!(
            message.starts_with("virtual package __cuda: bad version \"1..2\": "),
            "{message}"
        );
    }

    #[test]
    fn missing_virtual_packages_are_named_in_the_hint() {
        let provided = virtual_packages_from(Subdir::Linux64, |_| None).unwrap();
        let image = [
            installed(record(
                "torch",
                "2.0",
                &["__cuda >=11.8", "__glibc >=2.17", "python"],
            )),
            installed(record("jax", "0.4", &["__cuda", "__osx"])),
        ];
        assert_eq!(
            missing_virtual_packages(&image, &provided),
            "\n(the image's packages depend on __cuda, __osx, which this build does not \
             provide; for __cuda set CONDA_OVERRIDE_CUDA to the CUDA version the image is \
             meant for)"
        );
        assert_eq!(missing_virtual_packages(&image[..0], &provided), "");
    }

    #[tokio::test]
    async fn nothing_to_install_keeps_the_installed_records() {
        let tmp = tempfile::tempdir().unwrap();
        let image = [installed(record("alpha", "1.0", &[]))];
        let desired = solve(
            &image,
            &request(&[], &[]),
            Subdir::Linux64,
            &mut Fetcher::new(tmp.path()),
            &mut Sources::default(),
        )
        .await
        .unwrap();
        assert_eq!(desired, vec![image[0].repodata_record.clone()]);
    }

    #[tokio::test]
    async fn the_solve_favours_installed_packages() {
        let tmp = tempfile::tempdir().unwrap();
        let chan = tmp.path().join("chan");
        for pkg in [
            Pkg::new("alpha", "1.0"),
            Pkg::new("alpha", "2.0"),
            Pkg::new("beta", "1.0").depends("alpha"),
        ] {
            pkg.tar_bz2(&chan.join("linux-64"));
        }
        let mut alpha = record("alpha", "1.0", &[]);
        alpha.url = Url::parse("file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2").unwrap();
        let image = [installed(alpha)];
        let solve_for = |specs: &'static [&'static str]| {
            let req = request(&[chan.as_path()], specs);
            let image = image.clone();
            let cache = tmp.path().join("cache");
            async move {
                solve(
                    &image,
                    &req,
                    Subdir::Linux64,
                    &mut Fetcher::new(&cache),
                    &mut Sources::default(),
                )
                .await
            }
        };
        assert_eq!(
            labels(&solve_for(&["beta"]).await.unwrap()),
            ["alpha=1.0=h0_0", "beta=1.0=h0_0"]
        );
        assert_eq!(
            labels(&solve_for(&["beta", "alpha >=2"]).await.unwrap()),
            ["alpha=2.0=h0_0", "beta=1.0=h0_0"]
        );
        // No build of alpha matches: conda's PackagesNotFoundError, naming the channel.
        let message = error(solve_for(&["alpha >=3"]).await);
        assert!(
            message.starts_with(
                "PackagesNotFoundError: The following packages are not available from current \
                 channels:\n\n  - alpha >=3\n"
            ),
            "{message}"
        );
        assert!(message.contains("/chan/linux-64\n"), "{message}");
        // Builds that exist but cannot go together: the conflict is named.
        let message = error(solve_for(&["beta", "alpha >=2", "alpha <2"]).await);
        assert!(
            message.starts_with("cannot install beta, alpha >=2, alpha <2:\n"),
            "{message}"
        );
    }

    #[test]
    fn locked_entries_pin_the_record() {
        let mut alpha = record("alpha", "1.0", &[]);
        alpha.package_record.sha256 = Some([0x11; 32].into());
        alpha.package_record.md5 = Some([0x22; 16].into());
        assert_eq!(
            locked_entry(&alpha),
            LockedCondaPackage {
                name: "alpha".into(),
                version: "1.0".into(),
                build: "h0_0".into(),
                subdir: "linux-64".into(),
                url: "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2".into(),
                sha256: "11".repeat(32),
                md5: Some("22".repeat(16)),
            }
        );
        alpha.package_record.sha256 = None;
        alpha.package_record.md5 = None;
        let entry = locked_entry(&alpha);
        assert_eq!((entry.sha256.as_str(), entry.md5), ("", None));
    }

    #[tokio::test]
    async fn locked_builds_are_found_again_by_file_name_and_sha256() {
        let tmp = tempfile::tempdir().unwrap();
        // A copy of the channel somewhere else: the lock names no host path.
        let chan = tmp.path().join("copy-of-chan");
        let path = Pkg::new("alpha", "1.0").tar_bz2(&chan.join("linux-64"));
        let cache = tmp.path().join("cache");
        let mut fetcher = Fetcher::new(&cache);
        let archive = fetcher.archive_record(&path).await.unwrap();
        let mut pinned = record("alpha", "1.0", &[]);
        pinned.package_record = archive.clone();
        let entry = locked_entry(&pinned);
        let req = request(&[chan.as_path()], &[]);

        let mut sources = Sources::default();
        let desired = resolve_locked(
            std::slice::from_ref(&entry),
            &[],
            &req,
            Subdir::Linux64,
            &mut fetcher,
            &mut sources,
        )
        .await
        .unwrap();
        assert_eq!(desired.len(), 1);
        assert_eq!(
            desired[0].url.as_str(),
            "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2"
        );
        assert_eq!(desired[0].channel.as_deref(), Some("file:///chan"));
        assert_eq!(desired[0].package_record, archive);
        assert_eq!(locked_entry(&desired[0]), entry);
        assert_eq!(
            sources
                .archive_for(&desired[0], &mut fetcher)
                .await
                .unwrap(),
            path
        );

        // The image's own build is kept, with no archive needed.
        let mut in_image = record("alpha", "1.0", &[]);
        in_image.url =
            Url::parse("https://gone.example/c/linux-64/alpha-1.0-h0_0.tar.bz2").unwrap();
        let image = [installed(in_image.clone())];
        let kept = resolve_locked(
            std::slice::from_ref(&entry),
            &image,
            &request(&[], &[]),
            Subdir::Linux64,
            &mut fetcher,
            &mut Sources::default(),
        )
        .await
        .unwrap();
        assert_eq!(kept, vec![in_image]);
    }

    #[tokio::test]
    async fn locked_builds_that_cannot_be_found_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let chan = tmp.path().join("chan");
        Pkg::new("alpha", "1.0").tar_bz2(&chan.join("linux-64"));
        let req = request(&[chan.as_path()], &[]);
        let entry = LockedCondaPackage {
            name: "alpha".into(),
            version: "1.0".into(),
            build: "h0_0".into(),
            subdir: "linux-64".into(),
            url: "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2".into(),
            sha256: "00".repeat(32),
            md5: None,
        };
        let resolve = |locked: Vec<LockedCondaPackage>| {
            let req = req.clone();
            let cache = tmp.path().join("cache");
            async move {
                resolve_locked(
                    &locked,
                    &[],
                    &req,
                    Subdir::Linux64,
                    &mut Fetcher::new(&cache),
                    &mut Sources::default(),
                )
                .await
            }
        };
        let what = "locked conda package alpha=1.0=h0_0";
        assert_eq!(
            error(resolve(vec![entry.clone()]).await),
            format!(
                "{what} (file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2, sha256 {}) is in none \
                 of the channels or package files of this build",
                "00".repeat(32)
            )
        );
        let found = LockedCondaPackage {
            sha256: {
                use sha2::Digest as _;
                let bytes = std::fs::read(chan.join("linux-64/alpha-1.0-h0_0.tar.bz2")).unwrap();
                hex::encode(sha2::Sha256::digest(bytes))
            },
            ..entry.clone()
        };
        assert_eq!(resolve(vec![found.clone()]).await.unwrap().len(), 1);
        assert_eq!(
            error(resolve(vec![found.clone(), found]).await),
            format!("{what}: the lock names alpha twice")
        );
        let arm = LockedCondaPackage {
            subdir: "linux-aarch64".into(),
            ..entry.clone()
        };
        assert_eq!(
            error(resolve(vec![arm]).await),
            format!("{what} is for linux-aarch64, not linux-64")
        );
        let unhashed = LockedCondaPackage {
            sha256: String::new(),
            ..entry.clone()
        };
        assert_eq!(
            error(resolve(vec![unhashed]).await),
            format!("{what}: the lock has no sha256 and the image does not have the package")
        );
        let not_an_archive = LockedCondaPackage {
            url: "file:///chan/linux-64/alpha.zip".into(),
            ..entry
        };
        assert_eq!(
            error(resolve(vec![not_an_archive]).await),
            format!(
                "locked conda package alpha=1.0=h0_0: \"alpha.zip\" is not a conda \
                 package file name (.conda or .tar.bz2)"
            )
        );
    }
}
