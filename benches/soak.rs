//! Soak run with faults: steady load on several topics for `DURATION`
//! seconds while Elasticsearch misbehaves (delays, 429, 503, resets,
//! outages), some documents are refused (dead-lettered), and logingest is
//! killed with SIGKILL or stopped with SIGTERM and restarted. At the end it
//! reports documents produced, indexed, dead-lettered, missing, extra and
//! redelivered (writes of an `_id` beyond its first, `sum(_version - 1)`).
//! Missing and extra must be 0; redelivered at most what was indexed after
//! the last commit at each kill -9 (measured right after each kill), and a
//! SIGTERM leaves nothing indexed after its final commit.
//!
//! `scripts/soak.sh` (env `DURATION`, default 600).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
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
    // Per index: documents indexed at or after the committed offsets right
    // after each kill -9 (what the next owner writes again), and the same
    // after each SIGTERM exit (must be 0).
    let mut kill_allowed: BTreeMap<String, u64> = BTreeMap::new();
    let mut term_uncommitted = 0;
    let mut sources: Vec<(String, i32, String)> =
        topics.iter().map(|t| (t.clone(), 2, t.clone())).collect();
    sources.push((refused.clone(), 1, dead.clone()));
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
                let after = uncommitted(&stack, &options.group, &sources).await;
                eprintln!("soak: kill -9: indexed after the last commit {after:?}");
                for (index, n) in after {
                    *kill_allowed.entry(index).or_default() += n;
                }
            } else {
                let status = daemon.terminate(Duration::from_secs(60)).await;
                assert!(status.success(), "SIGTERM exit status {status}");
                terms += 1;
                let after = uncommitted(&stack, &options.group, &sources).await;
                eprintln!("soak: SIGTERM: indexed after the last commit {after:?}");
                term_uncommitted += after.values().sum::<u64>();
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

    // Only once the last instance committed everything has it written
    // again whatever it was going to.
    for (t, ids) in &expected {
        stack
            .wait_committed_through(&options.group, t, 2, ids, Duration::from_secs(300))
            .await;
    }
    stack
        .wait_committed_through(
            &options.group,
            &refused,
            1,
            &refused_ids,
            Duration::from_secs(300),
        )
        .await;
    let mut indexed = 0;
    let (mut missing, mut extra, mut redelivered, mut allowed) = (0, 0, 0, 0);
    let mut deliveries = Vec::new();
    for (t, ids) in &expected {
        wait_until(
            &format!("{t} caught up"),
            Duration::from_secs(300),
            || async { stack.count_or_zero(t).await >= ids.len() as u64 },
        )
        .await;
        indexed += stack.count(t).await.expect("index exists") as usize;
        deliveries.push((t.clone(), stack.delivery(t, ids).await));
    }
    wait_until(
        "dead letters caught up",
        Duration::from_secs(300),
        || async { stack.count_or_zero(&dead).await >= refused_ids.len() as u64 },
    )
    .await;
    let dead_lettered = stack.count(&dead).await.expect("index exists") as usize;
    deliveries.push((dead.clone(), stack.delivery(&dead, &refused_ids).await));
    for (index, d) in &deliveries {
        let budget = kill_allowed.get(index).copied().unwrap_or(0);
        eprintln!(
            "redelivered: {} of {} in {index} (allowed {budget}; missing {}, extra {})",
            d.redelivered, d.expected, d.missing, d.extra
        );
        missing += d.missing;
        extra += d.extra;
        redelivered += d.redelivered;
        allowed += budget;
    }
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
    println!("  missing        {missing}");
    println!("  extra          {extra}");
    println!(
        "  redelivered    {redelivered} (allowed {allowed}: indexed after the last commit at the kills)"
    );
    println!("  after SIGTERM  {term_uncommitted} indexed after the final commit");
    println!("rerun: DURATION=600 scripts/soak.sh");
    assert_eq!(missing, 0, "documents missing");
    assert_eq!(extra, 0, "documents not produced");
    assert_eq!(found, expected_total);
    assert_eq!(
        term_uncommitted, 0,
        "a SIGTERM exit left indexed documents uncommitted"
    );
    for (index, d) in &deliveries {
        let budget = kill_allowed.get(index).copied().unwrap_or(0);
        assert!(
            d.redelivered <= budget,
            "{index}: {} redelivered, allowed {budget}",
            d.redelivered
        );
    }
    drop(daemon);
}

/// Per index, the documents indexed at or after the group's committed
/// offsets of its source topic (`(topic, partitions, index)`), once the
/// process is gone.
async fn uncommitted(
    stack: &Stack,
    group: &str,
    sources: &[(String, i32, String)],
) -> BTreeMap<String, u64> {
    let mut per_index = BTreeMap::new();
    for (topic, partitions, index) in sources {
        let n = stack
            .written_after_commit(group, topic, *partitions, index)
            .await;
        per_index.insert(index.clone(), n);
    }
    per_index
}
