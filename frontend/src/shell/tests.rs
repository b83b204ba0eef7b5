//! Behaviour of the lexer as a whole: modifiers, errors, options, name tracking, and robustness.
//! BuildKit's own vectors run in frontend/tests/shell_vectors.rs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::*;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn expand(word: &str, env: &[(&str, &str)]) -> String {
    Lexer::new('\\').process_word(word, &pairs(env)).unwrap_or_else(|e| panic!("{word}: {e}")).value
}

fn words(word: &str, env: &[(&str, &str)]) -> Vec<String> {
    Lexer::new('\\').process_words(word, &pairs(env)).unwrap_or_else(|e| panic!("{word}: {e}")).words
}

fn error(word: &str, env: &[(&str, &str)]) -> String {
    match Lexer::new('\\').process_word(word, &pairs(env)) {
        Err(e) => e.to_string(),
        Ok(x) => panic!("{word}: expected an error, got {x:?}"),
    }
}

#[test]
fn env_impls_agree() {
    let list = pairs(&[("car", "hat"), ("foo", ""), ("car", "bike")]);
    let btree: BTreeMap<String, String> = list.iter().cloned().collect();
    let hash: HashMap<String, String> = list.iter().cloned().collect();
    for env in [&list as &dyn Env, &btree, &hash, &list.as_slice()] {
        assert_eq!(env.get("car").as_deref(), Some("bike"), "the last value wins");
        assert_eq!(env.get("foo").as_deref(), Some(""));
        assert_eq!(env.get("FOO"), None, "names are case-sensitive");
        assert_eq!(env.get("nope"), None);
    }
}

#[test]
fn hash_removes_shortest_prefix() {
    let env = [("URL", "https://example.com/a/b.tar.gz")];
    assert_eq!(expand("${URL#https://}", &env), "example.com/a/b.tar.gz");
    assert_eq!(expand("${URL#*/}", &env), "/example.com/a/b.tar.gz");
    assert_eq!(expand("${URL#nomatch}", &env), "https://example.com/a/b.tar.gz");
    assert_eq!(expand("${UNSET#x}", &env), "");
}

#[test]
fn double_hash_removes_longest_prefix() {
    let env = [("URL", "https://example.com/a/b.tar.gz")];
    assert_eq!(expand("${URL##*/}", &env), "b.tar.gz");
    assert_eq!(expand("${URL##*.}", &env), "gz");
}

#[test]
fn percent_removes_shortest_suffix() {
    let env = [("FILE", "app-1.2.3.tar.gz")];
    assert_eq!(expand("${FILE%.*}", &env), "app-1.2.3.tar");
    assert_eq!(expand("${FILE%.tar.gz}", &env), "app-1.2.3");
    assert_eq!(expand("${FILE%?}", &env), "app-1.2.3.tar.g");
}

#[test]
fn double_percent_removes_longest_suffix() {
    let env = [("FILE", "app-1.2.3.tar.gz")];
    assert_eq!(expand("${FILE%%.*}", &env), "app-1");
    assert_eq!(expand("${FILE%%-*}", &env), "app");
}

#[test]
fn slash_replaces_first_and_double_slash_all() {
    let env = [("P", "/usr/local/bin:/usr/bin:/bin")];
    assert_eq!(expand("${P/:/ }", &env), "/usr/local/bin /usr/bin:/bin");
    assert_eq!(expand("${P//:/ }", &env), "/usr/local/bin /usr/bin /bin");
    assert_eq!(words("${P//:/ }", &env), ["/usr/local/bin", "/usr/bin", "/bin"], "results split into words");
    assert_eq!(expand("${P//\\//_}", &env), "_usr_local_bin:_usr_bin:_bin", "an escaped / is part of the pattern");
    assert_eq!(expand("${P/\\}/x}", &[("P", "a}b}")]), "axb}", "an escaped }} is part of the pattern");
    assert_eq!(expand("${P//b*/X}", &env), "/usr/local/X", "stars are greedy");
    // Go's ReplaceAllString expands `$0` in the replacement (reachable only through an escaped `$`).
    assert_eq!(expand("${P//b/[\\$0]}", &[("P", "abc")]), "a[\\b]c");
    assert_eq!(expand("${P/b/[\\$0]}", &[("P", "abc")]), "a[\\$0]c");
}

#[test]
fn patterns_may_come_from_variables_and_escape_glob_characters() {
    let env = [("V", "a*b?c"), ("STAR", "*"), ("LIT", "\\*")];
    assert_eq!(expand("${V#*$LIT}", &env), "b?c");
    assert_eq!(expand("${V#$STAR}", &env), "a*b?c", "a lazy star matches nothing");
    assert_eq!(expand("${V##$STAR}", &env), "");
    assert_eq!(expand("${V#$LIT}", &env), "a*b?c", "anchored: a literal * is not at the start");
    assert_eq!(expand("${V/$LIT/-}", &env), "a-b?c");
    assert_eq!(expand("${V/\\?/-}", &env), "a*b-c");
    // BuildKit checks for `##` after expanding the word, so a `#` from a variable makes the trim greedy.
    assert_eq!(expand("${V#$H}", &[("V", "##x"), ("H", "##")]), "#x");
    assert_eq!(expand("${V#$H}", &[("V", "#a#x"), ("H", "#*#")]), "x");
    assert_eq!(expand("${V#$H}", &[("V", "#a#x"), ("H", "*#")]), "a#x");
}

#[test]
fn bad_patterns_are_errors_worded_like_buildkit() {
    assert_eq!(
        error("${V#\\x}", &[("V", "v")]),
        r#"failed to process "${V#\\x}": invalid pattern (\x) in substitution: invalid escape '\x'"#
    );
    // `%` reverses the pattern before compiling it, and BuildKit reports the reversed pattern.
    assert_eq!(
        error("${V%a\\x}", &[("V", "v")]),
        r#"failed to process "${V%a\\x}": invalid pattern (\xa) in substitution: invalid escape '\x'"#
    );
    assert!(error("${V/\\x/y}", &[]).ends_with(r"invalid pattern (\x) in substitution: invalid escape '\x'"));
    assert!(error("${V//a}", &[]).ends_with("syntax error: missing '/' in ${}"));
    assert!(error("${V:#a}", &[]).ends_with("unsupported modifier (:#) in substitution"));
    assert!(error("${V:%%a}", &[]).ends_with("unsupported modifier (:%) in substitution"));
}

#[test]
fn question_mark_requires_a_value() {
    let env = [("EMPTY", ""), ("SET", "v")];
    assert_eq!(expand("${SET:?}", &env), "v");
    assert_eq!(expand("${SET?}", &env), "v");
    assert_eq!(expand("${EMPTY?}", &env), "");
    assert!(error("${EMPTY:?}", &env).ends_with(": EMPTY: is not allowed to be empty"));
    assert!(error("${NOPE:?}", &env).ends_with(": NOPE: is not allowed to be unset"));
    assert!(error("${NOPE?}", &env).ends_with(": NOPE: is not allowed to be unset"));
    assert!(error("${EMPTY:?set $SET please}", &env).ends_with(": EMPTY: set v please"));
    let err = Lexer::new('\\').process_word("x${NOPE?why}", &pairs(&env)).unwrap_err();
    assert_eq!(err.word, "x${NOPE?why}");
    assert_eq!(err.kind, ExpandErrorKind::Required { name: "NOPE".into(), message: "why".into() });
}

#[test]
fn defaults_and_alternatives_distinguish_unset_from_empty() {
    let env = [("EMPTY", ""), ("SET", "v")];
    assert_eq!(expand("${EMPTY-d}|${EMPTY:-d}|${NOPE-d}|${SET-d}", &env), "|d|d|v");
    assert_eq!(expand("${EMPTY+a}|${EMPTY:+a}|${NOPE+a}|${SET:+a}", &env), "a|||a");
    assert_eq!(expand("${NOPE:-'a b' \"$SET\"}", &env), "a b v", "quotes work inside default words");
    assert_eq!(expand("${NOPE:-a\\}b}", &env), "a}b");
}

#[test]
fn syntax_errors_are_worded_like_buildkit() {
    for (word, reason) in [
        ("${", "syntax error: missing '}'"),
        ("${}", "syntax error: bad substitution"),
        ("${:-x}", "syntax error: bad substitution"),
        ("${{a}", "syntax error: bad substitution"),
        ("${a", "unsupported modifier (\u{fffd}) in substitution"),
        ("${a:", "syntax error: missing '}'"),
        ("${a:-b", "syntax error: missing '}'"),
        ("${a:-'b}", "syntax error: missing '}'"),
        ("${a=b}", "unsupported modifier (=) in substitution"),
        ("${a:=b}", "unsupported modifier (:=) in substitution"),
        ("${a.b}", "unsupported modifier (.) in substitution"),
        ("'a", "unexpected end of statement while looking for matching single-quote"),
        ("\"a", "unexpected end of statement while looking for matching double-quote"),
        ("\"a\\", "unexpected end of statement while looking for matching double-quote"),
        ("${a:-${b:?oops}}", "b: oops"),
    ] {
        let err = Lexer::new('\\').process_word(word, &pairs(&[])).unwrap_err();
        assert_eq!(err.kind.to_string(), reason, "{word}");
        assert_eq!(err.to_string(), format!("failed to process {}: {reason}", error::go_quote(word)));
    }
}

#[test]
fn dollar_edge_cases() {
    let env = [("A", "x"), ("A_1", "y")];
    assert_eq!(expand("$", &env), "$");
    assert_eq!(expand("a$", &env), "a$");
    assert_eq!(expand("$A_1.$A-$A_", &env), "y.x-");
    assert_eq!(expand("$1$A", &env), "x", "positional parameters are never set");
    assert_eq!(expand("$$A", &env), "A", "$$ is a special parameter, never set");
    assert_eq!(expand("$한$A", &env), "x", "names are Unicode letters, as in Go");
    assert_eq!(expand("$A\u{2160}", &env), "x\u{2160}", "a letter number ends a name");
}

#[test]
fn backtick_escape_token() {
    let lexer = Lexer::new('`');
    let env = pairs(&[("X", "x")]);
    let value = |word: &str| lexer.process_word(word, &env).unwrap().value;
    assert_eq!(value(r"C:\dir\$X"), r"C:\dir\x", "a backslash is an ordinary character");
    assert_eq!(value("a`$X"), "a$X");
    assert_eq!(value("a` b"), "a b");
    assert_eq!(value("a``b"), "a`b");
    assert_eq!(value("end`"), "end");
    assert_eq!(value("\"q`\"`$X``\\\""), "q\"$X`\\");
    assert_eq!(value("\"`a\""), "`a", "other escapes stay inside double quotes");
    assert_eq!(value("${NOPE:-`}}"), "}");
    assert_eq!(lexer.process_words("a` b c", &env).unwrap().words, ["a b", "c"]);
    assert_eq!(lexer.escape(), '`');
}

#[test]
fn used_and_unset_names_are_tracked() {
    let env = pairs(&[("A", "a"), ("EMPTY", "")]);
    let lexer = Lexer::new('\\');
    let got = lexer.process_word("$A ${EMPTY} ${B:-$C} '$D' \"$E\" \\$F $1", &env).unwrap();
    assert_eq!(got.value, "a   $D  $F ");
    assert_eq!(got.used, set(&["A", "EMPTY"]));
    assert_eq!(got.unset, set(&["1", "B", "C", "E"]));
    // BuildKit expands a default word before it looks at the variable, so names in an untaken default
    // are reported too.
    let got = lexer.process_word("${A:-$B}${A:+$C}", &env).unwrap();
    assert_eq!((got.value.as_str(), got.used, got.unset), ("a", set(&["A"]), set(&["B", "C"])));
    let got = lexer.process_words("${A//a/$B} ${EMPTY#$A}", &env).unwrap();
    assert_eq!((got.used, got.unset), (set(&["A", "EMPTY"]), set(&["B"])));
    let got = lexer.process_word("plain", &env).unwrap();
    assert!(got.used.is_empty() && got.unset.is_empty());
}

#[test]
fn word_splitting() {
    let env = [("S", " a  b "), ("E", "")];
    assert_eq!(words("x${S}y", &env), ["x", "a", "b", "y"]);
    assert_eq!(words("x\"${S}\"y", &env), ["x a  b y"]);
    assert_eq!(words("'' \"\" $E", &env), Vec::<String>::new(), "empty words are dropped");
    assert_eq!(words("a\\ b 'c d'\te\nf", &env), ["a b", "c d", "e", "f"]);
    assert_eq!(words("", &env), Vec::<String>::new());
    // BuildKit's newest lexer loses the "a" here (a shared buffer); every earlier release gives this.
    assert_eq!(words("a${E:-b c}d", &env), ["ab", "cd"]);
}

#[test]
fn raw_quotes_keep_quotes() {
    let lexer = Lexer::new('\\').raw_quotes(true);
    let env = pairs(&[("X", "x y")]);
    assert_eq!(lexer.process_word("'a $X' \"b $X\"", &env).unwrap().value, "'a $X' \"b x y\"");
    assert_eq!(lexer.process_words("'a $X' \"b $X\"c", &env).unwrap().words, ["'a $X'", "\"b x y\"c"]);
}

#[test]
fn raw_escapes_keep_escape_tokens() {
    let lexer = Lexer::new('\\').raw_escapes(true);
    let env = pairs(&[("X", "x")]);
    let value = |word: &str| lexer.process_word(word, &env).unwrap().value;
    assert_eq!(value("a\\ b\\$X"), "a\\ b\\$X");
    assert_eq!(value("end\\"), "end\\");
    assert_eq!(value("\"\\\"\\$X\""), "\\\"\\$X");
    // BuildKit's quirk: inside double quotes a kept escape before an ordinary character doubles.
    assert_eq!(value("\"a\\tb\""), "a\\\\tb");
    // Default words never keep escapes, whatever the option.
    assert_eq!(value("${NOPE:-\\$X}"), "$X");
    assert_eq!(lexer.process_words("a\\ b c", &env).unwrap().words, ["a\\ b", "c"]);
}

#[test]
fn skip_process_quotes_treats_quotes_as_text() {
    let lexer = Lexer::new('\\').skip_process_quotes(true);
    let env = pairs(&[("X", "x")]);
    assert_eq!(lexer.process_word("'$X' \"$X\" it's", &env).unwrap().value, "'x' \"x\" it's");
}

#[test]
fn skip_unset_env_leaves_unset_references() {
    let lexer = Lexer::new('\\').skip_unset_env(true);
    let env = pairs(&[("X", "x")]);
    let value = |word: &str| lexer.process_word(word, &env).unwrap().value;
    assert_eq!(value("$X $U ${U} ${X}"), "x $U ${U} x");
    assert_eq!(value("${U:-d} ${U-d} ${U:+a} ${U?m} ${U:?m} ${U#p} ${U%%p}"), {
        "${U:-d} ${U-d} ${U:+a} ${U?m} ${U:?m} ${U#p} ${U%%p}"
    });
    assert_eq!(value("${X:-d}${X#x}"), "x");
    // BuildKit rebuilds `${v//p/r}` with one slash, and unknown modifiers pass through when unset.
    assert_eq!(value("${U/a/b} ${U//a/b} ${U:=v}"), "${U/a/b} ${U/a/b} ${U:=v}");
    assert!(lexer.process_word("${X:=v}", &env).is_err());
    let got = lexer.process_word("$U", &env).unwrap();
    assert_eq!(got.unset, set(&["U"]));
}

#[test]
fn leading_byte_order_mark_is_dropped_like_go_scanner() {
    assert_eq!(expand("\u{feff}a\u{feff}", &[]), "a\u{feff}");
    assert_eq!(expand("\u{feff}\u{feff}", &[]), "\u{feff}");
}

#[test]
fn nesting_is_bounded() {
    let nested = |depth: usize| format!("{}x{}", "\"${a:-".repeat(depth), "}\"".repeat(depth));
    // The deepest accepted word must not exhaust a 1 MiB stack, even unoptimised.
    let handle = std::thread::Builder::new().stack_size(1 << 20).spawn(move || {
        let ok = Lexer::new('\\').process_word(&nested(MAX_NESTING), &pairs(&[]));
        let too_deep = Lexer::new('\\').process_word(&nested(MAX_NESTING + 1), &pairs(&[]));
        (ok.map(|e| e.value), too_deep.map_err(|e| e.kind))
    });
    let (ok, too_deep) = handle.expect("spawn").join().expect("no stack overflow");
    assert_eq!(ok.as_deref(), Ok("x"));
    assert_eq!(too_deep, Err(ExpandErrorKind::TooDeep(MAX_NESTING)));
}

/// xorshift64*: a fixed-seed source of bytes for the robustness test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "$", "{", "}", ":", "-", "+", "?", "#", "%", "/", "\\", "`", "'", "\"", "*", " ", "\t", "\n", "a", "A", "_", "1",
    "0", "@", "!", "=", ".", "한", "\u{feff}", "\u{2160}", "${", "${A", "${E", "${U", "$A", "$E", ":-", "##", "%%",
    "//", "\\}", "\\/", "\\*", "\\?", "\\\\", "\\$", "`$",
];

/// Every lexer configuration on random and mutated words: no panic, no hang, and `process_word` and
/// `process_words` agree on success and on the names they report.
#[test]
fn random_and_mutated_words_never_panic() {
    let env = pairs(&[("A", "a*b?c/d"), ("E", ""), ("S", " x  y "), ("P", "\\*"), ("D", "$0")]);
    let seeds: Vec<&str> = include_str!("../../../testdata/conformance/buildkit/shell/envVarTest")
        .lines()
        .filter_map(|l| l.split('|').nth(1))
        .map(str::trim)
        .collect();
    assert!(seeds.len() > 200);
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut checked = 0;
    for round in 0..12_000 {
        let word = if round % 2 == 0 {
            (0..rng.below(24)).map(|_| PIECES[rng.below(PIECES.len())]).collect::<String>()
        } else {
            let mut chars: Vec<char> = seeds[rng.below(seeds.len())].chars().collect();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(chars.len() + 1);
                match rng.below(3) {
                    0 if at < chars.len() => {
                        chars.remove(at);
                    }
                    1 if at < chars.len() => chars[at] = PIECES[rng.below(PIECES.len())].chars().next().unwrap_or('$'),
                    _ => chars.splice(at..at, PIECES[rng.below(PIECES.len())].chars()).for_each(drop),
                }
            }
            chars.into_iter().collect()
        };
        let bits = rng.next();
        let lexer = Lexer::new(if bits & 1 == 0 { '\\' } else { '`' })
            .raw_quotes(bits & 2 != 0)
            .raw_escapes(bits & 4 != 0)
            .skip_process_quotes(bits & 8 != 0)
            .skip_unset_env(bits & 16 != 0);
        match (lexer.process_word(&word, &env), lexer.process_words(&word, &env)) {
            (Ok(one), Ok(many)) => {
                assert_eq!((&one.used, &one.unset), (&many.used, &many.unset), "{word:?}");
                assert!(many.words.iter().all(|w| !w.is_empty()), "{word:?}");
                checked += 1;
            }
            (Err(one), Err(many)) => {
                assert_eq!(one, many, "{word:?}");
                assert!(one.to_string().starts_with("failed to process \""), "{word:?}");
            }
            (one, many) => panic!("{word:?} ({lexer:?}): {one:?} vs {many:?}"),
        }
    }
    assert!(checked > 3000, "only {checked} words expanded");
}
