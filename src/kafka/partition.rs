//! One partition task: the thin I/O loop around the [`OffsetTracker`].
//!
//! It reads its partition's queue in bursts (every message already there,
//! for up to one time slice, without going back to the scheduler), shapes
//! each record into the open chunk, and hands the chunk to the sink when
//! the burst ends or the chunk is full. A topic with a transform shapes its
//! bursts off the runtime's workers ([`crate::offload`]). Each chunk's
//! answer goes to the tracker, and the offset the tracker hands out is
//! stored through the assignment's fence. Memory for every record is
//! reserved from the process budget first; when it is spent the task stops
//! reading, and after [`PAUSE_AFTER`] pauses its partition.
//!
//! A topic with rate limits shares one [`Throttle`] among its tasks: a task
//! reads only under a grant of it, and without one it holds the record it
//! took (like a record waiting for memory) and reads nothing further until
//! the topic's buckets refill.
//!
//! On cancellation (revoke, topic removed or changed, shutdown) it stops
//! reading, sends what it has without lingering, waits for the answers up
//! to the drain deadline and leaves the resume point for the next task. It
//! never commits: the revoke handler commits after fencing, the group's
//! auto-commit carries stored offsets otherwise, and shutdown commits last.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::future::OptionFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::assignment::{Assignment, StoreError};
use super::consumer::{LogConsumer, PartitionQueue};
use super::control::Control;
use super::offsets::OffsetTracker;
use super::status::{PartitionState, PartitionStatus};
use super::stuck::{Progress, Transition};
use super::throttle::{Grant, Throttle};
use crate::config::BatchConfig;
use crate::document::{Header, Record, Shaped, Shaper, TRANSFORM_FAILED};
use crate::memory::{MemoryBudget, Reservation};
use crate::metrics::{Metrics, PartitionLabel, TopicLabel};
use crate::offload;
use crate::sink::chunk::{ChunkBuilder, ChunkId, ChunkOutcome, RawRecord};
use crate::sink::template::Templates;
use crate::sink::Sink;
use crate::topic::{HeadersMode, TopicPartition, TopicSettings};

/// How long a seek may take before it is tried again.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a task may be unable to take more messages (the memory budget
/// is spent) before it pauses fetching of its partition.
pub const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// Memory reserved per record beyond its key and value (copied once into
/// the chunk's raw buffer, once encoded): the action line, the fixed
/// fields, the document entry.
const RECORD_OVERHEAD: usize = 160;

/// How many messages one burst reads before it lets the loop look at
/// answers and cancellation again.
const BURST: usize = 4096;

/// A plain topic's burst reads the clock once per this many records.
const CLOCK_EVERY: usize = 64;

/// Memory is reserved from the budget in slabs of this size (when the
/// budget has them), not per record: fewer atomic operations on the shared
/// budget; a task holds at most one slab it has not used yet.
const RESERVATION_SLAB: usize = 64 << 10;

/// What a finished task leaves behind for the next one on the same queue.
#[derive(Debug)]
pub struct TaskExit {
    /// The partition.
    pub partition: TopicPartition,
    /// Set when the task read messages it could not get acknowledged: the
    /// next reader of the same queue must seek back here first.
    pub resume_from: Option<i64>,
}

/// Everything a partition task needs.
pub struct PartitionTask {
    /// The assignment it serves, whose fence guards every store.
    pub assignment: Arc<Assignment>,
    /// The topic's settings at start.
    pub settings: Arc<TopicSettings>,
    /// The partition's queue.
    pub queue: Arc<PartitionQueue>,
    /// For storing offsets and seeking.
    pub consumer: Arc<LogConsumer>,
    /// Pause and resume, off the runtime.
    pub control: Control,
    /// Where chunks go.
    pub sink: Sink,
    /// The process-wide memory budget.
    pub budget: MemoryBudget,
    /// Chunk size limits.
    pub batch: BatchConfig,
    /// How long draining may take once cancelled.
    pub drain_timeout: Duration,
    /// Reported stuck when the acknowledged offset has not moved for this
    /// long while records after it wait.
    pub stuck_after: Duration,
    /// Seek here before reading (a previous task left unacknowledged reads).
    pub resume_from: Option<i64>,
    /// The partition's entry on the status board.
    pub status: Arc<PartitionStatus>,
    /// Index templates, installed before the first document.
    pub templates: Arc<Templates>,
    /// Metrics.
    pub metrics: Metrics,
    /// The topic's rate limiter, shared with its other tasks and updated
    /// live by the reconciler.
    pub throttle: Arc<Throttle>,
}

/// The answer of one chunk, with what the task remembers of it.
type Answer = Pin<Box<dyn Future<Output = (Sent, Option<ChunkOutcome>)> + Send>>;

/// Waiting for memory from the budget.
type MemoryWait = Pin<Box<dyn Future<Output = Reservation> + Send>>;

/// What the task remembers of a chunk it handed to the sink.
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: ChunkId,
    /// The oldest Kafka timestamp of its records, for the latency histogram.
    oldest_timestamp_ms: Option<i64>,
}

/// The time of a record for the lag: its Kafka timestamp, or `read_at`
/// (when it was read) if it has none — a record without a timestamp then
/// counts from the moment logingest took it.
fn record_time_ms(message: &BorrowedMessage<'_>, read_at: i64) -> i64 {
    message
        .timestamp()
        .to_millis()
        .filter(|ms| *ms >= 0)
        .unwrap_or(read_at)
}

/// Adds to a gauge for as long as it lives.
struct GaugeGuard(Gauge, i64);

impl GaugeGuard {
    fn new(gauge: &Gauge, amount: i64) -> Self {
        gauge.inc_by(amount);
        Self(gauge.clone(), amount)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec_by(self.1);
    }
}

/// A partition paused by its task: resumed when the guard goes, on every
/// way out of the task (a panic included), so that a partition is never
/// left paused by a task that is gone.
struct PauseGuard {
    control: Control,
    tp: TopicPartition,
    _gauge: GaugeGuard,
}

impl PauseGuard {
    fn pause(control: &Control, tp: &TopicPartition, gauge: &Gauge) -> Self {
        control.pause(tp);
        Self {
            control: control.clone(),
            tp: tp.clone(),
            _gauge: GaugeGuard::new(gauge, 1),
        }
    }
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.control.resume(&self.tp);
    }
}

/// Per-topic counters, resolved once per task.
struct Counters {
    read: Counter,
    bytes_read: Counter,
    indexed: Counter,
    /// Dropped on purpose by the topic's transform.
    dropped: Counter,
    /// Records whose transform failed (indexed, dead-lettered or dropped
    /// as the topic's `transform_failure` says).
    transform_failures: Counter,
    /// Seconds spent waiting for the topic's rate limit.
    throttled: Counter<f64, AtomicU64>,
    /// `document_latency_seconds` of the topic.
    latency: Histogram,
}

/// The loop's state: tracker, open chunk, answers in flight.
struct Loop {
    tp: TopicPartition,
    tracker: OffsetTracker,
    shaper: Shaper,
    chunk: ChunkBuilder,
    /// Memory reserved for the open chunk.
    reservation: Reservation,
    answers: FuturesUnordered<Answer>,
    counters: Counters,
    /// Whether the acknowledged offset keeps moving.
    progress: Progress,
    /// Counts this partition in `partitions_stuck` while it is stuck.
    stuck: Option<GaugeGuard>,
    /// Records and bytes read since the counters were last updated (once
    /// per chunk, not per record).
    uncounted: (u64, u64),
    /// The ingest time of this burst: the `@timestamp` of records without
    /// a usable Kafka timestamp.
    now: chrono::DateTime<Utc>,
    first_ack_seen: bool,
    started: Instant,
    /// A chunk came back unsettled (the sink dropped it): its records must
    /// be read again, so the task ends and is restarted at its resume point.
    lost: bool,
    /// What the topic's rate limit lets the task read before it asks again.
    grant: Grant,
    /// The last burst ended on its time slice with messages still queued.
    sliced: bool,
}

/// What reading one message came to.
enum Step {
    Written,
    /// The message is held until the task may read it.
    Blocked(Blocked),
    /// The task cannot go on.
    Stop,
}

/// Runs `work` (shaping one burst). A plain topic's burst runs inline: its
/// records cost about a microsecond each and one [`offload::SLICE`] bounds
/// it. A transform's burst runs off the worker (the runtime keeps all its
/// workers meanwhile), holding one of the process's transform slots, so
/// that slow programs neither freeze the runtime nor take every core.
async fn shape<R>(transforms: bool, work: impl FnOnce() -> R) -> R {
    if !transforms {
        return work();
    }
    let _slot = offload::transform_slot().await;
    offload::off_worker(work)
}

/// After a burst cut short by its time slice, lets the runtime run other
/// tasks: the partition's queue is still ready, so the task's loop would
/// otherwise go on without ever returning to the scheduler.
async fn yield_if_sliced(state: &mut Loop) {
    if std::mem::take(&mut state.sliced) {
        tokio::task::yield_now().await;
    }
}

/// Why a message is held.
enum Blocked {
    /// The budget is spent: wait for this many bytes.
    Memory(usize),
    /// The topic's rate limit: ask again at this time.
    Rate(Instant),
}

/// What the loop waits for before it reads again.
#[derive(Default)]
struct Waits {
    /// The reservation a record held for memory waits for.
    memory: Option<MemoryWait>,
    /// Since when the task waits for memory.
    blocked_since: Option<Instant>,
    /// When to ask the rate limit again.
    rate_until: Option<Instant>,
    /// Since when the task waits for the rate limit (not yet counted).
    rate_since: Option<Instant>,
}

impl PartitionTask {
    /// Runs until `cancel` fires, then drains.
    pub async fn run(self, cancel: CancellationToken) -> TaskExit {
        let _running = GaugeGuard::new(&self.metrics.partition_tasks, 1);
        self.status.set_state(PartitionState::Running);
        self.assignment.set_first_read(None);
        let tp = self.assignment.partition().clone();
        if let Some(offset) = self.resume_from {
            if !self.seek(offset, &cancel).await {
                return self.exit(Some(offset));
            }
        }
        self.load_committed_offset();
        if !self.install_template(&cancel).await {
            return self.exit(self.resume_from);
        }
        info!(partition = %tp, index = %self.settings.index, generation = self.assignment.generation(), "partition task started");
        let label = TopicLabel::of(&tp.topic);
        let mut state = Loop {
            tracker: OffsetTracker::new(self.assignment.generation()),
            shaper: Shaper::new(self.settings.clone(), tp.clone())
                .protecting(self.sink.dead_letter_index()),
            chunk: ChunkBuilder::new(tp.clone(), 64, 16 << 10),
            reservation: self.budget.empty(),
            answers: FuturesUnordered::new(),
            progress: Progress::new(self.stuck_after, Instant::now()),
            stuck: None,
            counters: Counters {
                read: self.metrics.documents_read.get_or_create(&label).clone(),
                bytes_read: self.metrics.bytes_read.get_or_create(&label).clone(),
                indexed: self.metrics.documents_indexed.get_or_create(&label).clone(),
                dropped: self.metrics.documents_dropped.get_or_create(&label).clone(),
                transform_failures: self
                    .metrics
                    .transform_failures
                    .get_or_create(&label)
                    .clone(),
                throttled: self
                    .metrics
                    .topic_throttled_seconds
                    .get_or_create(&label)
                    .clone(),
                latency: self.metrics.document_latency.get_or_create(&label).clone(),
            },
            uncounted: (0, 0),
            now: Utc::now(),
            first_ack_seen: false,
            started: Instant::now(),
            lost: false,
            grant: Grant::NONE,
            sliced: false,
            tp,
        };
        let queue = self.queue.clone();
        let mut stream = queue.stream();
        // A message read while the budget was spent, and the reservation it
        // waits for.
        let mut held: Option<BorrowedMessage<'_>> = None;
        let mut waits = Waits::default();
        let mut paused: Option<PauseGuard> = None;
        let mut consecutive_errors = 0u32;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let mut stop = false;
        while !stop {
            let pause_at = waits.blocked_since.map(|s| s + PAUSE_AFTER);
            let mut outcome: Result<Option<Blocked>, ()> = Ok(None);
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                Some((sent, outcome)) = state.answers.next(), if !state.answers.is_empty() => {
                    self.answered(&mut state, sent, outcome);
                    self.observe(&mut state, held.as_ref());
                }
                Some(reservation) = OptionFuture::from(waits.memory.as_mut()), if waits.memory.is_some() => {
                    waits.memory = None;
                    waits.blocked_since = None;
                    paused = None;
                    state.reservation.merge(reservation);
                    state.now = Utc::now();
                    let transforms = state.shaper.transforms();
                    outcome = shape(transforms, || {
                        let mut outcome = Ok(None);
                        if let Some(message) = held.take() {
                            // It waited for what the budget can give: it goes
                            // through with that, even if it is more than the
                            // budget (a lone oversized record).
                            outcome = match self.take(&mut state, &message, true) {
                                Step::Written => Ok(None),
                                Step::Stop => Err(()),
                                Step::Blocked(Blocked::Memory(_)) => {
                                    // `take` never asks again once forced; if it
                                    // ever did, the record must not be lost.
                                    held = Some(message);
                                    Err(())
                                }
                                Step::Blocked(rate) => {
                                    held = Some(message);
                                    Ok(Some(rate))
                                }
                            };
                        }
                        if matches!(outcome, Ok(None)) {
                            outcome = self.burst(&mut state, &mut stream, &mut held);
                        }
                        outcome
                    })
                    .await;
                    yield_if_sliced(&mut state).await;
                }
                _ = tokio::time::sleep_until(waits.rate_until.unwrap_or_else(Instant::now)), if waits.rate_until.is_some() => {
                    waits.rate_until = None;
                    if let Some(since) = waits.rate_since.take() {
                        state.counters.throttled.inc_by(since.elapsed().as_secs_f64());
                    }
                    state.now = Utc::now();
                    let transforms = state.shaper.transforms();
                    outcome = shape(transforms, || {
                        let mut outcome = Ok(None);
                        if let Some(message) = held.take() {
                            outcome = self.take_held(&mut state, message, &mut held);
                        }
                        if matches!(outcome, Ok(None)) {
                            outcome = self.burst(&mut state, &mut stream, &mut held);
                        }
                        outcome
                    })
                    .await;
                    yield_if_sliced(&mut state).await;
                }
                message = stream.next(), if held.is_none() => match message {
                    Some(Ok(message)) => {
                        consecutive_errors = 0;
                        state.now = Utc::now();
                        let transforms = state.shaper.transforms();
                        outcome = shape(transforms, || {
                            let outcome = self.take_held(&mut state, message, &mut held);
                            match outcome {
                                Ok(None) => self.burst(&mut state, &mut stream, &mut held),
                                other => other,
                            }
                        })
                        .await;
                        yield_if_sliced(&mut state).await;
                    }
                    Some(Err(e)) => {
                        consecutive_errors += 1;
                        self.metrics.kafka_errors.inc();
                        warn!(partition = %state.tp, error = %e, "error reading partition");
                        let pause = Duration::from_millis(100 * u64::from(consecutive_errors.min(50)));
                        tokio::select! {
                            _ = &mut cancelled => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                    None => {
                        error!(partition = %state.tp, "partition stream ended");
                        stop = true;
                    }
                },
                _ = tokio::time::sleep_until(pause_at.unwrap_or_else(Instant::now)), if pause_at.is_some() && paused.is_none() => {
                    info!(partition = %state.tp, budget = self.budget.limit(), "memory budget spent; pausing fetching");
                    paused = Some(PauseGuard::pause(&self.control, &state.tp, &self.metrics.partitions_paused));
                }
                _ = tick.tick() => self.observe(&mut state, held.as_ref()),
            }
            match outcome {
                Ok(None) => {}
                Ok(Some(Blocked::Memory(need))) => {
                    waits.blocked_since = Some(Instant::now());
                    waits.memory = Some(self.block(&mut state, need));
                }
                Ok(Some(Blocked::Rate(at))) => {
                    // What was read goes now, and its grant back to the
                    // topic's other tasks.
                    self.submit(&mut state, false);
                    waits.rate_since.get_or_insert_with(Instant::now);
                    waits.rate_until = Some(at);
                }
                Err(()) => stop = true,
            }
            if state.lost {
                warn!(partition = %state.tp, "a chunk came back unsettled; reading its records again");
                stop = true;
            }
        }
        if let Some(since) = waits.rate_since {
            state
                .counters
                .throttled
                .inc_by(since.elapsed().as_secs_f64());
        }
        // A message taken from the queue but not written is not read: it
        // is in no chunk, so nothing may be stored for it. The next reader
        // starts at it (or earlier, at the first unacknowledged read).
        let held_offset = held.take().map(|message| message.offset());
        drop(waits);
        drop(paused);
        self.status.set_state(PartitionState::Stopping);
        self.drain(&mut state).await;
        self.forget_lag(&mut state);
        if cancel.is_cancelled() {
            crate::fault::slow_drain(&state.tp).await;
        }
        if !cancel.is_cancelled() {
            error!(partition = %state.tp, "partition task ended without being asked to");
        }
        self.exit(state.tracker.resume_point().or(held_offset))
    }

    /// The budget is spent: hands the open chunk to the sink (so its memory
    /// can come back) and waits for what the held record needs beyond what
    /// the task holds — never more than the whole budget, so the wait
    /// always ends once the other reservations come back.
    fn block(&self, state: &mut Loop, estimate: usize) -> MemoryWait {
        self.submit(state, false);
        let need = (state.chunk.footprint() + state.chunk.pending_allocation() + estimate)
            .min(self.budget.limit())
            .saturating_sub(state.reservation.bytes());
        let budget = self.budget.clone();
        Box::pin(async move {
            if need == 0 {
                budget.empty()
            } else {
                budget.reserve(need).await
            }
        })
    }

    /// Takes one message; a message that cannot be taken yet goes into
    /// `held`.
    fn take_held<'q>(
        &self,
        state: &mut Loop,
        message: BorrowedMessage<'q>,
        held: &mut Option<BorrowedMessage<'q>>,
    ) -> Result<Option<Blocked>, ()> {
        match self.take(state, &message, false) {
            Step::Written => Ok(None),
            Step::Blocked(blocked) => {
                *held = Some(message);
                Ok(Some(blocked))
            }
            Step::Stop => Err(()),
        }
    }

    /// Reads every message already in the queue (up to [`BURST`], for up
    /// to one [`offload::SLICE`] of shaping), then hands the chunk to the
    /// sink. `Ok(Some(_))` when the budget is spent or the rate limit
    /// reached (the message is in `held`), `Err` when the task must stop. A
    /// burst cut short by the slice sets `state.sliced`: the task then
    /// yields before reading on.
    fn burst<'q>(
        &self,
        state: &mut Loop,
        stream: &mut rdkafka::consumer::MessageStream<'q, super::consumer::GroupContext>,
        held: &mut Option<BorrowedMessage<'q>>,
    ) -> Result<Option<Blocked>, ()> {
        // A plain record costs about a microsecond: reading the clock after
        // each would be measurable; a transformed one may take its
        // program's whole deadline.
        let check_every = if state.shaper.transforms() {
            1
        } else {
            CLOCK_EVERY
        };
        let started = std::time::Instant::now();
        for n in 1..=BURST {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => {
                    if let Some(blocked) = self.take_held(state, message, held)? {
                        return Ok(Some(blocked));
                    }
                }
                // An error or nothing ready: the select loop handles it.
                _ => break,
            }
            if n % check_every == 0 && started.elapsed() >= offload::SLICE {
                state.sliced = true;
                break;
            }
        }
        self.submit(state, false);
        Ok(None)
    }

    /// Writes one message into the open chunk, reserving its memory first.
    ///
    /// The chunk's reservation follows what it really holds (allocated
    /// capacity): before a record, enough for what it holds plus the
    /// record's estimate (its raw copy, its encoded lines); after it, any
    /// growth beyond that (a buffer that doubled) when the budget has it —
    /// else the next record waits for it.
    ///
    /// `forced` after a wait for memory: the record goes through with what
    /// the budget gave (a record larger than the whole budget is never
    /// dropped nor waits forever).
    fn take(&self, state: &mut Loop, message: &BorrowedMessage<'_>, forced: bool) -> Step {
        let key = message.key();
        let value = message.payload();
        let raw = key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
        let estimate = 2 * raw + RECORD_OVERHEAD + state.tp.topic.len();
        let offset = message.offset();
        if state.tracker.first_read().is_none() {
            // Before anything can go wrong with it (a wait for memory
            // included): a task that dies must be restarted at the first
            // offset it took from the queue.
            self.assignment.set_first_read(Some(offset));
        }
        if !state.grant.admits() {
            // Asked once per burst, not per record: a grant covers many.
            self.throttle
                .release(std::mem::replace(&mut state.grant, Grant::NONE));
            match self.throttle.acquire(BURST as u64) {
                Ok(grant) => state.grant = grant,
                Err(at) => return Step::Blocked(Blocked::Rate(at)),
            }
        }
        if state.chunk.is_empty()
            && state.chunk.pending_allocation() + estimate > self.budget.available()
        {
            // The budget is too tight for the usual first allocation: this
            // chunk grows from what its records need instead.
            state.chunk.forget_sizes();
        }
        let shortfall = (state.chunk.footprint() + state.chunk.pending_allocation() + estimate)
            .saturating_sub(state.reservation.bytes());
        if shortfall > 0 {
            let slab = self
                .budget
                .try_reserve(shortfall.max(RESERVATION_SLAB))
                .or_else(|| self.budget.try_reserve(shortfall));
            match slab {
                Some(r) => state.reservation.merge(r),
                None if forced => {
                    debug!(partition = %state.tp, offset, bytes = estimate, reserved = state.reservation.bytes(), "record larger than the free budget goes through with what it was granted");
                }
                None => return Step::Blocked(Blocked::Memory(estimate)),
            }
        }
        crate::fault::before_record(&state.tp, offset);
        let time_ms = record_time_ms(message, state.now.timestamp_millis());
        if !state.tracker.read_at(offset, Some(time_ms)) {
            warn!(partition = %state.tp, offset, "offset at or before one already read; skipped");
            return Step::Written;
        }
        // Collected only for a topic that indexes them: asking librdkafka
        // for a record's headers parses them, a cost per record.
        let headers: Vec<Header<'_>> = match state.shaper.settings().headers {
            HeadersMode::Field => message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| Header {
                            key: h.key,
                            value: h.value,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let record = Record {
            offset,
            key,
            value,
            timestamp_ms: message.timestamp().to_millis(),
            headers: &headers,
        };
        match state.shaper.write(&mut state.chunk, &record, state.now) {
            // An `otlp_json` request without log records: like a dropped
            // record, its offset advances with the chunk's answer.
            Ok(Shaped::Written | Shaped::Empty) => {}
            // Its offset is in the tracker's open span: it advances with the
            // chunk's acknowledgement (a chunk left empty is answered by the
            // batcher at once, without a request).
            Ok(Shaped::Dropped) => {
                state.counters.dropped.inc();
            }
            Ok(Shaped::TransformFailed(error)) => {
                state.counters.transform_failures.inc();
                debug!(partition = %state.tp, offset, %error, "transform failed; indexed untransformed");
            }
            Ok(Shaped::TransformFailedDropped(error)) => {
                state.counters.transform_failures.inc();
                state.counters.dropped.inc();
                debug!(partition = %state.tp, offset, %error, "transform failed; dropped (transform_failure = \"drop\")");
            }
            Ok(Shaped::Refused(reason)) => {
                // Into the chunk without lines: the sink dead-letters it
                // with the reason, and its offset advances only after that.
                if reason.starts_with(TRANSFORM_FAILED) {
                    state.counters.transform_failures.inc();
                }
                debug!(partition = %state.tp, offset, %reason, "record refused; dead-lettering it");
                state.chunk.refuse(
                    RawRecord {
                        offset,
                        key,
                        value,
                        timestamp_ms: record.timestamp_ms,
                    },
                    reason,
                );
            }
            Err(e) => {
                // Serialising owned text cannot fail; if it ever does, stop
                // rather than skip the record.
                error!(partition = %state.tp, offset, error = %e, "cannot encode record; stopping the partition task");
                return Step::Stop;
            }
        }
        let grown = state
            .chunk
            .footprint()
            .saturating_sub(state.reservation.bytes());
        if grown > 0 {
            if let Some(r) = self.budget.try_reserve(grown) {
                state.reservation.merge(r);
            }
        }
        state.uncounted.0 += 1;
        state.uncounted.1 += raw as u64;
        state.grant.use_one(raw as u64);
        self.status.set_read(offset + 1);
        if state.chunk.len() >= self.batch.max_documents
            || state.chunk.bytes() >= self.batch.max_bytes
        {
            self.submit(state, false);
        }
        Step::Written
    }

    /// Hands the open chunk (if any) to the sink.
    fn submit(&self, state: &mut Loop, urgent: bool) {
        // What the task did not read of its grant goes back to the topic's
        // other tasks; the next record asks again.
        self.throttle
            .release(std::mem::replace(&mut state.grant, Grant::NONE));
        let (records, bytes) = std::mem::take(&mut state.uncounted);
        if records > 0 {
            state.counters.read.inc_by(records);
            state.counters.bytes_read.inc_by(bytes);
        }
        let Some(id) = state.tracker.seal() else {
            return;
        };
        // The next chunk's first allocation stays within a quarter of the
        // budget, whatever the last chunk held: pre-allocation can never
        // make a wait for memory exceed the budget.
        let sizes = state
            .chunk
            .sizes_within(self.batch.max_bytes, self.budget.limit() / 4);
        let builder = std::mem::replace(
            &mut state.chunk,
            ChunkBuilder::sized(state.tp.clone(), sizes),
        );
        let reservation = std::mem::replace(&mut state.reservation, self.budget.empty());
        let (answer, receive) = oneshot::channel();
        let chunk = builder.seal(id, reservation, answer, urgent);
        let sent = Sent {
            id,
            oldest_timestamp_ms: chunk.oldest_timestamp_ms(),
        };
        if !self.sink.submit(chunk) {
            // The sink is gone (shutting down): the chunk is never
            // answered, so nothing of it is stored.
            warn!(partition = %state.tp, "sink stopped; chunk not sent");
        }
        state
            .answers
            .push(Box::pin(receive.map(move |r| (sent, r.ok()))));
    }

    /// Records a chunk's answer: the tracker may hand out an offset to store.
    fn answered(&self, state: &mut Loop, sent: Sent, outcome: Option<ChunkOutcome>) {
        let Some(outcome) = outcome.filter(|o| !o.lost) else {
            // Dropped by the sink without being settled (it stopped, or its
            // driver failed): nothing of it may be stored, and its records
            // must be read again.
            state.lost = true;
            return;
        };
        state.counters.indexed.inc_by(outcome.stored as u64);
        self.status.add_indexed(outcome.stored as u64);
        if let Some(ts) = sent.oldest_timestamp_ms {
            let age = Utc::now().timestamp_millis().saturating_sub(ts).max(0);
            state.counters.latency.observe(age as f64 / 1000.0);
        }
        if !state.first_ack_seen {
            state.first_ack_seen = true;
            let elapsed = state.started.elapsed();
            self.metrics
                .partition_first_ack_duration
                .observe(elapsed.as_secs_f64());
            info!(partition = %state.tp, elapsed_us = elapsed.as_micros() as u64, "first chunk acknowledged");
        }
        if let Some(store) = state.tracker.ack(sent.id) {
            match self.assignment.store(&*self.consumer, store) {
                Ok(()) => {
                    self.status.set_acknowledged(store.next);
                    self.consumer.context().request_commit();
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    state.tracker.revoke();
                    debug!(partition = %state.tp, error = %e, "offset not stored: the partition was handed over");
                }
                Err(e) => warn!(partition = %state.tp, error = %e, "cannot store offset"),
            }
        }
    }

    /// Updates the lag and the stuck state (on every answer and every
    /// second).
    ///
    /// Lag: now minus the time of the first record not yet acknowledged —
    /// the tracker's resume point, else the record held while the memory
    /// budget is spent (read from the queue, not yet in a chunk); 0 when
    /// the task holds neither.
    fn observe(&self, state: &mut Loop, held: Option<&BorrowedMessage<'_>>) {
        let now = Utc::now().timestamp_millis();
        let oldest = state
            .tracker
            .oldest_unacknowledged_ms()
            .or_else(|| held.map(|m| record_time_ms(m, now)));
        let lag_ms = oldest.map_or(0, |ts| (now - ts).max(0));
        self.metrics
            .partition_lag_seconds
            .get_or_create(&PartitionLabel::of(&state.tp))
            .set(lag_ms as f64 / 1000.0);
        self.status.set_lag_ms(Some(lag_ms));

        let backlog = !state.tracker.is_settled() || held.is_some();
        let acknowledged = state.tracker.stored();
        match state
            .progress
            .observe(Instant::now(), acknowledged, backlog)
        {
            Some(Transition::Stuck { still_for }) => {
                warn!(
                    topic = %state.tp.topic,
                    partition = state.tp.partition,
                    acknowledged = ?acknowledged,
                    resume_point = ?state.tracker.resume_point(),
                    still_for_s = still_for.as_secs(),
                    lag_s = lag_ms / 1000,
                    "partition stuck: records after the acknowledged offset are not acknowledged"
                );
                let gauge = self
                    .metrics
                    .partitions_stuck
                    .get_or_create(&TopicLabel::of(&state.tp.topic))
                    .clone();
                state.stuck = Some(GaugeGuard::new(&gauge, 1));
                self.status.set_stuck(true);
            }
            Some(Transition::Recovered { after }) => {
                info!(
                    topic = %state.tp.topic,
                    partition = state.tp.partition,
                    acknowledged = ?acknowledged,
                    stuck_for_s = after.as_secs(),
                    "partition moves again"
                );
                state.stuck = None;
                self.status.set_stuck(false);
            }
            None => {}
        }
    }

    /// The task ends: its lag series goes (the next task of the partition
    /// starts it again) and it no longer counts as stuck.
    fn forget_lag(&self, state: &mut Loop) {
        self.metrics
            .partition_lag_seconds
            .remove(&PartitionLabel::of(&state.tp));
        self.status.set_lag_ms(None);
        if state.stuck.take().is_some() {
            self.status.set_stuck(false);
        }
    }

    /// Sends the open chunk without lingering and waits for the answers up
    /// to the drain deadline.
    async fn drain(&self, state: &mut Loop) {
        self.submit(state, true);
        if !state.answers.is_empty() {
            self.sink.flush();
        }
        let deadline = Instant::now() + self.drain_timeout;
        while !state.answers.is_empty() {
            tokio::select! {
                Some((sent, outcome)) = state.answers.next() => self.answered(state, sent, outcome),
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        partition = %state.tp,
                        timeout = ?self.drain_timeout,
                        pending = state.answers.len(),
                        "drain deadline passed; unacknowledged documents will be read again"
                    );
                    break;
                }
            }
        }
        // Dropping the answer channels tells the sink to abandon the rest.
        state.answers.clear();
        info!(partition = %state.tp, stored = ?state.tracker.stored(), "partition task stopped");
    }

    /// Fetches the group's committed offset for `/status` and the lag,
    /// without delaying the start.
    fn load_committed_offset(&self) {
        let consumer = self.consumer.clone();
        let status = self.status.clone();
        let tp = self.assignment.partition().clone();
        tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.topic, tp.partition);
            match consumer.committed_offsets(tpl, SEEK_TIMEOUT) {
                Ok(committed) => {
                    for e in committed.elements() {
                        if let Offset::Offset(next) = e.offset() {
                            status.set_committed(next);
                        }
                    }
                }
                Err(e) => debug!(partition = %tp, error = %e, "cannot fetch the committed offset"),
            }
        });
    }

    /// Waits until the index template is in place (Elasticsearch may be
    /// down), with fetching paused meanwhile. False when cancelled.
    async fn install_template(&self, cancel: &CancellationToken) -> bool {
        let ensure = self.templates.ensure(&self.settings);
        tokio::pin!(ensure);
        let mut paused = None;
        let tp = self.assignment.partition();
        let installed = loop {
            tokio::select! {
                _ = cancel.cancelled() => break false,
                _ = &mut ensure => break true,
                _ = tokio::time::sleep(PAUSE_AFTER), if paused.is_none() => {
                    paused = Some(PauseGuard::pause(&self.control, tp, &self.metrics.partitions_paused));
                }
            }
        };
        drop(paused);
        installed
    }

    fn exit(&self, resume_from: Option<i64>) -> TaskExit {
        self.status.set_state(PartitionState::Idle);
        TaskExit {
            partition: self.assignment.partition().clone(),
            resume_from,
        }
    }

    /// Moves the queue back to `offset`; retries until it works or the
    /// task is cancelled (reading on without it would skip messages). Only
    /// while the assignment is open: a handed-over partition is the next
    /// owner's.
    async fn seek(&self, offset: i64, cancel: &CancellationToken) -> bool {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let tp = self.assignment.partition().clone();
        loop {
            if !self.assignment.is_open() {
                return false;
            }
            let consumer = self.consumer.clone();
            let target = tp.clone();
            let result = tokio::task::spawn_blocking(move || {
                consumer.seek(
                    &target.topic,
                    target.partition,
                    Offset::Offset(offset),
                    SEEK_TIMEOUT,
                )
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    debug!(partition = %tp, offset, "seeked back to the first unacknowledged offset");
                    return true;
                }
                Ok(Err(e)) => warn!(partition = %tp, offset, error = %e, "seek failed; retrying"),
                Err(e) => warn!(partition = %tp, error = %e, "seek task failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}
