//! The `_bulk` reply: which documents were accepted, which are worth
//! another try, and which were rejected for good.

use serde::de::IgnoredAny;
use serde::Deserialize;
use std::collections::BTreeMap;

/// What became of one document in a `_bulk` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Stored (2xx), or already present when written with `create` (409).
    Delivered,
    /// Worth another try: 429 (back-pressure) or a 5xx.
    Retry(String),
    /// Refused for good: another 4xx (mapping conflict, invalid document...).
    Rejected(String),
}

/// Errors reading a `_bulk` reply.
#[derive(Debug, thiserror::Error)]
pub enum BulkReplyError {
    /// The reply is not the JSON a `_bulk` reply should be.
    #[error("unreadable bulk reply: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The reply does not carry one item per document sent.
    #[error("bulk reply has {got} items for {sent} documents")]
    ItemCount {
        /// Items in the reply.
        got: usize,
        /// Documents sent.
        sent: usize,
    },
}

#[derive(Deserialize)]
struct Summary {
    #[serde(default)]
    errors: bool,
    #[serde(default, rename = "items")]
    _items: IgnoredAny,
}

#[derive(Deserialize)]
struct Detailed {
    items: Vec<BTreeMap<String, ItemResult>>,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn describe(status: u16, error: Option<&serde_json::Value>) -> String {
    match error {
        Some(serde_json::Value::Object(e)) => {
            let kind = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
            let reason = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
            format!("{status} {kind}: {reason}")
        }
        Some(other) => format!("{status} {other}"),
        None => format!("{status}"),
    }
}

/// Classifies the items of a `_bulk` reply, one per document sent, in
/// order.
pub fn classify(reply: &[u8], sent: usize) -> Result<Vec<ItemOutcome>, BulkReplyError> {
    let summary: Summary = serde_json::from_slice(reply)?;
    if !summary.errors {
        return Ok(vec![ItemOutcome::Delivered; sent]);
    }
    let detailed: Detailed = serde_json::from_slice(reply)?;
    if detailed.items.len() != sent {
        return Err(BulkReplyError::ItemCount {
            got: detailed.items.len(),
            sent,
        });
    }
    Ok(detailed
        .items
        .iter()
        .map(|item| {
            let Some((action, result)) = item.iter().next() else {
                return ItemOutcome::Retry("empty item".into());
            };
            match result.status {
                200..=299 => ItemOutcome::Delivered,
                409 if action == "create" => ItemOutcome::Delivered,
                429 | 500..=599 => {
                    ItemOutcome::Retry(describe(result.status, result.error.as_ref()))
                }
                status => ItemOutcome::Rejected(describe(status, result.error.as_ref())),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_errors_means_all_delivered() {
        let reply = br#"{"took":3,"errors":false,"items":[{"index":{"status":201}},{"index":{"status":200}}]}"#;
        assert_eq!(classify(reply, 2).unwrap(), vec![ItemOutcome::Delivered; 2]);
    }

    #[test]
    fn items_are_classified() {
        let reply = br#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"x"}}},
            {"index":{"status":503}}
        ]}"#;
        let out = classify(reply, 6).unwrap();
        assert_eq!(out[0], ItemOutcome::Delivered);
        assert_eq!(
            out[1],
            ItemOutcome::Retry("429 es_rejected_execution_exception: queue full".into())
        );
        assert_eq!(
            out[2],
            ItemOutcome::Rejected("400 mapper_parsing_exception: failed to parse".into())
        );
        assert_eq!(out[3], ItemOutcome::Delivered);
        assert!(matches!(out[4], ItemOutcome::Rejected(_)));
        assert!(matches!(out[5], ItemOutcome::Retry(_)));
    }

    #[test]
    fn item_count_mismatch_and_garbage_are_errors() {
        let reply = br#"{"errors":true,"items":[{"index":{"status":201}}]}"#;
        assert!(matches!(
            classify(reply, 2),
            Err(BulkReplyError::ItemCount { got: 1, sent: 2 })
        ));
        assert!(classify(b"<html>", 1).is_err());
    }
}
