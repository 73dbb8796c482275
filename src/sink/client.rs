//! Building the Elasticsearch clients from `[elasticsearch]`: node URLs,
//! timeout, TLS trust (`ca_file`) and one authentication method (basic, API
//! key or bearer token).
//!
//! Every node gets a client of its own (the sink sends each `_bulk` request
//! to the node [`NodePool::pick`] chooses and reports its outcome); [`build`]
//! and [`connect`] give one client over the whole pool for everything else.

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::transport::{
    ConnectionPool, SingleNodeConnectionPool, Transport, TransportBuilder,
};
use elasticsearch::http::Url;
use elasticsearch::Elasticsearch;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::nodes::{node_label, NodePool, NodeSpec};
use crate::config::ElasticsearchConfig;
use crate::metrics::NodeLabel;

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL does not parse.
    #[error("elasticsearch.url {url:?}: {reason}")]
    Url {
        /// The configured URL.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// `elasticsearch.ca_file` cannot be read or holds no PEM certificate.
    #[error("elasticsearch.ca_file {path}: {reason}")]
    CaFile {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The HTTP transport could not be built (TLS set-up).
    #[error("cannot build the Elasticsearch client: {0}")]
    Build(#[from] elasticsearch::http::transport::BuildError),
}

/// The pool of the configured nodes, each with its client; `up` gives each
/// node's `logingest_es_node_up` series.
pub fn pool(
    config: &ElasticsearchConfig,
    up: &Family<NodeLabel, Gauge>,
) -> Result<NodePool, ClientError> {
    let mut nodes = Vec::with_capacity(config.url.len());
    for text in &config.url {
        let url = Url::parse(text).map_err(|e| ClientError::Url {
            url: text.clone(),
            reason: e.to_string(),
        })?;
        nodes.push(node(config, url, up)?);
    }
    if nodes.is_empty() {
        return Err(ClientError::Url {
            url: String::new(),
            reason: "no node configured".into(),
        });
    }
    Ok(NodePool::new(
        nodes,
        config.node_initial_backoff,
        config.node_max_backoff,
    ))
}

/// One node of the pool: a client sending to `url` only, with the TLS
/// trust, credentials and timeout of the configuration, and its
/// `logingest_es_node_up` series in `up`.
pub fn node(
    config: &ElasticsearchConfig,
    url: Url,
    up: &Family<NodeLabel, Gauge>,
) -> Result<NodeSpec, ClientError> {
    let client = Elasticsearch::new(transport(
        config,
        SingleNodeConnectionPool::new(url.clone()),
    )?);
    let gauge = up
        .get_or_create(&NodeLabel {
            node: node_label(&url),
        })
        .clone();
    Ok(NodeSpec {
        url,
        client,
        up: gauge,
    })
}

/// One client over `pool`: each request goes to the pool's next healthy
/// node.
pub fn over(config: &ElasticsearchConfig, pool: &NodePool) -> Result<Elasticsearch, ClientError> {
    Ok(Elasticsearch::new(transport(config, pool.connections())?))
}

/// A client for the configured cluster, with its credentials and timeout,
/// round robin over the configured nodes (all taken as up).
pub fn build(config: &ElasticsearchConfig) -> Result<Elasticsearch, ClientError> {
    over(config, &pool(config, &Family::default())?)
}

/// Like [`build`], for the command-line tools: first sends `GET /` to every
/// node, so that requests go only to the nodes that answered (to all of
/// them when none did, and the tool reports the error of its first
/// request).
pub async fn connect(config: &ElasticsearchConfig) -> Result<Elasticsearch, ClientError> {
    let pool = pool(config, &Family::default())?;
    if config.url.len() > 1 {
        pool.probe_all().await;
    }
    over(config, &pool)
}

/// The transport over `connections`, with the TLS trust, credentials and
/// timeout of the configuration.
fn transport(
    config: &ElasticsearchConfig,
    connections: impl ConnectionPool + Clone + 'static,
) -> Result<Transport, ClientError> {
    let mut builder = TransportBuilder::new(connections)
        .timeout(config.request_timeout)
        .enable_meta_header(false);
    if let Some(path) = &config.ca_file {
        let ca_error = |reason: String| ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
        let ca = Certificate::from_pem(&pem).map_err(|e| ca_error(e.to_string()))?;
        if ca.is_empty() {
            return Err(ca_error("no PEM certificate in the file".into()));
        }
        // Full: the chain must lead to this CA and the host name (or IP)
        // must match the certificate.
        builder = builder.cert_validation(CertificateValidation::Full(ca));
    }
    if let Some(credentials) = credentials(config) {
        builder = builder.auth(credentials);
    }
    Ok(builder.build()?)
}

/// The configured authentication method (validation allows at most one).
fn credentials(config: &ElasticsearchConfig) -> Option<Credentials> {
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        return Some(Credentials::Basic(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    if let Some(key) = &config.api_key {
        return Some(Credentials::EncodedApiKey(key.expose().to_string()));
    }
    config
        .bearer_token
        .as_ref()
        .map(|token| Credentials::Bearer(token.expose().to_string()))
}
