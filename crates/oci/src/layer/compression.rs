//! Layer compression: what a media type says, what the bytes say, and the streams for each.

use std::io::{BufRead, BufReader, Read, Write};

use crate::error::{IoContext, OciError, Result};
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

/// A compressing writer; `finish` flushes the trailer and returns the inner writer.
pub enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(w: W, compression: Compression) -> Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(w),
            // GzBuilder writes mtime 0 and no file name: the bytes depend only on the input.
            Compression::Gzip => {
                Self::Gzip(flate2::GzBuilder::new().write(w, flate2::Compression::new(GZIP_LEVEL)))
            }
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
