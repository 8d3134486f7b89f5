//! A read-only view of an image's merged file system, as the readers of facts in
//! [`crate::facts`] see it. Two places implement it: the builder's view over unpacked layer
//! directories (every byte there), and the inspector's view over layer indexes (every entry,
//! but the bytes of only the small files its index captures, reduced to what the readers use;
//! see [`FsViewError::NotCaptured`]).
//!
//! Paths are relative to the image root, with or without a leading `/`. Symlinks resolve
//! inside the image root: an absolute target starts again at the image's `/`, and `..` never
//! climbs above it.

use crate::text::{Escaped, Quoted};

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A regular file (a hard link is one too).
    File,
    Dir,
    Symlink,
    /// A character or block device (a layer index does not tell them apart).
    Device,
    Fifo,
    Socket,
}

/// An entry's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub kind: FileKind,
    /// Permission bits with setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Bytes of a regular file; 0 for anything else.
    pub size: u64,
    /// A symlink's target as written.
    pub link: Option<String>,
}

impl FileInfo {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }

    pub fn is_symlink(&self) -> bool {
        self.kind == FileKind::Symlink
    }
}

/// Why a view could not answer. Paths are as the caller gave them; every field is shown
/// escaped ([`crate::text`]).
#[derive(Debug, thiserror::Error)]
pub enum FsViewError {
    #[error("{}: {}", Escaped(.context), Escaped(.source))]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is a directory in the image, not a file", Quoted(.path))]
    IsADirectory { path: String },
    #[error("{} is not a regular file in the image", Quoted(.path))]
    NotAFile { path: String },
    #[error("{} is not a directory in the image", Quoted(.path))]
    NotADirectory { path: String },
    #[error("{} in the image is {size} bytes, over the limit of {limit}", Quoted(.path))]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("too many levels of symlinks resolving {} in the image", Quoted(.path))]
    SymlinkLoop { path: String },
    #[error("{} in the image is not UTF-8", Escaped(.what))]
    NotUtf8 { what: String },
    /// The view knows the file is there but not its bytes: the inspector's layer index keeps
    /// the bytes of a few small files only (or it was over the index's size limit for it).
    #[error("{} is not one of the files the layer index keeps", Quoted(.path))]
    NotCaptured { path: String },
}

pub type Result<T, E = FsViewError> = std::result::Result<T, E>;

/// A read-only merged file system of an image.
pub trait FileView {
    /// A regular file's bytes, symlinks followed. `Ok(None)` when nothing is at `path` (a
    /// dangling symlink included); an error for a directory, a special file, a file over
    /// the view's size limit, or (index views) a file whose bytes were not captured.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>>;

    /// The names in directory `path` (symlinks followed), merged over the layers, sorted.
    /// `Ok(None)` when nothing is at `path`; an error when it is not a directory.
    fn read_dir(&self, path: &str) -> Result<Option<Vec<String>>>;

    /// The entry at `path`: with `follow`, a symlink in the last component is followed
    /// (like `stat`); without, the symlink itself is reported (like `lstat`). Symlinks in
    /// earlier components are always followed. `Ok(None)` when nothing is there.
    fn metadata(&self, path: &str, follow: bool) -> Result<Option<FileInfo>>;

    /// [`FileView::read`] as text (invalid UTF-8 replaced).
    fn read_text(&self, path: &str) -> Result<Option<String>> {
        Ok(self
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// Whether something is at `path`, symlinks followed (a dangling one is not there).
    fn exists(&self, path: &str) -> Result<bool> {
        Ok(self.metadata(path, true)?.is_some())
    }

    /// Whether `path` is a directory, symlinks followed.
    fn is_dir(&self, path: &str) -> Result<bool> {
        Ok(self.metadata(path, true)?.is_some_and(|m| m.is_dir()))
    }
}

impl<V: FileView + ?Sized> FileView for &V {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        (**self).read(path)
    }
    fn read_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
        (**self).read_dir(path)
    }
    fn metadata(&self, path: &str, follow: bool) -> Result<Option<FileInfo>> {
        (**self).metadata(path, follow)
    }
}

/// `base/name` for relative paths (`name` alone when `base` is the root).
pub fn join(base: &str, name: &str) -> String {
    let base = base.trim_matches('/');
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A view over an in-memory tree, for the readers' unit tests.

    use std::collections::BTreeMap;

    use super::*;

    /// Files and directories by path (no symlinks); parents are implied.
    #[derive(Default)]
    pub struct MemView {
        pub files: BTreeMap<String, Vec<u8>>,
        pub dirs: Vec<String>,
    }

    impl MemView {
        pub fn with(files: &[(&str, &str)]) -> Self {
            Self {
                files: files
                    .iter()
                    .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
                    .collect(),
                dirs: Vec::new(),
            }
        }

        fn is_dir_path(&self, p: &str) -> bool {
            p.is_empty()
                || self.dirs.iter().any(|d| d == p)
                || self
                    .files
                    .keys()
                    .chain(self.dirs.iter())
                    .any(|k| k.starts_with(&format!("{p}/")))
        }
    }

    impl FileView for MemView {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
            let p = path.trim_matches('/');
            if let Some(b) = self.files.get(p) {
                return Ok(Some(b.clone()));
            }
            if self.is_dir_path(p) {
                return Err(FsViewError::IsADirectory { path: path.into() });
            }
            Ok(None)
        }

        fn read_dir(&self, path: &str) -> Result<Option<Vec<String>>> {
            let p = path.trim_matches('/');
            if self.files.contains_key(p) {
                return Err(FsViewError::NotADirectory { path: path.into() });
            }
            if !self.is_dir_path(p) {
                return Ok(None);
            }
            let prefix = if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            };
            let mut names: Vec<String> = self
                .files
                .keys()
                .chain(self.dirs.iter())
                .filter_map(|k| k.strip_prefix(&prefix))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
                .filter(|n| !n.is_empty())
                .collect();
            names.sort();
            names.dedup();
            Ok(Some(names))
        }

        fn metadata(&self, path: &str, _follow: bool) -> Result<Option<FileInfo>> {
            let p = path.trim_matches('/');
            let (kind, size) = match self.files.get(p) {
                Some(b) => (FileKind::File, b.len() as u64),
                None if self.is_dir_path(p) => (FileKind::Dir, 0),
                None => return Ok(None),
            };
            Ok(Some(FileInfo {
                kind,
                mode: 0o644,
                uid: 0,
                gid: 0,
                size,
                link: None,
            }))
        }
    }
}
