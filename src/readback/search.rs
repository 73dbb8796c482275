//! `logingest search TOPIC_OR_INDEX [QUERY...]`: documents matching a
//! query-string query, newest first.

use std::io::Write;

use super::output::Printer;
use super::query::{search_body, Bound, Order, QuerySpec, TimeBound};
use super::{resolve_target, write_line, CommonArgs, ReadbackError, Reader, PAGE_SIZE};
use crate::config::Config;

/// Arguments of `logingest search`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  logingest search nginx 'GET AND status:500' --since 15m
  logingest search nginx 'kafka.partition:1' --limit 20 -o json
  logingest search 'logs-*' error --since 2025-05-01T00:00:00Z --until 1h --fields host,message

Exit codes: 0 success (also when nothing matches), 1 other errors, 2 usage,
3 no index matches, 4 Elasticsearch refused the query, 5 Elasticsearch unreachable.")]
pub struct SearchArgs {
    /// A registered topic (its index, dated templates and data streams
    /// included, only that topic's documents), or else an index name or
    /// pattern (`logs-*`, `a,b`).
    #[arg(value_name = "TOPIC_OR_INDEX")]
    pub target: String,
    /// Query-string syntax (`GET AND status:500`, `kafka.partition:1`,
    /// `message:"timed out"`); words are ANDed; several arguments are
    /// joined by spaces (after `--` when the query starts with `-`).
    /// Without it, every document.
    #[arg(value_name = "QUERY")]
    pub query: Vec<String>,
    /// Only documents at or after this: a duration back from now (`15m`,
    /// `2h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<TimeBound>,
    /// Only documents at or before this (same forms as --since).
    #[arg(long, value_name = "DURATION|TIME")]
    pub until: Option<TimeBound>,
    /// At most this many documents.
    #[arg(long, short = 'n', default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: u64,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs `logingest search`: prints up to `--limit` documents, newest
/// first, paging with `search_after`.
pub async fn run(config: &Config, args: &SearchArgs) -> Result<(), ReadbackError> {
    let target = resolve_target(config, &args.target, args.common.index).await?;
    let printer = Printer::new(args.common.output, args.common.fields.clone());
    let spec = QuerySpec {
        query: Some(args.query.join(" ")).filter(|q| !q.trim().is_empty()),
        topic: target.topic.clone(),
        since: args.since.map(|b| Bound::Expr(b.to_es())),
        until: args.until.map(|b| Bound::Expr(b.to_es())),
        source: printer.source_filter(),
    };
    let reader = Reader::new(config, target).await?;
    let mut remaining = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut after = None;
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    while remaining > 0 {
        let size = remaining.min(PAGE_SIZE);
        let reply = reader
            .search(search_body(&spec, Order::Desc, size, after.as_deref()))
            .await?;
        if let Some(failures) = &reply.shard_failures {
            eprintln!("warning: partial results: {failures}");
        }
        for hit in &reply.hits {
            if !write_line(&mut out, &printer.line(hit))? {
                return Ok(());
            }
        }
        printed += reply.hits.len();
        remaining = remaining.saturating_sub(reply.hits.len());
        match reply.hits.last() {
            Some(last) if reply.hits.len() == size && !last.sort.is_empty() => {
                after = Some(last.sort.clone());
            }
            _ => break,
        }
    }
    let _ = out.flush();
    if printed == 0 {
        eprintln!("no documents match in {}", reader.target().pattern());
    }
    Ok(())
}
