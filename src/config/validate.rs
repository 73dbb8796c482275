//! [`Config::validate`]: the invariants serde cannot express, with messages
//! naming the key; and the checks of secrets that only `run` needs.

use super::*;

/// librdkafka properties that logingest sets itself from its own keys (or
/// needs at a fixed value), with what to use instead: `[kafka.options]`
/// naming one is refused rather than silently overridden. Properties it
/// only defaults (`client.id`, `partition.assignment.strategy`, fetch
/// tuning) stay the user's to change.
pub const OWNED_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use kafka.brokers"),
    ("metadata.broker.list", "use kafka.brokers"),
    ("group.id", "use kafka.group_id"),
    (
        "group.instance.id",
        "use kafka.static_membership = true (and kafka.instance_id)",
    ),
    (
        "enable.auto.commit",
        "logingest commits the offsets of acknowledged documents itself, every kafka.commit_interval",
    ),
    (
        "auto.commit.enable",
        "logingest commits the offsets of acknowledged documents itself, every kafka.commit_interval",
    ),
    ("auto.commit.interval.ms", "use kafka.commit_interval"),
    (
        "enable.auto.offset.store",
        "logingest stores an offset only once Elasticsearch acknowledged its document (at-least-once)",
    ),
    (
        "auto.offset.reset",
        "use kafka.start_from = \"earliest\" or \"latest\"",
    ),
    (
        "enable.partition.eof",
        "logingest's partition tasks need it off (end of partition is not an event for them)",
    ),
];

impl Config {
    /// `elasticsearch.url`: at least one node, each a URL, no node twice,
    /// one scheme for all (the nodes of one cluster share its TLS set-up).
    fn validate_elasticsearch_urls(&self) -> Result<(), ConfigError> {
        let es = &self.elasticsearch;
        if es.url.is_empty() {
            return Err(ConfigError::Invalid(
                "elasticsearch.url names no node; give a URL or a list of URLs".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut schemes = std::collections::BTreeSet::new();
        for text in &es.url {
            let url = text.parse::<elasticsearch::http::Url>().map_err(|e| {
                ConfigError::Invalid(format!("elasticsearch.url {text:?} is not a URL: {e}"))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "elasticsearch.url {text:?}: the scheme must be http or https"
                )));
            }
            if !seen.insert(crate::sink::nodes::node_label(&url)) {
                return Err(ConfigError::Invalid(format!(
                    "elasticsearch.url names {text:?} twice"
                )));
            }
            schemes.insert(url.scheme().to_string());
        }
        if schemes.len() > 1 {
            return Err(ConfigError::Invalid(format!(
                "elasticsearch.url mixes http and https nodes ({}); the nodes of one cluster share its TLS set-up",
                es.urls()
            )));
        }
        if es.node_initial_backoff.is_zero() || es.node_initial_backoff > es.node_max_backoff {
            return Err(ConfigError::Invalid(format!(
                "elasticsearch.node_initial_backoff ({:?}) must be above zero and at most node_max_backoff ({:?})",
                es.node_initial_backoff, es.node_max_backoff
            )));
        }
        if es.sniff && es.sniff_interval < std::time::Duration::from_secs(1) {
            return Err(ConfigError::Invalid(format!(
                "elasticsearch.sniff_interval ({:?}) must be at least 1s",
                es.sniff_interval
            )));
        }
        Ok(())
    }

    /// Checks invariants that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.etcd.endpoints.is_empty() {
            return invalid("etcd.endpoints must name at least one endpoint".into());
        }
        if self.etcd.prefix.is_empty() {
            return invalid("etcd.prefix must not be empty".into());
        }
        self.validate_etcd_security()?;
        self.validate_kafka_security()?;
        self.validate_elasticsearch_security()?;
        if self.kafka.brokers.is_empty() {
            return invalid("kafka.brokers must name at least one broker".into());
        }
        if self.kafka.group_id.trim().is_empty() {
            return invalid("kafka.group_id must not be empty".into());
        }
        if let Some(id) = &self.instance.id {
            if id.trim().is_empty() {
                return invalid("instance.id must not be empty".into());
            }
        }
        if let Some(id) = &self.kafka.instance_id {
            if id.trim().is_empty() {
                return invalid("kafka.instance_id must not be empty".into());
            }
            if !self.kafka.static_membership {
                return invalid(
                    "kafka.instance_id is the group.instance.id of static membership: set kafka.static_membership = true or remove it".into(),
                );
            }
        }
        for (key, reason) in OWNED_OPTIONS {
            if self.kafka.options.contains_key(*key) {
                return invalid(format!(
                    "kafka.options.\"{key}\" is set by logingest itself and cannot be overridden: {reason}"
                ));
            }
        }
        if self.kafka.stuck_after.is_zero() {
            return invalid("kafka.stuck_after must be longer than 0s".into());
        }
        if let Some(session) = self.kafka.session_timeout()? {
            if self.kafka.drain_timeout >= session {
                let written = if self.kafka.drain_timeout_setting.is_some() {
                    "kafka.drain_timeout"
                } else {
                    "the derived kafka.drain_timeout"
                };
                return invalid(format!(
                    "{written} ({:?}) must be less than kafka.options.\"session.timeout.ms\" ({} ms); lower it or remove it to get half the session timeout",
                    self.kafka.drain_timeout,
                    session.as_millis()
                ));
            }
        }
        self.validate_elasticsearch_urls()?;
        if self.elasticsearch.max_item_attempts == 0 {
            return invalid("elasticsearch.max_item_attempts must be at least 1".into());
        }
        if self.elasticsearch.max_item_retry_duration.is_zero() {
            return invalid("elasticsearch.max_item_retry_duration must be positive".into());
        }
        if self.dead_letter.destination == DeadLetterDestination::Kafka
            && !self.dead_letter.topic.contains("{topic}")
        {
            // One topic for all: fine, but it must still be a legal name.
            crate::topic::validate_topic(&self.dead_letter.topic)
                .map_err(|e| ConfigError::Invalid(format!("dead_letter.topic: {e}")))?;
        }
        if self.dead_letter.destination == DeadLetterDestination::Elasticsearch {
            crate::topic::validate_index(&self.dead_letter.index)
                .map_err(|e| ConfigError::Invalid(format!("dead_letter.index: {e}")))?;
        }
        let b = &self.batch;
        if b.max_documents == 0 || b.max_bytes == 0 {
            return invalid("batch.max_documents and batch.max_bytes must be positive".into());
        }
        if b.max_in_flight == 0 {
            return invalid("batch.max_in_flight must be at least 1".into());
        }
        if self.memory.budget() < 1 << 20 {
            return invalid(format!(
                "memory.max_buffered = {} is below the minimum of 1 MiB",
                self.memory.max_buffered
            ));
        }
        if (self.memory.budget() as u64) < 2 * b.max_bytes as u64 {
            return invalid(format!(
                "memory.max_buffered ({}) must hold at least two requests of batch.max_bytes ({} bytes)",
                self.memory.max_buffered, b.max_bytes
            ));
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.initial_backoff > self.retry.max_backoff
        {
            return invalid(
                "retry.initial_backoff must be positive and not above retry.max_backoff".into(),
            );
        }
        Ok(())
    }

    fn validate_etcd_security(&self) -> Result<(), ConfigError> {
        let etcd = &self.etcd;
        check_cert_pair("etcd", &etcd.cert_file, &etcd.key_file)?;
        check_secret("etcd.password", &etcd.password, &etcd.password_file)?;
        if etcd.uses_tls() {
            if let Some(plain) = etcd.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(ConfigError::Invalid(format!(
                    "etcd.endpoints: {plain} is http:// but etcd.ca_file/cert_file or another endpoint asks for TLS; use https://"
                )));
            }
        }
        let has_password = etcd.password.is_some() || etcd.password_file.is_some();
        match &etcd.username {
            Some(user) if user.is_empty() => Err(ConfigError::Invalid(
                "etcd.username must not be empty".into(),
            )),
            None if has_password => Err(ConfigError::Invalid(
                "etcd.password (or password_file, LOGINGEST_ETCD_PASSWORD) needs etcd.username"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn validate_kafka_security(&self) -> Result<(), ConfigError> {
        let managed = MANAGED_BY_SECTIONS;
        if let Some(tls) = &self.kafka.tls {
            check_cert_pair("kafka.tls", &tls.cert_file, &tls.key_file)?;
        }
        if let Some(sasl) = &self.kafka.sasl {
            if sasl.username.trim().is_empty() {
                return Err(ConfigError::Invalid(
                    "kafka.sasl.username must be set (a [kafka.sasl] section with mechanism and username)".into(),
                ));
            }
            check_secret("kafka.sasl.password", &sasl.password, &sasl.password_file)?;
        }
        if self.kafka.tls.is_some() || self.kafka.sasl.is_some() {
            for key in managed {
                if self.kafka.options.contains_key(*key) {
                    return Err(ConfigError::Invalid(format!(
                        "kafka.options.\"{key}\" conflicts with [kafka.tls]/[kafka.sasl]; set it in one place"
                    )));
                }
            }
        }
        Ok(())
    }

    fn validate_elasticsearch_security(&self) -> Result<(), ConfigError> {
        let es = &self.elasticsearch;
        check_secret("elasticsearch.password", &es.password, &es.password_file)?;
        check_secret("elasticsearch.api_key", &es.api_key, &es.api_key_file)?;
        check_secret(
            "elasticsearch.bearer_token",
            &es.bearer_token,
            &es.bearer_token_file,
        )?;
        let basic = es.username.is_some() || es.password.is_some() || es.password_file.is_some();
        if basic {
            match &es.username {
                Some(user) if user.is_empty() => {
                    return Err(ConfigError::Invalid(
                        "elasticsearch.username must not be empty".into(),
                    ))
                }
                None => {
                    return Err(ConfigError::Invalid(
                        "elasticsearch.password (or password_file, LOGINGEST_ES_PASSWORD) needs elasticsearch.username".into(),
                    ))
                }
                _ => {}
            }
        }
        let api_key = es.api_key.is_some() || es.api_key_file.is_some();
        let bearer = es.bearer_token.is_some() || es.bearer_token_file.is_some();
        if [basic, api_key, bearer].iter().filter(|m| **m).count() > 1 {
            return Err(ConfigError::Invalid(
                "elasticsearch: set at most one of username/password, api_key and bearer_token"
                    .into(),
            ));
        }
        for url in es
            .url
            .iter()
            .filter_map(|u| u.parse::<elasticsearch::http::Url>().ok())
        {
            if url.password().is_some() || !url.username().is_empty() {
                return Err(ConfigError::Invalid(
                    "elasticsearch.url must not hold credentials; use elasticsearch.username and password".into(),
                ));
            }
            if es.ca_file.is_some() && url.scheme() != "https" {
                return Err(ConfigError::Invalid(format!(
                    "elasticsearch.ca_file needs an https:// elasticsearch.url (got {:?})",
                    es.urls()
                )));
            }
        }
        Ok(())
    }

    /// Passwords that the configuration asks for but nothing provides
    /// (neither the key, nor its `*_file`, nor the environment), one
    /// message each. Not a validation error: a configuration may be
    /// checked where its secrets are not (CI, an image build), and get
    /// them from the environment where it runs; `logingest run` refuses to
    /// start without them ([`Config::require_secrets`]).
    pub fn missing_secrets(&self) -> Vec<String> {
        let mut missing = Vec::new();
        let absent =
            |value: &Option<Secret>, file: &Option<PathBuf>| value.is_none() && file.is_none();
        if let Some(sasl) = &self.kafka.sasl {
            if absent(&sasl.password, &sasl.password_file) {
                missing.push(format!(
                    "kafka.sasl.password is not set (password, password_file or {ENV_KAFKA_SASL_PASSWORD})"
                ));
            }
        }
        let es = &self.elasticsearch;
        if es.username.is_some() && absent(&es.password, &es.password_file) {
            missing.push(format!(
                "elasticsearch.password is not set for elasticsearch.username (password, password_file or {ENV_ES_PASSWORD})"
            ));
        }
        let etcd = &self.etcd;
        if etcd.username.is_some() && absent(&etcd.password, &etcd.password_file) {
            missing.push(format!(
                "etcd.password is not set for etcd.username (password, password_file or {ENV_ETCD_PASSWORD})"
            ));
        }
        missing
    }

    /// Fails when [`Config::missing_secrets`] finds any.
    pub fn require_secrets(&self) -> Result<(), ConfigError> {
        let missing = self.missing_secrets();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(missing.join("; ")))
        }
    }
}
