//! Writing layer tars deterministically: headers carry only what the entry says (numeric
//! owners, no user or group names, no atime/ctime), mtimes are clamped to
//! `SOURCE_DATE_EPOCH` when it is set, and the diff ID and blob digest are computed in the
//! same pass as the bytes are written.

use std::io::{self, Read, Write};

use crate::digest::{Digest, HashingWriter};
use crate::error::{IoContext, OciError, Result};
use crate::layer::compression::{Compression, Compressor};
use crate::layer::reader::{Entry, EntryKind, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::spec::Descriptor;

/// What a finished layer is: its uncompressed and stored identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub diff_id: Digest,
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
}

impl LayerInfo {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.compression.oci_media_type(),
            self.digest.clone(),
            self.size,
        )
    }
}

type Pipeline<W> = tar::Builder<HashingWriter<Compressor<HashingWriter<W>>>>;

pub struct LayerWriter<W: Write> {
    tar: Pipeline<W>,
    compression: Compression,
    clamp_mtime: Option<u64>,
}

impl<W: Write> LayerWriter<W> {
    /// `clamp_mtime`: upper bound for every entry's mtime (usually `SOURCE_DATE_EPOCH`).
    pub fn new(out: W, compression: Compression, clamp_mtime: Option<u64>) -> Result<Self> {
        let compressor = Compressor::new(HashingWriter::new(out), compression)?;
        let mut tar = tar::Builder::new(HashingWriter::new(compressor));
        tar.mode(tar::HeaderMode::Complete);
        Ok(Self {
            tar,
            compression,
            clamp_mtime,
        })
    }

    /// Append one entry. For files `data` must yield exactly `entry.size` bytes.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        append_entry(&mut self.tar, self.clamp_mtime, entry, data)
    }

    /// Close the tar and the compressor; returns the layer's identities and the output.
    pub fn finish(self) -> Result<(LayerInfo, W)> {
        let hashed_tar = self.tar.into_inner().io_context(|| "finishing layer tar")?;
        let (compressor, diff_id, _) = hashed_tar.finish();
        let hashed_out = compressor
            .finish()
            .io_context(|| "finishing layer compression")?;
        let (out, digest, size) = hashed_out.finish();
        Ok((
            LayerInfo {
                diff_id,
                digest,
                size,
                compression: self.compression,
            },
            out,
        ))
    }
}

/// Append one entry to a tar stream, as every layer nbrt writes has it. For files `data`
/// must yield exactly `entry.size` bytes.
pub(crate) fn append_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    clamp_mtime: Option<u64>,
    entry: &Entry,
    data: &mut dyn Read,
) -> Result<()> {
    let ctx = || format!("writing layer entry {:?}", entry.path);
    let mut header = tar::Header::new_gnu();
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mode(entry.mode);
    let mtime = match clamp_mtime {
        Some(max) => entry.mtime.min(max),
        None => entry.mtime,
    };
    header.set_mtime(mtime);
    header.set_size(0);
    if !entry.xattrs.is_empty() {
        let records: Vec<(String, &[u8])> = entry
            .xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
            .collect();
        tar.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .io_context(ctx)?;
    }
    match &entry.kind {
        EntryKind::File => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(entry.size);
            let mut limited = data.take(entry.size);
            // An error of ours from the reader (a limit, a digest) comes out as itself.
            tar.append_data(&mut header, &entry.path, &mut limited)
                .map_err(|e| crate::image::unwrap_io(e, ctx))?;
            if limited.limit() != 0 {
                return Err(OciError::InvalidLayer(format!(
                    "{:?}: data ended {} bytes short of its size",
                    entry.path,
                    limited.limit()
                )));
            }
        }
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, format!("{}/", entry.path), io::empty())
                .io_context(ctx)?;
        }
        EntryKind::Symlink(target) | EntryKind::Hardlink(target) => {
            header.set_entry_type(if matches!(entry.kind, EntryKind::Symlink(_)) {
                tar::EntryType::Symlink
            } else {
                tar::EntryType::Link
            });
            tar.append_link(&mut header, &entry.path, target)
                .io_context(ctx)?;
        }
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            header.set_entry_type(if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            header.set_device_major(*major).io_context(ctx)?;
            header.set_device_minor(*minor).io_context(ctx)?;
            tar.append_data(&mut header, &entry.path, io::empty())
                .io_context(ctx)?;
        }
        EntryKind::Fifo => {
            header.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut header, &entry.path, io::empty())
                .io_context(ctx)?;
        }
        EntryKind::Whiteout | EntryKind::Opaque => {
            let name = whiteout_name(&entry.path, entry.kind == EntryKind::Opaque);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, name, io::empty())
                .io_context(ctx)?;
        }
    }
    Ok(())
}

/// The tar name that records a whiteout of `path` (or an opaque marker in directory `path`).
pub fn whiteout_name(path: &str, opaque: bool) -> String {
    let (parent, base) = match path.rsplit_once('/') {
        Some((p, b)) => (format!("{p}/"), b),
        None => (String::new(), path),
    };
    if opaque {
        if path.is_empty() {
            OPAQUE_MARKER.to_string()
        } else {
            format!("{path}/{OPAQUE_MARKER}")
        }
    } else {
        format!("{parent}{WHITEOUT_PREFIX}{base}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::reader::for_each_entry;

    fn file(path: &str, data: &[u8], mtime: u64) -> (Entry, Vec<u8>) {
        (
            Entry {
                path: path.into(),
                kind: EntryKind::File,
                mode: 0o4755,
                uid: 1000,
                gid: 100,
                mtime,
                size: data.len() as u64,
                xattrs: vec![("security.capability".into(), vec![1, 2, 3])],
            },
            data.to_vec(),
        )
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let long = format!("{}/file", "d".repeat(200));
        let entries = vec![
            file("usr/bin/tool", b"#!/bin/sh\n", 2_000_000_000),
            file(&long, b"x", 5),
            (
                Entry {
                    path: "etc/gone".into(),
                    kind: EntryKind::Whiteout,
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    size: 0,
                    xattrs: vec![],
                },
                vec![],
            ),
        ];
        let write = || {
            let mut w = LayerWriter::new(Vec::new(), Compression::Gzip, Some(1_000)).unwrap();
            for (e, d) in &entries {
                w.append(e, &mut &d[..]).unwrap();
            }
            w.finish().unwrap()
        };
        let (info1, out1) = write();
        let (info2, out2) = write();
        assert_eq!(info1, info2);
        assert_eq!(out1, out2);
        assert_eq!(info1.digest, Digest::of_bytes(&out1));
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&out1[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(info1.diff_id, Digest::of_bytes(&plain));
        let mut seen = Vec::new();
        for_each_entry(&plain[..], |e, _| {
            seen.push(e.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].mode, 0o4755);
        assert_eq!(seen[0].mtime, 1_000, "mtime clamped");
        assert_eq!(seen[0].xattrs, entries[0].0.xattrs);
        assert_eq!(seen[1].path, long);
        assert_eq!(seen[1].mtime, 5);
        assert_eq!(seen[2].kind, EntryKind::Whiteout);
        assert_eq!(seen[2].path, "etc/gone");
    }
}
