use super::*;
use proptest::prelude::*;
use serde_json::json;

/// A 200-byte nginx "combined" access log line.
pub(crate) const NGINX_LINE: &str = "203.0.113.42 - alice [13/Sep/2020:12:26:40 +0000] \"GET /api/v1/orders?page=2 HTTP/1.1\" 200 5321 \"https://shop.example.com/cart\" \"Mozilla/5.0 (X11; Linux x86_64; rv:80.0) Gecko/20100101 Firefox/80.0\"";

pub(crate) const NGINX: &str = r#". = merge(., parse_nginx_log!(.message, "combined"))"#;

/// The document logingest builds from a plain-text record today.
pub(crate) fn document(message: &str) -> Map<String, Json> {
    let Json::Object(map) = json!({
        "@timestamp": "2020-09-13T12:26:40.123Z",
        "message": message,
        "kafka": {"topic": "nginx", "partition": 12, "offset": 3, "key": "host-1"}
    }) else {
        unreachable!()
    };
    map
}

/// Compiled with a generous run-time limit: these tests check what
/// programs do, and a debug build on a loaded machine can take longer than
/// the 50 ms default (the first `parse_nginx_log` builds its regex). Tests
/// of the limit set their own with `with_limits`.
fn compile(source: &str) -> Transform {
    match Transform::compile(source) {
        Ok(t) => t.with_limits(Limits {
            max_run_time: Duration::from_secs(10),
            ..Limits::default()
        }),
        Err(e) => panic!("{source}: {e}\n{}", e.rendered()),
    }
}

fn compile_error(source: &str) -> CompileError {
    match Transform::compile(source) {
        Ok(_) => panic!("{source} compiled"),
        Err(e) => e,
    }
}

fn keep(outcome: TransformOutcome) -> (Map<String, Json>, Option<String>) {
    match outcome {
        TransformOutcome::Keep { document, index } => (document, index),
        other => panic!("expected Keep, got {other:?}"),
    }
}

fn failed(outcome: TransformOutcome) -> (Map<String, Json>, String) {
    match outcome {
        TransformOutcome::Failed { document, error } => (document, error),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn syntax_error_names_line_and_column() {
    let e = compile_error(".a = 1\n.b = (2 +\n");
    let text = e.to_string();
    assert!(text.contains("error[E"), "{text}");
    let p = &e.problems[0];
    assert!(p.line.is_some() && p.column.is_some(), "{p:?}");
    assert!(text.starts_with(&format!("{}:{}:", p.line.unwrap(), p.column.unwrap())));
    assert!(
        e.rendered().contains(":2:") || e.rendered().contains(":3:"),
        "{}",
        e.rendered()
    );
    assert!(!e.rendered().contains('\u{1b}'), "no ANSI colour");
}

#[test]
fn unhandled_fallible_call_names_line_and_column() {
    let e = compile_error(".x = 1\n. = parse_nginx_log(.message, \"combined\")");
    let text = e.to_string();
    assert!(text.contains("E103") || text.contains("fallible"), "{text}");
    assert!(text.starts_with("2:"), "{text}");
    assert!(e.rendered().contains(":2:"), "{}", e.rendered());
}

#[test]
fn unknown_function_names_the_function() {
    let e = compile_error(".x = parse_nginx_logs!(.message, \"combined\")");
    let text = e.to_string();
    assert!(text.contains("1:6: error[E105]"), "{text}");
    assert!(
        e.rendered().contains("parse_nginx_logs"),
        "{}",
        e.rendered()
    );
    assert!(
        !text.contains("sandbox"),
        "a typo is not a sandbox refusal: {text}"
    );
}

#[test]
fn sandboxed_functions_do_not_compile_and_say_why() {
    for (program, why) in [
        (r#".home = get_env_var!("HOME")"#, "environment"),
        (r#".host = get_hostname!()"#, "host"),
        (r#".ip = dns_lookup!("example.com")"#, "network"),
        (r#".name = reverse_dns!("127.0.0.1")"#, "network"),
        (
            r#".r = http_request!("http://169.254.169.254/", method: "get")"#,
            "network",
        ),
        (r#".tz = get_timezone_name!()"#, "host"),
        (r#"log("x")"#, "log"),
        (r#".x = decode_gzip!(.message)"#, "decompression"),
        (r#".h = sha2(.message)"#, "crypto"),
        (
            r#". = parse_groks!(.message, patterns: ["%{x}"])"#,
            "parse_grok",
        ),
    ] {
        let e = compile_error(program);
        let text = e.to_string();
        assert!(text.contains("E105"), "{program}: {text}");
        assert!(
            text.contains("sandbox") && text.contains(why),
            "{program}: {text}"
        );
        assert!(e.rendered().contains("left out"), "{}", e.rendered());
    }
}

#[test]
fn the_functions_issue_12_names_compile() {
    compile(
        r#"
        a = parse_nginx_log!(.message, "combined")
        b = parse_apache_log!(.message, "common")
        c = parse_syslog!(.message)
        d = parse_grok!(.message, "%{IPORHOST:client} %{GREEDYDATA:rest}")
        e = parse_regex!(.message, r'^(?P<ip>\S+)')
        f = parse_key_value!(.message)
        g = parse_json!(.message)
        h = parse_timestamp!(.t, "%d/%b/%Y:%T %z")
        i = to_int!(.status)
        . = merge(., {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f, "g": g, "h": h, "i": i})
        del(.message)
        if .x == 1 { abort }
        "#,
    );
}

#[test]
fn empty_program_is_an_error() {
    assert!(compile_error("  \n").to_string().contains("empty"));
}

#[test]
fn nginx_fields_with_types() {
    let t = compile(NGINX);
    let (doc, index) = keep(t.run(document(NGINX_LINE)));
    assert_eq!(index, None);
    assert_eq!(doc["status"], json!(200), "status is an integer");
    assert_eq!(doc["size"], json!(5321));
    assert_eq!(doc["request"], "GET /api/v1/orders?page=2 HTTP/1.1");
    assert_eq!(doc["referer"], "https://shop.example.com/cart");
    assert_eq!(doc["client"], "203.0.113.42");
    assert_eq!(doc["user"], "alice");
    assert_eq!(doc["timestamp"], "2020-09-13T12:26:40Z");
    assert_eq!(doc["message"], NGINX_LINE, "merge keeps the other fields");
    assert_eq!(doc["kafka"]["offset"], 3);
    assert_eq!(doc["@timestamp"], "2020-09-13T12:26:40.123Z");
}

#[test]
fn the_program_may_change_the_document_freely() {
    let t = compile(
        r#"
        .kafka.topic = upcase!(.kafka.topic)
        del(.message)
        .n = to_int!("42")
        .when = parse_timestamp!("2024-01-02 03:04:05", "%Y-%m-%d %H:%M:%S")
        "#,
    );
    let (doc, _) = keep(t.run(document("x")));
    assert_eq!(doc["kafka"]["topic"], "NGINX");
    assert!(!doc.contains_key("message"));
    assert_eq!(doc["n"], 42);
    assert_eq!(doc["when"], "2024-01-02T03:04:05Z", "no zone means UTC");
}

#[test]
fn abort_drops() {
    let t = compile(
        r#"
        if contains(string!(.message), "healthcheck") { abort "health check" }
        .kept = true
        "#,
    );
    assert_eq!(
        t.run(document("GET /healthcheck")),
        TransformOutcome::Drop {
            reason: Some("health check".into())
        }
    );
    let (doc, _) = keep(t.run(document("GET /")));
    assert_eq!(doc["kept"], true);
    assert_eq!(
        compile("abort").run(document("x")),
        TransformOutcome::Drop { reason: None }
    );
}

#[test]
fn runtime_error_gives_the_original_and_the_error() {
    let t = compile(".added = 1\n. = merge(., object!(parse_json!(.message)))");
    let (doc, error) = failed(t.run(document("not json")));
    assert_eq!(doc, document("not json"), "the original, untransformed");
    assert!(error.contains("parse_json"), "{error}");
    assert!(error.contains("unable to parse json"), "{error}");
}

#[test]
fn a_fallible_call_failing_mid_way_leaves_no_partial_changes() {
    let t = compile(".a = 1\n.b = parse_int!(.message)\n.c = 3");
    let (doc, _) = failed(t.run(document("x")));
    assert!(!doc.contains_key("a"));
}

#[test]
fn mark_failure_tags_and_keeps_the_error() {
    let (mut doc, error) = failed(compile("parse_json!(.message)").run(document("nope")));
    mark_failure(&mut doc, &error);
    assert_eq!(doc["tags"], json!(["transform_failure"]));
    assert_eq!(doc["transform"]["error"], json!(error));
    assert_eq!(doc["message"], "nope");

    let mut json_doc = document("x");
    json_doc.insert("tags".into(), json!(["json_parse_failure"]));
    mark_failure(&mut json_doc, "e");
    assert_eq!(
        json_doc["tags"],
        json!(["json_parse_failure", "transform_failure"])
    );

    let mut odd = document("x");
    odd.insert("tags".into(), json!("one"));
    odd.insert("transform".into(), json!("theirs"));
    mark_failure(&mut odd, "e");
    assert_eq!(odd["tags"], json!(["one", "transform_failure"]));
    assert_eq!(odd["transform"], "theirs");
    assert_eq!(odd["transform.error"], "e");

    let mut object_tags = document("x");
    object_tags.insert("tags".into(), json!({"a": 1}));
    mark_failure(&mut object_tags, "e");
    assert_eq!(object_tags["tags"], json!(["transform_failure"]));
    assert_eq!(object_tags["transform"]["original_tags"], json!({"a": 1}));
}

#[test]
fn routing_through_index_metadata() {
    let t = compile(
        r#"
        r = parse_nginx_log!(.message, "combined")
        if r.status >= 500 { %index = "nginx-errors" }
        "#,
    );
    let (_, index) = keep(t.run(document(NGINX_LINE)));
    assert_eq!(index, None);
    let line = NGINX_LINE.replace(" 200 ", " 503 ");
    let (_, index) = keep(t.run(document(&line)));
    assert_eq!(index.as_deref(), Some("nginx-errors"));
}

#[test]
fn invalid_index_is_a_runtime_error() {
    for (program, expect) in [
        (r#"%index = "Nginx-Errors""#, "lower case"),
        (r#"%index = "_private""#, "must not start"),
        (r#"%index = """#, "1 to 255"),
        (r#"%index = 5"#, "must be a string"),
    ] {
        let (doc, error) = failed(compile(program).run(document("x")));
        assert!(error.contains(expect), "{program}: {error}");
        assert_eq!(doc, document("x"));
    }
    let (_, index) = keep(compile("%index = null").run(document("x")));
    assert_eq!(index, None);
}

#[test]
fn id_like_fields_do_not_route_or_identify() {
    // The `_id` of the indexed document is topic-partition-offset, set by
    // the caller; nothing a program does reaches it. Metadata other than
    // %index is ignored; `id` fields are ordinary document fields.
    let (doc, index) =
        keep(compile(r#"%id = "x"; %_id = "y"; .id = "z"; .kafka.offset = 99"#).run(document("m")));
    assert_eq!(index, None);
    assert_eq!(doc["id"], "z");
    assert_eq!(doc["kafka"]["offset"], 99, "a field like any other");
    // A top-level `_id` would be refused by Elasticsearch: a runtime error.
    let (doc, error) = failed(compile(r#"._id = "mine""#).run(document("m")));
    assert!(error.contains("`_id`"), "{error}");
    assert!(!doc.contains_key("_id"));
}

#[test]
fn the_document_must_stay_an_object() {
    let (_, error) = failed(compile(r#". = [1, 2]"#).run(document("m")));
    assert!(error.contains("must stay an object"), "{error}");
}

#[test]
fn runner_reuses_state_between_documents() {
    let t = Arc::new(compile("x = .message\n.y = x"));
    let mut runner = Runner::new(t.clone());
    assert!(Arc::ptr_eq(runner.transform(), &t));
    let (a, _) = keep(runner.run(document("a")));
    let (b, _) = keep(runner.run(document("b")));
    assert_eq!(a["y"], "a");
    assert_eq!(b["y"], "b");
}

#[test]
fn index_time_follows_the_programs_timestamp() {
    let fallback = DateTime::from_timestamp_millis(1_600_000_000_123).unwrap();
    let t = compile(
        r#"
        r = parse_nginx_log!(.message, "combined")
        .@timestamp = r.timestamp
        "#,
    );
    let (doc, _) = keep(t.run(document(NGINX_LINE)));
    assert_eq!(doc["@timestamp"], "2020-09-13T12:26:40Z");
    assert_eq!(
        document_time(&doc, fallback),
        DateTime::parse_from_rfc3339("2020-09-13T12:26:40Z").unwrap()
    );
    let (doc, _) = keep(compile(r#"del(.@timestamp)"#).run(document("x")));
    assert_eq!(document_time(&doc, fallback), fallback);
    let (doc, _) = keep(compile(r#".@timestamp = "yesterday""#).run(document("x")));
    assert_eq!(document_time(&doc, fallback), fallback);
}

#[test]
fn apply_renders_the_index_for_the_programs_time() {
    let settings =
        crate::registry::parse_topic_value("nginx", br#"{"index": "web-%Y.%m"}"#).unwrap();
    let program = r#"
        r = parse_nginx_log!(.message, "combined")
        ."@timestamp" = r.timestamp
        .status = r.status
        "#;
    let mut runner = Runner::new(Arc::new(compile(program)));
    let shaper = crate::document::Shaper::new(
        Arc::new(settings),
        crate::topic::TopicPartition::new("nginx", 1),
    );
    let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    let record = |value: &'static str| crate::document::Record {
        offset: 7,
        key: None,
        value: Some(value.as_bytes()),
        timestamp_ms: None,
        headers: &[],
    };
    let apply = |runner: &mut Runner, value| {
        let (document, time) = shaper.object(&record(value), now);
        runner.apply(&shaper.settings().template, document, time)
    };
    match apply(&mut runner, NGINX_LINE) {
        Applied::Index {
            document,
            index,
            error: None,
        } => {
            assert_eq!(index, "web-2020.09", "the log's own time, not now (2023)");
            assert_eq!(document["status"], 200);
        }
        other => panic!("{other:?}"),
    }
    match apply(&mut runner, "garbage") {
        Applied::Index {
            document,
            index,
            error: Some(error),
        } => {
            assert_eq!(index, "web-2023.11", "a failed document: the record's time");
            assert_eq!(document["tags"], json!(["transform_failure"]));
            assert_eq!(document["transform"]["error"], json!(error));
        }
        other => panic!("{other:?}"),
    }
}

/// Tokens of VRL, to make token soups that get past the lexer.
fn vrl_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        ".",
        ".message",
        "%index",
        "=",
        "!",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "|",
        "->",
        "if",
        "else",
        "abort",
        "return",
        "for_each",
        "parse_nginx_log!",
        "parse_grok",
        "merge",
        "\"combined\"",
        "r'(a+)+'",
        "s'x'",
        "t'2020-01-01T00:00:00Z'",
        "1",
        "1.5",
        "null",
        "true",
        "??",
        "+",
        "*",
        "/",
        "==",
        "err",
        "x",
        ",",
        "\n",
        "#",
        "\\",
        "\"",
        "'",
        "%{",
        "}}",
        "@timestamp",
        "del",
        "range!(0, 3)",
        "|_i, v|",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|t| t.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Programs come from etcd: any text either compiles or is a
    /// CompileError, and a compiled program's run ends in an outcome.
    #[test]
    fn any_text_compiles_or_fails_cleanly(
        source in prop_oneof![any::<String>(), vrl_soup()],
        message in any::<String>(),
    ) {
        match Transform::compile(&source) {
            Ok(t) => {
                let _ = t.run(document(&message));
            }
            Err(e) => {
                prop_assert!(!e.problems.is_empty());
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[test]
fn shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Transform>();
    send_sync::<TransformOutcome>();
    send::<Runner>();
}

#[test]
fn equality_is_by_source_text() {
    assert_eq!(compile(".a = 1"), compile(".a = 1"));
    assert_ne!(compile(".a = 1"), compile(".a = 2"));
}

#[test]
fn oversized_input_fails_without_running() {
    let t = compile(".ran = true").with_limits(Limits {
        max_input_bytes: 1000,
        ..Limits::default()
    });
    let big = "x".repeat(2000);
    let (doc, error) = failed(t.run(document(&big)));
    assert!(
        error.contains("over the transform's limit of 1000 bytes"),
        "{error}"
    );
    assert!(!doc.contains_key("ran"));
    let (doc, _) = keep(t.run(document("small")));
    assert_eq!(doc["ran"], true);
}

#[test]
fn a_program_over_its_time_is_stopped() {
    // 100 000 × 1 000 iterations: minutes if let run.
    let t = compile(
        r#"
        n = 0
        for_each(range!(0, 100000)) -> |_i, _v| {
            for_each(range!(0, 1000)) -> |_j, _w| { n = n + 1 }
        }
        .n = n
        "#,
    )
    .with_limits(Limits {
        max_run_time: Duration::from_millis(20),
        ..Limits::default()
    });
    let start = std::time::Instant::now();
    let (doc, error) = failed(t.run(document("m")));
    let took = start.elapsed();
    assert!(
        error.contains("longer than the transform's limit of 20ms"),
        "{error}"
    );
    assert!(took < Duration::from_millis(500), "stopped after {took:?}");
    assert!(!doc.contains_key("n"));
}

#[test]
fn a_runaway_grok_is_bounded_by_the_retry_limit() {
    // About k²/2 retries at each of 2k start positions for k words: 6.7 s
    // in a release build with Oniguruma's defaults (which only limit each
    // position), one search budget (~20 ms) with logingest's limit.
    let t = compile(r#". = parse_grok!(.message, "%{DATA:a} %{DATA:b} x$")"#);
    let line = "a ".repeat(1000);
    let start = std::time::Instant::now();
    let (_, error) = failed(t.run(document(&line)));
    let took = start.elapsed();
    assert!(
        error.contains("unable to parse input with grok pattern"),
        "{error}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn errors_caught_in_the_program_are_not_failures() {
    let t = compile(
        r#"
        parsed, err = parse_json(.message)
        if err != null { .parse_error = err } else { . = merge(., object!(parsed)) }
        "#,
    );
    let (doc, _) = keep(t.run(document("nope")));
    assert!(doc["parse_error"]
        .as_str()
        .unwrap()
        .contains("unable to parse json"));
}

/// Measurements for the module documentation (release build, one core):
/// `cargo test --release --lib transform::tests::measure -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, run by hand in release mode"]
fn measure() {
    use std::time::Instant;

    fn per_doc(what: &str, n: u32, mut f: impl FnMut()) -> Duration {
        for _ in 0..n / 10 {
            f();
        }
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let each = start.elapsed() / n;
        eprintln!("{what:<58} {:>9.2} µs", each.as_secs_f64() * 1e6);
        each
    }
    fn once(what: &str, f: impl FnOnce() -> String) {
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        eprintln!(
            "{what:<58} {:>9.1} ms  {}",
            took.as_secs_f64() * 1e3,
            result.chars().take(90).collect::<String>()
        );
    }
    fn describe(outcome: TransformOutcome) -> String {
        match outcome {
            TransformOutcome::Keep { .. } => "keep".into(),
            TransformOutcome::Drop { .. } => "drop".into(),
            TransformOutcome::Failed { error, .. } => format!("failed: {error}"),
        }
    }

    eprintln!("nginx line: {} bytes", NGINX_LINE.len());
    let nginx = Arc::new(compile(NGINX));
    let mut runner = Runner::new(nginx.clone());
    let n = 200_000;
    per_doc("Runner::run, parse_nginx_log combined", n, || {
        std::hint::black_box(runner.run(document(NGINX_LINE)));
    });
    per_doc("Transform::run (fresh runtime state)", n, || {
        std::hint::black_box(nginx.run(document(NGINX_LINE)));
    });
    // The pipeline's view: today's text fast path against a record through
    // the transform (document built, program run, index resolved, source
    // serialised).
    let settings = Arc::new(crate::topic::TopicSettings::defaults("nginx"));
    let tp = crate::topic::TopicPartition::new("nginx", 12);
    let mut shaper = crate::document::Shaper::new(settings.clone(), tp.clone());
    let record = crate::document::Record {
        offset: 3,
        key: Some(b"host-1"),
        value: Some(NGINX_LINE.as_bytes()),
        timestamp_ms: Some(1_600_000_000_123),
        headers: &[],
    };
    let now = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
    let mut chunk = crate::sink::chunk::ChunkBuilder::new(tp.clone(), 1, 0);
    let mut count = 0u32;
    let plain = per_doc("Shaper::write, no transform (today's path)", n, || {
        count += 1;
        if count % 10_000 == 0 {
            chunk = crate::sink::chunk::ChunkBuilder::new(tp.clone(), 1, 0);
        }
        shaper.write(&mut chunk, &record, now).unwrap();
    });
    let mut applier = Runner::new(nginx.clone());
    let mut body = Vec::with_capacity(1 << 20);
    let transformed = per_doc("Runner::apply + serialising the document", n, || {
        body.clear();
        let (document, time) = shaper.object(&record, now);
        if let Applied::Index { document, .. } =
            applier.apply(&shaper.settings().template, document, time)
        {
            serde_json::to_writer(&mut body, &document).unwrap();
        }
    });
    eprintln!(
        "{:<58} {:>9.2} µs",
        "added by the nginx transform",
        (transformed.as_secs_f64() - plain.as_secs_f64()) * 1e6
    );
    per_doc("Transform::compile of the nginx program", 2_000, || {
        std::hint::black_box(compile(NGINX));
    });
    per_doc("building the input document alone", n, || {
        std::hint::black_box(document(NGINX_LINE));
    });
    let mut empty = Runner::new(Arc::new(compile(".x = 1")));
    per_doc("Runner::run, `.x = 1` (conversions and clone)", n, || {
        std::hint::black_box(empty.run(document(NGINX_LINE)));
    });
    // The program on VRL values directly, without the serde_json
    // conversions or the kept original.
    let mut runtime = Runtime::default();
    let tz = utc();
    let mut size = 0;
    let base = convert::object_to_vrl(document(NGINX_LINE), &mut size);
    per_doc(
        "VRL alone on a vrl Value (no conversion, no original)",
        n,
        || {
            let mut target = TargetValue {
                value: Value::Object(base.clone()),
                metadata: Value::Object(ObjectMap::new()),
                secrets: Secrets::default(),
            };
            let r = runtime.resolve(&mut target, &nginx.program, &tz);
            runtime.clear();
            let _ = std::hint::black_box((r, target));
        },
    );
    let mut runtime = Runtime::default();
    per_doc("VRL alone, with the Deadline control", n, || {
        let mut target = TargetValue {
            value: Value::Object(base.clone()),
            metadata: Value::Object(ObjectMap::new()),
            secrets: Secrets::default(),
        };
        let mut d = sandbox::Deadline::new(DEFAULT_MAX_RUN_TIME);
        let r = runtime.resolve_with_control(&mut target, &nginx.program, &tz, &mut d);
        runtime.clear();
        let _ = std::hint::black_box((r, target));
    });

    // Pathological programs and inputs, each compiled outside the timing.
    // Limits off except where noted, to see the raw cost.
    let unlimited = Limits {
        max_input_bytes: usize::MAX,
        max_run_time: Duration::from_secs(3600),
    };
    let timed = |what: &str, program: &str, message: &str, limits: Limits| {
        let start = Instant::now();
        let t = compile(program).with_limits(limits);
        let compiled = start.elapsed();
        let doc = document(message);
        once(what, || {
            format!("{} (compile {compiled:.1?})", describe(t.run(doc)))
        });
    };
    let nested = r#". = parse_regex!(.message, r'(\w+\s?)+$')"#;
    for len in [10 * 1024, 1024 * 1024] {
        let line = "a".repeat(len) + "!";
        timed(
            &format!("parse_regex (\\w+\\s?)+$ on {len} chars (Rust regex)"),
            nested,
            &line,
            unlimited,
        );
    }
    let grok = r#". = parse_grok!(.message, "(?<x>(\\w+\\s?)+)$")"#;
    for len in [20usize, 28, 40, 60] {
        let line = "a".repeat(len) + "!";
        with_onig_defaults(|| {
            timed(
                &format!("parse_grok (\\w+\\s?)+$ on {len} chars, onig defaults"),
                grok,
                &line,
                unlimited,
            )
        });
    }
    for len in [20usize, 60, 1024, 10 * 1024, 64 * 1024] {
        let line = "a".repeat(len) + "!";
        timed(
            &format!("parse_grok (\\w+\\s?)+$ on {len} chars, logingest limit"),
            grok,
            &line,
            unlimited,
        );
    }
    let data3 = r#". = parse_grok!(.message, "%{DATA:a} %{DATA:b} %{DATA:c} x$")"#;
    let spaces = "a ".repeat(5 * 1024);
    with_onig_defaults(|| {
        timed(
            "parse_grok DATA DATA DATA x$ on 10 KiB, onig defaults",
            data3,
            &spaces,
            unlimited,
        )
    });
    timed(
        "parse_grok DATA DATA DATA x$ on 10 KiB, logingest limit",
        data3,
        &spaces,
        unlimited,
    );
    // Polynomial: every start position stays under Oniguruma's per-position
    // limit (about k²/2 retries for k words), so only a per-search limit
    // bounds the sum over the 2k positions.
    let data2 = r#". = parse_grok!(.message, "%{DATA:a} %{DATA:b} x$")"#;
    let poly = "a ".repeat(1000);
    with_onig_defaults(|| {
        timed(
            "parse_grok DATA DATA x$ on 2000 bytes, onig defaults",
            data2,
            &poly,
            unlimited,
        )
    });
    timed(
        "parse_grok DATA DATA x$ on 2000 bytes, logingest limit",
        data2,
        &poly,
        unlimited,
    );
    let typical_grok = r#". = merge(., parse_grok!(.message, "%{COMBINEDAPACHELOG}"))"#;
    timed(
        "parse_grok COMBINEDAPACHELOG, 198-byte line",
        typical_grok,
        NGINX_LINE,
        unlimited,
    );
    for kib in [64usize, 1024] {
        let big_line = NGINX_LINE.replace("/api/v1/orders", &"/x".repeat(kib * 512));
        timed(
            &format!("parse_nginx_log on a {kib} KiB line"),
            NGINX,
            &big_line,
            unlimited,
        );
        let kv = "k=v ".repeat(kib * 256);
        timed(
            &format!("parse_key_value on {kib} KiB ({}k pairs)", kib / 4),
            ". = merge(., parse_key_value!(.message))",
            &kv,
            unlimited,
        );
        let json_line = format!("[{}0]", "0,".repeat(kib * 512));
        timed(
            &format!("parse_json on a {kib} KiB array"),
            ".a = parse_json!(.message)",
            &json_line,
            unlimited,
        );
    }
    let doubling = (0..40)
        .map(|_| "s = s + s".to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let doubling = format!("s = string!(.message)\n{doubling}\n.s = s");
    timed(
        "40 self-concatenations, default limits",
        &doubling,
        "0123456789abcdef",
        Limits::default(),
    );
    let nested_loop = r#"
        n = 0
        for_each(range!(0, 100000)) -> |_i, _v| {
            for_each(range!(0, 1000)) -> |_j, _w| { n = n + 1 }
        }
        .n = n"#;
    timed(
        "10^8 loop iterations, default limits",
        nested_loop,
        "x",
        Limits::default(),
    );
    timed(
        "parse_regex on a 10 MiB line, default limits",
        nested,
        &"a".repeat(10 << 20),
        Limits::default(),
    );
}

/// Runs `f` with Oniguruma's own default limit (unlimited per search),
/// then restores logingest's.
fn with_onig_defaults(f: impl FnOnce()) {
    sandbox::limit_backtracking();
    // SAFETY: as in `sandbox::limit_backtracking`; the measurement runs
    // alone (`--ignored`).
    unsafe { onig_sys::onig_set_retry_limit_in_search(0) };
    f();
    unsafe { onig_sys::onig_set_retry_limit_in_search(sandbox::ONIG_RETRY_LIMIT_IN_SEARCH.into()) };
}
