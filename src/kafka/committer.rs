//! Commits on acknowledgement.
//!
//! A partition task that stored an acknowledged offset asks for a commit
//! ([`Committer::request`], which never blocks); the `kafka-commit` thread
//! commits the stored offsets of every assigned partition
//! (`commit_consumer_state`), synchronously, so at most one commit is in
//! flight. Requests arriving meanwhile coalesce into one more commit, made
//! no sooner than [`MIN_INTERVAL`] after the previous one started.
//!
//! Why: a hand-over whose final commit is lost (a member killed, or a
//! broker that refuses the revoking member's commit with `IllegalGeneration`
//! because it bumped the generation first) makes the next owner write again
//! everything acknowledged since the last commit. With commits only every
//! `kafka.commit_interval` that is up to a whole interval of records; with
//! commits on acknowledgement it is what was acknowledged in the last
//! fraction of a second. librdkafka's periodic auto-commit stays as the
//! backstop (a failed commit here is not retried until the next request).
//!
//! The pacing is a pure state machine ([`Pacer`]), tested alone; the thread
//! only sleeps, waits and calls librdkafka.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{debug, warn};

use super::consumer::LogConsumer;

/// The shortest time between the starts of two commits on acknowledgement:
/// at most 5 commits a second per member whatever the throughput (one
/// OffsetCommit request each, a small write to `__consumer_offsets`),
/// while a lost final commit costs at most about 200 ms of acknowledged
/// records plus the commit's own round trip.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// What the commit thread should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Commit now (the pacer counts it as in flight until
    /// [`Pacer::finished`]).
    Commit,
    /// A commit is wanted, but not before this instant.
    WaitUntil(Instant),
    /// Nothing to do until a request (or the end of the one in flight).
    Idle,
    /// Stopped: no more commits.
    Stop,
}

/// Coalescing and pacing of commit requests; no I/O, no clock of its own.
#[derive(Debug)]
pub struct Pacer {
    min_interval: Duration,
    pending: bool,
    in_flight: bool,
    last_start: Option<Instant>,
    stopped: bool,
}

impl Pacer {
    /// A pacer leaving at least `min_interval` between commit starts.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            pending: false,
            in_flight: false,
            last_start: None,
            stopped: false,
        }
    }

    /// Asks for a commit; any number of requests before the next commit
    /// starts count as one.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// No commit starts after this.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// The commit started by the last [`Next::Commit`] is over.
    pub fn finished(&mut self) {
        self.in_flight = false;
    }

    /// What to do at `now`.
    pub fn next(&mut self, now: Instant) -> Next {
        if self.stopped {
            return Next::Stop;
        }
        if self.in_flight || !self.pending {
            return Next::Idle;
        }
        if let Some(last) = self.last_start {
            let due = last + self.min_interval;
            if now < due {
                return Next::WaitUntil(due);
            }
        }
        self.pending = false;
        self.in_flight = true;
        self.last_start = Some(now);
        Next::Commit
    }
}

/// The shared handle: tasks request, the commit thread serves.
#[derive(Debug)]
pub struct Committer {
    pacer: Mutex<Pacer>,
    wake: Condvar,
}

impl Committer {
    /// A committer pacing commits by `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            pacer: Mutex::new(Pacer::new(min_interval)),
            wake: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pacer> {
        // The pacer is a few plain fields; a panic while holding the lock
        // cannot leave it inconsistent.
        self.pacer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a commit of the stored offsets. Never blocks on I/O: safe
    /// on a runtime worker.
    pub fn request(&self) {
        self.lock().request();
        self.wake.notify_one();
    }

    /// Ends the commit thread (after the commit in flight, if any).
    pub fn stop(&self) {
        self.lock().stop();
        self.wake.notify_one();
    }

    /// Serves requests with `commit` until stopped.
    fn serve(&self, mut commit: impl FnMut()) {
        let mut pacer = self.lock();
        loop {
            match pacer.next(Instant::now()) {
                Next::Stop => return,
                Next::Idle => {
                    pacer = self.wake.wait(pacer).unwrap_or_else(|e| e.into_inner());
                }
                Next::WaitUntil(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    pacer = self
                        .wake
                        .wait_timeout(pacer, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                Next::Commit => {
                    drop(pacer);
                    commit();
                    pacer = self.lock();
                    pacer.finished();
                }
            }
        }
    }
}

/// Starts the `kafka-commit` thread. It holds the consumer weakly, so the
/// consumer closes when the application drops it; the thread ends at
/// [`Committer::stop`] or when the consumer is gone.
pub fn spawn_commit_thread(
    consumer: Weak<LogConsumer>,
    committer: Arc<Committer>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("kafka-commit".into())
        .spawn(move || {
            let _entered = span.enter();
            let stopper = committer.clone();
            committer.serve(|| {
                let Some(consumer) = consumer.upgrade() else {
                    stopper.lock().stop();
                    return;
                };
                commit_stored(&consumer);
            });
        })
}

/// Commits the stored offsets of the assigned partitions, synchronously.
fn commit_stored(consumer: &LogConsumer) {
    let context = consumer.context();
    // What is stored now is at most what the commit carries (a task may
    // store more meanwhile): right for /status after success.
    let stored = context.stored_offsets();
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {
            context.metrics().ack_commits.inc();
            context.record_committed(&stored);
            debug!(partitions = stored.len(), "acknowledged offsets committed");
        }
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => {
            context.metrics().commit_failures.inc();
            warn!(error = %e, "commit of acknowledged offsets failed; the next acknowledgement or the periodic commit commits them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(200);

    #[test]
    fn requests_coalesce_into_one_commit_and_one_more_after_it() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MIN);
        assert_eq!(p.next(t0), Next::Idle, "nothing requested");
        for _ in 0..1000 {
            p.request();
        }
        assert_eq!(p.next(t0), Next::Commit);
        // A thousand more while it is in flight: nothing starts...
        for _ in 0..1000 {
            p.request();
        }
        assert_eq!(p.next(t0 + MIN * 3), Next::Idle, "one in flight at most");
        p.finished();
        // ...and exactly one more commit once it is over.
        assert_eq!(p.next(t0 + MIN * 3), Next::Commit);
        p.finished();
        assert_eq!(p.next(t0 + MIN * 10), Next::Idle);
    }

    #[test]
    fn commits_start_at_least_the_minimum_interval_apart() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MIN);
        p.request();
        assert_eq!(p.next(t0), Next::Commit);
        p.finished();
        p.request();
        let early = t0 + Duration::from_millis(50);
        assert_eq!(p.next(early), Next::WaitUntil(t0 + MIN));
        assert_eq!(p.next(t0 + MIN), Next::Commit);
    }

    #[test]
    fn a_stopped_pacer_starts_nothing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(MIN);
        p.request();
        p.stop();
        assert_eq!(p.next(t0), Next::Stop);
    }

    #[test]
    fn the_thread_commits_once_per_burst_of_requests() {
        let committer = Arc::new(Committer::new(Duration::from_millis(50)));
        let commits = Arc::new(Mutex::new(0u32));
        let server = {
            let (committer, commits) = (committer.clone(), commits.clone());
            std::thread::spawn(move || {
                committer.serve(|| {
                    *commits.lock().unwrap() += 1;
                    // A slow coordinator: requests pile up meanwhile.
                    std::thread::sleep(Duration::from_millis(30));
                })
            })
        };
        for _ in 0..500 {
            committer.request();
        }
        std::thread::sleep(Duration::from_millis(300));
        committer.stop();
        server.join().unwrap();
        // The burst: one commit, plus at most one for the requests that
        // arrived while it was in flight.
        let n = *commits.lock().unwrap();
        assert!((1..=2).contains(&n), "{n} commits for one burst");
    }
}
