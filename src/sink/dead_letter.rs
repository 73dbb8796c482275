//! Dead letters: documents Elasticsearch rejected for good, sent where an
//! operator can inspect and replay them (`logingest dlq replay`), so that
//! one bad document never stalls its partition and nothing is silently
//! dropped.
//!
//! A dead letter carries the record's original key and value and, in Kafka
//! headers (or document fields), its topic, partition, offset, Kafka
//! timestamp and the rejection reason — what `logingest dlq replay` needs to
//! rebuild the same document. Each failed delivery is classified by
//! [`classify`]:
//!
//! * **waited for**, with backoff, without limit — the partition's offset
//!   moves past a rejected document only once it is dead-lettered, so
//!   nothing is lost: an *unreachable* destination (broker down, timeout,
//!   429, 5xx), an *unauthorized* one (401, 403, `TopicAuthorizationFailed`,
//!   `ClusterAuthorizationFailed`) and an *unknown* one (404,
//!   `index_not_found_exception`, `UnknownTopicOrPartition`, an invalid
//!   index or topic name). The last two are misconfigurations that no
//!   reduced letter would get past; an operator fixes them. Every failed
//!   attempt is counted (`logingest_dead_letter_delivery_failures_total`
//!   by reason) and a letter waiting longer than `http.unready_after` turns
//!   `/readyz` false (through the sink's [`SinkHealth`]);
//! * **refused for this letter's size or content** (a record over the
//!   producer's `message.max.bytes`, an invalid record, HTTP or item 413,
//!   an item 400 such as `mapper_parsing_exception`): the letter is written
//!   again in its **reduced form** — the reason, topic, partition, offset,
//!   original size and the first [`REDUCED_VALUE_PREFIX`] bytes of the
//!   value (the full record is still in the source topic);
//! * the reduced form refused for its content too: logged at error level
//!   with the topic, partition and offset, and counted
//!   (`logingest_dead_letters_refused_total`); the partition moves on.
//!
//! The replay itself sends through the sink with a *reporting* destination
//! ([`DeadLetters::reporting`]): a document refused again is handed back to
//! the replay instead of being dead-lettered a second time.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::chunk::RawRecord;
use super::reply::{self, ItemStatus};
use super::service::SinkHealth;
use crate::backoff::Backoff;
use crate::config::{DeadLetterConfig, DeadLetterDestination, RetryConfig};
use crate::metrics::{DeadLetterWait, DeadLetterWaitLabel, Metrics, TopicLabel};
use crate::topic::{document_id, TopicPartition};

/// Bytes of the value a reduced dead letter keeps.
pub const REDUCED_VALUE_PREFIX: usize = 1024;

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
    /// The source record's Kafka timestamp (decimal milliseconds since the
    /// epoch), when it had one; the dead letter's own timestamp is the time
    /// it was written (so that retention counts from then).
    pub const TIMESTAMP: &str = "logingest.timestamp";
    /// Present (`true`) on a reduced dead letter, whose value is the JSON
    /// description of the record instead of the record.
    pub const REDUCED: &str = "logingest.reduced";
}

/// One document to dead-letter.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// Where it was read.
    pub partition: &'a TopicPartition,
    /// The record as read.
    pub record: RawRecord<'a>,
    /// Why it was rejected.
    pub reason: &'a str,
}

impl DeadLetter<'_> {
    /// The reduced form: what any destination accepts.
    pub fn reduced(&self, refusal: &str) -> Value {
        let value = self.record.value.unwrap_or_default();
        let prefix = &value[..value.len().min(REDUCED_VALUE_PREFIX)];
        json!({
            "reduced": true,
            "reason": self.reason,
            "refused": refusal,
            "topic": &*self.partition.topic,
            "partition": self.partition.partition,
            "offset": self.record.offset,
            "timestamp": self.record.timestamp_ms,
            "original_size": value.len(),
            "key_size": self.record.key.map(<[u8]>::len),
            "value_prefix": String::from_utf8_lossy(prefix),
        })
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    /// Not delivered now, for a reason that is waited for; try again.
    #[error("{error}")]
    Wait {
        /// Why.
        reason: DeadLetterWait,
        /// What the destination said.
        error: String,
    },
    /// The destination refused this letter for its size or content.
    #[error("{0}")]
    Refused(String),
}

/// A failed delivery, as the destination reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure<'a> {
    /// The producer's error (`None`: no error code, e.g. a local failure).
    Kafka(Option<RDKafkaErrorCode>),
    /// The HTTP status of the whole `_bulk` request.
    Http(u16),
    /// The letter's bulk item: its status and error type.
    Item {
        /// The item's status.
        status: u16,
        /// Its error type (`mapper_parsing_exception`...).
        kind: Option<&'a str>,
    },
}

/// What to do after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Wait for the destination (backoff, count, readiness), then try the
    /// same letter again.
    Wait(DeadLetterWait),
    /// The letter itself is refused (size, content): write the reduced form.
    Reduce,
}

/// Classifies a failed delivery. Only an error about the letter's own size
/// or content leads to the reduced form; anything about the destination
/// (authorisation, existence, availability) is waited for, since a reduced
/// letter would fail the same way and its record would be lost.
///
/// `InvalidTopic` (the configured topic template makes an illegal name)
/// and `invalid_index_name_exception` count as an unknown destination: a
/// configuration to fix, after which the letter goes through.
fn classify(failure: Failure<'_>) -> Verdict {
    use DeadLetterWait::{Unauthorized, UnknownDestination, Unreachable};
    use RDKafkaErrorCode as K;
    let wait = Verdict::Wait;
    match failure {
        Failure::Kafka(Some(
            K::MessageSizeTooLarge
            | K::InvalidMessageSize
            | K::InvalidMessage
            | K::InvalidRecord
            | K::MessageBatchTooLarge,
        )) => Verdict::Reduce,
        Failure::Kafka(Some(
            K::TopicAuthorizationFailed
            | K::ClusterAuthorizationFailed
            | K::SaslAuthenticationFailed
            | K::Authentication,
        )) => wait(Unauthorized),
        Failure::Kafka(Some(
            K::UnknownTopicOrPartition | K::UnknownTopic | K::UnknownPartition | K::InvalidTopic,
        )) => wait(UnknownDestination),
        Failure::Kafka(_) => wait(Unreachable),
        Failure::Http(400 | 413) => Verdict::Reduce,
        Failure::Http(401 | 403) => wait(Unauthorized),
        Failure::Http(404) => wait(UnknownDestination),
        Failure::Http(_) => wait(Unreachable),
        Failure::Item {
            kind: Some("index_not_found_exception" | "invalid_index_name_exception"),
            ..
        } => wait(UnknownDestination),
        Failure::Item {
            status: 401 | 403, ..
        } => wait(Unauthorized),
        Failure::Item { status: 404, .. } => wait(UnknownDestination),
        Failure::Item {
            status: 400 | 413, ..
        } => Verdict::Reduce,
        Failure::Item { .. } => wait(Unreachable),
    }
}

impl DeliveryError {
    /// The error of `failure`, described by `error`.
    fn of(failure: Failure<'_>, error: String) -> Self {
        match classify(failure) {
            Verdict::Reduce => Self::Refused(error),
            Verdict::Wait(reason) => Self::Wait { reason, error },
        }
    }
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
    Report(mpsc::UnboundedSender<Refusal>),
}

/// A document refused for good, handed back by a reporting
/// [`DeadLetters`] instead of being dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Where the record was read.
    pub partition: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Why Elasticsearch refused it.
    pub reason: String,
}

/// Sends dead letters to the configured destination.
pub struct DeadLetters {
    destination: Destination,
    retry: RetryConfig,
    metrics: Metrics,
    /// Where letters waiting for their destination are reported.
    health: Arc<SinkHealth>,
}

/// The dead-letter topic of `topic` for the configured template.
pub fn dead_letter_topic(template: &str, topic: &str) -> String {
    template.replace("{topic}", topic)
}

impl DeadLetters {
    /// The dead letters of `config`: to `producer` (which the caller builds
    /// for `destination = "kafka"`, see
    /// [`crate::kafka::security::dead_letter_producer`]), or to the index
    /// through the sink's client.
    pub fn new(
        config: &DeadLetterConfig,
        producer: Option<FutureProducer>,
        es: Elasticsearch,
        retry: RetryConfig,
        metrics: Metrics,
    ) -> Self {
        let destination = match (config.destination, producer) {
            (DeadLetterDestination::Kafka, Some(producer)) => Destination::Kafka {
                producer,
                topic: config.topic.clone(),
            },
            (DeadLetterDestination::Kafka, None) => Destination::Nowhere,
            (DeadLetterDestination::Elasticsearch, _) => Destination::Elasticsearch {
                client: es,
                index: config.index.clone(),
            },
            (DeadLetterDestination::None, _) => Destination::Nowhere,
        };
        Self {
            destination,
            retry,
            metrics,
            health: Arc::default(),
        }
    }

    /// The health the sink reports on `/readyz`; letters waiting for their
    /// destination are part of it (the sink uses this one).
    pub fn health(&self) -> Arc<SinkHealth> {
        self.health.clone()
    }

    /// The Elasticsearch index dead letters go to, when they go to one: no
    /// transform may route documents into it.
    pub fn index(&self) -> Option<&str> {
        match &self.destination {
            Destination::Elasticsearch { index, .. } => Some(index),
            _ => None,
        }
    }

    /// A destination that writes nothing and hands every refused document
    /// to the returned receiver (for `logingest dlq replay`: a letter
    /// refused again stays where it is and is reported, never dead-lettered
    /// twice). Nothing is logged or counted as dead-lettered.
    pub fn reporting(
        retry: RetryConfig,
        metrics: Metrics,
    ) -> (Self, mpsc::UnboundedReceiver<Refusal>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let letters = Self {
            destination: Destination::Report(sender),
            retry,
            metrics,
            health: Arc::default(),
        };
        (letters, receiver)
    }

    /// Delivers every letter (in full, else reduced, else logged); returns
    /// once each is settled, waiting out unreachable destinations.
    pub async fn send(&self, letters: &[DeadLetter<'_>]) {
        if let Destination::Report(sender) = &self.destination {
            for letter in letters {
                // The receiver gone means nobody waits for the answer.
                let _ = sender.send(Refusal {
                    partition: letter.partition.clone(),
                    offset: letter.record.offset,
                    reason: letter.reason.to_string(),
                });
            }
            return;
        }
        for letter in letters {
            let topic = &letter.partition.topic;
            error!(
                topic = %topic,
                partition = letter.partition.partition,
                offset = letter.record.offset,
                reason = %letter.reason,
                "document rejected by Elasticsearch; dead-lettering it"
            );
            let label = TopicLabel::of(topic);
            match self.deliver(letter).await {
                Ok(()) => {
                    self.metrics
                        .documents_dead_lettered
                        .get_or_create(&label)
                        .inc();
                }
                Err(refusal) => {
                    error!(
                        topic = %topic,
                        partition = letter.partition.partition,
                        offset = letter.record.offset,
                        reason = %letter.reason,
                        refusal = %refusal,
                        "dead-letter destination refused even the reduced form; the record stays only in the source topic"
                    );
                    self.metrics
                        .dead_letters_refused
                        .get_or_create(&label)
                        .inc();
                }
            }
        }
    }

    /// Full form, then reduced form; `Err` with the last refusal when both
    /// were refused for good.
    async fn deliver(&self, letter: &DeadLetter<'_>) -> Result<(), String> {
        let refusal = match self.until_settled(letter, None).await {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        warn!(
            topic = %letter.partition.topic,
            partition = letter.partition.partition,
            offset = letter.record.offset,
            refusal = %refusal,
            "dead-letter destination refused the record; writing its reduced form"
        );
        let reduced = letter.reduced(&refusal);
        self.until_settled(letter, Some(&reduced)).await
    }

    /// Retries while the destination is waited for; `Err` with the reason
    /// when it refuses the letter for its size or content.
    async fn until_settled(
        &self,
        letter: &DeadLetter<'_>,
        reduced: Option<&Value>,
    ) -> Result<(), String> {
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        // Reported to readiness from the first failure until settled (or
        // this future dropped: its chunk abandoned).
        let mut waiting = None;
        loop {
            match self.send_one(letter, reduced).await {
                Ok(()) => return Ok(()),
                Err(DeliveryError::Refused(reason)) => return Err(reason),
                Err(DeliveryError::Wait { reason, error }) => {
                    waiting.get_or_insert_with(|| self.health.letter_waiting());
                    self.metrics
                        .dead_letter_delivery_failures
                        .get_or_create(&DeadLetterWaitLabel {
                            topic: letter.partition.topic.to_string(),
                            reason,
                        })
                        .inc();
                    let delay = backoff.next_delay();
                    warn!(
                        topic = %letter.partition.topic,
                        partition = letter.partition.partition,
                        offset = letter.record.offset,
                        reason = reason.as_str(),
                        error = %error,
                        retry_in = ?delay,
                        "dead-letter destination does not take the letter; retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn send_one(
        &self,
        letter: &DeadLetter<'_>,
        reduced: Option<&Value>,
    ) -> Result<(), DeliveryError> {
        match &self.destination {
            Destination::Nowhere | Destination::Report(_) => Ok(()),
            Destination::Kafka { producer, topic } => {
                self.produce(producer, topic, letter, reduced).await
            }
            Destination::Elasticsearch { client, index } => {
                index_letter(client, index, letter, reduced).await
            }
        }
    }

    async fn produce(
        &self,
        producer: &FutureProducer,
        template: &str,
        letter: &DeadLetter<'_>,
        reduced: Option<&Value>,
    ) -> Result<(), DeliveryError> {
        let tp = letter.partition;
        let dlq_topic = dead_letter_topic(template, &tp.topic);
        let partition_text = tp.partition.to_string();
        let offset_text = letter.record.offset.to_string();
        let timestamp_text = letter.record.timestamp_ms.map(|ms| ms.to_string());
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: headers::TOPIC,
                value: Some(tp.topic.as_bytes()),
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
                value: Some(letter.reason.as_bytes()),
            });
        if let Some(timestamp) = &timestamp_text {
            headers = headers.insert(Header {
                key: headers::TIMESTAMP,
                value: Some(timestamp.as_bytes()),
            });
        }
        let reduced_value = reduced.map(Value::to_string);
        if reduced.is_some() {
            headers = headers.insert(Header {
                key: headers::REDUCED,
                value: Some(&b"true"[..]),
            });
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&dlq_topic).headers(headers);
        match &reduced_value {
            Some(value) => record = record.payload(value.as_bytes()),
            None => {
                if let Some(key) = letter.record.key {
                    record = record.key(key);
                }
                if let Some(value) = letter.record.value {
                    record = record.payload(value);
                }
            }
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(classify_produce_error(&dlq_topic, e)),
        }
    }
}

fn classify_produce_error(topic: &str, error: KafkaError) -> DeliveryError {
    let text = format!("producing to {topic}: {error}");
    DeliveryError::of(Failure::Kafka(error.rdkafka_error_code()), text)
}

async fn index_letter(
    client: &Elasticsearch,
    index: &str,
    letter: &DeadLetter<'_>,
    reduced: Option<&Value>,
) -> Result<(), DeliveryError> {
    let tp = letter.partition;
    let id = document_id(&tp.topic, tp.partition, letter.record.offset);
    let action = json!({"index": {"_index": index, "_id": id}});
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let source = match reduced {
        Some(reduced) => json!({
            "@timestamp": now,
            "message": reduced["value_prefix"],
            "kafka": {
                "topic": &*tp.topic,
                "partition": tp.partition,
                "offset": letter.record.offset,
                "timestamp": letter.record.timestamp_ms,
            },
            "error": {"reason": letter.reason, "refused": reduced["refused"]},
            "reduced": true,
            "original_size": reduced["original_size"],
        }),
        None => json!({
            "@timestamp": now,
            "message": letter.record.value.map(String::from_utf8_lossy),
            "kafka": {
                "topic": &*tp.topic,
                "partition": tp.partition,
                "offset": letter.record.offset,
                "timestamp": letter.record.timestamp_ms,
                "key": letter.record.key.map(String::from_utf8_lossy),
            },
            "error": {"reason": letter.reason},
        }),
    };
    let body = format!("{action}\n{source}\n");
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let response = client
        .transport()
        .send(
            Method::Post,
            "/_bulk",
            headers,
            None::<&()>,
            Some(body),
            None,
        )
        .await
        .map_err(unreachable)?;
    let status = response.status_code().as_u16();
    let reply = response.bytes().await.map_err(unreachable)?;
    if !(200..=299).contains(&status) {
        let text = format!(
            "dead-letter index {index}: HTTP {status}: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(512)])
        );
        return Err(DeliveryError::of(Failure::Http(status), text));
    }
    match reply::parse(&reply, 1, |_, got| got == id) {
        Ok(items) => match items.into_iter().next() {
            Some(ItemStatus::Stored) => Ok(()),
            Some(ItemStatus::Rejected(e) | ItemStatus::Retry(e)) => {
                let failure = Failure::Item {
                    status: e.status,
                    kind: e.kind.as_deref(),
                };
                let text = format!("dead-letter index {index} refused the document: {e}");
                Err(DeliveryError::of(failure, text))
            }
            None => Err(unreachable("empty bulk reply")),
        },
        Err(e) => Err(unreachable(e)),
    }
}

/// A failure to reach the destination or to read its answer.
fn unreachable(error: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Wait {
        reason: DeadLetterWait::Unreachable,
        error: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reduced_form_keeps_what_identifies_the_record() {
        let tp = TopicPartition::new("app", 2);
        let value = vec![b'x'; 5000];
        let letter = DeadLetter {
            partition: &tp,
            record: RawRecord {
                offset: 77,
                key: Some(b"k"),
                value: Some(&value),
                timestamp_ms: Some(1_700_000_000_000),
            },
            reason: "413 request entity too large",
        };
        let reduced = letter.reduced("message too large");
        assert_eq!(reduced["reduced"], true);
        assert_eq!(reduced["topic"], "app");
        assert_eq!(reduced["partition"], 2);
        assert_eq!(reduced["offset"], 77);
        assert_eq!(reduced["original_size"], 5000);
        assert_eq!(reduced["key_size"], 1);
        assert_eq!(reduced["reason"], "413 request entity too large");
        assert_eq!(reduced["refused"], "message too large");
        assert_eq!(
            reduced["value_prefix"].as_str().map(str::len),
            Some(REDUCED_VALUE_PREFIX)
        );
        assert!(reduced.to_string().len() < 2 * REDUCED_VALUE_PREFIX);
    }

    #[tokio::test]
    async fn a_reporting_destination_hands_refusals_back_and_writes_nothing() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry, "test");
        let (letters, mut refusals) = DeadLetters::reporting(RetryConfig::default(), metrics);
        let tp = TopicPartition::new("app", 1);
        let letter = DeadLetter {
            partition: &tp,
            record: RawRecord {
                offset: 9,
                key: None,
                value: Some(b"x"),
                timestamp_ms: None,
            },
            reason: "400 mapper_parsing_exception",
        };
        letters.send(&[letter]).await;
        assert_eq!(
            refusals.try_recv().ok(),
            Some(Refusal {
                partition: tp.clone(),
                offset: 9,
                reason: "400 mapper_parsing_exception".into(),
            })
        );
        assert!(refusals.try_recv().is_err());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            !text.contains("documents_dead_lettered_total{"),
            "not counted as dead-lettered: {text}"
        );
    }

    #[test]
    fn only_size_and_content_errors_reduce_the_letter() {
        use DeadLetterWait::{Unauthorized, UnknownDestination, Unreachable};
        use RDKafkaErrorCode as K;
        let item = |status, kind| Failure::Item { status, kind };
        let cases = [
            (
                Failure::Kafka(Some(K::MessageSizeTooLarge)),
                Verdict::Reduce,
            ),
            (Failure::Kafka(Some(K::InvalidRecord)), Verdict::Reduce),
            (Failure::Http(413), Verdict::Reduce),
            (item(400, Some("mapper_parsing_exception")), Verdict::Reduce),
            (item(413, None), Verdict::Reduce),
            (
                Failure::Kafka(Some(K::TopicAuthorizationFailed)),
                Verdict::Wait(Unauthorized),
            ),
            (
                Failure::Kafka(Some(K::ClusterAuthorizationFailed)),
                Verdict::Wait(Unauthorized),
            ),
            (Failure::Http(401), Verdict::Wait(Unauthorized)),
            (Failure::Http(403), Verdict::Wait(Unauthorized)),
            (
                item(403, Some("security_exception")),
                Verdict::Wait(Unauthorized),
            ),
            (
                Failure::Kafka(Some(K::UnknownTopicOrPartition)),
                Verdict::Wait(UnknownDestination),
            ),
            (
                Failure::Kafka(Some(K::InvalidTopic)),
                Verdict::Wait(UnknownDestination),
            ),
            (Failure::Http(404), Verdict::Wait(UnknownDestination)),
            (
                item(404, Some("index_not_found_exception")),
                Verdict::Wait(UnknownDestination),
            ),
            (
                item(400, Some("invalid_index_name_exception")),
                Verdict::Wait(UnknownDestination),
            ),
            (
                Failure::Kafka(Some(K::MessageTimedOut)),
                Verdict::Wait(Unreachable),
            ),
            (Failure::Kafka(None), Verdict::Wait(Unreachable)),
            (Failure::Http(503), Verdict::Wait(Unreachable)),
            (Failure::Http(429), Verdict::Wait(Unreachable)),
            (
                item(429, Some("es_rejected_execution_exception")),
                Verdict::Wait(Unreachable),
            ),
        ];
        for (failure, verdict) in cases {
            assert_eq!(classify(failure), verdict, "{failure:?}");
        }
        let produced = classify_produce_error(
            "t.dlq",
            KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert!(
            matches!(
                produced,
                DeliveryError::Wait {
                    reason: Unauthorized,
                    ..
                }
            ),
            "{produced:?}"
        );
    }
}
