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
//! * Item 429/5xx: sent again (with backoff). Other item 4xx: sent again up
//!   to `max_item_attempts`, then rejected for good.

use std::fmt;

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
    /// Answered 413 alone: larger than the cluster accepts.
    TooLarge,
    /// Refused before sending (by shaping), with why.
    Refused(String),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::Item { error, .. } => write!(f, "{error}"),
            RejectReason::Refused(reason) => f.write_str(reason),
            RejectReason::TooLarge => write!(
                f,
                "413 request entity too large: the document alone exceeds the cluster's request limit"
            ),
        }
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

/// The retry policy.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts of a document refused with a permanent item error before it
    /// is rejected for good.
    pub max_item_attempts: u32,
}

impl RetryPolicy {
    /// Decides about an attempt that sent `attempts.len()` documents; each
    /// entry of `attempts` counts that document's permanent refusals so far
    /// and is updated.
    pub fn decide(&self, attempt: Attempt, attempts: &mut [u32]) -> Decision {
        let sent = attempts.len();
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
                    .zip(attempts.iter_mut())
                    .map(|(item, tries)| match item {
                        ItemStatus::Stored => Fate::Stored,
                        ItemStatus::Retry(error) => {
                            reason.get_or_insert_with(|| error.to_string());
                            Fate::Again
                        }
                        ItemStatus::Rejected(error) => {
                            *tries += 1;
                            if *tries >= self.max_item_attempts {
                                Fate::Rejected(RejectReason::Item {
                                    error,
                                    attempts: *tries,
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

    #[test]
    fn failed_requests_retry_everything_with_backoff() {
        let p = RetryPolicy {
            max_item_attempts: 3,
        };
        let d = p.decide(
            Attempt::Failed(RequestError::Malformed(ReplyError::Shape("{}".into()))),
            &mut [0, 0],
        );
        assert_eq!(d.fates, vec![Fate::Again, Fate::Again]);
        assert!(d.backoff);
        assert!(d.reason.unwrap().contains("not a bulk reply"));
    }

    #[test]
    fn too_large_halves_then_rejects_a_lone_document() {
        let p = RetryPolicy {
            max_item_attempts: 3,
        };
        let d = p.decide(Attempt::TooLarge, &mut [0; 5]);
        assert_eq!(d.shrink_to, Some(3));
        assert!(!d.backoff);
        let d = p.decide(Attempt::TooLarge, &mut [0]);
        assert_eq!(d.fates, vec![Fate::Rejected(RejectReason::TooLarge)]);
        assert!(RejectReason::TooLarge.to_string().starts_with("413"));
    }

    #[test]
    fn item_errors_retry_or_reject_after_the_attempt_limit() {
        let p = RetryPolicy {
            max_item_attempts: 2,
        };
        let mut attempts = [0, 0, 0];
        let items = || {
            Attempt::Items(vec![
                ItemStatus::Stored,
                ItemStatus::Retry(error(429)),
                ItemStatus::Rejected(error(400)),
            ])
        };
        let d = p.decide(items(), &mut attempts);
        assert_eq!(d.fates, vec![Fate::Stored, Fate::Again, Fate::Again]);
        assert!(d.backoff);
        let d = p.decide(items(), &mut attempts);
        assert_eq!(d.fates[1], Fate::Again, "429 is retried without limit");
        assert_eq!(
            d.fates[2],
            Fate::Rejected(RejectReason::Item {
                error: error(400),
                attempts: 2
            })
        );
        let d = p.decide(Attempt::Items(vec![ItemStatus::Stored]), &mut [0]);
        assert!(!d.backoff && d.reason.is_none());
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
