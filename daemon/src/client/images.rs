//! The image commands and storage calls on a daemon, returning the engine's data types so a client shows
//! them as it shows a local result.

use std::io::{Read, Write};

use engine::images::{HistoryEntry, ImageSummary, PullSummary, PushSummary};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Connection;
use crate::proto::{self, transfer_reply};
use crate::DaemonError;

/// One blob's progress in a pull or push: its digest and `exists`, `mounted` or `done`.
pub type BlobEvent = (String, String);

impl Connection {
    fn rpc(&self) -> impl Fn(tonic::Status) -> DaemonError + '_ {
        |status| DaemonError::Rpc { addr: self.addr.to_string(), status: Box::new(status) }
    }

    pub async fn list_images(&mut self) -> Result<Vec<ImageSummary>, DaemonError> {
        let r = self.client.list_images(proto::ListImagesRequest {}).await;
        let r = r.map_err(self.rpc())?.into_inner();
        Ok(r.images
            .into_iter()
            .map(|i| ImageSummary {
                repository: i.repository,
                tag: i.tag,
                digest: i.digest,
                id: i.id,
                created: i.created,
                size: i.size,
            })
            .collect())
    }

    pub async fn tag_image(&mut self, source: &str, target: &str) -> Result<(), DaemonError> {
        let req = proto::TagImageRequest { source: source.into(), target: target.into() };
        let r = self.client.tag_image(req).await;
        r.map_err(self.rpc())?;
        Ok(())
    }

    pub async fn remove_images(&mut self, references: &[String]) -> Result<Vec<String>, DaemonError> {
        let r = self.client.remove_images(proto::RemoveImagesRequest { references: references.to_vec() }).await;
        Ok(r.map_err(self.rpc())?.into_inner().untagged)
    }

    pub async fn inspect_image(&mut self, reference: &str, raw: bool) -> Result<Vec<u8>, DaemonError> {
        let r = self.client.inspect_image(proto::InspectImageRequest { reference: reference.into(), raw }).await;
        Ok(r.map_err(self.rpc())?.into_inner().output)
    }

    pub async fn image_history(&mut self, reference: &str) -> Result<Vec<HistoryEntry>, DaemonError> {
        let r = self.client.image_history(proto::ImageHistoryRequest { reference: reference.into() }).await;
        let r = r.map_err(self.rpc())?.into_inner();
        Ok(r.entries
            .into_iter()
            .map(|h| HistoryEntry {
                id: h.id,
                created: h.created,
                created_by: h.created_by,
                size: h.size,
                comment: h.comment,
            })
            .collect())
    }

    async fn transfer(
        &mut self,
        mut stream: tonic::Streaming<proto::TransferReply>,
        on_blob: &mut dyn FnMut(BlobEvent),
    ) -> Result<transfer_reply::Msg, DaemonError> {
        loop {
            let msg = stream.message().await.map_err(self.rpc())?;
            match msg.and_then(|m| m.msg) {
                Some(transfer_reply::Msg::Progress(p)) => on_blob((p.id, p.kind)),
                Some(done) => return Ok(done),
                None => return Err(DaemonError::Protocol("the daemon ended the transfer without a result".into())),
            }
        }
    }

    pub async fn pull(
        &mut self,
        reference: &str,
        platform: Option<&str>,
        on_blob: &mut dyn FnMut(BlobEvent),
    ) -> Result<PullSummary, DaemonError> {
        let req = proto::PullRequest { reference: reference.into(), platform: platform.map(str::to_string) };
        let r = self.client.pull(req).await;
        let stream = r.map_err(self.rpc())?.into_inner();
        match self.transfer(stream, on_blob).await? {
            transfer_reply::Msg::Pulled(p) => {
                Ok(PullSummary { reference: p.reference, digest: p.digest, fetched: p.fetched })
            }
            _ => Err(DaemonError::Protocol("a pull answered with a push result".into())),
        }
    }

    pub async fn push(
        &mut self,
        reference: &str,
        on_blob: &mut dyn FnMut(BlobEvent),
    ) -> Result<PushSummary, DaemonError> {
        let r = self.client.push(proto::PushRequest { reference: reference.into() }).await;
        let stream = r.map_err(self.rpc())?.into_inner();
        match self.transfer(stream, on_blob).await? {
            transfer_reply::Msg::Pushed(p) => Ok(PushSummary {
                repository: p.repository,
                tag: p.tag,
                digest: p.digest,
                size: p.size,
                uploaded: p.uploaded as usize,
                mounted: p.mounted as usize,
                existed: p.existed as usize,
                left_out: p.left_out,
            }),
            _ => Err(DaemonError::Protocol("a push answered with a pull result".into())),
        }
    }

    /// Writes the archive of `references` to `w` as it arrives.
    pub async fn save(&mut self, references: &[String], oci: bool, w: &mut dyn Write) -> Result<(), DaemonError> {
        let r = self.client.save(proto::SaveRequest { references: references.to_vec(), oci }).await;
        let mut stream = r.map_err(self.rpc())?.into_inner();
        while let Some(c) = stream.message().await.map_err(self.rpc())? {
            w.write_all(&c.data).map_err(DaemonError::io("writing the archive"))?;
        }
        Ok(())
    }

    /// Sends an archive to load; returns the names loaded.
    pub async fn load(&mut self, mut r: impl Read + Send + 'static) -> Result<Vec<String>, DaemonError> {
        let (tx, rx) = mpsc::channel(8);
        let reading = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 || tx.blocking_send(proto::Chunk { data: buf[..n].to_vec() }).is_err() {
                    return Ok(());
                }
            }
        });
        let res = self.client.load(ReceiverStream::new(rx)).await;
        reading
            .await
            .map_err(|e| DaemonError::Protocol(format!("reading the archive failed: {e}")))?
            .map_err(DaemonError::io("reading the archive"))?;
        Ok(res.map_err(self.rpc())?.into_inner().loaded)
    }

    pub async fn disk_usage(&mut self) -> Result<proto::DiskUsageResponse, DaemonError> {
        let r = self.client.disk_usage(proto::DiskUsageRequest {}).await;
        Ok(r.map_err(self.rpc())?.into_inner())
    }

    pub async fn prune(&mut self, req: proto::PruneRequest) -> Result<proto::PruneResponse, DaemonError> {
        let r = self.client.prune(req).await;
        Ok(r.map_err(self.rpc())?.into_inner())
    }
}
