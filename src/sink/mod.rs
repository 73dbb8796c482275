//! The Elasticsearch sink, one module per stage:
//!
//! 1. [`encoder`]: a document into its two `_bulk` lines, appended to a
//!    partition's [`chunk`] (the unit of acknowledgement);
//! 2. [`batcher`]: chunks of many partitions packed into shared requests;
//! 3. [`request`]: the request body, built once as `Bytes` (and, for a
//!    retry of some documents, from just their lines);
//! 4. [`service`]: the HTTP call, with the [`concurrency`] limiter (adaptive
//!    request concurrency), optional gzip, metrics and health;
//! 5. [`reply`]: the strict reading of the `_bulk` reply;
//! 6. [`retry`]: the pure policy deciding each document's fate;
//! 7. [`driver`]: one request driven to its end, answering each chunk;
//! 8. [`dead_letter`]: where documents rejected for good go.
//!
//! Plus [`template`] (index templates installed before a topic's first
//! document), [`client`] (the Elasticsearch clients from the config) and
//! [`nodes`] (the nodes requests are spread over, and their health).
//!
//! A partition task only ever calls [`Sink::submit`] and awaits the chunk's
//! answer; everything after that is the sink's.

pub mod batcher;
pub mod chunk;
pub mod client;
pub mod concurrency;
pub mod dead_letter;
pub mod driver;
pub mod encoder;
pub mod nodes;
pub mod reply;
pub mod request;
pub mod retry;
pub mod service;
pub mod sniff;
pub mod template;

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::config::{BatchConfig, ElasticsearchConfig, RetryConfig};
use crate::metrics::Metrics;
use batcher::Batcher;
use chunk::Chunk;
use concurrency::Limiter;
use dead_letter::DeadLetters;
use driver::DriverContext;
use nodes::NodePool;
use retry::RetryPolicy;
use service::{BulkService, SinkHealth};

/// What partition tasks send the batcher.
#[derive(Debug)]
pub enum Submission {
    /// A chunk to send.
    Chunk(Box<Chunk>),
    /// Send the open request now.
    Flush,
}

/// The handle partition tasks submit chunks through. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    chunks: mpsc::UnboundedSender<Submission>,
    health: Arc<SinkHealth>,
    dead_letter_index: Option<Arc<str>>,
}

/// What the sink is built from.
pub struct SinkParts {
    /// The cluster's nodes.
    pub nodes: NodePool,
    /// `[elasticsearch]`.
    pub elasticsearch: ElasticsearchConfig,
    /// `[batch]`.
    pub batch: BatchConfig,
    /// `[retry]`.
    pub retry: RetryConfig,
    /// Where given-up documents go.
    pub dead_letters: Arc<DeadLetters>,
    /// Metrics.
    pub metrics: Metrics,
}

impl Sink {
    /// Starts the sink's batcher; it runs until every handle is dropped and
    /// its requests ended.
    pub fn start(parts: SinkParts) -> (Self, JoinHandle<()>) {
        // One health for `/readyz`: the requests', and the dead letters'
        // waiting for their destination.
        let health = parts.dead_letters.health();
        let dead_letter_index = parts.dead_letters.index().map(Arc::from);
        let limiter = Limiter::new(
            parts.batch.max_in_flight,
            parts.elasticsearch.adaptive_concurrency,
            parts.metrics.bulk_concurrency_limit.clone(),
        );
        let service = BulkService::new(
            parts.nodes,
            parts.elasticsearch.compression,
            limiter,
            parts.metrics.clone(),
            health.clone(),
        );
        let ctx = Arc::new(DriverContext {
            service,
            policy: RetryPolicy {
                max_item_attempts: parts.elasticsearch.max_item_attempts,
                max_item_retry_duration: parts.elasticsearch.max_item_retry_duration,
            },
            dead_letters: parts.dead_letters,
            retry: parts.retry,
            metrics: parts.metrics,
        });
        let (chunks, receiver) = mpsc::unbounded_channel();
        let batcher = Batcher::new(receiver, ctx, &parts.batch);
        let task = tokio::spawn(batcher.run().in_current_span());
        (
            Self {
                chunks,
                health,
                dead_letter_index,
            },
            task,
        )
    }

    /// Hands a chunk to the sink; its answer arrives on the chunk's channel.
    /// `false` when the sink has stopped (the chunk is dropped unanswered).
    pub fn submit(&self, chunk: Chunk) -> bool {
        self.chunks.send(Submission::Chunk(Box::new(chunk))).is_ok()
    }

    /// Sends what is waiting at once, without lingering: a partition is
    /// draining and its chunks must not wait for company.
    pub fn flush(&self) {
        let _ = self.chunks.send(Submission::Flush);
    }

    /// The dead-letter index, when dead letters go to one.
    pub fn dead_letter_index(&self) -> Option<Arc<str>> {
        self.dead_letter_index.clone()
    }

    /// The sink's health, for `/readyz`.
    pub fn health(&self) -> Arc<SinkHealth> {
        self.health.clone()
    }
}
