//! `logingest run`: wires the registry watcher, the Kafka group, the
//! reconciler, the sink and the HTTP endpoint together, and shuts them down
//! in order on SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use crate::config::{Config, DeadLetterDestination};
use crate::health::Heartbeat;
use crate::http::{self, HttpState};
use crate::kafka::{consumer, Control, GroupConsumer, Prefetch, StatusBoard};
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::reconciler::{Reconciler, ReconcilerParts};
use crate::registry::watcher::RegistryWatcher;
use crate::sink::dead_letter::DeadLetters;
use crate::sink::template::Templates;
use crate::sink::{self, Sink, SinkParts};

/// Runs the daemon until a termination signal, then drains and exits.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    let instance = config.instance.resolved_id();
    // Static membership's id, once: the host name must not be looked up
    // again later.
    config.kafka.instance_id = config.kafka.group_instance_id(&config.instance, || {
        gethostname::gethostname().to_string_lossy().into_owned()
    });
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
    let nodes = sink::client::pool(&config.elasticsearch, &metrics.es_node_up)?;
    let es = sink::client::over(&config.elasticsearch, &nodes)?;
    // A missing password or etcd TLS file is a configuration error, not an
    // outage the watcher should retry.
    config.require_secrets()?;
    crate::registry::watcher::tls_options(&config.etcd)?;
    if config.batch.max_in_flight_per_partition.is_some() {
        warn!("batch.max_in_flight_per_partition is no longer used: requests combine partitions and memory.max_buffered bounds what is held");
    }
    let producer = match config.dead_letter.destination {
        DeadLetterDestination::Kafka => Some(
            crate::kafka::security::dead_letter_producer(&config.kafka)
                .context("cannot create the dead-letter producer")?,
        ),
        _ => None,
    };
    let dead_letters = Arc::new(DeadLetters::new(
        &config.dead_letter,
        producer,
        es.clone(),
        config.retry.clone(),
        metrics.clone(),
    ));
    let templates = Arc::new(Templates::new(
        es.clone(),
        config.index_template.clone(),
        config.retry.clone(),
    ));
    // Probes nodes out of rotation until the sink has stopped: its last
    // requests may still need a node back.
    let prober_cancel = CancellationToken::new();
    let prober = tokio::spawn(
        nodes
            .clone()
            .run_prober(prober_cancel.clone())
            .in_current_span(),
    );
    // Sniffing (`elasticsearch.sniff`) lives as long as the prober.
    let sniffer = sink::sniff::Sniffer::new(
        nodes.clone(),
        &config.elasticsearch,
        metrics.es_node_up.clone(),
        metrics.es_sniff_failures.clone(),
    )
    .map(|sniffer| tokio::spawn(sniffer.run(prober_cancel.clone()).in_current_span()));
    let (sink, sink_task) = Sink::start(SinkParts {
        nodes: nodes.clone(),
        elasticsearch: config.elasticsearch.clone(),
        batch: config.batch.clone(),
        retry: config.retry.clone(),
        dead_letters,
        metrics: metrics.clone(),
    });
    let budget = MemoryBudget::new(
        config.memory.budget(),
        metrics.buffered_bytes.clone(),
        &metrics.memory_budget_bytes,
    );
    let board = Arc::new(StatusBoard::new(metrics.clone()));
    let GroupConsumer {
        consumer,
        events,
        events_sender,
    } = consumer::create(
        &config.kafka,
        instance,
        Prefetch::for_budget(budget.limit()),
        board.clone(),
        metrics.clone(),
    )
    .context("cannot create the Kafka consumer")?;
    let control = Control::start(consumer.clone(), events_sender)
        .context("cannot start the Kafka control thread")?;
    // The group thread outlives the tasks: revocations during the drain
    // still need serving.
    let group_cancel = CancellationToken::new();
    let group_thread = consumer::spawn_group_thread(consumer.clone(), group_cancel.clone())
        .context("cannot start the Kafka group thread")?;
    let committer = consumer.context().committer.clone();
    let _commit_thread =
        crate::kafka::committer::spawn_commit_thread(Arc::downgrade(&consumer), committer.clone())
            .context("cannot start the Kafka commit thread")?;

    let (publish, registry_rx) = watch::channel(None);
    let watcher = RegistryWatcher::new(
        config.etcd.clone(),
        config.retry.clone(),
        metrics.clone(),
        publish,
    )
    .strict(config.registry.strict);
    let watcher = tokio::spawn(watcher.run(root.child_token()).in_current_span());

    let reconciler_heartbeat = Arc::new(Heartbeat::new("reconciler"));
    // A revocation may hold the group thread for the drain deadline.
    let stall_after =
        Duration::from_secs(30).max(2 * (config.kafka.drain_timeout + Duration::from_secs(2)));
    let http_state = Arc::new(HttpState {
        metrics: registry,
        registry: registry_rx.clone(),
        board: board.clone(),
        instance: instance.to_string(),
        group_id: config.kafka.group_id.clone(),
        sink: sink.health(),
        nodes,
        unready_after: config.http.unready_after,
        unready_on_stuck: config.http.unready_on_stuck,
        heartbeats: vec![
            consumer.context().heartbeat.clone(),
            reconciler_heartbeat.clone(),
        ],
        stall_after,
    });
    let http_cancel = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(listener, http_state, http_cancel.clone()));
    info!(
        listen = %config.http.listen,
        etcd = ?config.etcd.endpoints,
        kafka = ?config.kafka.brokers,
        elasticsearch = %config.elasticsearch.urls(),
        group = %config.kafka.group_id,
        group_instance_id = ?config.kafka.instance_id,
        memory_budget = budget.limit(),
        "logingest started"
    );

    let reconciler = Reconciler::new(
        ReconcilerParts {
            consumer: consumer.clone(),
            control,
            sink,
            budget,
            kafka: config.kafka.clone(),
            batch: config.batch.clone(),
            board,
            templates,
            heartbeat: reconciler_heartbeat,
            metrics,
            removed_topic_grace: config.http.removed_topic_grace,
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
    // Every handle of the sink went with the tasks: its batcher ends once
    // its last requests do (abandoned ones are dropped at their next try).
    if tokio::time::timeout(Duration::from_secs(5), sink_task)
        .await
        .is_err()
    {
        warn!("sink did not stop within 5 s");
    }
    prober_cancel.cancel();
    let _ = prober.await;
    if let Some(sniffer) = sniffer {
        let _ = sniffer.await;
    }
    // No more commits on acknowledgement: the final one below covers them.
    committer.stop();
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
