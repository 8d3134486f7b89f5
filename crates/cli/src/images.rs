//! The image commands: import, export, images, inspect, tag, rm, gc, load, push, pull.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use nbrt_oci::layer::Compression;
use nbrt_oci::registry::{self, RegistryOptions};
use nbrt_oci::transfer::{self, ExportFormat, ImportOptions};
use nbrt_oci::{ImageName, Progress, Store, StoredImage};
use serde::Serialize;

use crate::output::outln;
use crate::output::{human_size, json, table};

pub struct Context {
    pub store: Option<PathBuf>,
}

impl Context {
    pub fn store_root(&self) -> Result<PathBuf> {
        match &self.store {
            Some(p) => Ok(p.clone()),
            None => Ok(Store::default_root()?),
        }
    }

    pub fn store(&self) -> Result<Store> {
        let root = self.store_root()?;
        Store::open(&root).with_context(|| format!("opening the image store at {}", root.display()))
    }
}

/// Progress bars on a terminal, none when the output is for a script.
pub fn progress(json: bool) -> Progress {
    if json {
        Progress::hidden()
    } else {
        Progress::stderr()
    }
}

fn resolve(store: &Store, reference: &str) -> Result<StoredImage> {
    Ok(store.resolve(reference)?)
}

fn short_id(d: &nbrt_oci::Digest) -> String {
    d.hex()[..12].to_string()
}

#[derive(Args)]
pub struct ImportArgs {
    /// A root file system tar, docker-archive or OCI archive (optionally gzip/zstd
    /// compressed), or an OCI layout directory
    path: PathBuf,
    /// Name for the image (repeatable); required for a root file system tar
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Which image of an archive or layout holding several (tag or name)
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Compression of the layer made from a root file system: gzip, zstd or none
    #[arg(long, default_value = "gzip")]
    compression: String,
    #[command(flatten)]
    limits: ExpandArgs,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
}

/// Bounds on what one import or export may expand to.
#[derive(Args)]
pub struct ExpandArgs {
    /// Most bytes the layers (and a compressed archive) may decompress to, all together
    /// (K, M, G, T suffixes; default 256G, or NBRT_MAX_EXPAND_BYTES)
    #[arg(long, value_name = "SIZE")]
    max_expand_bytes: Option<String>,
    /// Most tar entries the layers may hold, all together (default 20000000, or
    /// NBRT_MAX_EXPAND_ENTRIES)
    #[arg(long, value_name = "N")]
    max_expand_entries: Option<String>,
}

impl ExpandArgs {
    fn limits(&self) -> Result<nbrt_oci::layer::budget::Limits> {
        use nbrt_oci::layer::budget::{parse_size, Limits};
        let mut limits = Limits::from_env()?;
        if let Some(b) = &self.max_expand_bytes {
            limits.max_bytes =
                parse_size(b).map_err(|e| anyhow::anyhow!("--max-expand-bytes: {e}"))?;
        }
        if let Some(n) = &self.max_expand_entries {
            limits.max_entries =
                parse_size(n).map_err(|e| anyhow::anyhow!("--max-expand-entries: {e}"))?;
        }
        Ok(limits)
    }
}

pub fn import(ctx: &Context, a: ImportArgs) -> Result<()> {
    let store = ctx.store()?;
    let names = a
        .tags
        .iter()
        .map(|t| ImageName::parse(t))
        .collect::<Result<Vec<_>, _>>()?;
    let opts = ImportOptions {
        names,
        select: a.image,
        compression: Compression::parse(&a.compression)?,
        limits: a.limits.limits()?,
    };
    let (_, report) = transfer::import(&store, &a.path, &opts, &progress(a.json))
        .with_context(|| format!("importing {}", a.path.display()))?;
    if a.json {
        return json(&report);
    }
    outln!(
        "imported {} ({}, {} layers, {}) as {}",
        report.id,
        report.source_kind,
        report.layers,
        human_size(report.size),
        report.names.join(", ")
    );
    Ok(())
}

#[derive(Args)]
pub struct ExportArgs {
    /// Image name, ID or digest
    image: String,
    /// Output file (a directory for --format oci-dir); `-` for standard output
    #[arg(short, long)]
    output: PathBuf,
    /// tar (OCI layout + docker-archive in one, the default), docker-archive, oci-dir or rootfs
    #[arg(long, default_value = "tar")]
    format: String,
    /// Name(s) to record in the output instead of the image's own
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    #[command(flatten)]
    limits: ExpandArgs,
    #[arg(long)]
    json: bool,
}

pub fn export(ctx: &Context, a: ExportArgs) -> Result<()> {
    let store = ctx.store()?;
    let found = resolve(&store, &a.image)?;
    let names = if a.tags.is_empty() {
        match ImageName::parse(&a.image) {
            Ok(n) if found.names.contains(&n) => vec![n],
            _ => found.names.clone(),
        }
    } else {
        a.tags
            .iter()
            .map(|t| ImageName::parse(t))
            .collect::<Result<Vec<_>, _>>()?
    };
    let format = ExportFormat::parse(&a.format)?;
    let report = transfer::export_within(
        &store,
        &found.image,
        &names,
        format,
        &a.output,
        &progress(a.json || a.output.as_os_str() == "-"),
        a.limits.limits()?,
    )
    .with_context(|| format!("exporting {} to {}", a.image, a.output.display()))?;
    if a.json {
        return json(&report);
    }
    if a.output.as_os_str() != "-" {
        eprintln!("wrote {} ({})", a.output.display(), report.id);
    }
    Ok(())
}

#[derive(Args)]
pub struct ImagesArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ImageRow {
    names: Vec<String>,
    id: String,
    digest: String,
    created: Option<String>,
    size: u64,
    layers: usize,
    /// Who pinned it (a site's registered runtime): gc keeps it, named or not.
    pinned_by: Vec<String>,
}

/// Named images, and pinned ones that have no name left (`<none>` in the table).
pub fn list(ctx: &Context, a: ImagesArgs) -> Result<()> {
    let store = ctx.store()?;
    let images = store.list_with_pinned()?;
    let pins = store.pins()?;
    let pinned_by = |i: &nbrt_oci::StoredImage| -> Vec<String> {
        pins.iter()
            .filter(|p| &p.manifest.digest == i.image.digest())
            .map(|p| p.holder.clone())
            .collect()
    };
    let rows: Vec<ImageRow> = images
        .iter()
        .map(|i| ImageRow {
            names: i.names.iter().map(|n| n.to_string()).collect(),
            id: i.image.id().to_string(),
            digest: i.image.digest().to_string(),
            created: i.image.config.value().created.clone(),
            size: i.image.size(),
            layers: i.image.layers().len(),
            pinned_by: pinned_by(i),
        })
        .collect();
    if a.json {
        return json(&rows);
    }
    let mut cells = Vec::new();
    for i in &images {
        let row = |repository: &str, tag: &str| {
            vec![
                repository.to_string(),
                tag.to_string(),
                short_id(i.image.id()),
                i.image.config.value().created.clone().unwrap_or_default(),
                human_size(i.image.size()),
            ]
        };
        for n in &i.names {
            cells.push(row(&n.repository, &n.tag));
        }
        if i.names.is_empty() {
            cells.push(row("<none>", "<none>"));
        }
    }
    table(
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        &cells,
    );
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// Image name, ID or digest
    image: String,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Inspection<'a> {
    id: String,
    digest: String,
    names: Vec<String>,
    media_type: &'a str,
    size: u64,
    layers: Vec<LayerRow>,
    config: serde_json::Value,
}

#[derive(Serialize)]
struct LayerRow {
    digest: String,
    diff_id: String,
    media_type: String,
    size: u64,
}

pub fn inspect(ctx: &Context, a: InspectArgs) -> Result<()> {
    let store = ctx.store()?;
    let found = resolve(&store, &a.image)?;
    let image = &found.image;
    let layers: Vec<LayerRow> = image
        .layers()
        .iter()
        .zip(image.diff_ids())
        .map(|(l, d)| LayerRow {
            digest: l.digest.to_string(),
            diff_id: d.to_string(),
            media_type: l.media_type.clone(),
            size: l.size,
        })
        .collect();
    let info = Inspection {
        id: image.id().to_string(),
        digest: image.digest().to_string(),
        names: found.names.iter().map(|n| n.to_string()).collect(),
        media_type: image.media_type(),
        size: image.size(),
        layers,
        config: serde_json::from_slice(image.config.bytes())?,
    };
    if a.json {
        return json(&info);
    }
    outln!("ID:       {}", info.id);
    outln!("Digest:   {}", info.digest);
    outln!("Names:    {}", info.names.join(", "));
    outln!(
        "Size:     {} in {} layers",
        human_size(info.size),
        info.layers.len()
    );
    let c = image.config.value();
    outln!("Platform: {}/{}", c.os, c.architecture);
    if let Some(created) = &c.created {
        outln!("Created:  {created}");
    }
    if let Some(cc) = &c.config {
        if let Some(u) = &cc.user {
            outln!("User:     {u}");
        }
        if let Some(ep) = &cc.entrypoint {
            outln!("Entrypoint: {}", serde_json::to_string(ep)?);
        }
        if let Some(cmd) = &cc.cmd {
            outln!("Cmd:      {}", serde_json::to_string(cmd)?);
        }
        for e in cc.env.iter().flatten() {
            outln!("Env:      {e}");
        }
    }
    outln!("Layers:");
    for l in &info.layers {
        outln!(
            "  {}  {:>9}  {}",
            l.digest,
            human_size(l.size),
            l.media_type
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct TagArgs {
    /// Existing image name, ID or digest
    source: String,
    /// New name
    target: String,
}

pub fn tag(ctx: &Context, a: TagArgs) -> Result<()> {
    let store = ctx.store()?;
    let found = resolve(&store, &a.source)?;
    store.tag(&found.image, &ImageName::parse(&a.target)?)?;
    Ok(())
}

#[derive(Args)]
pub struct RmArgs {
    /// Image names to remove; an ID or digest removes all names of that image
    #[arg(required = true)]
    images: Vec<String>,
    /// Keep the blobs (do not collect garbage afterwards)
    #[arg(long)]
    no_prune: bool,
}

pub fn rm(ctx: &Context, a: RmArgs) -> Result<()> {
    let store = ctx.store()?;
    for reference in &a.images {
        let found = resolve(&store, reference)?;
        let names = match ImageName::parse(reference) {
            Ok(n) if found.names.contains(&n) => vec![n],
            _ => found.names.clone(),
        };
        for n in names {
            store.untag(&n)?;
            outln!("Untagged: {n}");
        }
        // A pinned image (a site's registered runtime) stays, whatever its names.
        for pin in store.pins_of(&found.image)? {
            eprintln!(
                "warning: {} stays in the store: pinned by {} (unregister it there to let gc remove it)",
                found.image.id(),
                pin.holder
            );
        }
    }
    if !a.no_prune {
        let report = store.gc()?;
        if report.blobs_removed > 0 {
            outln!(
                "Deleted {} blobs ({})",
                report.blobs_removed,
                human_size(report.bytes_freed)
            );
        }
        if report.temp_files_removed > 0 {
            outln!(
                "Deleted {} temporary files ({})",
                report.temp_files_removed,
                human_size(report.temp_bytes_freed)
            );
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct GcArgs {
    #[arg(long)]
    json: bool,
}

pub fn gc(ctx: &Context, a: GcArgs) -> Result<()> {
    let store = ctx.store()?;
    let report = nbrt_build::gc(&store)?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if a.json {
        return json(&serde_json::json!({
            "blobs_removed": report.blobs.blobs_removed,
            "bytes_freed": report.blobs.bytes_freed,
            "blobs_kept": report.blobs.blobs_kept,
            "temp_files_removed": report.blobs.temp_files_removed,
            "temp_bytes_freed": report.blobs.temp_bytes_freed,
            "pins": report.blobs.pins,
            "snapshots": report.snapshots,
            "pip_pieces": report.pip_pieces,
        }));
    }
    outln!(
        "removed {} blobs ({}), kept {}",
        report.blobs.blobs_removed,
        human_size(report.blobs.bytes_freed),
        report.blobs.blobs_kept
    );
    outln!(
        "removed {} temporary files ({})",
        report.blobs.temp_files_removed,
        human_size(report.blobs.temp_bytes_freed)
    );
    if report.blobs.pins > 0 {
        outln!(
            "kept the images of {} pins (runtimes registered in a site)",
            report.blobs.pins
        );
    }
    if let Some(s) = report.snapshots {
        outln!(
            "removed {} unpacked layers of the builder, kept {}",
            s.removed,
            s.kept
        );
    }
    if let Some(p) = report.pip_pieces {
        outln!(
            "removed {} pip pieces of the builder, kept {}",
            p.removed,
            p.kept
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct LoadArgs {
    /// Image name, ID or digest
    image: String,
    /// Name(s) to give it in the engine instead of the image's own
    #[arg(short, long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    #[arg(long)]
    json: bool,
}

pub async fn load(ctx: &Context, a: LoadArgs) -> Result<()> {
    let root = ctx.store_root()?;
    let store = ctx.store()?;
    let found = resolve(&store, &a.image)?;
    let names = if a.tags.is_empty() {
        found.names.clone()
    } else {
        a.tags
            .iter()
            .map(|t| ImageName::parse(t))
            .collect::<Result<Vec<_>, _>>()?
    };
    if names.is_empty() {
        bail!("the image has no name; give one with --tag");
    }
    let report = nbrt_oci::engine::load(root, &found.image, &names, &progress(a.json))
        .await
        .with_context(|| format!("loading {} into Docker", a.image))?;
    if a.json {
        return json(&report);
    }
    outln!("Loaded image: {} ({})", names[0], report.engine_id);
    Ok(())
}

#[derive(Args)]
pub struct PushArgs {
    /// Image name, ID or digest
    image: String,
    /// Where to: REGISTRY[:PORT]/REPOSITORY[:TAG]
    target: String,
    /// Use plain HTTP (always done for loopback registries)
    #[arg(long)]
    insecure: bool,
    #[arg(long)]
    json: bool,
}

pub async fn push(ctx: &Context, a: PushArgs) -> Result<()> {
    let store = ctx.store()?;
    let found = resolve(&store, &a.image)?;
    let opts = RegistryOptions {
        insecure: a.insecure,
        docker_config: None,
    };
    let report = registry::push(&store, &found.image, &a.target, &opts, &progress(a.json))
        .await
        .with_context(|| format!("pushing {} to {}", a.image, a.target))?;
    if a.json {
        return json(&report);
    }
    outln!(
        "pushed {} ({}): {} blobs uploaded, {} mounted, {} already there",
        report.reference,
        report.manifest_digest,
        report.uploaded.len(),
        report.mounted.len(),
        report.existing.len()
    );
    Ok(())
}

#[derive(Args)]
pub struct PullArgs {
    /// REGISTRY[:PORT]/REPOSITORY[:TAG] or …@sha256:…
    reference: String,
    #[arg(long)]
    insecure: bool,
    #[arg(long)]
    json: bool,
}

pub async fn pull(ctx: &Context, a: PullArgs) -> Result<()> {
    let store = ctx.store()?;
    let opts = RegistryOptions {
        insecure: a.insecure,
        docker_config: None,
    };
    let (_, report) = registry::pull(&store, &a.reference, &opts, &progress(a.json))
        .await
        .with_context(|| format!("pulling {}", a.reference))?;
    if a.json {
        return json(&report);
    }
    outln!(
        "pulled {} ({}), image ID {}: {} blobs downloaded, {} already here",
        report.reference,
        report.manifest_digest,
        report.image_id,
        report.downloaded.len(),
        report.existing.len()
    );
    Ok(())
}
