//! Credentials in the configuration: the [`Secret`] type (never printed),
//! reading `*_file` keys, and the librdkafka options that hold secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A credential: readable by the code that needs it, printed as
/// `<redacted>` by `Debug` and by the printed configuration.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret {
    value: String,
    /// Read from a `*_file` key: the printed configuration shows the file,
    /// not this value.
    #[serde(skip)]
    from_file: bool,
}

impl Secret {
    /// A secret given directly (e.g. from the environment).
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            from_file: false,
        }
    }

    /// The secret value, for the client that sends it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `secret` was read from its `*_file` key (serde skips it).
    pub(super) fn is_from_file(secret: &Option<Secret>) -> bool {
        secret.as_ref().is_some_and(|s| s.from_file)
    }
}

/// Reads `field`'s file into `value` when `file` is set: trailing newlines
/// are dropped; a missing, unreadable or empty file is an error naming the
/// key and the path.
pub(super) fn read_secret_file(
    field: &str,
    value: &mut Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    let Some(path) = file else { return Ok(()) };
    if value.as_ref().is_some_and(|s| !s.from_file) {
        return Err(ConfigError::Invalid(format!(
            "{field} and {field}_file are exclusive; set one"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        field: format!("{field}_file"),
        path: path.display().to_string(),
        source,
    })?;
    let secret = text.trim_end_matches(['\r', '\n']);
    if secret.is_empty() {
        return Err(ConfigError::Invalid(format!(
            "{field}_file {} is empty",
            path.display()
        )));
    }
    *value = Some(Secret {
        value: secret.to_string(),
        from_file: true,
    });
    Ok(())
}

/// Checks that at most one of `value`/`file` is given (a value read from
/// the file does not count). Only the structure: the value itself is
/// checked by [`check_secret_value`] at load, so that a printed (redacted)
/// configuration is exactly as valid as the original.
pub(super) fn check_secret(
    field: &str,
    value: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if value.as_ref().is_some_and(|s| !s.from_file) && file.is_some() {
        return Err(ConfigError::Invalid(format!(
            "{field} and {field}_file are exclusive; set one"
        )));
    }
    Ok(())
}

/// A secret must not be empty, and one sent in an HTTP header must be
/// printable ASCII without spaces.
pub(super) fn check_secret_value(
    field: &str,
    value: &Option<Secret>,
    header: bool,
) -> Result<(), ConfigError> {
    let Some(secret) = value else { return Ok(()) };
    if secret.value.is_empty() {
        return Err(ConfigError::Invalid(format!("{field} must not be empty")));
    }
    if header && !secret.value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Invalid(format!(
            "{field} must be printable ASCII without spaces (an API key in its encoded form)"
        )));
    }
    Ok(())
}

/// Checks that a certificate and its key are both set or both absent.
pub(super) fn check_cert_pair(
    section: &str,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if cert.is_some() != key.is_some() {
        return Err(ConfigError::Invalid(format!(
            "{section}.cert_file and {section}.key_file go together"
        )));
    }
    Ok(())
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// `kafka.options` with the values of [`is_secret_option`] keys replaced.
pub(super) fn redacted_options(options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(k, v)| {
            let v = if is_secret_option(k) {
                "<redacted>".to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

/// librdkafka properties that hold credentials (`sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`,
/// `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret_option(key: &str) -> bool {
    key.contains("password")
        || key.contains("secret")
        || key == "ssl.key.pem"
        || key == "sasl.oauthbearer.config"
}
