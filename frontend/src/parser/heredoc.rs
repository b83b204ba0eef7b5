//! Heredocs (`RUN <<EOF`, `COPY <<-"EOF" /dst`): which words of an instruction open one, and the
//! delimiter's name, quoting and options. BuildKit's `heredocsFromLine` and `ParseHeredoc` in `parser.go`.
//!
//! Both lex with the word lexer of [`crate::shell`] and an empty environment, always with `\` as the
//! escape token (BuildKit ignores `# escape=` here too).

use crate::shell::{Env, Lexer};

/// The parts of a heredoc opener, before its body is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opener {
    pub(crate) name: String,
    pub(crate) expand: bool,
    pub(crate) chomp: bool,
    pub(crate) file_descriptor: u32,
}

/// No variable is set: with `skip_unset_env` every reference stays as written.
struct NoEnv;

impl Env for NoEnv {
    fn get(&self, _: &str) -> Option<String> {
        None
    }
}

/// BuildKit's `heredocsFromLine`: every word of `line` that is a heredoc opener, in order. A line the
/// lexer cannot split (an unterminated quote, a bad `${`) has no heredocs.
pub(crate) fn heredocs_from_line(line: &str) -> Result<Vec<Opener>, String> {
    let lexer = Lexer::new('\\').raw_quotes(true).raw_escapes(true).skip_unset_env(true);
    let words = lexer.process_words(line, &NoEnv).map(|w| w.words).unwrap_or_default();
    let mut openers = Vec::new();
    for word in words {
        if let Some(opener) = parse_heredoc(&word)? {
            openers.push(opener);
        }
    }
    Ok(openers)
}

/// BuildKit's `ParseHeredoc`: `^(\d*)<<(-?)\s*([^<]*)$` and then the delimiter lexed twice, without and
/// with raw quotes: if the quote counts differ, part of the delimiter was quoted and the body is not
/// expanded.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Opener>, String> {
    let digits = word.len() - word.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, after) = match after.strip_prefix('-') {
        Some(after) => (true, after),
        None => (false, after),
    };
    let rest = after.trim_start_matches(['\t', '\n', '\u{c}', '\r', ' ']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    // Go's ParseUint error is ignored: out of range saturates (here at u32::MAX), empty is 0.
    let file_descriptor = match &word[..digits] {
        "" => 0,
        fd => fd.parse::<u32>().unwrap_or(u32::MAX),
    };

    let lexer = Lexer::new('\\').skip_unset_env(true);
    let words = lexer.process_words(rest, &NoEnv).map_err(|e| e.to_string())?.words;
    let [name] = words.as_slice() else {
        return Ok(None);
    };
    let raw = lexer.raw_quotes(true).process_words(rest, &NoEnv).map_err(|e| e.to_string())?.words;
    let [raw_name] = raw.as_slice() else {
        return Err(format!("internal lexing of heredoc produced inconsistent results: {rest}"));
    };
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Opener { name: name.clone(), expand: quotes(name) == quotes(raw_name), chomp, file_descriptor }))
}

/// BuildKit's `ChompHeredocContent`: `(?m)^\t+` removed, i.e. leading tabs of every line.
pub(crate) fn chomp(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    for line in content.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opener(name: &str, expand: bool, chomp: bool, fd: u32) -> Opener {
        Opener { name: name.into(), expand, chomp, file_descriptor: fd }
    }

    #[test]
    fn openers() {
        assert_eq!(parse_heredoc("<<EOF"), Ok(Some(opener("EOF", true, false, 0))));
        assert_eq!(parse_heredoc("<<-EOF"), Ok(Some(opener("EOF", true, true, 0))));
        assert_eq!(parse_heredoc("3<<EOF"), Ok(Some(opener("EOF", true, false, 3))));
        assert_eq!(parse_heredoc("<<'EOF'"), Ok(Some(opener("EOF", false, false, 0))));
        assert_eq!(parse_heredoc("<<\"E\"OF"), Ok(Some(opener("EOF", false, false, 0))));
        assert_eq!(
            parse_heredoc("<<E\\OF"),
            Ok(Some(opener("EOF", true, false, 0))),
            "escapes do not disable expansion"
        );
        assert_eq!(parse_heredoc("<<file.txt"), Ok(Some(opener("file.txt", true, false, 0))));
        assert_eq!(parse_heredoc("<<$X"), Ok(Some(opener("$X", true, false, 0))));
        assert_eq!(parse_heredoc("99999999999<<EOF").unwrap().unwrap().file_descriptor, u32::MAX);
        for none in ["<<", "<<-", "a<<EOF", "<EOF", "<<<EOF", "<<EOF<", "<<'a b'c d", "EOF"] {
            assert_eq!(parse_heredoc(none), Ok(None), "{none}");
        }
    }

    #[test]
    fn lexing_errors_of_the_delimiter_fail() {
        assert!(parse_heredoc("<<${a:-'}").unwrap_err().starts_with("failed to process \"${a:-'}\""));
    }

    #[test]
    fn openers_of_a_line() {
        let names = |line: &str| heredocs_from_line(line).unwrap().into_iter().map(|o| o.name).collect::<Vec<_>>();
        assert_eq!(names("RUN cat <<A - <<\"B\" 3<<-C"), ["A", "B", "C"]);
        assert_eq!(names("RUN echo \"<<A\" '<<B' \\<<C"), Vec::<String>::new());
        assert_eq!(names("COPY --chmod=755 <<run.sh /usr/bin/"), ["run.sh"]);
        assert_eq!(names("RUN <<A echo \"unterminated"), Vec::<String>::new(), "the whole line must lex");
    }

    #[test]
    fn chomps_leading_tabs_of_every_line() {
        assert_eq!(chomp("\t\ta\n\tb\t\n \tc\n\t"), "a\nb\t\n \tc\n");
    }
}
