//! A COPY that reruns because one context file changed links the unchanged files from its previous
//! result instead of copying them (solver/src/fileop/reuse.rs), and its layer is byte for byte the one a
//! full copy gives.

#[path = "solve_support.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use snapshotter::diff::{write_layer, Compression, DiffOptions};
use snapshotter::snapshot::DiffSource;
use support::{definition, executed_names, Env};

const DOCKERFILE: &str = "FROM busybox\nCOPY --chmod=640 . /app\nRUN cat /app/changing > /seen\n";

async fn solve(env: &Env, def: &llb::Definition, no_cache: bool) -> solver::Solved {
    let (mut opts, _events) = env.options();
    opts.no_cache = no_cache;
    env.solver.solve(def, opts).await.unwrap()
}

/// The COPY step's snapshot (the RUN result's parent) and its own directory.
fn copy_result(env: &Env, solved: &solver::Solved) -> (String, PathBuf) {
    let root = solved.root.clone().expect("a root");
    let copy = env.store.snapshotter.stat(&root).unwrap().parent.expect("the RUN has a parent");
    match env.store.snapshotter.diff_source(&copy).unwrap() {
        DiffSource::Upper(dir) => (copy, dir),
        DiffSource::Trees { .. } => panic!("not an overlay snapshot"),
    }
}

/// The uncompressed layer digest of a snapshot, times clamped to `epoch`: the copy's destination
/// directory takes the time it is made (as in BuildKit), which differs from run to run.
fn layer_digest(env: &Env, snapshot: &str, epoch: u64) -> String {
    let source = env.store.snapshotter.diff_source(snapshot).unwrap();
    let opts = DiffOptions { compression: Compression::None, source_date_epoch: Some(epoch) };
    let (diff_id, _, _, _) = write_layer(&source, std::io::sink(), opts).unwrap();
    diff_id.to_string()
}

fn ino(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).unwrap().ino()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rerun_copy_links_unchanged_files_from_its_previous_result() {
    require_root!();
    let env = Env::new();
    if !matches!(env.store.kind, snapshotter::store::SnapshotterKind::Overlay) {
        testkit::skip("reuse needs the overlay snapshotter; this filesystem cannot hold an overlay upper");
        return;
    }
    for d in 0..4 {
        for f in 0..25 {
            env.write(&format!("src/d{d}/f{f}.txt"), &format!("file {d}/{f}\n").repeat(100));
        }
    }
    env.write("changing", "one\n");
    env.write("later", "stays\n");
    // An xattr on a source file must be on the linked file too (the layer comparison below checks it).
    let _ = std::process::Command::new("setfattr")
        .args(["-n", "user.note", "-v", "kept"])
        .arg(env.context().join("src/d0/f0.txt"))
        .status();
    let def = definition(DOCKERFILE, &[]);
    // Every time the builds set is after `epoch`; the context's own times are before it.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let first = solve(&env, &def, false).await;
    let (copy1, dir1) = copy_result(&env, &first);

    // One file changes, one is added, one goes.
    env.write("changing", "two\n");
    env.write("src/d3/new.txt", "new\n");
    std::fs::remove_file(env.context().join("later")).unwrap();
    let second = solve(&env, &def, false).await;
    let ran = executed_names(&second);
    assert!(ran.iter().any(|n| n.contains("COPY")), "{ran:?}");
    let (copy2, dir2) = copy_result(&env, &second);
    assert_ne!(copy1, copy2);

    // Unchanged files are the previous result's inodes; the changed and new ones are not.
    for d in 0..4 {
        for f in 0..25 {
            let rel = format!("app/src/d{d}/f{f}.txt");
            assert_eq!(ino(&dir1.join(&rel)), ino(&dir2.join(&rel)), "{rel} was copied, not linked");
        }
    }
    assert_ne!(ino(&dir1.join("app/changing")), ino(&dir2.join("app/changing")));
    assert_eq!(std::fs::read_to_string(dir2.join("app/changing")).unwrap(), "two\n");
    assert_eq!(std::fs::read_to_string(dir2.join("app/src/d3/new.txt")).unwrap(), "new\n");
    assert!(!dir2.join("app/later").exists());
    let out = env.export(&second.root);
    assert_eq!(std::fs::read_to_string(out.path().join("seen")).unwrap(), "two\n");
    let m = std::fs::metadata(out.path().join("app/src/d1/f1.txt")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);

    // The layer is exactly what a full copy gives: a no-cache run with the donor forgotten.
    let linked_layer = layer_digest(&env, &copy2, epoch);
    {
        let table: snapshotter::redb::TableDefinition<&str, &[u8]> =
            snapshotter::redb::TableDefinition::new("copy_donors");
        let keys: Vec<String> =
            env.store.meta.list::<serde_json::Value>(table).unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), 1, "one copy, one donor record: {keys:?}");
        env.store.meta.delete(table, &keys[0]).unwrap();
    }
    let third = solve(&env, &def, true).await;
    let (copy3, dir3) = copy_result(&env, &third);
    assert_ne!(ino(&dir3.join("app/src/d1/f1.txt")), ino(&dir2.join("app/src/d1/f1.txt")), "no donor, no link");
    assert_eq!(
        layer_digest(&env, &copy3, epoch),
        linked_layer,
        "a linked copy must equal a full copy, dir times included"
    );

    // A later RUN changing a linked file copies it up: the donor's file is untouched.
    let def2 = definition(
        "FROM busybox\nCOPY --chmod=640 . /app\nRUN cat /app/changing > /seen\nRUN echo changed >> /app/src/d1/f1.txt\n",
        &[],
    );
    let fourth = solve(&env, &def2, false).await;
    let out = env.export(&fourth.root);
    assert!(std::fs::read_to_string(out.path().join("app/src/d1/f1.txt")).unwrap().ends_with("changed\n"));
    assert!(!std::fs::read_to_string(dir2.join("app/src/d1/f1.txt")).unwrap().contains("changed"));
    assert!(!std::fs::read_to_string(dir1.join("app/src/d1/f1.txt")).unwrap().contains("changed"));
}
