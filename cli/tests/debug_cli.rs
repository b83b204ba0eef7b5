//! End-to-end tests of `rbuild debug ...` through the real binary.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rbuild(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild")).args(args).output().expect("run rbuild")
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 output")
}

#[test]
fn dump_ast_reproduces_every_buildkit_golden_file() {
    let dir = testdata().join("conformance/buildkit/parser/testfiles");
    let mut cases: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    cases.sort();
    assert_eq!(cases.len(), 33, "BuildKit ships 33 parser golden cases");
    for case in cases {
        let out = rbuild(&["debug", "dump-ast", "-f", case.join("Dockerfile").to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", case.display(), String::from_utf8_lossy(&out.stderr));
        let expected = fs::read(case.join("result")).unwrap();
        assert!(out.stdout == expected, "{}: dump differs from BuildKit's result", case.display());
    }
}

#[test]
fn dump_ast_negative_files_fail_with_a_spanned_error() {
    let dir = testdata().join("conformance/buildkit/parser/testfiles-negative");
    let mut n = 0;
    for case in fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()) {
        let out = rbuild(&["debug", "dump-ast", "-f", case.join("Dockerfile").to_str().unwrap()]);
        assert!(!out.status.success(), "{} should fail", case.display());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("Dockerfile:"), "{}: error has no line: {err}", case.display());
        let line = err["Dockerfile:".len()..].split(':').next().unwrap();
        assert!(line.parse::<usize>().is_ok(), "{}: error has no line number: {err}", case.display());
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn llb_converts_only_stages_reachable_from_target_with_stable_digests() {
    let df = testdata().join("llb/multistage-target/Dockerfile");
    let df = df.to_str().unwrap();
    let first = rbuild(&["debug", "llb", "-f", df, "--target", "build"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let json = stdout(&first);
    assert!(json.contains("go build -o /out/app"), "the target's RUN is converted");
    assert!(json.contains("go mod download"), "the stage it builds on is converted");
    assert!(!json.contains("go test"), "the unreachable test stage is not converted");
    assert!(!json.contains("never converted"), "the unreachable last stage is not converted");
    // Same input, same digests, run after run.
    assert_eq!(json, stdout(&rbuild(&["debug", "llb", "-f", df, "--target", "build"])));
    // A different build arg that no ARG uses changes nothing; the full build is a different DAG.
    let all = stdout(&rbuild(&["debug", "llb", "-f", df]));
    assert!(all.contains("never converted") && !all.contains("go test"));
}

#[test]
fn llb_dot_output_is_a_graph() {
    let df = testdata().join("llb/multistage-target/Dockerfile");
    let out = rbuild(&["debug", "llb", "-f", df.to_str().unwrap(), "--format", "dot"]);
    assert!(out.status.success());
    let dot = stdout(&out);
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("->"));
}

#[test]
fn llb_target_typo_gets_a_suggestion() {
    let df = testdata().join("llb/multistage-target/Dockerfile");
    let out = rbuild(&["debug", "llb", "-f", df.to_str().unwrap(), "--target", "buidl"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target stage \"buidl\" could not be found (did you mean build?)"), "{err}");
}

#[test]
fn llb_errors_point_at_the_dockerfile_line() {
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile");
    fs::write(&df, "FROM alpine\nRUNN echo hi\n").unwrap();
    let out = rbuild(&["debug", "llb", "-f", df.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("Dockerfile:2: unknown instruction: RUNN (did you mean RUN?)"), "{err}");
    assert!(err.contains(">>> RUNN echo hi"), "{err}");
}

#[test]
fn missing_dockerfile_is_a_clear_error() {
    let out = rbuild(&["debug", "dump-ast", "-f", "/nonexistent/Dockerfile"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read Dockerfile /nonexistent/Dockerfile"), "{err}");
}
