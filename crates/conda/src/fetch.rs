//! The archives of conda packages: found (package files given offline, local channel files) or
//! downloaded into the cache, read, checked and extracted.
//!
//! - **Records from the archive.** A package's record is its archive's own `info/index.json`
//!   plus the archive's sha256, md5 and size, read once per build ([`Fetcher::archive_record`]),
//!   in both solved and locked builds, so a locked rebuild writes the same bytes.
//! - **Checks.** An archive must match its record's sha256 (or, without one, its md5) and hold
//!   the name, version and build the record says; a download is checked before it is used and
//!   removed when it does not match.
//! - **Cache layout** (the step's cache directory): `downloads/<sha256>/<file>` (or
//!   `md5-<md5>/`, `url-<sha256 of the URL>/` when the record has no sha256) for downloads, a
//!   verified earlier download being reused; `pkgs/` for extracted packages (rattler's package
//!   cache).
//! - **Package files** (`.conda`, `.tar.bz2`) given to the build are read from the archive
//!   itself; the solve installs exactly them (a spec on their sha256).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rattler_cache::package_cache::PackageCache;
use rattler_conda_types::package::{DistArchiveIdentifier, IndexJson};
use rattler_conda_types::{PackageRecord, RepoDataRecord, Subdir};
use rattler_digest::digest::Digest;
use url::Url;

use crate::channels::{fits_platform, package_file_url, url_file_name};
use crate::error::{chain, conda, http};
use crate::error::{IoContext, Result};
use crate::link::is_safe_relative;

/// `name=version=build`.
pub(crate) fn label(record: &PackageRecord) -> String {
    format!(
        "{}={}={}",
        record.name.as_normalized(),
        record.version,
        record.build
    )
}

pub(crate) fn to_hex(digest: impl AsRef<[u8]>) -> String {
    hex::encode(digest)
}

/// The record's sha256 in hex; empty when it has none.
pub(crate) fn hex_sha256(record: &PackageRecord) -> String {
    record.sha256.map(to_hex).unwrap_or_default()
}

/// Whether a file name is a conda package archive's (`.conda` or `.tar.bz2`).
pub(crate) fn is_package_file_name(file_name: &str) -> bool {
    file_name.ends_with(".conda") || file_name.ends_with(".tar.bz2")
}

pub(crate) fn archive_identifier(file_name: &str, origin: &str) -> Result<DistArchiveIdentifier> {
    DistArchiveIdentifier::try_from_filename(file_name)
        .filter(|_| is_package_file_name(file_name))
        .ok_or_else(|| {
            conda(format!(
                "{origin}: {file_name:?} is not a conda package file name (.conda or .tar.bz2)"
            ))
        })
}

/// Where the archive behind a canonical URL is.
#[derive(Default)]
pub struct Sources {
    by_url: HashMap<Url, Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Local(PathBuf),
    Remote(Url),
}

impl Sources {
    /// The first source given for a URL stays (channel priority).
    pub(crate) fn insert(&mut self, url: Url, source: Source) {
        self.by_url.entry(url).or_insert(source);
    }

    /// The archive of `record` on this machine: a local file, or a (verified) download.
    pub(crate) async fn archive_for(
        &self,
        record: &RepoDataRecord,
        fetcher: &mut Fetcher<'_>,
    ) -> Result<PathBuf> {
        let source = match self.by_url.get(&record.url) {
            Some(source) => source.clone(),
            None if matches!(record.url.scheme(), "http" | "https") => {
                Source::Remote(record.url.clone())
            }
            None => {
                return Err(conda(format!(
                    "cannot (re)install {}: its archive {} is in none of the channels or \
                     package files of this build",
                    label(&record.package_record),
                    record.url
                )))
            }
        };
        match source {
            Source::Local(path) => Ok(path),
            Source::Remote(url) => fetcher.download(&url, &record.package_record).await,
        }
    }
}

/// The records of the package files given to the build, read from the archives, each
/// registered in `sources` under its canonical URL `file:///<file name>`.
pub(crate) async fn package_files(
    paths: &[PathBuf],
    platform: Subdir,
    fetcher: &mut Fetcher<'_>,
    sources: &mut Sources,
) -> Result<Vec<RepoDataRecord>> {
    let mut tier = Vec::new();
    let mut names: HashMap<String, &Path> = HashMap::new();
    for path in paths {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| conda(format!("bad package file name {}", path.display())))?;
        let identifier = archive_identifier(file_name, &path.display().to_string())?;
        if let Some(other) = names.insert(file_name.to_string(), path) {
            return Err(conda(format!(
                "two package files are named {file_name}: {} and {}",
                other.display(),
                path.display()
            )));
        }
        if !path.is_file() {
            return Err(conda(format!(
                "conda package file {} does not exist",
                path.display()
            )));
        }
        let record = fetcher.archive_record(path).await?;
        check_subdir(
            &record,
            platform,
            &format!("package file {}", path.display()),
        )?;
        let url = package_file_url(file_name)?;
        sources.insert(url.clone(), Source::Local(path.clone()));
        tier.push(RepoDataRecord {
            package_record: record,
            identifier,
            url,
            channel: None,
        });
    }
    Ok(tier)
}

fn check_subdir(record: &PackageRecord, platform: Subdir, origin: &str) -> Result<()> {
    if !fits_platform(&record.subdir, platform) {
        return Err(conda(format!(
            "{origin} is built for {}, not {} or noarch",
            record.subdir,
            platform.as_str()
        )));
    }
    Ok(())
}

/// The archive of each record (in order), read and checked against the record.
pub(crate) async fn archives(
    records: &[RepoDataRecord],
    sources: &Sources,
    fetcher: &mut Fetcher<'_>,
) -> Result<Vec<(PathBuf, PackageRecord)>> {
    let mut archives = Vec::with_capacity(records.len());
    for record in records {
        let path = sources.archive_for(record, fetcher).await?;
        let archive = fetcher.archive_record(&path).await?;
        check_hashes(record, &archive, &path)?;
        archives.push((path, archive));
    }
    Ok(archives)
}

/// `archive` (read from the file at `path`) is what `record` says: same digest, same
/// name, version and build.
fn check_hashes(record: &RepoDataRecord, archive: &PackageRecord, path: &Path) -> Result<()> {
    let expected = &record.package_record;
    if let Some((kind, have, want)) = digest_mismatch(expected, archive) {
        return Err(conda(format!(
            "{}: the archive {} has {kind} {have}, but {} says {want} (stale index?)",
            expected.name.as_normalized(),
            path.display(),
            record.url,
        )));
    }
    if archive.name != expected.name
        || archive.version != expected.version
        || archive.build != expected.build
    {
        return Err(conda(format!(
            "{}: the archive {} holds {}, not {}",
            record.url,
            path.display(),
            label(archive),
            label(expected)
        )));
    }
    Ok(())
}

/// The digest an archive must match is `expected`'s sha256, or its md5 when it has no sha256
/// (neither: nothing to match). `Some((digest name, actual hex, expected hex))` on a mismatch.
/// `actual` is always an archive's record ([`read_archive_record`]), which has both digests.
fn digest_mismatch(
    expected: &PackageRecord,
    actual: &PackageRecord,
) -> Option<(&'static str, String, String)> {
    match (expected.sha256, expected.md5) {
        (Some(want), _) if actual.sha256 != Some(want) => Some((
            "sha256",
            actual.sha256.map(to_hex).unwrap_or_default(),
            to_hex(want),
        )),
        (None, Some(want)) if actual.md5 != Some(want) => Some((
            "md5",
            actual.md5.map(to_hex).unwrap_or_default(),
            to_hex(want),
        )),
        _ => None,
    }
}

fn hashes_match(expected: &PackageRecord, actual: &PackageRecord) -> bool {
    digest_mismatch(expected, actual).is_none()
}

/// Archive records (hashed once per build) and HTTP downloads into the cache.
pub struct Fetcher<'a> {
    cache_dir: &'a Path,
    client: Option<reqwest::Client>,
    records: HashMap<PathBuf, PackageRecord>,
}

impl<'a> Fetcher<'a> {
    pub fn new(cache_dir: &'a Path) -> Self {
        Self {
            cache_dir,
            client: None,
            records: HashMap::new(),
        }
    }

    /// A fetcher with its HTTP client already made (the command's: the image's CA bundle,
    /// a resolver without NSS).
    pub fn with_client(cache_dir: &'a Path, client: reqwest::Client) -> Self {
        Self {
            cache_dir,
            client: Some(client),
            records: HashMap::new(),
        }
    }

    /// The HTTP client of the build, made on first use.
    pub(crate) fn client(&mut self) -> Result<reqwest::Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("nbrt/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| conda(format!("cannot set up HTTP: {}", chain(&e))))?;
        self.client = Some(client.clone());
        Ok(client)
    }

    /// A package record read from the archive itself: `info/index.json` plus the archive's
    /// sha256, md5 and size.
    pub(crate) async fn archive_record(&mut self, path: &Path) -> Result<PackageRecord> {
        if let Some(record) = self.records.get(path) {
            return Ok(record.clone());
        }
        let owned = path.to_path_buf();
        let record = tokio::task::spawn_blocking(move || read_archive_record(&owned))
            .await
            .map_err(|e| conda(format!("reading {} failed: {e}", path.display())))??;
        self.records.insert(path.to_path_buf(), record.clone());
        Ok(record)
    }

    /// Download a package archive into `<cache>/downloads/`, checking its sha256 (or md5)
    /// against `expected`. A verified earlier download is reused.
    pub(crate) async fn download(
        &mut self,
        url: &Url,
        expected: &PackageRecord,
    ) -> Result<PathBuf> {
        let file_name = url_file_name(url)
            .filter(|n| is_safe_relative(Path::new(n)) && !n.contains('/'))
            .ok_or_else(|| conda(format!("bad package URL {url}")))?;
        let key = match (expected.sha256, expected.md5) {
            (Some(sha), _) => to_hex(sha),
            (None, Some(md5)) => format!("md5-{}", to_hex(md5)),
            (None, None) => format!(
                "url-{}",
                to_hex(
                    rattler_digest::compute_bytes_digest::<rattler_digest::Sha256>(url.as_str())
                )
            ),
        };
        let dir = self.cache_dir.join("downloads").join(key);
        let path = dir.join(&file_name);
        if path.is_file() {
            if let Ok(record) = self.archive_record(&path).await {
                if hashes_match(expected, &record) {
                    return Ok(path);
                }
            }
            self.records.remove(&path);
        }
        std::fs::create_dir_all(&dir).io_context(|| format!("create {}", dir.display()))?;
        let client = self.client()?;
        let mut response = client
            .get(url.clone())
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| http("download", url, &e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .io_context(|| format!("create a temporary file in {}", dir.display()))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| http("download", url, &e))?
        {
            tmp.write_all(&chunk)
                .io_context(|| format!("write {}", path.display()))?;
        }
        tmp.persist(&path)
            .map_err(|e| e.error)
            .io_context(|| format!("write {}", path.display()))?;
        self.records.remove(&path);
        let record = self.archive_record(&path).await?;
        if !hashes_match(expected, &record) {
            let _ = std::fs::remove_file(&path);
            return Err(conda(format!(
                "{url}: the download has sha256 {}, expected {}",
                hex_sha256(&record),
                hex_sha256(expected)
            )));
        }
        Ok(path)
    }
}

fn read_archive_record(path: &Path) -> Result<PackageRecord> {
    let corrupt = |e: &dyn std::fmt::Display| {
        conda(format!(
            "corrupt conda package file {}: {e}",
            path.display()
        ))
    };
    let index: IndexJson = rattler_package_streaming::seek::read_package_file(path)
        .map_err(|e| corrupt(&chain(&e)))?;
    let mut file = std::fs::File::open(path).io_context(|| format!("open {}", path.display()))?;
    let mut sha256 = rattler_digest::Sha256::new();
    let mut md5 = rattler_digest::Md5::new();
    let mut size = 0u64;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .io_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        sha256.update(&buffer[..n]);
        md5.update(&buffer[..n]);
        size += n as u64;
    }
    let mut record = PackageRecord::from_index_json(
        index,
        Some(size),
        Some(sha256.finalize()),
        Some(md5.finalize()),
    )
    .map_err(|e| corrupt(&e))?;
    record.indexed_timestamp = None;
    record.run_exports = None;
    Ok(record)
}

/// Rattler's cache of extracted packages in `dir` (the builder's `<cache>/pkgs`, a
/// command's `pkgs_dirs` entry).
pub(crate) fn package_cache(dir: &Path) -> PackageCache {
    PackageCache::new(dir)
}

/// The directory of the package at `path` (whose record is `archive`) extracted into `cache`;
/// an earlier extraction is reused.
pub(crate) async fn extract(
    cache: &PackageCache,
    path: &Path,
    archive: &PackageRecord,
) -> Result<PathBuf> {
    let entry = cache
        .get_or_fetch_from_path(path, Some(archive), None)
        .await
        .map_err(|e| {
            conda(format!(
                "cannot extract conda package {}: {}",
                path.display(),
                chain(&e)
            ))
        })?;
    Ok(entry.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use nbrt_testkit::conda_pkg::Pkg;
    use rattler_conda_types::Subdir;
    use sha2::Digest as _;

    use super::*;

    fn sha256_hex(path: &Path) -> String {
        hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
    }

    fn error(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    /// A channel record for an archive: its own record at `url`.
    fn channel_record(archive: &PackageRecord, url: &str) -> RepoDataRecord {
        let url = Url::parse(url).unwrap();
        let file_name = url_file_name(&url).unwrap();
        RepoDataRecord {
            package_record: archive.clone(),
            identifier: archive_identifier(&file_name, "test").unwrap(),
            url,
            channel: None,
        }
    }

    #[tokio::test]
    async fn archive_record_is_read_from_the_archive_once_per_build() {
        let tmp = tempfile::tempdir().unwrap();
        let path = Pkg::new("alpha", "1.0")
            .depends("beta >=1")
            .file("share/alpha.txt", "alpha\n")
            .tar_bz2(tmp.path());
        let bytes = std::fs::read(&path).unwrap();
        let mut fetcher = Fetcher::new(tmp.path());
        let record = fetcher.archive_record(&path).await.unwrap();
        assert_eq!(label(&record), "alpha=1.0=h0_0");
        assert_eq!(record.subdir, "linux-64");
        assert_eq!(record.depends, vec!["beta >=1".to_string()]);
        assert_eq!(record.size, Some(bytes.len() as u64));
        assert_eq!(hex_sha256(&record), sha256_hex(&path));
        assert_eq!(
            record.md5.map(to_hex),
            Some(to_hex(rattler_digest::compute_bytes_digest::<
                rattler_digest::Md5,
            >(&bytes)))
        );
        assert_eq!(record.indexed_timestamp, None);
        assert_eq!(record.run_exports, None);

        // Hashed once: a later read of the same path is the same record.
        std::fs::write(&path, b"changed").unwrap();
        assert_eq!(fetcher.archive_record(&path).await.unwrap(), record);
        // A new build reads the file again.
        let message = error(Fetcher::new(tmp.path()).archive_record(&path).await);
        let prefix = format!("corrupt conda package file {}: ", path.display());
        assert!(message.starts_with(&prefix), "{message}");
    }

    #[test]
    fn package_file_names_must_be_conda_archives() {
        for name in ["alpha-1.0-h0_0.tar.bz2", "alpha-1.0-h0_0.conda"] {
            assert!(is_package_file_name(name));
            assert_eq!(
                archive_identifier(name, "test").unwrap().to_file_name(),
                name
            );
        }
        assert!(!is_package_file_name("alpha-1.0-py3-none-any.whl"));
        assert_eq!(
            error(archive_identifier("alpha-1.0-py3-none-any.whl", "here")),
            "here: \"alpha-1.0-py3-none-any.whl\" is not a conda package file name \
             (.conda or .tar.bz2)"
        );
        assert_eq!(
            error(archive_identifier("README", "here")),
            "here: \"README\" is not a conda package file name (.conda or .tar.bz2)"
        );
    }

    #[tokio::test]
    async fn archives_are_checked_against_their_records() {
        let tmp = tempfile::tempdir().unwrap();
        let path = Pkg::new("alpha", "1.0").tar_bz2(tmp.path());
        let url = "file:///chan/linux-64/alpha-1.0-h0_0.tar.bz2";
        let mut fetcher = Fetcher::new(tmp.path());
        let archive = fetcher.archive_record(&path).await.unwrap();
        let mut sources = Sources::default();
        sources.insert(Url::parse(url).unwrap(), Source::Local(path.clone()));
        // The first source of a URL stays.
        sources.insert(
            Url::parse(url).unwrap(),
            Source::Local(tmp.path().join("other")),
        );

        let good = channel_record(&archive, url);
        let found = archives(std::slice::from_ref(&good), &sources, &mut fetcher)
            .await
            .unwrap();
        assert_eq!(found, vec![(path.clone(), archive.clone())]);

        let have_sha = hex_sha256(&archive);
        let have_md5 = to_hex(archive.md5.unwrap());
        let mut bad_sha = good.clone();
        bad_sha.package_record.sha256 = Some([7u8; 32].into());
        assert_eq!(
            error(archives(&[bad_sha], &sources, &mut fetcher).await),
            format!(
                "alpha: the archive {} has sha256 {have_sha}, but {url} says {} \
                 (stale index?)",
                path.display(),
                "07".repeat(32)
            )
        );

        // Without a sha256 the md5 is checked; with neither, only the name.
        let mut bad_md5 = good.clone();
        bad_md5.package_record.sha256 = None;
        bad_md5.package_record.md5 = Some([9u8; 16].into());
        assert_eq!(
            error(check_hashes(&bad_md5, &archive, &path)),
            format!(
                "alpha: the archive {} has md5 {have_md5}, but {url} says {} \
                 (stale index?)",
                path.display(),
                "09".repeat(16)
            )
        );
        let mut no_digest = good.clone();
        no_digest.package_record.sha256 = None;
        no_digest.package_record.md5 = None;
        check_hashes(&no_digest, &archive, &path).unwrap();
        assert!(hashes_match(&no_digest.package_record, &archive));
        assert!(!hashes_match(&bad_md5.package_record, &archive));

        let mut other_version = no_digest;
        other_version.package_record.version = "2.0".parse().unwrap();
        assert_eq!(
            error(check_hashes(&other_version, &archive, &path)),
            format!(
                "{url}: the archive {} holds alpha=1.0=h0_0, not alpha=2.0=h0_0",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn archives_of_unknown_local_urls_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = Pkg::new("alpha", "1.0").tar_bz2(tmp.path());
        let mut fetcher = Fetcher::new(tmp.path());
        let archive = fetcher.archive_record(&path).await.unwrap();
        let record = channel_record(&archive, "file:///gone/linux-64/alpha-1.0-h0_0.tar.bz2");
        assert_eq!(
            error(Sources::default().archive_for(&record, &mut fetcher).await),
            "cannot (re)install alpha=1.0=h0_0: its archive \
             file:///gone/linux-64/alpha-1.0-h0_0.tar.bz2 is in none of the channels or \
             package files of this build"
        );
    }

    #[tokio::test]
    async fn package_files_are_read_and_named_by_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let alpha = Pkg::new("alpha", "1.0").tar_bz2(&tmp.path().join("a"));
        let nap = Pkg::new("nap", "1.0")
            .noarch_python()
            .tar_bz2(&tmp.path().join("a"));
        let mut fetcher = Fetcher::new(tmp.path());
        let mut sources = Sources::default();
        let tier = package_files(
            &[alpha.clone(), nap.clone()],
            Subdir::Linux64,
            &mut fetcher,
            &mut sources,
        )
        .await
        .unwrap();
        let summary: Vec<(String, Option<String>, String, String)> = tier
            .iter()
            .map(|r| {
                (
                    r.url.to_string(),
                    r.channel.clone(),
                    r.identifier.to_file_name(),
                    label(&r.package_record),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "file:///alpha-1.0-h0_0.tar.bz2".to_string(),
                    None,
                    "alpha-1.0-h0_0.tar.bz2".to_string(),
                    "alpha=1.0=h0_0".to_string()
                ),
                (
                    "file:///nap-1.0-py_0.tar.bz2".to_string(),
                    None,
                    "nap-1.0-py_0.tar.bz2".to_string(),
                    "nap=1.0=py_0".to_string()
                ),
            ]
        );
        assert_eq!(hex_sha256(&tier[0].package_record), sha256_hex(&alpha));
        assert_eq!(
            sources.archive_for(&tier[1], &mut fetcher).await.unwrap(),
            nap
        );

        let twin = Pkg::new("alpha", "1.0").tar_bz2(&tmp.path().join("b"));
        assert_eq!(
            error(
                package_files(
                    &[alpha.clone(), twin.clone()],
                    Subdir::Linux64,
                    &mut fetcher,
                    &mut sources
                )
                .await
            ),
            format!(
                "two package files are named alpha-1.0-h0_0.tar.bz2: {} and {}",
                alpha.display(),
                twin.display()
            )
        );
        let missing = tmp.path().join("missing-1.0-0.conda");
        assert_eq!(
            error(
                package_files(
                    std::slice::from_ref(&missing),
                    Subdir::Linux64,
                    &mut fetcher,
                    &mut sources
                )
                .await
            ),
            format!("conda package file {} does not exist", missing.display())
        );
        let mut arm = Pkg::new("arm", "1.0");
        arm.subdir = "linux-aarch64".into();
        let arm = arm.tar_bz2(tmp.path());
        assert_eq!(
            error(
                package_files(
                    std::slice::from_ref(&arm),
                    Subdir::Linux64,
                    &mut fetcher,
                    &mut sources
                )
                .await
            ),
            format!(
                "package file {} is built for linux-aarch64, not linux-64 or noarch",
                arm.display()
            )
        );
    }

    #[tokio::test]
    async fn a_verified_download_in_the_cache_is_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("cache");
        let built = Pkg::new("alpha", "1.0").tar_bz2(&tmp.path().join("built"));
        let sha = sha256_hex(&built);
        let cached = cache
            .join("downloads")
            .join(&sha)
            .join("alpha-1.0-h0_0.tar.bz2");
        std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
        std::fs::copy(&built, &cached).unwrap();

        let mut fetcher = Fetcher::new(&cache);
        let archive = fetcher.archive_record(&built).await.unwrap();
        // Nothing listens there: the archive must come from the cache.
        let url = Url::parse("http://127.0.0.1:9/chan/linux-64/alpha-1.0-h0_0.tar.bz2").unwrap();
        assert_eq!(fetcher.download(&url, &archive).await.unwrap(), cached);

        // A name that is not one path segment is refused before anything is fetched.
        let bad = Url::parse("http://127.0.0.1:9/chan/linux-64/a%2Fb-1.0-0.conda").unwrap();
        assert_eq!(
            error(fetcher.download(&bad, &archive).await),
            "bad package URL http://127.0.0.1:9/chan/linux-64/a%2Fb-1.0-0.conda"
        );
    }

    #[tokio::test]
    async fn extracted_packages_go_to_the_package_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let cache_dir = tmp.path().join("cache");
        let path = Pkg::new("alpha", "1.0")
            .file("share/alpha.txt", "alpha\n")
            .tar_bz2(&tmp.path().join("built"));
        let archive = Fetcher::new(&cache_dir)
            .archive_record(&path)
            .await
            .unwrap();
        let cache = package_cache(&cache_dir.join("pkgs"));
        let dir = extract(&cache, &path, &archive).await.unwrap();
        assert!(dir.starts_with(cache_dir.join("pkgs")), "{}", dir.display());
        assert_eq!(
            std::fs::read_to_string(dir.join("share/alpha.txt")).unwrap(),
            "alpha\n"
        );
        assert!(dir.join("info/index.json").is_file());
        // The second time, the same directory.
        assert_eq!(extract(&cache, &path, &archive).await.unwrap(), dir);

        // The cache entry is keyed by the record: an archive not yet there is unpacked.
        let corrupt = tmp.path().join("alpha-9.9-h0_0.tar.bz2");
        std::fs::write(&corrupt, b"not bzip2").unwrap();
        let mut corrupt_record = archive.clone();
        corrupt_record.version = "9.9".parse().unwrap();
        let message = error(extract(&cache, &corrupt, &corrupt_record).await);
        let prefix = format!("cannot extract conda package {}: ", corrupt.display());
        assert!(message.starts_with(&prefix), "{message}");
    }
}
