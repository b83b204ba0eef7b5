//! Base images pulled with the client's logins. The docker CLI sends every registry login it holds with a
//! build (`X-Registry-Config`: base64url JSON, registry -> AuthConfig), and dockerd's classic builder pulls
//! the FROM images with them. rbuild's builds pull with the daemon's logins (the engine has one registry
//! client for every build), so before the build a base image on a registry the client sent a login for,
//! and not in the image store yet, is pulled here with that login into the store, where the build finds it
//! by name and sends no request of its own. With `pull=1` every base is pulled here (with the client's login
//! where it sent one, else the daemon's), and the build does not resolve its bases again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use frontend::convert::{ConvertOptions, ImageResolver, ResolveError, ResolvedImage};
use hyper::HeaderMap;
use llb::Platform;
use registry::auth::{CredentialSource, Credentials};
use registry::Reference;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::reply::JsonStream;
use super::transfer::{decode_header, forward, is_hub, registry_client, AuthConfig};
use crate::server::Daemon;

/// The logins a build request carries, by registry host (`docker.io` for Docker Hub's spellings).
pub(crate) type Logins = BTreeMap<String, Credentials>;

/// `https://index.docker.io/v1/` -> `docker.io`, `127.0.0.1:5000` -> itself.
fn host_of(key: &str) -> String {
    let h = key.trim().trim_start_matches("https://").trim_start_matches("http://");
    let h = h.split('/').next().unwrap_or("");
    if is_hub(h) {
        "docker.io".to_string()
    } else {
        h.to_string()
    }
}

/// The `X-Registry-Config` header's logins (entries without a username or token are left out).
pub(crate) fn registry_config(headers: &HeaderMap) -> Result<Logins, ApiError> {
    let m: Option<BTreeMap<String, serde_json::Value>> = decode_header(headers, "X-Registry-Config")?;
    let mut out = Logins::new();
    for (key, v) in m.unwrap_or_default() {
        let a: AuthConfig = serde_json::from_value(v)
            .map_err(|e| ApiError::bad_request(format!("invalid X-Registry-Config header: {key}: {e}")))?;
        if let Some(c) = a.credentials() {
            out.insert(host_of(&key), c);
        }
    }
    Ok(out)
}

/// Records what conversion asks for and knows no image: conversion then does no I/O.
#[derive(Default)]
struct Recorder(RefCell<Vec<(String, Platform)>>);

impl ImageResolver for Recorder {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Option<ResolvedImage>, ResolveError> {
        let mut seen = self.0.borrow_mut();
        if !seen.iter().any(|(r, p)| r == reference && p == platform) {
            seen.push((reference.to_string(), platform.clone()));
        }
        Ok(None)
    }
}

/// The base images (reference, platform) the build of `opts.target` starts from, as the engine's
/// conversion will ask for them (build args expanded, unreachable stages left out). A Dockerfile that
/// does not convert has none here: the build reports its error.
pub(crate) fn base_images(dockerfile: &[u8], opts: &ConvertOptions) -> Vec<(String, Platform)> {
    let rec = Recorder::default();
    let _ = frontend::convert::convert(dockerfile, opts, &rec);
    rec.0.into_inner()
}

/// Pulls what the module comment says, streaming dockerd's pull progress to `out`. True when every base
/// was pulled here (so the build need not resolve them again).
pub(crate) async fn pull(
    daemon: &Daemon,
    daemon_creds: &Arc<dyn CredentialSource>,
    logins: &Logins,
    bases: &[(String, Platform)],
    pull_all: bool,
    quiet: bool,
    out: &JsonStream,
) -> Result<bool, String> {
    let store = daemon.engine().images().clone();
    let mut all = true;
    for (reference, platform) in bases {
        let r = Reference::parse(reference).map_err(|e| format!("base image {reference}: {e}"))?;
        let login = logins.get(r.registry()).cloned();
        let local = {
            let (s, name) = (store.clone(), r.to_string());
            tokio::task::spawn_blocking(move || s.get(&name).is_ok()).await.unwrap_or(false)
        };
        if !pull_all && (login.is_none() || local) {
            all = false;
            continue;
        }
        let whose = if login.is_some() { "this client's login" } else { "the daemon's logins" };
        if !quiet {
            out.stream(format!("Pulling {reference} for {platform} with {whose}\n")).await;
        }
        let (ptx, mut prx) = mpsc::unbounded_channel();
        let client = registry_client(daemon, daemon_creds.clone(), r.registry(), login, ptx);
        let forwarding = match quiet {
            false => forward(prx, out.clone(), false),
            true => tokio::spawn(async move { while prx.recv().await.is_some() {} }),
        };
        let result = engine::images::pull(&client, &store, reference, Some(platform)).await;
        drop(client);
        let _ = forwarding.await;
        let s = result.map_err(|e| format!("pulling the base image {reference}: {e}"))?;
        if !quiet {
            out.status(&format!("Digest: {}", s.digest), None).await;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bases_of_the_target_are_found_with_build_args_and_without_io() {
        let df = b"ARG BASE=busybox\nFROM $BASE AS one\nFROM one AS two\nRUN true\n\
                   FROM registry.example.com/private/img:1 AS unused\nFROM --platform=linux/arm64 alpine AS three\n\
                   COPY --from=two / /\nFROM scratch\nCOPY --from=three / /\n";
        let mut opts = ConvertOptions::default();
        opts.build_args.insert("BASE".into(), "127.0.0.1:5000/base:2".into());
        let mut got: Vec<String> = base_images(df, &opts).into_iter().map(|(r, p)| format!("{r} {p}")).collect();
        got.sort();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("127.0.0.1:5000/base:2 "), "{got:?}");
        assert!(got[1].contains("alpine") && got[1].ends_with("linux/arm64"), "{got:?}");
        assert!(base_images(b"FROM busybox\nRUNN x\n", &ConvertOptions::default()).len() <= 1);
    }

    #[test]
    fn login_keys_name_registries_as_references_do() {
        assert_eq!(host_of("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(host_of("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(host_of("https://registry.example.com"), "registry.example.com");
    }
}
