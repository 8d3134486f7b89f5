//! How much one import or export may expand to: the bytes its layers (and a compressed
//! archive) decompress to and the entries they hold, counted over everything it reads. A
//! 37 MB gzip can hold 8 GB of zeros; without a bound it fills the store's disk.
//!
//! The defaults are generous (far above the largest notebook images); `--max-expand-bytes`
//! / `--max-expand-entries` or `NBRT_MAX_EXPAND_BYTES` / `NBRT_MAX_EXPAND_ENTRIES` change
//! them. Sizes take a binary suffix (`K`, `M`, `G`, `T`).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{OciError, Result};

/// Default bound on the bytes one import or export may expand to: 256 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 30;
/// Default bound on the entries one import or export may hold: 20 million.
pub const DEFAULT_MAX_ENTRIES: u64 = 20_000_000;

pub const BYTES_ENV: &str = "NBRT_MAX_EXPAND_BYTES";
pub const ENTRIES_ENV: &str = "NBRT_MAX_EXPAND_ENTRIES";

/// The two bounds of one import or export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// A size with an optional binary suffix: `1048576`, `512M`, `8G`, `1T`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{t:?}: unknown suffix (use K, M, G or T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{t:?} is not a size (a number, optionally with K, M, G or T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{t:?} is too large"))
}

impl Limits {
    /// The defaults, changed by `NBRT_MAX_EXPAND_BYTES` and `NBRT_MAX_EXPAND_ENTRIES`.
    pub fn from_env() -> Result<Self> {
        let mut limits = Self::default();
        let read = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => {
                    parse_size(&v)
                        .map(Some)
                        .map_err(|reason| OciError::Unsupported {
                            what: format!("value of {name}"),
                            value: reason,
                        })
                }
                _ => Ok(None),
            }
        };
        if let Some(b) = read(BYTES_ENV)? {
            limits.max_bytes = b;
        }
        if let Some(n) = read(ENTRIES_ENV)? {
            limits.max_entries = n;
        }
        Ok(limits)
    }
}

/// What is left of one import's or export's bound, shared by everything it reads.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    bytes: AtomicU64,
    entries: AtomicU64,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            bytes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Count one entry.
    pub fn take_entry(&self) -> Result<()> {
        let n = self.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.limits.max_entries {
            return Err(OciError::ExpansionLimit {
                limit: self.limits.max_entries,
                unit: "entries",
                setting: "--max-expand-entries or NBRT_MAX_EXPAND_ENTRIES",
            });
        }
        Ok(())
    }

    /// Count `n` decompressed bytes.
    pub fn take_bytes(&self, n: u64) -> Result<()> {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed).saturating_add(n);
        if total > self.limits.max_bytes {
            return Err(OciError::ExpansionLimit {
                limit: self.limits.max_bytes,
                unit: "bytes",
                setting: "--max-expand-bytes or NBRT_MAX_EXPAND_BYTES",
            });
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A reader counting what it yields against this budget: it fails (with the limit in
    /// the error) on the read that goes over.
    pub fn reader<R: Read>(&self, inner: R) -> Budgeted<'_, R> {
        Budgeted {
            inner,
            budget: self,
        }
    }
}

/// See [`Budget::reader`].
pub struct Budgeted<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget
            .take_bytes(n as u64)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("2K"), Ok(2048));
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert!(parse_size("8X").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn a_reader_stops_at_the_limit() {
        let budget = Budget::new(Limits {
            max_bytes: 1000,
            max_entries: 1,
        });
        let mut sink = Vec::new();
        let err = std::io::copy(&mut budget.reader(&[0u8; 4096][..]), &mut sink).unwrap_err();
        assert!(err.to_string().contains("1000 bytes"), "{err}");
        budget.take_entry().unwrap();
        assert!(budget.take_entry().is_err());
    }
}
