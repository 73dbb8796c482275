//! The HTTP endpoint: `/healthz`, `/readyz`, `/metrics` and `/status`.
//!
//! * `/healthz` — 200 while the Kafka group thread and the reconciler keep
//!   beating their heartbeats; 503 naming the loop that has not beaten for
//!   `stall_after` (restart the process: it cannot recover by itself).
//! * `/readyz` — 503 until the registry was read from etcd and, when it
//!   names topics, the consumer group answered; 503 again while every
//!   `_bulk` request has failed for `http.unready_after` (the sink cannot
//!   deliver: wrong credentials, cluster gone), or while a dead letter has
//!   waited that long for its destination (its partition cannot move
//!   past it); with `http.unready_on_stuck`, 503 while a partition is stuck
//!   (`kafka.stuck_after`); 200 otherwise.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::health::Heartbeat;
use crate::kafka::status::PartitionReport;
use crate::kafka::StatusBoard;
use crate::registry::watcher::RegistrySnapshot;
use crate::sink::nodes::{NodePool, NodeReport};
use crate::sink::service::SinkHealth;

/// What the handlers read.
pub struct HttpState {
    /// The metrics registry.
    pub metrics: Registry,
    /// The registry state published by the watcher (`None` until the first
    /// successful read of etcd).
    pub registry: watch::Receiver<Option<RegistrySnapshot>>,
    /// The partitions this instance owns.
    pub board: Arc<StatusBoard>,
    /// This instance's id.
    pub instance: String,
    /// The consumer group.
    pub group_id: String,
    /// How far the sink is from healthy.
    pub sink: Arc<SinkHealth>,
    /// The Elasticsearch nodes and their health.
    pub nodes: NodePool,
    /// Not ready after every `_bulk` request failed for this long.
    pub unready_after: Duration,
    /// Not ready while a partition is stuck.
    pub unready_on_stuck: bool,
    /// The loops that must keep turning.
    pub heartbeats: Vec<Arc<Heartbeat>>,
    /// Unhealthy when one of them has not beaten for this long.
    pub stall_after: Duration,
}

/// The body of `GET /status`.
#[derive(Serialize)]
pub struct StatusReport {
    /// This instance's id.
    pub instance: String,
    /// The consumer group.
    pub group_id: String,
    /// etcd revision of the registry in force (`None` before the first read).
    pub registry_revision: Option<i64>,
    /// Registered topics.
    pub topics: Vec<String>,
    /// Partitions assigned to this instance.
    pub partitions: Vec<PartitionReport>,
    /// The Elasticsearch nodes, up or out of rotation.
    pub elasticsearch_nodes: Vec<NodeReport>,
}

/// The router, separate from serving so that it can be tested.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state)
}

/// Serves until `cancel` fires.
pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
}

/// Healthy while every loop beats.
async fn healthz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    for heartbeat in &state.heartbeats {
        let age = heartbeat.age();
        if age > state.stall_after {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "unhealthy: the {} has made no progress for {:.0?}\n",
                    heartbeat.name(),
                    age
                ),
            );
        }
    }
    (StatusCode::OK, "ok\n".to_string())
}

/// Ready once the registry was read and, when it names topics, the
/// consumer group has answered (an assignment arrived, possibly empty),
/// and while the sink delivers.
async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if let Some(failing) = state.sink.failing_for() {
        if failing >= state.unready_after {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: every Elasticsearch bulk request has failed for {:.0?}\n",
                    failing
                ),
            );
        }
    }
    if let Some(waiting) = state.sink.letters_waiting_for() {
        if waiting >= state.unready_after {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: a dead letter has waited {:.0?} for its destination (its partition cannot move past it)\n",
                    waiting
                ),
            );
        }
    }
    if state.unready_on_stuck {
        let stuck = state.board.stuck();
        if !stuck.is_empty() {
            let names: Vec<String> = stuck.iter().map(ToString::to_string).collect();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: {} partitions stuck (kafka.stuck_after): {}\n",
                    stuck.len(),
                    names.join(", ")
                ),
            );
        }
    }
    match state.registry.borrow().as_ref() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the registry has not been read from etcd yet\n".to_string(),
        ),
        Some(snapshot) if !snapshot.topics.is_empty() && !state.board.joined() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: waiting for the Kafka consumer group's first assignment\n".to_string(),
        ),
        Some(snapshot) => (
            StatusCode::OK,
            format!(
                "ready: registry revision {}, {} topics, {} partitions assigned\n",
                snapshot.revision,
                snapshot.topics.len(),
                state.board.report().len()
            ),
        ),
    }
}

async fn status(State(state): State<Arc<HttpState>>) -> Json<StatusReport> {
    let (registry_revision, topics) = match state.registry.borrow().as_ref() {
        Some(s) => (Some(s.revision), s.topics.keys().cloned().collect()),
        None => (None, Vec::new()),
    };
    Json(StatusReport {
        instance: state.instance.clone(),
        group_id: state.group_id.clone(),
        registry_revision,
        topics,
        partitions: state.board.report(),
        elasticsearch_nodes: state.nodes.report(),
    })
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.metrics) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn state(heartbeats: Vec<Arc<Heartbeat>>) -> Arc<HttpState> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry, "t");
        let (_, receiver) = watch::channel(None);
        Arc::new(HttpState {
            metrics: registry,
            registry: receiver,
            board: Arc::new(StatusBoard::new(metrics)),
            instance: "t".into(),
            group_id: "g".into(),
            sink: Arc::new(SinkHealth::default()),
            nodes: crate::sink::client::pool(
                &crate::config::ElasticsearchConfig::default(),
                &Default::default(),
            )
            .unwrap(),
            unready_after: Duration::from_secs(60),
            unready_on_stuck: false,
            heartbeats,
            stall_after: Duration::from_secs(30),
        })
    }

    #[tokio::test]
    async fn health_fails_when_a_loop_stops_beating() {
        let fresh = Arc::new(Heartbeat::new("reconciler"));
        let ok = healthz(State(state(vec![fresh.clone()])))
            .await
            .into_response();
        assert_eq!(ok.status(), StatusCode::OK);
        let stale = Arc::new(Heartbeat::stale(
            "kafka group thread",
            Duration::from_secs(31),
        ));
        let failing = healthz(State(state(vec![fresh, stale])))
            .await
            .into_response();
        assert_eq!(failing.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(failing.into_body(), 1024)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("kafka group thread has made no progress"));
    }

    #[tokio::test]
    async fn not_ready_while_a_dead_letter_waits_longer_than_unready_after() {
        let mut shared = state(vec![]);
        Arc::get_mut(&mut shared).expect("one handle").unready_after = Duration::ZERO;
        let body = |response: axum::response::Response| async move {
            let bytes = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let waiting = shared.sink.letter_waiting();
        let second = shared.sink.letter_waiting();
        drop(second);
        let response = readyz(State(shared.clone())).await.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(body(response).await.contains("a dead letter has waited"));
        drop(waiting);
        assert_eq!(shared.sink.letters_waiting_for(), None);
        let response = readyz(State(shared)).await.into_response();
        assert!(body(response).await.contains("registry has not been read"));
    }

    #[tokio::test]
    async fn a_stuck_partition_makes_it_unready_only_when_asked() {
        let body = |r: axum::response::Response| async move {
            let bytes = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
            String::from_utf8_lossy(&bytes).to_string()
        };
        let stuck_state = |unready_on_stuck: bool| {
            let base = state(vec![]);
            let (_, receiver) = watch::channel(None);
            let mut registry = Registry::default();
            let board = Arc::new(StatusBoard::new(Metrics::new(&mut registry, "t")));
            board
                .assign(&crate::topic::TopicPartition::new("nginx", 3))
                .set_stuck(true);
            Arc::new(HttpState {
                metrics: registry,
                registry: receiver,
                board,
                instance: base.instance.clone(),
                group_id: base.group_id.clone(),
                sink: Arc::new(SinkHealth::default()),
                unready_after: base.unready_after,
                unready_on_stuck,
                heartbeats: vec![],
                stall_after: base.stall_after,
                nodes: base.nodes.clone(),
            })
        };
        let unready = readyz(State(stuck_state(true))).await.into_response();
        assert_eq!(unready.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body(unready).await,
            "not ready: 1 partitions stuck (kafka.stuck_after): nginx/3\n"
        );
        // Without the setting, the usual reason (registry not read) shows.
        let other = readyz(State(stuck_state(false))).await.into_response();
        assert!(body(other).await.contains("registry has not been read"));
    }

    #[tokio::test]
    async fn not_ready_before_the_registry_was_read() {
        let response = readyz(State(state(vec![]))).await.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
