//! `du` and `prune`: usage by kind, roots (images, leases, keep labels), LRU order, an enforced limit.

mod common;

use std::time::Duration;

use snapshotter::content::{write_blob, InfoProvider, LocalStore};
use snapshotter::gc::{Collector, PruneOptions, KEEP_LABEL, LAST_USED_LABEL};
use snapshotter::meta::ImageRecord;
use snapshotter::snapshot::{ApplyTarget, Kind, NativeSnapshotter, Snapshotter};

/// Commits a snapshot holding `size` bytes, last used at `used`.
fn snap(s: &NativeSnapshotter, name: &str, parent: Option<&str>, size: usize, used: u64) {
    let key = format!("{name}-a");
    s.prepare(&key, parent).unwrap();
    let ApplyTarget::Tree(dir) = s.apply_target(&key).unwrap() else { panic!("native applies into trees") };
    std::fs::write(dir.join(format!("{name}.bin")), vec![1u8; size]).unwrap();
    s.commit(name, &key).unwrap();
    s.set_label(name, LAST_USED_LABEL, Some(&used.to_string())).unwrap();
}

struct Fixture {
    env: common::Env,
    s: NativeSnapshotter,
    content: LocalStore,
}

fn fixture() -> Fixture {
    let env = common::env();
    let s = NativeSnapshotter::new(&env.root, env.meta.clone()).unwrap();
    let content = LocalStore::open(env.root.content_dir()).unwrap();
    Fixture { env, s, content }
}

impl Fixture {
    fn collector(&self) -> Collector<'_, NativeSnapshotter> {
        Collector { snapshotter: &self.s, content: &self.content, meta: &self.env.meta, cache_mounts: None }
    }

    fn blob(&self, data: &[u8], used: u64) -> snapshotter::Digest {
        let d = write_blob(&self.content, &format!("{}", data.len()), data, None, None).unwrap();
        let mut rec = snapshotter::meta::BlobRecord { size: data.len() as u64, last_used: used, ..Default::default() };
        rec.media_type = None;
        self.env.meta.put(snapshotter::meta::BLOBS, d.as_ref(), &rec).unwrap();
        d
    }

    fn names(&self) -> Vec<String> {
        self.s.walk().unwrap().into_iter().map(|i| i.name).collect()
    }
}

#[test]
fn du_reports_by_kind() {
    let f = fixture();
    snap(&f.s, "a", None, 100_000, 10);
    f.s.prepare("work", Some("a")).unwrap();
    f.blob(&[7u8; 30_000], 5);
    let u = f.collector().usage().unwrap();
    assert_eq!(u.layers.count, 1);
    assert!(u.layers.size >= 100_000, "{u:?}");
    assert_eq!(u.snapshots.count, 1);
    assert!(u.snapshots.size >= 100_000, "a native child holds a full copy: {u:?}");
    assert_eq!(u.blobs.count, 1);
    assert_eq!(u.blobs.size, 30_000);
    assert_eq!(u.blobs.reclaimable, 30_000);
    assert_eq!(u.total(), u.layers.size + u.snapshots.size + u.blobs.size);
}

#[test]
fn keep_storage_is_enforced_lru_first() {
    let f = fixture();
    for i in 0..6u64 {
        snap(&f.s, &format!("s{i}"), None, 200_000, 100 + i);
    }
    let old_blob = f.blob(&[1u8; 150_000], 50);
    let new_blob = f.blob(&[2u8; 150_000], 1000);
    let before = f.collector().usage().unwrap().total();
    let limit = before - 500_000;
    let r = f.collector().prune(PruneOptions { keep_storage: Some(limit), ..Default::default() }).unwrap();
    let after = f.collector().usage().unwrap().total();
    assert!(after <= limit, "after {after} > limit {limit}: {r:?}");
    assert_eq!(r.remaining, after);
    // Oldest first: the old blob, then s0, s1, ...; the newest survive.
    assert_eq!(r.blobs, vec![old_blob]);
    assert_eq!(r.snapshots[0], "s0");
    assert!(f.names().contains(&"s5".to_string()));
    assert!(f.content.info(&new_blob).is_ok());
    // It stopped as soon as the limit was met: one item fewer would be over.
    let last = r.snapshots.len();
    assert!(last >= 1 && after + 200_000 > limit, "{r:?}");
}

#[test]
fn roots_survive_and_children_go_first() {
    let f = fixture();
    snap(&f.s, "base", None, 50_000, 1);
    snap(&f.s, "child", Some("base"), 50_000, 2);
    snap(&f.s, "kept", None, 50_000, 0);
    f.s.set_label("kept", KEEP_LABEL, Some("image layer")).unwrap();
    snap(&f.s, "leased", None, 50_000, 0);
    f.env.meta.add_to_lease("build-1", Some("leased"), None).unwrap();
    // An image: index -> manifest -> config + layer.
    let layer = f.blob(b"layer bytes", 0);
    let config = f.blob(br#"{"architecture":"amd64"}"#, 0);
    let manifest = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{config}","size":1}},"layers":[{{"digest":"{layer}","size":1}}]}}"#
    );
    let manifest = f.blob(manifest.as_bytes(), 0);
    let index = format!(r#"{{"schemaVersion":2,"manifests":[{{"digest":"{manifest}","size":1}}]}}"#);
    let index = f.blob(index.as_bytes(), 0);
    let img = ImageRecord {
        digest: index.to_string(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        size: 1,
        created_at: 0,
    };
    f.env.meta.set_image("app:latest", &img).unwrap();
    let stray = f.blob(b"unreferenced", 0);

    let r = f.collector().prune(PruneOptions::default()).unwrap();
    assert_eq!(r.snapshots, ["child", "base"]);
    assert_eq!(r.blobs, vec![stray]);
    assert_eq!(f.names(), ["kept", "leased"]);
    for d in [&layer, &config, &manifest, &index] {
        assert!(f.content.info(d).is_ok());
    }
    let r = f.collector().prune(PruneOptions { all: true, ..Default::default() }).unwrap();
    assert_eq!(r.snapshots, ["kept"]);
    assert_eq!(f.names(), ["leased"]);
    assert_eq!(f.s.stat("leased").unwrap().kind, Kind::Committed);
}

#[test]
fn until_filter_keeps_recent_items() {
    let f = fixture();
    let now = snapshotter::meta::now();
    snap(&f.s, "old", None, 10_000, now - 3 * 86_400);
    snap(&f.s, "fresh", None, 10_000, now - 3 * 86_400);
    snapshotter::gc::touch(&f.s, "fresh").unwrap();
    let r =
        f.collector().prune(PruneOptions { until: Some(Duration::from_secs(86_400)), ..Default::default() }).unwrap();
    assert_eq!(r.snapshots, ["old"]);
    assert_eq!(f.names(), ["fresh"]);
}

#[test]
fn store_opens_everything_and_picks_a_snapshotter() {
    use snapshotter::store::{SnapshotterKind, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), SnapshotterKind::Auto, &mut |w| panic!("{w}")).unwrap();
    let overlay = snapshotter::store::overlay_works(&store.root.tmp_dir());
    let want = if overlay { SnapshotterKind::Overlay } else { SnapshotterKind::Native };
    assert_eq!(store.kind, want);
    store.snapshotter.prepare("a", None).unwrap();
    store.snapshotter.commit("A", "a").unwrap();
    let u = store.collector().usage().unwrap();
    assert_eq!(u.layers.count, 1);
    let r = store.collector().prune(PruneOptions { all: true, ..Default::default() }).unwrap();
    assert_eq!(r.snapshots, ["A"]);
}

#[test]
fn partial_downloads_are_counted_and_only_abandoned_ones_pruned() {
    use snapshotter::content::Ingester;
    use std::io::Write;
    let f = fixture();
    // A download in progress (its writer alive, holding the ingest lock) and one whose writer went away,
    // as a killed pull's does.
    let mut live = f.content.writer("live", None).unwrap();
    live.write_all(&[1u8; 50_000]).unwrap();
    live.flush().unwrap();
    let mut gone = f.content.writer("gone", None).unwrap();
    gone.write_all(&[2u8; 70_000]).unwrap();
    gone.flush().unwrap();
    drop(gone);
    let u = f.collector().usage().unwrap();
    assert_eq!(u.ingests.count, 2, "{u:?}");
    assert!(u.ingests.size >= 120_000, "{u:?}");
    assert!(u.ingests.reclaimable >= 70_000 && u.ingests.reclaimable < 120_000, "{u:?}");
    assert_eq!(u.total(), u.ingests.size, "{u:?}");

    let r = f.collector().prune(PruneOptions { all: true, ..Default::default() }).unwrap();
    assert_eq!(r.ingests.len(), 1, "{r:?}");
    assert!(r.freed >= 70_000, "{r:?}");
    assert_eq!(f.content.ingests().unwrap().len(), 1, "the live download went too");
    // The live writer still commits.
    let d = snapshotter::content::ContentWriter::commit(live, Some(50_000), None).unwrap();
    assert_eq!(f.content.info(&d).unwrap().size, 50_000);
    assert!(f.content.ingests().unwrap().is_empty());
}

#[test]
fn a_use_recorded_lately_is_not_written_again() {
    use snapshotter::meta::{BlobRecord, BLOBS, TOUCH_EVERY};
    let f = fixture();
    let now = snapshotter::meta::now();
    let label = |name: &str| f.s.stat(name).unwrap().labels.get(LAST_USED_LABEL).cloned().unwrap();
    // Within TOUCH_EVERY: left as it is (a build of cache hits writes nothing); older: brought up to now.
    snap(&f.s, "lately", None, 10, now - 60);
    snap(&f.s, "long-ago", None, 10, now - TOUCH_EVERY - 60);
    snapshotter::gc::touch(&f.s, "lately").unwrap();
    snapshotter::gc::touch(&f.s, "long-ago").unwrap();
    assert_eq!(label("lately"), (now - 60).to_string());
    assert!(label("long-ago").parse::<u64>().unwrap() >= now);

    let lately = f.blob(b"lately", now - 60);
    let long_ago = f.blob(b"long ago", now - TOUCH_EVERY - 60);
    let used = |d: &snapshotter::Digest| f.env.meta.get::<BlobRecord>(BLOBS, d.as_ref()).unwrap().unwrap();
    f.env.meta.touch_blob(lately.as_ref(), 6, None).unwrap();
    f.env.meta.touch_blob(long_ago.as_ref(), 8, None).unwrap();
    assert_eq!(used(&lately).last_used, now - 60);
    assert!(used(&long_ago).last_used >= now);
    // A record that says something else (another media type) is written whatever its time.
    f.env.meta.touch_blob(lately.as_ref(), 6, Some("application/vnd.oci.image.layer.v1.tar")).unwrap();
    let rec = used(&lately);
    assert_eq!(rec.media_type.as_deref(), Some("application/vnd.oci.image.layer.v1.tar"));
    assert!(rec.last_used >= now);
}
