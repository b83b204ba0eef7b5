//! Registry authentication: anonymous, Basic, and the Bearer token flow of the distribution spec
//! (`docs/spec/auth/token.md`): a 401 carries a `WWW-Authenticate` challenge naming a realm, a service and
//! a scope; the client asks the realm for a token (Basic credentials on a GET, or an OAuth2 refresh token
//! on a POST) and repeats the request with it. Tokens are cached per host and scope set until they expire.

pub mod challenge;
pub mod credentials;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

pub use challenge::{Challenge, Scheme};
pub use credentials::{CredentialError, Credentials, DockerConfig};

use crate::error::{error_body_message, RegistryError};

/// Where logins come from.
pub trait CredentialSource: Send + Sync {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError>;
}

impl CredentialSource for DockerConfig {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        self.get(registry)
    }
}

/// Fixed logins by registry host (for `--creds`-style flags and tests).
#[derive(Debug, Default, Clone)]
pub struct StaticCredentials(pub HashMap<String, Credentials>);

impl CredentialSource for StaticCredentials {
    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        Ok(self.0.get(registry).cloned())
    }
}

/// No logins at all.
#[derive(Debug, Default, Clone, Copy)]
pub struct Anonymous;

impl CredentialSource for Anonymous {
    fn credentials(&self, _: &str) -> Result<Option<Credentials>, CredentialError> {
        Ok(None)
    }
}

/// `repository:<name>:pull` / `repository:<name>:pull,push`.
pub fn repository_scope(repository: &str, push: bool) -> String {
    format!("repository:{repository}:{}", if push { "pull,push" } else { "pull" })
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct HostAuth {
    challenge: Option<Challenge>,
    tokens: HashMap<String, Token>,
}

/// Per-host authentication state shared by all requests of a client.
pub struct Authorizer {
    creds: Arc<dyn CredentialSource>,
    hosts: Mutex<HashMap<String, HostAuth>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").finish_non_exhaustive()
    }
}

fn scope_key(scopes: &[String]) -> String {
    let mut s = scopes.to_vec();
    s.sort();
    s.dedup();
    s.join(" ")
}

impl Authorizer {
    pub fn new(creds: Arc<dyn CredentialSource>) -> Authorizer {
        Authorizer { creds, hosts: Mutex::new(HashMap::new()) }
    }

    /// An authorizer with the same credentials and no tokens yet.
    pub fn fresh(&self) -> Authorizer {
        Authorizer::new(self.creds.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HostAuth>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether credentials are configured for `host`.
    pub fn has_credentials(&self, host: &str) -> bool {
        matches!(self.creds.credentials(host), Ok(Some(_)))
    }

    /// The `Authorization` header for a request to `host` needing `scopes`, when the host's scheme is
    /// known from an earlier challenge (so only the first request to a host sees a 401).
    pub async fn header(
        &self,
        http: &reqwest::Client,
        host: &str,
        scopes: &[String],
    ) -> Result<Option<String>, RegistryError> {
        let challenge = {
            let hosts = self.lock();
            let Some(h) = hosts.get(host) else { return Ok(None) };
            let Some(c) = h.challenge.clone() else { return Ok(None) };
            if c.scheme == Scheme::Bearer {
                if let Some(t) = h.tokens.get(&scope_key(scopes)) {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                }
            }
            c
        };
        match challenge.scheme {
            Scheme::Basic => Ok(self.basic(host)?),
            Scheme::Bearer => self.fetch_token(http, host, &challenge, scopes).await.map(Some),
            Scheme::Other(_) => Ok(None),
        }
    }

    fn basic(&self, host: &str) -> Result<Option<String>, RegistryError> {
        Ok(self
            .creds
            .credentials(host)?
            .map(|c| format!("Basic {}", B64.encode(format!("{}:{}", c.username, c.password)))))
    }

    /// Records the challenge of a 401 and returns the header to retry with, or None when retrying
    /// cannot help (no credentials for Basic, an unknown scheme, or the same token was just refused).
    pub async fn on_unauthorized(
        &self,
        http: &reqwest::Client,
        host: &str,
        www_authenticate: &str,
        scopes: &[String],
        refused: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        let challenges = challenge::parse(www_authenticate);
        let chosen = challenges
            .iter()
            .find(|c| c.scheme == Scheme::Bearer)
            .or_else(|| challenges.iter().find(|c| c.scheme == Scheme::Basic))
            .cloned();
        let Some(c) = chosen else { return Ok(None) };
        {
            let mut hosts = self.lock();
            let h = hosts.entry(host.to_string()).or_default();
            h.challenge = Some(c.clone());
            h.tokens.remove(&scope_key(scopes));
        }
        let header = match c.scheme {
            Scheme::Basic => self.basic(host)?,
            Scheme::Bearer => {
                // The challenge's own scope (e.g. a cross-repository mount's source) joins ours.
                let mut all = scopes.to_vec();
                if let Some(s) = c.params.get("scope") {
                    all.extend(s.split(' ').map(str::to_string));
                }
                let t = self.fetch_token(http, host, &c, &all).await?;
                if all.len() != scopes.len() {
                    // Later requests ask for `scopes`: let them find this token too.
                    let mut hosts = self.lock();
                    let h = hosts.entry(host.to_string()).or_default();
                    if let Some(tok) = h.tokens.get(&scope_key(&all)).cloned() {
                        h.tokens.insert(scope_key(scopes), tok);
                    }
                }
                Some(format!("Bearer {t}"))
            }
            Scheme::Other(_) => None,
        };
        Ok(header.filter(|h| Some(h.as_str()) != refused))
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        host: &str,
        c: &Challenge,
        scopes: &[String],
    ) -> Result<String, RegistryError> {
        let realm = c.realm().unwrap_or_default().to_string();
        let key = scope_key(scopes);
        let token_err = |message: String| RegistryError::Token { realm: realm.clone(), scope: key.clone(), message };
        let url = url::Url::parse(&realm).map_err(|e| token_err(format!("invalid realm: {e}")))?;
        let creds = self.creds.credentials(host)?;
        let sorted: Vec<&str> = key.split(' ').filter(|s| !s.is_empty()).collect();
        let req = match creds.as_ref().and_then(|c| c.identity_token.clone()) {
            // OAuth2 refresh-token grant (docker's identity tokens).
            Some(refresh) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", &refresh)
                    .append_pair("client_id", "rbuild")
                    .append_pair("scope", &sorted.join(" "));
                if let Some(s) = c.service() {
                    form.append_pair("service", s);
                }
                http.post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            None => {
                let mut u = url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = c.service() {
                        q.append_pair("service", s);
                    }
                    for s in &sorted {
                        q.append_pair("scope", s);
                    }
                }
                let r = http.get(u);
                match &creds {
                    Some(c) if !c.username.is_empty() => r.basic_auth(&c.username, Some(&c.password)),
                    _ => r,
                }
            }
        };
        let resp = req.send().await.map_err(|e| token_err(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| token_err(e.to_string()))?;
        if !status.is_success() {
            let msg = format!("status {status}: {}", error_body_message(&body));
            return Err(match status.as_u16() {
                401 => RegistryError::Unauthorized {
                    registry: host.to_string(),
                    scope: key.clone(),
                    anonymous: creds.is_none(),
                    message: msg,
                },
                403 => RegistryError::Denied { registry: host.to_string(), scope: key.clone(), message: msg },
                _ => token_err(msg),
            });
        }
        #[derive(serde::Deserialize)]
        struct Resp {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let r: Resp = serde_json::from_slice(&body).map_err(|e| token_err(format!("invalid response: {e}")))?;
        let value = r
            .token
            .or(r.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| token_err("no token in response".into()))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(r.expires_in.unwrap_or(60).max(10));
        let expires = Instant::now() + lifetime - Duration::from_secs(5);
        self.lock().entry(host.to_string()).or_default().tokens.insert(key, Token { value: value.clone(), expires });
        Ok(value)
    }
}
