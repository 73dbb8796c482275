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

/// Label set of outcome series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What happened (`ok`, `retried`, ...).
    pub outcome: &'static str,
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
    /// Documents sent again after a retryable item error, per topic.
    pub documents_retried: Family<TopicLabel, Counter>,
    /// `_bulk` requests by outcome.
    pub bulk_requests: Family<OutcomeLabel, Counter>,
    /// Latency of `_bulk` requests.
    pub bulk_request_duration: Histogram,
    /// Bytes of documents read from Kafka and not yet acknowledged.
    pub buffered_bytes: Gauge,
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
    /// Consumer-group rebalance events by kind (`assign`, `revoke`).
    pub rebalances: Family<OutcomeLabel, Counter>,
    /// Errors reported by the Kafka client.
    pub kafka_errors: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them under the `logingest_` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            documents_read: Family::default(),
            documents_indexed: Family::default(),
            documents_failed: Family::default(),
            documents_retried: Family::default(),
            bulk_requests: Family::default(),
            bulk_request_duration: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            buffered_bytes: Gauge::default(),
            partition_tasks: Gauge::default(),
            registry_topics: Gauge::default(),
            registry_changes_applied: Counter::default(),
            registry_changes_rejected: Counter::default(),
            registry_revision: Gauge::default(),
            registry_resyncs: Counter::default(),
            last_reconcile_timestamp: Gauge::default(),
            rebalances: Family::default(),
            kafka_errors: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("logingest");
        r.register(
            "documents_read",
            "Records read from Kafka",
            m.documents_read.clone(),
        );
        r.register(
            "documents_indexed",
            "Documents acknowledged by Elasticsearch",
            m.documents_indexed.clone(),
        );
        r.register(
            "documents_failed",
            "Documents permanently rejected by Elasticsearch",
            m.documents_failed.clone(),
        );
        r.register(
            "documents_retried",
            "Documents sent again after a retryable item error",
            m.documents_retried.clone(),
        );
        r.register(
            "bulk_requests",
            "Bulk requests by outcome",
            m.bulk_requests.clone(),
        );
        r.register(
            "bulk_request_duration_seconds",
            "Latency of Elasticsearch bulk requests",
            m.bulk_request_duration.clone(),
        );
        r.register(
            "buffered_bytes",
            "Bytes read from Kafka and not yet acknowledged by Elasticsearch",
            m.buffered_bytes.clone(),
        );
        r.register(
            "partition_tasks",
            "Partition tasks running",
            m.partition_tasks.clone(),
        );
        r.register(
            "registry_topics",
            "Topics in the registry",
            m.registry_topics.clone(),
        );
        r.register(
            "registry_changes_applied",
            "Registry changes applied",
            m.registry_changes_applied.clone(),
        );
        r.register(
            "registry_changes_rejected",
            "Registry changes rejected because the value did not parse",
            m.registry_changes_rejected.clone(),
        );
        r.register(
            "registry_revision",
            "etcd revision of the registry state in force",
            m.registry_revision.clone(),
        );
        r.register(
            "registry_resyncs",
            "Full re-reads of the registry",
            m.registry_resyncs.clone(),
        );
        r.register(
            "last_reconcile_timestamp_seconds",
            "Unix time of the last reconcile",
            m.last_reconcile_timestamp.clone(),
        );
        r.register(
            "rebalances",
            "Consumer group rebalance events",
            m.rebalances.clone(),
        );
        r.register(
            "kafka_errors",
            "Errors reported by the Kafka client",
            m.kafka_errors.clone(),
        );
        m
    }

    /// The per-topic label set.
    pub fn topic(topic: &str) -> TopicLabel {
        TopicLabel {
            topic: topic.to_string(),
        }
    }
}
