//! Every flag of `docker buildx build`'s reference (`testdata/buildx/buildx_build-options.md`, its options
//! table verbatim, and `hidden-flags.txt`, the flags buildx hides) runs through `rbuild build` with the
//! value a CI script would give it (`flag-values.txt`): none is rejected, and a flag rbuild does not apply
//! says so in one `WARNING:` line. The builds run with `--call=check` (added last; the flags under test
//! come first), so they need no registry and no root.

mod support;

use std::path::{Path, PathBuf};

use support::Rbuild;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/buildx")
}

/// The long and short names in the reference's table (`| [`--add-host`](#add-host) |`, `` `-D`, `--debug` ``).
fn reference_flags() -> Vec<String> {
    let table = std::fs::read_to_string(testdata().join("buildx_build-options.md")).unwrap();
    let mut out = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| Name")) {
        let name_cell = row.split('|').nth(1).unwrap();
        for part in name_cell.split('`').skip(1).step_by(2) {
            out.push(part.to_string());
        }
    }
    let hidden = std::fs::read_to_string(testdata().join("hidden-flags.txt")).unwrap();
    for line in hidden.lines().filter(|l| l.starts_with('-')) {
        out.extend(line.split(", ").map(str::to_string));
    }
    out
}

fn values() -> Vec<(String, Option<String>)> {
    let text = std::fs::read_to_string(testdata().join("flag-values.txt")).unwrap();
    text.lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| match l.split_once(' ') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (l.to_string(), None),
        })
        .collect()
}

#[test]
fn every_buildx_flag_is_accepted() {
    let flags = reference_flags();
    assert!(flags.len() >= 45, "the reference table did not parse: {flags:?}");
    let values = values();
    for f in &flags {
        assert!(values.iter().any(|(v, _)| v == f), "{f} (in the buildx reference) has no line in flag-values.txt");
    }

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("Dockerfile"), "FROM scratch AS base\nCOPY Dockerfile /\n").unwrap();
    std::fs::create_dir(d.join("extra")).unwrap();
    std::fs::write(d.join("secret"), "s3cret").unwrap();
    std::fs::write(d.join("config.toml"), "").unwrap();
    // An agent socket for --ssh (nothing connects: the checks run no step).
    let _agent = std::os::unix::net::UnixListener::bind(d.join("agent.sock")).unwrap();
    let rb = Rbuild::with_config(&d.join("config.toml"));
    let fill = |v: &str| {
        v.replace("{dir}", &d.display().to_string())
            .replace("{secret}", &d.join("secret").display().to_string())
            .replace("{socket}", &d.join("agent.sock").display().to_string())
    };
    let mut failures = Vec::new();
    for (flag, value) in &values {
        let mut args = vec!["build".to_string(), flag.clone()];
        args.extend(value.as_deref().map(fill));
        // --push needs a name before anything runs; --call=check keeps every run to the checks.
        args.extend(["-t".into(), "registry.test/app:ci".into(), "--call=check".into(), d.display().to_string()]);
        if flag == "--call" || flag == "--print" {
            args.truncate(args.len() - 2);
            args.push(d.display().to_string());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rb.run(&argv);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("Check complete, no warnings found.") {
            failures.push(format!("rbuild {}: {}\n{stdout}{stderr}", argv.join(" "), out.status));
        }
    }
    assert!(failures.is_empty(), "{} flags failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn unapplied_flags_say_what_rbuild_does_instead() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /\n").unwrap();
    std::fs::write(d.join("config.toml"), "").unwrap();
    let rb = Rbuild::with_config(&d.join("config.toml"));
    let out = rb.run(&["build", "--builder", "ci", "--isolation", "hyperv", "--check", &d.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let notes: Vec<&str> = stderr.lines().filter(|l| l.starts_with("WARNING: ")).collect();
    assert_eq!(notes.len(), 2, "{stderr}");
    assert!(notes[0].starts_with("WARNING: --builder ci: no [builders.ci] in "), "{stderr}");
    assert!(notes[0].contains("this build runs on this machine"), "{stderr}");
    assert!(notes[1].starts_with("WARNING: --isolation hyperv: "), "{stderr}");
    // `--isolation default` is what rbuild does: nothing to say.
    let out = rb.run(&["build", "--isolation", "default", "--check", &d.display().to_string()]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("WARNING"));
}
