//! `logingest run`: wires the registry watcher, the Kafka group, the
//! reconciler, the sink and the HTTP endpoint together, and shuts them down
//! in order on SIGTERM/SIGINT.

use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::Config;
use crate::http::{self, HttpState};
use crate::kafka::{consumer, StatusBoard};
use crate::metrics::Metrics;
use crate::reconciler::{Reconciler, ReconcilerParts};
use crate::registry::watcher::RegistryWatcher;
use crate::sink::dead_letter::DeadLetters;
use crate::sink::template::Templates;
use crate::sink::{self, Sink};

/// Runs the daemon until a termination signal, then drains and exits.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let instance = config.instance.resolved_id();
    run_instance(config, &instance)
        .instrument(info_span!("logingest", instance = %instance))
        .await
}

async fn run_instance(config: Config, instance: &str) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry, instance);
    let root = CancellationToken::new();

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {}", config.http.listen))?;
    let es = sink::client::build(&config.elasticsearch)?;
    // A missing password or etcd TLS file is a configuration error, not an
    // outage the watcher should retry.
    config.require_secrets()?;
    crate::registry::watcher::tls_options(&config.etcd)?;
    let es_for_templates = es.clone();
    let dead_letters = Arc::new(
        DeadLetters::new(
            &config.dead_letter,
            &config.kafka,
            es.clone(),
            config.retry.clone(),
            metrics.clone(),
        )
        .context("cannot create the dead-letter producer")?,
    );
    let sink = Arc::new(Sink::new(
        es,
        &config.elasticsearch,
        config.retry.clone(),
        config.batch.max_in_flight,
        metrics.clone(),
    ));
    let board = Arc::new(StatusBoard::new(metrics.clone()));
    let (consumer, events) =
        consumer::create(&config.kafka, instance, board.clone(), metrics.clone())
            .context("cannot create the Kafka consumer")?;
    // The group thread outlives the tasks: revocations during the drain
    // still need serving.
    let group_cancel = CancellationToken::new();
    let group_thread = consumer::spawn_group_thread(consumer.clone(), group_cancel.clone())
        .context("cannot start the Kafka group thread")?;

    let (publish, registry_rx) = watch::channel(None);
    let watcher = RegistryWatcher::new(
        config.etcd.clone(),
        config.retry.clone(),
        metrics.clone(),
        publish,
    );
    let watcher = tokio::spawn(watcher.run(root.child_token()).in_current_span());

    let http_state = Arc::new(HttpState {
        metrics: registry,
        registry: registry_rx.clone(),
        board: board.clone(),
        instance: instance.to_string(),
        group_id: config.kafka.group_id.clone(),
    });
    let http_cancel = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(listener, http_state, http_cancel.clone()));
    info!(
        listen = %config.http.listen,
        etcd = ?config.etcd.endpoints,
        kafka = ?config.kafka.brokers,
        elasticsearch = %config.elasticsearch.url,
        group = %config.kafka.group_id,
        "logingest started"
    );

    let reconciler = Reconciler::new(
        ReconcilerParts {
            consumer: consumer.clone(),
            sink,
            kafka: config.kafka.clone(),
            batch: config.batch.clone(),
            board,
            dead_letters,
            templates: Arc::new(Templates::new(
                es_for_templates,
                config.index_template.clone(),
                config.retry.clone(),
            )),
            metrics,
        },
        root.clone(),
    );
    let reconciler = tokio::spawn(
        reconciler
            .run(registry_rx, events, config.shutdown.timeout)
            .in_current_span(),
    );

    wait_for_signal().await;
    info!(timeout = ?config.shutdown.timeout, "shutting down: flushing and committing");
    root.cancel();
    if let Err(e) = reconciler.await {
        warn!(error = %e, "reconciler failed during shutdown");
    }
    let _ = watcher.await;
    // Everything acknowledged was stored; commit it before leaving the group.
    let closing = consumer.clone();
    let commit =
        tokio::task::spawn_blocking(move || closing.commit_consumer_state(CommitMode::Sync)).await;
    match commit {
        Ok(Ok(()))
        | Ok(Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        ))) => {}
        Ok(Err(e)) => warn!(error = %e, "final commit failed"),
        Err(e) => warn!(error = %e, "final commit task failed"),
    }
    group_cancel.cancel();
    // Closing the consumer (leaving the group) blocks; keep it off the
    // runtime's workers.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = group_thread.join();
        drop(consumer);
    })
    .await;
    http_cancel.cancel();
    let _ = http_task.await;
    info!("logingest stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops logingest");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
