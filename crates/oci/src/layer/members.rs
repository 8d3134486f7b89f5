//! A layer put together from members: runs of tar entries kept uncompressed and compressed
//! one by one. Gzip members (and zstd frames) concatenate into one valid stream, and tar
//! entries concatenate into one valid archive, so a layer can be assembled from members
//! made at different times — a builder keeps the members of parts that did not change and
//! compresses only the new ones, and the layer is the same bytes as if it had been written
//! in one go from the same members.
//!
//! A member is a pair of files, written in one pass: the entries (no end-of-archive marker)
//! and their compressed form. The layer is the compressed members in order, then one compressed
//! end-of-archive marker; its diff ID is the digest of the uncompressed members in order,
//! then the marker.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Hasher, HashingWriter};
use crate::error::{IoContext, OciError, Result};
use crate::layer::compression::{Compression, Compressor};
use crate::layer::reader::Entry;
use crate::layer::writer::{append_entry, LayerInfo};

/// The end of a tar archive: two zero blocks.
const END_OF_ARCHIVE: usize = 1024;

/// Writes tar entries, without the end-of-archive marker, to a member's two files at once:
/// uncompressed and compressed.
pub struct MemberWriter {
    tar: tar::Builder<HoldBack<Tee>>,
    clamp_mtime: Option<u64>,
    path: PathBuf,
}

/// Both files of a member.
struct Tee {
    plain: BufWriter<File>,
    compressed: Compressor<BufWriter<File>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.plain.write_all(buf)?;
        self.compressed.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.plain.flush()?;
        self.compressed.flush()
    }
}

/// Passes everything on but the last [`END_OF_ARCHIVE`] bytes written: the tar builder always
/// ends with the marker, and a member must not.
struct HoldBack<W> {
    inner: W,
    held: Vec<u8>,
}

impl<W: Write> Write for HoldBack<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.held.extend_from_slice(buf);
        if self.held.len() > END_OF_ARCHIVE {
            let pass = self.held.len() - END_OF_ARCHIVE;
            self.inner.write_all(&self.held[..pass])?;
            self.held.drain(..pass);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl MemberWriter {
    /// `clamp_mtime`: upper bound for every entry's mtime (usually `SOURCE_DATE_EPOCH`).
    pub fn create(
        member: &Member,
        compression: Compression,
        clamp_mtime: Option<u64>,
    ) -> Result<Self> {
        let open = |p: &Path| -> Result<BufWriter<File>> {
            let f = File::create(p).io_context(|| format!("creating {}", p.display()))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        };
        let tee = Tee {
            plain: open(&member.tar)?,
            compressed: Compressor::new(open(&member.compressed)?, compression)?,
        };
        let mut tar = tar::Builder::new(HoldBack {
            inner: tee,
            held: Vec::with_capacity(2 * END_OF_ARCHIVE),
        });
        tar.mode(tar::HeaderMode::Complete);
        Ok(Self {
            tar,
            clamp_mtime,
            path: member.tar.clone(),
        })
    }

    /// Append one entry. For files `data` must yield exactly `entry.size` bytes.
    pub fn append(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<()> {
        append_entry(&mut self.tar, self.clamp_mtime, entry, data)
    }

    /// Close the member; returns the sizes of its uncompressed and compressed files.
    pub fn finish(self) -> Result<(u64, u64)> {
        let ctx = || format!("finishing {}", self.path.display());
        let held = self.tar.into_inner().io_context(ctx)?;
        if held.held != [0; END_OF_ARCHIVE] {
            return Err(OciError::InvalidLayer(format!(
                "{}: the tar writer did not end with an end-of-archive marker",
                self.path.display()
            )));
        }
        let Tee { plain, compressed } = held.inner;
        let size = |w: BufWriter<File>| -> Result<u64> {
            let f = w.into_inner().map_err(|e| e.into_error()).io_context(ctx)?;
            Ok(f.metadata().io_context(ctx)?.len())
        };
        let compressed = compressed.finish().io_context(ctx)?;
        Ok((size(plain)?, size(compressed)?))
    }
}

/// One member of a layer: its uncompressed and compressed files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub tar: PathBuf,
    pub compressed: PathBuf,
}

/// Write the layer made of `members` (in order) to `out`. The compressed bytes are copied,
/// never compressed again; the uncompressed ones are only read for the diff ID, on a second
/// thread.
pub fn assemble<W: Write + Send>(
    out: W,
    members: &[Member],
    compression: Compression,
) -> Result<(LayerInfo, W)> {
    let mut end = Vec::new();
    {
        let mut c = Compressor::new(&mut end, compression)?;
        c.write_all(&[0; END_OF_ARCHIVE])
            .io_context(|| "compressing the end of the archive")?;
        c.finish()
            .io_context(|| "compressing the end of the archive")?;
    }
    let (diff_id, written) = std::thread::scope(|s| {
        let diff = s.spawn(|| -> Result<_> {
            let mut h = Hasher::new();
            let mut buf = vec![0; 1 << 20];
            for m in members {
                let mut f = File::open(&m.tar)
                    .io_context(|| format!("reading member {}", m.tar.display()))?;
                loop {
                    let n = f
                        .read(&mut buf)
                        .io_context(|| format!("reading member {}", m.tar.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            h.update(&[0; END_OF_ARCHIVE]);
            Ok(h.finish().0)
        });
        let written = (|| -> Result<_> {
            let mut w = HashingWriter::new(out);
            for m in members {
                let mut f = File::open(&m.compressed)
                    .io_context(|| format!("reading member {}", m.compressed.display()))?;
                io::copy(&mut f, &mut w)
                    .io_context(|| format!("copying member {}", m.compressed.display()))?;
            }
            w.write_all(&end)
                .io_context(|| "writing the end of the archive")?;
            Ok(w.finish())
        })();
        let diff = diff
            .join()
            .unwrap_or_else(|_| Err(OciError::InvalidLayer("hashing members panicked".into())));
        (diff, written)
    });
    let (out, digest, size) = written?;
    Ok((
        LayerInfo {
            diff_id: diff_id?,
            digest,
            size,
            compression,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layer::reader::EntryKind;
    use crate::layer::writer::LayerWriter;

    fn file(path: &str, data: &[u8]) -> (Entry, Vec<u8>) {
        (
            Entry {
                path: path.into(),
                kind: EntryKind::File,
                mode: 0o644,
                uid: 1000,
                gid: 100,
                mtime: 7,
                size: data.len() as u64,
                xattrs: Vec::new(),
            },
            data.to_vec(),
        )
    }

    /// Members written apart and assembled give the layer one writer gives for the same
    /// entries (same diff ID), and a stream any gzip reader reads whole.
    #[test]
    fn assembled_layer_is_the_same_archive() {
        let dir = tempfile::tempdir().unwrap();
        let groups = [
            vec![file("a/one", b"1"), file("a/two", &[7; 3000])],
            vec![],
            vec![file("b/three", b"three")],
        ];
        let mut members = Vec::new();
        for (i, group) in groups.iter().enumerate() {
            let tar = dir.path().join(format!("{i}.tar"));
            let gz = dir.path().join(format!("{i}.gz"));
            let member = Member {
                tar,
                compressed: gz,
            };
            let mut w = MemberWriter::create(&member, Compression::Gzip, Some(5)).unwrap();
            for (e, d) in group {
                w.append(e, &mut &d[..]).unwrap();
            }
            let (size, compressed) = w.finish().unwrap();
            assert_eq!(size % 512, 0);
            assert_eq!(
                compressed,
                std::fs::metadata(&member.compressed).unwrap().len()
            );
            members.push(member);
        }
        let (info, bytes) = assemble(Vec::new(), &members, Compression::Gzip).unwrap();
        assert_eq!(info.digest, Digest::of_bytes(&bytes));
        assert_eq!(info.size, bytes.len() as u64);

        let mut whole = LayerWriter::new(Vec::new(), Compression::Gzip, Some(5)).unwrap();
        for (e, d) in groups.iter().flatten() {
            whole.append(e, &mut &d[..]).unwrap();
        }
        let (one_go, _) = whole.finish().unwrap();
        assert_eq!(info.diff_id, one_go.diff_id);

        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(Digest::of_bytes(&plain), info.diff_id);
        let mut names = Vec::new();
        crate::layer::reader::for_each_entry(&plain[..], |e, _| {
            names.push(e.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(names, ["a/one", "a/two", "b/three"]);
    }
}
