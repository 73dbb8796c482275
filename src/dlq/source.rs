//! Where a replay reads: the dead-letter topic ([`LetterTopic`], with the
//! replay group's committed position), the dead-letter index
//! ([`LetterIndex`], which also deletes and marks what was dealt with), and
//! the source topic itself for the record of a reduced letter
//! ([`OriginalReader`]).
//!
//! librdkafka calls block: they run on `spawn_blocking`. No topic is ever
//! asked for by name before it is known to exist (metadata of all topics):
//! brokers that auto-create topics (tansu does) would create it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::letter::{self, Payload, Read};
use super::{DlqError, FromOffset};
use crate::config::KafkaConfig;
use crate::kafka::client::RecordingContext;

/// Deadline of one metadata, offsets or commit request.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How long reading the dead-letter topic may go without a message or an
/// end of partition before Kafka is taken as unreachable.
const READ_STALL: Duration = Duration::from_secs(30);

/// How long reading one original record may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The `client.id` of the replay's Kafka clients.
const CLIENT_ID: &str = "logingest-dlq-replay";

type ReplayConsumer = BaseConsumer<RecordingContext>;

/// Runs a blocking librdkafka call off the runtime's workers.
async fn blocking<T: Send + 'static>(
    brokers: &str,
    call: impl FnOnce() -> Result<T, DlqError> + Send + 'static,
) -> Result<T, DlqError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| DlqError::Kafka {
            brokers: brokers.to_string(),
            what: "client call".into(),
            reason: e.to_string(),
        })?
}

/// A consumer with the connection settings of `logingest run` (TLS, SASL,
/// `kafka.options`), in `group`, that never commits on its own and reports
/// the end of each partition.
fn consumer(kafka: &KafkaConfig, group: &str, reset: &str) -> Result<ReplayConsumer, DlqError> {
    let config = KafkaConfig {
        group_id: group.to_string(),
        ..kafka.clone()
    };
    let mut cfg = crate::kafka::client::admin_consumer(&config, CLIENT_ID);
    cfg.set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", reset);
    cfg.create_with_context(RecordingContext::default())
        .map_err(|e| DlqError::Kafka {
            brokers: kafka.brokers.join(","),
            what: "creating a consumer".into(),
            reason: e.to_string(),
        })
}

/// The partition count of every topic in the cluster.
fn partition_counts(
    consumer: &ReplayConsumer,
    brokers: &str,
) -> Result<BTreeMap<String, usize>, DlqError> {
    let metadata = consumer.fetch_metadata(None, TIMEOUT).map_err(|e| {
        let _ = consumer.poll(Duration::ZERO);
        unreachable(brokers, &e, consumer)
    })?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect())
}

fn unreachable(brokers: &str, error: &KafkaError, consumer: &ReplayConsumer) -> DlqError {
    let mut reason = error.to_string();
    if let Some(last) = consumer.context().last_error() {
        reason.push_str(&format!(" (last client error: {last})"));
    }
    DlqError::KafkaUnreachable {
        brokers: brokers.to_string(),
        reason,
    }
}

fn partition_index(p: usize) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

/// Where reading a dead-letter partition started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the replay group's committed offset.
    Committed(i64),
    /// At `--from-offset`.
    Given(i64),
    /// At the beginning (nothing committed yet).
    Beginning,
}

/// Where `--from-offset offset` starts partition `p`: past the end it
/// starts at the end (the brokers would answer out of range, and the reset
/// to the beginning would replay everything), before the start at the
/// start. Both noted on stderr.
fn given_start(
    consumer: &ReplayConsumer,
    brokers: &str,
    topic: &str,
    p: i32,
    offset: i64,
) -> Result<Start, DlqError> {
    let (low, high) = consumer
        .fetch_watermarks(topic, p, TIMEOUT)
        .map_err(|e| unreachable(brokers, &e, consumer))?;
    if offset > high {
        eprintln!("note: --from-offset {offset} is past the end of {topic}/{p} (offset {high}): starting at the end");
        return Ok(Start::Given(high));
    }
    if offset < low {
        eprintln!(
            "note: {topic}/{p} starts at offset {low} (older letters are gone): starting there"
        );
        return Ok(Start::Given(low));
    }
    Ok(Start::Given(offset))
}

/// The dead-letter topic, read by the replay group from its position to
/// the end of each partition.
pub struct LetterTopic {
    consumer: Arc<ReplayConsumer>,
    name: Arc<str>,
    brokers: String,
    /// Partitions not read to their end yet.
    open: BTreeSet<i32>,
    starts: BTreeMap<i32, Start>,
}

impl LetterTopic {
    /// Opens `name` for the replay group `group`: `Ok(None)` when the
    /// topic does not exist (nothing was ever dead-lettered there).
    pub async fn open(
        kafka: &KafkaConfig,
        name: &str,
        group: &str,
        from: &[FromOffset],
    ) -> Result<Option<Self>, DlqError> {
        let brokers = kafka.brokers.join(",");
        let consumer = Arc::new(consumer(kafka, group, "earliest")?);
        let (task_consumer, task_brokers, topic) =
            (consumer.clone(), brokers.clone(), name.to_string());
        let from = from.to_vec();
        let starts = blocking(&brokers, move || {
            let Some(&count) = partition_counts(&task_consumer, &task_brokers)?.get(&topic) else {
                return Ok(None);
            };
            let partitions: Vec<i32> = (0..count).map(partition_index).collect();
            if let Some(bad) = from
                .iter()
                .filter_map(|f| f.partition)
                .find(|p| !partitions.contains(p))
            {
                return Err(DlqError::Usage(format!(
                    "--from-offset names partition {bad}; {topic} has partitions 0 to {}",
                    count.saturating_sub(1)
                )));
            }
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition(&topic, *p);
            }
            let committed = task_consumer
                .committed_offsets(tpl, TIMEOUT)
                .map_err(|e| unreachable(&task_brokers, &e, &task_consumer))?;
            let committed: BTreeMap<i32, i64> = committed
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some((e.partition(), o)),
                    _ => None,
                })
                .collect();
            let mut starts = BTreeMap::new();
            let mut assignment = TopicPartitionList::new();
            for p in partitions {
                let given = from
                    .iter()
                    .find(|f| f.partition == Some(p))
                    .or_else(|| from.iter().find(|f| f.partition.is_none()));
                let start = match (given, committed.get(&p)) {
                    (Some(f), _) => {
                        given_start(&task_consumer, &task_brokers, &topic, p, f.offset)?
                    }
                    (None, Some(&o)) => Start::Committed(o),
                    (None, None) => Start::Beginning,
                };
                let offset = match start {
                    Start::Given(o) | Start::Committed(o) => Offset::Offset(o),
                    Start::Beginning => Offset::Beginning,
                };
                assignment
                    .add_partition_offset(&topic, p, offset)
                    .map_err(|e| DlqError::Kafka {
                        brokers: task_brokers.clone(),
                        what: format!("assigning {topic}/{p}"),
                        reason: e.to_string(),
                    })?;
                starts.insert(p, start);
            }
            task_consumer
                .assign(&assignment)
                .map_err(|e| DlqError::Kafka {
                    brokers: task_brokers.clone(),
                    what: format!("assigning {topic}"),
                    reason: e.to_string(),
                })?;
            Ok(Some(starts))
        })
        .await?;
        Ok(starts.map(|starts| Self {
            consumer,
            name: Arc::from(name),
            brokers,
            open: starts.keys().copied().collect(),
            starts,
        }))
    }

    /// The topic's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Where each partition started.
    pub fn starts(&self) -> &BTreeMap<i32, Start> {
        &self.starts
    }

    /// Whether every partition was read to its end.
    pub fn is_done(&self) -> bool {
        self.open.is_empty()
    }

    /// Up to `max` records, in order per partition; fewer when no more is
    /// waiting; none once every partition is read to its end. A partition
    /// ends at the end the broker reports when the replay gets there (its
    /// high watermark then): letters written meanwhile are read too.
    pub async fn read(&mut self, max: usize) -> Result<Vec<OwnedMessage>, DlqError> {
        if self.open.is_empty() {
            return Ok(Vec::new());
        }
        let consumer = self.consumer.clone();
        let brokers = self.brokers.clone();
        let name = self.name.clone();
        let mut open = std::mem::take(&mut self.open);
        let (messages, open) = blocking(&self.brokers.clone(), move || {
            let mut messages = Vec::new();
            let mut progress = Instant::now();
            let mut last_error: Option<String> = None;
            while !open.is_empty() && messages.len() < max {
                let wait = if messages.is_empty() {
                    Duration::from_millis(200)
                } else {
                    Duration::ZERO
                };
                match consumer.poll(wait) {
                    Some(Ok(m)) => {
                        progress = Instant::now();
                        // After its end a partition is paused; what was
                        // already fetched beyond it is left for next time.
                        if open.contains(&m.partition()) {
                            messages.push(m.detach());
                        }
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        progress = Instant::now();
                        if open.remove(&p) {
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(&name, p);
                            if let Err(e) = consumer.pause(&tpl) {
                                debug!(partition = p, error = %e, "cannot pause a finished partition");
                            }
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "error reading the dead-letter topic");
                        last_error = Some(e.to_string());
                    }
                    None if !messages.is_empty() => break,
                    None => {}
                }
                if messages.is_empty() && progress.elapsed() > READ_STALL {
                    let reason = last_error
                        .or_else(|| consumer.context().last_error())
                        .unwrap_or_else(|| "no answer".into());
                    return Err(DlqError::KafkaUnreachable {
                        brokers,
                        reason: format!(
                            "reading {name} made no progress for {READ_STALL:?} ({reason})"
                        ),
                    });
                }
            }
            Ok((messages, open))
        })
        .await?;
        self.open = open;
        Ok(messages)
    }

    /// Commits `next` (the next offset to read, per partition) for the
    /// replay group.
    pub async fn commit(&self, next: &BTreeMap<i32, i64>) -> Result<(), DlqError> {
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in next {
            tpl.add_partition_offset(&self.name, *p, Offset::Offset(*o))
                .map_err(|e| DlqError::Kafka {
                    brokers: self.brokers.clone(),
                    what: "committing".into(),
                    reason: e.to_string(),
                })?;
        }
        let consumer = self.consumer.clone();
        let brokers = self.brokers.clone();
        let name = self.name.clone();
        blocking(&self.brokers, move || {
            consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| match e.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::OperationTimedOut
                        | RDKafkaErrorCode::AllBrokersDown
                        | RDKafkaErrorCode::BrokerTransportFailure
                        | RDKafkaErrorCode::CoordinatorNotAvailable
                        | RDKafkaErrorCode::NotCoordinator,
                    ) => unreachable(&brokers, &e, &consumer),
                    _ => DlqError::Kafka {
                        brokers,
                        what: format!("committing the replay position of {name}"),
                        reason: e.to_string(),
                    },
                })
        })
        .await
    }
}

/// What reading an original record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The record.
    Found(Payload),
    /// It is not in the topic any more (retention, compaction, a recreated
    /// topic): the letter can never be replayed.
    Gone(String),
}

/// Reads single records of the source topic (for reduced letters).
pub struct OriginalReader {
    consumer: Arc<ReplayConsumer>,
    topic: String,
    brokers: String,
    /// The topic's partition count; `None` when it does not exist.
    partitions: Option<usize>,
}

impl OriginalReader {
    /// A reader of `topic`.
    pub async fn open(kafka: &KafkaConfig, topic: &str, group: &str) -> Result<Self, DlqError> {
        let brokers = kafka.brokers.join(",");
        // Out of range is an error, not a silent jump to another record.
        let consumer = Arc::new(consumer(kafka, group, "error")?);
        let (task_consumer, task_brokers, name) =
            (consumer.clone(), brokers.clone(), topic.to_string());
        let partitions = blocking(&brokers, move || {
            Ok(partition_counts(&task_consumer, &task_brokers)?
                .get(&name)
                .copied())
        })
        .await?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            brokers,
            partitions,
        })
    }

    /// The topic's partition count, `None` when it does not exist.
    pub fn partitions(&self) -> Option<usize> {
        self.partitions
    }

    /// Reads the record at `partition`/`offset`.
    pub async fn fetch(&self, partition: i32, offset: i64) -> Result<Fetched, DlqError> {
        let Some(count) = self.partitions else {
            return Ok(Fetched::Gone(format!(
                "original no longer in the topic (topic {} does not exist)",
                self.topic
            )));
        };
        if usize::try_from(partition).map_or(true, |p| p >= count) {
            return Ok(Fetched::Gone(format!(
                "original no longer in the topic ({} has no partition {partition})",
                self.topic
            )));
        }
        let consumer = self.consumer.clone();
        let brokers = self.brokers.clone();
        let topic = self.topic.clone();
        blocking(&self.brokers, move || {
            let (low, _high) = consumer
                .fetch_watermarks(&topic, partition, TIMEOUT)
                .map_err(|e| unreachable(&brokers, &e, &consumer))?;
            if offset < low {
                return Ok(Fetched::Gone(format!(
                    "original no longer in the topic ({topic}/{partition} starts at offset {low})"
                )));
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                .and_then(|()| consumer.assign(&tpl))
                .map_err(|e| DlqError::Kafka {
                    brokers: brokers.clone(),
                    what: format!("reading {topic}/{partition}/{offset}"),
                    reason: e.to_string(),
                })?;
            let started = Instant::now();
            let mut last_error = None;
            let outcome = loop {
                if started.elapsed() > FETCH_TIMEOUT {
                    let reason = last_error
                        .or_else(|| consumer.context().last_error())
                        .unwrap_or_else(|| "no answer".into());
                    break Err(DlqError::KafkaUnreachable {
                        brokers: brokers.clone(),
                        reason: format!(
                            "reading the original of a reduced letter at {topic}/{partition}/{offset} took over {FETCH_TIMEOUT:?} ({reason})"
                        ),
                    });
                }
                match consumer.poll(Duration::from_millis(200)) {
                    Some(Ok(m)) if m.partition() != partition => {}
                    Some(Ok(m)) if m.offset() == offset => {
                        break Ok(Fetched::Found(Payload {
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                            timestamp_ms: m.timestamp().to_millis(),
                        }))
                    }
                    Some(Ok(m)) if m.offset() > offset => {
                        break Ok(Fetched::Gone(format!(
                            "original no longer in the topic (compacted away: {topic}/{partition} goes on at offset {})",
                            m.offset()
                        )))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(KafkaError::PartitionEOF(p))) if p == partition => {
                        break Ok(Fetched::Gone(format!(
                            "original no longer in the topic ({topic}/{partition} ends before offset {offset})"
                        )))
                    }
                    Some(Err(e))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange)
                            || e.to_string().contains("out of range") =>
                    {
                        break Ok(Fetched::Gone(format!(
                            "original no longer in the topic (offset {offset} of {topic}/{partition} is out of range)"
                        )))
                    }
                    Some(Err(e)) => last_error = Some(e.to_string()),
                    None => {}
                }
            };
            let _ = consumer.unassign();
            outcome
        })
        .await
    }
}

/// Calls Elasticsearch and reads the JSON reply; `Ok((status, body))` for
/// any answer, [`DlqError::EsUnreachable`] for none.
async fn call(
    client: &Elasticsearch,
    url: &str,
    method: Method,
    path: &str,
    query: &[(&str, &str)],
    body: Option<String>,
    ndjson: bool,
) -> Result<(u16, Value), DlqError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        }),
    );
    let response = client
        .transport()
        .send(method, path, headers, Some(&query), body, None)
        .await
        .map_err(|e| DlqError::EsUnreachable {
            url: url.to_string(),
            reason: error_chain(&e),
        })?;
    let status = response.status_code().as_u16();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| DlqError::EsUnreachable {
            url: url.to_string(),
            reason: format!("reading the reply: {}", error_chain(&e)),
        })?;
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, json))
}

fn es_error(url: &str, status: u16, what: &str, body: &Value) -> DlqError {
    let reason = body["error"]["reason"]
        .as_str()
        .map(String::from)
        .or_else(|| body["error"].as_str().map(String::from))
        .unwrap_or_else(|| {
            let text = body.to_string();
            text.chars().take(300).collect()
        });
    DlqError::EsServer {
        url: url.to_string(),
        status,
        what: what.to_string(),
        reason,
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Checks that Elasticsearch answers at all.
pub async fn ping(client: &Elasticsearch, url: &str) -> Result<(), DlqError> {
    let answer = tokio::time::timeout(
        TIMEOUT,
        call(client, url, Method::Get, "/", &[], None, false),
    )
    .await
    .map_err(|_| DlqError::EsUnreachable {
        url: url.to_string(),
        reason: format!("no answer within {TIMEOUT:?}"),
    })??;
    match answer {
        (200..=299, _) => Ok(()),
        (status, body) => Err(es_error(url, status, "GET /", &body)),
    }
}

/// Field marking a letter of the dead-letter index that can never be
/// replayed (with its reason); such letters are skipped from then on.
pub const NOT_REPLAYABLE_FIELD: &str = "replay.not_replayable";

/// The dead-letter index, read in `(kafka.partition, kafka.offset)` order.
pub struct LetterIndex {
    client: Elasticsearch,
    url: String,
    index: Arc<str>,
    topic: String,
    after: Option<Value>,
    exhausted: bool,
    /// The `_source` of each letter of the last page, for marking.
    sources: HashMap<String, Value>,
}

impl LetterIndex {
    /// Opens `index` for `topic`'s letters: `Ok(None)` when it does not
    /// exist (nothing was ever dead-lettered there).
    pub async fn open(
        client: Elasticsearch,
        url: &str,
        index: &str,
        topic: &str,
    ) -> Result<Option<Self>, DlqError> {
        let (status, body) = call(
            &client,
            url,
            Method::Get,
            &format!("/{index}"),
            &[],
            None,
            false,
        )
        .await?;
        match status {
            200..=299 => {}
            404 => return Ok(None),
            _ => return Err(es_error(url, status, &format!("GET /{index}"), &body)),
        }
        Ok(Some(Self {
            client,
            url: url.to_string(),
            index: Arc::from(index),
            topic: topic.to_string(),
            after: None,
            exhausted: false,
            sources: HashMap::new(),
        }))
    }

    /// The index name.
    pub fn name(&self) -> &Arc<str> {
        &self.index
    }

    /// Whether every letter was read.
    pub fn is_done(&self) -> bool {
        self.exhausted
    }

    /// The next `size` letters of the topic (not marked as not replayable).
    pub async fn read(&mut self, size: usize) -> Result<Vec<Read>, DlqError> {
        self.sources.clear();
        if self.exhausted {
            return Ok(Vec::new());
        }
        // `kafka.topic` is a keyword under logingest's index template and
        // text (with a `.keyword` sub-field) under dynamic mapping: either
        // matches, and the exact name is checked again below.
        let mut body = json!({
            "size": size,
            "query": {"bool": {
                "filter": [{"bool": {
                    "should": [
                        {"term": {"kafka.topic": &self.topic}},
                        {"term": {"kafka.topic.keyword": &self.topic}}
                    ],
                    "minimum_should_match": 1
                }}],
                "must_not": [{"exists": {"field": NOT_REPLAYABLE_FIELD}}]
            }},
            "sort": [{"kafka.partition": "asc"}, {"kafka.offset": "asc"}]
        });
        if let Some(after) = &self.after {
            body["search_after"] = after.clone();
        }
        let path = format!("/{}/_search", self.index);
        let (status, reply) = call(
            &self.client,
            &self.url,
            Method::Post,
            &path,
            &[],
            Some(body.to_string()),
            false,
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(es_error(&self.url, status, &format!("POST {path}"), &reply));
        }
        let hits = reply["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if hits.len() < size {
            self.exhausted = true;
        }
        if let Some(last) = hits.last() {
            match last.get("sort") {
                Some(sort) => self.after = Some(sort.clone()),
                // Without sort values there is no way to page on.
                None => self.exhausted = true,
            }
        }
        let mut letters = Vec::with_capacity(hits.len());
        for hit in hits {
            let Some(id) = hit["_id"].as_str() else {
                continue;
            };
            let source = hit.get("_source").cloned().unwrap_or(Value::Null);
            letters.push(letter::from_document(&self.topic, &self.index, id, &source));
            self.sources.insert(id.to_string(), source);
        }
        Ok(letters)
    }

    /// Deletes replayed letters (by `_id`).
    pub async fn delete(&self, ids: &[String]) -> Result<(), DlqError> {
        let mut body = String::new();
        for id in ids {
            body.push_str(&json!({"delete": {"_index": &*self.index, "_id": id}}).to_string());
            body.push('\n');
        }
        self.bulk(body, "deleting replayed letters").await
    }

    /// Marks letters of the last page that can never be replayed, with
    /// their reason.
    pub async fn mark_not_replayable(&self, marks: &[(String, String)]) -> Result<(), DlqError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut body = String::new();
        for (id, reason) in marks {
            let Some(source) = self.sources.get(id) else {
                continue;
            };
            let mut source = source.clone();
            if let Some(object) = source.as_object_mut() {
                object.insert(
                    "replay".into(),
                    json!({"not_replayable": reason, "at": now}),
                );
            }
            body.push_str(&json!({"index": {"_index": &*self.index, "_id": id}}).to_string());
            body.push('\n');
            body.push_str(&source.to_string());
            body.push('\n');
        }
        self.bulk(body, "marking letters not replayable").await
    }

    async fn bulk(&self, body: String, what: &str) -> Result<(), DlqError> {
        if body.is_empty() {
            return Ok(());
        }
        let (status, reply) = call(
            &self.client,
            &self.url,
            Method::Post,
            "/_bulk",
            &[("refresh", "true")],
            Some(body),
            true,
        )
        .await?;
        if !(200..300).contains(&status) {
            return Err(es_error(&self.url, status, what, &reply));
        }
        let failed: Vec<&Value> = reply["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| item.as_object()?.values().next())
            .filter(|item| {
                // A letter already deleted (by another replay) is fine.
                let status = item["status"].as_u64().unwrap_or(0);
                !(200..300).contains(&status) && status != 404
            })
            .collect();
        match failed.first() {
            None => Ok(()),
            Some(item) => {
                warn!(index = %self.index, failed = failed.len(), "dead-letter index refused some of {what}");
                Err(es_error(
                    &self.url,
                    item["status"]
                        .as_u64()
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(0),
                    what,
                    item,
                ))
            }
        }
    }
}
