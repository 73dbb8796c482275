//! logingest drains Kafka log topics into Elasticsearch, following a live
//! topic registry kept in etcd.
//!
//! The data flows through one module per stage (ARCHITECTURE.md draws it):
//!
//! * [`topic`]: the shared vocabulary (partitions, per-topic settings,
//!   index templates, name rules), a leaf every stage imports;
//! * [`config`]: the TOML configuration, validated at start-up;
//! * [`registry`]: the etcd topic registry (parsing, watching, editing);
//! * [`reconciler`]: desired topics ∩ assigned partitions → running tasks;
//! * [`kafka`]: the group consumer, its rebalance events and partition tasks;
//! * [`document`]: shaping a Kafka record into an Elasticsearch document;
//! * [`transform`]: per-topic VRL programs (parse, enrich, filter, route),
//!   run between shaping and encoding;
//! * [`sink`]: `_bulk` requests across partitions, retries, dead letters;
//! * [`memory`]: the process-wide budget of buffered bytes;
//! * [`offload`]: where CPU-heavy work (transforms, gzip, compiles) runs so
//!   that it never freezes the runtime;
//! * [`fleet`]: the fleet-wide view of `logingest status`;
//! * [`readback`]: `logingest search` and `logingest tail` (reading back);
//! * [`dlq`]: `logingest dlq replay` (dead letters back through the normal
//!   path);
//! * [`verify`]: `logingest verify` (is every offset of a topic indexed?);
//! * [`http`], [`health`] and [`metrics`]: health, readiness and Prometheus
//!   metrics;
//! * [`app`]: wiring everything together for `logingest run`;
//! * [`check`]: reaching each endpoint for `logingest check-config --connect`.

pub mod app;
pub mod backoff;
pub mod check;
pub mod config;
pub mod dlq;
pub mod document;
pub mod fault;
pub mod fleet;
pub mod health;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod metrics;
pub mod offload;
pub mod readback;
pub mod reconciler;
pub mod registry;
pub mod sink;
pub mod topic;
pub mod transform;
pub mod verify;
