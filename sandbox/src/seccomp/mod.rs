//! Docker's default seccomp profile: [`default_profile`] resolves it for a capability set into the OCI
//! `linux.seccomp` of the runtime spec (what runc runs, through libseccomp), and [`compile`] turns such an
//! OCI profile into BPF programs with seccompiler for the namespace executor, so both executors enforce
//! the same rules.
//!
//! The profile is resolved the way moby's `seccomp.Setup` does: the groups whose `includes` name a
//! capability are added when the bounding set has it, the clone-flag and clone3 rules only without
//! CAP_SYS_ADMIN, the architecture groups for the native architecture only.
//!
//! Compiling: an OCI profile has one default action and per-rule actions; a seccompiler filter has one
//! match and one mismatch action. So the allow rules become one filter (mismatch = the default action),
//! and each errno value of the other rules one more filter (mismatch = allow) installed after it: the
//! kernel runs every filter and takes the most restrictive result, and between two errno results the one
//! of the filter installed last (seccomp(2)), so `clone3` gets ENOSYS where the default would say EPERM.
//! The kernel's 32-bit compat ABI gets the same rules with its own numbers: on x86_64 every program is
//! compiled twice, once with the x86_64 numbers for AUDIT_ARCH_X86_64 and once with the i386 numbers for
//! AUDIT_ARCH_I386 (seccompiler targets 64-bit ABIs only, so the second is compiled for x86_64 and its
//! architecture check pointed at i386), and each lets the other ABI's calls through to the other program;
//! any other ABI gets the default action. So linux/386 steps run under the profile as under runc's
//! libseccomp. x32 calls (x86_64's audit arch with bit 30 in the number) match no rule: the default. On
//! aarch64 there is no arm table yet: arm calls get the default action. Emulated architectures (QEMU user
//! mode) need nothing of their own: the emulator makes the host's calls.

pub mod numbers;
pub mod profile;

use std::collections::BTreeMap;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filters are not supported on {0}; run the step with seccomp off (privileged)")]
    Arch(String),
    #[error("unsupported seccomp rule for {name}: {reason}")]
    Rule { name: String, reason: String },
    #[error("cannot build the seccomp profile: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("cannot compile the seccomp profile: {0}")]
    Compile(#[from] seccompiler::BackendError),
}

/// The Go architecture name of this build (the profile's arch filters use them).
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn syscall(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SeccompError> {
    let mut b =
        LinuxSyscallBuilder::default().names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).action(action);
    if !args.is_empty() {
        b = b.args(args);
    }
    Ok(b.build()?)
}

fn arg(
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
) -> Result<LinuxSeccompArg, SeccompError> {
    let mut b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    if let Some(v) = value_two {
        b = b.value_two(v);
    }
    Ok(b.build()?)
}

/// socket(2) rules for the allowed domains: one `<` rule for the run starting at AF_UNIX, then one `==`
/// per remaining domain (moby's `socketSyscallsForDomains`).
fn socket_rules() -> Result<Vec<LinuxSyscall>, SeccompError> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut domains = profile::SOCKET_DOMAINS.to_vec();
    domains.sort_unstable();
    let mut out = Vec::new();
    let mut rest = &domains[..];
    if domains.len() > 1 && domains[0] == 1 && domains[1] == 2 {
        let run = domains.windows(2).take_while(|w| w[1] == w[0] + 1).count() + 1;
        out.push(syscall(
            &["socket"],
            allow,
            vec![arg(0, domains[run - 1] + 1, None, LinuxSeccompOperator::ScmpCmpLt)?],
        )?);
        rest = &domains[run..];
    }
    for d in rest {
        out.push(syscall(&["socket"], allow, vec![arg(0, *d, None, LinuxSeccompOperator::ScmpCmpEq)?])?);
    }
    Ok(out)
}

/// Character devices a step may create with mknod (`(major, minor)`): the ones its `/dev` has, and the
/// overlay whiteout (0, 0) that tools unpacking layers inside a step write.
pub const MKNOD_CHAR_DEVICES: [(u64, u64); 9] =
    [(0, 0), (1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2)];

/// mknod(2) and mknodat(2) rules: files, fifos and sockets, and the character devices of
/// [`MKNOD_CHAR_DEVICES`]; any other device node (a block device, /dev/kvm, /dev/mem) gets EPERM, as a
/// device cgroup gives Docker's containers when they open one. The nodev mounts refuse to open such a node
/// anyway (a layer may carry one); this makes the attempt fail where it starts, with Docker's errno.
fn mknod_rules() -> Result<Vec<LinuxSyscall>, SeccompError> {
    const S_IFMT: u64 = 0o170000;
    let allow = LinuxSeccompAction::ScmpActAllow;
    let mut out = Vec::new();
    for (name, mode, dev) in [("mknod", 1, 2), ("mknodat", 2, 3)] {
        for kind in [0, 0o100000, 0o010000, 0o140000] {
            let is = arg(mode, S_IFMT, Some(kind), LinuxSeccompOperator::ScmpCmpMaskedEq)?;
            out.push(syscall(&[name], allow, vec![is])?);
        }
        for (major, minor) in MKNOD_CHAR_DEVICES {
            // The kernel's encoding of small device numbers (new_encode_dev), which glibc passes as is.
            let encoded = (major << 8) | minor;
            let is_char = arg(mode, S_IFMT, Some(0o020000), LinuxSeccompOperator::ScmpCmpMaskedEq)?;
            let this = arg(dev, 0xffff_ffff, Some(encoded), LinuxSeccompOperator::ScmpCmpMaskedEq)?;
            out.push(syscall(&[name], allow, vec![is_char, this])?);
        }
    }
    Ok(out)
}

/// Docker's default profile for a process whose bounding set is `caps`.
pub fn default_profile(caps: &[Capability]) -> Result<LinuxSeccomp, SeccompError> {
    let allow = LinuxSeccompAction::ScmpActAllow;
    let has = |cap: Capability| caps.contains(&cap);
    let mut syscalls =
        vec![syscall(profile::ALLOWED, allow, vec![])?, syscall(profile::ALLOWED_SINCE_4_8, allow, vec![])?];
    syscalls.extend(socket_rules()?);
    syscalls.extend(mknod_rules()?);
    for p in profile::PERSONALITIES {
        syscalls.push(syscall(&["personality"], allow, vec![arg(0, *p, None, LinuxSeccompOperator::ScmpCmpEq)?])?);
    }
    for (arches, names) in profile::BY_ARCH {
        if arches.contains(&go_arch()) {
            syscalls.push(syscall(names, allow, vec![])?);
        }
    }
    for (cap, names) in profile::BY_CAPABILITY {
        if has(*cap) {
            syscalls.push(syscall(names, allow, vec![])?);
        }
    }
    if !has(Capability::SysAdmin) {
        // s390 passes the flags second; the architectures compiled here pass them first.
        let flags = arg(0, profile::CLONE_NAMESPACE_FLAGS, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq)?;
        syscalls.push(syscall(&["clone"], allow, vec![flags])?);
        // glibc falls back to clone when clone3 says ENOSYS, and clone's flags can be checked.
        let mut clone3 = syscall(&["clone3"], LinuxSeccompAction::ScmpActErrno, vec![])?;
        clone3.set_errno_ret(Some(libc::ENOSYS as u32));
        syscalls.push(clone3);
    }
    let architectures = match go_arch() {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        _ => vec![],
    };
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(architectures)
        .syscalls(syscalls)
        .build()?)
}

/// Syscall names and numbers of one architecture.
type SyscallTable = &'static [(&'static str, i64)];

/// `AUDIT_ARCH_*` of `<linux/audit.h>`: the ELF machine, `__AUDIT_ARCH_64BIT` (0x8000_0000) and
/// `__AUDIT_ARCH_LE` (0x4000_0000).
#[cfg(test)]
const AUDIT_ARCH_X86_64: u32 = 0x3e | 0x8000_0000 | 0x4000_0000;
const AUDIT_ARCH_I386: u32 = 0x03 | 0x4000_0000;

/// One ABI the filters cover: its audit architecture and syscall numbers.
#[derive(Clone, Copy)]
struct Abi {
    audit: u32,
    table: SyscallTable,
}

/// The ABI seccompiler compiles for here, its table, and the kernel's 32-bit compat ABI where this module
/// has its numbers.
fn native() -> Result<(TargetArch, SyscallTable, Option<Abi>), SeccompError> {
    match std::env::consts::ARCH {
        "x86_64" => {
            Ok((TargetArch::x86_64, numbers::X86_64, Some(Abi { audit: AUDIT_ARCH_I386, table: numbers::I386 })))
        }
        "aarch64" => Ok((TargetArch::aarch64, numbers::AARCH64, None)),
        other => Err(SeccompError::Arch(other.to_string())),
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> SeccompAction {
    match a {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => SeccompAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        // No listener is ever configured by this sandbox; refuse rather than allow.
        LinuxSeccompAction::ScmpActNotify => SeccompAction::Errno(libc::EPERM as u32),
    }
}

fn condition(name: &str, a: &LinuxSeccompArg) -> Result<SeccompCondition, SeccompError> {
    use LinuxSeccompOperator::*;
    let (op, value) = match a.op() {
        ScmpCmpNe => (SeccompCmpOp::Ne, a.value()),
        ScmpCmpLt => (SeccompCmpOp::Lt, a.value()),
        ScmpCmpLe => (SeccompCmpOp::Le, a.value()),
        ScmpCmpEq => (SeccompCmpOp::Eq, a.value()),
        ScmpCmpGe => (SeccompCmpOp::Ge, a.value()),
        ScmpCmpGt => (SeccompCmpOp::Gt, a.value()),
        // libseccomp: (arg & value) == valueTwo.
        ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(a.value()), a.value_two().unwrap_or(0)),
    };
    let index = u8::try_from(a.index())
        .map_err(|_| SeccompError::Rule { name: name.into(), reason: format!("argument index {}", a.index()) })?;
    // libseccomp compares all 64 bits of an argument.
    Ok(SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)?)
}

/// The rules of one syscall number in one filter: unconditional, or any of several condition sets.
enum Match {
    Always,
    AnyOf(Vec<SeccompRule>),
}

/// Compiles an OCI seccomp profile into the BPF programs to install, in order, for this architecture
/// (and its 32-bit compat ABI where there is a table for it). Names an ABI does not have are skipped, as
/// runc does.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SeccompError> {
    let (arch, table, compat) = native()?;
    compile_for(seccomp, arch, table, compat)
}

/// [`compile`] for an architecture, its table and a compat ABI (for tests).
fn compile_for(
    seccomp: &LinuxSeccomp,
    arch: TargetArch,
    table: SyscallTable,
    compat: Option<Abi>,
) -> Result<Vec<BpfProgram>, SeccompError> {
    let native = programs(seccomp, arch, table)?;
    let Some(compat) = compat else {
        return Ok(native
            .into_iter()
            .map(|(mut program, mismatch)| {
                foreign_abi_gets(&mut program, &mismatch);
                program
            })
            .collect());
    };
    let mut out = Vec::new();
    for (program, mismatch) in native {
        out.push(passing_compat(program, compat.audit, &mismatch));
    }
    for (program, _) in programs(seccomp, arch, compat.table)? {
        out.push(for_compat(program, compat.audit));
    }
    Ok(out)
}

/// The programs of a profile for one syscall table (seccompiler's architecture check still in front),
/// each with its mismatch action.
fn programs(
    seccomp: &LinuxSeccomp,
    arch: TargetArch,
    table: SyscallTable,
) -> Result<Vec<(BpfProgram, SeccompAction)>, SeccompError> {
    // ~450 names looked up ~350 times per ABI: a linear search was a third of a millisecond per RUN.
    let numbers: std::collections::HashMap<&str, i64> = table.iter().copied().collect();
    let number = |name: &str| numbers.get(name).copied();
    let default = action(seccomp.default_action(), seccomp.default_errno_ret());
    // Filter 0 allows; the others each apply one non-allow action.
    let mut by_action: Vec<(SeccompAction, BTreeMap<i64, Match>)> = vec![(SeccompAction::Allow, BTreeMap::new())];
    for rule in seccomp.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        let slot = match by_action.iter().position(|(a, _)| *a == act) {
            Some(i) => i,
            None => {
                by_action.push((act.clone(), BTreeMap::new()));
                by_action.len() - 1
            }
        };
        for name in rule.names() {
            let Some(nr) = number(name) else { continue };
            let args = rule.args().as_deref().unwrap_or(&[]);
            let entry = by_action[slot].1.entry(nr).or_insert_with(|| Match::AnyOf(Vec::new()));
            if args.is_empty() {
                *entry = Match::Always;
            } else if let Match::AnyOf(rules) = entry {
                let conditions = args.iter().map(|a| condition(name, a)).collect::<Result<Vec<_>, _>>()?;
                rules.push(SeccompRule::new(conditions)?);
            }
        }
    }
    let mut programs = Vec::new();
    for (i, (act, rules)) in by_action.into_iter().enumerate() {
        if i > 0 && rules.is_empty() {
            continue;
        }
        let (mismatch, matched) = if i == 0 { (default.clone(), act) } else { (SeccompAction::Allow, act) };
        programs.push((filter_program(rules, mismatch.clone(), matched, arch, true)?, mismatch));
    }
    Ok(programs)
}

/// One filter: `matched` for the calls of `rules`, `mismatch` for the rest. seccompiler gives every call a
/// chain of at least five instructions (~2,000 for Docker's profile), and the kernel converts, JIT-compiles
/// and emulates (for its per-call cache) all of them at each seccomp(2), ~1 ms per program per RUN. With
/// `ranges`, the calls allowed without conditions come first as ranges of consecutive numbers, two or three
/// instructions each (~150 in all, ~700 with the conditional calls); only the calls with argument conditions keep seccompiler's chains.
fn filter_program(
    rules: BTreeMap<i64, Match>,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
    ranges: bool,
) -> Result<BpfProgram, SeccompError> {
    let mut always = Vec::new();
    let mut chains = BTreeMap::new();
    for (nr, m) in rules {
        match m {
            Match::Always if ranges => always.push(nr),
            Match::Always => {
                chains.insert(nr, Vec::new());
            }
            Match::AnyOf(r) => {
                chains.insert(nr, r);
            }
        }
    }
    let program: BpfProgram = SeccompFilter::new(chains, mismatch, matched.clone(), arch)?.try_into()?;
    Ok(with_ranges(program, &always, &matched))
}

/// Puts `always` (sorted call numbers) as ranges after seccompiler's architecture check and before its
/// chains, each range returning `matched`. The chains' jumps are relative and stay within them.
fn with_ranges(program: BpfProgram, always: &[i64], matched: &SeccompAction) -> BpfProgram {
    if always.is_empty() {
        return program;
    }
    let load_nr = stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR);
    let (check, rest) = program.split_at(3.min(program.len()));
    // The chains start with their own load of the number; without chains only the mismatch return follows.
    let rest = match rest.first() {
        Some(i) if i.code == load_nr.code && i.k == load_nr.k => &rest[1..],
        _ => rest,
    };
    let ret = stmt(BPF_RET_K, u32::from(matched.clone()));
    let mut out = check.to_vec();
    out.push(load_nr);
    let mut i = 0;
    while i < always.len() {
        let lo = always[i];
        while i + 1 < always.len() && always[i + 1] == always[i] + 1 {
            i += 1;
        }
        let hi = always[i];
        i += 1;
        // Call numbers are small and non-negative (the tables' own), so they fit the 32-bit compare.
        let (lo, hi) = (lo as u32, hi as u32);
        if lo == hi {
            out.push(sock_filter { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: lo });
        } else {
            out.push(sock_filter { code: BPF_JMP_JGT_K, jt: 2, jf: 0, k: hi });
            out.push(sock_filter { code: BPF_JMP_JGE_K, jt: 0, jf: 1, k: lo });
        }
        out.push(ret.clone());
    }
    out.extend_from_slice(rest);
    out
}

// seccompiler's programs start with its architecture check:
//   0: ld [arch]   1: jeq AUDIT_ARCH, +1, +0   2: ret KILL_PROCESS   3: the rules...
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K.
const BPF_JMP_JEQ_K: u16 = 0x15;
/// BPF_RET | BPF_K.
const BPF_RET_K: u16 = 0x06;
/// BPF_JMP | BPF_JGT | BPF_K.
const BPF_JMP_JGT_K: u16 = 0x25;
/// BPF_JMP | BPF_JGE | BPF_K.
const BPF_JMP_JGE_K: u16 = 0x35;
/// The offset of `nr` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter { code, jt: 0, jf: 0, k }
}

/// seccompiler kills a process whose syscall comes from another ABI; give such calls the filter's
/// mismatch action instead.
fn foreign_abi_gets(program: &mut BpfProgram, mismatch: &SeccompAction) {
    if let Some(ins) = program.get_mut(2) {
        if ins.code == BPF_RET_K && ins.k == libc::SECCOMP_RET_KILL_PROCESS {
            ins.k = u32::from(mismatch.clone());
        }
    }
}

/// A native program that lets the compat ABI's calls through (its own program decides them) and gives
/// any other ABI's calls its mismatch action.
fn passing_compat(program: BpfProgram, compat: u32, mismatch: &SeccompAction) -> BpfProgram {
    let native = program.get(1).map(|i| i.k).unwrap_or_default();
    let mut out = vec![
        program.first().cloned().unwrap_or_else(|| stmt(BPF_LD_W_ABS, 4)),
        sock_filter { code: BPF_JMP_JEQ_K, jt: 3, jf: 0, k: native },
        sock_filter { code: BPF_JMP_JEQ_K, jt: 0, jf: 1, k: compat },
        stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(BPF_RET_K, u32::from(mismatch.clone())),
    ];
    out.extend(program.into_iter().skip(3));
    out
}

/// A program compiled with the compat ABI's numbers, its check pointed at the compat audit architecture;
/// other ABIs' calls pass (their own program decides them).
fn for_compat(mut program: BpfProgram, compat: u32) -> BpfProgram {
    if let Some(check) = program.get_mut(1) {
        check.k = compat;
    }
    if let Some(other) = program.get_mut(2) {
        other.k = libc::SECCOMP_RET_ALLOW;
    }
    program
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::DEFAULT_CAPABILITIES;

    fn names(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls().as_ref().unwrap().iter().flat_map(|s| s.names().clone()).collect()
    }

    #[test]
    fn default_caps_resolve_like_docker() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        let n = names(&p);
        // CAP_SYS_CHROOT is a default capability; CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_SYS_MODULE are not.
        assert!(n.contains(&"chroot".to_string()));
        for denied in ["mount", "unshare", "setns", "kcmp", "init_module", "reboot", "bpf"] {
            assert!(!n.contains(&denied.to_string()), "{denied} must not be allowed");
        }
        let syscalls = p.syscalls().as_ref().unwrap();
        let clone3 = syscalls.iter().find(|s| s.names() == &["clone3"]).unwrap();
        assert_eq!((clone3.action(), clone3.errno_ret()), (LinuxSeccompAction::ScmpActErrno, Some(38)));
        let clone = syscalls.iter().find(|s| s.names() == &["clone"]).unwrap();
        let a = clone.args().as_ref().unwrap()[0];
        assert_eq!((a.value(), a.value_two(), a.op()), (0x7e02_0000, Some(0), LinuxSeccompOperator::ScmpCmpMaskedEq));
        // AF_UNIX..AF_ROSE as one range, then AF_NETBEUI...; never AF_VSOCK (40) or AF_ALG (38).
        let sockets: Vec<(u64, LinuxSeccompOperator)> = syscalls
            .iter()
            .filter(|s| s.names() == &["socket"])
            .map(|s| (s.args().as_ref().unwrap()[0].value(), s.args().as_ref().unwrap()[0].op()))
            .collect();
        assert_eq!(sockets[0], (12, LinuxSeccompOperator::ScmpCmpLt));
        assert_eq!(sockets[1], (13, LinuxSeccompOperator::ScmpCmpEq));
        assert!(!sockets.iter().any(|(v, _)| *v == 40 || *v == 38));
    }

    #[test]
    fn sys_admin_gets_the_admin_group_and_no_clone_rules() {
        let mut caps = DEFAULT_CAPABILITIES.to_vec();
        caps.push(Capability::SysAdmin);
        let p = default_profile(&caps).unwrap();
        let n = names(&p);
        assert!(n.contains(&"mount".to_string()) && n.contains(&"unshare".to_string()));
        let syscalls = p.syscalls().as_ref().unwrap();
        assert!(!syscalls.iter().any(|s| s.names() == &["clone3"] && s.action() == LinuxSeccompAction::ScmpActErrno));
    }

    #[test]
    fn compiles_into_an_allow_filter_and_an_enosys_filter() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let programs = compile_for(&p, TargetArch::x86_64, numbers::X86_64, None).unwrap();
        assert_eq!(programs.len(), 2);
        // The unconditional calls as ranges: ~700 instructions (most for the mknod and socket conditions),
        // not seccompiler's ~2,100, since the kernel's work at each seccomp(2) grows with the length.
        assert!(programs[0].len() < 1000 && programs[0].len() > 100, "{}", programs[0].len());
        // Foreign ABIs get EPERM, not a kill.
        assert_eq!(programs[0][2].k, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(programs[1][2].k, libc::SECCOMP_RET_ALLOW);
        // The second program returns ENOSYS for clone3 and allows the rest.
        assert!(programs[1].iter().any(|i| i.k == libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
    }

    #[test]
    fn profile_round_trips_through_oci_json() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"defaultAction\":\"SCMP_ACT_ERRNO\""), "{}", &json[..200]);
        assert!(json.contains("SCMP_CMP_MASKED_EQ"));
        let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }

    /// Runs classic BPF as the kernel runs a seccomp filter, for the instructions seccompiler emits, over
    /// `struct seccomp_data` (nr, arch, instruction pointer, six 64-bit arguments).
    fn run_bpf(program: &[sock_filter], nr: i32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::new();
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = &program[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let o = i.k as usize;
                    acc = u32::from_ne_bytes(data[o..o + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x06 => return i.k,
                code => {
                    let taken = match code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        0x45 => acc & i.k != 0,
                        other => panic!("unexpected BPF instruction {other:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
            }
        }
    }

    /// What the kernel makes of several filters: the most restrictive result (the action with the lowest
    /// value, SECCOMP_RET_ACTION_FULL), the last installed filter's among equal actions.
    fn verdict(programs: &[BpfProgram], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
        let mut out = libc::SECCOMP_RET_ALLOW;
        for p in programs {
            let r = run_bpf(p, nr as i32, arch, args);
            if (r & 0xffff_0000) as i32 <= (out & 0xffff_0000) as i32 {
                out = r;
            }
        }
        out
    }

    #[test]
    fn i386_calls_follow_the_profile_with_their_own_numbers() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let compat = Some(Abi { audit: AUDIT_ARCH_I386, table: numbers::I386 });
        let programs = compile_for(&p, TargetArch::x86_64, numbers::X86_64, compat).unwrap();
        assert_eq!(programs.len(), 4);
        let nr = |t: SyscallTable, n: &str| t.iter().find(|(name, _)| *name == n).unwrap().1;
        let allow = libc::SECCOMP_RET_ALLOW;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        for (arch, table) in [(AUDIT_ARCH_X86_64, numbers::X86_64), (AUDIT_ARCH_I386, numbers::I386)] {
            for name in ["write", "execve", "openat", "exit_group", "futex"] {
                assert_eq!(verdict(&programs, nr(table, name), arch, [0; 6]), allow, "{name} on {arch:#x}");
            }
            for name in ["mount", "unshare", "setns", "reboot", "init_module"] {
                assert_eq!(verdict(&programs, nr(table, name), arch, [0; 6]), eperm, "{name} on {arch:#x}");
            }
            assert_eq!(verdict(&programs, nr(table, "clone3"), arch, [0; 6]), enosys, "clone3 on {arch:#x}");
            let newns = [0x0002_0000, 0, 0, 0, 0, 0];
            assert_eq!(verdict(&programs, nr(table, "clone"), arch, newns), eperm, "clone(CLONE_NEWNS) on {arch:#x}");
            assert_eq!(verdict(&programs, nr(table, "clone"), arch, [0x11, 0, 0, 0, 0, 0]), allow);
        }
        // The i386 calls that exist only there.
        for name in ["socketcall", "mmap2", "fstatat64", "_llseek", "set_thread_area"] {
            assert_eq!(verdict(&programs, nr(numbers::I386, name), AUDIT_ARCH_I386, [0; 6]), allow, "{name}");
        }
        // Numbers are per ABI: i386's 21 is mount (denied), x86_64's 21 is access (allowed).
        assert_eq!(verdict(&programs, 21, AUDIT_ARCH_I386, [0; 6]), eperm);
        assert_eq!(verdict(&programs, 21, AUDIT_ARCH_X86_64, [0; 6]), allow);
        // x32 calls (bit 30 in the number) and unknown ABIs get the default.
        assert_eq!(verdict(&programs, 0x4000_0000 | 1, AUDIT_ARCH_X86_64, [0; 6]), eperm);
        assert_eq!(verdict(&programs, 1, 0xc000_00b7, [0; 6]), eperm);
    }

    #[test]
    fn mknod_makes_files_fifos_and_the_default_devices_only() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let compat = Some(Abi { audit: AUDIT_ARCH_I386, table: numbers::I386 });
        let programs = compile_for(&p, TargetArch::x86_64, numbers::X86_64, compat).unwrap();
        let nr = |t: SyscallTable, n: &str| t.iter().find(|(name, _)| *name == n).unwrap().1;
        let allow = libc::SECCOMP_RET_ALLOW;
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let dev = |major: u64, minor: u64| (major << 8) | minor;
        for (arch, table) in [(AUDIT_ARCH_X86_64, numbers::X86_64), (AUDIT_ARCH_I386, numbers::I386)] {
            // mknodat(dirfd, path, mode, dev)
            let at = |mode: u64, d: u64| verdict(&programs, nr(table, "mknodat"), arch, [0, 0, mode, d, 0, 0]);
            assert_eq!(at(0o100644, 0), allow, "a regular file");
            assert_eq!(at(0o644, 0), allow, "mode 0 is a regular file");
            assert_eq!(at(0o010600, 0), allow, "a fifo (mkfifo)");
            assert_eq!(at(0o140755, 0), allow, "a socket");
            assert_eq!(at(0o020666, dev(1, 3)), allow, "/dev/null");
            assert_eq!(at(0o020000, dev(0, 0)), allow, "an overlay whiteout");
            assert_eq!(at(0o060660, dev(7, 0)), eperm, "a loop device");
            assert_eq!(at(0o060660, dev(8, 0)), eperm, "a disk");
            assert_eq!(at(0o020660, dev(10, 232)), eperm, "/dev/kvm");
            assert_eq!(at(0o020640, dev(1, 1)), eperm, "/dev/mem");
            // mknod(path, mode, dev), where the ABI has it.
            if let Some(&(_, n)) = table.iter().find(|(name, _)| *name == "mknod") {
                assert_eq!(verdict(&programs, n, arch, [0, 0o060660, dev(7, 0), 0, 0, 0]), eperm);
                assert_eq!(verdict(&programs, n, arch, [0, 0o010644, 0, 0, 0, 0]), allow);
            }
        }
    }

    #[test]
    fn ranges_decide_every_call_as_the_chains_do() {
        // The same profile compiled with seccompiler's chains only: every call number of both ABIs (and
        // x32's, and some past the tables), with arguments that hit and miss the conditional rules.
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let chains_only = |table: SyscallTable| -> Vec<BpfProgram> {
            let default = action(p.default_action(), p.default_errno_ret());
            let mut allow: BTreeMap<i64, Match> = BTreeMap::new();
            let mut enosys: BTreeMap<i64, Match> = BTreeMap::new();
            for rule in p.syscalls().as_deref().unwrap() {
                let act = action(rule.action(), rule.errno_ret());
                let slot = if act == SeccompAction::Allow { &mut allow } else { &mut enosys };
                for name in rule.names() {
                    let Some(&(_, nr)) = table.iter().find(|(n, _)| n == name) else { continue };
                    let args = rule.args().as_deref().unwrap_or(&[]);
                    let entry = slot.entry(nr).or_insert_with(|| Match::AnyOf(Vec::new()));
                    if args.is_empty() {
                        *entry = Match::Always;
                    } else if let Match::AnyOf(rules) = entry {
                        let conds = args.iter().map(|a| condition(name, a).unwrap()).collect();
                        rules.push(SeccompRule::new(conds).unwrap());
                    }
                }
            }
            let errno = SeccompAction::Errno(libc::ENOSYS as u32);
            vec![
                filter_program(allow, default.clone(), SeccompAction::Allow, TargetArch::x86_64, false).unwrap(),
                filter_program(enosys, SeccompAction::Allow, errno, TargetArch::x86_64, false).unwrap(),
            ]
        };
        let ranged = compile_for(&p, TargetArch::x86_64, numbers::X86_64, None).unwrap();
        let chained = chains_only(numbers::X86_64);
        let i386 = Some(Abi { audit: AUDIT_ARCH_I386, table: numbers::I386 });
        let ranged_i386 = programs(&p, TargetArch::x86_64, numbers::I386).unwrap();
        let chained_i386 = chains_only(numbers::I386);
        assert!(compile_for(&p, TargetArch::x86_64, numbers::X86_64, i386).unwrap().len() == 4);
        let args = [[0; 6], [0x11, 0, 0, 0, 0, 0], [0x0002_0000, 0, 0, 0, 0, 0], [0, 0o020666, 0x103, 0x103, 0, 0]];
        let numbers = (0..600).chain((0..600).map(|n| 0x4000_0000 | n)).chain([-1, 0x7fff_ffff]);
        let (mut checked, mut allowed) = (0, 0);
        for nr in numbers {
            for a in args {
                let got = verdict(&ranged, nr, AUDIT_ARCH_X86_64, a);
                assert_eq!(got, verdict(&chained, nr, AUDIT_ARCH_X86_64, a), "x86_64 call {nr} {a:?}");
                allowed += usize::from(got == libc::SECCOMP_RET_ALLOW);
                let got: Vec<_> = ranged_i386.iter().map(|(p, _)| p.clone()).collect();
                assert_eq!(
                    verdict(&got, nr, AUDIT_ARCH_X86_64, a),
                    verdict(&chained_i386, nr, AUDIT_ARCH_X86_64, a),
                    "i386 table, call {nr} {a:?}"
                );
                checked += 1;
            }
        }
        assert!(checked == 4 * 1202 && allowed > 1000, "{checked} {allowed}");
    }

    #[test]
    fn without_a_compat_table_other_abis_get_the_default() {
        let p = default_profile(&DEFAULT_CAPABILITIES).unwrap();
        let programs = compile_for(&p, TargetArch::x86_64, numbers::X86_64, None).unwrap();
        assert_eq!(programs.len(), 2);
        assert_eq!(verdict(&programs, 4, AUDIT_ARCH_I386, [0; 6]), libc::SECCOMP_RET_ERRNO | libc::EPERM as u32);
        assert_eq!(verdict(&programs, 1, AUDIT_ARCH_X86_64, [0; 6]), libc::SECCOMP_RET_ALLOW);
    }
}
