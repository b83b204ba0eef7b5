//! OCI image model, the local image store, exporters and the distribution client.
//!
//! - [`reference`]: parsed, normalised image references (`busybox` -> `docker.io/library/busybox:latest`).
//! - [`manifest`]: manifests and indexes kept as the raw bytes they were fetched as (and hashed as such),
//!   parsed with oci-spec; both OCI and Docker v2 schema2 media types; platform selection.
//! - [`config`]: the `rbuild.toml` registry section (buildkitd.toml's keys): mirrors, http, TLS.
//! - [`auth`]: anonymous, Basic and Bearer-token auth; docker's `config.json` and credential helpers.
//! - [`client`]: resolve, pull and push with retries, cross-repository mounts and progress events.
//! - [`store`]: image names in the metadata database over the content store.
//! - [`assemble`]: the build's image exporter: snapshot chain + config -> layers, config, manifest.
//! - [`compress`]: distributable images: the store's uncompressed layers compressed for a push or export.
//! - [`unpack`]: image sources for the build: layers unpacked once into chainID-named snapshots.
//! - [`export`]: OCI layout (dir/tar) and docker-archive writers, and the archive loader.
//!
//! The image config itself is [`llb::image::Image`], which keeps every Docker field.

pub mod assemble;
pub mod attest;
pub mod auth;
pub mod client;
pub mod compress;
pub mod config;
pub mod error;
pub mod export;
pub mod manifest;
pub mod reference;
pub mod store;
pub mod unpack;

pub use client::pull::Pulled;
pub use client::push::PushReport;
pub use client::{Client, ClientOptions, Progress, ProgressFn, ProgressKind, RetryPolicy};
pub use config::Config;
pub use error::RegistryError;
pub use manifest::RawManifest;
pub use reference::Reference;
pub use store::ImageStore;
