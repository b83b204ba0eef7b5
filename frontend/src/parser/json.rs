//! Go's `json.Unmarshal` into `[]interface{}`, as BuildKit's `parseJSON` uses it: the whole input must be
//! one valid JSON value (trailing whitespace only), and only then are the elements checked to be strings.
//! Nesting deeper than Go's limit (10000) is a syntax error; nested values are skipped without recursion.

/// Why a text is not a JSON array of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not valid JSON (BuildKit falls back to the shell form).
    Syntax,
    /// Valid JSON, but an element is not a string (BuildKit fails).
    NotStrings,
}

const MAX_DEPTH: usize = 10000;

/// Decodes `s`, which starts with `[`, as a JSON array of strings.
pub(crate) fn parse_string_array(s: &str) -> Result<Vec<String>, JsonError> {
    let mut p = Json { b: s.as_bytes(), i: 0 };
    p.ws();
    p.expect(b'[')?;
    let mut strings = Vec::new();
    let mut all_strings = true;
    p.ws();
    if p.peek() == Some(b']') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            if p.peek() == Some(b'"') {
                strings.push(p.string()?);
            } else {
                p.skip_value(1)?;
                all_strings = false;
            }
            p.ws();
            match p.next() {
                Some(b',') => {}
                Some(b']') => break,
                _ => return Err(JsonError::Syntax),
            }
        }
    }
    p.ws();
    if p.i != p.b.len() {
        return Err(JsonError::Syntax);
    }
    if all_strings {
        Ok(strings)
    } else {
        Err(JsonError::NotStrings)
    }
}

struct Json<'a> {
    b: &'a [u8],
    i: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += usize::from(c.is_some());
        c
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(JsonError::Syntax)
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Skips one value that is not the top-level array; `depth` counts the containers around it.
    fn skip_value(&mut self, depth: usize) -> Result<(), JsonError> {
        // Open containers, innermost last: true for an object.
        let mut open: Vec<bool> = Vec::new();
        loop {
            self.ws();
            match self.peek() {
                Some(c @ (b'[' | b'{')) => {
                    self.i += 1;
                    if depth + open.len() + 1 > MAX_DEPTH {
                        return Err(JsonError::Syntax);
                    }
                    open.push(c == b'{');
                    self.ws();
                    let close = if c == b'{' { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        open.pop();
                    } else {
                        if c == b'{' {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return Err(JsonError::Syntax),
            }
            // A value is complete: close containers or move to the next element.
            loop {
                let Some(&object) = open.last() else {
                    return Ok(());
                };
                self.ws();
                match self.next() {
                    Some(b',') => {
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        open.pop();
                    }
                    Some(b']') if !object => {
                        open.pop();
                    }
                    _ => return Err(JsonError::Syntax),
                }
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), JsonError> {
        if self.peek() != Some(b'"') {
            return Err(JsonError::Syntax);
        }
        self.string()?;
        self.ws();
        self.expect(b':')
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(JsonError::Syntax)
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(JsonError::Syntax),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(JsonError::Syntax);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(JsonError::Syntax);
            }
        }
        Ok(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.b.get(at..at + 4)?;
        digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + char::from(d).to_digit(16)?))
    }

    /// A string literal, decoded as Go does: control characters are errors, a `\u` escape that is not a
    /// valid surrogate pair becomes U+FFFD.
    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = self.next().ok_or(JsonError::Syntax)?;
            match c {
                b'"' => break,
                0..=0x1f => return Err(JsonError::Syntax),
                b'\\' => {
                    let e = self.next().ok_or(JsonError::Syntax)?;
                    let simple = match e {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let r = self.hex4(self.i).ok_or(JsonError::Syntax)?;
                            self.i += 4;
                            let mut decoded = char::from_u32(r);
                            if (0xd800..0xe000).contains(&r) {
                                decoded = None;
                                // Consume a following `\uDC00`-`\uDFFF` only after a high surrogate.
                                if r < 0xdc00 && self.b[self.i..].starts_with(b"\\u") {
                                    if let Some(low @ 0xdc00..=0xdfff) = self.hex4(self.i + 2) {
                                        self.i += 6;
                                        decoded = char::from_u32(0x10000 + ((r - 0xd800) << 10) + (low - 0xdc00));
                                    }
                                }
                            }
                            let mut buf = [0; 4];
                            out.extend_from_slice(decoded.unwrap_or('\u{fffd}').encode_utf8(&mut buf).as_bytes());
                            continue;
                        }
                        _ => return Err(JsonError::Syntax),
                    };
                    out.push(simple);
                }
                c => out.push(c),
            }
        }
        // The input is a &str and escapes produce whole characters, so this never replaces anything.
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<String>, JsonError> {
        parse_string_array(s)
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(parse("[]"), Ok(vec![]));
        assert_eq!(parse("[ \"a\" , \"b\" ]\n\t"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(
            parse(r#"["\" \\ \/ \b \f \n \r \t \u0000 \u00e9"]"#),
            Ok(vec!["\" \\ / \u{8} \u{c} \n \r \t \0 é".into()])
        );
        assert_eq!(
            parse(r#"["\ud83d\ude00", "\ud800", "\udc00x", "\ud800\ud800"]"#),
            Ok(vec!["😀".into(), "\u{fffd}".into(), "\u{fffd}x".into(), "\u{fffd}\u{fffd}".into()])
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "[",
            "[\"a\"",
            "[\"a\",]",
            "[,]",
            "['a']",
            "[\"a\"] x",
            "[\"a\"]]",
            "[\"\t\"]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "[01]",
            "[1.]",
            "[1e]",
            "[-]",
            "[tru]",
            "[{\"a\" 1}]",
            "[{1:2}]",
            "[[1,]]",
        ] {
            assert_eq!(parse(bad), Err(JsonError::Syntax), "{bad}");
        }
    }

    #[test]
    fn non_strings_after_validation() {
        for v in ["[1]", "[null]", "[\"a\", [\"b\"]]", "[{}]", "[{\"a\": [1, {\"b\": null}]}, -0.5e+3, true, false]"] {
            assert_eq!(parse(v), Err(JsonError::NotStrings), "{v}");
        }
        // A syntax error anywhere wins over a non-string element.
        assert_eq!(parse("[1, \"a\""), Err(JsonError::Syntax));
    }

    #[test]
    fn depth_limit_without_recursion() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(parse(&deep(MAX_DEPTH)), Err(JsonError::NotStrings));
        assert_eq!(parse(&deep(MAX_DEPTH + 1)), Err(JsonError::Syntax));
        assert_eq!(parse(&format!("[{}", "[".repeat(100_000))), Err(JsonError::Syntax));
    }
}
