//! Unit tests of the configuration: parsing, defaults, validation,
//! secrets and redaction.

use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = Config::parse("").unwrap();
    c.validate().unwrap();
    assert_eq!(c.etcd.prefix, "/logingest/topics/");
    assert_eq!(c.etcd.collector_keys, vec!["collectlogkey1"]);
    assert_eq!(c.kafka.group_id, "logingest");
    assert_eq!(c.kafka.start_from, StartFrom::Earliest);
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:9464");
}

#[test]
fn unknown_key_is_named() {
    let err = Config::parse("[kafka]\ngroup = \"x\"\n").unwrap_err();
    assert!(err.to_string().contains("unknown field `group`"), "{err}");
}

#[test]
fn durations_are_humane() {
    let c = Config::parse("[batch]\nlinger = \"50ms\"\n").unwrap();
    assert_eq!(c.batch.linger, Duration::from_millis(50));
}

#[test]
fn env_overrides_endpoints() {
    let mut c = Config::default();
    c.apply_env(|k| match k {
        ENV_ETCD_ENDPOINTS => Some("http://a:1, http://b:2".into()),
        ENV_KAFKA_BROKERS => Some("k:9".into()),
        ENV_ES_URL => Some("http://es:9200".into()),
        _ => None,
    });
    assert_eq!(c.etcd.endpoints, vec!["http://a:1", "http://b:2"]);
    assert_eq!(c.kafka.brokers, vec!["k:9"]);
    assert_eq!(c.elasticsearch.url, ["http://es:9200"]);
}

#[test]
fn item_retry_duration_defaults_to_ten_minutes_and_must_be_positive() {
    assert_eq!(
        Config::default().elasticsearch.max_item_retry_duration,
        Duration::from_secs(600)
    );
    let c = Config::parse("[elasticsearch]\nmax_item_retry_duration = \"90s\"\n").unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.elasticsearch.max_item_retry_duration,
        Duration::from_secs(90)
    );
    let c = Config::parse("[elasticsearch]\nmax_item_retry_duration = \"0s\"\n").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("elasticsearch.max_item_retry_duration must be positive"),
        "{err}"
    );
}

#[test]
fn drain_timeout_must_fit_in_session() {
    let c = Config::parse(
        "[kafka]\ndrain_timeout = \"10s\"\noptions = { \"session.timeout.ms\" = \"6000\" }\n",
    )
    .unwrap();
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("drain_timeout"));
}

#[test]
fn static_membership_ids_default_to_instance_id_then_host_name() {
    let host = || "node-7".to_string();
    // Host name: stable across restarts, unlike the default instance.id.
    let c = Config::parse("[kafka]\nstatic_membership = true\n").unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.kafka.group_instance_id(&c.instance, host).as_deref(),
        Some("node-7")
    );
    let c =
        Config::parse("[instance]\nid = \"pod-0\"\n[kafka]\nstatic_membership = true\n").unwrap();
    c.validate().unwrap();
    assert_eq!(c.instance.resolved_id(), "pod-0");
    assert_eq!(
        c.kafka.group_instance_id(&c.instance, host).as_deref(),
        Some("pod-0")
    );
    let c = Config::parse(
        "[instance]\nid = \"pod-0\"\n[kafka]\nstatic_membership = true\ninstance_id = \"node-7-a\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(
        c.kafka.group_instance_id(&c.instance, host).as_deref(),
        Some("node-7-a")
    );
    let c = Config::parse("[instance]\nid = \"pod-0\"\n").unwrap();
    assert_eq!(c.kafka.group_instance_id(&c.instance, host), None);
    assert!(Config::default()
        .instance
        .resolved_id()
        .ends_with(&format!("-{}", std::process::id())));
    // An id without static membership is a mistake; an empty one too.
    let err = Config::parse("[kafka]\ninstance_id = \"a\"\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("kafka.static_membership"), "{err}");
    let err = Config::parse("[kafka]\nstatic_membership = true\ninstance_id = \" \"\n")
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("must not be empty"), "{err}");
}

#[test]
fn managed_librdkafka_keys_are_refused() {
    let c = Config::parse("[kafka.options]\n\"group.id\" = \"x\"\n").unwrap();
    assert!(c.validate().is_err());
}

#[test]
fn librdkafka_secrets_are_redacted() {
    let c = Config::parse(
        "[kafka.options]\n\"sasl.password\" = \"s3cr3t-sasl\"\n\"ssl.key.password\" = \"s3cr3t-key\"\n\"sasl.username\" = \"alice\"\n",
    )
    .unwrap();
    let printed = c.to_redacted_toml();
    assert!(!printed.contains("s3cr3t"), "{printed}");
    assert!(printed.contains("alice"));
}

#[test]
fn password_is_redacted() {
    let c = Config::parse("[elasticsearch]\nusername = \"u\"\npassword = \"hunter2-secret\"\n")
        .unwrap();
    let printed = c.to_redacted_toml();
    assert!(!printed.contains("hunter2-secret"));
    assert!(!format!("{c:?}").contains("hunter2-secret"));
    assert!(printed.contains("<redacted>"));
}
fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut c = Config::parse(text)?;
    c.apply_env(|k| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    });
    c.resolve_secrets()?;
    c.validate()?;
    Ok(c)
}

#[test]
fn secret_files_are_read_trimmed_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "hunter2-from-file\n").unwrap();
    let c = load_text(
        &format!(
            "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"u\"\npassword_file = {:?}\n",
            file.display().to_string()
        ),
        &[],
    )
    .unwrap();
    let sasl = c.kafka.sasl.as_ref().unwrap();
    assert_eq!(
        sasl.password.as_ref().unwrap().expose(),
        "hunter2-from-file"
    );
    let printed = c.to_redacted_toml();
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("password_file"), "{printed}");
    assert!(!format!("{c:?}").contains("hunter2"));
    // The printed config is as valid as the original.
    Config::parse(&printed).unwrap().validate().unwrap();
}

#[test]
fn unreadable_secret_file_names_the_key_and_the_path() {
    let err = load_text(
        "[elasticsearch]\nurl = \"https://es:9200\"\napi_key_file = \"/nonexistent/key\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("elasticsearch.api_key_file"), "{err}");
    assert!(err.contains("/nonexistent/key"), "{err}");
}

#[test]
fn a_secret_and_its_file_are_exclusive() {
    let c = Config::parse("[etcd]\nusername = \"u\"\npassword = \"p\"\npassword_file = \"/p\"\n")
        .unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("etcd.password and etcd.password_file"),
        "{err}"
    );
}

#[test]
fn secrets_from_the_environment_replace_the_file_keys() {
    let c = load_text(
        "[elasticsearch]\nusername = \"elastic\"\npassword_file = \"/nonexistent\"\n[etcd]\nusername = \"u\"\n[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"k\"\n",
        &[
            (ENV_ES_PASSWORD, "hunter2-es\n"),
            (ENV_ETCD_PASSWORD, "hunter2-etcd"),
            (ENV_KAFKA_SASL_PASSWORD, "hunter2-kafka"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.elasticsearch.password.as_ref().unwrap().expose(),
        "hunter2-es"
    );
    assert!(c.elasticsearch.password_file.is_none());
    assert_eq!(c.etcd.password.as_ref().unwrap().expose(), "hunter2-etcd");
    let sasl = c.kafka.sasl.as_ref().unwrap();
    assert_eq!(sasl.password.as_ref().unwrap().expose(), "hunter2-kafka");
    assert!(!c.to_redacted_toml().contains("hunter2"));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn api_key_from_the_environment_needs_no_section() {
    let c = load_text("", &[(ENV_ES_API_KEY, "aWQ6a2V5")]).unwrap();
    assert_eq!(
        c.elasticsearch.api_key.as_ref().unwrap().expose(),
        "aWQ6a2V5"
    );
    let err = load_text("", &[(ENV_KAFKA_SASL_PASSWORD, "x")]).unwrap_err();
    assert!(err.to_string().contains("kafka.sasl.username"), "{err}");
}

#[test]
fn at_most_one_elasticsearch_auth_method() {
    let err = load_text(
        "[elasticsearch]\napi_key = \"aWQ6a2V5\"\nbearer_token = \"t\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("at most one"), "{err}");
    let err = load_text("[elasticsearch]\npassword = \"p\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("elasticsearch.username"), "{err}");
    let err = load_text("[elasticsearch]\napi_key = \"has space\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("elasticsearch.api_key"), "{err}");
}

#[test]
fn tls_files_need_https() {
    let err = load_text(
        "[elasticsearch]\nurl = \"http://es:9200\"\nca_file = \"/ca.pem\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("elasticsearch.ca_file"), "{err}");
    let err = load_text("[etcd]\nca_file = \"/ca.pem\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("etcd.endpoints") && err.contains("https://"),
        "{err}"
    );
    let err = load_text("[kafka.tls]\ncert_file = \"/c.pem\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kafka.tls.cert_file and kafka.tls.key_file"),
        "{err}"
    );
    let err = load_text(
        "[elasticsearch]\nurl = \"https://u:hunter2@es:9200\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("must not hold credentials") && !err.contains("hunter2"),
        "{err}"
    );
}

#[test]
fn debug_redacts_librdkafka_secrets() {
    let c = Config::parse(
        "[kafka.options]\n\"sasl.password\" = \"hunter2-raw\"\n\"sasl.username\" = \"alice\"\n",
    )
    .unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("alice"), "{debug}");
}

#[test]
fn brokers_take_a_list_or_a_comma_separated_string() {
    let c = Config::parse("[kafka]\nbrokers = \"a:9092, b:9092,,c:9093 \"\n").unwrap();
    c.validate().unwrap();
    assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092", "c:9093"]);
    let c = Config::parse("[kafka]\nbrokers = [\"a:9092\", \"b:9092\"]\n").unwrap();
    assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092"]);
    // Printed as a list, which parses back to the same brokers.
    let c = Config::parse("[kafka]\nbrokers = \"a:9092,b:9092\"\n").unwrap();
    let printed = c.to_redacted_toml();
    assert!(
        printed.contains("brokers = [\n    \"a:9092\",\n    \"b:9092\",\n]"),
        "{printed}"
    );
    assert_eq!(
        Config::parse(&printed).unwrap().kafka.brokers,
        c.kafka.brokers
    );
    let c = Config::parse("[kafka]\nbrokers = \" , \"\n").unwrap();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("kafka.brokers"), "{err}");
    let err = Config::parse("[kafka]\nbrokers = 9092\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("comma-separated string"), "{err}");
}

fn with_session(session_ms: &str, drain: Option<&str>) -> Result<Config, ConfigError> {
    let drain = drain
        .map(|d| format!("drain_timeout = \"{d}\"\n"))
        .unwrap_or_default();
    let c = Config::parse(&format!(
        "[kafka]\n{drain}[kafka.options]\n\"session.timeout.ms\" = \"{session_ms}\"\n"
    ))?;
    c.validate()?;
    Ok(c)
}

#[test]
fn drain_timeout_defaults_to_fit_a_lowered_session_timeout() {
    let c = with_session("6000", None).unwrap();
    assert_eq!(c.kafka.drain_timeout, Duration::from_secs(3));
    assert!(c.kafka.drain_timeout_setting.is_none());
    let c = with_session("19000", None).unwrap();
    assert_eq!(c.kafka.drain_timeout, Duration::from_millis(9500));
    for long in ["20000", "45000"] {
        let c = with_session(long, None).unwrap();
        assert_eq!(c.kafka.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }
    let c = Config::parse("").unwrap();
    assert_eq!(c.kafka.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(Config::default().kafka.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    // An explicit value that fits is kept as written.
    let c = with_session("6000", Some("4s")).unwrap();
    assert_eq!(c.kafka.drain_timeout, Duration::from_secs(4));
    assert_eq!(c.kafka.drain_timeout_setting, Some(Duration::from_secs(4)));
    // The printed config shows the value in force, and means the same.
    let c = with_session("6000", None).unwrap();
    let printed = c.to_redacted_toml();
    assert!(printed.contains("drain_timeout = \"3s\""), "{printed}");
    let back = Config::parse(&printed).unwrap();
    back.validate().unwrap();
    assert_eq!(back.kafka.drain_timeout, Duration::from_secs(3));
}

#[test]
fn explicit_drain_timeout_too_long_for_the_session_is_refused() {
    for drain in ["6s", "10s", "1m"] {
        let err = with_session("6000", Some(drain)).unwrap_err().to_string();
        assert!(
            err.contains("kafka.drain_timeout") && err.contains("6000 ms"),
            "{err}"
        );
        assert!(!err.contains("derived"), "{err}");
    }
    for bad in ["abc", "0", "-5", ""] {
        let err = with_session(bad, None).unwrap_err().to_string();
        assert!(
            err.contains("session.timeout.ms") && err.contains("positive number"),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn options_logingest_owns_are_refused_with_the_key_to_use() {
    for (key, reason) in OWNED_OPTIONS {
        let c = Config::parse(&format!("[kafka.options]\n\"{key}\" = \"x\"\n")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(reason), "{key}: {err}");
    }
    for (key, instead) in [
        ("auto.offset.reset", "kafka.start_from"),
        ("enable.auto.commit", "kafka.commit_interval"),
        ("auto.commit.interval.ms", "kafka.commit_interval"),
        ("group.id", "kafka.group_id"),
        ("bootstrap.servers", "kafka.brokers"),
        ("group.instance.id", "kafka.static_membership"),
    ] {
        let c = Config::parse(&format!("[kafka.options]\n\"{key}\" = \"x\"\n")).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(instead), "{key}: {err}");
    }
    // What logingest only defaults stays tunable.
    let c = Config::parse(
        "[kafka.options]\n\"client.id\" = \"quota-group\"\n\"partition.assignment.strategy\" = \"range\"\n\"fetch.wait.max.ms\" = \"500\"\n",
    )
    .unwrap();
    c.validate().unwrap();
}

#[test]
fn elasticsearch_url_takes_one_url_or_a_list() {
    let c = load_text("[elasticsearch]\nurl = \"http://es:9200\"\n", &[]).unwrap();
    assert_eq!(c.elasticsearch.url, ["http://es:9200"]);
    let c = load_text(
        "[elasticsearch]\nurl = [\"https://es1:9200\", \"https://es2:9200\", \"https://es3:9200\"]\n",
        &[],
    )
    .unwrap();
    assert_eq!(c.elasticsearch.url.len(), 3);
    assert_eq!(
        c.elasticsearch.urls(),
        "https://es1:9200, https://es2:9200, https://es3:9200"
    );
    // Printed as a list, which parses back to the same nodes.
    let printed = c.to_redacted_toml();
    assert_eq!(
        Config::parse(&printed).unwrap().elasticsearch.url,
        c.elasticsearch.url
    );
    let c = load_text("", &[("LOGINGEST_ES_URL", "http://a:9200, http://b:9200")]).unwrap();
    assert_eq!(c.elasticsearch.url, ["http://a:9200", "http://b:9200"]);
}

#[test]
fn bad_elasticsearch_node_lists_are_refused_with_the_key() {
    for (text, expected) in [
        ("url = []", "names no node"),
        ("url = [\"http://a:9200\", \"es2:9200\"]", "\"es2:9200\""),
        ("url = [\"http://a:9200\", \"not a url\"]", "is not a URL"),
        ("url = [\"http://a:9200\", \"http://a:9200/\"]", "twice"),
        (
            "url = [\"http://a:9200\", \"https://b:9200\"]",
            "mixes http and https",
        ),
        ("url = 9200", "a URL or a list of URLs"),
        (
            "url = \"http://a:9200\"\nnode_initial_backoff = \"1m\"\nnode_max_backoff = \"10s\"",
            "node_initial_backoff",
        ),
        (
            "url = \"http://a:9200\"\nsniff = true\nsniff_interval = \"100ms\"",
            "sniff_interval",
        ),
    ] {
        let err = load_text(&format!("[elasticsearch]\n{text}\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn sniffing_is_off_by_default_and_takes_an_interval() {
    let c = load_text("", &[]).unwrap();
    assert!(!c.elasticsearch.sniff);
    assert_eq!(c.elasticsearch.sniff_interval, Duration::from_secs(300));
    let c = load_text(
        "[elasticsearch]\nsniff = true\nsniff_interval = \"30s\"\n",
        &[],
    )
    .unwrap();
    assert!(c.elasticsearch.sniff);
    assert_eq!(c.elasticsearch.sniff_interval, Duration::from_secs(30));
}
