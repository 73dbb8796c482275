//! Faults only tests can trigger, compiled into debug builds alone (the
//! test suite runs debug binaries; release builds have none of this).
//!
//! `LOGINGEST_TEST_PANIC_AT=<topic>/<partition>/<offset>[,...]` makes the
//! partition task panic the first time it reads each of those offsets — to
//! prove that a dead task is restarted from its first unacknowledged
//! offset and that nothing waits on it forever; `LOGINGEST_TEST_SLOW_DRAIN`
//! (below) holds a cancelled task after its drain.

use crate::topic::TopicPartition;

/// The `<topic>/<partition>/<number>[,...]` entries of the fault variable
/// `var`; `None` when it is not set (debug builds only).
#[cfg(debug_assertions)]
fn armed_partitions(var: &str) -> Option<Vec<(String, i32, u64)>> {
    let spec = std::env::var(var).ok()?;
    Some(
        spec.split(',')
            .filter_map(|one| {
                let mut parts = one.trim().rsplitn(3, '/');
                let number = parts.next()?.parse().ok()?;
                let partition = parts.next()?.parse().ok()?;
                let topic = parts.next()?.to_string();
                Some((topic, partition, number))
            })
            .collect(),
    )
}

/// Panics when the test fault names this record (debug builds only).
#[cfg(debug_assertions)]
pub fn before_record(tp: &TopicPartition, offset: i64) {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    type Armed = Mutex<HashSet<(String, i32, i64)>>;
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let faults = armed_partitions("LOGINGEST_TEST_PANIC_AT")?
            .into_iter()
            .map(|(topic, partition, offset)| (topic, partition, offset as i64))
            .collect();
        Some(Mutex::new(faults))
    });
    let Some(armed) = armed else {
        return;
    };
    let key = (tp.topic.to_string(), tp.partition, offset);
    let fire = armed
        .lock()
        .map(|mut set| set.remove(&key))
        .unwrap_or(false);
    if fire {
        panic!("test fault: panic at {tp}/{offset}");
    }
}

/// Does nothing in release builds.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn before_record(_tp: &TopicPartition, _offset: i64) {}

/// `LOGINGEST_TEST_SLOW_DRAIN=<topic>/<partition>/<millis>[,...]`: the
/// first task of each named partition that drains after being cancelled
/// takes that much longer to end — to hand a partition over, and back,
/// while its old task is still draining (debug builds only).
#[cfg(debug_assertions)]
pub async fn slow_drain(tp: &TopicPartition) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    type Armed = Mutex<HashMap<(String, i32), u64>>;
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let faults = armed_partitions("LOGINGEST_TEST_SLOW_DRAIN")?
            .into_iter()
            .map(|(topic, partition, millis)| ((topic, partition), millis))
            .collect();
        Some(Mutex::new(faults))
    });
    let Some(armed) = armed else {
        return;
    };
    let key = (tp.topic.to_string(), tp.partition);
    let delay = armed.lock().ok().and_then(|mut map| map.remove(&key));
    if let Some(millis) = delay {
        tracing::warn!(partition = %tp, millis, "test fault: slow drain");
        tokio::time::sleep(Duration::from_millis(millis)).await;
        tracing::warn!(partition = %tp, "test fault: slow drain over");
    }
}

/// Does nothing in release builds.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub async fn slow_drain(_tp: &TopicPartition) {}
