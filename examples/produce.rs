//! Produces sample log lines to a Kafka topic (used by the demo and the
//! benchmarks: Debian's kcat is too old for the local broker).
//!
//! `cargo run --example produce -- --brokers 127.0.0.1:9092 --topic nginx --count 1000`

use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[derive(Parser)]
struct Args {
    /// Bootstrap brokers.
    #[arg(
        long,
        env = "LOGINGEST_KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    brokers: String,
    /// Topic to write to (create it first).
    #[arg(long)]
    topic: String,
    /// Number of lines.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Partitions to spread the lines over, round robin (0 = let Kafka choose).
    #[arg(long, default_value_t = 0)]
    partitions: i32,
    /// Lines per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Bytes per line (padded sample access-log lines).
    #[arg(long, default_value_t = 0)]
    size: usize,
}

fn line(i: u64, size: usize) -> String {
    let mut line = format!(
        "127.0.0.1 - - [25/Nov/2026:10:00:00 +0000] \"GET /page/{i} HTTP/1.1\" {} {} \"-\" \"curl/8.0\"",
        // Mostly 200, some 404 and 503: something to search for.
        match i % 20 {
            0 => 503,
            7 | 13 => 404,
            _ => 200,
        },
        512 + i % 1000
    );
    while line.len() < size {
        line.push('x');
    }
    line
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(1024);
    let mut failed = 0u64;
    for i in 0..args.count {
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let payload = line(i, args.size);
        let key = format!("host-{}", i % 7);
        loop {
            let mut record = FutureRecord::to(&args.topic).payload(&payload).key(&key);
            if args.partitions > 0 {
                record = record.partition((i % args.partitions as u64) as i32);
            }
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                // Local queue full: wait for deliveries, then try again.
                Err((e, _)) => {
                    if pending.is_empty() {
                        anyhow::bail!("cannot enqueue: {e}");
                    }
                    for r in futures::future::join_all(pending.drain(..)).await {
                        failed += u64::from(!matches!(r, Ok(Ok(_))));
                    }
                }
            }
        }
        if pending.len() >= 10_000 {
            for r in futures::future::join_all(pending.drain(..)).await {
                failed += u64::from(!matches!(r, Ok(Ok(_))));
            }
        }
    }
    for r in futures::future::join_all(pending.drain(..)).await {
        failed += u64::from(!matches!(r, Ok(Ok(_))));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {} lines to {} in {secs:.2}s ({:.0}/s), {failed} failed",
        args.count - failed,
        args.topic,
        (args.count - failed) as f64 / secs
    );
    if failed > 0 {
        anyhow::bail!("{failed} lines were not delivered");
    }
    Ok(())
}
