//! The configuration file (`logingest run --config FILE`).
//!
//! Every section is a documented serde struct with defaults, unknown keys are
//! rejected with the key's name, and [`Config::validate`] checks the
//! invariants that span fields before anything connects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable overriding `etcd.endpoints` (comma-separated).
pub const ENV_ETCD_ENDPOINTS: &str = "LOGINGEST_ETCD_ENDPOINTS";
/// Environment variable overriding `kafka.brokers` (comma-separated).
pub const ENV_KAFKA_BROKERS: &str = "LOGINGEST_KAFKA_BROKERS";
/// Environment variable overriding `elasticsearch.url`.
pub const ENV_ES_URL: &str = "LOGINGEST_ES_URL";
/// Environment variable overriding `instance.id` (e.g. a pod name).
pub const ENV_INSTANCE_ID: &str = "LOGINGEST_INSTANCE_ID";

/// Errors found while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path given by the user.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The path given by the user.
        path: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value is out of range or inconsistent with another one.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This instance's identity in the fleet.
    pub instance: InstanceConfig,
    /// Where the topic registry lives.
    pub etcd: EtcdConfig,
    /// The Kafka cluster and consumer group.
    pub kafka: KafkaConfig,
    /// The Elasticsearch cluster.
    pub elasticsearch: ElasticsearchConfig,
    /// How documents are grouped into `_bulk` requests.
    pub batch: BatchConfig,
    /// Backoff between retries of failed requests.
    pub retry: RetryConfig,
    /// The HTTP endpoint for health and metrics.
    pub http: HttpConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Where documents Elasticsearch rejects for good are sent.
    pub dead_letter: DeadLetterConfig,
}

/// `[instance]`: who this instance is.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceConfig {
    /// The instance id, used as Kafka `client.id`, in logs and in metrics.
    /// Default: `<hostname>-<pid>`, which tells two instances on one host
    /// apart.
    pub id: Option<String>,
}

impl InstanceConfig {
    /// The configured id, or `<hostname>-<pid>`.
    pub fn resolved_id(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => format!(
                "{}-{}",
                gethostname::gethostname().to_string_lossy(),
                std::process::id()
            ),
        }
    }
}

/// `[etcd]`: the topic registry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EtcdConfig {
    /// etcd client URLs, e.g. `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix of the prefix form: key `<prefix><topic>`, value empty or a
    /// JSON object of per-topic settings.
    pub prefix: String,
    /// Keys holding a collector agent's JSON array of `{"path", "topic"}`.
    pub collector_keys: Vec<String>,
    /// Timeout of one connection attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/logingest/topics/".into(),
            collector_keys: vec!["collectlogkey1".into()],
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest message still in the topic (nothing written before the
    /// topic was registered is lost).
    Earliest,
    /// Only messages written after the partition was first assigned.
    Latest,
}

/// `[kafka]`: the brokers and the consumer group.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The consumer group shared by every instance of the fleet.
    pub group_id: String,
    /// Start position of a partition that has no committed offset.
    pub start_from: StartFrom,
    /// How often acknowledged offsets are committed to the group (offsets of
    /// revoked partitions and at shutdown are committed at once).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How long a partition task may take to flush and commit when its
    /// partition is revoked or its topic removed; must stay below the group's
    /// session timeout.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Static group membership: use `instance.id` as `group.instance.id`,
    /// so a restarted instance gets its partitions back without a rebalance
    /// (StatefulSets). Requires an explicit `instance.id`, unique in the
    /// fleet.
    pub static_membership: bool,
    /// Raw librdkafka properties, applied last (TLS, SASL, tuning).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".into()],
            group_id: "logingest".into(),
            start_from: StartFrom::Earliest,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            static_membership: false,
            options: BTreeMap::new(),
        }
    }
}

/// `[elasticsearch]`: the search cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchConfig {
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`.
    pub url: String,
    /// Basic-auth user name (with `password`).
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<Secret>,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts of a document that Elasticsearch rejected with a permanent
    /// (4xx) item error before it is given up as failed.
    pub max_item_attempts: u32,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9200".into(),
            username: None,
            password: None,
            request_timeout: Duration::from_secs(30),
            max_item_attempts: 3,
        }
    }
}

/// `[batch]`: how documents are grouped into `_bulk` requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A batch is sent when it holds this many documents.
    pub max_documents: usize,
    /// A batch is sent when its request body reaches this many bytes.
    pub max_bytes: usize,
    /// A batch that is not full is sent this long after its first document.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// `_bulk` requests one partition may have in flight at once.
    pub max_in_flight_per_partition: usize,
    /// `_bulk` requests the whole process may have in flight at once.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_documents: 2000,
            max_bytes: 5 * 1024 * 1024,
            linger: Duration::from_millis(200),
            max_in_flight_per_partition: 2,
            max_in_flight: 8,
        }
    }
}

/// Where dead letters go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterDestination {
    /// A Kafka topic per source topic (`dead_letter.topic`).
    Kafka,
    /// One Elasticsearch index (`dead_letter.index`).
    Elasticsearch,
    /// Nowhere: rejected documents are only logged and counted.
    None,
}

/// `[dead_letter]`: documents Elasticsearch rejected for good.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeadLetterConfig {
    /// `kafka` (default), `elasticsearch` or `none`.
    pub destination: DeadLetterDestination,
    /// Kafka topic of the dead letters; `{topic}` is the source topic. The
    /// topic must exist or the brokers must auto-create topics.
    pub topic: String,
    /// Elasticsearch index of the dead letters.
    pub index: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            destination: DeadLetterDestination::Kafka,
            topic: "{topic}.dlq".into(),
            index: "logingest-dead-letters".into(),
        }
    }
}

/// `[retry]`: exponential backoff with jitter between retries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// `[http]`: health and metrics endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of `/healthz`, `/readyz` and `/metrics`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[shutdown]`: graceful stop on SIGTERM/SIGINT.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Deadline for flushing and committing; what is not acknowledged by then
    /// is not committed and will be read again by the next owner.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// A credential: readable by the code that needs it, printed as
/// `<redacted>` by `Debug` and by the printed configuration.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret value, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl Config {
    /// Reads, parses and validates a config file, then applies the
    /// environment overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })?;
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// The defaults with the environment overrides, for commands run
    /// without a config file.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.apply_env(|name| std::env::var(name).ok());
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })
    }

    /// Applies `LOGINGEST_ETCD_ENDPOINTS`, `LOGINGEST_KAFKA_BROKERS` and
    /// `LOGINGEST_ES_URL`, read through `lookup`.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = lookup(ENV_ETCD_ENDPOINTS) {
            self.etcd.endpoints = list(v);
        }
        if let Some(v) = lookup(ENV_KAFKA_BROKERS) {
            self.kafka.brokers = list(v);
        }
        if let Some(v) = lookup(ENV_ES_URL) {
            self.elasticsearch.url = v.trim().to_string();
        }
        if let Some(v) = lookup(ENV_INSTANCE_ID) {
            self.instance.id = Some(v.trim().to_string());
        }
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
        if self.kafka.static_membership && self.instance.id.is_none() {
            return invalid(
                "kafka.static_membership needs an explicit instance.id (or LOGINGEST_INSTANCE_ID), unique in the fleet".into(),
            );
        }
        for key in [
            "group.id",
            "group.instance.id",
            "bootstrap.servers",
            "enable.auto.offset.store",
        ] {
            if self.kafka.options.contains_key(key) {
                return invalid(format!(
                    "kafka.options.\"{key}\" is managed by logingest; use the [kafka] keys instead"
                ));
            }
        }
        if let Some(session) = self.kafka.options.get("session.timeout.ms") {
            let ms: u64 = session.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "kafka.options.\"session.timeout.ms\" = {session:?} is not a number"
                ))
            })?;
            if self.kafka.drain_timeout >= Duration::from_millis(ms) {
                return invalid(format!(
                    "kafka.drain_timeout ({:?}) must be less than session.timeout.ms ({ms} ms)",
                    self.kafka.drain_timeout
                ));
            }
        }
        if let Err(e) = self.elasticsearch.url.parse::<elasticsearch::http::Url>() {
            return invalid(format!(
                "elasticsearch.url {:?} is not a URL: {e}",
                self.elasticsearch.url
            ));
        }
        if self.elasticsearch.username.is_some() != self.elasticsearch.password.is_some() {
            return invalid("elasticsearch.username and elasticsearch.password go together".into());
        }
        if self.elasticsearch.max_item_attempts == 0 {
            return invalid("elasticsearch.max_item_attempts must be at least 1".into());
        }
        if self.dead_letter.destination == DeadLetterDestination::Kafka
            && !self.dead_letter.topic.contains("{topic}")
        {
            // One topic for all: fine, but it must still be a legal name.
            crate::registry::validate_topic(&self.dead_letter.topic)
                .map_err(|e| ConfigError::Invalid(format!("dead_letter.topic: {e}")))?;
        }
        if self.dead_letter.destination == DeadLetterDestination::Elasticsearch {
            crate::registry::validate_index(&self.dead_letter.index)
                .map_err(|e| ConfigError::Invalid(format!("dead_letter.index: {e}")))?;
        }
        let b = &self.batch;
        if b.max_documents == 0 || b.max_bytes == 0 {
            return invalid("batch.max_documents and batch.max_bytes must be positive".into());
        }
        if b.max_in_flight_per_partition == 0 || b.max_in_flight == 0 {
            return invalid("batch.max_in_flight* must be at least 1".into());
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

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut printable = self.clone();
        for (key, value) in printable.kafka.options.iter_mut() {
            if is_secret_option(key) {
                *value = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&printable)
            .unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// librdkafka properties that hold credentials (`sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_option(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key == "ssl.key.pem" || key == "sasl.oauthbearer.config"
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.elasticsearch.url, "http://es:9200");
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
    fn static_membership_needs_an_explicit_id() {
        let c = Config::parse("[kafka]\nstatic_membership = true\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("instance.id"));
        let c = Config::parse("[instance]\nid = \"pod-0\"\n[kafka]\nstatic_membership = true\n")
            .unwrap();
        c.validate().unwrap();
        assert_eq!(c.instance.resolved_id(), "pod-0");
        assert!(Config::default()
            .instance
            .resolved_id()
            .ends_with(&format!("-{}", std::process::id())));
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
}
