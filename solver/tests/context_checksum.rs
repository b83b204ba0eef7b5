//! Content checksums of what a COPY reads: they change with any selected byte, mode, owner (of a snapshot;
//! a local source reads as root), link target or xattr, not with times or with files the copy does not
//! read, and an unchanged tree is not read again (also after the remembered stats went through the
//! metadata database).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use llb::file::Copy;
use llb::Digest;
use snapshotter::meta::MetaDb;
use solver::context::ChecksumCache;
use solver::fileop::SourceDir;

fn copy(src: &str) -> Copy {
    Copy {
        src: src.into(),
        dest: "/out/".into(),
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..Copy::default()
    }
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

struct Env {
    _db_dir: tempfile::TempDir,
    meta: Arc<MetaDb>,
    ctx: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let db_dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaDb::open(db_dir.path().join("meta.redb")).unwrap());
        let ctx = tempfile::tempdir().unwrap();
        let c = ctx.path();
        write(c, "app/main.go", "package main");
        write(c, "app/lib/util.go", "package lib");
        write(c, "app/README.md", "docs");
        write(c, "app/secret.env", "TOKEN=1");
        write(c, "other.txt", "not copied");
        symlink("main.go", c.join("app/link")).unwrap();
        Env { _db_dir: db_dir, meta, ctx }
    }

    /// The build context, as a local source.
    fn src(&self) -> SourceDir {
        SourceDir::local(self.ctx.path(), vec![], vec!["**/*.env".into()])
    }

    fn p(&self, rel: &str) -> std::path::PathBuf {
        self.ctx.path().join(rel)
    }
}

fn sum(cache: &ChecksumCache, env: &Env, c: &Copy) -> Digest {
    cache.copy_sources(&env.src(), c).unwrap()
}

#[test]
fn checksum_follows_exactly_what_copy_reads() {
    let env = Env::new();
    let cache = ChecksumCache::new(env.meta.clone());
    let c = Copy { exclude_patterns: vec!["*.md".into()], ..copy("/app") };
    let base = sum(&cache, &env, &c);
    let reads = cache.content_reads();
    assert_eq!(reads, 2, "main.go and lib/util.go are read; the link, README.md and secret.env are not");

    // Unchanged: same digest, nothing read.
    assert_eq!(sum(&cache, &env, &c), base);
    assert_eq!(cache.content_reads(), reads, "an unchanged tree must cost a stat per file, not a read");

    // Times never count.
    let f = fs::File::options().write(true).open(env.p("app/main.go")).unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(12345)).unwrap();
    drop(f);
    assert_eq!(sum(&cache, &env, &c), base, "touching mtime changed the checksum");

    // What the copy does not read never counts: a file outside the source, one excluded by the copy,
    // one excluded by .dockerignore.
    write(env.ctx.path(), "other.txt", "changed");
    write(env.ctx.path(), "app/README.md", "changed docs");
    write(env.ctx.path(), "app/secret.env", "TOKEN=2");
    assert_eq!(sum(&cache, &env, &c), base, "an unselected or excluded file changed the checksum");

    // Everything selected counts.
    let mut seen = vec![base];
    let mut check = |what: &str, change: &dyn Fn()| {
        change();
        let d = sum(&cache, &env, &c);
        assert!(!seen.contains(&d), "{what} did not change the checksum");
        seen.push(d);
    };
    check("content", &|| write(env.ctx.path(), "app/lib/util.go", "package lib // v2"));
    check("mode", &|| fs::set_permissions(env.p("app/main.go"), fs::Permissions::from_mode(0o755)).unwrap());
    check("link target", &|| {
        fs::remove_file(env.p("app/link")).unwrap();
        symlink("lib/util.go", env.p("app/link")).unwrap();
    });
    check("a new file", &|| write(env.ctx.path(), "app/lib/new.go", "package lib"));
    check("a new empty directory", &|| fs::create_dir(env.p("app/empty")).unwrap());
    if rustix::process::geteuid().is_root() {
        // A local source reads as root:root (BuildKit's client resets owners), so a copy from it writes
        // the same whoever owns the files: its owners never count. A snapshot's owners do.
        let snapshot = |e: &Env| cache.copy_sources(&SourceDir { root_owned: false, ..e.src() }, &c).unwrap();
        let (local_before, snapshot_before) = (sum(&cache, &env, &c), snapshot(&env));
        std::os::unix::fs::chown(env.p("app/main.go"), Some(1000), Some(1000)).unwrap();
        assert_eq!(sum(&cache, &env, &c), local_before, "an owner change changed a local source's checksum");
        assert_ne!(snapshot(&env), snapshot_before, "an owner change did not change a snapshot's checksum");
    } else {
        testkit::skip("the owner check chowns and needs root");
    }
    if snapshotter::sys::set_xattr(&env.p("app/lib/util.go"), "user.probe", b"1").is_ok() {
        snapshotter::sys::set_xattr(&env.p("app/lib/util.go"), "user.probe", b"0").unwrap();
        let before = sum(&cache, &env, &c);
        snapshotter::sys::set_xattr(&env.p("app/lib/util.go"), "user.probe", b"2").unwrap();
        assert_ne!(sum(&cache, &env, &c), before, "an xattr change did not change the checksum");
    }
}

#[test]
fn wildcards_and_missing_sources() {
    let env = Env::new();
    let cache = ChecksumCache::new(env.meta.clone());
    let c = copy("/app/*.go");
    let one = sum(&cache, &env, &c);
    write(env.ctx.path(), "app/extra.go", "package main");
    assert_ne!(sum(&cache, &env, &c), one, "a new wildcard match must change the checksum");
    write(env.ctx.path(), "app/extra.txt", "x");
    let two = sum(&cache, &env, &c);
    write(env.ctx.path(), "app/extra.txt", "y");
    assert_eq!(sum(&cache, &env, &c), two, "a file the wildcard does not match changed the checksum");
    // .dockerignore'd paths are invisible: the same error as copying them.
    let e = cache.copy_sources(&env.src(), &copy("/app/secret.env")).unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    // The whole tree, and a subtree.
    let all = cache.tree(&env.src(), "/").unwrap();
    assert_ne!(all, cache.tree(&env.src(), "/app/lib").unwrap());
    write(env.ctx.path(), "app/secret.env", "ignored");
    assert_eq!(cache.tree(&env.src(), "/").unwrap(), all);
}

#[test]
fn remembered_stats_survive_a_restart() {
    let env = Env::new();
    for i in 0..2000 {
        write(env.ctx.path(), &format!("many/d{}/f{i}", i % 20), &format!("{i}"));
    }
    let c = copy("/many");
    let first = {
        let cache = ChecksumCache::new(env.meta.clone());
        let d = sum(&cache, &env, &c);
        assert_eq!(cache.content_reads(), 2000);
        cache.flush().unwrap();
        d
    };
    let cache = ChecksumCache::new(env.meta.clone());
    assert_eq!(sum(&cache, &env, &c), first);
    assert_eq!(cache.content_reads(), 0, "the remembered digests were not reused after a restart");
    write(env.ctx.path(), "many/d3/f3", "changed");
    assert_ne!(sum(&cache, &env, &c), first);
    assert_eq!(cache.content_reads(), 1, "only the changed file is read again");
}

#[test]
fn remembered_xattrs_spare_the_listing_until_ctime_moves() {
    let env = Env::new();
    let c = copy("/app");
    // A ctime under a second old is not trusted to cover a later same-tick xattr change.
    let fresh = ChecksumCache::new(env.meta.clone());
    sum(&fresh, &env, &c);
    sum(&fresh, &env, &c);
    assert_eq!(fresh.xattr_lists(), 6, "main.go, lib/util.go and README.md listed on both walks while fresh");

    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cache = ChecksumCache::new(env.meta.clone());
    let base = sum(&cache, &env, &c);
    let listed = cache.xattr_lists();
    assert_eq!(listed, 3, "settled files are listed once");
    cache.flush().unwrap();
    let restarted = ChecksumCache::new(env.meta.clone());
    assert_eq!(sum(&restarted, &env, &c), base);
    assert_eq!(restarted.xattr_lists(), 0, "remembered xattrs were listed again after a restart");

    if snapshotter::sys::set_xattr(&env.p("app/lib/util.go"), "user.probe", b"1").is_ok() {
        assert_ne!(sum(&restarted, &env, &c), base, "an xattr set after the record did not change the checksum");
        assert_eq!(restarted.xattr_lists(), 1, "only the file whose ctime moved is listed again");
    }
}
