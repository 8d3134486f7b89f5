//! Docker's word handling, written after BuildKit's `frontend/dockerfile/shell/lex.go` and
//! moby's `parser/line_parsers.go`:
//!
//! - [`split_words`]: an instruction's arguments split on blanks outside quotes, quotes and
//!   escapes kept (how `ENV`, `LABEL` and `ARG` find their `key=value` words);
//! - [`expand`]: one word with its quotes removed and its variables expanded: `$VAR`,
//!   `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`,
//!   `${VAR?msg}`; the escape character (`\` or the `# escape=` one) escapes the next
//!   character outside quotes, and `"`, `$` and itself inside double quotes;
//! - [`join_continuations`]: a shell-form instruction's raw lines joined as docker joins
//!   them (escape-newline removed, comment and blank lines inside a continuation dropped).

/// A word that cannot be expanded (unterminated quote, bad substitution, `${X:?}` unset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WordError(pub String);

type Result<T> = std::result::Result<T, WordError>;

/// Variables in scope, later entries winning (`KEY=value`).
pub trait Lookup {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Lookup for [(String, String)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Lookup for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        Lookup::get(self.as_slice(), name)
    }
}

struct Lexer<'a, L: Lookup + ?Sized> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a L,
    /// Quotes and escapes kept as written, only variables expanded (BuildKit's `RawQuotes`
    /// and `RawEscapes`, as it expands COPY heredocs).
    raw: bool,
}

impl<L: Lookup + ?Sized> Lexer<'_, L> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Read up to `stop` (consumed) or the end. Returns the text and whether `stop` was found.
    fn process_stop_on(&mut self, stop: Option<char>) -> Result<(String, bool)> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((out, true));
            }
            if self.raw && ch != '$' {
                self.next();
                out.push(ch);
                if ch == self.escape {
                    if let Some(c) = self.next() {
                        out.push(c);
                    }
                }
                continue;
            }
            match ch {
                '\'' => out.push_str(&self.single_quote()?),
                '"' => out.push_str(&self.double_quote()?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.next();
                    if ch == self.escape {
                        match self.next() {
                            Some(c) => out.push(c),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
        Ok((out, false))
    }

    fn single_quote(&mut self) -> Result<String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(WordError(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    ))
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String> {
        self.next();
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(WordError(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    ))
                }
                Some('"') => {
                    self.next();
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = c;
                                self.next();
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && "@*#?-$!".contains(ch) {
                self.next();
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> Result<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.env.get(&name).unwrap_or_default().to_string());
        }
        self.next();
        match self.peek() {
            None => return Err(WordError("syntax error: missing '}'".into())),
            Some('{' | '}' | ':') => {
                return Err(WordError("syntax error: bad substitution".into()))
            }
            _ => {}
        }
        let name = self.name();
        let value = self.env.get(&name).map(str::to_string);
        match self.next() {
            Some('}') => Ok(value.unwrap_or_default()),
            Some('?') => {
                let word = self.word_to_brace()?;
                value.ok_or_else(|| {
                    WordError(format!(
                        "{name}: {}",
                        if word.is_empty() {
                            "is not allowed to be unset"
                        } else {
                            &word
                        }
                    ))
                })
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.word_to_brace()?;
                let set = value.as_deref().filter(|v| !v.is_empty());
                match modifier {
                    Some('-') => Ok(set.map(str::to_string).unwrap_or(word)),
                    Some('+') => Ok(if set.is_some() { word } else { String::new() }),
                    Some('?') => set.map(str::to_string).ok_or_else(|| {
                        WordError(format!(
                            "{name}: {}",
                            if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            }
                        ))
                    }),
                    other => Err(WordError(format!(
                        "unsupported modifier ({}) in substitution",
                        other.map(String::from).unwrap_or_default()
                    ))),
                }
            }
            Some('-') => {
                let word = self.word_to_brace()?;
                Ok(value.unwrap_or(word))
            }
            Some('+') => {
                let word = self.word_to_brace()?;
                Ok(if value.is_some() { word } else { String::new() })
            }
            None => Err(WordError("syntax error: missing '}'".into())),
            Some(other) => Err(WordError(format!(
                "unsupported modifier ({other}) in substitution"
            ))),
        }
    }

    fn word_to_brace(&mut self) -> Result<String> {
        let (word, found) = self.process_stop_on(Some('}'))?;
        if !found {
            return Err(WordError("syntax error: missing '}'".into()));
        }
        Ok(word)
    }
}

/// One word, quotes removed and variables expanded with `env` (BuildKit's `ProcessWord`).
pub fn expand<L: Lookup + ?Sized>(word: &str, env: &L, escape: char) -> Result<String> {
    let mut lexer = Lexer {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        env,
        raw: false,
    };
    Ok(lexer.process_stop_on(None)?.0)
}

/// A heredoc's text with its variables expanded and everything else (quotes, escapes) kept,
/// as BuildKit expands the heredocs of COPY and ADD.
pub fn expand_raw<L: Lookup + ?Sized>(text: &str, env: &L, escape: char) -> Result<String> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        escape,
        env,
        raw: true,
    };
    Ok(lexer.process_stop_on(None)?.0)
}

/// Split on blanks outside quotes, keeping quotes and escapes (moby's `parseWords`).
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut i = 0;
    loop {
        let at_end = i >= chars.len();
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if chars[i].is_whitespace() {
                i += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        let mut ch = chars[i];
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                i += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if i + 1 == chars.len() {
                    i += 1;
                    continue;
                }
                word.push(ch);
                i += 1;
                ch = chars[i];
            }
            word.push(ch);
            i += 1;
            continue;
        }
        // In quotes.
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if i + 1 == chars.len() {
                phase = Phase::Word;
                i += 1;
                continue;
            }
            word.push(ch);
            i += 1;
            ch = chars[i];
        }
        word.push(ch);
        i += 1;
    }
    words
}

/// The raw text of a shell-form instruction joined as docker joins it: an escape character
/// before the end of a line (blanks may follow it) continues the line; inside a
/// continuation, lines that are blank or start with `#` are dropped. The result is trimmed.
pub fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::new();
    let mut first = true;
    for line in raw.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !first {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
        }
        first = false;
        let trimmed = line.trim_end_matches([' ', '\t']);
        match trimmed.strip_suffix(escape) {
            Some(body) => out.push_str(body),
            None => out.push_str(line),
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [
            ("A", "1"),
            ("EMPTY", ""),
            ("NAME", "jovyan"),
            ("P", "/usr/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn x(word: &str) -> String {
        expand(word, &env(), '\\').unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(x("$A"), "1");
        assert_eq!(x("${A}"), "1");
        assert_eq!(x("a$A.b"), "a1.b");
        assert_eq!(x("$NAMEx"), "");
        assert_eq!(x("${NAME}x"), "jovyanx");
        assert_eq!(x("$UNSET"), "");
        assert_eq!(x("${P}:/bin"), "/usr/bin:/bin");
        assert_eq!(x("cost $"), "cost $");
        assert_eq!(x("$1"), "");
    }

    #[test]
    fn modifiers() {
        assert_eq!(x("${UNSET:-def}"), "def");
        assert_eq!(x("${EMPTY:-def}"), "def");
        assert_eq!(x("${EMPTY-def}"), "");
        assert_eq!(x("${UNSET-def}"), "def");
        assert_eq!(x("${A:-def}"), "1");
        assert_eq!(x("${A:+alt}"), "alt");
        assert_eq!(x("${EMPTY:+alt}"), "");
        assert_eq!(x("${EMPTY+alt}"), "alt");
        assert_eq!(x("${UNSET:+alt}"), "");
        assert_eq!(x("${UNSET:-$A}"), "1");
        assert_eq!(x("${UNSET:-\"a b\"}"), "a b");
        assert_eq!(x("${A:?oops}"), "1");
        assert_eq!(
            expand("${UNSET:?needs a value}", &env(), '\\').unwrap_err(),
            WordError("UNSET: needs a value".into())
        );
        assert!(expand("${A:%x}", &env(), '\\').is_err());
        assert!(expand("${A", &env(), '\\').is_err());
        assert!(expand("${}", &env(), '\\').is_err());
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$A'"), "$A");
        assert_eq!(x("\"$A\""), "1");
        assert_eq!(x("\"a \\\"b\\\" \\$A \\x\""), "a \"b\" $A \\x");
        assert_eq!(x("\\$A"), "$A");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("trailing\\"), "trailing");
        assert_eq!(x("it'\"s'"), "it\"s");
        assert!(expand("'open", &env(), '\\').is_err());
        assert!(expand("\"open", &env(), '\\').is_err());
        // The `# escape=`` ` directive.
        assert_eq!(expand("c:\\dir`$A", &env(), '`').unwrap(), "c:\\dir$A");
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            split_words("A=1 B=\"x y\"  C='z w' D=a\\ b", '\\'),
            vec!["A=1", "B=\"x y\"", "C='z w'", "D=a\\ b"]
        );
        assert_eq!(split_words("  ", '\\'), Vec::<String>::new());
        assert_eq!(split_words("E=\"\"", '\\'), vec!["E=\"\""]);
        assert_eq!(split_words("\"\"", '\\'), vec!["\"\""]);
    }

    #[test]
    fn continuations_drop_comment_lines() {
        assert_eq!(
            join_continuations("echo one \\\n    # c\n\n    && echo two", '\\'),
            "echo one     && echo two"
        );
        assert_eq!(join_continuations("a \\  \nb", '\\'), "a b");
        assert_eq!(join_continuations("a `\nb", '`'), "a b");
        assert_eq!(join_continuations("echo '#x'", '\\'), "echo '#x'");
    }

    #[test]
    fn raw_expansion_keeps_quotes_and_escapes() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(
            expand_raw("a='$A' \"${A}\" \\$A ${B:-x}\n", &env, '\\').unwrap(),
            "a='1' \"1\" \\$A x\n"
        );
    }
}
