//! The typed commands. Words are unexpanded; conversion expands them in the stage's scope.

use crate::diag::Span;

/// A Dockerfile grouped into stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARG instructions before the first FROM (each an `Instruction::Arg`).
    pub meta_args: Vec<Command>,
    pub stages: Vec<Stage>,
    pub escape: char,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The image reference or earlier stage name, unexpanded.
    pub base: String,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    pub platform: Option<String>,
    /// The FROM line as written.
    pub original: String,
    pub span: Span,
    pub commands: Vec<Command>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub instruction: Instruction,
    pub span: Span,
    /// The instruction as written (continuations joined), for history and messages.
    pub original: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Instruction {
    From(FromCmd),
    Run(RunCmd),
    Cmd(CmdLine),
    Entrypoint(CmdLine),
    Shell(Vec<String>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    StopSignal(String),
    Arg(Vec<ArgDecl>),
    Copy(CopyCmd),
    Healthcheck(Healthcheck),
    /// The trigger expression, re-parsed when a child build applies it.
    Onbuild(String),
}

impl Instruction {
    /// The upper-case keyword, for messages and history.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From(_) => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Maintainer(_) => "MAINTAINER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Arg(_) => "ARG",
            Instruction::Copy(c) if c.is_add => "ADD",
            Instruction::Copy(_) => "COPY",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FromCmd {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgDecl {
    pub key: String,
    pub value: Option<String>,
}

/// A heredoc attached to RUN/CMD/ENTRYPOINT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShellFile {
    pub name: String,
    pub data: String,
    pub chomp: bool,
}

/// RUN/CMD/ENTRYPOINT arguments: JSON form keeps the array, shell form is one string to pass to SHELL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdLine {
    /// `None` for an ENTRYPOINT with no arguments (which clears it).
    pub args: Option<Vec<String>>,
    /// True for the shell form.
    pub prepend_shell: bool,
    pub files: Vec<ShellFile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityMode {
    Sandbox,
    Insecure,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCmd {
    pub cmd: CmdLine,
    /// Raw `--mount` values, parsed with [`super::parse_mount`] after expansion.
    pub mounts: Vec<String>,
    pub network: Option<NetworkMode>,
    pub security: Option<SecurityMode>,
}

/// A COPY/ADD heredoc source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceContent {
    /// The heredoc name, used as the file name.
    pub path: String,
    pub data: String,
    pub expand: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyCmd {
    pub is_add: bool,
    pub sources: Vec<String>,
    pub contents: Vec<SourceContent>,
    pub dest: String,
    /// COPY only.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    /// COPY only.
    pub parents: bool,
    pub exclude: Vec<String>,
    /// ADD only.
    pub checksum: Option<String>,
    /// ADD only.
    pub keep_git_dir: bool,
    /// ADD only: `None` means the default (unpack local archives, not remote ones).
    pub unpack: Option<bool>,
}

/// HEALTHCHECK; durations in nanoseconds like Docker's image config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", command]`.
    pub test: Vec<String>,
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}
