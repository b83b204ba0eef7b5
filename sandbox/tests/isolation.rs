//! Isolation proofs against a busybox rootfs: what the process sees, under both executors
//! (`namespace::*` and `runc::*`).

mod common;

use common::{Fixture, Kind};
use sandbox::{ExitStatus, NetworkMode};

fn pid_one_view_hostname_and_exit_code(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // The UTS name is set; no /etc/hostname is mounted over the rootfs (BuildKit mounts none).
    let (r, out, err) = f.sh(
        "echo pid=$$; hostname; cat /etc/hostname || echo none; ps -o pid,comm > /tmp/ps; wc -l < /tmp/ps; exit 7",
        |_| {},
    );
    assert_eq!(r.unwrap().status, ExitStatus::Exited(7), "stderr: {err}");
    let want = match kind {
        // The command is the child of our init (PID 1), so its pid is 2; ps sees init, sh and ps
        // (+ header). Its output goes to a file, not a pipe: in `ps | wc` ps may list the processes
        // before the shell has forked wc.
        Kind::Namespace => "pid=2\nbuildkitsandbox\nnone\n4\n",
        // runc runs the command as PID 1 itself.
        Kind::Runc => "pid=1\nbuildkitsandbox\nnone\n3\n",
    };
    assert_eq!(out, want);
}

fn network_none_has_only_loopback_up(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let (r, out, err) =
        f.sh("ip -o link | cut -d: -f2; ip -o addr show lo | grep -c 127.0.0.1", |p| p.network = NetworkMode::None);
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert_eq!(out, " lo\n1\n");
}

fn host_network_sees_the_host_interfaces(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // Other tests add and remove veth pairs on the host while this one runs, so the step's list is
    // compared with the host's lists taken before and after it: every interface present in both must be
    // seen, and nothing that was in neither.
    let names = |dev: &str| -> std::collections::BTreeSet<String> {
        dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(|n| n.trim().to_string()).collect()
    };
    let before = names(&std::fs::read_to_string("/proc/net/dev").unwrap());
    let (r, out, err) = f.sh("cat /proc/net/dev", |p| p.network = NetworkMode::Host);
    let after = names(&std::fs::read_to_string("/proc/net/dev").unwrap());
    assert!(r.unwrap().status.success(), "stderr: {err}");
    let seen = names(&out);
    let stable: Vec<_> = before.intersection(&after).collect();
    assert!(stable.iter().all(|n| seen.contains(*n)), "host interfaces {stable:?}, the step saw {seen:?}");
    assert!(seen.iter().all(|n| before.contains(n) || after.contains(n)), "host {before:?}, the step saw {seen:?}");
}

fn default_network_is_a_namespace_of_its_own_with_nat(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let server = common::NetnsServer::start(&[("marker", "through-nat\n")]);
    let local = common::LoopbackServer::start("host-loopback");
    let script = format!(
        "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
         timeout 5 wget -q -O - {}; \
         timeout 3 wget -q -O - http://127.0.0.1:{}/ && echo LOOPBACK-REACHED; \
         gw=$(ip route | sed -n 's/^default via \\([0-9.]*\\).*/\\1/p'); \
         timeout 3 wget -q -O - http://$gw:{}/ && echo HOST-REACHED; echo end",
        server.url("marker"),
        local.port,
        local.port
    );
    let (r, out, err) = f.sh(&script, |_| {});
    assert!(r.unwrap().status.success(), "stderr: {err}");
    // Only its own interfaces, a server in another namespace through NAT, and none of the host's
    // loopback services (neither as 127.0.0.1 nor through the host's end of the pair).
    assert_eq!(out, "eth0 lo \nthrough-nat\nend\n", "stderr: {err}");
    assert_eq!(local.stop(), 0, "a step reached the host's loopback");
}

fn only_the_default_devices_can_be_opened(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // CAP_MKNOD stays (as under Docker), but the seccomp profile lets mknod make only files, fifos, sockets
    // and the default devices' nodes: any other node is refused with EPERM (Docker's errno). 7:0 is the
    // host's first loop device, 10:232 kvm, 10:229 fuse, 1:1 /dev/mem.
    let script = "for n in 'b 7 0' 'b 8 0' 'c 10 232' 'c 10 229' 'c 1 1'; do \
                    if mknod /tmp/d $n 2>/tmp/err; then \
                      dd if=/tmp/d of=/dev/null bs=1 count=1 2>&1 | grep -qE 'not permitted|Permission denied' && echo opened-not; rm /tmp/d; \
                    else grep -q 'not permitted' /tmp/err && echo refused; fi; \
                  done; \
                  mknod /tmp/null c 1 3 && { (echo x > /tmp/null) 2>/dev/null && echo own-null-ok || echo own-null-refused; }; \
                  echo x > /dev/null && head -c 1 /dev/urandom | wc -c; echo end";
    let (r, out, err) = f.sh(script, |_| {});
    assert!(r.unwrap().status.success(), "stderr: {err}");
    // A node of an allowed device made by the step opens under runc (its cgroup allows c 1:3); under the
    // namespace executor no node the step makes opens (nodev), only the ones /dev provides.
    let own = if kind == Kind::Runc { "own-null-ok" } else { "own-null-refused" };
    assert_eq!(out, format!("refused\nrefused\nrefused\nrefused\nrefused\n{own}\n1\nend\n"), "stderr: {err}");
}

fn host_files_are_invisible_and_changes_stay_in_the_upper_layer(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let marker = f.dir.path().join("host-marker");
    std::fs::write(&marker, "secret").unwrap();
    let script = format!("test -e {} && echo leaked; ls /; echo new > /created; rm /etc/group", marker.display());
    let (r, out, err) = f.sh(&script, |p| p.cwd = "/work/here".into());
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert!(!out.contains("leaked"));
    assert_eq!(std::fs::read_to_string(f.upper().join("created")).unwrap(), "new\n");
    assert!(f.lower().join("etc/group").exists(), "the lower layer must not change");
    // WORKDIR is created and kept; mount stubs (/proc, /sys, /dev, /etc/hosts, ...) are not.
    assert!(f.upper().join("work/here").is_dir());
    for stub in ["proc", "sys", "dev", "etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        assert!(!f.upper().join(stub).exists(), "stub {stub} leaked into the layer");
    }
}

fn no_inherited_fds_and_default_caps(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let (r, out, err) =
        f.sh("ls /proc/self/fd | tr '\\n' ' '; echo; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status", |_| {});
    assert!(r.unwrap().status.success(), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    // 0, 1, 2 and the directory ls itself opened.
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["0", "1", "2", "3"]);
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["CapEff:", "00000000a80425fb"]);
    assert_eq!(lines[2].split_whitespace().collect::<Vec<_>>(), ["CapBnd:", "00000000a80425fb"]);
    assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["NoNewPrivs:", "1"]);
}

fn users_groups_and_home(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let cases = [
        ("", "0 0 0 /root"),
        ("app", "1000 1000 1000 10 /home/app"),
        ("1234", "1234 0 0 /"),
        ("app:wheel", "1000 10 10 /home/app"),
    ];
    for (user, want) in cases {
        let (r, out, err) = f.sh("echo $(id -u) $(id -g) $(id -G) $HOME", |p| p.user = user.into());
        assert!(r.unwrap().status.success(), "USER {user:?}: {err}");
        assert_eq!(out.trim(), want, "USER {user:?}");
    }
    // The supplementary groups as the kernel holds them (`id -G` hides a missing primary gid): the
    // primary gid is always one of them, as BuildKit's ensureAdditionalGids makes it.
    for (user, want) in [("", "0"), ("app", "10 1000"), ("1234:5678", "5678"), ("app:wheel", "10")] {
        let (r, out, err) = f.sh("grep ^Groups: /proc/self/status", |p| p.user = user.into());
        assert!(r.unwrap().status.success(), "USER {user:?}: {err}");
        assert_eq!(out.split_whitespace().skip(1).collect::<Vec<_>>().join(" "), want, "USER {user:?}");
    }
    let (r, out, _) = f.sh("grep CapEff /proc/self/status", |p| p.user = "app".into());
    assert!(r.unwrap().status.success());
    assert_eq!(out.split_whitespace().nth(1), Some("0000000000000000"));
    let (r, _, _) = f.sh("true", |p| p.user = "ghost".into());
    assert!(r.unwrap_err().to_string().contains("unable to find user ghost"));
}

fn signals_and_exec_failures_are_reported(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // A child killed by a signal: its shell exits 128 + 15, in both executors.
    let (r, _, _) = f.sh("sleep 100 & kill -TERM $!; wait $!", |_| {});
    assert_eq!(r.unwrap().status.code(), 143);
    // The command killing itself. Under runc it is PID 1 of its namespace, which the kernel protects from
    // signals it does not handle (the reason the namespace executor puts an init in front of it).
    let (r, _, _) = f.sh("kill -TERM $$", |_| {});
    let want = if kind == Kind::Namespace { ExitStatus::Signaled(libc::SIGTERM) } else { ExitStatus::Exited(0) };
    assert_eq!(r.unwrap().status, want);
    let mut p = sandbox::ProcessSpec::new(vec!["no-such-tool".into()]);
    p.env = vec!["PATH=/bin".into()];
    let out = sandbox::executor::CollectOutput::default();
    let r = f.executor().run(&f.mounts(), &p, &out, &Default::default());
    let message = match r {
        Err(e) => e.to_string(),
        Ok(o) => {
            assert!(!o.status.success());
            out.text(sandbox::executor::Stream::Stderr)
        }
    };
    // runc's log quotes the quotes.
    let message = message.replace("\\\"", "\"");
    assert!(message.contains("\"no-such-tool\": executable file not found in $PATH"), "{message}");
}

fn workdir_through_proc_self_fd_cannot_reach_the_host(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // CVE-2024-21626: a leaked host descriptor would make /proc/self/fd/N a way out.
    // The namespace executor refuses with an error; runc refuses with its own message and status 1.
    for n in 3..8 {
        let (r, out, err) = f.sh("echo ran; pwd; ls ..", |p| p.cwd = format!("/proc/self/fd/{n}"));
        match &r {
            Ok(o) if kind == Kind::Runc && !o.status.success() && out.is_empty() => {
                assert!(err.contains("runc run failed"), "{err}")
            }
            Ok(o) => panic!("WORKDIR /proc/self/fd/{n} ran with {:?}: {out}", o.status),
            Err(_) => {}
        }
    }
}

fn masked_and_readonly_paths(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let (r, out, err) = f.sh(
        "wc -c < /proc/interrupts; awk '$2==\"/proc/sys\"{print $4}' /proc/mounts | cut -d, -f1; awk '$2==\"/sys\"{print $4}' /proc/mounts | cut -d, -f1; ls /dev | tr '\\n' ' '",
        |p| p.network = NetworkMode::None,
    );
    assert!(r.unwrap().status.success(), "stderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["0", "ro", "ro"]);
    for dev in ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue", "fd", "ptmx"] {
        assert!(lines[3].split_whitespace().any(|d| d == dev), "/dev/{dev} missing: {}", lines[3]);
    }
}

fn output_is_streamed_per_line_with_both_streams(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let (r, out, err) = f.sh("echo a; echo b >&2; printf 'c\\nd'", |_| {});
    assert!(r.unwrap().status.success());
    assert_eq!(out, "a\nc\nd\n");
    assert_eq!(err, "b\n");
}

fn cancellation_kills_the_namespace(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let cancel = sandbox::Cancel::default();
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        c2.cancel();
    });
    let start = std::time::Instant::now();
    let p = sandbox::ProcessSpec::new(vec!["/bin/sh".into(), "-c".into(), "sleep 100 & sleep 100".into()]);
    let r = f.executor().run(&f.mounts(), &p, &sandbox::executor::CollectOutput::default(), &cancel);
    t.join().unwrap();
    assert!(matches!(r, Err(sandbox::ExecError::Cancelled)), "{r:?}");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
}

fn no_mounts_leak_after_many_runs(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    // Only mounts under the fixture can come from these runs; other tests on the host mount and unmount
    // elsewhere at the same time.
    let ours = f.dir.path().display().to_string();
    let count =
        || std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().filter(|l| l.contains(&ours)).count();
    // runc takes ten times longer per run; 1000 namespace runs, 100 runc runs unless asked otherwise.
    let default_runs = if kind == Kind::Namespace { 1000 } else { 100 };
    let runs: usize = std::env::var("SANDBOX_LEAK_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(default_runs);
    for i in 0..runs {
        let network = if i % 2 == 0 { NetworkMode::None } else { NetworkMode::Host };
        let (r, _, _) = f.sh("true", |p| p.network = network);
        assert!(r.unwrap().status.success());
    }
    assert_eq!(count(), 0, "mounts left behind");
    assert_eq!(f.leftover_state(), Vec::<String>::new(), "per-run state left behind");
}

fn seccomp_blocks_namespaces_and_mounts_but_not_normal_work(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let script = "unshare -U true 2>/dev/null && echo unshare-ran; \
                  mount -t tmpfs none /mnt 2>/dev/null && echo mount-ran; \
                  mkdir -p /mnt/a && echo hi > /mnt/a/f && cat /mnt/a/f; \
                  (sleep 0 &) ; wait; chroot / true && echo chroot-ok";
    let (r, out, err) = f.sh(script, |_| {});
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert_eq!(out, "hi\nchroot-ok\n", "stderr: {err}");
    // The same commands with seccomp off: CAP_SYS_ADMIN is still missing, so mount fails anyway, which
    // proves nothing; but unshare(CLONE_NEWUSER) needs no capability and is only stopped by seccomp.
    let (r, out, err) = f.sh("unshare -U true && echo unshare-ran", |p| p.seccomp = false);
    assert!(r.unwrap().status.success(), "stderr: {err}");
    assert_eq!(out, "unshare-ran\n");
    let (r, _, err) = f.sh("unshare -U true", |_| {});
    assert!(!r.unwrap().status.success());
    assert!(err.contains("Operation not permitted"), "{err}");
}

fn limits_apply_through_cgroup_v2_or_warn(kind: Kind) {
    require_root!(kind);
    let f = Fixture::with(kind);
    let limits = sandbox::Limits { pids: Some(8), memory: Some(64 << 20), ..Default::default() };
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & done 2>&1; wait; echo done";
    let (r, out, err) = f.sh(script, |p| p.limits = limits.clone());
    let outcome = r.unwrap();
    match sandbox::cgroup::CgroupV2::host().map_err(|e| (e, kind)) {
        // runc applies the spec's resources itself, on cgroup v1 too.
        Ok(_) | Err((_, Kind::Runc)) => {
            assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
            assert!(format!("{out}{err}").contains("can't fork"), "pids.max did not stop the 9th process: {out} {err}");
        }
        Err((why, _)) => {
            eprintln!("no cgroup v2 here ({why}): checking the warning path");
            assert!(outcome.status.success(), "{err}");
            assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
            assert!(outcome.warnings[0].starts_with("resource limits (memory, pids, cpu) not applied: "));
        }
    }
    // Without limits, no cgroup and no warning.
    let (r, _, _) = f.sh("true", |_| {});
    assert!(r.unwrap().warnings.is_empty());
}

both_executors!(
    pid_one_view_hostname_and_exit_code,
    network_none_has_only_loopback_up,
    host_network_sees_the_host_interfaces,
    default_network_is_a_namespace_of_its_own_with_nat,
    only_the_default_devices_can_be_opened,
    host_files_are_invisible_and_changes_stay_in_the_upper_layer,
    no_inherited_fds_and_default_caps,
    users_groups_and_home,
    signals_and_exec_failures_are_reported,
    workdir_through_proc_self_fd_cannot_reach_the_host,
    masked_and_readonly_paths,
    output_is_streamed_per_line_with_both_streams,
    cancellation_kills_the_namespace,
    no_mounts_leak_after_many_runs,
    seccomp_blocks_namespaces_and_mounts_but_not_normal_work,
    limits_apply_through_cgroup_v2_or_warn,
);

/// The namespace executor pools the default network's namespaces (as BuildKit pools its CNI ones): a later
/// step of the same executor gets the idle one, with its address, while two steps running at once never
/// share one; none is left on the host once the executor is gone.
#[test]
fn namespace_step_networks_are_pooled_and_never_shared_while_running() {
    use sandbox::executor::{Cancel, CollectOutput, Stream};
    require_root!(Kind::Namespace);
    let (a, b) = (Fixture::new(), Fixture::new());
    let exec = a.executor();
    let run = |f: &Fixture, script: &str| {
        let p = sandbox::ProcessSpec::new(vec!["/bin/sh".into(), "-c".into(), script.into()]);
        let out = CollectOutput::default();
        let r = exec.run(&f.mounts(), &p, &out, &Cancel::default());
        assert!(r.unwrap().status.success(), "{}", out.text(Stream::Stderr));
        out.text(Stream::Stdout)
    };
    let which = "readlink /proc/self/ns/net; ip -o -4 addr show eth0 | awk '{print $4}'";
    let first = run(&a, which);
    a.reset();
    assert_eq!(run(&a, which), first, "a later step did not get the idle namespace");
    a.reset();
    let (x, y) = std::thread::scope(|s| {
        let x = s.spawn(|| run(&a, &format!("{which}; sleep 1")));
        let y = s.spawn(|| run(&b, &format!("{which}; sleep 1")));
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_ne!(x, y, "two running steps shared a namespace");
    assert!([&x, &y].contains(&&first), "the idle namespace was not used: {first} {x} {y}");
    // The host ends of the pool's pairs (`rb<n>` for the n-th /30 of the steps' subnet) go with it.
    let host_if = |out: &str| {
        let addr: std::net::Ipv4Addr = out.lines().nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
        let n = (u32::from(addr) - u32::from(sandbox::network::SUBNET.0)) / 4;
        std::path::Path::new("/sys/class/net").join(format!("rb{n}"))
    };
    let ends = [host_if(&x), host_if(&y)];
    assert!(ends.iter().all(|p| p.exists()), "{ends:?}");
    drop(exec);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ends.iter().any(|p| p.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!ends.iter().any(|p| p.exists()), "the pool's host interfaces outlived it: {ends:?}");
}
