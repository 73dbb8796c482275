//! Packaging checks, no servers needed: every config under `deploy/` passes
//! `logingest check-config`, every manifest parses and agrees with the
//! daemon's configuration (ports, probes, shutdown deadlines), the
//! kustomizations render with `kubectl kustomize`, the systemd unit passes
//! `systemd-analyze verify` and `security`, and the Dockerfile builds a
//! non-root two-stage image.
//!
//! `scripts/install-stack.sh` installs kubectl and systemd-analyze; where one
//! is missing, its test prints `SKIP:` and fails unless
//! `LOGINGEST_ALLOW_SKIP=1` (see `tests/common/tools.rs`).

#[path = "common/tools.rs"]
mod tools;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use logingest::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

/// Variables that `check-config` reads; the tests set them explicitly.
const LOGINGEST_ENV: [&str; 5] = [
    "LOGINGEST_ETCD_ENDPOINTS",
    "LOGINGEST_KAFKA_BROKERS",
    "LOGINGEST_ES_URL",
    "LOGINGEST_INSTANCE_ID",
    "LOGINGEST_LOG_FORMAT",
];

/// The config path every packaging passes to `logingest run --config`.
const CONFIG_PATH: &str = "/etc/logingest/logingest.toml";
/// The HTTP port of `/healthz`, `/readyz` and `/metrics` in the packagings.
const HTTP_PORT: u16 = 9464;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Files under `dir` (recursively) whose name ends with one of `exts`.
fn files_under(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Runs `logingest check-config --config PATH` with only `env` of the
/// LOGINGEST_* variables set, asserts that it succeeds, and returns the
/// printed configuration parsed back.
fn check_config(path: &Path, env: &[(&str, &str)], what: &str) -> Config {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logingest"));
    cmd.arg("check-config").arg("--config").arg(path);
    for name in LOGINGEST_ENV {
        cmd.env_remove(name);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().expect("cannot run logingest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check-config rejected {what} ({}):\n{stderr}",
        out.status
    );
    let printed = Config::parse(&stdout)
        .unwrap_or_else(|e| panic!("printed config of {what} does not parse: {e}\n{stdout}"));
    printed
        .validate()
        .unwrap_or_else(|e| panic!("printed config of {what} is invalid: {e}\n{stdout}"));
    assert_eq!(
        printed.to_redacted_toml(),
        stdout,
        "printed config of {what} does not round-trip"
    );
    printed
}

/// A config that containers and pods use: reachable from outside.
fn assert_listens_outside(config: &Config, what: &str) {
    let listen = config.http.listen;
    assert!(
        listen.ip().is_unspecified(),
        "{what}: http.listen {listen} must be 0.0.0.0 (probes and scrapes come from outside)"
    );
    assert_eq!(listen.port(), HTTP_PORT, "{what}: http.listen port");
}

fn load_yaml(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", rel(path)))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn int_of(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {y:?}"))
}

fn vec_of<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// Every document of every YAML file under deploy/kubernetes/.
fn kubernetes_docs() -> Vec<(PathBuf, Yaml)> {
    let docs: Vec<_> = files_under(&deploy().join("kubernetes"), &["yaml", "yml"])
        .into_iter()
        .flat_map(|path| {
            load_yaml(&path)
                .into_iter()
                .map(move |doc| (path.clone(), doc))
        })
        .collect();
    assert!(!docs.is_empty(), "no manifests under deploy/kubernetes/");
    docs
}

fn kind_of(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name_of(doc: &Yaml) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// Writes a ConfigMap's `logingest.toml`-like entry to a file and checks it
/// as a pod would run it (LOGINGEST_INSTANCE_ID = the pod name).
fn check_configmap_entry(
    dir: &Path,
    configmap: &str,
    key: &str,
    text: &str,
    pod_name: &str,
) -> Config {
    let path = dir.join(format!("{configmap}-{key}"));
    std::fs::write(&path, text).unwrap();
    check_config(
        &path,
        &[("LOGINGEST_INSTANCE_ID", pod_name)],
        &format!("ConfigMap {configmap} key {key}"),
    )
}

/// Whether the labels of `selector` (a matchLabels map or a Service's
/// selector) are all on `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let Some(selector) = selector.as_hash() else {
        return false;
    };
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| &labels[str_of(k, "label")] == v)
}

/// A `systemd`-style or Compose duration in whole seconds: `40`, `40s`.
fn seconds(text: &str, what: &str) -> Duration {
    let digits = text.strip_suffix('s').unwrap_or(text);
    Duration::from_secs(
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{what}: {text:?} is not N or Ns")),
    )
}

#[test]
fn every_toml_passes_check_config() {
    let files = files_under(&deploy(), &["toml"]);
    assert!(
        files.len() >= 4,
        "expected local, container, compose and systemd configs, found {files:?}"
    );
    for path in files {
        let config = check_config(&path, &[], &rel(&path));
        assert!(
            config.shutdown.timeout > Duration::ZERO,
            "{}: shutdown.timeout",
            rel(&path)
        );
    }
}

#[test]
fn every_yaml_parses_as_mappings() {
    let files = files_under(&deploy(), &["yaml", "yml"]);
    assert!(!files.is_empty(), "no YAML under deploy/");
    for path in files {
        let docs = load_yaml(&path);
        assert!(!docs.is_empty(), "{} holds no document", rel(&path));
        for (i, doc) in docs.iter().enumerate() {
            assert!(
                doc.is_hash(),
                "{} document {i} is not a mapping: {doc:?}",
                rel(&path)
            );
        }
    }
}

#[test]
fn kubernetes_configmaps_pass_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (path, doc) in kubernetes_docs() {
        if kind_of(&doc) != "ConfigMap" {
            continue;
        }
        let name = name_of(&doc);
        let data = doc["data"]
            .as_hash()
            .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no data", rel(&path)));
        for (key, value) in data {
            let key = str_of(key, "ConfigMap key");
            if !key.ends_with(".toml") {
                continue;
            }
            let config =
                check_configmap_entry(dir.path(), name, key, str_of(value, key), "logingest-0");
            assert_listens_outside(&config, &format!("ConfigMap {name}"));
            checked += 1;
        }
    }
    assert!(checked >= 1, "no ConfigMap with a .toml entry");
}

/// Deployment and StatefulSet: the config they mount, the instance id, the
/// probes, the grace period and the security context.
#[test]
fn kubernetes_workloads_match_their_config() {
    let docs = kubernetes_docs();
    let configmaps: BTreeMap<&str, &Yaml> = docs
        .iter()
        .filter(|(_, d)| kind_of(d) == "ConfigMap")
        .map(|(_, d)| (name_of(d), d))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut deployments = 0;
    for (path, doc) in &docs {
        let kind = kind_of(doc);
        if kind != "Deployment" && kind != "StatefulSet" {
            continue;
        }
        let what = format!("{} {kind} {}", rel(path), name_of(doc));
        if kind == "Deployment" {
            deployments += 1;
            assert_eq!(int_of(&doc["spec"]["replicas"], "replicas"), 3, "{what}");
        }
        let template = &doc["spec"]["template"];
        assert!(
            selects(
                &doc["spec"]["selector"]["matchLabels"],
                &template["metadata"]["labels"]
            ),
            "{what}: selector does not match the pod labels"
        );
        let pod = &template["spec"];
        let containers = vec_of(&pod["containers"], "containers");
        assert_eq!(containers.len(), 1, "{what}: one container");
        let c = &containers[0];

        // The config file: args name a file of a mounted ConfigMap.
        let args: Vec<&str> = vec_of(&c["args"], "args")
            .iter()
            .map(|a| str_of(a, "arg"))
            .collect();
        assert_eq!(args, ["run", "--config", CONFIG_PATH], "{what}: args");
        let (dir_part, key) = CONFIG_PATH.rsplit_once('/').unwrap();
        let mount = vec_of(&c["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(dir_part))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at {dir_part}"));
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{what}: mount");
        let volume = vec_of(&pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{what}: no volume {:?}", mount["name"]));
        let cm_name = str_of(&volume["configMap"]["name"], "configMap name");
        let cm = configmaps
            .get(cm_name)
            .unwrap_or_else(|| panic!("{what}: ConfigMap {cm_name} is not in the manifests"));

        // The instance id is the pod name.
        let env = vec_of(&c["env"], "env");
        let id = env
            .iter()
            .find(|e| e["name"].as_str() == Some("LOGINGEST_INSTANCE_ID"))
            .unwrap_or_else(|| panic!("{what}: LOGINGEST_INSTANCE_ID not set"));
        assert_eq!(
            id["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            Some("metadata.name"),
            "{what}: LOGINGEST_INSTANCE_ID must come from the pod name"
        );
        let pod_name = format!("{}-0", name_of(doc));
        let config = check_configmap_entry(
            dir.path(),
            cm_name,
            key,
            str_of(&cm["data"][key], "config text"),
            &pod_name,
        );
        assert_listens_outside(&config, &what);
        if kind == "StatefulSet" {
            assert!(
                config.kafka.static_membership,
                "{what}: the StatefulSet variant is the static-membership one"
            );
        }
        if config.kafka.static_membership {
            assert_eq!(config.instance.id.as_deref(), Some(pod_name.as_str()));
        }

        // Probes on the config's port.
        let ports = vec_of(&c["ports"], "ports");
        let port_named = |name: &Yaml| -> i64 {
            if let Some(n) = name.as_i64() {
                return n;
            }
            let name = str_of(name, "probe port");
            let port = ports
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("{what}: no container port named {name}"));
            int_of(&port["containerPort"], "containerPort")
        };
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{what}: {probe}");
            assert_eq!(
                port_named(&get["port"]),
                i64::from(config.http.listen.port()),
                "{what}: {probe} port"
            );
        }

        // SIGTERM is followed by SIGKILL only after shutdown.timeout.
        let grace = int_of(
            &pod["terminationGracePeriodSeconds"],
            "terminationGracePeriodSeconds",
        );
        assert!(
            Duration::from_secs(grace as u64) > config.shutdown.timeout,
            "{what}: terminationGracePeriodSeconds {grace} must exceed shutdown.timeout {:?}",
            config.shutdown.timeout
        );

        // Non-root, read-only, no capabilities, bounded resources.
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{what}: runAsNonRoot"
        );
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{what}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{what}"
        );
        assert!(
            vec_of(&sc["capabilities"]["drop"], "capabilities.drop")
                .iter()
                .any(|c| c.as_str() == Some("ALL")),
            "{what}: capabilities must drop ALL"
        );
        for section in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    !c["resources"][section][resource].is_badvalue(),
                    "{what}: resources.{section}.{resource} missing"
                );
            }
        }
    }
    assert_eq!(deployments, 1, "expected one Deployment");
}

#[test]
fn kubernetes_service_and_disruption_budget_select_the_pods() {
    let docs = kubernetes_docs();
    let pod_labels: Vec<&Yaml> = docs
        .iter()
        .filter(|(_, d)| matches!(kind_of(d), "Deployment" | "StatefulSet"))
        .map(|(_, d)| &d["spec"]["template"]["metadata"]["labels"])
        .collect();
    let mut services = 0;
    let mut budgets = 0;
    for (path, doc) in &docs {
        let what = format!("{} {} {}", rel(path), kind_of(doc), name_of(doc));
        match kind_of(doc) {
            "Service" => {
                services += 1;
                let annotations = &doc["metadata"]["annotations"];
                assert_eq!(
                    annotations["prometheus.io/scrape"].as_str(),
                    Some("true"),
                    "{what}"
                );
                assert_eq!(
                    annotations["prometheus.io/port"].as_str(),
                    Some(HTTP_PORT.to_string().as_str()),
                    "{what}"
                );
                assert_eq!(
                    annotations["prometheus.io/path"].as_str(),
                    Some("/metrics"),
                    "{what}"
                );
                assert!(
                    vec_of(&doc["spec"]["ports"], "ports")
                        .iter()
                        .any(|p| p["port"].as_i64() == Some(i64::from(HTTP_PORT))),
                    "{what}: no port {HTTP_PORT}"
                );
                assert!(
                    pod_labels
                        .iter()
                        .any(|l| selects(&doc["spec"]["selector"], l)),
                    "{what}: selects no pods"
                );
            }
            "PodDisruptionBudget" => {
                budgets += 1;
                assert_eq!(
                    int_of(&doc["spec"]["maxUnavailable"], "maxUnavailable"),
                    1,
                    "{what}"
                );
                assert!(
                    pod_labels
                        .iter()
                        .any(|l| selects(&doc["spec"]["selector"]["matchLabels"], l)),
                    "{what}: selects no pods"
                );
            }
            _ => {}
        }
    }
    assert!(services >= 1, "no Service");
    assert!(budgets >= 1, "no PodDisruptionBudget");
}

/// `kubectl kustomize` renders each kustomization.
#[test]
fn kustomizations_render() {
    let dirs: Vec<PathBuf> = files_under(&deploy().join("kubernetes"), &["yaml"])
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"))
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    assert!(!dirs.is_empty(), "no kustomization.yaml");
    let Some(kubectl) = tools::find("kubectl", "LOGINGEST_KUBECTL_BIN") else {
        tools::skip(
            "kustomizations render",
            "kubectl not found (scripts/install-stack.sh puts it in .stack/bin)",
        );
        return;
    };
    for dir in dirs {
        let out = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", kubectl.display()));
        assert!(
            out.status.success(),
            "kubectl kustomize {} failed:\n{}",
            rel(&dir),
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = YamlLoader::load_from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(docs.len() >= 3, "{}: rendered {docs:?}", rel(&dir));
    }
}

#[test]
fn compose_stack_is_local_only_and_matches_its_config() {
    let path = deploy().join("docker-compose.yml");
    let docs = load_yaml(&path);
    assert_eq!(docs.len(), 1, "docker-compose.yml: one document");
    let services = docs[0]["services"]
        .as_hash()
        .expect("docker-compose.yml: services");
    let names: Vec<&str> = services.keys().map(|k| str_of(k, "service")).collect();
    for wanted in ["etcd", "kafka", "elasticsearch", "kibana", "logingest"] {
        assert!(names.contains(&wanted), "compose: no service {wanted}");
    }
    for (name, service) in services {
        let name = str_of(name, "service");
        if let Some(ports) = service["ports"].as_vec() {
            for port in ports {
                let port = str_of(port, "port");
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "compose {name}: port {port} must be published on 127.0.0.1 only"
                );
            }
        }
        if let Some(image) = service["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
            assert!(
                !tag.is_empty() && !tag.contains('/') && tag != "latest",
                "compose {name}: image {image} must have a pinned tag"
            );
        }
    }
    let es = &docs[0]["services"]["elasticsearch"];
    assert!(
        str_of(&es["image"], "image").contains(":8."),
        "Elasticsearch 8.x"
    );

    let li = &docs[0]["services"]["logingest"];
    let context = deploy().join(str_of(&li["build"]["context"], "build.context"));
    let dockerfile = context.join(str_of(&li["build"]["dockerfile"], "build.dockerfile"));
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        deploy().join("Dockerfile").canonicalize().unwrap(),
        "compose builds deploy/Dockerfile"
    );
    let mounts: Vec<&str> = vec_of(&li["volumes"], "volumes")
        .iter()
        .map(|v| str_of(v, "volume"))
        .collect();
    let config_mount = mounts
        .iter()
        .find(|m| m.split(':').nth(1) == Some(CONFIG_PATH))
        .unwrap_or_else(|| panic!("compose logingest: nothing mounted at {CONFIG_PATH}"));
    let source = deploy().join(config_mount.split(':').next().unwrap());
    assert_eq!(
        source.canonicalize().unwrap(),
        deploy().join("compose.toml").canonicalize().unwrap()
    );
    let config = check_config(&source, &[], "deploy/compose.toml");
    assert_listens_outside(&config, "deploy/compose.toml");
    let published = vec_of(&li["ports"], "ports")
        .iter()
        .map(|p| str_of(p, "port"))
        .any(|p| p.ends_with(&format!(":{HTTP_PORT}")));
    assert!(
        published,
        "compose logingest: port {HTTP_PORT} not published"
    );
    let grace = seconds(
        str_of(&li["stop_grace_period"], "stop_grace_period"),
        "stop_grace_period",
    );
    assert!(
        grace > config.shutdown.timeout,
        "compose: stop_grace_period {grace:?} must exceed shutdown.timeout {:?}",
        config.shutdown.timeout
    );
}

/// `Key=Value` lines of a unit file, by key, in order.
fn unit_entries(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut entries: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("unit line without '=': {line}"));
        entries
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    entries
}

/// `systemd-analyze` and its systemd major version, if it exists.
fn systemd_analyze() -> Option<(PathBuf, u32)> {
    let path = tools::find("systemd-analyze", "LOGINGEST_SYSTEMD_ANALYZE_BIN")?;
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{} --version failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no version in `systemd-analyze --version`: {text}"));
    Some((path, version))
}

#[test]
fn systemd_unit_is_sandboxed_and_outlasts_the_shutdown() {
    let unit_path = deploy().join("systemd/logingest.service");
    let text = read(&unit_path);
    let entries = unit_entries(&text);
    let one = |key: &str| -> &str {
        match entries.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("logingest.service: {key} set {other:?}, want once"),
        }
    };
    assert_eq!(
        one("ExecStart"),
        format!("/usr/local/bin/logingest run --config {CONFIG_PATH}")
    );
    for (key, value) in [
        ("Type", "exec"),
        ("DynamicUser", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        ("EnvironmentFile", "-/etc/default/logingest"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "logingest.service: {key}");
    }
    assert!(
        entries["SystemCallFilter"].contains(&"@system-service".to_string()),
        "logingest.service: SystemCallFilter=@system-service"
    );
    seconds(one("RestartSec"), "RestartSec");

    let config_path = deploy().join("systemd/logingest.toml");
    let config = check_config(&config_path, &[], "deploy/systemd/logingest.toml");
    let stop = seconds(one("TimeoutStopSec"), "TimeoutStopSec");
    assert!(
        stop > config.shutdown.timeout,
        "TimeoutStopSec {stop:?} must exceed shutdown.timeout {:?}",
        config.shutdown.timeout
    );

    let Some((analyze, version)) = systemd_analyze() else {
        tools::skip(
            "systemd-analyze verify and security",
            "systemd-analyze not found (Debian package systemd; scripts/install-stack.sh installs it)",
        );
        return;
    };
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("logingest.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/logingest", env!("CARGO_BIN_EXE_logingest")),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys and bad values are only warnings naming the file.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("logingest.service"))
        .collect();
    assert!(warnings.is_empty(), "systemd-analyze verify: {warnings:#?}");

    if version < 252 {
        tools::skip(
            "systemd-analyze security (exposure)",
            &format!("systemd {version} has no offline `security` (252 or later has)"),
        );
        return;
    }
    // Exposure 2.0 ("OK") at most; the threshold is in tenths.
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze security: exposure above 2.0:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A Dockerfile as (stage index, INSTRUCTION, arguments), continuation
/// lines joined and comments dropped.
fn dockerfile_instructions(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut stage = 0;
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (instr, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let instr = instr.to_ascii_uppercase();
        if instr == "FROM" {
            stage += 1;
        }
        out.push((stage, instr, args.trim().to_string()));
    }
    out
}

/// Whether a literal .dockerignore pattern excludes `path` (relative to the
/// context).
fn ignored(patterns: &[String], path: &str) -> bool {
    patterns.iter().any(|p| {
        let p = p.trim_start_matches('/').trim_end_matches('/');
        !p.contains(['*', '?', '[', '!']) && (path == p || path.starts_with(&format!("{p}/")))
    })
}

#[test]
fn dockerfile_builds_a_non_root_two_stage_image() {
    let text = read(&deploy().join("Dockerfile"));
    let instructions = dockerfile_instructions(&text);
    let all = |instr: &str, stage: usize| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(s, i, _)| *s == stage && i == instr)
            .map(|(_, _, a)| a.as_str())
            .collect()
    };
    let from: Vec<&str> = instructions
        .iter()
        .filter(|(_, i, _)| i == "FROM")
        .map(|(_, _, a)| a.as_str())
        .collect();
    assert_eq!(
        from,
        ["rust:1.95-bookworm AS builder", "debian:bookworm-slim"],
        "two stages"
    );

    let build = all("RUN", 1).join("\n");
    for wanted in [
        "protobuf-compiler",
        "libssl-dev",
        "pkg-config",
        "cargo build --release --locked",
    ] {
        assert!(build.contains(wanted), "builder stage: no {wanted:?}");
    }

    // Runtime packages: exactly ca-certificates and libssl3.
    let runtime = all("RUN", 2).join(" && ");
    let install = runtime
        .split("&&")
        .find(|c| c.contains("apt-get install"))
        .expect("runtime stage installs packages");
    let mut packages: Vec<&str> = install
        .split_whitespace()
        .skip_while(|w| *w != "install")
        .skip(1)
        .filter(|w| !w.starts_with('-'))
        .collect();
    packages.sort_unstable();
    assert_eq!(packages, ["ca-certificates", "libssl3"], "runtime packages");

    let users = all("USER", 2);
    let user = users.last().expect("runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0" && !uid.is_empty(),
        "USER {user} must not be root"
    );
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u > 0),
        "USER {user}: numeric, so that runAsNonRoot can check it"
    );
    assert_eq!(all("EXPOSE", 2), [HTTP_PORT.to_string()]);
    assert_eq!(all("STOPSIGNAL", 2), ["SIGTERM"]);
    let json = |instr: &str| -> Vec<String> {
        let args = all(instr, 2);
        assert_eq!(args.len(), 1, "one {instr}");
        serde_json::from_str(args[0])
            .unwrap_or_else(|e| panic!("{instr} must be a JSON array: {e}"))
    };
    assert_eq!(json("ENTRYPOINT"), ["logingest"]);
    assert_eq!(json("CMD"), ["run", "--config", CONFIG_PATH]);

    // Copies: the binary from the builder, the config from the context.
    let copies = all("COPY", 2);
    assert!(
        copies
            .iter()
            .any(|c| c.starts_with("--from=builder") && c.ends_with(" /usr/local/bin/logingest")),
        "binary copied to /usr/local/bin/logingest: {copies:?}"
    );
    let ignore = read(&deploy().join("Dockerfile.dockerignore"));
    let patterns: Vec<String> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for excluded in ["target", ".stack"] {
        assert!(ignored(&patterns, excluded), "dockerignore: {excluded}");
    }
    let mut context_files = vec!["Cargo.toml", "Cargo.lock", "src/main.rs"];
    let config_copy = copies
        .iter()
        .find(|c| c.ends_with(&format!(" {CONFIG_PATH}")))
        .unwrap_or_else(|| panic!("no COPY to {CONFIG_PATH}: {copies:?}"));
    let source = config_copy.split_whitespace().next().unwrap();
    context_files.push(source);
    for file in context_files {
        assert!(root().join(file).exists(), "{file} is not in the context");
        assert!(
            !ignored(&patterns, file),
            "{file} is excluded by Dockerfile.dockerignore"
        );
    }
    let config = check_config(&root().join(source), &[], source);
    assert_listens_outside(&config, source);
}
