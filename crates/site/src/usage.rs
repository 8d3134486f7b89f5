//! What a session uses now (`GET /api/sessions/{id}/usage`): CPU and memory as its backend
//! measures them ([`crate::backend::SessionBackend::usage`]), against the runtime's limits.

use serde_json::{json, Value};

use crate::backend::UsageReport;
use crate::db::now_ms;
use crate::error::Result;
use crate::sessions::{self, Session, SessionState};
use crate::{runtime, Site};

/// The API's shape: `{"available": true, "cpu": cores, "cpuLimit": cores, "cpuPercent": of
/// the limit, "memory": bytes, "memoryLimit": bytes, "memoryPercent": of the limit, "time"}`,
/// or `{"available": false, "reason": …, "time"}`.
pub async fn of_session(site: &Site, s: &Session) -> Result<Value> {
    let time = now_ms();
    let not = |reason: &str| json!({"available": false, "reason": reason, "time": time});
    let running = matches!(s.state, SessionState::Ready | SessionState::Starting);
    if !running || s.container_id.is_none() {
        return Ok(not("the session is not running"));
    }
    let report = site.backend.usage(&sessions::handle_of(s)).await?;
    let u = match report {
        UsageReport::Now(u) => u,
        UsageReport::NotAvailable(why) => return Ok(not(&why)),
    };
    let rt = runtime::repo::get(&site.db, &s.runtime_id).ok();
    let cpu_limit = rt.as_ref().map(|r| r.max_cpu).filter(|c| *c > 0.0);
    let memory_limit = u
        .memory_limit
        .or_else(|| rt.as_ref().map(|r| r.memory_bytes()))
        .filter(|m| *m > 0);
    let percent = |part: f64, whole: f64| (part / whole * 1000.0).round() / 10.0;
    Ok(json!({
        "available": true,
        "cpu": u.cpu,
        "cpuLimit": cpu_limit,
        "cpuPercent": u.cpu.zip(cpu_limit).map(|(c, l)| percent(c, l)),
        "memory": u.memory,
        "memoryLimit": memory_limit,
        "memoryPercent": memory_limit.map(|l| percent(u.memory as f64, l as f64)),
        "time": time,
    }))
}
