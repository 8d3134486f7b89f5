//! Notebooks (each belongs to a user and names a runtime) and migrations: every notebook of
//! runtime A moved to runtime B in one call, with a dry run showing the library diff, and a
//! rollback that puts back the notebooks that are still where the migration left them.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::auth::User;
use crate::db::{new_id, now_ms};
use crate::error::{Result, SiteError};
use crate::runtime::{self, ManifestDiff};
use crate::Site;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notebook {
    pub id: String,
    pub name: String,
    pub owner: String,
    #[serde(skip)]
    pub owner_id: i64,
    pub runtime_id: String,
    pub created: i64,
    pub updated: i64,
}

const SELECT: &str = "SELECT n.id, n.name, u.name, n.owner_id, n.runtime_id, n.created_at,
    n.updated_at FROM notebooks n JOIN users u ON u.id = n.owner_id";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notebook> {
    Ok(Notebook {
        id: r.get(0)?,
        name: r.get(1)?,
        owner: r.get(2)?,
        owner_id: r.get(3)?,
        runtime_id: r.get(4)?,
        created: r.get(5)?,
        updated: r.get(6)?,
    })
}

pub fn list(site: &Site, user: &User) -> Result<Vec<Notebook>> {
    let owner = if user.is_admin() { None } else { Some(user.id) };
    site.db.with(|c| {
        let mut st = c.prepare_cached(&format!(
            "{SELECT} WHERE (?1 IS NULL OR n.owner_id = ?1) ORDER BY u.name, n.name"
        ))?;
        let rows = st.query_map([owner], row)?.collect();
        rows
    })
}

pub fn get(site: &Site, user: &User, id: &str) -> Result<Notebook> {
    let nb = site.db.with(|c| {
        c.query_row(&format!("{SELECT} WHERE n.id = ?1"), [id], row)
            .optional()
    })?;
    match nb {
        Some(n) if n.owner_id == user.id || user.is_admin() => Ok(n),
        _ => Err(SiteError::NotFound(format!("no notebook {id}"))),
    }
}

fn usable_runtime(site: &Site, user: &User, runtime_id: &str) -> Result<runtime::Runtime> {
    let rt = match runtime::repo::get(&site.db, runtime_id) {
        Ok(rt) => rt,
        Err(e @ SiteError::NotFound(_)) => return Err(SiteError::missing_as("runtimeId", e)),
        Err(e) => return Err(e),
    };
    if rt.deprecated || rt.disabled {
        return Err(SiteError::invalid(
            "runtimeId",
            format!("runtime {} is deprecated: choose another", rt.name),
        ));
    }
    if rt.requires_advanced_privileges && !user.has_advanced() {
        return Err(SiteError::Forbidden(format!(
            "runtime {} requires the advanced privilege",
            rt.name
        )));
    }
    Ok(rt)
}

pub fn create(site: &Site, user: &User, name: &str, runtime_id: &str) -> Result<Notebook> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > 200
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(SiteError::invalid(
            "name",
            "1 to 200 characters, no '/' or control characters",
        ));
    }
    usable_runtime(site, user, runtime_id)?;
    let id = new_id()?;
    let now = now_ms();
    site.db.try_with(|c| {
        let exists: Option<String> = c
            .query_row(
                "SELECT id FROM notebooks WHERE owner_id = ?1 AND name = ?2",
                params![user.id, name],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Err(SiteError::conflict(
                Some("name"),
                format!("{} has a notebook named {name:?}", user.name),
            ));
        }
        c.execute(
            "INSERT INTO notebooks (id, owner_id, name, runtime_id, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![id, user.id, name, runtime_id, now],
        )?;
        Ok(())
    })?;
    get(site, user, &id)
}

/// Change one notebook's runtime (the notebook's own setting, as in ArcGIS).
pub fn set_runtime(site: &Site, user: &User, id: &str, runtime_id: &str) -> Result<Notebook> {
    let nb = get(site, user, id)?;
    let owner = crate::auth::user_by_id(site, nb.owner_id)?;
    usable_runtime(site, &owner, runtime_id)?;
    site.db.with(|c| {
        c.execute(
            "UPDATE notebooks SET runtime_id = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, runtime_id, now_ms()],
        )
    })?;
    get(site, user, id)
}

pub fn delete(site: &Site, user: &User, id: &str) -> Result<()> {
    get(site, user, id)?;
    site.db
        .with(|c| c.execute("DELETE FROM notebooks WHERE id = ?1", [id]))?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub id: Option<String>,
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub notebooks: Vec<String>,
    pub library_diff: ManifestDiff,
    /// Owners of moved notebooks who lack the privilege the target runtime requires.
    pub blocked_owners: Vec<String>,
    pub created: Option<i64>,
    pub rolled_back: Option<i64>,
}

/// Plan (dry run) or perform the move of every notebook on `from` to `to`.
pub fn migrate(site: &Site, from: &str, to: &str, dry_run: bool) -> Result<Migration> {
    let a = runtime::repo::get(&site.db, from).map_err(|e| SiteError::missing_as("from", e))?;
    let b = runtime::repo::get(&site.db, to).map_err(|e| SiteError::missing_as("to", e))?;
    if a.id == b.id {
        return Err(SiteError::invalid("to", "the same runtime as `from`"));
    }
    if b.disabled {
        return Err(SiteError::invalid(
            "to",
            format!("runtime {} is disabled", b.name),
        ));
    }
    let library_diff = runtime::repo::stored_manifest(&site.db, from)?
        .diff(&runtime::repo::stored_manifest(&site.db, to)?);
    let (notebooks, blocked_owners) = site.db.with(|c| {
        let mut st = c.prepare(
            "SELECT n.id, u.name, u.role, u.advanced FROM notebooks n JOIN users u ON u.id = n.owner_id
             WHERE n.runtime_id = ?1 ORDER BY n.id",
        )?;
        let rows: Vec<(String, String, String, bool)> = st
            .query_map([from], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut blocked: Vec<String> = rows
            .iter()
            .filter(|(_, _, role, adv)| b.requires_advanced_privileges && role != "admin" && !adv)
            .map(|(_, n, _, _)| n.clone())
            .collect();
        blocked.sort();
        blocked.dedup();
        Ok((rows.into_iter().map(|r| r.0).collect::<Vec<_>>(), blocked))
    })?;
    let mut m = Migration {
        id: None,
        from: a.id.clone(),
        to: b.id.clone(),
        dry_run,
        notebooks,
        library_diff,
        blocked_owners,
        created: None,
        rolled_back: None,
    };
    if dry_run {
        return Ok(m);
    }
    if !m.blocked_owners.is_empty() {
        return Err(SiteError::conflict(
            Some("to"),
            format!(
                "runtime {} requires the advanced privilege, which {} lack(s)",
                b.name,
                m.blocked_owners.join(", ")
            ),
        ));
    }
    let id = new_id()?;
    let now = now_ms();
    let moved = site.db.try_with(|c| {
        let tx = c.transaction()?;
        // Re-read inside the transaction: exactly the notebooks moved are recorded.
        let ids: Vec<String> = {
            let mut st =
                tx.prepare("SELECT id FROM notebooks WHERE runtime_id = ?1 ORDER BY id")?;
            let ids = st
                .query_map([from], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            ids
        };
        tx.execute(
            "UPDATE notebooks SET runtime_id = ?2, updated_at = ?3 WHERE runtime_id = ?1",
            params![from, to, now],
        )?;
        tx.execute(
            "INSERT INTO migrations (id, from_runtime, to_runtime, notebooks, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                from,
                to,
                serde_json::to_string(&ids).unwrap_or_default(),
                now
            ],
        )?;
        tx.commit()?;
        Ok(ids)
    })?;
    m.id = Some(id);
    m.notebooks = moved;
    m.created = Some(now);
    Ok(m)
}

fn migration_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, String, i64, Option<i64>)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_migration(
    site: &Site,
    (id, from, to, nbs, created, rolled): (String, String, String, String, i64, Option<i64>),
) -> Migration {
    let library_diff = match (
        runtime::repo::stored_manifest(&site.db, &from),
        runtime::repo::stored_manifest(&site.db, &to),
    ) {
        (Ok(a), Ok(b)) => a.diff(&b),
        _ => ManifestDiff::default(),
    };
    Migration {
        id: Some(id),
        from,
        to,
        dry_run: false,
        notebooks: serde_json::from_str(&nbs).unwrap_or_default(),
        library_diff,
        blocked_owners: Vec::new(),
        created: Some(created),
        rolled_back: rolled,
    }
}

pub fn list_migrations(site: &Site) -> Result<Vec<Migration>> {
    let rows = site.db.with(|c| {
        let mut st = c.prepare(
            "SELECT id, from_runtime, to_runtime, notebooks, created_at, rolled_back_at
             FROM migrations ORDER BY created_at DESC",
        )?;
        let rows = st
            .query_map([], migration_row)?
            .collect::<rusqlite::Result<Vec<_>>>();
        rows
    })?;
    Ok(rows.into_iter().map(|r| to_migration(site, r)).collect())
}

/// Put back the notebooks a migration moved (those still on its target runtime).
pub fn rollback(site: &Site, id: &str) -> Result<Migration> {
    let now = now_ms();
    let row = site.db.try_with(|c| {
        let tx = c.transaction()?;
        let row = tx
            .query_row(
                "SELECT id, from_runtime, to_runtime, notebooks, created_at, rolled_back_at
                 FROM migrations WHERE id = ?1",
                [id],
                migration_row,
            )
            .optional()?
            .ok_or_else(|| SiteError::NotFound(format!("no migration {id}")))?;
        if row.5.is_some() {
            return Err(SiteError::conflict(None, format!("migration {id} was rolled back already")));
        }
        let from_exists: Option<String> = tx
            .query_row("SELECT id FROM runtimes WHERE id = ?1", [&row.1], |r| r.get(0))
            .optional()?;
        if from_exists.is_none() {
            return Err(SiteError::conflict(
                None,
                "the migration's original runtime was unregistered: nothing to go back to",
            ));
        }
        let ids: Vec<String> = serde_json::from_str(&row.3).unwrap_or_default();
        for nb in &ids {
            tx.execute(
                "UPDATE notebooks SET runtime_id = ?2, updated_at = ?4 WHERE id = ?1 AND runtime_id = ?3",
                params![nb, row.1, row.2, now],
            )?;
        }
        tx.execute(
            "UPDATE migrations SET rolled_back_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        tx.commit()?;
        Ok((row.0, row.1, row.2, row.3, row.4, Some(now)))
    })?;
    Ok(to_migration(site, row))
}
