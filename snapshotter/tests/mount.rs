//! The mount module: both overlay APIs, and the legacy option-string limit reported clearly.

mod common;

use std::fs;

use snapshotter::mount::{mount_all_with, unmount_all, Mount, MountError, OverlayApi};
use snapshotter::snapshot::{OverlaySnapshotter, Snapshotter};

#[test]
fn legacy_and_new_api_mount_the_same_view() {
    if !common::can_overlay("legacy_and_new_api_mount_the_same_view") {
        return;
    }
    let env = common::env();
    let s = OverlaySnapshotter::new(&env.root, env.meta.clone()).unwrap();
    let mut parent: Option<String> = None;
    for i in 0..3 {
        let key = format!("a{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        fs::write(s.data_dir(&key).unwrap().join(format!("f{i}")), i.to_string()).unwrap();
        let name = format!("l{i}");
        s.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let mounts = s.view("v", Some("l2")).unwrap();
    assert_eq!(mounts[0].kind, "overlay");
    assert!(mounts[0].options.iter().any(|o| o == "redirect_dir=off"));
    assert!(mounts[0].options.iter().any(|o| o == "metacopy=off"));
    for api in [OverlayApi::Auto, OverlayApi::Legacy] {
        let target = tempfile::tempdir_in(env.root.tmp_dir()).unwrap();
        mount_all_with(&mounts, target.path(), api).unwrap();
        let mut names: Vec<String> = fs::read_dir(target.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        unmount_all(target.path()).unwrap();
        assert_eq!(names, ["f0", "f1", "f2"], "{api:?}");
    }
}

#[test]
fn legacy_options_past_a_page_are_refused_with_advice() {
    let lowers: Vec<String> = (0..200).map(|i| format!("/var/lib/rbuild/snapshots/overlay/{i}/fs")).collect();
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options: vec![format!("lowerdir={}", lowers.join(":")), "ro".into()],
    };
    let target = tempfile::tempdir().unwrap();
    let err = mount_all_with(&[m], target.path(), OverlayApi::Legacy).unwrap_err();
    assert!(matches!(err, MountError::TooLong { .. }), "{err}");
    assert!(err.to_string().contains("lowerdir+"), "{err}");
}

#[test]
fn unknown_mount_type_is_an_error() {
    let m = Mount { kind: "nfs".into(), source: "x".into(), options: vec![] };
    let target = tempfile::tempdir().unwrap();
    assert!(matches!(mount_all_with(&[m], target.path(), OverlayApi::Auto), Err(MountError::Unsupported(_))));
}

/// An active snapshot's writable overlay is volatile (no sync on unmount), and mounts again after an
/// unmount (overlay's marker against remounting a volatile upper is cleared by its owner), with both APIs;
/// what was written survives into the commit.
#[test]
fn active_overlay_is_volatile_and_mounts_again() {
    if !common::can_overlay("active_overlay_is_volatile_and_mounts_again") {
        return;
    }
    let env = common::env();
    let s = OverlaySnapshotter::new(&env.root, env.meta.clone()).unwrap();
    s.prepare("base-a", None).unwrap();
    fs::write(s.data_dir("base-a").unwrap().join("base"), "b").unwrap();
    s.commit("base", "base-a").unwrap();
    let mounts = s.prepare("top-a", Some("base")).unwrap();
    assert!(mounts[0].options.iter().any(|o| o == "volatile"), "{mounts:?}");
    for (i, api) in [OverlayApi::Auto, OverlayApi::Legacy, OverlayApi::Auto].into_iter().enumerate() {
        let target = tempfile::tempdir_in(env.root.tmp_dir()).unwrap();
        mount_all_with(&mounts, target.path(), api).unwrap_or_else(|e| panic!("mount {i} ({api:?}): {e}"));
        fs::write(target.path().join(format!("w{i}")), "x").unwrap();
        assert!(target.path().join("base").exists());
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info.lines().find(|l| l.contains(&target.path().display().to_string())).unwrap().to_string();
        unmount_all(target.path()).unwrap();
        assert!(line.contains("volatile"), "kernel ≥ 5.10 keeps the option: {line}");
    }
    s.commit("top", "top-a").unwrap();
    let view = s.view("v", Some("top")).unwrap();
    let target = tempfile::tempdir_in(env.root.tmp_dir()).unwrap();
    mount_all_with(&view, target.path(), OverlayApi::Auto).unwrap();
    let mut names: Vec<String> =
        fs::read_dir(target.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    unmount_all(target.path()).unwrap();
    assert_eq!(names, ["base", "w0", "w1", "w2"]);
}
