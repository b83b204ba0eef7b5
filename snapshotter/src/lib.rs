//! Content store, metadata database, overlay snapshots, layer diff and apply.
//!
//! The storage layer every build stands on. Layout under the state root (default `/var/lib/rbuild`):
//!
//! ```text
//! lock                      process-level lock (flock), holds the owner's pid
//! meta.redb                 metadata database (snapshots, blobs, layers, images, leases, ...)
//! content/blobs/sha256/<h>  committed blobs, read-only
//! content/ingest/<ref>/     in-progress writes (resumable)
//! snapshots/<id>/fs         a snapshot's tree (overlay upperdir or native full copy)
//! snapshots/<id>/work       overlay workdir
//! tmp/                      scratch space; emptied at startup
//! ```
//!
//! Architecture invariant: nothing half-written is ever visible. Files are written under temporary names
//! and renamed into place after fsync (and digest verification for blobs); database transactions commit
//! only after the files they describe exist, and the startup pass ([`root::StateRoot::open`]) removes what
//! a crash left behind.
//!
//! API boundary: snapshotters return [`mount::Mount`]s as data and never mount; only [`mount`] (through
//! [`sys`]) performs mount(2)/umount(2).

pub mod apply;
pub mod content;
pub mod diff;
pub mod digest;
pub mod export;
pub mod fsutil;
pub mod gc;
pub mod meta;
pub mod mount;
pub mod resolve;
pub mod root;
pub mod snapshot;
pub mod store;
pub mod sys;

pub use oci_spec::image::Digest;
pub use redb;

/// The snapshot label that records which registry blob a snapshot was unpacked from: JSON
/// `{"digest":"sha256:...","size":N,"media_type":"...","diff_id":"sha256:..."}`. The image unpacker sets
/// it; exporters reuse that blob instead of diffing the snapshot again.
pub const LAYER_LABEL: &str = "rbuild.layer";
