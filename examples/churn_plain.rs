//! Rebalance churn with two plain librdkafka consumers and no logingest:
//! does the broker keep assigning partitions? (Issue 19, item 0.)
//!
//! Two topics of 3 partitions fed at about 110 records/s each; two members
//! of one group; `--cycles` times: wait `--every`, close one member
//! (alternating) and create it again at once. Afterwards it waits up to
//! `--settle` for the group to assign all 6 partitions again and for the
//! members to read everything produced, and prints what it saw.
//!
//! ```text
//! cargo run --example churn_plain -- --brokers 127.0.0.1:9092 \
//!     --strategy cooperative-sticky --cycles 6 --every 4 --session 6000
//! ```
//! Topics `<prefix>-a` and `<prefix>-b` must exist with 3 partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

type Owned = Arc<Mutex<BTreeMap<String, BTreeSet<(String, i32)>>>>;
/// The offsets read, per partition.
type Read = Arc<Mutex<BTreeMap<(String, i32), BTreeSet<i64>>>>;

struct Ctx {
    name: String,
    owned: Owned,
    start: Instant,
}

impl ClientContext for Ctx {}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let what = match rebalance {
            Rebalance::Assign(t) => format!("assign {}", t.count()),
            Rebalance::Revoke(t) => format!("revoke {}", t.count()),
            Rebalance::Error(e) => format!("error {e}"),
        };
        let now: BTreeSet<(String, i32)> = base
            .assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:6.1}s {} {what} -> owns {}",
            self.start.elapsed().as_secs_f64(),
            self.name,
            now.len()
        );
        self.owned.lock().unwrap().insert(self.name.clone(), now);
    }
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// One member's life: poll until `stop`, recording the highest offset read.
fn member(
    cfg: ClientConfig,
    name: String,
    topics: Vec<String>,
    owned: Owned,
    read: Read,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let ctx = Ctx {
            name: name.clone(),
            owned: owned.clone(),
            start,
        };
        let consumer: BaseConsumer<Ctx> = cfg.create_with_context(ctx).expect("consumer");
        let t: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&t).expect("subscribe");
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                read.lock()
                    .unwrap()
                    .entry((m.topic().to_string(), m.partition()))
                    .or_default()
                    .insert(m.offset());
            }
        }
        consumer.unsubscribe();
        owned.lock().unwrap().remove(&name);
        drop(consumer);
        println!("{:6.1}s {name} closed", start.elapsed().as_secs_f64());
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = arg(&args, "--brokers", "127.0.0.1:9092");
    let strategy = arg(&args, "--strategy", "cooperative-sticky");
    let cycles: u32 = arg(&args, "--cycles", "6").parse().expect("--cycles");
    let every: u64 = arg(&args, "--every", "4").parse().expect("--every");
    let session = arg(&args, "--session", "6000");
    let settle: u64 = arg(&args, "--settle", "60").parse().expect("--settle");
    let prefix = arg(&args, "--prefix", "churn");
    let group = arg(&args, "--group", &format!("{prefix}-group"));
    let topics = vec![format!("{prefix}-a"), format!("{prefix}-b")];
    let start = Instant::now();

    let producing = Arc::new(AtomicBool::new(true));
    let produced = Arc::new(Mutex::new(0u64));
    let producer_thread = {
        let producing = producing.clone();
        let produced = produced.clone();
        let topics = topics.clone();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        thread::spawn(move || {
            let mut i = 0u64;
            while producing.load(Ordering::Relaxed) {
                for t in &topics {
                    let v = format!("{t} line {i}");
                    let p = (i % 3) as i32;
                    while producer
                        .send(BaseRecord::<(), _>::to(t).payload(&v).partition(p))
                        .is_err()
                    {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                *produced.lock().unwrap() += 2;
                i += 1;
                thread::sleep(Duration::from_micros(9_000));
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
        })
    };

    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("partition.assignment.strategy", &strategy)
        .set("session.timeout.ms", &session)
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "200");
    let owned: Owned = Arc::default();
    let read: Read = Arc::default();
    let names = ["m0", "m1"];
    let mut members: Vec<(Arc<AtomicBool>, thread::JoinHandle<()>)> = names
        .iter()
        .map(|n| {
            let stop = Arc::new(AtomicBool::new(false));
            let h = member(
                cfg.clone(),
                n.to_string(),
                topics.clone(),
                owned.clone(),
                read.clone(),
                stop.clone(),
                start,
            );
            (stop, h)
        })
        .collect();

    for cycle in 0..cycles {
        thread::sleep(Duration::from_secs(every));
        let i = (cycle % 2) as usize;
        println!(
            "{:6.1}s cycle {}: restart {}",
            start.elapsed().as_secs_f64(),
            cycle + 1,
            names[i]
        );
        let (stop, h) = members.remove(i);
        stop.store(true, Ordering::Relaxed);
        h.join().expect("member");
        let stop = Arc::new(AtomicBool::new(false));
        let h = member(
            cfg.clone(),
            names[i].to_string(),
            topics.clone(),
            owned.clone(),
            read.clone(),
            stop.clone(),
            start,
        );
        members.insert(i, (stop, h));
    }
    thread::sleep(Duration::from_secs(4));
    producing.store(false, Ordering::Relaxed);
    producer_thread.join().expect("producer");
    let total = *produced.lock().unwrap();
    println!(
        "{:6.1}s churn over; produced {total}",
        start.elapsed().as_secs_f64()
    );

    let deadline = Instant::now() + Duration::from_secs(settle);
    let mut last = (0, 0);
    loop {
        let assigned: usize = owned.lock().unwrap().values().map(BTreeSet::len).sum();
        let distinct: u64 = read.lock().unwrap().values().map(|s| s.len() as u64).sum();
        if (assigned, distinct) != last {
            println!(
                "{:6.1}s assigned {assigned}/6, read {distinct}/{total}",
                start.elapsed().as_secs_f64()
            );
            last = (assigned, distinct);
        }
        if assigned == 6 && distinct >= total {
            println!(
                "RESULT ok: all 6 assigned and everything read at {:.1}s",
                start.elapsed().as_secs_f64()
            );
            break;
        }
        if Instant::now() > deadline {
            println!(
                "RESULT stalled: assigned {assigned}/6, read {distinct}/{total} after {settle}s"
            );
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    for (stop, h) in members {
        stop.store(true, Ordering::Relaxed);
        let _ = h.join();
    }
}
