//! The inspect commands: manifest, diff, check.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use nbrt_inspect::check::{self, Profile, Report, Status};
use nbrt_inspect::manifest::{self, Libraries, Manifest, Selection};
use nbrt_inspect::sbom::{self, Subject};

use crate::images::{progress, Context};
use crate::output::outln;
use crate::output::{json, table};

#[derive(Args)]
pub struct ManifestArgs {
    /// Image name, ID or digest
    image: String,
    /// conda (`conda list --json` records of the conda and Python packages), arcgis
    /// (`{"libraries": [...]}`), json (nbrt's manifest: those libraries, and the Debian
    /// packages in a list apart), table, spdx-json or cyclonedx-json
    #[arg(long, default_value = "conda")]
    format: String,
    /// Leave out Debian packages (json, table and SBOMs; conda and arcgis never list them)
    #[arg(long)]
    no_debian: bool,
    /// Leave out Python distributions conda did not install
    #[arg(long)]
    no_pypi: bool,
    /// Leave out conda packages
    #[arg(long)]
    no_conda: bool,
}

pub fn manifest(ctx: &Context, a: ManifestArgs) -> Result<()> {
    let store = ctx.store()?;
    let found = store.resolve(&a.image)?;
    let quiet = a.format != "table";
    let pkgs = nbrt_inspect::image_packages(&store, &found.image, &progress(quiet))
        .with_context(|| format!("reading the layers of {}", a.image))?;
    let sel = Selection {
        conda: !a.no_conda,
        pypi: !a.no_pypi,
        debian: !a.no_debian,
    };
    let digest = found.image.digest().to_string();
    let subject = Subject {
        name: &a.image,
        digest: &digest,
        created: found.image.config.value().created.as_deref(),
    };
    let kept: Vec<_> = pkgs.into_iter().filter(|p| sel.keeps(p)).collect();
    let mut one = Manifest::of(&kept);
    if a.no_debian {
        one.debian = None;
    }
    match a.format.as_str() {
        "conda" => print_compact(&one.libraries),
        "arcgis" => print_compact(&Libraries {
            libraries: one.libraries,
        }),
        "json" => print_compact(&one),
        "table" => {
            table(manifest::TABLE_HEADER, &manifest::table_rows(&kept, sel));
            Ok(())
        }
        "spdx-json" => json(&sbom::spdx(&subject, &kept)),
        "cyclonedx-json" => json(&sbom::cyclonedx(&subject, &kept)),
        other => {
            bail!("unknown format {other:?}: use conda, arcgis, json, table, spdx-json or cyclonedx-json")
        }
    }
}

/// One record per line, like `conda list --json` prints them (indented).
fn print_compact<T: serde::Serialize>(value: &T) -> Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[derive(Args)]
pub struct DiffArgs {
    /// The old image
    a: String,
    /// The new image
    b: String,
    /// List every changed file (by default only their counts)
    #[arg(long)]
    files: bool,
    #[arg(long)]
    json: bool,
}

pub fn diff(ctx: &Context, a: DiffArgs) -> Result<()> {
    let store = ctx.store()?;
    let ia = store.resolve(&a.a)?.image;
    let ib = store.resolve(&a.b)?.image;
    let p = progress(a.json);
    let (va, pa) = nbrt_inspect::read_image(&store, &ia, &p)
        .with_context(|| format!("reading the layers of {}", a.a))?;
    let (vb, pb) = nbrt_inspect::read_image(&store, &ib, &p)
        .with_context(|| format!("reading the layers of {}", a.b))?;
    let d = nbrt_inspect::diff::diff((&ia, &va, &pa), (&ib, &vb, &pb));
    if a.json {
        return json(&d);
    }
    outln!("{} → {}: {} shared layers", a.a, a.b, d.shared_layers);
    outln!(
        "packages: {} added, {} removed, {} changed",
        d.packages_added.len(),
        d.packages_removed.len(),
        d.packages_changed.len()
    );
    for p in &d.packages_added {
        outln!(
            "  + {} {} ({}, {})",
            p.name,
            p.version,
            p.source.as_str(),
            p.location
        );
    }
    for p in &d.packages_removed {
        outln!(
            "  - {} {} ({}, {})",
            p.name,
            p.version,
            p.source.as_str(),
            p.location
        );
    }
    for p in &d.packages_changed {
        outln!(
            "  ~ {} {} → {} ({}, {})",
            p.name,
            p.from,
            p.to,
            p.source.as_str(),
            p.location
        );
    }
    outln!(
        "files: {} added, {} removed, {} modified",
        d.files_added.len(),
        d.files_removed.len(),
        d.files_modified.len()
    );
    if a.files {
        for f in &d.files_added {
            outln!("  A {f}");
        }
        for f in &d.files_removed {
            outln!("  D {f}");
        }
        for f in &d.files_modified {
            outln!("  M {f}");
        }
    }
    for c in &d.config {
        outln!("config {}: {} → {}", c.field, c.from, c.to);
    }
    Ok(())
}

#[derive(Args)]
pub struct CheckArgs {
    /// Image name, ID or digest
    image: String,
    /// kubeflow, docker-stacks, jupyterhub, gateway-kernel or arcgis
    #[arg(long)]
    profile: String,
    /// Also start the image in the Docker engine and check it running
    #[arg(long)]
    live: bool,
    /// Seconds a live check waits for the server or kernel
    #[arg(long, default_value = "120")]
    timeout: u64,
    #[arg(long)]
    json: bool,
}

/// Fails (non-zero exit) when a check fails.
pub async fn check(ctx: &Context, a: CheckArgs) -> Result<()> {
    let Some(profile) = Profile::parse(&a.profile) else {
        bail!(
            "unknown profile {:?}: use kubeflow, docker-stacks, jupyterhub, gateway-kernel or arcgis",
            a.profile
        );
    };
    let store = ctx.store()?;
    let found = store.resolve(&a.image)?;
    let (view, pkgs) = nbrt_inspect::read_image(&store, &found.image, &progress(a.json))
        .with_context(|| format!("reading the layers of {}", a.image))?;
    let mut report = check::static_report(&a.image, &found.image, &view, &pkgs, profile);
    if a.live {
        let mut opts = check::live::LiveOptions {
            timeout: std::time::Duration::from_secs(a.timeout),
            ..Default::default()
        };
        if let Some(hub) = pkgs.iter().find(|p| p.name == "jupyterhub") {
            opts.hub_version = hub.version.clone();
        }
        let results = check::live::run(&store, &found.image, profile, &opts).await;
        report = Report::new(&a.image, profile, [report.results, results].concat());
    }
    if a.json {
        json(&report)?;
    } else {
        print_report(&report);
    }
    if !report.passed {
        bail!(
            "{} failed {} check(s) of the {} profile",
            a.image,
            report.failures().count(),
            profile.as_str()
        );
    }
    Ok(())
}

fn print_report(r: &Report) {
    for c in &r.results {
        let tag = match c.status {
            Status::Pass => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let live = if c.live { " (live)" } else { "" };
        outln!("{tag} {}{live}: {}", c.id, c.message);
        if c.status != Status::Pass {
            if let Some(fix) = &c.fix {
                outln!("     fix: {fix}");
            }
        }
    }
    let failed = r.failures().count();
    if failed == 0 {
        outln!("{}: meets the {} profile", r.image, r.profile.as_str());
    } else {
        outln!(
            "{}: {failed} check(s) failed for the {} profile",
            r.image,
            r.profile.as_str()
        );
    }
}
