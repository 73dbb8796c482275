//! `logingest status`: the whole fleet as the brokers and etcd see it.
//!
//! One consumer that never subscribes (so it never joins the group) asks the
//! brokers for the group's members and their assignments, the group's
//! committed offsets and the partitions' watermarks; etcd gives the
//! registry. Nothing here touches a running instance: the view works even
//! when instances are down or unreachable.
//!
//! Only Kafka's and etcd's answers are needed, so failures are split in two:
//! an unreachable etcd or Kafka is an error ([`FleetError`]); a piece that
//! one broker API could not give (members, committed offsets, a watermark)
//! becomes a warning in [`FleetStatus::warnings`] and the rest is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tracing::debug;

use crate::config::{Config, KafkaConfig, StartFrom};
use crate::registry::admin::{AdminError, RegistryAdmin};

mod assignment;

pub use assignment::{parse_assignment, AssignmentError, MemberAssignment};

/// Deadline of each broker request and of the whole etcd read.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `client.id` of the status consumer, so it is never taken for an instance.
const CLIENT_ID: &str = "logingest-status";

/// Why the fleet view could not be built at all.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// etcd refused or failed the registry read (the message includes the
    /// cause, so it is not repeated as a source).
    #[error("cannot read the registry: {0}")]
    Registry(AdminError),
    /// etcd did not answer in time.
    #[error("cannot read the registry: etcd ({endpoints}) did not answer within {timeout:?}")]
    RegistryTimeout {
        /// The endpoints tried.
        endpoints: String,
        /// The deadline.
        timeout: Duration,
    },
    /// The Kafka client could not be created (invalid `kafka.options`).
    #[error("cannot create the Kafka client: {0}")]
    Client(Box<KafkaError>),
    /// The brokers did not give the cluster metadata.
    #[error("kafka ({brokers}): cannot fetch the cluster metadata: {error}{}", last_error_suffix(.last_error))]
    Kafka {
        /// The bootstrap brokers tried.
        brokers: String,
        /// The client's error.
        error: Box<KafkaError>,
        /// The last connection error the client reported, if any.
        last_error: Option<String>,
    },
    /// The blocking Kafka task failed.
    #[error("the Kafka task failed: {0}")]
    Task(String),
}

fn last_error_suffix(last: &Option<String>) -> String {
    last.as_ref()
        .map(|e| format!(" (last client error: {e})"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The fleet view
// ---------------------------------------------------------------------------

/// One member of the consumer group.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// The member's `client.id`: the logingest instance id (taken from the
    /// member id when the brokers give no client id, see [`instance_id`]).
    pub instance: String,
    /// The broker's member id.
    pub member_id: String,
    /// The host the member connected from, when the brokers gave it.
    pub host: Option<String>,
    /// Partitions assigned to it; `None` when the brokers did not say.
    pub partitions: Option<Vec<(String, i32)>>,
}

/// One partition of a registered (or assigned) topic.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The instance it is assigned to (`None`: nobody, or unknown when
    /// [`FleetStatus::owners_known`] is false).
    pub owner: Option<String>,
    /// The group's committed offset (next offset to read), if any.
    pub committed_offset: Option<i64>,
    /// The oldest offset still in the partition.
    pub low_watermark: Option<i64>,
    /// The offset after the newest message.
    pub high_watermark: Option<i64>,
    /// Messages the group has still to read (see [`lag`]).
    pub lag: Option<i64>,
}

/// A registered topic that no member owns.
#[derive(Debug, Clone, Serialize)]
pub struct UnownedTopic {
    /// The topic.
    pub topic: String,
    /// Why: it is missing from Kafka, or no partition of it is assigned.
    pub reason: String,
}

/// The fleet: group, members, partitions and registry.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The consumer group.
    pub group_id: String,
    /// The group's state (`Stable`, `PreparingRebalance`, `Empty`, ...),
    /// when the brokers gave it.
    pub group_state: Option<String>,
    /// The group's assignment strategy, when the brokers gave it.
    pub protocol: Option<String>,
    /// The group's members, by instance id.
    pub members: Vec<Member>,
    /// Whether every member's assignment is known, so that a partition
    /// without owner really has none.
    pub owners_known: bool,
    /// Partitions of the registered and assigned topics that exist in Kafka.
    pub partitions: Vec<PartitionRow>,
    /// The registered topics (both forms) and their index.
    pub registered_topics: BTreeMap<String, String>,
    /// Registered topics that certainly have no owner.
    pub unowned_topics: Vec<UnownedTopic>,
    /// What could not be fetched or trusted, in plain words.
    pub warnings: Vec<String>,
}

/// Messages still to read: high watermark minus committed offset; with no
/// committed offset, what a new owner would read (everything present when
/// `start_from = earliest`, unknown otherwise). `None` also when the high
/// watermark is below the committed offset: that watermark is wrong.
pub fn lag(
    committed: Option<i64>,
    low: Option<i64>,
    high: Option<i64>,
    start_from: StartFrom,
) -> Option<i64> {
    let high = high?;
    let from = match (committed, start_from) {
        (Some(c), _) => c,
        (None, StartFrom::Earliest) => low?,
        (None, StartFrom::Latest) => return None,
    };
    (from <= high).then_some(high - from)
}

/// The instance id of a member: its client id, or else its member id
/// without the `-<uuid>` suffix brokers append to the client id.
pub fn instance_id(client_id: &str, member_id: &str) -> Option<String> {
    if !client_id.is_empty() {
        return Some(client_id.to_string());
    }
    let (prefix, uuid) = member_id.split_at_checked(member_id.len().checked_sub(37)?)?;
    let uuid = uuid.strip_prefix('-')?;
    let shape = uuid.bytes().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    (shape && !prefix.is_empty()).then(|| prefix.to_string())
}

impl FleetStatus {
    /// Reads the registry from etcd, then asks the brokers.
    pub async fn gather(config: &Config) -> Result<Self, FleetError> {
        let (registered, mut warnings) = read_registry(config).await?;
        let kafka = config.kafka.clone();
        let topics: BTreeSet<String> = registered.keys().cloned().collect();
        let view = tokio::task::spawn_blocking(move || KafkaView::fetch(&kafka, &topics))
            .await
            .map_err(|e| FleetError::Task(e.to_string()))??;
        warnings.extend(view.warnings.iter().cloned());
        Ok(Self::assemble(config, registered, view, warnings))
    }

    fn assemble(
        config: &Config,
        registered: BTreeMap<String, String>,
        view: KafkaView,
        mut warnings: Vec<String>,
    ) -> Self {
        let owners_known =
            view.group_state.is_some() && view.members.iter().all(|m| m.partitions.is_some());
        let mut owners: BTreeMap<(String, i32), String> = BTreeMap::new();
        for m in &view.members {
            for tp in m.partitions.iter().flatten() {
                owners.insert(tp.clone(), m.instance.clone());
            }
        }
        let partitions: Vec<PartitionRow> = view
            .partitions
            .iter()
            .map(|(tp, o)| PartitionRow {
                topic: tp.0.clone(),
                partition: tp.1,
                owner: owners.get(tp).cloned(),
                committed_offset: o.committed,
                low_watermark: o.low,
                high_watermark: o.high,
                lag: lag(o.committed, o.low, o.high, config.kafka.start_from),
            })
            .collect();
        let behind = partitions
            .iter()
            .filter(
                |p| matches!((p.committed_offset, p.high_watermark), (Some(c), Some(h)) if h < c),
            )
            .count();
        if behind > 0 {
            warnings.push(format!(
                "the brokers reported a high watermark below the committed offset for {behind} partitions (ListOffsets answered a wrong end offset); their lag is unknown"
            ));
        }
        let owned_topics: BTreeSet<&str> = owners.keys().map(|(t, _)| t.as_str()).collect();
        let unowned_topics = registered
            .keys()
            .filter(|t| !owned_topics.contains(t.as_str()))
            .filter_map(|t| {
                let reason = if !view.existing.contains(t) {
                    "not in Kafka"
                } else if owners_known {
                    "no partition assigned"
                } else {
                    return None;
                };
                Some(UnownedTopic {
                    topic: t.clone(),
                    reason: reason.into(),
                })
            })
            .collect();
        Self {
            group_id: config.kafka.group_id.clone(),
            group_state: view.group_state,
            protocol: view.protocol,
            members: view.members,
            owners_known,
            partitions,
            registered_topics: registered,
            unowned_topics,
            warnings,
        }
    }

    /// The plain-text report: group and members, partitions, unowned topics.
    pub fn to_table(&self) -> String {
        let unknown = if self.owners_known { "-" } else { "?" };
        let num = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "GROUP {}  STATE {}  PROTOCOL {}  MEMBERS {}",
            self.group_id,
            self.group_state.as_deref().unwrap_or("unknown"),
            self.protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("-"),
            self.members.len()
        );
        out.push('\n');
        let members: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|m| {
                vec![
                    m.instance.clone(),
                    m.host.clone().unwrap_or_else(|| "-".into()),
                    m.partitions
                        .as_ref()
                        .map_or_else(|| "?".into(), |p| p.len().to_string()),
                ]
            })
            .collect();
        table(&mut out, &["INSTANCE", "HOST", "PARTITIONS"], &members);
        out.push('\n');
        let total_lag: i64 = self.partitions.iter().filter_map(|p| p.lag).sum();
        let unknown_lag = self.partitions.iter().filter(|p| p.lag.is_none()).count();
        let rows: Vec<Vec<String>> = self
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.owner.clone().unwrap_or_else(|| unknown.into()),
                    num(p.committed_offset),
                    num(p.high_watermark),
                    num(p.lag),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "TOPIC",
                "PARTITION",
                "OWNER",
                "COMMITTED",
                "HIGH-WATERMARK",
                "LAG",
            ],
            &rows,
        );
        let _ = write!(
            out,
            "{} partitions, total lag {total_lag}",
            self.partitions.len()
        );
        let _ = match unknown_lag {
            0 => writeln!(out),
            n => writeln!(out, " (lag unknown for {n})"),
        };
        out.push('\n');
        if self.unowned_topics.is_empty() {
            out.push_str("REGISTERED TOPICS WITH NO OWNER: none\n");
        } else {
            out.push_str("REGISTERED TOPICS WITH NO OWNER:\n");
            let rows: Vec<Vec<String>> = self
                .unowned_topics
                .iter()
                .map(|u| vec![u.topic.clone(), u.reason.clone()])
                .collect();
            table(&mut out, &["TOPIC", "REASON"], &rows);
        }
        out
    }
}

/// Appends a left-aligned table, columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

async fn read_registry(
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

// ---------------------------------------------------------------------------
// Asking the brokers
// ---------------------------------------------------------------------------

/// Keeps librdkafka's messages out of the report: logged at debug level,
/// the last warning or error kept to explain a failure.
#[derive(Default)]
struct QuietContext {
    last_error: Mutex<Option<String>>,
}

impl QuietContext {
    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug!(target: "librdkafka", facility = fac, ?level, "{log_message}");
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(log_message.to_string());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, "{reason}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }
}

impl ConsumerContext for QuietContext {}

#[derive(Debug, Default, Clone, Copy)]
struct Offsets {
    committed: Option<i64>,
    low: Option<i64>,
    high: Option<i64>,
}

/// What the brokers said.
#[derive(Default)]
struct KafkaView {
    group_state: Option<String>,
    protocol: Option<String>,
    members: Vec<Member>,
    /// Topics that exist in the cluster.
    existing: BTreeSet<String>,
    partitions: BTreeMap<(String, i32), Offsets>,
    warnings: Vec<String>,
}

impl KafkaView {
    /// Blocking: one metadata request, one group description, one offset
    /// fetch and one watermark query per partition.
    fn fetch(config: &KafkaConfig, registered: &BTreeSet<String>) -> Result<Self, FleetError> {
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
        }
        Ok(view)
    }

    fn fetch_group(&mut self, consumer: &BaseConsumer<QuietContext>, group_id: &str) {
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

    fn fetch_committed(&mut self, consumer: &BaseConsumer<QuietContext>, tpl: TopicPartitionList) {
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

    fn fetch_watermarks(&mut self, consumer: &BaseConsumer<QuietContext>) {
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

/// A member's partitions from its assignment bytes: `Ok(None)` when the
/// brokers gave none (empty), an error when they cannot be read.
fn assigned_partitions(
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
/// `logingest run` (TLS, SASL from `kafka.options`) without committing,
/// statistics or static membership.
fn status_consumer(config: &KafkaConfig) -> Result<BaseConsumer<QuietContext>, FleetError> {
    let config = KafkaConfig {
        static_membership: false,
        ..config.clone()
    };
    let mut cfg = crate::kafka::consumer::client_config(
        &config,
        CLIENT_ID,
        crate::kafka::Prefetch::for_budget(64 << 20),
    );
    cfg.set("client.id", CLIENT_ID)
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "0")
        // The high watermark, as kafka-consumer-groups shows it; under
        // read_committed the brokers answer the last stable offset.
        .set("isolation.level", "read_uncommitted");
    cfg.create_with_context(QuietContext::default())
        .map_err(|e| FleetError::Client(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::assignment::encode;
    use super::*;

    #[test]
    fn lag_from_committed_or_from_the_start() {
        use StartFrom::*;
        assert_eq!(lag(Some(40), Some(0), Some(100), Earliest), Some(60));
        assert_eq!(lag(Some(100), Some(0), Some(100), Latest), Some(0));
        // A high watermark below the commit is wrong, not a lag of 0.
        assert_eq!(lag(Some(120), Some(0), Some(100), Earliest), None);
        assert_eq!(lag(None, Some(10), Some(100), Earliest), Some(90));
        assert_eq!(lag(None, Some(10), Some(100), Latest), None);
        assert_eq!(lag(Some(1), Some(0), None, Earliest), None);
    }

    #[test]
    fn instance_id_from_client_id_or_member_id() {
        let uuid = "0154d3cf-c7f7-4b5f-829f-fb1efbdb6c1a";
        assert_eq!(instance_id("pod-0", "x").as_deref(), Some("pod-0"));
        assert_eq!(
            instance_id("", &format!("vm-30553-{uuid}")).as_deref(),
            Some("vm-30553")
        );
        assert_eq!(instance_id("", uuid), None);
        assert_eq!(instance_id("", &format!("-{uuid}")), None);
        assert_eq!(
            instance_id("", "vm-1-not-a-uuid-at-all-but-long-enough"),
            None
        );
        assert_eq!(instance_id("", "é"), None);
        assert_eq!(instance_id("", &format!("h-{}", "é".repeat(20))), None);
    }

    fn member(instance: &str, partitions: Option<Vec<(String, i32)>>) -> Member {
        Member {
            instance: instance.into(),
            member_id: format!("{instance}-id"),
            host: Some("/127.0.0.1".into()),
            partitions,
        }
    }

    fn sample() -> FleetStatus {
        sample_with(vec![
            member("host-a-12", Some(vec![("nginx".into(), 0)])),
            Member {
                host: None,
                ..member("host-b-7", Some(vec![("nginx".into(), 1)]))
            },
        ])
    }

    fn sample_with(members: Vec<Member>) -> FleetStatus {
        let mut config = Config::default();
        config.kafka.group_id = "fleet".into();
        let registered = BTreeMap::from([
            ("nginx".to_string(), "nginx".to_string()),
            ("ghost".to_string(), "ghost".to_string()),
            ("idle".to_string(), "idle".to_string()),
        ]);
        let offsets = |c, h| Offsets {
            committed: c,
            low: Some(0),
            high: Some(h),
        };
        let view = KafkaView {
            group_state: Some("Stable".into()),
            protocol: Some("cooperative-sticky".into()),
            members,
            existing: ["nginx", "idle"].map(String::from).into(),
            partitions: BTreeMap::from([
                (("idle".into(), 0), offsets(None, 3)),
                (("nginx".into(), 0), offsets(Some(150), 150)),
                (("nginx".into(), 1), offsets(Some(140), 150)),
            ]),
            warnings: vec![],
        };
        FleetStatus::assemble(&config, registered, view, vec![])
    }

    #[test]
    fn owners_and_unowned_topics() {
        let s = sample();
        let owners: Vec<_> = s.partitions.iter().map(|p| p.owner.as_deref()).collect();
        assert_eq!(owners, vec![None, Some("host-a-12"), Some("host-b-7")]);
        let unowned: Vec<_> = s
            .unowned_topics
            .iter()
            .map(|u| (u.topic.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            unowned,
            vec![("ghost", "not in Kafka"), ("idle", "no partition assigned")]
        );
    }

    #[test]
    fn table_is_aligned() {
        let text = sample().to_table();
        let expected = "\
GROUP fleet  STATE Stable  PROTOCOL cooperative-sticky  MEMBERS 2

INSTANCE   HOST        PARTITIONS
host-a-12  /127.0.0.1  1
host-b-7   -           1

TOPIC  PARTITION  OWNER      COMMITTED  HIGH-WATERMARK  LAG
idle   0          -          -          3               3
nginx  0          host-a-12  150        150             0
nginx  1          host-b-7   140        150             10
3 partitions, total lag 13

REGISTERED TOPICS WITH NO OWNER:
TOPIC  REASON
ghost  not in Kafka
idle   no partition assigned
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn unknown_assignments_leave_owners_unknown_not_missing() {
        let s = sample_with(vec![member("host-a-12", None), member("host-b-7", None)]);
        assert!(!s.owners_known);
        // Only what is certain: the topic missing from Kafka.
        let unowned: Vec<_> = s.unowned_topics.iter().map(|u| u.topic.as_str()).collect();
        assert_eq!(unowned, vec!["ghost"]);
        let text = s.to_table();
        assert!(text.contains("host-a-12  /127.0.0.1  ?\n"), "{text}");
        assert!(text.contains("nginx  0          ?      150"), "{text}");
    }

    #[test]
    fn a_high_watermark_below_the_commit_is_reported() {
        let mut config = Config::default();
        config.kafka.group_id = "g".into();
        let view = KafkaView {
            group_state: Some("Empty".into()),
            existing: ["t".to_string()].into(),
            partitions: BTreeMap::from([(
                ("t".into(), 0),
                Offsets {
                    committed: Some(50),
                    low: Some(0),
                    high: Some(1),
                },
            )]),
            ..KafkaView::default()
        };
        let registered = BTreeMap::from([("t".to_string(), "t".to_string())]);
        let s = FleetStatus::assemble(&config, registered, view, vec![]);
        assert_eq!(s.partitions[0].lag, None);
        assert!(s.warnings[0].contains("below the committed offset for 1 partitions"));
        assert_eq!(s.unowned_topics[0].reason, "no partition assigned");
    }

    #[test]
    fn member_partitions_from_assignment_bytes() {
        let bytes = encode(0, &[("t", &[3, 1])], None);
        assert_eq!(
            assigned_partitions(Some(&bytes), "consumer"),
            Ok(Some(vec![("t".into(), 3), ("t".into(), 1)]))
        );
        assert_eq!(assigned_partitions(None, "consumer"), Ok(None));
        assert_eq!(assigned_partitions(Some(&[]), "consumer"), Ok(None));
        assert!(assigned_partitions(Some(&bytes), "connect").is_err());
        assert!(assigned_partitions(Some(&bytes[..5]), "consumer")
            .unwrap_err()
            .contains("truncated"));
    }
}
