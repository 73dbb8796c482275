//! Prometheus metrics, served as text on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Label set of per-topic series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// The Kafka topic.
    pub topic: String,
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
    pub fn of(tp: &crate::kafka::TopicPartition) -> Self {
        Self {
            topic: tp.topic.to_string(),
            partition: tp.partition,
        }
    }
}

/// Label set of outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened (`ok`, `retried`, ...).
    pub outcome: &'static str,
}

/// Label set of the instance info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// The instance id.
    pub instance: String,
    /// The logingest version.
    pub version: &'static str,
}

/// Every metric logingest exports. Cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    /// Records read from Kafka, per topic.
    pub documents_read: Family<TopicLabel, Counter>,
    /// Documents Elasticsearch acknowledged, per topic.
    pub documents_indexed: Family<TopicLabel, Counter>,
    /// Documents given up after permanent rejections, per topic.
    pub documents_failed: Family<TopicLabel, Counter>,
    /// Documents sent to the dead-letter destination, per topic.
    pub documents_dead_lettered: Family<TopicLabel, Counter>,
    /// Documents sent again after a retryable item error, per topic.
    pub documents_retried: Family<TopicLabel, Counter>,
    /// `_bulk` requests by outcome.
    pub bulk_requests: Family<OutcomeLabel, Counter>,
    /// Latency of `_bulk` requests.
    pub bulk_request_duration: Histogram,
    /// Bytes of documents read from Kafka and not yet acknowledged.
    pub buffered_bytes: Gauge,
    /// Messages not yet acknowledged, per assigned partition.
    pub partition_lag: Family<PartitionLabel, Gauge>,
    /// Partitions whose fetching is paused because the sink cannot keep up.
    pub partitions_paused: Gauge,
    /// Partition tasks running now.
    pub partition_tasks: Gauge,
    /// Topics the registry asks for now.
    pub registry_topics: Gauge,
    /// Registry key changes applied.
    pub registry_changes_applied: Counter,
    /// Registry key changes rejected (value did not parse).
    pub registry_changes_rejected: Counter,
    /// etcd revision of the registry state in force.
    pub registry_revision: Gauge,
    /// Full re-reads of the registry (start, etcd restart, compaction).
    pub registry_resyncs: Counter,
    /// Unix time of the last reconcile, in seconds.
    pub last_reconcile_timestamp: Gauge<f64, AtomicU64>,
    /// Partition tasks started, per topic (restarts show up here).
    pub partition_task_starts: Family<TopicLabel, Counter>,
    /// From a registry change arriving to the subscription and tasks being
    /// updated (logingest's own share of a reload).
    pub registry_apply_duration: Histogram,
    /// From a partition task's start (its assignment) to its first
    /// acknowledged batch.
    pub partition_first_ack_duration: Histogram,
    /// From a topic's removal from the registry to all its tasks stopped
    /// (flushed and committed).
    pub topic_stop_duration: Histogram,
    /// Consumer-group rebalance events by kind (`assign`, `revoke`).
    pub rebalances: Family<OutcomeLabel, Counter>,
    /// Errors reported by the Kafka client.
    pub kafka_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under the `logingest_` prefix.
    pub fn new(registry: &mut Registry, instance: &str) -> Self {
        let m = Self {
            documents_read: Family::default(),
            documents_indexed: Family::default(),
            documents_failed: Family::default(),
            documents_retried: Family::default(),
            documents_dead_lettered: Family::default(),
            bulk_requests: Family::default(),
            bulk_request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            buffered_bytes: Gauge::default(),
            partition_lag: Family::default(),
            partitions_paused: Gauge::default(),
            partition_tasks: Gauge::default(),
            registry_topics: Gauge::default(),
            registry_changes_applied: Counter::default(),
            registry_changes_rejected: Counter::default(),
            registry_revision: Gauge::default(),
            registry_resyncs: Counter::default(),
            last_reconcile_timestamp: Gauge::default(),
            partition_task_starts: Family::default(),
            registry_apply_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            partition_first_ack_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            topic_stop_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            rebalances: Family::default(),
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
            "documents_indexed" => documents_indexed, "Documents acknowledged by Elasticsearch";
            "documents_failed" => documents_failed, "Documents permanently rejected by Elasticsearch";
            "documents_retried" => documents_retried, "Documents sent again after a retryable item error";
            "documents_dead_lettered" => documents_dead_lettered, "Documents sent to the dead-letter destination";
            "bulk_requests" => bulk_requests, "Bulk requests by outcome";
            "bulk_request_duration_seconds" => bulk_request_duration, "Latency of Elasticsearch bulk requests";
            "buffered_bytes" => buffered_bytes, "Bytes read from Kafka and not yet acknowledged by Elasticsearch";
            "partition_tasks" => partition_tasks, "Partition tasks running";
            "partitions_paused" => partitions_paused, "Partitions paused because the sink cannot keep up";
            "partition_lag" => partition_lag, "Messages not yet acknowledged (high watermark minus acknowledged offset)";
            "partition_task_starts" => partition_task_starts, "Partition tasks started";
            "registry_topics" => registry_topics, "Topics in the registry";
            "registry_changes_applied" => registry_changes_applied, "Registry changes applied";
            "registry_changes_rejected" => registry_changes_rejected, "Registry changes rejected because the value did not parse";
            "registry_revision" => registry_revision, "etcd revision of the registry state in force";
            "registry_resyncs" => registry_resyncs, "Full re-reads of the registry";
            "registry_apply_duration_seconds" => registry_apply_duration, "From a registry change arriving to subscription and tasks updated";
            "last_reconcile_timestamp_seconds" => last_reconcile_timestamp, "Unix time of the last reconcile";
            "partition_first_ack_duration_seconds" => partition_first_ack_duration, "From a partition task's start to its first acknowledged batch";
            "topic_stop_duration_seconds" => topic_stop_duration, "From a topic's removal to all its partition tasks stopped";
            "rebalances" => rebalances, "Consumer group rebalance events";
            "kafka_errors" => kafka_errors, "Errors reported by the Kafka client";
        }
        m
    }

    /// The per-topic label set.
    pub fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }
}
