//! Authenticated registries: htpasswd Basic auth over TLS with a CA made here, and token auth with a
//! token issuer written in the tests.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use registry::auth::{Anonymous, Credentials, StaticCredentials};
use registry::config::HostConfig;
use registry::{Client, Config, Reference, RegistryError};

fn creds(host: &str, c: Credentials) -> Arc<StaticCredentials> {
    Arc::new(StaticCredentials(HashMap::from([(host.to_string(), c)])))
}

fn login(user: &str, password: &str) -> Credentials {
    Credentials { username: user.into(), password: password.into(), identity_token: None }
}

#[test]
fn basic_auth_over_tls() {
    let Some(bin) = registry_binary() else { return };
    if !has_tool("htpasswd") || !has_tool("openssl") {
        testkit::skip("htpasswd or openssl missing; run scripts/registry-test-env");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(dir.path());
    sh("htpasswd -Bbn alice wonderland > htpasswd", dir.path());
    let reg = TestRegistry::start(
        &bin,
        RegistryOpts {
            tls: Some((tls.cert.clone(), tls.key.clone())),
            htpasswd: Some(dir.path().join("htpasswd")),
            ..RegistryOpts::default()
        },
    );
    let host = reg.host();
    let mut registry = BTreeMap::new();
    registry.insert(host.clone(), HostConfig { ca: vec![tls.ca.clone()], ..HostConfig::default() });
    let config = Config { registry };
    let store = new_store(&dir.path().join("s"));
    let desc = make_image(&store, "secure", &[(31, 4000), (32, 100)], false);
    let dst = Reference::parse(&format!("{host}/private/app:v1")).unwrap();
    let rt = runtime();

    let err = rt.block_on(Client::new(config.clone(), Arc::new(Anonymous)).push(&store, &desc, &dst)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RegistryError::Unauthorized { anonymous: true, .. }), "{msg}");
    assert!(
        msg.contains(&host) && msg.contains("repository:private/app:pull,push") && msg.contains("rbuild login"),
        "{msg}"
    );

    let wrong = Client::new(config.clone(), creds(&host, login("alice", "nope")));
    let err = rt.block_on(wrong.push(&store, &desc, &dst)).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { anonymous: false, .. }), "{err}");

    let client = Client::new(config.clone(), creds(&host, login("alice", "wonderland")));
    let report = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert_eq!(report.uploaded.len(), 3);
    let store2 = new_store(&dir.path().join("s2"));
    let pulled = rt.block_on(client.pull(&dst, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(&pulled.manifest.digest, desc.digest());

    // Without the CA the certificate is refused: TLS is really in use.
    let no_ca = Config {
        registry: BTreeMap::from([(host.clone(), HostConfig { http: Some(false), ..HostConfig::default() })]),
    };
    let err = rt.block_on(Client::new(no_ca, creds(&host, login("alice", "wonderland"))).resolve(&dst)).unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
}

#[test]
fn token_auth_push_mount_and_refresh_token() {
    let Some(bin) = registry_binary() else { return };
    if !has_tool("openssl") {
        testkit::skip("openssl missing; run scripts/registry-test-env");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let issuer = rt.block_on(token::TokenServer::start(dir.path()));
    let reg = TestRegistry::start(
        &bin,
        RegistryOpts {
            token: Some((issuer.realm(), token::SERVICE.into(), token::ISSUER.into(), issuer.cert.clone())),
            ..RegistryOpts::default()
        },
    );
    let host = reg.host();
    let store = new_store(&dir.path().join("s"));
    let desc = make_image(&store, "tok", &[(41, 6000), (42, 700)], true);
    let dst = Reference::parse(&format!("{host}/team/app:v1")).unwrap();

    let err = rt.block_on(Client::new(Config::default(), Arc::new(Anonymous)).push(&store, &desc, &dst)).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let client = Client::new(Config::default(), creds(&host, login(token::USER, token::PASSWORD)));
    let report = rt.block_on(client.push(&store, &desc, &dst)).unwrap();
    assert_eq!(report.uploaded.len(), 3);
    assert!(issuer.issued.load(Ordering::SeqCst) >= 1);

    // Cross-repository mount needs a token for both repositories.
    let other = Reference::parse(&format!("{host}/team/copy:v1")).unwrap();
    let report = rt.block_on(client.push(&store, &desc, &other)).unwrap();
    assert_eq!(report.mounted.len(), 3, "{report:?}");

    // An identity (refresh) token works in place of the password, through the OAuth2 POST.
    let refresh = Credentials { identity_token: Some(token::REFRESH.into()), ..Credentials::default() };
    let client = Client::new(Config::default(), creds(&host, refresh));
    let store2 = new_store(&dir.path().join("s2"));
    let pulled = rt.block_on(client.pull(&other, &llb::Platform::host(), &store2)).unwrap();
    assert_eq!(&pulled.manifest.digest, desc.digest());
}
