//! The fence of one partition assignment.
//!
//! Every time the group assigns a partition to this member, the rebalance
//! callback creates an [`Assignment`] with a new generation; every task of
//! that partition stores offsets only through it. When the partition is
//! revoked, the callback closes the fence *before* librdkafka hands the
//! partition over, and then commits the last offset stored through it. A
//! task that is still draining after that (its requests outlived the drain
//! deadline), or that belongs to an older assignment of a partition that
//! came back, can no longer store or commit anything: the group's committed
//! offset never moves backwards because of a stale task. The fence is a
//! value the task holds, not a timer.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::offsets::StoreOffset;
use crate::topic::TopicPartition;

/// Offset value meaning "none yet".
const NONE: i64 = -1;

/// Why an offset was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The partition was revoked from this assignment (or the offset
    /// belongs to an older one).
    #[error("partition {partition} is no longer assigned to generation {generation}")]
    Fenced {
        /// The partition.
        partition: TopicPartition,
        /// The generation the offset belonged to.
        generation: u64,
    },
    /// librdkafka refused the offset.
    #[error("storing offset {offset} of {partition}: {source}")]
    Kafka {
        /// The partition.
        partition: TopicPartition,
        /// The offset.
        offset: i64,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
}

#[derive(Debug)]
struct FenceState {
    open: bool,
    stored: Option<i64>,
}

/// One assignment of one partition to this member.
#[derive(Debug)]
pub struct Assignment {
    partition: TopicPartition,
    generation: u64,
    state: Mutex<FenceState>,
    /// The first offset the current task read (for restarting a task that
    /// died without its tracker).
    first_read: AtomicI64,
}

impl Assignment {
    /// A fresh, open assignment.
    pub fn new(partition: TopicPartition, generation: u64) -> Self {
        Self {
            partition,
            generation,
            state: Mutex::new(FenceState {
                open: true,
                stored: None,
            }),
            first_read: AtomicI64::new(NONE),
        }
    }

    /// The partition.
    pub fn partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// This assignment's generation (unique in the process).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        // The state is two plain fields; a panic while holding the lock
        // cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the partition is still assigned through this assignment.
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// Stores `offset` for the group's next commit, if this assignment is
    /// still open and the offset belongs to it. The check and the store
    /// happen under the fence's lock, so a revoke cannot slip between them.
    pub fn store<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
        &self,
        consumer: &C,
        offset: StoreOffset,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        if !state.open || offset.generation != self.generation {
            return Err(StoreError::Fenced {
                partition: self.partition.clone(),
                generation: offset.generation,
            });
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.partition.topic,
            self.partition.partition,
            Offset::Offset(offset.next),
        )
        .and_then(|()| consumer.store_offsets(&tpl))
        .map_err(|source| StoreError::Kafka {
            partition: self.partition.clone(),
            offset: offset.next,
            source,
        })?;
        state.stored = Some(offset.next);
        Ok(())
    }

    /// The last offset stored through this assignment.
    pub fn stored(&self) -> Option<i64> {
        self.lock().stored
    }

    /// Closes the fence: nothing is stored through it any more. Returns the
    /// last offset stored, for the final commit of the hand-over.
    pub fn close(&self) -> Option<i64> {
        let mut state = self.lock();
        state.open = false;
        state.stored
    }

    /// Records the first offset read by the partition's current task.
    pub fn set_first_read(&self, offset: Option<i64>) {
        self.first_read
            .store(offset.unwrap_or(NONE), Ordering::Relaxed);
    }

    /// Where a task that died without its tracker must resume: after the
    /// last stored offset, or at the first offset it read when it stored
    /// nothing. `None` when it read nothing (the queue position is right).
    pub fn restart_point(&self) -> Option<i64> {
        let first = Some(self.first_read.load(Ordering::Relaxed)).filter(|o| *o >= 0)?;
        Some(self.stored().map_or(first, |stored| stored.max(first)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::ClientConfig;

    fn consumer() -> BaseConsumer {
        // No broker is contacted: storing an offset of an unassigned
        // partition fails locally, which is all these tests need.
        ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("group.id", "fence-test")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("consumer")
    }

    #[test]
    fn a_closed_or_foreign_fence_refuses_to_store() {
        let consumer = consumer();
        let a = Assignment::new(TopicPartition::new("t", 0), 4);
        let foreign = StoreOffset {
            next: 10,
            generation: 3,
        };
        assert!(matches!(
            a.store(&consumer, foreign),
            Err(StoreError::Fenced { generation: 3, .. })
        ));
        assert_eq!(a.close(), None);
        let own = StoreOffset {
            next: 10,
            generation: 4,
        };
        assert!(matches!(
            a.store(&consumer, own),
            Err(StoreError::Fenced { .. })
        ));
        assert!(!a.is_open());
        assert_eq!(a.stored(), None);
    }

    #[test]
    fn restart_point_is_after_the_stored_prefix_or_the_first_read() {
        let a = Assignment::new(TopicPartition::new("t", 0), 1);
        assert_eq!(a.restart_point(), None);
        a.set_first_read(Some(40));
        assert_eq!(a.restart_point(), Some(40));
        a.lock().stored = Some(30); // stored by an earlier task
        assert_eq!(a.restart_point(), Some(40));
        a.lock().stored = Some(55);
        assert_eq!(a.restart_point(), Some(55));
    }
}
