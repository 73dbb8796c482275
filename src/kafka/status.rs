//! What this instance owns and how far along each partition is: the
//! source of `GET /status` and of the lag metric.
//!
//! Partition tasks update their entry with plain atomics (no lock in the
//! per-message path); the statistics callback adds the broker's high
//! watermark; the commit callback records what the group really committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::metrics::{Metrics, PartitionLabel};
use crate::topic::TopicPartition;

/// Offset value meaning "not known yet".
const UNKNOWN: i64 = -1;

/// Lifecycle of an assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionState {
    /// Assigned, but its topic is not (or no longer) registered.
    Idle,
    /// A task reads and indexes it.
    Running,
    /// Its task is flushing and committing (removal, revoke, shutdown).
    Stopping,
}

impl PartitionState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Running,
            2 => Self::Stopping,
            _ => Self::Idle,
        }
    }
}

/// Live figures of one assigned partition.
#[derive(Debug)]
pub struct PartitionStatus {
    state: AtomicU8,
    acknowledged: AtomicI64,
    committed: AtomicI64,
    read: AtomicI64,
    high_watermark: AtomicI64,
    indexed: AtomicU64,
    /// The lag in milliseconds as the task last computed it.
    lag_ms: AtomicI64,
    stuck: AtomicBool,
}

impl Default for PartitionStatus {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(0),
            acknowledged: AtomicI64::new(UNKNOWN),
            committed: AtomicI64::new(UNKNOWN),
            read: AtomicI64::new(UNKNOWN),
            high_watermark: AtomicI64::new(UNKNOWN),
            indexed: AtomicU64::new(0),
            lag_ms: AtomicI64::new(UNKNOWN),
            stuck: AtomicBool::new(false),
        }
    }
}

impl PartitionStatus {
    /// Sets the lifecycle state.
    pub fn set_state(&self, state: PartitionState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Records the offset the group has committed (next offset to read).
    pub fn set_committed(&self, next: i64) {
        self.committed.store(next, Ordering::Relaxed);
    }

    /// Records the offset after the last message read.
    pub fn set_read(&self, next: i64) {
        self.read.store(next, Ordering::Relaxed);
    }

    /// Records the offset after the contiguous acknowledged prefix.
    pub fn set_acknowledged(&self, next: i64) {
        self.acknowledged.store(next, Ordering::Relaxed);
    }

    /// Counts documents indexed.
    pub fn add_indexed(&self, documents: u64) {
        self.indexed.fetch_add(documents, Ordering::Relaxed);
    }

    /// Records the lag in milliseconds (`None`: no task measures it).
    pub fn set_lag_ms(&self, lag: Option<i64>) {
        self.lag_ms.store(lag.unwrap_or(UNKNOWN), Ordering::Relaxed);
    }

    /// Records whether the partition is stuck.
    pub fn set_stuck(&self, stuck: bool) {
        self.stuck.store(stuck, Ordering::Relaxed);
    }

    fn get(v: &AtomicI64) -> Option<i64> {
        Some(v.load(Ordering::Relaxed)).filter(|o| *o >= 0)
    }

    /// Messages in the partition not yet acknowledged: high watermark minus
    /// the acknowledged (else committed) offset.
    pub fn lag(&self) -> Option<i64> {
        let high = Self::get(&self.high_watermark)?;
        let done = Self::get(&self.acknowledged).or_else(|| Self::get(&self.committed))?;
        Some((high - done).max(0))
    }
}

/// One partition as shown by `GET /status`.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Lifecycle state.
    pub state: PartitionState,
    /// Offset committed to the consumer group (next offset to read).
    pub committed_offset: Option<i64>,
    /// Offset after the last document Elasticsearch acknowledged (committed
    /// within `kafka.commit_interval`).
    pub acknowledged_offset: Option<i64>,
    /// Offset after the last message read.
    pub read_offset: Option<i64>,
    /// The partition's high watermark, from the client's statistics.
    pub high_watermark: Option<i64>,
    /// `high_watermark - acknowledged_offset`.
    pub lag: Option<i64>,
    /// Age in seconds of the first record not yet acknowledged (0 when
    /// caught up; `None` while no task runs it).
    pub lag_seconds: Option<f64>,
    /// Records after the acknowledged offset have not been acknowledged
    /// for `kafka.stuck_after`.
    pub stuck: bool,
    /// Documents indexed since the partition was assigned here.
    pub documents_indexed: u64,
}

/// Every partition assigned to this instance.
pub struct StatusBoard {
    partitions: Mutex<BTreeMap<TopicPartition, Arc<PartitionStatus>>>,
    joined: AtomicBool,
    metrics: Metrics,
}

impl StatusBoard {
    /// An empty board.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            partitions: Mutex::new(BTreeMap::new()),
            joined: AtomicBool::new(false),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TopicPartition, Arc<PartitionStatus>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.partitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the consumer group answered this member (an
    /// assignment arrived, even an empty one).
    pub fn mark_joined(&self) {
        self.joined.store(true, Ordering::Relaxed);
    }

    /// Whether the consumer group has answered this member yet.
    pub fn joined(&self) -> bool {
        self.joined.load(Ordering::Relaxed)
    }

    /// Adds an assigned partition (or returns its entry).
    pub fn assign(&self, tp: &TopicPartition) -> Arc<PartitionStatus> {
        self.lock().entry(tp.clone()).or_default().clone()
    }

    /// Removes a partition no longer assigned.
    pub fn unassign(&self, tp: &TopicPartition) {
        self.lock().remove(tp);
        let label = PartitionLabel::of(tp);
        self.metrics.partition_lag.remove(&label);
        self.metrics.partition_lag_seconds.remove(&label);
    }

    /// Records the broker's high watermark and refreshes the lag metric.
    pub fn set_high_watermark(&self, topic: &str, partition: i32, high: i64) {
        let tp = TopicPartition::new(topic, partition);
        let Some(status) = self.lock().get(&tp).cloned() else {
            return;
        };
        status.high_watermark.store(high, Ordering::Relaxed);
        if let Some(lag) = status.lag() {
            self.metrics
                .partition_lag
                .get_or_create(&PartitionLabel::of(&tp))
                .set(lag);
        }
    }

    /// Records an offset the group committed.
    pub fn set_committed(&self, topic: &str, partition: i32, next: i64) {
        let tp = TopicPartition::new(topic, partition);
        if let Some(status) = self.lock().get(&tp) {
            status.committed.store(next, Ordering::Relaxed);
        }
    }

    /// The board as reported by `GET /status`.
    pub fn report(&self) -> Vec<PartitionReport> {
        self.lock()
            .iter()
            .map(|(tp, s)| PartitionReport {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                state: PartitionState::from_u8(s.state.load(Ordering::Relaxed)),
                committed_offset: PartitionStatus::get(&s.committed),
                acknowledged_offset: PartitionStatus::get(&s.acknowledged),
                read_offset: PartitionStatus::get(&s.read),
                high_watermark: PartitionStatus::get(&s.high_watermark),
                lag: s.lag(),
                lag_seconds: PartitionStatus::get(&s.lag_ms).map(|ms| ms as f64 / 1000.0),
                stuck: s.stuck.load(Ordering::Relaxed),
                documents_indexed: s.indexed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The partitions reported stuck now.
    pub fn stuck(&self) -> Vec<TopicPartition> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.stuck.load(Ordering::Relaxed))
            .map(|(tp, _)| tp.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn lag_uses_acknowledged_then_committed_offset() {
        let board = StatusBoard::new(Metrics::new(&mut Registry::default(), "t"));
        let tp = TopicPartition::new("t", 0);
        let status = board.assign(&tp);
        assert_eq!(status.lag(), None);
        board.set_high_watermark("t", 0, 100);
        assert_eq!(status.lag(), None);
        board.set_committed("t", 0, 40);
        assert_eq!(status.lag(), Some(60));
        status.set_acknowledged(90);
        status.add_indexed(50);
        assert_eq!(status.lag(), Some(10));
        let report = board.report();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].documents_indexed, 50);
        assert_eq!(report[0].state, PartitionState::Idle);
        board.unassign(&tp);
        assert!(board.report().is_empty());
    }
}
