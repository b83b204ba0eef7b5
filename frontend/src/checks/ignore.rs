//! .dockerignore matching for the `CopyIgnoredFile` rule (patternmatcher's `MatchesOrParentMatches`):
//! a path is excluded when it or one of its parents matches the last applicable pattern, a `!` pattern
//! re-including it. Patterns arrive cleaned (solver's `parse_dockerignore`); the file walk that sends the
//! context uses the solver's full port, this reads the same patterns for a warning only.

/// Whether `path` (a COPY source, relative to the context) is excluded by `patterns`.
pub(super) fn matches_or_parent(patterns: &[String], path: &str) -> bool {
    let clean: Vec<&str> = path.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    if clean.is_empty() || patterns.is_empty() {
        return false;
    }
    let mut matched = false;
    for p in patterns {
        let (exclusion, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p.as_str()),
        };
        let pat: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        // The path itself or any parent directory.
        let hit = (1..=clean.len()).any(|n| segments(&pat, &clean[..n]));
        if hit {
            matched = !exclusion;
        }
    }
    matched
}

fn segments(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| segments(rest, &path[i..])),
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => glob(first.as_bytes(), p.as_bytes()) && segments(rest, prest),
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` (with `^`/`!` and ranges), `\` escapes.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else { return false };
            let Some((&c, srest)) = s.split_first() else { return false };
            let (negate, class) = match rest[..close].split_first() {
                Some((b'^' | b'!', cls)) => (true, cls),
                _ => (false, &rest[..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&rest[close + 1..], srest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => s.first() == Some(&rest[0]) && glob(&rest[1..], &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_exceptions() {
        let pats = vec!["node_modules".to_string(), "*.md".into(), "!README.md".into(), "**/secret*".into()];
        assert!(matches_or_parent(&pats, "node_modules/x/index.js"));
        assert!(matches_or_parent(&pats, "./CHANGES.md"));
        assert!(!matches_or_parent(&pats, "README.md"));
        assert!(matches_or_parent(&pats, "a/b/secret.txt"));
        assert!(!matches_or_parent(&pats, "src/main.rs"));
        assert!(!matches_or_parent(&pats, "."));
    }
}
