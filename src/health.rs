//! Liveness signals: the loops that must keep turning (the Kafka group
//! thread, the reconciler) beat a [`Heartbeat`] at least once a second;
//! `/healthz` fails when one has not beaten for too long.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often a healthy loop beats, at least.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The last time a loop showed it was making progress.
#[derive(Debug)]
pub struct Heartbeat {
    name: &'static str,
    last_ms: AtomicU64,
}

impl Heartbeat {
    /// A heartbeat that just beat.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            last_ms: AtomicU64::new(now_ms()),
        }
    }

    /// What beats it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Records progress now.
    pub fn beat(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
impl Heartbeat {
    /// A heartbeat whose last beat was `age` ago.
    pub fn stale(name: &'static str, age: Duration) -> Self {
        let beat = Self::new(name);
        beat.last_ms.store(
            now_ms().saturating_sub(age.as_millis() as u64),
            Ordering::Relaxed,
        );
        beat
    }
}
