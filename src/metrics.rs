//! Prometheus metrics, served as text on `/metrics`.
//!
//! Every label set is a type named for what it labels, so a series cannot
//! be given a label of the wrong kind. Handles are cheap to clone; the hot
//! path resolves its per-topic series once per partition task, not per
//! document.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::topic::TopicPartition;

/// Label set of per-topic series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The Kafka topic.
    pub topic: String,
}

impl TopicLabel {
    /// The labels of `topic`.
    pub fn of(topic: &str) -> Self {
        Self {
            topic: topic.to_string(),
        }
    }
}

/// Label set of per-partition series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// The Kafka topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl PartitionLabel {
    /// The labels of a topic-partition.
    pub fn of(tp: &TopicPartition) -> Self {
        Self {
            topic: tp.topic.to_string(),
            partition: tp.partition,
        }
    }
}

/// Label set of per-Elasticsearch-node series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node's URL, without credentials.
    pub node: String,
}

/// What became of one `_bulk` request.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BulkOutcome {
    /// Every document stored.
    Ok,
    /// A real bulk reply in which some items failed.
    Partial,
    /// A 2xx reply that is not a bulk reply for the documents sent (an
    /// empty object, an HTML page, a truncated body, the wrong number of
    /// items): nothing of it counts as acknowledged.
    Malformed,
    /// The request failed as a whole (connection, timeout, 429, 5xx, 401...).
    Error,
    /// 413: the request was larger than the cluster accepts.
    TooLarge,
}

impl BulkOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Partial => "partial",
            Self::Malformed => "malformed",
            Self::Error => "error",
            Self::TooLarge => "too_large",
        }
    }
}

/// Label set of `_bulk` request series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BulkOutcomeLabel {
    /// What became of the request.
    pub outcome: BulkOutcome,
}

/// Why a dead letter could not be delivered and waits for its destination
/// (nothing is reduced or lost for these: the destination must be fixed).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DeadLetterWait {
    /// Not reachable or failing: connection, timeout, 429, 5xx, broker down.
    Unreachable,
    /// The credentials may not write there (401, 403,
    /// `TopicAuthorizationFailed`, `ClusterAuthorizationFailed`).
    Unauthorized,
    /// The destination does not exist or cannot (404,
    /// `index_not_found_exception`, an invalid index or topic name,
    /// `UnknownTopicOrPartition`).
    UnknownDestination,
}

impl DeadLetterWait {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Unauthorized => "unauthorized",
            Self::UnknownDestination => "unknown_destination",
        }
    }
}

/// Label set of dead-letter delivery failures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterWaitLabel {
    /// The source topic of the letter.
    pub topic: String,
    /// Why it waits.
    pub reason: DeadLetterWait,
}

/// A consumer-group rebalance event.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RebalanceKind {
    /// Partitions given to this member.
    Assign,
    /// Partitions taken away.
    Revoke,
}

impl RebalanceKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Assign => "assign",
            Self::Revoke => "revoke",
        }
    }
}

macro_rules! label_value_by_name {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                use std::fmt::Write;
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value_by_name!(BulkOutcome, RebalanceKind, DeadLetterWait);

/// Label set of rebalance series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabel {
    /// The kind of event.
    pub kind: RebalanceKind,
}

/// Label set of the instance info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// The instance id.
    pub instance: String,
    /// The logingest version.
    pub version: &'static str,
}

/// Buckets of `document_latency_seconds`: 5 ms to about 22 minutes.
fn document_latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 18))
}

/// Every metric logingest exports. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// Records read from Kafka, per topic.
    pub documents_read: Family<TopicLabel, Counter>,
    /// Bytes of record keys and values read from Kafka, per topic.
    pub bytes_read: Family<TopicLabel, Counter>,
    /// Documents Elasticsearch acknowledged, per topic.
    pub documents_indexed: Family<TopicLabel, Counter>,
    /// Documents given up after permanent rejections, per topic.
    pub documents_failed: Family<TopicLabel, Counter>,
    /// Documents sent to the dead-letter destination, per topic.
    pub documents_dead_lettered: Family<TopicLabel, Counter>,
    /// Dead letters the destination refused even in their reduced form
    /// (logged with topic, partition and offset; the record is still in
    /// the source topic), per topic.
    pub dead_letters_refused: Family<TopicLabel, Counter>,
    /// Dead-letter delivery attempts that failed and are retried, by why.
    pub dead_letter_delivery_failures: Family<DeadLetterWaitLabel, Counter>,
    /// Documents sent again after a retryable item error, per topic.
    pub documents_retried: Family<TopicLabel, Counter>,
    /// Documents given up (and dead-lettered) because their item was still
    /// answered 429/5xx after `elasticsearch.max_item_retry_duration`, per
    /// topic (also counted in `documents_failed`).
    pub documents_retry_expired: Family<TopicLabel, Counter>,
    /// Documents a transform dropped on purpose (`abort`), per topic.
    pub documents_dropped: Family<TopicLabel, Counter>,
    /// Documents whose transform failed at run time (indexed untransformed
    /// and tagged), per topic.
    pub transform_failures: Family<TopicLabel, Counter>,
    /// Seconds partition tasks of a topic waited for its rate limits
    /// (`max_docs_per_second`, `max_bytes_per_second`), summed over its
    /// tasks, per topic.
    pub topic_throttled_seconds: Family<TopicLabel, Counter<f64, AtomicU64>>,
    /// `_bulk` requests by outcome.
    pub bulk_requests: Family<BulkOutcomeLabel, Counter>,
    /// Latency of `_bulk` requests.
    pub bulk_request_duration: Histogram,
    /// Bytes of `_bulk` request bodies sent (after compression).
    pub bulk_bytes_sent: Counter,
    /// Documents per `_bulk` request.
    pub bulk_documents: Histogram,
    /// The adaptive limit of `_bulk` requests in flight.
    pub bulk_concurrency_limit: Gauge,
    /// 1 while an Elasticsearch node takes requests, 0 while it is out of
    /// rotation (failed connections or 502/503/504), per node.
    pub es_node_up: Family<NodeLabel, Gauge>,
    /// Sniffs (`GET _nodes/http`, `elasticsearch.sniff`) that failed or
    /// named no node: the pool was kept as it was.
    pub es_sniff_failures: Counter,
    /// From a record's Kafka timestamp to its acknowledgement by
    /// Elasticsearch, per topic: one observation per acknowledged chunk,
    /// for its oldest record (the chunk's worst; per-record observations
    /// would cost more than the rest of the acknowledgement).
    pub document_latency: Family<TopicLabel, Histogram, fn() -> Histogram>,
    /// Bytes held for documents read and not yet acknowledged (open
    /// chunks, requests in flight, dead letters); never above
    /// `memory_budget_bytes`.
    pub buffered_bytes: Gauge,
    /// The process-wide budget of `buffered_bytes` (`memory.max_buffered`).
    pub memory_budget_bytes: Gauge,
    /// Messages not yet acknowledged, per assigned partition.
    pub partition_lag: Family<PartitionLabel, Gauge>,
    /// Now minus the time of the first record not yet acknowledged (its
    /// Kafka timestamp, or when it was read if it has none), per partition
    /// with a running task; 0 when the task holds nothing unacknowledged.
    pub partition_lag_seconds: Family<PartitionLabel, Gauge<f64, AtomicU64>>,
    /// Partitions whose acknowledged offset has not moved for
    /// `kafka.stuck_after` while records after it wait, per topic.
    pub partitions_stuck: Family<TopicLabel, Gauge>,
    /// Partitions whose fetching is paused because the sink cannot keep up
    /// or the memory budget is spent.
    pub partitions_paused: Gauge,
    /// Partition tasks running now.
    pub partition_tasks: Gauge,
    /// Topics the registry asks for now.
    pub registry_topics: Gauge,
    /// 1 for every topic the registry asks for (so that rules can find
    /// topics nobody ingests).
    pub registry_topic_info: Family<TopicLabel, Gauge>,
    /// Partitions of a registered topic this instance runs a task for.
    pub topic_partitions_owned: Family<TopicLabel, Gauge>,
    /// Registry key changes applied.
    pub registry_changes_applied: Counter,
    /// Registry key changes rejected (value did not parse, or its transform
    /// did not compile).
    pub registry_changes_rejected: Counter,
    /// etcd revision of the registry state in force.
    pub registry_revision: Gauge,
    /// Full re-reads of the registry (start, etcd restart, compaction).
    pub registry_resyncs: Counter,
    /// Unix time of the last reconcile, in seconds.
    pub last_reconcile_timestamp: Gauge<f64, AtomicU64>,
    /// Partition tasks started, per topic (restarts show up here).
    pub partition_task_starts: Family<TopicLabel, Counter>,
    /// Partition tasks that panicked or ended unexpectedly and were
    /// restarted from their first unacknowledged offset, per topic.
    pub partition_task_restarts: Family<TopicLabel, Counter>,
    /// From a registry change arriving to the subscription and tasks being
    /// updated (logingest's own share of a reload).
    pub registry_apply_duration: Histogram,
    /// From a partition task's start (its assignment) to its first
    /// acknowledged batch.
    pub partition_first_ack_duration: Histogram,
    /// From a topic's removal from the registry to all its tasks stopped
    /// (flushed and committed).
    pub topic_stop_duration: Histogram,
    /// Consumer-group rebalance events by kind.
    pub rebalances: Family<RebalanceLabel, Counter>,
    /// Offset commits the group coordinator refused or that failed.
    pub commit_failures: Counter,
    /// Commits of stored offsets made because chunks were acknowledged
    /// (coalesced and paced; the periodic commit is not counted).
    pub ack_commits: Counter,
    /// Errors reported by the Kafka client.
    pub kafka_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under the `logingest_` prefix.
    pub fn new(registry: &mut Registry, instance: &str) -> Self {
        let m = Self {
            documents_read: Family::default(),
            bytes_read: Family::default(),
            documents_indexed: Family::default(),
            documents_failed: Family::default(),
            documents_dead_lettered: Family::default(),
            dead_letters_refused: Family::default(),
            dead_letter_delivery_failures: Family::default(),
            documents_retried: Family::default(),
            documents_retry_expired: Family::default(),
            documents_dropped: Family::default(),
            transform_failures: Family::default(),
            topic_throttled_seconds: Family::default(),
            bulk_requests: Family::default(),
            bulk_request_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            bulk_bytes_sent: Counter::default(),
            bulk_documents: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            bulk_concurrency_limit: Gauge::default(),
            es_node_up: Family::default(),
            es_sniff_failures: Counter::default(),
            document_latency: Family::new_with_constructor(document_latency_histogram),
            buffered_bytes: Gauge::default(),
            memory_budget_bytes: Gauge::default(),
            partition_lag: Family::default(),
            partition_lag_seconds: Family::default(),
            partitions_stuck: Family::default(),
            partitions_paused: Gauge::default(),
            partition_tasks: Gauge::default(),
            registry_topics: Gauge::default(),
            registry_topic_info: Family::default(),
            topic_partitions_owned: Family::default(),
            registry_changes_applied: Counter::default(),
            registry_changes_rejected: Counter::default(),
            registry_revision: Gauge::default(),
            registry_resyncs: Counter::default(),
            last_reconcile_timestamp: Gauge::default(),
            partition_task_starts: Family::default(),
            partition_task_restarts: Family::default(),
            registry_apply_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            partition_first_ack_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            topic_stop_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            rebalances: Family::default(),
            commit_failures: Counter::default(),
            ack_commits: Counter::default(),
            kafka_errors: Counter::default(),
        };
        let info = Family::<InstanceLabel, Gauge>::default();
        info.get_or_create(&InstanceLabel {
            instance: instance.to_string(),
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        let r = registry.sub_registry_with_prefix("logingest");
        r.register("instance_info", "This instance's id and version", info);
        macro_rules! register {
            ($($name:literal => $metric:ident, $help:literal;)*) => {
                $(r.register($name, $help, m.$metric.clone());)*
            };
        }
        register! {
            "documents_read" => documents_read, "Records read from Kafka";
            "bytes_read" => bytes_read, "Bytes of record keys and values read from Kafka";
            "documents_indexed" => documents_indexed, "Documents acknowledged by Elasticsearch";
            "documents_failed" => documents_failed, "Documents permanently rejected by Elasticsearch";
            "documents_retried" => documents_retried, "Documents sent again after a retryable item error";
            "documents_retry_expired" => documents_retry_expired, "Documents dead-lettered because their item was still answered 429/5xx after max_item_retry_duration";
            "documents_dead_lettered" => documents_dead_lettered, "Documents sent to the dead-letter destination";
            "dead_letters_refused" => dead_letters_refused, "Dead letters refused by their destination even in reduced form";
            "dead_letter_delivery_failures" => dead_letter_delivery_failures, "Dead-letter delivery attempts that failed and are retried (the letter waits), by reason";
            "documents_dropped" => documents_dropped, "Documents dropped on purpose by the topic's transform";
            "transform_failures" => transform_failures, "Documents whose transform failed at run time (indexed untransformed)";
            "topic_throttled_seconds" => topic_throttled_seconds, "Seconds partition tasks waited for their topic's rate limits";
            "bulk_requests" => bulk_requests, "Bulk requests by outcome";
            "bulk_request_duration_seconds" => bulk_request_duration, "Latency of Elasticsearch bulk requests";
            "bulk_bytes_sent" => bulk_bytes_sent, "Bytes of bulk request bodies sent (after compression)";
            "bulk_documents" => bulk_documents, "Documents per bulk request";
            "bulk_concurrency_limit" => bulk_concurrency_limit, "Adaptive limit of bulk requests in flight";
            "es_node_up" => es_node_up, "1 while an Elasticsearch node takes requests, 0 while it is out of rotation";
            "es_sniff_failures" => es_sniff_failures, "Sniffs of the Elasticsearch nodes that failed or named no node (the nodes were kept)";
            "document_latency_seconds" => document_latency, "From a record's Kafka timestamp to its acknowledgement by Elasticsearch (per chunk, its oldest record)";
            "buffered_bytes" => buffered_bytes, "Bytes held for documents read from Kafka and not yet acknowledged";
            "memory_budget_bytes" => memory_budget_bytes, "The process-wide budget of buffered bytes";
            "partition_tasks" => partition_tasks, "Partition tasks running";
            "partitions_paused" => partitions_paused, "Partitions paused because the sink cannot keep up";
            "partition_lag" => partition_lag, "Messages not yet acknowledged (high watermark minus acknowledged offset)";
            "partition_lag_seconds" => partition_lag_seconds, "Now minus the timestamp of the first record not yet acknowledged";
            "partitions_stuck" => partitions_stuck, "Partitions whose acknowledged offset has not moved for kafka.stuck_after while records wait";
            "partition_task_starts" => partition_task_starts, "Partition tasks started";
            "partition_task_restarts" => partition_task_restarts, "Partition tasks restarted after a panic or an unexpected end";
            "registry_topics" => registry_topics, "Topics in the registry";
            "registry_topic_info" => registry_topic_info, "1 for each topic the registry asks for";
            "topic_partitions_owned" => topic_partitions_owned, "Partitions of a registered topic this instance ingests";
            "registry_changes_applied" => registry_changes_applied, "Registry changes applied";
            "registry_changes_rejected" => registry_changes_rejected, "Registry changes rejected because the value did not parse";
            "registry_revision" => registry_revision, "etcd revision of the registry state in force";
            "registry_resyncs" => registry_resyncs, "Full re-reads of the registry";
            "registry_apply_duration_seconds" => registry_apply_duration, "From a registry change arriving to subscription and tasks updated";
            "last_reconcile_timestamp_seconds" => last_reconcile_timestamp, "Unix time of the last reconcile";
            "partition_first_ack_duration_seconds" => partition_first_ack_duration, "From a partition task's start to its first acknowledged batch";
            "topic_stop_duration_seconds" => topic_stop_duration, "From a topic's removal to all its partition tasks stopped";
            "rebalances" => rebalances, "Consumer group rebalance events";
            "commit_failures" => commit_failures, "Offset commits that failed";
            "ack_commits" => ack_commits, "Commits of acknowledged offsets made as chunks were acknowledged (coalesced, at most one in flight, 200 ms apart at least)";
            "kafka_errors" => kafka_errors, "Errors reported by the Kafka client";
        }
        m
    }

    /// The per-topic counter families a task start exports at 0 and a
    /// removed topic loses: one list, so that the two stay in step.
    fn topic_counters(&self) -> [&Family<TopicLabel, Counter>; 11] {
        [
            &self.documents_read,
            &self.bytes_read,
            &self.documents_indexed,
            &self.documents_failed,
            &self.documents_dead_lettered,
            &self.dead_letters_refused,
            &self.documents_retried,
            &self.documents_retry_expired,
            &self.documents_dropped,
            &self.transform_failures,
            &self.partition_task_restarts,
        ]
    }

    /// Counts a partition task start of `topic`, and exports every
    /// per-topic counter of the topic from then on (at 0 until it first
    /// counts): Prometheus' `increase()` sees a counter's first increment
    /// only after a sample before it, and dashboards and rules find every
    /// family in `/metrics` (prometheus-client prints nothing, not even
    /// `# TYPE`, for a family without series).
    pub fn partition_task_started(&self, topic: &str) {
        let label = TopicLabel::of(topic);
        self.partition_task_starts.get_or_create(&label).inc();
        for family in self.topic_counters() {
            drop(family.get_or_create(&label));
        }
        drop(self.topic_throttled_seconds.get_or_create(&label));
        // And the stuck gauge at 0, so that rules see 0 rather than nothing.
        drop(self.partitions_stuck.get_or_create(&label));
    }

    /// Removes every series of `topic` (a topic removed from the registry
    /// whose tasks have stopped), its per-partition series of `partitions`
    /// included, so that topics added and removed leave `/metrics` the size
    /// it was. A topic registered again starts its series at 0.
    pub fn forget_topic(&self, topic: &str, partitions: impl IntoIterator<Item = i32>) {
        let label = TopicLabel::of(topic);
        self.partition_task_starts.remove(&label);
        for family in self.topic_counters() {
            family.remove(&label);
        }
        self.topic_throttled_seconds.remove(&label);
        self.document_latency.remove(&label);
        self.partitions_stuck.remove(&label);
        for reason in [
            DeadLetterWait::Unreachable,
            DeadLetterWait::Unauthorized,
            DeadLetterWait::UnknownDestination,
        ] {
            self.dead_letter_delivery_failures
                .remove(&DeadLetterWaitLabel {
                    topic: topic.to_string(),
                    reason,
                });
        }
        self.registry_topic_info.remove(&label);
        self.topic_partitions_owned.remove(&label);
        for partition in partitions {
            let label = PartitionLabel {
                topic: topic.to_string(),
                partition,
            };
            self.partition_lag.remove(&label);
            self.partition_lag_seconds.remove(&label);
        }
    }

    /// Counts a rebalance event.
    pub fn rebalance(&self, kind: RebalanceKind) {
        self.rebalances
            .get_or_create(&RebalanceLabel { kind })
            .inc();
    }

    /// Counts a `_bulk` request.
    pub fn bulk_request(&self, outcome: BulkOutcome) {
        self.bulk_requests
            .get_or_create(&BulkOutcomeLabel { outcome })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn a_task_start_exports_every_per_topic_counter_at_zero() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry, "test-1");
        // Without series, a family prints nothing, not even `# TYPE`.
        assert!(!text(&registry).contains("logingest_documents_dead_lettered"));

        metrics.partition_task_started("nginx");
        metrics.partition_task_started("nginx");
        let out = text(&registry);
        for family in [
            "documents_read",
            "bytes_read",
            "documents_indexed",
            "documents_failed",
            "documents_dead_lettered",
            "dead_letters_refused",
            "documents_retried",
            "documents_retry_expired",
            "documents_dropped",
            "transform_failures",
            "partition_task_restarts",
        ] {
            let series = format!("logingest_{family}_total{{topic=\"nginx\"}} 0\n");
            assert!(out.contains(&series), "{series} missing:\n{out}");
        }
        assert!(out.contains("logingest_partition_task_starts_total{topic=\"nginx\"} 2\n"));
        assert!(out.contains("logingest_topic_throttled_seconds_total{topic=\"nginx\"} 0.0\n"));
    }

    #[test]
    fn a_forgotten_topic_leaves_no_series() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry, "test-1");
        metrics.partition_task_started("kept");
        let size = text(&registry).len();
        metrics.partition_task_started("gone");
        let tp = TopicPartition::new("gone", 3);
        metrics
            .partition_lag
            .get_or_create(&PartitionLabel::of(&tp))
            .set(5);
        metrics
            .partition_lag_seconds
            .get_or_create(&PartitionLabel::of(&tp))
            .set(1.5);
        metrics
            .registry_topic_info
            .get_or_create(&TopicLabel::of("gone"))
            .set(1);
        metrics
            .topic_partitions_owned
            .get_or_create(&TopicLabel::of("gone"))
            .set(1);
        metrics.forget_topic("gone", [3]);
        let out = text(&registry);
        assert!(!out.contains("gone"), "{out}");
        assert_eq!(out.len(), size);
        assert!(out.contains("logingest_documents_read_total{topic=\"kept\"} 0\n"));
    }
}
