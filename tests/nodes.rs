//! Several Elasticsearch nodes: one osmem-server behind two fault proxies
//! standing for two nodes of one cluster (`elasticsearch.url` lists both).
//! One node refuses connections for 20 s under steady load: the other
//! carries the load, the refusing node is out of rotation
//! (`logingest_es_node_up` 0, `/status` down), comes back within its probe
//! interval, and the delivery is exact. Sniffing (`elasticsearch.sniff`):
//! the second node is learnt from `_nodes/http`, the first dropped.
//!
//! `LOGINGEST_FULL=1` is not needed: the 20 s outage is the CI
//! count (it costs 20 s of wall time, little CPU).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";

/// Lines per second of the steady load.
const RATE: u32 = 100;

/// The outage of the issue.
const OUTAGE: Duration = Duration::from_secs(20);

/// `elasticsearch.node_max_backoff` of the test: the longest a recovered
/// node waits for its probe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

fn node_up(proxy: &FaultProxy) -> String {
    format!("logingest_es_node_up{{node=\"{}\"}}", proxy.url())
}

/// The daemon's `/status` line of `proxy`'s node.
async fn status_of(daemon: &Logingest, proxy: &FaultProxy) -> Value {
    let status: Value = reqwest::get(format!("{}/status", daemon.http))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("status JSON");
    status["elasticsearch_nodes"]
        .as_array()
        .expect("elasticsearch_nodes in /status")
        .iter()
        .find(|n| n["node"] == proxy.url().as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{} not in /status: {status}", proxy.url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refusing_connections_is_taken_out_and_probed_back_in_under_load() {
    let stack = Stack::start();
    let a = FaultProxy::start(&stack.es_url).await;
    let b = FaultProxy::start(&stack.es_url).await;
    let topic = unique("nodes");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        elasticsearch: format!(
            "node_initial_backoff = \"500ms\"\nnode_max_backoff = \"{}s\"",
            MAX_BACKOFF.as_secs()
        ),
        // The list through the environment (LOGINGEST_ES_URL), as a
        // container would set it.
        env: vec![("LOGINGEST_ES_URL", format!("{}, {}", a.url(), b.url()))],
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 2, RATE, stop.clone());

    wait_until(
        "documents indexed through both nodes",
        GROUP_DEADLINE,
        || async { a.bulk_forwarded() > 0 && b.bulk_forwarded() > 0 },
    )
    .await;
    assert_eq!(daemon.metric(&node_up(&a)).await, Some(1.0));
    assert_eq!(daemon.metric(&node_up(&b)).await, Some(1.0));

    // Node a refuses connections for 20 s.
    a.set(Fault::Down);
    let down_at = Instant::now();
    daemon
        .wait_metric(&node_up(&a), 0.0, Duration::from_secs(15))
        .await;
    eprintln!("node a out of rotation after {:?}", down_at.elapsed());
    let a_status = status_of(&daemon, &a).await;
    assert_eq!(a_status["up"], false, "{a_status}");
    assert!(a_status["failures"].as_u64() >= Some(1), "{a_status}");
    // `logingest status` reaches the nodes itself.
    let config = daemon.config.to_str().expect("config path").to_string();
    let urls = format!("{},{}", a.url(), b.url());
    let out = tokio::task::spawn_blocking(move || {
        common::logingest_cli(
            &["status", "--config", &config],
            &[("LOGINGEST_ES_URL", &urls)],
        )
    })
    .await
    .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status failed: {text}");
    let state = |proxy: &FaultProxy| {
        text.lines()
            .find(|l| l.starts_with(&proxy.url()))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(String::from)
    };
    assert_eq!(state(&a).as_deref(), Some("down"), "{text}");
    assert_eq!(state(&b).as_deref(), Some("up"), "{text}");
    let before = (stack.count_or_zero(&topic).await, b.bulk_forwarded());
    let mut samples = 0;
    while down_at.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Out for the whole outage (its probes fail), b always in.
        assert_eq!(daemon.metric(&node_up(&a)).await, Some(0.0));
        assert_eq!(daemon.metric(&node_up(&b)).await, Some(1.0));
        samples += 1;
    }
    let window = down_at.elapsed().as_secs_f64();
    let after = (stack.count_or_zero(&topic).await, b.bulk_forwarded());
    let indexed = after.0 - before.0;
    let produced = f64::from(RATE) * window;
    eprintln!(
        "during the outage ({window:.1} s, {samples} samples): {indexed} documents indexed through node b ({:.0}/s, produced about {:.0}/s), {} bulk requests",
        indexed as f64 / window,
        f64::from(RATE),
        after.1 - before.1
    );
    assert!(
        after.1 > before.1,
        "node b took no request during the outage"
    );
    // Throughput held: far more than a stall, whatever the machine's load
    // (the producer itself may fall behind its rate on a busy box).
    assert!(
        indexed as f64 > produced / 4.0,
        "only {indexed} documents indexed in {window:.1} s of outage"
    );

    // Back: probed in within its backoff (at most MAX_BACKOFF, plus a probe
    // tick), then it takes requests again.
    let forwarded_before = a.bulk_forwarded();
    a.set(Fault::None);
    let back_at = Instant::now();
    daemon
        .wait_metric(&node_up(&a), 1.0, Duration::from_secs(20))
        .await;
    let back_after = back_at.elapsed();
    eprintln!("node a back in rotation {back_after:?} after it listened again (max backoff {MAX_BACKOFF:?})");
    wait_until(
        "node a takes bulk requests again",
        Duration::from_secs(30),
        || async { a.bulk_forwarded() > forwarded_before },
    )
    .await;
    assert_eq!(status_of(&daemon, &a).await["up"], true);

    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    wait_until("everything indexed", Duration::from_secs(60), || async {
        stack.count(&topic).await == Some(ids.len() as u64)
    })
    .await;
    // Refused connections write nothing, and a busy connection finished its
    // response before the proxy closed it: no write was forced twice.
    let delivery = stack.assert_exactly(&topic, &ids).await;
    eprintln!(
        "delivered {} lines, {} redelivered",
        delivery.expected, delivery.redelivered
    );
    let requests_failed = daemon
        .metric("logingest_bulk_requests_total{outcome=\"error\"}")
        .await
        .unwrap_or(0.0);
    eprintln!("bulk requests failed (then retried on node b): {requests_failed}");
}

/// `host:port` of a proxy, as a node publishes its HTTP address.
fn publish_address(proxy: &FaultProxy) -> String {
    proxy.url().trim_start_matches("http://").to_string()
}

/// Sniffing (`elasticsearch.sniff`): configured with node a only, the
/// daemon learns node b from `GET _nodes/http`, sends `_bulk` requests to
/// it, and drops node a (and its series) once the cluster stops listing it.
/// osmem-server is one node and publishes its own address: the two
/// proxies' `Fault::NodesHttp` answer `_nodes/http` for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sniffing_adds_published_nodes_and_removes_vanished_ones() {
    let stack = Stack::start();
    let a = FaultProxy::start(&stack.es_url).await;
    let b = FaultProxy::start(&stack.es_url).await;
    let both = vec![publish_address(&a), publish_address(&b)];
    a.set(Fault::NodesHttp(both.clone()));
    b.set(Fault::NodesHttp(both));
    let topic = unique("sniff");
    stack.create_topic(&topic, 2);
    stack.put(&format!("{PREFIX}{topic}"), "");
    let options = Options {
        elasticsearch: "sniff = true\nsniff_interval = \"1s\"".into(),
        env: vec![("LOGINGEST_ES_URL", a.url())],
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&topic, 2, RATE, stop.clone());

    daemon
        .wait_metric(&node_up(&b), 1.0, Duration::from_secs(30))
        .await;
    assert_eq!(daemon.metric(&node_up(&a)).await, Some(1.0));
    wait_until(
        "sniffed node b takes bulk requests",
        GROUP_DEADLINE,
        || async { b.bulk_forwarded() > 0 },
    )
    .await;
    assert_eq!(status_of(&daemon, &b).await["up"], true);

    // The cluster no longer lists node a: it leaves the pool and /metrics.
    let only_b = vec![publish_address(&b)];
    a.set(Fault::NodesHttp(only_b.clone()));
    b.set(Fault::NodesHttp(only_b));
    wait_until("node a removed", Duration::from_secs(30), || async {
        let text = daemon.metrics().await.unwrap_or_default();
        text.contains(&node_up(&b)) && !text.contains(&node_up(&a))
    })
    .await;
    // Requests in flight to a when it was removed may still finish on it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (a_before, b_before) = (a.bulk_forwarded(), b.bulk_forwarded());
    wait_until(
        "node b takes more bulk requests",
        Duration::from_secs(30),
        || async { b.bulk_forwarded() > b_before + 2 },
    )
    .await;
    assert_eq!(a.bulk_forwarded(), a_before, "removed node a got requests");
    eprintln!(
        "bulk requests: node a {}, node b {}; sniff failures {:?}",
        a.bulk_forwarded(),
        b.bulk_forwarded(),
        daemon.metric("logingest_es_sniff_failures_total").await
    );

    stop.store(true, Ordering::Relaxed);
    let ids = producer.await.expect("producer");
    wait_until("everything indexed", Duration::from_secs(60), || async {
        stack.count(&topic).await == Some(ids.len() as u64)
    })
    .await;
    let delivery = stack.assert_exactly(&topic, &ids).await;
    eprintln!(
        "delivered {} lines, {} redelivered",
        delivery.expected, delivery.redelivered
    );
    assert_eq!(
        daemon.metric("logingest_es_sniff_failures_total").await,
        Some(0.0)
    );
}
