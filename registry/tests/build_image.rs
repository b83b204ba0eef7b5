//! The build's image path on real parts: `assemble_image` over real snapshots (snapshotter's `Store`
//! on a tempdir), checked with umoci and skopeo; pushed to a real docker-registry; `unpack_image` into
//! a fresh store (chainID snapshots with layer labels); a build on top reuses the base blob; a pinned
//! unpack needs no registry; SOURCE_DATE_EPOCH gives bit-for-bit equal images.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use registry::assemble::{assemble_image, AssembleOptions};
use registry::auth::Anonymous;
use registry::unpack::{chain_ids, resolve_base, resolve_config, unpack_image};
use registry::{Client, Config, ImageStore, Reference};
use snapshotter::diff::{Compression, Layer};
use snapshotter::snapshot::ApplyTarget;
use snapshotter::store::{SnapshotterKind, Store};
use snapshotter::LAYER_LABEL;

fn open(dir: &Path) -> (Store, ImageStore) {
    let s = Store::open(dir, SnapshotterKind::Auto, &mut |_| {}).unwrap();
    let images = ImageStore::new(s.content.clone(), s.meta.clone());
    (s, images)
}

fn target_dir(s: &Store, key: &str) -> PathBuf {
    match s.snapshotter.apply_target(key).unwrap() {
        ApplyTarget::Upper { upper, .. } => upper,
        ApplyTarget::Tree(p) => p,
    }
}

/// Commits a snapshot `name` on `parent` holding `files` (path, content).
fn commit_files(s: &Store, name: &str, parent: Option<&str>, files: &[(&str, &str)]) {
    let key = format!("{name}-active");
    s.snapshotter.prepare(&key, parent).unwrap();
    let dir = target_dir(s, &key);
    for (p, content) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    s.snapshotter.commit(name, &key).unwrap();
}

fn base_config() -> llb::image::Image {
    let mut img = llb::image::Image::scratch(&llb::Platform::host());
    img.config.cmd = Some(vec!["sh".into()]);
    img.push_history("COPY hello /", None, false);
    img.push_history("CMD [\"sh\"]", None, true);
    img
}

fn client() -> Client {
    Client::new(Config::default(), Arc::new(Anonymous))
}

#[test]
fn assembled_image_passes_umoci_and_skopeo_and_is_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let (s, images) = open(&dir.path().join("root"));
    commit_files(&s, "base", None, &[("hello", "hi\n"), ("etc/motd", "welcome\n")]);
    commit_files(&s, "top", Some("base"), &[("app/run", "echo run\n")]);
    let mut img = base_config();
    img.push_history("RUN make", None, false);
    let opts = AssembleOptions { source_date_epoch: Some(1_700_000_000), ..AssembleOptions::default() };
    let a = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &opts).unwrap();
    assert_eq!(a.layers.len(), 2);
    let config: llb::image::Image = serde_json::from_slice(&images.read_blob(a.config.digest()).unwrap()).unwrap();
    assert_eq!(config.rootfs.diff_ids.len(), 2);
    assert_eq!(config.created.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert!(config.history.iter().all(|h| h.created.as_deref() == Some("2023-11-14T22:13:20Z")), "{config:?}");
    // Assembling again reuses the memoised layers and gives the same manifest.
    let again = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &opts).unwrap();
    assert_eq!(again, a);

    // The same build in another state root, at another time: bit-for-bit the same image.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (s2, images2) = open(&dir.path().join("root2"));
    commit_files(&s2, "base", None, &[("hello", "hi\n"), ("etc/motd", "welcome\n")]);
    commit_files(&s2, "top", Some("base"), &[("app/run", "echo run\n")]);
    let b = assemble_image(&images2, &*s2.snapshotter, &s2.meta, Some("top"), &img, &opts).unwrap();
    assert_eq!(b.manifest.digest(), a.manifest.digest());

    // Independent tools accept it.
    let layout = dir.path().join("layout");
    let name = Reference::parse("rbuild-test/app:v1").unwrap();
    registry::export::write_oci_dir(&images, &[(Some(name), a.manifest.clone())], &layout).unwrap();
    if has_tool("skopeo") {
        let out = sh(&format!("skopeo inspect oci:{}:v1", layout.display()), dir.path());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["Digest"], a.manifest.digest().to_string());
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2);
    } else {
        testkit::skip("skopeo check: skopeo is not installed (scripts/install-test-deps)");
    }
    if has_tool("umoci") {
        sh(&format!("umoci unpack --rootless --image {}:v1 bundle", layout.display()), dir.path());
        let rootfs = dir.path().join("bundle/rootfs");
        assert_eq!(std::fs::read_to_string(rootfs.join("hello")).unwrap(), "hi\n");
        assert_eq!(std::fs::read_to_string(rootfs.join("app/run")).unwrap(), "echo run\n");
    } else {
        testkit::skip("umoci check: umoci is not installed (scripts/install-test-deps)");
    }
}

#[test]
fn docker_media_types_and_no_layers() {
    let dir = tempfile::tempdir().unwrap();
    let (s, images) = open(dir.path());
    let mut img = base_config();
    img.history.retain(|h| h.empty_layer);
    let opts = AssembleOptions { oci: false, compression: Compression::Zstd, ..AssembleOptions::default() };
    let a = assemble_image(&images, &*s.snapshotter, &s.meta, None, &img, &opts).unwrap();
    assert!(a.layers.is_empty());
    assert_eq!(a.manifest.media_type().to_string(), registry::manifest::media::DOCKER_MANIFEST);
    let raw = images.read_blob(a.manifest.digest()).unwrap();
    // BuildKit v0.24 writes manifests with json.MarshalIndent(.., "", "  ").
    assert!(String::from_utf8_lossy(&raw).starts_with("{\n  \"schemaVersion\": 2,\n  \"mediaType\""));
}

#[test]
fn push_unpack_rebuild_reuses_base_layers() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();

    // "Publish" a base image built from snapshots.
    let (s, images) = open(&dir.path().join("publisher"));
    commit_files(&s, "l1", None, &[("bin/tool", "#!/bin/sh\n"), ("etc/passwd", "root:x:0:0::/root:/bin/sh\n")]);
    commit_files(&s, "l2", Some("l1"), &[("etc/os-release", "ID=test\n")]);
    let mut img = base_config();
    img.push_history("RUN setup", None, false);
    let base =
        assemble_image(&images, &*s.snapshotter, &s.meta, Some("l2"), &img, &AssembleOptions::default()).unwrap();
    let base_ref = Reference::parse(&format!("{}/lib/base:1", reg.host())).unwrap();
    rt.block_on(client().push(&images, &base.manifest, &base_ref)).unwrap();
    drop(s);

    // A build machine resolves and unpacks it.
    let (b, bimages) = open(&dir.path().join("builder"));
    let c = client();
    let (pinned, config) =
        rt.block_on(resolve_config(&c, &bimages, &base_ref.to_string(), &llb::Platform::host(), false)).unwrap();
    assert_eq!(pinned, format!("{}@{}", base_ref.name(), base.manifest.digest()));
    assert_eq!(config.config.cmd, Some(vec!["sh".to_string()]));
    let seen = std::sync::Mutex::new(Vec::new());
    let status = |cur: u64, total: Option<u64>| seen.lock().unwrap().push((cur, total));
    let top = rt
        .block_on(unpack_image(&c, &bimages, &*b.snapshotter, &pinned, &llb::Platform::host(), false, &status))
        .unwrap()
        .expect("two layers");
    let diff_ids: Vec<_> = config.rootfs.diff_ids.iter().map(|d| d.to_string().parse().unwrap()).collect();
    let chain = chain_ids(&diff_ids);
    assert_eq!(top, chain[1].to_string());
    let info = b.snapshotter.stat(&top).unwrap();
    assert_eq!(info.parent.as_deref(), Some(chain[0].to_string().as_str()));
    let label: Layer = serde_json::from_str(&info.labels[LAYER_LABEL]).unwrap();
    assert_eq!(&label.digest, base.layers[1].digest());
    assert_eq!(label.diff_id, diff_ids[1]);
    let (cur, total) = *seen.lock().unwrap().last().expect("progress reported");
    assert_eq!(Some(cur), total);
    let out = dir.path().join("unpacked");
    snapshotter::export::export_dir(&*b.snapshotter, &top, &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("etc/os-release")).unwrap(), "ID=test\n");
    assert_eq!(std::fs::read_to_string(out.join("bin/tool")).unwrap(), "#!/bin/sh\n");

    // Without the registry, the pinned image unpacks again from what is local: no request at all.
    drop(reg);
    let again = rt
        .block_on(unpack_image(&c, &bimages, &*b.snapshotter, &pinned, &llb::Platform::host(), false, &|_, _| {}))
        .unwrap();
    assert_eq!(again.as_deref(), Some(top.as_str()));

    // A build on top: the base layers are exported as the very blobs pulled, the new one diffed.
    commit_files(&b, "app", Some(&top), &[("app/main", "print\n")]);
    let mut app = config.clone();
    app.push_history("COPY main /app/", None, false);
    let opts = AssembleOptions { base_history: config.history.clone(), ..AssembleOptions::default() };
    let built = assemble_image(&bimages, &*b.snapshotter, &b.meta, Some("app"), &app, &opts).unwrap();
    assert_eq!(built.layers.len(), 3);
    assert_eq!(built.layers[..2], base.layers[..]);
    let cfg: llb::image::Image = serde_json::from_slice(&bimages.read_blob(built.config.digest()).unwrap()).unwrap();
    assert_eq!(cfg.rootfs.diff_ids[..2], config.rootfs.diff_ids[..]);
    assert_eq!(cfg.history.len(), config.history.len() + 1);
}

#[test]
fn unpack_of_a_missing_image_names_it() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let (b, images) = open(dir.path());
    let r = format!("{}/nothing/here:1", reg.host());
    let err = runtime()
        .block_on(unpack_image(&client(), &images, &*b.snapshotter, &r, &llb::Platform::host(), false, &|_, _| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing/here"), "{err}");
}

/// `FROM debian:bookworm-slim` through a docker.io mirror: the seeded image (a real debootstrap
/// rootfs: setuid binaries, hardlinks, symlinked dirs) unpacks, and a build on it exports the base
/// layer as pulled plus a new one that umoci accepts.
#[test]
fn seeded_debian_through_the_docker_io_mirror() {
    let Some(bin) = registry_binary() else { return };
    let Some(seed) = seeded_storage() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts { seed: Some(seed), ..RegistryOpts::default() });
    let c = docker_io_mirror_client(&reg.host());
    let dir = tempfile::tempdir().unwrap();
    let (s, images) = open(dir.path());
    let rt = runtime();
    let platform = llb::Platform::host();
    let (pinned, base) = rt.block_on(resolve_config(&c, &images, "debian:bookworm-slim", &platform, false)).unwrap();
    assert!(pinned.starts_with("docker.io/library/debian@sha256:"), "{pinned}");
    assert_eq!(base.config.cmd, Some(vec!["bash".to_string()]));
    let top = rt
        .block_on(unpack_image(&c, &images, &*s.snapshotter, &pinned, &platform, false, &|_, _| {}))
        .unwrap()
        .expect("one layer");
    let out = dir.path().join("rootfs");
    snapshotter::export::export_dir(&*s.snapshotter, &top, &out).unwrap();
    assert!(out.join("bin/bash").exists() || out.join("usr/bin/bash").exists());
    let passwd = std::fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"), "{passwd}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("usr/bin/passwd")).unwrap().permissions().mode();
        assert_eq!(mode & 0o4000, 0o4000, "setuid bit of passwd kept: {mode:o}");
    }

    commit_files(&s, "app", Some(&top), &[("srv/index.html", "hello\n")]);
    let mut img = base.clone();
    img.push_history("COPY index.html /srv/", None, false);
    let opts = AssembleOptions { base_history: base.history.clone(), source_date_epoch: Some(0), ..Default::default() };
    let a = assemble_image(&images, &*s.snapshotter, &s.meta, Some("app"), &img, &opts).unwrap();
    assert_eq!(a.layers.len(), 2);
    let cfg: llb::image::Image = serde_json::from_slice(&images.read_blob(a.config.digest()).unwrap()).unwrap();
    // The base image's history keeps its times under an epoch; the new step is clamped.
    assert_eq!(cfg.history[0], base.history[0]);
    assert_eq!(cfg.history.last().unwrap().created.as_deref(), Some("1970-01-01T00:00:00Z"));
    if has_tool("umoci") {
        let layout = dir.path().join("layout");
        let name = Reference::parse("app:v1").unwrap();
        registry::export::write_oci_dir(&images, &[(Some(name), a.manifest.clone())], &layout).unwrap();
        sh(&format!("umoci unpack --image {}:v1 bundle", layout.display()), dir.path());
        assert_eq!(std::fs::read_to_string(dir.path().join("bundle/rootfs/srv/index.html")).unwrap(), "hello\n");
    } else {
        testkit::skip("umoci check: umoci is not installed (scripts/install-test-deps)");
    }
}

/// The local store keeps built layers uncompressed; `distributable` compresses them for a push, once per
/// layer, into exactly the image that assembling with compressed layers gives (manifest digest included),
/// and the config (the image ID) does not change. A corrupted uncompressed blob is refused, not pushed.
#[test]
fn uncompressed_image_converts_to_the_gzip_image_bit_for_bit() {
    use registry::compress::distributable;
    let dir = tempfile::tempdir().unwrap();
    let (s, images) = open(&dir.path().join("root"));
    commit_files(&s, "base", None, &[("hello", "hi\n")]);
    let big: String = (0..200_000).map(|i| format!("{i}\n")).collect();
    commit_files(&s, "top", Some("base"), &[("app/data", &big)]);
    let mut img = base_config();
    img.push_history("COPY . /app", None, false);
    for oci in [true, false] {
        let plain = AssembleOptions { compression: Compression::None, oci, ..AssembleOptions::default() };
        let gzip = AssembleOptions { compression: Compression::Gzip, oci, ..AssembleOptions::default() };
        let u = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &plain).unwrap();
        let want =
            if oci { "application/vnd.oci.image.layer.v1.tar" } else { "application/vnd.docker.image.rootfs.diff.tar" };
        assert!(u.layers.iter().all(|l| l.media_type().as_ref() == want), "{:?}", u.layers);
        let g = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &gzip).unwrap();
        let converted = distributable(&images, &u.manifest, Compression::Gzip).unwrap();
        assert_eq!(converted, g.manifest, "oci={oci}");
        assert_eq!(u.config, g.config, "the image ID must not change");
        // Again: nothing left to compress, the same answer; gzip stays gzip.
        assert_eq!(distributable(&images, &u.manifest, Compression::Gzip).unwrap(), g.manifest);
        assert_eq!(distributable(&images, &g.manifest, Compression::Gzip).unwrap(), g.manifest);
        assert_eq!(distributable(&images, &u.manifest, Compression::None).unwrap(), u.manifest);
    }

    // zstd: an OCI zstd layer whose diffID is the uncompressed blob.
    let plain = AssembleOptions { compression: Compression::None, ..AssembleOptions::default() };
    let u = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &plain).unwrap();
    let z = distributable(&images, &u.manifest, Compression::Zstd).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&images.read_blob(z.digest()).unwrap()).unwrap();
    let layers = m["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"), "{m}");
    let blob = images.read_blob(&layers[1]["digest"].as_str().unwrap().parse().unwrap()).unwrap();
    let tar = zstd::decode_all(&blob[..]).unwrap();
    assert_eq!(snapshotter::digest::of_bytes(&tar), *u.layers[1].digest());

    // A damaged uncompressed blob (same size, other bytes) is refused with the blob's name.
    commit_files(&s, "other", Some("base"), &[("app/other", &big[..100_000])]);
    let d = assemble_image(&images, &*s.snapshotter, &s.meta, Some("other"), &img, &plain).unwrap();
    let victim = d.layers[1].digest().clone();
    let path = s.content.blob_path(&victim).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[600] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = distributable(&images, &d.manifest, Compression::Gzip).unwrap_err().to_string();
    assert!(err.contains(&victim.to_string()) && err.contains("damaged"), "{err}");
}

/// With its registry unreachable, a tag the store resolved before stands in, and says why; a tag never
/// resolved, or `--pull`, fails with the connection's cause in the message.
#[test]
fn an_unreachable_registry_falls_back_to_the_last_resolution() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (s, images) = open(&dir.path().join("publisher"));
    commit_files(&s, "l1", None, &[("bin/tool", "#!/bin/sh\n")]);
    let base =
        assemble_image(&images, &*s.snapshotter, &s.meta, Some("l1"), &base_config(), &Default::default()).unwrap();
    let base_ref = Reference::parse(&format!("{}/lib/base:1", reg.host())).unwrap();
    rt.block_on(client().push(&images, &base.manifest, &base_ref)).unwrap();
    drop(s);

    let (_b, bimages) = open(&dir.path().join("builder"));
    let platform = llb::Platform::host();
    let online = rt.block_on(resolve_base(&client(), &bimages, &base_ref.to_string(), &platform, false)).unwrap();
    assert!(online.offline.is_none());
    assert_eq!(online.pinned, format!("{}@{}", base_ref.name(), base.manifest.digest()));
    drop(reg);

    let offline = rt.block_on(resolve_base(&client(), &bimages, &base_ref.to_string(), &platform, false)).unwrap();
    assert_eq!(offline.pinned, online.pinned);
    assert_eq!(offline.config.config.cmd, Some(vec!["sh".to_string()]));
    let why = offline.offline.expect("the registry's failure is reported");
    assert!(why.error.is_unreachable(), "{}", why.error);
    assert!(why.error.to_string().contains("Connection refused"), "the cause is named: {}", why.error);

    let pulled = rt.block_on(resolve_base(&client(), &bimages, &base_ref.to_string(), &platform, true)).unwrap_err();
    assert!(pulled.is_unreachable(), "{pulled}");
    let other = format!("{}/lib/other:1", base_ref.registry());
    let never = rt.block_on(resolve_base(&client(), &bimages, &other, &platform, false)).unwrap_err();
    assert!(never.to_string().contains("Connection refused"), "{never}");
}

/// An export of an image whose layers the store keeps uncompressed compresses them straight into the
/// archive: the image is the one assembling with zstd layers gives (manifest digest included), the archive
/// loads back with blobs that verify and decompress to the diffIDs, and the compressed blobs are not put
/// in the content store. A chain with a layer that would have to be diffed is not planned.
#[test]
fn uncompressed_layers_compress_straight_into_the_archive() {
    use registry::assemble::{assemble_chain, stored_chain, StoredLayer};
    use registry::export::{ArchiveFile, ArchiveFormat};
    let dir = tempfile::tempdir().unwrap();
    let (s, images) = open(&dir.path().join("root"));
    commit_files(&s, "base", None, &[("hello", "hi\n")]);
    let big: String = (0..300_000).map(|i| format!("{i}\n")).collect();
    commit_files(&s, "top", Some("base"), &[("app/data", &big), ("app/copy", &big)]);
    let mut img = base_config();
    img.push_history("COPY . /app", None, false);
    let plain = AssembleOptions { compression: Compression::None, ..AssembleOptions::default() };
    let zstd = AssembleOptions { compression: Compression::Zstd, ..AssembleOptions::default() };
    assert_eq!(stored_chain(&images, &*s.snapshotter, &s.meta, Some("top"), Compression::Zstd, None).unwrap(), None);
    let u = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &plain).unwrap();

    let chain = stored_chain(&images, &*s.snapshotter, &s.meta, Some("top"), Compression::Zstd, None).unwrap().unwrap();
    assert!(chain.iter().all(|l| matches!(l, StoredLayer::Uncompressed(_))), "{chain:?}");
    let path = dir.path().join("out.tar");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut archive = ArchiveFile::start(&mut f).unwrap();
    let mut layers = Vec::new();
    for l in chain {
        let StoredLayer::Uncompressed(mut c) = l else { unreachable!() };
        c.layer = archive.compress_layer(&images, &c.layer, Compression::Zstd).unwrap();
        assert_eq!(archive.compress_layer(&images, &u_layer(&u, layers.len()), Compression::Zstd).unwrap(), c.layer);
        layers.push(c);
    }
    let streamed = assemble_chain(&images, &layers, &img, &zstd).unwrap();
    let name = Reference::parse("example.com/app:v1").unwrap();
    archive.finish(&images, &[(Some(name.clone()), streamed.manifest.clone())], ArchiveFormat::Oci).unwrap();
    drop(f);
    for l in &streamed.layers {
        assert!(!images.has_blob(l.digest()).unwrap(), "{} was kept in the store", l.digest());
    }

    // Loaded into a fresh store: the same image, each zstd layer decompressing to its diffID.
    let (_fresh_store, fresh) = open(&dir.path().join("fresh"));
    let loaded = registry::export::load(&fresh, std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(loaded, vec![(name.to_string(), streamed.manifest.clone())]);
    for (z, p) in streamed.layers.iter().zip(&u.layers) {
        assert_eq!(z.media_type().as_ref(), "application/vnd.oci.image.layer.v1.tar+zstd");
        let blob = fresh.read_blob(z.digest()).unwrap();
        assert_eq!(snapshotter::digest::of_bytes(&blob), *z.digest());
        assert_eq!(snapshotter::digest::of_bytes(&zstd::decode_all(&blob[..]).unwrap()), *p.digest());
    }

    // The image that assembling with zstd gives (which keeps its layers in the store): bit for bit.
    let z = assemble_image(&images, &*s.snapshotter, &s.meta, Some("top"), &img, &zstd).unwrap();
    assert_eq!(z, streamed);
    let chain = stored_chain(&images, &*s.snapshotter, &s.meta, Some("top"), Compression::Zstd, None).unwrap().unwrap();
    assert!(chain.iter().all(|l| matches!(l, StoredLayer::Ready(_))), "{chain:?}");

    if !has_tool("skopeo") {
        testkit::skip("skopeo check: skopeo is not installed (scripts/install-test-deps)");
        return;
    }
    // skopeo reads the patched entries and checks every blob's digest as it copies.
    let raw = sh("skopeo inspect --raw oci-archive:out.tar:v1", dir.path());
    assert_eq!(snapshotter::digest::of_bytes(raw.as_bytes()), *streamed.manifest.digest());
    sh("skopeo copy --quiet oci-archive:out.tar:v1 oci:copied:v1", dir.path());
}

/// Layer `i` of `img` as the store keeps it.
fn u_layer(img: &registry::assemble::Assembled, i: usize) -> Layer {
    let d = &img.layers[i];
    Layer {
        digest: d.digest().clone(),
        size: d.size(),
        diff_id: d.digest().clone(),
        media_type: d.media_type().to_string(),
    }
}
