//! Typed Dockerfile instructions with flag validation, a port of BuildKit's `instructions` package.
//!
//! Words are kept unexpanded here: variables are expanded at conversion, where the stage's ARG/ENV
//! scope is known. What can be checked without expansion (flags, argument counts, JSON-only forms,
//! mount syntax, literal chmod values) is checked here so errors carry the instruction's span.

mod flags;
mod mount;
mod types;

pub use flags::FlagSet;
pub use mount::{mount_from, parse_mount, parse_size, MountType, RunMount, Sharing};
pub use types::*;

use crate::diag::{suggest, Diagnostic, Span};
use crate::parser::{Ast, Node, INSTRUCTIONS};

/// Group the AST into global ARGs and stages, parsing each instruction.
pub fn parse_dockerfile(ast: &Ast) -> Result<Dockerfile, Diagnostic> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &ast.nodes {
        let instruction = parse_node(node)?;
        match instruction {
            Instruction::From(from) => stages.push(Stage {
                base: from.base,
                name: from.name,
                platform: from.platform,
                original: node.original.trim().to_string(),
                span: node.span,
                commands: Vec::new(),
            }),
            Instruction::Arg(args) if stages.is_empty() => meta_args.push(Command {
                instruction: Instruction::Arg(args),
                span: node.span,
                original: node.original.clone(),
            }),
            instruction => match stages.last_mut() {
                Some(stage) => {
                    stage.commands.push(Command { instruction, span: node.span, original: node.original.clone() })
                }
                None => {
                    return Err(Diagnostic::spanned(
                        format!(
                            "no build stage in current context: {} must come after a FROM instruction",
                            node.keyword.to_ascii_uppercase()
                        ),
                        node.span,
                    ))
                }
            },
        }
    }
    if stages.is_empty() {
        let span = ast.nodes.last().map(|n| n.span).unwrap_or(Span::line(1));
        return Err(Diagnostic::spanned("the Dockerfile has no FROM instruction: it defines no build stage", span));
    }
    Ok(Dockerfile { meta_args, stages, escape: ast.escape })
}

/// Parse one AST node into a typed instruction; errors are spanned to the node's lines.
pub fn parse_node(node: &Node) -> Result<Instruction, Diagnostic> {
    parse_inner(node).map_err(|message| Diagnostic::spanned(message, node.span))
}

fn parse_inner(node: &Node) -> Result<Instruction, String> {
    let upper = node.keyword.to_ascii_uppercase();
    let flags = |set: FlagSet| set.parse(&node.flags);
    let no_flags =
        || FlagSet::new(INSTRUCTIONS.iter().find(|i| **i == upper).copied().unwrap_or("")).parse(&node.flags);
    let args = &node.args;
    Ok(match node.keyword.as_str() {
        "from" => {
            let f = flags(FlagSet::new("FROM").string("platform"))?;
            let name = match args.len() {
                1 => None,
                3 if args[1].eq_ignore_ascii_case("as") => Some(stage_name(&args[2])?),
                _ => return Err("FROM requires either one or three arguments (FROM image [AS name])".into()),
            };
            Instruction::From(FromCmd { base: args[0].clone(), name, platform: f.get_string("platform") })
        }
        "run" => {
            let f = flags(FlagSet::new("RUN").list("mount").string("network").string("security"))?;
            let mounts = f.get_list("mount");
            for m in &mounts {
                // The rest of the value may use the stage's variables: it is parsed at dispatch.
                mount_from(m).map_err(|e| format!("--mount={m}: {e}"))?;
            }
            let network = f.get_string("network").map(|n| parse_network(&n)).transpose()?;
            let security = f.get_string("security").map(|s| parse_security(&s)).transpose()?;
            Instruction::Run(RunCmd { cmd: cmd_line(node, false), mounts, network, security })
        }
        "cmd" => {
            no_flags()?;
            Instruction::Cmd(cmd_line(node, false))
        }
        "entrypoint" => {
            no_flags()?;
            Instruction::Entrypoint(cmd_line(node, true))
        }
        "shell" => {
            no_flags()?;
            if !node.json {
                return Err(format!(
                    "SHELL requires the arguments to be in JSON form: SHELL [\"executable\", \"param\"], got: {}",
                    node.original.trim()
                ));
            }
            if args.is_empty() {
                return Err("SHELL requires at least one argument".into());
            }
            Instruction::Shell(args.clone())
        }
        "env" | "label" => {
            no_flags()?;
            let pairs = key_values(args, &upper)?;
            if node.keyword == "env" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "maintainer" => {
            no_flags()?;
            exactly_one(args, "MAINTAINER")?;
            Instruction::Maintainer(args[0].clone())
        }
        "expose" => {
            no_flags()?;
            at_least_one(args, "EXPOSE")?;
            let mut ports = args.clone();
            ports.sort();
            Instruction::Expose(ports)
        }
        "volume" => {
            no_flags()?;
            at_least_one(args, "VOLUME")?;
            let mut volumes = Vec::new();
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err("VOLUME specified can not be an empty string".into());
                }
                volumes.push(v.to_string());
            }
            Instruction::Volume(volumes)
        }
        "user" => {
            no_flags()?;
            exactly_one(args, "USER")?;
            Instruction::User(args[0].clone())
        }
        "workdir" => {
            no_flags()?;
            exactly_one(args, "WORKDIR")?;
            Instruction::Workdir(args[0].clone())
        }
        "stopsignal" => {
            no_flags()?;
            exactly_one(args, "STOPSIGNAL")?;
            Instruction::StopSignal(args[0].clone())
        }
        "arg" => {
            no_flags()?;
            at_least_one(args, "ARG")?;
            let mut decls = Vec::new();
            for a in args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err("ARG names can not be blank".into()),
                    Some((k, v)) => ArgDecl { key: k.to_string(), value: Some(v.to_string()) },
                    None => ArgDecl { key: a.clone(), value: None },
                };
                decls.push(decl);
            }
            Instruction::Arg(decls)
        }
        "add" | "copy" => copy(node, node.keyword == "add")?,
        "healthcheck" => healthcheck(node)?,
        "onbuild" => onbuild(node)?,
        other => {
            return Err(suggest(format!("unknown instruction: {}", other.to_ascii_uppercase()), other, INSTRUCTIONS))
        }
    })
}

fn stage_name(raw: &str) -> Result<String, String> {
    let name = raw.to_ascii_lowercase();
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(format!(
            "invalid name for build stage: \"{raw}\", name can't start with a number or contain symbols"
        ));
    }
    Ok(name)
}

fn parse_network(n: &str) -> Result<NetworkMode, String> {
    match n {
        "default" => Ok(NetworkMode::Default),
        "none" => Ok(NetworkMode::None),
        "host" => Ok(NetworkMode::Host),
        other => Err(suggest(format!("unsupported network mode \"{other}\""), other, ["default", "none", "host"])),
    }
}

fn parse_security(s: &str) -> Result<SecurityMode, String> {
    match s {
        "sandbox" => Ok(SecurityMode::Sandbox),
        "insecure" => Ok(SecurityMode::Insecure),
        other => Err(suggest(format!("unsupported security mode \"{other}\""), other, ["sandbox", "insecure"])),
    }
}

fn exactly_one(args: &[String], name: &str) -> Result<(), String> {
    if args.len() != 1 {
        return Err(format!("{name} requires exactly one argument"));
    }
    Ok(())
}

fn at_least_one(args: &[String], name: &str) -> Result<(), String> {
    if args.is_empty() {
        return Err(format!("{name} requires at least one argument"));
    }
    Ok(())
}

/// ENV/LABEL arrive from the parser as `key value sep` triples.
fn key_values(args: &[String], name: &str) -> Result<Vec<KeyValue>, String> {
    at_least_one(args, name)?;
    if args.len() % 3 != 0 {
        return Err(format!("bad input to {name}, too many arguments"));
    }
    args.chunks(3)
        .map(|c| {
            if c[0].is_empty() {
                return Err(format!("{name} names can not be blank"));
            }
            Ok(KeyValue { key: c[0].clone(), value: c[1].clone() })
        })
        .collect()
}

/// JSON form keeps the array; shell form is one string (BuildKit's handleJSONArgs).
fn cmd_line(node: &Node, empty_as_none: bool) -> CmdLine {
    let args = if node.json || node.args.is_empty() { node.args.clone() } else { vec![node.args.join(" ")] };
    CmdLine {
        args: if empty_as_none && args.is_empty() { None } else { Some(args) },
        prepend_shell: !node.json,
        files: node
            .heredocs
            .iter()
            .map(|h| ShellFile { name: h.name.clone(), data: h.raw.clone(), chomp: h.chomp })
            .collect(),
    }
}

fn copy(node: &Node, is_add: bool) -> Result<Instruction, String> {
    let name = if is_add { "ADD" } else { "COPY" };
    if node.args.len() < 2 {
        return Err(format!(
            "{name} requires at least two arguments, but only one was provided. Destination could not be determined"
        ));
    }
    let set = FlagSet::new(name).string("chown").string("chmod").bool("link").list("exclude");
    let set = if is_add {
        set.string("checksum").bool("keep-git-dir").string("unpack")
    } else {
        set.string("from").bool("parents")
    };
    let f = set.parse(&node.flags)?;
    let (dest, srcs) = node.args.split_last().expect("checked: at least two arguments");
    if crate::parser::heredoc_opener(dest).is_some() && !node.heredocs.is_empty() {
        return Err(format!("{name} cannot accept a heredoc as a destination"));
    }
    let mut sources = Vec::new();
    let mut contents = Vec::new();
    for src in srcs {
        match crate::parser::heredoc_opener(src).filter(|_| !node.heredocs.is_empty()) {
            Some((hname, chomp)) => {
                // BuildKit: the raw body, with leading tabs stripped for `<<-`.
                let doc = node.heredocs.iter().find(|h| h.name == hname);
                let raw = doc.map(|h| h.raw.as_str()).unwrap_or_default();
                let data = if chomp { chomp_tabs(raw) } else { raw.to_string() };
                contents.push(SourceContent { path: hname, data, expand: doc.is_none_or(|h| h.expand) });
            }
            None => sources.push(src.clone()),
        }
    }
    let from = f.get_string("from");
    if let Some(from) = &from {
        if from.contains('$') {
            return Err(format!(
                "COPY --from does not support variables (\"{from}\"): name a stage instead, e.g. FROM ${{IMAGE}} AS src ... COPY --from=src"
            ));
        }
    }
    let chmod = f.get_string("chmod");
    if let Some(c) = &chmod {
        if !c.contains('$') {
            validate_chmod(c)?;
        }
    }
    let unpack = match f.get_string("unpack") {
        None => None,
        Some(v) => Some(match v.as_str() {
            "" | "true" => true,
            "false" => false,
            other => return Err(format!("expecting boolean value for flag --unpack, not: {other}")),
        }),
    };
    Ok(Instruction::Copy(CopyCmd {
        is_add,
        sources,
        contents,
        dest: dest.clone(),
        from,
        chown: f.get_string("chown"),
        chmod,
        link: f.get_bool("link"),
        parents: f.get_bool("parents"),
        exclude: f.get_list("exclude"),
        checksum: f.get_string("checksum"),
        keep_git_dir: f.get_bool("keep-git-dir"),
        unpack,
    }))
}

/// BuildKit's ChompHeredocContent: strip the leading tabs of every line.
pub fn chomp_tabs(data: &str) -> String {
    data.split_inclusive('\n').map(|l| l.trim_start_matches('\t')).collect()
}

/// `--chmod` takes an octal mode (`755`, `0644`) or symbolic clauses (`u=rwx,go=rx`, `+x`).
pub fn validate_chmod(c: &str) -> Result<(), String> {
    if c.chars().all(|ch| ch.is_ascii_digit()) {
        return match u32::from_str_radix(c, 8) {
            Ok(m) if m <= 0o7777 => Ok(()),
            _ => Err(format!("invalid chmod value \"{c}\": an octal mode is at most 7777")),
        };
    }
    let clause_ok = |cl: &str| {
        let who_end = cl.find(|ch: char| !"ugoa".contains(ch)).unwrap_or(cl.len());
        let ops = &cl[who_end..];
        !ops.is_empty() && ops.starts_with(['+', '-', '=']) && ops.chars().all(|ch| "+-=rwxXstugo".contains(ch))
    };
    if c.split(',').all(clause_ok) {
        Ok(())
    } else {
        Err(format!("invalid chmod value \"{c}\": use an octal mode (0755) or symbolic clauses (u=rwx,go=rx)"))
    }
}

fn healthcheck(node: &Node) -> Result<Instruction, String> {
    let args = &node.args;
    at_least_one(args, "HEALTHCHECK")?;
    let typ = args[0].to_ascii_uppercase();
    if typ == "NONE" {
        FlagSet::new("HEALTHCHECK").parse(&node.flags).map_err(|e| format!("{e} (HEALTHCHECK NONE takes no flags)"))?;
        if args.len() != 1 {
            return Err("HEALTHCHECK NONE takes no arguments".into());
        }
        return Ok(Instruction::Healthcheck(Healthcheck { test: vec!["NONE".into()], ..Healthcheck::default() }));
    }
    let f = FlagSet::new("HEALTHCHECK")
        .string("interval")
        .string("timeout")
        .string("start-period")
        .string("start-interval")
        .string("retries")
        .parse(&node.flags)?;
    if typ != "CMD" {
        return Err(format!("unknown type \"{typ}\" in HEALTHCHECK (try CMD)"));
    }
    let rest = &args[1..];
    let cmd: Vec<String> = if node.json || rest.is_empty() { rest.to_vec() } else { vec![rest.join(" ")] };
    if cmd.is_empty() {
        return Err("missing command after HEALTHCHECK CMD".into());
    }
    let kind = if node.json { "CMD" } else { "CMD-SHELL" };
    let duration = |name: &str| -> Result<i64, String> {
        match f.get_string(name) {
            None => Ok(0),
            Some(v) => {
                let d = parse_go_duration(&v).map_err(|e| format!("--{name}: {e}"))?;
                if d != 0 && d < 1_000_000 {
                    return Err(format!("interval \"{name}\" cannot be less than 1ms"));
                }
                Ok(d)
            }
        }
    };
    let retries = match f.get_string("retries") {
        None => 0,
        Some(v) => {
            let r: i64 = v.parse().map_err(|_| format!("--retries: invalid number \"{v}\""))?;
            if r < 0 {
                return Err(format!("--retries cannot be negative ({r})"));
            }
            r
        }
    };
    Ok(Instruction::Healthcheck(Healthcheck {
        test: std::iter::once(kind.to_string()).chain(cmd).collect(),
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}

/// A value that does not parse (a size, a duration); the message shows the value and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64, InvalidValue> {
    let err = || InvalidValue(format!("invalid duration \"{s}\" (examples: 30s, 1m30s, 500ms)"));
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(err)?;
        let num: f64 = rest[..num_end].parse().map_err(|_| err())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err()),
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    if total > i64::MAX as f64 {
        return Err(err());
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}

fn onbuild(node: &Node) -> Result<Instruction, String> {
    let Some(inner) = &node.inner else {
        return Err("ONBUILD requires at least one argument".into());
    };
    match inner.keyword.as_str() {
        "onbuild" => return Err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into()),
        "maintainer" | "from" => {
            return Err(format!("{} isn't allowed as an ONBUILD trigger", inner.keyword.to_ascii_uppercase()))
        }
        _ => {}
    }
    // Validate the trigger now so a typo is reported where it is written, not in a child build.
    parse_inner(inner)?;
    let original = node.original.trim_start();
    let expression = match original.get(..7) {
        Some(head) if head.eq_ignore_ascii_case("onbuild") => original[7..].trim_start(),
        _ => original,
    };
    let mut expression = expression.to_string();
    for h in node.heredocs.iter().chain(inner.heredocs.iter()) {
        expression.push('\n');
        expression.push_str(&h.content);
        expression.push_str(&h.name);
    }
    Ok(Instruction::Onbuild(expression))
}
