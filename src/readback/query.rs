//! The `_search` bodies of `logingest search` and `logingest tail`, the
//! reading of their replies, and the server's reason for a refusal: pure
//! functions, tested without a cluster.
//!
//! Ordering: documents are sorted by `@timestamp`, then `kafka.partition`
//! and `kafka.offset`. For logingest's documents of one topic that is a
//! total order (`_id` is `<topic>-<partition>-<offset>`), so `search_after`
//! pages neither skip nor repeat a document. `_id` itself is not used:
//! Elasticsearch 8 and later refuse to sort on it. Each sort field names an
//! `unmapped_type`, so an index without these fields (one not written by
//! logingest) is still searchable, ordered by time only.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// A bound of `--since` / `--until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    /// This long before the server's "now" (`15m`, `2h30m`).
    Ago(Duration),
    /// A fixed time (RFC 3339).
    At(DateTime<Utc>),
}

impl TimeBound {
    /// Parses a humantime duration or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(duration) = humantime::parse_duration(text) {
            return Ok(TimeBound::Ago(duration));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| TimeBound::At(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!(
                    "{text:?} is neither a duration (15m, 2h30m, 7d) nor an RFC 3339 time (2025-05-01T12:00:00Z)"
                )
            })
    }

    /// The bound as an Elasticsearch date expression: date math on the
    /// server's clock for a duration (whole seconds, rounded up: date math
    /// has no millisecond unit), the time in UTC otherwise.
    pub fn to_es(self) -> String {
        match self {
            TimeBound::Ago(d) => {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                format!("now-{secs}s")
            }
            TimeBound::At(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

impl std::str::FromStr for TimeBound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (`tail -f`'s polls).
    Asc,
    /// Newest first (`search`, the last N of `tail`).
    Desc,
}

impl Order {
    fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// A lower or upper bound of the `@timestamp` range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// An Elasticsearch date expression (`now-900s`, RFC 3339).
    Expr(String),
    /// Epoch milliseconds (what `tail -f` computes).
    Millis(i64),
}

impl Bound {
    fn to_json(&self) -> Value {
        match self {
            Bound::Expr(e) => Value::String(e.clone()),
            Bound::Millis(ms) => json!(ms),
        }
    }
}

/// What to search: everything but the paging.
#[derive(Debug, Clone, Default)]
pub struct QuerySpec {
    /// Query-string syntax; `None` matches every document.
    pub query: Option<String>,
    /// Only documents of this Kafka topic (`kafka.topic`), for a topic
    /// whose index other topics may share.
    pub topic: Option<String>,
    /// `@timestamp >=` this.
    pub since: Option<Bound>,
    /// `@timestamp <=` this.
    pub until: Option<Bound>,
    /// `_source` fields to return; `None` for all, empty for none.
    pub source: Option<Vec<String>>,
}

/// The sort clause (see the module documentation).
pub fn sort(order: Order) -> Value {
    let o = order.as_str();
    json!([
        {"@timestamp": {"order": o, "unmapped_type": "date"}},
        {"kafka.partition": {"order": o, "unmapped_type": "long"}},
        {"kafka.offset": {"order": o, "unmapped_type": "long"}},
    ])
}

/// The query clause of `spec`.
pub fn query(spec: &QuerySpec) -> Value {
    let must = match spec.query.as_deref().map(str::trim) {
        // AND between terms: `GET 500` means both, as in grep -w a | grep -w b.
        Some(q) if !q.is_empty() => json!({
            "query_string": {"query": q, "default_operator": "AND"}
        }),
        _ => json!({"match_all": {}}),
    };
    let mut filter = Vec::new();
    if spec.since.is_some() || spec.until.is_some() {
        let mut range = Map::new();
        if let Some(b) = &spec.since {
            range.insert("gte".into(), b.to_json());
        }
        if let Some(b) = &spec.until {
            range.insert("lte".into(), b.to_json());
        }
        // Both RFC 3339 and epoch milliseconds, whatever the mapping's format.
        range.insert(
            "format".into(),
            json!("strict_date_optional_time||epoch_millis"),
        );
        filter.push(json!({"range": {"@timestamp": range}}));
    }
    if let Some(topic) = &spec.topic {
        // `kafka.topic` is a keyword under logingest's index template; with
        // dynamic mapping (templates disabled) it is text with a
        // `.keyword` sub-field.
        filter.push(json!({"bool": {
            "should": [
                {"term": {"kafka.topic": topic}},
                {"term": {"kafka.topic.keyword": topic}},
            ],
            "minimum_should_match": 1,
        }}));
    }
    json!({"bool": {"must": [must], "filter": filter}})
}

/// A whole `_search` body: `size` documents in `order`, after the sort
/// values `after` (from the last hit of the previous page).
pub fn search_body(spec: &QuerySpec, order: Order, size: usize, after: Option<&[Value]>) -> Value {
    let mut body = json!({
        "size": size,
        "track_total_hits": false,
        "sort": sort(order),
        "query": query(spec),
    });
    if let Some(source) = &spec.source {
        body["_source"] = if source.is_empty() {
            json!(false)
        } else {
            json!(source)
        };
    }
    if let Some(after) = after {
        body["search_after"] = Value::Array(after.to_vec());
    }
    body
}

/// One document of a reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// `_id`.
    pub id: String,
    /// `_index` (the concrete index, or the data stream's backing index).
    pub index: String,
    /// `_source` (empty when not asked for).
    pub source: Map<String, Value>,
    /// The hit's sort values, for `search_after`.
    pub sort: Vec<Value>,
    /// `@timestamp` in epoch milliseconds: the first sort value, or else
    /// the `_source` field; `None` when the document has none.
    pub time_ms: Option<i64>,
    /// `_version`, when the body asked for it (`"version": true`): how many
    /// times the `_id` was written (`logingest verify` counts redeliveries).
    pub version: Option<u64>,
}

/// The documents of a `_search` reply, and a description of failed shards
/// when some failed (the reply is then partial).
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// The hits, in the reply's order.
    pub hits: Vec<Hit>,
    /// `N of M shards failed: reason`, when any did.
    pub shard_failures: Option<String>,
}

/// Reads a successful `_search` reply. `Err` names what is missing.
pub fn parse_reply(body: &Value) -> Result<Reply, String> {
    let hits = body
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .ok_or("the reply has no hits.hits array")?;
    let mut parsed = Vec::with_capacity(hits.len());
    for hit in hits {
        let id = hit
            .get("_id")
            .and_then(Value::as_str)
            .ok_or("a hit has no _id")?;
        let index = hit.get("_index").and_then(Value::as_str).unwrap_or("");
        let source = match hit.get("_source") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        let sort = match hit.get("sort") {
            Some(Value::Array(values)) => values.clone(),
            _ => Vec::new(),
        };
        let time_ms = sort
            .first()
            .and_then(Value::as_i64)
            // Missing values sort as the extremes of a long.
            .filter(|ms| *ms != i64::MIN && *ms != i64::MAX)
            .or_else(|| source_time_ms(&source));
        parsed.push(Hit {
            id: id.to_string(),
            index: index.to_string(),
            source,
            sort,
            time_ms,
            version: hit.get("_version").and_then(Value::as_u64),
        });
    }
    Ok(Reply {
        hits: parsed,
        shard_failures: shard_failures(body),
    })
}

fn source_time_ms(source: &Map<String, Value>) -> Option<i64> {
    match source.get("@timestamp")? {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn shard_failures(body: &Value) -> Option<String> {
    let shards = body.get("_shards")?;
    let failed = shards.get("failed").and_then(Value::as_u64).unwrap_or(0);
    if failed == 0 {
        return None;
    }
    let total = shards.get("total").and_then(Value::as_u64).unwrap_or(0);
    let reason = shards
        .pointer("/failures/0/reason")
        .map(error_reason)
        .unwrap_or_else(|| "no reason given".into());
    Some(format!("{failed} of {total} shards failed: {reason}"))
}

/// The server's reason in an error reply (`{"error": {...}, "status": N}`):
/// the root cause's type and reason, and the innermost `caused_by` when it
/// says more (a query's parse error: line and column). Falls back to the
/// body's text.
pub fn error_reason(body: &Value) -> String {
    let error = body.get("error").unwrap_or(body);
    let Some(object) = error.as_object() else {
        return match error {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
    };
    let root = error
        .pointer("/root_cause/0")
        .filter(|r| r.is_object())
        .unwrap_or(error);
    let describe = |e: &Value| {
        let kind = e.get("type").and_then(Value::as_str);
        let reason = e.get("reason").and_then(Value::as_str);
        match (kind, reason) {
            (Some(k), Some(r)) => Some(format!("{k}: {r}")),
            (None, Some(r)) => Some(r.to_string()),
            (Some(k), None) => Some(k.to_string()),
            (None, None) => None,
        }
    };
    let mut message = describe(root).unwrap_or_else(|| Value::Object(object.clone()).to_string());
    // The innermost cause, searched where Elasticsearch puts it: under the
    // error itself or under the first failed shard's reason.
    let start = error
        .pointer("/failed_shards/0/reason")
        .or_else(|| error.get("caused_by"));
    if let Some(mut cause) = start {
        while let Some(next) = cause.get("caused_by") {
            cause = next;
        }
        if let Some(inner) = cause.get("reason").and_then(Value::as_str) {
            if !message.contains(inner) {
                message = format!("{message} ({inner})");
            }
        }
    }
    message
}

/// The `type` of an error reply's error (`index_not_found_exception`).
pub fn error_type(body: &Value) -> Option<&str> {
    body.pointer("/error/type").and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_bounds() {
        assert_eq!(
            TimeBound::parse("15m").unwrap(),
            TimeBound::Ago(Duration::from_secs(900))
        );
        assert_eq!(TimeBound::parse("15m").unwrap().to_es(), "now-900s");
        assert_eq!(TimeBound::parse("1h 30m").unwrap().to_es(), "now-5400s");
        assert_eq!(TimeBound::parse("1500ms").unwrap().to_es(), "now-2s");
        let at = TimeBound::parse("2025-05-01T14:00:00+02:00").unwrap();
        assert_eq!(at.to_es(), "2025-05-01T12:00:00.000Z");
        let err = TimeBound::parse("yesterday").unwrap_err();
        assert!(err.contains("RFC 3339") && err.contains("15m"), "{err}");
    }

    #[test]
    fn body_with_everything() {
        let spec = QuerySpec {
            query: Some("GET 500".into()),
            topic: Some("nginx".into()),
            since: Some(Bound::Expr("now-900s".into())),
            until: Some(Bound::Millis(1_700_000_000_000)),
            source: Some(vec!["message".into()]),
        };
        let after = [json!(1), json!(2), json!(3)];
        let body = search_body(&spec, Order::Desc, 50, Some(&after));
        assert_eq!(body["size"], 50);
        assert_eq!(body["_source"], json!(["message"]));
        assert_eq!(body["search_after"], json!([1, 2, 3]));
        assert_eq!(body["sort"][0]["@timestamp"]["order"], "desc");
        assert_eq!(body["sort"][2]["kafka.offset"]["unmapped_type"], "long");
        let q = &body["query"]["bool"];
        assert_eq!(q["must"][0]["query_string"]["query"], "GET 500");
        assert_eq!(q["must"][0]["query_string"]["default_operator"], "AND");
        let range = &q["filter"][0]["range"]["@timestamp"];
        assert_eq!(range["gte"], "now-900s");
        assert_eq!(range["lte"], 1_700_000_000_000i64);
        assert_eq!(
            q["filter"][1]["bool"]["should"][0]["term"]["kafka.topic"],
            "nginx"
        );
    }

    #[test]
    fn body_with_nothing() {
        let body = search_body(&QuerySpec::default(), Order::Asc, 10, None);
        assert_eq!(body["query"]["bool"]["must"][0], json!({"match_all": {}}));
        assert_eq!(body["query"]["bool"]["filter"], json!([]));
        assert!(body.get("search_after").is_none());
        assert!(body.get("_source").is_none());
        let blank = QuerySpec {
            query: Some("  ".into()),
            source: Some(vec![]),
            ..QuerySpec::default()
        };
        let body = search_body(&blank, Order::Asc, 10, None);
        assert_eq!(body["query"]["bool"]["must"][0], json!({"match_all": {}}));
        assert_eq!(body["_source"], json!(false));
    }

    #[test]
    fn replies_are_read_without_trusting_them() {
        let reply = parse_reply(&json!({
            "_shards": {"total": 3, "failed": 1, "failures": [{"reason": {"type": "x", "reason": "boom"}}]},
            "hits": {"hits": [
                {"_id": "a", "_index": "i", "_source": {"message": "m"}, "sort": [5, 0, 1]},
                {"_id": "b", "_source": {"@timestamp": "2025-01-01T00:00:00.001Z"}},
                {"_id": "c", "sort": [i64::MIN, 0, 0]},
                {"_id": "d", "_source": "not an object", "sort": "nope"}
            ]}
        }))
        .unwrap();
        let times: Vec<_> = reply.hits.iter().map(|h| h.time_ms).collect();
        assert_eq!(times, [Some(5), Some(1_735_689_600_001), None, None]);
        assert_eq!(reply.hits[0].sort, [json!(5), json!(0), json!(1)]);
        assert!(reply.hits[3].source.is_empty() && reply.hits[3].sort.is_empty());
        assert_eq!(
            reply.shard_failures.as_deref(),
            Some("1 of 3 shards failed: x: boom")
        );
        for bad in [
            json!({}),
            json!({"hits": {}}),
            json!({"hits": {"hits": [{}]}}),
            json!([1]),
        ] {
            assert!(parse_reply(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_of_refusals() {
        // osmem-server's (and Elasticsearch's) reply to a bad query string.
        let bad_query = json!({"error": {
            "caused_by": {"caused_by": {"caused_by": {"reason": "Encountered \"<EOF>\" at line 1, column 9.", "type": "parse_exception"},
                "reason": "Cannot parse 'GET AND (': Encountered \"<EOF>\" at line 1, column 9.", "type": "parse_exception"},
                "reason": "Failed to parse query [GET AND (]", "type": "query_shard_exception"},
            "failed_shards": [{"reason": {"caused_by": {"caused_by": {"reason": "Encountered \"<EOF>\" at line 1, column 9.", "type": "parse_exception"}}, "reason": "Failed to parse query [GET AND (]"}}],
            "reason": "all shards failed",
            "root_cause": [{"reason": "Failed to parse query [GET AND (]", "type": "query_shard_exception"}],
            "type": "search_phase_execution_exception"}, "status": 400});
        assert_eq!(
            error_reason(&bad_query),
            "query_shard_exception: Failed to parse query [GET AND (] (Encountered \"<EOF>\" at line 1, column 9.)"
        );
        let missing = json!({"error": {"type": "index_not_found_exception", "reason": "no such index [x]",
            "root_cause": [{"type": "index_not_found_exception", "reason": "no such index [x]"}]}, "status": 404});
        assert_eq!(
            error_reason(&missing),
            "index_not_found_exception: no such index [x]"
        );
        assert_eq!(error_type(&missing), Some("index_not_found_exception"));
        assert_eq!(error_reason(&json!({"error": "plain"})), "plain");
        assert_eq!(error_reason(&json!({"error": {}})), "{}");
        assert_eq!(error_reason(&json!(7)), "7");
        assert_eq!(error_type(&json!({"error": "plain"})), None);
    }
}
