//! Sniffing: asking the cluster for its nodes (`elasticsearch.sniff`).
//!
//! At start and every `sniff_interval`, `GET _nodes/http` goes to a node
//! the pool picks (an up one); each listed node's `http.publish_address`
//! becomes a URL with the scheme, credentials and path of the first
//! configured node (its client gets the configured TLS trust, credentials
//! and timeout). The pool then holds exactly the listed nodes: new ones are
//! added, up; the ones the cluster no longer lists are removed, seeds
//! included. An answer that fails or lists no node keeps the pool as it is,
//! so the configured seeds stay until the cluster names a node. Failures
//! are logged and counted (`logingest_es_sniff_failures_total`), never
//! fatal.
//!
//! Off by default: published addresses are what the nodes see of
//! themselves, which logingest may not reach (a load balancer in front, pod
//! addresses of a Kubernetes cluster seen from outside).

use std::time::Duration;

use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::{Method, Url};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client;
use super::nodes::{node_label, outcome_of_error, NodeOutcome, NodePool};
use crate::config::ElasticsearchConfig;
use crate::metrics::NodeLabel;

/// Why a sniff changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SniffError {
    /// The request failed.
    #[error("GET _nodes/http on {node}: {reason}")]
    Request {
        /// The node asked.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// The answer is not a `_nodes` answer.
    #[error("GET _nodes/http on {node}: {reason}")]
    Answer {
        /// The node asked.
        node: String,
        /// What is wrong with the answer.
        reason: String,
    },
    /// The answer lists no node with a usable HTTP address.
    #[error("GET _nodes/http on {node} named no node with an HTTP address")]
    NoNode {
        /// The node asked.
        node: String,
    },
}

/// A node's HTTP address as published: the host (a name, an IPv4 address
/// or a bracketed IPv6 address) and the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAddress {
    /// Host name or address (IPv6 in brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Parses an `http.publish_address`: `host:port`, `hostname/ip:port`
/// (the hostname is used) or `[ipv6]:port`.
pub fn parse_publish_address(text: &str) -> Option<PublishAddress> {
    let text = text.trim();
    let (name, address) = match text.split_once('/') {
        Some((name, address)) => (name.trim(), address),
        None => ("", text),
    };
    let (ip, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = if name.is_empty() { ip } else { name };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Some(PublishAddress { host, port })
}

/// The published HTTP addresses of a `_nodes/http` answer, in node id
/// order. Nodes without `http` (HTTP disabled) or with an address that
/// does not parse are skipped (the latter with a warning).
pub fn publish_addresses(body: &Value) -> Result<Vec<PublishAddress>, String> {
    let nodes = body
        .get("nodes")
        .and_then(Value::as_object)
        .ok_or("no \"nodes\" object in the answer")?;
    let mut addresses = Vec::with_capacity(nodes.len());
    for (id, node) in nodes {
        let Some(text) = node.pointer("/http/publish_address") else {
            continue;
        };
        match text.as_str().and_then(parse_publish_address) {
            Some(address) => addresses.push(address),
            None => {
                warn!(node_id = %id, publish_address = %text, "elasticsearch node publishes an HTTP address that does not parse; skipped")
            }
        }
    }
    Ok(addresses)
}

/// The URL of a sniffed node: `template` (a configured node's URL: scheme,
/// credentials, path) with the published host and port.
pub fn node_url(template: &Url, address: &PublishAddress) -> Option<Url> {
    let mut url = template.clone();
    url.set_host(Some(&address.host)).ok()?;
    url.set_port(Some(address.port)).ok()?;
    Some(url)
}

/// What a sniff changes in the pool.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// URLs of nodes to add.
    pub add: Vec<Url>,
    /// Labels of nodes to remove.
    pub remove: Vec<String>,
}

/// The change that makes a pool of nodes labelled `current` hold the
/// `sniffed` nodes. No sniffed node: no change (the seeds stay).
pub fn plan(current: &[String], sniffed: &[Url]) -> Plan {
    if sniffed.is_empty() {
        return Plan::default();
    }
    let sniffed_labels: Vec<String> = sniffed.iter().map(node_label).collect();
    let mut add = Vec::new();
    for (url, label) in sniffed.iter().zip(&sniffed_labels) {
        let known = current.contains(label) || add.iter().any(|u| node_label(u) == *label);
        if !known {
            add.push(url.clone());
        }
    }
    let remove = current
        .iter()
        .filter(|label| !sniffed_labels.contains(label))
        .cloned()
        .collect();
    Plan { add, remove }
}

/// The sniffing task's state.
pub struct Sniffer {
    pool: NodePool,
    config: ElasticsearchConfig,
    template: Url,
    up: Family<NodeLabel, Gauge>,
    failures: Counter,
}

impl Sniffer {
    /// A sniffer updating `pool`, whose nodes' gauges are in `up`; `None`
    /// when `elasticsearch.sniff` is off.
    pub fn new(
        pool: NodePool,
        config: &ElasticsearchConfig,
        up: Family<NodeLabel, Gauge>,
        failures: Counter,
    ) -> Option<Self> {
        if !config.sniff {
            return None;
        }
        // Validation has parsed every configured URL.
        let template = config.url.first().and_then(|u| Url::parse(u).ok())?;
        Some(Self {
            pool,
            config: config.clone(),
            template,
            up,
            failures,
        })
    }

    /// Sniffs at once and then every `sniff_interval`, until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.sniff_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                result = self.sniff() => result,
            };
            if let Err(e) = result {
                self.failures.inc();
                warn!(error = %e, "elasticsearch sniff failed; nodes kept as they were");
            }
        }
    }

    /// One sniff: asks a node, then updates the pool.
    pub async fn sniff(&self) -> Result<(), SniffError> {
        let node = self.pool.pick();
        let label = node.label().to_string();
        let request = node.client().transport().send(
            Method::Get,
            "/_nodes/http",
            HeaderMap::new(),
            None::<&()>,
            None::<&[u8]>,
            Some(self.config.request_timeout.min(Duration::from_secs(30))),
        );
        let response = match request.await {
            Ok(response) => response,
            Err(e) => {
                self.pool.record(&node, outcome_of_error(&e));
                return Err(SniffError::Request {
                    node: label,
                    reason: e.to_string(),
                });
            }
        };
        let status = response.status_code();
        self.pool
            .record(&node, NodeOutcome::Answered(status.as_u16()));
        if !status.is_success() {
            return Err(SniffError::Request {
                node: label,
                reason: format!("HTTP {status}"),
            });
        }
        let body: Value = response.json().await.map_err(|e| SniffError::Answer {
            node: label.clone(),
            reason: e.to_string(),
        })?;
        let addresses = publish_addresses(&body).map_err(|reason| SniffError::Answer {
            node: label.clone(),
            reason,
        })?;
        let urls: Vec<Url> = addresses
            .iter()
            .filter_map(|address| node_url(&self.template, address))
            .collect();
        if urls.is_empty() {
            return Err(SniffError::NoNode { node: label });
        }
        self.apply(&urls);
        Ok(())
    }

    /// Makes the pool hold the `sniffed` nodes.
    fn apply(&self, sniffed: &[Url]) {
        let current: Vec<String> = self
            .pool
            .nodes()
            .iter()
            .map(|node| node.label().to_string())
            .collect();
        let plan = plan(&current, sniffed);
        let mut add = Vec::with_capacity(plan.add.len());
        for url in plan.add {
            match client::node(&self.config, url.clone(), &self.up) {
                Ok(spec) => add.push(spec),
                Err(e) => {
                    warn!(node = %node_label(&url), error = %e, "cannot build a client for a sniffed elasticsearch node; skipped")
                }
            }
        }
        let added: Vec<String> = add.iter().map(|spec| node_label(&spec.url)).collect();
        let removed = self.pool.update(add, &plan.remove);
        for label in &removed {
            self.up.remove(&NodeLabel {
                node: label.clone(),
            });
        }
        if !added.is_empty() || !removed.is_empty() {
            info!(
                ?added,
                ?removed,
                nodes = self.pool.nodes().len(),
                "elasticsearch nodes sniffed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::nodes::NodeSpec;
    use elasticsearch::Elasticsearch;
    use serde_json::json;

    fn address(host: &str, port: u16) -> Option<PublishAddress> {
        Some(PublishAddress {
            host: host.into(),
            port,
        })
    }

    #[test]
    fn publish_addresses_in_every_published_form() {
        assert_eq!(
            parse_publish_address("10.0.0.1:9200"),
            address("10.0.0.1", 9200)
        );
        assert_eq!(
            parse_publish_address("es-1.example/10.0.0.1:9200"),
            address("es-1.example", 9200)
        );
        assert_eq!(
            parse_publish_address("/10.0.0.1:9201"),
            address("10.0.0.1", 9201)
        );
        assert_eq!(parse_publish_address("[::1]:9200"), address("[::1]", 9200));
        assert_eq!(
            parse_publish_address("es-6/[fe80::1]:9200"),
            address("es-6", 9200)
        );
        for bad in ["", "10.0.0.1", "10.0.0.1:", "10.0.0.1:http", ":9200", "h:0"] {
            assert_eq!(parse_publish_address(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nodes_answers_give_the_http_nodes() {
        let body = json!({
            "_nodes": {"total": 4, "successful": 4, "failed": 0},
            "cluster_name": "logs",
            "nodes": {
                "a1": {"name": "es-1", "http": {"bound_address": ["0.0.0.0:9200"], "publish_address": "10.0.0.1:9200"}},
                "b2": {"name": "es-2", "http": {"publish_address": "es-2.example/10.0.0.2:9200"}},
                "c3": {"name": "es-3", "http": {"publish_address": "[::1]:9200"}},
                "d4": {"name": "master-only", "roles": ["master"]},
                "e5": {"name": "broken", "http": {"publish_address": "nonsense"}}
            }
        });
        let addresses = publish_addresses(&body).unwrap();
        assert_eq!(
            addresses,
            vec![
                address("10.0.0.1", 9200).unwrap(),
                address("es-2.example", 9200).unwrap(),
                address("[::1]", 9200).unwrap(),
            ]
        );
        let template = Url::parse("https://user:secret@seed.example:9243/").unwrap();
        let urls: Vec<String> = addresses
            .iter()
            .map(|a| node_url(&template, a).unwrap().to_string())
            .collect();
        assert_eq!(
            urls,
            [
                "https://user:secret@10.0.0.1:9200/",
                "https://user:secret@es-2.example:9200/",
                "https://user:secret@[::1]:9200/",
            ]
        );
        assert_eq!(publish_addresses(&json!({"nodes": {}})).unwrap(), vec![]);
        assert!(publish_addresses(&json!({"error": "forbidden"})).is_err());
    }

    fn urls(texts: &[&str]) -> Vec<Url> {
        texts.iter().map(|t| Url::parse(t).unwrap()).collect()
    }

    fn labels(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn an_empty_answer_keeps_the_seeds() {
        let seeds = labels(&["http://seed-1:9200", "http://seed-2:9200"]);
        assert_eq!(plan(&seeds, &[]), Plan::default());
    }

    #[test]
    fn new_nodes_are_added_and_vanished_ones_removed() {
        let current = labels(&["http://seed-1:9200", "http://es-2:9200"]);
        let sniffed = urls(&[
            "http://es-2:9200",
            "http://es-3:9200",
            "http://es-3:9200",
            "http://es-4:9200",
        ]);
        assert_eq!(
            plan(&current, &sniffed),
            Plan {
                add: urls(&["http://es-3:9200", "http://es-4:9200"]),
                remove: labels(&["http://seed-1:9200"]),
            }
        );
        // Credentials in the URL do not make a known node new.
        let with_credentials = urls(&["http://u:p@es-2:9200"]);
        assert_eq!(
            plan(&labels(&["http://es-2:9200"]), &with_credentials),
            Plan::default()
        );
    }

    fn spec(url: &str, up: &Family<NodeLabel, Gauge>) -> NodeSpec {
        let url = Url::parse(url).unwrap();
        let transport =
            elasticsearch::http::transport::Transport::single_node(url.as_str()).unwrap();
        NodeSpec {
            client: Elasticsearch::new(transport),
            up: up
                .get_or_create(&NodeLabel {
                    node: node_label(&url),
                })
                .clone(),
            url,
        }
    }

    fn pool_labels(pool: &NodePool) -> Vec<String> {
        pool.nodes().iter().map(|n| n.label().to_string()).collect()
    }

    #[test]
    fn the_pool_takes_added_nodes_and_drops_removed_ones() {
        let up = Family::<NodeLabel, Gauge>::default();
        let pool = NodePool::new(
            vec![spec("http://seed:9200", &up)],
            Duration::from_secs(1),
            Duration::from_secs(8),
        );
        let in_flight = pool.pick();
        let removed = pool.update(
            vec![spec("http://es-2:9200", &up), spec("http://es-3:9200", &up)],
            &labels(&["http://seed:9200"]),
        );
        assert_eq!(removed, labels(&["http://seed:9200"]));
        assert_eq!(
            pool_labels(&pool),
            labels(&["http://es-2:9200", "http://es-3:9200"])
        );
        // A request holding the removed node still reports on it.
        pool.record(&in_flight, NodeOutcome::Answered(200));
        let picked: Vec<String> = (0..4).map(|_| pool.pick().label().to_string()).collect();
        assert_eq!(
            picked.iter().filter(|l| *l == "http://es-2:9200").count(),
            2
        );
        assert_eq!(
            picked.iter().filter(|l| *l == "http://es-3:9200").count(),
            2
        );
        // Removing every node and adding none is refused: never empty.
        let removed = pool.update(vec![], &labels(&["http://es-2:9200", "http://es-3:9200"]));
        assert!(removed.is_empty());
        assert_eq!(pool_labels(&pool).len(), 2);
    }
}
