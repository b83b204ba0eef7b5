//! A fault-injecting HTTP/1.1 proxy on loopback: one request per connection, forwarded to the registry
//! with `Connection: close`. Of the requests, 10% get a 503 without being forwarded, 5% see the
//! connection closed without being forwarded, and 5% are forwarded but their response is dropped (the
//! registry did the work, the client never hears of it). Everything else passes through untouched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicUsize,
    pub unavailable: AtomicUsize,
    pub dropped: AtomicUsize,
    pub lost_responses: AtomicUsize,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(Stats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = handle(conn, upstream, st).await;
                });
            }
        });
        FaultProxy { addr, stats, task }
    }
}

async fn handle(mut conn: TcpStream, upstream: SocketAddr, st: Arc<Stats>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut chunk = vec![0u8; 65536];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let n = st.requests.fetch_add(1, Ordering::SeqCst);
    // A fixed pseudo-random draw per request number: reproducible, but not periodic (a periodic pattern
    // can line up with a client's request sequence and fail the same step every time).
    let draw = splitmix(n as u64) % 100;
    if draw < 10 {
        st.unavailable.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}"#;
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(resp.as_bytes()).await?;
        return conn.shutdown().await;
    }
    if draw < 15 {
        st.dropped.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    let mut out = String::new();
    for line in head[..head_end - 2].split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).await?;
    // The registry may answer (e.g. 416) and close before reading the whole body: still relay its answer.
    if up.write_all(out.as_bytes()).await.is_ok() {
        let _ = up.write_all(&buf[head_end..head_end + len]).await;
    }
    // Keep what arrived even if the registry resets the connection after answering.
    let mut resp = Vec::new();
    let _ = up.read_to_end(&mut resp).await;
    if resp.is_empty() {
        return Ok(());
    }
    if draw < 20 {
        st.lost_responses.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    }
    conn.write_all(&resp).await?;
    conn.shutdown().await
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}
