//! Facts about an image that more than one crate reads, each read by one parser written
//! against a [`FileView`](crate::fsview::FileView): the builder's lock, rebase and steps read
//! them from unpacked layers, the inspector's manifest and checks from layer indexes, and
//! both get the same answer for the same image.
//!
//! - [`dpkg`]: Debian packages (`var/lib/dpkg/status`, `status.d/*`) and the one rule for
//!   which of them are installed;
//! - [`conda_meta`]: the `conda-meta/*.json` records of a conda environment;
//! - [`dist_info`]: Python distributions (`*.dist-info`, `*.egg-info`) of a `site-packages`;
//! - [`passwd`]: `/etc/passwd`, `/etc/group` and how a `user[:group]` resolves against them.
//!
//! A reader that goes over many files returns a [`Scan`]: what it could read, and a problem
//! per file it could not (unreadable, not captured by an index, malformed). The builder turns
//! a problem into an error; the inspector lists what it found and leaves the rest (its index
//! has said why already).

pub mod conda_meta;
pub mod dist_info;
pub mod dpkg;
pub mod passwd;

use crate::fsview::FsViewError;
use crate::text::Escaped;

/// Why one file could not be read as the fact it should hold.
#[derive(Debug, thiserror::Error)]
pub enum FactError {
    #[error(transparent)]
    View(#[from] FsViewError),
    /// `path` is there but does not hold what it should.
    #[error("{}: {}", Escaped(.path), Escaped(.reason))]
    Invalid { path: String, reason: String },
}

impl FactError {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        FactError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// What a reader found over many files: the items it read, and one problem per file it
/// could not read.
#[derive(Debug)]
#[must_use = "a scan's problems are errors to the builder: look at them or say why not"]
pub struct Scan<T> {
    pub items: Vec<T>,
    pub problems: Vec<FactError>,
}

impl<T> Default for Scan<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            problems: Vec::new(),
        }
    }
}

impl<T> Scan<T> {
    /// The items, or the first problem.
    pub fn into_result(self) -> Result<Vec<T>, FactError> {
        match self.problems.into_iter().next() {
            Some(p) => Err(p),
            None => Ok(self.items),
        }
    }

    /// The items, whatever could not be read.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }

    pub(crate) fn problem(&mut self, e: impl Into<FactError>) {
        self.problems.push(e.into());
    }
}
