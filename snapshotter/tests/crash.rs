//! Crash test: a child process commits blobs, snapshots and layers in a loop and is killed (SIGKILL) at
//! random points; after each kill the store is reopened and must be consistent and usable. 50 rounds.

use std::fs;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snapshotter::content::{write_blob, InfoProvider, LocalStore, Provider};
use snapshotter::diff::{Compression, DiffOptions, Differ};
use snapshotter::meta::MetaDb;
use snapshotter::root::StateRoot;
use snapshotter::snapshot::{Kind, OverlaySnapshotter, Snapshotter};

const CHILD_ENV: &str = "RBUILD_CRASH_CHILD_ROOT";

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(root: &std::path::Path) -> (StateRoot, Arc<MetaDb>, LocalStore, OverlaySnapshotter) {
    let r = StateRoot::open(root, &mut |_| {}).unwrap();
    let meta = Arc::new(MetaDb::open(r.meta_path()).unwrap());
    let content = LocalStore::open(r.content_dir()).unwrap();
    let snaps = OverlaySnapshotter::new(&r, meta.clone()).unwrap();
    (r, meta, content, snaps)
}

/// A small layer whose `marker` file names the snapshot it is committed as.
fn layer_tar(name: &str, files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    add("marker", name.as_bytes());
    for i in 0..files {
        add(&format!("dir{}/file{i}", i % 5), &vec![b'x'; 4096 * (i % 7)]);
    }
    b.into_inner().unwrap()
}

/// The child's endless workload.
fn workload(root: &std::path::Path) {
    let (_r, meta, content, snaps) = open(root);
    let pid = std::process::id();
    let mut rng = Rng::new(pid as u64 * 7919);
    let mut parent: Option<String> =
        snaps.walk().unwrap().into_iter().filter(|i| i.kind == Kind::Committed).map(|i| i.name).next_back();
    for i in 0.. {
        let size = 1024 + rng.below(256 << 10) as usize;
        let seed = rng.next() as u8;
        let data: Vec<u8> = (0..size).map(|j| (j as u8).wrapping_mul(seed)).collect();
        let d = snapshotter::digest::of_bytes(&data);
        write_blob(&content, &format!("blob-{pid}-{i}"), &data[..], Some(size as u64), Some(&d)).unwrap();
        meta.touch_blob(d.as_ref(), size as u64, None).unwrap();
        if i % 5 == 0 {
            let wrong = snapshotter::digest::of_bytes(b"wrong");
            assert!(write_blob(&content, &format!("bad-{pid}-{i}"), &data[..], None, Some(&wrong)).is_err());
        }
        let name = format!("snap-{pid}-{i}");
        let key = format!("active-{pid}-{i}");
        snaps.prepare(&key, parent.as_deref()).unwrap();
        let target = snaps.apply_target(&key).unwrap();
        snapshotter::apply::apply_layer(&target, &layer_tar(&name, 1 + rng.below(40) as usize)[..]).unwrap();
        snaps.commit(&name, &key).unwrap();
        if i % 4 == 3 {
            snaps.remove(&name).unwrap();
        } else {
            if i % 3 == 0 {
                let differ = Differ { snapshotter: &snaps, content: &content, meta: &meta };
                let opts = DiffOptions { compression: Compression::Gzip, source_date_epoch: None };
                differ.layer(&name, opts).unwrap();
            }
            parent = Some(name);
        }
    }
}

#[test]
#[ignore = "the child of crash_test_50_rounds; it runs only with RBUILD_CRASH_CHILD_ROOT set"]
fn crash_child() {
    let root = std::env::var_os(CHILD_ENV).expect("crash_child is started by crash_test_50_rounds");
    workload(std::path::Path::new(&root));
}

fn check(root: &std::path::Path, round: usize, verified: &mut std::collections::HashSet<String>) {
    let (r, meta, content, snaps) = open(root);
    assert_eq!(fs::read_dir(r.tmp_dir()).unwrap().count(), 0, "round {round}: tmp not emptied");
    // Every visible blob is complete and matches its digest (blobs are immutable: each is read once).
    for info in content.list().unwrap() {
        if !verified.insert(info.digest.to_string()) {
            continue;
        }
        let mut data = Vec::new();
        content.reader(&info.digest).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(snapshotter::digest::of_bytes(&data), info.digest, "round {round}: corrupt blob");
    }
    // Every snapshot record has its directory, every directory its record, every parent exists, and a
    // committed snapshot holds its whole layer.
    let infos = snaps.walk().unwrap();
    let dir = r.snapshots_dir().join("overlay");
    let on_disk = fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, infos.len(), "round {round}: orphaned or missing snapshot directories");
    for i in &infos {
        let data = snaps.data_dir(&i.name).unwrap();
        assert!(data.is_dir(), "round {round}: {} has no directory", i.name);
        if let Some(p) = &i.parent {
            assert!(snaps.stat(p).is_ok(), "round {round}: {} lost its parent", i.name);
        }
        if i.kind == Kind::Committed {
            assert_eq!(fs::read_to_string(data.join("marker")).unwrap(), i.name, "round {round}");
        }
    }
    // Remembered layers point at blobs that exist.
    for (k, l) in meta.list::<snapshotter::diff::Layer>(snapshotter::meta::LAYERS).unwrap() {
        assert!(content.info(&l.digest).is_ok(), "round {round}: layer record {k} without blob");
    }
    // And the store is usable.
    let d = write_blob(&content, "check", &b"usable"[..], None, None).unwrap();
    assert!(content.info(&d).is_ok());
    let parent = infos.iter().find(|i| i.kind == Kind::Committed).map(|i| i.name.clone());
    snaps.prepare("check-active", parent.as_deref()).unwrap();
    snaps.commit("check", "check-active").unwrap();
    snaps.remove("check").unwrap();
    // Leave active leftovers of the killed child to exercise removal too.
    for i in infos.iter().filter(|i| i.kind == Kind::Active) {
        snaps.remove(&i.name).unwrap();
    }
}

#[test]
fn crash_test_50_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut rng = Rng::new(seed);
    println!("crash test seed {seed}");
    let mut progressed = 0;
    let mut verified = std::collections::HashSet::new();
    for round in 0..50 {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &root)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(30 + rng.below(400));
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("round {round}: the workload stopped by itself ({status}): {err}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        check(&root, round, &mut verified);
        let (_r, _m, content, _s) = open(&root);
        progressed = progressed.max(content.list().unwrap().len());
    }
    assert!(progressed > 10, "the child made too little progress to test anything ({progressed} blobs)");
}
