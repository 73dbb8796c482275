//! The Elasticsearch sink: sends [`Batch`]es with `_bulk` until every
//! document is either stored or rejected for good.
//!
//! * Request failures (connection errors, 429, 5xx, auth errors) are retried
//!   with exponential backoff and jitter, without limit: the caller decides
//!   when to give up by dropping the future (shutdown or drain deadline), and
//!   nothing given up is ever acknowledged.
//! * Item failures are classified ([`bulk::classify`]): retryable items are
//!   sent again alone; rejected items are retried up to
//!   `elasticsearch.max_item_attempts`, then reported in the outcome.
//! * A 413 (request too large) halves the number of documents per request.
//! * A process-wide semaphore bounds the requests in flight.

pub mod batch;
pub mod bulk;
pub mod client;
pub mod dead_letter;
pub mod template;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use elasticsearch::{BulkParts, Elasticsearch};
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

pub use batch::Batch;
use bulk::ItemOutcome;

use crate::backoff::Backoff;
use crate::config::{ElasticsearchConfig, RetryConfig};
use crate::metrics::{Metrics, OutcomeLabel};

/// A document Elasticsearch refused for good.
#[derive(Debug, Clone)]
pub struct RejectedDocument {
    /// Its Kafka offset.
    pub offset: i64,
    /// Elasticsearch's reason (status, error type and message).
    pub reason: String,
}

/// What became of a batch once the sink is done with it.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Documents stored.
    pub delivered: usize,
    /// Documents refused for good.
    pub rejected: Vec<RejectedDocument>,
}

/// Sends batches to Elasticsearch. Shared by every partition task.
pub struct Sink {
    client: Elasticsearch,
    permits: Semaphore,
    retry: RetryConfig,
    max_item_attempts: u32,
    metrics: Metrics,
}

enum Attempt {
    /// The reply classified each document sent.
    Items(Vec<ItemOutcome>),
    /// The request as a whole must be tried again.
    Retry(String),
    /// The request was too large.
    TooLarge,
}

impl Sink {
    /// A sink over an Elasticsearch client.
    pub fn new(
        client: Elasticsearch,
        config: &ElasticsearchConfig,
        retry: RetryConfig,
        max_in_flight: usize,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            permits: Semaphore::new(max_in_flight),
            retry,
            max_item_attempts: config.max_item_attempts,
            metrics,
        }
    }

    /// Sends `batch` until each document is stored or rejected for good.
    ///
    /// Never fails: it retries for as long as it is polled. Drop the future
    /// to give up; then none of the batch counts as delivered.
    pub async fn send(&self, batch: &Batch) -> BatchOutcome {
        let topic = batch.topic();
        let mut outcome = BatchOutcome::default();
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut attempts = vec![0u32; batch.len()];
        let mut chunk = pending.len().max(1);
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        while !pending.is_empty() {
            let sending: Vec<usize> = pending.iter().copied().take(chunk).collect();
            let body = if sending.len() == batch.len() {
                Bytes::copy_from_slice(batch.body())
            } else {
                Bytes::from(batch.body_of(&sending))
            };
            let result = self.attempt(body, sending.len()).await;
            let retry_reason = match result {
                Attempt::Items(items) => {
                    let mut still = Vec::new();
                    let mut retry_reason = None;
                    for (&position, item) in sending.iter().zip(items) {
                        match item {
                            ItemOutcome::Delivered => outcome.delivered += 1,
                            ItemOutcome::Retry(reason) => {
                                self.metrics
                                    .documents_retried
                                    .get_or_create(&Metrics::topic(topic))
                                    .inc();
                                retry_reason.get_or_insert(reason);
                                still.push(position);
                            }
                            ItemOutcome::Rejected(reason) => {
                                attempts[position] += 1;
                                if attempts[position] >= self.max_item_attempts {
                                    outcome.rejected.push(RejectedDocument {
                                        offset: batch.offset_at(position),
                                        reason,
                                    });
                                } else {
                                    retry_reason.get_or_insert(reason);
                                    still.push(position);
                                }
                            }
                        }
                    }
                    still.extend(pending.iter().copied().skip(sending.len()));
                    pending = still;
                    if retry_reason.is_none() {
                        backoff.reset();
                    }
                    retry_reason
                }
                Attempt::TooLarge if sending.len() > 1 => {
                    chunk = sending.len().div_ceil(2);
                    debug!(topic = %topic, chunk, "bulk request too large; sending fewer documents per request");
                    continue;
                }
                Attempt::TooLarge => {
                    let position = sending[0];
                    outcome.rejected.push(RejectedDocument {
                        offset: batch.offset_at(position),
                        reason: "413 request entity too large: the document alone exceeds the cluster's request limit".into(),
                    });
                    pending.retain(|&p| p != position);
                    None
                }
                Attempt::Retry(reason) => Some(reason),
            };
            if let Some(reason) = retry_reason {
                let delay = backoff.next_delay();
                warn!(
                    topic = %topic,
                    partition = batch.partition(),
                    pending = pending.len(),
                    attempt = backoff.attempts(),
                    retry_in = ?delay,
                    reason = %reason,
                    "bulk request not fully delivered; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
        let label = Metrics::topic(topic);
        self.metrics
            .documents_indexed
            .get_or_create(&label)
            .inc_by(outcome.delivered as u64);
        if !outcome.rejected.is_empty() {
            self.metrics
                .documents_failed
                .get_or_create(&label)
                .inc_by(outcome.rejected.len() as u64);
        }
        outcome
    }

    async fn attempt(&self, body: Bytes, sent: usize) -> Attempt {
        let Ok(_permit) = self.permits.acquire().await else {
            return Attempt::Retry("sink closed".into());
        };
        let started = Instant::now();
        let response = self
            .client
            .bulk(BulkParts::None)
            .body(vec![body])
            .send()
            .await;
        let outcome = match response {
            Err(e) => Attempt::Retry(format!("request failed: {e}")),
            Ok(response) => {
                let status = response.status_code();
                match response.bytes().await {
                    Err(e) => Attempt::Retry(format!("reading the reply failed: {e}")),
                    Ok(reply) if status.is_success() => match bulk::classify(&reply, sent) {
                        Ok(items) => Attempt::Items(items),
                        Err(e) => Attempt::Retry(e.to_string()),
                    },
                    Ok(_) if status.as_u16() == 413 => Attempt::TooLarge,
                    Ok(reply) => {
                        let text =
                            String::from_utf8_lossy(&reply[..reply.len().min(512)]).into_owned();
                        if matches!(status.as_u16(), 401 | 403) {
                            error!(status = status.as_u16(), reply = %text, "Elasticsearch refused the credentials; retrying until they are fixed");
                        }
                        Attempt::Retry(format!("HTTP {status}: {text}"))
                    }
                }
            }
        };
        self.metrics
            .bulk_request_duration
            .observe(started.elapsed().as_secs_f64());
        let label = match &outcome {
            Attempt::Items(items) if items.iter().all(|i| *i == ItemOutcome::Delivered) => "ok",
            Attempt::Items(_) => "partial",
            Attempt::TooLarge => "too_large",
            Attempt::Retry(_) => "error",
        };
        self.metrics
            .bulk_requests
            .get_or_create(&OutcomeLabel { outcome: label })
            .inc();
        outcome
    }
}

/// Shared handle to the sink.
pub type SharedSink = Arc<Sink>;
