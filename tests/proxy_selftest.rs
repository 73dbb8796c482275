//! Self-test of the fault-injecting proxy (tests/common/proxy.rs) against a
//! real osmem-server, without etcd, Kafka or logingest.

mod common;

use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{start_es, unique, wait_until};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(3);

fn client() -> reqwest::Client {
    // Generous: a fresh osmem-server's first requests can take seconds on a
    // loaded machine; a timeout would fail the test for the wrong reason.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// An NDJSON `_bulk` body indexing `ids` into `index`.
fn bulk_body(index: &str, ids: &[&str]) -> String {
    ids.iter()
        .map(|id| {
            format!("{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{id}\"}}}}\n{{\"message\":\"line {id}\"}}\n")
        })
        .collect()
}

async fn bulk(
    client: &reqwest::Client,
    base: &str,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/_bulk"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
}

/// Document count of `index`, asked of osmem directly (0 when absent).
async fn count(client: &reqwest::Client, es: &str, index: &str) -> u64 {
    let _ = client.post(format!("{es}/{index}/_refresh")).send().await;
    let Ok(response) = client.get(format!("{es}/{index}/_count")).send().await else {
        return 0;
    };
    let body: Value = response.json().await.unwrap_or_default();
    body["count"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn forwards_bulk_and_preserves_the_request() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let index = unique("fwd");

    let response = bulk(&http, &proxy.url(), bulk_body(&index, &["a", "b", "c"]))
        .await
        .expect("bulk through proxy");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "content-type of upstream kept"
    );
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errors"], false, "{reply}");
    assert_eq!(reply["items"].as_array().unwrap().len(), 3);
    assert_eq!(count(&http, &es.url, &index).await, 3);
    assert_eq!(proxy.bulk_forwarded(), 1);

    // Path, query, method and upstream errors pass through unchanged.
    let response = http
        .get(format!("{}/{index}/_count?q=message:b", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["count"], 1, "{reply}");
    let response = http
        .get(format!("{}/{}/_count", proxy.url(), unique("missing")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // The content-type header is forwarded: osmem rejects a form body.
    let response = http
        .post(format!("{}/_bulk", proxy.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(bulk_body(&index, &["d"]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(proxy.requests(), 4);
    assert_eq!(proxy.bulk_forwarded(), 1);
}

#[tokio::test]
async fn status_fault_answers_without_forwarding() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let index = unique("status");

    proxy.set(Fault::Status(503));
    let response = bulk(&http, &proxy.url(), bulk_body(&index, &["a"]))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["status"], 503, "{reply}");
    assert!(reply["error"]["type"].is_string(), "{reply}");

    proxy.set(Fault::Status(429));
    let response = http.get(proxy.url()).send().await.unwrap();
    assert_eq!(response.status(), 429);

    assert_eq!(proxy.requests(), 2);
    assert_eq!(proxy.bulk_forwarded(), 0);
    assert_eq!(
        count(&http, &es.url, &index).await,
        0,
        "nothing reached osmem"
    );

    proxy.set(Fault::None);
    let response = bulk(&http, &proxy.url(), bulk_body(&index, &["a"]))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(count(&http, &es.url, &index).await, 1);
}

#[tokio::test]
async fn bulk_items_429_rejects_every_item() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let index = unique("items");
    proxy.set(Fault::BulkItems429);

    let ids = ["x-0-1", "x-0-2", "x-1-7", "x-2-9"];
    let response = bulk(&http, &proxy.url(), bulk_body(&index, &ids))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errors"], true);
    let items = reply["items"].as_array().unwrap();
    assert_eq!(items.len(), ids.len(), "{reply}");
    for (item, id) in items.iter().zip(ids) {
        let item = &item["index"];
        assert_eq!(item["status"], 429, "{reply}");
        assert_eq!(item["_id"], id);
        assert_eq!(item["_index"], index.as_str());
        assert_eq!(item["error"]["type"], "es_rejected_execution_exception");
    }
    assert_eq!(count(&http, &es.url, &index).await, 0, "bulk not forwarded");
    assert_eq!(proxy.bulk_forwarded(), 0);

    // Other requests are forwarded.
    let response = http.get(proxy.url()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(proxy.requests(), 2);
}

#[tokio::test]
async fn delay_fault_delays_then_forwards() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let index = unique("delay");

    let delay = Duration::from_millis(400);
    proxy.set(Fault::Delay(delay));
    let start = Instant::now();
    let response = bulk(&http, &proxy.url(), bulk_body(&index, &["a", "b"]))
        .await
        .unwrap();
    let took = start.elapsed();
    assert_eq!(response.status(), 200);
    assert!(took >= delay, "answered after {took:?}");
    assert_eq!(count(&http, &es.url, &index).await, 2);
    assert_eq!(proxy.bulk_forwarded(), 1);

    // Requests after Fault::None are not delayed.
    proxy.set(Fault::None);
    let start = Instant::now();
    http.get(proxy.url()).send().await.unwrap();
    assert!(start.elapsed() < delay, "no delay after Fault::None");
}

#[tokio::test]
async fn reset_fault_closes_connections_including_kept_alive_ones() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();

    // Opens a keep-alive connection in the client's pool.
    assert_eq!(http.get(proxy.url()).send().await.unwrap().status(), 200);
    proxy.set(Fault::Reset);
    for _ in 0..3 {
        let err = http
            .get(proxy.url())
            .send()
            .await
            .expect_err("reset connection");
        assert!(!err.is_timeout(), "{err:?}");
    }
    // A fresh client too.
    client().get(proxy.url()).send().await.expect_err("reset");
    assert_eq!(proxy.requests(), 1, "reset connections are not counted");

    proxy.set(Fault::None);
    assert_eq!(http.get(proxy.url()).send().await.unwrap().status(), 200);
    assert_eq!(proxy.requests(), 2);
}

#[tokio::test]
async fn down_fault_refuses_then_listens_again_on_the_same_port() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let url = proxy.url();
    let addr = url.trim_start_matches("http://").to_string();

    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    proxy.set(Fault::Down);
    let err = tokio::net::TcpStream::connect(&addr)
        .await
        .expect_err("connection refused while down");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // The pooled keep-alive connection is closed as well.
    http.get(&url).send().await.expect_err("down");
    assert_eq!(proxy.requests(), 1);

    proxy.set(Fault::None);
    assert_eq!(proxy.url(), url);
    wait_until("proxy answers again", DEADLINE, || async {
        matches!(http.get(&url).send().await, Ok(r) if r.status() == 200)
    })
    .await;

    // Down twice in a row, then a fault other than None also listens.
    proxy.set(Fault::Down);
    proxy.set(Fault::Down);
    tokio::net::TcpStream::connect(&addr)
        .await
        .expect_err("refused");
    proxy.set(Fault::Status(503));
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port() {
    let es = start_es();
    let proxy = FaultProxy::start(&es.url).await;
    let http = client();
    let url = proxy.url();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    drop(proxy);
    wait_until("proxy gone", DEADLINE, || async {
        http.get(&url).send().await.is_err()
    })
    .await;
}
