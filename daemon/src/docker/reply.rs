//! Answers: JSON documents, dockerd's error body, streamed JSON messages (one object per chunk, each
//! followed by `\r\n` as dockerd's jsonmessage encoder writes them), raw byte streams (archives), and the
//! query-string reading every handler shares.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::error::ApiError;

/// Every answer's body: whole, or streamed (a stream that fails mid-way aborts the response, so a client
/// never takes a truncated archive for a whole one).
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(status: StatusCode, content_type: &str, bytes: impl Into<Bytes>) -> Response<Body> {
    let body = Full::new(bytes.into()).map_err(|e: Infallible| match e {}).boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

pub(crate) fn json(status: StatusCode, v: &Value) -> Response<Body> {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    full(status, "application/json", b)
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", Bytes::new())
}

impl ApiError {
    /// dockerd's error body.
    pub(crate) fn response(&self) -> Response<Body> {
        json(self.status, &serde_json::json!({ "message": self.message }))
    }
}

/// A streamed response body fed from a channel.
fn channel_body(
    status: StatusCode,
    content_type: &str,
) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, Response<Body>) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let stream = ReceiverStream::new(rx).map(|r| r.map(Frame::data));
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    (tx, r)
}

/// The sending end of a stream of JSON messages (`{"stream": ...}`, `{"status": ...}`, `{"aux": ...}`,
/// `{"errorDetail": ..., "error": ...}`).
#[derive(Clone)]
pub(crate) struct JsonStream {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl JsonStream {
    /// A 200 response whose body is the stream.
    pub(crate) fn start() -> (JsonStream, Response<Body>) {
        let (tx, r) = channel_body(StatusCode::OK, "application/json");
        (JsonStream { tx }, r)
    }

    /// Sends one message; false once the client has gone.
    pub(crate) async fn send(&self, v: Value) -> bool {
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.extend_from_slice(b"\r\n");
        self.tx.send(Ok(Bytes::from(b))).await.is_ok()
    }

    /// `{"stream": text}`: build output, shown as it is.
    pub(crate) async fn stream(&self, text: impl Into<String>) -> bool {
        self.send(serde_json::json!({ "stream": text.into() })).await
    }

    /// `{"status": text}`, optionally for one layer or tag (`id`).
    pub(crate) async fn status(&self, text: &str, id: Option<&str>) -> bool {
        let mut v = serde_json::json!({ "status": text });
        if let Some(id) = id {
            v["id"] = Value::String(id.to_string());
            v["progressDetail"] = serde_json::json!({});
        }
        self.send(v).await
    }

    /// The message that ends a failed operation: clients raise it (docker-py's `BuildError`, the CLI's
    /// non-zero exit).
    pub(crate) async fn error(&self, message: &str) -> bool {
        self.send(serde_json::json!({ "errorDetail": { "message": message }, "error": message })).await
    }

    /// Resolves when the client has gone (the response body was dropped).
    pub(crate) async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The sending end of a raw byte stream (an archive), written from a blocking thread.
pub(crate) struct ByteStream {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl ByteStream {
    pub(crate) fn start(content_type: &str) -> (ByteStream, Response<Body>) {
        let (tx, r) = channel_body(StatusCode::OK, content_type);
        (ByteStream { tx }, r)
    }

    /// Aborts the response: the client sees the connection fail, never a short archive that looks whole.
    pub(crate) fn fail(&self, message: String) {
        let _ = self.tx.blocking_send(Err(std::io::Error::other(message)));
    }
}

impl std::io::Write for ByteStream {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for part in data.chunks(1 << 20) {
            self.tx
                .blocking_send(Ok(Bytes::copy_from_slice(part)))
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A request's query string, decoded (`t` and `names` may repeat).
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Query {
        Query(form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }

    /// The last value of `key` (dockerd's `FormValue` takes the first; clients send one).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` unless it is missing or empty.
    pub(crate) fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// A boolean parameter: `1`/`true`/`yes` or `0`/`false`/`no`/`none`/empty (any case), as clients
    /// spell them (docker-py sends `True`); anything else is refused rather than guessed.
    pub(crate) fn bool(&self, key: &str) -> Result<bool, ApiError> {
        let Some(v) = self.get(key) else { return Ok(false) };
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "0" | "false" | "no" | "none" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            _ => Err(ApiError::bad_request(format!("invalid value for {key}: {v:?} is not a boolean (use 1 or 0)"))),
        }
    }

    /// A JSON-valued parameter (`buildargs`, `labels`, `filters`, `cachefrom`).
    pub(crate) fn json(&self, key: &str) -> Result<Option<Value>, ApiError> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => serde_json::from_str(v)
                .map(Some)
                .map_err(|e| ApiError::bad_request(format!("invalid value for {key}: not JSON ({e}): {v}"))),
        }
    }

    /// A JSON object of strings (`buildargs`, `labels`); `null` values (a build arg named without a value
    /// the client could find) are left out, as dockerd leaves them unset.
    pub(crate) fn string_map(&self, key: &str) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
        let mut out = std::collections::BTreeMap::new();
        match self.json(key)? {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k, s);
                        }
                        Value::Null => {}
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "invalid value for {key}: {k} must be a string, not {other}"
                            )))
                        }
                    }
                }
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for {key}: expected a JSON object of strings, not {other}"
                )))
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_repeat_and_refuse_what_they_cannot_read() {
        let q = Query::parse(Some(
            "t=a%3A1&t=b&nocache=True&rm=0&buildargs=%7B%22V%22%3A%221%22%2C%22N%22%3Anull%7D&x=maybe",
        ));
        assert_eq!(q.all("t"), vec!["a:1", "b"]);
        assert!(q.bool("nocache").unwrap());
        assert!(!q.bool("rm").unwrap());
        assert!(!q.bool("absent").unwrap());
        let e = q.bool("x").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("x") && e.message.contains("maybe"), "{}", e.message);
        let args = q.string_map("buildargs").unwrap();
        assert_eq!(args.into_iter().collect::<Vec<_>>(), vec![("V".to_string(), "1".to_string())]);
        let bad = Query::parse(Some("labels=%5B1%5D"));
        assert!(bad.string_map("labels").unwrap_err().message.contains("labels"));
        let bad = Query::parse(Some("labels=%7Bx"));
        assert!(bad.string_map("labels").unwrap_err().message.contains("not JSON"));
    }
}
