//! Kafka: the group consumer ([`consumer`]) and the per-partition tasks
//! ([`partition`]) that turn records into acknowledged documents, and the
//! [`status`] board of what this instance owns; [`security`] maps
//! `[kafka.tls]`/`[kafka.sasl]` onto librdkafka properties.

pub mod consumer;
pub mod partition;
pub mod security;
pub mod status;

pub use consumer::{KafkaEvent, LogConsumer, PartitionQueue, TopicPartition};
pub use partition::{PartitionTask, TaskExit};
pub use status::{PartitionState, PartitionStatus, StatusBoard};
