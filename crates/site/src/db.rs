//! The site's state: one SQLite file in WAL mode, schema by numbered migrations
//! (`PRAGMA user_version` counts the applied ones; each applies in its own transaction).

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, SiteError};

/// Schema changes, in order. Never edit one that has shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: users, tokens, runtimes, notebooks, migrations, sessions
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'author')),
        advanced INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
    );
    CREATE TABLE runtimes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        version TEXT,
        container_type TEXT NOT NULL,
        image_id TEXT NOT NULL,
        max_cpu REAL NOT NULL,
        max_memory REAL NOT NULL,
        max_memory_unit TEXT NOT NULL,
        max_swap_memory REAL NOT NULL,
        max_swap_memory_unit TEXT NOT NULL,
        shared_memory REAL,
        shared_memory_unit TEXT,
        docker_runtime TEXT,
        requires_advanced INTEGER NOT NULL DEFAULT 0,
        builtin INTEGER NOT NULL DEFAULT 0,
        deprecated INTEGER NOT NULL DEFAULT 0,
        deprecation_date INTEGER,
        disabled INTEGER NOT NULL DEFAULT 0,
        manifest TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE notebooks (
        id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        runtime_id TEXT NOT NULL REFERENCES runtimes(id),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (owner_id, name)
    );
    CREATE INDEX notebooks_runtime ON notebooks(runtime_id);
    CREATE TABLE migrations (
        id TEXT PRIMARY KEY,
        from_runtime TEXT NOT NULL,
        to_runtime TEXT NOT NULL,
        notebooks TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        rolled_back_at INTEGER
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        runtime_id TEXT NOT NULL REFERENCES runtimes(id),
        container_name TEXT NOT NULL,
        container_id TEXT,
        address TEXT,
        token TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        ready_at INTEGER,
        ended_at INTEGER,
        last_activity INTEGER,
        oom_killed INTEGER NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX sessions_one_active ON sessions(user_id, runtime_id)
        WHERE state IN ('starting', 'ready');
    "#,
    // 2: tokens expire and are listed (last use); users can be disabled
    r#"
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
    ALTER TABLE users ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: whether a runtime's swap was given (else derived from its memory, and derived again
    // when the memory changes); runtimes before this: given unless it is the derived value
    r#"
    ALTER TABLE runtimes ADD COLUMN swap_given INTEGER NOT NULL DEFAULT 1;
    UPDATE runtimes SET swap_given = 0
        WHERE max_swap_memory = 2 * max_memory AND max_swap_memory_unit = max_memory_unit;
    "#,
    // 4: the audit log (crate::audit): who changed what, with which token (its ID, never
    // the token); user name and token ID are copied, so records outlive their users
    r#"
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        user_id INTEGER,
        user_name TEXT NOT NULL,
        token_id TEXT,
        action TEXT NOT NULL,
        target TEXT,
        detail TEXT
    );
    CREATE INDEX audit_action ON audit(action);
    "#,
    // 5: a runtime's library count kept beside its manifest, so listing runtimes parses no
    // manifest (1,000 runtimes' manifests made GET /api/runtimes take 150 ms)
    r#"
    ALTER TABLE runtimes ADD COLUMN library_count INTEGER NOT NULL DEFAULT 0;
    UPDATE runtimes SET library_count = COALESCE(CASE json_type(manifest)
        WHEN 'array' THEN json_array_length(manifest)
        ELSE json_array_length(manifest, '$.libraries') END, 0)
        WHERE manifest IS NOT NULL;
    "#,
    // 6: warm pools — how many sessions a runtime keeps started before anyone asks
    // (crate::sessions::pool); a session's own URL prefix when it is not
    // `/user/<name>/<runtime>` (a warm session's is `/warm/<session id>`)
    r#"
    ALTER TABLE runtimes ADD COLUMN warm_pool INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN prefix TEXT;
    "#,
    // 7: manifests in a table of their own. In the runtimes row, every column after a
    // 30 KB manifest sat behind its overflow pages: listing 1,000 runtimes read 30 MB
    r#"
    CREATE TABLE runtime_manifests (
        runtime_id TEXT PRIMARY KEY REFERENCES runtimes(id),
        body TEXT NOT NULL
    );
    INSERT INTO runtime_manifests (runtime_id, body)
        SELECT id, manifest FROM runtimes WHERE manifest IS NOT NULL;
    ALTER TABLE runtimes ADD COLUMN has_manifest INTEGER NOT NULL DEFAULT 0;
    UPDATE runtimes SET has_manifest = manifest IS NOT NULL;
    ALTER TABLE runtimes DROP COLUMN manifest;
    "#,
    // 8: how a runtime's sessions are reached over HTTP, read off its image
    // (nbrt_oci::label::HttpContract as JSON; NULL: a Jupyter server under its prefix)
    r#"
    ALTER TABLE runtimes ADD COLUMN http TEXT;
    "#,
    // 9: the GPUs a GPU runtime's sessions get, from its image's `[runtime]` label (`gpus`)
    // or as given; NULL (every runtime before this): the backend's default
    // (crate::backend::session_gpus)
    r#"
    ALTER TABLE runtimes ADD COLUMN gpus INTEGER;
    "#,
];

pub struct Db {
    conn: Mutex<Connection>,
}

/// Milliseconds since the epoch (the unit of ArcGIS's dates).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Open (or create, mode 0600) the database and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| SiteError::Io {
                context: format!("creating {}", parent.display()),
                source,
            })?;
        }
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|source| SiteError::Io {
                    context: format!("creating {}", path.display()),
                    source,
                })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SiteError::Internal(format!(
                "{}: SQLite refused WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")?;
        let mut conn = conn;
        migrate(&mut conn)?;
        Ok(Db {
            conn: Mutex::new(conn),
        })
    }

    /// Run `f` with the connection (short, synchronous work only).
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| SiteError::Internal("the database lock was poisoned".into()))?;
        Ok(f(&mut guard)?)
    }

    /// Like [`Db::with`] for closures that return the site's own errors.
    pub fn try_with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| SiteError::Internal("the database lock was poisoned".into()))?;
        f(&mut guard)
    }

    pub fn schema_version(&self) -> Result<i64> {
        self.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            use rusqlite::OptionalExtension;
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        return Err(SiteError::Internal(format!(
            "the database has schema version {current}, newer than this nbrt ({}): use a newer nbrt",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!("database schema migrated to version {}", i + 1);
    }
    Ok(())
}

/// Random bytes from the operating system, as lower-case hex.
pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| SiteError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(hex::encode(buf))
}

/// A random UUID (version 4), the shape of ArcGIS's runtime IDs.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| SiteError::Internal(format!("no randomness from the OS: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_uses_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        drop(db);
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let mode: String = db
            .with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perm, 0o600);
    }

    /// A runtimes row as the schema before migration 7 held it (manifest in the row).
    fn insert_runtime_row(c: &Connection, id: &str, manifest: Option<&str>) {
        c.execute(
            "INSERT INTO runtimes (id, name, container_type, image_id, max_cpu, max_memory,
             max_memory_unit, max_swap_memory, max_swap_memory_unit, requires_advanced,
             builtin, manifest, created_at, updated_at)
             VALUES (?1, ?1, 'docker', 'sha256:0', 1, 1, 'g', 2, 'g', 0, 0, ?2, 0, 0)",
            rusqlite::params![id, manifest],
        )
        .unwrap();
    }

    /// Migration 7 moves manifests out of the runtimes rows and keeps whether there is one.
    #[test]
    fn manifests_move_to_their_own_table() {
        let c = Connection::open_in_memory().unwrap();
        for m in &MIGRATIONS[..6] {
            c.execute_batch(m).unwrap();
        }
        for (id, manifest) in [("a", Some(r#"{"libraries":[],"debian":[]}"#)), ("b", None)] {
            insert_runtime_row(&c, id, manifest);
        }
        c.execute_batch(MIGRATIONS[6]).unwrap();
        let rows: Vec<(String, bool, Option<String>)> = c
            .prepare(
                "SELECT r.id, r.has_manifest, m.body FROM runtimes r
                 LEFT JOIN runtime_manifests m ON m.runtime_id = r.id ORDER BY r.id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                (
                    "a".into(),
                    true,
                    Some(r#"{"libraries":[],"debian":[]}"#.into())
                ),
                ("b".into(), false, None)
            ]
        );
    }

    /// Migration 5 counts the libraries of manifests stored before it, in both stored
    /// shapes (the bare array of earlier versions, nbrt's manifest object).
    #[test]
    fn library_counts_of_earlier_rows_are_filled() {
        let c = Connection::open_in_memory().unwrap();
        for m in &MIGRATIONS[..4] {
            c.execute_batch(m).unwrap();
        }
        for (id, manifest) in [
            (
                "a",
                Some(r#"[{"name":"x","version":"1"},{"name":"y","version":"2"}]"#),
            ),
            (
                "b",
                Some(r#"{"libraries":[{"name":"x","version":"1"}],"debian":[]}"#),
            ),
            ("c", None),
        ] {
            insert_runtime_row(&c, id, manifest);
        }
        c.execute_batch(MIGRATIONS[4]).unwrap();
        let counts: Vec<i64> = ["a", "b", "c"]
            .iter()
            .map(|id| {
                c.query_row(
                    "SELECT library_count FROM runtimes WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(counts, [2, 1, 0]);
    }

    /// Migration 9 gives an existing database's runtimes a GPU count column, empty (the
    /// backend's default); the runtimes table reads and writes it.
    #[test]
    fn gpu_counts_join_an_existing_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        {
            // A site's database at schema 8, with a GPU runtime.
            let mut c = Connection::open(&path).unwrap();
            for (i, m) in MIGRATIONS[..8].iter().enumerate() {
                let tx = c.transaction().unwrap();
                tx.execute_batch(m).unwrap();
                tx.pragma_update(None, "user_version", (i + 1) as i64)
                    .unwrap();
                tx.commit().unwrap();
            }
            c.execute(
                "INSERT INTO runtimes (id, name, container_type, image_id, max_cpu, max_memory,
                 max_memory_unit, max_swap_memory, max_swap_memory_unit, docker_runtime,
                 created_at, updated_at)
                 VALUES ('r', 'cuda', 'docker', 'sha256:0', 1, 1, 'g', 2, 'g', 'nvidia', 0, 0)",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), 9);
        let rt = crate::runtime::repo::get(&db, "r").unwrap();
        assert_eq!((rt.use_gpu, rt.gpus), (true, None));
        // Written and read back.
        let mut input = crate::runtime::RuntimeInput::from_record(&rt);
        input.image_id = format!("sha256:{}", "a".repeat(64)).into();
        input.gpus = 2.0.into();
        let spec = input.validate().unwrap();
        crate::runtime::repo::update(&db, "r", &spec, false).unwrap();
        assert_eq!(crate::runtime::repo::get(&db, "r").unwrap().gpus, Some(2));
        let id = crate::runtime::repo::insert(
            &db,
            &crate::runtime::RuntimeSpec {
                name: "cuda 2".into(),
                gpus: Some(0),
                ..spec
            },
            false,
        )
        .unwrap();
        let rt = crate::runtime::repo::get(&db, &id).unwrap();
        assert_eq!(rt.gpus, Some(0));
        assert_eq!(serde_json::to_value(&rt).unwrap()["gpus"], 0);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.db");
        drop(Db::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let err = Db::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer than this nbrt"), "{err}");
    }

    #[test]
    fn ids_are_uuid_v4() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
