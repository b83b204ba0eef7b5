//! `rbuild du` and `rbuild prune` through the real binary, on a fresh state root.

use std::process::{Command, Output};

fn rbuild(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rbuild")).arg("--root").arg(root).args(args).output().expect("run rbuild")
}

#[test]
fn du_reports_every_kind_on_a_fresh_root() {
    let dir = tempfile::tempdir().unwrap();
    let out = rbuild(dir.path(), &["du"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for kind in ["Layers", "Snapshots", "Cache mounts", "Blobs", "Total"] {
        assert!(text.contains(kind), "{kind} missing from:\n{text}");
    }
}

#[test]
fn prune_on_a_fresh_root_frees_nothing_and_bad_flags_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = rbuild(dir.path(), &["prune", "--all", "--keep-storage", "1g", "--filter", "until=24h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Total reclaimed space: 0B"));

    let bad = rbuild(dir.path(), &["prune", "--filter", "label=x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unsupported --filter"));
    let bad = rbuild(dir.path(), &["prune", "--keep-storage", "lots"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--keep-storage"));
}
