//! Pulling from a multi-platform index (issue 15): the store keeps the index and only the manifest, config
//! and layers of the platform a build used; another platform is fetched when it is asked for; a platform
//! the index lacks is an error naming the ones it has. Against the seeded `busybox` index (amd64, arm64,
//! 386: scripts/seed-images) in a real docker-registry, read independently with skopeo.

mod common;

use std::str::FromStr;

use common::*;
use oci_spec::image::Digest;
use registry::unpack::{resolve_config, unpack_image};
use registry::ImageStore;
use snapshotter::store::{SnapshotterKind, Store};

/// The digests of one platform's image as the registry has them: manifest, config, layers.
struct PlatformImage {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
}

impl PlatformImage {
    fn all(&self) -> Vec<&Digest> {
        let mut v = vec![&self.manifest, &self.config];
        v.extend(&self.layers);
        v
    }
}

fn skopeo_json(reference: &str) -> serde_json::Value {
    serde_json::from_slice(&skopeo_raw(reference)).unwrap()
}

fn digest(v: &serde_json::Value) -> Digest {
    Digest::from_str(v.as_str().unwrap()).unwrap()
}

#[test]
fn a_pull_stores_the_index_and_only_the_platform_it_used() {
    let Some(bin) = registry_binary() else { return };
    let Some(seed) = seeded_storage() else { return };
    if !cfg!(target_arch = "x86_64") {
        testkit::skip("scripts/seed-images makes the multi-platform busybox on amd64 hosts only");
        return;
    }
    if !seed.join("seeded-v3").is_file() {
        testkit::skip("the seeded registry has no multi-platform busybox: run scripts/seed-images (it adds it)");
        return;
    }
    if !has_tool("skopeo") {
        testkit::skip("skopeo is not installed: run scripts/install-test-deps");
        return;
    }
    let reg = TestRegistry::start(&bin, RegistryOpts { seed: Some(seed), ..RegistryOpts::default() });
    let repo = format!("{}/library/busybox", reg.host());

    // The registry's view, through skopeo.
    let index = skopeo_json(&format!("{repo}:latest"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    let image = |arch: &str| {
        let d = index["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == arch).unwrap();
        let manifest = digest(&d["digest"]);
        let m = skopeo_json(&format!("{repo}@{manifest}"));
        PlatformImage {
            manifest,
            config: digest(&m["config"]["digest"]),
            layers: m["layers"].as_array().unwrap().iter().map(|l| digest(&l["digest"])).collect(),
        }
    };
    let (amd64, arm64, i386) = (image("amd64"), image("arm64"), image("386"));

    let c = docker_io_mirror_client(&reg.host());
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), SnapshotterKind::Auto, &mut |_| {}).unwrap();
    let images = ImageStore::new(s.content.clone(), s.meta.clone());
    let rt = runtime();
    let has = |d: &Digest| images.has_blob(d).unwrap();

    let arm: llb::Platform = "linux/arm64".parse().unwrap();
    let (pinned, cfg) = rt.block_on(resolve_config(&c, &images, "busybox", &arm, false)).unwrap();
    assert_eq!(cfg.architecture, "arm64");
    rt.block_on(unpack_image(&c, &images, &*s.snapshotter, &pinned, &arm, false, &|_, _| {})).unwrap();
    let index_digest = Digest::from_str(pinned.rsplit_once('@').unwrap().1).unwrap();
    assert!(has(&index_digest), "the index is stored ({pinned})");
    for d in arm64.all() {
        assert!(has(d), "arm64 blob {d} is stored");
    }
    for d in amd64.all().into_iter().chain(i386.all()) {
        assert!(!has(d), "blob {d} of a platform the build did not use was stored");
    }

    // A platform the index lacks: the error names the ones it has, and nothing more is stored.
    let s390x: llb::Platform = "linux/s390x".parse().unwrap();
    let err = rt.block_on(resolve_config(&c, &images, "busybox", &s390x, false)).unwrap_err().to_string();
    assert!(err.contains("no manifest for platform linux/s390x"), "{err}");
    assert!(err.contains("(it has: linux/amd64, linux/arm64, linux/386)"), "{err}");

    // Asking for amd64 next fetches its image, still not 386's.
    let amd: llb::Platform = "linux/amd64".parse().unwrap();
    let (pinned_amd, _) = rt.block_on(resolve_config(&c, &images, "busybox", &amd, false)).unwrap();
    assert_eq!(pinned_amd, pinned, "one index for both platforms");
    rt.block_on(unpack_image(&c, &images, &*s.snapshotter, &pinned_amd, &amd, false, &|_, _| {})).unwrap();
    for d in amd64.all() {
        assert!(has(d), "amd64 blob {d} is stored");
    }
    for d in i386.all() {
        assert!(!has(d), "386 blob {d} was stored");
    }
}
