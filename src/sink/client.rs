//! Building the Elasticsearch client from `[elasticsearch]`.

use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Url;
use elasticsearch::Elasticsearch;

use crate::config::ElasticsearchConfig;

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
    /// The HTTP transport could not be built (TLS set-up).
    #[error("cannot build the Elasticsearch client: {0}")]
    Build(#[from] elasticsearch::http::transport::BuildError),
}

/// A client for the configured cluster, with its credentials and timeout.
pub fn build(config: &ElasticsearchConfig) -> Result<Elasticsearch, ClientError> {
    let url = Url::parse(&config.url).map_err(|e| ClientError::Url {
        url: config.url.clone(),
        reason: e.to_string(),
    })?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
        .timeout(config.request_timeout)
        .enable_meta_header(false);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.auth(Credentials::Basic(
            user.clone(),
            password.expose().to_string(),
        ));
    }
    Ok(Elasticsearch::new(builder.build()?))
}
