//! The image commands and storage calls on the daemon's store: the engine's [`engine::images`] operations,
//! run on the blocking pool, with progress and archives streamed.

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use engine::images::{self, ImageError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Response, Status, Streaming};

use super::Daemon;
use crate::proto::{self, transfer_reply};

pub(crate) type TransferStream = Pin<Box<dyn Stream<Item = Result<proto::TransferReply, Status>> + Send>>;
pub(crate) type ChunkStream = Pin<Box<dyn Stream<Item = Result<proto::Chunk, Status>> + Send>>;

fn status(e: ImageError) -> Status {
    match e {
        ImageError::NoSuchImage(_) => Status::not_found(e.to_string()),
        ImageError::Registry(registry::RegistryError::NoSuchImage(_)) => Status::not_found(e.to_string()),
        ImageError::Reference(_) => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ImageError> + Send + 'static) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("a task failed: {e}")))?.map_err(status)
}

/// The client's progress callback for one transfer, forwarding blob events to its stream.
fn progress_to(tx: mpsc::UnboundedSender<Result<proto::TransferReply, Status>>) -> registry::ProgressFn {
    Arc::new(move |p: &registry::Progress| {
        let kind = match p.kind {
            registry::ProgressKind::Exists => "exists",
            registry::ProgressKind::Mounted => "mounted",
            registry::ProgressKind::Done => "done",
            registry::ProgressKind::Downloading | registry::ProgressKind::Uploading => return,
        };
        let msg = transfer_reply::Msg::Progress(proto::BlobProgress { id: p.id.clone(), kind: kind.into() });
        let _ = tx.send(Ok(proto::TransferReply { msg: Some(msg) }));
    })
}

/// Writes into a response stream from a blocking thread.
struct ChunkWriter(mpsc::Sender<Result<proto::Chunk, Status>>);

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for part in data.chunks(1 << 20) {
            self.0
                .blocking_send(Ok(proto::Chunk { data: part.to_vec() }))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads a request stream of chunks from a blocking thread.
struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Daemon {
    pub(crate) async fn list_images(&self) -> Result<proto::ListImagesResponse, Status> {
        let store = self.engine.images().clone();
        let list = blocking(move || images::list(&store)).await?;
        let images = list
            .into_iter()
            .map(|i| proto::ImageSummary {
                repository: i.repository,
                tag: i.tag,
                digest: i.digest,
                id: i.id,
                created: i.created,
                size: i.size,
            })
            .collect();
        Ok(proto::ListImagesResponse { images })
    }

    pub(crate) async fn tag_image(&self, r: proto::TagImageRequest) -> Result<proto::TagImageResponse, Status> {
        let store = self.engine.images().clone();
        blocking(move || images::tag(&store, &r.source, &r.target)).await?;
        Ok(proto::TagImageResponse {})
    }

    pub(crate) async fn remove_images(
        &self,
        r: proto::RemoveImagesRequest,
    ) -> Result<proto::RemoveImagesResponse, Status> {
        let store = self.engine.images().clone();
        let untagged = blocking(move || images::untag(&store, &r.references)).await?;
        Ok(proto::RemoveImagesResponse { untagged })
    }

    pub(crate) async fn inspect_image(
        &self,
        r: proto::InspectImageRequest,
    ) -> Result<proto::InspectImageResponse, Status> {
        let store = self.engine.images().clone();
        let output = blocking(move || images::inspect(&store, &r.reference, r.raw)).await?;
        Ok(proto::InspectImageResponse { output })
    }

    pub(crate) async fn image_history(
        &self,
        r: proto::ImageHistoryRequest,
    ) -> Result<proto::ImageHistoryResponse, Status> {
        let store = self.engine.images().clone();
        let entries = blocking(move || images::history(&store, &r.reference)).await?;
        let entries = entries
            .into_iter()
            .map(|h| proto::HistoryEntry {
                id: h.id,
                created: h.created,
                created_by: h.created_by,
                size: h.size,
                comment: h.comment,
            })
            .collect();
        Ok(proto::ImageHistoryResponse { entries })
    }

    pub(crate) fn pull(&self, r: proto::PullRequest) -> Result<Response<TransferStream>, Status> {
        let platform = r
            .platform
            .as_deref()
            .map(str::parse::<llb::Platform>)
            .transpose()
            .map_err(|e| Status::invalid_argument(format!("--platform: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.engine.client().reporting_to(progress_to(tx.clone()));
        let store = self.engine.images().clone();
        tokio::spawn(async move {
            let reply = match images::pull(&client, &store, &r.reference, platform.as_ref()).await {
                Ok(s) => Ok(proto::TransferReply {
                    msg: Some(transfer_reply::Msg::Pulled(proto::PullSummary {
                        reference: s.reference,
                        digest: s.digest,
                        fetched: s.fetched,
                    })),
                }),
                Err(e) => Err(status(e)),
            };
            let _ = tx.send(reply);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    pub(crate) fn push(&self, r: proto::PushRequest) -> Result<Response<TransferStream>, Status> {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.engine.client().reporting_to(progress_to(tx.clone()));
        let store = self.engine.images().clone();
        tokio::spawn(async move {
            let reply = match images::push(&client, &store, &r.reference).await {
                Ok(s) => Ok(proto::TransferReply {
                    msg: Some(transfer_reply::Msg::Pushed(proto::PushSummary {
                        repository: s.repository,
                        tag: s.tag,
                        digest: s.digest,
                        size: s.size,
                        uploaded: s.uploaded as u64,
                        mounted: s.mounted as u64,
                        existed: s.existed as u64,
                        left_out: s.left_out,
                    })),
                }),
                Err(e) => Err(status(e)),
            };
            let _ = tx.send(reply);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))))
    }

    pub(crate) fn save(&self, r: proto::SaveRequest) -> Result<Response<ChunkStream>, Status> {
        let (tx, rx) = mpsc::channel(8);
        let store = self.engine.images().clone();
        tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter(tx.clone());
            if let Err(e) = images::save(&store, &r.references, r.oci, &mut w) {
                let _ = tx.blocking_send(Err(status(e)));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    pub(crate) async fn load(&self, mut chunks: Streaming<proto::Chunk>) -> Result<proto::LoadResponse, Status> {
        let (tx, rx) = mpsc::channel(8);
        let store = self.engine.images().clone();
        let loading =
            tokio::task::spawn_blocking(move || images::load(&store, ChunkReader { rx, cur: Vec::new(), pos: 0 }));
        while let Some(c) = chunks.message().await? {
            if tx.send(c.data).await.is_err() {
                break;
            }
        }
        drop(tx);
        let loaded = loading.await.map_err(|e| Status::internal(format!("loading failed: {e}")))?.map_err(status)?;
        Ok(proto::LoadResponse { loaded })
    }

    pub(crate) async fn disk_usage(&self) -> Result<proto::DiskUsageResponse, Status> {
        let engine = self.engine.clone();
        let report = tokio::task::spawn_blocking(move || engine.store().collector().usage())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("measuring usage: {e}")))?;
        let item = |i: snapshotter::gc::Item| {
            Some(proto::ItemUsage { count: i.count, size: i.size, reclaimable: i.reclaimable })
        };
        Ok(proto::DiskUsageResponse {
            layers: item(report.layers),
            snapshots: item(report.snapshots),
            cache_mounts: item(report.cache_mounts),
            blobs: item(report.blobs),
            ingests: item(report.ingests),
            total: report.total(),
        })
    }

    pub(crate) async fn prune(&self, r: proto::PruneRequest) -> Result<proto::PruneResponse, Status> {
        // Pruning under running builds could take what they are about to use.
        if self.counters.builds_running.load(Ordering::SeqCst) > 0 {
            return Err(Status::failed_precondition("the daemon is building; prune when no build runs"));
        }
        let opts = snapshotter::gc::PruneOptions {
            all: r.all,
            keep_storage: r.keep_storage,
            until: r.until_ns.map(std::time::Duration::from_nanos),
        };
        let engine = self.engine.clone();
        let report = tokio::task::spawn_blocking(move || engine.store().collector().prune(opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("pruning: {e}")))?;
        Ok(proto::PruneResponse {
            snapshots: report.snapshots.len() as u64,
            blobs: report.blobs.len() as u64,
            ingests: report.ingests.len() as u64,
            freed: report.freed,
            remaining: report.remaining,
        })
    }
}
