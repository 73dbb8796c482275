//! Reading a `_bulk` reply, strictly: a 2xx answer acknowledges documents
//! only when it *is* the bulk reply for the documents sent — a JSON object
//! with `errors` and an `items` array holding one item per document, in
//! order, each naming the `_id` that was sent (when it names one). Anything
//! else (`{}` from a misrouted proxy, a load balancer's HTML page, a
//! truncated body, an items list one short) is a [`ReplyError`], and the
//! request is failed and retried: nothing of it counts as stored.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

/// Why a 2xx body is not a bulk reply for the documents sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not the JSON of a bulk reply (not JSON, truncated, `errors` or
    /// `items` missing, an item without a status).
    #[error("not a bulk reply: {0}")]
    Shape(String),
    /// The reply does not carry one item per document sent.
    #[error("bulk reply has {got} items for {sent} documents")]
    ItemCount {
        /// Items in the reply.
        got: usize,
        /// Documents sent.
        sent: usize,
    },
    /// An item names another document than the one sent at its place.
    #[error("bulk reply item {position} is for _id {got:?}, not the document sent there")]
    WrongId {
        /// The item's position.
        position: usize,
        /// The `_id` it names.
        got: String,
    },
}

/// Elasticsearch's error for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The item's HTTP status.
    pub status: u16,
    /// The error type (`mapper_parsing_exception`, ...), when given.
    pub kind: Option<String>,
    /// The server's reason, when given.
    pub reason: Option<String>,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// What became of one document, as its item says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemStatus {
    /// Stored (2xx), or already present when written with `create` (409).
    Stored,
    /// Worth another try: 429 (back-pressure) or a 5xx.
    Retry(ItemError),
    /// Refused for good: another 4xx (mapping conflict, invalid document...).
    Rejected(ItemError),
}

#[derive(Deserialize)]
struct Reply<'a> {
    // Required: a body without it is not a bulk reply, whatever else it has.
    #[allow(dead_code)]
    errors: bool,
    #[serde(borrow)]
    items: Vec<Item<'a>>,
}

/// An action name, borrowed from the reply when it has no escapes.
struct Action<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Action<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an action name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_string()))
            }
        }
        deserializer.deserialize_str(Visitor).map(Action)
    }
}

/// One item: an object with exactly one key, the action.
struct Item<'a> {
    action: Cow<'a, str>,
    result: ItemResult<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Item<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with one action")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Item<'a>, M::Error> {
                let Some((Action(action), result)) =
                    map.next_entry::<Action<'a>, ItemResult<'a>>()?
                else {
                    return Err(serde::de::Error::custom("an item without an action"));
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "an item with more than one action",
                    ));
                }
                Ok(Item { action, result })
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ItemResult<'a> {
    status: u16,
    #[serde(default, rename = "_id", borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Detailed {
        #[serde(rename = "type")]
        kind: Option<String>,
        reason: Option<String>,
    },
    Other(serde_json::Value),
}

fn item_error(status: u16, error: Option<ErrorBody>) -> ItemError {
    match error {
        Some(ErrorBody::Detailed { kind, reason }) => ItemError {
            status,
            kind,
            reason,
        },
        Some(ErrorBody::Other(other)) => ItemError {
            status,
            kind: None,
            reason: Some(other.to_string()),
        },
        None => ItemError {
            status,
            kind: None,
            reason: None,
        },
    }
}

/// Reads the reply to a `_bulk` request of `sent` documents, whose `_id`s
/// `expected_id(position, id)` checks. Returns one status per document, in
/// the order sent.
pub fn parse(
    reply: &[u8],
    sent: usize,
    mut expected_id: impl FnMut(usize, &str) -> bool,
) -> Result<Vec<ItemStatus>, ReplyError> {
    let reply: Reply<'_> =
        serde_json::from_slice(reply).map_err(|e| ReplyError::Shape(e.to_string()))?;
    if reply.items.len() != sent {
        return Err(ReplyError::ItemCount {
            got: reply.items.len(),
            sent,
        });
    }
    let mut statuses = Vec::with_capacity(sent);
    for (position, Item { action, result }) in reply.items.into_iter().enumerate() {
        if let Some(id) = &result.id {
            if !expected_id(position, id) {
                return Err(ReplyError::WrongId {
                    position,
                    got: id.to_string(),
                });
            }
        }
        statuses.push(match result.status {
            200..=299 => ItemStatus::Stored,
            409 if action == "create" => ItemStatus::Stored,
            status @ (429 | 500..=599) => ItemStatus::Retry(item_error(status, result.error)),
            status => ItemStatus::Rejected(item_error(status, result.error)),
        });
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_id(_: usize, _: &str) -> bool {
        true
    }

    #[test]
    fn a_clean_reply_stores_everything() {
        let reply = br#"{"took":3,"errors":false,"items":[{"index":{"_id":"t-0-0","status":201}},{"index":{"_id":"t-0-1","status":200}}]}"#;
        let ids = ["t-0-0", "t-0-1"];
        assert_eq!(
            parse(reply, 2, |p, id| ids[p] == id).unwrap(),
            vec![ItemStatus::Stored; 2]
        );
    }

    #[test]
    fn items_are_classified() {
        let reply = br#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse"}}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}},
            {"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"x"}}},
            {"index":{"status":503}},
            {"index":{"status":400,"error":"plain text"}}
        ]}"#;
        let out = parse(reply, 7, any_id).unwrap();
        assert_eq!(out[0], ItemStatus::Stored);
        let ItemStatus::Retry(e) = &out[1] else {
            panic!("{:?}", out[1])
        };
        assert_eq!(
            e.to_string(),
            "429 es_rejected_execution_exception: queue full"
        );
        let ItemStatus::Rejected(e) = &out[2] else {
            panic!("{:?}", out[2])
        };
        assert_eq!(
            e.to_string(),
            "400 mapper_parsing_exception: failed to parse"
        );
        assert_eq!(out[3], ItemStatus::Stored);
        assert!(matches!(out[4], ItemStatus::Rejected(_)));
        assert!(matches!(out[5], ItemStatus::Retry(_)));
        let ItemStatus::Rejected(e) = &out[6] else {
            panic!("{:?}", out[6])
        };
        assert_eq!(e.to_string(), "400: \"plain text\"");
    }

    #[test]
    fn anything_but_a_bulk_reply_for_the_documents_sent_is_an_error() {
        for (body, sent) in [
            (&b"{}"[..], 1),
            (b"<html><body>502 Bad Gateway</body></html>", 1),
            (br#"{"errors":false,"items":[{"index":{"status":201}"#, 1),
            (br#"{"errors":false}"#, 1),
            (br#"{"items":[{"index":{"status":201}}]}"#, 1),
            (br#"{"errors":false,"items":[{"index":{}}]}"#, 1),
            (br#"{"errors":false,"items":[{}]}"#, 1),
            (b"", 1),
        ] {
            let result = parse(body, sent, any_id);
            assert!(
                matches!(result, Err(ReplyError::Shape(_))),
                "{}: {result:?}",
                String::from_utf8_lossy(body)
            );
        }
        let one_short = br#"{"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert_eq!(
            parse(one_short, 2, any_id),
            Err(ReplyError::ItemCount { got: 1, sent: 2 })
        );
        let wrong = br#"{"errors":false,"items":[{"index":{"_id":"other-0-9","status":201}}]}"#;
        assert!(matches!(
            parse(wrong, 1, |_, id| id == "t-0-0"),
            Err(ReplyError::WrongId { position: 0, .. })
        ));
    }
}
