//! Exec ops (RUN): an active snapshot on the rootfs input, every llb mount mapped to a sandbox mount,
//! the process run by the worker's executor, then the writable outputs committed.

use std::collections::VecDeque;
use std::sync::Mutex;

use llb::{CacheSharing, Digest, ExecOp, MountKind, SecurityMode};
use sandbox::cache::Sharing;
use sandbox::executor::{OutputLine, OutputSink, Stream};
use sandbox::{ProcessSpec, RunMount, RunMountKind};

use super::{scoped, snapshot_of, Snap, Step};
use crate::error::{RunFailure, SolveError};
use crate::progress::{EventKind, LogStream};
use crate::scheduler::{Ref, Run};

/// How many output lines a failed RUN's error shows.
const TAIL_LINES: usize = 20;

/// Sends output lines as progress events and keeps the last few for the error of a failed run.
struct LogSink<'a> {
    run: &'a Run,
    vertex: Digest,
    tail: Mutex<VecDeque<String>>,
}

impl OutputSink for LogSink<'_> {
    fn line(&self, line: OutputLine) {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(String::from_utf8_lossy(&line.line).into_owned());
        let stream = match line.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
        };
        self.run.emit(self.vertex, EventKind::Log { stream, line: line.line });
    }
}

fn sharing(s: CacheSharing) -> Sharing {
    match s {
        CacheSharing::Shared => Sharing::Shared,
        CacheSharing::Private => Sharing::Private,
        CacheSharing::Locked => Sharing::Locked,
    }
}

/// Runs an exec op.
pub(crate) fn run(step: &Step<'_>, e: &ExecOp, inputs: &[Ref]) -> Result<Vec<Ref>, SolveError> {
    let run = step.run;
    if e.security == SecurityMode::Insecure {
        return Err(SolveError::Insecure { step: step.label.clone() });
    }
    if !e.cdi_devices.is_empty() {
        return Err(SolveError::Unsupported { step: step.label.clone(), what: "RUN --device (CDI devices)".into() });
    }
    // The sandbox's ProcessSpec has no rlimits yet: fail loudly rather than run without what the build
    // asked for.
    if !e.meta.ulimits.is_empty() {
        let limits: Vec<String> = e.meta.ulimits.iter().map(|u| format!("{}={}:{}", u.name, u.soft, u.hard)).collect();
        return Err(SolveError::Unsupported {
            step: step.label.clone(),
            what: format!("--ulimit ({}); build without it", limits.join(", ")),
        });
    }
    let snap_of = |i: Option<usize>| match i {
        None => Ok(None),
        Some(i) => snapshot_of(step, &inputs[i]),
    };
    let Some((root_mount, extra)) = e.mounts.split_first() else {
        return Err(step.err("exec has no root filesystem mount"));
    };
    let root_parent = snap_of(root_mount.input)?;
    let root = Snap::prepare(step, root_parent.as_deref(), "rootfs")?;

    let meta = &e.meta;
    let mut spec = ProcessSpec::new(meta.args.clone());
    spec.env = meta.env.clone();
    if !meta.cwd.is_empty() {
        spec.cwd = meta.cwd.clone();
    }
    spec.user = meta.user.clone();
    spec.extra_hosts = meta.extra_hosts.iter().map(|h| (h.host.clone(), h.ip.clone())).collect();
    if let Some(h) = &meta.hostname {
        spec.hostname = h.clone();
    }
    spec.network = match e.network {
        llb::NetworkMode::Sandbox => run.opts.network,
        llb::NetworkMode::Host => sandbox::NetworkMode::Host,
        llb::NetworkMode::None => sandbox::NetworkMode::None,
    };
    for se in &e.secret_env {
        match run.opts.secrets.get(&se.id) {
            // Into the environment only: never into the definition, a key or a log.
            Some(v) => spec.env.push(format!("{}={}", se.name, String::from_utf8_lossy(v))),
            None if se.optional => {}
            None => return Err(SolveError::MissingSecret { step: step.label.clone(), id: se.id.clone() }),
        }
    }

    // Writable binds with an output, committed after the run: (output index, snapshot).
    let mut outputs_rw: Vec<(usize, Snap<'_>)> = Vec::new();
    // Views and throw-away binds, removed after the run.
    let mut scratch: Vec<Snap<'_>> = Vec::new();
    let mut leases = Vec::new();
    for m in extra {
        let kind = match &m.kind {
            MountKind::Bind => {
                let parent = snap_of(m.input)?;
                let mut snap = if m.readonly {
                    Snap::view(step, parent.as_deref(), "bind")?
                } else {
                    Snap::prepare(step, parent.as_deref(), "bind")?
                };
                let source = scoped(&snap.mount(step)?, &m.selector);
                match m.output {
                    Some(o) if !m.readonly => outputs_rw.push((o, snap)),
                    _ => scratch.push(snap),
                }
                RunMountKind::Bind { source, readonly: m.readonly }
            }
            MountKind::Cache { id, sharing: mode } => {
                let seed = match m.input {
                    Some(_) => {
                        let mut view = Snap::view(step, snap_of(m.input)?.as_deref(), "cache-seed")?;
                        let path = scoped(&view.mount(step)?, &m.selector);
                        scratch.push(view);
                        Some(path)
                    }
                    None => None,
                };
                let lease = run
                    .inner
                    .cache_mounts
                    .acquire(id, sharing(*mode), 0o755, 0, 0, seed.as_deref())
                    .map_err(|err| step.err(format!("cannot take cache mount {id:?} for {}: {err}", m.dest)))?;
                let source = lease.path.clone();
                leases.push(lease);
                RunMountKind::Bind { source, readonly: m.readonly }
            }
            MountKind::Tmpfs { size } => RunMountKind::Tmpfs { size: *size },
            MountKind::Secret(opt) => match run.opts.secrets.get(&opt.id) {
                Some(contents) => {
                    RunMountKind::Secret { contents: contents.clone(), uid: opt.uid, gid: opt.gid, mode: opt.mode }
                }
                None if opt.optional => continue,
                None => return Err(SolveError::MissingSecret { step: step.label.clone(), id: opt.id.clone() }),
            },
            MountKind::Ssh(opt) => match run.opts.ssh.get(&opt.id) {
                Some(socket) => {
                    RunMountKind::Ssh { socket: socket.clone(), uid: opt.uid, gid: opt.gid, mode: opt.mode }
                }
                None if opt.optional => continue,
                None => return Err(SolveError::MissingSsh { step: step.label.clone(), id: opt.id.clone() }),
            },
        };
        spec.mounts.push(RunMount { destination: m.dest.clone(), kind });
    }

    let sink = LogSink { run, vertex: step.digest, tail: Mutex::new(VecDeque::new()) };
    let outcome = run
        .inner
        .worker
        .executor
        .run(&root.mounts, &spec, &sink, &run.cancel)
        .map_err(|err| step.err(format!("cannot run {:?}: {err}", meta.args.join(" "))))?;
    drop(leases);
    let code = outcome.status.code();
    let ok = match (&outcome.status, meta.valid_exit_codes.is_empty()) {
        (_, true) => outcome.status.success(),
        (sandbox::ExitStatus::Exited(c), false) => meta.valid_exit_codes.contains(c),
        (sandbox::ExitStatus::Signaled(_), false) => false,
    };
    if !ok {
        let status = match outcome.status {
            sandbox::ExitStatus::Exited(c) => format!("exit code: {c}"),
            sandbox::ExitStatus::Signaled(s) => format!("killed by signal {s}"),
        };
        return Err(SolveError::Run(Box::new(RunFailure {
            vertex: crate::graph::vertex_name(run.vertex(&step.digest), run.metadata(&step.digest)),
            locations: run.metadata(&step.digest).map(|m| m.locations.clone()).unwrap_or_default(),
            command: meta.args.join(" "),
            exit_code: code,
            status,
            tail: sink.tail.into_inner().unwrap_or_else(|e| e.into_inner()).into(),
        })));
    }
    drop(scratch);

    let mut outputs = vec![Ref::Snapshot(None); e.num_outputs()];
    if let (Some(o), false) = (root_mount.output, root_mount.readonly) {
        outputs[o] = Ref::Snapshot(Some(root.commit(step, &o.to_string())?));
    }
    for (o, snap) in outputs_rw {
        outputs[o] = Ref::Snapshot(Some(snap.commit(step, &o.to_string())?));
    }
    Ok(outputs)
}
