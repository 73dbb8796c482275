//! Driving one `_bulk` request to its end: send, read the reply, let the
//! retry policy decide, send again what must be, dead-letter what is given
//! up, and answer each chunk as soon as all of its documents are settled.
//!
//! A settled chunk with rejected documents leaves the request for a future
//! of its own, which delivers its dead letters and then answers it: a
//! destination that does not take letters holds only that chunk, never
//! the other chunks (partitions, topics) of the request. That future ends
//! as soon as the chunk's partition stops waiting; the chunk is then
//! dropped (its memory given back, its task told `lost`, to read the
//! records again from its resume point). The futures are bounded by the
//! chunks in flight, which the memory budget bounds, and the request's
//! driver ends only after them, so the sink's shutdown still waits for
//! every chunk.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use tokio::task::JoinSet;
use tracing::{warn, Instrument};

use super::chunk::{Chunk, ChunkOutcome};
use super::concurrency::Permit;
use super::dead_letter::{DeadLetter, DeadLetters};
use super::request::{DocRef, Request};
use super::retry::{Fate, History, RejectReason, RetryPolicy};
use super::service::BulkService;
use crate::backoff::Backoff;
use crate::config::RetryConfig;
use crate::metrics::{Metrics, TopicLabel};

/// What every request driver shares.
pub struct DriverContext {
    /// The `_bulk` call.
    pub service: BulkService,
    /// What to do with each outcome.
    pub policy: RetryPolicy,
    /// Where given-up documents go.
    pub dead_letters: Arc<DeadLetters>,
    /// Backoff between attempts.
    pub retry: RetryConfig,
    /// Metrics.
    pub metrics: Metrics,
}

/// Per-chunk bookkeeping of a request.
#[derive(Debug, Default, Clone)]
struct ChunkState {
    unsettled: usize,
    /// Counts its documents sent again (resolved once per chunk).
    retried: Option<Counter>,
    outcome: ChunkOutcome,
    rejected: Vec<(u32, RejectReason)>,
}

/// Sends `request` until every document is stored or rejected for good (or
/// its chunk abandoned). The first attempt uses `permit`.
pub async fn drive(mut request: Request, permit: Permit, ctx: Arc<DriverContext>) {
    let mut states: Vec<ChunkState> = Vec::new();
    for index in request.chunk_indices().collect::<Vec<_>>() {
        if states.len() <= index as usize {
            states.resize(index as usize + 1, ChunkState::default());
        }
        let state = &mut states[index as usize];
        if let Some(chunk) = request.chunk(index) {
            state.unsettled = chunk.sendable();
            // Refused by shaping: dead-lettered with the chunk, never sent.
            state.rejected.extend(
                chunk
                    .refusals()
                    .map(|(doc, reason)| (doc, RejectReason::Refused(reason.to_owned()))),
            );
        }
    }
    // Documents still to send, in request order, with their history of
    // item refusals and failures.
    let mut pending: Vec<(DocRef, History)> = request
        .all_documents()
        .into_iter()
        .map(|d| (d, History::default()))
        .collect();
    let mut per_request = pending.len().max(1);
    let mut backoff = Backoff::new(ctx.retry.initial_backoff, ctx.retry.max_backoff);
    let mut permit = Some(permit);
    let mut letters = JoinSet::new();
    loop {
        abandon(&mut request, &mut pending);
        settle(&mut request, &mut states, &ctx, &mut letters);
        if pending.is_empty() {
            break;
        }
        let take = per_request.min(pending.len());
        let sending: Vec<DocRef> = pending[..take].iter().map(|(d, _)| *d).collect();
        let mut histories: Vec<History> = pending[..take].iter().map(|(_, h)| *h).collect();
        let permit = match permit.take() {
            Some(permit) => permit,
            None => ctx.service.limiter().acquire().await,
        };
        let body = request.body(&sending);
        let attempt = ctx
            .service
            .send(permit, body, sending.len(), |position, id| {
                sending
                    .get(position)
                    .is_some_and(|d| request.has_id(*d, id))
            })
            .await;
        let decision = ctx.policy.decide(attempt, &mut histories, Instant::now());
        let mut again = Vec::with_capacity(take);
        for ((doc, fate), history) in sending.iter().zip(decision.fates).zip(histories) {
            let state = &mut states[doc.chunk as usize];
            match fate {
                Fate::Stored => {
                    state.outcome.stored += 1;
                    state.unsettled -= 1;
                }
                Fate::Rejected(reason) => {
                    if let RejectReason::RetryExpired { .. } = &reason {
                        retry_expired(&request, doc.chunk, &ctx.metrics, &reason);
                    }
                    state.rejected.push((doc.doc, reason));
                    state.unsettled -= 1;
                }
                Fate::Again => {
                    if decision.shrink_to.is_none() {
                        retried_counter(state, &request, doc.chunk, &ctx.metrics).inc();
                    }
                    again.push((*doc, history));
                }
            }
        }
        again.extend_from_slice(&pending[take..]);
        pending = again;
        if let Some(n) = decision.shrink_to {
            per_request = n;
        }
        if let Some(reason) = &decision.reason {
            if decision.backoff {
                let delay = backoff.next_delay();
                warn!(
                    pending = pending.len(),
                    attempt = backoff.attempts(),
                    retry_in = ?delay,
                    reason = %reason,
                    "bulk request not fully delivered; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        } else {
            backoff.reset();
        }
    }
    while let Some(ended) = letters.join_next().await {
        if let Err(e) = ended {
            // Its chunk was dropped with it and answered `lost`.
            warn!(error = %e, "dead-letter delivery of a chunk failed");
        }
    }
}

/// The retry counter of a chunk's topic.
fn retried_counter<'s>(
    state: &'s mut ChunkState,
    request: &Request,
    chunk: u32,
    metrics: &Metrics,
) -> &'s Counter {
    state.retried.get_or_insert_with(|| {
        let topic = request
            .chunk(chunk)
            .map(|c| c.partition().topic.to_string())
            .unwrap_or_default();
        metrics
            .documents_retried
            .get_or_create(&TopicLabel { topic })
            .clone()
    })
}

/// Counts and logs a document given up because its item kept being
/// answered 429/5xx (its dead letter follows with its chunk).
fn retry_expired(request: &Request, chunk: u32, metrics: &Metrics, reason: &RejectReason) {
    let Some(partition) = request.chunk(chunk).map(|c| c.partition()) else {
        return;
    };
    metrics
        .documents_retry_expired
        .get_or_create(&TopicLabel::of(&partition.topic))
        .inc();
    warn!(
        topic = %partition.topic,
        partition = partition.partition,
        reason = %reason,
        "document still answered 429/5xx after elasticsearch.max_item_retry_duration; dead-lettering it"
    );
}

/// Drops the documents of chunks whose partition stopped waiting: sending
/// them again would help nobody and could write them after a hand-over.
fn abandon(request: &mut Request, pending: &mut Vec<(DocRef, History)>) {
    let abandoned: Vec<u32> = request
        .chunk_indices()
        .filter(|&c| request.chunk(c).is_some_and(Chunk::is_abandoned))
        .collect();
    if abandoned.is_empty() {
        return;
    }
    pending.retain(|(d, _)| !abandoned.contains(&d.chunk));
    for c in abandoned {
        // Dropping the chunk gives its memory back.
        drop(request.take(c));
    }
}

/// One dead letter per record: the rejected documents of a record that
/// makes several (`format = "otlp_json"`) are one letter (the record), whose
/// reason names each rejected log record (`log record 2: ...`). Replaying it
/// writes every document of the record again, under the same `_id`s.
fn letter_reasons(chunk: &Chunk, rejected: &[(u32, RejectReason)]) -> Vec<(u32, String)> {
    let mut letters: Vec<(u32, String)> = Vec::with_capacity(rejected.len());
    for (doc, reason) in rejected {
        let Some(part) = chunk.part(*doc as usize) else {
            letters.push((*doc, reason.to_string()));
            continue;
        };
        let offset = chunk.offset(*doc as usize);
        let same_record = letters.iter_mut().find(|(d, _)| {
            chunk.offset(*d as usize) == offset && chunk.part(*d as usize).is_some()
        });
        match same_record {
            Some((_, reasons)) => {
                reasons.push_str(&format!("; log record {part}: {reason}"));
            }
            None => letters.push((*doc, format!("log record {part}: {reason}"))),
        }
    }
    letters
}

/// Answers every chunk whose documents are all settled; a chunk with
/// rejected documents goes to a future of its own in `letters`, which
/// dead-letters them first.
fn settle(
    request: &mut Request,
    states: &mut [ChunkState],
    ctx: &Arc<DriverContext>,
    letters: &mut JoinSet<()>,
) {
    let done: Vec<u32> = request
        .chunk_indices()
        .filter(|&c| states[c as usize].unsettled == 0)
        .collect();
    for c in done {
        let Some(chunk) = request.take(c) else {
            continue;
        };
        let state = &mut states[c as usize];
        if state.rejected.is_empty() {
            chunk.answer(state.outcome);
        } else {
            let rejected = std::mem::take(&mut state.rejected);
            letters.spawn(
                dead_letter_then_answer(chunk, rejected, state.outcome, ctx.clone())
                    .in_current_span(),
            );
        }
    }
}

/// Delivers the dead letters of a settled chunk's `rejected` documents,
/// then answers it; gives up as soon as its partition stops waiting.
async fn dead_letter_then_answer(
    mut chunk: Chunk,
    rejected: Vec<(u32, RejectReason)>,
    mut outcome: ChunkOutcome,
    ctx: Arc<DriverContext>,
) {
    let Some(mut answer) = chunk.take_answer() else {
        return;
    };
    let reasons = letter_reasons(&chunk, &rejected);
    let letters: Vec<DeadLetter<'_>> = reasons
        .iter()
        .map(|(doc, reason)| DeadLetter {
            partition: chunk.partition(),
            record: chunk.raw(*doc as usize),
            reason,
        })
        .collect();
    ctx.metrics
        .documents_failed
        .get_or_create(&TopicLabel::of(&chunk.partition().topic))
        .inc_by(letters.len() as u64);
    tokio::select! {
        () = ctx.dead_letters.send(&letters) => {}
        () = answer.closed() => {
            warn!(
                topic = %chunk.partition().topic,
                partition = chunk.partition().partition,
                letters = letters.len(),
                "partition stopped waiting while its dead letters waited for their destination; its records will be read again"
            );
            return;
        }
    }
    outcome.dead_lettered = letters.len();
    answer.send(outcome);
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::sync::oneshot;

    use super::*;
    use crate::memory::MemoryBudget;
    use crate::sink::chunk::{ChunkBuilder, ChunkId, RawRecord};
    use crate::topic::TopicPartition;

    #[test]
    fn refused_parts_of_a_record_are_one_letter_naming_each() {
        let mut b = ChunkBuilder::new(TopicPartition::new("t", 0), 8, 1024);
        let raw = |offset| RawRecord {
            offset,
            key: None,
            value: Some(b"v"),
            timestamp_ms: None,
        };
        for (offset, part) in [(4, Some(0)), (4, Some(1)), (4, Some(2)), (5, None)] {
            let mark = b.mark();
            b.body_mut().extend_from_slice(b"{}\n{}\n");
            match part {
                Some(part) => b.commit_part(mark, raw(offset), part),
                None => b.commit_document(mark, raw(offset)),
            }
        }
        let budget = MemoryBudget::new(1 << 20, Gauge::default(), &Gauge::default());
        let (answer, _receive) = oneshot::channel();
        let chunk = b.seal(ChunkId::new(0), budget.empty(), answer, false);
        let refused = |r: &str| RejectReason::Refused(r.into());
        let letters = letter_reasons(
            &chunk,
            &[(0, refused("a")), (2, refused("b")), (3, refused("c"))],
        );
        assert_eq!(
            letters,
            [
                (0, "log record 0: a; log record 2: b".to_string()),
                (3, "c".to_string())
            ]
        );
    }
}
