//! The namespace executor with its default helper in a process with a single thread: the helper is a fork
//! of the process, not a re-execution of it (`rbuild debug run` runs this way). No libtest harness, so the
//! runs happen on the process's only thread; this binary's `main` refuses to serve as a re-executed
//! helper, so a run that re-executed instead of forking fails.

mod common;

use sandbox::executor::{CollectOutput, ExecError, Stream};
use sandbox::{Cancel, Executor, ExitStatus, NamespaceExecutor, NetworkMode, ProcessSpec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(sandbox::init::HELPER_ARG) {
        eprintln!("forked_helper: re-executed as the helper; the executor should have forked");
        std::process::exit(3);
    }
    // The part of libtest's command line that cargo-nextest uses: list the one test (no ignored ones).
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("forked_helper: test");
        }
        return;
    }
    if let Some(reason) = common::skip_reason() {
        testkit::skip(&format!("{reason}; the forked helper needs root and busybox-static"));
        return;
    }
    let f = common::Fixture::new();
    let exec = NamespaceExecutor::new(f.dir.path().join("state"));
    let run = |args: &[&str], network: NetworkMode| {
        // A joined thread leaves the process's count a moment after the join returns.
        let start = std::time::Instant::now();
        while sandbox::sys::thread_count() != Some(1) && start.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(sandbox::sys::thread_count(), Some(1), "the runs must start on the only thread");
        let mut p = ProcessSpec::new(args.iter().map(|s| s.to_string()).collect());
        p.network = network;
        let out = CollectOutput::default();
        let r = exec.run(&f.mounts(), &p, &out, &Cancel::default());
        (r, out.text(Stream::Stdout), out.text(Stream::Stderr))
    };

    // Output on both streams, the exit code, the namespaces and the seccomp profile as for a re-executed
    // helper.
    let script = "echo out; echo err >&2; ip -o link | wc -l; echo $$; grep Seccomp: /proc/self/status; exit 7";
    let (r, out, err) = run(&["sh", "-c", script], NetworkMode::None);
    assert_eq!(r.unwrap().status, ExitStatus::Exited(7), "{err}");
    assert_eq!(out, "out\n1\n2\nSeccomp:\t2\n");
    assert_eq!(err, "err\n");
    // The helper's descriptors (the report socket, the parent's) do not reach the command.
    let (r, out, err) = run(&["sh", "-c", "ls /proc/self/fd | wc -l"], NetworkMode::Host);
    assert!(r.unwrap().status.success(), "{err}");
    assert_eq!(out.trim(), "4", "0, 1, 2 and ls's own directory");
    // A command that cannot start is a setup error naming it.
    let (r, _, _) = run(&["/no/such/command"], NetworkMode::None);
    match r {
        Err(ExecError::Setup(m)) => assert!(m.contains("/no/such/command"), "{m}"),
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert_eq!(f.leftover_state(), Vec::<String>::new(), "per-run state left behind");
    // Many runs leave no mounts or processes behind.
    for _ in 0..20 {
        assert!(run(&["true"], NetworkMode::None).0.unwrap().status.success());
    }
    let ours = f.dir.path().display().to_string();
    let left = std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&ours)).count();
    assert_eq!(left, 0, "mounts left behind");
    println!("forked_helper: ok");
}
