//! Asking etcd and the brokers what the fleet looks like: the registry, the
//! group's members and assignments, committed offsets and watermarks. One
//! consumer that never subscribes (so it never joins the group) asks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::debug;

use super::{instance_id, parse_assignment, FleetError, Member, TIMEOUT};
use crate::config::{Config, KafkaConfig, StartFrom};
use crate::kafka::client::{admin_consumer, RecordingContext};
use crate::registry::admin::RegistryAdmin;

/// `client.id` of the status consumer, so it is never taken for an instance.
const CLIENT_ID: &str = "logingest-status";

pub(super) async fn read_registry(
    config: &Config,
) -> Result<(BTreeMap<String, String>, Vec<String>), FleetError> {
    let read = async {
        let mut admin = RegistryAdmin::connect(&config.etcd).await?;
        admin.list().await
    };
    let read = async { read.await.map_err(FleetError::Registry) };
    let (topics, errors) =
        tokio::time::timeout(TIMEOUT, read)
            .await
            .map_err(|_| FleetError::RegistryTimeout {
                endpoints: config.etcd.endpoints.join(","),
                timeout: TIMEOUT,
            })??;
    let warnings = errors
        .into_iter()
        .map(|(key, e)| format!("registry key {key} ignored: {e}"))
        .collect();
    Ok((topics, warnings))
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Offsets {
    pub(super) committed: Option<i64>,
    pub(super) low: Option<i64>,
    pub(super) high: Option<i64>,
    /// The Kafka timestamp of the next record the group has to read (at
    /// the committed offset), when it has one and it could be read.
    pub(super) next_timestamp_ms: Option<i64>,
}

/// What the brokers said.
#[derive(Default)]
pub(super) struct KafkaView {
    pub(super) group_state: Option<String>,
    pub(super) protocol: Option<String>,
    pub(super) members: Vec<Member>,
    /// Topics that exist in the cluster.
    pub(super) existing: BTreeSet<String>,
    pub(super) partitions: BTreeMap<(String, i32), Offsets>,
    pub(super) warnings: Vec<String>,
}

impl KafkaView {
    /// Blocking: one metadata request, one group description, one offset
    /// fetch and one watermark query per partition.
    pub(super) fn fetch(
        config: &KafkaConfig,
        registered: &BTreeSet<String>,
    ) -> Result<Self, FleetError> {
        let consumer = status_consumer(config)?;
        // All topics at once: asking for one by name would make brokers that
        // auto-create topics (tansu does) create it.
        let metadata = consumer.fetch_metadata(None, TIMEOUT).map_err(|error| {
            // Serve the queued log and error events, to name the cause.
            let _ = consumer.poll(Duration::ZERO);
            FleetError::Kafka {
                brokers: config.brokers.join(","),
                error: Box::new(error),
                last_error: consumer.context().last_error(),
            }
        })?;
        let mut view = Self::default();
        let mut partition_counts = BTreeMap::new();
        for t in metadata.topics() {
            view.existing.insert(t.name().to_string());
            partition_counts.insert(t.name().to_string(), t.partitions().len());
        }
        view.fetch_group(&consumer, &config.group_id);

        let assigned: BTreeSet<&String> = view
            .members
            .iter()
            .flat_map(|m| m.partitions.iter().flatten().map(|(t, _)| t))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for topic in registered.iter().chain(assigned) {
            let Some(&count) = partition_counts.get(topic) else {
                continue;
            };
            for p in 0..count {
                let p = i32::try_from(p).unwrap_or(i32::MAX);
                view.partitions
                    .insert((topic.clone(), p), Offsets::default());
            }
        }
        for (topic, p) in view.partitions.keys() {
            tpl.add_partition(topic, *p);
        }
        if tpl.count() > 0 {
            view.fetch_committed(&consumer, tpl);
            view.fetch_watermarks(&consumer);
            view.fetch_next_timestamps(&consumer, config.start_from);
        }
        Ok(view)
    }

    fn fetch_group(&mut self, consumer: &BaseConsumer<RecordingContext>, group_id: &str) {
        let list = match consumer.fetch_group_list(Some(group_id), TIMEOUT) {
            Ok(list) => list,
            Err(e) => {
                self.warnings.push(format!(
                    "group members and partition owners not fetched (DescribeGroups {group_id}): {e}"
                ));
                return;
            }
        };
        let Some(group) = list.groups().iter().find(|g| g.name() == group_id) else {
            self.warnings
                .push(format!("the brokers did not describe group {group_id}"));
            return;
        };
        debug!(
            group = group_id,
            state = group.state(),
            protocol = group.protocol(),
            protocol_type = group.protocol_type(),
            members = group.members().len(),
            "group described"
        );
        let state = group.state().to_string();
        let (mut unnamed, mut unassigned) = (0, 0);
        for m in group.members() {
            debug!(member = m.id(), client_id = m.client_id(), host = m.client_host(),
                assignment = ?m.assignment(), "group member");
            let instance = instance_id(m.client_id(), m.id()).unwrap_or_else(|| m.id().to_string());
            if m.client_id().is_empty() {
                unnamed += 1;
            }
            let partitions = match assigned_partitions(m.assignment(), group.protocol_type()) {
                Ok(Some(partitions)) => Some(partitions),
                Ok(None) => {
                    unassigned += 1;
                    None
                }
                Err(e) => {
                    self.warnings
                        .push(format!("assignment of member {instance} not read: {e}"));
                    None
                }
            };
            self.members.push(Member {
                instance,
                member_id: m.id().to_string(),
                host: Some(m.client_host().to_string()).filter(|h| !h.is_empty()),
                partitions,
            });
        }
        let total = self.members.len();
        if unnamed > 0 {
            self.warnings.push(format!(
                "the brokers gave no client id for {unnamed} of {total} members (DescribeGroups client_id empty); their instance id is read from the member id"
            ));
        }
        if unassigned > 0 {
            self.warnings.push(if state == "Stable" {
                format!("the brokers gave no assignment for {unassigned} of {total} members (DescribeGroups member_assignment empty in a Stable group); partition owners are unknown")
            } else {
                format!("group {group_id} is {state}: partition owners are known once it is Stable again")
            });
        }
        self.members
            .sort_by(|a, b| (&a.instance, &a.member_id).cmp(&(&b.instance, &b.member_id)));
        self.group_state = Some(state);
        self.protocol = Some(group.protocol().to_string()).filter(|p| !p.is_empty());
    }

    fn fetch_committed(
        &mut self,
        consumer: &BaseConsumer<RecordingContext>,
        tpl: TopicPartitionList,
    ) {
        match consumer.committed_offsets(tpl, TIMEOUT) {
            Ok(committed) => {
                for e in committed.elements() {
                    if let (Offset::Offset(o), Some(entry)) = (
                        e.offset(),
                        self.partitions
                            .get_mut(&(e.topic().to_string(), e.partition())),
                    ) {
                        entry.committed = Some(o);
                    }
                }
            }
            Err(e) => self
                .warnings
                .push(format!("committed offsets not fetched (OffsetFetch): {e}")),
        }
    }

    fn fetch_watermarks(&mut self, consumer: &BaseConsumer<RecordingContext>) {
        for ((topic, p), entry) in self.partitions.iter_mut() {
            match consumer.fetch_watermarks(topic, *p, TIMEOUT) {
                Ok((low, high)) => {
                    entry.low = Some(low);
                    entry.high = Some(high);
                }
                Err(e) => {
                    self.warnings
                        .push(format!("watermarks of {topic}/{p} not fetched: {e}"));
                    // A timeout would repeat for every partition: stop here.
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::OperationTimedOut)
                    ) {
                        self.warnings
                            .push("remaining watermarks skipped after a timeout".into());
                        return;
                    }
                }
            }
        }
    }
}

impl KafkaView {
    /// The Kafka timestamp of the next record to read of every partition
    /// with a lag: the record at the committed offset (or the low
    /// watermark, for `start_from = earliest` without a commit), read
    /// through a manual assignment — no group join, nothing committed
    /// (`enable.auto.commit` is off). One fetch per such partition, bounded
    /// by [`TIMEOUT`] in all.
    fn fetch_next_timestamps(
        &mut self,
        consumer: &BaseConsumer<RecordingContext>,
        start_from: StartFrom,
    ) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), o) in &self.partitions {
            let from = match (o.committed, start_from) {
                (Some(c), _) => Some(c),
                (None, StartFrom::Earliest) => o.low,
                (None, StartFrom::Latest) => None,
            };
            if let (Some(from), Some(high)) = (from, o.high) {
                if from < high
                    && tpl
                        .add_partition_offset(topic, *p, Offset::Offset(from))
                        .is_err()
                {
                    debug!(topic = %topic, partition = p, "cannot add partition to the timestamp read");
                }
            }
        }
        let wanted = tpl.count();
        if wanted == 0 {
            return;
        }
        if let Err(e) = consumer.assign(&tpl) {
            self.warnings.push(format!(
                "timestamps of the next records not read (assign): {e}"
            ));
            return;
        }
        let mut seen: BTreeSet<(String, i32)> = BTreeSet::new();
        let deadline = std::time::Instant::now() + TIMEOUT;
        while seen.len() < wanted && std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let key = (message.topic().to_string(), message.partition());
                    if seen.insert(key.clone()) {
                        if let Some(entry) = self.partitions.get_mut(&key) {
                            entry.next_timestamp_ms =
                                message.timestamp().to_millis().filter(|ms| *ms >= 0);
                        }
                    }
                }
                Some(Err(e)) => debug!(error = %e, "reading the next records' timestamps"),
                None => {}
            }
        }
        if let Err(e) = consumer.unassign() {
            debug!(error = %e, "unassign after reading timestamps");
        }
        if seen.len() < wanted {
            self.warnings.push(format!(
                "the next record of {} partitions was not read within {TIMEOUT:?}; their lag in seconds is unknown",
                wanted - seen.len()
            ));
        }
    }
}

/// A member's partitions from its assignment bytes: `Ok(None)` when the
/// brokers gave none (empty), an error when they cannot be read.
pub(super) fn assigned_partitions(
    bytes: Option<&[u8]>,
    protocol_type: &str,
) -> Result<Option<Vec<(String, i32)>>, String> {
    let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    if !matches!(protocol_type, "" | "consumer") {
        return Err(format!(
            "protocol type {protocol_type:?} is not the consumer protocol"
        ));
    }
    let assignment = parse_assignment(bytes).map_err(|e| e.to_string())?;
    Ok(Some(
        assignment
            .partitions
            .into_iter()
            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
            .collect(),
    ))
}

/// A consumer in the fleet's group that never subscribes: the settings of
/// `logingest run` (TLS, SASL, options) without committing or statistics.
fn status_consumer(config: &KafkaConfig) -> Result<BaseConsumer<RecordingContext>, FleetError> {
    let mut cfg = admin_consumer(config, CLIENT_ID);
    // The high watermark, as kafka-consumer-groups shows it; under
    // read_committed the brokers answer the last stable offset.
    cfg.set("isolation.level", "read_uncommitted");
    cfg.create_with_context(RecordingContext::default())
        .map_err(|e| FleetError::Client(Box::new(e)))
}
