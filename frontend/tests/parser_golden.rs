//! Golden tests of the Dockerfile parser.
//!
//! - BuildKit's own cases (`testdata/conformance/buildkit/parser`): every `testfiles/<case>` must dump
//!   byte for byte to its `result`, every `testfiles-negative/<case>` must fail with a spanned error.
//! - rbuild's cases (`testdata/parser/<case>/Dockerfile`): a case that parses has `result` (the dump)
//!   and `ast` (the detailed dump); one that fails has `error` (the rendered diagnostic). Refresh them
//!   with `UPDATE_EXPECT=1 cargo test -p frontend --test parser_golden`.
//! - No input may panic: every prefix of every golden Dockerfile and seeded random mutations.

use std::fs;
use std::path::{Path, PathBuf};

use frontend::diag::Diagnostic;
use frontend::parser::{dump, dump_detailed, parse, Ast};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    cases.sort();
    cases
}

fn name(case: &Path) -> String {
    case.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn buildkit_testfiles() {
    let cases = cases(&testdata().join("conformance/buildkit/parser/testfiles"));
    assert_eq!(cases.len(), 33, "BuildKit's parser test files");
    let mut failures = Vec::new();
    for case in &cases {
        let source = fs::read(case.join("Dockerfile")).unwrap();
        let expected = fs::read_to_string(case.join("result")).unwrap();
        match parse(&source) {
            Ok(ast) if dump(&ast) == expected => {}
            Ok(ast) => failures.push(format!("{}:\n{}", name(case), diff(&expected, &dump(&ast)))),
            Err(e) => failures.push(format!("{}: {e}", name(case))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn buildkit_negative_testfiles() {
    let cases = cases(&testdata().join("conformance/buildkit/parser/testfiles-negative"));
    assert_eq!(cases.len(), 4, "BuildKit's negative parser test files");
    for case in &cases {
        match parse(&fs::read(case.join("Dockerfile")).unwrap()) {
            Ok(ast) => panic!("{} parsed:\n{}", name(case), dump(&ast)),
            Err(e) => assert!(e.span.is_some(), "{}: error without span: {e}", name(case)),
        }
    }
}

#[test]
fn rbuild_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let cases = cases(&testdata().join("parser"));
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let source = fs::read(case.join("Dockerfile")).unwrap();
        let (expected, stale): (Vec<(&str, String)>, &[&str]) = match parse(&source) {
            Ok(ast) => (vec![("result", dump(&ast)), ("ast", dump_detailed(&ast))], &["error"]),
            Err(e) => (vec![("error", render(&e, &source))], &["result", "ast"]),
        };
        for (file, actual) in expected {
            let path = case.join(file);
            let old = fs::read_to_string(&path).ok();
            if old.as_deref() == Some(actual.as_str()) {
                continue;
            }
            if update {
                fs::write(&path, &actual).unwrap();
            } else {
                match old {
                    Some(old) => failures.push(format!("{}/{file}:\n{}", name(case), diff(&old, &actual))),
                    None => failures.push(format!("{}/{file} is missing; it would be:\n{actual}", name(case))),
                }
            }
        }
        for file in stale {
            let path = case.join(file);
            if path.exists() {
                if update {
                    fs::remove_file(&path).unwrap();
                } else {
                    failures.push(format!(
                        "{}/{file} exists but the case now {}",
                        name(case),
                        if *file == "error" { "parses" } else { "fails" }
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nrefresh with UPDATE_EXPECT=1 cargo test -p frontend --test parser_golden",
        failures.join("\n")
    );
}

fn render(e: &Diagnostic, source: &[u8]) -> String {
    e.render("Dockerfile", &String::from_utf8_lossy(source))
}

/// A line diff (longest common subsequence), `-` expected, `+` actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        } else {
            out += &format!("- {}\n", a[i]);
            i += 1;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out += "(the final newline differs)\n";
    }
    out
}

/// What must hold for any input: no panic, every error spanned within the file, every span ordered and
/// within the file, and the dumps print.
fn check_invariants(source: &[u8]) {
    let lines = source.split(|&b| b == b'\n').count().max(1);
    let check_span = |start: usize, end: usize, what: &dyn std::fmt::Display| {
        assert!(
            1 <= start && start <= end && end <= lines,
            "{what}: span {start}-{end} of {lines} lines in {source:?}"
        );
    };
    match parse(source) {
        Ok(ast) => {
            assert!(!ast.nodes.is_empty());
            for node in &ast.nodes {
                check_span(node.span.start, node.span.end, &node.original);
            }
            let _: (String, String, &Ast) = (dump(&ast), dump_detailed(&ast), &ast);
        }
        Err(e) => {
            let span = e.span.unwrap_or_else(|| panic!("error without span: {e} in {source:?}"));
            check_span(span.start, span.end, &e);
            let _ = render(&e, source);
        }
    }
}

fn golden_dockerfiles() -> Vec<Vec<u8>> {
    let mut dirs = cases(&testdata().join("conformance/buildkit/parser/testfiles"));
    dirs.extend(cases(&testdata().join("conformance/buildkit/parser/testfiles-negative")));
    dirs.extend(cases(&testdata().join("parser")));
    dirs.iter().map(|d| fs::read(d.join("Dockerfile")).unwrap()).collect()
}

#[test]
fn no_panic_on_prefixes() {
    for source in golden_dockerfiles() {
        for end in 0..=source.len() {
            check_invariants(&source[..end]);
        }
    }
}

#[test]
fn no_panic_on_mutations() {
    // xorshift64*, fixed seed: the same mutations on every run.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    // Pieces that steer the parser: escapes, quotes, heredoc and flag markers, line ends, JSON, Unicode
    // spaces (whose UTF-8 bytes BuildKit's byte-wise scanners see as spaces) and a BOM.
    const PIECES: &[&str] = &[
        "\\",
        "`",
        "'",
        "\"",
        "<<",
        "<<-",
        "-",
        "--",
        "#",
        "=",
        "[",
        "]",
        "{",
        "$",
        "${",
        " ",
        "\t",
        "\r",
        "\n",
        "\r\n",
        "\u{b}",
        "\u{a0}",
        "\u{85}",
        "\u{2028}",
        "\u{5140}",
        "\u{feff}",
        "EOF",
        "3",
        "RUN ",
        "ONBUILD ",
        "# escape=`\n",
    ];
    for source in golden_dockerfiles() {
        for _ in 0..60 {
            let mut mutated = source.clone();
            for _ in 0..1 + rand() % 4 {
                let at = (rand() as usize) % (mutated.len() + 1);
                let piece: Vec<u8> = if rand() % 8 == 0 {
                    vec![rand() as u8]
                } else {
                    PIECES[(rand() as usize) % PIECES.len()].as_bytes().to_vec()
                };
                match rand() % 3 {
                    0 if at < mutated.len() => {
                        mutated.remove(at);
                    }
                    1 => {
                        let end = (at + 1 + (rand() as usize) % 8).min(mutated.len());
                        mutated.splice(at..end, piece);
                    }
                    _ => {
                        mutated.splice(at..at, piece);
                    }
                }
            }
            check_invariants(&mutated);
        }
    }
}
