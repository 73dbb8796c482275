//! The process-wide memory budget for documents in flight.
//!
//! Every byte logingest holds for a record between reading it from Kafka
//! and its acknowledgement — the encoded document in an open chunk, the
//! request bodies in flight, the raw record kept for dead-lettering — is
//! reserved here first. When the budget is spent, partition tasks stop
//! reading and, after a moment, pause their partitions (which also drops
//! librdkafka's prefetch of them); the reservations return when
//! Elasticsearch acknowledges (or the chunk is abandoned). The
//! `logingest_buffered_bytes` gauge is the reserved total, and it cannot
//! exceed `logingest_memory_budget_bytes`.
//!
//! A semaphore whose permits are bytes does the accounting: fair (FIFO),
//! and a reservation is a value that gives its bytes back when dropped.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget, shared by every partition task.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    limit: usize,
    permits: Arc<Semaphore>,
    gauge: Gauge,
}

/// Bytes reserved from the budget; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    gauge: Gauge,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, reported through `used` (and `limit`
    /// through `budget`).
    pub fn new(limit: usize, used: Gauge, budget: &Gauge) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        budget.set(limit as i64);
        Self {
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            gauge: used,
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.limit - self.permits.available_permits()
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// A reservation of nothing, to merge others into.
    pub fn empty(&self) -> Reservation {
        Reservation {
            permit: None,
            gauge: self.gauge.clone(),
        }
    }

    /// One acquisition: at most the whole budget (a record larger than the
    /// budget waits until it is alone), and at most what one acquisition of
    /// the semaphore can take.
    fn amount(&self, bytes: usize) -> u32 {
        bytes.clamp(1, self.limit).min(u32::MAX as usize) as u32
    }

    fn reservation(&self, permit: OwnedSemaphorePermit) -> Reservation {
        self.gauge.inc_by(permit.num_permits() as i64);
        Reservation {
            permit: Some(permit),
            gauge: self.gauge.clone(),
        }
    }

    /// Reserves `bytes` if they are available now.
    pub fn try_reserve(&self, bytes: usize) -> Option<Reservation> {
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(self.amount(bytes))
            .ok()?;
        Some(self.reservation(permit))
    }

    /// Reserves `bytes`, waiting (in FIFO order with the other waiters)
    /// until they are available.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        match self
            .permits
            .clone()
            .acquire_many_owned(self.amount(bytes))
            .await
        {
            Ok(permit) => self.reservation(permit),
            // The semaphore is never closed.
            Err(_) => self.empty(),
        }
    }
}

impl Reservation {
    /// Adds `other`'s bytes to this reservation.
    pub fn merge(&mut self, mut other: Reservation) {
        match (&mut self.permit, other.permit.take()) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gauge.dec_by(permit.num_permits() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_are_bounded_merged_and_given_back() {
        let used = Gauge::default();
        let budget = MemoryBudget::new(1000, used.clone(), &Gauge::default());
        let mut a = budget.try_reserve(600).unwrap();
        assert!(budget.try_reserve(500).is_none(), "over budget");
        a.merge(budget.try_reserve(400).unwrap());
        assert_eq!(a.bytes(), 1000);
        assert_eq!(used.get(), 1000);
        assert_eq!(budget.used(), 1000);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(5000).await.bytes() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        assert_eq!(waiting.await.unwrap(), 1000, "clamped to the whole budget");
        assert_eq!(used.get(), 0);
        let mut empty = budget.empty();
        empty.merge(budget.try_reserve(10).unwrap());
        assert_eq!(empty.bytes(), 10);
    }
}
