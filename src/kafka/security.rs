//! `[kafka.tls]` and `[kafka.sasl]` as librdkafka properties: the one
//! translation every Kafka client of logingest uses (the group consumer,
//! the dead-letter producer, `logingest status` and `check-config
//! --connect`).

use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// The producer of dead letters: the brokers, TLS and SASL of the consumer
/// (and its options that apply to producers), idempotent.
pub fn dead_letter_producer(
    config: &KafkaConfig,
) -> rdkafka::error::KafkaResult<rdkafka::producer::FutureProducer> {
    let mut cfg = ClientConfig::new();
    apply_producer_connection(config, &mut cfg);
    cfg.set("bootstrap.servers", config.brokers.join(","))
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
}

/// The librdkafka properties of the configured TLS and SASL settings
/// (empty without `[kafka.tls]` and `[kafka.sasl]`). Values may be
/// secrets (`sasl.password`): never log them.
///
/// The configuration is expected to be validated (a SASL section has its
/// password, a certificate its key).
pub fn security_properties(config: &KafkaConfig) -> Vec<(&'static str, String)> {
    let mut props = Vec::new();
    let protocol = match (config.tls.is_some(), config.sasl.is_some()) {
        (false, false) => return props,
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    };
    props.push(("security.protocol", protocol.to_string()));
    if let Some(tls) = &config.tls {
        let files = [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
        ];
        for (key, file) in files {
            if let Some(path) = file {
                props.push((key, path.display().to_string()));
            }
        }
    }
    if let Some(sasl) = &config.sasl {
        props.push(("sasl.mechanism", sasl.mechanism.as_str().to_string()));
        props.push(("sasl.username", sasl.username.clone()));
        if let Some(password) = &sasl.password {
            props.push(("sasl.password", password.expose().to_string()));
        }
    }
    props
}

/// Sets the connection settings on `cfg`: the TLS/SASL properties, then
/// the raw `kafka.options` (which win over everything set before).
pub fn apply_connection(config: &KafkaConfig, cfg: &mut ClientConfig) {
    for (key, value) in security_properties(config) {
        cfg.set(key, value);
    }
    for (key, value) in &config.options {
        cfg.set(key, value);
    }
}

/// Like [`apply_connection`] for a producer: consumer-only options are
/// left out (librdkafka would warn about each of them).
pub fn apply_producer_connection(config: &KafkaConfig, cfg: &mut ClientConfig) {
    for (key, value) in security_properties(config) {
        cfg.set(key, value);
    }
    for (key, value) in config.options.iter().filter(|(k, _)| !is_consumer_only(k)) {
        cfg.set(key, value);
    }
}

/// librdkafka properties that only a consumer takes.
pub fn is_consumer_only(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "group.",
        "fetch.",
        "queued.",
        "consume.",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "auto.offset.reset",
        "enable.auto.",
        "auto.commit.",
        "enable.partition.eof",
        "isolation.level",
        "check.crcs",
        "coordinator.query.interval.ms",
        "offset.store.",
        "max.partition.fetch.bytes",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn props(toml: &str) -> Vec<(&'static str, String)> {
        let mut config = Config::parse(toml).unwrap();
        config.resolve_secrets().unwrap();
        config.validate().unwrap();
        security_properties(&config.kafka)
    }

    #[test]
    fn consumer_only_options_stay_out_of_producers() {
        assert!(is_consumer_only("session.timeout.ms"));
        assert!(is_consumer_only("fetch.wait.max.ms"));
        assert!(!is_consumer_only("ssl.ca.location"));
        assert!(!is_consumer_only("socket.keepalive.enable"));
    }

    fn get<'a>(props: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn nothing_without_sections() {
        assert!(props("").is_empty());
    }

    #[test]
    fn tls_alone_is_ssl_with_its_files() {
        let p = props(
            "[kafka.tls]\nca_file = \"/ca.pem\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n",
        );
        assert_eq!(get(&p, "security.protocol"), Some("SSL"));
        assert_eq!(get(&p, "ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(get(&p, "ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(get(&p, "ssl.key.location"), Some("/k.pem"));
        assert_eq!(get(&p, "sasl.mechanism"), None);
    }

    #[test]
    fn empty_tls_section_uses_system_cas() {
        let p = props("[kafka.tls]\n");
        assert_eq!(p, vec![("security.protocol", "SSL".to_string())]);
    }

    #[test]
    fn sasl_alone_is_sasl_plaintext() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let p = props(&format!(
                "[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"alice\"\npassword = \"pw\"\n"
            ));
            assert_eq!(get(&p, "security.protocol"), Some("SASL_PLAINTEXT"));
            assert_eq!(get(&p, "sasl.mechanism"), Some(mechanism));
            assert_eq!(get(&p, "sasl.username"), Some("alice"));
            assert_eq!(get(&p, "sasl.password"), Some("pw"));
        }
    }

    #[test]
    fn sasl_over_tls_is_sasl_ssl() {
        let p = props(
            "[kafka.tls]\nca_file = \"/ca.pem\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"a\"\npassword = \"pw\"\n",
        );
        assert_eq!(get(&p, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(get(&p, "ssl.ca.location"), Some("/ca.pem"));
    }

    #[test]
    fn unknown_mechanism_is_refused() {
        let err = Config::parse("[kafka.sasl]\nmechanism = \"GSSAPI\"\nusername = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("GSSAPI") && err.contains("PLAIN"), "{err}");
    }

    #[test]
    fn raw_options_apply_last_and_conflicts_are_named() {
        let mut config = Config::parse(
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"a\"\npassword = \"pw\"\n[kafka.options]\n\"sasl.username\" = \"b\"\n",
        )
        .unwrap();
        config.resolve_secrets().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("kafka.options.\"sasl.username\""), "{err}");
        // Options unrelated to the sections still apply, after them.
        config.kafka.options.clear();
        config.kafka.options.insert(
            "ssl.endpoint.identification.algorithm".into(),
            "none".into(),
        );
        let mut cfg = ClientConfig::new();
        apply_connection(&config.kafka, &mut cfg);
        assert_eq!(cfg.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(
            cfg.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
    }

    #[test]
    fn sasl_without_a_password_is_valid_but_cannot_run() {
        let config =
            Config::parse("[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"a\"\n").unwrap();
        // Valid as a template (the password may come from the environment
        // where it runs) ...
        config.validate().unwrap();
        // ... but `run` refuses to start without it.
        let err = config.require_secrets().unwrap_err().to_string();
        assert!(
            err.contains("kafka.sasl.password") && err.contains("LOGINGEST_KAFKA_SASL_PASSWORD"),
            "{err}"
        );
    }
}
