//! Property tests for the "parsers fuzzed" requirement: registry keys and
//! values and the configuration file never panic on any input, rejected input
//! changes nothing, and well-formed input round-trips.
//!
//! Uses the public API only. `PROPTEST_CASES` raises the case count (default
//! 256, a few seconds).

use std::collections::{BTreeMap, BTreeSet};

use logingest::config::Config;
use logingest::registry::{
    parse_collector_value, parse_topic_value, DesiredTopics, RegistryError, RegistryState,
};
use logingest::topic::{validate_index, validate_topic, NameError};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{json, Map, Value};

const PREFIX: &str = "/logingest/topics/";
const COLLECTOR: &str = "collectlogkey1";

fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        // No regression files next to the sources: a failure prints its
        // minimal input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Registry strategies
// ---------------------------------------------------------------------------

fn state() -> RegistryState {
    RegistryState::new(PREFIX, &[COLLECTOR.to_string()])
}

/// A legal Kafka topic name.
fn valid_topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,249}".prop_filter("not . or ..", |t| t != "." && t != "..")
}

/// A legal topic whose default index (lower-cased name) is legal too, i.e.
/// one that does not start with `-` or `_`.
fn defaultable_topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.][a-zA-Z0-9._-]{0,248}".prop_filter("not . or ..", |t| t != "." && t != "..")
}

/// A legal, lower-case Elasticsearch index name (at most 255 bytes).
fn valid_index() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.][a-z0-9._+-]{0,254}",
        "[a-z0-9\\p{Ll}][a-z0-9._+\\p{Ll}-]{0,60}",
    ]
    .prop_filter("not . or ..", |i| i != "." && i != "..")
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["topic", "path", "index", "Topic", "indx", ""]).prop_map(String::from),
        1 => any::<String>(),
    ]
}

/// Strings likely to sit near the validation boundaries.
fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        valid_topic(),
        valid_index(),
        select(vec![
            "", " ", ".", "..", "...", "_x", "-x", "+x", "UPPER", "a b", "a/b", "a,b", "a:b",
            "a\u{0}b", "\u{130}", "nginx",
        ])
        .prop_map(String::from),
        "[a-zA-Z0-9._-]{250,300}",
        "[a-z]{256,300}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        interesting_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A collector-like array of objects with random fields.
fn collector_like() -> impl Strategy<Value = Value> {
    let topic = prop_oneof![
        3 => interesting_string().prop_map(Value::String),
        1 => json_value(),
    ];
    let entry = (
        prop::option::weighted(0.9, topic),
        btree_map(field_name(), json_value(), 0..4),
    )
        .prop_map(|(topic, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            match topic {
                Some(t) => {
                    m.insert("topic".into(), t);
                }
                None => {
                    m.remove("topic");
                }
            }
            Value::Object(m)
        });
    vec(entry, 0..8).prop_map(Value::Array)
}

/// A prefix-form-like object: `{"index": ...}` plus maybe other fields.
fn topic_object_like() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            3 => interesting_string().prop_map(Value::String),
            1 => json_value(),
        ]),
        btree_map(field_name(), json_value(), 0..2),
    )
        .prop_map(|(index, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.remove("index");
            if let Some(i) = index {
                m.insert("index".into(), i);
            }
            Value::Object(m)
        })
}

/// Deeply nested JSON, closed or not.
fn deep_json() -> impl Strategy<Value = Vec<u8>> {
    (
        1..20_000usize,
        any::<bool>(),
        select(vec!["[", "{\"a\":", "[{\"topic\":"]),
    )
        .prop_map(|(depth, closed, open)| {
            let mut s = open.repeat(depth);
            if closed {
                s.push('1');
                for _ in 0..depth {
                    s.push_str(if open == "[" { "]" } else { "}" });
                }
            }
            s.into_bytes()
        })
}

/// Valid JSON with a byte replaced, inserted or the text truncated.
fn mutated_json() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![collector_like(), topic_object_like()],
        any::<prop::sample::Index>(),
        any::<u8>(),
        0..3u8,
    )
        .prop_map(|(v, at, byte, how)| {
            let mut b = v.to_string().into_bytes();
            let i = at.index(b.len() + 1);
            match how {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ => b.truncate(i),
            }
            b
        })
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..64),
        1 => (any::<u8>(), 0..300_000usize).prop_map(|(b, n)| vec![b; n]),
        2 => "[\\[\\]{}\":,0-9a-z \\\\.\t\n-]{0,64}".prop_map(String::into_bytes),
        2 => select(vec!["", " \n\t", "{}", "[]", "null", "{\"index\": null}", "\"x\""])
            .prop_map(|s| s.as_bytes().to_vec()),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => collector_like().prop_map(|v| v.to_string().into_bytes()),
        3 => topic_object_like().prop_map(|v| v.to_string().into_bytes()),
        1 => deep_json(),
        2 => mutated_json(),
    ]
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    let with_prefix = |t: &[u8]| [PREFIX.as_bytes(), t].concat();
    prop_oneof![
        3 => Just(COLLECTOR.as_bytes().to_vec()),
        4 => valid_topic().prop_map(move |t| with_prefix(t.as_bytes())),
        2 => interesting_string().prop_map(move |t| with_prefix(t.as_bytes())),
        2 => vec(any::<u8>(), 0..40).prop_map(move |t| with_prefix(&t)),
        1 => vec(any::<u8>(), 0..40),
        1 => (any::<u8>(), 0..100_000usize).prop_map(|(b, n)| vec![b; n]),
        1 => select(vec![
            PREFIX,
            "/logingest/topics",
            "collectlogkey1 ",
            "collectlogkey",
            "/other/key",
        ])
        .prop_map(|k| k.as_bytes().to_vec()),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    ReplaceAll(Vec<(Vec<u8>, Vec<u8>)>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (arb_key(), arb_value()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => arb_key().prop_map(Op::Delete),
        1 => vec((arb_key(), arb_value()), 0..6).prop_map(Op::ReplaceAll),
    ]
}

/// What the module docs and the public parsers say a put should do.
fn put_should_succeed(key: &[u8], value: &[u8]) -> bool {
    let Ok(key) = std::str::from_utf8(key) else {
        return false;
    };
    if key == COLLECTOR {
        return parse_collector_value(value).is_ok();
    }
    match key.strip_prefix(PREFIX) {
        None => true,
        Some(topic) => validate_topic(topic).is_ok() && parse_topic_value(topic, value).is_ok(),
    }
}

fn check_desired(desired: &DesiredTopics) -> Result<(), TestCaseError> {
    for (topic, settings) in desired {
        prop_assert!(validate_topic(topic).is_ok(), "bad topic {topic:?}");
        prop_assert!(
            validate_index(&settings.index).is_ok(),
            "bad index {:?} of {topic:?}",
            settings.index
        );
    }
    Ok(())
}

fn collector_json(topics: &[String], extra: &BTreeMap<String, Value>) -> Vec<u8> {
    let entries: Vec<Value> = topics
        .iter()
        .map(|t| {
            let mut m: Map<String, Value> = extra.clone().into_iter().collect();
            m.insert("path".into(), json!(format!("/var/log/{t}.log")));
            m.insert("topic".into(), json!(t));
            Value::Object(m)
        })
        .collect();
    Value::Array(entries).to_string().into_bytes()
}

// Small key and value universes, so that keys collide in the model check.
const MODEL_TOPICS: &[&str] = &[
    "a",
    "B",
    "c.d",
    "Nginx",
    "nginx",
    "_x",
    "-y",
    "bad topic",
    "",
];

fn model_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(COLLECTOR.as_bytes().to_vec()),
        6 => select(MODEL_TOPICS).prop_map(|t| format!("{PREFIX}{t}").into_bytes()),
        1 => select(vec![&b"/other/key"[..], b"/logingest/topics/\xff", b"\xff"])
            .prop_map(<[u8]>::to_vec),
    ]
}

fn model_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        3 => select(vec!["web", "logs-1", "a", "Upper", "_bad"])
            .prop_map(|i| json!({ "index": i }).to_string().into_bytes()),
        3 => vec(select(MODEL_TOPICS), 0..4).prop_map(|ts| {
            let ts: Vec<String> = ts.into_iter().map(String::from).collect();
            collector_json(&ts, &BTreeMap::new())
        }),
        1 => select(vec![&b"{broken"[..], b"[1]", b"{}", b"\xff", b"null", b"{\"indx\":\"a\"}"])
            .prop_map(<[u8]>::to_vec),
    ]
}

#[derive(Debug, Clone)]
enum ModelOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        3 => (model_key(), model_value()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        1 => model_key().prop_map(ModelOp::Delete),
    ]
}

const LOSSY_PREFIX: &str = "/t\u{FFFD}/";
const LOSSY_COLLECTOR: &str = "c\u{FFFD}";

fn lossy_key() -> impl Strategy<Value = Vec<u8>> {
    select(vec![
        "/t\u{FFFD}/a".as_bytes().to_vec(),
        b"/t\xff/a".to_vec(),
        LOSSY_COLLECTOR.as_bytes().to_vec(),
        b"c\xff".to_vec(),
    ])
}

fn lossy_model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        3 => (lossy_key(), model_value()).prop_map(|(k, v)| ModelOp::Put(k, v)),
        1 => lossy_key().prop_map(ModelOp::Delete),
    ]
}

/// Applies `ops`, then the full read `read`, and compares with a fresh
/// registry fed each read key's good value or, for a bad one, that key's
/// last accepted value.
fn check_full_read(
    prefix: &str,
    collector: &str,
    ops: Vec<ModelOp>,
    read: BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(), TestCaseError> {
    let new_state = || RegistryState::new(prefix, &[collector.to_string()]);
    let mut s = new_state();
    let mut last_good = BTreeMap::new();
    for op in ops {
        match op {
            ModelOp::Put(key, value) => {
                if s.put(&key, &value).is_ok() {
                    last_good.insert(key, value);
                }
            }
            ModelOp::Delete(key) => {
                s.delete(&key);
                last_good.remove(&key);
            }
        }
    }
    let mut expected = new_state();
    for (key, value) in &read {
        if expected.put(key, value).is_err() {
            if let Some(previous) = last_good.get(key) {
                prop_assert!(expected.put(key, previous).is_ok());
            }
        }
    }
    let errors = s.replace_all(pairs(&read));
    prop_assert_eq!(&s.desired(), &expected.desired(), "errors {:?}", errors);
    Ok(())
}

fn pairs(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> impl Iterator<Item = (&[u8], &[u8])> {
    map.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Any sequence of puts, deletes and full reads: no panic, a rejected
    /// put (or one reported as no change) leaves `desired()` as it was, and
    /// every desired topic and index is legal.
    #[test]
    fn registry_never_panics_and_rejects_atomically(ops in vec(arb_op(), 1..12)) {
        let mut s = state();
        for op in ops {
            let before = s.desired();
            match op {
                Op::Put(key, value) => {
                    let expected = put_should_succeed(&key, &value);
                    let result = s.put(&key, &value);
                    prop_assert_eq!(result.is_ok(), expected, "put result {:?}", result);
                    if !matches!(result, Ok(true)) {
                        prop_assert_eq!(&s.desired(), &before, "put {:?} changed desired", result);
                    }
                }
                Op::Delete(key) => {
                    if !s.delete(&key) {
                        prop_assert_eq!(&s.desired(), &before, "delete reported no change");
                    }
                }
                Op::ReplaceAll(kvs) => {
                    let errors = s.replace_all(kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
                    for (key, _) in &errors {
                        prop_assert!(
                            kvs.iter().any(|(k, _)| String::from_utf8_lossy(k) == key.as_str()),
                            "error for a key not read: {key:?}"
                        );
                    }
                }
            }
            check_desired(&s.desired())?;
        }
    }

    /// The public parsers never panic on anything.
    #[test]
    fn value_parsers_never_panic(topic in interesting_string(), value in arb_value()) {
        if let Ok(settings) = parse_topic_value(&topic, &value) {
            prop_assert!(validate_index(&settings.index).is_ok());
        }
        if let Ok(topics) = parse_collector_value(&value) {
            for t in &topics {
                prop_assert!(validate_topic(t).is_ok());
                prop_assert!(validate_index(&t.to_ascii_lowercase()).is_ok());
            }
        }
        let _ = validate_topic(&topic);
        let _ = validate_index(&topic);
    }

    /// `{"index": name}` under `<prefix><topic>` is accepted for every legal
    /// topic and index, and `desired()` shows that index.
    #[test]
    fn prefix_form_with_index_round_trips(topic in valid_topic(), index in valid_index()) {
        let mut s = state();
        let key = format!("{PREFIX}{topic}");
        let value = json!({ "index": index }).to_string();
        prop_assert_eq!(s.put(key.as_bytes(), value.as_bytes()), Ok(true));
        let desired = s.desired();
        prop_assert_eq!(desired.len(), 1);
        prop_assert_eq!(&desired[&topic].index, &index);
        prop_assert!(s.delete(key.as_bytes()));
        prop_assert!(s.desired().is_empty());
    }

    /// Without an index the default is the lower-cased topic; a legal topic
    /// starting with `-` or `_` is refused because that default is not a
    /// legal index name (it needs an explicit `index`).
    #[test]
    fn prefix_form_default_index(
        topic in valid_topic(),
        value in select(vec!["", " \n", "{}", "{\"index\": null}"]),
    ) {
        let mut s = state();
        let result = s.put(format!("{PREFIX}{topic}").as_bytes(), value.as_bytes());
        if topic.starts_with(['-', '_']) {
            prop_assert!(matches!(result, Err(RegistryError::Name(NameError::Index(..)))), "{result:?}");
            prop_assert!(s.desired().is_empty());
        } else {
            prop_assert_eq!(result, Ok(true));
            prop_assert_eq!(&s.desired()[&topic].index, &topic.to_ascii_lowercase());
        }
    }

    /// A collector array of legal topics (with arbitrary extra fields) is
    /// accepted and yields exactly those topics with their default index.
    #[test]
    fn collector_form_round_trips(
        topics in vec(defaultable_topic(), 0..12),
        extra in btree_map(field_name(), json_value(), 0..3),
    ) {
        let mut s = state();
        prop_assert!(s.put(COLLECTOR.as_bytes(), &collector_json(&topics, &extra)).is_ok());
        let desired = s.desired();
        let expected: BTreeSet<&String> = topics.iter().collect();
        prop_assert_eq!(desired.keys().collect::<BTreeSet<_>>(), expected);
        for t in &topics {
            prop_assert_eq!(&desired[t].index, &t.to_ascii_lowercase());
        }
    }

    /// Incremental puts and deletes end where a full read of each key's final
    /// state ends: replace_all of every key's last accepted value on a fresh
    /// registry, and replace_all of every key's last written value (bad ones
    /// keeping their last good contribution) on the registry itself.
    #[test]
    fn incremental_updates_match_full_read(ops in vec(model_op(), 0..40)) {
        let mut s = state();
        let mut last_good = BTreeMap::new();
        let mut last_written = BTreeMap::new();
        for op in ops {
            match op {
                ModelOp::Put(key, value) => {
                    if s.put(&key, &value).is_ok() {
                        last_good.insert(key.clone(), value.clone());
                    }
                    last_written.insert(key, value);
                }
                ModelOp::Delete(key) => {
                    s.delete(&key);
                    last_good.remove(&key);
                    last_written.remove(&key);
                }
            }
        }
        let desired = s.desired();
        check_desired(&desired)?;

        let mut fresh = state();
        let errors = fresh.replace_all(pairs(&last_good));
        prop_assert!(errors.is_empty(), "{errors:?}");
        prop_assert_eq!(&fresh.desired(), &desired);

        let mut reread = s.clone();
        reread.replace_all(pairs(&last_written));
        prop_assert_eq!(&reread.desired(), &desired);
    }

    /// A full read after any history (e.g. one whose deletes the watcher
    /// missed) gives what the docs say: each read key's value if good, else
    /// that same key's previous good contribution; keys not read are gone.
    #[test]
    fn full_read_after_any_history_matches_model(
        ops in vec(model_op(), 0..30),
        read in btree_map(model_key(), model_value(), 0..8),
    ) {
        check_full_read(PREFIX, COLLECTOR, ops, read)?;
    }

    /// The same with a configured prefix and collector key containing U+FFFD
    /// and non-UTF-8 keys that `from_utf8_lossy` maps onto them.
    #[test]
    fn full_read_with_lossy_key_collisions(
        ops in vec(lossy_model_op(), 0..30),
        read in btree_map(lossy_key(), model_value(), 0..4),
    ) {
        check_full_read(LOSSY_PREFIX, LOSSY_COLLECTOR, ops, read)?;
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Every section and key of the configuration file (src/config.rs).
const SCHEMA: &[(&str, &[&str])] = &[
    ("instance", &["id"]),
    (
        "etcd",
        &["endpoints", "prefix", "collector_keys", "connect_timeout"],
    ),
    (
        "kafka",
        &[
            "brokers",
            "group_id",
            "start_from",
            "commit_interval",
            "drain_timeout",
            "static_membership",
            "options",
        ],
    ),
    (
        "elasticsearch",
        &[
            "url",
            "username",
            "password",
            "request_timeout",
            "max_item_attempts",
            "max_item_retry_duration",
        ],
    ),
    (
        "batch",
        &[
            "max_documents",
            "max_bytes",
            "linger",
            "max_in_flight_per_partition",
            "max_in_flight",
        ],
    ),
    ("retry", &["initial_backoff", "max_backoff"]),
    ("http", &["listen"]),
    ("shutdown", &["timeout"]),
];

/// Marks the password so a leak is found whatever escaping is used.
const PASSWORD_MARK: &str = "hunter2-";

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "session.timeout.ms",
            "group.id",
            "group.instance.id",
            "bootstrap.servers",
            "enable.auto.offset.store",
            "security.protocol",
        ])
        .prop_map(toml_str),
        1 => "[a-z_.]{1,12}".prop_map(|k| toml_str(&k)),
        1 => any::<String>().prop_map(|k| toml_str(&k)),
    ]
}

fn duration_text() -> impl Strategy<Value = String> {
    let unit = select(vec![
        "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "days", "w", "weeks", "M",
        "months", "y", "years", "",
    ]);
    prop_oneof![
        (0..100_000u64, unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (any::<u64>(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(s, n)| format!("{s}s {n}ns")),
        (0..1000u64, unit.clone(), 0..1000u64, unit)
            .prop_map(|(a, u, b, v)| format!("{a}{u} {b}{v}")),
        "[0-9]{1,30}[a-zA-Z ]{0,6}",
    ]
}

/// A TOML value of a random type, sometimes not TOML at all.
fn any_toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<String>().prop_map(|s| toml_str(&s)),
        duration_text().prop_map(|s| toml_str(&s)),
        "(https?|ftp)?(://)?[a-z0-9.:@\\[\\]/%-]{0,30}".prop_map(|s| toml_str(&s)),
        "[0-9.:\\[\\]a-f%]{0,30}".prop_map(|s| toml_str(&s)),
        select(vec!["earliest", "latest", "Earliest", ""]).prop_map(toml_str),
        "[0-9]{0,8}".prop_map(|s| toml_str(&s)),
        any::<i64>().prop_map(|n| n.to_string()),
        select(vec![
            "0",
            "1",
            "-1",
            "9223372036854775807",
            "-9223372036854775808",
            "18446744073709551615",
            "4294967296",
            "1_000",
            "0x10",
            "0o7",
            "0b1",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "true",
            "false",
            "1979-05-27T07:32:00Z",
            "07:32:00",
            "1979-05-27",
            "[]",
            "{}",
        ])
        .prop_map(String::from),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[^\n]{0,20}",
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(", "))),
            vec((toml_key(), inner), 0..4).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

fn string_list(item: BoxedStrategy<String>) -> BoxedStrategy<String> {
    vec(item, 0..4)
        .prop_map(|v| {
            let items: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
            format!("[{}]", items.join(", "))
        })
        .boxed()
}

/// A value of the key's own type most of the time, of a random type else.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    let text = prop_oneof![
        3 => "[a-zA-Z0-9:/._-]{0,20}",
        1 => any::<String>(),
    ]
    .boxed();
    let typed: BoxedStrategy<String> = match key {
        "endpoints" | "brokers" | "collector_keys" => string_list(
            prop_oneof!["(http://)?[a-z0-9.]{1,10}:[0-9]{1,5}", any::<String>(),].boxed(),
        ),
        "url" => prop_oneof![
            "(https?://)?[a-z0-9.]{0,12}(:[0-9]{1,6})?(/[a-z]{0,5})?",
            any::<String>(),
        ]
        .prop_map(|s| toml_str(&s))
        .boxed(),
        "static_membership" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "prefix" | "group_id" | "username" | "password" | "id" => {
            text.prop_map(|s| toml_str(&s)).boxed()
        }
        "start_from" => select(vec!["earliest", "latest", "none"])
            .prop_map(toml_str)
            .boxed(),
        "listen" => prop_oneof![
            2 => "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1?\\]):[0-9]{1,4}",
            1 => "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}:[0-9]{1,5}",
            1 => "\\[[0-9a-f:]{2,20}\\]:[0-9]{1,5}",
            1 => any::<String>(),
        ]
        .prop_map(|s| toml_str(&s))
        .boxed(),
        "options" => btree_map(toml_key(), "[0-9]{0,6}|[a-z_]{0,8}", 0..4)
            .prop_map(|m| {
                let body: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k} = {}", toml_str(v)))
                    .collect();
                format!("{{ {} }}", body.join(", "))
            })
            .boxed(),
        k if k.starts_with("max_") => prop_oneof![4 => 0..100_000i64, 1 => any::<i64>()]
            .prop_map(|n| n.to_string())
            .boxed(),
        _ => duration_text().prop_map(|s| toml_str(&s)).boxed(),
    };
    prop_oneof![8 => typed, 1 => any_toml_value()].boxed()
}

/// One `[section]` with a random subset of its keys.
fn section() -> impl Strategy<Value = (&'static str, Vec<(String, String)>)> {
    select(SCHEMA).prop_flat_map(|(name, keys)| {
        subsequence(keys.to_vec(), 0..=keys.len()).prop_flat_map(move |ks| {
            let lines: Vec<_> = ks
                .into_iter()
                .filter(|&k| k != "password")
                .map(|k| value_for(k).prop_map(move |v| (k.to_string(), v)))
                .collect();
            lines.prop_map(move |lines| (name, lines))
        })
    })
}

#[derive(Debug, Clone)]
struct Doc {
    text: String,
    password: Option<String>,
}

/// A TOML-like configuration document built from the real sections and keys.
fn config_doc() -> impl Strategy<Value = Doc> {
    let sections = vec(section(), 0..7).prop_map(|mut v| {
        // Distinct sections, so that documents often parse.
        let mut seen = BTreeSet::new();
        v.retain(|(name, _)| seen.insert(*name));
        v
    });
    let password = prop::option::weighted(
        0.5,
        prop_oneof!["[a-zA-Z0-9]{0,12}", any::<String>()]
            .prop_map(|s| format!("{PASSWORD_MARK}{s}")),
    );
    let extra = prop::option::weighted(0.1, (0..SCHEMA.len(), "[a-z_]{1,10}", any_toml_value()));
    let raw_options = prop::option::weighted(0.2, btree_map(toml_key(), any_toml_value(), 0..4));
    (sections, password, extra, raw_options).prop_map(|(sections, password, extra, raw_options)| {
        let mut text = String::new();
        let mut put_password = password.is_some();
        let mut sections = sections;
        if put_password && !sections.iter().any(|(n, _)| *n == "elasticsearch") {
            sections.push(("elasticsearch", Vec::new()));
        }
        for (i, (name, lines)) in sections.iter().enumerate() {
            text.push_str(&format!("[{name}]\n"));
            for (k, v) in lines {
                text.push_str(&format!("{k} = {v}\n"));
            }
            if let Some((at, key, value)) = &extra {
                if *at == i {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
            if *name == "elasticsearch" && put_password {
                if let Some(pw) = &password {
                    if !lines.iter().any(|(k, _)| k == "username") {
                        text.push_str("username = \"elastic\"\n");
                    }
                    text.push_str(&format!("password = {}\n", toml_str(pw)));
                }
                put_password = false;
            }
        }
        if let Some(options) = raw_options {
            text.push_str("[kafka.options]\n");
            for (k, v) in options {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        Doc { text, password }
    })
}

/// Deeply nested TOML arrays and inline tables, closed or not.
fn deep_toml() -> impl Strategy<Value = String> {
    (
        1..20_000usize,
        any::<bool>(),
        select(vec!["[", "{a=", "[{a="]),
    )
        .prop_map(|(depth, closed, open)| {
            let mut s = format!("[kafka]\noptions = {}", open.repeat(depth));
            if closed {
                s.push('1');
                let close = match open {
                    "[" => "]",
                    "{a=" => "}",
                    _ => "}]",
                };
                s.push_str(&close.repeat(depth));
            }
            s.push('\n');
            s
        })
}

/// Checks a successfully parsed configuration: `validate` does not panic and
/// the redacted print parses back to the same configuration.
fn check_parsed(config: &Config) -> Result<(), TestCaseError> {
    let valid = config.validate().is_ok();
    let printed = config.to_redacted_toml();
    prop_assert!(
        !printed.starts_with("# cannot print config"),
        "{printed}\nfrom {config:?}"
    );
    let back = match Config::parse(&printed) {
        Ok(back) => back,
        Err(e) => return Err(TestCaseError::fail(format!("{e}\nprinted:\n{printed}"))),
    };
    prop_assert_eq!(format!("{back:?}"), format!("{config:?}"));
    prop_assert_eq!(back.to_redacted_toml(), printed);
    prop_assert_eq!(back.validate().is_ok(), valid);
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Arbitrary text: no panic; whatever parses prints and parses back.
    #[test]
    fn config_parse_never_panics_on_text(
        text in prop_oneof![
            any::<String>(),
            "((\\[[a-z._]{0,14}\\]|[a-z_.\"]{0,14} ?= ?[^\n]{0,24})\n){0,8}",
        ],
    ) {
        if let Ok(config) = Config::parse(&text) {
            check_parsed(&config)?;
        }
    }

    /// Documents of the real sections and keys with random values: no panic,
    /// round trip, and the password never printed.
    #[test]
    fn config_documents_round_trip_and_redact(doc in config_doc()) {
        if let Some(pw) = &doc.password {
            let without = doc.text.replace(&format!("password = {}\n", toml_str(pw)), "");
            prop_assume!(!without.contains(PASSWORD_MARK));
        }
        if let Ok(config) = Config::parse(&doc.text) {
            check_parsed(&config)?;
            if let Some(pw) = &doc.password {
                let exposed = config.elasticsearch.password.as_ref().map(|p| p.expose());
                prop_assert_eq!(exposed, Some(pw.as_str()));
                let printed = config.to_redacted_toml();
                prop_assert!(!printed.contains(PASSWORD_MARK), "password printed:\n{printed}");
                prop_assert!(printed.contains("<redacted>"));
                let debug = format!("{config:?}");
                prop_assert!(!debug.contains(PASSWORD_MARK), "password in Debug: {}", debug);
            }
        }
    }

    /// Any duration humantime accepts in every duration field prints and
    /// parses back to the same value.
    #[test]
    fn config_durations_round_trip(durations in vec(duration_text(), 9)) {
        let keys = [
            ("etcd", "connect_timeout"),
            ("kafka", "commit_interval"),
            ("kafka", "drain_timeout"),
            ("elasticsearch", "request_timeout"),
            ("elasticsearch", "max_item_retry_duration"),
            ("batch", "linger"),
            ("retry", "initial_backoff"),
            ("retry", "max_backoff"),
            ("shutdown", "timeout"),
        ];
        for ((section, key), value) in keys.iter().zip(&durations) {
            let text = format!("[{section}]\n{key} = {}\n", toml_str(value));
            if let Ok(config) = Config::parse(&text) {
                check_parsed(&config)?;
            }
        }
    }

    /// Deep nesting is refused or accepted, never a crash.
    #[test]
    fn config_deep_nesting_does_not_crash(text in deep_toml()) {
        if let Ok(config) = Config::parse(&text) {
            check_parsed(&config)?;
        }
    }
}

// ---------------------------------------------------------------------------
// OTLP/JSON logs requests (`format = "otlp_json"`)
// ---------------------------------------------------------------------------

/// An OTLP `AnyValue`, mostly well-formed, sometimes of the wrong type.
fn otlp_any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        interesting_string().prop_map(|s| json!({"stringValue": s})),
        any::<bool>().prop_map(|b| json!({"boolValue": b})),
        any::<i64>().prop_map(|i| json!({"intValue": i.to_string()})),
        any::<i64>().prop_map(|i| json!({"intValue": i})),
        any::<f64>().prop_map(|f| json!({"doubleValue": f})),
        select(vec!["NaN", "Infinity", "-Infinity", "1e400", "x"])
            .prop_map(|s| json!({"doubleValue": s})),
        "[A-Za-z0-9+/=!]{0,12}".prop_map(|b| json!({"bytesValue": b})),
        Just(json!({})),
        json_value().prop_map(|v| json!({"intValue": v})),
        json_value(),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|values| json!({"arrayValue": {"values": values}})),
            vec((interesting_string(), inner), 0..6).prop_map(|kvs| {
                let values: Vec<Value> = kvs
                    .into_iter()
                    .map(|(key, value)| json!({"key": key, "value": value}))
                    .collect();
                json!({"kvlistValue": {"values": values}})
            }),
        ]
    })
}

fn otlp_log_record() -> impl Strategy<Value = Value> {
    let time = prop_oneof![
        any::<u64>().prop_map(|t| Value::String(t.to_string())),
        any::<u64>().prop_map(Value::from),
        json_value(),
    ];
    let id = prop_oneof!["[0-9a-fA-F]{0,40}", interesting_string()];
    (
        time.clone(),
        time,
        otlp_any_value(),
        vec((interesting_string(), otlp_any_value()), 0..4),
        id.clone(),
        id,
        prop_oneof![any::<i32>().prop_map(Value::from), json_value()],
    )
        .prop_map(|(t, o, body, attributes, trace, span, severity)| {
            let attributes: Vec<Value> = attributes
                .into_iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect();
            json!({"timeUnixNano": t, "observedTimeUnixNano": o, "body": body,
                "attributes": attributes, "traceId": trace, "spanId": span,
                "severityNumber": severity})
        })
}

/// A request of 0-2 resources × 0-2 scopes × 0-3 log records, then
/// possibly mutated at one byte.
fn otlp_request() -> impl Strategy<Value = Vec<u8>> {
    let scope = (
        otlp_any_value(),
        vec(otlp_log_record(), 0..3),
    )
        .prop_map(|(attr, records)| {
            json!({"scope": {"name": "s", "attributes": [{"key": "k", "value": attr}]}, "logRecords": records})
        });
    let resource = (
        vec((interesting_string(), otlp_any_value()), 0..3),
        vec(scope, 0..2),
    )
        .prop_map(|(attrs, scopes)| {
            let attributes: Vec<Value> = attrs
                .into_iter()
                .map(|(key, value)| json!({"key": key, "value": value}))
                .collect();
            json!({"resource": {"attributes": attributes}, "scopeLogs": scopes})
        });
    (
        vec(resource, 0..2),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0..4u8,
    )
        .prop_map(|(resources, at, byte, how)| {
            let mut b = json!({"resourceLogs": resources}).to_string().into_bytes();
            let i = at.index(b.len() + 1);
            match how {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                2 => b.truncate(i),
                _ => {}
            }
            b
        })
}

proptest! {
    #![proptest_config(proptest_config())]

    /// The OTLP/JSON decoder and the shaping of an `otlp_json` record never
    /// panic: a request decodes into documents that are all written, or is
    /// refused whole with a reason.
    #[test]
    fn otlp_json_never_panics_and_is_written_or_refused_whole(
        value in prop_oneof![4 => otlp_request(), 1 => arb_value()],
    ) {
        use logingest::document::{otlp, Record, Shaped, Shaper};
        use logingest::sink::chunk::ChunkBuilder;
        use logingest::topic::TopicPartition;

        let decoded = otlp::decode(&value);
        let settings = parse_topic_value("t", br#"{"format": "otlp_json"}"#).unwrap();
        let tp = TopicPartition::new("t", 0);
        let mut shaper = Shaper::new(std::sync::Arc::new(settings), tp.clone());
        let mut chunk = ChunkBuilder::new(tp, 1, 0);
        let record = Record { offset: 5, key: None, value: Some(&value), timestamp_ms: Some(0), headers: &[] };
        let shaped = shaper.write(&mut chunk, &record, chrono::Utc::now()).unwrap();
        match decoded {
            Ok(documents) if documents.is_empty() => prop_assert_eq!(shaped, Shaped::Empty),
            Ok(documents) => {
                prop_assert_eq!(shaped, Shaped::Written);
                prop_assert_eq!(chunk.len(), documents.len());
                for document in &documents {
                    prop_assert!(document.fields["message"].is_string());
                }
            }
            Err(e) => {
                prop_assert_eq!(shaped, Shaped::Refused(e.to_string()));
                prop_assert!(chunk.is_empty());
            }
        }
    }
}
