//! Layer compression: what a media type says, what the bytes say, and the streams for each.

use std::io::{BufRead, BufReader, Read, Write};

use crate::error::{IoContext, OciError, Result};
use crate::layer::pgzip::{self, ParallelGzip};
use crate::spec::media;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(mt: &str) -> Result<Self> {
        match mt {
            media::OCI_LAYER | media::DOCKER_LAYER => Ok(Self::None),
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Ok(Self::Gzip),
            media::OCI_LAYER_ZSTD => Ok(Self::Zstd),
            other => Err(OciError::Unsupported {
                what: "layer media type".to_string(),
                value: other.to_string(),
            }),
        }
    }

    /// Recognise the compression from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => media::OCI_LAYER,
            Self::Gzip => media::OCI_LAYER_GZIP,
            Self::Zstd => media::OCI_LAYER_ZSTD,
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            "zstd" => Ok(Self::Zstd),
            other => Err(OciError::Unsupported {
                what: "compression (use none, gzip or zstd)".to_string(),
                value: other.to_string(),
            }),
        }
    }
}

/// A decompressing reader for the given compression.
pub fn decompress<'a, R: Read + 'a>(r: R, compression: Compression) -> Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(r))),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(r).io_context(|| "starting zstd decoder")?)
        }
    })
}

/// Peek at a stream and decompress it according to what it starts with.
pub fn decompress_sniffed<'a, R: Read + 'a>(r: R) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::with_capacity(1 << 16, r);
    let head = buffered.fill_buf().io_context(|| "reading stream header")?;
    let compression = Compression::sniff(head);
    Ok((compression, decompress(buffered, compression)?))
}

/// Gzip level used for layers nbrt writes: fast, and every engine reads gzip.
pub const GZIP_LEVEL: u32 = 1;
pub const ZSTD_LEVEL: i32 = 3;

/// A compressing writer; `finish` flushes the trailer and returns the inner writer. Gzip
/// runs on every CPU ([`ParallelGzip`]); its bytes depend on the input alone.
pub enum Compressor<W: Write> {
    None(W),
    Gzip(ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(w: W, compression: Compression) -> Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(w),
            Compression::Gzip => Self::Gzip(
                ParallelGzip::new(w, GZIP_LEVEL, pgzip::default_threads())
                    .io_context(|| "starting gzip")?,
            ),
            Compression::Zstd => Self::Zstd(
                zstd::stream::write::Encoder::new(w, ZSTD_LEVEL)
                    .io_context(|| "starting zstd encoder")?,
            ),
        })
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(e) => e.write(buf),
            Self::Zstd(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::None(w) => w.flush(),
            Self::Gzip(e) => e.flush(),
            Self::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod chunking_tests {
    use super::*;

    /// The same bytes written in chunks of `sizes` (cycled), compressed.
    fn compressed(data: &[u8], compression: Compression, sizes: &[usize]) -> Vec<u8> {
        let mut c = Compressor::new(Vec::new(), compression).unwrap();
        let (mut at, mut i) = (0, 0);
        while at < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - at);
            c.write_all(&data[at..at + n]).unwrap();
            at += n;
            i += 1;
        }
        c.finish().unwrap()
    }

    /// A layer's compressed bytes (its digest in the manifest) depend only on its tar, not on
    /// how the writer was fed: two machines feed it in different read sizes.
    #[test]
    fn compressed_bytes_do_not_depend_on_write_sizes() {
        let mut data = Vec::new();
        let mut x: u64 = 1;
        while data.len() < 3 << 20 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Compressible but not trivially: words from a small alphabet.
            let word = (x >> 40) % 512;
            data.extend_from_slice(format!("w{word} ").as_bytes());
        }
        for compression in [Compression::Gzip, Compression::Zstd] {
            let one = compressed(&data, compression, &[data.len()]);
            let small = compressed(&data, compression, &[512, 8192, 37, 100_000]);
            let big = compressed(&data, compression, &[65536]);
            assert_eq!(
                one, small,
                "{compression:?}: 512/8192/37/100000-byte writes"
            );
            assert_eq!(one, big, "{compression:?}: 64 KiB writes");
        }
    }
}
