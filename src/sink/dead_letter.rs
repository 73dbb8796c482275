//! Dead letters: documents Elasticsearch rejected for good, sent where an
//! operator can inspect and replay them, so that one bad document never
//! stalls its partition and nothing is silently dropped.
//!
//! A dead letter carries the record's original key and value and, in Kafka
//! headers (or document fields), its topic, partition, offset and the
//! rejection reason. Sending retries until it succeeds: the partition's
//! offset only moves past a rejected document once it is dead-lettered.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use elasticsearch::{BulkParts, Elasticsearch};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use tracing::{error, warn};

use super::{Batch, RejectedDocument};
use crate::backoff::Backoff;
use crate::config::{DeadLetterConfig, DeadLetterDestination, KafkaConfig, RetryConfig};
use crate::document::document_id;
use crate::metrics::Metrics;

/// Kafka header names of a dead letter.
pub mod headers {
    /// Source topic.
    pub const TOPIC: &str = "logingest.topic";
    /// Source partition (decimal text).
    pub const PARTITION: &str = "logingest.partition";
    /// Source offset (decimal text).
    pub const OFFSET: &str = "logingest.offset";
    /// Why Elasticsearch rejected the document.
    pub const ERROR: &str = "logingest.error";
}

enum Destination {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    Elasticsearch {
        client: Elasticsearch,
        index: String,
    },
    Nowhere,
}

/// Sends dead letters to the configured destination.
pub struct DeadLetters {
    destination: Destination,
    retry: RetryConfig,
    metrics: Metrics,
}

impl DeadLetters {
    /// Builds the destination (a producer, or the sink's client).
    pub fn new(
        config: &DeadLetterConfig,
        kafka: &KafkaConfig,
        es: Elasticsearch,
        retry: RetryConfig,
        metrics: Metrics,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let destination = match config.destination {
            DeadLetterDestination::Kafka => {
                let mut cfg = ClientConfig::new();
                crate::kafka::security::apply_producer_connection(kafka, &mut cfg);
                let producer = cfg
                    .set("bootstrap.servers", kafka.brokers.join(","))
                    .set("enable.idempotence", "true")
                    .set("message.timeout.ms", "30000")
                    .create()?;
                Destination::Kafka {
                    producer,
                    topic: config.topic.clone(),
                }
            }
            DeadLetterDestination::Elasticsearch => Destination::Elasticsearch {
                client: es,
                index: config.index.clone(),
            },
            DeadLetterDestination::None => Destination::Nowhere,
        };
        Ok(Self {
            destination,
            retry,
            metrics,
        })
    }

    /// Sends every rejected document of `batch`; returns once all are
    /// delivered (retrying meanwhile).
    pub async fn send(&self, batch: &Batch, rejected: &[RejectedDocument]) {
        let topic = batch.topic();
        let partition = batch.partition();
        for doc in rejected {
            error!(
                topic = %topic,
                partition,
                offset = doc.offset,
                reason = %doc.reason,
                "document rejected by Elasticsearch; dead-lettering it"
            );
        }
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        let mut pending: Vec<&RejectedDocument> = rejected.iter().collect();
        while !pending.is_empty() {
            let mut failed = Vec::new();
            for doc in pending {
                if let Err(e) = self.send_one(batch, doc).await {
                    warn!(topic = %topic, partition, offset = doc.offset, error = %e, "cannot dead-letter document; retrying");
                    failed.push(doc);
                } else {
                    self.metrics
                        .documents_dead_lettered
                        .get_or_create(&Metrics::topic(topic))
                        .inc();
                }
            }
            pending = failed;
            if !pending.is_empty() {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }

    async fn send_one(&self, batch: &Batch, doc: &RejectedDocument) -> Result<(), String> {
        let topic = batch.topic();
        let partition = batch.partition();
        let Some(position) = batch.position_of(doc.offset) else {
            return Ok(()); // not in this batch: nothing to send
        };
        let raw = batch.raw(position);
        match &self.destination {
            Destination::Nowhere => Ok(()),
            Destination::Kafka {
                producer,
                topic: template,
            } => {
                let dlq_topic = template.replace("{topic}", topic);
                let partition_text = partition.to_string();
                let offset_text = doc.offset.to_string();
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: headers::TOPIC,
                        value: Some(topic.as_bytes()),
                    })
                    .insert(Header {
                        key: headers::PARTITION,
                        value: Some(partition_text.as_bytes()),
                    })
                    .insert(Header {
                        key: headers::OFFSET,
                        value: Some(offset_text.as_bytes()),
                    })
                    .insert(Header {
                        key: headers::ERROR,
                        value: Some(doc.reason.as_bytes()),
                    });
                let mut record = FutureRecord::<[u8], [u8]>::to(&dlq_topic).headers(headers);
                if let Some(key) = raw.key {
                    record = record.key(key);
                }
                if let Some(value) = raw.value {
                    record = record.payload(value);
                }
                producer
                    .send(record, Duration::from_secs(30))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| format!("producing to {dlq_topic}: {e}"))
            }
            Destination::Elasticsearch { client, index } => {
                let id = document_id(topic, partition, doc.offset);
                let action = json!({"index": {"_index": index, "_id": id}});
                let source = json!({
                    "@timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    "message": raw.value.map(String::from_utf8_lossy),
                    "kafka": {
                        "topic": &**topic,
                        "partition": partition,
                        "offset": doc.offset,
                        "key": raw.key.map(String::from_utf8_lossy),
                    },
                    "error": {"reason": doc.reason},
                });
                let response = client
                    .bulk(BulkParts::None)
                    .body(vec![action.to_string(), source.to_string()])
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                let status = response.status_code();
                let reply = response.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                match super::bulk::classify(&reply, 1)
                    .map_err(|e| e.to_string())?
                    .first()
                {
                    Some(super::bulk::ItemOutcome::Delivered) => Ok(()),
                    other => Err(format!("dead-letter index refused the document: {other:?}")),
                }
            }
        }
    }
}
