//! The benchmark of issue 11 (`scripts/bench.sh`): in one run on the local
//! stack, side by side,
//!
//! * `floor`: a bare Rust consumer with logingest's librdkafka settings,
//!   reading the backlog and doing nothing else ([`floor`]);
//! * `instant`: logingest against an instantly-answering, honest `_bulk`
//!   endpoint ([`endpoint`]);
//! * `osmem-direct` and `osmem`: osmem-server fed directly with the
//!   documents logingest writes, and logingest against osmem-server;
//! * `p64` and `x5`: logingest against the instant endpoint with 64
//!   partitions, and with a backlog 5× larger;
//! * `otlp` (not in the default selection): logingest against the instant
//!   endpoint, `format = "otlp_json"`, records that are OTLP/JSON logs
//!   requests of one log record each (the body is the instant row's line):
//!   the cost per document of decoding OTLP against plain lines.
//!
//! For each row: docs/s overall (from the process's start) and after the
//! first document, CPU time of the measured process (user + system from
//! `/proc/<pid>/stat`) and per document, peak RSS (`VmHWM`), documents per
//! bulk request and bytes sent; then the ratios and the issue's targets.
//!
//! Every backlog is produced once and read by several rows, each with its
//! own consumer group (and logingest rows with their own registry prefix).
//! Each measured process starts fresh, completion is a condition (distinct
//! `_id`s counted by the endpoint, `_count` of osmem, messages read by the
//! floor), and CPU and memory are read just before the process is stopped
//! with SIGTERM.
//!
//! Environment: `LINES` (1 000 000), `SIZE` (200), `PARTITIONS` (4),
//! `OSMEM_LINES` (100 000), `X5` (5: the factor of the large backlog),
//! `P64` (64: partitions of the many-partition row), `ROWS` (rows or groups,
//! comma-separated; `all`), `REPEAT` (1: rounds of the selected rows, then
//! min/median), `EXTRA_TOML` (merged into every logingest config),
//! `PERF` (rows to record with `perf record`; `PERF_ARGS`, default
//! `-F 999 -g`, e.g. `--call-graph dwarf`), `RUST_LOG` of logingest
//! (`info`), `ROW_TIMEOUT` (seconds, 900), `DIRECT_BATCH` (2000) and
//! `DIRECT_CONCURRENCY` (8, logingest's default `batch.max_in_flight`) of the direct osmem load, `BENCH_LOG_DIR`
//! (`target/bench-logs`: configs and logs of every process).
//!
//! The bench binary is also the floor consumer and the endpoint: started
//! with `BENCH_ROLE=floor` or `BENCH_ROLE=endpoint` it runs that role only.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench/endpoint.rs"]
mod endpoint;
#[path = "bench/floor.rs"]
mod floor;
#[path = "bench/procfs.rs"]
mod procfs;
#[path = "bench/produce.rs"]
mod produce;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use common::{free_port, metric_value, unique, Stack};

/// librdkafka properties of every consumer in the benchmark (logingest's
/// and the floor's): tansu answers a new member's first join after half the
/// session timeout.
pub const KAFKA_OPTIONS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
];

/// Which backlog a row reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backlog {
    /// `LINES` lines over `PARTITIONS` partitions.
    Main,
    /// `OSMEM_LINES` lines over `PARTITIONS` partitions.
    Osmem,
    /// `LINES` lines over `P64` partitions.
    P64,
    /// `X5 × LINES` lines over `PARTITIONS` partitions.
    X5,
    /// `LINES` OTLP/JSON logs requests of one log record each (the body is
    /// the `Main` backlog's line) over `PARTITIONS` partitions.
    Otlp,
}

/// Where logingest sends its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// The instant endpoint ([`endpoint`]), a fresh process per row.
    Instant,
    /// A fresh osmem-server per row.
    Osmem,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// The bare consumer.
    Floor,
    /// osmem-server fed directly (logingest's index template, then
    /// `DIRECT_BATCH` documents per request, `DIRECT_CONCURRENCY` in flight).
    OsmemDirect,
    /// logingest, with the row's extra configuration.
    Logingest(Sink),
}

/// One row of the table.
struct Row {
    name: &'static str,
    about: &'static str,
    backlog: Backlog,
    kind: Kind,
    /// TOML merged into logingest's config (tables merge key by key), e.g.
    /// `"[elasticsearch]\ncompression = \"gzip\"\n"`.
    toml: &'static str,
    /// The topic's registry value (`""`: defaults), e.g. a JSON object of
    /// per-topic settings.
    registry: &'static str,
    /// Selected when `ROWS` is not set.
    default: bool,
}

/// The rows. To measure logingest with other settings, add a row: a name,
/// the backlog, `Kind::Logingest(Sink::Instant)` (or `Osmem`), and the
/// extra TOML and/or registry value; select it with `ROWS=name` or make it
/// `default`.
const ROWS: &[Row] = &[
    Row {
        name: "floor",
        about:
            "bare rdkafka consumer, logingest's client settings, split partition queues; reads only",
        backlog: Backlog::Main,
        kind: Kind::Floor,
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "instant",
        about: "logingest -> instant _bulk endpoint",
        backlog: Backlog::Main,
        kind: Kind::Logingest(Sink::Instant),
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "osmem-direct",
        about: "osmem-server fed directly (same documents; CPU/RSS are osmem's)",
        backlog: Backlog::Osmem,
        kind: Kind::OsmemDirect,
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "osmem",
        about: "logingest -> osmem-server",
        backlog: Backlog::Osmem,
        kind: Kind::Logingest(Sink::Osmem),
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "p64",
        about: "logingest -> instant endpoint, many partitions",
        backlog: Backlog::P64,
        kind: Kind::Logingest(Sink::Instant),
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "x5",
        about: "logingest -> instant endpoint, larger backlog",
        backlog: Backlog::X5,
        kind: Kind::Logingest(Sink::Instant),
        toml: "",
        registry: "",
        default: true,
    },
    Row {
        name: "gzip",
        about: "logingest -> instant endpoint, gzip request bodies",
        backlog: Backlog::Main,
        kind: Kind::Logingest(Sink::Instant),
        toml: "[elasticsearch]\ncompression = \"gzip\"\n",
        registry: "",
        default: true,
    },
    Row {
        name: "osmem-lean",
        about: "logingest -> osmem-server, documents without kafka.* fields",
        backlog: Backlog::Osmem,
        kind: Kind::Logingest(Sink::Osmem),
        toml: "",
        registry: r#"{"kafka_fields": []}"#,
        default: true,
    },
    Row {
        name: "vrl",
        about: "logingest -> instant endpoint, parse_nginx_log transform on every line",
        backlog: Backlog::Main,
        kind: Kind::Logingest(Sink::Instant),
        toml: "",
        registry: r#"{"transform": ". = merge(., parse_nginx_log!(.message, \"combined\"))"}"#,
        default: true,
    },
    Row {
        name: "otlp",
        about: "logingest -> instant endpoint, format otlp_json: records are OTLP/JSON logs requests of one log record (body: the instant row's line)",
        backlog: Backlog::Otlp,
        kind: Kind::Logingest(Sink::Instant),
        toml: "",
        registry: r#"{"format": "otlp_json"}"#,
        default: false,
    },
];

/// Selection aliases: `ROWS=osmem` means both osmem rows.
const GROUPS: &[(&str, &[&str])] = &[
    ("osmem", &["osmem-direct", "osmem", "osmem-lean"]),
    ("all", &[]),
];

/// The run's settings, from the environment.
struct Settings {
    lines: u64,
    size: usize,
    partitions: u32,
    osmem_lines: u64,
    x5: u64,
    p64: u32,
    repeat: usize,
    rows: Vec<&'static Row>,
    extra_toml: String,
    perf: Vec<String>,
    rust_log: String,
    row_timeout: Duration,
    direct_batch: usize,
    direct_concurrency: usize,
    log_dir: PathBuf,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        // `1_000_000` reads as a number too.
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} does not parse")),
        _ => default,
    }
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Settings {
    fn from_env() -> Self {
        let rows = match std::env::var("ROWS") {
            Ok(list) if !list.trim().is_empty() => {
                let mut names: Vec<&str> = Vec::new();
                for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    match GROUPS.iter().find(|(g, _)| *g == token) {
                        Some(("all", _)) => names.extend(ROWS.iter().map(|r| r.name)),
                        Some((_, members)) => names.extend(members.iter()),
                        None => {
                            assert!(
                                ROWS.iter().any(|r| r.name == token),
                                "ROWS: unknown row {token:?}; rows: {}",
                                ROWS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
                            );
                            names.push(token);
                        }
                    }
                }
                // In the table's order, once each.
                ROWS.iter().filter(|r| names.contains(&r.name)).collect()
            }
            _ => ROWS.iter().filter(|r| r.default).collect(),
        };
        let log_dir = PathBuf::from(env_str(
            "BENCH_LOG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-logs"),
        ));
        Self {
            lines: env_or("LINES", 1_000_000),
            size: env_or("SIZE", 200),
            partitions: env_or("PARTITIONS", 4),
            osmem_lines: env_or("OSMEM_LINES", 100_000),
            x5: env_or("X5", 5),
            p64: env_or("P64", 64),
            repeat: env_or("REPEAT", 1usize).max(1),
            rows,
            extra_toml: env_str("EXTRA_TOML", ""),
            perf: env_str("PERF", "")
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            rust_log: env_str("RUST_LOG", "info"),
            row_timeout: Duration::from_secs(env_or("ROW_TIMEOUT", 900)),
            direct_batch: env_or("DIRECT_BATCH", 2000),
            direct_concurrency: env_or("DIRECT_CONCURRENCY", 8),
            log_dir,
        }
    }

    fn backlog_shape(&self, backlog: Backlog) -> (u32, u64) {
        match backlog {
            Backlog::Main => (self.partitions, self.lines),
            Backlog::Osmem => (self.partitions, self.osmem_lines),
            Backlog::P64 => (self.p64, self.lines),
            Backlog::X5 => (self.partitions, self.lines * self.x5),
            Backlog::Otlp => (self.partitions, self.lines),
        }
    }

    /// The command that reproduces this run.
    fn command(&self) -> String {
        let rows: Vec<&str> = self.rows.iter().map(|r| r.name).collect();
        let mut cmd = format!(
            "LINES={} SIZE={} PARTITIONS={} OSMEM_LINES={} ROWS={}",
            self.lines,
            self.size,
            self.partitions,
            self.osmem_lines,
            rows.join(",")
        );
        if self.x5 != 5 {
            cmd.push_str(&format!(" X5={}", self.x5));
        }
        if self.p64 != 64 {
            cmd.push_str(&format!(" P64={}", self.p64));
        }
        if self.repeat > 1 {
            cmd.push_str(&format!(" REPEAT={}", self.repeat));
        }
        if !self.extra_toml.is_empty() {
            cmd.push_str(&format!(" EXTRA_TOML={:?}", self.extra_toml));
        }
        cmd.push_str(" scripts/bench.sh");
        cmd
    }
}

/// A produced topic.
struct Topic {
    name: String,
    partitions: u32,
    lines: u64,
    /// When production started (Unix ms) and how long it took: the Kafka
    /// timestamps of the records, which logingest makes `@timestamp`.
    produced_at_ms: i64,
    produce_time: Duration,
}

/// What one row measured.
#[derive(Debug, Clone, Default, Serialize)]
struct Measured {
    row: String,
    docs: u64,
    /// Documents per second from the process's start (or the load's).
    overall: f64,
    /// Documents per second from the first document to the last.
    after_first: f64,
    /// CPU seconds of the measured process.
    cpu: Option<f64>,
    /// Peak RSS of the measured process, bytes.
    rss: Option<u64>,
    /// Bulk requests sent.
    requests: Option<u64>,
    /// Request bytes on the wire (compressed when gzip).
    wire_bytes: Option<u64>,
    /// Request bytes before compression.
    body_bytes: Option<u64>,
    /// CPU seconds of the sink (endpoint or osmem-server).
    sink_cpu: Option<f64>,
    /// Peak RSS of the sink, bytes.
    sink_rss: Option<u64>,
    /// CPU seconds of the broker during the row.
    broker_cpu: Option<f64>,
    /// The machine's 1-minute load average when the row ended (the
    /// machine may be shared: docs/s suffer first).
    load: Option<f64>,
    notes: Vec<String>,
}

impl Measured {
    fn us_per_doc(&self) -> Option<f64> {
        self.cpu.map(|c| c * 1e6 / self.docs.max(1) as f64)
    }

    fn sink_us_per_doc(&self) -> Option<f64> {
        self.sink_cpu.map(|c| c * 1e6 / self.docs.max(1) as f64)
    }

    fn docs_per_request(&self) -> Option<f64> {
        self.requests
            .filter(|r| *r > 0)
            .map(|r| self.docs as f64 / r as f64)
    }
}

/// Spawns `cmd` with its output in `log` (stdout piped instead when
/// `pipe_stdout`), killed if the benchmark dies.
fn spawn(mut cmd: Command, log: &Path, pipe_stdout: bool) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    cmd.stdin(Stdio::null()).stderr(err);
    if pipe_stdout {
        cmd.stdout(Stdio::piped());
    } else {
        cmd.stdout(out);
    }
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

/// This binary in one of its roles (floor, endpoint), with `env`.
fn spawn_role(role: &str, env: &[(&str, String)], log: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.env("BENCH_ROLE", role);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = spawn(cmd, log, true);
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// SIGTERM, then waits up to `deadline` (SIGKILL after it).
fn stop(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    // SAFETY: plain syscall on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Merges `extra` into `base`, tables key by key.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Everything the rows share.
struct Bench {
    settings: Settings,
    stack: Stack,
    topics: BTreeMap<Backlog, Topic>,
    tansu_pid: Option<u32>,
    http: reqwest::Client,
    round: usize,
}

/// A running sink of a logingest row.
enum RunningSink {
    Instant { child: Child, url: String },
    Osmem { es: common::Es, pid: Option<u32> },
}

impl RunningSink {
    fn url(&self) -> &str {
        match self {
            RunningSink::Instant { url, .. } => url,
            RunningSink::Osmem { es, .. } => &es.url,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            RunningSink::Instant { child, .. } => Some(child.id()),
            RunningSink::Osmem { pid, .. } => *pid,
        }
    }
}

fn start_osmem() -> (common::Es, Option<u32>) {
    let es = common::start_es();
    let port = es.url.rsplit(':').next().unwrap_or_default().to_string();
    let pid = procfs::find_child(&["osmem-server", &format!(":{port}")]);
    (es, pid)
}

impl Bench {
    fn broker_cpu(&self) -> Option<Duration> {
        self.tansu_pid.and_then(procfs::cpu)
    }

    fn log_path(&self, row: &str, what: &str) -> PathBuf {
        self.settings
            .log_dir
            .join(format!("{row}-r{}.{what}", self.round))
    }

    /// Produces the backlogs the selected rows read, checking that the
    /// in-memory broker can hold them.
    fn produce(&mut self) {
        let mut needed: Vec<Backlog> = self.settings.rows.iter().map(|r| r.backlog).collect();
        needed.sort();
        needed.dedup();
        let osmem_reserve = if self
            .settings
            .rows
            .iter()
            .any(|r| matches!(r.kind, Kind::OsmemDirect | Kind::Logingest(Sink::Osmem)))
        {
            // osmem holds ~9 KB per document; one instance at a time.
            self.settings.osmem_lines * 10_000
        } else {
            0
        };
        // Room left for logingest, the endpoint, osmem and the rest.
        let reserve = osmem_reserve + (2 << 30);
        let mut per_message: Option<f64> = None;
        println!("backlog (produced once, read by every row with its own consumer group):");
        for backlog in needed {
            let (partitions, mut lines) = self.settings.backlog_shape(backlog);
            let estimate = per_message.unwrap_or((self.settings.size * 2 + 200) as f64);
            let available = procfs::mem_available().saturating_sub(reserve);
            let fits = (available as f64 / estimate) as u64;
            if lines > fits {
                let was = lines;
                lines = (fits / 100_000 * 100_000).max(100_000);
                println!(
                    "  NOTE: {was} lines of {} B would take ~{:.1} GB in tansu (in-memory, measured {:.0} B/line) \
                     but only {:.1} GB are available beyond a {:.1} GB reserve: {backlog:?} uses {lines} lines",
                    self.settings.size,
                    was as f64 * estimate / 1e9,
                    estimate,
                    available as f64 / 1e9,
                    reserve as f64 / 1e9
                );
            }
            let name = unique(&format!("bench-{}", format!("{backlog:?}").to_lowercase()));
            self.stack.create_topic(&name, partitions);
            let before = self.tansu_pid.and_then(procfs::rss).unwrap_or(0);
            let produced_at_ms = chrono::Utc::now().timestamp_millis();
            let took = produce::produce(
                &self.stack.brokers,
                &name,
                partitions,
                lines,
                self.settings.size,
                backlog == Backlog::Otlp,
            );
            let after = self.tansu_pid.and_then(procfs::rss).unwrap_or(0);
            if after > before {
                let measured = (after - before) as f64 / lines as f64;
                per_message = Some(per_message.map_or(measured, |p: f64| p.max(measured)));
            }
            println!(
                "  {backlog:?}: topic {name}, {lines} lines x {} B over {partitions} partitions in {:.1} s \
                 ({:.0} lines/s, {:.0} MB/s); tansu RSS {} -> {} MiB",
                self.settings.size,
                secs(took),
                lines as f64 / secs(took),
                (lines as f64 * self.settings.size as f64) / secs(took) / 1e6,
                before >> 20,
                after >> 20,
            );
            self.topics.insert(
                backlog,
                Topic {
                    name,
                    partitions,
                    lines,
                    produced_at_ms,
                    produce_time: took,
                },
            );
        }
    }

    async fn run_row(&self, row: &Row) -> Result<Measured, String> {
        let topic = &self.topics[&row.backlog];
        match row.kind {
            Kind::Floor => self.run_floor(row, topic).await,
            Kind::OsmemDirect => self.run_osmem_direct(row, topic).await,
            Kind::Logingest(sink) => self.run_logingest(row, topic, sink).await,
        }
    }

    async fn run_floor(&self, row: &Row, topic: &Topic) -> Result<Measured, String> {
        let broker_before = self.broker_cpu();
        let started_ns = floor::now_ns();
        let log = self.log_path(row.name, "log");
        let (mut child, lines) = spawn_role(
            "floor",
            &[
                ("BENCH_BROKERS", self.stack.brokers.clone()),
                ("BENCH_TOPIC", topic.name.clone()),
                ("BENCH_GROUP", unique(&format!("bench-{}", row.name))),
                ("BENCH_LINES", topic.lines.to_string()),
            ],
            &log,
        );
        let deadline = Instant::now() + self.settings.row_timeout;
        let done = loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.starts_with("DONE ") => break line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = child.wait();
                    return Err(format!("the floor consumer exited:\n{}", tail(&log, 20)));
                }
            }
            if Instant::now() > deadline {
                stop(&mut child, Duration::from_secs(5));
                return Err(format!(
                    "the floor consumer did not read {} messages in time",
                    topic.lines
                ));
            }
        };
        let pid = child.id();
        let (cpu, rss) = (procfs::cpu(pid), procfs::peak_rss(pid));
        let broker = self.broker_cpu();
        stop(&mut child, Duration::from_secs(10));
        let f: Vec<u64> = done
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let [first, last, read, bytes, gaps] = f[..] else {
            return Err(format!("unexpected report {done:?}"));
        };
        let mut m = Measured {
            row: row.name.into(),
            docs: read,
            overall: read as f64 / ((last - started_ns) as f64 / 1e9),
            after_first: (read - 1) as f64 / ((last - first).max(1) as f64 / 1e9),
            cpu: cpu.map(secs),
            rss,
            broker_cpu: broker
                .zip(broker_before)
                .map(|(a, b)| secs(a.saturating_sub(b))),
            ..Measured::default()
        };
        m.notes
            .push(format!("{} MB of payload read", bytes / 1_000_000));
        if gaps > 0 {
            m.notes.push(format!("{gaps} offset gaps"));
        }
        Ok(m)
    }

    async fn run_osmem_direct(&self, row: &Row, topic: &Topic) -> Result<Measured, String> {
        // The documents logingest writes for this topic: same index, `_id`s
        // and shape (`@timestamp`, `message`, `kafka.{topic,partition,offset}`).
        #[derive(Serialize)]
        struct Kafka<'a> {
            topic: &'a str,
            partition: i32,
            offset: u64,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            #[serde(rename = "@timestamp")]
            timestamp: &'a str,
            message: &'a str,
            kafka: Kafka<'a>,
        }
        let index = topic.name.to_ascii_lowercase();
        // Kafka timestamps spread over the production, as logingest sees them.
        let timestamp = |i: u64| {
            let ms = topic.produced_at_ms
                + (topic.produce_time.as_millis() as u64 * i / topic.lines.max(1)) as i64;
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let batch = self.settings.direct_batch.max(1) as u64;
        let mut bodies = Vec::new();
        let mut line = Vec::new();
        let mut start = 0;
        while start < topic.lines {
            let end = (start + batch).min(topic.lines);
            let mut body = Vec::with_capacity((end - start) as usize * (self.settings.size + 200));
            for i in start..end {
                produce::line(i, self.settings.size, &mut line);
                let partition = produce::partition_of(i, topic.partitions);
                let offset = i / u64::from(topic.partitions);
                let id = format!("{}-{partition}-{offset}", topic.name);
                serde_json::to_writer(
                    &mut body,
                    &serde_json::json!({"index": {"_index": index, "_id": id}}),
                )
                .map_err(|e| e.to_string())?;
                body.push(b'\n');
                serde_json::to_writer(
                    &mut body,
                    &Doc {
                        timestamp: &timestamp(i),
                        message: &String::from_utf8_lossy(&line),
                        kafka: Kafka {
                            topic: &topic.name,
                            partition,
                            offset,
                        },
                    },
                )
                .map_err(|e| e.to_string())?;
                body.push(b'\n');
            }
            bodies.push(body);
            start = end;
        }
        let body_bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        let requests = bodies.len() as u64;
        let (es, pid) = start_osmem();
        // The index template logingest installs first (its mappings decide
        // osmem's cost per document: `message` as text only, `kafka.topic`
        // as keyword...).
        let settings = logingest::topic::TopicSettings::defaults(&topic.name);
        let templates = logingest::config::IndexTemplateConfig::default();
        let pattern = settings.template.pattern();
        let name = logingest::sink::template::template_name(&templates.name_prefix, &pattern);
        let body = logingest::sink::template::template_body(&pattern, false, templates.priority);
        let reply = self
            .http
            .put(format!("{}/_index_template/{name}", es.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !reply.status().is_success() {
            return Err(format!(
                "index template refused: {}",
                reply.text().await.unwrap_or_default()
            ));
        }
        let url = format!("{}/_bulk", es.url);
        let started = Instant::now();
        let mut pending = futures::stream::iter(bodies.into_iter().map(|body| {
            let (client, url) = (self.http.clone(), url.clone());
            async move {
                let reply = client
                    .post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .bytes()
                    .await
                    .map_err(|e| e.to_string())?;
                let v: serde_json::Value =
                    serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
                if v["errors"] != serde_json::Value::Bool(false) {
                    return Err(format!(
                        "osmem reported errors: {}",
                        String::from_utf8_lossy(&reply[..reply.len().min(300)])
                    ));
                }
                Ok::<(), String>(())
            }
        }))
        .buffer_unordered(self.settings.direct_concurrency.max(1));
        while let Some(result) = pending.next().await {
            result?;
        }
        let took = started.elapsed();
        let (cpu, rss) = (pid.and_then(procfs::cpu), pid.and_then(procfs::peak_rss));
        let count = count(&self.http, &es.url, &index).await;
        if count != topic.lines {
            return Err(format!("osmem holds {count} of {} documents", topic.lines));
        }
        drop(es);
        let rate = topic.lines as f64 / secs(took);
        Ok(Measured {
            row: row.name.into(),
            docs: topic.lines,
            overall: rate,
            after_first: rate,
            requests: Some(requests),
            wire_bytes: Some(body_bytes),
            body_bytes: Some(body_bytes),
            sink_cpu: cpu.map(secs),
            sink_rss: rss,
            notes: vec![format!(
                "_bulk of {} docs, {} in flight",
                self.settings.direct_batch, self.settings.direct_concurrency
            )],
            ..Measured::default()
        })
    }

    fn logingest_config(
        &self,
        row: &Row,
        es_url: &str,
        prefix: &str,
        port: u16,
    ) -> Result<String, String> {
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let options: Vec<String> = KAFKA_OPTIONS
            .iter()
            .map(|(k, v)| format!("{} = {}", q(k), q(v)))
            .collect();
        // What tests/common writes, minus the test-speed settings: logingest's
        // defaults for batching, commits and retries. drain_timeout must stay
        // below the short session timeout tansu needs.
        let base = format!(
            "[etcd]\nendpoints = [{}]\nprefix = {}\n\n\
             [kafka]\nbrokers = [{}]\ngroup_id = {}\ndrain_timeout = \"4s\"\n\n\
             [kafka.options]\n{}\n\n\
             [elasticsearch]\nurl = {}\n\n\
             [http]\nlisten = {}\n",
            q(&self.stack.etcd_url),
            q(prefix),
            q(&self.stack.brokers),
            q(&unique(&format!("bench-{}", row.name))),
            options.join("\n"),
            q(es_url),
            q(&format!("127.0.0.1:{port}")),
        );
        let mut config: toml::Table = base.parse().map_err(|e| format!("base config: {e}"))?;
        for extra in [row.toml, &self.settings.extra_toml] {
            let extra: toml::Table = extra
                .parse()
                .map_err(|e| format!("extra TOML of row {}: {e}", row.name))?;
            merge(&mut config, extra);
        }
        toml::to_string(&config).map_err(|e| e.to_string())
    }

    async fn run_logingest(
        &self,
        row: &Row,
        topic: &Topic,
        sink: Sink,
    ) -> Result<Measured, String> {
        let sink = match sink {
            Sink::Instant => {
                let (mut child, lines) = spawn_role(
                    "endpoint",
                    &[(
                        "BENCH_SAMPLE",
                        self.log_path(row.name, "sample.ndjson")
                            .display()
                            .to_string(),
                    )],
                    &self.log_path(row.name, "endpoint.log"),
                );
                let port = lines
                    .recv_timeout(Duration::from_secs(20))
                    .ok()
                    .and_then(|l| l.strip_prefix("LISTEN ").map(str::to_string));
                let Some(port) = port else {
                    let _ = child.kill();
                    return Err("the endpoint did not start".into());
                };
                RunningSink::Instant {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                }
            }
            Sink::Osmem => {
                let (es, pid) = start_osmem();
                RunningSink::Osmem { es, pid }
            }
        };
        let result = self.measure_logingest(row, topic, &sink).await;
        match sink {
            RunningSink::Instant { mut child, .. } => {
                stop(&mut child, Duration::from_secs(5));
            }
            RunningSink::Osmem { es, .. } => drop(es),
        }
        result
    }

    async fn measure_logingest(
        &self,
        row: &Row,
        topic: &Topic,
        sink: &RunningSink,
    ) -> Result<Measured, String> {
        let prefix = format!("/bench/{}/", unique(row.name));
        self.stack
            .put(&format!("{prefix}{}", topic.name), row.registry);
        let port = free_port();
        let config_path = self.log_path(row.name, "toml");
        let config = self.logingest_config(row, sink.url(), &prefix, port)?;
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = self.log_path(row.name, "log");
        let metrics_url = format!("http://127.0.0.1:{port}/metrics");
        let sink_before = sink.pid().and_then(procfs::cpu);
        let broker_before = self.broker_cpu();

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
        cmd.args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", &self.settings.rust_log);
        // Only the config file speaks (LOGINGEST_ES_URL and the like would
        // override it).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("LOGINGEST_") {
                cmd.env_remove(k);
            }
        }
        let started = Instant::now();
        let started_ns = floor::now_ns();
        let mut child = spawn(cmd, &log, false);
        let pid = child.id();
        let mut perf = self.settings.perf.iter().any(|p| p == row.name).then(|| {
            let data = self.log_path(row.name, "perf.data");
            let mut cmd = Command::new("perf");
            let args = env_str("PERF_ARGS", "-F 999 -g");
            cmd.arg("record")
                .args(args.split_whitespace())
                .arg("-o")
                .arg(&data)
                .args(["-p", &pid.to_string()]);
            println!(
                "  perf: recording {} into {} (perf report -i {} --no-children --sort symbol)",
                row.name,
                data.display(),
                data.display()
            );
            spawn(cmd, &self.log_path(row.name, "perf.log"), false)
        });

        let deadline = started + self.settings.row_timeout;
        let indexed = format!(
            "logingest_documents_indexed_total{{topic=\"{}\"}}",
            topic.name
        );
        let mut first: Option<(Instant, f64)> = None;
        let mut stats = endpoint::Stats::default();
        let done_at = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("logingest exited ({status}):\n{}", tail(&log, 30)));
            }
            if Instant::now() > deadline {
                stop(&mut child, Duration::from_secs(20));
                return Err(format!(
                    "not complete after {:?} (endpoint stats {stats:?}):\n{}",
                    self.settings.row_timeout,
                    tail(&log, 30)
                ));
            }
            match sink {
                RunningSink::Instant { url, .. } => {
                    if let Ok(r) = self.http.get(format!("{url}/_bench/stats")).send().await {
                        if let Ok(s) = r.json::<endpoint::Stats>().await {
                            stats = s;
                        }
                    }
                    if stats.distinct >= topic.lines {
                        break Instant::now();
                    }
                }
                RunningSink::Osmem { es, .. } => {
                    let text = match self.http.get(&metrics_url).send().await {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    let n = metric_value(&text, &indexed).unwrap_or(0.0);
                    if first.is_none() && n > 0.0 {
                        first = Some((Instant::now(), n));
                    }
                    // Acknowledged by logingest; then the server must hold
                    // them all (distinct `_id`s).
                    if n >= topic.lines as f64
                        && count(&self.http, &es.url, &topic.name.to_ascii_lowercase()).await
                            >= topic.lines
                    {
                        break Instant::now();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (cpu, rss) = (procfs::cpu(pid), procfs::peak_rss(pid));
        let sink_after = sink.pid().and_then(procfs::cpu);
        let sink_rss = sink.pid().and_then(procfs::peak_rss);
        let broker = self.broker_cpu();
        let metrics = match self.http.get(&metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if let Some(perf) = perf.as_mut() {
            // SAFETY: plain syscall on our own child's pid.
            unsafe {
                libc::kill(perf.id() as i32, libc::SIGINT);
            }
            let _ = perf.wait();
        }
        let exit = stop(&mut child, Duration::from_secs(30));

        let mut m = Measured {
            row: row.name.into(),
            docs: topic.lines,
            cpu: cpu.map(secs),
            rss,
            sink_cpu: sink_after
                .zip(sink_before)
                .map(|(a, b)| secs(a.saturating_sub(b))),
            sink_rss,
            broker_cpu: broker
                .zip(broker_before)
                .map(|(a, b)| secs(a.saturating_sub(b))),
            ..Measured::default()
        };
        match sink {
            RunningSink::Instant { .. } => {
                let lines = topic.lines as f64;
                m.overall = lines / ((stats.last_new_ns - started_ns) as f64 / 1e9);
                m.after_first = (lines - stats.first_request_docs as f64)
                    / ((stats.last_new_ns - stats.first_doc_ns).max(1) as f64 / 1e9);
                m.requests = Some(stats.bulk_requests);
                m.wire_bytes = Some(stats.wire_bytes);
                m.body_bytes = Some(stats.body_bytes);
                if stats.rewrites > 0 {
                    m.notes
                        .push(format!("{} documents written twice", stats.rewrites));
                }
                if stats.item_errors > 0 || stats.malformed_requests > 0 {
                    m.notes.push(format!(
                        "{} item errors, {} malformed requests",
                        stats.item_errors, stats.malformed_requests
                    ));
                }
                if stats.gzip_requests > 0 {
                    m.notes
                        .push(format!("{} gzip requests", stats.gzip_requests));
                }
                if !stats.unknown.is_empty() {
                    m.notes
                        .push(format!("unknown requests: {:?}", stats.unknown));
                }
            }
            RunningSink::Osmem { .. } => {
                let lines = topic.lines as f64;
                m.overall = lines / secs(done_at - started);
                if let Some((at, n)) = first {
                    m.after_first = (lines - n) / secs(done_at - at).max(1e-3);
                }
                let requests: f64 = metrics
                    .lines()
                    .filter(|l| l.starts_with("logingest_bulk_requests_total{"))
                    .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                    .sum();
                m.requests = (requests > 0.0).then_some(requests as u64);
                m.wire_bytes = metric_value(&metrics, "logingest_bulk_bytes_sent_total")
                    .filter(|sent| *sent > 0.0)
                    .map(|sent| sent as u64);
            }
        }
        match exit {
            Some(s) if s.success() => {}
            Some(s) => m.notes.push(format!("exit after SIGTERM: {s}")),
            None => m.notes.push("did not exit within 30 s of SIGTERM".into()),
        }
        Ok(m)
    }
}

/// Documents in `index` (after a refresh); 0 when unknown.
async fn count(http: &reqwest::Client, es: &str, index: &str) -> u64 {
    let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
    let Ok(r) = http.get(format!("{es}/{index}/_count")).send().await else {
        return 0;
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["count"].as_u64().unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The median of each figure over the rounds of one row.
fn combine(runs: &[Measured]) -> Measured {
    if runs.len() == 1 {
        return runs[0].clone();
    }
    let f = |get: &dyn Fn(&Measured) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = runs.iter().filter_map(get).collect();
        (!v.is_empty()).then(|| median(v))
    };
    let mut m = runs[0].clone();
    m.overall = f(&|r| Some(r.overall)).unwrap_or_default();
    m.after_first = f(&|r| Some(r.after_first)).unwrap_or_default();
    m.cpu = f(&|r| r.cpu);
    m.rss = f(&|r| r.rss.map(|x| x as f64)).map(|x| x as u64);
    m.requests = f(&|r| r.requests.map(|x| x as f64)).map(|x| x as u64);
    m.wire_bytes = f(&|r| r.wire_bytes.map(|x| x as f64)).map(|x| x as u64);
    m.body_bytes = f(&|r| r.body_bytes.map(|x| x as f64)).map(|x| x as u64);
    m.sink_cpu = f(&|r| r.sink_cpu);
    m.sink_rss = f(&|r| r.sink_rss.map(|x| x as f64)).map(|x| x as u64);
    m.broker_cpu = f(&|r| r.broker_cpu);
    m.load = f(&|r| r.load);
    m.notes = runs.iter().flat_map(|r| r.notes.clone()).collect();
    m.notes.dedup();
    m
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("—".into(), |x| format!("{x:.decimals$}"))
}

fn mib(v: Option<u64>) -> String {
    v.map_or("—".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

fn print_table(results: &[(&Row, Measured)]) {
    println!(
        "| row | docs | docs/s | docs/s after 1st | CPU s | CPU µs/doc | peak RSS MiB | docs/request | MB sent | sink CPU µs/doc | sink RSS MiB | broker CPU s | load |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (_, m) in results {
        let sent = match (m.wire_bytes, m.body_bytes) {
            (Some(w), Some(b)) if w != b => {
                format!("{:.1} ({:.1} raw)", w as f64 / 1e6, b as f64 / 1e6)
            }
            (Some(w), _) => format!("{:.1}", w as f64 / 1e6),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            m.row,
            m.docs,
            m.overall,
            m.after_first,
            opt(m.cpu, 2),
            opt(m.us_per_doc(), 2),
            mib(m.rss),
            opt(m.docs_per_request(), 0),
            sent,
            opt(m.sink_us_per_doc(), 2),
            mib(m.sink_rss),
            opt(m.broker_cpu, 1),
            opt(m.load, 1),
        );
    }
    for (row, m) in results {
        let notes = if m.notes.is_empty() {
            String::new()
        } else {
            format!(" [{}]", m.notes.join("; "))
        };
        println!("  {}: {}{notes}", row.name, row.about);
    }
}

fn print_ratios(results: &[(&Row, Measured)]) {
    let get = |name: &str| results.iter().find(|(r, _)| r.name == name).map(|(_, m)| m);
    let floor = get("floor");
    println!();
    println!("ratios and the targets of issue 11:");
    let mark = |ok: bool| if ok { "met" } else { "NOT met" };
    for (row, m) in results {
        let Kind::Logingest(sink) = row.kind else {
            continue;
        };
        if sink == Sink::Instant {
            if let (Some(f), Some(l)) = (floor.and_then(Measured::us_per_doc), m.us_per_doc()) {
                println!(
                    "  {:<14} CPU/doc / floor CPU/doc = {:.2} / {:.2} µs = {:.2}x   (target <= 1.5x: {})",
                    row.name,
                    l,
                    f,
                    l / f,
                    mark(l / f <= 1.5)
                );
            }
            if let Some(rss) = m.rss {
                println!(
                    "  {:<14} peak RSS {:.0} MB = {:.0} MiB   (target <= 100 MB: {})",
                    row.name,
                    rss as f64 / 1e6,
                    rss as f64 / (1 << 20) as f64,
                    mark(rss <= 100_000_000)
                );
            }
        }
        if row.name == "instant" {
            println!(
                "  {:<14} {:.0} docs/s after the first document   (target >= 150 000: {})",
                row.name,
                m.after_first,
                mark(m.after_first >= 150_000.0)
            );
        }
        if sink == Sink::Osmem {
            if let Some(direct) = get("osmem-direct") {
                let r = m.overall / direct.overall;
                println!(
                    "  {:<14} docs/s / osmem-direct docs/s = {:.0} / {:.0} = {:.2} (after the first document: {:.2})   (target >= 0.95: {})",
                    row.name,
                    m.overall,
                    direct.overall,
                    r,
                    m.after_first / direct.overall,
                    mark(r >= 0.95)
                );
            }
        }
    }
    if let (Some(i), Some(x)) = (get("instant"), get("x5")) {
        if let (Some(a), Some(b)) = (i.rss, x.rss) {
            println!(
                "  x5 / instant   peak RSS {} / {} MiB (memory must not move with the backlog)",
                b >> 20,
                a >> 20
            );
        }
    }
    if let (Some(i), Some(o)) = (get("instant"), get("otlp")) {
        if let (Some(a), Some(b)) = (i.us_per_doc(), o.us_per_doc()) {
            println!(
                "  otlp / instant logingest CPU µs/doc {b:.2} / {a:.2} = {:.2} (an OTLP/JSON request of one log record against a plain line)",
                b / a
            );
        }
    }
    if let (Some(i), Some(x)) = (get("instant"), get("p64")) {
        if let (Some(a), Some(b)) = (i.rss, x.rss) {
            println!(
                "  p64 / instant  peak RSS {} / {} MiB (memory must not move with partitions)",
                b >> 20,
                a >> 20
            );
        }
    }
}

fn git_describe() -> String {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]);
    let dirty = !run(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "{commit}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    )
}

fn main() {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("floor") => return floor::main(),
        Ok("endpoint") => return endpoint::main(),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(orchestrate());
}

async fn orchestrate() {
    let settings = Settings::from_env();
    let _ = std::fs::remove_dir_all(&settings.log_dir);
    std::fs::create_dir_all(&settings.log_dir).expect("log dir");
    println!(
        "logingest benchmark: {} lines of {} B over {} partitions; rows {}; code {}",
        settings.lines,
        settings.size,
        settings.partitions,
        settings
            .rows
            .iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(","),
        git_describe(),
    );
    println!(
        "machine: {} cores, load average {}, {:.1} GB available; logs and configs in {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        procfs::load_average(),
        procfs::mem_available() as f64 / 1e9,
        settings.log_dir.display()
    );
    let stack = Stack::start();
    let port = stack
        .brokers
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let tansu_pid = procfs::find_child(&["tansu", "broker", &format!(":{port}")]);
    let mut bench = Bench {
        settings,
        stack,
        topics: BTreeMap::new(),
        tansu_pid,
        http: reqwest::Client::new(),
        round: 0,
    };
    bench.produce();

    let rows: Vec<&'static Row> = bench.settings.rows.clone();
    let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); rows.len()];
    for round in 0..bench.settings.repeat {
        bench.round = round;
        for (i, row) in rows.iter().enumerate() {
            let topic = &bench.topics[&row.backlog];
            println!(
                "round {}/{}: {} ({} lines, {} partitions)...",
                round + 1,
                bench.settings.repeat,
                row.name,
                topic.lines,
                topic.partitions
            );
            match bench.run_row(row).await {
                Ok(mut m) => {
                    m.load = procfs::load_average()
                        .split_whitespace()
                        .next()
                        .and_then(|l| l.parse().ok());
                    println!(
                        "  {:.0} docs/s ({:.0} after the first), {} µs CPU/doc, peak RSS {} MiB; load average {}",
                        m.overall,
                        m.after_first,
                        opt(m.us_per_doc(), 2),
                        mib(m.rss),
                        opt(m.load, 1)
                    );
                    runs[i].push(m);
                }
                Err(e) => println!("  FAILED: {e}"),
            }
        }
    }
    let results: Vec<(&Row, Measured)> = rows
        .iter()
        .zip(&runs)
        .filter(|(_, r)| !r.is_empty())
        .map(|(row, r)| (*row, combine(r)))
        .collect();
    println!();
    if bench.settings.repeat > 1 {
        println!("medians of {} rounds:", bench.settings.repeat);
    }
    print_table(&results);
    if bench.settings.repeat > 1 {
        println!();
        println!("spread (min .. max over the rounds):");
        for (row, r) in rows.iter().zip(&runs).filter(|(_, r)| r.len() > 1) {
            let range = |v: Vec<f64>| {
                if v.is_empty() {
                    return "—".to_string();
                }
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{min:.2} .. {max:.2}")
            };
            println!(
                "  {:<14} docs/s after 1st {}; CPU µs/doc {}; peak RSS MiB {}; sink CPU µs/doc {}",
                row.name,
                range(r.iter().map(|m| m.after_first).collect()),
                range(r.iter().filter_map(Measured::us_per_doc).collect()),
                range(
                    r.iter()
                        .filter_map(|m| m.rss.map(|b| b as f64 / (1 << 20) as f64))
                        .collect()
                ),
                range(r.iter().filter_map(Measured::sink_us_per_doc).collect()),
            );
        }
    }
    print_ratios(&results);
    println!();
    println!(
        "load average at the end {}; rerun: {}",
        procfs::load_average(),
        bench.settings.command()
    );
    let json = bench.settings.log_dir.join("results.json");
    let all: Vec<&Measured> = runs.iter().flatten().collect();
    if let Ok(text) = serde_json::to_string_pretty(&all) {
        let _ = std::fs::write(&json, text);
        println!("every round as JSON: {}", json.display());
    }
    if results.len() < rows.len() {
        std::process::exit(1);
    }
}
