//! Reading layer tars safely. Every entry is checked before anyone sees it: names are
//! normalized and may not be absolute or contain `..`, link targets may not leave the root,
//! sizes are bounded, and whiteouts are recognised. Everything that applies, flattens or
//! inspects a layer reads it through here.

use std::io::Read;

use crate::error::{OciError, Result};
use crate::layer::budget::Budget;
use crate::layer::rules::{LayerOutcome, LayerRules};
use crate::text::Quoted;

/// Largest single file a layer may contain.
pub const MAX_ENTRY_SIZE: u64 = 64 << 30;
/// Longest entry name or link target.
pub const MAX_PATH_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    /// Target as written; absolute targets are interpreted inside the image root.
    Symlink(String),
    /// Normalized path of the entry this one links to, relative to the root.
    Hardlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
    /// `path` is deleted from the layers below (`.wh.<name>`).
    Whiteout,
    /// Everything below directory `path` in lower layers is hidden (`.wh..wh..opq`).
    Opaque,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Normalized path relative to the root: no leading `/` or `./`, no `.` or `..`.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn unsafe_entry(path: &str, reason: impl Into<String>) -> OciError {
    OciError::UnsafeEntry {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Normalize a name from a tar header: strip `./` and trailing `/`, refuse absolute names and
/// `..` components. The root itself normalizes to "".
pub fn normalize_path(raw: &str) -> Result<String> {
    if raw.len() > MAX_PATH_LEN {
        return Err(unsafe_entry(raw, "name is too long"));
    }
    if raw.starts_with('/') {
        return Err(unsafe_entry(raw, "absolute name"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for comp in raw.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(unsafe_entry(raw, "name contains '..'")),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// A relative symlink target may climb at most to the root from where the link sits.
fn check_symlink(path: &str, target: &str) -> Result<()> {
    if target.is_empty() {
        return Err(unsafe_entry(path, "symlink with an empty target"));
    }
    if target.len() > MAX_PATH_LEN {
        return Err(unsafe_entry(path, "symlink target is too long"));
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth = path.split('/').count() as i64 - 1;
    for comp in target.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(unsafe_entry(
                        path,
                        format!("symlink target {} leaves the root", Quoted(target)),
                    ));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// Read every entry of an uncompressed layer tar, checked, and hand it with its data (empty
/// for anything but a regular file) to `f`. Stops at the first error.
pub fn for_each_entry<R: Read>(
    reader: R,
    f: impl FnMut(&Entry, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    read_layer(reader, None, f).map(|_| ())
}

/// [`for_each_entry`] counting entries and bytes against `budget` (one import's or export's
/// bound), and returning what the layer's entries came to by the rules of
/// [`super::rules`] (which entries a later one replaced, hard link groups). Entries the rules
/// refuse stop the read before `f` sees them.
pub fn read_layer<R: Read>(
    reader: R,
    budget: Option<&Budget>,
    mut f: impl FnMut(&Entry, &mut dyn Read) -> Result<()>,
) -> Result<LayerOutcome> {
    let mut archive = tar::Archive::new(Counted {
        inner: reader,
        budget,
    });
    let entries = archive
        .entries()
        .map_err(|e| OciError::InvalidLayer(format!("not a tar stream: {e}")))?;
    let mut rules = LayerRules::new();
    for entry in entries {
        let mut entry =
            entry.map_err(|e| match e.get_ref().is_some_and(|i| i.is::<OciError>()) {
                true => crate::image::unwrap_io(e, String::new),
                false => OciError::InvalidLayer(format!("bad tar header: {e}")),
            })?;
        let Some(checked) = check_entry(&mut entry)? else {
            continue;
        };
        if let Some(b) = budget {
            b.take_entry()?;
        }
        rules.push(&checked)?;
        if checked.kind == EntryKind::File {
            f(&checked, &mut entry).map_err(|e| match e {
                OciError::Io { context, source }
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    OciError::InvalidLayer(format!(
                        "{context}: {} ends before its declared size of {} bytes",
                        Quoted(&checked.path),
                        checked.size
                    ))
                }
                other => other,
            })?;
        } else {
            f(&checked, &mut std::io::empty())?;
        }
    }
    Ok(rules.finish())
}

/// A layer stream, counted against a budget when there is one.
struct Counted<'a, R> {
    inner: R,
    budget: Option<&'a Budget>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = self.budget {
            b.take_bytes(n as u64)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        Ok(n)
    }
}

/// Validate one tar entry; `None` for entries that carry no file (global headers, the root).
fn check_entry<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Entry>> {
    use tar::EntryType as T;
    let header = entry.header();
    let etype = header.entry_type();
    if matches!(
        etype,
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
    ) {
        return Ok(None);
    }
    let raw_path_bytes = entry.path_bytes().into_owned();
    let raw_path = String::from_utf8(raw_path_bytes)
        .map_err(|e| unsafe_entry(&String::from_utf8_lossy(e.as_bytes()), "name is not UTF-8"))?;
    let path = normalize_path(&raw_path)?;
    let header = entry.header();
    let size = header.entry_size().map_err(|e| {
        OciError::InvalidLayer(format!("{}: bad size field: {e}", Quoted(&raw_path)))
    })?;
    if size > MAX_ENTRY_SIZE {
        return Err(unsafe_entry(
            &raw_path,
            format!("header claims {size} bytes, over the limit of {MAX_ENTRY_SIZE}"),
        ));
    }
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    let uid = header.uid().unwrap_or(0);
    let gid = header.gid().unwrap_or(0);
    let mtime = header.mtime().unwrap_or(0);
    let link_name = || -> Result<String> {
        let bytes = entry
            .link_name_bytes()
            .ok_or_else(|| unsafe_entry(&raw_path, "link without a target"))?;
        String::from_utf8(bytes.into_owned())
            .map_err(|_| unsafe_entry(&raw_path, "link target is not UTF-8"))
    };
    let device = || -> (u32, u32) {
        (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        )
    };
    let kind = match etype {
        T::Regular | T::Continuous => EntryKind::File,
        T::Directory => EntryKind::Dir,
        T::Symlink => {
            let target = link_name()?;
            if path.is_empty() {
                return Err(unsafe_entry(&raw_path, "the root cannot be a symlink"));
            }
            check_symlink(&path, &target)?;
            EntryKind::Symlink(target)
        }
        T::Link => {
            let target = normalize_path(&link_name()?).map_err(|e| match e {
                OciError::UnsafeEntry { reason, .. } => {
                    unsafe_entry(&raw_path, format!("hard link target: {reason}"))
                }
                other => other,
            })?;
            if target.is_empty() || target == path {
                return Err(unsafe_entry(
                    &raw_path,
                    "hard link to the root or to itself",
                ));
            }
            EntryKind::Hardlink(target)
        }
        T::Char => {
            let (major, minor) = device();
            EntryKind::CharDevice { major, minor }
        }
        T::Block => {
            let (major, minor) = device();
            EntryKind::BlockDevice { major, minor }
        }
        T::Fifo => EntryKind::Fifo,
        other => {
            return Err(unsafe_entry(
                &raw_path,
                format!("unsupported tar entry type {:?}", other.as_byte() as char),
            ))
        }
    };
    if path.is_empty() {
        // The root directory entry ("./"): nothing to create.
        return match kind {
            EntryKind::Dir => Ok(None),
            _ => Err(unsafe_entry(&raw_path, "the root must be a directory")),
        };
    }
    let (parent, base) = match path.rsplit_once('/') {
        Some((p, b)) => (p, b),
        None => ("", path.as_str()),
    };
    let (path, kind) = if base == OPAQUE_MARKER {
        (parent.to_string(), EntryKind::Opaque)
    } else if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the file system.
            return Ok(None);
        }
        if hidden.is_empty() {
            return Err(unsafe_entry(&raw_path, "whiteout of nothing"));
        }
        if hidden == "." || hidden == ".." {
            // Refused by name, not left to the kernel's refusal to remove `.` or `..`.
            return Err(unsafe_entry(&raw_path, "whiteout of . or .."));
        }
        let hidden_path = if parent.is_empty() {
            hidden.to_string()
        } else {
            format!("{parent}/{hidden}")
        };
        (hidden_path, EntryKind::Whiteout)
    } else {
        (path, kind)
    };
    let mut xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(|e| {
        OciError::InvalidLayer(format!("{}: bad PAX header: {e}", Quoted(&raw_path)))
    })? {
        for ext in exts {
            let ext = ext.map_err(|e| {
                OciError::InvalidLayer(format!("{}: bad PAX record: {e}", Quoted(&raw_path)))
            })?;
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    let size = if kind == EntryKind::File { size } else { 0 };
    Ok(Some(Entry {
        path,
        kind,
        mode,
        uid,
        gid,
        mtime,
        size,
        xattrs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_path("./usr/bin/").unwrap(), "usr/bin");
        assert_eq!(normalize_path("a//./b").unwrap(), "a/b");
        assert_eq!(normalize_path("./").unwrap(), "");
        assert!(normalize_path("/etc/passwd").is_err());
        assert!(normalize_path("a/../../b").is_err());
        assert!(normalize_path("..").is_err());
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink("usr/lib/x", "../../bin/sh").is_ok());
        assert!(check_symlink("usr/lib/x", "../../../etc").is_err());
        assert!(check_symlink("x", "..").is_err());
        assert!(check_symlink("etc/localtime", "/usr/share/zoneinfo/UTC").is_ok());
        assert!(check_symlink("bin", "usr/bin").is_ok());
    }
}
