//! The group consumer and the typed events it hands to the reconciler.
//!
//! librdkafka's callbacks never touch async state: on assignment they split
//! one queue per partition, give each assignment its fence
//! ([`Assignment`], a new generation) and send [`KafkaEvent::Assigned`]; on
//! revocation they send [`KafkaEvent::Revoked`], wait (bounded) until the
//! reconciler says the partitions' tasks have drained, then close the
//! fences and commit what was stored through them — before librdkafka hands
//! the partitions over, so the next owner starts exactly after what was
//! acknowledged and no stale task can move the group's offset afterwards.
//!
//! The callbacks run on the group thread ([`spawn_group_thread`]), which
//! serves the consumer's main queue and never touches the runtime.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::assignment::Assignment;
use super::committer::{Committer, MIN_INTERVAL};
use super::status::StatusBoard;
use crate::config::{KafkaConfig, StartFrom};
use crate::health::{Heartbeat, BEAT_INTERVAL};
use crate::metrics::{Metrics, RebalanceKind};
use crate::topic::TopicPartition;

/// The consumer type used throughout logingest.
pub type LogConsumer = StreamConsumer<GroupContext>;
/// The queue of one assigned partition.
pub type PartitionQueue = StreamPartitionQueue<GroupContext>;

/// Consumer-group events, sent from librdkafka's callbacks.
pub enum KafkaEvent {
    /// Partitions given to this member, each with its own message queue
    /// and the fence of this assignment.
    Assigned(Vec<(PartitionQueue, Arc<Assignment>)>),
    /// Partitions taken away. librdkafka hands them over once `done` is
    /// signalled (or the revoke timeout passes).
    Revoked {
        /// The partitions revoked.
        partitions: Vec<TopicPartition>,
        /// Signalled when their tasks have drained.
        done: std_mpsc::SyncSender<()>,
    },
    /// `subscribe` failed; the reconciler tries again.
    SubscribeFailed(String),
}

impl fmt::Debug for KafkaEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaEvent::Assigned(p) => f
                .debug_tuple("Assigned")
                .field(
                    &p.iter()
                        .map(|(_, a)| format!("{} (generation {})", a.partition(), a.generation()))
                        .collect::<Vec<_>>(),
                )
                .finish(),
            KafkaEvent::SubscribeFailed(e) => f.debug_tuple("SubscribeFailed").field(e).finish(),
            KafkaEvent::Revoked { partitions, .. } => f
                .debug_tuple("Revoked")
                .field(
                    &partitions
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>(),
                )
                .finish(),
        }
    }
}

/// The rdkafka context: turns callbacks into [`KafkaEvent`]s.
pub struct GroupContext {
    events: mpsc::UnboundedSender<KafkaEvent>,
    board: Arc<StatusBoard>,
    consumer: OnceLock<Weak<LogConsumer>>,
    revoke_timeout: Duration,
    /// The open assignment of every partition this member owns.
    assignments: Mutex<HashMap<TopicPartition, Arc<Assignment>>>,
    generations: AtomicU64,
    /// Beaten by the group thread's loop.
    pub heartbeat: Arc<Heartbeat>,
    metrics: Metrics,
    /// Commits on acknowledgement, served by the `kafka-commit` thread.
    pub committer: Arc<Committer>,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => debug!(target: "librdkafka", facility = fac, "{log_message}"),
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition >= 0 && p.hi_offset >= 0 {
                    self.board
                        .set_high_watermark(topic, *partition, p.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.kafka_errors.inc();
        warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.on_assign(tpl),
            Rebalance::Revoke(tpl) => self.on_revoke(base, tpl),
            Rebalance::Error(e) => {
                self.metrics.kafka_errors.inc();
                warn!(error = %e, "consumer group rebalance error");
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for e in offsets.elements() {
                    if let rdkafka::Offset::Offset(next) = e.offset() {
                        self.board.set_committed(e.topic(), e.partition(), next);
                    }
                }
                debug!(partitions = offsets.count(), "offsets committed");
            }
            // Nothing stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.commit_failures.inc();
                warn!(error = %e, "offset commit failed; it is retried at the next interval")
            }
        }
    }
}

impl GroupContext {
    fn lock_assignments(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, Arc<Assignment>>> {
        self.assignments.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Asks the `kafka-commit` thread to commit the stored offsets soon
    /// (coalesced, paced; never blocks).
    pub fn request_commit(&self) {
        self.committer.request();
    }

    /// The offset stored through each open assignment.
    pub fn stored_offsets(&self) -> Vec<(TopicPartition, i64)> {
        self.lock_assignments()
            .iter()
            .filter_map(|(tp, a)| Some((tp.clone(), a.stored()?)))
            .collect()
    }

    /// Records committed offsets on the status board.
    pub fn record_committed(&self, offsets: &[(TopicPartition, i64)]) {
        for (tp, next) in offsets {
            self.board.set_committed(&tp.topic, tp.partition, *next);
        }
    }

    fn on_assign(&self, tpl: &TopicPartitionList) {
        self.metrics.rebalance(RebalanceKind::Assign);
        self.board.mark_joined();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        // Split before librdkafka starts fetching, so no message of these
        // partitions ever lands in the main queue.
        let mut assigned = Vec::new();
        for tp in partitions_of(tpl) {
            let Some(queue) = consumer.split_partition_queue(&tp.topic, tp.partition) else {
                error!(partition = %tp, "cannot split the partition's queue; it will not be consumed");
                continue;
            };
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            let assignment = Arc::new(Assignment::new(tp.clone(), generation));
            if let Some(stale) = self.lock_assignments().insert(tp, assignment.clone()) {
                // Assigned again without a revoke in between (a lost
                // assignment): the old fence must not store any more.
                stale.close();
            }
            assigned.push((queue, assignment));
        }
        info!(partitions = ?assigned.iter().map(|(_, a)| a.partition().to_string()).collect::<Vec<_>>(), "partitions assigned");
        let _ = self.events.send(KafkaEvent::Assigned(assigned));
    }

    fn on_revoke(&self, base: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        self.metrics.rebalance(RebalanceKind::Revoke);
        let partitions = partitions_of(tpl);
        info!(partitions = ?partitions.iter().map(ToString::to_string).collect::<Vec<_>>(), "partitions revoked");
        let (done, wait) = std_mpsc::sync_channel(1);
        if self
            .events
            .send(KafkaEvent::Revoked {
                partitions: partitions.clone(),
                done,
            })
            .is_ok()
        {
            // This runs on the group thread, never on a runtime worker, so
            // blocking here only delays the hand-over, as the protocol
            // intends.
            if wait.recv_timeout(self.revoke_timeout).is_err() {
                warn!(timeout = ?self.revoke_timeout, "revoked partitions did not finish draining in time; fencing them and handing them over");
            }
        }
        // Fence, then commit what was stored: after this nothing of these
        // assignments reaches the group any more.
        let mut final_offsets = TopicPartitionList::new();
        {
            let mut assignments = self.lock_assignments();
            for tp in &partitions {
                let Some(assignment) = assignments.remove(tp) else {
                    continue;
                };
                if let Some(next) = assignment.close() {
                    let _ = final_offsets.add_partition_offset(
                        &tp.topic,
                        tp.partition,
                        Offset::Offset(next),
                    );
                }
            }
        }
        if final_offsets.count() == 0 {
            return;
        }
        match base.commit(&final_offsets, CommitMode::Sync) {
            Ok(()) => {
                for e in final_offsets.elements() {
                    if let Offset::Offset(next) = e.offset() {
                        self.board.set_committed(e.topic(), e.partition(), next);
                    }
                }
                debug!(
                    partitions = final_offsets.count(),
                    "offsets of revoked partitions committed"
                );
            }
            Err(e) => {
                self.metrics.commit_failures.inc();
                warn!(error = %e, "commit of revoked partitions failed; the next owner reads again from the last committed offsets");
            }
        }
    }
}

/// librdkafka's prefetch, derived from the memory budget: each partition's
/// queue is topped up while it holds less than `window` bytes, by fetches
/// of at most `window` bytes per partition and `fetch` bytes per request.
/// (librdkafka fixes these when the client is created; what keeps the
/// prefetch of a partition from growing while the sink is behind is that
/// its task pauses it, and a pause drops librdkafka's queue of it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetch {
    /// `queued.max.messages.kbytes` × 1024 and `fetch.message.max.bytes`.
    pub window: usize,
    /// `fetch.max.bytes`.
    pub fetch: usize,
}

impl Prefetch {
    /// The prefetch for a budget of `budget` bytes.
    pub fn for_budget(budget: usize) -> Self {
        Self {
            window: (budget / 128).clamp(64 << 10, 1 << 20),
            fetch: (budget / 8).clamp(1 << 20, 64 << 20),
        }
    }
}

/// Builds the librdkafka configuration: logingest's settings, then
/// `[kafka.tls]`/`[kafka.sasl]`, then the user's `[kafka.options]` (which
/// win, except for the keys logingest owns, which validation refuses).
pub fn client_config(config: &KafkaConfig, instance_id: &str, prefetch: Prefetch) -> ClientConfig {
    let mut defaults: BTreeMap<&str, String> = BTreeMap::new();
    defaults.insert("client.id", instance_id.into());
    defaults.insert("partition.assignment.strategy", "cooperative-sticky".into());
    defaults.insert("enable.partition.eof", "false".into());
    // Find new partitions and topics created after registration quickly.
    defaults.insert("topic.metadata.refresh.interval.ms", "10000".into());
    // Prefetch per partition (queues are split), from the memory budget.
    defaults.insert(
        "queued.max.messages.kbytes",
        (prefetch.window / 1024).max(1).to_string(),
    );
    defaults.insert("fetch.message.max.bytes", prefetch.window.to_string());
    defaults.insert("fetch.max.bytes", prefetch.fetch.to_string());
    // High watermarks for the lag metric and /status.
    defaults.insert("statistics.interval.ms", "5000".into());
    // Reload latency: a new partition's first fetch answers within 100 ms
    // even from a broker that holds fetches to their limit (500 ms by
    // default), and a partition whose queue filled up is fetched again
    // after 50 ms instead of 1 s (measured: 1 s read gaps of unaffected
    // topics during rebalances without it).
    defaults.insert("fetch.wait.max.ms", "100".into());
    defaults.insert("fetch.queue.backoff.ms", "50".into());
    // After a rebalance the broker may answer one fetch with an error; with
    // librdkafka's 500 ms backoff that paused unaffected partitions for
    // about 1 s (measured by the reload benchmark), with 100 ms for 0.5 s.
    defaults.insert("fetch.error.backoff.ms", "100".into());
    let mut cfg = ClientConfig::new();
    for (k, v) in defaults {
        cfg.set(k, v);
    }
    super::security::apply_connection(config, &mut cfg);
    if config.static_membership {
        // Resolved at start-up (`KafkaConfig::group_instance_id`); the
        // instance id otherwise.
        cfg.set(
            "group.instance.id",
            config.instance_id.as_deref().unwrap_or(instance_id),
        );
    }
    cfg.set("bootstrap.servers", config.brokers.join(","))
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            config.commit_interval.as_millis().max(1).to_string(),
        )
        .set(
            "auto.offset.reset",
            match config.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        );
    cfg
}

/// Creates the consumer (inside a Tokio runtime) and the receiver of its
/// group events.
/// The consumer, and the channel its group events arrive on.
pub struct GroupConsumer {
    /// The consumer.
    pub consumer: Arc<LogConsumer>,
    /// Group events, for the reconciler.
    pub events: mpsc::UnboundedReceiver<KafkaEvent>,
    /// A sender of the same channel (for the control thread's reports).
    pub events_sender: mpsc::UnboundedSender<KafkaEvent>,
}

/// Creates the consumer (inside a Tokio runtime) and the receiver of its
/// group events.
pub fn create(
    config: &KafkaConfig,
    instance_id: &str,
    prefetch: Prefetch,
    board: Arc<StatusBoard>,
    metrics: Metrics,
) -> KafkaResult<GroupConsumer> {
    let (events, receiver) = mpsc::unbounded_channel();
    let context = GroupContext {
        events: events.clone(),
        board,
        consumer: OnceLock::new(),
        // A little above the tasks' own drain deadline, so they normally
        // finish first.
        revoke_timeout: config.drain_timeout + Duration::from_secs(2),
        assignments: Mutex::new(HashMap::new()),
        generations: AtomicU64::new(0),
        heartbeat: Arc::new(Heartbeat::new("kafka group thread")),
        metrics,
        committer: Arc::new(Committer::new(MIN_INTERVAL.min(config.commit_interval))),
    };
    let consumer: Arc<LogConsumer> =
        Arc::new(client_config(config, instance_id, prefetch).create_with_context(context)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    Ok(GroupConsumer {
        consumer,
        events: receiver,
        events_sender: events,
    })
}

/// Serves the consumer's main queue (rebalance callbacks, errors) on a
/// dedicated thread until `cancel` fires.
///
/// Rebalance callbacks block while revoked partitions drain; a thread of
/// their own keeps that wait away from the runtime's workers.
pub fn spawn_group_thread(
    consumer: Arc<LogConsumer>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("kafka-group".into())
        .spawn(move || {
            let _entered = span.enter();
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the Kafka group thread");
                    return;
                }
            };
            runtime.block_on(async move {
                let heartbeat = consumer.context().heartbeat.clone();
                let mut beat = tokio::time::interval(BEAT_INTERVAL);
                loop {
                    heartbeat.beat();
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = beat.tick() => {}
                        message = consumer.recv() => match message {
                            Ok(m) => error!(
                                topic = m.topic(),
                                partition = m.partition(),
                                offset = m.offset(),
                                "message on the main queue (partition not split); it will be read again after the next rebalance"
                            ),
                            Err(e) => {
                                consumer.context().metrics.kafka_errors.inc();
                                warn!(error = %e, "kafka consumer error");
                            }
                        }
                    }
                }
            });
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_the_consumer_forces_is_owned() {
        // client_config sets these after the user's options: each must be
        // refused in kafka.options, or the user's value would be dropped
        // silently.
        let mut c = crate::config::Config::parse(
            "[instance]\nid = \"i\"\n[kafka]\nstatic_membership = true\n",
        )
        .unwrap();
        c.validate().unwrap();
        let marker = "user-value-marker";
        let forced = [
            "bootstrap.servers",
            "group.id",
            "group.instance.id",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "auto.commit.interval.ms",
            "auto.offset.reset",
        ];
        for key in forced {
            c.kafka.options.insert(key.to_string(), marker.to_string());
        }
        let client = client_config(
            &c.kafka,
            "i",
            Prefetch::for_budget(crate::config::MemoryConfig::default().budget()),
        );
        for key in forced {
            assert_ne!(client.get(key), Some(marker), "{key} is forced");
            assert!(
                crate::config::OWNED_OPTIONS.iter().any(|(k, _)| *k == key),
                "{key} is forced by client_config but not refused"
            );
        }
        assert_eq!(client.get("enable.partition.eof"), Some("false"));
    }
}
