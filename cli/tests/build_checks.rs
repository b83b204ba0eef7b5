//! Build checks through the CLI: `--check` prints BuildKit's lint result and exits 1 on a violation and 0
//! on a clean Dockerfile, `# check=skip=` silences a rule, `# check=error=true` fails a build, a build lists
//! its warnings the way buildx does, and in a GitHub Actions job each warning is a `::warning` annotation.

mod support;

use std::path::Path;

use support::Rbuild;

fn project(dockerfile: &str) -> (tempfile::TempDir, Rbuild) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let rb = Rbuild::with_config(&dir.path().join("config.toml"));
    (dir, rb)
}

fn path(d: &Path) -> String {
    d.display().to_string()
}

#[test]
fn check_exits_one_on_a_violation_and_zero_when_clean() {
    let (dir, rb) = project("FROM scratch as base\nCOPY Dockerfile /\n");
    let out = rb.run(&["build", "--check", &path(dir.path())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout,
        "Check complete, 1 warning has been found!\n\nWARNING: FromAsCasing - https://docs.docker.com/go/dockerfile/rule/from-as-casing/\n'as' and 'FROM' keywords' casing do not match\nDockerfile:1\n--------------------\n   1 | >>> FROM scratch as base\n   2 |     COPY Dockerfile /\n   3 |     \n--------------------\n"
    );

    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch AS base\nCOPY Dockerfile /\n").unwrap();
    let out = rb.run(&["build", "--call=check", &path(dir.path())]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Check complete, no warnings found.\n");

    // The directive silences the rule.
    std::fs::write(
        dir.path().join("Dockerfile"),
        "# check=skip=FromAsCasing\nFROM scratch as base\nCOPY Dockerfile /\n",
    )
    .unwrap();
    let out = rb.run(&["build", "--check", &path(dir.path())]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    // JSON, as `--call=check,format=json` gives it.
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\nMAINTAINER me\n").unwrap();
    let out = rb.run(&["build", "--call=check,format=json", &path(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"][0]["ruleName"], "MaintainerDeprecated");
    assert_eq!(v["warnings"][0]["location"]["ranges"][0]["start"]["line"], 2);
}

#[test]
fn github_actions_gets_annotations() {
    let (dir, rb) = project("FROM scratch\nCMD run\n");
    let summary = dir.path().join("summary.md");
    let out = rb
        .command()
        .args(["build", "--check", &path(dir.path())])
        .current_dir(dir.path())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_WORKSPACE", dir.path())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("::warning file=Dockerfile,line=2,title=JSONArgsRecommended::JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"),
        "{stderr}"
    );
}

#[test]
fn a_build_lists_its_warnings_and_error_true_fails_it() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map(|m| m.uid() != 0).unwrap_or(true) {
        support::skip("builds need root (overlay mounts)");
        return;
    }
    let (dir, rb) = project("FROM scratch as base\nCOPY Dockerfile /\n");
    let dest = dir.path().join("out");
    let out =
        rb.run(&["build", "--progress=plain", "-o", &format!("type=local,dest={}", dest.display()), &path(dir.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.ends_with(
            "\n 1 warning found:\n - FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)\n"
        ),
        "{stderr}"
    );
    assert!(dest.join("Dockerfile").exists());

    std::fs::write(dir.path().join("Dockerfile"), "# check=error=true\nFROM scratch as base\nCOPY Dockerfile /\n")
        .unwrap();
    let out =
        rb.run(&["build", "--progress=plain", "-o", &format!("type=local,dest={}", dest.display()), &path(dir.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("lint violation found for rules: FromAsCasing"), "{stderr}");
}
