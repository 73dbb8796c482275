//! The group consumer and the typed events it hands to the reconciler.
//!
//! librdkafka's callbacks never touch async state: on assignment they split
//! one queue per partition and send [`KafkaEvent::Assigned`]; on revocation
//! they send [`KafkaEvent::Revoked`] and wait (bounded) until the reconciler
//! says the partitions' tasks have flushed and committed, so the next owner
//! starts exactly after what was acknowledged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{mpsc as std_mpsc, Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::status::StatusBoard;
use crate::config::{KafkaConfig, StartFrom};
use crate::metrics::{Metrics, OutcomeLabel};

/// The consumer type used throughout logingest.
pub type LogConsumer = StreamConsumer<GroupContext>;
/// The queue of one assigned partition.
pub type PartitionQueue = StreamPartitionQueue<GroupContext>;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition number.
    pub partition: i32,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Consumer-group events, sent from librdkafka's callbacks.
pub enum KafkaEvent {
    /// Partitions given to this member, each with its own message queue.
    Assigned(Vec<(TopicPartition, PartitionQueue)>),
    /// Partitions taken away. librdkafka hands them over once `done` is
    /// signalled (or the revoke timeout passes).
    Revoked {
        /// The partitions revoked.
        partitions: Vec<TopicPartition>,
        /// Signalled when their tasks have flushed and committed.
        done: std_mpsc::SyncSender<()>,
    },
}

impl fmt::Debug for KafkaEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KafkaEvent::Assigned(p) => f
                .debug_tuple("Assigned")
                .field(&p.iter().map(|(tp, _)| tp.to_string()).collect::<Vec<_>>())
                .finish(),
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
    metrics: Metrics,
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition {
            topic: Arc::from(e.topic()),
            partition: e.partition(),
        })
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
    fn pre_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self.on_assign(tpl),
            Rebalance::Revoke(tpl) => self.on_revoke(tpl),
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
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => warn!(error = %e, "offset commit failed; it is retried at the next interval"),
        }
    }
}

impl GroupContext {
    fn on_assign(&self, tpl: &TopicPartitionList) {
        self.metrics
            .rebalances
            .get_or_create(&OutcomeLabel { outcome: "assign" })
            .inc();
        self.board.mark_joined();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            return;
        };
        // Split before librdkafka starts fetching, so no message of these
        // partitions ever lands in the main queue.
        let mut assigned = Vec::new();
        for tp in partitions_of(tpl) {
            match consumer.split_partition_queue(&tp.topic, tp.partition) {
                Some(queue) => assigned.push((tp, queue)),
                None => {
                    error!(partition = %tp, "cannot split the partition's queue; it will not be consumed")
                }
            }
        }
        info!(partitions = ?assigned.iter().map(|(tp, _)| tp.to_string()).collect::<Vec<_>>(), "partitions assigned");
        let _ = self.events.send(KafkaEvent::Assigned(assigned));
    }

    fn on_revoke(&self, tpl: &TopicPartitionList) {
        self.metrics
            .rebalances
            .get_or_create(&OutcomeLabel { outcome: "revoke" })
            .inc();
        let partitions = partitions_of(tpl);
        info!(partitions = ?partitions.iter().map(ToString::to_string).collect::<Vec<_>>(), "partitions revoked");
        let (done, wait) = std_mpsc::sync_channel(1);
        if self
            .events
            .send(KafkaEvent::Revoked { partitions, done })
            .is_err()
        {
            return; // shutting down: the tasks are already gone
        }
        // This runs on the group thread, never on a runtime worker, so
        // blocking here only delays the hand-over, as the protocol intends.
        if wait.recv_timeout(self.revoke_timeout).is_err() {
            warn!(timeout = ?self.revoke_timeout, "revoked partitions did not finish draining in time; handing them over anyway");
        }
    }
}

/// Builds the librdkafka configuration: logingest's settings, then
/// `[kafka.tls]`/`[kafka.sasl]`, then the user's `[kafka.options]` (which
/// win).
pub fn client_config(config: &KafkaConfig, instance_id: &str) -> ClientConfig {
    let mut defaults: BTreeMap<&str, String> = BTreeMap::new();
    defaults.insert("client.id", instance_id.into());
    defaults.insert("partition.assignment.strategy", "cooperative-sticky".into());
    defaults.insert("enable.partition.eof", "false".into());
    // Find new partitions and topics created after registration quickly.
    defaults.insert("topic.metadata.refresh.interval.ms", "10000".into());
    // Prefetch per partition (queues are split): bounds memory per partition.
    defaults.insert("queued.max.messages.kbytes", "8192".into());
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
        cfg.set("group.instance.id", instance_id);
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
pub fn create(
    config: &KafkaConfig,
    instance_id: &str,
    board: Arc<StatusBoard>,
    metrics: Metrics,
) -> KafkaResult<(Arc<LogConsumer>, mpsc::UnboundedReceiver<KafkaEvent>)> {
    let (events, receiver) = mpsc::unbounded_channel();
    let context = GroupContext {
        events,
        board,
        consumer: OnceLock::new(),
        // A little above the tasks' own drain deadline, so they normally
        // finish first.
        revoke_timeout: config.drain_timeout + Duration::from_secs(2),
        metrics,
    };
    let consumer: Arc<LogConsumer> =
        Arc::new(client_config(config, instance_id).create_with_context(context)?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    Ok((consumer, receiver))
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
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
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
