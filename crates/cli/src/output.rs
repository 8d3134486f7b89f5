//! Printing results: JSON for scripts, aligned text for people.
//!
//! Everything the CLI prints to stdout goes through [`outln!`]/[`out!`]: `println!` panics
//! when stdout is a pipe the reader closed (`nbrt images | head`, `nbrt inspect X | grep -q`),
//! and nbrt stops quietly there instead, as `cat` and `ls` do.

use std::io::Write;

use serde::Serialize;

/// `println!` to stdout that ends the process quietly on a closed pipe.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` to stdout that ends the process quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

pub(crate) use {out, outln};

pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            exit_on_closed_pipe();
        }
        // Any other failure to write results (a full disk behind a redirect) must not pass
        // silently: the output is incomplete.
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// The reader of our stdout went away: nothing more can be said, and it is not an error
/// (`head` got what it wanted). Exit 0 rather than 141 so `set -o pipefail` scripts that stop
/// reading early do not fail.
pub fn exit_on_closed_pipe() -> ! {
    std::process::exit(0)
}

/// True when an error comes from stdout being a closed pipe (an export to `| head -c`).
pub fn is_closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Print rows as columns separated by at least three spaces, like `docker images`.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Sizes the way Docker shows them (decimal units, up to three significant digits).
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    let digits = if v >= 100.0 || u == 0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let n = format!("{v:.digits$}");
    let n = if n.contains('.') {
        n.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        n
    };
    format!("{n}{}", units[u])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::human_size(512), "512B");
        assert_eq!(super::human_size(74_800_000), "74.8MB");
        assert_eq!(super::human_size(1_234_567_890), "1.23GB");
        assert_eq!(super::human_size(123_456_789), "123MB");
    }
}
