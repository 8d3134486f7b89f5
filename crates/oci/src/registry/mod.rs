//! Registry client: push images from the store to a registry and pull them into it, over the
//! OCI distribution API (our own requests through reqwest; every body read into memory is
//! bounded while it streams).
//!
//! - Push checks which blobs the registry already has (`HEAD`), mounts blobs that another
//!   repository of the same registry is known to hold, streams the rest from the store's
//!   files (one monolithic `PUT` each, a few at a time, never a whole layer in memory), then
//!   puts the manifest with its exact bytes, so the registry's digest is the image's.
//! - Pull resolves the manifest (OCI or Docker; an index or manifest list resolves to the
//!   host's platform), verifies its digest, and streams every blob through the store's
//!   verification. Nothing is named, and no new blob stays, unless the whole image arrived.
//! - Which repositories hold which blobs is remembered in `$NBRT_HOME/remotes.json`, updated
//!   by every push and pull, so a later push to another repository can mount instead of
//!   upload.
//! - Plain HTTP is used for loopback registries (`localhost`, `127.0.0.0/8`, `[::1]`) and
//!   with [`RegistryOptions::insecure`]; HTTPS otherwise.
//! - Credentials come from Docker's `config.json`: `auths.<host>.auth`, `identitytoken`, and
//!   the credential helpers `credsStore` / `credHelpers`.
//!
//! | file | its job |
//! | --- | --- |
//! | `reference.rs` | [`RemoteRef`]: parsing, defaults, Docker Hub's rules, loopback hosts |
//! | `auth.rs` | credentials from Docker's config and helpers; Bearer challenges and tokens |
//! | `client.rs` | [`RegistryOptions`]; the connection to one repository: login, token renewal, requests, error mapping, manifests, blob downloads |
//! | `bounded.rs` | every body read into memory stops at its limit while it streams (documents, error replies, token replies) |
//! | `push.rs` | [`push()`], [`PushReport`]: exists / mount / upload, then the manifest |
//! | `pull.rs` | [`pull()`], [`PullReport`]: resolve (index → host entry), fetch, verify, name |
//! | `remotes.rs` | `remotes.json` / `remotes.lock`: which repositories hold which blobs |
//!
//! Which entry of an index is the host's is [`crate::platform::Platform::select`], shared
//! with the layouts and archives.

mod auth;
mod bounded;
mod client;
mod pull;
mod push;
mod reference;
mod remotes;

use std::collections::BTreeSet;

use crate::image::Image;
use crate::spec::Descriptor;

pub use client::RegistryOptions;
pub use pull::{pull, PullReport};
pub use push::{push, PushReport};
pub use reference::RemoteRef;

/// An image's blobs, layers first then the config, each once.
fn image_blobs(image: &Image) -> Vec<Descriptor> {
    let mut seen = BTreeSet::new();
    image
        .layers()
        .iter()
        .chain([&image.manifest.value().config])
        .filter(|d| seen.insert(d.digest.clone()))
        .cloned()
        .collect()
}
