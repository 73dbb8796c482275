//! Kafka, the source stage: the group consumer and its rebalance events
//! ([`consumer`]), the fence of each assignment ([`assignment`]), the pure
//! offset tracker ([`offsets`]), the commits on acknowledgement
//! ([`committer`]) and the per-partition tasks around it ([`partition`])
//! with their stuck detection ([`stuck`]), the thread for librdkafka calls
//! that wait ([`control`]), the read-only clients of the commands
//! ([`client`]), the [`status`] board of what this instance owns, the
//! per-topic rate limits the tasks share ([`throttle`]), and the
//! connection properties of `[kafka.tls]`/`[kafka.sasl]` ([`security`]).

pub mod assignment;
pub mod client;
pub mod committer;
pub mod consumer;
pub mod control;
pub mod offsets;
pub mod partition;
pub mod security;
pub mod status;
pub mod stuck;
pub mod throttle;

pub use assignment::Assignment;
pub use consumer::{GroupConsumer, KafkaEvent, LogConsumer, PartitionQueue, Prefetch};
pub use control::Control;
pub use partition::{PartitionTask, TaskExit};
pub use status::{PartitionState, PartitionStatus, StatusBoard};
pub use throttle::Throttle;
