//! The distribution client (reqwest + tokio): one HTTP client per endpoint (TLS settings differ), the
//! authorizer shared by all requests, and [`Client::send`], which adds auth, answers 401 challenges and
//! retries 5xx, 429 and broken connections with exponential backoff and jitter.
//!
//! Pull lives in [`pull`], push in [`push`]; both follow the distribution spec
//! (`distribution/distribution` `docs/spec/api.md`) and containerd's `core/remotes/docker`.

pub mod progress;
pub mod pull;
pub mod push;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::auth::{Authorizer, CredentialSource};
use crate::config::{Config, Endpoint};
use crate::error::{error_body_message, RegistryError};
pub use progress::{Progress, ProgressFn, ProgressKind};

/// How often and how patiently requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// `base * 2^attempt`, capped, with up to 50% random jitter so that parallel uploads spread out.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16)).min(self.max_delay);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let jitter = exp.mul_f64(f64::from(nanos % 1000) / 2000.0);
        exp + jitter
    }
}

/// Tunables of a client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// Blobs up to this size are uploaded in one PUT; larger ones in chunks of `chunk_size`.
    pub monolithic_max: u64,
    pub chunk_size: usize,
    /// Concurrent blob transfers per image.
    pub concurrency: usize,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            monolithic_max: 16 << 20,
            chunk_size: 8 << 20,
            concurrency: 4,
            user_agent: format!("rbuild/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// How many times a request whose connection fails is tried (see [`RetryPolicy::attempts`] for the rest).
const CONNECT_ATTEMPTS: u32 = 3;

/// A request that can be sent again on a retry (the body is shared bytes).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Option<bytes::Bytes>,
}

impl Req {
    pub fn new(method: Method, url: impl Into<String>) -> Req {
        Req { method, url: url.into(), headers: Vec::new(), body: None }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Req {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: bytes::Bytes) -> Req {
        self.body = Some(body);
        self
    }
}

/// The distribution client. Cheap to share behind an `Arc`.
pub struct Client {
    config: Config,
    auth: Authorizer,
    http: Mutex<HashMap<String, reqwest::Client>>,
    pub(crate) options: ClientOptions,
    pub(crate) progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(config: Config, creds: Arc<dyn CredentialSource>) -> Client {
        Client::with_options(config, creds, ClientOptions::default())
    }

    pub fn with_options(config: Config, creds: Arc<dyn CredentialSource>, options: ClientOptions) -> Client {
        Client { config, auth: Authorizer::new(creds), http: Mutex::new(HashMap::new()), options, progress: None }
    }

    /// Reports per-blob progress to `f`.
    pub fn with_progress(mut self, f: ProgressFn) -> Client {
        self.progress = Some(f);
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client with this one's configuration, credentials and options that reports per-blob progress to
    /// `f` (a daemon forwards one call's progress to its client).
    pub fn reporting_to(&self, f: ProgressFn) -> Client {
        Client {
            config: self.config.clone(),
            auth: self.auth.fresh(),
            http: Mutex::new(HashMap::new()),
            options: self.options.clone(),
            progress: Some(f),
        }
    }

    pub(crate) fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(&p);
        }
    }

    /// The HTTP client for an endpoint, built once with its TLS settings.
    pub(crate) fn http(&self, ep: &Endpoint) -> Result<reqwest::Client, RegistryError> {
        let key = format!("{}|{}|{:?}|{:?}", ep.host, ep.insecure, ep.ca, ep.keypair);
        let mut map = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let tls = |message: String| RegistryError::Tls { host: ep.host.clone(), message };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(self.options.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .danger_accept_invalid_certs(ep.insecure);
        for ca in &ep.ca {
            let pem = std::fs::read(ca).map_err(|e| tls(format!("cannot read CA {}: {e}", ca.display())))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| tls(format!("{}: {e}", ca.display())))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some(kp) = ep.keypair.first() {
            let mut pem = std::fs::read(&kp.cert).map_err(|e| tls(format!("{}: {e}", kp.cert.display())))?;
            pem.extend(std::fs::read(&kp.key).map_err(|e| tls(format!("{}: {e}", kp.key.display())))?);
            b = b.identity(reqwest::Identity::from_pem(&pem).map_err(|e| tls(e.to_string()))?);
        }
        let c = b.build().map_err(|e| tls(e.to_string()))?;
        map.insert(key, c.clone());
        Ok(c)
    }

    /// Sends `req` to `ep` with authorization for `scopes`, answering one auth challenge and retrying
    /// transient failures. Returns the final response whatever its status; see [`check`].
    pub(crate) async fn send(&self, ep: &Endpoint, scopes: &[String], req: &Req) -> Result<Response, RegistryError> {
        self.send_attempts(ep, scopes, req, self.options.retry.attempts).await
    }

    /// [`Client::send`] with its own number of attempts (1: no retry, for requests that are not
    /// idempotent such as an upload chunk).
    pub(crate) async fn send_attempts(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        req: &Req,
        attempts: u32,
    ) -> Result<Response, RegistryError> {
        let http = self.http(ep)?;
        let mut auth = self.auth.header(&http, &ep.host, scopes).await?;
        let mut challenged = false;
        let mut attempt = 0u32;
        loop {
            let method = req.method.clone();
            let mut headers = HeaderMap::new();
            for (k, v) in &req.headers {
                if let Ok(v) = HeaderValue::from_str(v) {
                    headers.append(k.clone(), v);
                }
            }
            if let Some(a) = &auth {
                if let Ok(v) = HeaderValue::from_str(a) {
                    headers.insert(AUTHORIZATION, v);
                }
            }
            let mut rb = http.request(method.clone(), &req.url).headers(headers);
            if let Some(body) = &req.body {
                rb = rb.body(body.clone());
            }
            let last = attempt + 1 >= attempts;
            match rb.send().await {
                Err(source) => {
                    // A refused connection or an unknown host is seldom a blip: a few quick tries, not the
                    // whole backoff (a build then falls back to the store's copy within a second).
                    let refused = source.is_connect() && attempt + 1 >= attempts.min(CONNECT_ATTEMPTS);
                    if last || source.is_builder() || refused {
                        return Err(RegistryError::Transport {
                            method: method.to_string(),
                            url: req.url.clone(),
                            cause: source,
                        });
                    }
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let www =
                        resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    match self.auth.on_unauthorized(&http, &ep.host, &www, scopes, auth.as_deref()).await? {
                        Some(h) => {
                            auth = Some(h);
                            continue;
                        }
                        None => return Ok(resp),
                    }
                }
                Ok(resp) if is_retryable(resp.status()) && !last => {
                    if let Some(d) = retry_after(&resp) {
                        tokio::time::sleep(d.min(self.options.retry.max_delay)).await;
                        attempt += 1;
                        continue;
                    }
                }
                Ok(resp) => return Ok(resp),
            }
            tokio::time::sleep(self.options.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// Checks that `registry` answers `GET /v2/` with the client's credentials (what `docker login`
    /// verifies before saving a login).
    pub async fn ping(&self, registry: &str) -> Result<(), RegistryError> {
        let ep = self.config.origin(registry);
        let req = Req::new(Method::GET, ep.base_url());
        self.send_ok(&ep, &[], &format!("registry API at {}", ep.base_url()), &req).await?;
        Ok(())
    }

    /// Maps a non-success response to a clear error naming the registry, the scope or the object.
    pub(crate) async fn check(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        req: &Req,
        resp: Response,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let message = error_body_message(&body);
        let scope = if scopes.is_empty() { "the registry API".to_string() } else { scopes.join(" ") };
        Err(match status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
                registry: ep.host.clone(),
                scope,
                anonymous: !self.auth.has_credentials(&ep.host),
                message,
            },
            StatusCode::FORBIDDEN => RegistryError::Denied { registry: ep.host.clone(), scope, message },
            StatusCode::NOT_FOUND => {
                RegistryError::NotFound { registry: ep.host.clone(), what: what.to_string(), message }
            }
            _ => RegistryError::Status {
                method: req.method.to_string(),
                url: req.url.clone(),
                status: status.as_u16(),
                message,
            },
        })
    }

    /// Sends and checks in one step.
    pub(crate) async fn send_ok(
        &self,
        ep: &Endpoint,
        scopes: &[String],
        what: &str,
        req: &Req,
    ) -> Result<Response, RegistryError> {
        let resp = self.send(ep, scopes, req).await?;
        self.check(ep, scopes, what, req, resp).await
    }
}

fn is_retryable(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Resolves a `Location` header against the URL it answered.
pub(crate) fn resolve_location(base: &str, location: &str) -> Result<String, RegistryError> {
    let base = url::Url::parse(base).map_err(|e| RegistryError::Protocol(format!("invalid url {base}: {e}")))?;
    base.join(location)
        .map(|u| u.to_string())
        .map_err(|e| RegistryError::Protocol(format!("invalid Location {location:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        assert!(p.delay(0) >= Duration::from_millis(100) && p.delay(0) <= Duration::from_millis(150));
        assert!(p.delay(3) >= Duration::from_millis(800));
        assert!(p.delay(30) <= Duration::from_millis(1500));
    }

    #[test]
    fn relative_locations() {
        let u =
            resolve_location("http://127.0.0.1:5000/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/x?_state=1").unwrap();
        assert_eq!(u, "http://127.0.0.1:5000/v2/a/blobs/uploads/x?_state=1");
        let u = resolve_location("http://h/v2/", "https://s3/x").unwrap();
        assert_eq!(u, "https://s3/x");
    }
}
