//! `.dockerignore`, as moby's `patternmatcher` reads and matches it:
//!
//! - lines are trimmed; empty lines and lines starting with `#` are skipped; a leading `!`
//!   makes an exception; patterns are cleaned like Go's `filepath.Clean` and a leading `/`
//!   is dropped;
//! - `*` matches any run of characters but `/`, `?` one character but `/`, `[...]` a class
//!   (`^` negates), `\` escapes; `**` matches any number of directories (`**/` possibly
//!   none), and a trailing `**` everything below;
//! - a path is excluded when the last pattern that matches it, or one of its parent
//!   directories, is not an exception.

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact(String),
    /// `foo/**`: everything that starts with the prefix (`foo/`).
    Prefix(String),
    /// `**foo`: everything that ends with the suffix; `**/foo` also matches `foo`.
    Suffix(String),
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    One,
    /// `**/` or `**` in the middle: `(.*/)?`.
    AnyDirs,
    /// `**` at the end: `.*`.
    Rest,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

/// Go's `filepath.Clean` for `/`-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

impl Ignore {
    /// Read the text of a `.dockerignore`.
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let mut p = line.trim();
            if p.is_empty() || p.starts_with('#') {
                continue;
            }
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                exclusion = true;
                p = rest.trim();
            }
            let mut cleaned = clean(p);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            patterns.push(Pattern {
                exclusion,
                kind: compile(&cleaned),
            });
        }
        Self { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether some pattern is an exception (`!…`): then excluded directories must still be
    /// walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative to the context, `/`-separated) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let file = clean(path);
        let parents: Vec<&str> = match file.rfind('/') {
            Some(i) => file[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.kind.matches(&file);
            if !hit {
                for i in 0..parents.len() {
                    if p.kind.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Whether `name` matches the Go `filepath.Match` pattern `pattern` (`*`, `?`, classes,
/// escapes; `*` does not cross `/`). COPY sources are matched with it a component at a time.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    compile(pattern).matches(name)
}

/// Whether a COPY source has glob characters.
pub fn has_glob(pattern: &str) -> bool {
    pattern.chars().any(|c| matches!(c, '*' | '?' | '['))
}

fn is_special(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '\\')
}

fn compile(pattern: &str) -> Kind {
    if let Some(rest) = pattern.strip_prefix("**") {
        if !rest.is_empty() && !rest.chars().any(is_special) {
            return Kind::Suffix(rest.to_string());
        }
    }
    if let Some(prefix) = pattern.strip_suffix("**") {
        if !prefix.chars().any(is_special) {
            return Kind::Prefix(prefix.to_string());
        }
    }
    if !pattern.chars().any(is_special) {
        return Kind::Exact(pattern.to_string());
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                toks.push(if i >= chars.len() {
                    Tok::Rest
                } else {
                    Tok::AnyDirs
                });
            }
            '*' => toks.push(Tok::Star),
            '?' => toks.push(Tok::One),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => {
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut items = Vec::new();
                let mut closed = false;
                while i < chars.len() {
                    let mut lo = chars[i];
                    i += 1;
                    if lo == ']' && !items.is_empty() {
                        closed = true;
                        break;
                    }
                    if lo == '\\' && i < chars.len() {
                        lo = chars[i];
                        i += 1;
                    }
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' && i < chars.len() {
                            hi = chars[i];
                            i += 1;
                        }
                    }
                    items.push((lo, hi));
                }
                if !closed {
                    // An unterminated class matches nothing (Go reports a bad pattern).
                    return Kind::Tokens(vec![Tok::Class {
                        negated: false,
                        items: Vec::new(),
                    }]);
                }
                toks.push(Tok::Class { negated, items });
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Kind::Tokens(toks)
}

impl Kind {
    fn matches(&self, path: &str) -> bool {
        match self {
            Kind::Exact(p) => p == path,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || (s.starts_with('/') && path == &s[1..])
            }
            Kind::Tokens(t) => {
                let chars: Vec<char> = path.chars().collect();
                match_toks(t, &chars)
            }
        }
    }
}

fn match_toks(toks: &[Tok], s: &[char]) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Lit(c) => s.first() == Some(c) && match_toks(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|c| *c != '/') && match_toks(rest, &s[1..]),
        Tok::Class { negated, items } => s.first().is_some_and(|c| {
            let inside = items.iter().any(|(lo, hi)| lo <= c && c <= hi);
            inside != *negated && match_toks(rest, &s[1..])
        }),
        Tok::Star => {
            for i in 0..=s.len() {
                if match_toks(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == '/' {
                    break;
                }
            }
            false
        }
        Tok::Rest => true,
        Tok::AnyDirs => {
            // (.*/)? : nothing, or anything up to and including a `/`.
            if match_toks(rest, s) {
                return true;
            }
            (0..s.len()).any(|i| s[i] == '/' && match_toks(rest, &s[i + 1..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(text: &str) -> Ignore {
        Ignore::parse(text)
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../a"), "../a");
        assert_eq!(clean("./"), ".");
    }

    #[test]
    fn plain_names_and_parents() {
        let i = ig("# comment\n\nnode_modules\n/build/\n *.log \n");
        assert!(i.excludes("node_modules"));
        assert!(i.excludes("node_modules/x/y.js"));
        assert!(i.excludes("build/out"));
        assert!(i.excludes("a.log"));
        assert!(!i.excludes("sub/a.log"), "* does not cross directories");
        assert!(
            !i.excludes("src/node_modules"),
            "patterns are anchored at the root"
        );
        assert!(!i.excludes("# comment"));
    }

    #[test]
    fn double_star() {
        let i = ig("**/*.pyc\ndocs/**\n**/tmp");
        assert!(i.excludes("a.pyc"));
        assert!(i.excludes("x/y/z.pyc"));
        assert!(i.excludes("docs/a/b"));
        assert!(!i.excludes("docs"));
        assert!(i.excludes("tmp"));
        assert!(i.excludes("a/b/tmp/c"));
        assert!(!i.excludes("a/btmp"));
        let mid = ig("a/**/c");
        assert!(mid.excludes("a/c"));
        assert!(mid.excludes("a/b/b/c"));
        assert!(!mid.excludes("a/bc"));
    }

    #[test]
    fn exceptions_last_match_wins() {
        let i = ig("*.md\n!README.md\nREADME-secret.md");
        assert!(i.excludes("CHANGES.md"));
        assert!(!i.excludes("README.md"));
        assert!(i.excludes("README-secret.md"));
        let d = ig("data\n!data/keep.txt");
        assert!(i.has_exceptions());
        assert!(d.excludes("data/other"));
        assert!(!d.excludes("data/keep.txt"));
        let all = ig("*\n!src");
        assert!(all.excludes("Dockerfile"));
        assert!(!all.excludes("src"));
    }

    #[test]
    fn classes_and_escapes() {
        let i = ig("file[0-9].txt\n[^a]x\nq\\*");
        assert!(i.excludes("file3.txt"));
        assert!(!i.excludes("filea.txt"));
        assert!(i.excludes("bx"));
        assert!(!i.excludes("ax"));
        assert!(i.excludes("q*"));
        assert!(!i.excludes("qq"));
        let q = ig("a?c");
        assert!(q.excludes("abc"));
        assert!(!q.excludes("a/c"));
    }
}
