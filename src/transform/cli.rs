//! `logingest transform test`, and the program files of `logingest topics
//! add --transform-file`.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

use super::sample::SampleRun;
use super::Transform;
use crate::config::Config;
use crate::registry::admin::RegistryAdmin;
use crate::registry::parse_topic_value;

/// `logingest transform ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TransformCommand {
    /// Run a program on sample lines (one Kafka value per line, stdin by
    /// default) and print, per line, one JSON object: the outcome (keep,
    /// drop, failed), the target index and `_id`, and the document as it
    /// would be indexed. A program that does not compile prints VRL's
    /// diagnostic and exits non-zero.
    Test(TestArgs),
}

/// `logingest transform test`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("program").required(true).args(["topic", "file"])))]
pub struct TestArgs {
    /// Run this topic's current program, with its settings, read from etcd.
    #[arg(long)]
    pub topic: Option<String>,
    /// Run the program in this file (offline); documents are shaped as for
    /// a topic named `test` with the settings of `--settings`.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// With --file: a registry value giving the other settings (`format`,
    /// `index`, `kafka_fields`, ...), e.g. '{"format": "json"}'.
    #[arg(long, requires = "file")]
    pub settings: Option<String>,
    /// The sample lines (default: stdin).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Pretty-print each result instead of one JSON object per line.
    #[arg(long)]
    pub pretty: bool,
    /// With --topic: the TOML configuration file (etcd endpoints and
    /// prefix); without it, defaults and LOGINGEST_ETCD_ENDPOINTS apply.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// The topic name documents get with `--file`.
pub const OFFLINE_TOPIC: &str = "test";

/// Compiles a program, printing VRL's warnings, or its report (the source
/// excerpt with the problem underlined) when it does not compile.
pub fn compile_reporting(source: &str, origin: &str) -> anyhow::Result<Transform> {
    match Transform::compile(source) {
        Ok(transform) => {
            for warning in transform.warnings() {
                eprintln!("{warning}");
            }
            Ok(transform)
        }
        Err(e) => {
            eprintln!("{}", e.rendered());
            bail!("the program in {origin} does not compile: {e}")
        }
    }
}

/// Reads a program file and checks that it compiles (reporting as
/// [`compile_reporting`] does); returns its text.
pub fn read_program(path: &Path) -> anyhow::Result<String> {
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    compile_reporting(&source, &path.display().to_string())?;
    Ok(source)
}

/// Runs `logingest transform ...`; `config` is needed (for etcd) with
/// `--topic` only.
pub async fn run(config: Option<&Config>, command: &TransformCommand) -> anyhow::Result<()> {
    let TransformCommand::Test(args) = command;
    let mut sample = match (&args.topic, &args.file) {
        (Some(topic), _) => {
            let config = config.ok_or_else(|| anyhow!("--topic needs the etcd configuration"))?;
            from_registry(config, topic).await?
        }
        (None, Some(file)) => {
            let source = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let transform = compile_reporting(&source, &file.display().to_string())?;
            let value = args.settings.as_deref().unwrap_or("");
            let settings = parse_topic_value(OFFLINE_TOPIC, value.as_bytes())
                .map_err(|e| anyhow!("--settings: {e}"))?;
            SampleRun::new(OFFLINE_TOPIC.to_string(), settings, transform)
        }
        (None, None) => bail!("give --topic or --file"),
    };
    let input: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    // Bytes, not text: a Kafka value need not be UTF-8.
    for line in input.split(b'\n') {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let result = sample.run(&line, chrono::Utc::now());
        if args.pretty {
            println!("{}", serde_json::to_string_pretty(&result)?);
        } else {
            println!("{}", serde_json::to_string(&result)?);
        }
    }
    eprintln!("{}", sample.summary());
    Ok(())
}

/// The sample run of `topic`'s current program and settings.
async fn from_registry(config: &Config, topic: &str) -> anyhow::Result<SampleRun> {
    let mut admin = RegistryAdmin::connect(&config.etcd).await?;
    let key = format!("{}{topic}", config.etcd.prefix);
    let Some(value) = admin.value(topic).await? else {
        bail!("{topic} has no key {key} (collector-form topics have no program)");
    };
    let source = serde_json::from_slice::<serde_json::Value>(&value)
        .ok()
        .and_then(|v| v.get("transform")?.as_str().map(str::to_string));
    let Some(source) = source else {
        bail!("{key} has no \"transform\"");
    };
    // Compiled here first for VRL's full report; the settings parse would
    // only give its one-line summary.
    let transform = compile_reporting(&source, &key)?;
    let settings = parse_topic_value(topic, &value).map_err(|e| anyhow!("{key}: {e}"))?;
    Ok(SampleRun::new(topic.to_string(), settings, transform))
}
