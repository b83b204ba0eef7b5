//! A small token issuer for the registry's `auth.token` mode (distribution `docs/spec/auth/jwt.md`):
//! it checks Basic credentials (GET) or a refresh token (POST, OAuth2 form) and signs an RS256 JWT whose
//! `x5c` header carries the certificate the registry trusts (`rootcertbundle`). Signing shells out to
//! `openssl dgst -sha256 -sign`, which is RSASSA-PKCS1-v1_5 as RS256 requires.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const SERVICE: &str = "rbuild-test-registry";
pub const ISSUER: &str = "rbuild-test-issuer";
pub const USER: &str = "tokenuser";
pub const PASSWORD: &str = "tokenpass";
pub const REFRESH: &str = "rbuild-refresh-token";

pub struct TokenServer {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub issued: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub async fn start(dir: &Path) -> TokenServer {
        super::sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.pem -days 2 -subj /CN=rbuild-token 2>/dev/null && \
             openssl x509 -in token.pem -outform DER -out token.der",
            dir,
        );
        let der = std::fs::read(dir.join("token.der")).unwrap();
        let key = dir.join("token.key");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        let x5c = STANDARD.encode(&der);
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let key = key.clone();
                let x5c = x5c.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = conn.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = conn.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                    let (status, json) = answer(&head, &body, &key, &x5c);
                    if status == 200 {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let reason = if status == 200 { "OK" } else { "Unauthorized" };
                    let resp = format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                        json.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        TokenServer { addr, cert: dir.join("token.pem"), issued, task }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Decides and signs; every requested action is granted to an authenticated caller.
fn answer(head: &str, body: &str, key: &Path, x5c: &str) -> (u16, String) {
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
    let mut scopes: Vec<String> = Vec::new();
    let (authenticated, refresh) = if head.starts_with("POST") {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        if let Some(s) = get("scope") {
            scopes.extend(s.split(' ').map(str::to_string));
        }
        (
            get("grant_type").as_deref() == Some("refresh_token") && get("refresh_token").as_deref() == Some(REFRESH),
            true,
        )
    } else {
        scopes.extend(url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.to_string()));
        let want = format!("Basic {}", STANDARD.encode(format!("{USER}:{PASSWORD}")));
        (header(head, "authorization") == Some(want.as_str()), false)
    };
    if !authenticated {
        return (401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string());
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig = sign(key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    let field = if refresh { "access_token" } else { "token" };
    (200, serde_json::json!({field: token, "expires_in": 300}).to_string())
}

fn sign(key: &Path, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst -sign failed");
    out.stdout
}
