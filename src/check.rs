//! `logingest check-config --connect`: reach each endpoint with the
//! configured TLS and credentials, and say what answered.
//!
//! Each check builds its client exactly as `logingest run` does, so a
//! success here means the daemon can connect: etcd answers a count of the
//! registry prefix, Kafka a metadata request, Elasticsearch `GET /`.

use std::fmt;
use std::time::Duration;

use etcd_client::GetOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::config::{Config, ElasticsearchConfig, EtcdConfig, KafkaConfig};
use crate::kafka::client::{admin_consumer, RecordingContext};

/// How long each endpoint may take to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of reaching one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    /// `etcd`, `kafka` or `elasticsearch`.
    pub service: &'static str,
    /// The endpoints tried.
    pub target: String,
    /// What answered, or why nothing did.
    pub outcome: Result<String, String>,
}

impl EndpointCheck {
    /// Whether the endpoint answered as expected.
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }
}

impl fmt::Display for EndpointCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(detail) => write!(f, "{}: ok ({}): {detail}", self.service, self.target),
            Err(reason) => write!(f, "{}: error ({}): {reason}", self.service, self.target),
        }
    }
}

/// Reaches etcd, Kafka and Elasticsearch concurrently.
pub async fn check_endpoints(config: &Config) -> Vec<EndpointCheck> {
    let (etcd, kafka, es) = tokio::join!(
        check_etcd(&config.etcd),
        check_kafka(&config.kafka),
        check_elasticsearch(&config.elasticsearch)
    );
    let mut checks = vec![etcd, kafka];
    checks.extend(es);
    checks
}

/// An error and its causes, on one line.
fn chain(error: &dyn std::error::Error) -> String {
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

async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(CHECK_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
}

/// Connects (TLS, authentication) and counts the keys under the prefix.
pub async fn check_etcd(config: &EtcdConfig) -> EndpointCheck {
    let outcome = with_timeout(async {
        let mut client = crate::registry::watcher::connect(config)
            .await
            .map_err(|e| chain(&e))?;
        let reply = client
            .get(
                config.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
            .map_err(|e| chain(&e))?;
        Ok(format!(
            "{} key(s) under {} at revision {}",
            reply.count(),
            config.prefix,
            reply.header().map_or(0, |h| h.revision())
        ))
    })
    .await;
    EndpointCheck {
        service: "etcd",
        target: config.endpoints.join(","),
        outcome,
    }
}

/// Builds a client with the consumer's settings (TLS, SASL, options) and
/// asks the brokers for the cluster's metadata.
pub async fn check_kafka(config: &KafkaConfig) -> EndpointCheck {
    let target = config.brokers.join(",");
    let config = config.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let cfg = admin_consumer(&config, "logingest-check-config");
        let consumer: BaseConsumer<RecordingContext> = cfg
            .create_with_context(RecordingContext::default())
            .map_err(|e| chain(&e))?;
        match consumer.fetch_metadata(None, CHECK_TIMEOUT) {
            Ok(metadata) => Ok(format!(
                "{} broker(s), {} topic(s)",
                metadata.brokers().len(),
                metadata.topics().len()
            )),
            Err(e) => {
                // Serve the queued error events, in case the log had none.
                let _ = consumer.poll(Duration::ZERO);
                Err(match consumer.context().last_error() {
                    Some(reason) => format!("{}: {reason}", chain(&e)),
                    None => chain(&e),
                })
            }
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("check task failed: {e}")));
    EndpointCheck {
        service: "kafka",
        target,
        outcome,
    }
}

/// Builds the clients (CA, credentials) and sends `GET /` to every node:
/// one check per node, so that a node the daemon could not reach shows.
pub async fn check_elasticsearch(config: &ElasticsearchConfig) -> Vec<EndpointCheck> {
    let pool = match crate::sink::client::pool(config, &Default::default()) {
        Ok(pool) => pool,
        Err(e) => {
            return vec![EndpointCheck {
                service: "elasticsearch",
                target: config.urls(),
                outcome: Err(chain(&e)),
            }]
        }
    };
    let nodes = pool.nodes();
    let checks = nodes.iter().map(|node| async move {
        let outcome = with_timeout(async {
            let response = node.client().info().send().await.map_err(|e| chain(&e))?;
            let status = response.status_code();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let mut detail = format!("HTTP {status}");
            if let Some(version) = body["version"]["number"].as_str() {
                detail.push_str(&format!(", version {version}"));
            }
            if let Some(name) = body["cluster_name"].as_str() {
                detail.push_str(&format!(", cluster {name}"));
            }
            Ok(detail)
        })
        .await;
        EndpointCheck {
            service: "elasticsearch",
            target: node.label().to_string(),
            outcome,
        }
    });
    futures::future::join_all(checks).await
}
