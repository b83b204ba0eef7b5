//! `WWW-Authenticate` challenges (RFC 7235), as the distribution spec's token flow uses them:
//! `Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull"`.

use std::collections::BTreeMap;

/// The scheme a registry asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    Basic,
    Bearer,
    Other(String),
}

/// One parsed challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: Scheme,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn realm(&self) -> Option<&str> {
        self.params.get("realm").map(String::as_str)
    }

    pub fn service(&self) -> Option<&str> {
        self.params.get("service").map(String::as_str)
    }
}

/// Parses every challenge of a header value; unknown schemes are kept so errors can name them.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // A token followed by a space starts a new challenge; `name=value` continues the current one.
        let word_end = rest.find([' ', ',', '=']).unwrap_or(rest.len());
        let word = &rest[..word_end];
        let after = &rest[word_end..];
        if let Some(v) = after.strip_prefix('=') {
            let (value, remaining) = parse_value(v);
            if let Some(c) = out.last_mut() {
                c.params.insert(word.to_ascii_lowercase(), value);
            }
            rest = remaining.trim_start_matches([' ', ',']);
            continue;
        }
        if !word.is_empty() {
            let scheme = match word.to_ascii_lowercase().as_str() {
                "basic" => Scheme::Basic,
                "bearer" => Scheme::Bearer,
                other => Scheme::Other(other.to_string()),
            };
            out.push(Challenge { scheme, params: BTreeMap::new() });
        }
        rest = after.trim_start_matches([' ', ',']);
    }
    out
}

/// A quoted-string (with backslash escapes) or a token; returns the value and what follows.
fn parse_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => return (value, &body[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_params() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, Scheme::Bearer);
        assert_eq!(c[0].realm(), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].service(), Some("registry.docker.io"));
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull,push");
    }

    #[test]
    fn several_and_unquoted() {
        let c = parse(r#"Basic realm="a \"quoted\" realm", Bearer realm=https://x/token,service=x"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, Scheme::Basic);
        assert_eq!(c[0].realm(), Some("a \"quoted\" realm"));
        assert_eq!(c[1].realm(), Some("https://x/token"));
        assert_eq!(c[1].service(), Some("x"));
    }
}
