//! Progress reporting for long operations. Library functions take a [`Progress`]; the CLI
//! makes a visible one on a terminal, tests and `--json` runs a hidden one.

use std::io::Read;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

impl Progress {
    /// Bars drawn on stderr (indicatif hides them itself when stderr is not a terminal).
    pub fn stderr() -> Self {
        Self {
            multi: Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    pub fn hidden() -> Self {
        Self { multi: None }
    }

    /// A byte-counting bar.
    pub fn bytes(&self, label: &str, total: u64) -> Bar {
        let bar = match &self.multi {
            None => ProgressBar::hidden(),
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
            None => ProgressBar::hidden(),
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
