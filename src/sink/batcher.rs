//! Cross-partition batching: chunks of every partition are packed into
//! shared `_bulk` requests, so that many quiet partitions make a few full
//! requests instead of many tiny ones.
//!
//! A request is sent when it is full (`batch.max_documents` or
//! `batch.max_bytes`), when a draining partition's chunk is in it, or when
//! its oldest document has waited its linger: `batch.linger`, or
//! `batch.idle_linger` when the sink had sent nothing for a whole `linger`
//! before it (a line arriving alone goes out almost at once, while steady
//! traffic is grouped). While every concurrency permit is taken the open
//! request keeps filling, so a slow cluster gets fewer, fuller requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

use super::chunk::{Chunk, ChunkOutcome};
use super::driver::{drive, DriverContext};
use super::request::Request;
use super::Submission;
use crate::config::BatchConfig;

/// Packs chunks into requests and starts a driver for each.
pub struct Batcher {
    chunks: mpsc::UnboundedReceiver<Submission>,
    ctx: Arc<DriverContext>,
    max_documents: usize,
    max_bytes: usize,
    linger: Duration,
    idle_linger: Duration,
}

/// The request being filled.
struct Open {
    request: Request,
    /// When its oldest document was read.
    since: Instant,
    /// How long it may wait for more.
    linger: Duration,
    /// A draining partition asked for it to go now.
    flush: bool,
}

impl Batcher {
    /// A batcher reading `chunks`.
    pub fn new(
        chunks: mpsc::UnboundedReceiver<Submission>,
        ctx: Arc<DriverContext>,
        batch: &BatchConfig,
    ) -> Self {
        Self {
            chunks,
            ctx,
            max_documents: batch.max_documents,
            max_bytes: batch.max_bytes,
            linger: batch.linger,
            idle_linger: batch.idle_linger.min(batch.linger),
        }
    }

    fn fits(&self, open: &Open, chunk: &Chunk) -> bool {
        open.request.documents() + chunk.sendable() <= self.max_documents
            && open.request.bytes() + chunk.bytes() <= self.max_bytes
    }

    fn is_full(&self, open: &Open) -> bool {
        open.request.documents() >= self.max_documents || open.request.bytes() >= self.max_bytes
    }

    fn open(&self, chunk: Chunk, last_sent: Option<Instant>) -> Open {
        let since = Instant::from_std(chunk.created());
        let idle = last_sent.is_none_or(|t| since.saturating_duration_since(t) >= self.linger);
        let mut request = Request::new();
        request.push(chunk);
        Open {
            request,
            since,
            linger: if idle { self.idle_linger } else { self.linger },
            flush: false,
        }
    }

    /// Runs until every sender of chunks is gone and every request ended.
    pub async fn run(mut self) {
        let mut open: Option<Open> = None;
        // A chunk that did not fit the open request: it opens the next one.
        let mut overflow: Option<Chunk> = None;
        let mut last_sent: Option<Instant> = None;
        let mut drivers = JoinSet::new();
        let mut closed = false;
        loop {
            let due = open.as_ref().map(|o| o.since + o.linger);
            let ready = open.as_ref().is_some_and(|o| {
                overflow.is_some()
                    || closed
                    || self.is_full(o)
                    || o.flush
                    || o.request.is_urgent()
                    || due.is_some_and(|d| d <= Instant::now())
            });
            if open.is_none() && closed && drivers.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                permit = self.ctx.service.limiter().acquire(), if ready => {
                    if let Some(o) = open.take() {
                        let ctx = self.ctx.clone();
                        drivers.spawn(drive(o.request, permit, ctx).in_current_span());
                        last_sent = Some(Instant::now());
                    }
                    if let Some(chunk) = overflow.take() {
                        open = Some(self.open(chunk, last_sent));
                    }
                }
                submission = self.chunks.recv(), if overflow.is_none() && !closed => match submission {
                    None => closed = true,
                    Some(Submission::Flush) => {
                        if let Some(o) = &mut open {
                            o.flush = true;
                        }
                    }
                    Some(Submission::Chunk(chunk)) if chunk.is_empty() => chunk.answer(ChunkOutcome::default()),
                    Some(Submission::Chunk(chunk)) => match (&mut open, *chunk) {
                        (None, chunk) => open = Some(self.open(chunk, last_sent)),
                        (Some(o), chunk) if self.fits(o, &chunk) => o.request.push(chunk),
                        (Some(_), chunk) => overflow = Some(chunk),
                    },
                },
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() && !ready => {}
                Some(_) = drivers.join_next(), if !drivers.is_empty() => {}
            }
        }
    }
}
