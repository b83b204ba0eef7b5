//! A registry that serves what a test gives it, hostile content included (blobs that do not match their
//! digests, layers that try to leave the root, a blob that stalls mid-download), on a loopback port. It
//! answers the few distribution-API requests a pull makes, one request per connection, and stops on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What a blob request gets.
#[derive(Clone)]
pub enum Blob {
    /// These bytes, whatever digest they were asked for under.
    Bytes(Vec<u8>),
    /// The first `sent` bytes of `bytes` (the full length announced), then nothing until the registry
    /// stops: a download that never ends.
    Stall { bytes: Vec<u8>, sent: usize },
}

/// One image (`hostile:latest`): its layers in order, as uncompressed tars.
pub struct Image {
    pub manifest: Vec<u8>,
    pub blobs: HashMap<String, Blob>,
}

impl Image {
    /// An image of `layers` (uncompressed tars), each served as given.
    pub fn of_layers(layers: &[Vec<u8>]) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Env": ["PATH=/bin"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let descs: Vec<_> = layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(l),
                    "size": l.len(),
                })
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
            "layers": descs,
        }))
        .unwrap();
        let mut blobs: HashMap<String, Blob> = layers.iter().map(|l| (sha256(l), Blob::Bytes(l.clone()))).collect();
        blobs.insert(sha256(&config), Blob::Bytes(config));
        Image { manifest, blobs }
    }
}

/// The registry; `reference()` names its image.
pub struct HostileRegistry {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    config: tempfile::TempDir,
}

impl HostileRegistry {
    pub fn start(image: Image) -> HostileRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let image = Arc::new(image);
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (image, s) = (image.clone(), s.clone());
                        std::thread::spawn(move || serve(c, &image, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("rbuild.toml"), format!("[registry.\"127.0.0.1:{port}\"]\nhttp = true\n"))
            .unwrap();
        HostileRegistry { port, stop, thread: Some(thread), config }
    }

    /// `127.0.0.1:PORT/hostile:latest`.
    pub fn reference(&self) -> String {
        format!("127.0.0.1:{}/hostile:latest", self.port)
    }

    /// An rbuild config that allows plain HTTP to this registry.
    pub fn config_path(&self) -> PathBuf {
        self.config.path().join("rbuild.toml")
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut c: TcpStream, image: &Image, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let mut request = String::new();
    let mut reader = BufReader::new(c.try_clone().unwrap());
    if reader.read_line(&mut request).is_err() {
        return;
    }
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = Path::new(path.split('?').next().unwrap_or(""));
    let head = method == "HEAD";
    let respond = |c: &mut TcpStream, status: &str, headers: &str, body: &[u8], len: usize| {
        let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{headers}\r\n");
        if !head {
            let _ = c.write_all(body);
        }
        let _ = c.flush();
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let kind = path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("");
    match kind {
        _ if path == Path::new("/v2/") || path == Path::new("/v2") => respond(&mut c, "200 OK", "", b"{}", 2),
        "manifests" if name == "latest" || name == sha256(&image.manifest) => {
            let headers = format!(
                "Content-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {}\r\n",
                sha256(&image.manifest)
            );
            respond(&mut c, "200 OK", &headers, &image.manifest, image.manifest.len());
        }
        "blobs" => match image.blobs.get(name) {
            Some(Blob::Bytes(b)) => respond(&mut c, "200 OK", "Content-Type: application/octet-stream\r\n", b, b.len()),
            Some(Blob::Stall { bytes, sent }) => {
                respond(&mut c, "200 OK", "Content-Type: application/octet-stream\r\n", &bytes[..*sent], bytes.len());
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => respond(&mut c, "404 Not Found", "", b"", 0),
        },
        _ => respond(&mut c, "404 Not Found", "", b"", 0),
    }
}

/// A tar entry of a hand-made layer.
pub enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

/// An uncompressed layer tar of `entries`, names written raw (the tar crate refuses `..` through its
/// checked setters, and a hostile layer is exactly what it would refuse).
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data): (&str, &[u8]) = match e {
            Entry::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            Entry::File(n, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (n, d)
            }
            Entry::Symlink(n, t) | Entry::Hardlink(n, t) => {
                let ty = if matches!(e, Entry::Symlink(..)) { tar::EntryType::Symlink } else { tar::EntryType::Link };
                h.set_entry_type(ty);
                h.set_mode(0o777);
                let raw = &mut h.as_old_mut().linkname;
                raw[..t.len()].copy_from_slice(t.as_bytes());
                (n, b"")
            }
        };
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}
