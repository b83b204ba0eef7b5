//! The default RUN network: a network namespace of the step's own, joined to the host by a veth pair and
//! reaching out through NAT, as Docker's builder and BuildKit's CNI bridge do. The step sees only its
//! `eth0` and loopback: not the host's interfaces, not the host's loopback services, not the host's
//! traffic (CAP_NET_RAW captures only its own packets).
//!
//! - Addresses: each run leases one /30 of [`SUBNET`]: the host end `rb<n>` gets `.1`, the step's `eth0`
//!   `.2` with the default route through `.1`. A lease is a lock file under `/run/rbuild/net` held with
//!   flock while the step runs, so concurrent rbuild processes never share one and a killed process
//!   frees its own.
//! - NAT: `iptables` rules in chains of rbuild's own (`RBUILD-POSTROUTING` masquerades the subnet,
//!   `RBUILD-FORWARD` lets steps out and replies back in, and drops traffic between steps and new
//!   connections towards them), added once per process where missing, and IPv4 forwarding on. Where they
//!   cannot be made the error says so; `--network none` and (with the entitlement) `--network host`
//!   still work.
//! - The namespace executor pools them ([`NetPool`]), as BuildKit pools its CNI namespaces: making a
//!   namespace and its veth pair costs more than the rest of a trivial RUN, so a step's helper joins a
//!   prepared one (setns) and the step gives it back when it ends; the runc executor makes one per step
//!   ([`NetnsMount`], a path runc can join). Running steps never share one. What a step
//!   could leave behind cannot outlive it: its pid namespace dies with it (no process, so no socket or
//!   listener stays), it has no CAP_NET_ADMIN (no route, address or firewall change) and /proc/sys is
//!   read-only; a step run without the seccomp profile does not give its namespace back.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::sys::netlink::RouteSocket;

/// The addresses steps get: one /30 per run.
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 213, 0, 0), 16);

/// Where the lease files are.
pub const LEASE_DIR: &str = "/run/rbuild/net";

/// The name of the step's interface.
pub const STEP_IF: &str = "eth0";

/// The errors of the default network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot make the step's network namespace: {0}")]
    Namespace(io::Error),
    #[error(
        "cannot set up the default RUN network (a network namespace with NAT): {0}; build with --network none, or \
         --network host --allow network.host to use the host's network"
    )]
    Nat(String),
    #[error("cannot lease an address for the step's network in {dir}: {source}")]
    Lease { dir: PathBuf, source: io::Error },
    #[error("every address of {0}/{1} is in use by running steps")]
    Exhausted(Ipv4Addr, u8),
}

/// One step's network: the host's end and the step's address, a /30.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPlan {
    pub host_if: String,
    pub host_addr: Ipv4Addr,
    pub step_addr: Ipv4Addr,
    pub prefix: u8,
    pub mtu: Option<u32>,
}

impl NetPlan {
    /// The plan of the `n`th /30 of [`SUBNET`] (`n` > 0).
    pub fn nth(n: u32, mtu: Option<u32>) -> NetPlan {
        let base = u32::from(SUBNET.0) + n * 4;
        NetPlan {
            host_if: format!("rb{n}"),
            host_addr: Ipv4Addr::from(base + 1),
            step_addr: Ipv4Addr::from(base + 2),
            prefix: 30,
            mtu,
        }
    }
}

/// How many /30s [`SUBNET`] holds (the first is not used).
fn slots() -> u32 {
    1 << (32 - SUBNET.1 - 2)
}

/// A leased /30, free again when this is dropped (or its process dies).
#[derive(Debug)]
pub struct Lease {
    pub plan: NetPlan,
    _lock: File,
}

impl Lease {
    /// Takes the first free /30, starting at a place that depends on the pid so concurrent processes
    /// rarely try the same ones.
    pub fn take() -> Result<Lease, NetworkError> {
        Lease::take_in(Path::new(LEASE_DIR))
    }

    pub fn take_in(dir: &Path) -> Result<Lease, NetworkError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |source| NetworkError::Lease { dir: dir.to_path_buf(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
        let total = slots() - 1;
        let start = std::process::id() % total;
        let mtu = uplink_mtu();
        for i in 0..total {
            let n = 1 + (start + i) % total;
            let lock = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(format!("{n}.lease")))
                .map_err(err)?;
            match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Lease { plan: NetPlan::nth(n, mtu), _lock: lock }),
                Err(rustix::io::Errno::WOULDBLOCK) => continue,
                Err(e) => return Err(err(e.into())),
            }
        }
        Err(NetworkError::Exhausted(SUBNET.0, SUBNET.1))
    }
}

/// The MTU of the interface of the host's default route (a VPN or overlay host has a small one; a step's
/// packets must fit it).
fn uplink_mtu() -> Option<u32> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let iface = routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })?;
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu")).ok()?.trim().parse().ok()
}

/// Host routes (other than rbuild's own) that overlap [`SUBNET`]: steps could not reach them, and their
/// traffic would be taken for a step's.
fn overlapping_routes() -> Vec<String> {
    let Ok(routes) = std::fs::read_to_string("/proc/net/route") else { return Vec::new() };
    let ours = u32::from(SUBNET.0);
    let our_mask = u32::MAX << (32 - SUBNET.1);
    let mut out = Vec::new();
    for l in routes.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0].starts_with("rb") {
            continue;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        let (Some(dest), Some(mask)) = (hex(f[1]), hex(f[7])) else { continue };
        if mask == 0 {
            continue;
        }
        let both = mask & our_mask;
        if dest & both == ours & both {
            out.push(format!("{}/{} on {}", Ipv4Addr::from(dest), mask.count_ones(), f[0]));
        }
    }
    out
}

/// What the default network uses on this host, once set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatInfo {
    /// E.g. `veth pairs in 10.213.0.0/16, NAT by iptables v1.8.9 (nf_tables)`.
    pub description: String,
}

static NAT: OnceLock<Result<NatInfo, String>> = OnceLock::new();

/// Sets up the host's side once per process: IPv4 forwarding and the NAT and forwarding rules. Safe to
/// run from several processes at once (`iptables -w`, each rule added only where missing).
pub fn ensure_nat() -> Result<NatInfo, NetworkError> {
    NAT.get_or_init(setup_nat).clone().map_err(NetworkError::Nat)
}

fn setup_nat() -> Result<NatInfo, String> {
    // One process at a time checks and adds the rules: two that both find a rule missing would add it
    // twice.
    use std::os::unix::fs::DirBuilderExt;
    let dir = Path::new(LEASE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock_path = dir.join("setup.lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let overlaps = overlapping_routes();
    if !overlaps.is_empty() {
        return Err(format!(
            "the host already routes {} (inside the steps' subnet {}/{})",
            overlaps.join(", "),
            SUBNET.0,
            SUBNET.1
        ));
    }
    let forward = Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(forward).map_err(|e| format!("cannot read {}: {e}", forward.display()))?.trim() != "1" {
        std::fs::write(forward, "1")
            .map_err(|e| format!("cannot turn on IPv4 forwarding ({}): {e}", forward.display()))?;
    }
    let ipt = find_iptables().ok_or("iptables is not installed (apt-get install iptables)")?;
    let subnet = format!("{}/{}", SUBNET.0, SUBNET.1);
    let rules = nat_rules(&subnet);
    // The fast path, one command instead of ten (each `iptables` run costs a few ms, all before the first
    // RUN can start): the rules as `iptables-save` lists them. A rule listed there exists; one listed in
    // another form only sends us down the slow path, which checks each rule with `-C`.
    if let Some(version) = saved_rules_present(&ipt, &rules) {
        return Ok(NatInfo { description: format!("veth pairs in {subnet}, NAT by {version}") });
    }
    let version = Command::new(&ipt)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    for r in &rules {
        match r {
            NatRule::Chain { table, chain } => match iptables(&ipt, &["-t", table, "-N", chain]) {
                Ok(()) => {}
                Err(e) if e.contains("already exists") => {}
                Err(e) => return Err(e),
            },
            NatRule::Rule { table, chain, first, spec } => {
                let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
                let mut check = vec!["-t", table, "-C", chain];
                check.extend_from_slice(&spec);
                if iptables(&ipt, &check).is_ok() {
                    continue;
                }
                let mut add = if *first { vec!["-t", table, "-I", chain, "1"] } else { vec!["-t", table, "-A", chain] };
                add.extend_from_slice(&spec);
                iptables(&ipt, &add)?;
            }
        }
    }
    Ok(NatInfo { description: format!("veth pairs in {subnet}, NAT by {version}") })
}

/// One piece of the host's NAT set-up, in the order it is made.
#[derive(Debug)]
enum NatRule {
    /// A chain of rbuild's own.
    Chain { table: &'static str, chain: &'static str },
    /// A rule, appended (or inserted first with `first`) where missing.
    Rule { table: &'static str, chain: &'static str, first: bool, spec: Vec<String> },
}

impl NatRule {
    /// The table this belongs to and the line `iptables-save` prints for it (a chain: its name's prefix).
    fn saved_line(&self) -> (&'static str, String) {
        match self {
            NatRule::Chain { table, chain } => (table, format!(":{chain} ")),
            NatRule::Rule { table, chain, spec, .. } => (table, format!("-A {chain} {}", spec.join(" "))),
        }
    }
}

/// The chains and rules of the default network for `subnet`: `RBUILD-POSTROUTING` masquerades what leaves
/// the subnet; `RBUILD-FORWARD` (first in FORWARD) drops traffic between steps, lets steps out, lets replies
/// in and drops new connections towards steps.
fn nat_rules(subnet: &str) -> Vec<NatRule> {
    let rule = |table, chain, first, spec: &[&str]| NatRule::Rule {
        table,
        chain,
        first,
        spec: spec.iter().map(|a| a.replace("SUBNET", subnet)).collect(),
    };
    vec![
        NatRule::Chain { table: "nat", chain: "RBUILD-POSTROUTING" },
        rule("nat", "POSTROUTING", false, &["-j", "RBUILD-POSTROUTING"]),
        rule("nat", "RBUILD-POSTROUTING", false, &["-s", "SUBNET", "!", "-d", "SUBNET", "-j", "MASQUERADE"]),
        NatRule::Chain { table: "filter", chain: "RBUILD-FORWARD" },
        rule("filter", "FORWARD", true, &["-j", "RBUILD-FORWARD"]),
        rule("filter", "RBUILD-FORWARD", false, &["-s", "SUBNET", "-d", "SUBNET", "-j", "DROP"]),
        rule("filter", "RBUILD-FORWARD", false, &["-s", "SUBNET", "-j", "ACCEPT"]),
        rule(
            "filter",
            "RBUILD-FORWARD",
            false,
            &["-d", "SUBNET", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ),
        rule("filter", "RBUILD-FORWARD", false, &["-d", "SUBNET", "-j", "DROP"]),
    ]
}

/// When `iptables-save` (beside `ipt`) lists every one of `rules`: the version it names (as `iptables
/// --version` prints it). None when it cannot run or something is missing.
fn saved_rules_present(ipt: &Path, rules: &[NatRule]) -> Option<String> {
    let save = ipt.with_file_name("iptables-save");
    let out = Command::new(&save).output().ok()?;
    if !out.status.success() {
        return None;
    }
    all_rules_listed(&String::from_utf8_lossy(&out.stdout), rules)
}

/// Whether the `iptables-save` output `text` lists each of `rules` in its table; Some(the version named in
/// its header) if so.
fn all_rules_listed(text: &str, rules: &[NatRule]) -> Option<String> {
    let mut tables: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    let mut table = "";
    let mut version = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if let Some(rest) = line.strip_prefix("# Generated by iptables-save ") {
            version.get_or_insert_with(|| rest.split(" on ").next().unwrap_or(rest).to_string());
        } else if !line.is_empty() && !line.starts_with('#') {
            tables.entry(table).or_default().push(line);
        }
    }
    let listed = rules.iter().all(|r| {
        let (t, want) = r.saved_line();
        let lines = tables.get(t).map(Vec::as_slice).unwrap_or_default();
        match r {
            NatRule::Chain { .. } => lines.iter().any(|l| l.starts_with(&want)),
            NatRule::Rule { .. } => lines.iter().any(|l| *l == want),
        }
    });
    listed.then(|| format!("iptables {}", version.unwrap_or_default()).trim_end().to_string())
}

fn find_iptables() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join("iptables"))
        .find(|p| p.is_file());
    found
}

fn iptables(bin: &Path, args: &[&str]) -> Result<(), String> {
    let out =
        Command::new(bin).arg("-w").args(args).output().map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{} -w {} failed: {}", bin.display(), args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
}

/// In the helper, after it unshared its network namespace: creates the veth pair through `host` (a socket
/// opened in the host's namespace), addresses both ends and routes the step's traffic through the host's.
pub fn configure(host: &mut RouteSocket, plan: &NetPlan) -> io::Result<()> {
    let ctx = |what: &'static str| move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let netns = File::open("/proc/thread-self/ns/net").map_err(ctx("open the new network namespace"))?;
    // A link of this name may outlive a killed process for a moment; the lease says it is ours now.
    host.delete_link(&plan.host_if).map_err(ctx("remove a stale host interface"))?;
    host.create_veth(&plan.host_if, STEP_IF, std::os::fd::AsFd::as_fd(&netns), plan.mtu)
        .map_err(ctx("create the veth pair"))?;
    let index = host.link_index(&plan.host_if).map_err(ctx("find the host interface"))?;
    host.add_address(index, plan.host_addr, plan.prefix).map_err(ctx("address the host interface"))?;
    host.set_up(index).map_err(ctx("bring the host interface up"))?;
    let mut inner = RouteSocket::open().map_err(ctx("open a netlink socket in the step's namespace"))?;
    let index = inner.link_index(STEP_IF).map_err(ctx("find the step's interface"))?;
    inner.add_address(index, plan.step_addr, plan.prefix).map_err(ctx("address the step's interface"))?;
    inner.set_up(index).map_err(ctx("bring the step's interface up"))?;
    inner.add_default_route(plan.host_addr, index).map_err(ctx("add the default route"))
}

/// Prepared step networks of one executor: a namespace with its veth pair and address each, held open by
/// this process (so none outlives it, however it ends), handed to one running step at a time (see the
/// module docs).
#[derive(Debug, Default)]
pub struct NetPool {
    free: std::sync::Mutex<Vec<(NetNs, Lease)>>,
}

/// How many idle namespaces a pool keeps (more were running at once; the rest are let go).
const POOL_KEEP: usize = 8;

impl NetPool {
    pub fn new() -> NetPool {
        NetPool::default()
    }

    /// A namespace for one step: an idle one, or a new one (NAT set up first, an address leased).
    pub fn take(self: &std::sync::Arc<Self>) -> Result<PooledNet, NetworkError> {
        let idle = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let net = match idle {
            Some(n) => n,
            None => {
                ensure_nat()?;
                let lease = Lease::take()?;
                let ns = NetNs::create(&lease.plan).map_err(NetworkError::Namespace)?;
                (ns, lease)
            }
        };
        Ok(PooledNet { pool: self.clone(), net: Some(net), reuse: true })
    }

    /// How many idle namespaces the pool holds.
    pub fn idle(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A pooled namespace lent to one step; back to the pool when dropped (unless [`PooledNet::discard`]ed).
#[derive(Debug)]
pub struct PooledNet {
    pool: std::sync::Arc<NetPool>,
    net: Option<(NetNs, Lease)>,
    reuse: bool,
}

impl PooledNet {
    /// A path that opens the namespace while this process lives (for a helper to setns into).
    pub fn path(&self) -> PathBuf {
        self.net.as_ref().map(|(n, _)| n.proc_path()).unwrap_or_default()
    }

    /// The step's addresses.
    pub fn plan(&self) -> Option<&NetPlan> {
        self.net.as_ref().map(|(_, l)| &l.plan)
    }

    /// Lets the namespace go instead of giving it back (a step that could have changed it).
    pub fn discard(&mut self) {
        self.reuse = false;
    }
}

impl Drop for PooledNet {
    fn drop(&mut self) {
        let Some(net) = self.net.take() else { return };
        if !self.reuse {
            return;
        }
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_KEEP {
            free.push(net);
        }
    }
}

/// A network namespace with a step's network, held open by this process: it goes (with its veth pair)
/// when the last descriptor and process in it do.
#[derive(Debug)]
pub struct NetNs {
    fd: std::os::fd::OwnedFd,
}

impl NetNs {
    /// Makes the namespace on a thread of its own (a network namespace is per thread, so the process's
    /// other threads are not moved), with its loopback up and `plan`'s veth pair and addresses.
    pub fn create(plan: &NetPlan) -> io::Result<NetNs> {
        use crate::sys::{LinuxSyscall, Syscall};
        let fd = std::thread::scope(|s| {
            s.spawn(|| -> io::Result<std::os::fd::OwnedFd> {
                let sys = LinuxSyscall;
                let mut host = RouteSocket::open()?;
                sys.unshare(libc::CLONE_NEWNET)?;
                sys.loopback_up()?;
                configure(&mut host, plan)?;
                Ok(File::open("/proc/thread-self/ns/net")?.into())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the network setup thread panicked")))
        })?;
        Ok(NetNs { fd })
    }

    /// `/proc/<this pid>/fd/<fd>`: opens the namespace from another process of the host's pid namespace.
    pub fn proc_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd()))
    }
}

/// A network namespace with the step's network, kept alive by a bind mount of it on `path` (as
/// `ip netns add` does) for an OCI runtime to join; unmounted and removed when dropped. A killed process
/// leaves the mount in its scratch directory, which the state root's startup pass detaches.
#[derive(Debug)]
pub struct NetnsMount {
    path: PathBuf,
}

impl NetnsMount {
    /// Makes the namespace on a thread of its own (a network namespace is per thread, so the process's
    /// other threads are not moved) and binds it on `path`.
    pub fn create(path: &Path, plan: &NetPlan) -> io::Result<NetnsMount> {
        use crate::sys::{LinuxSyscall, Syscall};
        std::fs::File::create(path)?;
        let made = NetnsMount { path: path.to_path_buf() };
        std::thread::scope(|s| {
            s.spawn(|| -> io::Result<()> {
                let sys = LinuxSyscall;
                let mut host = RouteSocket::open()?;
                sys.unshare(libc::CLONE_NEWNET)?;
                sys.mount("/proc/thread-self/ns/net", path, "", libc::MS_BIND, "")?;
                sys.loopback_up()?;
                configure(&mut host, plan)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the network setup thread panicked")))
        })?;
        Ok(made)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NetnsMount {
    fn drop(&mut self) {
        use crate::sys::{LinuxSyscall, Syscall};
        let _ = LinuxSyscall.umount(&self.path, true);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables) on Thu Dec  3 00:32:42 2026
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:RBUILD-FORWARD - [0:0]
-A FORWARD -j RBUILD-FORWARD
-A RBUILD-FORWARD -s 10.213.0.0/16 -d 10.213.0.0/16 -j DROP
-A RBUILD-FORWARD -s 10.213.0.0/16 -j ACCEPT
-A RBUILD-FORWARD -d 10.213.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A RBUILD-FORWARD -d 10.213.0.0/16 -j DROP
COMMIT
# Completed on Thu Dec  3 00:32:42 2026
# Generated by iptables-save v1.8.9 (nf_tables) on Thu Dec  3 00:32:42 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:RBUILD-POSTROUTING - [0:0]
-A POSTROUTING -j RBUILD-POSTROUTING
-A RBUILD-POSTROUTING -s 10.213.0.0/16 ! -d 10.213.0.0/16 -j MASQUERADE
COMMIT
";

    #[test]
    fn saved_rules_are_recognised_with_the_version_of_their_header() {
        let rules = nat_rules("10.213.0.0/16");
        assert_eq!(all_rules_listed(SAVED, &rules).as_deref(), Some("iptables v1.8.9 (nf_tables)"));
    }

    #[test]
    fn a_missing_or_different_rule_sends_setup_down_the_slow_path() {
        let rules = nat_rules("10.213.0.0/16");
        for gone in [
            "-A RBUILD-POSTROUTING -s 10.213.0.0/16 ! -d 10.213.0.0/16 -j MASQUERADE\n",
            ":RBUILD-FORWARD - [0:0]\n",
            "-A FORWARD -j RBUILD-FORWARD\n",
        ] {
            assert!(SAVED.contains(gone), "{gone}");
            assert_eq!(all_rules_listed(&SAVED.replace(gone, ""), &rules), None, "without {gone}");
        }
        // The same rule in the other table is not the rule.
        let moved = SAVED.replace("-A FORWARD -j RBUILD-FORWARD\n", "").replace(
            "-A POSTROUTING -j RBUILD-POSTROUTING\n",
            "-A POSTROUTING -j RBUILD-POSTROUTING\n-A FORWARD -j RBUILD-FORWARD\n",
        );
        assert_eq!(all_rules_listed(&moved, &rules), None);
        // Another subnet's rules are not ours.
        assert_eq!(all_rules_listed(SAVED, &nat_rules("10.99.0.0/16")), None);
        assert_eq!(all_rules_listed("", &rules), None);
    }

    #[test]
    fn plans_are_disjoint_slash_30s_of_the_subnet() {
        let a = NetPlan::nth(1, None);
        assert_eq!(
            (a.host_if.as_str(), a.host_addr, a.step_addr),
            ("rb1", Ipv4Addr::new(10, 213, 0, 5), Ipv4Addr::new(10, 213, 0, 6))
        );
        let last = NetPlan::nth(slots() - 1, Some(1400));
        assert_eq!(last.step_addr, Ipv4Addr::new(10, 213, 255, 254));
        assert!(last.host_if.len() <= 15);
    }

    #[test]
    fn leases_are_exclusive_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let a = Lease::take_in(dir.path()).unwrap();
        let b = Lease::take_in(dir.path()).unwrap();
        assert_ne!(a.plan, b.plan);
        let again = a.plan.clone();
        drop(a);
        let c = Lease::take_in(dir.path()).unwrap();
        assert_eq!(c.plan, again, "a released lease is taken again first");
    }
}
