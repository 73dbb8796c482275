//! Follows the registry in etcd and publishes the desired topics.
//!
//! A full read gives a revision; the watch starts right after it, so no
//! change between the read and the watch is missed. When the watch ends (etcd
//! restarted, the revision was compacted, the connection broke) the watcher
//! reads everything again and watches from the new revision: the published
//! snapshot is always a whole state, so the reconciler simply diffs again.
//! While etcd is unreachable the last published state stays in force.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{DesiredTopics, RegistryState};
use crate::backoff::Backoff;
use crate::config::{EtcdConfig, RetryConfig};
use crate::metrics::Metrics;
use crate::offload;

/// Timeout of the unary etcd calls (reads and the watch set-up).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry state as published to the reconciler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// etcd revision this state reflects.
    pub revision: i64,
    /// The desired topics.
    pub topics: DesiredTopics,
    /// When the change that produced this state arrived from etcd.
    pub received: Option<Instant>,
}

/// Why following the registry stopped; the watcher retries after each.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// An etcd call failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// An etcd call did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the watch stream.
    #[error("watch stream ended")]
    Ended,
    /// The server cancelled the watch (compaction, or another reason).
    #[error("watch cancelled by etcd (compact revision {compact_revision}): {reason}")]
    Cancelled {
        /// The compaction revision, when the cause was compaction.
        compact_revision: i64,
        /// The server's reason.
        reason: String,
    },
}

/// Connects an etcd client (lazily: errors surface on the first call;
/// with a user name, authentication is that first call).
pub async fn connect(config: &EtcdConfig) -> Result<Client, etcd_client::Error> {
    // Keep-alive below etcd's 5 s minimum makes the server drop the
    // connection; 10 s detects a dead server without that.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.connect_timeout)
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = tls_options(config)? {
        options = options.with_tls(tls);
    }
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        // Tokens expire (etcd's --auth-token-ttl); get a new one instead
        // of failing the call.
        options = options
            .with_user(user.clone(), password.expose())
            .with_auto_token_refresh(true);
    }
    Client::connect(&config.endpoints, Some(options)).await
}

/// The TLS settings of https:// endpoints: `etcd.ca_file` (else the
/// system's CAs) and the client certificate. `None` for plain endpoints.
pub fn tls_options(config: &EtcdConfig) -> Result<Option<TlsOptions>, etcd_client::Error> {
    if !config.uses_tls() {
        return Ok(None);
    }
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            etcd_client::Error::InvalidArgs(format!("{field} {}: {e}", path.display()))
        })
    };
    let mut tls = TlsOptions::new();
    tls = match &config.ca_file {
        Some(path) => tls.ca_certificate(Certificate::from_pem(read("etcd.ca_file", path)?)),
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        tls = tls.identity(Identity::from_pem(
            read("etcd.cert_file", cert)?,
            read("etcd.key_file", key)?,
        ));
    }
    Ok(Some(tls))
}

async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, WatchError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(WatchError::Timeout(CALL_TIMEOUT)),
    }
}

/// Follows the registry and publishes [`RegistrySnapshot`]s.
pub struct RegistryWatcher {
    config: EtcdConfig,
    retry: RetryConfig,
    metrics: Metrics,
    state: RegistryState,
    revision: i64,
    publish: watch::Sender<Option<RegistrySnapshot>>,
}

impl RegistryWatcher {
    /// A watcher publishing into `publish` (`None` until the first read).
    pub fn new(
        config: EtcdConfig,
        retry: RetryConfig,
        metrics: Metrics,
        publish: watch::Sender<Option<RegistrySnapshot>>,
    ) -> Self {
        let state = RegistryState::new(&config.prefix, &config.collector_keys);
        Self {
            config,
            retry,
            metrics,
            state,
            revision: 0,
            publish,
        }
    }

    /// Judges topic values strictly (`registry.strict`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.state = self.state.with_strict(strict);
        self
    }

    /// Logs (and counts as rejected) the bad collector entries and unknown
    /// fields the last puts applied around.
    fn report_warnings(&mut self) {
        for (key, warning) in self.state.take_warnings() {
            self.metrics.registry_changes_rejected.inc();
            warn!(key = %key, warning = %warning, "registry value applied without a part of it");
        }
    }

    /// Runs until `cancel` fires, reconnecting with backoff on any failure.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        let mut client: Option<Client> = None;
        loop {
            let error = tokio::select! {
                _ = cancel.cancelled() => return,
                result = self.follow(&mut client, &mut backoff) => match result {
                    Err(e) => e,
                    Ok(never) => match never {},
                },
            };
            let delay = backoff.next_delay();
            match &error {
                WatchError::Cancelled { .. } => {
                    info!(error = %error, "registry watch cancelled; reading the registry again")
                }
                _ => warn!(
                    error = %error,
                    endpoints = ?self.config.endpoints,
                    retry_in = ?delay,
                    "lost the etcd registry; keeping the last known topics and retrying"
                ),
            }
            if matches!(error, WatchError::Cancelled { .. }) {
                // Compaction: no reason to wait before reading again.
                continue;
            }
            // A broken connection is rebuilt from scratch.
            client = None;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Reads the registry, then follows it until something breaks.
    async fn follow(
        &mut self,
        client: &mut Option<Client>,
        backoff: &mut Backoff,
    ) -> Result<Infallible, WatchError> {
        let client = match client {
            Some(c) => c,
            None => client.insert(timed(connect(&self.config)).await?),
        };
        let revision = self.resync(client).await?;
        let start = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = timed(client.watch(
            self.config.prefix.as_bytes(),
            Some(start.clone().with_prefix()),
        ))
        .await?;
        for key in &self.config.collector_keys {
            timed(stream.watch(key.as_bytes(), Some(start.clone()))).await?;
        }
        backoff.reset();
        debug!(revision, "watching the registry");
        loop {
            let Some(response) = stream.message().await? else {
                return Err(WatchError::Ended);
            };
            if response.canceled() {
                return Err(WatchError::Cancelled {
                    compact_revision: response.compact_revision(),
                    reason: response.cancel_reason().to_string(),
                });
            }
            let mut changed = false;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                self.revision = self.revision.max(kv.mod_revision());
                let key = String::from_utf8_lossy(kv.key());
                match event.event_type() {
                    // Parsing a value compiles its VRL program: off the
                    // worker, like every CPU-heavy step (`crate::offload`).
                    EventType::Put => {
                        match offload::off_worker(|| self.state.put(kv.key(), kv.value())) {
                            Ok(c) => {
                                self.report_warnings();
                                changed |= c;
                                self.metrics.registry_changes_applied.inc();
                                info!(key = %key, "registry key put");
                            }
                            Err(error) => {
                                self.metrics.registry_changes_rejected.inc();
                                warn!(key = %key, error = %error, "rejected registry value; keeping the key's last good state");
                            }
                        }
                    }
                    EventType::Delete => {
                        changed |= self.state.delete(kv.key());
                        self.metrics.registry_changes_applied.inc();
                        info!(key = %key, "registry key deleted");
                    }
                }
            }
            if let Some(header) = response.header() {
                self.revision = self.revision.max(header.revision());
            }
            if changed {
                self.publish();
            } else {
                self.metrics.registry_revision.set(self.revision);
            }
        }
    }

    /// Reads the prefix and the collector keys in one transaction (one
    /// revision) and replaces the state; returns that revision.
    async fn resync(&mut self, client: &mut Client) -> Result<i64, WatchError> {
        let mut ops = vec![TxnOp::get(
            self.config.prefix.as_bytes(),
            Some(GetOptions::new().with_prefix()),
        )];
        ops.extend(
            self.config
                .collector_keys
                .iter()
                .map(|k| TxnOp::get(k.as_bytes(), None)),
        );
        let response = timed(client.txn(Txn::new().and_then(ops))).await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or_default();
        let mut kvs = Vec::new();
        for op in response.op_responses() {
            if let etcd_client::TxnOpResponse::Get(get) = op {
                kvs.extend(
                    get.kvs()
                        .iter()
                        .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
                );
            }
        }
        // Compiles every topic's program: off the worker.
        let errors = offload::off_worker(|| {
            self.state
                .replace_all(kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
        });
        self.report_warnings();
        for (key, error) in &errors {
            self.metrics.registry_changes_rejected.inc();
            warn!(key = %key, error = %error, "rejected registry value; keeping the key's last good state");
        }
        self.metrics.registry_resyncs.inc();
        self.revision = revision;
        self.publish();
        info!(
            revision,
            topics = self.state.desired().len(),
            "read the registry"
        );
        Ok(revision)
    }

    fn publish(&self) {
        let topics = self.state.desired();
        self.metrics.registry_topics.set(topics.len() as i64);
        self.metrics.registry_revision.set(self.revision);
        let snapshot = RegistrySnapshot {
            revision: self.revision,
            topics,
            received: Some(Instant::now()),
        };
        self.publish.send_if_modified(|current| {
            let differs = current.as_ref().map(|c| c.topics != snapshot.topics) != Some(false);
            *current = Some(snapshot);
            differs
        });
    }
}
