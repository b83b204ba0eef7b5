//! Mutual TLS for TCP: the daemon presents its certificate and accepts only clients whose certificate the
//! CA signed; clients check the daemon's against the same CA (the flags dockerd and buildkitd use:
//! `--tlscacert`, `--tlscert`, `--tlskey`).

use std::path::PathBuf;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::DaemonError;

/// The three PEM files of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn read(p: &PathBuf, what: &str) -> Result<Vec<u8>, DaemonError> {
    std::fs::read(p).map_err(|e| DaemonError::Tls(format!("cannot read the {what} {}: {e}", p.display())))
}

impl TlsFiles {
    /// The server side: this identity, and client certificates required from `ca`.
    pub fn server_config(&self) -> Result<ServerTlsConfig, DaemonError> {
        let identity = Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        let ca = Certificate::from_pem(read(&self.ca, "CA certificate")?);
        Ok(ServerTlsConfig::new().identity(identity).client_ca_root(ca).client_auth_optional(false))
    }

    /// The client side, connecting to `domain` (the name or IP address the daemon's certificate carries).
    pub fn client_config(&self, domain: &str) -> Result<ClientTlsConfig, DaemonError> {
        let identity = Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        let ca = Certificate::from_pem(read(&self.ca, "CA certificate")?);
        Ok(ClientTlsConfig::new().ca_certificate(ca).identity(identity).domain_name(domain))
    }
}
