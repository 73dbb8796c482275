//! A fleet of instances sharing one consumer group, against real etcd,
//! Kafka (tansu) and Elasticsearch (osmem-server): partitions are shared
//! without overlap, members leave (SIGTERM, kill -9) and join without loss,
//! and `logingest status` shows the fleet.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{logingest_cli, unique, wait_until, Logingest, Options, Stack, GROUP_DEADLINE};
use serde_json::Value;

const PREFIX: &str = "/logingest/topics/";

type Partition = (String, i64);

/// `GET /status` of one instance, `None` while it does not answer.
async fn status(http: &reqwest::Client, base: &str) -> Option<Value> {
    let response = http
        .get(format!("{base}/status"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// The partitions an instance's `/status` reports as running.
fn running(status: &Value) -> BTreeSet<Partition> {
    status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "running")
        .map(|p| {
            (
                p["topic"].as_str().unwrap_or_default().to_string(),
                p["partition"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// Running partitions of every instance in `bases`, or `None` if one does
/// not answer.
async fn ownership(
    http: &reqwest::Client,
    bases: &[String],
) -> Option<Vec<(String, BTreeSet<Partition>)>> {
    let mut owned = Vec::new();
    for base in bases {
        let s = status(http, base).await?;
        owned.push((s["instance"].as_str()?.to_string(), running(&s)));
    }
    Some(owned)
}

/// Partitions running in more than one instance.
fn doubly_owned(owned: &[(String, BTreeSet<Partition>)]) -> BTreeSet<Partition> {
    let mut seen = BTreeSet::new();
    let mut twice = BTreeSet::new();
    for (_, parts) in owned {
        for p in parts {
            if !seen.insert(p.clone()) {
                twice.insert(p.clone());
            }
        }
    }
    twice
}

/// Every partition of `expected` runs in exactly one of `bases`, in `polls`
/// consecutive polls.
async fn shared_exactly(
    http: &reqwest::Client,
    bases: &[String],
    expected: &BTreeSet<Partition>,
    polls: usize,
) -> bool {
    for i in 0..polls {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(owned) = ownership(http, bases).await else {
            return false;
        };
        let union: BTreeSet<Partition> = owned.iter().flat_map(|(_, p)| p.clone()).collect();
        if &union != expected || !doubly_owned(&owned).is_empty() {
            return false;
        }
    }
    true
}

fn all_partitions(topics: &[(&str, i64)]) -> BTreeSet<Partition> {
    topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
        .collect()
}

/// Records read by one instance (all topics), from its `/metrics`, which
/// must answer and list at least one topic.
async fn read_total(member: &Logingest) -> f64 {
    let metrics = member
        .metrics()
        .await
        .unwrap_or_else(|| panic!("{}/metrics does not answer", member.http));
    let values: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with("logingest_documents_read_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .collect();
    assert!(!values.is_empty(), "{} has read nothing", member.http);
    values.iter().sum()
}

/// Document counts of `index` per partition `0..partitions`.
async fn partition_counts(stack: &Stack, index: &str, partitions: i64) -> BTreeMap<i64, u64> {
    let http = reqwest::Client::new();
    let _ = http
        .post(format!("{}/{index}/_refresh", stack.es_url))
        .send()
        .await;
    let mut counts = BTreeMap::new();
    for p in 0..partitions {
        let count = partition_count(&http, &stack.es_url, index, p)
            .await
            .unwrap_or_else(|| panic!("no count of {index} partition {p}"));
        counts.insert(p, count);
    }
    counts
}

/// Waits until every partition of `index` grew past `before`: the new
/// owners of handed-over partitions wrote their first batches, which is
/// where anything read again would be.
async fn every_partition_grew(stack: &Stack, index: &str, before: &BTreeMap<i64, u64>) {
    wait_until(
        "every partition indexed more after the change",
        GROUP_DEADLINE,
        || async {
            let now = partition_counts(stack, index, before.len() as i64).await;
            now.iter().all(|(p, n)| *n > before[p])
        },
    )
    .await;
}

/// Documents of `index` from partition `partition`.
async fn partition_count(
    http: &reqwest::Client,
    es: &str,
    index: &str,
    partition: i64,
) -> Option<u64> {
    let body: Value = http
        .post(format!("{es}/{index}/_count"))
        .json(&serde_json::json!({"query": {"term": {"kafka.partition": partition}}}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["count"].as_u64()
}

/// A time a partition's document count did not grow while lines were
/// produced to it.
#[derive(Debug)]
struct Stall {
    partition: i64,
    from: Instant,
    length: Duration,
}

/// What the background monitor saw while the fleet changed.
#[derive(Default)]
struct Observed {
    /// Stalls of more than a second.
    stalls: Vec<Stall>,
    /// Partitions seen running in two instances in two consecutive polls.
    overlaps: Vec<BTreeSet<Partition>>,
    /// Polls in which every partition's count was read.
    counted: usize,
    /// Polls in which every instance's `/status` answered.
    owned: usize,
}

/// Polls the instances' `/status` and each partition's document count
/// until `stop`; stalls are counted while `producing`.
fn monitor(
    stack: &Stack,
    index: String,
    partitions: i64,
    bases: Arc<Mutex<Vec<String>>>,
    producing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Observed> {
    let es = stack.es_url.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut seen = Observed::default();
        let mut last: BTreeMap<i64, (u64, Instant)> = BTreeMap::new();
        let mut previous_overlap = BTreeSet::new();
        while !stop.load(Ordering::Relaxed) {
            let _ = http.post(format!("{es}/{index}/_refresh")).send().await;
            let mut all_counted = true;
            for p in 0..partitions {
                let Some(count) = partition_count(&http, &es, &index, p).await else {
                    all_counted = false;
                    continue;
                };
                let now = Instant::now();
                let (last_count, since) = last.entry(p).or_insert((count, now));
                if count > *last_count || !producing.load(Ordering::Relaxed) {
                    let length = now - *since;
                    if length > Duration::from_secs(1) {
                        seen.stalls.push(Stall {
                            partition: p,
                            from: *since,
                            length,
                        });
                    }
                    (*last_count, *since) = (count, now);
                }
            }
            seen.counted += usize::from(all_counted);
            let current = bases.lock().unwrap().clone();
            if let Some(owned) = ownership(&http, &current).await {
                seen.owned += 1;
                let overlap = doubly_owned(&owned);
                let persistent: BTreeSet<_> =
                    overlap.intersection(&previous_overlap).cloned().collect();
                if !persistent.is_empty() {
                    seen.overlaps.push(persistent);
                }
                previous_overlap = overlap;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen
    })
}

/// Every partition of `expected` runs in exactly one of `bases`, and every
/// instance runs at least one, in 3 consecutive polls.
async fn settled(http: &reqwest::Client, bases: &[String], expected: &BTreeSet<Partition>) -> bool {
    shared_exactly(http, bases, expected, 3).await
        && ownership(http, bases)
            .await
            .is_some_and(|o| o.iter().all(|(_, p)| !p.is_empty()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_shares_partitions_and_survives_sigterm_kill_9_and_a_new_member() {
    let started = Instant::now();
    let stack = Stack::start();
    let (main, side) = (unique("fleet"), unique("fleet-side"));
    stack.create_topic(&main, 6);
    stack.create_topic(&side, 2);
    stack.put(&format!("{PREFIX}{main}"), "");
    stack.put(&format!("{PREFIX}{side}"), "");
    let expected = all_partitions(&[(&main, 6), (&side, 2)]);
    // A backlog, then a steady stream during the whole test.
    let mut ids = stack.produce_lines(&main, 6, 600).await;
    let side_ids = stack.produce_lines(&side, 2, 40).await;
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = stack.produce_steadily(&main, 6, 60, stop_producing.clone());

    let options = Options::default();
    let mut fleet: Vec<Logingest> = (0..3).map(|_| Logingest::start(&stack, &options)).collect();
    let bases = Arc::new(Mutex::new(
        fleet.iter().map(|l| l.http.clone()).collect::<Vec<_>>(),
    ));
    let current = || bases.lock().unwrap().clone();
    let http = reqwest::Client::new();
    wait_until(
        "3 instances share the 8 partitions",
        GROUP_DEADLINE,
        || async { settled(&http, &current(), &expected).await },
    )
    .await;
    let owned = ownership(&http, &current()).await.unwrap();
    eprintln!(
        "{:.1?} shared by 3: {:?}",
        started.elapsed(),
        owned.iter().map(|(i, p)| (i, p.len())).collect::<Vec<_>>()
    );
    wait_until("the backlog is indexed", GROUP_DEADLINE, || async {
        stack.count_or_zero(&main).await >= 600
    })
    .await;
    let mut phases = vec![("3 members, steady", Instant::now())];
    let producing = Arc::new(AtomicBool::new(true));
    let stop_monitor = Arc::new(AtomicBool::new(false));
    let watcher = monitor(
        &stack,
        main.clone(),
        6,
        bases.clone(),
        producing.clone(),
        stop_monitor.clone(),
    );

    let before = stack.count_or_zero(&main).await;
    wait_until("the stream flows", Duration::from_secs(20), || async {
        stack.count_or_zero(&main).await >= before + 150
    })
    .await;
    // Redelivered writes are counted per phase: `_version - 1` summed over
    // the index after each change, once every partition moved on.
    let steady_redelivered = stack.redelivered_so_far(&main).await;
    eprintln!("redelivered: {steady_redelivered} while 3 members share the partitions");

    // SIGTERM: it drains, commits, leaves the group and exits 0; the two
    // others take its partitions.
    let mut read = 0.0;
    let mut leaving = fleet.remove(0);
    bases.lock().unwrap().retain(|b| b != &leaving.http);
    phases.push(("sigterm", Instant::now()));
    read += read_total(&leaving).await;
    let exit = leaving.terminate(Duration::from_secs(30)).await;
    assert!(exit.success(), "SIGTERM exit status {exit}");
    wait_until(
        "2 instances share the partitions",
        GROUP_DEADLINE,
        || async { settled(&http, &current(), &expected).await },
    )
    .await;
    eprintln!("{:.1?} sigterm handled", started.elapsed());
    every_partition_grew(&stack, &main, &partition_counts(&stack, &main, 6).await).await;
    let after_sigterm = stack.redelivered_so_far(&main).await;
    let sigterm_redelivered = after_sigterm - steady_redelivered;
    eprintln!("redelivered: {sigterm_redelivered} after a member left with SIGTERM");

    // kill -9: its partitions move after the session timeout.
    let mut crashed = fleet.remove(0);
    bases.lock().unwrap().retain(|b| b != &crashed.http);
    phases.push(("kill -9", Instant::now()));
    read += read_total(&crashed).await;
    let crashed_owned = running(
        &status(&http, &crashed.http)
            .await
            .expect("status of the member to kill"),
    );
    crashed.kill();
    // What its partitions' next owner writes again: the documents indexed
    // at or after their committed offsets when it died.
    let mut kill_allowed = 0;
    for (topic, partitions) in [(&main, 6), (&side, 2)] {
        let committed: BTreeMap<i32, Option<i64>> = stack
            .committed(&options.group, topic, partitions)
            .into_iter()
            .filter(|(p, _)| crashed_owned.contains(&(topic.clone(), i64::from(*p))))
            .collect();
        kill_allowed += stack.settled_indexed_from(topic, &committed).await;
    }
    eprintln!(
        "kill -9 of a member owning {crashed_owned:?}: {kill_allowed} documents indexed after its last commit"
    );
    wait_until(
        "the survivor owns every partition",
        GROUP_DEADLINE,
        || async { settled(&http, &current(), &expected).await },
    )
    .await;
    eprintln!("{:.1?} kill -9 handled", started.elapsed());
    every_partition_grew(&stack, &main, &partition_counts(&stack, &main, 6).await).await;
    let after_kill = stack.redelivered_so_far(&main).await;
    let kill_redelivered = after_kill - after_sigterm;
    eprintln!("redelivered: {kill_redelivered} after kill -9 of a member (allowed {kill_allowed})");

    // A new member joins and gets its share.
    phases.push(("new member", Instant::now()));
    fleet.push(Logingest::start(&stack, &options));
    bases.lock().unwrap().push(fleet[1].http.clone());
    wait_until(
        "the survivor and the new member share the partitions",
        GROUP_DEADLINE,
        || async { settled(&http, &current(), &expected).await },
    )
    .await;
    eprintln!("{:.1?} new member has its share", started.elapsed());
    every_partition_grew(&stack, &main, &partition_counts(&stack, &main, 6).await).await;
    let after_join = stack.redelivered_so_far(&main).await;
    let join_redelivered = after_join - after_kill;
    eprintln!("redelivered: {join_redelivered} after a new member joined");
    phases.push(("end", Instant::now()));

    stop_producing.store(true, Ordering::Relaxed);
    ids.extend(producer.await.unwrap());
    producing.store(false, Ordering::Relaxed);
    wait_until("every produced line indexed", GROUP_DEADLINE, || async {
        stack.count_or_zero(&main).await >= ids.len() as u64
    })
    .await;
    stack
        .wait_committed_through(&options.group, &main, 6, &ids, GROUP_DEADLINE)
        .await;
    stop_monitor.store(true, Ordering::Relaxed);
    let seen = watcher.await.unwrap();
    let at_end = stack.redelivered_so_far(&main).await;
    eprintln!(
        "redelivered: {} after the new member had its share",
        at_end - after_join
    );
    // Clean hand-overs (a member leaving with SIGTERM, one joining) write
    // nothing twice; a kill -9 at most what its partitions had indexed
    // after their last commit.
    assert_eq!(sigterm_redelivered, 0, "redelivered after SIGTERM");
    assert!(
        kill_redelivered <= kill_allowed,
        "{kill_redelivered} redelivered after kill -9, allowed {kill_allowed}"
    );
    assert_eq!(join_redelivered, 0, "redelivered after a member joined");
    stack.assert_delivered(&main, &ids, kill_allowed).await;
    stack.assert_exactly(&side, &side_ids).await;

    for member in &fleet {
        read += read_total(member).await;
    }
    let produced = (ids.len() + side_ids.len()) as f64;
    eprintln!(
        "{:.1?} produced {produced}, read {read} across instances ({:+.1}%)",
        started.elapsed(),
        (read - produced) / produced * 100.0,
    );
    // A stall starts at the partition's last growth, a poll or so before
    // the event that caused it: attribute it to the phase it began in, with
    // half a second of slack.
    for pair in phases.windows(2) {
        let ((name, from), (_, to)) = (pair[0], pair[1]);
        let slack = Duration::from_millis(500);
        let longest = seen
            .stalls
            .iter()
            .filter(|s| s.from + slack >= from && s.from + slack < to)
            .max_by_key(|s| s.length);
        eprintln!(
            "phase {name}: {:.1?}, longest partition stall: {}",
            to - from,
            longest.map_or("none over 1s".into(), |s| format!(
                "partition {} for {:.1?}",
                s.partition, s.length
            ))
        );
    }
    assert!(
        seen.counted >= 10 && seen.owned >= 10,
        "the monitor saw too little: {} counts, {} ownerships",
        seen.counted,
        seen.owned
    );
    assert!(
        seen.overlaps.is_empty(),
        "partitions running in two instances at once: {:?}",
        seen.overlaps
    );
    // Redeliveries after kill -9 are legitimate, bounded by what was read
    // and not committed yet (a commit interval, the in-flight batches).
    assert!(
        read <= produced * 1.2,
        "read {read} records for {produced} produced"
    );
}

/// `logingest status` with the stack's endpoints in the environment and a
/// config naming the group.
fn status_cli(stack: &Stack, group: &str, output: &str) -> std::process::Output {
    let config = stack.dir.path().join(format!("status-{group}.toml"));
    std::fs::write(&config, format!("[kafka]\ngroup_id = \"{group}\"\n")).unwrap();
    logingest_cli(
        &[
            "status",
            "--config",
            config.to_str().unwrap(),
            "--output",
            output,
        ],
        &[
            ("LOGINGEST_ETCD_ENDPOINTS", &stack.etcd_url),
            ("LOGINGEST_KAFKA_BROKERS", &stack.brokers),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_shows_members_owners_and_lag() {
    let stack = Stack::start();
    let (topic, ghost) = (unique("shown"), unique("ghost"));
    stack.create_topic(&topic, 4);
    stack.put(&format!("{PREFIX}{topic}"), "");
    // Registered, never created in Kafka.
    stack.put(&format!("{PREFIX}{ghost}"), "");
    let ids = stack.produce_lines(&topic, 4, 200).await;

    let options = Options::default();
    let fleet = [
        Logingest::start(&stack, &options),
        Logingest::start(&stack, &options),
    ];
    let bases: Vec<String> = fleet.iter().map(|l| l.http.clone()).collect();
    let http = reqwest::Client::new();
    let expected = all_partitions(&[(&topic, 4)]);
    wait_until(
        "2 instances share the 4 partitions",
        GROUP_DEADLINE,
        || async { shared_exactly(&http, &bases, &expected, 2).await },
    )
    .await;
    wait_until("everything indexed", GROUP_DEADLINE, || async {
        stack.count(&topic).await == Some(200)
    })
    .await;
    stack.assert_exactly(&topic, &ids).await;
    let owned: BTreeMap<Partition, String> = ownership(&http, &bases)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|(i, ps)| ps.into_iter().map(move |p| (p, i.clone())))
        .collect();
    let instances: BTreeSet<&String> = owned.values().collect();
    assert_eq!(
        instances.len(),
        2,
        "both instances own partitions: {owned:?}"
    );

    // JSON: wait until the commits of everything indexed reached the group.
    let group = options.group.clone();
    let mut report = Value::Null;
    wait_until(
        "status shows every produced line committed",
        Duration::from_secs(20),
        || {
            let out = status_cli(&stack, &group, "json");
            assert!(
                out.status.success(),
                "logingest status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            report = serde_json::from_slice(&out.stdout).expect("status JSON");
            let done = report["partitions"]
                .as_array()
                .is_some_and(|ps| ps.len() == 4 && ps.iter().all(|p| p["committed_offset"] == 50));
            async move { done }
        },
    )
    .await;
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    eprintln!("status warnings: {warnings:#?}");
    let members: BTreeSet<&str> = report["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["instance"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        instances.iter().map(|s| s.as_str()).collect(),
        "{report:#}"
    );
    // Owners come from the members' assignments (DescribeGroups). A broker
    // that does not return them (tansu 0.6) must show "unknown", never a
    // wrong or missing owner.
    let owners_known = report["owners_known"] == true;
    if !owners_known {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("member_assignment empty")),
            "{warnings:?}"
        );
    }
    for p in report["partitions"].as_array().unwrap() {
        let tp = (
            p["topic"].as_str().unwrap().to_string(),
            p["partition"].as_i64().unwrap(),
        );
        let expected_owner = owners_known.then(|| owned[&tp].as_str());
        assert_eq!(p["owner"].as_str(), expected_owner, "{p}");
        // Lag from the high watermark (ListOffsets): 0 when the broker
        // answers the real end offset; unknown, and said so, when it
        // answers one below the commit (tansu 0.6).
        match p["high_watermark"].as_i64() {
            Some(50) => assert_eq!(p["lag"], 0, "{p}"),
            Some(high) if high < 50 => {
                assert!(p["lag"].is_null(), "{p}");
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.contains("high watermark below the committed offset")),
                    "{warnings:?}"
                );
            }
            other => panic!("high watermark {other:?}: {p}"),
        }
    }
    let unowned = report["unowned_topics"].as_array().unwrap();
    assert_eq!(unowned.len(), 1, "{report:#}");
    assert_eq!(unowned[0]["topic"], ghost.as_str());
    assert_eq!(unowned[0]["reason"], "not in Kafka");

    // Text: what an operator reads.
    let out = status_cli(&stack, &group, "text");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    for instance in &instances {
        assert!(
            text.lines().any(|l| l.starts_with(instance.as_str())),
            "{instance} missing:\n{text}"
        );
    }
    for ((t, p), owner) in &owned {
        let row = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .take(2)
                    .eq([t.as_str(), &p.to_string()])
            })
            .unwrap_or_else(|| panic!("no row for {t}/{p}:\n{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        let owner = if owners_known { owner.as_str() } else { "?" };
        assert_eq!(cells[2..4], [owner, "50"], "{row}");
    }
    let unowned = text
        .split("REGISTERED TOPICS WITH NO OWNER")
        .nth(1)
        .unwrap_or_default();
    assert!(
        unowned
            .lines()
            .any(|l| l.starts_with(&ghost) && l.contains("not in Kafka")),
        "{text}"
    );
    assert!(!unowned.contains(&topic), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_names_the_unreachable_endpoint() {
    let stack = Stack::start();
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = logingest_cli(
        &["status"],
        &[
            ("LOGINGEST_ETCD_ENDPOINTS", &stack.etcd_url),
            ("LOGINGEST_KAFKA_BROKERS", &dead),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    eprintln!("{stderr}");
    assert!(stderr.contains(&format!("kafka ({dead})")), "{stderr}");

    let dead_etcd = format!("http://127.0.0.1:{}", common::free_port());
    let started = Instant::now();
    let out = logingest_cli(
        &["status"],
        &[
            ("LOGINGEST_ETCD_ENDPOINTS", &dead_etcd),
            ("LOGINGEST_KAFKA_BROKERS", &stack.brokers),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("etcd ({dead_etcd})")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
}
