//! The instant `_bulk` endpoint: an HTTP server that answers at once, so
//! that the ingestor is the only limit, yet honestly. It parses each `_bulk`
//! body line by line (action line, then the source line, which must be JSON),
//! answers one item per action with Elasticsearch's fields (`created` 201 the
//! first time an `_id` is written to an index, `updated` 200 with the next
//! `_version` afterwards, 409 for a `create` of an existing `_id`, 400 for a
//! source line that is not JSON), honours a simple `filter_path`, accepts
//! `Content-Encoding: gzip` bodies, and counts distinct `_id`s, so the
//! harness checks completion instead of assuming it.
//!
//! It also answers what logingest calls besides `_bulk` (`PUT
//! _index_template/<name>`, `GET /`, `PUT <index>`, `_refresh`); anything
//! else gets a 404 and is listed in the stats.
//!
//! `GET /_bench/stats` returns the counters as JSON (see [`Stats`]). Runs as
//! a process of its own (environment: `BENCH_PORT`, 0 for any;
//! `BENCH_ENDPOINT_THREADS`, default 2; `BENCH_SAMPLE`, a file to write the
//! first two documents received into) and prints `LISTEN <port>`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

use super::floor::now_ns;

/// The endpoint's counters, as `GET /_bench/stats` returns them.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// Every HTTP request.
    pub requests: u64,
    /// `_bulk` requests.
    pub bulk_requests: u64,
    /// `_bulk` requests with a gzip body.
    pub gzip_requests: u64,
    /// Action lines received (documents, counting rewrites).
    pub docs: u64,
    /// Distinct (index, `_id`) written.
    pub distinct: u64,
    /// Writes of an `_id` already written (redeliveries).
    pub rewrites: u64,
    /// Items answered with an error (source not JSON, create conflict...).
    pub item_errors: u64,
    /// `_bulk` bodies refused as a whole (malformed action line).
    pub malformed_requests: u64,
    /// `_bulk` body bytes as received (compressed when gzip).
    pub wire_bytes: u64,
    /// `_bulk` body bytes after decompression.
    pub body_bytes: u64,
    /// When the first document arrived (Unix ns; 0 before).
    pub first_doc_ns: u64,
    /// Documents in the request that brought the first one.
    pub first_request_docs: u64,
    /// When the last new `_id` arrived (Unix ns).
    pub last_new_ns: u64,
    /// Requests this endpoint does not know (`METHOD path`, first 20).
    pub unknown: Vec<String>,
}

#[derive(Default)]
struct State {
    stats: Stats,
    /// index → `_id` prefix → partition → version by offset, for ids of
    /// logingest's form `<topic>-<partition>-<offset>`.
    versions: HashMap<String, HashMap<String, Vec<Vec<u8>>>>,
    /// Any other (index, `_id`).
    other: HashMap<(String, String), u8>,
    seq_no: u64,
    auto_id: u64,
}

impl State {
    /// The version slot of (index, id).
    fn slot(&mut self, index: &str, id: &str) -> &mut u8 {
        if let Some((prefix, partition, offset)) = split_id(id) {
            // Look up by &str first: no String per document.
            if !self.versions.contains_key(index) {
                self.versions.insert(index.to_string(), HashMap::new());
            }
            let by_prefix = self.versions.get_mut(index).expect("inserted above");
            if !by_prefix.contains_key(prefix) {
                by_prefix.insert(prefix.to_string(), Vec::new());
            }
            let partitions = by_prefix.get_mut(prefix).expect("inserted above");
            if partitions.len() <= partition {
                partitions.resize_with(partition + 1, Vec::new);
            }
            let offsets = &mut partitions[partition];
            if offsets.len() <= offset {
                offsets.resize((offset + 1).max(offsets.len() * 2), 0);
            }
            &mut offsets[offset]
        } else {
            self.other
                .entry((index.to_string(), id.to_string()))
                .or_insert(0)
        }
    }
}

/// `<prefix>-<partition>-<offset>` with a small partition and a sane offset.
fn split_id(id: &str) -> Option<(&str, usize, usize)> {
    let (rest, offset) = id.rsplit_once('-')?;
    let (prefix, partition) = rest.rsplit_once('-')?;
    let offset: usize = offset.parse().ok()?;
    let partition: usize = partition.parse().ok()?;
    (partition < 100_000 && offset < 1 << 32).then_some((prefix, partition, offset))
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ActionLine<'a> {
    Index(#[serde(borrow)] Meta<'a>),
    Create(#[serde(borrow)] Meta<'a>),
    Update(#[serde(borrow)] Meta<'a>),
    Delete(#[serde(borrow)] Meta<'a>),
}

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(rename = "_index", borrow, default)]
    index: Option<Cow<'a, str>>,
    #[serde(rename = "_id", borrow, default)]
    id: Option<Cow<'a, str>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Index,
    Create,
    Update,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Index => "index",
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

struct Action<'a> {
    op: Op,
    index: Option<Cow<'a, str>>,
    id: Option<Cow<'a, str>>,
    /// The source line is JSON (always true for delete).
    source_ok: bool,
}

struct Item<'a> {
    op: Op,
    index: Cow<'a, str>,
    id: Cow<'a, str>,
    status: u16,
    version: u8,
    seq_no: u64,
    result: &'static str,
    error: Option<(&'static str, String)>,
}

/// Which parts of the reply `filter_path` keeps.
#[derive(Clone, Copy)]
struct Filter {
    took: bool,
    errors: bool,
    /// Bit per item field (`FIELDS`); 0: no items.
    items: u16,
}

const FIELDS: [&str; 9] = [
    "_index",
    "_id",
    "_version",
    "result",
    "_shards",
    "_seq_no",
    "_primary_term",
    "status",
    "error",
];

impl Filter {
    const ALL: Filter = Filter {
        took: true,
        errors: true,
        items: u16::MAX,
    };

    fn from_query(query: Option<&str>) -> Filter {
        let Some(value) =
            query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("filter_path=")))
        else {
            return Filter::ALL;
        };
        let value = value
            .replace("%2C", ",")
            .replace("%2c", ",")
            .replace("%2A", "*")
            .replace("%2a", "*");
        let mut f = Filter {
            took: false,
            errors: false,
            items: 0,
        };
        for path in value.split(',') {
            match path {
                "took" => f.took = true,
                "errors" => f.errors = true,
                "items" | "items.*" | "items.**" => f.items = u16::MAX,
                p => {
                    if let Some(field) = p.strip_prefix("items.*.") {
                        if let Some(bit) = FIELDS.iter().position(|n| *n == field) {
                            f.items |= 1 << bit;
                        }
                    }
                }
            }
        }
        f
    }

    fn has(self, field: &str) -> bool {
        FIELDS
            .iter()
            .position(|n| *n == field)
            .is_some_and(|bit| self.items & (1 << bit) != 0)
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Parses a `_bulk` body; `Err(line number)` for a malformed action line.
fn parse(body: &[u8]) -> Result<Vec<Action<'_>>, usize> {
    let mut actions = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    while let Some((n, line)) = lines.next() {
        let action: ActionLine<'_> = serde_json::from_slice(line).map_err(|_| n + 1)?;
        let (op, meta) = match action {
            ActionLine::Index(m) => (Op::Index, m),
            ActionLine::Create(m) => (Op::Create, m),
            ActionLine::Update(m) => (Op::Update, m),
            ActionLine::Delete(m) => (Op::Delete, m),
        };
        let source_ok = if op == Op::Delete {
            true
        } else {
            match lines.next() {
                Some((_, source)) => {
                    serde_json::from_slice::<serde::de::IgnoredAny>(source).is_ok()
                }
                None => return Err(n + 2),
            }
        };
        actions.push(Action {
            op,
            index: meta.index,
            id: meta.id,
            source_ok,
        });
    }
    Ok(actions)
}

fn bulk(
    state: &Mutex<State>,
    path_index: Option<&str>,
    filter: Filter,
    wire: &[u8],
    gzip: bool,
) -> (StatusCode, Vec<u8>) {
    let started = Instant::now();
    let decoded;
    let body: &[u8] = if gzip {
        let mut out = Vec::with_capacity(wire.len() * 8);
        if flate2::read::GzDecoder::new(wire)
            .read_to_end(&mut out)
            .is_err()
        {
            return error_reply(
                400,
                "parse_exception",
                "request body is not valid gzip".into(),
            );
        }
        decoded = out;
        &decoded
    } else {
        wire
    };
    let parsed = parse(body);
    let mut items = Vec::new();
    {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        s.stats.bulk_requests += 1;
        s.stats.wire_bytes += wire.len() as u64;
        s.stats.body_bytes += body.len() as u64;
        s.stats.gzip_requests += u64::from(gzip);
        let actions = match parsed {
            Ok(a) => a,
            Err(line) => {
                s.stats.malformed_requests += 1;
                drop(guard);
                return error_reply(
                    400,
                    "illegal_argument_exception",
                    format!("Malformed action/metadata line [{line}]"),
                );
            }
        };
        let now = now_ns();
        if s.stats.first_doc_ns == 0 && !actions.is_empty() {
            s.stats.first_doc_ns = now;
            s.stats.first_request_docs = actions.len() as u64;
            if let Ok(path) = std::env::var("BENCH_SAMPLE") {
                // The first two documents as received, to check their shape.
                let end = body
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .nth(3)
                    .map_or(body.len(), |(i, _)| i + 1);
                let _ = std::fs::write(path, &body[..end]);
            }
        }
        s.stats.docs += actions.len() as u64;
        items.reserve(actions.len());
        for a in actions {
            let index = match a
                .index
                .or_else(|| path_index.map(|p| Cow::Owned(p.to_string())))
            {
                Some(i) => i,
                None => {
                    items.push(Item {
                        op: a.op,
                        index: Cow::Borrowed(""),
                        id: a.id.unwrap_or_default(),
                        status: 400,
                        version: 0,
                        seq_no: 0,
                        result: "",
                        error: Some((
                            "action_request_validation_exception",
                            "index is missing".into(),
                        )),
                    });
                    continue;
                }
            };
            let id = match a.id {
                Some(id) => id,
                None => {
                    s.auto_id += 1;
                    Cow::Owned(format!("auto{:020}", s.auto_id))
                }
            };
            let mut item = Item {
                op: a.op,
                index,
                id,
                status: 0,
                version: 0,
                seq_no: 0,
                result: "",
                error: None,
            };
            let old = *s.slot(&item.index, &item.id);
            let write = match a.op {
                _ if !a.source_ok => {
                    item.status = 400;
                    item.error = Some((
                        "mapper_parsing_exception",
                        "failed to parse: the source line is not JSON".into(),
                    ));
                    false
                }
                Op::Create if old > 0 => {
                    item.status = 409;
                    item.error = Some((
                        "version_conflict_engine_exception",
                        format!("[{}]: version conflict, document already exists (current version [{old}])", item.id),
                    ));
                    false
                }
                Op::Update | Op::Delete if old == 0 => {
                    item.status = 404;
                    if a.op == Op::Update {
                        item.error = Some((
                            "document_missing_exception",
                            format!("[{}]: document missing", item.id),
                        ));
                    } else {
                        item.result = "not_found";
                    }
                    false
                }
                Op::Delete => {
                    item.status = 200;
                    item.result = "deleted";
                    item.version = old.saturating_add(1);
                    false
                }
                _ => true,
            };
            if write {
                let version = old.saturating_add(1);
                *s.slot(&item.index, &item.id) = version;
                item.version = version;
                if old == 0 {
                    s.stats.distinct += 1;
                    s.stats.last_new_ns = now;
                    item.status = 201;
                    item.result = "created";
                } else {
                    s.stats.rewrites += 1;
                    item.status = 200;
                    item.result = "updated";
                }
            }
            if item.error.is_some() {
                s.stats.item_errors += 1;
            } else {
                item.seq_no = s.seq_no;
                s.seq_no += 1;
            }
            items.push(item);
        }
    }
    let errors = items.iter().any(|i| i.error.is_some());
    let mut out = Vec::with_capacity(32 + items.len() * 200);
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    if filter.took {
        sep(&mut out);
        let _ = write!(out, "\"took\":{}", started.elapsed().as_millis());
    }
    if filter.errors {
        sep(&mut out);
        let _ = write!(out, "\"errors\":{errors}");
    }
    if filter.items != 0 {
        let mut any = false;
        let mut list = Vec::with_capacity(items.len() * 200);
        for item in &items {
            let start = list.len();
            if any {
                list.push(b',');
            }
            let _ = write!(list, "{{\"{}\":{{", item.op.name());
            let fields_start = list.len();
            let field = |list: &mut Vec<u8>, name: &str| -> bool {
                if !filter.has(name) {
                    return false;
                }
                if list.len() > fields_start {
                    list.push(b',');
                }
                let _ = write!(list, "\"{name}\":");
                true
            };
            if field(&mut list, "_index") {
                json_str(&mut list, &item.index);
            }
            if field(&mut list, "_id") {
                json_str(&mut list, &item.id);
            }
            match &item.error {
                None => {
                    if field(&mut list, "_version") {
                        let _ = write!(list, "{}", item.version);
                    }
                    if field(&mut list, "result") {
                        json_str(&mut list, item.result);
                    }
                    if field(&mut list, "_shards") {
                        list.extend_from_slice(b"{\"total\":1,\"successful\":1,\"failed\":0}");
                    }
                    if field(&mut list, "_seq_no") {
                        let _ = write!(list, "{}", item.seq_no);
                    }
                    if field(&mut list, "_primary_term") {
                        list.push(b'1');
                    }
                    if field(&mut list, "status") {
                        let _ = write!(list, "{}", item.status);
                    }
                }
                Some((kind, reason)) => {
                    if field(&mut list, "status") {
                        let _ = write!(list, "{}", item.status);
                    }
                    if field(&mut list, "error") {
                        let _ = write!(list, "{{\"type\":\"{kind}\",\"reason\":");
                        json_str(&mut list, reason);
                        list.extend_from_slice(b",\"index\":");
                        json_str(&mut list, &item.index);
                        list.push(b'}');
                    }
                }
            }
            if list.len() == fields_start {
                // Elasticsearch drops objects that filter_path empties.
                list.truncate(start);
                continue;
            }
            list.extend_from_slice(b"}}");
            any = true;
        }
        if any {
            sep(&mut out);
            out.extend_from_slice(b"\"items\":[");
            out.extend_from_slice(&list);
            out.push(b']');
        }
    }
    out.push(b'}');
    (StatusCode::OK, out)
}

fn error_reply(status: u16, kind: &str, reason: String) -> (StatusCode, Vec<u8>) {
    let body = serde_json::json!({
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    });
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        body.to_string().into_bytes(),
    )
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    let gzip = request
        .headers()
        .get(hyper::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stats
        .requests += 1;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (status, reply) = match (&method, segments.as_slice()) {
        (&Method::POST | &Method::PUT, ["_bulk"]) => {
            bulk(&state, None, Filter::from_query(query.as_deref()), &body, gzip)
        }
        (&Method::POST | &Method::PUT, [index, "_bulk"]) => {
            bulk(&state, Some(index), Filter::from_query(query.as_deref()), &body, gzip)
        }
        (&Method::GET, ["_bench", "stats"]) => {
            let stats = state.lock().unwrap_or_else(|e| e.into_inner()).stats.clone();
            (StatusCode::OK, serde_json::to_vec(&stats).unwrap_or_default())
        }
        (&Method::PUT | &Method::POST, ["_index_template", _]) => {
            (StatusCode::OK, br#"{"acknowledged":true}"#.to_vec())
        }
        (&Method::GET | &Method::HEAD, []) => (
            StatusCode::OK,
            br#"{"name":"bench","cluster_name":"bench","cluster_uuid":"bench","version":{"number":"8.15.0","build_flavor":"default","lucene_version":"9.11.1","minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},"tagline":"You Know, for Search"}"#.to_vec(),
        ),
        (&Method::POST | &Method::GET, [_, "_refresh"] | ["_refresh"]) => (
            StatusCode::OK,
            br#"{"_shards":{"total":1,"successful":1,"failed":0}}"#.to_vec(),
        ),
        (&Method::PUT, [index]) if !index.starts_with('_') => (
            StatusCode::OK,
            format!(r#"{{"acknowledged":true,"shards_acknowledged":true,"index":{}}}"#, serde_json::Value::from(*index)).into_bytes(),
        ),
        _ => {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let what = format!("{method} {path}");
            if s.stats.unknown.len() < 20 && !s.stats.unknown.contains(&what) {
                s.stats.unknown.push(what);
            }
            drop(s);
            error_reply(404, "bench_unknown_route", format!("the benchmark endpoint does not serve {method} {path}"))
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(reply)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-elastic-product",
        hyper::header::HeaderValue::from_static("Elasticsearch"),
    );
    Ok(response)
}

/// Runs the endpoint (this process's only job).
pub fn main() {
    let port: u16 = std::env::var("BENCH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let threads: usize = std::env::var("BENCH_ENDPOINT_THREADS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        println!("LISTEN {}", listener.local_addr().expect("address").port());
        let state = Arc::new(Mutex::new(State::default()));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(request, state.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
