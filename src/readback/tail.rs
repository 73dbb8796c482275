//! `logingest tail TOPIC_OR_INDEX [-n N] [-f]`: the last N documents,
//! oldest first, and with `-f` the documents indexed from then on.
//!
//! # Following: the window rule
//!
//! Elasticsearch has no "indexed after" order: a document becomes
//! searchable at the next refresh (every second by default; osmem-server
//! at once), and it may carry an `@timestamp` older than documents already
//! shown (a lagging partition, a retried `_bulk`, a producer's clock). So
//! each poll reads again a trailing window of `W` (`--window`, 30 s by
//! default) and suppresses the `_id`s already printed:
//!
//! * `lower` starts unset (every document is new while none was seen);
//!   after each poll it becomes `max(lower, min(high, now) - W)`, where
//!   `high` is the newest `@timestamp` seen. It never moves back, and it
//!   does not follow the clock while the topic is idle; `min(.., now)`
//!   keeps a document dated in the future from pushing the window ahead.
//! * Each poll searches `@timestamp >= lower`, oldest first, sorted by
//!   `[@timestamp, kafka.partition, kafka.offset]`, paging with
//!   `search_after` until a short page.
//! * A hit whose `_id` is in the seen set is skipped; any other hit is
//!   printed and added with its `@timestamp`. After the poll, entries
//!   older than the new `lower` are dropped: later polls start at or above
//!   `lower`, so they can never return those documents again. The set
//!   thus holds the documents of one window (plus any dated in the future).
//!
//! Hence every document is printed at most once, and a document that
//! becomes searchable after the start is printed exactly once if its
//! `@timestamp` is at least `lower` when the next poll runs, i.e. at most
//! `W` older than the newest `@timestamp` seen before (or than now, when
//! that is earlier). Later arrivals are not printed (`search --since`
//! finds them). Each poll costs a read of the window's documents; a large
//! `W` on a busy topic reads more.
//!
//! # Start
//!
//! With `-f`: (1) the newest document's time anchors the first window;
//! (2) the documents of that window are marked seen without printing:
//! what is searchable at this point is history; (3) the last N documents
//! are printed (oldest first) and marked seen. Whatever becomes searchable
//! after (2) and is not among the N is printed by the polls. An index
//! that does not exist yet is waited for.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::output::Printer;
use super::query::{search_body, Bound, Hit, Order, QuerySpec};
use super::{flush, resolve_target, write_line, CommonArgs, ReadbackError, Reader, PAGE_SIZE};
use crate::backoff::Backoff;
use crate::config::Config;

/// Arguments of `logingest tail`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  logingest tail nginx              # the last 10 documents
  logingest tail nginx -n 50 -f     # the last 50, then follow; Ctrl-C ends
  logingest tail nginx -f -q 'status:500' --fields host,message

With -f, a document is shown once it is searchable (after the index's
refresh interval, 1 s by default), if its @timestamp is at most --window
older than the newest shown.

Exit codes: 0 success (and Ctrl-C), 1 other errors, 2 usage, 3 no index
matches (without -f), 4 Elasticsearch refused the query, 5 Elasticsearch
unreachable.")]
pub struct TailArgs {
    /// A registered topic, or an index name or pattern.
    #[arg(value_name = "TOPIC_OR_INDEX")]
    pub target: String,
    /// How many of the last documents to print first.
    #[arg(long = "lines", short = 'n', default_value_t = 10)]
    pub lines: usize,
    /// Keep printing documents as they are indexed, until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// Only documents matching this query-string query.
    #[arg(long, short)]
    pub query: Option<String>,
    /// Time between polls of `-f` (at least 100ms).
    #[arg(long, default_value = "1s")]
    pub interval: humantime::Duration,
    /// How much older than the newest shown a late document may be and
    /// still be shown by `-f` (see the window rule).
    #[arg(long, default_value = "30s")]
    pub window: humantime::Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The state of `-f`: the window and the `_id`s already printed in it.
#[derive(Debug, Clone)]
pub struct Follow {
    window_ms: i64,
    lower: Option<i64>,
    high: Option<i64>,
    seen: HashMap<String, i64>,
}

impl Follow {
    /// A follower with window `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            lower: None,
            high: None,
            seen: HashMap::new(),
        }
    }

    /// The lower bound of the next poll (`None`: everything).
    pub fn lower(&self) -> Option<i64> {
        self.lower
    }

    /// How many `_id`s are remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Records a document; `true` when it was not seen before (print it).
    /// A document without `@timestamp` is kept until the window first
    /// moves (after which the range excludes it).
    pub fn offer(&mut self, id: &str, time_ms: Option<i64>) -> bool {
        if self.seen.contains_key(id) {
            return false;
        }
        let time = time_ms.unwrap_or(i64::MIN);
        if let Some(t) = time_ms {
            self.high = Some(self.high.map_or(t, |h| h.max(t)));
        }
        self.seen.insert(id.to_string(), time);
        true
    }

    /// Moves the window after a complete poll (see the module's rule) and
    /// forgets what fell out of it.
    pub fn advance(&mut self, now_ms: i64) {
        let Some(high) = self.high else { return };
        let candidate = high.min(now_ms).saturating_sub(self.window_ms);
        let lower = self.lower.map_or(candidate, |l| l.max(candidate));
        self.lower = Some(lower);
        self.seen.retain(|_, t| *t >= lower);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a poll does with new documents.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Print them.
    Print,
    /// Only remember them (the history at the start).
    Remember,
}

struct Tail {
    reader: Reader,
    spec: QuerySpec,
    printer: Printer,
    follow: Follow,
}

/// Outcome of printing: go on, or stdout was closed.
type Open = bool;

impl Tail {
    /// One poll: every document at or above `lower`, oldest first.
    /// Returns `false` when stdout is closed.
    async fn poll(&mut self, mode: Mode, out: &mut impl Write) -> Result<Open, ReadbackError> {
        let spec = QuerySpec {
            since: self.follow.lower().map(Bound::Millis),
            source: match mode {
                Mode::Print => self.spec.source.clone(),
                Mode::Remember => Some(vec![]),
            },
            ..self.spec.clone()
        };
        let mut after: Option<Vec<serde_json::Value>> = None;
        loop {
            let reply = match self
                .reader
                .search(search_body(&spec, Order::Asc, PAGE_SIZE, after.as_deref()))
                .await
            {
                Ok(reply) => reply,
                // Not created yet, or deleted: nothing to show now.
                Err(ReadbackError::NoIndex { .. }) => break,
                Err(e) => return Err(e),
            };
            for hit in &reply.hits {
                if self.follow.offer(&hit.id, hit.time_ms)
                    && mode == Mode::Print
                    && !write_line(out, &self.printer.line(hit))?
                {
                    return Ok(false);
                }
            }
            match reply.hits.last() {
                Some(last) if reply.hits.len() == PAGE_SIZE && !last.sort.is_empty() => {
                    after = Some(last.sort.clone());
                }
                _ => break,
            }
        }
        self.follow.advance(now_ms());
        flush(out)
    }

    /// The newest documents, newest first (`count` of them, `source` or
    /// not). `NoIndex` passes through.
    async fn newest(&self, count: usize, with_source: bool) -> Result<Vec<Hit>, ReadbackError> {
        let spec = QuerySpec {
            source: if with_source {
                self.spec.source.clone()
            } else {
                Some(vec![])
            },
            ..self.spec.clone()
        };
        let mut hits = Vec::new();
        let mut after: Option<Vec<serde_json::Value>> = None;
        while hits.len() < count {
            let size = (count - hits.len()).min(PAGE_SIZE);
            let reply = self
                .reader
                .search(search_body(&spec, Order::Desc, size, after.as_deref()))
                .await?;
            let full = reply.hits.len() == size;
            hits.extend(reply.hits);
            match hits.last() {
                Some(last) if full && !last.sort.is_empty() => after = Some(last.sort.clone()),
                _ => break,
            }
        }
        Ok(hits)
    }
}

/// Runs `logingest tail`.
pub async fn run(config: &Config, args: &TailArgs) -> Result<(), ReadbackError> {
    // Installed first, so that Ctrl-C never kills the process mid-line.
    let mut stop = Stop::install();
    let target = tokio::select! {
        target = resolve_target(config, &args.target, args.common.index) => target?,
        () = stop.wait() => return Ok(()),
    };
    let printer = Printer::new(args.common.output, args.common.fields.clone());
    let spec = QuerySpec {
        query: args.query.clone().filter(|q| !q.trim().is_empty()),
        topic: target.topic.clone(),
        since: None,
        until: None,
        source: printer.source_filter(),
    };
    let mut tail = Tail {
        reader: Reader::new(config, target).await?,
        spec,
        printer,
        follow: Follow::new(*args.window),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let keep_following = tokio::select! {
        result = tail.start(args, &mut out) => result?,
        () = stop.wait() => return Ok(()),
    };
    if !keep_following {
        return Ok(());
    }
    let interval = (*args.interval).max(Duration::from_millis(100));
    let mut backoff = Backoff::new(interval, Duration::from_secs(30));
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            () = sleep_until(next) => {}
            () = stop.wait() => return Ok(()),
        }
        let polled = tokio::select! {
            result = tail.poll(Mode::Print, &mut out) => result,
            () = stop.wait() => return Ok(()),
        };
        next = match polled {
            Ok(true) => {
                backoff.reset();
                Instant::now() + interval
            }
            Ok(false) => return Ok(()),
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                eprintln!("warning: {e}; retrying in {delay:?}");
                Instant::now() + delay
            }
            Err(e) => return Err(e),
        };
    }
}

impl Tail {
    /// Prints the last N documents; with `-f`, first marks the history
    /// seen (see the module docs). `Ok(true)`: go on following.
    async fn start(
        &mut self,
        args: &TailArgs,
        out: &mut impl Write,
    ) -> Result<Open, ReadbackError> {
        if !args.follow {
            let mut last = self.newest(args.lines, true).await?;
            last.reverse();
            for hit in &last {
                if !write_line(out, &self.printer.line(hit))? {
                    break;
                }
            }
            flush(out)?;
            return Ok(false);
        }
        // (1) The anchor.
        let newest = match self.newest(1, false).await {
            Ok(hits) => hits,
            Err(ReadbackError::NoIndex { pattern, .. }) => {
                eprintln!("note: no index matches {pattern} yet; waiting for documents");
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        if let Some(first) = newest.first() {
            let Some(anchor) = first.time_ms else {
                return Err(ReadbackError::NoTimestamp {
                    pattern: self.reader.target().pattern(),
                });
            };
            self.follow.offer(&first.id, Some(anchor));
            self.follow.advance(now_ms());
            // (2) The history of the first window.
            if !self.poll(Mode::Remember, out).await? {
                return Ok(false);
            }
        }
        // (3) The last N.
        let mut last = match self.newest(args.lines, true).await {
            Ok(hits) => hits,
            Err(ReadbackError::NoIndex { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        last.reverse();
        for hit in &last {
            self.follow.offer(&hit.id, hit.time_ms);
            if !write_line(out, &self.printer.line(hit))? {
                return Ok(false);
            }
        }
        self.follow.advance(now_ms());
        flush(out)
    }
}

async fn sleep_until(at: Instant) {
    sleep(at.saturating_duration_since(Instant::now())).await;
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the start.
struct Stop {
    #[cfg(unix)]
    signals: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Stop {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signals = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Some((int, term)),
                // Without handlers, the default actions still end the process.
                _ => None,
            };
            Self { signals }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Resolves when a stop signal arrives (cancel-safe).
    async fn wait(&mut self) {
        #[cfg(unix)]
        {
            match &mut self.signals {
                Some((int, term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                None => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: i64 = 30_000;

    fn follow() -> Follow {
        Follow::new(Duration::from_millis(W as u64))
    }

    #[test]
    fn nothing_seen_means_no_bound() {
        let mut f = follow();
        f.advance(1_000_000);
        assert_eq!(f.lower(), None);
        assert!(f.offer("a", Some(500_000)));
        assert!(!f.offer("a", Some(500_000)));
        f.advance(1_000_000);
        assert_eq!(f.lower(), Some(500_000 - W));
    }

    #[test]
    fn late_documents_within_the_window_are_shown_once() {
        let mut f = follow();
        let now = 1_000_000;
        assert!(f.offer("new", Some(now)));
        f.advance(now);
        assert_eq!(f.lower(), Some(now - W));
        // A poll re-reads the window: the known one is skipped, a late
        // one 20 s older than the newest is shown.
        assert!(!f.offer("new", Some(now)));
        assert!(f.offer("late", Some(now - 20_000)));
        f.advance(now + 1000);
        assert!(!f.offer("late", Some(now - 20_000)));
        assert_eq!(f.remembered(), 2);
    }

    #[test]
    fn the_window_only_moves_forward_and_forgets_behind_it() {
        let mut f = follow();
        f.offer("a", Some(100_000));
        f.advance(100_000);
        f.offer("b", Some(200_000));
        f.advance(200_000);
        assert_eq!(f.lower(), Some(200_000 - W));
        assert_eq!(f.remembered(), 1, "a fell out of the window");
        // The clock going back does not move it back.
        f.advance(50_000);
        assert_eq!(f.lower(), Some(200_000 - W));
        // Idle: the window stays W behind the newest document, not now.
        f.advance(10_000_000);
        assert_eq!(f.lower(), Some(200_000 - W));
    }

    #[test]
    fn a_future_timestamp_does_not_push_the_window_ahead() {
        let mut f = follow();
        let now = 1_000_000;
        f.offer("future", Some(now + 3_600_000));
        f.advance(now);
        assert_eq!(f.lower(), Some(now - W));
        assert!(f.offer("current", Some(now - 1000)));
        // Kept while it is above the bound: never printed twice.
        f.advance(now + 5000);
        assert!(!f.offer("future", Some(now + 3_600_000)));
    }

    #[test]
    fn documents_without_time_are_remembered_until_the_window_moves() {
        let mut f = follow();
        assert!(f.offer("x", None));
        f.advance(1000);
        assert!(!f.offer("x", None));
        assert_eq!(f.lower(), None);
        f.offer("t", Some(1000));
        f.advance(1000);
        assert_eq!(f.remembered(), 1);
    }

    #[test]
    fn simulated_polls_show_each_document_once() {
        // Documents (id, time, visible from poll): arrivals out of time
        // order, some late within the window, one beyond it.
        let docs: Vec<(String, i64, usize)> = (0..200)
            .map(|i| {
                let time = 1_000_000 + i * 500;
                let late = if i % 7 == 0 { 4 } else { 0 };
                (format!("d{i}"), time, (i as usize) / 10 + late)
            })
            .chain([("too-late".to_string(), 1_000_000, 30)])
            .collect();
        let mut f = follow();
        let mut printed: Vec<String> = Vec::new();
        for poll in 0..40 {
            let now = 1_000_000 + poll as i64 * 5000;
            let lower = f.lower().unwrap_or(i64::MIN);
            let mut visible: Vec<_> = docs
                .iter()
                .filter(|(_, t, from)| *from <= poll && *t >= lower)
                .collect();
            visible.sort_by_key(|(id, t, _)| (*t, id.clone()));
            for (id, t, _) in visible {
                if f.offer(id, Some(*t)) {
                    printed.push(id.clone());
                }
            }
            f.advance(now);
            assert!(f.remembered() <= 200);
        }
        let mut unique = printed.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), printed.len(), "no repeats");
        assert_eq!(printed.len(), 200, "every document within the window");
        assert!(!printed.contains(&"too-late".to_string()));
    }
}
