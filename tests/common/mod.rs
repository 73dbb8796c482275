//! Test harness: a private local stack (etcd, tansu, osmem-server) on free
//! loopback ports for each test, the logingest binary as a child process,
//! and condition waits with deadlines.
//!
//! Servers are killed when their handle drops, and also when the test
//! process dies (`PR_SET_PDEATHSIG`), so nothing outlives a test.

#![allow(dead_code)]

pub mod proxy;
pub mod tcp_proxy;
pub mod tls_proxy;
pub mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// Deadline for conditions that depend on a consumer-group round (tansu
/// takes about 5 s per round; a test run may hold several).
pub const GROUP_DEADLINE: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The path of a local-stack binary (`.stack/bin/NAME`, or `$ENV`).
pub fn stack_bin(name: &str, env: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let path = repo_root().join(".stack/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-stack.sh (or set {env})",
        path.display()
    );
    path
}

/// A port free at the time of asking, picked at random *below* the
/// kernel's ephemeral range: a port from that range (what binding port 0
/// gives) can be taken by any outgoing connection before the server that
/// was meant to get it binds it (etcd once failed with "address already in
/// use" that way); below it only another test's pick can collide.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12_000 {
        for _ in 0..200 {
            let port = rand::random_range(10_000..ephemeral_low);
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A name unique in this test run.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Spawns a child that dies with the test process, with a clean
/// environment (etcd and tansu read many variables).
fn spawn(cmd: Command, log: &Path) -> Child {
    spawn_with_env(cmd, log, &[])
}

/// [`spawn`] with `env` set in the clean environment.
fn spawn_with_env(mut cmd: Command, log: &Path, env: &[(&str, &str)]) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    // Variables the caller set on `cmd` survive the clean-up.
    let own: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    cmd.env_clear()
        .envs(own)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
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

/// Polls `check` every 100 ms until it returns true; panics naming `what`
/// when `deadline` passes.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_for_port(port: u16, what: &str, child: &mut Child, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before listening:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One server process that can be stopped and started again on the same
/// port (and, for etcd, the same data).
pub struct Server {
    name: &'static str,
    make: Box<dyn Fn() -> Command + Send>,
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `make()` (logging to `log`) and waits until `port` accepts
    /// connections.
    pub fn new(
        name: &'static str,
        port: u16,
        log: PathBuf,
        make: Box<dyn Fn() -> Command + Send>,
    ) -> Self {
        let mut s = Self {
            name,
            make,
            port,
            log,
            child: None,
        };
        s.start();
        s
    }

    /// Starts the server and waits until its port accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let mut child = spawn((self.make)(), &self.log);
        wait_for_port(self.port, self.name, &mut child, &self.log);
        self.child = Some(child);
    }

    /// Kills the server and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd, tansu and osmem-server, private to one test.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub etcd: Server,
    pub kafka: Server,
    pub es: Server,
    pub etcd_url: String,
    pub brokers: String,
    pub es_url: String,
    http: reqwest::Client,
}

impl Stack {
    /// Starts the three servers on free ports.
    pub fn start() -> Self {
        Self::start_advertising(None)
    }

    /// Starts the stack with the broker reached through a [`TcpProxy`]
    /// (which it advertises), so the test can cut the client's link to
    /// Kafka while the broker keeps its data. `stack.brokers` is the proxy.
    pub async fn start_with_kafka_link() -> (Self, tcp_proxy::TcpProxy) {
        let kafka_port = free_port();
        let link = tcp_proxy::TcpProxy::start(&format!("127.0.0.1:{kafka_port}")).await;
        let mut stack = Self::start_advertising(Some((kafka_port, link.port)));
        stack.brokers = format!("127.0.0.1:{}", link.port);
        (stack, link)
    }

    /// Starts the stack with the broker behind a TLS-terminating
    /// [`tls_proxy::TlsTcpProxy`] presenting `acceptor`'s certificate,
    /// which the broker advertises: clients bootstrap on
    /// `proxy.address()` with TLS. `stack.brokers` stays the broker's plain
    /// port, for [`Stack::create_topic`] only (metadata sends clients to
    /// the proxy).
    pub async fn start_with_kafka_tls(
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> (Self, tls_proxy::TlsTcpProxy) {
        let kafka_port = free_port();
        let proxy =
            tls_proxy::TlsTcpProxy::start(&format!("127.0.0.1:{kafka_port}"), acceptor).await;
        let stack = Self::start_advertising(Some((kafka_port, proxy.port)));
        (stack, proxy)
    }

    /// `kafka`: the broker's listening port and the port it advertises.
    fn start_advertising(kafka: Option<(u16, u16)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (etcd_port, peer_port) = (free_port(), free_port());
        let data = dir.path().join("etcd");
        let etcd = Server::new(
            "etcd",
            etcd_port,
            dir.path().join("etcd.log"),
            Box::new(move || {
                let client = format!("http://127.0.0.1:{etcd_port}");
                let peer = format!("http://127.0.0.1:{peer_port}");
                let mut c = Command::new("etcd");
                c.args(["--name", "default", "--data-dir"])
                    .arg(&data)
                    .args([
                        "--listen-client-urls",
                        &client,
                        "--advertise-client-urls",
                        &client,
                    ])
                    .args([
                        "--listen-peer-urls",
                        &peer,
                        "--initial-advertise-peer-urls",
                        &peer,
                    ])
                    .args(["--initial-cluster", &format!("default={peer}")]);
                c
            }),
        );
        let (kafka_port, advertised_port) = kafka.unwrap_or_else(|| {
            let p = free_port();
            (p, p)
        });
        let tansu = stack_bin("tansu", "LOGINGEST_TANSU_BIN");
        let kafka = Server::new(
            "tansu",
            kafka_port,
            dir.path().join("tansu.log"),
            Box::new(move || {
                let url = format!("tcp://127.0.0.1:{kafka_port}");
                let advertised = format!("tcp://127.0.0.1:{advertised_port}");
                let mut c = Command::new(&tansu);
                c.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised,
                ])
                .args(["--storage-engine", "memory://tansu/"]);
                c
            }),
        );
        let es_port = free_port();
        let es = osmem_server(es_port, dir.path());
        let stack = Self {
            etcd_url: format!("http://127.0.0.1:{etcd_port}"),
            brokers: format!("127.0.0.1:{kafka_port}"),
            es_url: format!("http://127.0.0.1:{es_port}"),
            dir,
            etcd,
            kafka,
            es,
            http: reqwest::Client::new(),
        };
        stack.wait_etcd_healthy();
        stack
    }

    fn wait_etcd_healthy(&self) {
        let start = Instant::now();
        loop {
            let out = self.etcdctl(&["endpoint", "health"]);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd not healthy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs etcdctl against this stack's etcd.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.etcd_url])
            .args(args)
            .output()
            .expect("etcdctl")
    }

    /// `etcdctl put KEY VALUE`, asserting success.
    pub fn put(&self, key: &str, value: &str) {
        let out = self.etcdctl(&["put", key, value]);
        assert!(
            out.status.success(),
            "etcdctl put {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `etcdctl del KEY`, asserting success.
    pub fn del(&self, key: &str) {
        let out = self.etcdctl(&["del", key]);
        assert!(out.status.success(), "etcdctl del {key}");
    }

    /// Creates a topic with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(stack_bin("tansu", "LOGINGEST_TANSU_BIN"))
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.brokers),
            ])
            .args(["--partitions", &partitions.to_string(), topic])
            .output()
            .expect("tansu topic create");
        assert!(
            out.status.success(),
            "create topic {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Produces `values` (with optional keys) round robin over `partitions`
    /// and returns the `_id` of each record, from the delivery reports.
    pub async fn produce(
        &self,
        topic: &str,
        partitions: i32,
        records: &[(Option<Vec<u8>>, Vec<u8>)],
    ) -> Vec<String> {
        produce_to(&self.brokers, topic, partitions, records).await
    }

    /// Produces `count` plain lines; returns their `_id`s.
    pub async fn produce_lines(&self, topic: &str, partitions: i32, count: usize) -> Vec<String> {
        let records: Vec<_> = (0..count)
            .map(|i| (None, format!("{topic} line {i}").into_bytes()))
            .collect();
        self.produce(topic, partitions, &records).await
    }

    /// Produces lines to `topic` at about `per_second` until `stop` is set;
    /// the task returns the `_id`s of everything delivered.
    pub fn produce_steadily(
        &self,
        topic: &str,
        partitions: i32,
        per_second: u32,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let producer = steady_producer(&self.brokers);
        let topic = topic.to_string();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            let mut i = 0i32;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let value = format!("{topic} steady {i}");
                let record = FutureRecord::<(), _>::to(&topic)
                    .payload(&value)
                    .partition(i % partitions);
                let delivery = producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
                ids.push(format!(
                    "{topic}-{}-{}",
                    delivery.partition, delivery.offset
                ));
                i += 1;
            }
            ids
        })
    }

    /// Offsets committed by `group` for the partitions of `topic` (`None`:
    /// nothing committed). Panics when the broker does not answer or
    /// reports an error for a partition, so that "nothing committed" is an
    /// answer, not a failure to ask.
    pub fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
    ) -> BTreeMap<i32, Option<i64>> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        let offsets: BTreeMap<i32, Option<i64>> = committed
            .elements()
            .iter()
            .map(|e| {
                if let Err(err) = e.error() {
                    panic!(
                        "committed offset of {group} {}/{}: {err}",
                        e.topic(),
                        e.partition()
                    );
                }
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    Offset::Invalid => None,
                    other => panic!(
                        "committed offset of {group} {}/{}: {other:?}",
                        e.topic(),
                        e.partition()
                    ),
                };
                (e.partition(), offset)
            })
            .collect();
        assert_eq!(
            offsets.len(),
            partitions as usize,
            "committed offsets of {group} on {topic}: {offsets:?}"
        );
        offsets
    }

    /// Waits until `group` has committed every record of `ids` (ids of
    /// `topic`, `topic-partition-offset`): the committed offset of each
    /// partition is one past its highest offset among them. Only then has
    /// the last owner read (and written again) whatever it was going to.
    pub async fn wait_committed_through(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
        ids: &[String],
        deadline: Duration,
    ) {
        let mut end: BTreeMap<i32, Option<i64>> = (0..partitions).map(|p| (p, None)).collect();
        for id in ids {
            let rest = id
                .strip_prefix(topic)
                .and_then(|r| r.strip_prefix('-'))
                .unwrap_or_else(|| panic!("{id} is not an id of {topic}"));
            let (p, o) = rest.split_once('-').expect("partition-offset");
            let (p, o): (i32, i64) = (p.parse().expect("partition"), o.parse().expect("offset"));
            let e = end
                .get_mut(&p)
                .unwrap_or_else(|| panic!("{id}: partition {p}"));
            *e = Some(e.map_or(o + 1, |e| e.max(o + 1)));
        }
        let mut last = BTreeMap::new();
        let start = Instant::now();
        loop {
            let committed = self.committed(group, topic, partitions);
            if end.iter().all(|(p, e)| e.is_none() || committed[p] == *e) {
                return;
            }
            assert!(
                start.elapsed() < deadline,
                "{group} did not commit {topic} through {end:?} within {deadline:?}: {last:?}"
            );
            last = committed;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// POST `{index}/_refresh`; false when the index does not exist (404),
    /// panics on any other failure.
    async fn refresh(&self, index: &str) -> bool {
        let response = self
            .http
            .post(format!("{}/{index}/_refresh", self.es_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("refresh {index}: {e}"));
        match response.status().as_u16() {
            200..=299 => true,
            404 => false,
            status => panic!(
                "refresh {index}: HTTP {status}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }

    /// Number of documents in `index`: `None` when Elasticsearch answers
    /// that the index does not exist. Panics when it does not answer or
    /// answers anything else, so that a 0 is a real 0.
    pub async fn count(&self, index: &str) -> Option<u64> {
        if !self.refresh(index).await {
            return None;
        }
        let response = self
            .http
            .get(format!("{}/{index}/_count", self.es_url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("_count of {index}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("_count of {index}: HTTP {status}, not JSON: {e}"));
        match status {
            200 => Some(
                body["count"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("_count of {index}: no count in {body}")),
            ),
            404 if body["error"]["type"] == "index_not_found_exception" => None,
            _ => panic!("_count of {index}: HTTP {status}: {body}"),
        }
    }

    /// [`Stack::count`] with a missing index as 0: for waits on growth
    /// (`>= n`), never for asserting that nothing was indexed (use
    /// [`Stack::assert_nothing_indexed`]).
    pub async fn count_or_zero(&self, index: &str) -> u64 {
        self.count(index).await.unwrap_or(0)
    }

    /// Asserts that Elasticsearch answered that `index` holds no document
    /// (it does not exist, or it is empty).
    pub async fn assert_nothing_indexed(&self, index: &str, what: &str) {
        let count = self.count(index).await;
        assert!(
            matches!(count, None | Some(0)),
            "{what}: {index} holds {count:?} documents"
        );
    }

    /// Documents of `index` whose `kafka.partition` is a key of `from` and
    /// whose `kafka.offset` is at least its value (`None`: every offset):
    /// what the next owner of those partitions writes again when it starts
    /// from `from` (the committed offsets).
    pub async fn indexed_from(&self, index: &str, from: &BTreeMap<i32, Option<i64>>) -> u64 {
        if !self.refresh(index).await {
            return 0;
        }
        let mut total = 0;
        for (partition, offset) in from {
            let mut filter = vec![serde_json::json!({"term": {"kafka.partition": partition}})];
            if let Some(offset) = offset {
                filter.push(serde_json::json!({"range": {"kafka.offset": {"gte": offset}}}));
            }
            let response = self
                .http
                .post(format!("{}/{index}/_count", self.es_url))
                .json(&serde_json::json!({"query": {"bool": {"filter": filter}}}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("_count of {index}: {e}"));
            let status = response.status();
            let body: Value = response.json().await.expect("_count reply");
            assert!(status.is_success(), "_count of {index}: {status}: {body}");
            total += body["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("_count of {index}: no count in {body}"));
        }
        total
    }

    /// [`Stack::indexed_from`] once it holds still over half a second: a
    /// process killed a moment ago may have a `_bulk` request still landing.
    /// Only for partitions nobody writes to any more.
    pub async fn settled_indexed_from(
        &self,
        index: &str,
        from: &BTreeMap<i32, Option<i64>>,
    ) -> u64 {
        let mut last = self.indexed_from(index, from).await;
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.indexed_from(index, from).await;
            if now == last {
                return now;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{index}: documents after {from:?} keep changing ({last} → {now})"
            );
            last = now;
        }
    }

    /// The documents that will be written again after a kill -9 of the
    /// only consumer of `topic` in `group`: those of `index` at or after
    /// the group's committed offsets (acknowledged, not committed yet).
    /// Call it once the process is reaped and before the next one starts;
    /// it waits until the committed offsets and the count hold still over
    /// half a second (the dead process's last commit or `_bulk` request may
    /// still be landing).
    pub async fn written_after_commit(
        &self,
        group: &str,
        topic: &str,
        partitions: i32,
        index: &str,
    ) -> u64 {
        let measure = || async {
            let committed = self.committed(group, topic, partitions);
            let n = self.indexed_from(index, &committed).await;
            (committed, n)
        };
        let mut last = measure().await;
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = measure().await;
            if now == last {
                return now.1;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{topic}: commits or documents after them keep changing ({last:?} → {now:?})"
            );
            last = now;
        }
    }

    /// `_version` of every document of `index` (an absent index has none),
    /// read in pages sorted by `kafka.partition` and `kafka.offset`.
    pub async fn all_versions(&self, index: &str) -> BTreeMap<String, u64> {
        let mut versions = BTreeMap::new();
        // Refreshes: everything counted now is visible to the scan.
        let Some(before) = self.count(index).await else {
            return versions;
        };
        let mut after: Option<Value> = None;
        loop {
            let mut query = serde_json::json!({
                "size": 5000,
                "version": true,
                "_source": false,
                "sort": [{"kafka.partition": "asc"}, {"kafka.offset": "asc"}],
                "query": {"match_all": {}}
            });
            if let Some(after) = &after {
                query["search_after"] = after.clone();
            }
            let response = self
                .http
                .post(format!("{}/{index}/_search", self.es_url))
                .json(&query)
                .send()
                .await
                .unwrap_or_else(|e| panic!("search {index}: {e}"));
            let status = response.status();
            let body: Value = response.json().await.expect("search reply");
            assert!(status.is_success(), "search {index}: {status}: {body}");
            let hits = body["hits"]["hits"]
                .as_array()
                .unwrap_or_else(|| panic!("search {index}: no hits in {body}"));
            for hit in hits {
                let id = hit["_id"].as_str().expect("_id").to_string();
                let version = hit["_version"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("search {index}: no _version in {hit}"));
                assert!(versions.insert(id.clone(), version).is_none(), "{id} twice");
            }
            match hits.last() {
                Some(last) if hits.len() == 5000 => after = Some(last["sort"].clone()),
                _ => break,
            }
        }
        // More when documents arrive during the scan.
        assert!(
            versions.len() as u64 >= before,
            "{index}: scanned {} of {before} documents",
            versions.len()
        );
        versions
    }

    /// Redelivered writes so far in `index`: `sum(_version - 1)` over all
    /// its documents.
    pub async fn redelivered_so_far(&self, index: &str) -> u64 {
        self.all_versions(index).await.values().map(|v| v - 1).sum()
    }

    /// Every document of `index` (up to 10 000), by `_id`. Panics when the
    /// index does not exist or holds more.
    pub async fn documents(&self, index: &str) -> BTreeMap<String, Value> {
        assert!(
            self.refresh(index).await,
            "documents of {index}: no such index"
        );
        let response = self
            .http
            .post(format!("{}/{index}/_search", self.es_url))
            .json(&serde_json::json!({"size": 10000, "query": {"match_all": {}}}))
            .send()
            .await
            .expect("search");
        let status = response.status();
        let body: Value = response.json().await.expect("search reply");
        assert!(status.is_success(), "search {index}: {status}: {body}");
        let total = body["hits"]["total"]["value"]
            .as_u64()
            .unwrap_or_else(|| panic!("search {index}: no hits.total in {body}"));
        assert!(
            total <= 10_000,
            "{index} holds {total} documents, over 10 000"
        );
        let hits = body["hits"]["hits"]
            .as_array()
            .unwrap_or_else(|| panic!("search {index}: no hits in {body}"));
        assert_eq!(hits.len() as u64, total, "search {index}: hits of {total}");
        let mut docs = BTreeMap::new();
        for hit in hits {
            let id = hit["_id"].as_str().expect("_id").to_string();
            assert!(
                docs.insert(id.clone(), hit["_source"].clone()).is_none(),
                "duplicate _id {id}"
            );
        }
        docs
    }

    /// `_version` of each of `ids` found in `index` (`_mget` with
    /// `_source=false`, 5 000 ids a request). Elasticsearch, like
    /// osmem-server, bumps `_version` each time the same `_id` is written
    /// again. Panics unless every id has an answer (found or not found);
    /// a missing index answers "not found" for all.
    pub async fn versions(&self, index: &str, ids: &[String]) -> BTreeMap<String, u64> {
        let mut versions = BTreeMap::new();
        for chunk in ids.chunks(5000) {
            let response = self
                .http
                .post(format!("{}/{index}/_mget?_source=false", self.es_url))
                .json(&serde_json::json!({ "ids": chunk }))
                .send()
                .await
                .unwrap_or_else(|e| panic!("_mget {index}: {e}"));
            let status = response.status();
            let body: Value = response.json().await.expect("_mget reply");
            assert!(status.is_success(), "_mget {index}: {status}: {body}");
            let docs = body["docs"]
                .as_array()
                .unwrap_or_else(|| panic!("_mget {index}: no docs in {body}"));
            assert_eq!(docs.len(), chunk.len(), "_mget {index}: answers");
            for (doc, id) in docs.iter().zip(chunk) {
                assert_eq!(doc["_id"].as_str(), Some(id.as_str()), "_mget {index}");
                let not_found = doc["error"]["type"] == "index_not_found_exception";
                assert!(
                    doc.get("error").is_none() || not_found,
                    "_mget {index}: {doc}"
                );
                if doc["found"] == true {
                    let version = doc["_version"]
                        .as_u64()
                        .unwrap_or_else(|| panic!("_mget {index}: no _version in {doc}"));
                    versions.insert(id.clone(), version);
                } else {
                    assert!(doc["found"] == false || not_found, "_mget {index}: {doc}");
                }
            }
        }
        versions
    }

    /// How `ids` arrived in `index`: missing ones, redelivered writes
    /// (`sum(_version - 1)`) and documents that are not among them.
    pub async fn delivery(&self, index: &str, ids: &[String]) -> Delivery {
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "expected ids are not unique");
        let count = self.count(index).await.unwrap_or(0);
        let versions = self.versions(index, ids).await;
        let mut missing_examples: Vec<String> = ids
            .iter()
            .filter(|id| !versions.contains_key(*id))
            .take(20)
            .cloned()
            .collect();
        missing_examples.sort();
        Delivery {
            expected: ids.len(),
            missing: ids.len() - versions.len(),
            redelivered: versions.values().map(|v| v - 1).sum(),
            extra: count.saturating_sub(versions.len() as u64),
            missing_examples,
        }
    }

    /// Asserts that `index` holds exactly the documents `ids`, each written
    /// at most `max_redelivered` times more than once in all, and prints
    /// `redelivered: N of M in INDEX`.
    pub async fn assert_delivered(
        &self,
        index: &str,
        ids: &[String],
        max_redelivered: u64,
    ) -> Delivery {
        let d = self.delivery(index, ids).await;
        eprintln!(
            "redelivered: {} of {} in {index} (allowed {max_redelivered}; missing {}, extra {})",
            d.redelivered, d.expected, d.missing, d.extra
        );
        assert!(
            d.missing == 0,
            "{index} lacks {} of {} expected documents, e.g. {:?}",
            d.missing,
            d.expected,
            d.missing_examples
        );
        assert_eq!(d.extra, 0, "{index} holds documents not expected");
        assert!(
            d.redelivered <= max_redelivered,
            "{index}: {} redelivered writes of {} documents, allowed {max_redelivered}",
            d.redelivered,
            d.expected
        );
        d
    }

    /// Asserts that `index` holds exactly the documents `ids`, each written
    /// once (no redelivery).
    pub async fn assert_exactly(&self, index: &str, ids: &[String]) -> Delivery {
        self.assert_delivered(index, ids, 0).await
    }
}

/// What [`Stack::delivery`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Ids looked up.
    pub expected: usize,
    /// Ids not in the index.
    pub missing: usize,
    /// Writes of an id beyond its first: `sum(_version - 1)`.
    pub redelivered: u64,
    /// Documents of the index that are not among the ids.
    pub extra: u64,
    /// Up to 20 of the missing ids.
    pub missing_examples: Vec<String>,
}

/// A producer for steady load: no linger, patient with broker outages.
pub fn steady_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer")
}

/// Produces `records` round robin over `partitions` and returns the `_id`
/// of each, in order, from the delivery reports.
pub async fn produce_to(
    brokers: &str,
    topic: &str,
    partitions: i32,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
) -> Vec<String> {
    produce_to_with(brokers, topic, partitions, records, &[]).await
}

/// [`produce_to`] with extra producer properties.
pub async fn produce_to_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    records: &[(Option<Vec<u8>>, Vec<u8>)],
    properties: &[(&str, &str)],
) -> Vec<String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let mut ids = Vec::with_capacity(records.len());
    for (chunk_index, chunk) in records.chunks(1000).enumerate() {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for (i, (key, value)) in chunk.iter().enumerate() {
            let n = (chunk_index * 1000 + i) as i32;
            let mut record = FutureRecord::to(topic)
                .payload(value)
                .partition(n % partitions);
            if let Some(key) = key {
                record = record.key(key);
            }
            deliveries.push(producer.send(record, Duration::from_secs(30)));
        }
        for delivery in futures::future::join_all(deliveries).await {
            let delivery = delivery.unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
            ids.push(format!(
                "{topic}-{}-{}",
                delivery.partition, delivery.offset
            ));
        }
    }
    ids
}

/// Options of a logingest instance under test.
#[derive(Clone)]
pub struct Options {
    pub group: String,
    /// etcd endpoint to use instead of the stack's (e.g. a TcpProxy).
    pub etcd_url: Option<String>,
    /// Elasticsearch URL to use instead of the stack's (e.g. a FaultProxy).
    pub es_url: Option<String>,
    /// Extra lines of the `[batch]` section.
    pub batch: String,
    /// Extra lines of the `[elasticsearch]` section.
    pub elasticsearch: String,
    /// Extra TOML appended to the generated config.
    pub extra: String,
    pub linger: &'static str,
    /// `batch.idle_linger` (the daemon's default when `None`).
    pub idle_linger: Option<&'static str>,
    /// Log one JSON object per line (`--log-format json`, the flag of
    /// `LOGINGEST_LOG_FORMAT=json`) instead of text.
    pub json_logs: bool,
    /// Extra TOML lines inside `[kafka.options]` (librdkafka properties).
    pub kafka_options: String,
    /// Extra environment variables of the process (e.g. test faults).
    pub env: Vec<(&'static str, String)>,
    /// Extra lines of the `[http]` section.
    pub http: String,
    /// `kafka.commit_interval`.
    pub commit_interval: &'static str,
    /// Extra lines of the `[kafka]` section.
    pub kafka: String,
    /// `session.timeout.ms` (milliseconds).
    pub session_timeout_ms: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            group: unique("group"),
            etcd_url: None,
            es_url: None,
            batch: String::new(),
            elasticsearch: String::new(),
            extra: String::new(),
            linger: "50ms",
            idle_linger: None,
            json_logs: false,
            kafka_options: String::new(),
            env: Vec::new(),
            http: String::new(),
            commit_interval: "200ms",
            kafka: String::new(),
            session_timeout_ms: 6000,
        }
    }
}

/// A running `logingest run` process.
pub struct Logingest {
    child: Option<Child>,
    pub http: String,
    pub log: PathBuf,
    pub config: PathBuf,
    client: reqwest::Client,
}

impl Logingest {
    /// `logingest verify TOPIC --json` with this daemon's config (its
    /// group, indices and dead letters): exit code and report.
    pub fn verify(&self, topic: &str) -> (i32, logingest::verify::Report) {
        verify_report(&self.config, topic, &[])
    }

    /// Asserts that `logingest verify` proves `topic` complete up to the
    /// committed offsets: exit 0, `checked` offsets, `dead_lettered` of them
    /// in the dead letters and every other one indexed, none missing, none
    /// written twice.
    pub fn assert_verified(
        &self,
        topic: &str,
        checked: u64,
        dead_lettered: u64,
    ) -> logingest::verify::Report {
        let (code, report) = self.verify(topic);
        let t = &report.totals;
        eprintln!(
            "verify {topic}: exit {code}, {} checked, {} indexed, {} missing, {} dead-lettered, {} redelivered writes",
            t.checked, t.indexed, t.missing, t.dead_lettered, t.redelivered_writes
        );
        assert_eq!(code, 0, "verify {topic}: {report:#?}");
        assert!(report.complete, "{report:#?}");
        assert_eq!(
            (t.checked, t.indexed, t.missing, t.dead_lettered, t.redelivered_writes),
            (checked, checked - dead_lettered, 0, dead_lettered, 0),
            "verify {topic} (checked, indexed, missing, dead-lettered, redelivered writes): {report:#?}"
        );
        report
    }

    /// Writes a config for `stack` and starts the binary.
    pub fn start(stack: &Stack, options: &Options) -> Self {
        let port = free_port();
        let name = unique("logingest");
        let config = stack.dir.path().join(format!("{name}.toml"));
        let text = format!(
            r#"
[etcd]
endpoints = ["{etcd}"]

[kafka]
brokers = ["{brokers}"]
group_id = "{group}"
commit_interval = "{commit_interval}"
drain_timeout = "4s"
{kafka}

[kafka.options]
"session.timeout.ms" = "{session_timeout_ms}"
"heartbeat.interval.ms" = "500"
{kafka_options}

[elasticsearch]
url = "{es}"
{elasticsearch}

[batch]
linger = "{linger}"
{idle_linger}
{batch}

[retry]
initial_backoff = "50ms"
max_backoff = "1s"

[http]
listen = "127.0.0.1:{port}"
{http}

[shutdown]
timeout = "15s"
{extra}
"#,
            etcd = options.etcd_url.as_ref().unwrap_or(&stack.etcd_url),
            brokers = stack.brokers,
            group = options.group,
            es = options.es_url.as_ref().unwrap_or(&stack.es_url),
            batch = options.batch,
            elasticsearch = options.elasticsearch,
            linger = options.linger,
            idle_linger = options
                .idle_linger
                .map(|l| format!("idle_linger = \"{l}\""))
                .unwrap_or_default(),
            extra = options.extra,
            kafka_options = options.kafka_options,
            http = options.http,
            commit_interval = options.commit_interval,
            kafka = options.kafka,
            session_timeout_ms = options.session_timeout_ms,
        );
        std::fs::write(&config, text).expect("write config");
        Self::launch(stack, &config, port, &name, options)
    }

    /// Starts the binary with an existing config file whose HTTP port is
    /// `port`.
    pub fn start_with_config(stack: &Stack, config: &Path, port: u16, name: &str) -> Self {
        Self::launch(stack, config, port, name, &Options::default())
    }

    /// [`Logingest::start_with_config`] with `env` (e.g. `RUST_LOG`,
    /// secrets) in the child's otherwise clean environment.
    pub fn start_with_env(
        stack: &Stack,
        config: &Path,
        port: u16,
        name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let log = stack.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
        cmd.args(["run", "--config"]).arg(config);
        let child = spawn_with_env(cmd, &log, env);
        Self {
            child: Some(child),
            http: format!("http://127.0.0.1:{port}"),
            log,
            config: config.to_path_buf(),
            client: reqwest::Client::new(),
        }
    }

    fn launch(stack: &Stack, config: &Path, port: u16, name: &str, options: &Options) -> Self {
        let log = stack.dir.path().join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
        cmd.args(["run", "--config"]).arg(config);
        cmd.env("RUST_LOG", "info,logingest=debug");
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        if options.json_logs {
            // The flag behind `LOGINGEST_LOG_FORMAT=json`.
            cmd.args(["--log-format", "json"]);
        }
        let child = spawn(cmd, &log);
        Self {
            child: Some(child),
            http: format!("http://127.0.0.1:{port}"),
            log,
            config: config.to_path_buf(),
            client: reqwest::Client::new(),
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `/metrics` text, `None` while it does not answer.
    pub async fn metrics(&self) -> Option<String> {
        let response = self
            .client
            .get(format!("{}/metrics", self.http))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.text().await.ok()
    }

    /// One scrape of `/metrics`; panics when the endpoint does not answer.
    pub async fn scrape(&self) -> Scrape {
        let text = self
            .metrics()
            .await
            .unwrap_or_else(|| panic!("{}/metrics does not answer", self.http));
        Scrape { text }
    }

    /// The value of one series, e.g.
    /// `logingest_documents_indexed_total{topic="x"}`; `None` when the
    /// endpoint does not answer or the series does not exist (yet).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await?, series)
    }

    /// Waits until `series` exists and equals `value`.
    pub async fn wait_metric(&self, series: &str, value: f64, deadline: Duration) {
        wait_until(&format!("{series} == {value}"), deadline, || async {
            self.metric(series).await == Some(value)
        })
        .await;
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: plain syscall on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(deadline).await
    }

    /// SIGKILL, then reaps.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            let child = self.child.as_mut().expect("process already reaped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if start.elapsed() > deadline {
                panic!(
                    "logingest did not exit within {deadline:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resident memory of the process, from /proc (0 when gone).
    pub fn rss_bytes(&self) -> u64 {
        let Some(child) = &self.child else { return 0 };
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Logingest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- logingest log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
        self.kill();
    }
}

/// Reads one series from Prometheus/OpenMetrics text; `None` when absent.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// One answer of `/metrics`.
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// The value of `series`, `None` when it does not exist.
    pub fn get(&self, series: &str) -> Option<f64> {
        metric_value(&self.text, series)
    }

    /// The value of `series`, which must exist.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// A counter that may never have been used: its value, or 0 when the
    /// series does not exist (prometheus-client exports a labelled series,
    /// and a family, only after its first use). So that this cannot read a
    /// wrong name or label as 0, `sibling`, a series with the same labels,
    /// must exist in the same scrape, and the family of `series` must be one
    /// that logingest registers (named in `src/metrics.rs`).
    pub fn counter(&self, series: &str, sibling: &str) -> f64 {
        assert!(
            self.get(sibling).is_some(),
            "{sibling} does not exist, so {series} proves nothing:\n{}",
            self.text
        );
        let labels = |s: &str| s.find('{').map(|i| s[i..].to_string());
        assert_eq!(
            labels(series),
            labels(sibling),
            "{series} and {sibling} must have the same labels"
        );
        let name = series.split('{').next().unwrap_or(series);
        let family = name
            .strip_prefix("logingest_")
            .unwrap_or_else(|| panic!("{series}: not a logingest metric"));
        let family = family.strip_suffix("_total").unwrap_or(family);
        let source = std::fs::read_to_string(repo_root().join("src/metrics.rs"))
            .expect("read src/metrics.rs");
        assert!(
            source.contains(&format!("\"{family}\"")),
            "{series}: logingest registers no metric \"{family}\" (src/metrics.rs)"
        );
        self.get(series).unwrap_or(0.0)
    }
}

/// Runs a command-line invocation of the binary and returns its output.
pub fn logingest_cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run logingest")
}

/// Runs `logingest verify TOPIC -c CONFIG --json` (plus `extra`): its exit
/// code and its report. Panics when it prints no report.
pub fn verify_report(
    config: &Path,
    topic: &str,
    extra: &[&str],
) -> (i32, logingest::verify::Report) {
    let config = config.to_string_lossy().into_owned();
    let mut args = vec!["verify", topic, "-c", &config, "--json"];
    args.extend_from_slice(extra);
    let output = logingest_cli(&args, &[]);
    let code = output.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no report ({e}), exit {code}:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report)
}

/// osmem-server alone, on a free port (for tests that need no etcd or
/// Kafka).
pub struct Es {
    pub server: Server,
    pub url: String,
    /// Holds the server log; dropped after the server.
    pub dir: tempfile::TempDir,
}

/// osmem-server on `port`, logging into `dir`.
fn osmem_server(port: u16, dir: &Path) -> Server {
    let osmem = stack_bin("osmem-server", "LOGINGEST_OSMEM_BIN");
    Server::new(
        "osmem-server",
        port,
        dir.join("osmem.log"),
        Box::new(move || {
            let mut c = Command::new(&osmem);
            c.args(["-addr", &format!("127.0.0.1:{port}"), "-no-stdin-watch"]);
            c
        }),
    )
}

/// Starts osmem-server alone, like `Stack::start` does.
pub fn start_es() -> Es {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = osmem_server(port, dir.path());
    Es {
        server,
        url: format!("http://127.0.0.1:{port}"),
        dir,
    }
}
