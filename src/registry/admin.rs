//! Reading and editing the registry for `logingest topics`.
//!
//! Writes go through the same key layout `etcdctl` uses, and every value is
//! validated with the same parser the watcher applies, so an edit made here
//! and one made with `etcdctl` behave the same.

use std::collections::BTreeMap;

use etcd_client::{Client, GetOptions};
use serde_json::json;

use super::{parse_topic_value, DesiredTopics, RegistryError, RegistryState};
use crate::config::EtcdConfig;
use crate::topic::{validate_index, validate_topic};

/// Errors of the registry commands.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The topic or its settings are invalid.
    #[error(transparent)]
    Invalid(#[from] RegistryError),
    /// etcd could not be reached or refused the call.
    #[error("etcd ({endpoints}): {source}")]
    Etcd {
        /// The endpoints tried.
        endpoints: String,
        /// The client's error.
        source: etcd_client::Error,
    },
}

/// Edits the registry of one configuration.
pub struct RegistryAdmin {
    client: Client,
    config: EtcdConfig,
}

impl RegistryAdmin {
    /// Connects to etcd.
    pub async fn connect(config: &EtcdConfig) -> Result<Self, AdminError> {
        let client = super::watcher::connect(config)
            .await
            .map_err(|e| etcd_error(config, e))?;
        Ok(Self {
            client,
            config: config.clone(),
        })
    }

    /// Registers `topic` (prefix form), with an optional index name.
    /// Returns the key written.
    pub async fn add(&mut self, topic: &str, index: Option<&str>) -> Result<String, AdminError> {
        self.add_with(topic, index, None).await
    }

    /// Registers `topic` (prefix form), with an optional index name and
    /// VRL transform; the value is validated (the program compiled) before
    /// it is written. Returns the key written.
    pub async fn add_with(
        &mut self,
        topic: &str,
        index: Option<&str>,
        transform: Option<&str>,
    ) -> Result<String, AdminError> {
        validate_topic(topic).map_err(RegistryError::from)?;
        let mut object = serde_json::Map::new();
        if let Some(index) = index {
            validate_index(index).map_err(RegistryError::from)?;
            object.insert("index".into(), json!(index));
        }
        if let Some(transform) = transform {
            object.insert("transform".into(), json!(transform));
        }
        let value = if object.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(object).to_string()
        };
        parse_topic_value(topic, value.as_bytes())?;
        let key = format!("{}{}", self.config.prefix, topic);
        self.client
            .put(key.as_bytes(), value, None)
            .await
            .map_err(|e| etcd_error(&self.config, e))?;
        Ok(key)
    }

    /// The value of `topic`'s prefix-form key, `None` when it has none.
    pub async fn value(&mut self, topic: &str) -> Result<Option<Vec<u8>>, AdminError> {
        validate_topic(topic).map_err(RegistryError::from)?;
        let key = format!("{}{}", self.config.prefix, topic);
        let response = self
            .client
            .get(key.as_bytes(), None)
            .await
            .map_err(|e| etcd_error(&self.config, e))?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Removes `topic`'s prefix-form key. Returns whether it existed.
    pub async fn remove(&mut self, topic: &str) -> Result<bool, AdminError> {
        validate_topic(topic).map_err(RegistryError::from)?;
        let key = format!("{}{}", self.config.prefix, topic);
        let response = self
            .client
            .delete(key.as_bytes(), None)
            .await
            .map_err(|e| etcd_error(&self.config, e))?;
        Ok(response.deleted() > 0)
    }

    /// The desired topics with their index, as the daemon would see them
    /// now; invalid keys are listed as errors.
    pub async fn list(
        &mut self,
    ) -> Result<(BTreeMap<String, String>, Vec<(String, RegistryError)>), AdminError> {
        let (desired, errors) = self.desired().await?;
        let topics = desired
            .into_iter()
            .map(|(topic, settings)| (topic, settings.index.clone()))
            .collect();
        Ok((topics, errors))
    }

    /// The desired topics with their full settings, as the daemon would
    /// apply them now; invalid keys are listed as errors (a key whose value
    /// is invalid contributes nothing here: there is no last good value).
    pub async fn desired(
        &mut self,
    ) -> Result<(DesiredTopics, Vec<(String, RegistryError)>), AdminError> {
        let mut kvs = Vec::new();
        let response = self
            .client
            .get(
                self.config.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            )
            .await
            .map_err(|e| etcd_error(&self.config, e))?;
        kvs.extend(
            response
                .kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
        );
        for key in &self.config.collector_keys {
            let response = self
                .client
                .get(key.as_bytes(), None)
                .await
                .map_err(|e| etcd_error(&self.config, e))?;
            kvs.extend(
                response
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
            );
        }
        let mut state = RegistryState::new(&self.config.prefix, &self.config.collector_keys);
        let errors = state.replace_all(kvs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        Ok((state.desired(), errors))
    }
}

fn etcd_error(config: &EtcdConfig, source: etcd_client::Error) -> AdminError {
    AdminError::Etcd {
        endpoints: config.endpoints.join(","),
        source,
    }
}
