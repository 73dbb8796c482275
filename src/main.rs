//! The `logingest` command line: `run`, `topics`, `status`, `check-config`,
//! `search`, `tail`, `dlq replay`, `transform test`, `verify`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use logingest::config::Config;
use logingest::registry::admin::RegistryAdmin;

/// Drains Kafka log topics into Elasticsearch, following a live topic
/// registry in etcd.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "LOGINGEST_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the ingestor until SIGTERM or SIGINT.
    Run {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Read and edit the topic registry in etcd.
    Topics {
        /// The TOML configuration file (etcd endpoints and prefix); without
        /// it, defaults and LOGINGEST_ETCD_ENDPOINTS apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Show the fleet: group members, partition owners, committed offsets
    /// and lag, and registered topics nobody owns (asks Kafka and etcd).
    Status {
        /// The TOML configuration file (brokers, group, etcd); without it,
        /// defaults and LOGINGEST_ETCD_ENDPOINTS / LOGINGEST_KAFKA_BROKERS
        /// apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = StatusOutput::Text)]
        output: StatusOutput,
    },
    /// Search the documents of a topic (or index) in Elasticsearch, newest
    /// first.
    Search(logingest::readback::search::SearchArgs),
    /// Print the last documents of a topic (or index), oldest first; with
    /// -f, follow new ones as they are indexed.
    Tail(logingest::readback::tail::TailArgs),
    /// Dead letters: `dlq replay TOPIC` sends them back through the normal
    /// path once their cause is fixed.
    Dlq {
        #[command(subcommand)]
        command: logingest::dlq::DlqCommand,
    },
    /// Per-topic VRL programs: `transform test` runs one on sample lines
    /// and prints the documents as they would be indexed.
    Transform {
        #[command(subcommand)]
        command: logingest::transform::cli::TransformCommand,
    },
    /// Check that every offset of a topic, up to the group's committed
    /// offset, is in Elasticsearch (or dead-lettered): missing ranges,
    /// redelivered writes. Exit 0 nothing missing, 1 missing, 2 errors.
    Verify(logingest::verify::VerifyArgs),
    /// Validate a configuration file and print it with secrets redacted.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also reach etcd, Kafka and Elasticsearch with the configured TLS
        /// and credentials; one `# service: ok|error` line each, and a
        /// failure status when any is unreachable.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusOutput {
    /// Aligned tables.
    Text,
    /// One JSON document, for scripts.
    Json,
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Register a topic (prefix form): it is ingested within a second.
    Add {
        /// The Kafka topic.
        topic: String,
        /// The Elasticsearch index (default: the topic name, lower-cased).
        #[arg(long)]
        index: Option<String>,
        /// A VRL program to shape the topic's documents (see `logingest
        /// transform test`); compiled before anything is written.
        #[arg(long, value_name = "FILE")]
        transform_file: Option<PathBuf>,
    },
    /// Remove a topic's prefix-form key: its ingestion stops.
    Rm {
        /// The Kafka topic.
        topic: String,
    },
    /// List the registered topics (both forms) and their index.
    Ls,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: not in files, journald or
    // a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(path)?,
        None => Config::from_env()?,
    })
}

async fn topics(config: Config, action: TopicsAction) -> anyhow::Result<()> {
    let mut admin = RegistryAdmin::connect(&config.etcd).await?;
    match action {
        TopicsAction::Add {
            topic,
            index,
            transform_file,
        } => {
            let program = transform_file
                .as_deref()
                .map(logingest::transform::cli::read_program)
                .transpose()?;
            let key = admin
                .add_with(&topic, index.as_deref(), program.as_deref())
                .await?;
            println!("added {topic} ({key})");
        }
        TopicsAction::Rm { topic } => {
            if admin.remove(&topic).await? {
                println!("removed {topic}");
            } else {
                anyhow::bail!("{topic} has no key under {}", config.etcd.prefix);
            }
        }
        TopicsAction::Ls => {
            let (topics, errors) = admin.list().await?;
            println!("{:<40} INDEX", "TOPIC");
            for (topic, index) in topics {
                println!("{topic:<40} {index}");
            }
            for (key, error) in errors {
                eprintln!("ignored {key}: {error}");
            }
        }
    }
    Ok(())
}

async fn status(config: Config, output: StatusOutput) -> anyhow::Result<()> {
    let fleet = logingest::fleet::FleetStatus::gather(&config).await?;
    match output {
        StatusOutput::Text => print!("{}", fleet.to_table()),
        StatusOutput::Json => println!("{}", serde_json::to_string_pretty(&fleet)?),
    }
    for warning in &fleet.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// Prints one TOML comment line per endpoint (the output stays a valid
/// config); fails when any endpoint is unreachable.
async fn check_connections(config: &Config) -> anyhow::Result<()> {
    let checks = logingest::check::check_endpoints(config).await;
    println!();
    for check in &checks {
        println!("# {check}");
    }
    let failed = checks.iter().filter(|c| !c.is_ok()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} endpoints unreachable", checks.len());
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => logingest::app::run(Config::load(&config)?).await,
        Command::Topics { config, action } => topics(load(config.as_ref())?, action).await,
        Command::Status { config, output } => status(load(config.as_ref())?, output).await,
        Command::Search(args) => {
            let config = load(args.common.config.as_ref())?;
            Ok(logingest::readback::search::run(&config, &args).await?)
        }
        Command::Tail(args) => {
            let config = load(args.common.config.as_ref())?;
            Ok(logingest::readback::tail::run(&config, &args).await?)
        }
        Command::Dlq { command } => {
            let logingest::dlq::DlqCommand::Replay(args) = &command;
            let config = load(args.config.as_ref())?;
            Ok(logingest::dlq::run(&config, &command).await?)
        }
        Command::Transform { command } => {
            let logingest::transform::cli::TransformCommand::Test(args) = &command;
            // Only --topic reads etcd; --file runs offline.
            let config = match (&args.topic, &args.config) {
                (None, None) => None,
                _ => Some(load(args.config.as_ref())?),
            };
            logingest::transform::cli::run(config.as_ref(), &command).await
        }
        Command::Verify(args) => {
            let config =
                load(args.config.as_ref()).map_err(logingest::verify::VerifyError::Failed)?;
            Ok(logingest::verify::run(&config, &args).await?)
        }
        Command::CheckConfig { config, connect } => {
            let config = Config::load(&config)?;
            print!("{}", config.to_redacted_toml());
            for missing in config.missing_secrets() {
                eprintln!("warning: {missing}; `logingest run` needs it");
            }
            if connect {
                check_connections(&config).await?;
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // search, tail and dlq replay tell their failures apart (see
            // readback and dlq).
            if let Some(e) = e.downcast_ref::<logingest::verify::VerifyError>() {
                return ExitCode::from(e.exit_code());
            }
            if let Some(e) = e.downcast_ref::<logingest::readback::ReadbackError>() {
                return ExitCode::from(e.exit_code());
            }
            e.downcast_ref::<logingest::dlq::DlqError>()
                .map_or(ExitCode::FAILURE, |e| ExitCode::from(e.exit_code()))
        }
    }
}
