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

use super::channels::{fits_platform, package_file_url, url_file_name};
use super::error::{chain, conda};
use super::link::is_safe_relative;
use crate::error::{IoContext, Result};

/// `name=version=build`.
pub(super) fn label(record: &PackageRecord) -> String {
    format!(
        "{}={}={}",
        record.name.as_normalized(),
        record.version,
        record.build
    )
}

pub(super) fn to_hex(digest: impl AsRef<[u8]>) -> String {
    hex::encode(digest)
}

/// The record's sha256 in hex; empty when it has none.
pub(super) fn hex_sha256(record: &PackageRecord) -> String {
    record.sha256.map(to_hex).unwrap_or_default()
}

/// Whether a file name is a conda package archive's (`.conda` or `.tar.bz2`).
pub(super) fn is_package_file_name(file_name: &str) -> bool {
    file_name.ends_with(".conda") || file_name.ends_with(".tar.bz2")
}

pub(super) fn archive_identifier(file_name: &str, origin: &str) -> Result<DistArchiveIdentifier> {
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
pub(super) struct Sources {
    by_url: HashMap<Url, Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    Local(PathBuf),
    Remote(Url),
}

impl Sources {
    /// The first source given for a URL stays (channel priority).
    pub(super) fn insert(&mut self, url: Url, source: Source) {
        self.by_url.entry(url).or_insert(source);
    }

    /// The archive of `record` on this machine: a local file, or a (verified) download.
    pub(super) async fn archive_for(
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
pub(super) async fn package_files(
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
pub(super) async fn archives(
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
pub(super) struct Fetcher<'a> {
    cache_dir: &'a Path,
    client: Option<reqwest::Client>,
    records: HashMap<PathBuf, PackageRecord>,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(cache_dir: &'a Path) -> Self {
        Self {
            cache_dir,
            client: None,
            records: HashMap::new(),
        }
    }

    /// The HTTP client of the build, made on first use.
    pub(super) fn client(&mut self) -> Result<reqwest::Client> {
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
    pub(super) async fn archive_record(&mut self, path: &Path) -> Result<PackageRecord> {
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
    pub(super) async fn download(
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
            .map_err(|e| conda(format!("cannot download {url}: {}", chain(&e))))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .io_context(|| format!("create a temporary file in {}", dir.display()))?;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| conda(format!("cannot download {url}: {}", chain(&e))))?
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

/// Rattler's cache of extracted packages, below the step's cache directory.
pub(super) fn package_cache(cache_dir: &Path) -> PackageCache {
    PackageCache::new(cache_dir.join("pkgs"))
}

/// The directory of the package at `path` (whose record is `archive`) extracted into `cache`;
/// an earlier extraction is reused.
pub(super) async fn extract(
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
