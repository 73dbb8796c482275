//! The dead-letter path when the destination does not take letters: one
//! letter that cannot be delivered holds only its own chunk (issue 17.3),
//! and a destination that refuses the credentials or does not exist is
//! waited for, never answered with a reduced letter or a loss (issue 17.4).
//!
//! Both use an Elasticsearch dead-letter index behind the fault proxy: the
//! proxy answers every request naming that index with an error status,
//! while the topics' own indices are forwarded. (A Kafka dead-letter topic
//! cannot be made to fail on tansu without a broker quirk: it auto-creates
//! any topic a producer names.)

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::proxy::{Fault, FaultProxy};
use common::{logingest_cli, unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::{json, Value};

const PREFIX: &str = "/logingest/topics/";

/// An index whose `message` is a number: text lines are refused (item 400
/// `mapper_parsing_exception`), numbers are indexed.
async fn numeric_message_index(stack: &Stack, index: &str) {
    let response = reqwest::Client::new()
        .put(format!("{}/{index}", stack.es_url))
        .json(&json!({"mappings": {"properties": {"message": {"type": "long"}}}}))
        .send()
        .await
        .expect("create index");
    assert!(response.status().is_success(), "create index {index}");
}

/// `GET path` of the daemon's HTTP endpoint: status and body.
async fn get(daemon: &Logingest, path: &str) -> (u16, String) {
    match reqwest::get(format!("{}{path}", daemon.http)).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The committed offset of partition 0 of `topic`.
fn committed_0(stack: &Stack, group: &str, topic: &str) -> Option<i64> {
    stack.committed(group, topic, 1)[&0]
}

/// The offset in an id `topic-partition-offset`.
fn offset_of(id: &str) -> i64 {
    id.rsplit('-')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("{id}: no offset"))
}

/// Runs `logingest verify TOPIC --json` with `config`: exit code and report.
fn verify(config: &std::path::Path, topic: &str) -> (i32, Value) {
    let config = config.to_string_lossy().into_owned();
    let output = logingest_cli(&["verify", topic, "-c", &config, "--json"], &[]);
    let code = output.status.code().unwrap_or(-1);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}), exit {code}:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report)
}

/// Issue 17.3: topic A's one refused document cannot be dead-lettered (the
/// dead-letter index answers 503); topic B, flowing steadily, has chunks in
/// the same requests as A's (1 s linger) and keeps being indexed and
/// committed. Once the index works, A's letter is delivered in full and A
/// commits past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeliverable_dead_letter_holds_only_its_own_chunk() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let a = unique("letters-a");
    let b = unique("letters-b");
    let dead = unique("dead-letters");
    stack.create_topic(&a, 1);
    stack.create_topic(&b, 1);
    numeric_message_index(&stack, &a).await;
    stack.put(&format!("{PREFIX}{a}"), "");
    stack.put(&format!("{PREFIX}{b}"), "");
    proxy.set(Fault::IndexStatus(dead.clone(), 503));
    let options = Options {
        es_url: Some(proxy.url()),
        linger: "1s",
        // A's refused document settles in the first round, together with
        // the chunks of B that follow it in the request.
        elasticsearch: "max_item_attempts = 1".into(),
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let stop = Arc::new(AtomicBool::new(false));
    let steady = stack.produce_steadily(&b, 1, 50, stop.clone());
    wait_until("B committing", GROUP_DEADLINE, || async {
        committed_0(&stack, &options.group, &b).is_some()
    })
    .await;
    let a_ids = stack
        .produce(
            &a,
            1,
            &[
                (None, b"1".to_vec()),
                (None, b"seven".to_vec()),
                (None, b"2".to_vec()),
            ],
        )
        .await;
    wait_until("A's letter attempted", GROUP_DEADLINE, || async {
        proxy.index_faulted() >= 1
    })
    .await;
    // B goes on: 100 records (2 s of its traffic) committed past the point
    // where A's letter started failing.
    let at_fault = committed_0(&stack, &options.group, &b).unwrap_or(0);
    let start = std::time::Instant::now();
    loop {
        let now = committed_0(&stack, &options.group, &b).unwrap_or(0);
        if now >= at_fault + 100 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "B stuck behind A's undeliverable letter: committed {now} after 30 s, \
             {at_fault} when the letter first failed ({} letter attempts)",
            proxy.index_faulted()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let b_ids = steady.await.expect("producer");
    stack
        .wait_committed_through(&options.group, &b, 1, &b_ids, GROUP_DEADLINE)
        .await;
    let refused = offset_of(&a_ids[1]);
    let a_committed = committed_0(&stack, &options.group, &a);
    assert!(
        a_committed.is_none_or(|c| c <= refused),
        "A committed {a_committed:?}, past its undelivered letter at {refused}"
    );
    assert_eq!(stack.count_or_zero(&dead).await, 0);

    proxy.set(Fault::None);
    stack
        .wait_committed_through(&options.group, &a, 1, &a_ids, GROUP_DEADLINE)
        .await;
    let letters = stack.documents(&dead).await;
    assert_eq!(
        letters.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([a_ids[1].clone()]),
        "{letters:?}"
    );
    assert_eq!(letters[&a_ids[1]]["message"], "seven", "the full letter");
    assert!(letters[&a_ids[1]].get("reduced").is_none(), "{letters:?}");
    stack
        .assert_exactly(&a, &[a_ids[0].clone(), a_ids[2].clone()])
        .await;
    stack.assert_exactly(&b, &b_ids).await;
    let (code, report) = verify(&daemon.config, &a);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["totals"]["dead_lettered"], 1, "{report:#}");
    assert_eq!(report["totals"]["missing"], 0, "{report:#}");
    assert_eq!(report["totals"]["redelivered_writes"], 0, "{report:#}");
}

/// Issue 17.4: a dead-letter index the credentials cannot write (403) is a
/// misconfiguration to wait for, not a refusal of the letter: nothing is
/// committed past the refused document, the failures are counted,
/// readiness turns false; once the index is writable the full letter
/// arrives and the partition moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_index_refusing_the_credentials_is_waited_for() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("letters-403");
    let dead = unique("dead-letters");
    stack.create_topic(&topic, 1);
    numeric_message_index(&stack, &topic).await;
    stack.put(&format!("{PREFIX}{topic}"), "");
    proxy.set(Fault::IndexStatus(dead.clone(), 403));
    let options = Options {
        es_url: Some(proxy.url()),
        http: "unready_after = \"2s\"".into(),
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let daemon = Logingest::start(&stack, &options);
    let values = ["1", "seven", "2", "3"];
    let records: Vec<_> = values
        .iter()
        .map(|v| (None, v.as_bytes().to_vec()))
        .collect();
    let ids = stack.produce(&topic, 1, &records).await;
    let refused = offset_of(&ids[1]);

    // Three attempts on the dead-letter index, or the partition moved on
    // without its letter.
    wait_until(
        "three dead-letter attempts (or a commit past the refused document)",
        GROUP_DEADLINE,
        || async {
            proxy.index_faulted() >= 3
                || committed_0(&stack, &options.group, &topic).is_some_and(|c| c > refused)
        },
    )
    .await;
    let committed = committed_0(&stack, &options.group, &topic);
    assert!(
        committed.is_none_or(|c| c <= refused),
        "committed {committed:?} past the undelivered letter at {refused} \
         ({} dead-letter requests answered 403)",
        proxy.index_faulted()
    );
    wait_until(
        "not ready while the dead letter waits",
        Duration::from_secs(30),
        || async {
            let (code, body) = get(&daemon, "/readyz").await;
            code == 503 && body.contains("dead letter")
        },
    )
    .await;
    assert_eq!(get(&daemon, "/healthz").await.0, 200);
    let failures = format!(
        "logingest_dead_letter_delivery_failures_total{{topic=\"{topic}\",reason=\"unauthorized\"}}"
    );
    wait_until("failures counted", Duration::from_secs(30), || async {
        daemon.metric(&failures).await.is_some_and(|n| n >= 3.0)
    })
    .await;
    let committed = committed_0(&stack, &options.group, &topic);
    assert!(
        committed.is_none_or(|c| c <= refused),
        "committed {committed:?} while not ready"
    );

    proxy.set(Fault::None);
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    wait_until("ready again", Duration::from_secs(30), || async {
        get(&daemon, "/readyz").await.0 == 200
    })
    .await;
    let letters = stack.documents(&dead).await;
    assert_eq!(
        letters.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([ids[1].clone()]),
        "{letters:?}"
    );
    assert_eq!(letters[&ids[1]]["message"], "seven", "the full letter");
    assert!(letters[&ids[1]].get("reduced").is_none(), "{letters:?}");
    stack
        .assert_exactly(&topic, &[ids[0].clone(), ids[2].clone(), ids[3].clone()])
        .await;
    let refused_letters = format!("logingest_dead_letters_refused_total{{topic=\"{topic}\"}}");
    assert_eq!(daemon.metric(&refused_letters).await.unwrap_or(0.0), 0.0);
}

/// Issue 17.3, "an abandoned chunk's retries stop": stopping while a dead
/// letter waits ends its delivery when the partition stops waiting (drain
/// deadline), the sink stops at once and nothing is committed past the
/// letter; the next instance, with the destination fixed, delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_dead_letter_is_abandoned_with_its_partition_and_delivered_later() {
    let stack = Stack::start();
    let proxy = FaultProxy::start(&stack.es_url).await;
    let topic = unique("letters-stop");
    let dead = unique("dead-letters");
    stack.create_topic(&topic, 1);
    numeric_message_index(&stack, &topic).await;
    stack.put(&format!("{PREFIX}{topic}"), "");
    proxy.set(Fault::IndexStatus(dead.clone(), 503));
    let options = Options {
        es_url: Some(proxy.url()),
        extra: format!("[dead_letter]\ndestination = \"elasticsearch\"\nindex = \"{dead}\"\n"),
        ..Options::default()
    };
    let mut daemon = Logingest::start(&stack, &options);
    let records: Vec<_> = ["1", "seven", "2"]
        .iter()
        .map(|v| (None, v.as_bytes().to_vec()))
        .collect();
    let ids = stack.produce(&topic, 1, &records).await;
    let refused = offset_of(&ids[1]);
    wait_until("the letter failing", GROUP_DEADLINE, || async {
        proxy.index_faulted() >= 2
    })
    .await;

    // Drain deadline 4 s, shutdown timeout 15 s.
    let status = daemon.terminate(Duration::from_secs(30)).await;
    let log = daemon.log();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(
        !log.contains("sink did not stop"),
        "the sink kept retrying the letter for nobody:\n{log}"
    );
    assert!(
        log.contains("partition stopped waiting while its dead letters waited"),
        "the letter's delivery did not end with its partition:\n{log}"
    );
    let committed = committed_0(&stack, &options.group, &topic);
    assert!(
        committed.is_none_or(|c| c <= refused),
        "committed {committed:?} past the undelivered letter at {refused}"
    );

    proxy.set(Fault::None);
    let _daemon = Logingest::start(&stack, &options);
    stack
        .wait_committed_through(&options.group, &topic, 1, &ids, GROUP_DEADLINE)
        .await;
    stack.assert_exactly(&dead, &[ids[1].clone()]).await;
    let letters = stack.documents(&dead).await;
    assert_eq!(letters[&ids[1]]["message"], "seven", "the full letter");
    // The abandoned chunk's stored documents are read and written again
    // by the next instance (same `_id`s): at most once each.
    stack
        .assert_delivered(&topic, &[ids[0].clone(), ids[2].clone()], 2)
        .await;
}
