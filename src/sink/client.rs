//! Building the Elasticsearch client from `[elasticsearch]`: URL, timeout,
//! TLS trust (`ca_file`) and one authentication method (basic, API key or
//! bearer token).

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
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

/// A client for the configured cluster, with its credentials and timeout.
pub fn build(config: &ElasticsearchConfig) -> Result<Elasticsearch, ClientError> {
    let url = Url::parse(&config.url).map_err(|e| ClientError::Url {
        url: config.url.clone(),
        reason: e.to_string(),
    })?;
    let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
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
    Ok(Elasticsearch::new(builder.build()?))
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
