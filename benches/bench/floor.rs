//! The floor: a bare Rust consumer with logingest's own librdkafka
//! settings (`kafka::consumer::client_config`) and its structure (one split
//! queue and one task per partition, the main queue served on a thread of
//! its own), that reads the backlog and does nothing else. It runs as a
//! process of its own, so its CPU time and memory are its own.
//!
//! Environment: `BENCH_BROKERS`, `BENCH_TOPIC`, `BENCH_GROUP`,
//! `BENCH_LINES`. Prints `DONE <first_unix_ns> <last_unix_ns> <messages>
//! <bytes> <gaps>` once it has read `BENCH_LINES` messages, then idles until
//! it is stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use tokio::sync::mpsc;

use logingest::config::KafkaConfig;

type FloorConsumer = StreamConsumer<FloorContext>;
type Queue = StreamPartitionQueue<FloorContext>;

struct FloorContext {
    consumer: OnceLock<Weak<FloorConsumer>>,
    queues: mpsc::UnboundedSender<(i32, Queue)>,
}

impl ClientContext for FloorContext {}

impl ConsumerContext for FloorContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        // As logingest does: split before librdkafka starts fetching.
        if let Rebalance::Assign(tpl) = rebalance {
            let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
                return;
            };
            for e in tpl.elements() {
                if let Some(queue) = consumer.split_partition_queue(e.topic(), e.partition()) {
                    let _ = self.queues.send((e.partition(), queue));
                }
            }
        }
    }
}

pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The `[kafka]` section logingest runs with in the benchmark.
pub fn kafka_config(brokers: &str, group: &str) -> KafkaConfig {
    let mut config = KafkaConfig {
        brokers: vec![brokers.to_string()],
        group_id: group.to_string(),
        ..KafkaConfig::default()
    };
    for (k, v) in crate::KAFKA_OPTIONS {
        config.options.insert(k.to_string(), v.to_string());
    }
    config
}

/// Runs the floor consumer (this process's only job).
pub fn main() {
    let brokers = var("BENCH_BROKERS");
    let topic = var("BENCH_TOPIC");
    let group = var("BENCH_GROUP");
    let lines: u64 = var("BENCH_LINES").parse().expect("BENCH_LINES");
    // The same runtime as `logingest run` (Runtime::new: one worker per core).
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async move {
        let (queues, mut assigned) = mpsc::unbounded_channel();
        let context = FloorContext {
            consumer: OnceLock::new(),
            queues,
        };
        let config = logingest::kafka::consumer::client_config(
            &kafka_config(&brokers, &group),
            "bench-floor",
            // The prefetch logingest derives from its default memory budget.
            logingest::kafka::Prefetch::for_budget(
                logingest::config::MemoryConfig::default().budget(),
            ),
        );
        let consumer: Arc<FloorConsumer> =
            Arc::new(config.create_with_context(context).expect("consumer"));
        let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
        consumer.subscribe(&[&topic]).expect("subscribe");
        // The main queue (rebalance callbacks), on its own thread.
        let main_queue = consumer.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("group runtime");
            rt.block_on(async move {
                loop {
                    if let Err(e) = main_queue.recv().await {
                        eprintln!("floor: kafka error: {e}");
                    }
                }
            });
        });
        let read = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let gaps = Arc::new(AtomicU64::new(0));
        let first = Arc::new(OnceLock::<u64>::new());
        let (done_tx, mut done) = mpsc::unbounded_channel::<u64>();
        let last = loop {
            let (partition, queue) = tokio::select! {
                Some(last) = done.recv() => break last,
                Some(assignment) = assigned.recv() => assignment,
            };
            let (read, bytes, gaps, first, done_tx) = (
                read.clone(),
                bytes.clone(),
                gaps.clone(),
                first.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let mut next: Option<i64> = None;
                loop {
                    match queue.recv().await {
                        Ok(m) => {
                            if first.get().is_none() {
                                let _ = first.set(now_ns());
                            }
                            if next.is_some_and(|n| n != m.offset()) {
                                gaps.fetch_add(1, Ordering::Relaxed);
                            }
                            next = Some(m.offset() + 1);
                            let len = m.payload().map_or(0, <[u8]>::len) as u64;
                            bytes.fetch_add(len, Ordering::Relaxed);
                            if read.fetch_add(1, Ordering::Relaxed) + 1 == lines {
                                let _ = done_tx.send(now_ns());
                            }
                        }
                        Err(e) => eprintln!("floor: partition {partition}: {e}"),
                    }
                }
            });
        };
        println!(
            "DONE {} {last} {} {} {}",
            first.get().copied().unwrap_or(last),
            read.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            gaps.load(Ordering::Relaxed),
        );
        // Idle until stopped: the harness reads CPU and memory first.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}
