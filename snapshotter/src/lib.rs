//! Content store, metadata database, overlay snapshots, layer diff and apply.
