//! Throughput benchmark: how fast logingest drains a backlog into the
//! search server, next to how fast the search server takes the same
//! documents when fed directly (its ceiling on this machine).
//!
//! `scripts/bench-throughput.sh` (env `LINES`, default 100 000; `SIZE`,
//! bytes per line, default 200; `PARTITIONS`, default 4).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{unique, Logingest, Options, Stack};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Bulk-loads `lines` documents of the same shape straight into `index`
/// with `concurrency` requests of `batch` documents in flight.
async fn direct_load(
    es: &str,
    index: &str,
    lines: usize,
    size: usize,
    batch: usize,
    concurrency: usize,
) -> Duration {
    let client = reqwest::Client::new();
    let pad = "x".repeat(size.saturating_sub(40));
    let bodies: Vec<String> = (0..lines.div_ceil(batch))
        .map(|b| {
            let mut body = String::new();
            for i in b * batch..((b + 1) * batch).min(lines) {
                body.push_str(&format!("{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"d-0-{i}\"}}}}\n"));
                body.push_str(&format!(
                    "{{\"@timestamp\":\"2026-11-25T10:00:00.000Z\",\"message\":\"line {i} {pad}\",\"kafka\":{{\"topic\":\"d\",\"partition\":0,\"offset\":{i}}}}}\n"
                ));
            }
            body
        })
        .collect();
    let started = Instant::now();
    let mut pending = futures::stream::iter(bodies.into_iter().map(|body| {
        let client = client.clone();
        let url = format!("{es}/_bulk");
        async move {
            client
                .post(url)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .expect("bulk")
                .bytes()
                .await
                .expect("bulk reply");
        }
    }))
    .buffer_unordered(concurrency);
    use futures::StreamExt;
    while pending.next().await.is_some() {}
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let lines = env("LINES", 100_000);
    let size = env("SIZE", 200);
    let partitions = env("PARTITIONS", 4) as i32;

    // The ceiling: the search server alone, on its own fresh instance.
    let ceiling = {
        let es = common::start_es();
        let took = direct_load(&es.url, "direct", lines, size, 2000, 4).await;
        lines as f64 / took.as_secs_f64()
    };

    let stack = Stack::start();
    let topic = unique("bench");
    stack.create_topic(&topic, partitions as u32);
    let pad = "x".repeat(size.saturating_sub(40));
    let records: Vec<_> = (0..lines)
        .map(|i| {
            (
                None,
                format!("127.0.0.1 GET /page/{i} 200 {pad}").into_bytes(),
            )
        })
        .collect();
    let produced = Instant::now();
    stack.produce(&topic, partitions, &records).await;
    let produce_rate = lines as f64 / produced.elapsed().as_secs_f64();
    drop(records);

    let daemon = Logingest::start(&stack, &Options::default());
    stack.put(&format!("/logingest/topics/{topic}"), "");
    // Measured from the first indexed document, so the consumer group's
    // join round is not counted.
    let series = format!("logingest_documents_indexed_total{{topic=\"{topic}\"}}");
    let mut first: Option<(Instant, f64)> = None;
    let mut peak_rss = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let indexed = daemon.metric(&series).await.unwrap_or(0.0);
        peak_rss = peak_rss.max(daemon.rss_bytes());
        if first.is_none() && indexed > 0.0 {
            first = Some((Instant::now(), indexed));
        }
        if indexed >= lines as f64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {indexed} of {lines} indexed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (start, at_start) = first.expect("started");
    let rate = (lines as f64 - at_start) / start.elapsed().as_secs_f64();
    assert_eq!(stack.count(&topic).await, Some(lines as u64));

    println!();
    println!("logingest throughput ({lines} lines of {size} B, {partitions} partitions, default batching)");
    println!("  producing to the broker        {produce_rate:>10.0} lines/s");
    println!("  search server alone (ceiling)  {ceiling:>10.0} docs/s   (direct _bulk, 2000 docs x 4 in flight)");
    println!(
        "  logingest Kafka -> search      {rate:>10.0} docs/s   ({:.0}% of the ceiling)",
        rate / ceiling * 100.0
    );
    println!(
        "  logingest peak RSS             {:>10} MiB",
        peak_rss >> 20
    );
    println!("rerun: scripts/bench-throughput.sh   (LINES, SIZE, PARTITIONS)");
}
