//! The retry policy: given what one `_bulk` attempt came to, what becomes
//! of each document sent — stored, sent again, or given up and
//! dead-lettered — and whether to wait before the next attempt.
//!
//! Pure (no I/O, no clock): the driver feeds it typed outcomes and performs
//! what it decides.
//!
//! * A failed request (connection, timeout, 429, 5xx, 401/403, a 2xx that
//!   is not a bulk reply) is retried with backoff, without limit: the
//!   destination is waited for, nothing is lost; the partition task decides
//!   when to stop waiting (drain deadline), and what it gives up is never
//!   acknowledged.
//! * A 413 halves the documents per request; a single document answered
//!   413 is rejected for good with that reason (it cannot ever fit).
//! * Item 429/5xx: sent again (with backoff) while the document's item has
//!   been answered so for no longer than `max_item_retry_duration`, then
//!   rejected for good with the last answer. Only the time between two
//!   replies that both answered the item 429/5xx counts: a request that
//!   failed as a whole in between (the cluster down) is waited for, as
//!   above, and does not use up the document's time.
//! * Other item 4xx: sent again up to `max_item_attempts`, then rejected
//!   for good.

use std::fmt;
use std::time::{Duration, Instant};

use super::reply::{ItemError, ItemStatus, ReplyError};

/// Why a request failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No answer: connection refused or reset, timeout, TLS failure.
    #[error("request failed: {0}")]
    Transport(String),
    /// An HTTP error status for the whole request.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The body of a 2xx answer could not be read to its end.
    #[error("reading the reply failed: {0}")]
    Unreadable(String),
    /// A 2xx answer that is not a bulk reply for the documents sent.
    #[error(transparent)]
    Malformed(#[from] ReplyError),
}

impl RequestError {
    /// Whether the cluster is pushing back (429, 503...) rather than
    /// failing: the concurrency limit should shrink.
    pub fn is_back_pressure(&self) -> bool {
        match self {
            RequestError::Status { status, .. } => *status == 429 || *status >= 500,
            RequestError::Transport(_) => true,
            _ => false,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A bulk reply: one status per document sent, in order.
    Items(Vec<ItemStatus>),
    /// 413: the request was too large.
    TooLarge,
    /// The request failed as a whole.
    Failed(RequestError),
}

/// Why a document was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// Elasticsearch refused it, `attempts` times.
    Item {
        /// The last refusal.
        error: ItemError,
        /// Attempts made.
        attempts: u32,
    },
    /// Elasticsearch kept answering it 429/5xx for longer than the limit.
    RetryExpired {
        /// The last answer.
        error: ItemError,
        /// How long its item had been answered so.
        failing_for: Duration,
    },
    /// Answered 413 alone: larger than the cluster accepts.
    TooLarge,
    /// Refused before sending (by shaping), with why.
    Refused(String),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Item { error, .. } => write!(f, "{error}"),
            RejectReason::RetryExpired { error, failing_for } => write!(
                f,
                "{error} (answered so for {}, over elasticsearch.max_item_retry_duration)",
                humantime::format_duration(rounded(*failing_for))
            ),
            RejectReason::Refused(reason) => f.write_str(reason),
            RejectReason::TooLarge => write!(
                f,
                "413 request entity too large: the document alone exceeds the cluster's request limit"
            ),
        }
    }
}

/// `d` to the second (to the millisecond under a second), for messages.
fn rounded(d: Duration) -> Duration {
    if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}

/// What becomes of one document sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Stored.
    Stored,
    /// Sent again.
    Again,
    /// Given up: dead-letter it.
    Rejected(RejectReason),
}

/// The policy's decision about one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// One fate per document sent, in order.
    pub fates: Vec<Fate>,
    /// Wait (backoff) before the next attempt.
    pub backoff: bool,
    /// Send at most this many documents per request from now on.
    pub shrink_to: Option<usize>,
    /// Why the attempt was not a full success, for the log.
    pub reason: Option<String>,
}

/// What one document's earlier attempts came to, as far as the policy
/// needs to know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Permanent (4xx) item refusals so far.
    pub refusals: u32,
    /// Time its item was answered 429/5xx, summed over the intervals
    /// between two replies that both answered so.
    pub failing_for: Duration,
    /// When the last reply answered its item 429/5xx, if the last attempt
    /// did; `None` after any other outcome (a failed request, 413, a 4xx).
    pub failing_since: Option<Instant>,
}

/// The retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of a document refused with a permanent item error before it
    /// is rejected for good.
    pub max_item_attempts: u32,
    /// How long a document's item may keep being answered 429/5xx before
    /// it is rejected for good.
    pub max_item_retry_duration: Duration,
}

impl RetryPolicy {
    /// Decides about an attempt, answered at `now`, that sent
    /// `histories.len()` documents; each entry is that document's history
    /// and is updated.
    pub fn decide(&self, attempt: Attempt, histories: &mut [History], now: Instant) -> Decision {
        let sent = histories.len();
        if !matches!(attempt, Attempt::Items(_)) {
            // No word about the items: the interval being measured ends
            // here, without counting.
            for h in histories.iter_mut() {
                h.failing_since = None;
            }
        }
        match attempt {
            Attempt::Failed(error) => Decision {
                fates: vec![Fate::Again; sent],
                backoff: true,
                shrink_to: None,
                reason: Some(error.to_string()),
            },
            Attempt::TooLarge if sent > 1 => Decision {
                fates: vec![Fate::Again; sent],
                backoff: false,
                shrink_to: Some(sent.div_ceil(2)),
                reason: Some("413 request entity too large".into()),
            },
            Attempt::TooLarge => Decision {
                fates: vec![Fate::Rejected(RejectReason::TooLarge); sent],
                backoff: false,
                shrink_to: None,
                reason: None,
            },
            Attempt::Items(items) => {
                let mut reason = None;
                let fates = items
                    .into_iter()
                    .zip(histories.iter_mut())
                    .map(|(item, history)| match item {
                        ItemStatus::Stored => Fate::Stored,
                        ItemStatus::Retry(error) => {
                            if let Some(since) = history.failing_since {
                                history.failing_for += now.saturating_duration_since(since);
                            }
                            history.failing_since = Some(now);
                            if history.failing_for > self.max_item_retry_duration {
                                Fate::Rejected(RejectReason::RetryExpired {
                                    error,
                                    failing_for: history.failing_for,
                                })
                            } else {
                                reason.get_or_insert_with(|| error.to_string());
                                Fate::Again
                            }
                        }
                        ItemStatus::Rejected(error) => {
                            history.failing_since = None;
                            history.refusals += 1;
                            if history.refusals >= self.max_item_attempts {
                                Fate::Rejected(RejectReason::Item {
                                    error,
                                    attempts: history.refusals,
                                })
                            } else {
                                reason.get_or_insert_with(|| error.to_string());
                                Fate::Again
                            }
                        }
                    })
                    .collect();
                Decision {
                    fates,
                    backoff: reason.is_some(),
                    shrink_to: None,
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16) -> ItemError {
        ItemError {
            status,
            kind: Some("x".into()),
            reason: None,
        }
    }

    fn policy(max_item_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_item_attempts,
            max_item_retry_duration: Duration::from_secs(600),
        }
    }

    fn fresh(n: usize) -> Vec<History> {
        vec![History::default(); n]
    }

    #[test]
    fn failed_requests_retry_everything_with_backoff() {
        let p = policy(3);
        let d = p.decide(
            Attempt::Failed(RequestError::Malformed(ReplyError::Shape("{}".into()))),
            &mut fresh(2),
            Instant::now(),
        );
        assert_eq!(d.fates, vec![Fate::Again, Fate::Again]);
        assert!(d.backoff);
        assert!(d.reason.unwrap().contains("not a bulk reply"));
    }

    #[test]
    fn too_large_halves_then_rejects_a_lone_document() {
        let p = policy(3);
        let t0 = Instant::now();
        let mut h = fresh(5);
        h[0].failing_since = Some(t0);
        let d = p.decide(Attempt::TooLarge, &mut h, t0 + Duration::from_secs(60));
        assert_eq!(d.shrink_to, Some(3));
        assert!(!d.backoff);
        // No word about the items: nothing counts against them.
        assert_eq!(h[0].failing_since, None);
        assert_eq!(h[0].failing_for, Duration::ZERO);
        let d = p.decide(Attempt::TooLarge, &mut fresh(1), Instant::now());
        assert_eq!(d.fates, vec![Fate::Rejected(RejectReason::TooLarge)]);
        assert!(RejectReason::TooLarge.to_string().starts_with("413"));
    }

    #[test]
    fn item_errors_retry_or_reject_after_the_attempt_limit() {
        let p = policy(2);
        let mut histories = fresh(3);
        let now = Instant::now();
        let items = || {
            Attempt::Items(vec![
                ItemStatus::Stored,
                ItemStatus::Retry(error(429)),
                ItemStatus::Rejected(error(400)),
            ])
        };
        let d = p.decide(items(), &mut histories, now);
        assert_eq!(d.fates, vec![Fate::Stored, Fate::Again, Fate::Again]);
        assert!(d.backoff);
        let d = p.decide(items(), &mut histories, now);
        assert_eq!(
            d.fates[1],
            Fate::Again,
            "429 is retried within the time limit"
        );
        assert_eq!(
            d.fates[2],
            Fate::Rejected(RejectReason::Item {
                error: error(400),
                attempts: 2
            })
        );
        let d = p.decide(Attempt::Items(vec![ItemStatus::Stored]), &mut fresh(1), now);
        assert!(!d.backoff && d.reason.is_none());
    }

    fn item(status: ItemStatus) -> Attempt {
        Attempt::Items(vec![status])
    }

    #[test]
    fn an_item_answered_5xx_for_longer_than_the_limit_is_rejected_with_the_last_answer() {
        let p = RetryPolicy {
            max_item_attempts: 3,
            max_item_retry_duration: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = fresh(1);
        // The first answer starts the clock; 10 s of answers are allowed.
        for s in [0, 4, 10] {
            let d = p.decide(item(ItemStatus::Retry(error(503))), &mut h, at(s));
            assert_eq!(d.fates, vec![Fate::Again], "at {s} s");
            assert!(d.backoff);
        }
        assert_eq!(h[0].failing_for, Duration::from_secs(10));
        let last = ItemError {
            status: 429,
            kind: Some("circuit_breaking_exception".into()),
            reason: Some("data too large".into()),
        };
        let d = p.decide(item(ItemStatus::Retry(last.clone())), &mut h, at(11));
        let reason = RejectReason::RetryExpired {
            error: last,
            failing_for: Duration::from_secs(11),
        };
        assert_eq!(d.fates, vec![Fate::Rejected(reason.clone())]);
        assert!(d.reason.is_none() && !d.backoff);
        assert_eq!(
            reason.to_string(),
            "429 circuit_breaking_exception: data too large (answered so for 11s, over elasticsearch.max_item_retry_duration)"
        );
    }

    #[test]
    fn time_while_whole_requests_fail_does_not_count_against_an_item() {
        let p = RetryPolicy {
            max_item_attempts: 3,
            max_item_retry_duration: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = fresh(1);
        let retry = || item(ItemStatus::Retry(error(503)));
        let down = || Attempt::Failed(RequestError::Transport("connection refused".into()));
        assert_eq!(p.decide(retry(), &mut h, at(0)).fates, [Fate::Again]);
        assert_eq!(p.decide(retry(), &mut h, at(6)).fates, [Fate::Again]);
        // The cluster down for an hour: waited for, whatever the item's time.
        for s in (7..3600).step_by(60) {
            let d = p.decide(down(), &mut h, at(s));
            assert_eq!(d.fates, [Fate::Again]);
        }
        assert_eq!(h[0].failing_for, Duration::from_secs(6));
        // Back: the interval after the outage starts afresh.
        assert_eq!(p.decide(retry(), &mut h, at(3700)).fates, [Fate::Again]);
        assert_eq!(p.decide(retry(), &mut h, at(3704)).fates, [Fate::Again]);
        assert_eq!(h[0].failing_for, Duration::from_secs(10));
        assert!(matches!(
            p.decide(retry(), &mut h, at(3705)).fates[..],
            [Fate::Rejected(RejectReason::RetryExpired { .. })]
        ));
    }

    #[test]
    fn a_stored_neighbour_or_a_4xx_does_not_share_an_items_clock() {
        let p = RetryPolicy {
            max_item_attempts: 5,
            max_item_retry_duration: Duration::from_secs(10),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = fresh(2);
        let both = |a: ItemStatus, b: ItemStatus| Attempt::Items(vec![a, b]);
        let d = p.decide(
            both(ItemStatus::Retry(error(500)), ItemStatus::Retry(error(500))),
            &mut h,
            at(0),
        );
        assert_eq!(d.fates, [Fate::Again, Fate::Again]);
        // The second one answered 400 once: its 5xx interval is broken.
        let d = p.decide(
            both(
                ItemStatus::Retry(error(500)),
                ItemStatus::Rejected(error(400)),
            ),
            &mut h,
            at(8),
        );
        assert_eq!(d.fates, [Fate::Again, Fate::Again]);
        let d = p.decide(
            both(ItemStatus::Retry(error(500)), ItemStatus::Retry(error(500))),
            &mut h,
            at(12),
        );
        assert!(matches!(
            d.fates[0],
            Fate::Rejected(RejectReason::RetryExpired { .. })
        ));
        assert_eq!(d.fates[1], Fate::Again);
        assert_eq!(h[1].failing_for, Duration::ZERO);
        assert_eq!(h[1].refusals, 1);
    }

    #[test]
    fn back_pressure_is_429_5xx_and_transport() {
        let status = |status| RequestError::Status {
            status,
            body: String::new(),
        };
        assert!(status(429).is_back_pressure());
        assert!(status(503).is_back_pressure());
        assert!(!status(401).is_back_pressure());
        assert!(RequestError::Transport("reset".into()).is_back_pressure());
        assert!(!RequestError::Unreadable("eof".into()).is_back_pressure());
    }
}
