//! `logingest dlq replay`: puts dead letters back once their cause is fixed.
//!
//! This module owns reading dead letters back ([`letter`] parses them,
//! [`source`] reads the dead-letter topic or index and fetches the original
//! of a reduced letter from the source topic) and the replay itself
//! ([`replay`], which [`report`]s progress and the summary): each letter goes back **through the normal path** — the
//! topic's *current* registry settings, a [`crate::document::Shaper`] for
//! the record's original partition and offset, and the [`crate::sink`] — so
//! its document gets the same `_id` (`<topic>-<partition>-<offset>`) as
//! before and a replay overwrites, never duplicates. With `--to-topic` the
//! records are produced into the topic again instead (they get new offsets,
//! hence new `_id`s, once the ingestor reads them).
//!
//! **Progress** is recorded where the letters are:
//!
//! * dead-letter topic: the replay reads it with its own consumer group,
//!   `<kafka.group_id>-dlq-replay-<TOPIC>` ([`replay_group`]; per topic, so
//!   that a dead-letter topic shared by several topics keeps one position per
//!   replayed topic), from the group's committed offset (or the start, or
//!   `--from-offset`) to the end of each partition as the broker reports it
//!   when the replay gets there, and commits after each acknowledged batch.
//!   The committed offset never passes a letter that was refused again or
//!   could not be sent: a later replay starts at it (letters after it that
//!   were replayed are written again, to the same `_id`s). Letters that can
//!   never be replayed (original gone, malformed) are committed past.
//! * dead-letter index: a replayed letter is deleted from the index once its
//!   document is acknowledged; a letter that can never be replayed is
//!   marked (`replay.not_replayable`, `replay.at`) and skipped from then on;
//!   a letter refused again stays as it is.
//!
//! Exit codes ([`DlqError::exit_code`]): 0 every letter read was replayed
//! (or there was nothing to replay), 1 other errors, 2 usage, 3 some letters
//! were refused again, 4 some letters are not replayable (and none was
//! refused again), 5 Kafka, Elasticsearch or etcd unreachable (progress up
//! to then is kept), 6 unknown topic (not registered; with `--to-topic`:
//! not in Kafka).

pub mod letter;
pub mod replay;
pub mod report;
pub mod source;

use std::path::PathBuf;
use std::str::FromStr;

/// Exit code: some letters were refused again.
pub const EXIT_REFUSED_AGAIN: u8 = 3;
/// Exit code: some letters are not replayable.
pub const EXIT_NOT_REPLAYABLE: u8 = 4;
/// Exit code: Kafka, Elasticsearch or etcd could not be reached.
pub const EXIT_UNREACHABLE: u8 = 5;
/// Exit code: the topic is not registered (or, with `--to-topic`, not in
/// Kafka).
pub const EXIT_UNKNOWN_TOPIC: u8 = 6;

/// The consumer group that records the replay position of `topic`'s dead
/// letters.
pub fn replay_group(group_id: &str, topic: &str) -> String {
    format!("{group_id}-dlq-replay-{topic}")
}

/// `logingest dlq` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Send the dead letters of a topic back through the normal path (its
    /// current settings), with the same document `_id`s.
    Replay(ReplayArgs),
}

/// Arguments of `logingest dlq replay`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  logingest dlq replay nginx -c /etc/logingest/logingest.toml --dry-run
  logingest dlq replay nginx -c /etc/logingest/logingest.toml
  logingest dlq replay nginx -c /etc/logingest/logingest.toml --from-offset 0   # all again
  logingest dlq replay nginx -c /etc/logingest/logingest.toml --to-topic

Progress: the dead-letter topic's offsets of the group <kafka.group_id>-dlq-replay-<TOPIC>
(committed after each acknowledged batch, never past a letter refused again); for the
dead-letter index, replayed letters are deleted from it.

Exit codes: 0 all replayed (or nothing to replay), 1 other errors, 2 usage, 3 some refused
again, 4 some not replayable, 5 Kafka/Elasticsearch/etcd unreachable, 6 unknown topic.")]
pub struct ReplayArgs {
    /// The source topic whose dead letters are replayed.
    pub topic: String,
    /// The TOML configuration file ([kafka], [elasticsearch], [etcd],
    /// [dead_letter]); without it, defaults and the LOGINGEST_* variables
    /// apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read the letters from the dead-letter index (`dead_letter.index`),
    /// its documents whose `kafka.topic` is TOPIC. Implied by
    /// `dead_letter.destination = "elasticsearch"`.
    #[arg(long)]
    pub from_index: bool,
    /// Produce the original records into TOPIC again instead of indexing
    /// them (other consumers see them again; they get new offsets, so their
    /// documents get new `_id`s).
    #[arg(long)]
    pub to_topic: bool,
    /// Print what would be replayed (per letter: where, original
    /// partition/offset, size, reason) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Start at this offset of the dead-letter topic instead of the
    /// replay's committed position: `OFFSET` for every partition, or
    /// `PARTITION:OFFSET` (repeatable).
    #[arg(long, value_name = "[PARTITION:]OFFSET", conflicts_with = "from_index")]
    pub from_offset: Vec<FromOffset>,
    /// Letters per batch (committed after each batch).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
}

/// A start position given with `--from-offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromOffset {
    /// The dead-letter partition; `None`: every partition.
    pub partition: Option<i32>,
    /// The offset.
    pub offset: i64,
}

impl FromStr for FromOffset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let number = |text: &str, what: &str| {
            text.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("{what} {text:?} is not a number >= 0"))
        };
        match s.split_once(':') {
            Some((partition, offset)) => Ok(Self {
                partition: Some(
                    i32::try_from(number(partition, "partition")?)
                        .map_err(|_| format!("partition {partition:?} is too large"))?,
                ),
                offset: number(offset, "offset")?,
            }),
            None => Ok(Self {
                partition: None,
                offset: number(s, "offset")?,
            }),
        }
    }
}

/// Why a replay failed or is incomplete.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A command-line mistake the parser cannot catch.
    #[error("{0}")]
    Usage(String),
    /// Replaying into Elasticsearch needs the topic's current settings.
    #[error("topic {topic} is not registered (no key {key} in etcd, and no collector key names it): replaying needs its current settings; register it first (logingest topics add {topic}), or re-produce the letters with --to-topic")]
    NotRegistered {
        /// The topic.
        topic: String,
        /// Its prefix-form key.
        key: String,
    },
    /// The topic's registry value does not parse.
    #[error("the registry value of topic {topic} is invalid ({reason}); fix it before replaying")]
    InvalidSettings {
        /// The topic.
        topic: String,
        /// The parser's reason.
        reason: String,
    },
    /// `--to-topic` produces into an existing topic only.
    #[error("topic {topic} does not exist in Kafka ({brokers}); --to-topic produces into an existing topic")]
    NoSuchTopic {
        /// The topic.
        topic: String,
        /// The brokers asked.
        brokers: String,
    },
    /// Some letters were refused again or are not replayable (the summary
    /// lists them).
    #[error("{}", incomplete(*.refused_again, *.not_replayable, .kept))]
    Incomplete {
        /// Letters refused again.
        refused_again: u64,
        /// Letters that cannot be replayed.
        not_replayable: u64,
        /// Where the letters refused again stay.
        kept: String,
    },
    /// Kafka could not be reached (or did not answer in time).
    #[error("cannot reach Kafka at {brokers}: {reason}")]
    KafkaUnreachable {
        /// The brokers.
        brokers: String,
        /// What failed.
        reason: String,
    },
    /// Kafka refused a request (not an outage).
    #[error("Kafka ({brokers}) {what}: {reason}")]
    Kafka {
        /// The brokers.
        brokers: String,
        /// What was asked.
        what: String,
        /// The error.
        reason: String,
    },
    /// Elasticsearch could not be reached (or kept failing).
    #[error("cannot reach Elasticsearch at {url}: {reason}")]
    EsUnreachable {
        /// The configured URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// Elasticsearch answered with an error.
    #[error("Elasticsearch at {url} answered HTTP {status} to {what}: {reason}")]
    EsServer {
        /// The configured URL.
        url: String,
        /// The status.
        status: u16,
        /// What was asked.
        what: String,
        /// The server's reason.
        reason: String,
    },
    /// etcd could not be reached.
    #[error("cannot read the registry from etcd ({endpoints}): {reason}")]
    EtcdUnreachable {
        /// The endpoints.
        endpoints: String,
        /// What failed.
        reason: String,
    },
    /// The Elasticsearch client could not be built.
    #[error(transparent)]
    Client(#[from] crate::sink::client::ClientError),
    /// A document could not be encoded.
    #[error(transparent)]
    Shape(#[from] crate::document::ShapeError),
    /// The sink stopped before answering.
    #[error("the sink stopped before every letter was answered")]
    SinkStopped,
}

fn incomplete(refused_again: u64, not_replayable: u64, kept: &str) -> String {
    let mut parts = Vec::new();
    if refused_again > 0 {
        parts.push(format!(
            "{refused_again} dead letter(s) refused again; they stay in {kept} for a later replay once the cause is fixed"
        ));
    }
    if not_replayable > 0 {
        parts.push(format!(
            "{not_replayable} dead letter(s) not replayable (skipped for good; listed above)"
        ));
    }
    parts.join("; ")
}

impl DlqError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DlqError::Usage(_) => 2,
            DlqError::Incomplete { refused_again, .. } if *refused_again > 0 => EXIT_REFUSED_AGAIN,
            DlqError::Incomplete { .. } => EXIT_NOT_REPLAYABLE,
            DlqError::KafkaUnreachable { .. }
            | DlqError::EsUnreachable { .. }
            | DlqError::EtcdUnreachable { .. } => EXIT_UNREACHABLE,
            DlqError::EsServer { status, .. } if *status == 429 || *status >= 500 => {
                EXIT_UNREACHABLE
            }
            DlqError::NotRegistered { .. } | DlqError::NoSuchTopic { .. } => EXIT_UNKNOWN_TOPIC,
            _ => 1,
        }
    }
}

/// Runs a `logingest dlq` command.
pub async fn run(config: &crate::config::Config, command: &DlqCommand) -> Result<(), DlqError> {
    match command {
        DlqCommand::Replay(args) => replay::run(config, args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_offset_forms() {
        assert_eq!(
            "12".parse::<FromOffset>(),
            Ok(FromOffset {
                partition: None,
                offset: 12
            })
        );
        assert_eq!(
            "3:0".parse::<FromOffset>(),
            Ok(FromOffset {
                partition: Some(3),
                offset: 0
            })
        );
        for bad in ["", "-1", "x", "1:", ":2", "1:-2", "99999999999:1"] {
            assert!(bad.parse::<FromOffset>().is_err(), "{bad}");
        }
    }

    #[test]
    fn exit_codes_and_messages() {
        let e = |refused_again, not_replayable| DlqError::Incomplete {
            refused_again,
            not_replayable,
            kept: "app.dlq".into(),
        };
        assert_eq!(e(2, 1).exit_code(), EXIT_REFUSED_AGAIN);
        assert_eq!(e(0, 1).exit_code(), EXIT_NOT_REPLAYABLE);
        let text = e(2, 1).to_string();
        assert!(
            text.contains("2 dead letter(s) refused again") && text.contains("app.dlq"),
            "{text}"
        );
        assert!(text.contains("1 dead letter(s) not replayable"), "{text}");
        assert_eq!(
            DlqError::NotRegistered {
                topic: "t".into(),
                key: "/logingest/topics/t".into()
            }
            .exit_code(),
            EXIT_UNKNOWN_TOPIC
        );
        assert_eq!(
            DlqError::KafkaUnreachable {
                brokers: "b".into(),
                reason: "r".into()
            }
            .exit_code(),
            EXIT_UNREACHABLE
        );
        assert_eq!(DlqError::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            replay_group("logingest", "nginx"),
            "logingest-dlq-replay-nginx"
        );
    }
}
