//! `logingest status`: the whole fleet as the brokers and etcd see it —
//! the view model here, [`probe`] asks etcd and the brokers, [`render`]
//! draws the tables.
//!
//! One consumer that never subscribes (so it never joins the group) asks the
//! brokers for the group's members and their assignments, the group's
//! committed offsets and the partitions' watermarks; etcd gives the
//! registry; each Elasticsearch node is sent `GET /` (this tool's own view
//! of the nodes; each instance's view is in its `/status`). Nothing here
//! touches a running instance: the view works even when instances are down
//! or unreachable.
//!
//! Only Kafka's and etcd's answers are needed, so failures are split in two:
//! an unreachable etcd or Kafka is an error ([`FleetError`]); a piece that
//! one broker API could not give (members, committed offsets, a watermark)
//! becomes a warning in [`FleetStatus::warnings`] and the rest is shown.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::error::KafkaError;
use serde::Serialize;

use crate::config::{Config, StartFrom};
use crate::registry::admin::AdminError;

mod assignment;
mod probe;
mod render;

pub use assignment::{parse_assignment, AssignmentError, MemberAssignment};
use probe::{read_registry, KafkaView};

/// Deadline of each broker request and of the whole etcd read.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Seconds behind: now minus the Kafka timestamp of the next record
    /// the group has to read (the one at the committed offset); 0 without
    /// lag; `None` when unknown (lag unknown, the record not read in time,
    /// or without a timestamp).
    pub lag_seconds: Option<f64>,
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
    /// The Elasticsearch nodes as this tool reached them (`GET /`).
    pub elasticsearch_nodes: Vec<crate::sink::nodes::NodeReport>,
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
        let kafka = tokio::task::spawn_blocking(move || KafkaView::fetch(&kafka, &topics));
        let (view, nodes) = tokio::join!(kafka, probe_nodes(&config.elasticsearch));
        let view = view.map_err(|e| FleetError::Task(e.to_string()))??;
        warnings.extend(view.warnings.iter().cloned());
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut status = Self::assemble(config, registered, view, warnings, now_ms);
        match nodes {
            Ok(nodes) => status.elasticsearch_nodes = nodes,
            Err(e) => status
                .warnings
                .push(format!("cannot reach the Elasticsearch nodes: {e}")),
        }
        Ok(status)
    }

    fn assemble(
        config: &Config,
        registered: BTreeMap<String, String>,
        view: KafkaView,
        mut warnings: Vec<String>,
        now_ms: i64,
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
            .map(|(tp, o)| {
                let lag = lag(o.committed, o.low, o.high, config.kafka.start_from);
                let lag_seconds = match lag {
                    Some(0) => Some(0.0),
                    Some(_) => o
                        .next_timestamp_ms
                        .map(|ts| (now_ms - ts).max(0) as f64 / 1000.0),
                    None => None,
                };
                PartitionRow {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    owner: owners.get(tp).cloned(),
                    committed_offset: o.committed,
                    low_watermark: o.low,
                    high_watermark: o.high,
                    lag,
                    lag_seconds,
                }
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
            elasticsearch_nodes: Vec::new(),
            warnings,
        }
    }
}

/// Sends `GET /` to every Elasticsearch node; up: it answered (any status
/// but 502/503/504).
async fn probe_nodes(
    config: &crate::config::ElasticsearchConfig,
) -> Result<Vec<crate::sink::nodes::NodeReport>, crate::sink::client::ClientError> {
    let pool = crate::sink::client::pool(config, &Default::default())?;
    pool.probe_all().await;
    Ok(pool.report())
}

#[cfg(test)]
mod tests {
    use super::assignment::encode;
    use super::probe::{assigned_partitions, Offsets};
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

    const NOW_MS: i64 = 1_800_000_000_000;

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
            next_timestamp_ms: None,
        };
        let view = KafkaView {
            group_state: Some("Stable".into()),
            protocol: Some("cooperative-sticky".into()),
            members,
            existing: ["nginx", "idle"].map(String::from).into(),
            partitions: BTreeMap::from([
                (("idle".into(), 0), offsets(None, 3)),
                (("nginx".into(), 0), offsets(Some(150), 150)),
                (
                    ("nginx".into(), 1),
                    Offsets {
                        next_timestamp_ms: Some(NOW_MS - 42_500),
                        ..offsets(Some(140), 150)
                    },
                ),
            ]),
            warnings: vec![],
        };
        FleetStatus::assemble(&config, registered, view, vec![], NOW_MS)
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
    fn elasticsearch_nodes_are_listed_with_their_state() {
        let mut s = sample();
        let node = |node: &str, up| crate::sink::nodes::NodeReport {
            node: node.into(),
            up,
            failures: u32::from(!up),
            down_for_seconds: None,
            probe_in_seconds: None,
        };
        s.elasticsearch_nodes = vec![
            node("https://es1:9200", true),
            node("https://es-two:9200", false),
        ];
        let text = s.to_table();
        assert!(
            text.contains(
                "\nELASTICSEARCH NODE   STATE\nhttps://es1:9200     up\nhttps://es-two:9200  down\n\n"
            ),
            "{text}"
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

TOPIC  MAX-LAG  MAX-LAG-SECONDS
idle   3        -
nginx  10       42

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
                    next_timestamp_ms: None,
                },
            )]),
            ..KafkaView::default()
        };
        let registered = BTreeMap::from([("t".to_string(), "t".to_string())]);
        let s = FleetStatus::assemble(&config, registered, view, vec![], NOW_MS);
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
