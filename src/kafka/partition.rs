//! One partition task: reads its partition's queue, batches documents, sends
//! them through the sink and stores the offset of the contiguous
//! acknowledged prefix.
//!
//! Batches complete in the order they were sent (`FuturesOrdered`), so the
//! stored offset only ever moves past documents Elasticsearch acknowledged.
//! On cancellation the task stops reading, flushes what it has read, waits
//! for its requests up to the drain deadline and commits synchronously.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::stream::{FuturesOrdered, StreamExt};
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::consumer::{LogConsumer, PartitionQueue, TopicPartition};
use super::status::{PartitionState, PartitionStatus};
use crate::config::BatchConfig;
use crate::document::Record;
use crate::metrics::Metrics;
use crate::registry::TopicSettings;
use crate::sink::dead_letter::DeadLetters;
use crate::sink::template::Templates;
use crate::sink::{Batch, BatchOutcome, Sink};

/// How long a seek may take before it is tried again.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a task may be unable to take more messages (its requests are
/// failing or slow) before it pauses fetching of its partition.
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// What a finished task leaves behind for the next one on the same queue.
#[derive(Debug)]
pub struct TaskExit {
    /// The partition.
    pub partition: TopicPartition,
    /// The task's id, to tell it from a newer task of the same partition.
    pub task_id: u64,
    /// Set when the task read messages it could not get acknowledged: the
    /// next reader of the same queue must seek back here first.
    pub resume_from: Option<i64>,
}

/// Everything a partition task needs.
pub struct PartitionTask {
    /// The partition it consumes.
    pub partition: TopicPartition,
    /// Its id (unique in this process).
    pub task_id: u64,
    /// The topic's settings at start.
    pub settings: Arc<TopicSettings>,
    /// The partition's queue.
    pub queue: Arc<PartitionQueue>,
    /// For storing and committing offsets.
    pub consumer: Arc<LogConsumer>,
    /// Where batches go.
    pub sink: Arc<Sink>,
    /// Batching limits.
    pub batch: BatchConfig,
    /// How long draining may take once cancelled.
    pub drain_timeout: Duration,
    /// Seek here before reading (a previous task left unacknowledged reads).
    pub resume_from: Option<i64>,
    /// The partition's entry on the status board.
    pub status: Arc<PartitionStatus>,
    /// Where documents rejected for good go.
    pub dead_letters: Arc<DeadLetters>,
    /// Index templates, installed before the first document.
    pub templates: Arc<Templates>,
    /// Metrics.
    pub metrics: Metrics,
}

type InFlight = Pin<Box<dyn Future<Output = (i64, BatchOutcome)> + Send>>;

/// Decrements a gauge by an amount when dropped (request done or abandoned).
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

/// Offsets of the messages this task read and had acknowledged.
#[derive(Debug, Default)]
struct Progress {
    /// Offset of the first message read.
    first_read: Option<i64>,
    /// Offset after the last message read.
    read_next: Option<i64>,
    /// Offset after the last acknowledged message.
    acked_next: Option<i64>,
}

impl Progress {
    /// Where the next reader must start when it is not where the queue is.
    fn resume_from(&self) -> Option<i64> {
        match (self.read_next, self.acked_next) {
            (Some(read), Some(acked)) if read > acked => Some(acked),
            (Some(_), None) => self.first_read,
            _ => None,
        }
    }
}

impl PartitionTask {
    /// Runs until `cancel` fires, then drains and commits.
    pub async fn run(self, cancel: CancellationToken) -> TaskExit {
        let _running = GaugeGuard::new(&self.metrics.partition_tasks, 1);
        self.status.set_state(PartitionState::Running);
        let tp = self.partition.clone();
        let mut progress = Progress::default();
        if let Some(offset) = self.resume_from {
            if !self.seek(offset, &cancel).await {
                return self.exit(Progress {
                    first_read: Some(offset),
                    read_next: Some(offset + 1),
                    acked_next: None,
                });
            }
        }
        self.load_committed_offset();
        if !self.install_template(&cancel).await {
            return self.exit(Progress::default());
        }
        info!(partition = %tp, index = %self.settings.index, "partition task started");
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut batch = Batch::new(tp.topic.clone(), tp.partition);
        let mut linger_deadline = Instant::now();
        let mut consecutive_errors = 0u32;
        let mut blocked_since: Option<Instant> = None;
        let mut paused: Option<GaugeGuard> = None;
        self.set_paused(false);
        let started = Instant::now();
        let mut first_ack_seen = false;
        let read_counter = self
            .metrics
            .documents_read
            .get_or_create(&Metrics::topic(&tp.topic))
            .clone();
        loop {
            let full =
                batch.len() >= self.batch.max_documents || batch.bytes() >= self.batch.max_bytes;
            let can_send = in_flight.len() < self.batch.max_in_flight_per_partition;
            if full && can_send {
                self.send(&mut batch, &mut in_flight);
                continue;
            }
            // Back-pressure: while the sink cannot take more, stop fetching
            // instead of letting the client buffer ahead.
            if full {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if paused.is_none() && since.elapsed() >= PAUSE_AFTER {
                    self.set_paused(true);
                    paused = Some(GaugeGuard::new(&self.metrics.partitions_paused, 1));
                }
            } else {
                blocked_since = None;
                if paused.take().is_some() {
                    self.set_paused(false);
                }
            }
            let pause_check = blocked_since
                .map(|s| s + PAUSE_AFTER)
                .unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep_until(pause_check), if full && paused.is_none() => {}
                Some((last, outcome)) = in_flight.next(), if !in_flight.is_empty() => {
                    self.acknowledge(last, outcome, &mut progress);
                    if !first_ack_seen {
                        first_ack_seen = true;
                        let elapsed = started.elapsed();
                        self.metrics.partition_first_ack_duration.observe(elapsed.as_secs_f64());
                        info!(partition = %tp, elapsed_us = elapsed.as_micros() as u64, "first batch acknowledged");
                    }
                }
                _ = tokio::time::sleep_until(linger_deadline), if !batch.is_empty() && can_send => {
                    self.send(&mut batch, &mut in_flight);
                }
                message = self.queue.recv(), if !full => match message {
                    Ok(message) => {
                        consecutive_errors = 0;
                        if batch.is_empty() {
                            let linger = if in_flight.is_empty() {
                                self.batch.linger.min(self.batch.idle_linger)
                            } else {
                                self.batch.linger
                            };
                            linger_deadline = Instant::now() + linger;
                        }
                        let record = Record {
                            topic: &tp.topic,
                            partition: tp.partition,
                            offset: message.offset(),
                            key: message.key(),
                            value: message.payload(),
                            timestamp_ms: message.timestamp().to_millis(),
                        };
                        if let Err(e) = batch.push(&self.settings, &record, Utc::now()) {
                            // Serialising owned text cannot fail; if it ever
                            // does, stop rather than skip the record.
                            error!(partition = %tp, offset = record.offset, error = %e, "cannot encode record; stopping the partition task");
                            break;
                        }
                        read_counter.inc();
                        progress.first_read.get_or_insert(record.offset);
                        progress.read_next = Some(record.offset + 1);
                        self.status.set_read(record.offset + 1);
                    }
                    Err(e) => {
                        consecutive_errors += 1;
                        self.metrics.kafka_errors.inc();
                        warn!(partition = %tp, error = %e, "error reading partition");
                        let pause = Duration::from_millis(100 * u64::from(consecutive_errors.min(50)));
                        tokio::select! {
                            _ = cancel.cancelled() => break,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                },
            }
        }
        self.status.set_state(PartitionState::Stopping);
        self.drain(batch, in_flight, &mut progress).await;
        self.exit(progress)
    }

    /// Fetches the group's committed offset for `/status` and the lag,
    /// without delaying the start.
    fn load_committed_offset(&self) {
        let consumer = self.consumer.clone();
        let status = self.status.clone();
        let tp = self.partition.clone();
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
        let installed = loop {
            tokio::select! {
                _ = cancel.cancelled() => break false,
                _ = &mut ensure => break true,
                _ = tokio::time::sleep(PAUSE_AFTER), if paused.is_none() => {
                    self.set_paused(true);
                    paused = Some(GaugeGuard::new(&self.metrics.partitions_paused, 1));
                }
            }
        };
        if paused.take().is_some() {
            self.set_paused(false);
        }
        installed
    }

    /// Pauses or resumes fetching of the partition.
    fn set_paused(&self, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.partition.topic, self.partition.partition);
        let result = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) if pause => {
                info!(partition = %self.partition, "sink is not keeping up; paused fetching")
            }
            Ok(()) => debug!(partition = %self.partition, "fetching resumed"),
            Err(e) => {
                warn!(partition = %self.partition, pause, error = %e, "cannot pause/resume partition")
            }
        }
    }

    fn exit(&self, progress: Progress) -> TaskExit {
        self.status.set_state(PartitionState::Idle);
        TaskExit {
            partition: self.partition.clone(),
            task_id: self.task_id,
            resume_from: progress.resume_from(),
        }
    }

    fn send(&self, batch: &mut Batch, in_flight: &mut FuturesOrdered<InFlight>) {
        let full = std::mem::replace(
            batch,
            Batch::new(self.partition.topic.clone(), self.partition.partition),
        );
        let Some(last) = full.last_offset() else {
            return;
        };
        let sink = self.sink.clone();
        let dead_letters = self.dead_letters.clone();
        let buffered = GaugeGuard::new(&self.metrics.buffered_bytes, full.memory() as i64);
        in_flight.push_back(Box::pin(async move {
            let outcome = sink.send(&full).await;
            if !outcome.rejected.is_empty() {
                dead_letters.send(&full, &outcome.rejected).await;
            }
            drop(buffered);
            (last, outcome)
        }));
    }

    fn acknowledge(&self, last: i64, outcome: BatchOutcome, progress: &mut Progress) {
        let next = last + 1;
        progress.acked_next = Some(next);
        self.status.acknowledged(next, outcome.delivered as u64);
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl.add_partition_offset(
            &self.partition.topic,
            self.partition.partition,
            Offset::Offset(next),
        ) {
            warn!(partition = %self.partition, error = %e, "cannot build offset list");
            return;
        }
        if let Err(e) = self.consumer.store_offsets(&tpl) {
            // The partition is no longer assigned: the final commit of the
            // drain (or the next owner) takes over.
            debug!(partition = %self.partition, error = %e, "cannot store offset");
        }
    }

    /// Flushes the open batch, waits for in-flight requests until the drain
    /// deadline, and commits what was acknowledged.
    async fn drain(
        &self,
        mut batch: Batch,
        mut in_flight: FuturesOrdered<InFlight>,
        progress: &mut Progress,
    ) {
        let deadline = Instant::now() + self.drain_timeout;
        let drained = tokio::time::timeout_at(deadline, async {
            loop {
                if !batch.is_empty() && in_flight.len() < self.batch.max_in_flight_per_partition {
                    self.send(&mut batch, &mut in_flight);
                }
                match in_flight.next().await {
                    Some((last, outcome)) => self.acknowledge(last, outcome, progress),
                    None if batch.is_empty() => break,
                    None => {}
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                partition = %self.partition,
                timeout = ?self.drain_timeout,
                "drain deadline passed; unacknowledged documents will be read again"
            );
        }
        drop(in_flight);
        if let Some(next) = progress.acked_next {
            self.commit(next).await;
        }
        info!(partition = %self.partition, committed = ?progress.acked_next, "partition task stopped");
    }

    async fn commit(&self, next: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(
                &self.partition.topic,
                self.partition.partition,
                Offset::Offset(next),
            )
            .is_err()
        {
            return;
        }
        let consumer = self.consumer.clone();
        let result =
            tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync)).await;
        match result {
            Ok(Ok(())) => debug!(partition = %self.partition, offset = next, "offset committed"),
            Ok(Err(e)) => {
                warn!(partition = %self.partition, offset = next, error = %e, "final commit failed; the stored offset is committed with the next group commit")
            }
            Err(e) => warn!(partition = %self.partition, error = %e, "commit task failed"),
        }
    }

    /// Moves the queue back to `offset`; retries until it works or the
    /// task is cancelled (reading on without it would skip messages).
    async fn seek(&self, offset: i64, cancel: &CancellationToken) -> bool {
        let mut backoff =
            crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let consumer = self.consumer.clone();
            let tp = self.partition.clone();
            let result = tokio::task::spawn_blocking(move || {
                consumer.seek(
                    &tp.topic,
                    tp.partition,
                    Offset::Offset(offset),
                    SEEK_TIMEOUT,
                )
            })
            .await;
            match result {
                Ok(Ok(())) => {
                    debug!(partition = %self.partition, offset, "seeked back to the first unacknowledged offset");
                    return true;
                }
                Ok(Err(e)) => {
                    warn!(partition = %self.partition, offset, error = %e, "seek failed; retrying")
                }
                Err(e) => {
                    warn!(partition = %self.partition, error = %e, "seek task failed; retrying")
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn resume_point_is_the_first_unacknowledged_offset() {
        let nothing = Progress::default();
        assert_eq!(nothing.resume_from(), None);
        let all_acked = Progress {
            first_read: Some(5),
            read_next: Some(10),
            acked_next: Some(10),
        };
        assert_eq!(all_acked.resume_from(), None);
        let some_acked = Progress {
            first_read: Some(5),
            read_next: Some(10),
            acked_next: Some(7),
        };
        assert_eq!(some_acked.resume_from(), Some(7));
        let none_acked = Progress {
            first_read: Some(5),
            read_next: Some(10),
            acked_next: None,
        };
        assert_eq!(none_acked.resume_from(), Some(5));
    }
}
