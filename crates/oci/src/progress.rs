//! Progress reporting for long operations. Library functions take a [`Progress`]; the CLI
//! makes a visible one on a terminal, tests and `--json` runs a hidden one.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
    /// The bars of a [`Progress::watched`] one, for [`Progress::snapshot`].
    watched: Option<Arc<Mutex<Vec<ProgressBar>>>>,
}

/// Where one bar of a [`Progress::watched`] progress stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarState {
    /// What the bar does (`copying`, `pushing`).
    pub label: String,
    pub done: u64,
    /// The total, for bars that know it.
    pub total: Option<u64>,
}

impl BarState {
    /// The share done, 0 to 100, for bars that know their total.
    pub fn percent(&self) -> Option<u64> {
        match self.total {
            Some(0) | None => None,
            Some(t) => Some((self.done.min(t).saturating_mul(100)) / t),
        }
    }
}

impl Progress {
    /// Bars drawn on stderr (indicatif hides them itself when stderr is not a terminal).
    pub fn stderr() -> Self {
        Self {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            watched: None,
        }
    }

    pub fn hidden() -> Self {
        Self {
            multi: None,
            watched: None,
        }
    }

    /// Drawn nowhere, but every bar's state can be read with [`Progress::snapshot`] (a
    /// server showing an operation's progress in its API).
    pub fn watched() -> Self {
        Self {
            multi: None,
            watched: Some(Arc::default()),
        }
    }

    /// The bars made so far, oldest first (always empty unless [`Progress::watched`]).
    pub fn snapshot(&self) -> Vec<BarState> {
        let Some(bars) = &self.watched else {
            return Vec::new();
        };
        let bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.iter()
            .map(|b| BarState {
                label: b.message(),
                done: b.position(),
                total: b.length(),
            })
            .collect()
    }

    /// A hidden bar, kept for [`Progress::snapshot`] when watched.
    fn hidden_bar(&self, total: Option<u64>) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::hidden());
        if let Some(bars) = &self.watched {
            bars.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(bar.clone());
        }
        bar
    }

    /// A byte-counting bar.
    pub fn bytes(&self, label: &str, total: u64) -> Bar {
        let bar = match &self.multi {
            None => self.hidden_bar(Some(total)),
            Some(m) => {
                let bar = m.add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
        };
        bar.set_message(label.to_string());
        Bar { bar }
    }

    /// A spinner for work whose size is unknown in advance.
    pub fn spinner(&self, label: &str) -> Bar {
        let bar = match &self.multi {
            None => self.hidden_bar(None),
            Some(m) => {
                let bar = m.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            }
        };
        bar.set_message(label.to_string());
        Bar { bar }
    }
}

#[derive(Clone)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    pub fn inc(&self, n: u64) {
        self.bar.inc(n)
    }
    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg)
    }
    pub fn wrap_read<R: Read>(&self, r: R) -> impl Read {
        self.bar.wrap_read(r)
    }
    pub fn finish(&self) {
        self.bar.finish_and_clear()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_progress_tells_where_its_bars_stand() {
        let p = Progress::watched();
        let bar = p.bytes("copying", 200);
        bar.inc(50);
        let spin = p.spinner("reading");
        spin.inc(7);
        let s = p.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].label.as_str(), s[0].done, s[0].total),
            ("copying", 50, Some(200))
        );
        assert_eq!(s[0].percent(), Some(25));
        assert_eq!((s[1].done, s[1].total, s[1].percent()), (7, None, None));
        assert!(Progress::hidden().snapshot().is_empty());
    }
}
