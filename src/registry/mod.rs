//! The topic registry kept in etcd.
//!
//! Two forms feed one desired set of topics:
//! * the prefix form: key `<prefix><topic>`, value empty or a JSON object of
//!   per-topic settings ([`TopicSettings`]);
//! * the collector form: each configured collector key holds the collector
//!   agent's JSON array of `{"path": ..., "topic": ...}`.
//!
//! [`RegistryState`] is the pure model (parsing and the union); it never
//! touches the network, so it is tested and fuzzed on its own. [`watcher`]
//! feeds it from etcd, [`admin`] edits the registry for `logingest topics`.

pub mod admin;
pub mod settings;
pub mod watcher;

pub use settings::parse_topic_value;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;

use crate::topic::{validate_index, validate_topic, NameError, TopicSettings};

/// Why a registry key or value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The key is not valid UTF-8.
    #[error("key is not UTF-8")]
    KeyNotUtf8,
    /// A topic or index name Kafka or Elasticsearch would refuse.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The value is not what the key's form expects.
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

/// One entry of a collector agent's array. Other fields (`path`, ...) belong
/// to the agent and are ignored.
#[derive(Debug, Deserialize)]
struct CollectorEntry {
    topic: String,
}

/// A collector array, parsed entry by entry: the topics of the good entries
/// and one reason per bad entry (naming it by position and topic).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectorTopics {
    /// The topics of the valid entries.
    pub topics: BTreeSet<String>,
    /// Why each bad entry was skipped.
    pub rejected: Vec<String>,
}

/// Parses a collector key's JSON array entry by entry. Only a value that is
/// not a JSON array at all is an error; a bad entry is skipped and reported,
/// so that one entry written by another agent version does not freeze the
/// whole array (and keep ingesting a topic the agent has since removed).
pub fn parse_collector_entries(value: &[u8]) -> Result<CollectorTopics, RegistryError> {
    let entries: Vec<serde_json::Value> = serde_json::from_slice(value).map_err(|e| {
        RegistryError::InvalidValue(format!(
            "expected a JSON array like [{{\"path\": \"/var/log/x.log\", \"topic\": \"x\"}}]: {e}"
        ))
    })?;
    let mut parsed = CollectorTopics::default();
    for (i, entry) in entries.into_iter().enumerate() {
        let name = entry
            .get("topic")
            .map(|t| t.to_string())
            .unwrap_or_else(|| "(no topic)".into());
        let checked = serde_json::from_value::<CollectorEntry>(entry)
            .map_err(|e| RegistryError::InvalidValue(e.to_string()))
            .and_then(|entry| {
                validate_topic(&entry.topic)?;
                validate_index(&TopicSettings::defaults(&entry.topic).index)?;
                Ok(entry.topic)
            });
        match checked {
            Ok(topic) => {
                parsed.topics.insert(topic);
            }
            Err(e) => parsed
                .rejected
                .push(format!("entry {i} (topic {name}): {e}")),
        }
    }
    Ok(parsed)
}

/// The desired topics and their settings, as the reconciler consumes them.
pub type DesiredTopics = BTreeMap<String, Arc<TopicSettings>>;

/// Parses a collector key's JSON array into its set of topics.
/// The bad entries are dropped (see [`parse_collector_entries`] for them).
pub fn parse_collector_value(value: &[u8]) -> Result<BTreeSet<String>, RegistryError> {
    parse_collector_entries(value).map(|parsed| parsed.topics)
}

/// What one key contributes to the desired set.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Boxed: settings are much larger than a collector's set.
    Topic(String, Box<TopicSettings>),
    Collector(BTreeSet<String>),
}

/// The registry as last seen: every key's last good contribution.
#[derive(Debug, Clone)]
pub struct RegistryState {
    prefix: String,
    collector_keys: BTreeSet<String>,
    entries: BTreeMap<String, Entry>,
    strict: bool,
    warnings: Vec<(String, String)>,
}

impl RegistryState {
    /// An empty registry for the configured prefix and collector keys.
    pub fn new(prefix: &str, collector_keys: &[String]) -> Self {
        Self {
            prefix: prefix.to_string(),
            collector_keys: collector_keys.iter().cloned().collect(),
            entries: BTreeMap::new(),
            strict: false,
            warnings: Vec::new(),
        }
    }

    /// With `strict`, a topic value with fields this version does not know
    /// is rejected instead of applied with a warning (`registry.strict`).
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// What the last puts applied but reported, as `(key, reason)`: bad
    /// entries of a collector array, unknown fields of a topic value.
    pub fn take_warnings(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.warnings)
    }

    /// The key prefix of the prefix form.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The collector keys being followed.
    pub fn collector_keys(&self) -> impl Iterator<Item = &str> {
        self.collector_keys.iter().map(String::as_str)
    }

    fn parse(&mut self, key: &str, value: &[u8]) -> Result<Option<Entry>, RegistryError> {
        if self.collector_keys.contains(key) {
            let parsed = parse_collector_entries(value)?;
            self.warnings
                .extend(parsed.rejected.into_iter().map(|w| (key.to_string(), w)));
            return Ok(Some(Entry::Collector(parsed.topics)));
        }
        let Some(topic) = key.strip_prefix(&self.prefix) else {
            return Ok(None);
        };
        validate_topic(topic)?;
        let (settings, unknown) = settings::parse_topic_value_checked(topic, value, self.strict)?;
        if !unknown.is_empty() {
            self.warnings.push((
                key.to_string(),
                format!(
                    "unknown fields ignored (written by a newer version?): {}",
                    unknown.join(", ")
                ),
            ));
        }
        Ok(Some(Entry::Topic(topic.to_string(), Box::new(settings))))
    }

    /// Applies a put. On error nothing changes: the key's last good value
    /// stays in force. Returns whether the desired set may have changed.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<bool, RegistryError> {
        let key = std::str::from_utf8(key).map_err(|_| RegistryError::KeyNotUtf8)?;
        match self.parse(key, value)? {
            Some(entry) => Ok(self.entries.insert(key.to_string(), entry.clone()) != Some(entry)),
            None => Ok(false),
        }
    }

    /// Applies a delete. Returns whether the desired set may have changed.
    pub fn delete(&mut self, key: &[u8]) -> bool {
        match std::str::from_utf8(key) {
            Ok(key) => self.entries.remove(key).is_some(),
            Err(_) => false,
        }
    }

    /// Replaces the whole state by a full read of the registry. A key whose
    /// value is invalid keeps its previous good contribution; the errors are
    /// returned with their keys for reporting.
    pub fn replace_all<'a>(
        &mut self,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Vec<(String, RegistryError)> {
        let mut fresh = BTreeMap::new();
        let mut errors = Vec::new();
        for (key, value) in kvs {
            let key_text = String::from_utf8_lossy(key).into_owned();
            match std::str::from_utf8(key)
                .map_err(|_| RegistryError::KeyNotUtf8)
                .and_then(|k| self.parse(k, value))
            {
                Ok(Some(entry)) => {
                    fresh.insert(key_text, entry);
                }
                Ok(None) => {}
                Err(e) => {
                    // Only a UTF-8 key can have a previous entry; a lossy
                    // name could collide with another key's.
                    let previous = std::str::from_utf8(key)
                        .ok()
                        .and_then(|k| self.entries.get(k));
                    if let Some(previous) = previous {
                        fresh.insert(key_text.clone(), previous.clone());
                    }
                    errors.push((key_text, e));
                }
            }
        }
        self.entries = fresh;
        errors
    }

    /// The union of both forms; a topic named by both takes the prefix
    /// form's settings.
    pub fn desired(&self) -> DesiredTopics {
        let mut topics = DesiredTopics::new();
        for entry in self.entries.values() {
            if let Entry::Collector(names) = entry {
                for topic in names {
                    topics
                        .entry(topic.clone())
                        .or_insert_with(|| Arc::new(TopicSettings::defaults(topic)));
                }
            }
        }
        for entry in self.entries.values() {
            if let Entry::Topic(topic, settings) = entry {
                topics.insert(topic.clone(), Arc::new(settings.as_ref().clone()));
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> RegistryState {
        RegistryState::new("/logingest/topics/", &["collectlogkey1".to_string()])
    }

    fn names(s: &RegistryState) -> Vec<String> {
        s.desired().keys().cloned().collect()
    }

    #[test]
    fn prefix_form_empty_value_and_index_setting() {
        let mut s = state();
        assert!(s.put(b"/logingest/topics/nginx", b"").unwrap());
        assert!(s
            .put(b"/logingest/topics/App", b"{\"index\": \"app-logs\"}")
            .unwrap());
        let d = s.desired();
        assert_eq!(d["nginx"].index, "nginx");
        assert_eq!(d["App"].index, "app-logs");
        assert!(s.delete(b"/logingest/topics/nginx"));
        assert_eq!(names(&s), vec!["App"]);
    }

    #[test]
    fn uppercase_topic_defaults_to_lowercase_index() {
        let mut s = state();
        s.put(b"/logingest/topics/Nginx", b"").unwrap();
        assert_eq!(s.desired()["Nginx"].index, "nginx");
    }

    #[test]
    fn collector_form_adds_and_replacement_removes() {
        let mut s = state();
        s.put(
            b"collectlogkey1",
            br#"[{"path": "/var/log/nginx/access.log", "topic": "nginx"}, {"path": "/a", "topic": "app"}]"#,
        )
        .unwrap();
        assert_eq!(names(&s), vec!["app", "nginx"]);
        s.put(b"collectlogkey1", br#"[{"path": "/a", "topic": "app"}]"#)
            .unwrap();
        assert_eq!(names(&s), vec!["app"]);
        assert!(s.delete(b"collectlogkey1"));
        assert!(names(&s).is_empty());
    }

    #[test]
    fn prefix_settings_win_over_collector_defaults() {
        let mut s = state();
        s.put(b"collectlogkey1", br#"[{"topic": "nginx"}]"#)
            .unwrap();
        s.put(b"/logingest/topics/nginx", br#"{"index": "web"}"#)
            .unwrap();
        assert_eq!(s.desired()["nginx"].index, "web");
        s.delete(b"/logingest/topics/nginx");
        assert_eq!(s.desired()["nginx"].index, "nginx");
    }

    #[test]
    fn bad_values_are_rejected_and_last_good_state_kept() {
        let mut s = state();
        s.put(b"/logingest/topics/nginx", br#"{"index": "web"}"#)
            .unwrap();
        s.put(b"collectlogkey1", br#"[{"topic": "app"}]"#).unwrap();
        for bad in [&b"{not json"[..], br#"{"index": "UPPER"}"#, b"\xff"] {
            assert!(s.put(b"/logingest/topics/nginx", bad).is_err());
        }
        for bad in [&b"{}"[..], b"not json", b"\"x\""] {
            assert!(s.put(b"collectlogkey1", bad).is_err());
        }
        assert_eq!(s.desired()["nginx"].index, "web");
        assert_eq!(names(&s), vec!["app", "nginx"]);
        assert!(s.put(b"/logingest/topics/bad topic", b"").is_err());
        assert!(s.put(b"/logingest/topics/a/b", b"").is_err());
        assert!(s.put(b"/logingest/topics/\xff", b"").is_err());
        assert_eq!(names(&s), vec!["app", "nginx"]);
    }

    #[test]
    fn unrelated_keys_are_ignored() {
        let mut s = state();
        assert!(!s.put(b"/other/key", b"whatever").unwrap());
        assert!(!s.delete(b"/other/key"));
        assert!(names(&s).is_empty());
    }

    #[test]
    fn replace_all_keeps_last_good_value_of_a_broken_key() {
        let mut s = state();
        s.put(b"/logingest/topics/a", br#"{"index": "a1"}"#)
            .unwrap();
        s.put(b"/logingest/topics/b", b"").unwrap();
        let errors = s.replace_all([
            (&b"/logingest/topics/a"[..], &b"{broken"[..]),
            (b"/logingest/topics/c", b""),
        ]);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "/logingest/topics/a");
        assert_eq!(names(&s), vec!["a", "c"]);
        assert_eq!(s.desired()["a"].index, "a1");
    }

    #[test]
    fn one_bad_collector_entry_does_not_freeze_the_array() {
        let mut s = state();
        s.put(b"collectlogkey1", br#"[{"topic": "a"}, {"topic": "b"}]"#)
            .unwrap();
        s.put(
            b"collectlogkey1",
            br#"[{"path": "/a", "topic": "a"}, {"path": "/x"}, {"topic": "a b"}, 1, {"topic": "c"}]"#,
        )
        .unwrap();
        assert_eq!(names(&s), vec!["a", "c"], "b removed, good entries applied");
        let warnings = s.take_warnings();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].1.starts_with("entry 1 (topic (no topic))"));
        assert!(warnings[1].1.contains("\"a b\""), "{warnings:?}");
        assert!(warnings[2].1.starts_with("entry 3"));
        assert!(s.take_warnings().is_empty());
    }

    #[test]
    fn unknown_topic_fields_warn_or_reject_when_strict() {
        let mut s = state();
        let value = br#"{"index": "web", "compression": "zstd", "owner": "team"}"#;
        s.put(b"/logingest/topics/nginx", value).unwrap();
        assert_eq!(s.desired()["nginx"].index, "web");
        let warnings = s.take_warnings();
        assert_eq!(warnings.len(), 1, "one warning per value");
        assert!(warnings[0].1.contains("compression, owner"), "{warnings:?}");
        let mut strict = state().with_strict(true);
        let err = strict
            .put(b"/logingest/topics/nginx", value)
            .unwrap_err()
            .to_string();
        assert!(err.contains("compression, owner"), "{err}");
        assert!(names(&strict).is_empty());
    }
}
