//! Archives and layouts checked with independent tools (skopeo, umoci) and loaded back.

mod common;

use common::*;
use registry::export::{self, ArchiveFormat};
use registry::Reference;

#[test]
fn save_load_round_trip_and_skopeo_reads_archives() {
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("s"));
    let desc = make_image(&store, "example.com/team/app:v3", &[(51, 3000), (52, 200)], true);
    let name = Reference::parse("example.com/team/app:v3").unwrap();
    for (format, file) in [(ArchiveFormat::Docker, "docker.tar"), (ArchiveFormat::Oci, "oci.tar")] {
        let path = dir.path().join(file);
        export::save(&store, &[(Some(name.clone()), desc.clone())], format, std::fs::File::create(&path).unwrap())
            .unwrap();
        let fresh = new_store(&dir.path().join(format!("load-{file}")));
        let loaded = export::load(&fresh, std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(loaded, vec![(name.to_string(), desc.clone())]);
        assert_eq!(fresh.get("example.com/team/app:v3").unwrap(), desc);
        let img = fresh.image(&desc, None).unwrap();
        assert_eq!(img.manifest.layers().len(), 2);
    }
    if !has_tool("skopeo") {
        testkit::skip("tool checks: skopeo missing; run scripts/registry-test-env");
        return;
    }
    let out = sh("skopeo inspect --raw docker-archive:docker.tar", dir.path());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["layers"].as_array().unwrap().len(), 2, "{out}");
    let out = sh("skopeo inspect --raw oci-archive:oci.tar:v3", dir.path());
    assert_eq!(snapshotter::digest::of_bytes(out.as_bytes()), *desc.digest());
    // skopeo copies the docker archive into an OCI layout: the config (image id) is unchanged.
    sh("skopeo copy --quiet docker-archive:docker.tar oci:copied:latest", dir.path());
    let cfg = sh("skopeo inspect --config oci:copied:latest", dir.path());
    let ours = store.image(&desc, None).unwrap().config;
    let theirs: llb::image::Image = serde_json::from_str(&cfg).unwrap();
    assert_eq!(theirs.rootfs.diff_ids, ours.rootfs.diff_ids);
}

#[test]
fn oci_layout_directory_passes_umoci() {
    if !has_tool("umoci") {
        testkit::skip("umoci missing; run scripts/registry-test-env");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("s"));
    let desc = make_image(&store, "app:v1", &[(61, 1000)], true);
    let layout = dir.path().join("layout");
    export::write_oci_dir(&store, &[(Some(Reference::parse("app:v1").unwrap()), desc.clone())], &layout).unwrap();
    let ls = sh("umoci ls --layout layout", dir.path());
    assert_eq!(ls.trim(), "v1");
    let stat = sh("umoci stat --json --image layout:v1", dir.path());
    let v: serde_json::Value = serde_json::from_str(&stat).unwrap();
    assert!(v["history"].as_array().is_some_and(|h| h.len() == 1), "{stat}");
    let raw = sh("skopeo inspect --raw oci:layout:v1", dir.path());
    assert_eq!(snapshotter::digest::of_bytes(raw.as_bytes()), *desc.digest());
}
