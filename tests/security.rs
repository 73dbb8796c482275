//! Secured connections against the real local servers, with a throwaway
//! CA and certificates generated at run time: Kafka over TLS (through a
//! TLS-terminating proxy in front of tansu) and SASL/SCRAM, Elasticsearch
//! over https with basic auth, an API key or a bearer token (through a
//! proxy that checks the credential), etcd with TLS, a client certificate
//! and `auth enable`; secrets never show in logs, `check-config` output or
//! `Debug`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::tls_proxy::{HttpsAuthProxy, Pki};
use common::{
    free_port, logingest_cli, produce_to_with, stack_bin, unique, wait_until, Logingest, Server,
    Stack, GROUP_DEADLINE,
};

const PREFIX: &str = "/logingest/topics/";
/// Used as every password, API key and token: must never be printed.
const SECRET: &str = "hunter2-secret-value";

/// The sections of one logingest config; `kafka`, `etcd` and
/// `elasticsearch` are the lines of those sections, `tables` whole extra
/// tables (`[kafka.tls]`, ...).
struct Setup<'a> {
    etcd: String,
    kafka: String,
    elasticsearch: String,
    tables: String,
    dir: &'a Path,
}

impl Setup<'_> {
    /// A plain setup for `stack`.
    fn plain(stack: &Stack) -> Setup<'_> {
        Setup {
            etcd: format!("endpoints = [\"{}\"]", stack.etcd_url),
            kafka: format!("brokers = [\"{}\"]", stack.brokers),
            elasticsearch: format!("url = \"{}\"", stack.es_url),
            tables: String::new(),
            dir: stack.dir.path(),
        }
    }

    /// Writes the config; returns its path and HTTP port.
    fn write(&self) -> (PathBuf, u16) {
        let port = free_port();
        let text = format!(
            r#"
[etcd]
{etcd}

[kafka]
group_id = "{group}"
commit_interval = "200ms"
drain_timeout = "4s"
{kafka}

[kafka.options]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"

[elasticsearch]
{elasticsearch}

[batch]
linger = "50ms"

[retry]
initial_backoff = "50ms"
max_backoff = "1s"

[http]
listen = "127.0.0.1:{port}"

[shutdown]
timeout = "15s"

{tables}
"#,
            etcd = self.etcd,
            kafka = self.kafka,
            elasticsearch = self.elasticsearch,
            tables = self.tables,
            group = unique("group"),
        );
        let path = self.dir.join(format!("{}.toml", unique("secured")));
        std::fs::write(&path, text).expect("write config");
        (path, port)
    }
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Starts `logingest run` with debug logging and `env`.
fn run(stack: &Stack, config: &Path, port: u16, env: &[(&str, &str)]) -> Logingest {
    let mut all = vec![("RUST_LOG", "debug")];
    all.extend_from_slice(env);
    Logingest::start_with_env(stack, config, port, &unique("logingest"), &all)
}

/// `logingest check-config --config FILE [--connect]`.
fn check_config(config: &Path, connect: bool, env: &[(&str, &str)]) -> Output {
    let path = config.display().to_string();
    let mut args = vec!["check-config", "--config", path.as_str()];
    if connect {
        args.push("--connect");
    }
    logingest_cli(&args, env)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The TLS client properties of the test's own producer.
fn tls_producer(pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".into()),
        ("ssl.ca.location", pki.ca_file.display().to_string()),
    ]
}

async fn produce(
    brokers: &str,
    topic: &str,
    partitions: i32,
    count: usize,
    props: &[(&'static str, String)],
) -> Vec<String> {
    let records: Vec<_> = (0..count)
        .map(|i| (None, format!("{topic} secured line {i}").into_bytes()))
        .collect();
    let props: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
    produce_to_with(brokers, topic, partitions, &records, &props).await
}

/// Registers `topic` and waits until `ids` are exactly its index.
async fn assert_ingested(stack: &Stack, daemon: &Logingest, topic: &str, ids: &[String]) {
    let index = topic.to_lowercase();
    wait_until(
        &format!("{} documents of {topic} indexed", ids.len()),
        GROUP_DEADLINE,
        || async { stack.count_or_zero(&index).await >= ids.len() as u64 },
    )
    .await;
    stack.assert_exactly(&index, ids).await;
    // The log read is the daemon's, and it has logged: not vacuously clean.
    let log = daemon.log();
    assert!(log.contains("logingest started"), "no daemon log:\n{log}");
    assert!(!log.contains(SECRET), "secret in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_is_ingested_end_to_end() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::generate(certs.path(), "kafka");
    let (stack, proxy) = Stack::start_with_kafka_tls(pki.acceptor()).await;
    let topic = unique("tls");
    stack.create_topic(&topic, 2);
    let ids = produce(&proxy.address(), &topic, 2, 40, &tls_producer(&pki)).await;

    let mut setup = Setup::plain(&stack);
    setup.kafka = format!("brokers = [\"{}\"]", proxy.address());
    setup.tables = format!("[kafka.tls]\nca_file = {}\n", toml_path(&pki.ca_file));
    let (config, port) = setup.write();

    let out = check_config(&config, true, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    assert!(printed.contains("# kafka: ok"), "{printed}");
    assert!(printed.contains("# etcd: ok") && printed.contains("# elasticsearch: ok"));

    let daemon = run(&stack, &config, port, &[]);
    stack.put(&format!("{PREFIX}{topic}"), "");
    assert_ingested(&stack, &daemon, &topic, &ids).await;

    // A client that trusts another CA is refused, and says why.
    let other = Pki::generate(certs.path(), "other");
    setup.tables = format!("[kafka.tls]\nca_file = {}\n", toml_path(&other.ca_file));
    let (wrong, _) = setup.write();
    let out = check_config(&wrong, true, &[]);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("# kafka: error"), "{printed}");
    assert!(printed.contains("# etcd: ok"), "{printed}");
    assert!(
        printed.to_lowercase().contains("certificate") || printed.contains("SSL"),
        "the reason names the TLS failure: {printed}"
    );
    assert!(
        proxy
            .failed_handshakes
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
}

/// tansu with `--authentication`, logging its SASL exchanges.
///
/// SASL cannot succeed against tansu 0.6: it offers SCRAM-SHA-256/512
/// and OAUTHBEARER (no PLAIN), has no OAUTHBEARER validator, and SCRAM
/// users can only be created over an authenticated connection
/// (`tansu user create` gets NotAuthenticated) while its memory storage
/// does not survive a restart. So the test proves that the configured
/// mechanism reaches the broker's SaslHandshake from the real binary; the
/// property mapping itself is unit-tested in `kafka::security`.
struct SaslBroker {
    _server: Server,
    address: String,
    log: PathBuf,
}

fn start_sasl_broker(dir: &Path) -> SaslBroker {
    let port = free_port();
    let tansu = stack_bin("tansu", "LOGINGEST_TANSU_BIN");
    let log = dir.join(format!("tansu-sasl-{port}.log"));
    let server = Server::new(
        "tansu-sasl",
        port,
        log.clone(),
        Box::new(move || {
            let url = format!("tcp://127.0.0.1:{port}");
            // The harness clears the environment: set RUST_LOG through env(1).
            let mut c = Command::new("env");
            c.arg("RUST_LOG=tansu_auth=debug").arg(&tansu);
            c.args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/", "--authentication"]);
            c
        }),
    );
    SaslBroker {
        _server: server,
        address: format!("127.0.0.1:{port}"),
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sasl_settings_reach_the_broker_handshake() {
    let stack = Stack::start();
    let broker = start_sasl_broker(stack.dir.path());
    let mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-512"];
    let configs: Vec<PathBuf> = mechanisms
        .iter()
        .map(|mechanism| {
            let mut setup = Setup::plain(&stack);
            setup.kafka = format!("brokers = [\"{}\"]", broker.address);
            setup.tables =
                format!("[kafka.sasl]\nmechanism = \"{mechanism}\"\nusername = \"alice\"\n");
            setup.write().0
        })
        .collect();
    // Each check waits out the 10 s metadata timeout: run them together.
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let runs: Vec<_> = configs
            .iter()
            .map(|config| {
                scope.spawn(move || {
                    check_config(config, true, &[("LOGINGEST_KAFKA_SASL_PASSWORD", SECRET)])
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let broker_log = std::fs::read_to_string(&broker.log).unwrap_or_default();
    for (mechanism, out) in mechanisms.iter().zip(&outputs) {
        let printed = text(out);
        // No user can exist on tansu (see above): authentication fails, and
        // check-config says so for Kafka only.
        assert!(!out.status.success(), "{printed}");
        assert!(printed.contains("# kafka: error"), "{printed}");
        assert!(printed.contains("# etcd: ok") && printed.contains("# elasticsearch: ok"));
        assert!(!printed.contains(SECRET), "{printed}");
        let handshake = format!("SaslHandshakeRequest {{ mechanism: \"{mechanism}\" }}");
        assert!(
            broker_log.contains(&handshake),
            "tansu saw no {mechanism} handshake:\n{broker_log}"
        );
    }
}

/// How logingest authenticates to Elasticsearch in a test, and where the
/// credential comes from (a file, the environment, the config).
#[derive(Clone, Copy)]
enum EsAuth {
    /// `username` + `password_file`.
    BasicFromFile,
    /// `LOGINGEST_ES_API_KEY` (encoded form).
    ApiKeyFromEnv,
    /// `bearer_token` in the file.
    BearerInline,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// The encoded API key (`base64(id:key)`) whose key is [`SECRET`].
fn api_key() -> String {
    b64(&format!("key-id:{SECRET}"))
}

/// `[elasticsearch]` lines, environment and the `Authorization` value the
/// proxy expects, for `auth`.
fn es_auth(auth: EsAuth, dir: &Path) -> (String, Vec<(&'static str, String)>, String) {
    match auth {
        EsAuth::BasicFromFile => {
            let file = dir.join(unique("es-password"));
            std::fs::write(&file, format!("{SECRET}\n")).unwrap();
            (
                format!(
                    "username = \"logingest\"\npassword_file = {}",
                    toml_path(&file)
                ),
                vec![],
                format!("Basic {}", b64(&format!("logingest:{SECRET}"))),
            )
        }
        EsAuth::ApiKeyFromEnv => (
            String::new(),
            vec![("LOGINGEST_ES_API_KEY", api_key())],
            format!("ApiKey {}", api_key()),
        ),
        EsAuth::BearerInline => (
            format!("bearer_token = \"{SECRET}\""),
            vec![],
            format!("Bearer {SECRET}"),
        ),
    }
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The secret in any form a leak could take.
fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.trim().is_empty(),
        "{what} is empty: nothing was checked"
    );
    for form in [
        SECRET.to_string(),
        b64(SECRET),
        api_key(),
        b64(&format!("logingest:{SECRET}")),
    ] {
        assert!(
            !text.contains(&form),
            "{what} shows the secret ({form}):\n{text}"
        );
    }
}

async fn es_case(auth: EsAuth) {
    let stack = Stack::start();
    let pki = Pki::generate(stack.dir.path(), "es");
    let (lines, env, expected) = es_auth(auth, stack.dir.path());
    let proxy = HttpsAuthProxy::start(&stack.es_url, pki.acceptor(), &expected).await;
    let topic = unique("https");
    stack.create_topic(&topic, 2);
    let ids = stack.produce_lines(&topic, 2, 30).await;

    let mut setup = Setup::plain(&stack);
    setup.elasticsearch = format!(
        "url = \"{}\"\nca_file = {}\n{lines}",
        proxy.url(),
        toml_path(&pki.ca_file)
    );
    let (config, port) = setup.write();
    let out = check_config(&config, true, &env_refs(&env));
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("# elasticsearch: ok"), "{printed}");
    assert_no_secret("check-config --connect", &printed);

    let daemon = run(&stack, &config, port, &env_refs(&env));
    stack.put(&format!("{PREFIX}{topic}"), "");
    assert_ingested(&stack, &daemon, &topic, &ids).await;
    // The proxy counts a request once it has read osmem's whole reply,
    // which a loaded machine may let happen after the documents are
    // already searchable.
    wait_until(
        "documents went through the proxy",
        Duration::from_secs(10),
        || async { proxy.bulk_accepted() > 0 },
    )
    .await;
    assert_eq!(proxy.rejected(), 0, "every request carried the credential");
    assert_no_secret("the log", &daemon.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_https_with_basic_auth_from_a_file() {
    es_case(EsAuth::BasicFromFile).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_https_with_an_api_key_from_the_environment() {
    es_case(EsAuth::ApiKeyFromEnv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_https_with_a_bearer_token() {
    es_case(EsAuth::BearerInline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_elasticsearch_credential_indexes_nothing_and_is_logged() {
    let stack = Stack::start();
    let pki = Pki::generate(stack.dir.path(), "es");
    let proxy = HttpsAuthProxy::start(
        &stack.es_url,
        pki.acceptor(),
        &format!("ApiKey {}", api_key()),
    )
    .await;
    let topic = unique("denied");
    stack.create_topic(&topic, 1);
    stack.produce_lines(&topic, 1, 10).await;

    let mut setup = Setup::plain(&stack);
    let ca = toml_path(&pki.ca_file);
    setup.elasticsearch = format!("url = \"{}\"\nca_file = {ca}", proxy.url());
    let (config, port) = setup.write();
    let wrong = [("LOGINGEST_ES_API_KEY", "d3Jvbmc6a2V5")];
    let out = check_config(&config, true, &wrong);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("# elasticsearch: error") && printed.contains("401"),
        "{printed}"
    );

    let daemon = run(&stack, &config, port, &wrong);
    stack.put(&format!("{PREFIX}{topic}"), "");
    wait_until(
        "the credential refused and logged",
        GROUP_DEADLINE,
        || async { proxy.rejected() >= 2 && daemon.log().contains("refused the credentials") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack
        .assert_nothing_indexed(&topic, "credential refused: nothing indexed")
        .await;
    assert_eq!(proxy.bulk_accepted(), 0);

    // A CA that did not sign the server's certificate: refused too.
    let other = Pki::generate(stack.dir.path(), "other");
    setup.elasticsearch = format!(
        "url = \"{}\"\nca_file = {}\napi_key = \"{}\"",
        proxy.url(),
        toml_path(&other.ca_file),
        api_key()
    );
    let (untrusted, _) = setup.write();
    let out = check_config(&untrusted, true, &[]);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("# elasticsearch: error") && printed.contains("certificate"),
        "{printed}"
    );
}

/// etcd on https:// with a server certificate, `--client-cert-auth`, a
/// `root` user and a `logingest` user whose role reads the registry, and
/// `auth enable`.
struct SecureEtcd {
    _server: Server,
    url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

const ROOT_PASSWORD: &str = "root-password";

impl SecureEtcd {
    fn start(dir: &Path, pki: &Pki) -> Self {
        let (port, peer_port) = (free_port(), free_port());
        let data = dir.join(unique("etcd-tls"));
        let (cert, key, ca) = (
            pki.server_cert_file.clone(),
            pki.server_key_file.clone(),
            pki.ca_file.clone(),
        );
        let server = Server::new(
            "etcd-tls",
            port,
            dir.join(format!("etcd-tls-{port}.log")),
            Box::new(move || {
                let client = format!("https://127.0.0.1:{port}");
                let peer = format!("http://127.0.0.1:{peer_port}");
                let mut c = Command::new("etcd");
                c.args(["--name", "default", "--data-dir"])
                    .arg(&data)
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--initial-cluster", &format!("default={peer}")])
                    .arg("--cert-file")
                    .arg(&cert)
                    .arg("--key-file")
                    .arg(&key)
                    .arg("--trusted-ca-file")
                    .arg(&ca)
                    .arg("--client-cert-auth");
                c
            }),
        );
        let etcd = Self {
            _server: server,
            url: format!("https://127.0.0.1:{port}"),
            ca: pki.ca_file.clone(),
            cert: pki.client_cert_file.clone(),
            key: pki.client_key_file.clone(),
        };
        let start = std::time::Instant::now();
        while !etcd.etcdctl(None, &["endpoint", "health"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd-tls not healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for args in [
            &[
                "user",
                "add",
                &format!("root:{ROOT_PASSWORD}"),
                "--interactive=false",
            ][..],
            &["role", "add", "logingest-reader"],
            &[
                "role",
                "grant-permission",
                "logingest-reader",
                "--prefix=true",
                "read",
                PREFIX,
            ],
            &[
                "role",
                "grant-permission",
                "logingest-reader",
                "read",
                "collectlogkey1",
            ],
            &[
                "user",
                "add",
                &format!("logingest:{SECRET}"),
                "--interactive=false",
            ],
            &["user", "grant-role", "logingest", "logingest-reader"],
            &["auth", "enable"],
        ] {
            etcd.ok(None, args);
        }
        etcd
    }

    /// etcdctl over TLS with the client certificate, as `user:password`.
    fn etcdctl(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url])
            .arg("--cacert")
            .arg(&self.ca)
            .arg("--cert")
            .arg(&self.cert)
            .arg("--key")
            .arg(&self.key);
        if let Some(user) = user {
            cmd.args(["--user", user]);
        }
        cmd.args(args).output().expect("etcdctl")
    }

    fn ok(&self, user: Option<&str>, args: &[&str]) {
        let out = self.etcdctl(user, args);
        assert!(out.status.success(), "etcdctl {args:?}: {}", text(&out));
    }

    /// `put` as root.
    fn put(&self, key: &str, value: &str) {
        self.ok(Some(&format!("root:{ROOT_PASSWORD}")), &["put", key, value]);
    }

    /// `[etcd]` lines for the `logingest` user, its password in `file`.
    fn section(&self, password_file: &Path) -> String {
        format!(
            "endpoints = [\"{}\"]\nca_file = {}\ncert_file = {}\nkey_file = {}\nusername = \"logingest\"\npassword_file = {}",
            self.url,
            toml_path(&self.ca),
            toml_path(&self.cert),
            toml_path(&self.key),
            toml_path(password_file)
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_tls_and_auth_drives_the_registry() {
    let stack = Stack::start();
    let pki = Pki::generate(stack.dir.path(), "etcd");
    let etcd = SecureEtcd::start(stack.dir.path(), &pki);
    let password_file = stack.dir.path().join("etcd-password");
    std::fs::write(&password_file, format!("{SECRET}\n")).unwrap();
    let topic = unique("etcdtls");
    stack.create_topic(&topic, 2);
    let ids = stack.produce_lines(&topic, 2, 25).await;

    let mut setup = Setup::plain(&stack);
    setup.etcd = etcd.section(&password_file);
    let (config, port) = setup.write();
    let out = check_config(&config, true, &[]);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("# etcd: ok"), "{printed}");
    assert_no_secret("check-config --connect", &printed);

    let daemon = run(&stack, &config, port, &[]);
    etcd.put(&format!("{PREFIX}{topic}"), "");
    assert_ingested(&stack, &daemon, &topic, &ids).await;
    assert_no_secret("the log", &daemon.log());

    // A wrong password is refused by etcd, and said so.
    let out = check_config(&config, true, &[("LOGINGEST_ETCD_PASSWORD", "wrong")]);
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(
        printed.contains("# etcd: error") && printed.contains("authentication failed"),
        "{printed}"
    );
}

/// Kafka over TLS, etcd with TLS and auth, Elasticsearch over https with
/// basic auth: the secured demo end to end, with one secret as every
/// password (from a file and from the environment), which never shows in
/// the debug log, in `check-config` output or in `Debug`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fully_secured_stack_never_shows_the_secret() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::generate(certs.path(), "all");
    let (stack, kafka) = Stack::start_with_kafka_tls(pki.acceptor()).await;
    let etcd = SecureEtcd::start(stack.dir.path(), &pki);
    let es = HttpsAuthProxy::start(
        &stack.es_url,
        pki.acceptor(),
        &format!("Basic {}", b64(&format!("logingest:{SECRET}"))),
    )
    .await;
    let password_file = stack.dir.path().join("etcd-password");
    std::fs::write(&password_file, SECRET).unwrap();
    let topic = unique("secured");
    stack.create_topic(&topic, 2);
    let ids = produce(&kafka.address(), &topic, 2, 30, &tls_producer(&pki)).await;

    let ca = toml_path(&pki.ca_file);
    let setup = Setup {
        etcd: etcd.section(&password_file),
        kafka: format!("brokers = [\"{}\"]", kafka.address()),
        elasticsearch: format!(
            "url = \"{}\"\nca_file = {ca}\nusername = \"logingest\"",
            es.url()
        ),
        // The proxy asks no client certificate; librdkafka still loads it.
        tables: format!(
            "[kafka.tls]\nca_file = {ca}\ncert_file = {}\nkey_file = {}\n",
            toml_path(&pki.client_cert_file),
            toml_path(&pki.client_key_file)
        ),
        dir: stack.dir.path(),
    };
    let (config, port) = setup.write();
    let env = [("LOGINGEST_ES_PASSWORD", SECRET)];

    let out = check_config(&config, false, &env);
    assert!(out.status.success(), "{}", text(&out));
    assert_no_secret("check-config", &text(&out));
    let out = check_config(&config, true, &env);
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    for service in ["etcd", "kafka", "elasticsearch"] {
        assert!(printed.contains(&format!("# {service}: ok")), "{printed}");
    }
    assert_no_secret("check-config --connect", &printed);

    let mut loaded =
        logingest::config::Config::parse(&std::fs::read_to_string(&config).unwrap()).unwrap();
    loaded.apply_env(|name| (name == "LOGINGEST_ES_PASSWORD").then(|| SECRET.to_string()));
    loaded.resolve_secrets().unwrap();
    loaded.validate().unwrap();
    assert_eq!(loaded.etcd.password.as_ref().unwrap().expose(), SECRET);
    assert_no_secret("Debug", &format!("{loaded:?}"));
    assert_no_secret("Debug", &format!("{loaded:#?}"));

    let daemon = run(&stack, &config, port, &env);
    etcd.put(&format!("{PREFIX}{topic}"), "");
    assert_ingested(&stack, &daemon, &topic, &ids).await;
    assert_eq!(es.rejected(), 0);
    let log = daemon.log();
    assert!(log.contains("DEBUG"), "the daemon logged at debug level");
    assert_no_secret("the debug log", &log);
}

#[test]
fn missing_secrets_warn_in_check_config_and_stop_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("no-secret.toml");
    std::fs::write(
        &config,
        "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"alice\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = check_config(&config, false, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: kafka.sasl.password is not set")
            && stderr.contains("LOGINGEST_KAFKA_SASL_PASSWORD"),
        "{stderr}"
    );
    let path = config.display().to_string();
    let out = logingest_cli(&["run", "--config", &path], &[]);
    assert!(!out.status.success(), "run started without its password");
    assert!(
        text(&out).contains("kafka.sasl.password is not set"),
        "{}",
        text(&out)
    );

    // A secret file that cannot be read is named, with its path.
    std::fs::write(
        &config,
        "[elasticsearch]\nusername = \"u\"\npassword_file = \"/nonexistent/es-password\"\n",
    )
    .unwrap();
    let out = check_config(&config, false, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("elasticsearch.password_file /nonexistent/es-password"),
        "{}",
        text(&out)
    );
}
