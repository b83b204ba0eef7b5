//! Splitting an instruction line into keyword, `--flags` and the rest: BuildKit's `split_command.go`.

use super::go;

/// BuildKit's `splitCommand`: the keyword as written, the leading `--flag[=value]` words, and the
/// remaining arguments trimmed.
pub(crate) fn split_command(line: &str, escape: char) -> (String, Vec<String>, String) {
    let parts = go::split_whitespace(go::trim_space(line), Some(2));
    let (args, flags) = match parts.get(1) {
        Some(rest) => extract_builder_flags(rest, escape),
        None => (String::new(), Vec::new()),
    };
    (parts[0].to_string(), flags, go::trim_space(&args).to_string())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Spaces,
    Word,
    Quote,
}

/// BuildKit's `extractBuilderFlags`: collects words starting with `--` until the first other word (or a
/// lone `--`, which is dropped); quotes group and are removed, the escape token escapes anything.
///
/// Like BuildKit this walks bytes, not characters: a non-ASCII byte is appended as the Latin-1 character
/// of the same value (so `--chown=jürgen` becomes `--chown=jÃ¼rgen`, exactly as BuildKit mangles it),
/// and the UTF-8 continuation bytes 0x85 and 0xA0 count as spaces. Where BuildKit would then return
/// bytes that are not valid UTF-8, the rest of the line is converted lossily.
pub(crate) fn extract_builder_flags(line: &str, escape: char) -> (String, Vec<String>) {
    let b = line.as_bytes();
    let is_escape = |c: u8| u32::from(c) == u32::from(escape);
    let rest = |pos: usize| String::from_utf8_lossy(&b[pos..]).into_owned();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = 0u8;
    let mut blank_ok = false;
    let mut ch = 0u8;
    let mut pos = 0;
    while pos <= b.len() {
        if pos != b.len() {
            ch = b[pos];
        }
        if phase == Phase::Spaces {
            if pos == b.len() {
                break;
            }
            if go::is_space_byte(ch) {
                pos += 1;
                continue;
            }
            // Only keep going if the next word starts with "--".
            if ch != b'-' || pos + 1 == b.len() || b[pos + 1] != b'-' {
                return (rest(pos), words);
            }
            phase = Phase::Word;
        }
        if pos == b.len() {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if go::is_space_byte(ch) {
                phase = Phase::Spaces;
                if word == "--" {
                    return (rest(pos), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == b'\'' || ch == b'"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if is_escape(ch) {
                if pos + 1 == b.len() {
                    pos += 1;
                    continue; // an escape token at the end is dropped
                }
                pos += 1;
                ch = b[pos];
            }
            word.push(char::from(ch));
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if is_escape(ch) {
            if pos + 1 == b.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = b[pos];
        }
        word.push(char::from(ch));
        pos += 1;
    }
    (String::new(), words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> (String, Vec<String>, String) {
        split_command(line, '\\')
    }

    #[test]
    fn keyword_flags_args() {
        assert_eq!(split("  RUN  echo hi "), ("RUN".into(), vec![], "echo hi".into()));
        assert_eq!(
            split("copy --from=a --chown=\"x y\" a b"),
            ("copy".into(), vec!["--from=a".into(), "--chown=x y".into()], "a b".into())
        );
        assert_eq!(split("COPY --a -- --b c"), ("COPY".into(), vec!["--a".into()], "--b c".into()));
        assert_eq!(split("RUN make --jobs=4"), ("RUN".into(), vec![], "make --jobs=4".into()));
        assert_eq!(split("CMD --doit"), ("CMD".into(), vec!["--doit".into()], "".into()));
        assert_eq!(split("CMD --"), ("CMD".into(), vec![], "".into()));
        assert_eq!(split("CMD -- x"), ("CMD".into(), vec![], "x".into()));
        assert_eq!(split("FROM"), ("FROM".into(), vec![], "".into()));
        assert_eq!(split("X --a=''"), ("X".into(), vec!["--a=".into()], "".into()));
        assert_eq!(split("X --a=\\\"b\\"), ("X".into(), vec!["--a=\"b".into()], "".into()));
    }

    #[test]
    fn bytes_not_chars() {
        assert_eq!(split("COPY --chown=jürgen a b").1, ["--chown=jÃ¼rgen"]);
        // U+00A0 is C2 A0: the A0 byte counts as a space.
        assert_eq!(split("COPY --a=x\u{a0}b c").1, ["--a=xÂ"]);
    }

    #[test]
    fn escape_token_follows_directive() {
        assert_eq!(split_command("COPY --a=x`\"y a b", '`').1, ["--a=x\"y"]);
        assert_eq!(split_command("COPY --a=x\\y a", '`').1, ["--a=x\\y"]);
    }
}
