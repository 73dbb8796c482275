//! Stuck detection of one partition task: pure (the clock is passed in),
//! so its rules are tested alone.
//!
//! A partition is stuck when its task holds records after the acknowledged
//! offset (read and not acknowledged, or read and waiting for memory) and
//! the acknowledged offset has not moved for `stuck_after`. A task with
//! nothing to acknowledge is never stuck, however long it waits: the clock
//! starts again whenever the backlog is empty or the offset moves.

use std::time::Duration;

use tokio::time::Instant;

/// A change the task reports (a log line, the gauge, `/readyz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The partition just became stuck.
    Stuck {
        /// How long the acknowledged offset has not moved.
        still_for: Duration,
    },
    /// The partition moved again (or has nothing left to acknowledge)
    /// after being stuck for this long.
    Recovered {
        /// How long the episode lasted, from the last movement.
        after: Duration,
    },
}

/// The progress of one partition task.
#[derive(Debug, Clone)]
pub struct Progress {
    stuck_after: Duration,
    /// The acknowledged offset last seen.
    acknowledged: Option<i64>,
    /// When the acknowledged offset last moved or the backlog was last
    /// empty.
    since: Instant,
    stuck: bool,
}

impl Progress {
    /// A task that starts now.
    pub fn new(stuck_after: Duration, now: Instant) -> Self {
        Self {
            stuck_after,
            acknowledged: None,
            since: now,
            stuck: false,
        }
    }

    /// Whether the partition is stuck now.
    pub fn is_stuck(&self) -> bool {
        self.stuck
    }

    /// Looks at the task: its acknowledged offset (next offset after the
    /// contiguous acknowledged prefix) and whether it holds records after
    /// it. Returns the transition, if any.
    pub fn observe(
        &mut self,
        now: Instant,
        acknowledged: Option<i64>,
        backlog: bool,
    ) -> Option<Transition> {
        let moved = acknowledged != self.acknowledged;
        self.acknowledged = acknowledged;
        if moved || !backlog {
            let after = now.saturating_duration_since(self.since);
            self.since = now;
            if std::mem::take(&mut self.stuck) {
                return Some(Transition::Recovered { after });
            }
            return None;
        }
        let still = now.saturating_duration_since(self.since);
        if !self.stuck && still >= self.stuck_after {
            self.stuck = true;
            return Some(Transition::Stuck { still_for: still });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(120);

    #[test]
    fn a_backlog_that_does_not_move_for_stuck_after_is_stuck_once() {
        let t0 = Instant::now();
        let mut p = Progress::new(AFTER, t0);
        assert_eq!(p.observe(t0, Some(10), true), None);
        assert_eq!(
            p.observe(t0 + Duration::from_secs(119), Some(10), true),
            None
        );
        assert_eq!(
            p.observe(t0 + AFTER, Some(10), true),
            Some(Transition::Stuck { still_for: AFTER })
        );
        assert!(p.is_stuck());
        assert_eq!(
            p.observe(t0 + Duration::from_secs(500), Some(10), true),
            None,
            "reported once per episode"
        );
        assert_eq!(
            p.observe(t0 + Duration::from_secs(600), Some(11), true),
            Some(Transition::Recovered {
                after: Duration::from_secs(600)
            })
        );
        assert!(!p.is_stuck());
        assert_eq!(
            p.observe(t0 + Duration::from_secs(600) + AFTER, Some(11), true),
            Some(Transition::Stuck { still_for: AFTER }),
            "a second episode is reported again"
        );
    }

    #[test]
    fn an_idle_partition_is_never_stuck() {
        let t0 = Instant::now();
        let mut p = Progress::new(AFTER, t0);
        let s = Duration::from_secs(1);
        assert_eq!(p.observe(t0 + 10 * AFTER, None, false), None);
        // The clock starts when the backlog was last seen empty, not at the
        // last acknowledgement.
        assert_eq!(p.observe(t0 + 10 * AFTER + s, None, true), None);
        assert_eq!(p.observe(t0 + 11 * AFTER - s, None, true), None);
        assert_eq!(
            p.observe(t0 + 11 * AFTER, None, true),
            Some(Transition::Stuck { still_for: AFTER })
        );
        assert_eq!(
            p.observe(t0 + 12 * AFTER, None, false),
            Some(Transition::Recovered { after: 2 * AFTER }),
            "nothing left to acknowledge"
        );
    }

    #[test]
    fn a_partition_that_keeps_moving_is_not_stuck() {
        let t0 = Instant::now();
        let mut p = Progress::new(AFTER, t0);
        for i in 0..100 {
            let now = t0 + Duration::from_secs(60 * i);
            assert_eq!(p.observe(now, Some(i as i64), true), None);
        }
    }
}
