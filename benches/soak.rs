//! Soak run with faults: steady load on several topics for `DURATION`
//! seconds while Elasticsearch misbehaves (delays, 429, 503, resets,
//! outages), some documents are refused (dead-lettered), and logingest is
//! killed with SIGKILL or stopped with SIGTERM and restarted. At the end it
//! reports documents produced, indexed, dead-lettered, missing and
//! duplicated; the last two must be 0.
//!
//! `scripts/soak.sh` (env `DURATION`, default 600).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{Fault, FaultProxy};
use common::{unique, wait_until, Logingest, Options, Stack};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let duration = Duration::from_secs(
        std::env::var("DURATION")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let dead = unique("dead-letters");
    let topics: Vec<String> = (0..3).map(|i| unique(&format!("soak{i}"))).collect();
    for t in &topics {
        stack.create_topic(t, 2);
        stack.put(&format!("/logingest/topics/{t}"), "");
    }
    // One topic whose index refuses text lines: every line is dead-lettered.
    let refused = unique("refused");
    stack.create_topic(&refused, 1);
    reqwest::Client::new()
        .put(format!("{}/{refused}", stack.es_url))
        .json(&serde_json::json!({"mappings": {"properties": {"message": {"type": "long"}}}}))
        .send()
        .await
        .expect("create refusing index");
    stack.put(&format!("/logingest/topics/{refused}"), "");

    let options = Options {
        es_url: Some(proxy.url()),
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for t in &topics {
        producers.push(stack.produce_steadily(t, 2, 150, stop.clone()));
    }
    let refused_producer = stack.produce_steadily(&refused, 1, 5, stop.clone());

    let mut daemon = Logingest::start(&stack, &options);
    let started = Instant::now();
    let faults = [
        Fault::Delay(Duration::from_millis(400)),
        Fault::Status(429),
        Fault::Status(503),
        Fault::Reset,
        Fault::Down,
        Fault::BulkItems429,
    ];
    let (mut kills, mut terms, mut round) = (0, 0, 0usize);
    while started.elapsed() < duration {
        // 20 s healthy, 10 s of one fault, then a restart every third round.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let fault = faults[round % faults.len()].clone();
        proxy.set(fault.clone());
        tokio::time::sleep(Duration::from_secs(10)).await;
        proxy.set(Fault::None);
        eprintln!(
            "soak: {:>4.0}s  fault {fault:?} done",
            started.elapsed().as_secs_f64()
        );
        if round % 3 == 2 {
            if round % 2 == 0 {
                daemon.kill();
                kills += 1;
            } else {
                daemon.terminate(Duration::from_secs(60)).await;
                terms += 1;
            }
            daemon = Logingest::start(&stack, &options);
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut produced = 0;
    let mut expected = Vec::new();
    for (t, p) in topics.iter().zip(producers) {
        let ids = p.await.expect("producer");
        produced += ids.len();
        expected.push((t.clone(), ids));
    }
    let refused_ids = refused_producer.await.expect("producer");
    produced += refused_ids.len();

    let mut indexed = 0;
    for (t, ids) in &expected {
        wait_until(
            &format!("{t} caught up"),
            Duration::from_secs(300),
            || async { stack.count(t).await >= ids.len() as u64 },
        )
        .await;
        indexed += stack.count(t).await as usize;
        stack.assert_exactly(t, ids).await;
    }
    wait_until(
        "dead letters caught up",
        Duration::from_secs(300),
        || async { stack.count(&dead).await >= refused_ids.len() as u64 },
    )
    .await;
    let dead_lettered = stack.count(&dead).await as usize;
    stack.assert_exactly(&dead, &refused_ids).await;
    let expected_total: usize =
        expected.iter().map(|(_, ids)| ids.len()).sum::<usize>() + refused_ids.len();
    let found = indexed + dead_lettered;
    println!();
    println!(
        "soak: {:.0} s, {round} fault rounds, {kills} kill -9, {terms} SIGTERM restarts",
        started.elapsed().as_secs_f64()
    );
    println!("  produced       {produced}");
    println!("  indexed        {indexed}");
    println!("  dead-lettered  {dead_lettered}");
    println!("  missing        {}", expected_total.saturating_sub(found));
    println!("  duplicated     {}", found.saturating_sub(expected_total));
    println!("rerun: DURATION=600 scripts/soak.sh");
    assert_eq!(found, expected_total);
    drop(daemon);
}
