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

    /// The same server side for the Docker API's HTTP listener (rustls directly: hyper, not tonic, serves
    /// it): this identity, client certificates required and checked against `ca`.
    pub fn rustls_server_config(&self) -> Result<std::sync::Arc<tokio_rustls::rustls::ServerConfig>, DaemonError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
        let pem_err = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
            DaemonError::Tls(format!("the {what} {} is not valid PEM: {e}", p.display()))
        };
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert, "certificate")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err("certificate", &self.cert, &e))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?).map_err(|e| pem_err("key", &self.key, &e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(&self.ca, "CA certificate")?) {
            let ca = ca.map_err(|e| pem_err("CA certificate", &self.ca, &e))?;
            roots.add(ca).map_err(|e| DaemonError::Tls(format!("the CA certificate {}: {e}", self.ca.display())))?;
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| DaemonError::Tls(format!("client certificate checks: {e}")))?;
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| DaemonError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| DaemonError::Tls(format!("{} with {}: {e}", self.cert.display(), self.key.display())))?;
        Ok(std::sync::Arc::new(config))
    }

    /// The client side, connecting to `domain` (the name or IP address the daemon's certificate carries).
    pub fn client_config(&self, domain: &str) -> Result<ClientTlsConfig, DaemonError> {
        let identity = Identity::from_pem(read(&self.cert, "certificate")?, read(&self.key, "key")?);
        let ca = Certificate::from_pem(read(&self.ca, "CA certificate")?);
        Ok(ClientTlsConfig::new().ca_certificate(ca).identity(identity).domain_name(domain))
    }
}
