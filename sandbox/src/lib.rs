//! The sandbox: runs RUN steps in Linux namespaces on overlay snapshots.
//!
//! [`process::ProcessSpec`] describes one process; [`spec::build_spec`] turns it into an OCI runtime spec
//! (oci-spec crate), which every [`executor::Executor`] runs. All unsafe code and system calls live in
//! [`sys`].

pub mod cache;
pub mod cgroup;
pub mod debug;
pub mod executor;
pub mod init;
pub mod network;
pub mod platforms;
pub mod process;
pub mod rlimit;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod ssh;
pub mod stubs;
pub mod sys;
pub mod user;

pub use executor::{Cancel, ExecError, Executor, ExitStatus, NamespaceExecutor, OutputLine, OutputSink, RunOutcome};
pub use process::{Limits, NetworkMode, ProcessSpec, RunMount, RunMountKind};
pub use rlimit::{Rlimit, RlimitError, RlimitType};
pub use runc::RuncExecutor;
