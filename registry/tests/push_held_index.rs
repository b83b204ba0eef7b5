//! Pushing an index the store holds in part (issue 15): a build keeps the seeded `busybox` index and only
//! the platform it used (amd64 here), so a push of that index to another repository sends an index of the
//! held platform and reports the others as left out, while a push to the repository that has every
//! platform sends the index unchanged. Read back with skopeo from a real docker-registry.

mod common;

use std::str::FromStr;

use common::*;
use oci_spec::image::{Descriptor, Digest, MediaType};
use registry::manifest::media;
use registry::unpack::{resolve_config, unpack_image};
use registry::{ImageStore, Reference};
use snapshotter::store::{SnapshotterKind, Store};

fn architectures(raw: &[u8]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
    v["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap().into()).collect()
}

#[test]
fn a_partly_held_index_pushes_what_is_held() {
    let Some(bin) = registry_binary() else { return };
    let Some(seed) = seeded_storage() else { return };
    if !seed.join("seeded-v3").is_file() {
        testkit::skip("the seeded registry has no multi-platform busybox: run scripts/seed-images --force");
        return;
    }
    if !has_tool("skopeo") {
        testkit::skip("skopeo is not installed: run scripts/install-test-deps");
        return;
    }
    let reg = TestRegistry::start(&bin, RegistryOpts { seed: Some(seed), ..RegistryOpts::default() });
    let original = skopeo_raw(&format!("{}/library/busybox:latest", reg.host()));
    assert_eq!(architectures(&original), ["amd64", "arm64", "386"]);

    let c = docker_io_mirror_client(&reg.host());
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), SnapshotterKind::Auto, &mut |_| {}).unwrap();
    let images = ImageStore::new(s.content.clone(), s.meta.clone());
    let rt = runtime();
    let amd: llb::Platform = "linux/amd64".parse().unwrap();
    let (pinned, _) = rt.block_on(resolve_config(&c, &images, "busybox", &amd, false)).unwrap();
    rt.block_on(unpack_image(&c, &images, &*s.snapshotter, &pinned, &amd, false, &|_, _| {})).unwrap();
    let digest = Digest::from_str(pinned.rsplit_once('@').unwrap().1).unwrap();
    let index = Descriptor::new(MediaType::from(media::OCI_INDEX), original.len() as u64, digest.clone());

    // Another repository has none of the other platforms: they are left out, and said to be.
    let other = Reference::parse(&format!("{}/test/held:1", reg.host())).unwrap();
    let report = rt.block_on(c.push(&images, &index, &other)).unwrap();
    assert_eq!(report.left_out, ["linux/arm64", "linux/386"]);
    let pushed = skopeo_raw(&other.to_string());
    assert_eq!(architectures(&pushed), ["amd64"]);
    assert_ne!(report.digest.as_ref(), Some(&digest), "a new index, of what is held");

    // The repository it came from has them all: the index goes as it was pulled.
    let same = Reference::parse(&format!("{}/library/busybox:again", reg.host())).unwrap();
    let report = rt.block_on(c.push(&images, &index, &same)).unwrap();
    assert!(report.left_out.is_empty(), "{:?}", report.left_out);
    assert_eq!(report.digest, Some(digest));
    assert_eq!(skopeo_raw(&same.to_string()), original);
}
