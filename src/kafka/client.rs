//! The read-only Kafka clients of the commands (`logingest status`,
//! `check-config --connect`, `dlq replay`): the consumer settings of
//! `logingest run` (brokers, TLS, SASL, options) without committing,
//! statistics or static membership, and a client context that keeps
//! librdkafka's messages out of the command's output while remembering the
//! last warning or error — a failed metadata request does not carry the
//! reason (a TLS handshake or SASL failure), the log does.

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;
use tracing::debug;

use super::consumer::{client_config, Prefetch};
use crate::config::KafkaConfig;

/// Logs librdkafka at debug level and remembers its last complaint.
#[derive(Debug, Default)]
pub struct RecordingContext {
    last_error: Mutex<Option<String>>,
}

impl RecordingContext {
    fn record(&self, reason: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
    }

    /// The last warning or error librdkafka reported.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientContext for RecordingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        debug!(target: "librdkafka", facility = fac, ?level, "{log_message}");
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.record(log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!(target: "librdkafka", error = %error, "{reason}");
        self.record(reason);
    }
}

impl ConsumerContext for RecordingContext {}

/// The configuration of a command's consumer named `client_id`.
pub fn admin_consumer(config: &KafkaConfig, client_id: &str) -> ClientConfig {
    let config = KafkaConfig {
        static_membership: false,
        ..config.clone()
    };
    let mut cfg = client_config(
        &config,
        client_id,
        Prefetch::for_budget(crate::config::MemoryConfig::default().budget()),
    );
    cfg.set("client.id", client_id)
        .set("enable.auto.commit", "false")
        .set("statistics.interval.ms", "0");
    cfg
}
