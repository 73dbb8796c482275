//! Reading the logs back: `logingest search` and `logingest tail`.
//!
//! Both resolve their first argument through the registry: a registered
//! topic searches the indices its settings write to (the wildcard pattern
//! of a dated template such as `{topic}-%Y.%m.%d`, or the data stream),
//! restricted to that topic's documents (`kafka.topic`); anything else is
//! taken as an index name or pattern. They use the sink's client
//! ([`crate::sink::client::build`]), so TLS and credentials of
//! `[elasticsearch]` apply.
//!
//! Exit codes ([`ReadbackError::exit_code`]): 0 success (also when
//! nothing matches), 1 other errors (configuration, etcd, an unexpected
//! reply, authentication), 2 command-line usage, 3 no index matches,
//! 4 Elasticsearch refused the query, 5 Elasticsearch unreachable.

pub mod output;
pub mod query;
pub mod search;
pub mod tail;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use elasticsearch::{Elasticsearch, SearchParts};
use serde_json::Value;

use crate::config::Config;
use crate::registry::admin::{AdminError, RegistryAdmin};
use crate::topic::IndexTemplate;
use output::Format;
use query::{parse_reply, Reply};

/// Exit code: no index matches the target.
pub const EXIT_NO_INDEX: u8 = 3;
/// Exit code: Elasticsearch refused the query (HTTP 400).
pub const EXIT_BAD_QUERY: u8 = 4;
/// Exit code: Elasticsearch could not be reached.
pub const EXIT_UNREACHABLE: u8 = 5;

/// Why a read-back command failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadbackError {
    /// No index (or data stream) matches yet.
    #[error("no index matches {pattern}{}: nothing has been indexed there yet (or the pattern is wrong)", for_topic(.topic))]
    NoIndex {
        /// The index pattern searched.
        pattern: String,
        /// The registered topic it was resolved from.
        topic: Option<String>,
    },
    /// Elasticsearch refused the request as malformed (a bad query string,
    /// a bad time bound, an invalid index name).
    #[error("Elasticsearch refused the query: {reason}")]
    BadQuery {
        /// The server's reason.
        reason: String,
    },
    /// Elasticsearch could not be reached (connection refused, DNS, TLS,
    /// timeout).
    #[error("cannot reach Elasticsearch at {url}: {reason}")]
    Unreachable {
        /// The configured URL.
        url: String,
        /// The client's error, with its causes.
        reason: String,
    },
    /// Elasticsearch answered with another error status (401, 403, 5xx).
    #[error("Elasticsearch at {url} answered HTTP {status}: {reason}")]
    Server {
        /// The configured URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's reason.
        reason: String,
    },
    /// A reply that is not what `_search` returns.
    #[error("unexpected reply from Elasticsearch at {url}: {reason}")]
    Reply {
        /// The configured URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be read.
    #[error("{error} (to search an index without asking the registry, pass --index)")]
    Registry {
        /// The registry's error (its message already holds its causes).
        error: AdminError,
    },
    /// The registry did not answer in time.
    #[error("etcd ({endpoints}) did not answer within {timeout:?} (to search an index without asking the registry, pass --index)")]
    RegistryTimeout {
        /// The endpoints tried.
        endpoints: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The topic's registry value does not parse.
    #[error("the registry value of topic {topic} is invalid ({reason}); pass --index to search an index by name")]
    InvalidTopic {
        /// The topic.
        topic: String,
        /// The parser's reason.
        reason: String,
    },
    /// `tail -f` needs `@timestamp`, and the newest document has none.
    #[error("the documents of {pattern} have no @timestamp; tail -f follows @timestamp")]
    NoTimestamp {
        /// The index pattern searched.
        pattern: String,
    },
    /// The client could not be built from `[elasticsearch]`.
    #[error(transparent)]
    Client(#[from] crate::sink::client::ClientError),
    /// Writing to stdout failed (other than a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
}

fn for_topic(topic: &Option<String>) -> String {
    topic
        .as_ref()
        .map(|t| format!(" (the indices of topic {t})"))
        .unwrap_or_default()
}

impl ReadbackError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReadbackError::NoIndex { .. } => EXIT_NO_INDEX,
            ReadbackError::BadQuery { .. } => EXIT_BAD_QUERY,
            ReadbackError::Unreachable { .. } => EXIT_UNREACHABLE,
            _ => 1,
        }
    }

    /// Whether a `tail -f` poll that failed so may succeed later.
    fn is_transient(&self) -> bool {
        match self {
            ReadbackError::Unreachable { .. } | ReadbackError::Reply { .. } => true,
            ReadbackError::Server { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Options shared by `search` and `tail`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The TOML configuration file ([etcd] and [elasticsearch]); without
    /// it, defaults and LOGINGEST_ETCD_ENDPOINTS / LOGINGEST_ES_URL apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Take TOPIC_OR_INDEX as an index name or pattern without asking the
    /// registry (names with `*` or `,` never ask it).
    #[arg(long)]
    pub index: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Print these fields (comma-separated, dotted paths such as
    /// `kafka.key,http.status`) instead of the message.
    #[arg(long, value_delimiter = ',')]
    pub fields: Vec<String>,
}

/// Where to search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The index names or patterns (comma-separated parts of the argument,
    /// or a topic's pattern).
    pub indices: Vec<String>,
    /// The registered topic, whose documents only are searched.
    pub topic: Option<String>,
}

impl Target {
    /// The indices as the user would write them.
    pub fn pattern(&self) -> String {
        self.indices.join(",")
    }

    /// An index name or pattern as given.
    pub fn index(arg: &str) -> Self {
        Self {
            indices: arg
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
            topic: None,
        }
    }

    /// The target of a registered topic whose settings write to `index`
    /// (a name, a template with dates, or a data stream).
    pub fn topic(topic: &str, index: &str) -> Result<Self, ReadbackError> {
        let template =
            IndexTemplate::parse(topic, index).map_err(|e| ReadbackError::InvalidTopic {
                topic: topic.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            indices: vec![template.pattern()],
            topic: Some(topic.to_string()),
        })
    }
}

/// Resolves the command's first argument: a registered topic, or else an
/// index name or pattern. Notes on stderr when a name is not registered.
pub async fn resolve_target(
    config: &Config,
    arg: &str,
    index_only: bool,
) -> Result<Target, ReadbackError> {
    let arg = arg.trim();
    if index_only || arg.contains(['*', ',']) || crate::topic::validate_topic(arg).is_err() {
        return Ok(Target::index(arg));
    }
    let timeout = config.etcd.connect_timeout * 2 + Duration::from_secs(2);
    let endpoints = config.etcd.endpoints.join(",");
    let listed = tokio::time::timeout(timeout, async {
        let mut admin = RegistryAdmin::connect(&config.etcd).await?;
        admin.list().await
    })
    .await
    .map_err(|_| ReadbackError::RegistryTimeout { endpoints, timeout })?;
    let (topics, errors) = listed.map_err(|error| ReadbackError::Registry { error })?;
    if let Some(index) = topics.get(arg) {
        return Target::topic(arg, index);
    }
    let key = format!("{}{arg}", config.etcd.prefix);
    if let Some((_, error)) = errors.iter().find(|(k, _)| *k == key) {
        return Err(ReadbackError::InvalidTopic {
            topic: arg.to_string(),
            reason: error.to_string(),
        });
    }
    eprintln!("note: {arg} is not a registered topic; searching it as an index name");
    Ok(Target::index(arg))
}

/// Runs `_search` requests against the target's indices.
pub struct Reader {
    client: Elasticsearch,
    url: String,
    target: Target,
}

/// Documents per `_search` request when paging.
pub const PAGE_SIZE: usize = 1000;

impl Reader {
    /// A reader of `target` through the configured cluster (the nodes
    /// that answer `GET /`).
    pub async fn new(config: &Config, target: Target) -> Result<Self, ReadbackError> {
        Ok(Self {
            client: crate::sink::client::connect(&config.elasticsearch).await?,
            url: config.elasticsearch.urls(),
            target,
        })
    }

    /// The target searched.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One `_search`. A pattern that matches no index is
    /// [`ReadbackError::NoIndex`] (not an empty reply), so that a typo is
    /// told apart from "nothing matched".
    pub async fn search(&self, body: Value) -> Result<Reply, ReadbackError> {
        let indices: Vec<&str> = self.target.indices.iter().map(String::as_str).collect();
        let response = self
            .client
            .search(SearchParts::Index(&indices))
            .allow_no_indices(false)
            .ignore_unavailable(false)
            .body(body)
            .send()
            .await
            .map_err(|e| ReadbackError::Unreachable {
                url: self.url.clone(),
                reason: error_chain(&e),
            })?;
        let status = response.status_code().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ReadbackError::Unreachable {
                url: self.url.clone(),
                reason: format!("reading the reply: {}", error_chain(&e)),
            })?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            let json = json.ok_or_else(|| ReadbackError::Reply {
                url: self.url.clone(),
                reason: format!(
                    "HTTP {status} with a body that is not JSON: {}",
                    snippet(&bytes)
                ),
            })?;
            return parse_reply(&json).map_err(|reason| ReadbackError::Reply {
                url: self.url.clone(),
                reason,
            });
        }
        let reason = match &json {
            Some(body) => query::error_reason(body),
            None => snippet(&bytes),
        };
        let kind = json.as_ref().and_then(query::error_type);
        Err(match (status, kind) {
            (404, Some("index_not_found_exception")) => ReadbackError::NoIndex {
                pattern: self.target.pattern(),
                topic: self.target.topic.clone(),
            },
            (400, _) => ReadbackError::BadQuery { reason },
            _ => ReadbackError::Server {
                url: self.url.clone(),
                status,
                reason,
            },
        })
    }
}

/// An error and its causes, `: `-separated (reqwest's own message only
/// says "error sending request").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None if text.is_empty() => "(empty body)".into(),
        None => text.to_string(),
    }
}

/// Writes one line to stdout. `Ok(false)` when stdout is closed (`| head`):
/// the command then stops quietly.
fn write_line(out: &mut impl Write, line: &str) -> Result<bool, ReadbackError> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ReadbackError::Output(e)),
    }
}

/// Flushes stdout, with [`write_line`]'s handling of a closed pipe.
fn flush(out: &mut impl Write) -> Result<bool, ReadbackError> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(ReadbackError::Output(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::index("a, b-*,");
        assert_eq!(t.indices, ["a", "b-*"]);
        assert_eq!(t.pattern(), "a,b-*");
        let t = Target::topic("Nginx", "{topic}-%Y.%m.%d").unwrap();
        assert_eq!(t.indices, ["nginx-*.*.*"]);
        assert_eq!(t.topic.as_deref(), Some("Nginx"));
        assert_eq!(
            Target::topic("t", "logs-t-default").unwrap().indices,
            ["logs-t-default"]
        );
        assert!(matches!(
            Target::topic("t", "x-%Q"),
            Err(ReadbackError::InvalidTopic { .. })
        ));
    }

    #[test]
    fn exit_codes_and_messages() {
        let e = ReadbackError::NoIndex {
            pattern: "nginx-*".into(),
            topic: Some("nginx".into()),
        };
        assert_eq!(e.exit_code(), EXIT_NO_INDEX);
        let text = e.to_string();
        assert!(
            text.contains("nginx-*") && text.contains("topic nginx"),
            "{text}"
        );
        assert_eq!(
            ReadbackError::BadQuery { reason: "x".into() }.exit_code(),
            EXIT_BAD_QUERY
        );
        let e = ReadbackError::Unreachable {
            url: "http://es:9200".into(),
            reason: "refused".into(),
        };
        assert_eq!(e.exit_code(), EXIT_UNREACHABLE);
        assert!(e.to_string().contains("http://es:9200"));
        assert!(e.is_transient());
        let server = |status| ReadbackError::Server {
            url: String::new(),
            status,
            reason: String::new(),
        };
        assert_eq!(server(401).exit_code(), 1);
        assert!(!server(401).is_transient());
        assert!(server(503).is_transient() && server(429).is_transient());
    }

    #[test]
    fn closed_pipe_stops_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(!write_line(&mut Closed, "x").unwrap());
        let mut buffer = Vec::new();
        assert!(write_line(&mut buffer, "x").unwrap());
        assert_eq!(buffer, b"x\n");
        assert_eq!(snippet(b"  "), "(empty body)");
        assert_eq!(snippet("é".repeat(300).as_bytes()).chars().count(), 203);
    }
}
