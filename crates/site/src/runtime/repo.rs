//! The runtimes table: insert, update, read, list and delete runtime records. SQL only — the
//! input is validated ([`super::RuntimeInput::validate`]) and checked against the engine
//! before it gets here.

use nbrt_inspect::manifest::Manifest;
use nbrt_oci::label::HttpContract;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use super::input::RuntimeSpec;
use super::record::{is_gpu_docker_runtime, Runtime};
use crate::db::{new_id, now_ms, Db};
use crate::error::{Result, SiteError};
use crate::sessions::SessionState;

const SELECT: &str = "SELECT id, name, version, container_type, image_id, max_cpu, max_memory,
    max_memory_unit, max_swap_memory, max_swap_memory_unit, shared_memory, shared_memory_unit,
    docker_runtime, requires_advanced, builtin, deprecated, deprecation_date, disabled,
    has_manifest, created_at, updated_at, library_count,
    swap_given, warm_pool, http, gpus FROM runtimes";

/// A runtime row. The manifest itself stays in the database and its library count is a
/// column of its own: listing runtimes must not parse every runtime's manifest. A manifest is stored as
/// nbrt's manifest JSON (`{"libraries": [...], "debian": [...]}`); rows written before
/// Debian packages had a list hold the bare array of libraries.
fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Runtime> {
    let has_manifest: bool = r.get(18)?;
    let library_count: i64 = r.get(21)?;
    let docker_runtime: Option<String> = r.get(12)?;
    Ok(Runtime {
        id: r.get(0)?,
        name: r.get(1)?,
        version: r.get(2)?,
        container_type: r.get(3)?,
        image_id: r.get(4)?,
        max_cpu: r.get(5)?,
        max_memory: r.get(6)?,
        max_memory_unit: r.get(7)?,
        max_swap_memory: r.get(8)?,
        max_swap_memory_unit: r.get(9)?,
        swap_given: r.get(22)?,
        shared_memory: r.get(10)?,
        shared_memory_unit: r.get(11)?,
        use_gpu: is_gpu_docker_runtime(docker_runtime.as_deref()),
        docker_runtime,
        gpus: r.get(25)?,
        requires_advanced_privileges: r.get(13)?,
        builtin: r.get(14)?,
        deprecated: r.get(15)?,
        deprecation_date: r.get(16)?,
        disabled: r.get(17)?,
        is_manifest_supported: has_manifest,
        library_count: usize::try_from(library_count).unwrap_or(0),
        warm_pool: r.get(23)?,
        warm_ready: 0,
        server: http_column(r.get(24)?),
        created: r.get(19)?,
        updated: r.get(20)?,
    })
}

/// The `http` column: a Jupyter server under its prefix when NULL (rows from before the
/// column) or unreadable (written by a later version).
pub(crate) fn http_column(text: Option<String>) -> HttpContract {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Set how a runtime's sessions are reached (read off its image).
pub fn set_http(db: &Db, id: &str, http: &HttpContract) -> Result<()> {
    let text = (http != &HttpContract::default()).then(|| json!(http).to_string());
    db.with(|c| {
        c.execute(
            "UPDATE runtimes SET http = ?2 WHERE id = ?1",
            params![id, text],
        )
    })?;
    Ok(())
}

pub fn list(db: &Db) -> Result<Vec<Runtime>> {
    db.with(|c| {
        let mut st = c.prepare_cached(&format!("{SELECT} ORDER BY name"))?;
        let rows = st.query_map([], row)?.collect();
        rows
    })
}

pub fn get(db: &Db, id: &str) -> Result<Runtime> {
    db.with(|c| {
        c.query_row(&format!("{SELECT} WHERE id = ?1"), [id], row)
            .optional()
    })?
    .ok_or_else(|| SiteError::NotFound(format!("no runtime with id {id}")))
}

/// The runtime registered under `name`, if any (names are unique).
pub fn by_name(db: &Db, name: &str) -> Result<Option<Runtime>> {
    db.with(|c| {
        c.query_row(&format!("{SELECT} WHERE name = ?1"), [name], row)
            .optional()
    })
}

/// The stored manifest (empty when the runtime has none).
pub fn stored_manifest(db: &Db, id: &str) -> Result<Manifest> {
    let m: Option<Option<String>> = db.with(|c| {
        c.query_row(
            "SELECT m.body FROM runtimes r LEFT JOIN runtime_manifests m ON m.runtime_id = r.id
             WHERE r.id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()
    })?;
    let bad = |e: String| SiteError::Internal(format!("stored manifest of {id}: {e}"));
    match m {
        None => Err(SiteError::NotFound(format!("no runtime with id {id}"))),
        Some(None) => Ok(Manifest::default()),
        Some(Some(s)) => {
            let v: Value = serde_json::from_str(&s).map_err(|e| bad(e.to_string()))?;
            Manifest::normalise(&v).map_err(|e| bad(e.0))
        }
    }
}

fn name_taken(
    c: &rusqlite::Connection,
    name: &str,
    except: Option<&str>,
) -> rusqlite::Result<bool> {
    let other: Option<String> = c
        .query_row("SELECT id FROM runtimes WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(other.is_some_and(|o| Some(o.as_str()) != except))
}

fn name_conflict(name: &str) -> SiteError {
    SiteError::conflict(
        Some("name"),
        format!("a runtime named {name:?} is registered"),
    )
}

fn manifest_text(spec: &RuntimeSpec) -> Option<String> {
    spec.manifest.as_ref().map(|m| json!(m).to_string())
}

fn library_count(spec: &RuntimeSpec) -> i64 {
    spec.manifest
        .as_ref()
        .map_or(0, |m| m.libraries.len() as i64)
}

/// Store a new runtime; its ID. A taken name is a 409.
pub fn insert(db: &Db, spec: &RuntimeSpec, builtin: bool) -> Result<String> {
    let id = new_id()?;
    let now = now_ms();
    db.try_with(|c| {
        let tx = c.transaction()?;
        if name_taken(&tx, &spec.name, None)? {
            return Err(name_conflict(&spec.name));
        }
        tx.execute(
            "INSERT INTO runtimes (id, name, version, container_type, image_id, max_cpu, max_memory,
             max_memory_unit, max_swap_memory, max_swap_memory_unit, shared_memory, shared_memory_unit,
             docker_runtime, requires_advanced, builtin, has_manifest, created_at, updated_at, swap_given,
             library_count, warm_pool, gpus)
             VALUES (?1, ?2, ?3, 'docker', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16, ?17, ?18, ?19, ?20)",
            params![
                id,
                spec.name,
                spec.version,
                spec.image_id,
                spec.max_cpu,
                spec.max_memory,
                spec.max_memory_unit.as_str(),
                spec.max_swap_memory,
                spec.max_swap_memory_unit.as_str(),
                spec.shared_memory.map(|s| s.0),
                spec.shared_memory.map(|s| s.1.as_str()),
                spec.docker_runtime,
                spec.requires_advanced,
                builtin,
                spec.manifest.is_some(),
                now,
                spec.swap_given,
                library_count(spec),
                spec.warm_pool,
                spec.gpus,
            ],
        )?;
        put_manifest(&tx, &id, manifest_text(spec).as_deref())?;
        tx.commit()?;
        Ok(())
    })?;
    Ok(id)
}

/// Replace a runtime's fields with `spec`; its manifest too when `replace_manifest` (with
/// `spec.manifest`, `None` clearing it). A name taken by another runtime is a 409.
pub fn update(db: &Db, id: &str, spec: &RuntimeSpec, replace_manifest: bool) -> Result<()> {
    db.try_with(|c| {
        let tx = c.transaction()?;
        if name_taken(&tx, &spec.name, Some(id))? {
            return Err(name_conflict(&spec.name));
        }
        tx.execute(
            "UPDATE runtimes SET name = ?2, version = ?3, image_id = ?4, max_cpu = ?5, max_memory = ?6,
             max_memory_unit = ?7, max_swap_memory = ?8, max_swap_memory_unit = ?9, shared_memory = ?10,
             shared_memory_unit = ?11, docker_runtime = ?12, requires_advanced = ?13,
             has_manifest = CASE WHEN ?16 THEN ?14 ELSE has_manifest END, updated_at = ?15, swap_given = ?17,
             library_count = CASE WHEN ?16 THEN ?18 ELSE library_count END, warm_pool = ?19,
             gpus = ?20
             WHERE id = ?1",
            params![
                id,
                spec.name,
                spec.version,
                spec.image_id,
                spec.max_cpu,
                spec.max_memory,
                spec.max_memory_unit.as_str(),
                spec.max_swap_memory,
                spec.max_swap_memory_unit.as_str(),
                spec.shared_memory.map(|s| s.0),
                spec.shared_memory.map(|s| s.1.as_str()),
                spec.docker_runtime,
                spec.requires_advanced,
                spec.manifest.is_some(),
                now_ms(),
                replace_manifest,
                spec.swap_given,
                library_count(spec),
                spec.warm_pool,
                spec.gpus,
            ],
        )?;
        if replace_manifest {
            put_manifest(&tx, id, manifest_text(spec).as_deref())?;
        }
        tx.commit()?;
        Ok(())
    })
}

/// Store (or, with `None`, remove) a runtime's manifest text.
fn put_manifest(c: &rusqlite::Connection, id: &str, text: Option<&str>) -> Result<()> {
    match text {
        Some(body) => c.execute(
            "INSERT INTO runtime_manifests (runtime_id, body) VALUES (?1, ?2)
             ON CONFLICT (runtime_id) DO UPDATE SET body = excluded.body",
            params![id, body],
        )?,
        None => c.execute("DELETE FROM runtime_manifests WHERE runtime_id = ?1", [id])?,
    };
    Ok(())
}

pub fn set_manifest(db: &Db, id: &str, manifest: &Manifest) -> Result<Runtime> {
    get(db, id)?;
    db.try_with(|c| {
        let tx = c.transaction()?;
        tx.execute(
            "UPDATE runtimes SET has_manifest = 1, updated_at = ?2, library_count = ?3 WHERE id = ?1",
            params![id, now_ms(), manifest.libraries.len() as i64],
        )?;
        put_manifest(&tx, id, Some(&json!(manifest).to_string()))?;
        tx.commit()?;
        Ok(())
    })?;
    get(db, id)
}

pub fn set_deprecated(db: &Db, id: &str, deprecated: bool) -> Result<Runtime> {
    get(db, id)?;
    db.with(|c| {
        c.execute(
            "UPDATE runtimes SET deprecated = ?2, deprecation_date = CASE WHEN ?2 THEN ?3 ELSE NULL END,
             updated_at = ?3 WHERE id = ?1",
            params![id, deprecated, now_ms()],
        )
    })?;
    get(db, id)
}

/// Neither deprecated nor disabled (a factory runtime as restored).
pub fn clear_deprecated_and_disabled(db: &Db, id: &str) -> Result<()> {
    db.with(|c| {
        c.execute(
            "UPDATE runtimes SET deprecated = 0, deprecation_date = NULL, disabled = 0
             WHERE id = ?1",
            [id],
        )
    })?;
    Ok(())
}

/// Remove a runtime; refused (409) while notebooks name it or sessions run on it.
pub fn delete(db: &Db, id: &str) -> Result<()> {
    get(db, id)?;
    db.try_with(|c| {
        let tx = c.transaction()?;
        let notebooks: i64 = tx.query_row(
            "SELECT count(*) FROM notebooks WHERE runtime_id = ?1",
            [id],
            |r| r.get(0),
        )?;
        if notebooks > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{notebooks} notebook(s) use this runtime: migrate them first"),
            ));
        }
        let sessions: i64 = tx.query_row(
            &format!(
                "SELECT count(*) FROM sessions WHERE runtime_id = ?1 AND state IN {}",
                SessionState::active_sql()
            ),
            [id],
            |r| r.get(0),
        )?;
        if sessions > 0 {
            return Err(SiteError::conflict(
                None,
                format!("{sessions} session(s) run on this runtime: stop them first"),
            ));
        }
        // Ended sessions keep no reference worth keeping.
        tx.execute("DELETE FROM sessions WHERE runtime_id = ?1", [id])?;
        tx.execute("DELETE FROM runtime_manifests WHERE runtime_id = ?1", [id])?;
        tx.execute("DELETE FROM runtimes WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(())
    })
}
