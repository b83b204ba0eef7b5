//! `_ping`, `version`, `info`, `system/df` and `build/prune`: honest values about what answers (rbuild,
//! its state root and snapshotter), so `docker version` and `docker info` say what the client talks to.

use std::sync::atomic::Ordering;

use hyper::header::HeaderValue;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::images::catalog;
use super::reply::{full, json, Body, Query};
use super::{State, API_VERSION, MIN_API_VERSION};

/// `GET|HEAD /_ping`: `OK`, with the headers clients negotiate from. `Builder-Version: 1` makes the
/// docker CLI use the classic build protocol, which is what this API serves.
pub(crate) fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD { "" } else { "OK" };
    let mut r = full(StatusCode::OK, "text/plain; charset=utf-8", body);
    let h = r.headers_mut();
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Cache-Control", HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    r
}

fn uname() -> (String, String, String) {
    let u = rustix::system::uname();
    let s = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    (s(u.nodename()), s(u.release()), s(u.machine()))
}

/// Go's name of this machine's architecture, as dockerd reports it in `/version`.
fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "armv7l" => "arm",
        other => other,
    }
}

/// `GET /version`.
pub(crate) async fn version(_state: &State) -> Result<Response<Body>, ApiError> {
    let (_, kernel, machine) = uname();
    let v = env!("CARGO_PKG_VERSION");
    Ok(json(
        StatusCode::OK,
        &json!({
            "Platform": { "Name": format!("rbuild {v}") },
            "Components": [{
                "Name": "rbuild",
                "Version": v,
                "Details": {
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": MIN_API_VERSION,
                    "Note": "builds and stores images; runs no containers",
                },
            }],
            "Version": v,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(&machine),
            "KernelVersion": kernel,
            "BuildTime": "",
        }),
    ))
}

fn mem_total() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_name() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// `GET /info`.
pub(crate) async fn info(state: &State) -> Result<Response<Body>, ApiError> {
    let engine = state.daemon.engine().clone();
    let store = engine.images().clone();
    let images =
        tokio::task::spawn_blocking(move || catalog(&store)).await.map_err(|e| ApiError::internal(e.to_string()))??;
    let (host, kernel, machine) = uname();
    let root = engine.store().root.path().display().to_string();
    let driver = format!("{:?}", engine.store().kind).to_ascii_lowercase();
    let c = state.daemon.counters();
    let running = c.builds_running.load(Ordering::Relaxed);
    let total = c.builds_total.load(Ordering::Relaxed);
    let allowed: Vec<String> = state.daemon.allowed().iter().map(|e| e.to_string()).collect();
    let mut v = json!({
            "ID": format!("rbuild:{root}"),
            "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
            "Images": images.len(),
            "Driver": driver,
            "DriverStatus": [["State root", root], ["Builds running", running.to_string()],
                             ["Builds since start", total.to_string()], ["Entitlements", allowed.join(",")]],
            "DockerRootDir": root,
            "Plugins": { "Volume": null, "Network": null, "Authorization": null, "Log": null },
            "MemoryLimit": false, "SwapLimit": false, "CpuCfsPeriod": false, "CpuCfsQuota": false,
            "Debug": false,
            "NFd": 0, "NGoroutines": 0,
            "SystemTime": llb::image::rfc3339(
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)),
            "LoggingDriver": "", "CgroupDriver": "", "CgroupVersion": "",
            "KernelVersion": kernel,
            "OperatingSystem": os_name(),
            "OSType": "linux",
            "Architecture": machine,
            "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "MemTotal": mem_total(),
    });
    // Two halves: one json! of every field is past the macro's recursion limit.
    let rest = json!({
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": { "IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": [] },
            "Name": host,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {},
            "DefaultRuntime": "",
            "Swarm": { "LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false,
                       "Error": "", "RemoteManagers": null },
            "LiveRestoreEnabled": false,
            "Isolation": "",
            "SecurityOptions": [],
            "Warnings": ["rbuild builds and stores images; it runs no containers, volumes or networks"],
    });
    if let (Some(o), Value::Object(r)) = (v.as_object_mut(), rest) {
        o.extend(r);
    }
    Ok(json(StatusCode::OK, &v))
}

/// `GET /system/df`: the images, and the build cache as one entry per kind of item the state root holds.
pub(crate) async fn df(state: &State) -> Result<Response<Body>, ApiError> {
    let engine = state.daemon.engine().clone();
    let (images, usage) = tokio::task::spawn_blocking(move || {
        let images = catalog(engine.images())?;
        let usage =
            engine.store().collector().usage().map_err(|e| ApiError::internal(format!("measuring usage: {e}")))?;
        Ok::<_, ApiError>((images, usage))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let cache = |id: &str, what: &str, i: snapshotter::gc::Item| {
        json!({
            "ID": id, "Type": "regular", "Description": format!("{what}: {} items", i.count), "InUse": false,
            "Shared": false, "Size": i.size, "CreatedAt": "0001-01-01T00:00:00Z", "LastUsedAt": null, "UsageCount": 0,
        })
    };
    let images: Vec<Value> = images.iter().map(|i| i.summary()).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "LayersSize": usage.blobs.size,
            "Images": images,
            "Containers": [],
            "Volumes": [],
            "BuildCache": [
                cache("rbuild-layers", "committed snapshots", usage.layers),
                cache("rbuild-snapshots", "active snapshots", usage.snapshots),
                cache("rbuild-cache-mounts", "RUN --mount=type=cache directories", usage.cache_mounts),
                cache("rbuild-ingests", "partial downloads", usage.ingests),
            ],
        }),
    ))
}

/// `POST /build/prune` (`docker builder prune`): the state root's garbage collection, `rbuild prune`.
pub(crate) async fn build_prune(state: &State, q: &Query) -> Result<Response<Body>, ApiError> {
    let all = q.bool("all")?;
    let keep_storage = match q.non_empty("keep-storage") {
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("keep-storage {v:?} is not a number of bytes")))?,
        ),
        None => None,
    };
    // Pruning under running builds could take what they are about to use.
    if state.daemon.counters().builds_running.load(Ordering::SeqCst) > 0 {
        return Err(ApiError::conflict("the daemon is building; prune when no build runs"));
    }
    let engine = state.daemon.engine().clone();
    let opts = snapshotter::gc::PruneOptions { all, keep_storage: keep_storage.filter(|k| *k > 0), until: None };
    let report = tokio::task::spawn_blocking(move || engine.store().collector().prune(opts))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| ApiError::internal(format!("pruning: {e}")))?;
    let deleted: Vec<String> =
        report.snapshots.iter().cloned().chain(report.blobs.iter().map(|d| d.to_string())).collect();
    Ok(json(StatusCode::OK, &json!({ "CachesDeleted": deleted, "SpaceReclaimed": report.freed })))
}
