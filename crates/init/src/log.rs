//! Log lines in docker-stacks' format: `LEVEL[YYYY-MM-DD HH:MM:SS] message` on stderr.
//!
//! `JUPYTER_DOCKER_STACKS_QUIET` (non-empty) hides INFO and DEBUG, never WARNING, ERROR or
//! FATAL. Colours are docker-stacks' (`\e[0;1;31m` FATAL, `\e[0;31m` ERROR, `\e[0;33m`
//! WARNING, `\e[0;36m` DEBUG, then `\e[0m`) and only when stderr is a terminal and
//! `NO_COLOR` is empty. `scripts/_docker_stacks_log.sh` is the same for shell scripts. Timestamps are UTC (containers rarely carry a zone
//! database, and a static binary cannot ask glibc for one).

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Fatal,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Fatal => "FATAL",
        }
    }

    fn colour(self) -> Option<&'static str> {
        match self {
            Level::Fatal => Some("\x1b[0;1;31m"),
            Level::Error => Some("\x1b[0;31m"),
            Level::Warning => Some("\x1b[0;33m"),
            Level::Debug => Some("\x1b[0;36m"),
            Level::Info => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    pub quiet: bool,
    pub colour: bool,
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Settings {
        let non_empty = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        Settings {
            quiet: non_empty("JUPYTER_DOCKER_STACKS_QUIET"),
            colour: !non_empty("NO_COLOR") && std::io::stderr().is_terminal(),
        }
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Fix the settings for the life of the process (first call wins).
pub fn init(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> Settings {
    *SETTINGS.get_or_init(Settings::from_env)
}

/// Format one line (without the trailing newline), as printed.
pub fn format_line(level: Level, message: &str, now: SystemTime, colour: bool) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stamp = format_utc(secs);
    match (colour, level.colour()) {
        (true, Some(c)) => format!("{c}{}[{stamp}] {message}\x1b[0m", level.name()),
        _ => format!("{}[{stamp}] {message}", level.name()),
    }
}

/// `YYYY-MM-DD HH:MM:SS` for seconds since the epoch, UTC.
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn log(level: Level, message: &str) {
    let s = settings();
    if s.quiet && level <= Level::Info {
        return;
    }
    let line = format_line(level, message, SystemTime::now(), s.colour);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
    let _ = err.flush();
}

pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message.as_ref());
}
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message.as_ref());
}
pub fn warning(message: impl AsRef<str>) {
    log(Level::Warning, message.as_ref());
}
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message.as_ref());
}
pub fn fatal(message: impl AsRef<str>) {
    log(Level::Fatal, message.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formatting() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59:59");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00");
    }

    #[test]
    fn line_shape() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            format_line(Level::Warning, "hello", t, false),
            "WARNING[2023-11-14 22:13:20] hello"
        );
        let coloured = format_line(Level::Error, "x", t, true);
        assert!(coloured.starts_with("\x1b[0;31mERROR[") && coloured.ends_with("\x1b[0m"));
        assert!(format_line(Level::Fatal, "x", t, true).starts_with("\x1b[0;1;31mFATAL["));
        assert!(format_line(Level::Warning, "x", t, true).starts_with("\x1b[0;33mWARNING["));
        assert!(!format_line(Level::Info, "x", t, true).contains('\x1b'));
    }
}
