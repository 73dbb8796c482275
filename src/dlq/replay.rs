//! The replay loop: read a batch of letters, send each one back (through
//! the sink, or to the topic), wait for every answer of the batch, record
//! the progress (commit the dead-letter topic's offsets, or delete and mark
//! letters of the index), print the progress line; at the end, the summary.
//!
//! The recorded position never passes a letter refused again: per
//! dead-letter partition an [`OffsetTracker`] (the partition tasks' own)
//! hands out only the end of the contiguous prefix of letters that are
//! settled for good (replayed, not replayable, of another topic).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::letter::{Contents, Letter, LetterAt, Payload, Read, REPLAY_OF};
use super::report::{dry_run_line, Fate, Tally};
use super::source::{Fetched, LetterIndex, LetterTopic, OriginalReader, Start};
use super::{replay_group, DlqError, ReplayArgs};
use crate::config::{Config, DeadLetterDestination};
use crate::document::{Record, Shaped, Shaper};
use crate::kafka::offsets::OffsetTracker;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::registry::admin::{AdminError, RegistryAdmin};
use crate::sink::chunk::{ChunkBuilder, ChunkId, ChunkOutcome};
use crate::sink::dead_letter::{dead_letter_topic, DeadLetters, Refusal};
use crate::sink::template::Templates;
use crate::sink::{Sink, SinkParts};
use crate::topic::{TopicPartition, TopicSettings};

/// How long Elasticsearch may fail every request (or the index template
/// wait) before the replay gives up on it.
const STALL: Duration = Duration::from_secs(60);

/// How often the progress line is printed (at most).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Memory reserved per letter beyond its key and value.
const LETTER_OVERHEAD: usize = 512;

/// Runs `logingest dlq replay`.
pub async fn run(config: &Config, args: &ReplayArgs) -> Result<(), DlqError> {
    let topic = args.topic.trim().to_string();
    crate::topic::validate_topic(&topic).map_err(|e| DlqError::Usage(e.to_string()))?;
    let from_index =
        args.from_index || config.dead_letter.destination == DeadLetterDestination::Elasticsearch;
    if from_index && !args.from_offset.is_empty() {
        return Err(DlqError::Usage(
            "--from-offset is an offset of the dead-letter topic; the letters are read from the dead-letter index (--from-index or dead_letter.destination = \"elasticsearch\")".into(),
        ));
    }
    let group = replay_group(&config.kafka.group_id, &topic);
    let mut target = if args.to_topic {
        Target::Topic(TopicTarget::open(config, &topic, &group, args.dry_run).await?)
    } else {
        let settings = registered_settings(config, &topic).await?;
        Target::Index(IndexTarget::start(config, &topic, settings, args.dry_run).await?)
    };
    let letters = if from_index {
        let client = crate::sink::client::connect(&config.elasticsearch).await?;
        super::source::ping(&client, &config.elasticsearch.urls()).await?;
        LetterIndex::open(
            client,
            &config.elasticsearch.urls(),
            &config.dead_letter.index,
            &topic,
        )
        .await?
        .map(Letters::Index)
    } else {
        let name = dead_letter_topic(&config.dead_letter.topic, &topic);
        LetterTopic::open(&config.kafka, &name, &group, &args.from_offset)
            .await?
            .map(Letters::Topic)
    };
    let Some(letters) = letters else {
        let (what, name) = if from_index {
            ("index", config.dead_letter.index.clone())
        } else {
            (
                "topic",
                dead_letter_topic(&config.dead_letter.topic, &topic),
            )
        };
        target.stop().await;
        println!("nothing to replay: the dead-letter {what} {name} does not exist");
        return Ok(());
    };
    let mut replay = Replay {
        config,
        topic,
        group,
        dry_run: args.dry_run,
        batch: args.batch as usize,
        letters,
        target,
        originals: None,
        trackers: BTreeMap::new(),
        committed: BTreeMap::new(),
        tally: Tally::default(),
        last_progress: Instant::now(),
    };
    let outcome = replay.run().await;
    replay.target.stop().await;
    replay.print_summary(outcome.as_ref().err());
    outcome?;
    replay.verdict()
}

/// The topic's current settings from the registry.
async fn registered_settings(config: &Config, topic: &str) -> Result<Arc<TopicSettings>, DlqError> {
    let timeout = config.etcd.connect_timeout * 2 + Duration::from_secs(2);
    let endpoints = config.etcd.endpoints.join(",");
    let read = tokio::time::timeout(timeout, async {
        let mut admin = RegistryAdmin::connect(&config.etcd).await?;
        admin.desired().await
    })
    .await
    .map_err(|_| DlqError::EtcdUnreachable {
        endpoints: endpoints.clone(),
        reason: format!("no answer within {timeout:?}"),
    })?;
    let (desired, errors) = read.map_err(|e| match e {
        AdminError::Etcd { source, .. } => DlqError::EtcdUnreachable {
            endpoints: endpoints.clone(),
            reason: source.to_string(),
        },
        AdminError::Invalid(e) => DlqError::InvalidSettings {
            topic: topic.to_string(),
            reason: e.to_string(),
        },
    })?;
    if let Some(settings) = desired.get(topic) {
        return Ok(settings.clone());
    }
    let key = format!("{}{topic}", config.etcd.prefix);
    if let Some((_, error)) = errors.iter().find(|(k, _)| *k == key) {
        return Err(DlqError::InvalidSettings {
            topic: topic.to_string(),
            reason: error.to_string(),
        });
    }
    Err(DlqError::NotRegistered {
        topic: topic.to_string(),
        key,
    })
}

/// Where the letters are read.
enum Letters {
    Topic(LetterTopic),
    Index(LetterIndex),
}

impl Letters {
    fn describe(&self) -> String {
        match self {
            Letters::Topic(t) => t.name().to_string(),
            Letters::Index(i) => format!("index {}", i.name()),
        }
    }
}

/// The answer for one letter sent.
type Answer = Pin<Box<dyn Future<Output = Result<Fate, DlqError>> + Send>>;

/// What the letters become.
enum Target {
    Index(IndexTarget),
    Topic(TopicTarget),
}

impl Target {
    async fn send(&mut self, letter: &Letter, payload: &Payload) -> Result<Answer, DlqError> {
        match self {
            Target::Index(t) => t.send(letter, payload).await,
            Target::Topic(t) => t.send(letter, payload).await,
        }
    }

    /// Sends what waits without lingering.
    fn flush(&self) {
        if let Target::Index(IndexTarget {
            sink: Some(sink), ..
        }) = self
        {
            sink.sink.flush();
        }
    }

    /// How long every request to Elasticsearch has been failing.
    fn failing_for(&self) -> Option<Duration> {
        match self {
            Target::Index(IndexTarget {
                sink: Some(sink), ..
            }) => sink.sink.health().failing_for(),
            _ => None,
        }
    }

    /// The reasons of the documents refused since the last call.
    fn refusals(&mut self) -> HashMap<(i32, i64), String> {
        let mut reasons = HashMap::new();
        if let Target::Index(IndexTarget {
            sink: Some(sink), ..
        }) = self
        {
            while let Ok(Refusal {
                partition,
                offset,
                reason,
            }) = sink.refusals.try_recv()
            {
                reasons.insert((partition.partition, offset), reason);
            }
        }
        reasons
    }

    fn describe(&self) -> String {
        match self {
            Target::Index(t) => format!(
                "Elasticsearch (current settings of {}: index {})",
                t.topic, t.settings.index
            ),
            Target::Topic(t) => format!("topic {} (new offsets, new _ids)", t.topic),
        }
    }

    /// Stops the sink (once its last requests ended).
    async fn stop(&mut self) {
        if let Target::Index(IndexTarget { sink, .. }) = self {
            let Some(running) = sink.take() else {
                return;
            };
            let RunningSink { sink, task, .. } = *running;
            drop(sink);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// The sink of an index replay.
struct RunningSink {
    sink: Sink,
    task: JoinHandle<()>,
    refusals: mpsc::UnboundedReceiver<Refusal>,
    budget: MemoryBudget,
    /// The next chunk id (the sink only tells chunks apart by them).
    next_id: u64,
}

/// Replays into Elasticsearch through the normal path.
struct IndexTarget {
    topic: String,
    settings: Arc<TopicSettings>,
    /// One shaper per original partition, as the partition tasks have.
    shapers: HashMap<i32, Shaper>,
    /// `None` in a dry run.
    sink: Option<Box<RunningSink>>,
}

impl IndexTarget {
    async fn start(
        config: &Config,
        topic: &str,
        settings: Arc<TopicSettings>,
        dry_run: bool,
    ) -> Result<Self, DlqError> {
        let mut target = Self {
            topic: topic.to_string(),
            settings,
            shapers: HashMap::new(),
            sink: None,
        };
        if dry_run {
            return Ok(target);
        }
        let url = &config.elasticsearch.urls();
        let nodes = crate::sink::client::pool(&config.elasticsearch, &Default::default())?;
        nodes.probe_all().await;
        let es = crate::sink::client::over(&config.elasticsearch, &nodes)?;
        super::source::ping(&es, url).await?;
        // As a partition task does before its first document.
        let templates = Templates::new(
            es.clone(),
            config.index_template.clone(),
            config.retry.clone(),
        );
        tokio::time::timeout(STALL, templates.ensure(&target.settings))
            .await
            .map_err(|_| DlqError::EsUnreachable {
                url: url.clone(),
                reason: format!("the index template could not be installed within {STALL:?}"),
            })?;
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry, "dlq-replay");
        // Refused again: reported back here, never dead-lettered twice.
        let (dead_letters, refusals) =
            DeadLetters::reporting(config.retry.clone(), metrics.clone());
        let (sink, task) = Sink::start(SinkParts {
            nodes,
            elasticsearch: config.elasticsearch.clone(),
            batch: config.batch.clone(),
            retry: config.retry.clone(),
            dead_letters: Arc::new(dead_letters),
            metrics: metrics.clone(),
        });
        let budget = MemoryBudget::new(
            config.memory.budget(),
            metrics.buffered_bytes.clone(),
            &metrics.memory_budget_bytes,
        );
        target.sink = Some(Box::new(RunningSink {
            sink,
            task,
            refusals,
            budget,
            next_id: 0,
        }));
        Ok(target)
    }

    /// Shapes the record for its original partition and offset (so its
    /// `_id` is the original one) and hands it to the sink as a chunk of its
    /// own: its answer is this letter's fate.
    async fn send(&mut self, letter: &Letter, payload: &Payload) -> Result<Answer, DlqError> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(Box::pin(async { Ok(Fate::Replayed) }));
        };
        let tp = TopicPartition::new(&self.topic, letter.partition);
        let settings = &self.settings;
        let shaper = self
            .shapers
            .entry(letter.partition)
            .or_insert_with(|| Shaper::new(settings.clone(), tp.clone()));
        let raw = usize::try_from(payload.size()).unwrap_or(usize::MAX);
        let mut chunk = ChunkBuilder::new(tp, 1, raw.saturating_add(LETTER_OVERHEAD));
        let shaped = shaper.write(
            &mut chunk,
            &Record {
                offset: letter.offset,
                key: payload.key.as_deref(),
                value: payload.value.as_deref(),
                timestamp_ms: payload.timestamp_ms,
                headers: &[],
            },
            Utc::now(),
        )?;
        match shaped {
            Shaped::Dropped => {
                // The topic's current transform filters it out: replaying
                // it would index nothing, now or later.
                return Ok(Box::pin(async {
                    Ok(Fate::NotReplayable(
                        "dropped by the topic's transform".into(),
                    ))
                }));
            }
            Shaped::Empty => {
                return Ok(Box::pin(async {
                    Ok(Fate::NotReplayable(
                        "an otlp_json request without log records".into(),
                    ))
                }));
            }
            Shaped::TransformFailedDropped(error) | Shaped::Refused(error) => {
                // Refused again before indexing: it stays a dead letter.
                return Ok(Box::pin(async move { Ok(Fate::NotReplayable(error)) }));
            }
            Shaped::Written | Shaped::TransformFailed(_) => {}
        }
        let reservation = sink
            .budget
            .reserve(raw.saturating_mul(2).saturating_add(LETTER_OVERHEAD))
            .await;
        let id = ChunkId::new(sink.next_id);
        sink.next_id += 1;
        let (answer, receive) = oneshot::channel::<ChunkOutcome>();
        if !sink.sink.submit(chunk.seal(id, reservation, answer, false)) {
            return Err(DlqError::SinkStopped);
        }
        Ok(Box::pin(async move {
            match receive.await {
                Ok(outcome) if outcome.stored > 0 => Ok(Fate::Replayed),
                // The reason arrives on the refusal channel.
                Ok(_) => Ok(Fate::RefusedAgain(String::new())),
                Err(_) => Err(DlqError::SinkStopped),
            }
        }))
    }
}

/// Produces the records into the topic again.
struct TopicTarget {
    topic: String,
    brokers: String,
    partitions: usize,
    /// `None` in a dry run.
    producer: Option<FutureProducer>,
}

impl TopicTarget {
    async fn open(
        config: &Config,
        topic: &str,
        group: &str,
        dry_run: bool,
    ) -> Result<Self, DlqError> {
        let brokers = config.kafka.brokers.join(",");
        let reader = OriginalReader::open(&config.kafka, topic, group).await?;
        let Some(partitions) = reader.partitions() else {
            return Err(DlqError::NoSuchTopic {
                topic: topic.to_string(),
                brokers,
            });
        };
        let producer = if dry_run {
            None
        } else {
            // The settings of the dead-letter producer: the consumer's
            // brokers, TLS and SASL, idempotent.
            Some(
                crate::kafka::security::dead_letter_producer(&config.kafka).map_err(|e| {
                    DlqError::Kafka {
                        brokers: brokers.clone(),
                        what: "creating the producer".into(),
                        reason: e.to_string(),
                    }
                })?,
            )
        };
        Ok(Self {
            topic: topic.to_string(),
            brokers,
            partitions,
            producer,
        })
    }

    /// Produces the record to its original partition (when the topic still
    /// has it), with its key, value and timestamp, and a header naming the
    /// original (`logingest.replay.of`).
    async fn send(&mut self, letter: &Letter, payload: &Payload) -> Result<Answer, DlqError> {
        let Some(producer) = &self.producer else {
            return Ok(Box::pin(async { Ok(Fate::Replayed) }));
        };
        let original = letter.document_id(&self.topic);
        let headers = OwnedHeaders::new().insert(Header {
            key: REPLAY_OF,
            value: Some(original.as_bytes()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if usize::try_from(letter.partition).is_ok_and(|p| p < self.partitions) {
            record = record.partition(letter.partition);
        }
        if let Some(key) = &payload.key {
            record = record.key(key);
        }
        if let Some(value) = &payload.value {
            record = record.payload(value);
        }
        if let Some(ts) = payload.timestamp_ms {
            record = record.timestamp(ts);
        }
        let brokers = self.brokers.clone();
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((e, _)) => {
                    let fate = produce_fate(&brokers, &self.topic, e);
                    return Ok(Box::pin(async move { fate }));
                }
            }
        };
        let topic = self.topic.clone();
        Ok(Box::pin(async move {
            match delivery.await {
                Ok(Ok(_)) => Ok(Fate::Replayed),
                Ok(Err((e, _))) => produce_fate(&brokers, &topic, e),
                Err(_) => Err(DlqError::Kafka {
                    brokers,
                    what: format!("producing to {topic}"),
                    reason: "the producer stopped".into(),
                }),
            }
        }))
    }
}

/// A refusal of the broker is the letter's fate; anything else (timeouts:
/// the producer retried for `message.timeout.ms`) stops the replay.
fn produce_fate(brokers: &str, topic: &str, error: KafkaError) -> Result<Fate, DlqError> {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::TopicAuthorizationFailed,
        ) => Ok(Fate::RefusedAgain(format!("producing to {topic}: {error}"))),
        _ => Err(DlqError::KafkaUnreachable {
            brokers: brokers.to_string(),
            reason: format!("producing to {topic}: {error}"),
        }),
    }
}

/// One letter of a batch.
struct Item {
    at: LetterAt,
    /// The original `(partition, offset)`, when known.
    original: Option<(i32, i64)>,
    size: u64,
    /// Its place in its dead-letter partition's tracker (topic source).
    ticket: Option<(i32, ChunkId)>,
    fate: Option<Fate>,
}

/// A replay in progress.
struct Replay<'c> {
    config: &'c Config,
    topic: String,
    group: String,
    dry_run: bool,
    batch: usize,
    letters: Letters,
    target: Target,
    originals: Option<OriginalReader>,
    /// Per dead-letter partition: which letters are settled for good.
    trackers: BTreeMap<i32, OffsetTracker>,
    /// Per dead-letter partition: the offset committed last.
    committed: BTreeMap<i32, i64>,
    tally: Tally,
    last_progress: Instant,
}

impl Replay<'_> {
    async fn run(&mut self) -> Result<(), DlqError> {
        loop {
            let reads = match &mut self.letters {
                Letters::Topic(t) => {
                    let name = t.name().clone();
                    let messages = t.read(self.batch).await?;
                    messages
                        .iter()
                        .map(|m| super::letter::from_message(&self.topic, &name, m))
                        .collect::<Vec<_>>()
                }
                Letters::Index(i) => i.read(self.batch).await?,
            };
            if reads.is_empty() {
                let done = match &self.letters {
                    Letters::Topic(t) => t.is_done(),
                    Letters::Index(i) => i.is_done(),
                };
                if done {
                    return Ok(());
                }
                continue;
            }
            let items = self.send_batch(reads).await?;
            self.settle(items).await?;
            self.progress(0);
        }
    }

    /// Sends every letter of the batch, then waits for all their answers.
    async fn send_batch(&mut self, reads: Vec<Read>) -> Result<Vec<Item>, DlqError> {
        let mut items = Vec::with_capacity(reads.len());
        let mut answers = FuturesUnordered::new();
        for read in reads {
            let ticket = self.ticket(read.at());
            let mut item = Item {
                at: read.at().clone(),
                original: None,
                size: 0,
                ticket,
                fate: None,
            };
            match read {
                Read::OtherTopic { .. } => item.fate = Some(Fate::OtherTopic),
                Read::Malformed { reason, .. } => {
                    item.fate = Some(Fate::NotReplayable(format!(
                        "malformed dead letter: {reason}"
                    )))
                }
                Read::Letter(letter) => {
                    item.original = Some((letter.partition, letter.offset));
                    item.size = letter.size();
                    match self.payload(&letter).await? {
                        Err(why) => item.fate = Some(Fate::NotReplayable(why)),
                        Ok(payload) => {
                            item.size = payload.size();
                            if self.dry_run {
                                println!("{}", dry_run_line(&self.topic, &letter, item.size));
                            }
                            let answer = self.target.send(&letter, &payload).await?;
                            let position = items.len();
                            answers.push(async move { (position, answer.await) });
                        }
                    }
                }
            }
            items.push(item);
        }
        self.target.flush();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        while !answers.is_empty() {
            tokio::select! {
                Some((position, fate)) = answers.next() => {
                    if let Some(item) = items.get_mut(position) {
                        item.fate = Some(fate?);
                    }
                }
                _ = tick.tick() => {
                    self.progress(answers.len());
                    if let Some(failing) = self.target.failing_for() {
                        if failing > STALL {
                            return Err(DlqError::EsUnreachable {
                                url: self.config.elasticsearch.urls(),
                                reason: format!("every request failed for {failing:?}"),
                            });
                        }
                    }
                }
            }
        }
        let reasons = self.target.refusals();
        for item in &mut items {
            if let (Some(Fate::RefusedAgain(reason)), Some(original)) =
                (&mut item.fate, item.original)
            {
                if reason.is_empty() {
                    *reason = reasons
                        .get(&original)
                        .cloned()
                        .unwrap_or_else(|| "refused by Elasticsearch".into());
                }
            }
        }
        Ok(items)
    }

    /// The record of a letter: its own, or for a reduced letter the one in
    /// the source topic; `Err` with the reason when it is gone.
    async fn payload(&mut self, letter: &Letter) -> Result<Result<Payload, String>, DlqError> {
        match &letter.contents {
            Contents::Full(payload) => Ok(Ok(payload.clone())),
            Contents::Reduced { .. } => {
                let reader = match &mut self.originals {
                    Some(reader) => reader,
                    None => self.originals.insert(
                        OriginalReader::open(&self.config.kafka, &self.topic, &self.group).await?,
                    ),
                };
                Ok(match reader.fetch(letter.partition, letter.offset).await? {
                    Fetched::Found(payload) => Ok(payload),
                    Fetched::Gone(why) => Err(why),
                })
            }
        }
    }

    /// The letter's place in its dead-letter partition's tracker.
    fn ticket(&mut self, at: &LetterAt) -> Option<(i32, ChunkId)> {
        let LetterAt::Topic {
            partition, offset, ..
        } = at
        else {
            return None;
        };
        let tracker = self
            .trackers
            .entry(*partition)
            .or_insert_with(|| OffsetTracker::new(0));
        if !tracker.read(*offset) {
            return None;
        }
        tracker.seal().map(|id| (*partition, id))
    }

    /// Counts the batch and records its progress where the letters are.
    async fn settle(&mut self, items: Vec<Item>) -> Result<(), DlqError> {
        let mut next = BTreeMap::new();
        let mut replayed_ids = Vec::new();
        let mut marks = Vec::new();
        for item in items {
            let fate = item
                .fate
                .unwrap_or_else(|| Fate::RefusedAgain("no answer".into()));
            let id = item
                .original
                .map(|(p, o)| crate::topic::document_id(&self.topic, p, o));
            self.tally.record(&item.at, id, item.size, &fate);
            if fate.is_final() {
                if let Some((partition, chunk)) = item.ticket {
                    if let Some(store) =
                        self.trackers.get_mut(&partition).and_then(|t| t.ack(chunk))
                    {
                        next.insert(partition, store.next);
                    }
                }
            }
            if let LetterAt::Index { id, .. } = &item.at {
                match &fate {
                    Fate::Replayed => replayed_ids.push(id.clone()),
                    Fate::NotReplayable(reason) => marks.push((id.clone(), reason.clone())),
                    _ => {}
                }
            }
        }
        if self.dry_run {
            return Ok(());
        }
        match &self.letters {
            Letters::Topic(t) => {
                t.commit(&next).await?;
                self.committed.extend(next);
            }
            Letters::Index(i) => {
                i.delete(&replayed_ids).await?;
                i.mark_not_replayable(&marks).await?;
            }
        }
        Ok(())
    }

    /// Prints the progress line (stderr), at most every
    /// [`PROGRESS_EVERY`]; `waiting`: letters sent and not answered yet.
    fn progress(&mut self, waiting: usize) {
        if self.last_progress.elapsed() >= PROGRESS_EVERY {
            self.last_progress = Instant::now();
            eprintln!(
                "{}",
                self.tally.progress_line(&self.topic, self.dry_run, waiting)
            );
        }
    }

    fn print_summary(&self, error: Option<&DlqError>) {
        let from = match &self.letters {
            Letters::Topic(t) => format!("{} (group {})", t.name(), self.group),
            Letters::Index(_) => self.letters.describe(),
        };
        if self.tally.read == 0 && error.is_none() {
            let after = match &self.letters {
                Letters::Topic(_) => " from the replay's position",
                Letters::Index(_) => "",
            };
            println!(
                "nothing to replay: no dead letters of {} in {}{after}",
                self.topic,
                self.letters.describe()
            );
        }
        println!(
            "{}",
            self.tally.summary_line(&self.topic, &from, self.dry_run)
        );
        if self.tally.replayed > 0 && !self.dry_run {
            println!("replayed into {}", self.target.describe());
        }
        if let Letters::Topic(t) = &self.letters {
            for (partition, start) in t.starts().iter().filter(|_| !self.dry_run) {
                let start_text = match start {
                    Start::Committed(o) => o.to_string(),
                    Start::Given(o) => format!("{o} (--from-offset)"),
                    Start::Beginning => "the beginning".into(),
                };
                let committed = self.committed.get(partition);
                let stopped = self
                    .trackers
                    .get(partition)
                    .and_then(OffsetTracker::resume_point);
                if committed.is_none() && stopped.is_none() {
                    continue;
                }
                let committed =
                    committed.map_or("nothing committed".into(), |c| format!("committed {c}"));
                let stop = stopped.map_or(String::new(), |s| {
                    format!("; it stops before offset {s} (refused again or not sent: a later replay starts there)")
                });
                let line = format!(
                    "position {}/{partition}: from {start_text}, {committed}{stop}",
                    t.name()
                );
                println!("{line}");
            }
        }
        for line in self.tally.detail_lines() {
            println!("{line}");
        }
    }

    fn verdict(&self) -> Result<(), DlqError> {
        if self.tally.refused_again == 0 && self.tally.not_replayable == 0 {
            return Ok(());
        }
        Err(DlqError::Incomplete {
            refused_again: self.tally.refused_again,
            not_replayable: self.tally.not_replayable,
            kept: self.letters.describe(),
        })
    }
}
