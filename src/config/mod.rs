//! The configuration file (`logingest run --config FILE`).
//!
//! Every section is a documented serde struct with defaults, unknown keys are
//! rejected with the key's name, and [`Config::validate`] checks the
//! invariants that span fields before anything connects.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod secrets;
#[cfg(test)]
mod tests;
mod validate;

use secrets::{
    check_cert_pair, check_secret, check_secret_value, read_secret_file, redacted_options,
};
pub use secrets::{is_secret_option, Secret};
pub use validate::OWNED_OPTIONS;

/// librdkafka properties set from `[kafka.tls]`/`[kafka.sasl]`; setting
/// them in `kafka.options` as well is refused as ambiguous.
pub const MANAGED_BY_SECTIONS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

/// Environment variable overriding `etcd.endpoints` (comma-separated).
pub const ENV_ETCD_ENDPOINTS: &str = "LOGINGEST_ETCD_ENDPOINTS";
/// Environment variable overriding `kafka.brokers` (comma-separated).
pub const ENV_KAFKA_BROKERS: &str = "LOGINGEST_KAFKA_BROKERS";
/// Environment variable overriding `elasticsearch.url`.
pub const ENV_ES_URL: &str = "LOGINGEST_ES_URL";
/// Environment variable overriding `instance.id` (e.g. a pod name).
pub const ENV_INSTANCE_ID: &str = "LOGINGEST_INSTANCE_ID";
/// Environment variable setting `elasticsearch.password` (basic auth).
pub const ENV_ES_PASSWORD: &str = "LOGINGEST_ES_PASSWORD";
/// Environment variable setting `elasticsearch.api_key` (encoded form).
pub const ENV_ES_API_KEY: &str = "LOGINGEST_ES_API_KEY";
/// Environment variable setting `elasticsearch.bearer_token`.
pub const ENV_ES_BEARER_TOKEN: &str = "LOGINGEST_ES_BEARER_TOKEN";
/// Environment variable setting `kafka.sasl.password`.
pub const ENV_KAFKA_SASL_PASSWORD: &str = "LOGINGEST_KAFKA_SASL_PASSWORD";
/// Environment variable setting `etcd.password`.
pub const ENV_ETCD_PASSWORD: &str = "LOGINGEST_ETCD_PASSWORD";

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
    /// A file named by a `*_file` key could not be read.
    #[error("cannot read {field} {path}: {source}")]
    ReadFile {
        /// The key naming the file, e.g. `elasticsearch.password_file`.
        field: String,
        /// The path it names.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
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
    /// The process-wide memory budget.
    pub memory: MemoryConfig,
    /// Backoff between retries of failed requests.
    pub retry: RetryConfig,
    /// The HTTP endpoint for health and metrics.
    pub http: HttpConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Where documents Elasticsearch rejects for good are sent.
    pub dead_letter: DeadLetterConfig,
    /// The index templates logingest installs for its indices.
    pub index_template: IndexTemplateConfig,
    /// How registry values are judged.
    pub registry: RegistryConfig,
}

/// `[registry]`: how registry values written by other versions are judged.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Reject a topic value with fields this version does not know, instead
    /// of applying it with a warning (a newer instance may write them during
    /// a rolling upgrade).
    pub strict: bool,
}

/// `[index_template]`: mappings for logingest's indices (`@timestamp` as
/// date, `kafka.topic` as keyword...), installed before a topic's first
/// document so that a Kibana data view works out of the box.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexTemplateConfig {
    /// Install templates (one per distinct index pattern).
    pub enabled: bool,
    /// Template names are `<name_prefix>-<pattern>`.
    pub name_prefix: String,
    /// Base priority; the pattern's length is added so that more specific
    /// patterns win over overlapping broader ones.
    pub priority: u32,
}

impl Default for IndexTemplateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            name_prefix: "logingest".into(),
            priority: 150,
        }
    }
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

impl KafkaConfig {
    /// The `group.instance.id` to join with: `None` without static
    /// membership; else `kafka.instance_id`, `instance.id`, or `hostname()`
    /// — never the default `instance.id` (`<hostname>-<pid>`), which
    /// changes at every restart.
    pub fn group_instance_id(
        &self,
        instance: &InstanceConfig,
        hostname: impl FnOnce() -> String,
    ) -> Option<String> {
        if !self.static_membership {
            return None;
        }
        Some(
            self.instance_id
                .clone()
                .or_else(|| instance.id.clone())
                .unwrap_or_else(hostname),
        )
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
    /// PEM CA certificate(s) that sign the servers' certificates (https://
    /// endpoints); without it, the system's trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (for `--client-cert-auth`), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// User name when etcd has `auth enable`d (with a password).
    pub username: Option<String>,
    /// Password of `username` (or `password_file`, or
    /// `LOGINGEST_ETCD_PASSWORD`).
    #[serde(skip_serializing_if = "Secret::is_from_file")]
    pub password: Option<Secret>,
    /// File holding the password (trailing newline ignored), read at load.
    pub password_file: Option<PathBuf>,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/logingest/topics/".into(),
            collector_keys: vec!["collectlogkey1".into()],
            connect_timeout: Duration::from_secs(5),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            password_file: None,
        }
    }
}

impl EtcdConfig {
    /// Whether the client speaks TLS: an https:// endpoint or a TLS file.
    pub fn uses_tls(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.endpoints.iter().any(|e| e.starts_with("https://"))
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
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`: a list, or one comma-separated
    /// string as librdkafka, Vector and Logstash write it
    /// (`"a:9092,b:9092"`). Printed as a list.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub brokers: Vec<String>,
    /// The consumer group shared by every instance of the fleet.
    pub group_id: String,
    /// Start position of a partition that has no committed offset.
    pub start_from: StartFrom,
    /// How often acknowledged offsets are committed to the group (offsets of
    /// revoked partitions and at shutdown are committed at once).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// `drain_timeout` as written in the file; `None` when it is not, and
    /// [`KafkaConfig::drain_timeout`] is derived from the session timeout.
    #[serde(rename = "drain_timeout", with = "humantime_serde", skip_serializing)]
    pub drain_timeout_setting: Option<Duration>,
    /// How long a partition task may take to flush and commit when its
    /// partition is revoked or its topic removed; must stay below the group's
    /// session timeout. The effective value: the file's `drain_timeout`, or
    /// else [`DEFAULT_DRAIN_TIMEOUT`], lowered to half of
    /// `kafka.options."session.timeout.ms"` when that is below twice the
    /// default ([`KafkaConfig::resolve_drain_timeout`], run by
    /// [`Config::parse`]). Printed as `drain_timeout`.
    #[serde(rename = "drain_timeout", with = "humantime_serde", skip_deserializing)]
    pub drain_timeout: Duration,
    /// Static group membership (KIP-345): the member joins with a
    /// `group.instance.id` (`kafka.instance_id`), so an instance restarted
    /// within `session.timeout.ms` gets its partitions back and the other
    /// members see no rebalance (StatefulSets, systemd restarts).
    pub static_membership: bool,
    /// A partition whose task holds records after its acknowledged offset
    /// and whose acknowledged offset has not moved for this long is
    /// reported stuck (`logingest_partitions_stuck`, a warning log, and
    /// `/readyz` with `http.unready_on_stuck`).
    #[serde(with = "humantime_serde")]
    pub stuck_after: Duration,
    /// The `group.instance.id` of static membership: stable across
    /// restarts, unique in the group. Default: `instance.id` when it is set
    /// (or `LOGINGEST_INSTANCE_ID`, e.g. a pod name), else the host name.
    /// Instances sharing a host must set distinct ids: the broker fences
    /// the older of two members with one id.
    pub instance_id: Option<String>,
    /// TLS to the brokers (`security.protocol` SSL, or SASL_SSL with
    /// `[kafka.sasl]`). The section's presence turns TLS on.
    pub tls: Option<KafkaTlsConfig>,
    /// SASL authentication (`security.protocol` SASL_PLAINTEXT, or
    /// SASL_SSL with `[kafka.tls]`).
    pub sasl: Option<KafkaSaslConfig>,
    /// Raw librdkafka properties, applied last (tuning, or anything the
    /// `tls`/`sasl` sections do not cover).
    pub options: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:9092".into()],
            group_id: "logingest".into(),
            start_from: StartFrom::Earliest,
            commit_interval: Duration::from_secs(1),
            drain_timeout_setting: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            static_membership: false,
            stuck_after: Duration::from_secs(120),
            instance_id: None,
            tls: None,
            sasl: None,
            options: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    /// Like a derived `Debug`, with the credentials among `options`
    /// redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group_id", &self.group_id)
            .field("start_from", &self.start_from)
            .field("commit_interval", &self.commit_interval)
            .field("drain_timeout", &self.drain_timeout)
            .field("static_membership", &self.static_membership)
            .field("stuck_after", &self.stuck_after)
            .field("instance_id", &self.instance_id)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("options", &redacted_options(&self.options))
            .finish()
    }
}

/// `kafka.drain_timeout` when the file does not set it and the session
/// timeout is at least twice as long.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaConfig {
    /// `kafka.options."session.timeout.ms"`, when set: `Ok(None)` when it
    /// is not, an error naming the key when it is not a positive number.
    pub fn session_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.options.get("session.timeout.ms") else {
            return Ok(None);
        };
        match text.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(ConfigError::Invalid(format!(
                "kafka.options.\"session.timeout.ms\" = {text:?} is not a positive number of milliseconds"
            ))),
        }
    }

    /// The drain timeout in force: the written `drain_timeout`, or else
    /// the smaller of [`DEFAULT_DRAIN_TIMEOUT`] and half the session
    /// timeout (so that a config lowering `session.timeout.ms`, as tests
    /// against slow brokers do, needs no `drain_timeout` of its own). An
    /// unusable session timeout leaves the default; validation reports it.
    pub fn effective_drain_timeout(&self) -> Duration {
        if let Some(written) = self.drain_timeout_setting {
            return written;
        }
        match self.session_timeout() {
            Ok(Some(session)) => DEFAULT_DRAIN_TIMEOUT.min(session / 2),
            _ => DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Sets [`KafkaConfig::drain_timeout`] to
    /// [`KafkaConfig::effective_drain_timeout`]; call it after changing
    /// `drain_timeout_setting` or `options` by hand.
    pub fn resolve_drain_timeout(&mut self) {
        self.drain_timeout = self.effective_drain_timeout();
    }
}

/// Deserializes a list of strings, or one string of comma-separated items
/// (blanks around the commas and empty items dropped).
fn list_or_comma_separated<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a list of \"host:port\" strings or one comma-separated string"
    )]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(list) => list,
        ListOrString::String(text) => split_list(&text),
    })
}

/// Deserializes `elasticsearch.url`: one URL or a list of them.
fn url_or_urls<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a URL or a list of URLs")]
    enum UrlOrUrls {
        List(Vec<String>),
        One(String),
    }
    Ok(match UrlOrUrls::deserialize(deserializer)? {
        UrlOrUrls::List(list) => list.into_iter().map(|u| u.trim().to_string()).collect(),
        UrlOrUrls::One(url) => vec![url.trim().to_string()],
    })
}

impl ElasticsearchConfig {
    /// The node URLs, comma-separated, for messages.
    pub fn urls(&self) -> String {
        self.url.join(", ")
    }
}

/// The items of a comma-separated list, trimmed, empty ones dropped.
fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

/// `[kafka.tls]`: TLS to the brokers. Every file is PEM; an absent
/// `ca_file` means the system's trusted CAs.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTlsConfig {
    /// CA certificate(s) that sign the brokers' certificates
    /// (`ssl.ca.location`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`), with
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`, unencrypted (`ssl.key.location`).
    pub key_file: Option<PathBuf>,
}

/// A SASL mechanism librdkafka implements without extra libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    /// User name and password in clear (use with TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.sasl]`: SASL authentication to the brokers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`sasl.mechanism`).
    pub mechanism: SaslMechanism,
    /// The user (`sasl.username`).
    pub username: String,
    /// The password (`sasl.password`), or `password_file`, or
    /// `LOGINGEST_KAFKA_SASL_PASSWORD`.
    #[serde(default, skip_serializing_if = "Secret::is_from_file")]
    pub password: Option<Secret>,
    /// File holding the password (trailing newline ignored), read at load.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

/// `[elasticsearch]`: the search cluster.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ElasticsearchConfig {
    /// Base URL of the cluster, e.g. `http://127.0.0.1:9200`, or a list of
    /// node URLs (`["https://es1:9200", "https://es2:9200"]`): requests go
    /// round robin to the nodes that are up.
    #[serde(deserialize_with = "url_or_urls")]
    pub url: Vec<String>,
    /// First time a node is out of rotation after it failed a connection
    /// or answered 502/503/504; doubled (with jitter) at each failed probe.
    #[serde(with = "humantime_serde")]
    pub node_initial_backoff: Duration,
    /// Longest time a node stays out before it is probed again.
    #[serde(with = "humantime_serde")]
    pub node_max_backoff: Duration,
    /// Ask the cluster for its nodes (`GET _nodes/http`) at start and
    /// every `sniff_interval`, and send to the nodes it publishes: only
    /// for clusters whose published HTTP addresses logingest can reach.
    pub sniff: bool,
    /// How often the nodes are sniffed (with `sniff = true`).
    #[serde(with = "humantime_serde")]
    pub sniff_interval: Duration,
    /// PEM CA certificate(s) that sign the cluster's certificate (https
    /// URL; hostname verified); without it, the system's trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// Basic-auth user name (with `password`).
    pub username: Option<String>,
    /// Basic-auth password (or `password_file`, or `LOGINGEST_ES_PASSWORD`).
    #[serde(skip_serializing_if = "Secret::is_from_file")]
    pub password: Option<Secret>,
    /// File holding the basic-auth password, read at load.
    pub password_file: Option<PathBuf>,
    /// API key, in the encoded form Elasticsearch returns (`encoded`:
    /// base64 of `id:api_key`), sent as `Authorization: ApiKey <key>` (or
    /// `api_key_file`, or `LOGINGEST_ES_API_KEY`).
    #[serde(skip_serializing_if = "Secret::is_from_file")]
    pub api_key: Option<Secret>,
    /// File holding the encoded API key, read at load.
    pub api_key_file: Option<PathBuf>,
    /// Bearer token (`Authorization: Bearer <token>`; or
    /// `bearer_token_file`, or `LOGINGEST_ES_BEARER_TOKEN`).
    #[serde(skip_serializing_if = "Secret::is_from_file")]
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token, read at load.
    pub bearer_token_file: Option<PathBuf>,
    /// Timeout of one HTTP request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Attempts of a document that Elasticsearch rejected with a permanent
    /// (4xx) item error before it is given up as failed.
    pub max_item_attempts: u32,
    /// How long a document whose item Elasticsearch keeps answering 429 or
    /// 5xx (an ingest pipeline failing on it, a circuit breaker) is sent
    /// again before it is given up as failed, with the last answer. Time
    /// while whole requests fail (the cluster down) does not count.
    #[serde(with = "humantime_serde")]
    pub max_item_retry_duration: Duration,
    /// `gzip` compresses `_bulk` request bodies (`Content-Encoding: gzip`):
    /// fewer bytes on the wire for some CPU; `none` by default.
    pub compression: Compression,
    /// Adapt the number of `_bulk` requests in flight (up to
    /// `batch.max_in_flight`) to the cluster: grow while latency holds,
    /// halve on 429/5xx. `false`: always `batch.max_in_flight`.
    pub adaptive_concurrency: bool,
}

/// Compression of `_bulk` request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bodies.
    #[default]
    None,
    /// gzip (fast level).
    Gzip,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        Self {
            url: vec!["http://127.0.0.1:9200".into()],
            node_initial_backoff: Duration::from_secs(1),
            node_max_backoff: Duration::from_secs(30),
            sniff: false,
            sniff_interval: Duration::from_secs(300),
            ca_file: None,
            username: None,
            password: None,
            password_file: None,
            api_key: None,
            api_key_file: None,
            bearer_token: None,
            bearer_token_file: None,
            request_timeout: Duration::from_secs(30),
            max_item_attempts: 3,
            max_item_retry_duration: Duration::from_secs(600),
            compression: Compression::None,
            adaptive_concurrency: true,
        }
    }
}

/// `[batch]`: how documents are grouped into `_bulk` requests. A request
/// carries documents of many partitions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// A request is sent when it holds this many documents.
    pub max_documents: usize,
    /// A request is sent when its body reaches this many bytes.
    pub max_bytes: usize,
    /// A request that is not full is sent this long after its oldest
    /// document was read: no line waits longer (unless every request slot
    /// is taken).
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// ... and this long (at most `linger`) when the sink had sent nothing
    /// for a whole `linger` before: a line arriving alone goes out almost at
    /// once, steady traffic is grouped into full requests.
    #[serde(with = "humantime_serde")]
    pub idle_linger: Duration,
    /// No longer used (requests combine partitions, and `[memory]
    /// max_buffered` bounds what is held); accepted so that older
    /// configurations still load, with a warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight_per_partition: Option<usize>,
    /// `_bulk` requests the whole process may have in flight at once (the
    /// ceiling of the adaptive concurrency).
    pub max_in_flight: usize,
}

/// `[memory]`: one budget for the whole process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Bytes held for documents read from Kafka and not yet acknowledged
    /// (open chunks, requests in flight, dead letters), e.g. `"32MiB"` (the default).
    /// When it is spent, reading stops and partitions are paused.
    /// librdkafka's prefetch is derived from it (README, "Memory").
    pub max_buffered: bytesize::ByteSize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_buffered: bytesize::ByteSize::mib(32),
        }
    }
}

impl MemoryConfig {
    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        usize::try_from(self.max_buffered.as_u64()).unwrap_or(usize::MAX)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_documents: 2000,
            max_bytes: 5 * 1024 * 1024,
            linger: Duration::from_millis(200),
            idle_linger: Duration::from_millis(5),
            max_in_flight_per_partition: None,
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
    /// Listen address of `/healthz`, `/readyz`, `/metrics` and `/status`.
    pub listen: SocketAddr,
    /// `/readyz` answers 503 once every `_bulk` request has failed for this
    /// long (e.g. 401 after a credential rotation).
    #[serde(with = "humantime_serde")]
    pub unready_after: Duration,
    /// How long the series of a topic removed from the registry stay in
    /// `/metrics` after its tasks stopped, so that scrapes see their final
    /// values; then they are removed (topic churn must not grow `/metrics`).
    #[serde(with = "humantime_serde")]
    pub removed_topic_grace: Duration,
    /// `/readyz` answers 503 while a partition is stuck
    /// (`kafka.stuck_after`), so that an orchestrator can replace the
    /// instance.
    pub unready_on_stuck: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            unready_after: Duration::from_secs(60),
            removed_topic_grace: Duration::from_secs(120),
            unready_on_stuck: false,
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
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads every `*_file` secret (`elasticsearch.password_file`,
    /// `api_key_file`, `bearer_token_file`, `kafka.sasl.password_file`,
    /// `etcd.password_file`) into its value, then checks the values (not
    /// empty; header-safe for the API key and the bearer token).
    pub fn resolve_secrets(&mut self) -> Result<(), ConfigError> {
        let es = &mut self.elasticsearch;
        read_secret_file(
            "elasticsearch.password",
            &mut es.password,
            &es.password_file,
        )?;
        read_secret_file("elasticsearch.api_key", &mut es.api_key, &es.api_key_file)?;
        read_secret_file(
            "elasticsearch.bearer_token",
            &mut es.bearer_token,
            &es.bearer_token_file,
        )?;
        check_secret_value("elasticsearch.password", &es.password, false)?;
        check_secret_value("elasticsearch.api_key", &es.api_key, true)?;
        check_secret_value("elasticsearch.bearer_token", &es.bearer_token, true)?;
        if let Some(sasl) = &mut self.kafka.sasl {
            read_secret_file(
                "kafka.sasl.password",
                &mut sasl.password,
                &sasl.password_file,
            )?;
            check_secret_value("kafka.sasl.password", &sasl.password, false)?;
        }
        let etcd = &mut self.etcd;
        read_secret_file("etcd.password", &mut etcd.password, &etcd.password_file)?;
        check_secret_value("etcd.password", &etcd.password, false)
    }

    /// The defaults with the environment overrides, for commands run
    /// without a config file.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.apply_env(|name| std::env::var(name).ok());
        config.resolve_secrets()?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text without validating it; derived values (the
    /// effective `kafka.drain_timeout`) are resolved.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".into(),
            message: e.to_string(),
        })?;
        config.kafka.resolve_drain_timeout();
        Ok(config)
    }

    /// Applies `LOGINGEST_ETCD_ENDPOINTS`, `LOGINGEST_KAFKA_BROKERS`,
    /// `LOGINGEST_ES_URL`, `LOGINGEST_INSTANCE_ID` and the secrets
    /// (`LOGINGEST_ES_PASSWORD`, `LOGINGEST_ES_API_KEY`,
    /// `LOGINGEST_ES_BEARER_TOKEN`, `LOGINGEST_KAFKA_SASL_PASSWORD`,
    /// `LOGINGEST_ETCD_PASSWORD`), read through `lookup`. A secret from the
    /// environment replaces the key and its `*_file`.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let list = |s: String| split_list(&s);
        if let Some(v) = lookup(ENV_ETCD_ENDPOINTS) {
            self.etcd.endpoints = list(v);
        }
        if let Some(v) = lookup(ENV_KAFKA_BROKERS) {
            self.kafka.brokers = list(v);
        }
        if let Some(v) = lookup(ENV_ES_URL) {
            self.elasticsearch.url = list(v);
        }
        if let Some(v) = lookup(ENV_INSTANCE_ID) {
            self.instance.id = Some(v.trim().to_string());
        }
        self.apply_env_secrets(lookup);
    }

    fn apply_env_secrets(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        let secret =
            |name: &str| lookup(name).map(|v| Secret::new(v.trim_end_matches(['\r', '\n'])));
        let es = &mut self.elasticsearch;
        if let Some(v) = secret(ENV_ES_PASSWORD) {
            (es.password, es.password_file) = (Some(v), None);
        }
        if let Some(v) = secret(ENV_ES_API_KEY) {
            (es.api_key, es.api_key_file) = (Some(v), None);
        }
        if let Some(v) = secret(ENV_ES_BEARER_TOKEN) {
            (es.bearer_token, es.bearer_token_file) = (Some(v), None);
        }
        if let Some(v) = secret(ENV_KAFKA_SASL_PASSWORD) {
            // Without a [kafka.sasl] section, validation names the missing
            // user name.
            let sasl = self.kafka.sasl.get_or_insert_with(|| KafkaSaslConfig {
                mechanism: SaslMechanism::Plain,
                username: String::new(),
                password: None,
                password_file: None,
            });
            (sasl.password, sasl.password_file) = (Some(v), None);
        }
        if let Some(v) = secret(ENV_ETCD_PASSWORD) {
            (self.etcd.password, self.etcd.password_file) = (Some(v), None);
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut printable = self.clone();
        printable.kafka.options = redacted_options(&printable.kafka.options);
        toml::to_string_pretty(&printable)
            .unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}
