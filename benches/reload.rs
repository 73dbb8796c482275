//! Reload benchmark (issue 3): how long a registry change takes to reach
//! Elasticsearch, how much of that is logingest's own work, how fast a
//! removed topic stops, and how much a steady topic is disturbed.
//!
//! One private stack (etcd, tansu, osmem-server on free loopback ports) and
//! one release `logingest` with JSON logs. A steady topic A (2 partitions,
//! ~200 lines/s) flows the whole time while `RUNS` (default 20) fresh topics
//! T_i, each already holding lines, are put into and deleted from the
//! registry one after the other.
//!
//! Run with `scripts/bench-reload.sh` (or `RUNS=20 cargo bench --bench reload`).
//! `KAFKA_OPTIONS="fetch.wait.max.ms=100"` adds librdkafka properties to the
//! daemon's `[kafka.options]`, to compare tunings. The daemon's log is kept
//! in `target/tmp/bench-reload-logingest.log`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{unique, Logingest, Options, Stack, GROUP_DEADLINE};
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";
/// Lines a fresh topic holds before it is registered.
const PRELOADED: usize = 10;
/// Rate of the steady topic.
const STEADY_PER_SECOND: u32 = 200;

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // Everything (servers, daemon) is dropped inside `bench`, before exit.
    let ok = runtime.block_on(bench(runs));
    drop(runtime);
    if !ok {
        std::process::exit(1);
    }
}

/// The daemon's JSON log, read incrementally.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
    events: Vec<Value>,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: String::new(),
            events: Vec::new(),
        }
    }

    /// Reads what was appended since the last call.
    fn poll(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut bytes = Vec::new();
        if file.read_to_end(&mut bytes).is_err() {
            return;
        }
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if let Ok(event) = serde_json::from_str::<Value>(line.trim()) {
                self.events.push(event);
            }
        }
    }

    /// Events from index `from` on with message `message` matching `pred`.
    fn matching<'a>(
        &'a self,
        from: usize,
        message: &'a str,
        pred: impl Fn(&Value) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.events[from.min(self.events.len())..]
            .iter()
            .filter(move |e| e["message"].as_str() == Some(message) && pred(e))
    }

    /// Polls the log until `find` returns something, or `deadline` passes.
    async fn wait_for<T>(
        &mut self,
        deadline: Duration,
        mut find: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            self.poll();
            if let Some(found) = find(self) {
                return Some(found);
            }
            if start.elapsed() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Seconds since the epoch of an event's RFC 3339 `timestamp`.
fn timestamp(event: &Value) -> Option<f64> {
    let text = event["timestamp"].as_str()?;
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
}

fn elapsed_ms(event: &Value) -> Option<f64> {
    event["elapsed_us"].as_u64().map(|us| us as f64 / 1000.0)
}

/// Refresh and `_count` of `index` (0 while it does not exist).
async fn count(client: &reqwest::Client, es: &str, index: &str) -> u64 {
    let _ = client.post(format!("{es}/{index}/_refresh")).send().await;
    match client.get(format!("{es}/{index}/_count")).send().await {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["count"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Pauses of the steady topic: times between two increases longer than
/// 200 ms (when each began, how long) and the longest, for documents
/// indexed (`_count`) and for records read from Kafka (the daemon's
/// `documents_read` metric, to tell a broker-side pause from one in the
/// sink).
struct Gaps {
    indexed: Vec<(Instant, Duration)>,
    worst_indexed: Duration,
    read: Vec<(Instant, Duration)>,
    worst_read: Duration,
}

/// Tracks the time between increases of a counter.
struct GapTracker {
    last: u64,
    since: Instant,
    long: Vec<(Instant, Duration)>,
    worst: Duration,
}

impl GapTracker {
    fn new(value: u64) -> Self {
        Self {
            last: value,
            since: Instant::now(),
            long: Vec::new(),
            worst: Duration::ZERO,
        }
    }

    fn observe(&mut self, value: u64) {
        if value > self.last {
            let gap = self.since.elapsed();
            self.worst = self.worst.max(gap);
            if gap > Duration::from_millis(200) {
                self.long.push((self.since, gap));
            }
            self.last = value;
            self.since = Instant::now();
        }
    }
}

/// Polls A's document count and read counter every ~20 ms until `stop`.
fn watch_gaps(
    es: String,
    index: String,
    metrics_url: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Gaps> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let series = format!("logingest_documents_read_total{{topic=\"{index}\"}}");
        let read = |client: reqwest::Client| {
            let (url, series) = (metrics_url.clone(), series.clone());
            async move {
                let text = match client.get(url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                // Not exported before the topic's first record: 0 read.
                common::metric_value(&text, &series).unwrap_or(0.0) as u64
            }
        };
        let mut indexed = GapTracker::new(count(&client, &es, &index).await);
        let mut records = GapTracker::new(read(client.clone()).await);
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            indexed.observe(count(&client, &es, &index).await);
            records.observe(read(client.clone()).await);
        }
        Gaps {
            indexed: indexed.long,
            worst_indexed: indexed.worst,
            read: records.long,
            worst_read: records.worst,
        }
    })
}

/// `Stack::produce_steadily`, also tracking pauses between delivery
/// reports (a broker-side stall shows up here too). Returns how many lines
/// were delivered and the pauses.
fn produce_steadily_timed(
    brokers: &str,
    topic: &str,
    partitions: i32,
    per_second: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, GapTracker)> {
    let producer = common::steady_producer(brokers);
    let topic = topic.to_string();
    tokio::spawn(async move {
        let mut delivered = 0u64;
        let mut gaps = GapTracker::new(0);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let value = format!("{topic} steady {delivered}");
            let record = FutureRecord::<(), _>::to(&topic)
                .payload(&value)
                .partition(delivered as i32 % partitions);
            producer
                .send(record, Duration::from_secs(60))
                .await
                .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
            delivered += 1;
            gaps.observe(delivered);
        }
        (delivered, gaps)
    })
}

/// One add/remove cycle's figures, in milliseconds.
#[derive(Default)]
struct Cycle {
    partitions: i32,
    add_total: f64,
    apply: f64,
    first_ack: f64,
    /// From the put to the watcher receiving it (put wall clock vs the apply
    /// log line's timestamp minus its elapsed time).
    etcd_delivery: f64,
    /// From "registry change applied" to the first task of the topic started
    /// (log timestamps): the consumer-group round.
    assign_wait: f64,
    /// From the first task start to the first record read (the
    /// `documents_read` metric, polled every ~10 ms).
    first_read: f64,
    stop_own: f64,
    stop_external: f64,
    leaked: u64,
}

impl Cycle {
    fn own(&self) -> f64 {
        self.apply + self.first_ack
    }
    fn broker(&self) -> f64 {
        self.add_total - self.own()
    }
    /// What the breakdown does not explain: ack → searchable → seen.
    fn rest(&self) -> f64 {
        self.broker() - self.etcd_delivery - self.assign_wait
    }
}

/// Nearest-rank percentile of `values` (sorted here).
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The generated config as `section: key=value, ...` lines.
fn compact_config(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    let mut section = String::new();
    let mut entries: Vec<String> = Vec::new();
    let mut flush = |section: &str, entries: &mut Vec<String>| {
        if !entries.is_empty() {
            lines.push(format!("{section} {}", entries.join(", ")));
            entries.clear();
        }
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('[') {
            flush(&section, &mut entries);
            section = line.to_string();
        } else {
            entries.push(line.replace(" = ", "="));
        }
    }
    flush(&section, &mut entries);
    lines
}

async fn bench(runs: usize) -> bool {
    let stack = Stack::start();
    let es = stack.es_url.clone();
    let http = reqwest::Client::new();
    let mut etcd = etcd_client::Client::connect([stack.etcd_url.as_str()], None)
        .await
        .expect("etcd client");

    let steady = unique("steady");
    stack.create_topic(&steady, 2);
    // Extra librdkafka properties to try, e.g.
    // KAFKA_OPTIONS="fetch.wait.max.ms=100,fetch.queue.backoff.ms=10".
    let kafka_options: String = std::env::var("KAFKA_OPTIONS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| format!("\"{}\" = \"{}\"\n", k.trim(), v.trim()))
        .collect();
    let options = Options {
        json_logs: true,
        kafka_options,
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let mut log = LogTail::new(daemon.log.clone());

    // The steady topic, and the group's first join.
    etcd.put(format!("{PREFIX}{steady}"), "", None)
        .await
        .expect("etcd put");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producer =
        produce_steadily_timed(&stack.brokers, &steady, 2, STEADY_PER_SECOND, stop.clone());
    let join_start = Instant::now();
    while count(&http, &es, &steady).await == 0 {
        assert!(
            join_start.elapsed() < GROUP_DEADLINE,
            "steady topic never indexed:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "bench: first join done after {:.1} s; {runs} runs follow",
        join_start.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let gaps = watch_gaps(
        es.clone(),
        steady.clone(),
        format!("{}/metrics", daemon.http),
        stop.clone(),
    );

    let mut cycles: Vec<Cycle> = Vec::new();
    let mut phases: Vec<(Instant, String)> = vec![(Instant::now(), "warm-up".to_string())];
    for run in 0..runs {
        let mut c = Cycle {
            partitions: 1 + (run % 2) as i32,
            ..Cycle::default()
        };
        let topic = unique("reload");
        let key = format!("{PREFIX}{topic}");
        stack.create_topic(&topic, c.partitions as u32);
        stack.produce_lines(&topic, c.partitions, PRELOADED).await;
        let partitions: Vec<String> = (0..c.partitions).map(|p| format!("{topic}/{p}")).collect();

        // Add: put → first document searchable.
        log.poll();
        let mark = log.events.len();
        let read_series = format!("logingest_documents_read_total{{topic=\"{topic}\"}}");
        let put_wall = now_secs();
        let t0 = Instant::now();
        phases.push((t0, format!("put of run {}", run + 1)));
        let put = etcd.put(key.as_str(), "", None).await.expect("etcd put");
        let revision = put.header().map(|h| h.revision()).expect("revision");
        let mut first_read_wall = None;
        loop {
            if first_read_wall.is_none()
                && daemon.metric(&read_series).await.is_some_and(|n| n > 0.0)
            {
                first_read_wall = Some(now_secs());
            }
            if count(&http, &es, &topic).await > 0 {
                break;
            }
            assert!(
                t0.elapsed() < GROUP_DEADLINE,
                "{topic} never indexed:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.add_total = t0.elapsed().as_secs_f64() * 1000.0;
        let of_topic = |e: &Value| {
            partitions
                .iter()
                .any(|p| e["partition"].as_str() == Some(p))
        };
        let found = log
            .wait_for(Duration::from_secs(10), |log| {
                let applied = log
                    .matching(mark, "registry change applied", |e| {
                        e["revision"].as_i64() >= Some(revision)
                    })
                    .next()?;
                let acks: Vec<f64> = log
                    .matching(mark, "first batch acknowledged", of_topic)
                    .filter_map(elapsed_ms)
                    .collect();
                if acks.len() < partitions.len() {
                    return None;
                }
                let first_start = log
                    .matching(mark, "partition task started", of_topic)
                    .filter_map(timestamp)
                    .reduce(f64::min)?;
                Some((
                    elapsed_ms(applied)?,
                    timestamp(applied)?,
                    acks.into_iter().reduce(f64::min)?,
                    first_start,
                ))
            })
            .await;
        let Some((apply, applied_at, first_ack, first_start)) = found else {
            panic!(
                "no apply/start/first-ack log lines for {topic}:\n{}",
                daemon.log()
            );
        };
        c.apply = apply;
        c.first_ack = first_ack;
        c.etcd_delivery = (applied_at - put_wall) * 1000.0 - apply;
        c.assign_wait = (first_start - applied_at) * 1000.0;
        c.first_read = first_read_wall.map_or(f64::NAN, |t| (t - first_start) * 1000.0);
        let all_start = Instant::now();
        while count(&http, &es, &topic).await < PRELOADED as u64 {
            assert!(
                all_start.elapsed() < GROUP_DEADLINE,
                "{topic}: not all preloaded lines indexed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Remove: del → the topic's tasks stopped.
        let series = "logingest_partition_tasks";
        let mark = log.events.len();
        let t1 = Instant::now();
        phases.push((t1, format!("del of run {}", run + 1)));
        etcd.delete(key.as_str(), None).await.expect("etcd del");
        while daemon.metric(series).await != Some(2.0) {
            assert!(
                t1.elapsed() < Duration::from_secs(30),
                "{topic}: tasks did not stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.stop_external = t1.elapsed().as_secs_f64() * 1000.0;
        let stopped = log
            .wait_for(Duration::from_secs(10), |log| {
                log.matching(mark, "removed topic stopped", |e| {
                    e["topic"].as_str() == Some(topic.as_str())
                })
                .next()
                .and_then(elapsed_ms)
            })
            .await;
        c.stop_own = stopped.unwrap_or_else(|| panic!("no 'removed topic stopped' for {topic}"));

        // Nothing of the removed topic is indexed any more, while A moves on.
        let before = count(&http, &es, &topic).await;
        stack.produce_lines(&topic, c.partitions, 3).await;
        let a0 = count(&http, &es, &steady).await;
        let t2 = Instant::now();
        while count(&http, &es, &steady).await < a0 + u64::from(STEADY_PER_SECOND)
            || t2.elapsed() < Duration::from_secs(1)
        {
            assert!(
                t2.elapsed() < Duration::from_secs(30),
                "steady topic stalled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.leaked = count(&http, &es, &topic).await.saturating_sub(before);

        // Let the group finish the round the removal started, so the next
        // add measures one round, not the tail of this one.
        let settled = log
            .wait_for(Duration::from_secs(15), |log| {
                log.matching(mark, "partitions assigned", |_| true)
                    .next()
                    .map(|_| ())
            })
            .await
            .map(|()| t1.elapsed().as_secs_f64());
        eprintln!(
            "bench: run {:>2}/{runs} {}p: add {:.0} ms = etcd {:.1} + apply {:.2} + round {:.0} + first ack {:.1} (read after {:.0}) + rest {:.0}; del stop {:.1} / {:.0} ms; {}{}",
            run + 1,
            c.partitions,
            c.add_total,
            c.etcd_delivery,
            c.apply,
            c.assign_wait,
            c.first_ack,
            c.first_read,
            c.rest(),
            c.stop_own,
            c.stop_external,
            match settled {
                Some(s) => format!("group settled {s:.1} s after del"),
                None => "no settling assignment seen".to_string(),
            },
            if c.leaked > 0 { format!(", LEAKED {}", c.leaked) } else { String::new() },
        );
        cycles.push(c);
    }

    stop.store(true, Ordering::Relaxed);
    let gaps = gaps.await.expect("gap watcher");
    let (steady_lines, produced) = producer.await.expect("producer");
    let steady_rate = steady_lines as f64 / started.elapsed().as_secs_f64();
    let catch_up = Instant::now();
    while count(&http, &es, &steady).await != steady_lines {
        assert!(
            catch_up.elapsed() < GROUP_DEADLINE,
            "steady topic did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kept_log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-reload-logingest.log");
    let _ = std::fs::copy(&daemon.log, &kept_log);

    // The report.
    let col = |f: fn(&Cycle) -> f64| cycles.iter().map(f).collect::<Vec<f64>>();
    let rows: Vec<(&str, Vec<f64>, &str)> = vec![
        (
            "add: total (put -> first doc searchable)",
            col(|c| c.add_total),
            "<= 1 round + 1 s",
        ),
        (
            "add: own part (apply + first ack)",
            col(Cycle::own),
            "p50 < 200, p95 < 500",
        ),
        ("  registry change applied", col(|c| c.apply), ""),
        (
            "  first batch acknowledged (task start -> ack)",
            col(|c| c.first_ack),
            "",
        ),
        (
            "    of which task start -> first record read",
            col(|c| c.first_read),
            "(+-10 ms)",
        ),
        ("add: broker share (total - own)", col(Cycle::broker), ""),
        (
            "  etcd put -> watch event received",
            col(|c| c.etcd_delivery),
            "",
        ),
        (
            "  group round (applied -> task start)",
            col(|c| c.assign_wait),
            "~5 s on tansu",
        ),
        (
            "  rest (ack -> searchable -> seen by poll)",
            col(Cycle::rest),
            "",
        ),
        ("del -> stopped, own (log)", col(|c| c.stop_own), "< 1000"),
        (
            "del -> stopped, external (tasks metric)",
            col(|c| c.stop_external),
            "< 1000",
        ),
    ];
    let leaked: u64 = cycles.iter().map(|c| c.leaked).sum();
    println!();
    println!(
        "logingest reload benchmark: {runs} add/remove runs, one private stack, one instance (release build)"
    );
    println!(
        "{:<48} {:>8} {:>8} {:>8}   target",
        "milliseconds", "p50", "p95", "max"
    );
    for (name, values, target) in &rows {
        println!(
            "{:<48} {:>8.1} {:>8.1} {:>8.1}   {target}",
            name,
            percentile(values, 50.0),
            percentile(values, 95.0),
            percentile(values, 100.0),
        );
    }
    println!(
        "{:<48} {:>26.1}   < 1000",
        "worst gap of unaffected topic A (poll 20 ms)",
        gaps.worst_indexed.as_secs_f64() * 1000.0
    );
    println!(
        "{:<48} {:>26.1}",
        "  A's worst gap in records read from Kafka",
        gaps.worst_read.as_secs_f64() * 1000.0
    );
    println!(
        "{:<48} {:>26.1}",
        "  A's worst gap in delivery reports (producer)",
        produced.worst.as_secs_f64() * 1000.0
    );
    let mut long_gaps = gaps.indexed.clone();
    long_gaps.sort_by_key(|g| std::cmp::Reverse(g.1));
    let described: Vec<String> = long_gaps
        .iter()
        .take(3)
        .map(|(start, gap)| {
            let end = *start + *gap;
            let (at, phase) = phases
                .iter()
                .rev()
                .find(|(at, _)| *at <= end)
                .unwrap_or(&phases[0]);
            let offset = start.saturating_duration_since(*at).as_secs_f64()
                - at.saturating_duration_since(*start).as_secs_f64();
            // The longest pause in reading that overlaps this one.
            let read = gaps
                .read
                .iter()
                .filter(|(s, g)| *s < end && *s + *g > *start)
                .map(|(_, g)| g.as_secs_f64() * 1000.0)
                .fold(0.0, f64::max);
            let deliveries = produced
                .long
                .iter()
                .filter(|(s, g)| *s < end && *s + *g > *start)
                .map(|(_, g)| g.as_secs_f64() * 1000.0)
                .fold(0.0, f64::max);
            format!(
                "{:.0} ms from {offset:+.2} s after the {phase} (reads paused {read:.0} ms, deliveries {deliveries:.0} ms)",
                gap.as_secs_f64() * 1000.0
            )
        })
        .collect();
    println!(
        "A's gaps > 200 ms: {} indexed, {} read; longest: {}",
        gaps.indexed.len(),
        gaps.read.len(),
        if described.is_empty() {
            "-".to_string()
        } else {
            described.join("; ")
        }
    );
    println!(
        "documents of removed topics indexed after their stop: {leaked} (expected 0); A: {} lines at {steady_rate:.0}/s, all indexed",
        steady_lines
    );
    println!("scenario: A = 2 partitions at ~{STEADY_PER_SECOND} lines/s all along; T_i = fresh topic, 1 or 2 partitions (alternating), {PRELOADED} lines before its put; next put once the group settled");
    println!("config (tests/common Logingest::start; other keys default):");
    for line in compact_config(&daemon.config) {
        println!("  {line}");
    }
    println!("stack: etcd 3.4, tansu 0.6 (memory storage), osmem-server, all on 127.0.0.1; daemon log kept in {}", kept_log.display());
    println!(
        "rerun: RUNS={runs} scripts/bench-reload.sh   (or: RUNS={runs} cargo bench --bench reload)"
    );
    leaked == 0
}
