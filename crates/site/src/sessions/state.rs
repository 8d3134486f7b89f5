//! A session's state, as the API shows it and the database stores it (the same strings).

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

/// `starting` → `ready` (container running and `<prefix>/api` answers), then one of
/// `stopped` (by its user or an admin), `culled` (idle kernels), `oom-killed` (a process in
/// it went past `maxMemory`: the site stops the whole container, as ArcGIS's does), `failed`
/// (exited, did not answer in time, or vanished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionState {
    Starting,
    Ready,
    Stopped,
    Culled,
    OomKilled,
    Failed,
}

impl SessionState {
    pub const ALL: [SessionState; 6] = [
        SessionState::Starting,
        SessionState::Ready,
        SessionState::Stopped,
        SessionState::Culled,
        SessionState::OomKilled,
        SessionState::Failed,
    ];

    /// The states of a session that has a container (or is getting one). The database's
    /// `sessions_one_active` index names the same two.
    pub const ACTIVE: [SessionState; 2] = [SessionState::Starting, SessionState::Ready];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Starting => "starting",
            SessionState::Ready => "ready",
            SessionState::Stopped => "stopped",
            SessionState::Culled => "culled",
            SessionState::OomKilled => "oom-killed",
            SessionState::Failed => "failed",
        }
    }

    pub fn is_active(self) -> bool {
        Self::ACTIVE.contains(&self)
    }

    /// [`SessionState::ACTIVE`] as an SQL list: `('starting', 'ready')`.
    pub fn active_sql() -> String {
        let names: Vec<String> = Self::ACTIVE
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        format!("({})", names.join(", "))
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
        write!(
            f,
            "unknown session state {:?} (known: {})",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownState {}

impl FromStr for SessionState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, UnknownState> {
        SessionState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl ToSql for SessionState {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

/// A row whose state names no state is a conversion error of that column, not a panic.
impl FromSql for SessionState {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value
            .as_str()?
            .parse()
            .map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_and_the_database_spell_states_alike() {
        for s in SessionState::ALL {
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
            assert_eq!(s.as_str().parse::<SessionState>(), Ok(s));
        }
        assert_eq!(SessionState::active_sql(), "('starting', 'ready')");
        assert!(SessionState::Ready.is_active() && !SessionState::Culled.is_active());
    }

    #[test]
    fn unknown_states_in_the_database_are_errors() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let ok: SessionState = c
            .query_row("SELECT ?1", [SessionState::OomKilled], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, SessionState::OomKilled);
        let err = c
            .query_row("SELECT 'paused'", [], |r| r.get::<_, SessionState>(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown session state \"paused\""), "{err}");
    }
}
