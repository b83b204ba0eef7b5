//! moby/patternmatcher's and ignorefile's test tables, run against the port in `solver::context::ignore`.

use solver::context::ignore::{self, go_match, read_all, PatternError, PatternMatcher};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Pass {
    Fail,
    Exact,
    Inexact,
}
use Pass::*;

fn cases() -> Vec<(&'static str, &'static str, Pass)> {
    vec![
        ("**", "file", Exact),
        ("**", "file/", Exact),
        ("**/", "file", Exact),
        ("**/", "file/", Exact),
        ("**", "/", Exact),
        ("**/", "/", Exact),
        ("**", "dir/file", Exact),
        ("**/", "dir/file", Exact),
        ("**", "dir/file/", Exact),
        ("**/", "dir/file/", Exact),
        ("**/**", "dir/file", Exact),
        ("**/**", "dir/file/", Exact),
        ("dir/**", "dir/file", Exact),
        ("dir/**", "dir/file/", Exact),
        ("dir/**", "dir/dir2/file", Exact),
        ("dir/**", "dir/dir2/file/", Exact),
        ("**/dir", "dir", Exact),
        ("**/dir", "dir/file", Inexact),
        ("**/dir2/*", "dir/dir2/file", Exact),
        ("**/dir2/*", "dir/dir2/file/", Inexact),
        ("**/dir2/**", "dir/dir2/dir3/file", Exact),
        ("**/dir2/**", "dir/dir2/dir3/file/", Exact),
        ("**file", "file", Exact),
        ("**file", "dir/file", Exact),
        ("**/file", "dir/file", Exact),
        ("**file", "dir/dir/file", Exact),
        ("**/file", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file", Exact),
        ("**/file*", "dir/dir/file.txt", Exact),
        ("**/file*txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt", "dir/dir/file.txt", Exact),
        ("**/file*.txt*", "dir/dir/file.txt", Exact),
        ("**/**/*.txt", "dir/dir/file.txt", Exact),
        ("**/**/*.txt2", "dir/dir/file.txt", Fail),
        ("**/*.txt", "file.txt", Exact),
        ("**/**/*.txt", "file.txt", Exact),
        ("a**/*.txt", "a/file.txt", Exact),
        ("a**/*.txt", "a/dir/file.txt", Exact),
        ("a**/*.txt", "a/dir/dir/file.txt", Exact),
        ("a/*.txt", "a/dir/file.txt", Fail),
        ("a/*.txt", "a/file.txt", Exact),
        ("a/*.txt**", "a/file.txt", Exact),
        ("a[b-d]e", "ae", Fail),
        ("a[b-d]e", "ace", Exact),
        ("a[b-d]e", "aae", Fail),
        ("a[^b-d]e", "aze", Exact),
        (".*", ".foo", Exact),
        (".*", "foo", Fail),
        ("abc.def", "abcdef", Fail),
        ("abc.def", "abc.def", Exact),
        ("abc.def", "abcZdef", Fail),
        ("abc?def", "abcZdef", Exact),
        ("abc?def", "abcdef", Fail),
        ("**/foo/bar", "foo/bar", Exact),
        ("**/foo/bar", "dir/foo/bar", Exact),
        ("**/foo/bar", "dir/dir2/foo/bar", Exact),
        ("abc/**", "abc", Fail),
        ("abc/**", "abc/def", Exact),
        ("abc/**", "abc/def/ghi", Exact),
        ("**/.foo", ".foo", Exact),
        ("**/.foo", "bar.foo", Fail),
        ("a(b)c/def", "a(b)c/def", Exact),
        ("a(b)c/def", "a(b)c/xyz", Fail),
        ("a.|)$(}+{bc", "a.|)$(}+{bc", Exact),
        (
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Exact,
        ),
        ("dist/*.whl", "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", Exact),
        ("a\\\\", "a\\", Exact),
        ("a\\*b", "a*b", Exact),
    ]
}

fn multi_cases() -> Vec<(Vec<&'static str>, &'static str, Pass)> {
    vec![
        (vec!["**", "!util/docker/web"], "util/docker/web/foo", Fail),
        (vec!["**", "!util/docker/web", "util/docker/web/foo"], "util/docker/web/foo", Exact),
        (
            vec!["**", "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            Fail,
        ),
        (vec!["**", "!dist/*.whl"], "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl", Fail),
    ]
}

/// Go's `filepath.Dir` split into components, as the reference tests walk parents.
fn parent_dirs(text: &str) -> Option<Vec<String>> {
    let parent = match text.rfind('/') {
        Some(i) => ignore::go_clean(&text[..i + 1]),
        None => return None,
    };
    if parent == "." {
        return None;
    }
    Some(parent.split('/').map(String::from).collect())
}

#[test]
fn matches_exact_table() {
    for (pattern, text, pass) in cases() {
        let pm = PatternMatcher::new(&[pattern]).unwrap();
        assert_eq!(pm.matches_exact(text).unwrap(), pass == Exact, "pattern={pattern:?} text={text:?}");
    }
}

#[test]
fn matches_or_parent_matches_table() {
    for (pattern, text, pass) in cases() {
        let pm = PatternMatcher::new(&[pattern]).unwrap();
        assert_eq!(pm.matches_or_parent_matches(text).unwrap(), pass != Fail, "pattern={pattern:?} text={text:?}");
    }
    for (patterns, text, pass) in multi_cases() {
        let pm = PatternMatcher::new(&patterns).unwrap();
        assert_eq!(pm.matches_or_parent_matches(text).unwrap(), pass != Fail, "patterns={patterns:?} text={text:?}");
    }
}

#[test]
fn matches_using_parent_results_table() {
    let check = |pm: &PatternMatcher, text: &str, pass: bool, desc: &str| {
        let mut info = ignore::MatchInfo::default();
        if let Some(dirs) = parent_dirs(text) {
            for i in 0..dirs.len() {
                info = pm.matches_using_parent_results(&dirs[..=i].join("/"), &info).unwrap().1;
            }
        }
        assert_eq!(pm.matches_using_parent_results(text, &info).unwrap().0, pass, "{desc}");
        // Without context it behaves as MatchesOrParentMatches.
        let none = ignore::MatchInfo::default();
        assert_eq!(pm.matches_using_parent_results(text, &none).unwrap().0, pass, "no context: {desc}");
    };
    for (pattern, text, pass) in cases() {
        let pm = PatternMatcher::new(&[pattern]).unwrap();
        check(&pm, text, pass != Fail, &format!("pattern={pattern:?} text={text:?}"));
    }
    for (patterns, text, pass) in multi_cases() {
        let pm = PatternMatcher::new(&patterns).unwrap();
        check(&pm, text, pass != Fail, &format!("patterns={patterns:?} text={text:?}"));
    }
}

#[test]
fn package_level_matches() {
    assert!(ignore::matches("fileutils.go", &["*"]).unwrap());
    assert!(ignore::matches("fileutils.go", &["*.go"]).unwrap());
    assert!(ignore::matches("fileutils.go", &["!fileutils.go", "*.go"]).unwrap());
    assert!(!ignore::matches("docs/README.md", &["docs", "!docs/README.md"]).unwrap());
    assert!(!ignore::matches("docs/README.md", &["docs/", "!docs/README.md"]).unwrap());
    assert!(!ignore::matches("docs/README.md", &["docs/*", "!docs/README.md"]).unwrap());
    assert!(!ignore::matches("fileutils.go", &["*.go", "!fileutils.go"]).unwrap());
    assert!(!ignore::matches(".", &["*.go"]).unwrap());
    assert_eq!(ignore::matches("fileutils.go", &["!"]), Err(PatternError::IllegalExclusion));
    assert!(!ignore::matches("/any/path/there", &[]).unwrap());
    assert!(matches!(ignore::matches("/any/path/there", &["["]), Err(PatternError::BadPattern(_))));
    assert!(!ignore::matches_or_parent_matches(".", &["**"]).unwrap());
}

#[test]
fn clean_patterns() {
    assert_eq!(PatternMatcher::new(&["docs", "config"]).unwrap().patterns().len(), 2);
    assert_eq!(PatternMatcher::new(&["docs", "config", ""]).unwrap().patterns().len(), 2);
    assert!(PatternMatcher::new(&["docs", "!docs/README.md"]).unwrap().exclusions());
    assert!(PatternMatcher::new(&["docs", "  !docs/README.md"]).unwrap().exclusions());
    assert!(PatternMatcher::new(&["docs", "!docs/README.md  "]).unwrap().exclusions());
    assert_eq!(PatternMatcher::new(&["!"]).unwrap_err(), PatternError::IllegalExclusion);
}

/// Go's filepath.Match table, through the package-level Matches as the reference runs it.
#[test]
fn filepath_match_table() {
    let bad = None;
    let table: Vec<(&str, &str, Option<bool>)> = vec![
        ("abc", "abc", Some(true)),
        ("*", "abc", Some(true)),
        ("*c", "abc", Some(true)),
        ("a*", "a", Some(true)),
        ("a*", "abc", Some(true)),
        ("a*", "ab/c", Some(true)),
        ("a*/b", "abc/b", Some(true)),
        ("a*/b", "a/c/b", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxe/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/f", Some(true)),
        ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", Some(false)),
        ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", Some(false)),
        ("a*b?c*x", "abxbbxdbxebxczzx", Some(true)),
        ("a*b?c*x", "abxbbxdbxebxczzy", Some(false)),
        ("ab[c]", "abc", Some(true)),
        ("ab[b-d]", "abc", Some(true)),
        ("ab[e-g]", "abc", Some(false)),
        ("ab[^c]", "abc", Some(false)),
        ("ab[^b-d]", "abc", Some(false)),
        ("ab[^e-g]", "abc", Some(true)),
        ("a\\*b", "a*b", Some(true)),
        ("a\\*b", "ab", Some(false)),
        ("a?b", "a☺b", Some(true)),
        ("a[^a]b", "a☺b", Some(true)),
        ("a???b", "a☺b", Some(false)),
        ("a[^a][^a][^a]b", "a☺b", Some(false)),
        ("[a-ζ]*", "α", Some(true)),
        ("*[a-ζ]", "A", Some(false)),
        ("a?b", "a/b", Some(false)),
        ("a*b", "a/b", Some(false)),
        ("[\\]a]", "]", Some(true)),
        ("[\\-]", "-", Some(true)),
        ("[x\\-]", "x", Some(true)),
        ("[x\\-]", "-", Some(true)),
        ("[x\\-]", "z", Some(false)),
        ("[\\-x]", "x", Some(true)),
        ("[\\-x]", "-", Some(true)),
        ("[\\-x]", "a", Some(false)),
        ("[]a]", "]", bad),
        ("[-]", "-", bad),
        ("[x-]", "x", bad),
        ("[x-]", "-", bad),
        ("[x-]", "z", bad),
        ("[-x]", "x", bad),
        ("[-x]", "-", bad),
        ("[-x]", "a", bad),
        ("\\", "a", bad),
        ("[a-b-c]", "a", bad),
        ("[", "a", bad),
        ("[^", "a", bad),
        ("[^bc", "a", bad),
        ("a[", "a", bad),
        ("a[", "ab", bad),
        ("*x", "xxx", Some(true)),
    ];
    for (pattern, s, want) in table {
        let got = ignore::matches(s, &[pattern]);
        match want {
            Some(w) => assert_eq!(got, Ok(w), "Match({pattern:?}, {s:?})"),
            None => assert!(matches!(got, Err(PatternError::BadPattern(_))), "Match({pattern:?}, {s:?}) = {got:?}"),
        }
        // Go's own filepath.Match agrees on every row but one, which matches through its parent `ab`.
        match want {
            Some(w) => {
                let w = w && (pattern, s) != ("a*", "ab/c");
                assert_eq!(go_match(pattern, s), Ok(w), "filepath.Match({pattern:?}, {s:?})")
            }
            None => assert!(go_match(pattern, s).is_err(), "filepath.Match({pattern:?}, {s:?})"),
        }
    }
}

/// moby/moby#52203: a pattern valid for filepath.Match but not as a regex fails on every match.
#[test]
fn malformed_regex_fails_every_time() {
    let pm = PatternMatcher::new(&["[Local-Only]/"]).unwrap();
    assert!(matches!(pm.matches_or_parent_matches("x"), Err(PatternError::BadPattern(_))));
    assert!(matches!(pm.matches_or_parent_matches("x"), Err(PatternError::BadPattern(_))));
}

#[test]
fn ignorefile_read_all() {
    assert!(read_all("").is_empty());
    let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
    assert_eq!(read_all(content), ["test1", "test2", "a/file/here", "lastfile", "!inverted/abs/path", "!", "!"]);
    // A BOM, CRLF line ends, cleaning, and an indented `#` that is a pattern rather than a comment.
    assert_eq!(read_all("\u{feff}a//b/../c\r\n  #x\r\n./d/\r\n/\n"), ["a/c", "#x", "d", "/"]);
    assert_eq!(solver::context::parse_dockerignore("# c\n*.log\n!keep.log\n"), ["*.log", "!keep.log"]);
}
