//! COPY/ADD and the other file actions on temporary directories, mirroring BuildKit's dockerfile tests
//! (testCopy*, wildcard, ADD archive, chown/chmod, --exclude, --parents) with the resulting tree checked
//! entry by entry. Chown needs root: those tests skip with a message otherwise.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use llb::file::{Copy, Mkdir, Mkfile, Rm, Symlink};
use llb::{ChownOpt, FileAction, FileActionKind, FileOp, UserOpt};
use solver::fileop::{chain_base, chain_sources, copy_dir, run_chain, FileOpError, SourceDir};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            testkit::skip("file op tests chown and need root");
            return;
        }
    };
}

/// The tree under `root` as sorted lines: `path type mode uid:gid [content or -> target]`.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let mode = m.mode() & 0o7777;
        let owner = format!("{}:{}", m.uid(), m.gid());
        if m.is_dir() {
            out.push(format!("{rel}/ {mode:o} {owner}"));
            walk(root, &p, out);
        } else if m.file_type().is_symlink() {
            out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
        } else {
            out.push(format!("{rel} {mode:o} {owner} {}", fs::read_to_string(&p).unwrap_or_default()));
        }
    }
}

fn write(root: &Path, rel: &str, data: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A COPY as the frontend emits it (wildcards, directory contents, parents created).
fn copy(src: &str, dest: &str) -> Copy {
    Copy {
        src: src.into(),
        dest: dest.into(),
        follow_symlink: true,
        dir_copy_contents: true,
        create_dest_path: true,
        allow_wildcard: true,
        allow_empty_wildcard: true,
        ..Copy::default()
    }
}

/// Runs one copy from `ctx` (input 1) onto `dest` (input 0, already holding the base content).
fn run_copy(ctx: &SourceDir, dest: &Path, c: Copy) -> Result<(), FileOpError> {
    let op = FileOp {
        actions: vec![FileAction {
            input: Some(0),
            secondary_input: Some(1),
            output: Some(0),
            action: FileActionKind::Copy(c),
        }],
    };
    assert_eq!(chain_base(&op, 2, 0).unwrap(), Some(0));
    assert_eq!(chain_sources(&op, 2, 0).unwrap(), vec![1]);
    run_chain(&op, 0, dest, &[None, Some(ctx.clone())], None)
}

struct Fixture {
    ctx: tempfile::TempDir,
    dest: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let ctx = tempfile::tempdir().unwrap();
        let c = ctx.path();
        write(c, "foo", "foo-contents", 0o644);
        write(c, "bar.txt", "bar", 0o600);
        write(c, "baz.txt", "baz", 0o640);
        write(c, "dir/a", "a", 0o644);
        write(c, "dir/sub/b", "b", 0o755);
        fs::create_dir_all(c.join("dir/empty")).unwrap();
        fs::set_permissions(c.join("dir"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(c.join("dir/sub"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(c.join("dir/empty"), fs::Permissions::from_mode(0o700)).unwrap();
        Fixture { ctx, dest: tempfile::tempdir().unwrap() }
    }

    fn src(&self) -> SourceDir {
        SourceDir::plain(self.ctx.path())
    }

    fn run(&self, c: Copy) -> Result<Vec<String>, FileOpError> {
        run_copy(&self.src(), self.dest.path(), c)?;
        Ok(tree(self.dest.path()))
    }
}

#[test]
fn copy_table() {
    need_root!();
    let cases: Vec<(&str, Copy, Vec<&str>)> = vec![
        ("file into dir", copy("/foo", "/out/"), vec!["out/ 755 0:0", "out/foo 644 0:0 foo-contents"]),
        ("file to new name", copy("/foo", "/renamed"), vec!["renamed 644 0:0 foo-contents"]),
        (
            "dir contents",
            copy("/dir", "/out/"),
            vec!["out/ 755 0:0", "out/a 644 0:0 a", "out/empty/ 700 0:0", "out/sub/ 755 0:0", "out/sub/b 755 0:0 b"],
        ),
        (
            "dir contents to a new path without slash",
            copy("/dir", "/new"),
            vec!["new/ 755 0:0", "new/a 644 0:0 a", "new/empty/ 700 0:0", "new/sub/ 755 0:0", "new/sub/b 755 0:0 b"],
        ),
        (
            "wildcard",
            copy("/*.txt", "/out/"),
            vec!["out/ 755 0:0", "out/bar.txt 600 0:0 bar", "out/baz.txt 640 0:0 baz"],
        ),
        (
            "wildcard with ?",
            copy("/ba?.txt", "/w/"),
            vec!["w/ 755 0:0", "w/bar.txt 600 0:0 bar", "w/baz.txt 640 0:0 baz"],
        ),
        ("wildcard in a subdirectory", copy("/dir/s*/b", "/x/"), vec!["x/ 755 0:0", "x/b 755 0:0 b"]),
        ("empty wildcard", copy("/nothing*", "/out/"), vec![]),
        ("numeric chmod", Copy { mode: Some(0o751), ..copy("/bar.txt", "/m") }, vec!["m 751 0:0 bar"]),
        ("symbolic chmod", Copy { mode_str: Some("u+x,g+w".into()), ..copy("/baz.txt", "/m") }, vec!["m 760 0:0 baz"]),
        (
            "chown by id",
            Copy { owner: Some(ChownOpt { user: Some(UserOpt::ById(1000)), group: None }), ..copy("/dir", "/o/") },
            vec![
                "o/ 755 1000:1000",
                "o/a 644 1000:1000 a",
                "o/empty/ 700 1000:1000",
                "o/sub/ 755 1000:1000",
                "o/sub/b 755 1000:1000 b",
            ],
        ),
        (
            "exclude",
            Copy { exclude_patterns: vec!["sub".into(), "*.md".into()], ..copy("/dir", "/e/") },
            vec!["e/ 755 0:0", "e/a 644 0:0 a", "e/empty/ 700 0:0"],
        ),
        (
            "include patterns (--parents)",
            Copy { include_patterns: vec!["dir/sub/*".into()], parents: true, ..copy("/", "/p/") },
            vec!["p/ 755 0:0", "p/dir/ 755 0:0", "p/dir/sub/ 755 0:0", "p/dir/sub/b 755 0:0 b"],
        ),
    ];
    for (name, c, want) in cases {
        let f = Fixture::new();
        let got = f.run(c).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn missing_sources_are_named() {
    let f = Fixture::new();
    let e = run_copy(&f.src(), f.dest.path(), copy("/missing", "/")).unwrap_err();
    assert!(matches!(&e, FileOpError::NotFound { path } if path == "/missing"), "{e}");
    assert!(e.to_string().contains("\"/missing\": not found"), "{e}");
    let strict = Copy { allow_empty_wildcard: false, ..copy("/nope*", "/") };
    let e = run_copy(&f.src(), f.dest.path(), strict).unwrap_err();
    assert!(e.to_string().contains("no source files were specified"), "{e}");
    let e = run_copy(&f.src(), f.dest.path(), copy("/nodir/*.txt", "/")).unwrap_err();
    assert!(e.to_string().contains("/nodir"), "{e}");
}

#[test]
fn parents_of_a_missing_path_is_an_error() {
    need_root!();
    let f = Fixture::new();
    let parents = |pattern: &str| Copy { include_patterns: vec![pattern.into()], parents: true, ..copy("/", "/p/") };
    let e = run_copy(&f.src(), f.dest.path(), parents("missing/x")).unwrap_err();
    assert!(matches!(&e, FileOpError::NotFound { path } if path == "/missing/x"), "{e}");
    // A directory that exists with a file that does not: still missing.
    let e = run_copy(&f.src(), f.dest.path(), parents("dir/nope")).unwrap_err();
    assert!(e.to_string().contains("\"/dir/nope\": not found"), "{e}");
    // What exists copies; a wildcard that matches nothing stays allowed, as without --parents.
    run_copy(&f.src(), f.dest.path(), parents("dir/sub")).unwrap();
    assert!(tree(f.dest.path()).contains(&"p/dir/sub/b 755 0:0 b".to_string()));
    run_copy(&f.src(), f.dest.path(), parents("dir/*.none")).unwrap();
}

#[test]
fn unix_sockets_named_are_refused_and_inside_directories_become_empty_files() {
    need_root!();
    let f = Fixture::new();
    let sock = f.ctx.path().join("dir/sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    fs::set_permissions(&sock, fs::Permissions::from_mode(0o755)).unwrap();
    let e = run_copy(&f.src(), f.dest.path(), copy("/dir/sock", "/s")).unwrap_err();
    assert!(e.to_string().contains("/dir/sock: is a unix socket"), "{e}");
    assert!(!f.dest.path().join("s").exists());
    // BuildKit v0.24 sends a socket in a copied directory as an empty regular file with its mode.
    run_copy(&f.src(), f.dest.path(), copy("/dir", "/d/")).unwrap();
    assert!(tree(f.dest.path()).contains(&"d/sock 755 0:0 ".to_string()), "{:?}", tree(f.dest.path()));
}

#[test]
fn dockerignore_makes_paths_invisible() {
    need_root!();
    let f = Fixture::new();
    let ctx = SourceDir::local(f.ctx.path(), vec![], vec!["*.txt".into(), "dir".into(), "!dir/sub".into()]);
    let e = run_copy(&ctx, f.dest.path(), copy("/bar.txt", "/")).unwrap_err();
    assert!(matches!(e, FileOpError::NotFound { .. }), "{e}");
    run_copy(&ctx, f.dest.path(), copy("/", "/all/")).unwrap();
    assert_eq!(
        tree(f.dest.path()),
        [
            "all/ 755 0:0",
            "all/dir/ 755 0:0",
            "all/dir/sub/ 755 0:0",
            "all/dir/sub/b 755 0:0 b",
            "all/foo 644 0:0 foo-contents"
        ]
    );
}

#[test]
fn symlinks_hardlinks_special_bits_and_xattrs() {
    need_root!();
    let f = Fixture::new();
    let c = f.ctx.path();
    symlink("foo", c.join("link")).unwrap();
    fs::hard_link(c.join("dir/a"), c.join("dir/a2")).unwrap();
    fs::set_permissions(c.join("dir/sub/b"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(c.join("dir/empty"), fs::Permissions::from_mode(0o1777)).unwrap();
    let has_xattr = snapshotter::sys::set_xattr(&c.join("dir/a"), "user.test", b"v").is_ok();

    // The source root follows its symlink; links below it are copied as links.
    run_copy(&f.src(), f.dest.path(), copy("/link", "/followed")).unwrap();
    run_copy(&f.src(), f.dest.path(), Copy { follow_symlink: false, ..copy("/link", "/kept") }).unwrap();
    fs::create_dir(c.join("dir/links")).unwrap();
    symlink("../a", c.join("dir/links/up")).unwrap();
    run_copy(&f.src(), f.dest.path(), copy("/dir", "/d/")).unwrap();
    let d = f.dest.path();
    assert_eq!(fs::read_to_string(d.join("followed")).unwrap(), "foo-contents");
    assert_eq!(fs::read_link(d.join("kept")).unwrap(), Path::new("foo"));
    assert_eq!(fs::read_link(d.join("d/links/up")).unwrap(), Path::new("../a"));
    let (a, a2) = (fs::metadata(d.join("d/a")).unwrap(), fs::metadata(d.join("d/a2")).unwrap());
    assert_eq!(a.ino(), a2.ino(), "hardlinks inside one copy stay hardlinks");
    assert_eq!(fs::metadata(d.join("d/sub/b")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(d.join("d/empty")).unwrap().mode() & 0o7777, 0o1777);
    if has_xattr {
        assert_eq!(snapshotter::sys::get_xattr(&d.join("d/a"), "user.test").unwrap().as_deref(), Some(&b"v"[..]));
    }
    // Times are kept unless a timestamp is given.
    let src_mtime = fs::metadata(c.join("foo")).unwrap().mtime();
    assert_eq!(fs::metadata(d.join("followed")).unwrap().mtime(), src_mtime);
    run_copy(&f.src(), d, Copy { timestamp: Some(1_000_000_000_000_000_000), ..copy("/foo", "/stamped") }).unwrap();
    assert_eq!(fs::metadata(d.join("stamped")).unwrap().mtime(), 1_000_000_000);
}

#[test]
fn chown_by_name_reads_the_destination() {
    need_root!();
    let f = Fixture::new();
    write(f.dest.path(), "etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/home/app:/bin/sh\n", 0o644);
    write(f.dest.path(), "etc/group", "root:x:0:\nstaff:x:50:\n", 0o644);
    let by_name = |u: &str, g: Option<&str>| ChownOpt {
        user: Some(UserOpt::ByName { name: u.into(), input: Some(0) }),
        group: g.map(|g| UserOpt::ByName { name: g.into(), input: Some(0) }),
    };
    run_copy(&f.src(), f.dest.path(), Copy { owner: Some(by_name("app", None)), ..copy("/foo", "/a") }).unwrap();
    run_copy(&f.src(), f.dest.path(), Copy { owner: Some(by_name("app", Some("staff"))), ..copy("/foo", "/b") })
        .unwrap();
    let m = |p: &str| fs::metadata(f.dest.path().join(p)).unwrap();
    assert_eq!((m("a").uid(), m("a").gid()), (1234, 2345));
    assert_eq!((m("b").uid(), m("b").gid()), (1234, 50));
    // Names that are not found are no error (BuildKit's readUser): an unknown user is 0:0, an unknown
    // group keeps the gid the user part gave.
    run_copy(&f.src(), f.dest.path(), Copy { owner: Some(by_name("nobody", None)), ..copy("/foo", "/c") }).unwrap();
    run_copy(&f.src(), f.dest.path(), Copy { owner: Some(by_name("app", Some("ghosts"))), ..copy("/foo", "/d") })
        .unwrap();
    run_copy(&f.src(), f.dest.path(), Copy { owner: Some(by_name("nobody", Some("staff"))), ..copy("/foo", "/e") })
        .unwrap();
    assert_eq!((m("c").uid(), m("c").gid()), (0, 0));
    assert_eq!((m("d").uid(), m("d").gid()), (1234, 2345));
    assert_eq!((m("e").uid(), m("e").gid()), (0, 50));
    // WORKDIR's mkdir after `USER nouser:nogroup`, in an image without such entries, likewise.
    let mkdir = FileActionKind::Mkdir(Mkdir {
        path: "/work/dir".into(),
        mode: 0o755,
        make_parents: true,
        owner: Some(by_name("nouser", Some("nogroup"))),
        timestamp: None,
    });
    let op =
        FileOp { actions: vec![FileAction { input: Some(0), secondary_input: None, output: Some(0), action: mkdir }] };
    run_chain(&op, 0, f.dest.path(), &[None], None).unwrap();
    assert_eq!((m("work/dir").uid(), m("work/dir").gid()), (0, 0));
}

#[test]
fn numeric_chmod_applies_to_created_parents() {
    need_root!();
    let f = Fixture::new();
    let c = f.ctx.path();
    fs::set_permissions(c.join("foo"), fs::Permissions::from_mode(0o4755)).unwrap();
    let d = f.dest.path();
    fs::create_dir(d.join("existing")).unwrap();
    let chmod = |mode: u32, src: &str, dest: &str| Copy { mode: Some(mode), ..copy(src, dest) };
    // A file into a new directory, to a new name, and a directory's contents into a new path: every
    // directory the copy creates gets the mode's permission bits (fsutil's MkdirAll with CopyInfo.Mode).
    run_copy(&f.src(), d, chmod(0o700, "/foo", "/p/a/")).unwrap();
    run_copy(&f.src(), d, chmod(0o640, "/foo", "/existing/n/renamed")).unwrap();
    run_copy(&f.src(), d, chmod(0o750, "/dir", "/q/x")).unwrap();
    // Special bits come from the chmod only: the source's setuid bit is dropped, and parents get none.
    run_copy(&f.src(), d, chmod(0o2755, "/foo", "/s/")).unwrap();
    // Exactly the bits asked for, group and other write included (buildkitd runs with umask 0).
    run_copy(&f.src(), d, chmod(0o777, "/foo", "/w/")).unwrap();
    // A symbolic chmod leaves created parents at 0755.
    run_copy(&f.src(), d, Copy { mode_str: Some("go-rwx".into()), ..copy("/foo", "/y/z/") }).unwrap();
    let t = tree(d);
    let want = [
        "existing/ 755 0:0",
        "existing/n/ 640 0:0",
        "existing/n/renamed 640 0:0 foo-contents",
        "p/ 700 0:0",
        "p/a/ 700 0:0",
        "p/a/foo 700 0:0 foo-contents",
        "q/ 750 0:0",
        "q/x/ 750 0:0",
        "q/x/a 750 0:0 a",
        "q/x/empty/ 750 0:0",
        "q/x/sub/ 750 0:0",
        "q/x/sub/b 750 0:0 b",
        "s/ 755 0:0",
        "s/foo 2755 0:0 foo-contents",
        "w/ 777 0:0",
        "w/foo 777 0:0 foo-contents",
        "y/ 755 0:0",
        "y/z/ 755 0:0",
        "y/z/foo 4700 0:0 foo-contents",
    ];
    assert_eq!(t, want);
}

#[test]
fn mkdir_and_mkfile_modes_ignore_the_umask() {
    need_root!();
    let dest = tempfile::tempdir().unwrap();
    let act = |action: FileActionKind| FileOp {
        actions: vec![FileAction { input: Some(0), secondary_input: None, output: Some(0), action }],
    };
    let mkdir = |path: &str, make_parents: bool| {
        act(FileActionKind::Mkdir(Mkdir { path: path.into(), mode: 0o777, make_parents, owner: None, timestamp: None }))
    };
    // Whatever this process's umask, as buildkitd (umask 0) creates them.
    run_chain(&mkdir("/open", false), 0, dest.path(), &[None], None).unwrap();
    run_chain(&mkdir("/deep/er", true), 0, dest.path(), &[None], None).unwrap();
    let mkfile = act(FileActionKind::Mkfile(Mkfile {
        path: "/open/f".into(),
        mode: 0o666,
        data: b"x".to_vec().into(),
        owner: None,
        timestamp: None,
    }));
    run_chain(&mkfile, 0, dest.path(), &[None], None).unwrap();
    assert_eq!(tree(dest.path()), ["deep/ 777 0:0", "deep/er/ 777 0:0", "open/ 777 0:0", "open/f 666 0:0 x"]);
}

#[test]
fn local_sources_read_as_root() {
    need_root!();
    let f = Fixture::new();
    let c = f.ctx.path();
    for p in ["foo", "dir", "dir/a"] {
        std::os::unix::fs::chown(c.join(p), Some(1234), Some(5678)).unwrap();
    }
    let local = SourceDir::local(c, vec![], vec![]);
    let d = f.dest.path();
    // A build context: whatever the owners on disk, the copy writes root:root (BuildKit's client resets
    // them), and so does its materialised copy for RUN mounts.
    run_copy(&local, d, copy("/foo", "/from-context")).unwrap();
    run_copy(&local, d, copy("/dir/a", "/a-from-context")).unwrap();
    // A snapshot (another stage) keeps its owners.
    run_copy(&f.src(), d, copy("/foo", "/from-snapshot")).unwrap();
    let m = |p: &str| fs::metadata(d.join(p)).unwrap();
    assert_eq!((m("from-context").uid(), m("from-context").gid()), (0, 0));
    assert_eq!((m("a-from-context").uid(), m("a-from-context").gid()), (0, 0));
    assert_eq!((m("from-snapshot").uid(), m("from-snapshot").gid()), (1234, 5678));
    let mat = tempfile::tempdir().unwrap();
    copy_dir(&local, mat.path()).unwrap();
    let owners: Vec<(u32, u32)> = ["foo", "dir", "dir/a"]
        .iter()
        .map(|p| fs::metadata(mat.path().join(p)).unwrap())
        .map(|m| (m.uid(), m.gid()))
        .collect();
    assert_eq!(owners, [(0, 0); 3]);
}

#[test]
fn replacing_existing_paths() {
    need_root!();
    let f = Fixture::new();
    let d = f.dest.path();
    // A directory in the way of a file fails unless replacing is allowed.
    fs::create_dir_all(d.join("out/a")).unwrap();
    let e = run_copy(&f.src(), d, copy("/dir", "/out/")).unwrap_err();
    assert!(e.to_string().contains("cannot replace to directory /out/a with file"), "{e}");
    run_copy(&f.src(), d, Copy { always_replace_existing_dest_paths: true, ..copy("/dir", "/out/") }).unwrap();
    assert_eq!(fs::read_to_string(d.join("out/a")).unwrap(), "a");
    // A file in the way of a directory likewise.
    write(d, "plain/sub", "x", 0o644);
    let e = run_copy(&f.src(), d, copy("/dir", "/plain/")).unwrap_err();
    assert!(e.to_string().contains("cannot copy to non-directory: /plain/sub"), "{e}");
    run_copy(&f.src(), d, Copy { always_replace_existing_dest_paths: true, ..copy("/dir", "/plain/") }).unwrap();
    assert_eq!(fs::read_to_string(d.join("plain/sub/b")).unwrap(), "b");
    // An existing directory at the destination name receives the file, as `cp` does.
    fs::create_dir_all(d.join("into")).unwrap();
    run_copy(&f.src(), d, copy("/foo", "/into")).unwrap();
    assert_eq!(fs::read_to_string(d.join("into/foo")).unwrap(), "foo-contents");
}

fn tar_bytes() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(1000);
    h.set_size(0);
    b.append_data(&mut h, "etc/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(1000);
    h.set_size(0);
    b.append_data(&mut h, "pkg/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o640);
    h.set_uid(7);
    h.set_gid(8);
    h.set_mtime(2000);
    h.set_size(5);
    b.append_data(&mut h, "pkg/hello", &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(2000);
    b.append_link(&mut h, "pkg/abs", "/etc").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    h.set_mtime(2000);
    // Written through the symlink above: must stay inside the extraction directory.
    b.append_data(&mut h, "pkg/abs/escaped", &b"evil"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn add_unpacks_archives_by_content() {
    need_root!();
    let f = Fixture::new();
    let raw = tar_bytes();
    fs::write(f.ctx.path().join("plain.tar"), &raw).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    fs::write(f.ctx.path().join("weird-name.bin"), gz.finish().unwrap()).unwrap();
    let mut zs = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    zs.write_all(&raw).unwrap();
    fs::write(f.ctx.path().join("z.tar.zst"), zs.finish().unwrap()).unwrap();
    fs::write(f.ctx.path().join("fake.tar.gz"), "not an archive").unwrap();
    let add = |src: &str, dest: &str| Copy { attempt_unpack: true, ..copy(src, dest) };
    for (src, dest) in [("/plain.tar", "/x/"), ("/weird-name.bin", "/y"), ("/z.tar.zst", "/z/")] {
        run_copy(&f.src(), f.dest.path(), add(src, dest)).unwrap();
        let root = f.dest.path().join(dest.trim_matches('/'));
        let t = tree(&root);
        // The file written through the absolute symlink lands in the extraction directory's etc/.
        let want =
            ["etc/ 755 0:0", "etc/escaped 644 0:0 evil", "pkg/ 750 7:8", "pkg/abs -> /etc", "pkg/hello 640 7:8 hello"];
        assert_eq!(t, want, "{src}");
        assert_eq!(fs::metadata(root.join("pkg/hello")).unwrap().mtime(), 2000);
    }
    assert!(!Path::new("/etc/escaped").exists());
    // ADD --chown owns every extracted entry, and the destination directories it creates.
    let owned =
        Copy { owner: Some(ChownOpt { user: Some(UserOpt::ById(5)), group: None }), ..add("/plain.tar", "/o/n/") };
    run_copy(&f.src(), f.dest.path(), owned).unwrap();
    let t = tree(&f.dest.path().join("o"));
    let want = [
        "n/ 755 5:5",
        "n/etc/ 755 5:5",
        "n/etc/escaped 644 5:5 evil",
        "n/pkg/ 750 5:5",
        "n/pkg/abs -> /etc",
        "n/pkg/hello 640 5:5 hello",
    ];
    assert_eq!(t, want);
    let link = fs::symlink_metadata(f.dest.path().join("o/n/pkg/abs")).unwrap();
    assert_eq!((link.uid(), link.gid()), (5, 5));
    run_copy(&f.src(), f.dest.path(), add("/fake.tar.gz", "/w/")).unwrap();
    assert_eq!(fs::read_to_string(f.dest.path().join("w/fake.tar.gz")).unwrap(), "not an archive");
}

#[test]
fn hostile_symlinks_stay_inside_roots() {
    need_root!();
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let d = f.dest.path();
    // The base image points /evil at / and /etc at the host's /etc; writes must land inside dest.
    symlink("/", d.join("evil")).unwrap();
    symlink(outside.path(), d.join("host")).unwrap();
    run_copy(&f.src(), d, copy("/foo", "/evil/x")).unwrap();
    assert_eq!(fs::read_to_string(d.join("x")).unwrap(), "foo-contents");
    run_copy(&f.src(), d, copy("/foo", "/host/y")).unwrap();
    assert!(!outside.path().join("y").exists(), "a copy wrote through an absolute symlink to the host");
    assert!(d.join(outside.path().strip_prefix("/").unwrap()).join("y").exists());
    // Sources: `..` is cleaned away and a context symlink to the host resolves inside the context.
    let e = run_copy(&f.src(), d, copy("/../../../../etc/passwd", "/p")).unwrap_err();
    assert!(matches!(e, FileOpError::NotFound { .. }), "{e}");
    symlink("/etc/passwd", f.ctx.path().join("pw")).unwrap();
    let e = run_copy(&f.src(), d, copy("/pw", "/p")).unwrap_err();
    assert!(matches!(e, FileOpError::NotFound { .. }), "{e}");
    symlink("../../../../../", f.ctx.path().join("up")).unwrap();
    run_copy(&f.src(), d, copy("/up/foo", "/via-up")).unwrap();
    assert_eq!(fs::read_to_string(d.join("via-up")).unwrap(), "foo-contents");
}

#[test]
fn mkdir_mkfile_rm_symlink_chain() {
    need_root!();
    let dest = tempfile::tempdir().unwrap();
    let ts = Some(1_500_000_000_000_000_000);
    let act = |input: Option<usize>, output: Option<usize>, action: FileActionKind| FileAction {
        input,
        secondary_input: None,
        output,
        action,
    };
    // Input 0 is the base; actions chain through their results (index 1 + i).
    let op = FileOp {
        actions: vec![
            act(
                Some(0),
                None,
                FileActionKind::Mkdir(Mkdir {
                    path: "/app/data".into(),
                    mode: 0o755,
                    make_parents: true,
                    owner: Some(ChownOpt { user: Some(UserOpt::ById(5)), group: None }),
                    timestamp: ts,
                }),
            ),
            act(
                Some(1),
                None,
                FileActionKind::Mkfile(Mkfile {
                    path: "/app/data/hello".into(),
                    mode: 0o600,
                    data: "hi".into(),
                    owner: None,
                    timestamp: ts,
                }),
            ),
            act(
                Some(2),
                None,
                FileActionKind::Symlink(Symlink {
                    oldpath: "data/hello".into(),
                    newpath: "/app/link".into(),
                    owner: None,
                    timestamp: None,
                }),
            ),
            act(
                Some(3),
                None,
                FileActionKind::Mkfile(Mkfile {
                    path: "/app/tmp".into(),
                    mode: 0o644,
                    data: "x".into(),
                    owner: None,
                    timestamp: None,
                }),
            ),
            act(
                Some(4),
                Some(0),
                FileActionKind::Rm(Rm { path: "/app/t*".into(), allow_not_found: false, allow_wildcard: true }),
            ),
        ],
    };
    assert_eq!(chain_base(&op, 1, 0).unwrap(), Some(0));
    assert!(chain_sources(&op, 1, 0).unwrap().is_empty());
    run_chain(&op, 0, dest.path(), &[None], None).unwrap();
    assert_eq!(
        tree(dest.path()),
        ["app/ 755 5:5", "app/data/ 755 5:5", "app/data/hello 600 0:0 hi", "app/link -> data/hello"]
    );
    assert_eq!(fs::metadata(dest.path().join("app/data/hello")).unwrap().mtime(), 1_500_000_000);
    // rm of a missing path fails unless allowed.
    let rm = |allow| FileOp {
        actions: vec![act(
            Some(0),
            Some(0),
            FileActionKind::Rm(Rm { path: "/gone".into(), allow_not_found: allow, allow_wildcard: false }),
        )],
    };
    assert!(matches!(run_chain(&rm(false), 0, dest.path(), &[None], None), Err(FileOpError::NotFound { .. })));
    run_chain(&rm(true), 0, dest.path(), &[None], None).unwrap();
}

#[test]
fn copy_dir_materialises_a_filtered_context() {
    need_root!();
    let f = Fixture::new();
    let src = SourceDir::local(f.ctx.path(), vec![], vec!["dir/sub".into(), "*.txt".into()]);
    copy_dir(&src, f.dest.path()).unwrap();
    assert_eq!(
        tree(f.dest.path()),
        ["dir/ 755 0:0", "dir/a 644 0:0 a", "dir/empty/ 700 0:0", "foo 644 0:0 foo-contents"]
    );
}

#[test]
fn xattr_lists_and_values_longer_than_the_first_buffer_are_copied() {
    need_root!();
    let f = Fixture::new();
    let c = f.ctx.path();
    // Names past 1024 bytes in all and a value past 256 bytes: the copy reads both through the source's
    // fd and must grow its buffers for them.
    let names: Vec<String> = (0..20).map(|i| format!("user.{i:02}-{}", "n".repeat(52))).collect();
    let long = vec![b'v'; 600];
    for n in &names {
        snapshotter::sys::set_xattr(&c.join("foo"), n, n.as_bytes()).unwrap();
    }
    snapshotter::sys::set_xattr(&c.join("foo"), "user.long", &long).unwrap();
    run_copy(&f.src(), f.dest.path(), copy("/foo", "/copied")).unwrap();
    let d = f.dest.path().join("copied");
    for n in &names {
        assert_eq!(snapshotter::sys::get_xattr(&d, n).unwrap().as_deref(), Some(n.as_bytes()), "{n}");
    }
    assert_eq!(snapshotter::sys::get_xattr(&d, "user.long").unwrap(), Some(long));
    let (src, dst) = (fs::metadata(c.join("foo")).unwrap(), fs::metadata(&d).unwrap());
    assert_eq!((dst.mode(), dst.mtime(), dst.mtime_nsec()), (src.mode(), src.mtime(), src.mtime_nsec()));
}
