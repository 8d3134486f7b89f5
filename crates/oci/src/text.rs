//! Untrusted text made safe to print: names from layers and tar headers, registry replies,
//! file names. [`Escaped`] shows any `Display` value with every control character (C0, DEL,
//! C1) and every bidirectional override written as an escape (`\x1b`, `\u{202e}`), so a
//! name cannot move the cursor, recolour a terminal, set its title or reorder what is
//! shown. [`Quoted`] does the same between double quotes, escaping `"` and `\` too.
//!
//! Every [`crate::OciError`] message goes through [`Escaped`]; code that logs or prints
//! untrusted text elsewhere wraps it in one of these.

use std::fmt::{self, Write as _};

/// Shows `T` with control characters escaped.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

/// Shows `T` between double quotes, with control characters, `"` and `\` escaped.
#[derive(Debug, Clone, Copy)]
pub struct Quoted<T>(pub T);

/// `s` with control characters escaped (see [`Escaped`]).
pub fn escape(s: &str) -> String {
    Escaped(s).to_string()
}

/// Whether `c` is escaped: C0 and C1 controls, DEL, and the bidirectional marks,
/// embeddings, overrides and isolates.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

struct Escaper<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    quotes: bool,
}

impl fmt::Write for Escaper<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Copy runs of safe characters at once.
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let special = needs_escape(c) || (self.quotes && matches!(c, '"' | '\\'));
            if !special {
                continue;
            }
            self.out.write_str(&s[start..i])?;
            match c {
                '"' | '\\' => {
                    self.out.write_char('\\')?;
                    self.out.write_char(c)?;
                }
                c if (c as u32) < 0x100 => write!(self.out, "\\x{:02x}", c as u32)?,
                c => write!(self.out, "\\u{{{:x}}}", c as u32)?,
            }
            start = i + c.len_utf8();
        }
        self.out.write_str(&s[start..])
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            Escaper {
                out: f,
                quotes: false
            },
            "{}",
            self.0
        )
    }
}

impl<T: fmt::Display> fmt::Display for Quoted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        write!(
            Escaper {
                out: f,
                quotes: true
            },
            "{}",
            self.0
        )?;
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_bidi_overrides() {
        assert_eq!(escape("plain/name ü"), "plain/name ü");
        assert_eq!(escape("a\x1b[31mred\x07"), "a\\x1b[31mred\\x07");
        assert_eq!(
            escape("tab\tnl\ncr\r del\x7f"),
            "tab\\x09nl\\x0acr\\x0d del\\x7f"
        );
        assert_eq!(escape("c1\u{9b}31m"), "c1\\x9b31m");
        assert_eq!(escape("evil\u{202e}fdp.exe"), "evil\\u{202e}fdp.exe");
        assert_eq!(
            Quoted("say \"hi\"\\\x1b]0;title\x07").to_string(),
            "\"say \\\"hi\\\"\\\\\\x1b]0;title\\x07\""
        );
        assert_eq!(
            Escaped(format_args!("{}-{}", "x\x1b", 1)).to_string(),
            "x\\x1b-1"
        );
    }
}
