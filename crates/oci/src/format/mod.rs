//! The places an image lives on disk, each read into an [`Image`](crate::Image) plus a
//! [`BlobSource`](crate::BlobSource), or written through an [`ImageSink`](crate::ImageSink):
//! OCI layout directories, tar archives (docker-archive, OCI layout in a tar, and the
//! combined form of both), and plain root file system tars.

pub mod archive;
pub mod layout;
pub mod rootfs;
mod select;

pub use archive::{ArchiveLayout, ArchiveWriter, TarArchive};
pub use layout::LayoutDir;
