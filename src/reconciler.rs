//! The reconciler: the only owner of partition tasks.
//!
//! Two inputs: the registry (desired topics, from the etcd watcher) and the
//! consumer group (assigned partitions, from librdkafka's callbacks). Its
//! output is one running task per partition that is both assigned and
//! registered. Cancellation follows a token tree, process → topic →
//! partition, so removing a topic or shutting down reaches every task of it
//! without bookkeeping.
//!
//! * A topic removed from the registry: its tasks are cancelled at once
//!   (flush, commit), then the subscription shrinks; nothing waits for the
//!   rebalance.
//! * A topic added: the subscription grows; its partitions get tasks when the
//!   group assigns them (or at once, if they are still assigned).
//! * A topic's settings changed: its tasks drain and restart with the new
//!   settings from the first unacknowledged offset.
//! * Partitions revoked: their tasks drain and commit before librdkafka hands
//!   them over.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::Consumer;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::{BatchConfig, KafkaConfig};
use crate::kafka::{
    KafkaEvent, LogConsumer, PartitionQueue, PartitionStatus, PartitionTask, StatusBoard, TaskExit,
    TopicPartition,
};
use crate::metrics::Metrics;
use crate::registry::watcher::RegistrySnapshot;
use crate::registry::{DesiredTopics, TopicSettings};
use crate::sink::dead_letter::DeadLetters;
use crate::sink::template::Templates;
use crate::sink::Sink;

/// A partition currently assigned to this member.
struct Assigned {
    queue: Arc<PartitionQueue>,
    status: Arc<PartitionStatus>,
    task: Option<RunningTask>,
    /// Where the next task must seek to (a previous one left unacked reads).
    resume_from: Option<i64>,
    /// The group took it away; forget it once its task has stopped.
    revoked: bool,
}

struct RunningTask {
    id: u64,
    token: CancellationToken,
}

/// A revocation waiting for its partitions' tasks to stop.
struct PendingRevoke {
    waiting: HashSet<TopicPartition>,
    done: std_mpsc::SyncSender<()>,
}

/// What the reconciler needs to spawn tasks.
pub struct ReconcilerParts {
    /// The group consumer.
    pub consumer: Arc<LogConsumer>,
    /// The Elasticsearch sink.
    pub sink: Arc<Sink>,
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[batch]`.
    pub batch: BatchConfig,
    /// What this instance owns, for `/status`.
    pub board: Arc<StatusBoard>,
    /// Where documents rejected for good go.
    pub dead_letters: Arc<DeadLetters>,
    /// Index templates.
    pub templates: Arc<Templates>,
    /// Metrics.
    pub metrics: Metrics,
}

/// Diffs desired topics against assigned partitions and runs the tasks.
pub struct Reconciler {
    parts: ReconcilerParts,
    root: CancellationToken,
    desired: DesiredTopics,
    subscribed: BTreeSet<String>,
    topic_tokens: HashMap<String, CancellationToken>,
    assigned: HashMap<TopicPartition, Assigned>,
    tasks: JoinSet<TaskExit>,
    next_task_id: u64,
    pending_revokes: Vec<PendingRevoke>,
    /// Topics removed whose tasks are still draining, with the removal time.
    stopping_topics: HashMap<String, Instant>,
}

impl Reconciler {
    /// A reconciler whose tasks are children of `root`.
    pub fn new(parts: ReconcilerParts, root: CancellationToken) -> Self {
        Self {
            parts,
            root,
            desired: DesiredTopics::new(),
            subscribed: BTreeSet::new(),
            topic_tokens: HashMap::new(),
            assigned: HashMap::new(),
            tasks: JoinSet::new(),
            next_task_id: 0,
            pending_revokes: Vec::new(),
            stopping_topics: HashMap::new(),
        }
    }

    /// Runs until `root` is cancelled and every task has drained (or
    /// `shutdown_timeout` passed).
    pub async fn run(
        mut self,
        mut registry: watch::Receiver<Option<RegistrySnapshot>>,
        mut events: mpsc::UnboundedReceiver<KafkaEvent>,
        shutdown_timeout: Duration,
    ) {
        // Apply a state published before we started listening.
        if let Some(snapshot) = registry.borrow_and_update().clone() {
            self.apply_snapshot(snapshot);
        }
        loop {
            tokio::select! {
                biased;
                _ = self.root.cancelled() => break,
                Some(event) = events.recv() => self.apply_event(event),
                Some(exit) = self.tasks.join_next(), if !self.tasks.is_empty() => self.task_exited(exit),
                changed = registry.changed() => {
                    if changed.is_err() {
                        // The watcher is gone: only happens at shutdown.
                        self.root.cancelled().await;
                        break;
                    }
                    let snapshot = registry.borrow_and_update().clone();
                    if let Some(snapshot) = snapshot {
                        self.apply_snapshot(snapshot);
                    }
                }
            }
            self.mark_reconciled();
        }
        self.shutdown(events, shutdown_timeout).await;
    }

    /// Drains every task (they were cancelled with `root`), answering
    /// revocations that arrive meanwhile.
    async fn shutdown(
        mut self,
        mut events: mpsc::UnboundedReceiver<KafkaEvent>,
        timeout: Duration,
    ) {
        info!(tasks = self.tasks.len(), "draining partition tasks");
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(exit) = self.tasks.join_next() => self.task_exited(exit),
                Some(event) = events.recv() => self.apply_event(event),
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(tasks = self.tasks.len(), "shutdown deadline passed; abandoning unacknowledged documents");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        for revoke in self.pending_revokes.drain(..) {
            let _ = revoke.done.send(());
        }
    }

    fn mark_reconciled(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.parts.metrics.last_reconcile_timestamp.set(now);
    }

    fn apply_snapshot(&mut self, snapshot: RegistrySnapshot) {
        self.apply_registry(snapshot.topics);
        if let Some(received) = snapshot.received {
            let elapsed = received.elapsed();
            self.parts
                .metrics
                .registry_apply_duration
                .observe(elapsed.as_secs_f64());
            info!(
                revision = snapshot.revision,
                elapsed_us = elapsed.as_micros() as u64,
                "registry change applied"
            );
        }
    }

    fn topic_has_tasks(&self, topic: &str) -> bool {
        self.assigned
            .iter()
            .any(|(tp, slot)| slot.task.is_some() && tp.topic.as_ref() == topic)
    }

    /// Applies a new desired set.
    fn apply_registry(&mut self, desired: DesiredTopics) {
        let old = std::mem::replace(&mut self.desired, desired);
        for (topic, settings) in &old {
            match self.desired.get(topic) {
                None => {
                    info!(topic = %topic, "topic removed from the registry; stopping its partitions");
                    if let Some(token) = self.topic_tokens.remove(topic) {
                        token.cancel();
                    }
                    if self.topic_has_tasks(topic) {
                        self.stopping_topics.insert(topic.clone(), Instant::now());
                    }
                }
                Some(new) if new != settings => {
                    info!(topic = %topic, index = %new.index, "topic settings changed; restarting its partitions");
                    if let Some(token) = self.topic_tokens.remove(topic) {
                        token.cancel();
                    }
                }
                Some(_) => {}
            }
        }
        self.subscribe();
        self.spawn_missing_tasks();
    }

    fn subscribe(&mut self) {
        let topics: BTreeSet<String> = self.desired.keys().cloned().collect();
        if topics == self.subscribed {
            return;
        }
        if topics.is_empty() {
            self.parts.consumer.unsubscribe();
            info!("registry is empty; unsubscribed");
        } else {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            if let Err(e) = self.parts.consumer.subscribe(&names) {
                warn!(error = %e, "subscribe failed; retrying at the next registry change");
                return;
            }
            info!(topics = ?names, "subscribed");
        }
        self.subscribed = topics;
    }

    fn apply_event(&mut self, event: KafkaEvent) {
        debug!(?event, "group event");
        match event {
            KafkaEvent::Assigned(partitions) => {
                for (tp, queue) in partitions {
                    if let Some(old) = self.assigned.get(&tp) {
                        if let Some(task) = &old.task {
                            warn!(partition = %tp, "assigned again while its task still runs; restarting it");
                            task.token.cancel();
                        }
                    }
                    let status = self.parts.board.assign(&tp);
                    self.assigned.insert(
                        tp,
                        Assigned {
                            queue: Arc::new(queue),
                            status,
                            task: None,
                            resume_from: None,
                            revoked: false,
                        },
                    );
                }
                self.spawn_missing_tasks();
            }
            KafkaEvent::Revoked { partitions, done } => {
                let mut waiting = HashSet::new();
                for tp in partitions {
                    let Some(slot) = self.assigned.get_mut(&tp) else {
                        continue;
                    };
                    match &slot.task {
                        Some(task) => {
                            task.token.cancel();
                            slot.revoked = true;
                            waiting.insert(tp);
                        }
                        None => {
                            self.assigned.remove(&tp);
                            self.parts.board.unassign(&tp);
                        }
                    }
                }
                if waiting.is_empty() {
                    let _ = done.send(());
                } else {
                    self.pending_revokes.push(PendingRevoke { waiting, done });
                }
            }
        }
    }

    fn task_exited(&mut self, exit: Result<TaskExit, tokio::task::JoinError>) {
        let exit = match exit {
            Ok(exit) => exit,
            Err(e) => {
                // A panicking task is a bug; its partition restarts from the
                // last committed offset at the next assignment.
                warn!(error = %e, "partition task failed");
                return;
            }
        };
        let tp = exit.partition.clone();
        if let Some(slot) = self.assigned.get_mut(&tp) {
            if slot.task.as_ref().map(|t| t.id) == Some(exit.task_id) {
                slot.task = None;
                slot.resume_from = exit.resume_from;
                if slot.revoked {
                    self.assigned.remove(&tp);
                    self.parts.board.unassign(&tp);
                }
            }
        }
        if let Some(removed) = self.stopping_topics.get(tp.topic.as_ref()) {
            let removed = *removed;
            if !self.topic_has_tasks(&tp.topic) {
                self.stopping_topics.remove(tp.topic.as_ref());
                let elapsed = removed.elapsed();
                self.parts
                    .metrics
                    .topic_stop_duration
                    .observe(elapsed.as_secs_f64());
                info!(topic = %tp.topic, elapsed_us = elapsed.as_micros() as u64, "removed topic stopped");
            }
        }
        self.pending_revokes.retain_mut(|revoke| {
            revoke.waiting.remove(&tp);
            if revoke.waiting.is_empty() {
                let _ = revoke.done.send(());
                false
            } else {
                true
            }
        });
        if !self.root.is_cancelled() {
            self.spawn_missing_tasks();
        }
    }

    /// Starts a task for every assigned, registered partition without one.
    fn spawn_missing_tasks(&mut self) {
        let mut to_start: Vec<(TopicPartition, Arc<TopicSettings>)> = Vec::new();
        for (tp, slot) in &self.assigned {
            if slot.task.is_some() || slot.revoked {
                continue;
            }
            if let Some(settings) = self.desired.get(tp.topic.as_ref()) {
                to_start.push((tp.clone(), settings.clone()));
            }
        }
        to_start.sort_by(|a, b| a.0.cmp(&b.0));
        for (tp, settings) in to_start {
            let topic_token = self
                .topic_tokens
                .entry(tp.topic.to_string())
                .or_insert_with(|| self.root.child_token())
                .clone();
            let token = topic_token.child_token();
            self.next_task_id += 1;
            let id = self.next_task_id;
            let Some(slot) = self.assigned.get_mut(&tp) else {
                continue;
            };
            let task = PartitionTask {
                partition: tp.clone(),
                task_id: id,
                settings,
                queue: slot.queue.clone(),
                consumer: self.parts.consumer.clone(),
                sink: self.parts.sink.clone(),
                batch: self.parts.batch.clone(),
                drain_timeout: self.parts.kafka.drain_timeout,
                resume_from: slot.resume_from.take(),
                status: slot.status.clone(),
                dead_letters: self.parts.dead_letters.clone(),
                templates: self.parts.templates.clone(),
                metrics: self.parts.metrics.clone(),
            };
            slot.task = Some(RunningTask {
                id,
                token: token.clone(),
            });
            self.parts
                .metrics
                .partition_task_starts
                .get_or_create(&Metrics::topic(&tp.topic))
                .inc();
            self.tasks.spawn(task.run(token).in_current_span());
        }
    }
}
