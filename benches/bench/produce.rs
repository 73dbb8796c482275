//! The backlog: nginx-like access lines of a fixed size, produced with
//! large batches (the broker is filled once per topic and read by several
//! rows, each with its own consumer group).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

/// Line `i` of the backlog: an nginx "combined" access-log line (so a
/// `parse_nginx_log` transform can take it apart), padded in the user agent
/// to exactly `size` bytes (cut when `size` is below the bare line).
pub fn line(i: u64, size: usize, out: &mut Vec<u8>) {
    const STATUS: [u16; 8] = [200, 200, 200, 200, 200, 304, 404, 500];
    const PATHS: [&str; 4] = ["/api/v1/items", "/static/app.js", "/login", "/search"];
    out.clear();
    let _ = write!(
        out,
        "10.{}.{}.{} - - [25/Nov/2026:10:{:02}:{:02} +0000] \"GET {}/{i} HTTP/1.1\" {} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64) bench/",
        (i >> 16) & 255,
        (i >> 8) & 255,
        i & 255,
        (i / 60) % 60,
        i % 60,
        PATHS[(i % 4) as usize],
        STATUS[(i % 8) as usize],
        (i * 7919) % 50_000,
    );
    // Room for the closing quote.
    while out.len() + 1 < size {
        out.push(b'x');
    }
    out.push(b'"');
    out.truncate(size.max(1));
}

/// Record `i` of the `otlp` backlog: an OTLP/JSON logs request (what the
/// OpenTelemetry Collector's Kafka exporter writes with `encoding:
/// otlp_json`) of one log record whose body is [`line`] `i`, with a
/// resource (`service.name`, `host.name`), a scope, a time, a severity, two
/// attributes and trace/span ids.
pub fn otlp_line(i: u64, size: usize, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(size);
    line(i, size, &mut body);
    out.clear();
    let _ = write!(
        out,
        "{{\"resourceLogs\":[{{\"resource\":{{\"attributes\":[\
         {{\"key\":\"service.name\",\"value\":{{\"stringValue\":\"frontend\"}}}},\
         {{\"key\":\"host.name\",\"value\":{{\"stringValue\":\"node-{}\"}}}}]}},\
         \"scopeLogs\":[{{\"scope\":{{\"name\":\"nginx\"}},\"logRecords\":[{{\
         \"timeUnixNano\":\"{}\",\"observedTimeUnixNano\":\"{}\",\
         \"severityNumber\":9,\"severityText\":\"INFO\",\"body\":{{\"stringValue\":",
        i % 16,
        1_764_064_800_000_000_000u64 + i * 1_000_000,
        1_764_064_800_000_000_000u64 + i * 1_000_000 + 500,
    );
    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(&body));
    let _ = write!(
        out,
        "}},\"attributes\":[{{\"key\":\"http.status_code\",\"value\":{{\"intValue\":\"{}\"}}}},\
         {{\"key\":\"client.address\",\"value\":{{\"stringValue\":\"10.0.{}.{}\"}}}}],\
         \"traceId\":\"{:032x}\",\"spanId\":\"{:016x}\"}}]}}]}}]}}",
        [200, 304, 404, 500][(i % 4) as usize],
        (i >> 8) & 255,
        i & 255,
        u128::from(i) * 0x9e37_79b9_7f4a_7c15 + 1,
        i.wrapping_mul(0x9e37_79b9) | 1,
    );
}

/// The partition line `i` goes to (round robin): with a fresh topic, line
/// `i` is at offset `i / partitions` of partition `i % partitions`.
pub fn partition_of(i: u64, partitions: u32) -> i32 {
    (i % u64::from(partitions)) as i32
}

#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Produces `lines` lines of `size` bytes round robin over `partitions`
/// partitions of `topic` (with `otlp`, each line as the body of an
/// [`otlp_line`] request); returns how long it took, once every delivery is
/// confirmed. Panics when a delivery fails.
pub fn produce(
    brokers: &str,
    topic: &str,
    partitions: u32,
    lines: u64,
    size: usize,
    otlp: bool,
) -> Duration {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("compression.type", "none")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "600000")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let started = Instant::now();
    let mut buf = Vec::with_capacity(size + 64);
    for i in 0..lines {
        if otlp {
            otlp_line(i, size, &mut buf);
        } else {
            line(i, size, &mut buf);
        }
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(&buf[..])
            .partition(partition_of(i, partitions));
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("produce to {topic}: {e}"),
            }
        }
        if i % 10_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(600))
        .expect("flush the producer");
    let context = producer.context();
    let (ok, failed) = (
        context.ok.load(Ordering::Relaxed),
        context.failed.load(Ordering::Relaxed),
    );
    assert!(
        ok == lines && failed == 0,
        "produce to {topic}: {ok} of {lines} delivered, {failed} failed (first error: {:?})",
        context
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    );
    started.elapsed()
}
