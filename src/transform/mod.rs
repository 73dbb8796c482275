//! Per-topic VRL programs: parse, enrich, filter and route documents.
//!
//! A topic's registry value may carry a VRL program (`"transform"`), compiled
//! once when the value changes ([`Transform::compile`]; a program that does
//! not compile rejects the value, with VRL's diagnostic and its line:column)
//! and run per document by [`Runner::run`] (document in, outcome out) or
//! [`Runner::apply`] (record in, what to index out: the pipeline's step),
//! which return a [`TransformOutcome`] or an [`Applied`]:
//!
//! * `Keep { document, index }`: the document as the program left it; the
//!   program may route it by setting `%index` (validated like a configured
//!   index name; other metadata is ignored). Without `%index` the topic's
//!   index applies, its date parts rendered from [`document_time`];
//! * `Drop`: the program called `abort` (the filter); its offset advances;
//! * `Failed { document, error }`: a runtime error, or a broken limit below,
//!   or an output Elasticsearch would refuse (a top-level `_id`, `_index`,
//!   ...: [`RESERVED_FIELDS`]; a root that is not an object; a bad
//!   `%index`). `document` is the original, untransformed; the caller indexes
//!   it after [`mark_failure`] (`tags: ["transform_failure"]`,
//!   `transform.error`). A document is never lost to its program.
//!
//! The `_id` stays `topic-partition-offset`: the caller sets it, and nothing
//! a program does reaches it (`%id`, `%_id`, `.id`, `.kafka.offset` are
//! ordinary metadata or fields; a top-level `._id` fails, see above).
//!
//! The program sees the document logingest builds today
//! ([`crate::document::Shaper::object`]): `@timestamp`, `message`,
//! `kafka.{topic,partition,offset,key}` (as `kafka_fields` chooses), and with
//! `format: "json"` the line's fields. Its type is not declared to VRL (`.message` may be any type with
//! `format: "json"`), so calls on fields need `!` or a type assertion such
//! as `string!(.message)`. Time zone: UTC.
//!
//! # Sandbox
//!
//! Programs come from etcd, which many people can write. The `vrl` crate is
//! built without `enable_network_functions` (`http_request`, `dns_lookup`,
//! `reverse_dns`), `enable_env_functions` (`get_env_var`),
//! `enable_system_functions` (`get_hostname`, `get_timezone_name`, and the
//! file readers `parse_etld`, `parse_proto`, `encode_proto`,
//! `validate_json_schema`; it also turns off `parse_groks`'s
//! `alias_sources` files) and `enable_crypto_functions`; those functions are
//! not compiled in. From the rest, [`sandbox::REMOVED`] drops `log` (I/O),
//! the `decode_*` decompressors (no output limit: a small line can expand to
//! gigabytes in one uninterruptible call) and `parse_groks` (see below). A
//! call to any of them fails to compile, with a note saying why.
//!
//! # Time bound
//!
//! VRL has no unbounded loops or recursion, but a program's time still
//! grows with its input (and `for_each` over `range`, or repeated
//! `s = s + s`, grow it on purpose), and one call of a backtracking regex
//! can take minutes. Three limits keep a partition moving:
//!
//! * [`Limits::max_run_time`], default 50 ms of wall-clock time per
//!   document, checked before every expression (VRL's `ExecutionControl`);
//!   an interrupted run fails. Overrun: one expression.
//! * [`Limits::max_input_bytes`], default 64 KiB (keys and strings): a larger
//!   document fails without running, because single calls cannot be
//!   interrupted and the parsers are linear but not cheap.
//! * Oniguruma, the backtracking engine behind `parse_grok` (through the
//!   `grok` crate), gets a retry limit of 2 000 000 per search
//!   ([`sandbox::ONIG_RETRY_LIMIT_IN_SEARCH`]); Oniguruma's own default
//!   limits each start position (10 000 000) but not their sum. A search over
//!   the limit is reported as "no match", a runtime error of `parse_grok!`.
//!   `parse_regex` and the other regex functions use Rust's `regex`, which is
//!   linear-time. `parse_groks` is left out: on the same limit its Oniguruma
//!   call panics (VRL catches it, but every such document would print a panic
//!   message on stderr).
//!
//! Measured with `transform::tests::measure` (`cargo test --release --lib
//! transform::tests::measure -- --ignored --nocapture`; release build, this
//! 2-core machine with other builds running, load 2–3):
//!
//! | program / input                                           | time          |
//! |-----------------------------------------------------------|---------------|
//! | `parse_grok "%{DATA:a} %{DATA:b} x$"`, 2000 bytes, Oniguruma defaults | 6.4 s |
//! | the same with logingest's 2 000 000 retries per search    | 19 ms         |
//! | `parse_grok "(\w+\s?)+$"`, 20 chars, Oniguruma defaults   | 68–117 ms (stops at the per-position limit) |
//! | the same, 20 chars to 64 KiB, logingest's limit           | 19–27 ms      |
//! | `parse_regex "(\w+\s?)+$"`, 10 KiB / 1 MiB (Rust regex)   | 0.2 / 1.3 ms  |
//! | `parse_nginx_log`, 64 KiB / 1 MiB line                    | 6.1 / 96 ms   |
//! | `parse_key_value`, 64 KiB / 1 MiB                         | 12 / 263 ms   |
//! | `parse_json`, 64 KiB / 1 MiB array                        | 3.7 / 71 ms   |
//! | 40 × `s = s + s` (stopped by the 50 ms limit)             | 85 ms         |
//! | 10⁸ `for_each` iterations (stopped)                       | 51 ms         |
//!
//! The per-search retry limit is what bounds `parse_grok`: Oniguruma's
//! default stops one start position at 10 million retries but lets a search
//! try every position (the 2000-byte case above grows with the cube of the
//! line). At 64 KiB every linear parser stays well under the 50 ms deadline;
//! at 1 MiB single calls would overrun it several times. So with the
//! defaults a document costs at most about 50 ms plus one expression (under
//! 100 ms in every case measured): a pathological program slows its
//! partition to 10–20 documents/s but never stops it, and its failures are
//! visible (`transform_failure`). Residual risk: memory. A program written
//! to blow up (repeated self-concatenation) is stopped by the deadline, but
//! its last expression may allocate a few hundred MB first.
//!
//! # Cost
//!
//! `. = merge(., parse_nginx_log!(.message, "combined"))` on a 198-byte
//! combined line, same build and machine at load < 1:
//!
//! | step                                                      | µs/document |
//! |-----------------------------------------------------------|-------------|
//! | today's path, `Shaper::write` of a text record            | 0.6         |
//! | [`Runner::apply`] + serialising the document              | 13.9        |
//! | of which VRL alone (program on a `vrl` value)             | 9.5         |
//! | of which conversions (JSON → VRL, the kept original, back) | ≈ 3         |
//! | the deadline control                                      | not measurable |
//! | [`Transform::compile`], once per registry change          | 110–135     |
//!
//! So the transform adds about 13 µs per document (≈ 75 000 documents/s
//! per core). A fresh runtime state per document ([`Transform::run`]) costs
//! the same as a reused one ([`Runner`]) for this program (it has no
//! variables); the conversions are the part a pipeline working on `vrl`
//! values throughout could save.

pub mod cli;
mod convert;
mod diagnostics;
pub mod sample;
pub mod sandbox;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json};
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::{ExpressionError, Program, TargetValue, TimeZone};
use vrl::value::{ObjectMap, Secrets, Value};

pub use diagnostics::{CompileError, Problem};

/// The tag added to a document indexed untransformed after a runtime error.
pub const FAILURE_TAG: &str = "transform_failure";

/// The object field holding the error text of such a document
/// (`transform.error`).
pub const ERROR_OBJECT: &str = "transform";
/// See [`ERROR_OBJECT`].
pub const ERROR_FIELD: &str = "error";

/// Top-level fields Elasticsearch refuses inside a document (its metadata
/// fields). A program that leaves one in its output fails (the document
/// would otherwise be rejected by Elasticsearch and dead-lettered).
pub const RESERVED_FIELDS: &[&str] = &[
    "_id",
    "_index",
    "_routing",
    "_source",
    "_version",
    "_seq_no",
    "_primary_term",
    "_type",
    "_ignored",
    "_field_names",
    "_tier",
    "_doc_count",
    "_data_stream_timestamp",
    "_nested_path",
];

/// The bounds on one run of a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest document a program sees, in bytes of its keys and
    /// strings (plus 8 per other value); a larger one fails without running.
    pub max_input_bytes: usize,
    /// The wall-clock time after which a run is interrupted (checked between
    /// expressions) and fails.
    pub max_run_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            max_run_time: DEFAULT_MAX_RUN_TIME,
        }
    }
}

/// Default of [`Limits::max_input_bytes`]: 64 KiB.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 * 1024;

/// Default of [`Limits::max_run_time`].
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_millis(50);

/// A compiled program. Compiled once when the registry value changes; run
/// per document through a [`Runner`] (or [`Transform::run`]).
///
/// Two transforms are equal when their source text (and limits) are: that
/// is what a settings change compares. `Send + Sync`, to be shared in an
/// `Arc` by the tasks of a topic; a [`Runner`] is `Send`.
pub struct Transform {
    source: String,
    program: Program,
    warnings: Vec<String>,
    limits: Limits,
    timezone: TimeZone,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("source", &self.source)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Transform {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.limits == other.limits
    }
}

impl Eq for Transform {}

/// What became of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformOutcome {
    /// Index `document`; into `index` when the program chose one (through
    /// `%index`, validated), else into the topic's configured index.
    Keep {
        /// The document as the program left it.
        document: Map<String, Json>,
        /// The index the program routed it to.
        index: Option<String>,
    },
    /// The program called `abort`: the document is filtered out (its offset
    /// still advances).
    Drop {
        /// The message given to `abort`, if any.
        reason: Option<String>,
    },
    /// The program failed at run time (or broke a limit): index `document`,
    /// the original untransformed, marked with [`mark_failure`].
    Failed {
        /// The document as it was before the program ran.
        document: Map<String, Json>,
        /// Why, e.g. `function call error for "parse_json" at (0:18): ...`.
        error: String,
    },
}

impl Transform {
    /// Compiles `source` with logingest's sandboxed function list and the
    /// default [`Limits`]. Syntax errors, unhandled fallible calls, unknown
    /// functions and functions left out of the sandbox all fail here.
    pub fn compile(source: &str) -> Result<Self, CompileError> {
        if source.trim().is_empty() {
            return Err(CompileError::other("the program is empty"));
        }
        sandbox::limit_backtracking();
        let functions = sandbox::functions();
        // The program text comes from etcd: a panic in VRL's compiler (a
        // bug there) must reject the value, not take the watcher down.
        let compiled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            vrl::compiler::compile(source, &functions)
        }))
        .map_err(|panic| {
            CompileError::other(&format!("VRL's compiler panicked: {}", panic_text(&*panic)))
        })?;
        let result =
            compiled.map_err(|diagnostics| CompileError::from_diagnostics(source, diagnostics))?;
        let warnings = result
            .warnings
            .iter()
            .map(|w| {
                vrl::diagnostic::Formatter::new(source, vec![w.clone()])
                    .to_string()
                    .trim()
                    .to_string()
            })
            .collect();
        Ok(Self {
            source: source.to_string(),
            program: result.program,
            warnings,
            limits: Limits::default(),
            timezone: utc(),
        })
    }

    /// The same program with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The program's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// VRL's warnings (e.g. an unused result), rendered.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Its limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs the program once on `document`. A [`Runner`] reuses its
    /// runtime state between documents; this allocates it each time.
    pub fn run(&self, document: Map<String, Json>) -> TransformOutcome {
        self.run_in(&mut Runtime::default(), document)
    }

    fn run_in(&self, runtime: &mut Runtime, document: Map<String, Json>) -> TransformOutcome {
        let mut size = 0;
        let original = convert::object_to_vrl(document, &mut size);
        if size > self.limits.max_input_bytes {
            return failed(
                original,
                format!(
                    "the document is {size} bytes, over the transform's limit of {} bytes; \
                     the program did not run",
                    self.limits.max_input_bytes
                ),
            );
        }
        let mut target = TargetValue {
            value: Value::Object(original.clone()),
            metadata: Value::Object(ObjectMap::new()),
            secrets: Secrets::default(),
        };
        let mut deadline = sandbox::Deadline::new(self.limits.max_run_time);
        // A panic in a VRL function (a bug there) must not take the
        // partition down, nor stall it retrying the same record: the
        // document fails like any runtime error.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.resolve_with_control(&mut target, &self.program, &self.timezone, &mut deadline)
        }));
        runtime.clear();
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                let what = panic_text(&*panic);
                return failed(original, format!("the program panicked: {what}"));
            }
        };
        match result {
            Ok(_) => finish(target, original),
            Err(Terminate::Abort(ExpressionError::Abort { message, .. })) => {
                TransformOutcome::Drop { reason: message }
            }
            Err(Terminate::Interrupted) if deadline.expired() => failed(
                original,
                format!(
                    "the program ran longer than the transform's limit of {:?} and was stopped",
                    self.limits.max_run_time
                ),
            ),
            Err(error) => failed(original, error.to_string()),
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// UTC: timestamps without a zone are read as UTC, as everywhere in logingest.
fn utc() -> TimeZone {
    TimeZone::parse("UTC").unwrap_or_default()
}

fn failed(original: ObjectMap, error: String) -> TransformOutcome {
    TransformOutcome::Failed {
        document: convert::object_to_json(original),
        error,
    }
}

/// The outcome of a run that completed.
fn finish(target: TargetValue, original: ObjectMap) -> TransformOutcome {
    let Value::Object(document) = target.value else {
        return failed(
            original,
            format!(
                "the program replaced the document with a {}; it must stay an object",
                convert::kind(&target.value)
            ),
        );
    };
    if let Some(field) = RESERVED_FIELDS.iter().find(|f| document.contains_key(**f)) {
        return failed(
            original,
            format!(
                "the document has a top-level `{field}`, a metadata field Elasticsearch refuses \
                 in a document (logingest sets _id and _index itself; route with %index)"
            ),
        );
    }
    let index = match target.metadata {
        Value::Object(mut metadata) => metadata.remove("index"),
        _ => None,
    };
    let index = match index {
        None | Some(Value::Null) => None,
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        Some(Value::String(s)) => Some(s.to_string()),
        Some(other) => {
            return failed(
                original,
                format!(
                    "%index must be a string, the program set a {}",
                    convert::kind(&other)
                ),
            )
        }
    };
    if let Some(name) = &index {
        if let Err(e) = crate::topic::validate_index(name) {
            return failed(original, format!("%index: {e}"));
        }
    }
    TransformOutcome::Keep {
        document: convert::object_to_json(document),
        index,
    }
}

/// The time a kept document's index name (its date parts) is rendered from:
/// its `@timestamp` when the program left RFC 3339 text there (e.g. the
/// log's own time, parsed), else `fallback` (the record's time).
pub fn document_time(document: &Map<String, Json>, fallback: DateTime<Utc>) -> DateTime<Utc> {
    document
        .get("@timestamp")
        .and_then(Json::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(fallback, |t| t.with_timezone(&Utc))
}

/// The compiled program of `source`, from a process-wide cache: the registry
/// compiles a program when a value changes (to reject one that does not
/// compile), and every partition task of the topic then takes the same
/// compiled program instead of compiling it again.
pub fn compiled(source: &str) -> Result<Arc<Transform>, CompileError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, Weak};
    static CACHE: OnceLock<Mutex<HashMap<String, Weak<Transform>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let lookup = |cache: &Mutex<HashMap<String, Weak<Transform>>>| {
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(source)
            .and_then(Weak::upgrade)
    };
    if let Some(hit) = lookup(cache) {
        return Ok(hit);
    }
    // Compiled outside the lock: it may take milliseconds.
    let transform = Arc::new(Transform::compile(source)?);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.retain(|_, weak| weak.strong_count() > 0);
    map.insert(source.to_string(), Arc::downgrade(&transform));
    Ok(transform)
}

/// Runs one transform on many documents, reusing the VRL runtime state (its
/// variables) between them. One per call site (e.g. per partition task).
#[derive(Debug)]
pub struct Runner {
    transform: Arc<Transform>,
    runtime: Runtime,
}

impl Runner {
    /// A runner of `transform`.
    pub fn new(transform: Arc<Transform>) -> Self {
        Self {
            transform,
            runtime: Runtime::default(),
        }
    }

    /// The transform it runs.
    pub fn transform(&self) -> &Arc<Transform> {
        &self.transform
    }

    /// Runs the program on one document (pure and synchronous; bounded by
    /// the transform's [`Limits`]).
    pub fn run(&mut self, document: Map<String, Json>) -> TransformOutcome {
        self.transform.run_in(&mut self.runtime, document)
    }
}

/// What to do with one record under a transform: [`Runner::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Index `document` into `index` (with the record's `_id`).
    Index {
        /// The transformed document, or the original marked with
        /// [`mark_failure`] when `error` is set.
        document: Map<String, Json>,
        /// `%index`, or the topic's index rendered for the document's time.
        index: String,
        /// The runtime error when the program failed (count it as a
        /// transform failure; the document is still indexed).
        error: Option<String>,
    },
    /// The program dropped the record (count it; commit its offset).
    Drop {
        /// The message given to `abort`, if any.
        reason: Option<String>,
    },
}

impl Runner {
    /// The pipeline's step for one record's document (as
    /// [`crate::document::Shaper::object`] builds it, stamped `time`): runs
    /// the program and resolves the index: `%index`, else `template`
    /// rendered for [`document_time`] (a failed document: for `time`). The
    /// `_id` stays [`crate::topic::document_id`] of the record: the caller's.
    pub fn apply(
        &mut self,
        template: &crate::topic::IndexTemplate,
        document: Map<String, Json>,
        time: DateTime<Utc>,
    ) -> Applied {
        match self.run(document) {
            TransformOutcome::Keep { document, index } => {
                let index = index.unwrap_or_else(|| {
                    template.render(document_time(&document, time)).into_owned()
                });
                Applied::Index {
                    document,
                    index,
                    error: None,
                }
            }
            TransformOutcome::Drop { reason } => Applied::Drop { reason },
            TransformOutcome::Failed {
                mut document,
                error,
            } => {
                mark_failure(&mut document, &error);
                Applied::Index {
                    document,
                    index: template.render(time).into_owned(),
                    error: Some(error),
                }
            }
        }
    }
}

/// Marks an untransformed document after a [`TransformOutcome::Failed`]:
/// appends [`FAILURE_TAG`] to `tags` and puts the error text in
/// `transform.error`.
///
/// `tags` that is a string becomes a two-element array; `tags` of another
/// kind is kept as `transform.original_tags`. When `transform` exists and
/// is not an object, the error goes in a top-level `"transform.error"` key
/// instead (both map to the same field in Elasticsearch).
pub fn mark_failure(document: &mut Map<String, Json>, error: &str) {
    let tag = Json::String(FAILURE_TAG.to_string());
    let mut original_tags = None;
    match document.get_mut("tags") {
        Some(Json::Array(tags)) => tags.push(tag),
        Some(Json::String(s)) => {
            let first = Json::String(std::mem::take(s));
            document.insert("tags".into(), Json::Array(vec![first, tag]));
        }
        Some(Json::Null) | None => {
            document.insert("tags".into(), Json::Array(vec![tag]));
        }
        Some(other) => {
            original_tags = Some(std::mem::replace(other, Json::Array(vec![tag])));
        }
    }
    let entry = document
        .entry(ERROR_OBJECT)
        .or_insert_with(|| Json::Object(Map::new()));
    match entry {
        Json::Object(object) => {
            object.insert(ERROR_FIELD.into(), Json::String(error.to_string()));
            if let Some(tags) = original_tags {
                object.insert("original_tags".into(), tags);
            }
        }
        _ => {
            document.insert(
                format!("{ERROR_OBJECT}.{ERROR_FIELD}"),
                Json::String(error.to_string()),
            );
            if let Some(tags) = original_tags {
                document.insert(format!("{ERROR_OBJECT}.original_tags"), tags);
            }
        }
    }
}

#[cfg(test)]
mod tests;
