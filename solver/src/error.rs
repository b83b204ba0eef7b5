//! What a solve can fail with. Every message names the step (its Dockerfile line and description) and,
//! where there is one, what the user can do about it.

use std::fmt;

use llb::SourceLocation;

/// Why a solve failed. Cloneable so that two builds sharing one execution both get the error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SolveError {
    /// The definition is malformed (a frontend bug or a hand-written definition).
    #[error("invalid build definition: {0}")]
    Definition(#[from] llb::DefinitionError),
    /// A local source (the build context, a named context) was not given to the solve.
    #[error("{step}: the local source {name:?} was not provided; pass its directory (for `context`, the build context argument)")]
    MissingLocal { step: String, name: String },
    /// A secret a RUN mounts was not given.
    #[error(
        "{step}: secret {id:?} was not provided; pass it with `--secret id={id},src=<file>` (or `env=<VAR>`), \
         or mark the mount `required=false`"
    )]
    MissingSecret { step: String, id: String },
    /// An ssh agent a RUN mounts was not given.
    #[error("{step}: ssh agent {id:?} was not provided; pass it with `--ssh {id}=$SSH_AUTH_SOCK`")]
    MissingSsh { step: String, id: String },
    /// `RUN --security=insecure`.
    #[error(
        "{step}: RUN --security=insecure asks for a privileged step, which rbuild does not grant; remove the flag"
    )]
    Insecure { step: String },
    /// A step asks for a privilege the build was not granted.
    #[error(
        "{step}: {what} needs the {entitlement} entitlement, which this build was not granted; allow it where the \
         build runs (`--allow {entitlement}`) or remove the flag"
    )]
    Entitlement { step: String, what: String, entitlement: String },
    /// An op kind or option the solver does not implement.
    #[error("{step}: {what} is not supported")]
    Unsupported { step: String, what: String },
    /// A RUN step for a platform this host cannot run (no emulator registered, or one without the
    /// fix-binary flag); the error says what to install.
    #[error("{step}: cannot run a step for {error}")]
    Platform { step: String, error: Box<sandbox::platforms::Unrunnable> },
    /// A RUN step ran and failed.
    #[error("{0}")]
    Run(Box<RunFailure>),
    /// An image source could not be pulled or unpacked.
    #[error("{step}: cannot pull or unpack image {reference}: {message}")]
    Image { step: String, reference: String, message: String },
    /// A step failed before or after running its command (snapshots, mounts, file actions, context reads).
    #[error("{step}: {message}")]
    Step { step: String, message: String },
    /// The cache link database failed.
    #[error("cache database: {0}; if it persists, remove the state root's meta.redb (this drops the build cache)")]
    Cache(String),
    /// A solver task ended abnormally (a bug).
    #[error("internal solver error: {0}")]
    Internal(String),
    /// The build was cancelled (Ctrl-C, a client that went away) before the step finished.
    #[error("the build was cancelled")]
    Cancelled,
}

/// A RUN step that ran and exited unsuccessfully.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFailure {
    /// The step's description, e.g. `[build 2/4] RUN make`.
    pub vertex: String,
    /// Where in the Dockerfile the step comes from.
    pub locations: Vec<SourceLocation>,
    /// The command line (`/bin/sh -c make`).
    pub command: String,
    /// The shell's view of the status: the exit code, or 128 + the signal.
    pub exit_code: i32,
    /// `exit code: 2` or `signal: 9`.
    pub status: String,
    /// The last lines of the command's output (stdout and stderr interleaved), oldest first.
    pub tail: Vec<String>,
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: process \"{}\" did not complete successfully: {}",
            step_label(&self.vertex, &self.locations),
            clip_command(&self.command),
            self.status
        )?;
        if !self.tail.is_empty() {
            write!(f, "\nlast {} lines of output:", self.tail.len())?;
            for l in &self.tail {
                write!(f, "\n  {l}")?;
            }
        }
        Ok(())
    }
}

/// The command as an error shows it: its first 240 characters and how many more there were.
pub(crate) fn clip_command(command: &str) -> std::borrow::Cow<'_, str> {
    match command.char_indices().nth(COMMAND_WIDTH) {
        None => std::borrow::Cow::Borrowed(command),
        Some((at, _)) => std::borrow::Cow::Owned(format!(
            "{}... ({} more characters)",
            &command[..at],
            command[at..].chars().count()
        )),
    }
}

/// How many characters of a failed command an error shows (the frontend's excerpt width).
const COMMAND_WIDTH: usize = 240;

/// `Dockerfile:6 [b 4/4] RUN make`: a step's first location and its name.
pub(crate) fn step_label(name: &str, locations: &[SourceLocation]) -> String {
    match locations.first() {
        Some(l) if l.start_line == l.end_line => format!("{}:{} {name}", l.file, l.start_line),
        Some(l) => format!("{}:{}-{} {name}", l.file, l.start_line, l.end_line),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_failure_names_line_command_status_and_tail() {
        let f = RunFailure {
            vertex: "[b 4/4] RUN make".into(),
            locations: vec![SourceLocation { file: "Dockerfile".into(), start_line: 6, end_line: 6 }],
            command: "/bin/sh -c make".into(),
            exit_code: 2,
            status: "exit code: 2".into(),
            tail: vec!["make: *** no rule".into()],
        };
        let s = SolveError::Run(Box::new(f)).to_string();
        assert!(s.starts_with("Dockerfile:6 [b 4/4] RUN make: process \"/bin/sh -c make\""), "{s}");
        assert!(s.contains("exit code: 2"), "{s}");
        assert!(s.ends_with("\n  make: *** no rule"), "{s}");
    }

    #[test]
    fn missing_secret_says_how_to_pass_it() {
        let s = SolveError::MissingSecret { step: "x".into(), id: "tok".into() }.to_string();
        assert!(s.contains("--secret id=tok,src=<file>"), "{s}");
    }

    #[test]
    fn a_huge_command_is_clipped_in_the_error() {
        let f = RunFailure {
            vertex: "[2/2] RUN echo".into(),
            locations: Vec::new(),
            command: format!("/bin/sh -c echo {}", "y".repeat(5_000_000)),
            exit_code: 1,
            status: "exit code: 1".into(),
            tail: Vec::new(),
        };
        let shown = f.to_string();
        assert!(shown.len() < 400, "{} bytes", shown.len());
        assert!(
            shown.ends_with("... (4999776 more characters)\" did not complete successfully: exit code: 1"),
            "{shown}"
        );
    }
}
