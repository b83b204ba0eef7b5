//! Push and pull against a real docker-registry on a free loopback port.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::*;
use registry::auth::Anonymous;
use registry::config::HostConfig;
use registry::{Client, ClientOptions, Config, ProgressKind, Reference, RetryPolicy};
use std::sync::atomic::Ordering;

fn anonymous_client(config: Config) -> Client {
    Client::new(config, Arc::new(Anonymous))
}

#[test]
fn push_pull_second_push_and_mount() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("a"));
    let desc = make_image(&store, "app:v1", &[(1, 100_000), (2, 3000), (3, 50)], false);
    let rt = runtime();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let client = anonymous_client(Config::default())
        .with_progress(Arc::new(move |p: &registry::Progress| ev.lock().unwrap().push(p.clone())));
    let dst = Reference::parse(&format!("{}/team/app:v1", reg.host())).unwrap();

    let first = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert_eq!(first.digest.as_ref(), Some(desc.digest()));
    assert_eq!(first.uploaded.len(), 4, "config and three layers: {first:?}");
    assert!(events.lock().unwrap().iter().any(|p| p.kind == ProgressKind::Done));

    // A second push sends nothing that is already there.
    let second = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert!(second.uploaded.is_empty() && second.mounted.is_empty(), "{second:?}");
    assert_eq!(second.existed.len(), 4);

    // Pull into a fresh store: same manifest digest, every blob fetched and verified.
    let store2 = new_store(&dir.path().join("b"));
    let pulled = rt.block_on(client.pull(&dst, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(&pulled.manifest.digest, desc.digest());
    assert_eq!(pulled.fetched.len(), 4);
    assert_eq!(pulled.config.config.cmd, Some(vec!["/bin/sh".to_string()]));
    // Pulling again fetches nothing.
    let again = rt.block_on(client.pull(&dst, &llb::Platform::host(), &store2)).unwrap();
    assert!(again.fetched.is_empty());

    // Push what was pulled to another repository: the registry mounts every blob.
    let other = Reference::parse(&format!("{}/other/copy:v2", reg.host())).unwrap();
    let pushed = rt.block_on(client.push(&store2, &pulled.manifest.descriptor(), &other)).unwrap();
    assert_eq!(pushed.mounted.len(), 4, "{pushed:?}");
    assert!(pushed.uploaded.is_empty());
    let back = rt.block_on(client.resolve(&other)).unwrap().1;
    assert_eq!(&back.digest, desc.digest());

    // skopeo agrees with what we pushed.
    if has_tool("skopeo") {
        let raw = sh(&format!("skopeo inspect --tls-verify=false --raw docker://{dst}"), dir.path());
        assert_eq!(snapshotter::digest::of_bytes(raw.as_bytes()), *desc.digest());
    } else {
        testkit::skip("skopeo check: skopeo is not installed (scripts/install-test-deps)");
    }
}

#[test]
fn chunked_upload_and_oci_media_types() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let desc = make_image(&store, "big", &[(7, 300_000)], true);
    let options = ClientOptions { monolithic_max: 1000, chunk_size: 64 * 1024, ..ClientOptions::default() };
    let client = Client::with_options(Config::default(), Arc::new(Anonymous), options);
    let rt = runtime();
    let dst = Reference::parse(&format!("{}/big:latest", reg.host())).unwrap();
    let r = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert_eq!(r.uploaded.len(), 2);
    let store2 = new_store(&dir.path().join("pulled"));
    let pulled = rt.block_on(client.pull(&dst, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(&pulled.manifest.digest, desc.digest());
    assert_eq!(pulled.manifest.media_type, registry::manifest::media::OCI_MANIFEST);
}

#[test]
fn missing_reference_names_it() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(dir.path());
    let client = anonymous_client(Config::default());
    let r = Reference::parse(&format!("{}/nothing/here:v9", reg.host())).unwrap();
    let err = runtime().block_on(client.pull(&r, &llb::Platform::host(), &store)).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("nothing/here:v9") && msg.contains(&reg.host()), "{msg}");
}

#[test]
fn docker_io_mirror_serves_busybox() {
    let Some(bin) = registry_binary() else { return };
    let mirror = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("seed"));
    let desc = make_image(&store, "busybox", &[(11, 2000)], false);
    let rt = runtime();
    let seed = Reference::parse(&format!("{}/library/busybox:latest", mirror.host())).unwrap();
    rt.block_on(anonymous_client(Config::default()).push(&store, &desc, &seed)).unwrap();

    let mut registry = BTreeMap::new();
    registry.insert("docker.io".to_string(), HostConfig { mirrors: vec![mirror.host()], ..HostConfig::default() });
    let client = anonymous_client(Config { registry });
    let store2 = new_store(&dir.path().join("pull"));
    let busybox = Reference::parse("busybox").unwrap();
    let pulled = rt.block_on(client.pull(&busybox, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(pulled.served_by, mirror.host());
    assert_eq!(&pulled.manifest.digest, desc.digest());
}

#[test]
fn push_and_pull_through_a_faulty_proxy() {
    let Some(bin) = registry_binary() else { return };
    let reg = TestRegistry::start(&bin, RegistryOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let store = new_store(&dir.path().join("a"));
    let desc = make_image(&store, "flaky", &[(21, 200_000), (22, 40_000), (23, 10), (24, 5000)], false);
    let rt = runtime();
    let proxy = rt.block_on(proxy::FaultProxy::start(reg.addr));
    let retry = RetryPolicy {
        attempts: 8,
        base_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(200),
    };
    // Small chunks so that PATCH requests meet faults too.
    let options = ClientOptions { retry, monolithic_max: 30_000, chunk_size: 32 * 1024, ..ClientOptions::default() };
    let client = Client::with_options(Config::default(), Arc::new(Anonymous), options);
    let dst = Reference::parse(&format!("{}/flaky/app:v1", proxy.addr)).unwrap();
    let report = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert_eq!(report.digest.as_ref(), Some(desc.digest()));
    let stats = &proxy.stats;
    let injected = stats.unavailable.load(Ordering::SeqCst)
        + stats.dropped.load(Ordering::SeqCst)
        + stats.lost_responses.load(Ordering::SeqCst);
    assert!(injected >= 5, "the proxy injected only {injected} faults");

    // What the registry holds is exactly what we pushed (checked without the proxy).
    let direct = Reference::parse(&format!("{}/flaky/app:v1", reg.host())).unwrap();
    let plain = anonymous_client(Config::default());
    assert_eq!(&rt.block_on(plain.resolve(&direct)).unwrap().1.digest, desc.digest());

    // A pull through the proxy verifies every blob; a second push uploads nothing.
    let store2 = new_store(&dir.path().join("b"));
    let pulled = rt.block_on(client.pull(&dst, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(pulled.fetched.len(), 5);
    let second = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert!(second.uploaded.is_empty(), "{second:?}");
}
