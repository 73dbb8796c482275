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
//!   settings from the first unacknowledged offset — unless only its rate
//!   limits changed: those go to the topic's [`Throttle`], which its running
//!   tasks consult before every burst.
//! * A topic removed whose tasks have all stopped: its metric series are
//!   removed, so that topic churn does not grow `/metrics`.
//! * Partitions revoked: their tasks drain before librdkafka hands them
//!   over; the revoke handler then fences and commits (see
//!   [`crate::kafka::assignment`]).
//! * A task that panics or ends without being asked to is restarted from
//!   its first unacknowledged offset, with a growing delay if it keeps
//!   failing; the reconciler never waits on a dead task.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument};

use crate::backoff::Backoff;
use crate::config::{BatchConfig, KafkaConfig};
use crate::health::{Heartbeat, BEAT_INTERVAL};
use crate::kafka::{
    Assignment, Control, KafkaEvent, LogConsumer, PartitionQueue, PartitionStatus, PartitionTask,
    StatusBoard, TaskExit, Throttle,
};
use crate::memory::MemoryBudget;
use crate::metrics::{Metrics, TopicLabel};
use crate::registry::watcher::RegistrySnapshot;
use crate::registry::DesiredTopics;
use crate::sink::template::Templates;
use crate::sink::Sink;
use crate::topic::{TopicPartition, TopicSettings};

/// A partition currently assigned to this member.
struct Assigned {
    /// `None` while a superseded task still holds an older handle of the
    /// same queue (see [`Assigned::superseded`]).
    queue: Option<Arc<PartitionQueue>>,
    /// The task of an earlier assignment of the partition, still draining.
    /// The new task waits for it: librdkafka has one queue per partition
    /// and rust-rdkafka's `Drop for StreamPartitionQueue` disables that
    /// queue's wake-up callback, so a new task reading while the old handle
    /// is dropped would lose its wake-ups (and read about one burst per
    /// second). The queue is split again once the old task is gone.
    superseded: Option<Id>,
    status: Arc<PartitionStatus>,
    assignment: Arc<Assignment>,
    task: Option<RunningTask>,
    /// Where the next task must seek to (a previous one left unacked reads).
    resume_from: Option<i64>,
    /// The group took it away; forget it once its task has stopped.
    revoked: bool,
    /// Tasks that ended unexpectedly in a row, and when the next may start.
    failures: u32,
    restart_at: Option<tokio::time::Instant>,
}

struct RunningTask {
    id: Id,
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
    /// Subscribe, pause and resume, off the runtime.
    pub control: Control,
    /// The Elasticsearch sink.
    pub sink: Sink,
    /// The process-wide memory budget.
    pub budget: MemoryBudget,
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[batch]`.
    pub batch: BatchConfig,
    /// What this instance owns, for `/status`.
    pub board: Arc<StatusBoard>,
    /// Index templates.
    pub templates: Arc<Templates>,
    /// Beaten by the reconcile loop, for `/healthz`.
    pub heartbeat: Arc<Heartbeat>,
    /// Metrics.
    pub metrics: Metrics,
    /// How long a removed topic's series stay after its tasks stopped.
    pub removed_topic_grace: Duration,
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
    /// The partition of every task, by its id (a panicked task returns no
    /// value to tell).
    task_partitions: HashMap<Id, TopicPartition>,
    pending_revokes: Vec<PendingRevoke>,
    /// When to try `subscribe` again after it failed.
    resubscribe_at: Option<tokio::time::Instant>,
    /// Topics with per-topic ownership series exported.
    exported_topics: BTreeSet<String>,
    /// Topics removed whose tasks are still draining, with the removal time.
    stopping_topics: HashMap<String, Instant>,
    /// The rate limiter of every topic with tasks, shared by its tasks.
    throttles: HashMap<String, Arc<Throttle>>,
    /// The partitions each topic has had tasks of (their per-partition
    /// series go with the topic).
    task_partitions_of: HashMap<String, BTreeSet<i32>>,
    /// Removed topics without tasks, and when their series go.
    forget_at: HashMap<String, tokio::time::Instant>,
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
            task_partitions: HashMap::new(),
            pending_revokes: Vec::new(),
            resubscribe_at: None,
            exported_topics: BTreeSet::new(),
            stopping_topics: HashMap::new(),
            throttles: HashMap::new(),
            task_partitions_of: HashMap::new(),
            forget_at: HashMap::new(),
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
        let mut beat = tokio::time::interval(BEAT_INTERVAL);
        loop {
            self.parts.heartbeat.beat();
            let wake = self.next_wake();
            tokio::select! {
                biased;
                _ = self.root.cancelled() => break,
                Some(event) = events.recv() => self.apply_event(event),
                Some(exit) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.task_exited(exit),
                _ = beat.tick() => {}
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    self.retry_timers();
                }
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
            self.parts.heartbeat.beat();
            tokio::select! {
                Some(exit) = self.tasks.join_next_with_id() => self.task_exited(exit),
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

    fn mark_reconciled(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let metrics = &self.parts.metrics;
        metrics.last_reconcile_timestamp.set(now);
        // Per-topic ownership, for the "registered but nobody ingests it"
        // alert: series of topics no longer registered are removed.
        let mut owned: HashMap<&str, i64> = self.desired.keys().map(|t| (t.as_str(), 0)).collect();
        for (tp, slot) in &self.assigned {
            if slot.task.is_some() {
                if let Some(n) = owned.get_mut(tp.topic.as_ref()) {
                    *n += 1;
                }
            }
        }
        for gone in self
            .exported_topics
            .iter()
            .filter(|t| !owned.contains_key(t.as_str()))
        {
            let label = TopicLabel::of(gone);
            metrics.registry_topic_info.remove(&label);
            metrics.topic_partitions_owned.remove(&label);
        }
        for (topic, n) in &owned {
            let label = TopicLabel::of(topic);
            metrics.registry_topic_info.get_or_create(&label).set(1);
            metrics.topic_partitions_owned.get_or_create(&label).set(*n);
        }
        self.exported_topics = owned.keys().map(|t| t.to_string()).collect();
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

    /// Removes the series of a removed topic whose tasks have stopped
    /// (no task is left to count into them again) once the grace period
    /// has passed, unless it is registered again by then.
    fn schedule_forget(&mut self, topic: &str) {
        let at = tokio::time::Instant::now() + self.parts.removed_topic_grace;
        self.forget_at.insert(topic.to_string(), at);
        self.forget_due();
    }

    fn forget_due(&mut self) {
        let now = tokio::time::Instant::now();
        let due: Vec<String> = self
            .forget_at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in due {
            self.forget_at.remove(&topic);
            if !self.desired.contains_key(&topic) && !self.topic_has_tasks(&topic) {
                self.forget_topic(&topic);
            }
        }
    }

    fn forget_topic(&mut self, topic: &str) {
        let partitions = self.task_partitions_of.remove(topic).unwrap_or_default();
        self.parts.metrics.forget_topic(topic, partitions);
        self.exported_topics.remove(topic);
        debug!(topic = %topic, "metric series of the removed topic removed");
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
                    self.throttles.remove(topic);
                    if self.topic_has_tasks(topic) {
                        self.stopping_topics.insert(topic.clone(), Instant::now());
                    } else {
                        self.schedule_forget(topic);
                    }
                }
                Some(new) if new != settings => {
                    if new.limits != settings.limits {
                        info!(topic = %topic, docs_per_second = ?new.limits.docs_per_second, bytes_per_second = ?new.limits.bytes_per_second, "topic rate limits changed; applied to its running partitions");
                        if let Some(throttle) = self.throttles.get(topic) {
                            throttle.set(new.limits);
                        }
                    }
                    if settings.needs_restart(new) {
                        info!(topic = %topic, index = %new.index, "topic settings changed; restarting its partitions");
                        if let Some(token) = self.topic_tokens.remove(topic) {
                            token.cancel();
                        }
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
        self.parts
            .control
            .subscribe(topics.iter().cloned().collect());
        self.subscribed = topics;
    }

    /// The next timer: a subscription or a task restart to retry.
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        self.assigned
            .values()
            .filter_map(|slot| slot.restart_at)
            .chain(self.resubscribe_at)
            .chain(self.forget_at.values().copied())
            .min()
    }

    fn retry_timers(&mut self) {
        let now = tokio::time::Instant::now();
        if self.resubscribe_at.is_some_and(|at| at <= now) {
            self.resubscribe_at = None;
            self.subscribe();
        }
        self.forget_due();
        for slot in self.assigned.values_mut() {
            if slot.restart_at.is_some_and(|at| at <= now) {
                slot.restart_at = None;
            }
        }
        self.spawn_missing_tasks();
    }

    fn apply_event(&mut self, event: KafkaEvent) {
        debug!(?event, "group event");
        match event {
            KafkaEvent::Assigned(partitions) => {
                for (queue, assignment) in partitions {
                    let tp = assignment.partition().clone();
                    let mut superseded = None;
                    if let Some(old) = self.assigned.get(&tp) {
                        if let Some(task) = &old.task {
                            // Its fence is closed: it can no longer store
                            // anything, and the new task starts from what
                            // the group committed, once it is gone.
                            warn!(partition = %tp, "assigned again while its old task still drains; the new task starts when it has stopped");
                            task.token.cancel();
                            superseded = Some(task.id);
                        } else {
                            superseded = old.superseded;
                        }
                    }
                    let status = self.parts.board.assign(&tp);
                    self.assigned.insert(
                        tp,
                        Assigned {
                            queue: Some(Arc::new(queue)),
                            superseded,
                            status,
                            assignment,
                            task: None,
                            resume_from: None,
                            revoked: false,
                            failures: 0,
                            restart_at: None,
                        },
                    );
                }
                self.spawn_missing_tasks();
            }
            KafkaEvent::SubscribeFailed(error) => {
                warn!(error = %error, "subscribe failed; retrying in 1 s");
                self.subscribed.clear();
                self.resubscribe_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
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

    fn task_exited(&mut self, exit: Result<(Id, TaskExit), JoinError>) {
        let (id, outcome) = match exit {
            Ok((id, exit)) => (id, Ok(exit)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(tp) = self.task_partitions.remove(&id) else {
            return;
        };
        if let Some(slot) = self.assigned.get_mut(&tp) {
            if slot.superseded == Some(id) {
                // Its queue handle is gone, and with it the queue's wake-up
                // callback: drop ours too, then split the queue again,
                // which registers the callback afresh.
                slot.superseded = None;
                slot.queue = None;
                slot.queue = self
                    .parts
                    .consumer
                    .split_partition_queue(&tp.topic, tp.partition)
                    .map(Arc::new);
                if slot.queue.is_none() {
                    error!(partition = %tp, "cannot split the partition's queue again; it will not be consumed");
                }
            }
            let current = slot.task.as_ref().filter(|t| t.id == id);
            if let Some(task) = current {
                let asked = task.token.is_cancelled();
                slot.task = None;
                match outcome {
                    Ok(exit) => slot.resume_from = exit.resume_from,
                    Err(e) => {
                        // Its tracker died with it: resume after what it
                        // stored, else where it started.
                        slot.resume_from = slot.assignment.restart_point();
                        let panic = if e.is_panic() {
                            panic_message(e.into_panic())
                        } else {
                            "cancelled".into()
                        };
                        error!(partition = %tp, panic = %panic, resume_from = ?slot.resume_from, "partition task failed");
                    }
                }
                let failed = !asked;
                if failed && !slot.revoked && !self.root.is_cancelled() {
                    slot.failures += 1;
                    let mut backoff =
                        Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
                    let mut delay = backoff.next_delay();
                    for _ in 1..slot.failures.min(16) {
                        delay = backoff.next_delay();
                    }
                    slot.restart_at = Some(tokio::time::Instant::now() + delay);
                    self.parts
                        .metrics
                        .partition_task_restarts
                        .get_or_create(&TopicLabel::of(&tp.topic))
                        .inc();
                    warn!(partition = %tp, resume_from = ?slot.resume_from, failures = slot.failures, restart_in = ?delay, "restarting the partition task");
                } else if asked {
                    slot.failures = 0;
                }
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
                self.schedule_forget(&tp.topic);
            }
        }
        let still_running = self
            .assigned
            .get(&tp)
            .is_some_and(|slot| slot.task.is_some());
        if !still_running {
            self.pending_revokes.retain_mut(|revoke| {
                revoke.waiting.remove(&tp);
                if revoke.waiting.is_empty() {
                    let _ = revoke.done.send(());
                    false
                } else {
                    true
                }
            });
        }
        if !self.root.is_cancelled() {
            self.spawn_missing_tasks();
        }
    }

    /// Starts a task for every assigned, registered partition without one.
    fn spawn_missing_tasks(&mut self) {
        let now = tokio::time::Instant::now();
        let mut to_start: Vec<(TopicPartition, Arc<TopicSettings>)> = Vec::new();
        for (tp, slot) in &self.assigned {
            if slot.task.is_some()
                || slot.revoked
                || slot.superseded.is_some()
                || slot.queue.is_none()
                || slot.restart_at.is_some_and(|at| at > now)
            {
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
            let Some(slot) = self.assigned.get_mut(&tp) else {
                continue;
            };
            let Some(queue) = slot.queue.clone() else {
                continue;
            };
            slot.restart_at = None;
            let throttle = self
                .throttles
                .entry(tp.topic.to_string())
                .or_insert_with(|| Arc::new(Throttle::new(settings.limits)))
                .clone();
            self.task_partitions_of
                .entry(tp.topic.to_string())
                .or_default()
                .insert(tp.partition);
            let task = PartitionTask {
                assignment: slot.assignment.clone(),
                settings,
                queue,
                consumer: self.parts.consumer.clone(),
                control: self.parts.control.clone(),
                sink: self.parts.sink.clone(),
                budget: self.parts.budget.clone(),
                batch: self.parts.batch.clone(),
                drain_timeout: self.parts.kafka.drain_timeout,
                stuck_after: self.parts.kafka.stuck_after,
                resume_from: slot.resume_from.take(),
                status: slot.status.clone(),
                templates: self.parts.templates.clone(),
                metrics: self.parts.metrics.clone(),
                throttle,
            };
            self.parts.metrics.partition_task_started(&tp.topic);
            let handle = self.tasks.spawn(task.run(token.clone()).in_current_span());
            self.task_partitions.insert(handle.id(), tp);
            slot.task = Some(RunningTask {
                id: handle.id(),
                token,
            });
        }
    }
}

/// The text of a panic payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "panic".into(),
        },
    }
}
