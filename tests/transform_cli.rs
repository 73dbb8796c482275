//! `logingest transform test` and `logingest topics add --transform-file`:
//! offline with `--file`, and against a real etcd (started alone) with
//! `--topic`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, logingest_cli, unique, Server};
use serde_json::Value;

const NGINX: &str = r#". = merge(., parse_nginx_log!(.message, "combined"))"#;

const LINES: &str = concat!(
    r#"203.0.113.42 - alice [13/Sep/2020:12:26:40 +0000] "GET /api/v1/orders?page=2 HTTP/1.1" 200 5321 "https://shop.example.com/cart" "Mozilla/5.0 (X11; Linux x86_64; rv:80.0) Gecko/20100101 Firefox/80.0""#,
    "\n",
    r#"198.51.100.7 - - [13/Sep/2020:12:26:41 +0000] "POST /login HTTP/1.1" 503 12 "-" "curl/8.5.0""#,
    "\n",
    "this is not an access log line\n",
);

/// etcd alone on free ports (the transform commands need nothing else).
struct Etcd {
    _server: Server,
    url: String,
    _dir: tempfile::TempDir,
}

fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, peer_port) = (free_port(), free_port());
    let data = dir.path().join("etcd");
    let server = Server::new(
        "etcd",
        port,
        dir.path().join("etcd.log"),
        Box::new(move || {
            let client = format!("http://127.0.0.1:{port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let mut c = Command::new("etcd");
            c.args(["--name", "default", "--data-dir"])
                .arg(&data)
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")]);
            c
        }),
    );
    let etcd = Etcd {
        _server: server,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let start = Instant::now();
    while !etcdctl(&etcd, &["endpoint", "health"]).status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "etcd not healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    etcd
}

fn etcdctl(etcd: &Etcd, args: &[&str]) -> Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.url])
        .args(args)
        .output()
        .expect("etcdctl")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// The JSON results printed on stdout, one per line.
fn results(out: &Output) -> Vec<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn file_program_prints_typed_documents() {
    let dir = tempfile::tempdir().unwrap();
    let program = write(
        dir.path(),
        "nginx.vrl",
        &format!("{NGINX}\nif .status >= 500 {{ %index = \"nginx-errors\" }}\n"),
    );
    let input = write(dir.path(), "lines.txt", LINES);
    let out = logingest_cli(
        &["transform", "test", "--file", &program, "--input", &input],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let results = results(&out);
    assert_eq!(results.len(), 3);

    let ok = &results[0];
    assert_eq!(ok["outcome"], "keep");
    assert_eq!(ok["index"], "test");
    assert_eq!(ok["_id"], "test-0-0");
    assert_eq!(ok["document"]["status"], 200, "a number: {ok}");
    assert!(ok["document"]["status"].is_i64());
    assert_eq!(ok["document"]["size"], 5321);
    assert_eq!(ok["document"]["client"], "203.0.113.42");
    assert_eq!(ok["document"]["kafka"]["offset"], 0);

    assert_eq!(results[1]["index"], "nginx-errors", "routed by %index");
    assert_eq!(results[1]["document"]["status"], 503);

    let failed = &results[2];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["index"], "test");
    assert!(failed["error"]
        .as_str()
        .unwrap()
        .contains("parse_nginx_log"));
    assert_eq!(
        failed["document"]["message"],
        "this is not an access log line"
    );
    assert_eq!(
        failed["document"]["tags"],
        serde_json::json!(["transform_failure"])
    );
    assert!(stderr(&out).contains("3 lines: 2 kept, 0 dropped, 1 failed"));
}

#[test]
fn stdin_json_settings_drop_and_pretty() {
    let dir = tempfile::tempdir().unwrap();
    let program = write(
        dir.path(),
        "filter.vrl",
        "if .level == \"debug\" { abort \"debug\" }\n.level = upcase!(.level)\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_logingest"))
        .args(["transform", "test", "--file", &program, "--pretty"])
        .args(["--settings", r#"{"format": "json", "index": "app-%Y"}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"level\": \"debug\"}\n{\"level\": \"warn\", \"n\": 1}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\n  \"outcome\""), "pretty: {stdout}");
    let values: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(values[0]["outcome"], "drop");
    assert_eq!(values[0]["reason"], "debug");
    assert_eq!(values[1]["outcome"], "keep");
    assert_eq!(values[1]["document"]["level"], "WARN");
    assert_eq!(values[1]["document"]["n"], 1);
    assert!(values[1]["index"].as_str().unwrap().starts_with("app-20"));
}

#[test]
fn bad_program_exits_non_zero_with_the_diagnostic() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "lines.txt", LINES);
    for (name, program, expect) in [
        (
            "fallible.vrl",
            ".x = 1\n. = parse_nginx_log(.message, \"combined\")\n",
            "2:5: error[E103]: unhandled fallible assignment",
        ),
        ("syntax.vrl", ".x = (1 +\n", "error[E"),
        (
            "env.vrl",
            ".home = get_env_var!(\"HOME\")\n",
            "not available in logingest's sandbox",
        ),
    ] {
        let program = write(dir.path(), name, program);
        let out = logingest_cli(
            &["transform", "test", "--file", &program, "--input", &input],
            &[],
        );
        assert!(!out.status.success(), "{name} succeeded");
        assert!(out.stdout.is_empty(), "{name}: no documents");
        let err = stderr(&out);
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains("┌─ :"),
            "{name}: VRL's report with the excerpt: {err}"
        );
    }
}

#[test]
fn topic_program_from_etcd_and_topics_add_validates() {
    let etcd = start_etcd();
    let env = [("LOGINGEST_ETCD_ENDPOINTS", etcd.url.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "lines.txt", LINES);
    let topic = unique("nginx");

    // A program that does not compile is not written.
    let bad = write(
        dir.path(),
        "bad.vrl",
        ". = parse_nginx_log(.message, \"combined\")",
    );
    let out = logingest_cli(&["topics", "add", &topic, "--transform-file", &bad], &env);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("error[E103]"), "{}", stderr(&out));
    let key = format!("/logingest/topics/{topic}");
    let got = etcdctl(&etcd, &["get", &key]);
    assert!(got.stdout.is_empty(), "nothing written");

    let good = write(dir.path(), "nginx.vrl", NGINX);
    let out = logingest_cli(
        &[
            "topics",
            "add",
            &topic,
            "--index",
            "web",
            "--transform-file",
            &good,
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = etcdctl(&etcd, &["get", "--print-value-only", &key]);
    let value: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(value["transform"], NGINX);
    assert_eq!(value["index"], "web");

    let out = logingest_cli(
        &["transform", "test", "--topic", &topic, "--input", &input],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let results = results(&out);
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["index"], "web", "the topic's settings");
    assert_eq!(results[0]["_id"], format!("{topic}-0-0"));
    assert_eq!(results[0]["document"]["status"], 200);
    assert_eq!(results[0]["document"]["kafka"]["topic"], topic.as_str());
    assert_eq!(results[2]["outcome"], "failed");

    // The current program: a change made with etcdctl shows at once.
    let routed = r#"{"transform": "%index = \"other\""}"#;
    assert!(etcdctl(&etcd, &["put", &key, routed]).status.success());
    let out = logingest_cli(
        &["transform", "test", "--topic", &topic, "--input", &input],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(results_index(&out), ["other", "other", "other"]);

    // A value put with etcdctl whose program does not compile: the
    // diagnostic, and a failure status.
    let broken = r#"{"transform": ".a = ("}"#;
    assert!(etcdctl(&etcd, &["put", &key, broken]).status.success());
    let out = logingest_cli(
        &["transform", "test", "--topic", &topic, "--input", &input],
        &env,
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("does not compile"),
        "{}",
        stderr(&out)
    );

    // A topic without a program, and an unknown topic.
    let plain = unique("plain");
    assert!(logingest_cli(&["topics", "add", &plain], &env)
        .status
        .success());
    let out = logingest_cli(&["transform", "test", "--topic", &plain], &env);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no \"transform\""),
        "{}",
        stderr(&out)
    );
    let out = logingest_cli(&["transform", "test", "--topic", &unique("none")], &env);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has no key"), "{}", stderr(&out));
}

fn results_index(out: &Output) -> Vec<String> {
    results(out)
        .iter()
        .map(|r| r["index"].as_str().unwrap_or_default().to_string())
        .collect()
}
