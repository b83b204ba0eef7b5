//! BuildKit's shell-expansion vectors (`frontend/dockerfile/shell/{envVarTest,wordsTest}`), run the way
//! BuildKit's lex_test.go runs them, plus the tables of its TestProcessWithMatches and friends.
//! testdata/conformance/README.md describes the formats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use frontend::shell::{Env, ExpandErrorKind, Lexer};

fn vectors(name: &str) -> String {
    let path: PathBuf =
        [env!("CARGO_MANIFEST_DIR"), "..", "testdata", "conformance", "buildkit", "shell", name].iter().collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[test]
fn env_var_test_rows_all_pass() {
    let text = vectors("envVarTest");
    let env = pairs(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]);
    let lexer = Lexer::new('\\');
    let (mut ran, mut windows, mut failures) = (BTreeMap::<&str, usize>::new(), 0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields.len(), 3, "line {}: {line:?}", index + 1);
        let (platform, source, expected) = (fields[0].trim(), fields[1].trim(), fields[2].trim());
        match platform {
            "A" | "U" => *ran.entry(platform).or_default() += 1,
            "W" => {
                windows += 1;
                continue;
            }
            other => panic!("line {}: unknown platform {other:?}", index + 1),
        }
        let got = lexer.process_word(source, &env);
        if !matches_expected(&got, expected) {
            failures.push(format!("line {}: {source:?}: expected {expected:?}, got {got:?}", index + 1));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    // The file holds 226 A rows, 2 U rows and 2 W rows (Windows-only, case-insensitive names): all counted.
    assert_eq!((ran.get("A").copied(), ran.get("U").copied(), windows), (Some(226), Some(2), 2));
}

fn matches_expected(got: &Result<frontend::shell::Expansion, frontend::shell::ExpandError>, expected: &str) -> bool {
    match got {
        Err(_) => expected == "error",
        Ok(expansion) => expansion.value == expected,
    }
}

/// Windows compares env names case-insensitively (equal_env_windows.go); that lives in the `Env`, not the
/// lexer, so the A and W rows also pass with such an env, as BuildKit runs them on Windows.
#[test]
fn env_var_test_windows_rows_pass_with_a_case_insensitive_env() {
    struct CaseInsensitive(Vec<(String, String)>);
    impl Env for CaseInsensitive {
        fn get(&self, name: &str) -> Option<String> {
            self.0.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        }
    }
    let text = vectors("envVarTest");
    let env = CaseInsensitive(pairs(&[("PWD", "/home"), ("SHELL", "bash"), ("KOREAN", "한국어"), ("NULL", "")]));
    let lexer = Lexer::new('\\');
    let mut ran = 0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.trim().split('|').map(str::trim).collect();
        if fields[0] == "A" || fields[0] == "W" {
            ran += 1;
            let got = lexer.process_word(fields[1], &env);
            assert!(matches_expected(&got, fields[2]), "{line:?}: got {got:?}");
        }
    }
    assert_eq!(ran, 228);
}

#[test]
fn words_test_rows_all_pass() {
    let text = vectors("wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut rows, mut env_lines, mut failures) = (0, 0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // As lex_test.go: the text after "ENV", left spaces trimmed; trailing spaces are part of the value.
            let entry = rest.trim_start_matches(' ');
            let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
            env.push((key.to_string(), value.to_string()));
            env_lines += 1;
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 2, "line {}: {line:?}", index + 1);
        rows += 1;
        let source = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        let got = match lexer.process_words(source, &env) {
            Ok(words) => words.words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!("line {}: {source:?}: expected {expected:?}, got {got:?}", index + 1));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert_eq!((rows, env_lines), (24, 4), "every row of wordsTest ran");
}

/// BuildKit's TestProcessWithMatches: value, matched and unmatched names, or an error.
#[test]
fn process_with_matches_table() {
    struct Case {
        input: &'static str,
        env: &'static [(&'static str, &'static str)],
        expected: Option<&'static str>,
        used: &'static [&'static str],
        unset: &'static [&'static str],
    }
    const FOO_BAR: &[(&str, &str)] = &[("FOO", "xxx"), ("BAR", "")];
    let ok = |input, env, expected, used, unset| Case { input, env, expected: Some(expected), used, unset };
    let err = |input, env, unset| Case { input, env, expected: None, used: &[], unset };
    let cases = [
        ok("x", &[("DUMMY", "dummy")], "x", &[], &[]),
        ok("x ${UNUSED}", &[("DUMMY", "dummy")], "x ", &[], &["UNUSED"]),
        ok("x ${FOO}", &[("FOO", "y")], "x y", &["FOO"], &[]),
        ok("${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}", FOO_BAR, "xxx  ccc", &["FOO", "BAR"], &["BAZ"]),
        ok("${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}", FOO_BAR, "xxx bbb ccc", &["FOO", "BAR"], &["BAZ"]),
        ok("${FOO:-}", FOO_BAR, "xxx", &["FOO"], &[]),
        ok("${FOO:-}", &[], "", &[], &["FOO"]),
        ok("${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}", FOO_BAR, "aaa bbb ", &["FOO", "BAR"], &["BAZ"]),
        ok("${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}", FOO_BAR, "aaa  ", &["FOO", "BAR"], &["BAZ"]),
        ok("${FOO?aaa}", FOO_BAR, "xxx", &["FOO"], &[]),
        ok("${BAR?bbb}", FOO_BAR, "", &["BAR"], &[]),
        err("${BAZ?ccc}", FOO_BAR, &["BAZ"]),
        ok("${FOO:?aaa}", FOO_BAR, "xxx", &["FOO"], &[]),
        err("${BAR:?bbb}", FOO_BAR, &[]),
        err("${BAZ:?ccc}", FOO_BAR, &["BAZ"]),
        err("${BAZ:?}", FOO_BAR, &["BAZ"]),
        err("${FOO=aaa}", FOO_BAR, &[]),
        err("${FOO=:aaa}", FOO_BAR, &[]),
        err("${FOO=}", &[], &[]),
        ok(r"${FOO#()[]{\}^$.\*\?|\\}", &[("FOO", r"()[]{}^$.*?|\x")], "x", &["FOO"], &[]),
        ok(r"${FOO%%\**}", &[("FOO", "xx**")], "xx", &["FOO"], &[]),
        ok("${FOO#*x*y}", &[("FOO", "xxyy")], "y", &["FOO"], &[]),
        ok("${FOO#*}", &[("FOO", "xxyy")], "xxyy", &["FOO"], &[]),
        ok("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], "xyy", &["FOO", "BAR"], &[]),
        ok("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy", &["FOO", "BAR"], &[]),
        ok("${FOO#}", &[("FOO", "xxyy")], "xxyy", &["FOO"], &[]),
        ok("${FOO##*x}", &[("FOO", "xxyy")], "yy", &["FOO"], &[]),
        ok("${FOO##}", &[("FOO", "xxyy")], "xxyy", &["FOO"], &[]),
        ok(r"${FOO#?\?}", &[("FOO", "???y")], "?y", &["FOO"], &[]),
        ok("${ABC:-.}${FOO%x}${ABC:-.}", &[("FOO", "xxyy")], ".xxyy.", &["FOO"], &["ABC"]),
        ok(r"${FOO%%\**\*}", &[("FOO", "a***yy*")], "a", &["FOO"], &[]),
        ok("${FOO%}", &[("FOO", "xxyy")], "xxyy", &["FOO"], &[]),
        ok("${FOO%%$BAR}", &[("FOO", "xxyy"), ("BAR", "")], "xxyy", &["FOO", "BAR"], &[]),
        err("${FOO:#}", &[], &[]),
        err("${FOO:##}", &[], &[]),
        err("${FOO:%}", &[], &[]),
        err("${FOO:%%}", &[], &[]),
        ok(
            "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
            &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", r"\*/")],
            "/foo.*/*.txt - /foo..*.txt",
            &["FOO", "NEEDLE"],
            &[],
        ),
        ok(
            "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
            &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
            "/tmp/bar.txt - /bar.txt",
            &["FOO", "NEEDLE"],
            &[],
        ),
        ok(
            "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
            &[("FOO", "/a/foo/b/c.txt"), ("NEEDLE", "/?/"), ("REPLACEMENT", "/")],
            "/foo/b/c.txt - /foo/c.txt",
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        ok(
            "${FOO/$NEEDLE/$REPLACEMENT}",
            &[("FOO", "http://google.de"), ("NEEDLE", "http://"), ("REPLACEMENT", "https://")],
            "https://google.de",
            &["FOO", "NEEDLE", "REPLACEMENT"],
            &[],
        ),
        ok(r"${FOO//\//\/}", &[("FOO", "/tmp/foo.txt")], r"\/tmp\/foo.txt", &["FOO"], &[]),
        ok("${FOO/$BAR/ww}", &[("FOO", "xxyy"), ("BAR", "")], "wwxxyy", &["FOO", "BAR"], &[]),
        err("${FOO//ww}", &[("FOO", "xxyy")], &[]),
        err("${FOO//}", &[("FOO", "xxyy")], &[]),
        ok("${FOO///}", &[("FOO", "xxyy")], "xxyy", &["FOO"], &[]),
        ok("${FOO///}", &[], "", &[], &["FOO"]),
    ];
    let lexer = Lexer::new('\\');
    for case in cases {
        let env: BTreeMap<String, String> = case.env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let got = lexer.process_word(case.input, &env);
        match (case.expected, got) {
            (None, Err(_)) => {}
            (Some(expected), Ok(expansion)) => {
                assert_eq!(expansion.value, expected, "{}", case.input);
                assert_eq!(expansion.used, set(case.used), "used by {}", case.input);
                assert_eq!(expansion.unset, set(case.unset), "unset in {}", case.input);
            }
            (expected, got) => panic!("{}: expected {expected:?}, got {got:?}", case.input),
        }
    }
}

/// BuildKit's TestShellParserMandatoryEnvVars.
#[test]
fn mandatory_env_vars() {
    let lexer = Lexer::new('\\');
    let set_envs = pairs(&[("VAR", "plain"), ("ARG", "x")]);
    let empty_envs = pairs(&[("VAR", ""), ("ARG", "x")]);
    let unset_envs = pairs(&[("ARG", "x")]);
    let (no_empty, no_unset) = ("${VAR:?message here$ARG}", "${VAR?message here$ARG}");
    let message = |env: &Vec<(String, String)>, word| match lexer.process_word(word, env) {
        Err(e) => match e.kind {
            ExpandErrorKind::Required { name, message } => format!("{name}: {message}"),
            other => panic!("{word}: unexpected error {other}"),
        },
        Ok(x) => panic!("{word}: expected an error, got {x:?}"),
    };
    assert_eq!(lexer.process_word(no_empty, &set_envs).unwrap().value, "plain");
    assert_eq!(message(&empty_envs, no_empty), "VAR: message herex");
    assert_eq!(message(&unset_envs, no_empty), "VAR: message herex");
    assert_eq!(lexer.process_word(no_unset, &set_envs).unwrap().value, "plain");
    assert_eq!(lexer.process_word(no_unset, &empty_envs).unwrap().value, "");
    assert_eq!(message(&unset_envs, no_unset), "VAR: message herex");
    let err = lexer.process_word("he${XXX:?}", &set_envs).unwrap_err();
    assert_eq!(err.to_string(), r#"failed to process "he${XXX:?}": XXX: is not allowed to be unset"#);
}

/// BuildKit's TestProcessWithMatchesPlatform: the release-file naming idiom with an optional variant.
#[test]
fn optional_variant_idiom() {
    let release = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let lexer = Lexer::new('\\');
    let expand = |env: &[(&str, &str)]| lexer.process_word(release, &pairs(env)).unwrap().value;
    let base = [("VERSION", "v1.2.3"), ("TARGETOS", "linux")];
    let arm = [base[0], base[1], ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")];
    assert_eq!(expand(&arm), "something-v1.2.3.linux-arm-v7.tar.gz");
    let empty_variant = [base[0], base[1], ("TARGETARCH", "arm64"), ("TARGETVARIANT", "")];
    assert_eq!(expand(&empty_variant), "something-v1.2.3.linux-arm64.tar.gz");
    let no_variant = [base[0], base[1], ("TARGETARCH", "arm64")];
    assert_eq!(expand(&no_variant), "something-v1.2.3.linux-arm64.tar.gz");
}

/// Any `Env` works through `&dyn Env`, including a caller's own scope type.
#[test]
fn custom_env() {
    struct Upper;
    impl Env for Upper {
        fn get(&self, name: &str) -> Option<String> {
            name.starts_with('X').then(|| name.to_lowercase())
        }
    }
    let words = Lexer::new('\\').process_words("$XA ${XB:-no}-${Y:-yes}", &Upper).unwrap();
    assert_eq!(words.words, ["xa", "xb-yes"]);
    assert_eq!(words.used, set(&["XA", "XB"]));
    assert_eq!(words.unset, set(&["Y"]));
}
