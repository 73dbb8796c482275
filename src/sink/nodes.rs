//! The Elasticsearch nodes requests go to, and each node's health.
//!
//! `elasticsearch.url` names one node or several. Requests are spread over
//! the nodes that are up, round robin. A node that fails a connection (any
//! transport error but a timeout: a slow cluster would otherwise take out
//! every node at once) or answers 502/503/504 is taken out for a growing,
//! jittered backoff (`elasticsearch.node_initial_backoff` doubling up to
//! `node_max_backoff`); once it has passed, the prober sends it `GET /` and
//! any answer but those brings it back in. When every node is out, the one
//! due back first still gets the request: a cluster that is entirely down
//! is retried by the sink's own retry loop, never refused here.
//!
//! [`NodeHealth`] is the pure state machine of one node; [`NodePool`] holds
//! the nodes with their clients and gauges, as a snapshot that sniffing
//! (`super::sniff`) replaces at run time: a request holds the `Arc<Node>`
//! it was given, so a node removed under it finishes undisturbed; [`NodePool::connections`] is the
//! same pool as the `elasticsearch` crate's `ConnectionPool`, for the
//! clients (templates, dead-letter index, CLIs) that do not report outcomes.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{Connection, ConnectionPool};
use elasticsearch::http::{Method, Url};
use elasticsearch::Elasticsearch;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::Backoff;

/// How often the prober looks for nodes due for a probe.
const PROBE_TICK: Duration = Duration::from_millis(250);

/// The longest a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What one request to a node showed about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOutcome {
    /// The node answered with this HTTP status.
    Answered(u16),
    /// No answer: the connection failed or broke.
    Unreachable,
    /// No answer within the request timeout: says nothing about the node
    /// alone (the whole cluster may be slow), so it changes nothing.
    TimedOut,
}

impl NodeOutcome {
    /// Whether the outcome takes the node out: no connection, or a proxy or
    /// node saying it cannot serve (502, 503, 504).
    fn is_failure(self) -> bool {
        match self {
            NodeOutcome::Answered(status) => matches!(status, 502..=504),
            NodeOutcome::Unreachable => true,
            NodeOutcome::TimedOut => false,
        }
    }
}

/// One node's health: up, or down until a time (with the failures in a row
/// that set it), and whether a probe is under way.
#[derive(Debug, Clone)]
pub struct NodeHealth {
    down: Option<Down>,
    backoff: Backoff,
    probing: bool,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    since: Instant,
    until: Instant,
    failures: u32,
}

/// What a report changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing.
    None,
    /// The node went down.
    Down,
    /// The node came back.
    Up,
}

impl NodeHealth {
    /// An up node whose backoff starts at `initial` and grows to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            down: None,
            backoff: Backoff::new(initial, max),
            probing: false,
        }
    }

    /// Whether the node takes requests.
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }

    /// When a down node is due for its probe.
    pub fn down_until(&self) -> Option<Instant> {
        self.down.map(|d| d.until)
    }

    /// Failures in a row (0 when up).
    pub fn failures(&self) -> u32 {
        self.down.map_or(0, |d| d.failures)
    }

    /// Records the outcome of a request or probe at `now`.
    pub fn record(&mut self, outcome: NodeOutcome, now: Instant) -> Transition {
        if outcome == NodeOutcome::TimedOut {
            return Transition::None;
        }
        if !outcome.is_failure() {
            self.backoff.reset();
            return match self.down.take() {
                Some(_) => Transition::Up,
                None => Transition::None,
            };
        }
        let until = now + self.backoff.next_delay();
        match &mut self.down {
            Some(down) => {
                down.until = down.until.max(until);
                down.failures = down.failures.saturating_add(1);
                Transition::None
            }
            None => {
                self.down = Some(Down {
                    since: now,
                    until,
                    failures: 1,
                });
                Transition::Down
            }
        }
    }

    /// Claims the node's probe when it is down and due at `now`.
    fn claim_probe(&mut self, now: Instant) -> bool {
        let due = matches!(self.down, Some(d) if d.until <= now) && !self.probing;
        if due {
            self.probing = true;
        }
        due
    }
}

/// One node: its URL, its client, its health and its gauge.
pub struct Node {
    label: String,
    connection: Connection,
    client: Elasticsearch,
    health: Mutex<NodeHealth>,
    up: Gauge,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("node", &self.label).finish()
    }
}

impl Node {
    /// The node's URL without credentials, as in logs, metrics and status.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The client that sends to this node only.
    pub fn client(&self) -> &Elasticsearch {
        &self.client
    }

    fn health(&self) -> MutexGuard<'_, NodeHealth> {
        // The state is a few plain fields, always left consistent: a panic
        // elsewhere while holding the lock cannot have broken it.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The node label of `url`: no credentials, no trailing slash.
pub fn node_label(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.as_str().trim_end_matches('/').to_string()
}

/// One node's line in `/status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeReport {
    /// The node's URL (no credentials).
    pub node: String,
    /// Whether it takes requests.
    pub up: bool,
    /// Failed requests and probes in a row.
    pub failures: u32,
    /// Seconds since it went down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_for_seconds: Option<u64>,
    /// Seconds until its next probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_in_seconds: Option<u64>,
}

/// The nodes, round robin over the healthy ones. Cheap to clone.
#[derive(Clone)]
pub struct NodePool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// The current nodes: replaced whole (copy on write) when sniffing
    /// changes them, so that readers only clone an `Arc` under the lock.
    nodes: RwLock<Arc<Vec<Arc<Node>>>>,
    cursor: AtomicUsize,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl fmt::Debug for NodePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.nodes().iter()).finish()
    }
}

/// One node as the pool is built from it.
pub struct NodeSpec {
    /// The node's URL.
    pub url: Url,
    /// A client sending to this node only.
    pub client: Elasticsearch,
    /// Its `logingest_es_node_up` series.
    pub up: Gauge,
}

impl NodePool {
    /// A pool of `nodes` (at least one), all up.
    pub fn new(nodes: Vec<NodeSpec>, initial_backoff: Duration, max_backoff: Duration) -> Self {
        let nodes = nodes
            .into_iter()
            .map(|spec| new_node(spec, initial_backoff, max_backoff))
            .collect();
        Self {
            inner: Arc::new(PoolInner {
                nodes: RwLock::new(Arc::new(nodes)),
                cursor: AtomicUsize::new(0),
                initial_backoff,
                max_backoff,
            }),
        }
    }

    /// Adds the nodes of `add` (up) and removes the nodes labelled in
    /// `remove`, unless that would leave the pool empty (then nothing is
    /// removed). Requests in flight on a removed node finish on it.
    /// Returns the labels removed.
    pub fn update(&self, add: Vec<NodeSpec>, remove: &[String]) -> Vec<String> {
        let mut guard = self.inner.nodes.write().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<Arc<Node>> = guard.as_ref().clone();
        let mut removed = Vec::new();
        let kept = nodes
            .iter()
            .filter(|node| !remove.contains(&node.label))
            .count();
        if kept > 0 || !add.is_empty() {
            nodes.retain(|node| {
                let keep = !remove.contains(&node.label);
                if !keep {
                    removed.push(node.label.clone());
                }
                keep
            });
        }
        for spec in add {
            if nodes.iter().any(|node| node.label == node_label(&spec.url)) {
                continue;
            }
            nodes.push(new_node(
                spec,
                self.inner.initial_backoff,
                self.inner.max_backoff,
            ));
        }
        *guard = Arc::new(nodes);
        removed
    }

    /// The node for the next request: the next up node round robin; when
    /// none is up, the one due back first.
    pub fn pick(&self) -> Arc<Node> {
        let nodes = self.nodes();
        let turn = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        // The turn counts over the up nodes only, so that the requests of a
        // node that is out spread evenly over the others (skipping to the
        // next node would give them all to its neighbour). A node changing
        // state between the two passes only costs this request its
        // evenness.
        let up = nodes.iter().filter(|node| node.health().is_up()).count();
        let picked = (up > 0)
            .then(|| {
                nodes
                    .iter()
                    .filter(|node| node.health().is_up())
                    .nth(turn % up)
            })
            .flatten()
            .or_else(|| nodes.iter().min_by_key(|node| node.health().down_until()))
            .cloned()
            .unwrap_or_else(|| unreachable!("a node pool is never empty"));
        picked
    }

    /// Records what a request to `node` showed.
    pub fn record(&self, node: &Node, outcome: NodeOutcome) {
        let (transition, failures, until) = {
            let mut health = node.health();
            let transition = health.record(outcome, Instant::now());
            (transition, health.failures(), health.down_until())
        };
        match transition {
            Transition::None => {}
            Transition::Down => {
                node.up.set(0);
                let retry_in = until.map(|u| u.saturating_duration_since(Instant::now()));
                warn!(node = %node.label, ?outcome, failures, ?retry_in, "elasticsearch node taken out of rotation");
            }
            Transition::Up => {
                node.up.set(1);
                info!(node = %node.label, "elasticsearch node back in rotation");
            }
        }
    }

    /// Each node's health, in configuration order (then the sniffed nodes).
    pub fn report(&self) -> Vec<NodeReport> {
        let now = Instant::now();
        self.nodes()
            .iter()
            .map(|node| {
                let health = node.health();
                let down = health.down;
                NodeReport {
                    node: node.label.clone(),
                    up: down.is_none(),
                    failures: health.failures(),
                    down_for_seconds: down
                        .map(|d| now.saturating_duration_since(d.since).as_secs()),
                    probe_in_seconds: down
                        .map(|d| d.until.saturating_duration_since(now).as_secs()),
                }
            })
            .collect()
    }

    /// Sends `GET /` to every node once (concurrently) and records the
    /// outcomes, so that a pool used without a prober starts with the
    /// nodes that answer.
    pub async fn probe_all(&self) {
        let nodes = self.nodes();
        let probes = nodes.iter().map(|node| async move {
            let outcome = probe(node).await;
            self.record(node, outcome);
        });
        futures::future::join_all(probes).await;
    }

    /// Probes down nodes whose backoff has passed, until `cancel`.
    pub async fn run_prober(self, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(PROBE_TICK) => {}
            }
            let nodes = self.nodes();
            if nodes.len() < 2 {
                // One node: every request is its probe (it is always
                // picked). Sniffing may add nodes later.
                continue;
            }
            let now = Instant::now();
            for node in nodes.iter() {
                if !node.health().claim_probe(now) {
                    continue;
                }
                let outcome = tokio::select! {
                    _ = cancel.cancelled() => return,
                    outcome = probe(node) => outcome,
                };
                node.health().probing = false;
                self.record(node, outcome);
            }
        }
    }

    /// The current nodes, in configuration order (then the sniffed ones).
    pub fn nodes(&self) -> Arc<Vec<Arc<Node>>> {
        self.inner
            .nodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pool as the `elasticsearch` crate's connection pool.
    pub fn connections(&self) -> PoolConnections {
        PoolConnections { pool: self.clone() }
    }
}

/// A node of the pool, up, from its spec.
fn new_node(spec: NodeSpec, initial_backoff: Duration, max_backoff: Duration) -> Arc<Node> {
    spec.up.set(1);
    Arc::new(Node {
        label: node_label(&spec.url),
        connection: Connection::new(spec.url),
        client: spec.client,
        health: Mutex::new(NodeHealth::new(initial_backoff, max_backoff)),
        up: spec.up,
    })
}

/// `GET /` on one node.
async fn probe(node: &Node) -> NodeOutcome {
    let request = node.client.transport().send(
        Method::Get,
        "/",
        HeaderMap::new(),
        None::<&()>,
        None::<&[u8]>,
        Some(PROBE_TIMEOUT),
    );
    match request.await {
        Ok(response) => NodeOutcome::Answered(response.status_code().as_u16()),
        Err(e) => outcome_of_error(&e),
    }
}

/// What a transport error says about the node.
pub fn outcome_of_error(error: &elasticsearch::Error) -> NodeOutcome {
    if error.is_timeout() {
        NodeOutcome::TimedOut
    } else {
        NodeOutcome::Unreachable
    }
}

/// [`NodePool`] as a `ConnectionPool`: each request goes to
/// [`NodePool::pick`]'s node. Its users do not report outcomes; they follow
/// the health the sink's requests and the prober establish.
#[derive(Clone, Debug)]
pub struct PoolConnections {
    pool: NodePool,
}

impl ConnectionPool for PoolConnections {
    fn next(&self) -> Connection {
        self.pool.pick().connection.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(8);

    fn pool(n: usize) -> NodePool {
        let specs = (0..n)
            .map(|i| {
                let url = Url::parse(&format!("http://es{i}:9200")).unwrap();
                let transport =
                    elasticsearch::http::transport::Transport::single_node(url.as_str()).unwrap();
                NodeSpec {
                    url,
                    client: Elasticsearch::new(transport),
                    up: Gauge::default(),
                }
            })
            .collect();
        NodePool::new(specs, INITIAL, MAX)
    }

    fn picks(pool: &NodePool, n: usize) -> Vec<String> {
        (0..n).map(|_| pool.pick().label().to_string()).collect()
    }

    #[test]
    fn round_robin_skips_down_nodes() {
        let pool = pool(3);
        assert_eq!(
            picks(&pool, 3),
            ["http://es0:9200", "http://es1:9200", "http://es2:9200"]
        );
        let es1 = pool.nodes()[1].clone();
        pool.record(&es1, NodeOutcome::Unreachable);
        assert_eq!(es1.up.get(), 0);
        let after = picks(&pool, 6);
        assert!(!after.contains(&"http://es1:9200".to_string()), "{after:?}");
        // Evenly over the two left.
        assert_eq!(after.iter().filter(|n| *n == "http://es0:9200").count(), 3);
        assert_eq!(after.iter().filter(|n| *n == "http://es2:9200").count(), 3);
        pool.record(&es1, NodeOutcome::Answered(200));
        assert_eq!(es1.up.get(), 1);
        assert!(picks(&pool, 3).contains(&"http://es1:9200".to_string()));
    }

    #[test]
    fn only_connection_failures_and_502_503_504_take_a_node_out() {
        let now = Instant::now();
        for (outcome, down) in [
            (NodeOutcome::Unreachable, true),
            (NodeOutcome::Answered(502), true),
            (NodeOutcome::Answered(503), true),
            (NodeOutcome::Answered(504), true),
            (NodeOutcome::Answered(500), false),
            (NodeOutcome::Answered(429), false),
            (NodeOutcome::Answered(401), false),
            (NodeOutcome::Answered(200), false),
            (NodeOutcome::TimedOut, false),
        ] {
            let mut health = NodeHealth::new(INITIAL, MAX);
            health.record(outcome, now);
            assert_eq!(!health.is_up(), down, "{outcome:?}");
        }
    }

    #[test]
    fn backoff_grows_up_to_its_cap_and_resets_on_success() {
        let now = Instant::now();
        let mut health = NodeHealth::new(INITIAL, MAX);
        assert_eq!(
            health.record(NodeOutcome::Unreachable, now),
            Transition::Down
        );
        let mut ceiling = INITIAL;
        let mut last = health.down_until().unwrap() - now;
        assert!(last <= ceiling && last >= ceiling / 2, "{last:?}");
        for _ in 0..6 {
            // A failed probe at the end of the backoff: the next is longer.
            let at = health.down_until().unwrap();
            assert!(health.claim_probe(at));
            assert!(!health.claim_probe(at), "one probe at a time");
            health.probing = false;
            assert_eq!(
                health.record(NodeOutcome::Unreachable, at),
                Transition::None
            );
            ceiling = (ceiling * 2).min(MAX);
            let delay = health.down_until().unwrap() - at;
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "{delay:?} vs {ceiling:?}"
            );
            last = delay;
        }
        assert!(last >= MAX / 2);
        assert_eq!(health.failures(), 7);
        let at = health.down_until().unwrap();
        assert_eq!(
            health.record(NodeOutcome::Answered(200), at),
            Transition::Up
        );
        assert!(health.is_up());
        health.record(NodeOutcome::Answered(503), at);
        assert!(
            health.down_until().unwrap() - at <= INITIAL,
            "backoff reset"
        );
    }

    #[test]
    fn a_down_node_is_not_probed_before_its_backoff_passed() {
        let now = Instant::now();
        let mut health = NodeHealth::new(INITIAL, MAX);
        assert!(!health.claim_probe(now), "an up node needs no probe");
        health.record(NodeOutcome::Unreachable, now);
        assert!(!health.claim_probe(now));
        assert!(health.claim_probe(now + INITIAL));
    }

    #[test]
    fn with_every_node_down_the_one_due_back_first_is_tried() {
        let pool = pool(3);
        for node in pool.nodes().iter() {
            pool.record(node, NodeOutcome::Unreachable);
        }
        let first = pool
            .nodes()
            .iter()
            .min_by_key(|n| n.health().down_until())
            .unwrap()
            .label()
            .to_string();
        assert_eq!(picks(&pool, 4), vec![first; 4]);
        let report = pool.report();
        assert!(report.iter().all(|r| !r.up && r.failures == 1));
    }

    #[test]
    fn labels_carry_no_credentials() {
        let url = Url::parse("https://user:secret@es1:9200/").unwrap();
        assert_eq!(node_label(&url), "https://es1:9200");
    }
}
