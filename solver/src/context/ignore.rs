//! .dockerignore and `--exclude` pattern matching: a port of moby/patternmatcher (`patternmatcher.go`)
//! and `ignorefile.ReadAll`, with Go's `filepath.Match` and `filepath.Clean` for Unix, so that a context
//! sends exactly the files Docker would.
//!
//! A pattern is cleaned, split into `!` (re-include) or plain, and compiled on first use into one of four
//! matchers (exact, prefix for `dir/**`, suffix for `**/name`, or a regex): `*` is any run of non-`/`
//! characters, `?` one non-`/` character, `**` any number of path components, `[...]` a class and `\`
//! escapes the next character.

use std::sync::OnceLock;

use regex::Regex;

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    /// Go's `filepath.ErrBadPattern`, naming the pattern.
    #[error("syntax error in pattern {0:?}: check its [...] classes and \\ escapes")]
    BadPattern(String),
}

/// Go's `path.Clean`: shortest equivalent path, `.` for empty; `..` kept at the start of a relative path.
pub fn go_clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Reads ignore-file contents as `ignorefile.ReadAll`: a UTF-8 BOM dropped, lines starting with `#`
/// skipped, whitespace trimmed, each pattern cleaned with a leading `/` removed, `!` kept in front.
pub fn read_all(contents: &str) -> Vec<String> {
    let contents = contents.strip_prefix('\u{feff}').unwrap_or(contents);
    let mut out = Vec::new();
    for line in contents.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = go_clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert { format!("!{cleaned}") } else { cleaned });
    }
    out
}

/// Go's `filepath.Match` on Unix: the whole of `name` must match; `*` and `?` never match `/`; a
/// malformed pattern is an error even when the name does not match.
pub fn go_match(pattern: &str, name: &str) -> Result<bool, PatternError> {
    let bad = || PatternError::BadPattern(pattern.to_string());
    let mut pat = pattern.as_bytes();
    let mut name = name.as_bytes();
    'pattern: while !pat.is_empty() {
        let (star, chunk, rest) = scan_chunk(pat);
        pat = rest;
        if star && chunk.is_empty() {
            // A trailing star matches the rest unless it holds a separator.
            return Ok(!name.contains(&b'/'));
        }
        // Look for a match at the current position.
        match match_chunk(chunk, name).map_err(|_| bad())? {
            Some(t) if t.is_empty() || !pat.is_empty() => {
                name = t;
                continue;
            }
            _ => {}
        }
        if star {
            // Look for a match skipping i+1 bytes; cannot skip '/'.
            let mut i = 0;
            while i < name.len() && name[i] != b'/' {
                match match_chunk(chunk, &name[i + 1..]).map_err(|_| bad())? {
                    Some(t) => {
                        if pat.is_empty() && !t.is_empty() {
                            i += 1;
                            continue;
                        }
                        name = t;
                        continue 'pattern;
                    }
                    None => i += 1,
                }
            }
        }
        // No match: check the rest of the pattern is well formed before saying so.
        while !pat.is_empty() {
            let (_, chunk, rest) = scan_chunk(pat);
            pat = rest;
            match_chunk(chunk, b"").map_err(|_| bad())?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Splits off the next chunk: leading stars, then everything up to the next unbracketed star.
fn scan_chunk(mut pat: &[u8]) -> (bool, &[u8], &[u8]) {
    let mut star = false;
    while pat.first() == Some(&b'*') {
        pat = &pat[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pat.len() {
        match pat[i] {
            b'\\' if i + 1 < pat.len() => i += 1,
            b'[' => in_range = true,
            b']' => in_range = false,
            b'*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pat[..i], &pat[i..])
}

/// Decodes one UTF-8 character at the start of `s` (a replacement for invalid bytes, length 1).
fn decode(s: &[u8]) -> (char, usize) {
    let n = match s.first() {
        None => return ('\u{fffd}', 0),
        Some(b) if *b < 0x80 => 1,
        Some(b) if *b >= 0xf0 => 4,
        Some(b) if *b >= 0xe0 => 3,
        Some(b) if *b >= 0xc0 => 2,
        Some(_) => 1,
    };
    match s.get(..n).and_then(|b| std::str::from_utf8(b).ok()).and_then(|c| c.chars().next()) {
        Some(c) => (c, n),
        None => ('\u{fffd}', 1),
    }
}

/// Matches `chunk` against the start of `s`; `Ok(Some(rest))` on a match. Checks the whole chunk's
/// syntax even after a failure, as Go does.
fn match_chunk<'a>(mut chunk: &[u8], mut s: &'a [u8]) -> Result<Option<&'a [u8]>, ()> {
    let mut failed = false;
    while !chunk.is_empty() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match chunk[0] {
            b'[' => {
                let mut r = '\u{0}';
                if !failed {
                    let (c, n) = decode(s);
                    r = c;
                    s = &s[n..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&b'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&b']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk[0] == b'-' {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        matched = true;
                    }
                    nrange += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            b'?' => {
                if !failed {
                    if s[0] == b'/' {
                        failed = true;
                    }
                    let (_, n) = decode(s);
                    s = &s[n..];
                }
                chunk = &chunk[1..];
            }
            c => {
                if c == b'\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return Err(());
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character of a class; the rest of the chunk must not be empty.
fn get_esc(mut chunk: &[u8]) -> Result<(char, &[u8]), ()> {
    if chunk.is_empty() || chunk[0] == b'-' || chunk[0] == b']' {
        return Err(());
    }
    if chunk[0] == b'\\' {
        chunk = &chunk[1..];
        if chunk.is_empty() {
            return Err(());
        }
    }
    let (r, n) = decode(chunk);
    if r == '\u{fffd}' && n == 1 {
        return Err(());
    }
    let rest = &chunk[n..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((r, rest))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MatchType {
    Exact,
    Prefix,
    Suffix,
    Regexp,
}

/// One compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    cleaned: String,
    exclusion: bool,
    compiled: OnceLock<Result<(MatchType, Option<Regex>), PatternError>>,
}

impl Pattern {
    /// The cleaned pattern without its `!`.
    pub fn as_str(&self) -> &str {
        &self.cleaned
    }

    /// Whether this is a `!` re-include.
    pub fn exclusion(&self) -> bool {
        self.exclusion
    }

    fn compiled(&self) -> Result<&(MatchType, Option<Regex>), PatternError> {
        self.compiled.get_or_init(|| compile(&self.cleaned)).as_ref().map_err(Clone::clone)
    }

    /// Whether `path` (slash separated, relative) matches the pattern itself, without parents.
    pub fn matches(&self, path: &str) -> Result<bool, PatternError> {
        let (kind, re) = self.compiled()?;
        let p = &self.cleaned;
        Ok(match kind {
            MatchType::Exact => path == p,
            MatchType::Prefix => path.starts_with(&p[..p.len() - 2]),
            MatchType::Suffix => {
                let suffix = &p[2..];
                path.ends_with(suffix) || (suffix.starts_with('/') && path == &suffix[1..])
            }
            MatchType::Regexp => re.as_ref().is_some_and(|re| re.is_match(path)),
        })
    }
}

/// The regex (or cheaper matcher) for a cleaned pattern, as patternmatcher's `compile`.
fn compile(pattern: &str) -> Result<(MatchType, Option<Regex>), PatternError> {
    let mut reg = String::from("^");
    let mut kind = MatchType::Exact;
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let mut first = true;
    while i < chars.len() {
        let ch = chars[i];
        i += 1;
        if ch == '*' {
            if chars.get(i) == Some(&'*') {
                i += 1;
                // `**/` is `**`: eat the slash.
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    // `**` at the end accepts everything below, like .gitignore.
                    if kind == MatchType::Exact {
                        kind = MatchType::Prefix;
                    } else {
                        reg.push_str(".*");
                        kind = MatchType::Regexp;
                    }
                } else {
                    reg.push_str("(.*/)?");
                    kind = MatchType::Regexp;
                }
                if first {
                    kind = MatchType::Suffix;
                }
            } else {
                reg.push_str("[^/]*");
                kind = MatchType::Regexp;
            }
        } else if ch == '?' {
            reg.push_str("[^/]");
            kind = MatchType::Regexp;
        } else if ".+()|{}$".contains(ch) {
            reg.push('\\');
            reg.push(ch);
        } else if ch == '\\' {
            if i < chars.len() {
                reg.push('\\');
                reg.push(chars[i]);
                i += 1;
                kind = MatchType::Regexp;
            } else {
                reg.push('\\');
            }
        } else if ch == '[' || ch == ']' {
            reg.push(ch);
            kind = MatchType::Regexp;
        } else {
            reg.push(ch);
        }
        first = false;
    }
    if kind != MatchType::Regexp {
        return Ok((kind, None));
    }
    reg.push('$');
    let re = Regex::new(&reg).map_err(|_| PatternError::BadPattern(pattern.to_string()))?;
    Ok((kind, Some(re)))
}

/// Per-pattern results for a directory, passed to its children (`MatchInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

/// A list of patterns, later ones overriding earlier ones (`PatternMatcher`).
#[derive(Debug)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

impl PatternMatcher {
    /// Compiles `patterns` (trimmed, cleaned; empty ones dropped; `!` marks a re-include).
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<PatternMatcher, PatternError> {
        let mut out = Vec::with_capacity(patterns.len());
        let mut exclusions = false;
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = go_clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(PatternError::IllegalExclusion);
                }
                p = rest.to_string();
                exclusion = true;
                exclusions = true;
            }
            go_match(&p, ".")?;
            out.push(Pattern { cleaned: p, exclusion, compiled: OnceLock::new() });
        }
        Ok(PatternMatcher { patterns: out, exclusions })
    }

    /// Whether any pattern is a `!` re-include.
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The compiled patterns in order.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The deprecated `Matches`: checks only one parent, of the pattern's depth.
    pub fn matches(&self, file: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        let parent = parent_of(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(file)?;
            if !m && parent != "." {
                let depth = pattern.cleaned.split('/').count();
                if depth <= parent_dirs.len() {
                    m = pattern.matches(&parent_dirs[..depth].join("/")).unwrap_or(false);
                }
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Whether `file` itself matches, with no parent matching (`MatchesExact`).
    pub fn matches_exact(&self, file: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            if pattern.matches(file)? {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// Whether `file` or one of its parent directories matches (`MatchesOrParentMatches`): what a
    /// .dockerignore means.
    pub fn matches_or_parent_matches(&self, file: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        let parent = parent_of(file);
        for pattern in &self.patterns {
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(file)?;
            if !m && parent != "." {
                m = parent_matches(pattern, &parent);
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok(matched)
    }

    /// `MatchesUsingParentResults`: as [`PatternMatcher::matches_or_parent_matches`] but reusing the
    /// parent directory's per-pattern results while walking a tree.
    pub fn matches_using_parent_results(
        &self,
        file: &str,
        parent_info: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let parent_matched = &parent_info.parent_matched;
        if !parent_matched.is_empty() && parent_matched.len() != self.patterns.len() {
            return Err(PatternError::BadPattern("wrong number of values in parentMatched".into()));
        }
        let mut matched = false;
        let mut info = MatchInfo { parent_matched: vec![false; self.patterns.len()] };
        for (i, pattern) in self.patterns.iter().enumerate() {
            let mut m = parent_matched.get(i).copied().unwrap_or(false);
            if !m {
                if pattern.exclusion != matched {
                    continue;
                }
                m = pattern.matches(file)?;
                if !m && parent_matched.is_empty() {
                    let parent = parent_of(file);
                    if parent != "." {
                        m = parent_matches(pattern, &parent);
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !pattern.exclusion;
            }
        }
        Ok((matched, info))
    }
}

fn parent_matches(pattern: &Pattern, parent: &str) -> bool {
    let dirs: Vec<&str> = parent.split('/').collect();
    (1..=dirs.len()).any(|i| pattern.matches(&dirs[..i].join("/")).unwrap_or(false))
}

/// Go's `filepath.Dir` for a relative, slash-separated path.
fn parent_of(file: &str) -> String {
    match file.rfind('/') {
        Some(i) => go_clean(&file[..i + 1]),
        None => ".".into(),
    }
}

/// The package-level `MatchesOrParentMatches`: `file` cleaned, and `.` never matching.
pub fn matches_or_parent_matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = go_clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches_or_parent_matches(&file)
}

/// The package-level deprecated `Matches`.
pub fn matches(file: &str, patterns: &[&str]) -> Result<bool, PatternError> {
    let pm = PatternMatcher::new(patterns)?;
    let file = go_clean(file);
    if file == "." {
        return Ok(false);
    }
    pm.matches(&file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// patternmatcher's TestCompile table (the `/` separator half).
    #[test]
    fn compile_table() {
        use MatchType::*;
        let table = [
            ("*", Regexp, "^[^/]*$"),
            ("file*", Regexp, "^file[^/]*$"),
            ("*file", Regexp, "^[^/]*file$"),
            ("a*/b", Regexp, "^a[^/]*/b$"),
            ("**", Suffix, ""),
            ("**/**", Regexp, "^(.*/)?.*$"),
            ("dir/**", Prefix, ""),
            ("**/dir", Suffix, ""),
            ("**/dir2/*", Regexp, "^(.*/)?dir2/[^/]*$"),
            ("**/dir2/**", Regexp, "^(.*/)?dir2/.*$"),
            ("**file", Suffix, ""),
            ("**/file*txt", Regexp, "^(.*/)?file[^/]*txt$"),
            ("**/**/*.txt", Regexp, "^(.*/)?(.*/)?[^/]*\\.txt$"),
            ("a[b-d]e", Regexp, "^a[b-d]e$"),
            (".*", Regexp, "^\\.[^/]*$"),
            ("abc.def", Exact, ""),
            ("abc?def", Regexp, "^abc[^/]def$"),
            ("**/foo/bar", Suffix, ""),
            ("a(b)c/def", Exact, ""),
            ("a.|)$(}+{bc", Exact, ""),
            ("dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", Exact, ""),
        ];
        for (pattern, kind, re) in table {
            let (k, r) = compile(&go_clean(pattern)).unwrap();
            assert_eq!(k, kind, "{pattern}");
            assert_eq!(r.map(|r| r.as_str().to_string()).unwrap_or_default(), re, "{pattern}");
        }
    }

    #[test]
    fn go_clean_cases() {
        for (i, o) in [("", "."), ("a/../..", ".."), ("/../a", "/a"), ("a//b/./c/", "a/b/c"), ("./", "."), ("/", "/")] {
            assert_eq!(go_clean(i), o, "{i}");
        }
    }
}
