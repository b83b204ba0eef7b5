//! Test harness: a real `docker-registry` (distribution v2.8, Debian's package, installed by
//! `scripts/registry-test-env`) started on a free loopback port, and images built in a temporary store.

#![allow(dead_code)]

pub mod proxy;
pub mod token;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oci_spec::image::{Descriptor, Digest, MediaType};
use registry::manifest::media;
use registry::{ImageStore, Reference};
use snapshotter::content::LocalStore;
use snapshotter::meta::MetaDb;

/// The registry binary, or None (and a message saying how to get it) when it is missing.
pub fn registry_binary() -> Option<PathBuf> {
    for name in ["docker-registry", "registry"] {
        if let Ok(out) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output() {
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !p.is_empty() {
                return Some(PathBuf::from(p));
            }
        }
    }
    testkit::skip("docker-registry is not installed; run scripts/registry-test-env (as root) to install it");
    None
}

pub fn has_tool(name: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().map(|o| o.status.success()).unwrap_or(false)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// TLS material for the registry.
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to start a registry.
#[derive(Default)]
pub struct RegistryOpts {
    pub tls: Option<(PathBuf, PathBuf)>,
    pub htpasswd: Option<PathBuf>,
    /// (realm, service, issuer, rootcertbundle)
    pub token: Option<(String, String, String, PathBuf)>,
    /// Storage to start from (copied): `scripts/seed-images`' busybox and debian.
    pub seed: Option<PathBuf>,
}

/// The registry storage `scripts/seed-images` filled, when it finished.
pub fn seeded_storage() -> Option<PathBuf> {
    let cache = std::env::var_os("RBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rbuild-test"));
    let s = cache.join("registry");
    if s.join("seeded-v1").is_file() {
        Some(s)
    } else {
        testkit::skip(&format!("no seeded base images in {}: run scripts/seed-images", cache.display()));
        None
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A running registry; killed on drop.
pub struct TestRegistry {
    pub addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TestRegistry {
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn start(bin: &Path, opts: RegistryOpts) -> TestRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: rbuild-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((cert, key)) = &opts.tls {
            yaml += &format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
        }
        if let Some(h) = &opts.htpasswd {
            yaml += &format!("auth:\n  htpasswd:\n    realm: rbuild-test\n    path: {}\n", h.display());
        }
        if let Some((realm, service, issuer, bundle)) = &opts.token {
            yaml += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                bundle.display()
            );
        }
        if let Some(seed) = &opts.seed {
            copy_tree(seed, &dir.path().join("data"));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut reg = TestRegistry { addr, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                let log = std::fs::read_to_string(reg._dir.path().join("registry.log")).unwrap_or_default();
                panic!("docker-registry exited with {status}: {log}");
            }
            assert!(Instant::now() < deadline, "docker-registry did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn new_store(dir: &Path) -> ImageStore {
    let content = LocalStore::open(dir.join("content")).unwrap();
    let meta = Arc::new(MetaDb::open(dir.join("meta.redb")).unwrap());
    ImageStore::new(content, meta)
}

/// A gzip layer with one file of `size` bytes of varied content derived from `seed`.
pub fn make_layer(seed: u64, size: usize) -> (Vec<u8>, Digest) {
    let mut data = Vec::with_capacity(size);
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    while data.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(size);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, format!("file-{seed}"), &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = snapshotter::digest::of_bytes(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Builds an image with `layers` (seed, size) into `store`, names it `name`; returns its manifest
/// descriptor. `oci` chooses the OCI media types, else Docker schema2.
pub fn make_image(store: &ImageStore, name: &str, layers: &[(u64, usize)], oci: bool) -> Descriptor {
    let platform = llb::Platform::host();
    let mut img = llb::image::Image::scratch(&platform);
    img.config.cmd = Some(vec!["/bin/sh".into()]);
    let mut layer_descs = Vec::new();
    for (seed, size) in layers {
        let (blob, diff_id) = make_layer(*seed, *size);
        let mt = if oci { media::OCI_LAYER_GZIP } else { media::DOCKER_LAYER_GZIP };
        let d = store.write_bytes(&blob, mt).unwrap();
        img.rootfs.diff_ids.push(diff_id.to_string().parse().unwrap());
        img.push_history(format!("COPY file-{seed} /"), None, false);
        layer_descs.push(serde_json::json!({"mediaType": mt, "size": blob.len(), "digest": d.to_string()}));
    }
    let config = img.to_json();
    let config_mt = if oci { media::OCI_CONFIG } else { media::DOCKER_CONFIG };
    let cd = store.write_bytes(&config, config_mt).unwrap();
    let manifest_mt = if oci { media::OCI_MANIFEST } else { media::DOCKER_MANIFEST };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest_mt,
        "config": {"mediaType": config_mt, "size": config.len(), "digest": cd.to_string()},
        "layers": layer_descs,
    });
    let bytes = serde_json::to_vec_pretty(&manifest).unwrap();
    let md = store.write_bytes(&bytes, manifest_mt).unwrap();
    let desc = Descriptor::new(MediaType::from(manifest_mt), bytes.len() as u64, md);
    store.tag(&Reference::parse(name).unwrap(), &desc).unwrap();
    desc
}

/// A client whose docker.io is the registry at `host` (a mirror, as scripts/local-mirror configures it).
pub fn docker_io_mirror_client(host: &str) -> registry::Client {
    let toml = format!("[registry.\"docker.io\"]\nmirrors = [\"{host}\"]\n");
    let config = registry::Config::from_toml(Path::new("rbuild.toml"), &toml).unwrap();
    registry::Client::new(config, Arc::new(registry::auth::Anonymous))
}

/// `skopeo inspect --raw` of `reference` (plain HTTP): the bytes the registry serves.
pub fn skopeo_raw(reference: &str) -> Vec<u8> {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo inspect {reference}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Runs a shell command, panicking with its output when it fails.
pub fn sh(cmd: &str, cwd: &Path) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it.
pub fn make_tls(dir: &Path) -> Tls {
    let conf = dir.join("san.cnf");
    std::fs::write(&conf, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=rbuild-test-ca 2>/dev/null && \
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && \
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.cnf 2>/dev/null",
        dir,
    );
    Tls { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
}
