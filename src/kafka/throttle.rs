//! Per-topic rate limits: one token bucket for documents and one for bytes
//! per topic, shared by the topic's partition tasks, and changed in place
//! when the registry changes the limits (the tasks are not restarted).
//!
//! A task takes a [`Grant`] before it reads (up to a burst's worth of what
//! the buckets hold), reads no more than it allows, and gives back what it
//! did not use when its burst ends, so that the limit holds exactly across
//! partitions while the buckets are touched once per burst, not per record.
//! A task without a grant reads nothing further: its records stay in Kafka
//! (pausing, never dropping). Bytes are known only once a record is read,
//! so the last record of a grant may overdraw the byte bucket; the debt is
//! paid by waiting longer.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::topic::RateLimits;

/// A bucket holds at most this much time's worth of tokens: a topic that
/// was idle may read one second's worth at once, no more.
const CAPACITY: Duration = Duration::from_secs(1);

/// A task waits until the buckets hold this much time's worth of tokens, so
/// that a throttled topic still reads in bursts of some size, not record by
/// record.
const MIN_GRANT: Duration = Duration::from_millis(100);

/// A waiting task looks again at least this often, so that a limit raised
/// (or lifted) in the registry applies within a second.
pub const RECHECK: Duration = Duration::from_millis(250);

/// One token bucket.
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    /// Below 0 after an overdraft.
    tokens: f64,
}

impl Bucket {
    /// A bucket that starts full.
    fn new(per_second: f64) -> Self {
        Self {
            per_second,
            tokens: per_second * CAPACITY.as_secs_f64(),
        }
    }

    fn capacity(&self) -> f64 {
        (self.per_second * CAPACITY.as_secs_f64()).max(1.0)
    }

    /// What a grant must at least be worth: 100 ms of the rate, at least
    /// one token.
    fn min_grant(&self) -> f64 {
        (self.per_second * MIN_GRANT.as_secs_f64()).clamp(1.0, self.capacity())
    }

    fn refill(&mut self, seconds: f64) {
        self.tokens = (self.tokens + self.per_second * seconds).min(self.capacity());
    }

    /// How long until the bucket holds a minimal grant; `None`: now.
    fn wait(&self) -> Option<Duration> {
        let missing = self.min_grant() - self.tokens;
        if missing <= 0.0 {
            None
        } else if self.per_second > 0.0 {
            // At least 1 ms: a rounding error must not make a busy loop.
            let wait = Duration::from_secs_f64(missing / self.per_second);
            Some(wait.clamp(Duration::from_millis(1), RECHECK))
        } else {
            Some(RECHECK)
        }
    }

    /// Takes up to `most` whole tokens.
    fn take(&mut self, most: u64) -> u64 {
        let taken = (self.tokens.floor().max(0.0) as u64).min(most);
        self.tokens -= taken as f64;
        taken
    }

    /// Gives back `unused` tokens of a grant (negative: an overdraft).
    fn give_back(&mut self, unused: f64) {
        self.tokens = (self.tokens + unused).min(self.capacity());
    }
}

#[derive(Debug)]
struct Buckets {
    docs: Option<Bucket>,
    bytes: Option<Bucket>,
    refilled: Instant,
}

impl Buckets {
    fn refill(&mut self, now: Instant) {
        let seconds = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        for bucket in [&mut self.docs, &mut self.bytes].into_iter().flatten() {
            bucket.refill(seconds);
        }
    }
}

/// What one task may read before it asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Documents granted; `None`: no document limit.
    docs: Option<u64>,
    /// Bytes granted; `None`: no byte limit.
    bytes: Option<u64>,
    used_docs: u64,
    used_bytes: u64,
}

impl Grant {
    /// A grant that admits nothing (a task's state before its first).
    pub const NONE: Self = Self {
        docs: Some(0),
        bytes: None,
        used_docs: 0,
        used_bytes: 0,
    };

    /// Whether one more record may be read under it.
    pub fn admits(&self) -> bool {
        self.docs.is_none_or(|d| self.used_docs < d)
            && self.bytes.is_none_or(|b| self.used_bytes < b)
    }

    /// Counts a record read under it.
    pub fn use_one(&mut self, bytes: u64) {
        self.used_docs += 1;
        self.used_bytes += bytes;
    }

    fn is_unlimited(&self) -> bool {
        self.docs.is_none() && self.bytes.is_none()
    }
}

/// The rate limiter of one topic, shared by its partition tasks.
#[derive(Debug)]
pub struct Throttle {
    buckets: Mutex<Buckets>,
}

impl Throttle {
    /// A limiter enforcing `limits`, its buckets full.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                docs: limits.docs_per_second.map(Bucket::new),
                bytes: limits.bytes_per_second.map(Bucket::new),
                refilled: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // A bucket is two numbers, consistent after every statement.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies new limits to the running tasks: a bucket keeps its tokens
    /// (up to its new capacity); a limit set where there was none starts
    /// full.
    pub fn set(&self, limits: RateLimits) {
        let mut guard = self.lock();
        guard.refill(Instant::now());
        let buckets = &mut *guard;
        for (bucket, rate) in [
            (&mut buckets.docs, limits.docs_per_second),
            (&mut buckets.bytes, limits.bytes_per_second),
        ] {
            match (bucket.as_mut(), rate) {
                (Some(b), Some(rate)) => {
                    b.per_second = rate;
                    b.tokens = b.tokens.min(b.capacity());
                }
                (None, Some(rate)) => *bucket = Some(Bucket::new(rate)),
                (_, None) => *bucket = None,
            }
        }
    }

    /// A grant of up to `most` documents and whatever bytes the byte bucket
    /// holds, or the time to ask again (never more than [`RECHECK`] away).
    pub fn acquire(&self, most: u64) -> Result<Grant, Instant> {
        self.acquire_at(most, Instant::now())
    }

    fn acquire_at(&self, most: u64, now: Instant) -> Result<Grant, Instant> {
        let mut buckets = self.lock();
        if buckets.docs.is_none() && buckets.bytes.is_none() {
            return Ok(Grant {
                docs: None,
                bytes: None,
                used_docs: 0,
                used_bytes: 0,
            });
        }
        buckets.refill(now);
        let wait = [&buckets.docs, &buckets.bytes]
            .into_iter()
            .flatten()
            .filter_map(Bucket::wait)
            .max();
        if let Some(wait) = wait {
            return Err(now + wait);
        }
        Ok(Grant {
            docs: buckets.docs.as_mut().map(|b| b.take(most)),
            bytes: buckets.bytes.as_mut().map(|b| b.take(u64::MAX)),
            used_docs: 0,
            used_bytes: 0,
        })
    }

    /// Ends a grant: what it did not use goes back to the buckets (a byte
    /// overdraft is taken from them).
    pub fn release(&self, grant: Grant) {
        if grant.is_unlimited() || grant == Grant::NONE {
            return;
        }
        let mut buckets = self.lock();
        // A bucket added since the grant was made did not give it anything.
        if let (Some(granted), Some(bucket)) = (grant.docs, buckets.docs.as_mut()) {
            bucket.give_back(granted as f64 - grant.used_docs as f64);
        }
        if let (Some(granted), Some(bucket)) = (grant.bytes, buckets.bytes.as_mut()) {
            bucket.give_back(granted as f64 - grant.used_bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(docs: Option<f64>, bytes: Option<f64>) -> RateLimits {
        RateLimits {
            docs_per_second: docs,
            bytes_per_second: bytes,
        }
    }

    /// Reads `records` of `size` bytes as fast as the throttle allows, in
    /// steps of 1 ms, with `tasks` tasks taking turns; returns the
    /// simulated seconds it took.
    fn drain(throttle: &Throttle, records: u64, size: u64, tasks: usize) -> f64 {
        let start = Instant::now();
        let mut now = start;
        let mut read = 0;
        let mut grants = vec![Grant::NONE; tasks];
        while read < records {
            for grant in grants.iter_mut() {
                if !grant.admits() {
                    throttle.release(*grant);
                    *grant = match throttle.acquire_at(4096, now) {
                        Ok(g) => g,
                        Err(at) => {
                            assert!(at > now && at <= now + RECHECK);
                            Grant::NONE
                        }
                    };
                }
                // A burst: up to 7 records, then back to the loop.
                for _ in 0..7 {
                    if read < records && grant.admits() {
                        grant.use_one(size);
                        read += 1;
                    }
                }
                throttle.release(*grant);
                *grant = Grant::NONE;
            }
            now += Duration::from_millis(1);
        }
        (now - start).as_secs_f64()
    }

    #[test]
    fn unlimited_grants_everything() {
        let throttle = Throttle::new(RateLimits::default());
        let grant = throttle.acquire(10).unwrap();
        assert!(grant.is_unlimited());
        // 2 tasks reading 7 records a millisecond each.
        let seconds = drain(&throttle, 100_000, 100, 2);
        assert!(seconds < 7.2, "{seconds}");
    }

    #[test]
    fn documents_per_second_hold_across_tasks() {
        let throttle = Throttle::new(limits(Some(200.0), None));
        // The first second's burst, then 200/s: 2200 records in 10 s.
        let seconds = drain(&throttle, 2_200, 100, 3);
        assert!((9.9..=10.1).contains(&seconds), "{seconds}");
    }

    #[test]
    fn bytes_per_second_hold_with_overdrafts() {
        // Records of 300 bytes against 1000 bytes/s: every grant overdraws.
        let throttle = Throttle::new(limits(None, Some(1_000.0)));
        let seconds = drain(&throttle, 101, 300, 2);
        // 30 300 bytes: the first 1000 at once, the rest at 1000/s (the
        // last record's overdraft is not waited for).
        assert!((28.5..=30.5).contains(&seconds), "{seconds}");
    }

    #[test]
    fn a_new_limit_applies_to_the_next_grant() {
        let throttle = Throttle::new(limits(Some(100.0), None));
        let now = Instant::now();
        let first = throttle.acquire_at(4096, now).unwrap();
        assert_eq!(first.docs, Some(100));
        assert!(throttle.acquire_at(4096, now).is_err());
        throttle.release(first);
        throttle.set(limits(None, None));
        assert!(throttle.acquire_at(4096, now).unwrap().is_unlimited());
        throttle.set(limits(Some(50.0), None));
        assert_eq!(throttle.acquire_at(4096, now).unwrap().docs, Some(50));
    }

    #[test]
    fn zero_holds_the_topic_and_waits_recheck() {
        let throttle = Throttle::new(limits(Some(0.0), None));
        let now = Instant::now();
        assert_eq!(throttle.acquire_at(4096, now), Err(now + RECHECK));
        let later = now + Duration::from_secs(60);
        assert!(throttle.acquire_at(4096, later).is_err());
    }
}
