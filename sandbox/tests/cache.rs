//! Cache mounts across processes: the locks are flock(2) locks on files under the root, so another
//! process (here util-linux `flock`) holding one is respected.

use std::process::Command;
use std::time::{Duration, Instant};

use sandbox::cache::{key_for_id, CacheMounts, Sharing};

#[test]
fn another_process_holding_the_cache_is_waited_for_or_avoided() {
    if Command::new("flock").arg("--version").output().is_err() {
        testkit::skip("util-linux flock is not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let caches = CacheMounts::new(root.path());
    // Create instance 0 and its lock file.
    let first = caches.acquire("pkg", Sharing::Shared, 0o755, 0, 0, None).unwrap().path;
    let lock = root.path().join(key_for_id("pkg")).join("0.lock");
    assert!(lock.exists());
    let ready = root.path().join("ready");
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(&lock)
        .args(["sh", "-c", &format!("touch {}; sleep 1", ready.display())])
        .spawn()
        .unwrap();
    while !ready.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    // A private user goes elsewhere at once; a shared user waits for the other process.
    let private = caches.acquire("pkg", Sharing::Private, 0o755, 0, 0, None).unwrap();
    assert_ne!(private.path, first);
    let start = Instant::now();
    let shared = caches.acquire("pkg", Sharing::Shared, 0o755, 0, 0, None).unwrap();
    assert!(start.elapsed() > Duration::from_millis(300), "shared did not wait for the exclusive holder");
    assert_eq!(shared.path, first);
    holder.wait().unwrap();
}
