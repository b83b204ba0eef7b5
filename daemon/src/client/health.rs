//! grpc.health.v1 from the client side: is this daemon taking builds (not starting, not draining)?

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::Connection;
use crate::health::BUILDER_SERVICE;
use crate::DaemonError;

impl Connection {
    /// Whether the daemon's builder service is SERVING; NOT_SERVING while it starts or drains.
    pub async fn ready(&mut self) -> Result<bool, DaemonError> {
        let mut c = HealthClient::new((*self.channel).clone());
        let r = c.check(HealthCheckRequest { service: BUILDER_SERVICE.into() }).await;
        let r = r.map_err(|status| DaemonError::Rpc { addr: self.addr.to_string(), status: Box::new(status) })?;
        Ok(r.into_inner().status() == ServingStatus::Serving)
    }
}
