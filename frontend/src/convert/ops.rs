//! The instructions that add ops: RUN (exec), COPY/ADD (file copy, merge for --link), WORKDIR (mkdir).

use llb::{
    CacheSharing, ChownOpt, ExecOp, FileAction, FileActionKind, FileOp, MergeOp, Metadata, Mount, MountKind, Op,
    Output, SecretEnv, SecretOpt, SourceOp, UserOpt,
};

use llb::file::{Copy, Mkdir, Mkfile};

use super::dispatch::{Converter, StageState, DEFAULT_PATH};
use super::scope::PROXY_ARGS;
use super::stages::{resolve_from, FromRef};
use crate::diag::{Diagnostic, Span};
use crate::instructions::{self, parse_mount, Command, CopyCmd, MountType, RunCmd, Sharing};

/// Join `p` to the working directory unless absolute, and clean it (`path.Join("/", ...)`).
pub(crate) fn resolve_path(workdir: &str, p: &str) -> String {
    let joined = if p.starts_with('/') { p.to_string() } else { format!("{workdir}/{p}") };
    clean(&joined)
}

/// Go's `path.Clean` for absolute paths.
pub(crate) fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `user[:group]` from --chown or USER. Names are looked up in the /etc/passwd and /etc/group of file op
/// input `lookup` (`None`: the destination the action writes); `root` is uid/gid 0 without a lookup, as
/// in BuildKit's `llb.WithUser`.
fn chown(spec: &str, lookup: Option<usize>) -> Option<ChownOpt> {
    if spec.is_empty() {
        return None;
    }
    let one = |s: &str| match s.parse::<u32>() {
        Ok(id) => UserOpt::ById(id),
        Err(_) if s == "root" => UserOpt::ById(0),
        Err(_) => UserOpt::ByName { name: s.to_string(), input: lookup },
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    Some(ChownOpt { user: Some(one(user)), group: group.filter(|g| !g.is_empty()).map(one) })
}

fn by_name(o: &ChownOpt) -> bool {
    o.user.iter().chain(o.group.iter()).any(|u| matches!(u, UserOpt::ByName { .. }))
}

impl Converter<'_> {
    pub(crate) fn dispatch_workdir(&mut self, st: &mut StageState, cmd: &Command, w: &str) -> Result<(), Diagnostic> {
        let span = cmd.span;
        let expanded = self.expand(st, w, span)?;
        // An absolute path is kept as written in the config and history; a relative one is joined to
        // the current directory and cleaned (BuildKit's system.NormalizeWorkdir).
        let wd = if expanded.starts_with('/') { expanded } else { resolve_path(&st.workdir(), &expanded) };
        st.image.config.working_dir = Some(wd.clone());
        if wd == "/" {
            self.history(st, "WORKDIR /".into(), true);
            return Ok(());
        }
        let user = st.user();
        let owner = chown(&user, st.output.map(|_| 0));
        let mkdir = FileActionKind::Mkdir(Mkdir {
            path: clean(&wd),
            mode: 0o755,
            make_parents: true,
            owner,
            timestamp: self.timestamp(),
        });
        let meta = self.metadata(st, &cmd.original, span);
        let (inputs, input) = match st.output {
            Some(o) => (vec![o], Some(0)),
            None => (Vec::new(), None),
        };
        let op = Op::File(FileOp {
            actions: vec![FileAction { input, secondary_input: None, output: Some(0), action: mkdir }],
        });
        st.output = Some(self.add(op, &inputs, &st.platform.clone(), meta, span)?);
        self.history(st, format!("WORKDIR {wd}"), false);
        Ok(())
    }

    fn timestamp(&self) -> Option<i64> {
        self.opts.source_date_epoch.map(|s| s.saturating_mul(1_000_000_000))
    }

    /// The filesystem a `--from` names: a stage's result, a named context or an image.
    fn state_for_from(&mut self, st: &StageState, word: &str, span: Span) -> Result<Option<Output>, Diagnostic> {
        match resolve_from(self.df, self.opts, word, span)? {
            FromRef::Stage(i) if i == st.index => {
                Err(Diagnostic::spanned(format!("stage {word} cannot copy from itself"), span))
            }
            FromRef::Stage(i) => self.results.get(&i).map(|r| r.output).ok_or_else(|| {
                Diagnostic::spanned(format!("internal error: stage {word} was not converted first"), span)
            }),
            FromRef::Named(name) => self.named_context(&name, &st.platform.clone(), span),
            FromRef::Image(r) => {
                let meta = Metadata::described(format!("[{}] load {r}", st.prefix_name.trim()));
                self.image_source(&r, &st.platform.clone(), meta, span).map(Some)
            }
        }
    }

    pub(crate) fn dispatch_run(&mut self, st: &mut StageState, cmd: &Command, run: &RunCmd) -> Result<(), Diagnostic> {
        let span = cmd.span;
        let mut args = run.cmd.args.clone().unwrap_or_default();
        let mut inputs: Vec<Output> = st.output.into_iter().collect();
        let mut exec = ExecOp::new(Vec::new(), st.output.map(|_| 0));
        exec.mounts[0].output = Some(0);

        // Heredocs: a lone `<<EOF` runs the body as a file; otherwise the shell gets the bodies inline.
        if !run.cmd.files.is_empty() {
            if args.len() != 1 || !run.cmd.prepend_shell {
                return Err(Diagnostic::spanned(
                    "a RUN with a heredoc must use the shell form (RUN <<EOF ...), not the JSON form",
                    span,
                ));
            }
            let f = &run.cmd.files[0];
            let body = if f.chomp { instructions::chomp_tabs(&f.data) } else { f.data.clone() };
            if crate::parser::heredoc_opener(&args[0]).is_some() && !body.starts_with("#!") {
                // A plain heredoc runs its body in the shell (BuildKit's "fake" heredoc).
                args = vec![body];
            } else if crate::parser::heredoc_opener(&args[0]).is_some() {
                // A shebang script runs as a file mounted at /dev/pipes/<name>.
                let mkfile = FileActionKind::Mkfile(Mkfile {
                    path: format!("/{}", f.name),
                    mode: 0o755,
                    data: body.into_bytes().into(),
                    owner: None,
                    timestamp: self.timestamp(),
                });
                let file_op = on_scratch(mkfile);
                let meta = self.metadata(st, &format!("RUN heredoc {}", f.name), span);
                let doc = self.add(file_op, &[], &st.platform.clone(), meta, span)?;
                inputs.push(doc);
                let mut m = Mount::bind(Some(inputs.len() - 1), "/dev/pipes/", None);
                m.readonly = true;
                exec.mounts.push(m);
                args = vec![format!("/dev/pipes/{}", f.name)];
            } else {
                let mut line = args.join(" ");
                for f in &run.cmd.files {
                    line.push('\n');
                    line.push_str(&f.data);
                    line.push_str(&f.name);
                }
                args = vec![line];
            }
        }
        let argv = if run.cmd.prepend_shell {
            let mut shell = st.shell();
            shell.push(args.join(" "));
            shell
        } else {
            args
        };

        let mut env = st.scope.exec_env();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        exec.meta.args = argv.clone();
        exec.meta.cwd = clean(&st.workdir());
        exec.meta.user = st.user();
        exec.meta.proxy_env = self.proxy_env();
        exec.network = match run.network {
            Some(instructions::NetworkMode::None) => llb::NetworkMode::None,
            Some(instructions::NetworkMode::Host) => llb::NetworkMode::Host,
            Some(instructions::NetworkMode::Default) | None => llb::NetworkMode::default(),
        };
        if run.security == Some(instructions::SecurityMode::Insecure) {
            exec.security = llb::SecurityMode::Insecure;
        }

        let mut ssh_count = 0;
        for raw in &run.mounts {
            let scope = st.scope.clone();
            let lexer = self.lexer;
            let mut expand = |w: &str| lexer.process_word(w, &scope).map(|e| e.value).map_err(|e| e.to_string());
            let m =
                parse_mount(raw, &mut expand).map_err(|e| Diagnostic::spanned(format!("--mount={raw}: {e}"), span))?;
            let target = if m.target.is_empty() { String::new() } else { resolve_path(&st.workdir(), &m.target) };
            match m.kind {
                MountType::Bind | MountType::Cache => {
                    let source_state = if !m.from.is_empty() {
                        self.state_for_from(st, &m.from, span)?
                    } else if m.kind == MountType::Bind {
                        Some(self.context_source()?)
                    } else if m.mode.is_some() || m.uid.is_some() || m.gid.is_some() {
                        // A new cache directory with the requested owner and mode (BuildKit seeds it so).
                        Some(self.cache_seed(st, &m, span)?)
                    } else {
                        None
                    };
                    let input = source_state.map(|o| input_index(&mut inputs, o));
                    let mut selector =
                        if m.source.is_empty() { String::new() } else { clean(&format!("/{}", m.source)) };
                    if m.kind == MountType::Cache && m.from.is_empty() && input.is_some() {
                        selector = "/cache".into();
                    }
                    let kind = if m.kind == MountType::Bind {
                        MountKind::Bind
                    } else {
                        let id = if m.id.is_empty() { target.clone() } else { m.id.clone() };
                        MountKind::Cache {
                            id,
                            sharing: match m.sharing {
                                Sharing::Shared => CacheSharing::Shared,
                                Sharing::Private => CacheSharing::Private,
                                Sharing::Locked => CacheSharing::Locked,
                            },
                        }
                    };
                    let mut mount = Mount::bind(input, target, None);
                    mount.selector = selector.trim_start_matches('/').to_string();
                    mount.readonly = m.readonly;
                    mount.kind = kind;
                    exec.mounts.push(mount);
                }
                MountType::Tmpfs => {
                    let mut mount = Mount::bind(None, target, None);
                    mount.kind = MountKind::Tmpfs { size: m.size };
                    exec.mounts.push(mount);
                }
                MountType::Secret => {
                    let id = if !m.id.is_empty() {
                        m.id.clone()
                    } else if !m.source.is_empty() {
                        m.source.clone()
                    } else {
                        target.rsplit('/').next().unwrap_or_default().to_string()
                    };
                    if let Some(name) = &m.env {
                        exec.secret_env.push(SecretEnv { id: id.clone(), name: name.clone(), optional: !m.required });
                    }
                    if m.env.is_none() || !m.target.is_empty() {
                        let dest = if target.is_empty() { format!("/run/secrets/{id}") } else { target };
                        let mut mount = Mount::bind(None, dest, None);
                        mount.readonly = true;
                        mount.kind = MountKind::Secret(SecretOpt {
                            id,
                            uid: m.uid.unwrap_or(0),
                            gid: m.gid.unwrap_or(0),
                            mode: m.mode.unwrap_or(0o400),
                            optional: !m.required,
                        });
                        exec.mounts.push(mount);
                    }
                }
                MountType::Ssh => {
                    let id = if m.id.is_empty() { "default".to_string() } else { m.id.clone() };
                    let dest = if target.is_empty() { format!("/run/buildkit/ssh_agent.{ssh_count}") } else { target };
                    if ssh_count == 0 {
                        env.push(format!("SSH_AUTH_SOCK={dest}"));
                    }
                    ssh_count += 1;
                    let mut mount = Mount::bind(None, dest, None);
                    mount.readonly = true;
                    mount.kind = MountKind::Ssh(SecretOpt {
                        id,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o600),
                        optional: !m.required,
                    });
                    exec.mounts.push(mount);
                }
            }
        }
        exec.meta.env = env;
        exec.meta.extra_hosts = self.opts.extra_hosts.clone();
        // Build-wide run settings, part of each ExecOp as BuildKit writes them, so of its cache key.
        exec.meta.ulimits = self.opts.ulimits.clone();
        exec.meta.cgroup_parent = self.opts.cgroup_parent.clone().filter(|p| !p.is_empty());
        if let Some(size) = self.opts.shm_size.filter(|s| *s > 0) {
            let mut shm = Mount::bind(None, "/dev/shm".to_string(), None);
            shm.kind = MountKind::Tmpfs { size: Some(size) };
            exec.mounts.push(shm);
        }

        let meta = self.metadata(st, &cmd.original, span);
        st.output = Some(self.add(Op::Exec(exec), &inputs, &st.platform.clone(), meta, span)?);

        // History: RUN |N K=V ... <argv> # buildkit  (BuildKit's runCommandString)
        let build_args = st.scope.history_args();
        let mut parts = Vec::new();
        if !build_args.is_empty() {
            parts.push(format!("|{}", build_args.len()));
            parts.extend(build_args);
        }
        parts.extend(argv);
        self.history(st, format!("RUN {} # buildkit", parts.join(" ")), false);
        Ok(())
    }

    /// Proxy build args reach RUN without an ARG; they are not part of the op's identity.
    fn proxy_env(&self) -> Option<llb::ProxyEnv> {
        // Any build arg named like a proxy variable, in any case (BuildKit's proxyEnvFromBuildArgs).
        let get = |upper: &str, _lower: &str| {
            self.opts.build_args.iter().find(|(k, _)| k.eq_ignore_ascii_case(upper)).map(|(_, v)| v.clone())
        };
        let p = llb::ProxyEnv {
            http_proxy: get(PROXY_ARGS[0], PROXY_ARGS[1]),
            https_proxy: get(PROXY_ARGS[2], PROXY_ARGS[3]),
            ftp_proxy: get(PROXY_ARGS[4], PROXY_ARGS[5]),
            no_proxy: get(PROXY_ARGS[6], PROXY_ARGS[7]),
            all_proxy: get(PROXY_ARGS[8], PROXY_ARGS[9]),
        };
        (p != llb::ProxyEnv::default()).then_some(p)
    }

    fn cache_seed(&mut self, st: &StageState, m: &instructions::RunMount, span: Span) -> Result<Output, Diagnostic> {
        let owner = (m.uid.is_some() || m.gid.is_some()).then(|| ChownOpt {
            user: Some(UserOpt::ById(m.uid.unwrap_or(0))),
            group: Some(UserOpt::ById(m.gid.unwrap_or(0))),
        });
        let mkdir = FileActionKind::Mkdir(Mkdir {
            path: "/cache".into(),
            mode: m.mode.unwrap_or(0o755),
            make_parents: true,
            owner,
            timestamp: None,
        });
        let op = on_scratch(mkdir);
        self.add(op, &[], &st.platform.clone(), Metadata::default(), span)
    }

    pub(crate) fn dispatch_copy(&mut self, st: &mut StageState, cmd: &Command, c: &CopyCmd) -> Result<(), Diagnostic> {
        let span = cmd.span;
        let name = if c.is_add { "ADD" } else { "COPY" };
        let dest_word = self.expand(st, &c.dest, span)?;
        let mut dest = resolve_path(&st.workdir(), &dest_word);
        let dest_is_dir =
            dest_word.ends_with('/') || dest_word == "." || dest_word.is_empty() || dest_word.ends_with("/.");
        if dest_is_dir && !dest.ends_with('/') {
            dest.push('/');
        }
        let chown_word = c.chown.as_deref().map(|w| self.expand(st, w, span)).transpose()?;
        let chmod_word = c.chmod.as_deref().map(|w| self.expand(st, w, span)).transpose()?;
        let (mode, mode_str) = match &chmod_word {
            None => (None, None),
            Some(w) => {
                instructions::validate_chmod(w).map_err(|e| Diagnostic::spanned(e, span))?;
                match u32::from_str_radix(w, 8) {
                    Ok(m) if w.chars().all(|ch| ch.is_ascii_digit()) => (Some(m), None),
                    _ => (None, Some(w.clone())),
                }
            }
        };
        // BuildKit v0.24 without --link reads names from the destination (input 0 below).
        let owner = chown_word.as_deref().and_then(|w| chown(w, st.output.map(|_| 0)));
        let mut excludes = Vec::new();
        for e in &c.exclude {
            excludes.push(self.expand(st, e, span)?);
        }
        let checksum = match &c.checksum {
            None => None,
            Some(w) => {
                let v = self.expand(st, w, span)?;
                Some(v.parse::<llb::Digest>().map_err(|e| Diagnostic::spanned(format!("--checksum: {e}"), span))?)
            }
        };

        let source_state = match &c.from {
            Some(f) => Some(self.state_for_from(st, f, span)?),
            None => None,
        };

        let mut expanded_sources = Vec::new();
        for s in &c.sources {
            expanded_sources.push(self.expand(st, s, span)?);
        }
        if checksum.is_some() {
            if expanded_len(c) != 1 {
                return Err(Diagnostic::spanned("--checksum can't be specified for multiple sources", span));
            }
            // The source as expanded: `ADD --checksum=... $URL` names a URL.
            if !expanded_sources.first().is_some_and(|s| is_url(s)) {
                return Err(Diagnostic::spanned("--checksum can only be used with an http(s) URL or git source", span));
            }
        }
        let total_sources = expanded_sources.len() + c.contents.len();
        if total_sources > 1 && !dest.ends_with('/') {
            return Err(Diagnostic::spanned(
                format!("when using {name} with more than one source file, the destination must be a directory and end with a /"),
                span,
            ));
        }

        // Each source becomes a copy action; actions chain on the previous action's output.
        let mut inputs: Vec<Output> = Vec::new();
        // BuildKit makes --link an independent layer only without --chmod.
        let link = c.link && c.chmod.is_none();
        let dest_input = if link { None } else { st.output };
        if let Some(o) = dest_input {
            inputs.push(o);
        } else if let (true, Some(base), Some(true)) = (link, st.output, owner.as_ref().map(by_name)) {
            // `COPY --link --chown=name`: BuildKit v0.24 fails on MergeOp workers ("invalid user index: -1",
            // moby/buildkit#2987) and dockerd's BuildKit, which has no MergeOp, reads the stage's passwd.
            // The names are looked up in the stage as it is before the copy (input 0); the copied layer
            // stays independent of it, only its cache key follows the stage.
            inputs.push(base);
        }
        let mut copies: Vec<(usize, Copy)> = Vec::new();
        let base_copy = Copy {
            dest: dest.clone(),
            owner: owner.clone(),
            mode,
            mode_str: mode_str.clone(),
            follow_symlink: true,
            dir_copy_contents: true,
            create_dest_path: true,
            allow_wildcard: true,
            allow_empty_wildcard: true,
            timestamp: self.timestamp(),
            exclude_patterns: excludes.clone(),
            parents: c.parents,
            ..Copy::default()
        };
        // Heredoc and remote sources: only mode, owner and dest creation apply.
        let plain_copy = Copy {
            dest: dest.clone(),
            owner: owner.clone(),
            mode,
            mode_str: mode_str.clone(),
            create_dest_path: true,
            timestamp: self.timestamp(),
            exclude_patterns: excludes.clone(),
            ..Copy::default()
        };
        for src in &expanded_sources {
            if !c.is_add && c.from.is_none() && is_url(src) {
                let kind = if is_git(src) { "a git ref" } else { "a URL" };
                return Err(Diagnostic::spanned(format!("source can't be {kind} for COPY: use ADD {src}"), span));
            }
            let (state, copy) = if c.is_add && source_state.is_none() && is_url(src) {
                let out = self.remote_source(st, c, src, checksum, span)?;
                let file = if is_git(src) { "/".to_string() } else { "/".to_string() + &url_filename(src) };
                // Remote sources are copied as they are: no unpacking, no wildcards (BuildKit).
                (Some(out), Copy { src: file, ..plain_copy.clone() })
            } else if c.parents {
                // `--parents`: an optional `/./` pivot; the rest of the path is an include pattern.
                let state = match source_state {
                    Some(s) => s,
                    None => Some(self.context_source()?),
                };
                let (root, pattern) = match src.split_once("/./") {
                    Some((parent, pattern)) => (clean(&format!("/{parent}")), pattern.to_string()),
                    None => ("/".to_string(), src.clone()),
                };
                let pattern = clean(&format!("/{pattern}")).trim_start_matches('/').to_string();
                let copy = Copy { src: root, include_patterns: vec![pattern], ..base_copy.clone() };
                (state, copy)
            } else {
                let state = match source_state {
                    Some(s) => s,
                    None => Some(self.context_source()?),
                };
                let attempt_unpack = c.is_add && source_state.is_none() && c.unpack != Some(false);
                (state, Copy { src: clean(&format!("/{src}")), attempt_unpack, checksum, ..base_copy.clone() })
            };
            let idx = match state {
                Some(o) => input_index(&mut inputs, o),
                None => usize::MAX,
            };
            copies.push((idx, copy));
        }
        for content in &c.contents {
            let data = if content.expand {
                heredoc_lexer()
                    .process_word(&content.data, &st.scope)
                    .map_err(|e| Diagnostic::spanned(e.to_string(), span))?
                    .value
            } else {
                content.data.clone()
            };
            let mkfile = FileActionKind::Mkfile(Mkfile {
                path: format!("/{}", content.path),
                mode: 0o644,
                data: data.into_bytes().into(),
                owner: None,
                timestamp: self.timestamp(),
            });
            let op = on_scratch(mkfile);
            let meta = self.metadata(st, &format!("{name} heredoc {}", content.path), span);
            let out = self.add(op, &[], &st.platform.clone(), meta, span)?;
            inputs.push(out);
            copies.push((inputs.len() - 1, Copy { src: format!("/{}", content.path), ..plain_copy.clone() }));
        }

        let num_inputs = inputs.len();
        let mut actions = Vec::new();
        let last = copies.len().saturating_sub(1);
        for (i, (src_idx, copy)) in copies.into_iter().enumerate() {
            let input = if i == 0 { dest_input.map(|_| 0) } else { Some(num_inputs + i - 1) };
            actions.push(FileAction {
                input,
                secondary_input: (src_idx != usize::MAX).then_some(src_idx),
                output: (i == last).then_some(0),
                action: FileActionKind::Copy(copy),
            });
        }
        let meta = self.metadata(st, &cmd.original, span);
        let platform = st.platform.clone();
        let copied = self.add(Op::File(FileOp { actions }), &inputs, &platform, meta.clone(), span)?;
        st.output = Some(match (link, st.output) {
            (true, Some(base)) => self.add(Op::Merge(MergeOp {}), &[base, copied], &platform, meta, span)?,
            _ => copied,
        });

        // History: COPY [--chown=..] [--chmod=..] src... dest # buildkit
        let mut msg = name.to_string();
        if c.parents {
            msg.push_str(" --parents");
        }
        if let Some(w) = &chown_word {
            msg.push_str(&format!(" --chown={w}"));
        }
        if let Some(w) = &chmod_word {
            msg.push_str(&format!(" --chmod={w}"));
        }
        for s in &expanded_sources {
            msg.push(' ');
            msg.push_str(s);
        }
        for content in &c.contents {
            msg.push_str(&format!(" <<{}", content.path));
        }
        msg.push(' ');
        msg.push_str(&dest_word);
        self.history(st, format!("{msg} # buildkit"), false);
        Ok(())
    }

    /// ADD of an http(s) URL or a git repository.
    fn remote_source(
        &mut self,
        st: &StageState,
        c: &CopyCmd,
        src: &str,
        checksum: Option<llb::Digest>,
        span: Span,
    ) -> Result<Output, Diagnostic> {
        let op = if is_git(src) {
            let (remote, fragment) = match src.split_once('#') {
                Some((r, f)) => (r.to_string(), Some(f.to_string())),
                None => (src.to_string(), None),
            };
            let (reference, subdir) = match fragment.as_deref().map(|f| f.split_once(':')) {
                Some(Some((r, s))) => (Some(r.to_string()).filter(|r| !r.is_empty()), Some(s.to_string())),
                Some(None) => (fragment.clone(), None),
                None => (None, None),
            };
            SourceOp::Git {
                remote,
                reference,
                subdir,
                keep_git_dir: c.keep_git_dir,
                checksum: checksum.map(|d| d.to_string()),
                auth_token_secret: None,
                auth_header_secret: None,
                known_ssh_hosts: None,
                mount_ssh_sock: None,
            }
        } else {
            SourceOp::Http {
                url: src.to_string(),
                checksum,
                filename: Some(url_filename(src)),
                perm: None,
                uid: None,
                gid: None,
                headers: Default::default(),
                auth_header_secret: None,
            }
        };
        // With the step's Dockerfile lines, so a failed download points at its ADD.
        let meta = self.metadata(st, &format!("ADD {src}"), span);
        self.builder
            .source(op, None, meta)
            .map_err(|e| Diagnostic::spanned(format!("internal error building the definition: {e}"), span))
    }
}

/// The lexer that expands a COPY/ADD heredoc body with an unquoted delimiter (BuildKit's dispatch
/// `ExpandRaw`): `$` expands everywhere, quotes are ordinary characters, a backslash escapes the next
/// character and is dropped, whatever the Dockerfile's escape directive says.
fn heredoc_lexer() -> crate::shell::Lexer {
    crate::shell::Lexer::new('\\').skip_process_quotes(true)
}

/// A file op with one action on an empty filesystem (heredoc files, cache seeds).
fn on_scratch(action: FileActionKind) -> Op {
    Op::File(FileOp { actions: vec![FileAction { input: None, secondary_input: None, output: Some(0), action }] })
}

fn expanded_len(c: &CopyCmd) -> usize {
    c.sources.len() + c.contents.len()
}

/// The index of `o` among the op's inputs, adding it once.
fn input_index(inputs: &mut Vec<Output>, o: Output) -> usize {
    match inputs.iter().position(|i| *i == o) {
        Some(i) => i,
        None => {
            inputs.push(o);
            inputs.len() - 1
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://") || is_git(s)
}

/// BuildKit's git URL detection for ADD: git@host:, git://, ssh://, or an http(s) URL ending in .git.
fn is_git(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git@")
        || s.starts_with("git://")
        || s.starts_with("ssh://")
        || ((s.starts_with("https://") || s.starts_with("http://")) && base.ends_with(".git"))
}

/// The file name ADD gives a downloaded URL: Go's `path.Base` of the URL's path (trailing slashes
/// ignored), or `__unnamed__` when that is `/` or `.`.
fn url_filename(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = no_query.split_once("://").map(|(_, r)| r).unwrap_or(no_query);
    match path.split_once('/') {
        Some((_, p)) => match p.trim_end_matches('/').rsplit('/').next() {
            Some(name) if !name.is_empty() && name != "." => name.to_string(),
            _ => "__unnamed__".into(),
        },
        None => "__unnamed__".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(resolve_path("/app", "src"), "/app/src");
        assert_eq!(resolve_path("/app", "/x/../y/"), "/y");
        assert_eq!(resolve_path("/", "."), "/");
        assert_eq!(clean("/a/./b/../c"), "/a/c");
    }

    #[test]
    fn urls() {
        assert!(is_git("https://github.com/moby/buildkit.git#v0.12:docs"));
        assert!(is_git("git@github.com:moby/buildkit.git"));
        assert!(!is_git("https://example.com/file.tar.gz"));
        assert_eq!(url_filename("https://example.com/dl/file.tar.gz?x=1"), "file.tar.gz");
        assert_eq!(url_filename("https://example.com/"), "__unnamed__");
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
        assert_eq!(url_filename("http://127.0.0.1:5555/v2/"), "v2");
        assert_eq!(url_filename("https://example.com/a/b//?x=/y"), "b");
    }

    #[test]
    fn chown_specs() {
        let c = chown("1000:app", Some(0)).unwrap();
        assert_eq!(c.user, Some(UserOpt::ById(1000)));
        assert_eq!(c.group, Some(UserOpt::ByName { name: "app".into(), input: Some(0) }));
        assert!(chown("", Some(0)).is_none());
        let r = chown("root:root", None).unwrap();
        assert_eq!((r.user, r.group), (Some(UserOpt::ById(0)), Some(UserOpt::ById(0))));
        assert_eq!(chown("app", None).unwrap().user, Some(UserOpt::ByName { name: "app".into(), input: None }));
    }

    #[test]
    fn heredoc_bodies_expand_inside_quotes() {
        let mut scope = super::super::scope::StageScope::default();
        scope.declare("NAME", Some("world".into()));
        let body = "plain $NAME \"${NAME}\" '$NAME' \\$NAME \\\\$NAME ${UNSET:-d} $(x)\n";
        let got = heredoc_lexer().process_word(body, &scope).unwrap().value;
        assert_eq!(got, "plain world \"world\" 'world' $NAME \\world d $(x)\n");
    }

    #[test]
    fn chomping() {
        assert_eq!(instructions::chomp_tabs("\t\tline1\n\tline2\n"), "line1\nline2\n");
    }
}
