//! `logingest verify TOPIC`: is every record of a topic in Elasticsearch?
//!
//! A document's `_id` is `<topic>-<partition>-<offset>`, and it carries
//! `kafka.topic`, `kafka.partition` and `kafka.offset`, so completeness is a
//! comparison of offset ranges:
//!
//! * **Kafka side**, per partition: from the low watermark (or, with
//!   `--from`, the first offset at or after that time, `offsets_for_times`)
//!   up to the group's committed offset (`kafka.group_id`): what the group
//!   says it has delivered. High watermarks are not used: some brokers
//!   (tansu) report wrong ones, and records past the committed offset may
//!   legitimately still be in flight.
//! * **Elasticsearch side**: the topic's indices as `search` resolves them
//!   (a dated template's wildcard pattern, a data stream), read with
//!   `_search` filtered on `kafka.topic`, `kafka.partition` and a
//!   `kafka.offset` range, sorted by `kafka.offset` and paged with
//!   `search_after` ([`PAGE_SIZE`] hits of `_source: kafka.offset` and
//!   `_version` per request): memory is one page plus the ranges of the
//!   report, whatever the topic's size. `_mget` is not used because it needs
//!   concrete index names and a dated template spreads a partition over
//!   many.
//! * **Dead letters** (the dead-letter topic or index of `[dead_letter]`,
//!   read with [`crate::dlq::source`] and never committed): offsets refused
//!   for good are accounted for, reported apart from the missing ones. They
//!   are kept as a set of offsets per partition: dead letters are expected
//!   to be rare.
//!
//! The report, per partition: missing offsets (ranges), offsets dead-
//! lettered, documents whose offsets are below the low watermark (Kafka no
//! longer has them), and documents written more than once (`_version > 1`,
//! redelivered writes).
//!
//! Exit codes: 0 nothing missing, 1 some offsets missing, 2 errors (and
//! command-line usage).

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::{Config, DeadLetterDestination};
use crate::dlq::letter::{self, Read};
use crate::dlq::source::{LetterIndex, LetterTopic};
use crate::dlq::FromOffset;
use crate::kafka::client::RecordingContext;
use crate::readback::query::TimeBound;
use crate::readback::{resolve_target, ReadbackError, Reader, Target, PAGE_SIZE};

/// Exit code: some offsets are missing.
pub const EXIT_MISSING: u8 = 1;
/// Exit code: the check could not be made.
pub const EXIT_ERROR: u8 = 2;

/// Deadline of one Kafka metadata or offsets request.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// How often progress is printed on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Letters read from the dead-letter topic or index per request.
const LETTER_BATCH: usize = 1000;

/// Arguments of `logingest verify`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  logingest verify nginx -c /etc/logingest/logingest.toml
  logingest verify nginx -c /etc/logingest/logingest.toml --from 24h --partitions 0,2
  logingest verify nginx -c /etc/logingest/logingest.toml --json | jq '.totals'

Checks, per partition, every offset from the low watermark (or --from) up to the
committed offset of kafka.group_id: indexed, dead-lettered, or missing.

Exit codes: 0 nothing missing, 1 some offsets missing, 2 errors or usage.")]
pub struct VerifyArgs {
    /// The registered Kafka topic.
    pub topic: String,
    /// The TOML configuration file (Kafka, group, etcd, Elasticsearch, dead
    /// letters); without it, defaults and the LOGINGEST_* variables apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Start at the first offset of each partition at or after this time: a
    /// duration back from now (`24h`) or an RFC 3339 time (default: the low
    /// watermark).
    #[arg(long, value_name = "DURATION|TIME")]
    pub from: Option<TimeBound>,
    /// Only these partitions (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub partitions: Vec<i32>,
    /// Print one JSON document (the schema is in README.md).
    #[arg(long)]
    pub json: bool,
}

/// Why `verify` exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The check was made: offsets are missing (the report is printed).
    #[error("{missing} offsets of {topic} are missing from Elasticsearch")]
    Missing {
        /// The topic.
        topic: String,
        /// How many offsets.
        missing: u64,
    },
    /// The check could not be made.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl VerifyError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            VerifyError::Missing { .. } => EXIT_MISSING,
            VerifyError::Failed(_) => EXIT_ERROR,
        }
    }
}

/// Inclusive offset ranges, built in ascending order, and their size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    /// `[first, last]` pairs, ascending, not adjacent.
    pub ranges: Vec<[i64; 2]>,
    /// Offsets in all the ranges.
    pub count: u64,
}

impl Ranges {
    /// Adds `first..=last` (at or after everything added so far).
    pub fn push_range(&mut self, first: i64, last: i64) {
        if last < first {
            return;
        }
        self.count += u64::try_from(last - first + 1).unwrap_or(0);
        match self.ranges.last_mut() {
            Some(r) if r[1] + 1 >= first => r[1] = r[1].max(last),
            _ => self.ranges.push([first, last]),
        }
    }

    /// Adds one offset.
    pub fn push(&mut self, offset: i64) {
        self.push_range(offset, offset);
    }

    fn text(&self) -> String {
        self.ranges
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The check of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReport {
    /// The partition.
    pub partition: i32,
    /// Kafka's first offset.
    pub low_watermark: i64,
    /// The first offset checked (the low watermark, or `--from`'s).
    pub start: i64,
    /// The group's committed offset (the end, exclusive); `None` when the
    /// group has committed nothing there (nothing is checked).
    pub committed: Option<i64>,
    /// Offsets checked (`committed - start`).
    pub checked: u64,
    /// Of those, offsets with a document.
    pub indexed: u64,
    /// Offsets with neither a document nor a dead letter.
    pub missing: Ranges,
    /// Offsets without a document but with a dead letter.
    pub dead_lettered: Ranges,
    /// Documents whose offsets are below the low watermark: Kafka no longer
    /// has their records (not checked with `--from`).
    pub gone_from_kafka: Ranges,
    /// Documents written more than once (`_version > 1`).
    pub redelivered: Ranges,
    /// Writes beyond the first: the sum of `_version - 1`.
    pub redelivered_writes: u64,
}

/// Sums over the partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Offsets checked.
    pub checked: u64,
    /// Offsets with a document.
    pub indexed: u64,
    /// Offsets missing.
    pub missing: u64,
    /// Offsets dead-lettered (and not indexed).
    pub dead_lettered: u64,
    /// Documents Kafka no longer has.
    pub gone_from_kafka: u64,
    /// Documents written more than once.
    pub redelivered: u64,
    /// Writes beyond the first.
    pub redelivered_writes: u64,
}

/// The whole report (`--json` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The topic.
    pub topic: String,
    /// The consumer group whose committed offsets end the ranges.
    pub group: String,
    /// The index pattern searched.
    pub indices: String,
    /// Where dead letters were read (`None`: `destination = "none"`, or
    /// the dead-letter topic or index does not exist).
    pub dead_letters: Option<String>,
    /// `true` when nothing is missing.
    pub complete: bool,
    /// Per partition, ascending.
    pub partitions: Vec<PartitionReport>,
    /// Sums.
    pub totals: Totals,
}

impl Report {
    fn total(&mut self) {
        let mut t = Totals::default();
        for p in &self.partitions {
            t.checked += p.checked;
            t.indexed += p.indexed;
            t.missing += p.missing.count;
            t.dead_lettered += p.dead_lettered.count;
            t.gone_from_kafka += p.gone_from_kafka.count;
            t.redelivered += p.redelivered.count;
            t.redelivered_writes += p.redelivered_writes;
        }
        self.complete = t.missing == 0;
        self.totals = t;
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "topic {} (group {}, indices {}, dead letters {})\n",
            self.topic,
            self.group,
            self.indices,
            self.dead_letters.as_deref().unwrap_or("none")
        );
        out.push_str(&format!(
            "{:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13} {:>10} {:>11}\n",
            "PARTITION",
            "START",
            "COMMITTED",
            "CHECKED",
            "INDEXED",
            "MISSING",
            "DEAD-LETTERED",
            "GONE",
            "REDELIVERED"
        ));
        for p in &self.partitions {
            out.push_str(&format!(
                "{:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13} {:>10} {:>11}\n",
                p.partition,
                p.start,
                p.committed.map_or("-".to_string(), |c| c.to_string()),
                p.checked,
                p.indexed,
                p.missing.count,
                p.dead_lettered.count,
                p.gone_from_kafka.count,
                p.redelivered.count
            ));
        }
        for p in &self.partitions {
            let lines = [
                ("missing", &p.missing),
                ("dead-lettered", &p.dead_lettered),
                ("gone from Kafka", &p.gone_from_kafka),
                ("redelivered", &p.redelivered),
            ];
            for (what, ranges) in lines {
                if ranges.count > 0 {
                    out.push_str(&format!(
                        "partition {} {what}: {}\n",
                        p.partition,
                        ranges.text()
                    ));
                }
            }
            if p.committed.is_none() {
                out.push_str(&format!(
                    "partition {}: the group has committed nothing (not checked)\n",
                    p.partition
                ));
            }
        }
        let t = &self.totals;
        out.push_str(&format!(
            "{}: {} offsets checked, {} indexed, {} missing, {} dead-lettered, {} gone from Kafka, {} redelivered ({} extra writes)\n",
            if self.complete { "complete" } else { "INCOMPLETE" },
            t.checked,
            t.indexed,
            t.missing,
            t.dead_lettered,
            t.gone_from_kafka,
            t.redelivered,
            t.redelivered_writes
        ));
        out
    }
}

/// Classifies the documents of one partition, in ascending offset order,
/// against `start..end` and the dead letters.
struct Tracker<'a> {
    report: PartitionReport,
    /// The next offset expected.
    cursor: i64,
    end: i64,
    letters: Option<&'a BTreeSet<i64>>,
}

impl<'a> Tracker<'a> {
    fn new(report: PartitionReport, letters: Option<&'a BTreeSet<i64>>) -> Self {
        let end = report.committed.unwrap_or(report.start);
        let cursor = report.start;
        Self {
            report,
            cursor,
            end,
            letters,
        }
    }

    /// `first..=last` has no document: dead-lettered where a letter says
    /// so, missing elsewhere.
    fn gap(&mut self, first: i64, last: i64) {
        // An empty gap (BTreeSet::range panics on an inverted range).
        if last < first {
            return;
        }
        let mut next = first;
        if let Some(letters) = self.letters {
            for &o in letters.range(first..=last) {
                self.report.missing.push_range(next, o - 1);
                self.report.dead_lettered.push(o);
                next = o + 1;
            }
        }
        self.report.missing.push_range(next, last);
    }

    /// A document at `offset`, written `version` times.
    fn document(&mut self, offset: i64, version: u64) {
        if offset < self.report.low_watermark {
            self.report.gone_from_kafka.push(offset);
        } else if offset < self.cursor || offset >= self.end {
            // Already seen (the same `_id` in two indices), or outside the
            // checked range.
            return;
        } else {
            self.gap(self.cursor, offset - 1);
            self.report.indexed += 1;
            self.cursor = offset + 1;
        }
        if version > 1 {
            self.report.redelivered.push(offset);
            self.report.redelivered_writes += version - 1;
        }
    }

    fn finish(mut self) -> PartitionReport {
        self.gap(self.cursor, self.end - 1);
        self.report.checked = u64::try_from(self.end - self.report.start).unwrap_or(0);
        self.report
    }
}

/// What Kafka says of each partition: (low watermark, start, committed).
type KafkaRanges = BTreeMap<i32, (i64, i64, Option<i64>)>;

/// Reads the offset ranges from Kafka (blocking librdkafka calls).
fn kafka_ranges(
    config: &Config,
    topic: &str,
    only: &[i32],
    from_ms: Option<i64>,
) -> anyhow::Result<KafkaRanges> {
    let brokers = config.kafka.brokers.join(",");
    let consumer: BaseConsumer<RecordingContext> =
        crate::kafka::client::admin_consumer(&config.kafka, "logingest-verify")
            .create_with_context(RecordingContext::default())
            .context("creating a Kafka consumer")?;
    let why = |e: rdkafka::error::KafkaError, what: &str| {
        let last = consumer
            .context()
            .last_error()
            .map(|l| format!(" (last client error: {l})"))
            .unwrap_or_default();
        anyhow!("Kafka ({brokers}): {what}: {e}{last}")
    };
    // Metadata of every topic: asking for one by name would make brokers
    // that auto-create topics (tansu) create it.
    let metadata = consumer
        .fetch_metadata(None, KAFKA_TIMEOUT)
        .map_err(|e| why(e, "reading metadata"))?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .ok_or_else(|| anyhow!("topic {topic} does not exist in Kafka ({brokers})"))?;
    let all: Vec<i32> = (0..i32::try_from(count).unwrap_or(i32::MAX)).collect();
    if let Some(bad) = only.iter().find(|p| !all.contains(p)) {
        bail!(
            "--partitions names partition {bad}; {topic} has partitions 0 to {}",
            count.saturating_sub(1)
        );
    }
    let partitions: Vec<i32> = if only.is_empty() {
        all
    } else {
        all.into_iter().filter(|p| only.contains(p)).collect()
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed: BTreeMap<i32, i64> = consumer
        .committed_offsets(tpl, KAFKA_TIMEOUT)
        .map_err(|e| why(e, "reading the group's committed offsets"))?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let from: BTreeMap<i32, Offset> = match from_ms {
        None => BTreeMap::new(),
        Some(ms) => {
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(topic, *p, Offset::Offset(ms))
                    .map_err(|e| why(e, "building the offsets-for-times request"))?;
            }
            consumer
                .offsets_for_times(tpl, KAFKA_TIMEOUT)
                .map_err(|e| why(e, "finding the offsets of --from"))?
                .elements()
                .iter()
                .map(|e| (e.partition(), e.offset()))
                .collect()
        }
    };
    let mut ranges = BTreeMap::new();
    for p in partitions {
        let (low, _high) = consumer
            .fetch_watermarks(topic, p, KAFKA_TIMEOUT)
            .map_err(|e| why(e, &format!("reading the low watermark of {topic}/{p}")))?;
        let committed = committed.get(&p).copied();
        let start = match from.get(&p) {
            None => low,
            Some(Offset::Offset(o)) => (*o).max(low),
            // No record at or after --from: nothing to check.
            Some(_) => committed.unwrap_or(low),
        };
        // A committed offset below the start checks nothing.
        let committed = committed.map(|c| c.max(start));
        ranges.insert(p, (low, start, committed));
    }
    Ok(ranges)
}

/// The source offsets of `topic`'s dead letters, per partition, and where
/// they were read.
async fn dead_letters(
    config: &Config,
    topic: &str,
) -> anyhow::Result<(BTreeMap<i32, BTreeSet<i64>>, Option<String>)> {
    let mut offsets: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    let mut add = |read: Read| {
        if let Read::Letter(l) = read {
            offsets.entry(l.partition).or_default().insert(l.offset);
        }
    };
    match config.dead_letter.destination {
        DeadLetterDestination::None => Ok((offsets, None)),
        DeadLetterDestination::Kafka => {
            let name =
                crate::sink::dead_letter::dead_letter_topic(&config.dead_letter.topic, topic);
            // A group of its own that never commits: the replay's position
            // is left alone, and every letter is read from the start.
            let group = format!("{}-verify-{topic}", config.kafka.group_id);
            let from = [FromOffset {
                partition: None,
                offset: 0,
            }];
            let Some(mut letters) = LetterTopic::open(&config.kafka, &name, &group, &from).await?
            else {
                return Ok((offsets, None));
            };
            let dlq: Arc<str> = Arc::from(name.as_str());
            while !letters.is_done() {
                for message in letters.read(LETTER_BATCH).await? {
                    add(letter::from_message(topic, &dlq, &message));
                }
            }
            Ok((offsets, Some(format!("topic {name}"))))
        }
        DeadLetterDestination::Elasticsearch => {
            let client = crate::sink::client::connect(&config.elasticsearch).await?;
            let index = &config.dead_letter.index;
            let Some(mut letters) =
                LetterIndex::open(client, &config.elasticsearch.urls(), index, topic).await?
            else {
                return Ok((offsets, None));
            };
            while !letters.is_done() {
                for read in letters.read(LETTER_BATCH).await? {
                    add(read);
                }
            }
            Ok((offsets, Some(format!("index {index}"))))
        }
    }
}

/// One page of a partition's documents in `[start, end)`, after `after`.
fn page_body(
    topic: &str,
    partition: i32,
    start: Option<i64>,
    end: i64,
    after: Option<i64>,
) -> Value {
    let mut range = json!({"lt": end});
    if let Some(start) = start {
        range["gte"] = json!(start);
    }
    let mut body = json!({
        "size": PAGE_SIZE,
        "track_total_hits": false,
        "version": true,
        "_source": ["kafka.offset"],
        "sort": [{"kafka.offset": {"order": "asc", "unmapped_type": "long"}}],
        "query": {"bool": {"filter": [
            // Keyword under logingest's template, text with a `.keyword`
            // sub-field under dynamic mapping.
            {"bool": {
                "should": [
                    {"term": {"kafka.topic": topic}},
                    {"term": {"kafka.topic.keyword": topic}},
                ],
                "minimum_should_match": 1,
            }},
            {"term": {"kafka.partition": partition}},
            {"range": {"kafka.offset": range}},
        ]}},
    });
    if let Some(after) = after {
        body["search_after"] = json!([after]);
    }
    body
}

/// The offset of a hit: `kafka.offset`, else the sort value.
fn hit_offset(hit: &crate::readback::query::Hit) -> Option<i64> {
    hit.source
        .get("kafka")
        .and_then(|k| k.get("offset"))
        .and_then(Value::as_i64)
        .or_else(|| hit.sort.first().and_then(Value::as_i64))
}

/// Checks one partition against Elasticsearch.
async fn check_partition(
    reader: &Reader,
    topic: &str,
    report: PartitionReport,
    letters: Option<&BTreeSet<i64>>,
    from_given: bool,
    progress: &mut Progress,
) -> Result<PartitionReport, ReadbackError> {
    let partition = report.partition;
    let end = report.committed.unwrap_or(report.start);
    // Without --from, documents below the low watermark are read too (to
    // report them as gone from Kafka).
    let start = from_given.then_some(report.start);
    let mut tracker = Tracker::new(report, letters);
    let mut after = None;
    loop {
        let reply = match reader
            .search(page_body(topic, partition, start, end, after))
            .await
        {
            Ok(reply) => reply,
            // Nothing indexed yet: every offset is missing.
            Err(ReadbackError::NoIndex { .. }) => break,
            Err(e) => return Err(e),
        };
        if let Some(failures) = &reply.shard_failures {
            return Err(ReadbackError::Reply {
                url: String::new(),
                reason: format!("partial results ({failures}): the check would be wrong"),
            });
        }
        let full = reply.hits.len() == PAGE_SIZE;
        let mut last = None;
        for hit in &reply.hits {
            let Some(offset) = hit_offset(hit) else {
                continue;
            };
            tracker.document(offset, hit.version.unwrap_or(1));
            last = Some(offset);
        }
        progress.tick(partition, last, end);
        match last {
            Some(last) if full => after = Some(last),
            _ => break,
        }
    }
    Ok(tracker.finish())
}

/// Progress lines on stderr, at most every [`PROGRESS_EVERY`].
struct Progress {
    topic: String,
    last: Instant,
    quiet: bool,
}

impl Progress {
    fn tick(&mut self, partition: i32, at: Option<i64>, end: i64) {
        if self.quiet || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        if let Some(at) = at {
            eprintln!("verify {}/{partition}: at offset {at} of {end}", self.topic);
        }
    }
}

/// Runs `logingest verify`: prints the report; `Err(Missing)` when
/// offsets are missing.
pub async fn run(config: &Config, args: &VerifyArgs) -> Result<(), VerifyError> {
    let report = check(config, args).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("encoding the report")?
        );
    } else {
        print!("{}", report.to_text());
    }
    if report.complete {
        Ok(())
    } else {
        Err(VerifyError::Missing {
            topic: report.topic,
            missing: report.totals.missing,
        })
    }
}

/// Makes the check.
pub async fn check(config: &Config, args: &VerifyArgs) -> anyhow::Result<Report> {
    let topic = args.topic.trim().to_string();
    crate::topic::validate_topic(&topic).map_err(|e| anyhow!("{e}"))?;
    let mut target: Target = resolve_target(config, &topic, false).await?;
    // An unregistered topic is searched in the index of its name; either
    // way only its documents count.
    target.topic = Some(topic.clone());
    let from_ms = args.from.map(|b| match b {
        TimeBound::Ago(d) => {
            chrono::Utc::now().timestamp_millis() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        }
        TimeBound::At(t) => t.timestamp_millis(),
    });
    let ranges = {
        let (config, topic, only) = (config.clone(), topic.clone(), args.partitions.clone());
        tokio::task::spawn_blocking(move || kafka_ranges(&config, &topic, &only, from_ms))
            .await
            .context("reading Kafka")??
    };
    let (letters, dead_letters) = dead_letters(config, &topic).await?;
    let reader = Reader::new(config, target).await?;
    let mut progress = Progress {
        topic: topic.clone(),
        last: Instant::now(),
        quiet: !std::io::stderr().is_terminal() && std::env::var_os("LOGINGEST_PROGRESS").is_none(),
    };
    let mut report = Report {
        topic: topic.clone(),
        group: config.kafka.group_id.clone(),
        indices: reader.target().pattern(),
        dead_letters,
        ..Report::default()
    };
    for (partition, (low, start, committed)) in ranges {
        let partition_report = PartitionReport {
            partition,
            low_watermark: low,
            start,
            committed,
            ..PartitionReport::default()
        };
        let checked = check_partition(
            &reader,
            &topic,
            partition_report,
            letters.get(&partition),
            from_ms.is_some(),
            &mut progress,
        )
        .await?;
        report.partitions.push(checked);
    }
    report.total();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(
        low: i64,
        start: i64,
        end: i64,
        letters: &[i64],
        docs: &[(i64, u64)],
    ) -> PartitionReport {
        let letters: BTreeSet<i64> = letters.iter().copied().collect();
        let mut t = Tracker::new(
            PartitionReport {
                low_watermark: low,
                start,
                committed: Some(end),
                ..PartitionReport::default()
            },
            Some(&letters),
        );
        for (o, v) in docs {
            t.document(*o, *v);
        }
        t.finish()
    }

    #[test]
    fn ranges_merge_adjacent_offsets() {
        let mut r = Ranges::default();
        r.push(1);
        r.push(2);
        r.push_range(3, 5);
        r.push(7);
        r.push_range(9, 8);
        assert_eq!(r.ranges, [[1, 5], [7, 7]]);
        assert_eq!(r.count, 6);
        assert_eq!(r.text(), "1-5, 7");
    }

    #[test]
    fn gaps_are_missing_unless_dead_lettered() {
        let docs = [(0, 1), (1, 1), (4, 3), (5, 1), (9, 1)];
        let p = tracked(0, 0, 12, &[2, 7], &docs);
        assert_eq!(p.checked, 12);
        assert_eq!(p.indexed, 5);
        assert_eq!(p.missing.ranges, [[3, 3], [6, 6], [8, 8], [10, 11]]);
        assert_eq!(p.dead_lettered.ranges, [[2, 2], [7, 7]]);
        assert_eq!(p.redelivered.ranges, [[4, 4]]);
        assert_eq!(p.redelivered_writes, 2);
    }

    #[test]
    fn a_record_of_several_documents_counts_once() {
        // `otlp_json`: offset 1 made three documents, written twice each
        // (sorted by offset, they come together); the record counts once,
        // indexed and redelivered.
        let docs = [(0, 1), (1, 2), (1, 2), (1, 2), (2, 1)];
        let p = tracked(0, 0, 3, &[], &docs);
        assert_eq!(p.indexed, 3);
        assert_eq!(p.missing.count, 0);
        assert_eq!(p.redelivered.ranges, [[1, 1]]);
        assert_eq!(p.redelivered_writes, 1);
    }

    #[test]
    fn documents_outside_the_range() {
        // Below the low watermark: gone from Kafka; at or past the end and
        // repeated: ignored; a letter of an indexed offset: indexed.
        let docs = [(1, 1), (2, 2), (5, 1), (5, 1), (6, 1), (8, 1)];
        let p = tracked(5, 5, 7, &[5], &docs);
        assert_eq!(p.gone_from_kafka.ranges, [[1, 2]]);
        assert_eq!(p.redelivered.ranges, [[2, 2]]);
        assert_eq!(p.indexed, 2);
        assert_eq!(p.checked, 2);
        assert_eq!(p.missing.count + p.dead_lettered.count, 0);
    }

    #[test]
    fn nothing_committed_checks_nothing() {
        let t = Tracker::new(
            PartitionReport {
                start: 3,
                low_watermark: 3,
                committed: None,
                ..PartitionReport::default()
            },
            None,
        );
        let p = t.finish();
        assert_eq!((p.checked, p.missing.count), (0, 0));
    }

    #[test]
    fn report_totals_and_exit_codes() {
        let mut report = Report {
            partitions: vec![tracked(0, 0, 4, &[], &[(0, 1), (3, 1)])],
            ..Report::default()
        };
        report.total();
        assert!(!report.complete);
        assert_eq!(report.totals.missing, 2);
        assert!(report.to_text().contains("partition 0 missing: 1-2"));
        let e = VerifyError::Missing {
            topic: "t".into(),
            missing: 2,
        };
        assert_eq!(e.exit_code(), EXIT_MISSING);
        assert_eq!(VerifyError::Failed(anyhow!("x")).exit_code(), EXIT_ERROR);
        let body = page_body("t", 1, Some(3), 9, Some(5));
        assert_eq!(body["search_after"], json!([5]));
        assert_eq!(
            body["query"]["bool"]["filter"][2],
            json!({"range": {"kafka.offset": {"gte": 3, "lt": 9}}})
        );
    }
}
