//! A fault-injecting HTTP proxy between logingest and osmem-server, so tests
//! can make Elasticsearch slow, failing or gone.
//!
//! Faults take effect synchronously: once [`FaultProxy::set`] returns,
//! requests arriving (and, for `Down`, connections attempted) see the new
//! fault. Switching to `Reset` or `Down` also closes idle keep-alive
//! connections (in-flight requests finish first), so a pooling client really
//! sees the fault.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to the requests arriving from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    None,
    /// Wait this long before forwarding each request.
    Delay(Duration),
    /// Answer every request with this HTTP status and a small JSON error
    /// body, without forwarding.
    Status(u16),
    /// `_bulk` requests are not forwarded but answered 200 with every item
    /// rejected with status 429 (`es_rejected_execution_exception`); other
    /// requests are forwarded.
    BulkItems429,
    /// `_bulk` requests are not forwarded but answered 200 with this body
    /// (`{}`, an HTML page...): a reply that is not a bulk reply.
    BulkReply200(String),
    /// `_bulk` requests are forwarded (so the documents ARE stored), but the
    /// reply is cut to half its length: it must not count as an
    /// acknowledgement.
    TruncateBulkReply,
    /// `_bulk` requests are forwarded, and the last item of the reply is
    /// removed: one item short.
    DropLastBulkItem,
    /// `_bulk` requests are forwarded without the document `id` of `index`
    /// (so the others ARE stored and it is not), and its item is put back
    /// into the reply, at its place, answered 503
    /// (`unavailable_shards_exception`): a document the cluster fails on
    /// every time, as an ingest pipeline's 5xx would. Writes of that `_id`
    /// to other indices (a dead-letter index) pass. Plain (not gzip)
    /// bodies only; a gzip body is forwarded unchanged.
    BulkItem503 {
        /// The document's index.
        index: String,
        /// Its `_id`.
        id: String,
    },
    /// `_bulk` requests whose body is larger than this many bytes are
    /// answered 413 without forwarding; smaller ones are forwarded.
    RequestLimit(usize),
    /// At most this many `_bulk` requests are forwarded at once; one more
    /// arriving meanwhile is answered 429 (a cluster at its capacity).
    Capacity(u64),
    /// `_bulk` requests are forwarded (so the documents ARE stored), but
    /// every item whose `_id` starts with this prefix (`<topic>-<partition>-`:
    /// one partition's documents) is answered 503 in the reply: a document
    /// that is retried forever, its partition stuck while others flow.
    BulkItems503ForIdPrefix(String),
    /// Accept TCP connections and close them at once without answering.
    Reset,
    /// Stop listening (connections refused) until another fault is set; then
    /// listen again on the same port.
    Down,
    /// Requests naming this index (in the path, or in a `_bulk` action
    /// line's `_index`) are answered with this HTTP status and a small JSON
    /// error body, without forwarding (an index the credentials cannot
    /// write, a failing shard); other requests are forwarded.
    IndexStatus(String, u16),
    /// `GET /_nodes/http` is answered, without forwarding, as Elasticsearch
    /// would for a cluster whose nodes publish these HTTP addresses
    /// (`host:port`); other requests are forwarded. osmem-server answers
    /// `_nodes/http` with its own address only: this makes proxies in front
    /// of it stand for a cluster of several nodes.
    NodesHttp(Vec<String>),
}

impl Fault {
    /// Whether connections are closed without an answer.
    fn closes_connections(&self) -> bool {
        matches!(self, Fault::Reset | Fault::Down)
    }
}

type ProxyResponse = Response<Full<Bytes>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Shared {
    upstream: String,
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    /// The listening socket; `None` while `Down`. Behind a mutex so that
    /// `set` can close and reopen it synchronously.
    listener: Mutex<Option<TcpListener>>,
    runtime: tokio::runtime::Handle,
    client: reqwest::Client,
    requests: AtomicU64,
    bulk_forwarded: AtomicU64,
    bulk_in_flight: AtomicU64,
    refused_429: AtomicU64,
    index_faulted: AtomicU64,
    items_503: AtomicU64,
}

impl Shared {
    fn fault(&self) -> Fault {
        self.fault.borrow().clone()
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        match self.listener.lock().unwrap().as_ref() {
            Some(listener) => listener.poll_accept(cx),
            // Woken by the fault watch when listening resumes.
            None => Poll::Pending,
        }
    }

    /// Binds the port again (it was ours a moment ago; retries briefly in
    /// case the kernel has not released it yet).
    fn bind_again(&self) -> TcpListener {
        let start = Instant::now();
        let listener = loop {
            // std sets SO_REUSEADDR on Unix, so closed connections in
            // TIME_WAIT do not block the port.
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(_) if start.elapsed() < Duration::from_secs(2) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("fault proxy cannot listen again on {}: {e}", self.addr),
            }
        };
        listener.set_nonblocking(true).expect("set_nonblocking");
        let _guard = self.runtime.enter();
        TcpListener::from_std(listener).expect("register listener")
    }
}

/// A fault-injecting HTTP proxy on a free 127.0.0.1 port. Dropping it stops
/// the proxy and closes its connections.
pub struct FaultProxy {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts on a free 127.0.0.1 port, forwarding to `upstream` (e.g.
    /// "http://127.0.0.1:9200").
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fault proxy bind");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            addr,
            fault: watch::Sender::new(Fault::None),
            listener: Mutex::new(Some(listener)),
            runtime: tokio::runtime::Handle::current(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("reqwest client"),
            requests: AtomicU64::new(0),
            bulk_forwarded: AtomicU64::new(0),
            bulk_in_flight: AtomicU64::new(0),
            refused_429: AtomicU64::new(0),
            index_faulted: AtomicU64::new(0),
            items_503: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(shared.clone()));
        FaultProxy { shared, task }
    }

    /// "http://127.0.0.1:PORT"
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Changes the fault for requests arriving from now on.
    pub fn set(&self, fault: Fault) {
        if let Fault::Status(code) | Fault::IndexStatus(_, code) = fault {
            assert!(
                StatusCode::from_u16(code).is_ok(),
                "invalid HTTP status {code}"
            );
        }
        let down = fault == Fault::Down;
        let mut listener = self.shared.listener.lock().unwrap();
        if down {
            // Closed here, so connections are refused once `set` returns.
            *listener = None;
        } else if listener.is_none() {
            *listener = Some(self.shared.bind_again());
        }
        // Under the lock, so that the listener and the fault agree.
        self.shared.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        self.shared.fault()
    }

    /// Number of requests received (answered or forwarded, not counting
    /// connections closed by `Reset` or `Down`).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Number of `_bulk` requests forwarded to upstream that it answered
    /// with a 2xx status.
    pub fn bulk_forwarded(&self) -> u64 {
        self.shared.bulk_forwarded.load(Ordering::SeqCst)
    }

    /// Number of `_bulk` items answered 503 by [`Fault::BulkItem503`].
    pub fn items_503(&self) -> u64 {
        self.shared.items_503.load(Ordering::SeqCst)
    }

    /// Number of `_bulk` requests answered 429 by [`Fault::Capacity`].
    pub fn refused_429(&self) -> u64 {
        self.shared.refused_429.load(Ordering::SeqCst)
    }

    /// Number of requests answered by [`Fault::IndexStatus`].
    pub fn index_faulted(&self) -> u64 {
        self.shared.index_faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every
        // connection task.
        self.task.abort();
        *self.shared.listener.lock().unwrap() = None;
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut changes = shared.fault.subscribe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = poll_fn(|cx| shared.poll_accept(cx)) => match accepted {
                Ok((stream, _)) => {
                    if shared.fault().closes_connections() {
                        // Reset: close at once without reading or answering.
                        drop(stream);
                    } else {
                        connections.spawn(serve_connection(stream, shared.clone()));
                    }
                }
                // E.g. out of file descriptors: do not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next() => {}
            // A new fault: poll the (possibly new) listener again.
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let mut changes = shared.fault.subscribe();
    if changes.borrow_and_update().closes_connections() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let service_shared = shared.clone();
    let service = service_fn(move |request| handle(request, service_shared.clone()));
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = changes.changed(), if !closing => {
                if changed.is_err() {
                    return;
                }
                if changes.borrow_and_update().closes_connections() {
                    // Closes an idle connection now, a busy one after its
                    // current response.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<ProxyResponse, BoxError> {
    let fault = shared.fault();
    if fault.closes_connections() {
        // A request on a kept-alive connection: an error makes hyper close
        // the connection without answering.
        return Err("fault proxy: connection closed by fault".into());
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path().to_string();
    let is_bulk = path.rsplit('/').next() == Some("_bulk");
    match fault {
        Fault::Status(code) => Ok(status_response(code)),
        Fault::NodesHttp(addresses) if path == "/_nodes/http" => {
            let nodes: serde_json::Map<String, Value> = addresses
                .iter()
                .enumerate()
                .map(|(i, address)| {
                    let node = json!({
                        "name": format!("node-{i}"),
                        "roles": ["data", "ingest", "master"],
                        "http": {"bound_address": [address], "publish_address": address},
                    });
                    (format!("node-id-{i}"), node)
                })
                .collect();
            let total = addresses.len();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "_nodes": {"total": total, "successful": total, "failed": 0},
                    "cluster_name": "proxied",
                    "nodes": nodes,
                }),
            ))
        }
        Fault::BulkItems429 if is_bulk => Ok(bulk_items_429(&path, &body)),
        Fault::BulkReply200(reply) if is_bulk => {
            let mut response = Response::new(Full::new(Bytes::from(reply)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            Ok(response)
        }
        Fault::TruncateBulkReply if is_bulk => {
            let response = forward(&shared, parts, body, is_bulk).await;
            let (head, full) = response.into_parts();
            let full = full
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok(Response::from_parts(
                head,
                Full::new(full.slice(..full.len() / 2)),
            ))
        }
        Fault::DropLastBulkItem if is_bulk => {
            let response = forward(&shared, parts, body, is_bulk).await;
            let (head, full) = response.into_parts();
            let full = full
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut reply: Value = serde_json::from_slice(&full).unwrap_or_default();
            if let Some(items) = reply["items"].as_array_mut() {
                items.pop();
            }
            Ok(Response::from_parts(
                head,
                Full::new(Bytes::from(reply.to_string())),
            ))
        }
        Fault::BulkItem503 { index, id } if is_bulk && !is_gzip(&parts.headers) => {
            let (kept, failed) = split_bulk_body(&path, &body, &index, &id);
            if failed.is_empty() {
                return Ok(forward(&shared, parts, body, is_bulk).await);
            }
            let mut items: Vec<Value> = Vec::new();
            if !kept.is_empty() {
                let response = forward(&shared, parts, Bytes::from(kept), is_bulk).await;
                if !response.status().is_success() {
                    return Ok(response);
                }
                let (head, full) = response.into_parts();
                let full = full
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let reply: Value = serde_json::from_slice(&full).unwrap_or_default();
                match reply["items"].as_array() {
                    Some(forwarded) => items.clone_from(forwarded),
                    // Not a bulk reply: pass it on as it is.
                    None => return Ok(Response::from_parts(head, Full::new(full))),
                }
            }
            for (position, op) in failed {
                let item = json!({
                    "_index": index,
                    "_id": id,
                    "status": 503,
                    "error": {
                        "type": "unavailable_shards_exception",
                        "reason": "injected: primary shard is not active",
                    },
                });
                items.insert(position.min(items.len()), json!({ op: item }));
                shared.items_503.fetch_add(1, Ordering::SeqCst);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"took": 1, "errors": true, "items": items}),
            ))
        }
        Fault::BulkItems503ForIdPrefix(prefix) if is_bulk => {
            let response = forward(&shared, parts, body, is_bulk).await;
            let (head, full) = response.into_parts();
            let full = full
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut reply: Value = serde_json::from_slice(&full).unwrap_or_default();
            let mut rewritten = false;
            for item in reply["items"].as_array_mut().into_iter().flatten() {
                let Some(result) = item.as_object_mut().and_then(|o| o.values_mut().next()) else {
                    continue;
                };
                if result["_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(&prefix))
                {
                    result["status"] = json!(503);
                    result["error"] = json!({
                        "type": "unavailable_shards_exception",
                        "reason": "injected: primary shard is not active"
                    });
                    rewritten = true;
                }
            }
            if rewritten {
                reply["errors"] = json!(true);
            }
            Ok(Response::from_parts(
                head,
                Full::new(Bytes::from(reply.to_string())),
            ))
        }
        Fault::RequestLimit(limit) if is_bulk && body.len() > limit => Ok(error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request body of {} bytes is over the limit of {limit}",
                body.len()
            ),
        )),
        Fault::Capacity(limit) if is_bulk => {
            let before = shared.bulk_in_flight.fetch_add(1, Ordering::SeqCst);
            let response = if before >= limit {
                shared.refused_429.fetch_add(1, Ordering::SeqCst);
                error_response(StatusCode::TOO_MANY_REQUESTS, "injected capacity limit")
            } else {
                forward(&shared, parts, body, is_bulk).await
            };
            shared.bulk_in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(response)
        }
        Fault::IndexStatus(index, code) if names_index(&path, &body, &index) => {
            shared.index_faulted.fetch_add(1, Ordering::SeqCst);
            Ok(status_response(code))
        }
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Ok(forward(&shared, parts, body, is_bulk).await)
        }
        _ => Ok(forward(&shared, parts, body, is_bulk).await),
    }
}

fn is_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"))
}

/// Splits the body of a `_bulk` request to `path` into the body without the
/// actions on document `id` of `index` and, for each of those, its position
/// among the actions and its operation.
fn split_bulk_body(
    path: &str,
    body: &[u8],
    index: &str,
    id: &str,
) -> (Vec<u8>, Vec<(usize, String)>) {
    // `/{index}/_bulk` sets the default index.
    let default_index = path
        .trim_start_matches('/')
        .strip_suffix("_bulk")
        .map(|s| s.trim_end_matches('/'))
        .filter(|s| !s.is_empty());
    let mut kept = Vec::with_capacity(body.len());
    let mut failed = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace));
    let mut position = 0;
    while let Some(line) = lines.next() {
        let action: Option<(String, Value)> = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(action)) if action.len() == 1 => action.into_iter().next(),
            _ => None,
        };
        let source = match &action {
            Some((op, _)) if op == "delete" => None,
            _ => lines.next(),
        };
        match action {
            Some((op, meta))
                if meta.get("_id").and_then(Value::as_str) == Some(id)
                    && meta.get("_index").and_then(Value::as_str).or(default_index)
                        == Some(index) =>
            {
                failed.push((position, op));
            }
            _ => {
                for line in std::iter::once(line).chain(source) {
                    kept.extend_from_slice(line);
                    kept.push(b'\n');
                }
            }
        }
        position += 1;
    }
    (kept, failed)
}

/// Connection-specific headers, not forwarded in either direction
/// (content-length is recomputed).
fn is_hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-length"
    )
}

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

async fn forward(
    shared: &Shared,
    parts: hyper::http::request::Parts,
    body: Bytes,
    is_bulk: bool,
) -> ProxyResponse {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{path_and_query}", shared.upstream);
    let sent = shared
        .client
        .request(parts.method, url)
        .headers(end_to_end(&parts.headers))
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    };
    let status = upstream.status();
    let headers = end_to_end(upstream.headers());
    let body = match upstream.bytes().await {
        Ok(body) => body,
        Err(e) => return error_response(StatusCode::BAD_GATEWAY, &format!("upstream body: {e}")),
    };
    if is_bulk && status.is_success() {
        shared.bulk_forwarded.fetch_add(1, Ordering::SeqCst);
    }
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn json_response(status: StatusCode, body: &Value) -> ProxyResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

fn error_response(status: StatusCode, reason: &str) -> ProxyResponse {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "es_rejected_execution_exception"
    } else {
        "injected_fault"
    };
    let error = json!({"type": kind, "reason": reason});
    json_response(
        status,
        &json!({"error": {"root_cause": [error.clone()], "type": kind, "reason": reason}, "status": status.as_u16()}),
    )
}

/// Whether a request is about `index`: its path starts with it, or it is a
/// `_bulk` request with an action line whose `_index` is it.
fn names_index(path: &str, body: &[u8], index: &str) -> bool {
    if path.trim_start_matches('/').split('/').next() == Some(index) {
        return true;
    }
    if path.rsplit('/').next() != Some("_bulk") {
        return false;
    }
    body.split(|b| *b == b'\n')
        .any(|line| match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(action)) if action.len() == 1 => action
                .values()
                .next()
                .and_then(|meta| meta.get("_index"))
                .is_some_and(|i| i == index),
            _ => false,
        })
}

fn status_response(code: u16) -> ProxyResponse {
    let status = StatusCode::from_u16(code).expect("checked by set");
    error_response(status, &format!("injected status {code}"))
}

/// The reply of a `_bulk` request whose every item is rejected with 429:
/// one item per action line (an action line is followed by its source line,
/// except for `delete`), named after the action as Elasticsearch does.
fn bulk_items_429(path: &str, body: &[u8]) -> ProxyResponse {
    // `/{index}/_bulk` sets the default index.
    let default_index = path
        .trim_start_matches('/')
        .strip_suffix("_bulk")
        .map(|s| s.trim_end_matches('/'))
        .filter(|s| !s.is_empty());
    let mut lines = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace));
    let mut items = Vec::new();
    while let Some(line) = lines.next() {
        let action = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(action)) if action.len() == 1 => action,
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "malformed action/metadata line in _bulk body",
                )
            }
        };
        let (op, meta) = action.into_iter().next().expect("one key");
        if op != "delete" {
            lines.next();
        }
        let mut item = json!({
            "status": 429,
            "error": {"type": "es_rejected_execution_exception", "reason": "injected"},
        });
        let index = meta
            .get("_index")
            .cloned()
            .or_else(|| default_index.map(|i| Value::String(i.to_string())));
        if let Some(index) = index {
            item["_index"] = index;
        }
        if let Some(id) = meta.get("_id") {
            item["_id"] = id.clone();
        }
        items.push(json!({ op: item }));
    }
    json_response(
        StatusCode::OK,
        &json!({"took": 1, "errors": true, "items": items}),
    )
}
