//! The `_bulk` call: one request body out, one typed [`Attempt`] back.
//!
//! It owns what every request shares: the [`NodePool`] (each request goes
//! to its next healthy node, and tells it how the node answered), the
//! concurrency [`Limiter`], optional gzip compression, the request metrics
//! and the sink's health for `/readyz`. The body is
//! handed to the transport as `Bytes`, so it is never copied again.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use elasticsearch::http::Method;
use tracing::error;

use super::concurrency::{Limiter, Permit, Signal};
use super::nodes::{outcome_of_error, NodeOutcome, NodePool};
use super::reply::{self, ItemStatus};
use super::retry::{Attempt, RequestError};
use crate::config::Compression;
use crate::metrics::{BulkOutcome, Metrics};

/// The fields of a `_bulk` reply logingest reads (`filter_path`): the
/// cluster leaves the rest (`_shards`, `_seq_no`, `result`...) out, which
/// makes replies several times smaller to send and to parse.
pub const BULK_REPLY_FIELDS: &str = "errors,items.*._id,items.*.status,items.*.error";

/// Bodies larger than this are compressed on the blocking pool; smaller
/// ones take less time to compress than a hand-off is worth.
pub const GZIP_OFF_WORKER: usize = 64 << 10;

/// How far the sink is from healthy, for `/readyz`: when the last `_bulk`
/// request succeeded, since when every request has failed, and since when
/// the oldest dead letter still undelivered has been waiting for its
/// destination (a partition cannot move past it meanwhile).
#[derive(Debug, Default)]
pub struct SinkHealth {
    /// Unix ms of the last request that got a bulk reply (0: none yet).
    last_success_ms: AtomicU64,
    /// Unix ms of the first failure after the last success (0: none).
    failing_since_ms: AtomicU64,
    /// Dead letters waiting for their destination: registration number →
    /// Unix ms of their first failed delivery. Numbers grow with time, so
    /// the first entry waits longest.
    letters_waiting: Mutex<BTreeMap<u64, u64>>,
    next_letter: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl SinkHealth {
    fn success(&self) {
        self.last_success_ms.store(now_ms(), Ordering::Relaxed);
        self.failing_since_ms.store(0, Ordering::Relaxed);
    }

    fn failure(&self) {
        let _ = self.failing_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// How long every `_bulk` request has been failing (`None` when the
    /// last one succeeded or none was sent).
    pub fn failing_for(&self) -> Option<Duration> {
        let since = self.failing_since_ms.load(Ordering::Relaxed);
        (since > 0).then(|| Duration::from_millis(now_ms().saturating_sub(since)))
    }

    /// Records that a dead letter failed to be delivered and waits; it
    /// counts until the returned guard is dropped (delivered, given up, or
    /// its chunk abandoned).
    pub fn letter_waiting(self: &Arc<Self>) -> WaitingLetter {
        let number = self.next_letter.fetch_add(1, Ordering::Relaxed);
        self.waiting().insert(number, now_ms());
        WaitingLetter {
            health: self.clone(),
            number,
        }
    }

    /// How long the oldest undelivered dead letter has been waiting
    /// (`None`: none waits).
    pub fn letters_waiting_for(&self) -> Option<Duration> {
        let since = self.waiting().first_key_value().map(|(_, since)| *since)?;
        Some(Duration::from_millis(now_ms().saturating_sub(since)))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        // The map stays consistent even if a holder panicked: every
        // operation on it is a single insert or remove.
        self.letters_waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A dead letter counted as waiting by [`SinkHealth`] while this lives.
#[derive(Debug)]
pub struct WaitingLetter {
    health: Arc<SinkHealth>,
    number: u64,
}

impl Drop for WaitingLetter {
    fn drop(&mut self) {
        self.health.waiting().remove(&self.number);
    }
}

/// Sends `_bulk` requests.
#[derive(Clone)]
pub struct BulkService {
    nodes: NodePool,
    compression: Compression,
    limiter: Limiter,
    metrics: Metrics,
    health: Arc<SinkHealth>,
}

impl BulkService {
    /// A service over `nodes`.
    pub fn new(
        nodes: NodePool,
        compression: Compression,
        limiter: Limiter,
        metrics: Metrics,
        health: Arc<SinkHealth>,
    ) -> Self {
        Self {
            nodes,
            compression,
            limiter,
            metrics,
            health,
        }
    }

    /// The concurrency limiter (the batcher waits on it before sending).
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Sends one request of `sent` documents holding `permit`, and reads the
    /// reply; `expected_id` checks the `_id` each item names.
    pub async fn send(
        &self,
        permit: Permit,
        body: Bytes,
        sent: usize,
        expected_id: impl FnMut(usize, &str) -> bool,
    ) -> Attempt {
        let started = Instant::now();
        let attempt = self.call(body, sent, expected_id).await;
        let rtt = started.elapsed();
        self.metrics
            .bulk_request_duration
            .observe(rtt.as_secs_f64());
        self.metrics.bulk_documents.observe(sent as f64);
        let (outcome, signal) = match &attempt {
            Attempt::Items(items) => {
                let throttled = items.iter().any(
                    |i| matches!(i, ItemStatus::Retry(e) if e.status == 429 || e.status == 503),
                );
                let outcome = if items.iter().all(|i| *i == ItemStatus::Stored) {
                    BulkOutcome::Ok
                } else {
                    BulkOutcome::Partial
                };
                let signal = if throttled {
                    Signal::BackPressure
                } else {
                    Signal::Ok
                };
                (outcome, signal)
            }
            Attempt::TooLarge => (BulkOutcome::TooLarge, Signal::Neutral),
            Attempt::Failed(RequestError::Malformed(_)) => {
                (BulkOutcome::Malformed, Signal::Neutral)
            }
            Attempt::Failed(e) if e.is_back_pressure() => {
                (BulkOutcome::Error, Signal::BackPressure)
            }
            Attempt::Failed(_) => (BulkOutcome::Error, Signal::Neutral),
        };
        permit.finish(rtt, signal);
        self.metrics.bulk_request(outcome);
        match outcome {
            BulkOutcome::Ok | BulkOutcome::Partial | BulkOutcome::TooLarge => self.health.success(),
            BulkOutcome::Malformed | BulkOutcome::Error => self.health.failure(),
        }
        attempt
    }

    /// The body as sent, with its `Content-Encoding`. Gzip of a body of
    /// megabytes takes milliseconds of CPU: it runs on the blocking pool,
    /// not on a worker ([`crate::offload`]).
    async fn encode(&self, body: Bytes) -> Result<(Bytes, Option<&'static str>), RequestError> {
        let compression = self.compression;
        if compression == Compression::Gzip && body.len() > GZIP_OFF_WORKER {
            tokio::task::spawn_blocking(move || encode(compression, body))
                .await
                .unwrap_or_else(|e| Err(RequestError::Transport(format!("gzip: {e}"))))
        } else {
            encode(compression, body)
        }
    }

    async fn call(
        &self,
        body: Bytes,
        sent: usize,
        expected_id: impl FnMut(usize, &str) -> bool,
    ) -> Attempt {
        let (body, encoding) = match self.encode(body).await {
            Ok(encoded) => encoded,
            Err(e) => return Attempt::Failed(e),
        };
        self.metrics.bulk_bytes_sent.inc_by(body.len() as u64);
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if let Some(encoding) = encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        let node = self.nodes.pick();
        let response = node
            .client()
            .transport()
            .send(
                Method::Post,
                "/_bulk",
                headers,
                Some(&[("filter_path", BULK_REPLY_FIELDS)]),
                Some(body),
                None,
            )
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                self.nodes.record(&node, outcome_of_error(&e));
                return Attempt::Failed(RequestError::Transport(error_chain(&e)));
            }
        };
        let status = response.status_code();
        self.nodes
            .record(&node, NodeOutcome::Answered(status.as_u16()));
        let reply = match response.bytes().await {
            Ok(reply) => reply,
            Err(e) => return Attempt::Failed(RequestError::Unreadable(error_chain(&e))),
        };
        if status.is_success() {
            return match reply::parse(&reply, sent, expected_id) {
                Ok(items) => Attempt::Items(items),
                Err(e) => Attempt::Failed(RequestError::Malformed(e)),
            };
        }
        if status.as_u16() == 413 {
            return Attempt::TooLarge;
        }
        let text = String::from_utf8_lossy(&reply[..reply.len().min(512)]).into_owned();
        if matches!(status.as_u16(), 401 | 403) {
            error!(status = status.as_u16(), reply = %text, "Elasticsearch refused the credentials; retrying until they are fixed");
        }
        Attempt::Failed(RequestError::Status {
            status: status.as_u16(),
            body: text,
        })
    }
}

/// An error with its sources, `a: b: c`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

/// Compresses `body` as `compression` says.
fn encode(
    compression: Compression,
    body: Bytes,
) -> Result<(Bytes, Option<&'static str>), RequestError> {
    match compression {
        Compression::None => Ok((body, None)),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            encoder
                .write_all(&body)
                .and_then(|()| encoder.finish())
                .map(|compressed| (Bytes::from(compressed), Some("gzip")))
                .map_err(|e| RequestError::Transport(format!("gzip: {e}")))
        }
    }
}
