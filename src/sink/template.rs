//! Index templates: before a topic's first document, make sure an index
//! template covers the indices it writes to, so that `@timestamp` is a
//! date, `kafka.topic` a keyword and so on, and a Kibana data view works out
//! of the box. Data-stream topics get a template with `data_stream` enabled,
//! which Elasticsearch requires before the stream's first write.

use std::collections::HashSet;
use std::sync::Mutex;

use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::config::{IndexTemplateConfig, RetryConfig};
use crate::topic::TopicSettings;

/// Installs one index template per distinct index pattern, once.
pub struct Templates {
    client: Elasticsearch,
    config: IndexTemplateConfig,
    retry: RetryConfig,
    installed: Mutex<HashSet<String>>,
}

/// The template logingest installs for `pattern`.
pub fn template_body(pattern: &str, data_stream: bool, priority: u32) -> Value {
    let mut body = json!({
        "index_patterns": [pattern],
        // More specific patterns win over broader ones that overlap.
        "priority": priority + pattern.len().min(1000) as u32,
        "template": {
            "mappings": {
                "properties": {
                    "@timestamp": {"type": "date"},
                    "message": {"type": "text"},
                    "tags": {"type": "keyword"},
                    "kafka": {
                        "properties": {
                            "topic": {"type": "keyword"},
                            "key": {"type": "keyword"},
                            "partition": {"type": "integer"},
                            "offset": {"type": "long"}
                        }
                    }
                }
            }
        },
        "_meta": {"managed_by": "logingest"}
    });
    if data_stream {
        body["data_stream"] = json!({});
    }
    body
}

/// The template's name: the prefix and the pattern, made safe.
pub fn template_name(prefix: &str, pattern: &str) -> String {
    let safe: String = pattern
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}-{safe}")
}

impl Templates {
    /// A template installer over the sink's client.
    pub fn new(client: Elasticsearch, config: IndexTemplateConfig, retry: RetryConfig) -> Self {
        Self {
            client,
            config,
            retry,
            installed: Mutex::new(HashSet::new()),
        }
    }

    /// Makes sure a template covers `settings`' indices. Retries while
    /// Elasticsearch is unreachable or failing (nothing could be indexed
    /// anyway); a refusal (4xx) is logged and ingestion goes on without it.
    pub async fn ensure(&self, settings: &TopicSettings) {
        if !self.config.enabled {
            return;
        }
        let pattern = settings.template.pattern();
        let name = template_name(&self.config.name_prefix, &pattern);
        if self.is_installed(&name) {
            return;
        }
        let body = template_body(&pattern, settings.data_stream, self.config.priority);
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        loop {
            let result = self
                .client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(&name))
                .body(body.clone())
                .send()
                .await;
            let failure = match result {
                Ok(r) if r.status_code().is_success() => {
                    info!(template = %name, pattern = %pattern, "index template installed");
                    break;
                }
                Ok(r) if r.status_code().is_client_error() => {
                    let status = r.status_code();
                    let text = r.text().await.unwrap_or_default();
                    warn!(template = %name, %status, reply = %text, "index template refused; indexing without it");
                    break;
                }
                Ok(r) => format!("HTTP {}", r.status_code()),
                Err(e) => e.to_string(),
            };
            let delay = backoff.next_delay();
            warn!(template = %name, error = %failure, retry_in = ?delay, "cannot install index template; retrying");
            tokio::time::sleep(delay).await;
        }
        self.installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
    }

    fn is_installed(&self, name: &str) -> bool {
        self.installed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bodies() {
        assert_eq!(
            template_name("logingest", "nginx-*.*.*"),
            "logingest-nginx-_._._"
        );
        let body = template_body("nginx-*", true, 150);
        assert_eq!(body["priority"], 157);
        assert_eq!(body["data_stream"], json!({}));
        assert_eq!(
            body["template"]["mappings"]["properties"]["kafka"]["properties"]["topic"]["type"],
            "keyword"
        );
        assert!(template_body("x", false, 1).get("data_stream").is_none());
    }
}
