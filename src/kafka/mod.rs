//! Kafka: the group consumer ([`consumer`]) and the per-partition tasks
//! ([`partition`]) that turn records into acknowledged documents.

pub mod consumer;
pub mod partition;

pub use consumer::{KafkaEvent, LogConsumer, PartitionQueue, TopicPartition};
pub use partition::{PartitionTask, TaskExit};
