//! `rbuild serve`: the build daemon, its gRPC API (our own versioned proto, `rbuild.v1`), the client that
//! remote `rbuild` commands use, and the context sync between them.
//!
//! A build is one bidirectional stream ([`proto::builder_server::Builder::build`]): the client starts it;
//! the daemon runs it on its [`engine::Engine`] and asks the client for what the build reads (the files of
//! its contexts, secrets, ssh agent connections) as it needs them, streaming progress, client-side outputs
//! and the result back. Context sync sends only what changed: the daemon keeps, per client and context, a
//! mirror of the files with their stat and content hash ([`mirror`]); the client answers stat queries,
//! then hashes and data only for the files whose stat changed and whose content the daemon does not hold.
//!
//! Addresses are `unix://PATH` (mode 0660) and `tcp://HOST:PORT`, which needs mutual TLS unless the
//! daemon is told `--insecure-tcp`.

pub mod address;
pub mod builders;
pub mod client;
mod convert;
pub mod docker;
pub mod fleet;
pub mod health;
pub mod metrics;
mod mirror;
pub mod server;
pub mod tls;
mod walk;

/// The generated protocol types and services.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("rbuild.v1");
}

pub use address::Address;
pub use tls::TlsFiles;

/// Why the daemon or a client failed outside a build.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid address {0:?}: use unix:///path/to.sock or tcp://host:port")]
    Address(String),
    #[error(
        "{addr}: TCP needs TLS with client certificates (--tlscacert, --tlscert, --tlskey); pass --insecure-tcp \
         to serve without (anyone who reaches the port can run builds as root)"
    )]
    InsecureTcp { addr: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach the rbuild daemon at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{}", rpc_message(addr, status))]
    Rpc { addr: String, status: Box<tonic::Status> },
    #[error("{0}")]
    Protocol(String),
}

/// What a failed call says: the daemon's message, or why it could not be reached.
fn rpc_message(addr: &str, status: &tonic::Status) -> String {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            format!("cannot reach the rbuild daemon at {addr}: {}", status.message())
        }
        _ => status.message().to_string(),
    }
}

impl DaemonError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
        let what = what.into();
        move |source| DaemonError::Io { what, source }
    }
}
