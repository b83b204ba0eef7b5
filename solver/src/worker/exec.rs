//! Exec ops (RUN): an active snapshot on the rootfs input, every llb mount mapped to a sandbox mount,
//! the process run by the worker's executor, then the writable outputs committed.
//!
//! Secrets and ssh agents are fetched from the session first (async); the rest runs on the blocking pool.
//! Cancellation kills the process (and its whole pid namespace) through the sandbox's `Cancel`; the
//! snapshot guards then unmount and remove what the step prepared, so nothing is committed.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use llb::{CacheSharing, ExecOp as LlbExec, MountKind, Op as LlbOp, SecurityMode};
use sandbox::cache::Sharing;
use sandbox::executor::{OutputLine, OutputSink, Stream};
use sandbox::{ProcessSpec, RunMount, RunMountKind};

use super::snap::Step;
use super::{blocking, scoped, snapshot_of, Base, Snap, State, WorkerRef};
use crate::error::{RunFailure, SolveError};
use crate::op::{BoxFuture, CacheMap, Op, OpContext};
use crate::progress::LogStream;

/// How many output lines a failed RUN's error shows.
const TAIL_LINES: usize = 20;

pub(crate) struct ExecOp(pub(crate) Base);

/// Sends output lines as progress events and keeps the last few for the error of a failed run.
struct LogSink<'a> {
    ctx: &'a OpContext,
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
        self.ctx.log(stream, line.line);
    }
}

fn sharing(s: CacheSharing) -> Sharing {
    match s {
        CacheSharing::Shared => Sharing::Shared,
        CacheSharing::Private => Sharing::Private,
        CacheSharing::Locked => Sharing::Locked,
    }
}

/// What the session provided for one run: secrets and agent sockets by id (a missing optional one is
/// absent).
#[derive(Default)]
struct Provided {
    secrets: BTreeMap<String, Vec<u8>>,
    ssh: BTreeMap<String, PathBuf>,
}

impl ExecOp {
    fn op(&self) -> Result<&LlbExec, SolveError> {
        match &self.0.vertex.op {
            LlbOp::Exec(e) => Ok(e),
            _ => Err(SolveError::Internal("not an exec op".into())),
        }
    }

    /// What RUN asks for that rbuild refuses or cannot do, before anything is prepared.
    fn check(&self, ctx: &OpContext, e: &LlbExec) -> Result<(), SolveError> {
        let step = || ctx.label().to_string();
        if e.security == SecurityMode::Insecure {
            return Err(SolveError::Insecure { step: step() });
        }
        // The host network, asked by the step or by the build, only with the entitlement: a Dockerfile cannot
        // override `--network none` (or the default's isolation) by itself.
        let session = &self.0.session;
        let host = match e.network {
            llb::NetworkMode::Host => Some("RUN --network=host"),
            llb::NetworkMode::Sandbox if session.network == sandbox::NetworkMode::Host => Some("--network host"),
            _ => None,
        };
        if let (Some(what), false) = (host, session.allow_network_host) {
            return Err(SolveError::Entitlement {
                step: step(),
                what: what.into(),
                entitlement: "network.host".into(),
            });
        }
        // A foreign platform's RUN needs an emulator (binfmt_misc) before anything is prepared; the host's
        // own platform (or none given) needs no look at binfmt_misc.
        if let Some(platform) = &self.0.vertex.platform {
            sandbox::platforms::check(platform)
                .map_err(|error| SolveError::Platform { step: step(), error: Box::new(error) })?;
        }
        if !e.cdi_devices.is_empty() {
            return Err(SolveError::Unsupported { step: step(), what: "RUN --device (CDI devices)".into() });
        }
        // `--ulimit` values come from the definition: a name the sandbox does not know fails here, before
        // anything is prepared.
        for u in &e.meta.ulimits {
            sandbox::Rlimit::from_llb(u).map_err(|err| ctx.err(err))?;
        }
        Ok(())
    }

    /// Fetches the secrets and agents the run mounts; a missing required one is an error.
    async fn provided(&self, ctx: &OpContext, e: &LlbExec) -> Result<Provided, SolveError> {
        let session = &self.0.session;
        let mut p = Provided::default();
        let mut wanted: Vec<(&str, bool)> = e.secret_env.iter().map(|s| (s.id.as_str(), s.optional)).collect();
        for m in &e.mounts {
            if let MountKind::Secret(opt) = &m.kind {
                wanted.push((&opt.id, opt.optional));
            }
        }
        for (id, optional) in wanted {
            match session.secret(ctx.label(), id).await? {
                Some(v) => {
                    p.secrets.insert(id.to_string(), v);
                }
                None if optional => {}
                None => return Err(SolveError::MissingSecret { step: ctx.label().to_string(), id: id.to_string() }),
            }
        }
        for m in &e.mounts {
            let MountKind::Ssh(opt) = &m.kind else { continue };
            let agent =
                session.ssh.agent(&opt.id).await.map_err(|err| ctx.err(format!("ssh agent {:?}: {err}", opt.id)))?;
            match agent {
                Some(socket) => {
                    p.ssh.insert(opt.id.clone(), socket);
                }
                None if opt.optional => {}
                None => return Err(SolveError::MissingSsh { step: ctx.label().to_string(), id: opt.id.clone() }),
            }
        }
        Ok(p)
    }
}

impl Op<WorkerRef> for ExecOp {
    fn cache_map(&self, ctx: &OpContext, inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        self.0.cache_map(inputs).map_err(|m| ctx.err(m))
    }

    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let e = self.op()?;
            self.check(ctx, e)?;
            let provided = self.provided(ctx, e).await?;
            let inputs = super::materialize(ctx, inputs).await?;
            let cancel = sandbox::Cancel::default();
            let job = {
                let (state, session, e) = (self.0.state.clone(), self.0.session.clone(), e.clone());
                let (ctx, cancel, meta) = (ctx.clone(), cancel.clone(), self.0.meta.clone());
                blocking(move || run(&state, session.network, &ctx, &e, &inputs, provided, &cancel, meta))
            };
            tokio::pin!(job);
            tokio::select! {
                r = &mut job => r,
                _ = ctx.cancelled() => {
                    // Kill the process; the job then cleans up its snapshots and mounts before it returns.
                    cancel.cancel();
                    let _ = job.await;
                    Err(SolveError::Cancelled)
                }
            }
        })
    }
}

/// Runs an exec op (blocking).
#[allow(clippy::too_many_arguments)]
fn run(
    state: &Arc<State>,
    network: sandbox::NetworkMode,
    ctx: &OpContext,
    e: &LlbExec,
    inputs: &[WorkerRef],
    provided: Provided,
    cancel: &sandbox::Cancel,
    meta_of_vertex: Option<llb::Metadata>,
) -> Result<Vec<WorkerRef>, SolveError> {
    let key = ctx.key().ok_or_else(|| SolveError::Internal("an exec ran without a key".into()))?;
    let step = Step { state, label: ctx.label(), key };
    let step = &step;
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
    // Checked in `ExecOp::check`.
    spec.rlimits = meta.ulimits.iter().filter_map(|u| sandbox::Rlimit::from_llb(u).ok()).collect();
    spec.cgroup_parent = meta.cgroup_parent.clone().filter(|p| !p.is_empty());
    if let Some(h) = &meta.hostname {
        spec.hostname = h.clone();
    }
    spec.network = match e.network {
        llb::NetworkMode::Sandbox => network,
        llb::NetworkMode::Host => sandbox::NetworkMode::Host,
        llb::NetworkMode::None => sandbox::NetworkMode::None,
    };
    // Proxy build args, upper and lower case (BuildKit's proxyEnvList).
    if let Some(p) = &meta.proxy_env {
        for (name, value) in [
            ("HTTP_PROXY", &p.http_proxy),
            ("HTTPS_PROXY", &p.https_proxy),
            ("FTP_PROXY", &p.ftp_proxy),
            ("NO_PROXY", &p.no_proxy),
            ("ALL_PROXY", &p.all_proxy),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                spec.env.push(format!("{name}={v}"));
                spec.env.push(format!("{}={v}", name.to_ascii_lowercase()));
            }
        }
    }
    for se in &e.secret_env {
        // Into the environment only: never into the definition, a key or a log. An optional secret
        // that is not provided is set empty (BuildKit's loadSecretEnv).
        match provided.secrets.get(&se.id) {
            Some(v) => spec.env.push(format!("{}={}", se.name, String::from_utf8_lossy(v))),
            None if se.optional => spec.env.push(format!("{}=", se.name)),
            None => {}
        }
    }

    // Writable binds with an output, committed after the run: (output index, snapshot).
    let mut outputs_rw: Vec<(usize, Snap)> = Vec::new();
    // Views and throw-away binds, removed after the run.
    let mut scratch: Vec<Snap> = Vec::new();
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
                // A cache with a base (uid/gid/mode given, or from=) is a cache of its own, rooted at the
                // base's directory: BuildKit keys cache dirs by id and base ref ("cache-dir:<id>:<ref>")
                // and mounts the base's selector, owner and mode included.
                let (seed, key, (dir_mode, uid, gid)) = match m.input {
                    Some(_) => {
                        let base = snap_of(m.input)?;
                        let mut view = Snap::view(step, base.as_deref(), "cache-seed")?;
                        let path = scoped(&view.mount(step)?, &m.selector);
                        scratch.push(view);
                        let root = std::fs::metadata(&path).map(|md| {
                            use std::os::unix::fs::MetadataExt;
                            (md.mode() & 0o7777, md.uid(), md.gid())
                        });
                        (Some(path), format!("{id}:{}", base.unwrap_or_default()), root.unwrap_or((0o755, 0, 0)))
                    }
                    None => (None, id.clone(), (0o755, 0, 0)),
                };
                let lease = state
                    .cache_mounts
                    .acquire(&key, sharing(*mode), dir_mode, uid, gid, seed.as_deref())
                    .map_err(|err| step.err(format!("cannot take cache mount {id:?} for {}: {err}", m.dest)))?;
                let source = lease.path.clone();
                leases.push(lease);
                RunMountKind::Bind { source, readonly: m.readonly }
            }
            MountKind::Tmpfs { size } => RunMountKind::Tmpfs { size: *size },
            MountKind::Secret(opt) => match provided.secrets.get(&opt.id) {
                Some(contents) => {
                    RunMountKind::Secret { contents: contents.clone(), uid: opt.uid, gid: opt.gid, mode: opt.mode }
                }
                None => continue,
            },
            MountKind::Ssh(opt) => match provided.ssh.get(&opt.id) {
                Some(socket) => {
                    RunMountKind::Ssh { socket: socket.clone(), uid: opt.uid, gid: opt.gid, mode: opt.mode }
                }
                None => continue,
            },
        };
        spec.mounts.push(RunMount { destination: m.dest.clone(), kind });
    }

    let sink = LogSink { ctx, tail: Mutex::new(VecDeque::new()) };
    let outcome = match state.worker.executor.run(&root.mounts, &spec, &sink, cancel) {
        Ok(o) => o,
        Err(sandbox::ExecError::Cancelled) => return Err(SolveError::Cancelled),
        Err(err) => {
            let command = meta.args.join(" ");
            let hint = match command.len() + meta.env.iter().map(|e| e.len() + 1).sum::<usize>() {
                // The kernel's limit on one argument is 128 KiB, on all of them with the environment about 2 MB.
                n if n > 128 << 10 => {
                    format!(
                        " (the command and environment are {n} bytes: split the step, or write the script to a file)"
                    )
                }
                _ => String::new(),
            };
            return Err(step.err(format!("cannot run \"{}\": {err}{hint}", crate::error::clip_command(&command))));
        }
    };
    drop(leases);
    // What the sandbox could not apply (limits or a cgroup parent without cgroup v2) is told in the step's
    // own output, where its effect shows.
    for w in &outcome.warnings {
        ctx.log(LogStream::Stderr, format!("WARNING: {w}").into_bytes());
    }
    let code = outcome.status.code();
    let ok = match (&outcome.status, meta.valid_exit_codes.is_empty()) {
        (_, true) => outcome.status.success(),
        (sandbox::ExitStatus::Exited(c), false) => meta.valid_exit_codes.contains(c),
        (sandbox::ExitStatus::Signaled(_), false) => false,
    };
    if !ok {
        if ctx.is_cancelled() {
            return Err(SolveError::Cancelled);
        }
        let status = match outcome.status {
            sandbox::ExitStatus::Exited(c) => format!("exit code: {c}"),
            sandbox::ExitStatus::Signaled(s) => format!("killed by signal {s}"),
        };
        return Err(SolveError::Run(Box::new(RunFailure {
            vertex: ctx.name().to_string(),
            locations: meta_of_vertex.map(|m| m.locations).unwrap_or_default(),
            command: meta.args.join(" "),
            exit_code: code,
            status,
            tail: sink.tail.into_inner().unwrap_or_else(|e| e.into_inner()).into(),
        })));
    }
    drop(scratch);
    // Nothing is committed for a step that was cancelled: the guards remove the snapshots.
    ctx.check_cancelled()?;
    let mut outputs = vec![WorkerRef::Snapshot(None); e.num_outputs()];
    if let (Some(o), false) = (root_mount.output, root_mount.readonly) {
        outputs[o] = WorkerRef::Snapshot(Some(root.commit(step, &o.to_string())?));
    }
    for (o, snap) in outputs_rw {
        outputs[o] = WorkerRef::Snapshot(Some(snap.commit(step, &o.to_string())?));
    }
    Ok(outputs)
}
