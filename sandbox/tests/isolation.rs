//! Isolation proofs against a busybox rootfs: what the process sees inside the namespace executor.

mod common;

use common::Fixture;
use sandbox::{ExitStatus, NetworkMode};

#[test]
fn pid_one_view_hostname_and_exit_code() {
    require_root!();
    let f = Fixture::new();
    let (r, out, err) = f.sh("echo pid=$$; hostname; cat /etc/hostname; ps -o pid,comm | wc -l; exit 7", |_| {});
    assert_eq!(r.unwrap().status, ExitStatus::Exited(7), "stderr: {err}");
    // The command is PID 1's child, so its pid is 2; ps sees init, sh, ps and wc (+ header).
    assert_eq!(out, "pid=2\nbuildkitsandbox\nbuildkitsandbox\n5\n");
}
