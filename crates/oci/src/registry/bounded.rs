//! Bounded reads of what a registry (or its token server) sends: every body read into memory
//! stops at a limit while it streams, never after. What is past the limit is not read; the
//! connection is dropped with the response.

use crate::json::MAX_JSON_SIZE;

/// An error reply's body: enough for the registry's JSON error envelope or a message.
pub(super) const ERROR_BODY_LIMIT: u64 = 64 << 10;
/// A token server's reply (`{"token": …}`; JWTs with many claims stay well under this).
pub(super) const TOKEN_REPLY_LIMIT: u64 = 1 << 20;
/// Manifests, indexes and configs: the JSON size limit.
pub(super) const DOCUMENT_LIMIT: u64 = MAX_JSON_SIZE;

/// A body read up to a limit.
pub(super) struct Bounded {
    pub(super) bytes: Vec<u8>,
    /// Whether the body went on past the limit (`bytes` holds the first `limit` bytes).
    pub(super) cut: bool,
}

/// Read `res`'s body, at most `limit` bytes of it.
pub(super) async fn read_bounded(
    res: &mut reqwest::Response,
    limit: u64,
) -> reqwest::Result<Bounded> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let expected = res
        .content_length()
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(0);
    let mut bytes = Vec::with_capacity(expected.min(limit).min(64 << 10));
    while let Some(chunk) = res.chunk().await? {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Bounded { bytes, cut: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bounded { bytes, cut: false })
}
