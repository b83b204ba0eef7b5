//! Both executors run the same spec: the process must see the same world (hostname, capabilities,
//! no_new_privs and seccomp mode, ids, network interfaces, mounts, environment).

mod common;

use common::{Fixture, Kind};
use sandbox::NetworkMode;

const PROBE: &str = "hostname; id; \
    grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
    ip -o link | cut -d: -f2 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
    awk '{print $2, $3}' /proc/self/mounts | sort; \
    env | grep -v '^PWD=' | sort; pwd; umask; ulimit -n";

fn probe(kind: Kind, user: &str, network: NetworkMode) -> Option<String> {
    if let Some(reason) = common::skip_reason().or_else(|| common::kind_skip_reason(kind)) {
        testkit::skip(&reason);
        return None;
    }
    let f = Fixture::with(kind);
    let (r, out, err) = f.sh(PROBE, |p| {
        p.user = user.into();
        p.network = network;
        p.cwd = "/tmp".into();
    });
    assert!(r.unwrap().status.success(), "{kind:?}: {err}");
    Some(out)
}

/// The one intended difference: the namespace executor's /dev is `nodev` (it keeps devices out by mount
/// flags, runc by its device cgroup), so its default devices are binds of the host's (devtmpfs) where
/// runc makes nodes on the /dev tmpfs, and paths masked with /dev/null show that.
fn normalise_devices(probe: &str) -> String {
    let mut out = String::new();
    for l in probe.lines() {
        match l.strip_suffix(" devtmpfs") {
            Some(dev) if sandbox::rootfs::DEVICES.iter().any(|d| dev == format!("/dev/{d}")) => continue,
            Some(masked) => out.push_str(&format!("{masked} tmpfs\n")),
            None => out.push_str(&format!("{l}\n")),
        }
    }
    out
}

fn compare(user: &str, network: NetworkMode) {
    let Some(ours) = probe(Kind::Namespace, user, network).map(|p| normalise_devices(&p)) else { return };
    let Some(runc) = probe(Kind::Runc, user, network) else { return };
    let diff: Vec<String> = {
        let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), runc.lines().collect());
        let only_a = a.iter().filter(|l| !b.contains(l)).map(|l| format!("namespace only: {l}"));
        let only_b = b.iter().filter(|l| !a.contains(l)).map(|l| format!("runc only:      {l}"));
        only_a.chain(only_b).collect()
    };
    assert!(diff.is_empty(), "the executors disagree (user {user:?}, {network:?}):\n{}", diff.join("\n"));
    assert!(ours.contains("Seccomp:\t2"), "{ours}");
}

#[test]
fn root_with_network_none_sees_the_same() {
    compare("", NetworkMode::None);
}

#[test]
fn a_user_with_host_network_sees_the_same() {
    compare("app", NetworkMode::Host);
}
