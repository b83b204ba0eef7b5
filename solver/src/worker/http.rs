//! HTTP(S) sources (`ADD https://...`), after BuildKit's `source/http`: one file in a fresh snapshot,
//! named by `filename`, the response's Content-Disposition or the URL's last path segment, with mode
//! `perm` (default 0600), owner `uid:gid` and the Last-Modified time (else the epoch).
//!
//! Cache keys follow BuildKit's `formatCacheKey`: filename, perm, uid, gid, headers and the content
//! digest. With `checksum` the digest is known up front, so a cached build never touches the network.
//! Without it the solver resolves the URL before keying ([`resolve`]): it revalidates earlier downloads
//! by ETag (a HEAD compared by hand, then a conditional GET, as BuildKit does for servers that mishandle
//! If-None-Match) or, where the server sent no ETag, by If-Modified-Since; otherwise it downloads, and the
//! key is the digest of what arrived. Either way an unchanged URL keys the same and the steps after it
//! are cache hits.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::time::{Duration, SystemTime};

use llb::{Digest, Op as LlbOp, SourceOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use snapshotter::redb::TableDefinition;

use super::snap::Step;
use super::{blocking, Base, Snap, State, WorkerRef};
use crate::error::SolveError;
use crate::op::{BoxFuture, CacheMap, Op, OpContext, Prepared};

/// URL hash (see [`Spec::url_hash`]) -> the [`Download`]s that can be revalidated, as JSON.
pub(crate) const HTTP_DOWNLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("solver_http_downloads");

/// Creates [`HTTP_DOWNLOADS`] if needed (a read of a missing redb table fails).
pub(crate) fn ensure_table(meta: &snapshotter::meta::MetaDb) -> Result<(), SolveError> {
    super::links::ensure(meta, HTTP_DOWNLOADS)
}

const KEY_VERSION: &[u8] = b"rbuild.http.v1\n";

/// BuildKit sends only these user-defined headers (`supportedUserDefinedHeaders`); others are dropped.
const ALLOWED_HEADERS: [&str; 2] = ["accept", "user-agent"];

/// The fields of an http source op.
pub(crate) struct Spec<'a> {
    pub(crate) url: &'a str,
    pub(crate) checksum: Option<&'a Digest>,
    pub(crate) filename: Option<&'a str>,
    pub(crate) perm: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) headers: Vec<(String, String)>,
    /// Secret id holding an Authorization header (never part of a key or a message).
    pub(crate) auth_secret: Option<&'a str>,
}

impl<'a> Spec<'a> {
    /// The http source of `op`, if it is one.
    pub(crate) fn of(op: &'a LlbOp) -> Option<Spec<'a>> {
        let LlbOp::Source(SourceOp::Http { url, checksum, filename, perm, uid, gid, headers, auth_header_secret }) = op
        else {
            return None;
        };
        let mut headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .filter(|(k, _)| ALLOWED_HEADERS.contains(&k.as_str()))
            .collect();
        headers.sort();
        Some(Spec {
            url,
            checksum: checksum.as_ref(),
            filename: filename.as_deref().filter(|f| !f.is_empty()),
            // BuildKit: a zero perm means the default.
            perm: perm.filter(|p| *p != 0).unwrap_or(0o600),
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
            headers,
            auth_secret: auth_header_secret.as_deref(),
        })
    }

    /// The key of the downloads of this URL with these options (BuildKit's `urlHash`): URL, filename,
    /// perm, owner and headers.
    fn url_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        let v = serde_json::json!({
            "url": self.url, "filename": self.filename, "perm": self.perm, "uid": self.uid, "gid": self.gid,
            "headers": self.headers,
        });
        h.update(v.to_string().as_bytes());
        hex::encode(h.finalize())
    }

    /// The cache key of the result: what the file is and how it is written (BuildKit's
    /// `formatCacheKey`), never the URL, so two URLs with the same content share it.
    pub(crate) fn cache_key(&self, filename: &str, content: &Digest, last_modified: Option<&str>) -> Digest {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        let v = serde_json::json!({
            "filename": filename, "perm": self.perm, "uid": self.uid, "gid": self.gid,
            "checksum": content.to_string(), "last_modified": last_modified, "headers": self.headers,
        });
        h.update(v.to_string().as_bytes());
        Digest::of(&h.finalize())
    }
}

/// The key of an http source with a checksum, known without the network (BuildKit keys it without a
/// modification time and with the name from the op or the URL).
pub(crate) fn checksum_key(spec: &Spec<'_>) -> Option<Digest> {
    let sum = spec.checksum?;
    Some(spec.cache_key(&file_name(spec.url, spec.filename, None), sum, None))
}

/// One earlier download of a URL, for revalidation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Download {
    etag: Option<String>,
    last_modified: Option<String>,
    digest: Digest,
    filename: String,
    snapshot: String,
}

pub(crate) struct HttpOp(pub(crate) Base);

impl HttpOp {
    fn spec(&self) -> Result<Spec<'_>, SolveError> {
        Spec::of(&self.0.vertex.op).ok_or_else(|| SolveError::Internal("not an http source".into()))
    }
}

impl Op<WorkerRef> for HttpOp {
    /// With a checksum the key is known without the network; without one the URL is revalidated or
    /// downloaded, and the key is what it serves.
    fn prepare<'a>(&'a self, ctx: &'a OpContext) -> BoxFuture<'a, Result<Prepared<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let spec = self.spec()?;
            if let Some(key) = checksum_key(&spec) {
                return Ok(Prepared { content_key: Some(key), ..Prepared::default() });
            }
            let (key, snapshot) = resolve(&self.0, ctx, &spec).await?;
            Ok(Prepared {
                content_key: Some(key),
                ready: Some(vec![WorkerRef::Snapshot(Some(snapshot))]),
                content: Vec::new(),
            })
        })
    }

    fn cache_map(&self, _ctx: &OpContext, _inputs: &[Option<&WorkerRef>]) -> Result<CacheMap, SolveError> {
        Ok(CacheMap { digest: self.0.identity(), content: Vec::new() })
    }

    /// A download checked against the checksum (a source without one was fetched while preparing).
    fn exec<'a>(
        &'a self,
        ctx: &'a OpContext,
        _inputs: Vec<WorkerRef>,
    ) -> BoxFuture<'a, Result<Vec<WorkerRef>, SolveError>> {
        Box::pin(async move {
            let spec = self.spec()?;
            let auth = authorization(&self.0, ctx, &spec).await?;
            let client = self.0.state.http()?;
            let resp =
                request(&client, reqwest::Method::GET, &spec, auth.as_deref(), &[]).await.map_err(|e| ctx.err(e))?;
            let saved = save(&self.0.state, ctx, &spec, resp).await?;
            Ok(vec![WorkerRef::Snapshot(Some(saved.download.snapshot))])
        })
    }
}

/// Revalidates an earlier download of the URL or downloads it; returns the result's key and snapshot.
async fn resolve(base: &Base, ctx: &OpContext, spec: &Spec<'_>) -> Result<(Digest, String), SolveError> {
    let url_hash = spec.url_hash();
    let state = base.state.clone();
    let known: Vec<Download> = {
        let (state, url_hash) = (state.clone(), url_hash.clone());
        blocking(move || {
            let sn = &*state.worker.snapshotter;
            Ok(state
                .worker
                .meta
                .get::<Vec<Download>>(HTTP_DOWNLOADS, &url_hash)
                .map_err(|e| SolveError::Cache(e.to_string()))?
                .unwrap_or_default()
                .into_iter()
                .filter(|k| sn.stat(&k.snapshot).is_ok())
                .collect())
        })
        .await?
    };
    let client = &state.http()?;
    let auth = authorization(base, ctx, spec).await?;
    let etags: Vec<&str> = known.iter().filter_map(|k| k.etag.as_deref()).collect();
    let mut conditional = Vec::new();
    if !etags.is_empty() {
        conditional.push(("if-none-match".to_string(), etags.join(", ")));
        // Some servers mishandle If-None-Match but send ETags: compare a HEAD's by hand first.
        let head = request(client, reqwest::Method::HEAD, spec, auth.as_deref(), &conditional).await;
        if let Ok(resp) = head {
            let status = resp.status().as_u16();
            if status == 200 || status == 304 {
                if let Some(hit) = matching(&known, &resp, &etags) {
                    return Ok(revalidated(spec, hit, &resp));
                }
            }
        }
    } else if let Some(k) = known.iter().find(|k| k.last_modified.is_some()) {
        // An extension of BuildKit's scheme: servers without ETags (python's http.server, many static
        // hosts) still answer If-Modified-Since.
        conditional.push(("if-modified-since".to_string(), k.last_modified.clone().unwrap_or_default()));
    }
    let resp =
        request(client, reqwest::Method::GET, spec, auth.as_deref(), &conditional).await.map_err(|e| ctx.err(e))?;
    if resp.status().as_u16() == 304 {
        let hit = matching(&known, &resp, &etags)
            .or_else(|| known.iter().find(|k| k.etag.is_none() && k.last_modified.is_some()))
            .ok_or_else(|| ctx.err(format!("{} answered 304 Not Modified for a download it did not send", spec.url)))?;
        return Ok(revalidated(spec, hit, &resp));
    }
    let saved = save(&state, ctx, spec, resp).await?;
    if saved.download.etag.is_some() || saved.download.last_modified.is_some() {
        let mut all: Vec<Download> = known
            .into_iter()
            .filter(|k| k.etag != saved.download.etag || k.last_modified != saved.download.last_modified)
            .collect();
        all.push(saved.download.clone());
        // Remembering is an optimisation: failing costs a download next time, not the build.
        let _ = blocking(move || {
            let _ = state.worker.meta.put(HTTP_DOWNLOADS, &url_hash, &all);
            Ok(())
        })
        .await;
    }
    Ok((saved.key, saved.download.snapshot))
}

/// The earlier download a 200/304 response names by its ETag (a 304 without one answers the only ETag
/// asked about).
fn matching<'k>(known: &'k [Download], resp: &reqwest::Response, etags: &[&str]) -> Option<&'k Download> {
    let mut etag = header(resp, "etag").map(|e| etag_value(&e).to_string());
    if etag.is_none() && resp.status().as_u16() == 304 && etags.len() == 1 {
        etag = Some(etags[0].to_string());
    }
    let etag = etag?;
    known.iter().find(|k| k.etag.as_deref() == Some(etag.as_str()))
}

fn revalidated(spec: &Spec<'_>, hit: &Download, resp: &reqwest::Response) -> (Digest, String) {
    let filename = file_name(spec.url, spec.filename, header(resp, "content-disposition").as_deref());
    let last_modified = hit.last_modified.as_deref().filter(|l| parse_http_date(l).is_some());
    (spec.cache_key(&filename, &hit.digest, last_modified), hit.snapshot.clone())
}

/// The Authorization header from the secrets, as BuildKit: the op's `auth_header_secret`, else the
/// secret `HTTP_AUTH_HEADER_<host>` (the header's value) or `HTTP_AUTH_TOKEN_<host>` (a bearer token).
async fn authorization(base: &Base, ctx: &OpContext, spec: &Spec<'_>) -> Result<Option<String>, SolveError> {
    let session = &base.session;
    let text = |v: Vec<u8>| String::from_utf8_lossy(&v).trim_end_matches(['\r', '\n']).to_string();
    if let Some(id) = spec.auth_secret {
        return match session.secret(ctx.label(), id).await? {
            Some(v) => Ok(Some(text(v))),
            None => Err(SolveError::MissingSecret { step: ctx.label().to_string(), id: id.to_string() }),
        };
    }
    let Some(host) = reqwest::Url::parse(spec.url).ok().and_then(|u| u.host_str().map(str::to_string)) else {
        return Ok(None);
    };
    if let Some(v) = session.secret(ctx.label(), &format!("HTTP_AUTH_HEADER_{host}")).await? {
        return Ok(Some(text(v)));
    }
    Ok(session.secret(ctx.label(), &format!("HTTP_AUTH_TOKEN_{host}")).await?.map(|v| format!("Bearer {}", text(v))))
}

async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    spec: &Spec<'_>,
    auth: Option<&str>,
    extra: &[(String, String)],
) -> Result<reqwest::Response, String> {
    let mut req = client.request(method.clone(), spec.url);
    if let Some(a) = auth {
        let mut value = reqwest::header::HeaderValue::from_str(a)
            .map_err(|_| format!("the authorization secret for {} is not a valid header value", spec.url))?;
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    for (k, v) in spec.headers.iter().chain(extra) {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = req.send().await.map_err(|e| format!("cannot download {}: {}", spec.url, chain(&e)))?;
    let status = resp.status();
    if status.as_u16() < 200 || status.as_u16() >= 400 {
        return Err(format!(
            "cannot download {}: the server answered HTTP {status}; check the URL and that it is reachable from \
             this machine",
            spec.url
        ));
    }
    Ok(resp)
}

struct Saved {
    key: Digest,
    download: Download,
}

/// Streams the response body into a file of a new snapshot, checks it against the op's checksum, and
/// commits it under the result's cache key.
async fn save(
    state: &std::sync::Arc<State>,
    ctx: &OpContext,
    spec: &Spec<'_>,
    mut resp: reqwest::Response,
) -> Result<Saved, SolveError> {
    use tokio::io::AsyncWriteExt as _;
    let filename = file_name(spec.url, spec.filename, header(&resp, "content-disposition").as_deref());
    let etag = header(&resp, "etag").map(|e| etag_value(&e).to_string());
    let last_modified = header(&resp, "last-modified").filter(|l| parse_http_date(l).is_some());
    let total = resp.content_length();
    let io_err = |what: &str, e: std::io::Error| ctx.err(format!("cannot {what} {filename} from {}: {e}", spec.url));
    let (snap, file) = {
        let (state, label, path_name, perm) = (state.clone(), ctx.label().to_string(), filename.clone(), spec.perm);
        blocking(move || {
            // The key is not known before the content: the temporary snapshot is renamed at commit.
            let step = Step { state: &state, label: &label, key: Digest::of(b"") };
            let mut snap = Snap::prepare(&step, None, "http")?;
            let dir = snap.mount(&step)?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(perm)
                .open(dir.join(&path_name))
                .map_err(|e| step.err(format!("cannot write {path_name}: {e}")))?;
            Ok((snap, file))
        })
        .await?
    };
    let mut file = tokio::fs::File::from_std(file);
    let mut hash = Sha256::new();
    let (mut current, mut reported) = (0u64, 0u64);
    let status_id = format!("downloading {}", spec.url);
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            ctx.err(format!("cannot download {}: the transfer failed after {current} bytes: {}", spec.url, chain(&e)))
        })?;
        let Some(chunk) = chunk else { break };
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| io_err("write", e))?;
        current += chunk.len() as u64;
        if current - reported >= 1 << 20 {
            reported = current;
            ctx.status(&status_id, current, total);
        }
        ctx.check_cancelled()?;
    }
    ctx.status(&status_id, current, Some(current));
    let digest = sha256_digest(hash);
    if let Some(want) = spec.checksum {
        if *want != digest {
            return Err(ctx.err(format!(
                "digest mismatch for {}: downloaded {digest}, expected {want}; update ADD --checksum if the file \
                 changed on purpose",
                spec.url
            )));
        }
    }
    let key = match spec.checksum {
        // Keyed before anything was fetched (see `checksum_key`): the checksum and the static name.
        Some(_) => checksum_key(spec).unwrap_or_else(|| spec.cache_key(&filename, &digest, None)),
        None => spec.cache_key(&filename, &digest, last_modified.as_deref()),
    };
    let file = file.into_std().await;
    let (perm, uid, gid) = (spec.perm, spec.uid, spec.gid);
    let mtime = last_modified.as_deref().and_then(parse_http_date).unwrap_or(SystemTime::UNIX_EPOCH);
    let (state, label, what) = (state.clone(), ctx.label().to_string(), format!("{filename} from {}", spec.url));
    let name = blocking(move || {
        let step = Step { state: &state, label: &label, key };
        let io_err = |op: &str, e: std::io::Error| step.err(format!("cannot {op} {what}: {e}"));
        // Explicit: the umask must not narrow the requested mode.
        file.set_permissions(std::fs::Permissions::from_mode(perm)).map_err(|e| io_err("chmod", e))?;
        if uid != 0 || gid != 0 {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| io_err("chown", e))?;
        }
        file.set_times(std::fs::FileTimes::new().set_accessed(mtime).set_modified(mtime))
            .map_err(|e| io_err("set the time of", e))?;
        file.sync_all().map_err(|e| io_err("sync", e))?;
        drop(file);
        // The same bytes, name, mode and time as an earlier download keep that snapshot.
        snap.commit_as(&step, &format!("build-{}-0", key.hex()))
    })
    .await?;
    Ok(Saved { key, download: Download { etag, last_modified, digest, filename, snapshot: name } })
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// BuildKit's `etagValue`: weak ETags compare as strong ones.
fn etag_value(v: &str) -> &str {
    v.strip_prefix("W/").unwrap_or(v)
}

/// BuildKit's `getFileName`: the op's filename, else Content-Disposition's, else the URL's last path
/// segment; always one safe path component.
pub(crate) fn file_name(url: &str, filename: Option<&str>, content_disposition: Option<&str>) -> String {
    if let Some(f) = filename {
        return safe_file_name(f);
    }
    if let Some(f) = content_disposition.and_then(disposition_filename) {
        if !f.ends_with('/') {
            let base = f.rsplit('/').next().unwrap_or("");
            if !base.is_empty() {
                return safe_file_name(base);
            }
        }
    }
    if let Ok(u) = reqwest::Url::parse(url) {
        let base = u.path().trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if !base.is_empty() {
            return safe_file_name(base);
        }
    }
    safe_file_name("")
}

/// BuildKit's `pathutil.SafeFileName`: the base name of the cleaned absolute path, `__unnamed__` for none.
fn safe_file_name(name: &str) -> String {
    let mut last = "";
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => last = "",
            p => last = p,
        }
    }
    if last.is_empty() {
        "__unnamed__".into()
    } else {
        last.to_string()
    }
}

/// The `filename` parameter of a Content-Disposition header (quoted or a token).
fn disposition_filename(v: &str) -> Option<String> {
    let mut rest = v.split_once(';')?.1;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        if rest.is_empty() {
            return None;
        }
        let (name, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            out.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &q[end?..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        if name.trim().eq_ignore_ascii_case("filename") {
            return Some(value).filter(|v| !v.is_empty());
        }
        rest = next;
    }
}

/// An HTTP date (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, or the obsolete RFC 850 and
/// asctime forms) as a time.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let parts: Vec<&str> = s.split([' ', ',', '-']).filter(|p| !p.is_empty()).collect();
    let (day, month, year, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT; RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, day, month, year, time, "GMT"] => (*day, *month, *year, *time),
        // asctime: Sun Nov  6 08:49:37 1994
        [_, month, day, time, year] => (*day, *month, *year, *time),
        _ => return None,
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let mut year: i64 = year.parse().ok()?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else { return None };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The `sha256:<hex>` digest of what `hash` read (`Digest::of` would hash the hash again).
fn sha256_digest(hash: Sha256) -> Digest {
    let hex = hex::encode(hash.finalize());
    match format!("sha256:{hex}").parse() {
        Ok(d) => d,
        // 64 lowercase hex digits always parse.
        Err(_) => unreachable!("a sha256 hex digest did not parse"),
    }
}

/// An error with its sources (reqwest's own message is only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_buildkit() {
        assert_eq!(file_name("http://h/a/b.tar.gz?x=1", None, None), "b.tar.gz");
        assert_eq!(file_name("http://h/", None, None), "__unnamed__");
        assert_eq!(file_name("http://h/x", Some("../../etc/passwd"), None), "passwd");
        assert_eq!(file_name("http://h/x", None, Some("attachment; filename=\"r e.txt\"")), "r e.txt");
        assert_eq!(file_name("http://h/x", None, Some("attachment; filename=../up.txt")), "up.txt");
        assert_eq!(file_name("http://h/x", None, Some("attachment; filename=\"dir/\"")), "x");
        assert_eq!(file_name("http://h/x", None, Some("inline")), "x");
        assert_eq!(file_name("http://h/x", Some(".."), None), "__unnamed__");
    }

    #[test]
    fn content_digests_are_plain_sha256() {
        let mut h = Sha256::new();
        h.update(b"abc");
        let want = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_digest(h).to_string(), want);
    }

    #[test]
    fn http_dates_parse_in_all_three_forms() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(want));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(want));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(want));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn cache_keys_cover_content_name_and_mode_but_not_the_url() {
        let d = Digest::of(b"x");
        let spec = |url: &'static str, perm| Spec {
            url,
            checksum: None,
            filename: None,
            perm,
            uid: 0,
            gid: 0,
            headers: Vec::new(),
            auth_secret: None,
        };
        let a = spec("http://a/f", 0o600).cache_key("f", &d, None);
        assert_eq!(a, spec("http://b/f", 0o600).cache_key("f", &d, None));
        assert_ne!(a, spec("http://a/f", 0o644).cache_key("f", &d, None));
        assert_ne!(a, spec("http://a/f", 0o600).cache_key("g", &d, None));
        assert_ne!(a, spec("http://a/f", 0o600).cache_key("f", &Digest::of(b"y"), None));
        assert_ne!(a, spec("http://a/f", 0o600).cache_key("f", &d, Some("Sun, 06 Nov 1994 08:49:37 GMT")));
    }
}
