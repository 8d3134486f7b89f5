//! Where conda packages come from: the image's platform, channel URLs and local channel
//! directories, their canonical URLs, and their repodata (fetched, read, or indexed in memory).
//!
//! - **Channels** are `http(s)://` URLs (their `repodata.json.zst` or `repodata.json` is
//!   fetched for `<platform>` and `noarch`) or local directories (a path or a `file://` URL)
//!   holding `<platform>/` and/or `noarch/`. A local subdirectory with a `repodata.json` is read
//!   from it; one without is indexed in memory from its archives (nothing is ever written into
//!   the user's directory, and no copy is made). Package files (`.conda`, `.tar.bz2`, see
//!   `fetch`) come before the channels, and channels keep the order given: priority is strict.
//! - **Canonical URLs.** Nothing in a record or the lock names a host path. A local channel
//!   directory is called `file:///<directory name>/` (a name used twice gets `-2`, `-3`, … in
//!   channel order), so a package in it is `file:///<name>/<subdir>/<file>`; a package file is
//!   `file:///<file name>`. Remote channels keep their URL. Two builds from copies of the same
//!   channel in different temporary directories therefore write identical bytes, and a locked
//!   rebuild finds each archive again by file name (and sha256) in the channels and package
//!   files of the build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rattler_conda_types::package::DistArchiveIdentifier;
use rattler_conda_types::{Channel, PackageRecord, RepoData, RepoDataRecord, Subdir};
use url::Url;

use crate::error::{conda, http};
use crate::error::{IoContext, Result};
use crate::fetch::{archive_identifier, is_package_file_name, Fetcher, Source, Sources};

pub(crate) fn parse_platform(platform: &str) -> Result<Subdir> {
    let subdir = Subdir::from_str(platform)
        .map_err(|e| conda(format!("unknown conda platform {platform:?}: {e}")))?;
    if !subdir.is_linux() {
        return Err(conda(format!(
            "conda platform {platform:?} is not supported: images are Linux (linux-64, linux-aarch64, …)"
        )));
    }
    Ok(subdir)
}

/// Whether a package built for `subdir` installs on `platform`: its own subdir or `noarch`.
pub(crate) fn fits_platform(subdir: &str, platform: Subdir) -> bool {
    subdir == platform.as_str() || subdir == "noarch"
}

/// Local channel directories or remote channel base URLs, as given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChannelSpec {
    Local { dir: PathBuf, canonical: Url },
    Remote(Url),
}

pub(crate) fn channel_specs(channels: &[String]) -> Result<Vec<ChannelSpec>> {
    channel_specs_named(channels, false)
}

/// [`channel_specs`]; with `real_urls`, a local channel keeps its own `file://` URL (a
/// command changing a prefix on this machine records where packages really are, so
/// `conda list --explicit` can be replayed), instead of the canonical `file:///<name>/`.
pub(crate) fn channel_specs_named(
    channels: &[String],
    real_urls: bool,
) -> Result<Vec<ChannelSpec>> {
    let mut used_names: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(channels.len());
    for channel in channels {
        let trimmed = channel.trim();
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            let mut url = Url::parse(trimmed)
                .map_err(|e| conda(format!("bad channel URL {channel:?}: {e}")))?;
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            out.push(ChannelSpec::Remote(url));
            continue;
        }
        let dir = if trimmed.starts_with("file:") {
            Url::parse(trimmed)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| conda(format!("bad channel URL {channel:?}")))?
        } else if trimmed.contains("://") {
            return Err(conda(format!(
                "channel {channel:?}: only http(s):// and file:// URLs and local directories \
                 are supported"
            )));
        } else {
            PathBuf::from(trimmed)
        };
        if !dir.is_dir() {
            let hint = if !trimmed.contains('/') && !trimmed.starts_with("file:") {
                " (channel names are not supported: give a URL such as \
                 https://conda.anaconda.org/<name>, or a directory)"
            } else {
                ""
            };
            return Err(conda(format!(
                "conda channel directory {} does not exist{hint}",
                dir.display()
            )));
        }
        let base = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "channel".to_string());
        let count = used_names.entry(base.clone()).or_insert(0);
        *count += 1;
        let name = if *count == 1 {
            base
        } else {
            format!("{base}-{count}")
        };
        let real = real_urls
            .then(|| dir.canonicalize().ok())
            .flatten()
            .and_then(|d| Url::from_directory_path(d).ok());
        let canonical = match real {
            Some(url) => url,
            None => Url::parse("file:///")
                .and_then(|root| root.join(&format!("{}/", encode_segment(&name))))
                .map_err(|e| conda(format!("channel {channel:?}: {e}")))?,
        };
        out.push(ChannelSpec::Local { dir, canonical });
    }
    Ok(out)
}

/// Everything but unreserved characters percent-encoded: the name stays one path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'+')
    .remove(b'=')
    .remove(b',')
    .remove(b'@');

fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// The canonical URL of a package file given to the build: `file:///<file name>`.
pub(crate) fn package_file_url(file_name: &str) -> Result<Url> {
    Url::parse("file:///")
        .and_then(|root| root.join(&encode_segment(file_name)))
        .map_err(|e| conda(format!("package file {file_name}: {e}")))
}

/// The last path segment of a package URL, percent-decoded: the archive's file name.
pub(crate) fn url_file_name(url: &Url) -> Option<String> {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .map(percent_decode)
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// The channel part of a package URL: everything before `/<subdir>/<file>`.
pub(crate) fn channel_of(url: &Url) -> Option<String> {
    let segments: Vec<&str> = url.path_segments()?.collect();
    if segments.len() < 2 {
        return None;
    }
    let subdir = segments[segments.len() - 2];
    Subdir::from_str(subdir).ok()?;
    let mut channel = url.clone();
    channel.set_path(&segments[..segments.len() - 2].join("/"));
    Some(channel.to_string().trim_end_matches('/').to_string())
}

fn channel_of_base(base: &Url) -> Option<String> {
    Some(base.as_str().trim_end_matches('/').to_string())
}

/// The records of a local channel directory for `platform` and `noarch`, each archive
/// registered in `sources` under its canonical URL.
pub(crate) async fn load_local_channel(
    dir: &Path,
    canonical: &Url,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let mut records = Vec::new();
    let mut found_subdir = false;
    for subdir in [platform.as_str(), "noarch"] {
        let subdir_path = dir.join(subdir);
        if !subdir_path.is_dir() {
            continue;
        }
        found_subdir = true;
        let subdir_url = canonical
            .join(&format!("{subdir}/"))
            .map_err(|e| conda(format!("channel {}: {e}", dir.display())))?;
        // One package of this subdirectory: its canonical URL, where its archive is, its record.
        let mut add = |identifier: DistArchiveIdentifier,
                       package_record: PackageRecord,
                       path: PathBuf,
                       file_name: &str|
         -> Result<()> {
            let url = subdir_url
                .join(&encode_segment(file_name))
                .map_err(|e| conda(format!("channel {}: {e}", dir.display())))?;
            sources.insert(url.clone(), Source::Local(path));
            records.push(RepoDataRecord {
                package_record,
                identifier,
                url,
                channel: channel_of_base(canonical),
            });
            Ok(())
        };
        let repodata_path = subdir_path.join("repodata.json");
        if repodata_path.is_file() {
            let bytes = std::fs::read(&repodata_path)
                .io_context(|| format!("read {}", repodata_path.display()))?;
            let repodata: RepoData = serde_json::from_slice(&bytes)
                .map_err(|e| conda(format!("bad {}: {e}", repodata_path.display())))?;
            for (identifier, package_record) in
                repodata.packages.into_iter().chain(repodata.conda_packages)
            {
                let file_name = identifier.to_file_name();
                add(
                    identifier,
                    package_record,
                    subdir_path.join(&file_name),
                    &file_name,
                )?;
            }
        } else {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(&subdir_path)
                .io_context(|| format!("read {}", subdir_path.display()))?
            {
                let entry = entry.io_context(|| format!("read {}", subdir_path.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if is_package_file_name(&name) && entry.path().is_file() {
                    files.push(name);
                }
            }
            files.sort();
            for file_name in files {
                let path = subdir_path.join(&file_name);
                let origin = path.display().to_string();
                let identifier = archive_identifier(&file_name, &origin)?;
                let package_record = fetcher.archive_record(&path).await?;
                if package_record.subdir != subdir {
                    tracing::warn!(
                        file = %origin,
                        subdir = package_record.subdir,
                        "conda package in the wrong channel subdirectory; ignored"
                    );
                    continue;
                }
                add(identifier, package_record, path, &file_name)?;
            }
        }
    }
    if !found_subdir {
        return Err(conda(format!(
            "{} is not a conda channel: it has neither {}/ nor noarch/",
            dir.display(),
            platform.as_str()
        )));
    }
    Ok(records)
}

/// The records of a remote channel for `platform` and `noarch`, each archive registered in
/// `sources` as a download.
pub(crate) async fn load_remote_channel(
    base: &Url,
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let channel = Channel::from_url(base.clone());
    let mut records = Vec::new();
    let mut found_subdir = false;
    for subdir in [platform.as_str(), "noarch"] {
        let subdir_url = base
            .join(&format!("{subdir}/"))
            .map_err(|e| conda(format!("channel {base}: {e}")))?;
        let Some(bytes) = fetch_repodata(fetcher, &subdir_url).await? else {
            continue;
        };
        found_subdir = true;
        let repodata: RepoData = serde_json::from_slice(&bytes)
            .map_err(|e| conda(format!("bad repodata.json at {subdir_url}: {e}")))?;
        for record in repodata.into_repo_data_records(&channel) {
            sources.insert(record.url.clone(), Source::Remote(record.url.clone()));
            records.push(record);
        }
    }
    if !found_subdir {
        return Err(conda(format!(
            "{base} is not a conda channel: no repodata.json for {} or noarch",
            platform.as_str()
        )));
    }
    Ok(records)
}

/// Every record of `channels` (URLs or local directories) for `platform` and `noarch`,
/// channel by channel: what `conda search` looks through.
pub async fn load_channels(
    channels: &[String],
    platform: &str,
    fetcher: &mut Fetcher<'_>,
) -> Result<Vec<RepoDataRecord>> {
    let platform = parse_platform(platform)?;
    let mut sources = Sources::default();
    let mut out = Vec::new();
    for channel in channel_specs_named(channels, true)? {
        let records = match channel {
            ChannelSpec::Local { dir, canonical } => {
                load_local_channel(&dir, &canonical, platform, fetcher, &mut sources).await?
            }
            ChannelSpec::Remote(base) => {
                load_remote_channel(&base, platform, fetcher, &mut sources).await?
            }
        };
        out.extend(records);
    }
    Ok(out)
}

/// `repodata.json.zst` or `repodata.json` of a channel subdirectory; `None` when the
/// channel has neither.
async fn fetch_repodata(fetcher: &mut Fetcher<'_>, subdir_url: &Url) -> Result<Option<Vec<u8>>> {
    let client = fetcher.client()?;
    for (name, compressed) in [("repodata.json.zst", true), ("repodata.json", false)] {
        let url = subdir_url
            .join(name)
            .map_err(|e| conda(format!("{subdir_url}: {e}")))?;
        let response = client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| http("fetch", &url, &e))?;
        if matches!(response.status().as_u16(), 404 | 403 | 410) {
            continue;
        }
        let response = response
            .error_for_status()
            .map_err(|e| http("fetch", &url, &e))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| http("fetch", &url, &e))?;
        if compressed {
            let decoded =
                zstd_decode(&bytes).map_err(|e| conda(format!("cannot decompress {url}: {e}")))?;
            return Ok(Some(decoded));
        }
        return Ok(Some(bytes.to_vec()));
    }
    Ok(None)
}

fn zstd_decode(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    zstd::stream::decode_all(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use nbrt_testkit::conda_pkg::Pkg;
    use rattler_conda_types::{RepoDataRecord, Subdir};
    use url::Url;

    use super::*;
    use crate::fetch::{hex_sha256, Fetcher, Sources};

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn strings(channels: &[&str]) -> Vec<String> {
        channels.iter().map(|c| c.to_string()).collect()
    }

    fn error(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    /// `(url, channel, name=version=build)` of each record, sorted.
    fn summary(records: &[RepoDataRecord]) -> Vec<(String, Option<String>, String)> {
        let mut out: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r.url.to_string(),
                    r.channel.clone(),
                    crate::fetch::label(&r.package_record),
                )
            })
            .collect();
        out.sort();
        out
    }

    async fn archive_of(record: &RepoDataRecord, sources: &Sources, cache: &Path) -> PathBuf {
        sources
            .archive_for(record, &mut Fetcher::new(cache))
            .await
            .unwrap()
    }

    #[test]
    fn platform_must_be_a_linux_subdir() {
        assert_eq!(parse_platform("linux-64").unwrap(), Subdir::Linux64);
        assert_eq!(
            parse_platform("linux-aarch64").unwrap().as_str(),
            "linux-aarch64"
        );
        assert_eq!(
            error(parse_platform("osx-64")),
            "conda platform \"osx-64\" is not supported: images are Linux \
             (linux-64, linux-aarch64, …)"
        );
        assert!(
            error(parse_platform("amiga")).starts_with("unknown conda platform \"amiga\": "),
            "{}",
            error(parse_platform("amiga"))
        );
        assert!(fits_platform("linux-64", Subdir::Linux64));
        assert!(fits_platform("noarch", Subdir::Linux64));
        assert!(!fits_platform("linux-aarch64", Subdir::Linux64));
        assert!(!fits_platform("", Subdir::Linux64));
    }

    #[test]
    fn remote_channels_keep_their_url_with_a_trailing_slash() {
        let specs = channel_specs(&strings(&[
            "https://conda.example.org/forge",
            " http://127.0.0.1:8080/c/ ",
        ]))
        .unwrap();
        assert_eq!(
            specs,
            vec![
                ChannelSpec::Remote(url("https://conda.example.org/forge/")),
                ChannelSpec::Remote(url("http://127.0.0.1:8080/c/")),
            ]
        );
    }

    #[test]
    fn local_channel_directories_are_named_after_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let first = tmp.path().join("chan");
        let second = tmp.path().join("other").join("chan");
        let odd = tmp.path().join("my chan+x");
        for dir in [&first, &second, &odd] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let second_url = Url::from_directory_path(&second).unwrap().to_string();
        let specs = channel_specs(&[
            first.display().to_string(),
            second_url,
            odd.display().to_string(),
            format!("{}/", first.display()),
        ])
        .unwrap();
        assert_eq!(
            specs,
            vec![
                ChannelSpec::Local {
                    dir: first.clone(),
                    canonical: url("file:///chan/"),
                },
                ChannelSpec::Local {
                    dir: second,
                    canonical: url("file:///chan-2/"),
                },
                ChannelSpec::Local {
                    dir: odd,
                    canonical: url("file:///my%20chan+x/"),
                },
                ChannelSpec::Local {
                    dir: PathBuf::from(format!("{}/", first.display())),
                    canonical: url("file:///chan-3/"),
                },
            ]
        );
    }

    #[test]
    fn channels_that_are_not_urls_or_directories_are_refused() {
        assert_eq!(
            error(channel_specs(&strings(&["s3://bucket/chan"]))),
            "channel \"s3://bucket/chan\": only http(s):// and file:// URLs and local \
             directories are supported"
        );
        assert_eq!(
            error(channel_specs(&strings(&["conda-forge-no-such-dir"]))),
            "conda channel directory conda-forge-no-such-dir does not exist (channel \
             names are not supported: give a URL such as https://conda.anaconda.org/<name>, \
             or a directory)"
        );
        assert_eq!(
            error(channel_specs(&strings(&["/no/such/channel"]))),
            "conda channel directory /no/such/channel does not exist"
        );
        assert_eq!(
            error(channel_specs(&strings(&["file://host/share/chan"]))),
            "bad channel URL \"file://host/share/chan\""
        );
    }

    #[test]
    fn canonical_urls_of_packages() {
        let file = package_file_url("a b-1.0-0.conda").unwrap();
        assert_eq!(file.as_str(), "file:///a%20b-1.0-0.conda");
        assert_eq!(url_file_name(&file).as_deref(), Some("a b-1.0-0.conda"));
        assert_eq!(
            url_file_name(&url("https://h/c/linux-64/x%2By-1-0.conda")).as_deref(),
            Some("x+y-1-0.conda")
        );
        assert_eq!(
            channel_of(&url("https://conda.example.org/forge/linux-64/x-1-0.conda")).as_deref(),
            Some("https://conda.example.org/forge")
        );
        assert_eq!(
            channel_of(&url("file:///chan/noarch/x-1-0.tar.bz2")).as_deref(),
            Some("file:///chan")
        );
        assert_eq!(channel_of(&url("file:///x-1-0.conda")), None);
        assert_eq!(
            channel_of(&url("https://h/forge/not-a-subdir/x-1-0.conda")),
            None
        );
    }

    #[tokio::test]
    async fn indexed_local_channel_is_read_from_its_repodata() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chan");
        std::fs::create_dir_all(dir.join("linux-64")).unwrap();
        std::fs::create_dir_all(dir.join("noarch")).unwrap();
        let record = |name: &str, version: &str, subdir: &str| {
            serde_json::json!({
                "name": name, "version": version, "build": "h0_0", "build_number": 0,
                "depends": [], "subdir": subdir,
                "sha256": "aa".repeat(32), "md5": "bb".repeat(16), "size": 10,
            })
        };
        let linux = serde_json::json!({
            "info": {"subdir": "linux-64"},
            "packages": {"alpha-1.0-h0_0.tar.bz2": record("alpha", "1.0", "linux-64")},
            "packages.conda": {"alpha-2.0-h0_0.conda": record("alpha", "2.0", "linux-64")},
        });
        let noarch = serde_json::json!({
            "packages": {"nap-1.0-h0_0.tar.bz2": record("nap", "1.0", "noarch")},
        });
        std::fs::write(dir.join("linux-64/repodata.json"), linux.to_string()).unwrap();
        std::fs::write(dir.join("noarch/repodata.json"), noarch.to_string()).unwrap();
        // Another platform's subdirectory is not read.
        std::fs::create_dir_all(dir.join("linux-aarch64")).unwrap();
        std::fs::write(dir.join("linux-aarch64/repodata.json"), "not json").unwrap();

        let cache = tmp.path().join("cache");
        let mut fetcher = Fetcher::new(&cache);
        let mut sources = Sources::default();
        let records = load_local_channel(
            &dir,
            &url("file:///chan/"),
            Subdir::Linux64,
            &mut fetcher,
            &mut sources,
        )
        .await
        .unwrap();
        let channel = Some("file:///chan".to_string());
        assert_eq!(
            summary(&records),
            vec![
                (
                    "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2".to_string(),
                    channel.clone(),
                    "alpha=1.0=h0_0".to_string()
                ),
                (
                    "file:///chan/linux-64/alpha-2.0-h0_0.conda".to_string(),
                    channel.clone(),
                    "alpha=2.0=h0_0".to_string()
                ),
                (
                    "file:///chan/noarch/nap-1.0-h0_0.tar.bz2".to_string(),
                    channel,
                    "nap=1.0=h0_0".to_string()
                ),
            ]
        );
        let nap = records
            .iter()
            .find(|r| r.package_record.name.as_normalized() == "nap")
            .unwrap();
        assert_eq!(hex_sha256(&nap.package_record), "aa".repeat(32));
        // The archive is expected where repodata.json is; nothing was read or copied.
        assert_eq!(
            archive_of(nap, &sources, &cache).await,
            dir.join("noarch/nap-1.0-h0_0.tar.bz2")
        );
        assert!(!cache.exists());

        std::fs::write(dir.join("noarch/repodata.json"), "{\"packages\": 1}").unwrap();
        let message = error(
            load_local_channel(
                &dir,
                &url("file:///chan/"),
                Subdir::Linux64,
                &mut fetcher,
                &mut Sources::default(),
            )
            .await,
        );
        let prefix = format!("bad {}: ", dir.join("noarch/repodata.json").display());
        assert!(message.starts_with(&prefix), "{message}");
    }

    #[tokio::test]
    async fn unindexed_local_channel_is_indexed_from_its_archives() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chan");
        let alpha = Pkg::new("alpha", "1.0").tar_bz2(&dir.join("linux-64"));
        let nap = Pkg::new("nap", "1.0")
            .noarch_python()
            .tar_bz2(&dir.join("noarch"));
        // A linux-64 build in noarch/ is ignored, and so is what is not a package.
        Pkg::new("stray", "1.0").tar_bz2(&dir.join("noarch"));
        std::fs::write(dir.join("noarch/README"), "hello").unwrap();

        let cache = tmp.path().join("cache");
        let mut fetcher = Fetcher::new(&cache);
        let mut sources = Sources::default();
        let records = load_local_channel(
            &dir,
            &url("file:///chan/"),
            Subdir::Linux64,
            &mut fetcher,
            &mut sources,
        )
        .await
        .unwrap();
        let channel = Some("file:///chan".to_string());
        assert_eq!(
            summary(&records),
            vec![
                (
                    "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2".to_string(),
                    channel.clone(),
                    "alpha=1.0=h0_0".to_string()
                ),
                (
                    "file:///chan/noarch/nap-1.0-py_0.tar.bz2".to_string(),
                    channel,
                    "nap=1.0=py_0".to_string()
                ),
            ]
        );
        let digest = |path: &Path| {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
        };
        for (record, path) in records.iter().zip([&alpha, &nap]) {
            assert_eq!(hex_sha256(&record.package_record), digest(path));
            assert_eq!(&archive_of(record, &sources, &cache).await, path);
        }
        assert!(!dir.join("linux-64/repodata.json").exists());
        assert!(!dir.join("noarch/repodata.json").exists());
    }

    #[tokio::test]
    async fn a_directory_without_platform_or_noarch_is_not_a_channel() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("osx-64")).unwrap();
        let message = error(
            load_local_channel(
                tmp.path(),
                &url("file:///chan/"),
                Subdir::Linux64,
                &mut Fetcher::new(&tmp.path().join("cache")),
                &mut Sources::default(),
            )
            .await,
        );
        assert_eq!(
            message,
            format!(
                "{} is not a conda channel: it has neither linux-64/ nor noarch/",
                tmp.path().display()
            )
        );
    }

    #[test]
    fn compressed_repodata_is_decoded() {
        let json = br#"{"packages":{}}"#;
        let compressed = zstd::stream::encode_all(&json[..], 3).unwrap();
        assert_eq!(zstd_decode(&compressed).unwrap(), json);
        assert!(zstd_decode(b"not zstd").is_err());
    }
}
