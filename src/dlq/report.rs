//! What a replay tells its user: the fate of each letter, the running
//! tally behind the progress line (stderr) and the summary (stdout). Pure
//! text, tested alone.

use std::fmt::Write as _;

use super::letter::{Contents, Letter, LetterAt};

/// Letters listed by name per kind in the summary; the rest are counted.
pub const LISTED: usize = 50;

/// What became of one letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Stored again (or produced again; in a dry run: would be).
    Replayed,
    /// Elasticsearch (or, with `--to-topic`, the broker) refused it again:
    /// it stays, and the recorded position does not pass it.
    RefusedAgain(String),
    /// It can never be replayed (original gone, malformed letter): passed
    /// for good.
    NotReplayable(String),
    /// A letter of another topic in a shared dead-letter topic: passed.
    OtherTopic,
}

impl Fate {
    /// Whether the recorded position may move past the letter.
    pub fn is_final(&self) -> bool {
        !matches!(self, Fate::RefusedAgain(_))
    }
}

/// One letter named in the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// The original record's `_id`, when known.
    pub id: Option<String>,
    /// Where the letter is.
    pub at: String,
    /// Why.
    pub reason: String,
}

/// The running count of a replay.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Letters of the topic read (malformed ones included).
    pub read: u64,
    /// Letters replayed.
    pub replayed: u64,
    /// Letters refused again.
    pub refused_again: u64,
    /// Letters that cannot be replayed.
    pub not_replayable: u64,
    /// Letters of other topics skipped.
    pub other_topics: u64,
    /// Bytes of the records replayed.
    pub replayed_bytes: u64,
    refused: Vec<Detail>,
    unreplayable: Vec<Detail>,
}

impl Tally {
    /// Counts one letter's fate.
    pub fn record(&mut self, at: &LetterAt, id: Option<String>, size: u64, fate: &Fate) {
        if *fate != Fate::OtherTopic {
            self.read += 1;
        }
        let detail = |reason: &str| Detail {
            id,
            at: at.to_string(),
            reason: one_line(reason),
        };
        match fate {
            Fate::Replayed => {
                self.replayed += 1;
                self.replayed_bytes += size;
            }
            Fate::RefusedAgain(reason) => {
                self.refused_again += 1;
                if self.refused.len() < LISTED {
                    self.refused.push(detail(reason));
                }
            }
            Fate::NotReplayable(reason) => {
                self.not_replayable += 1;
                if self.unreplayable.len() < LISTED {
                    self.unreplayable.push(detail(reason));
                }
            }
            Fate::OtherTopic => self.other_topics += 1,
        }
    }

    /// The progress line; `waiting`: letters sent and not answered yet.
    pub fn progress_line(&self, topic: &str, dry_run: bool, waiting: usize) -> String {
        let mut line = format!(
            "dlq replay {topic}: {} read, {} {}, {} refused again, {} not replayable",
            self.read,
            self.replayed,
            if dry_run {
                "would be replayed"
            } else {
                "replayed"
            },
            self.refused_again,
            self.not_replayable
        );
        if waiting > 0 {
            let _ = write!(line, ", {waiting} waiting for an answer");
        }
        line
    }

    /// The summary's counting line.
    pub fn summary_line(&self, topic: &str, from: &str, dry_run: bool) -> String {
        let mut line = format!(
            "{}dlq replay of {topic} from {from}: {} read, {} {}, {} refused again, {} not replayable",
            if dry_run { "dry run: " } else { "" },
            self.read,
            self.replayed,
            if dry_run { "would be replayed" } else { "replayed" },
            self.refused_again,
            self.not_replayable
        );
        if self.other_topics > 0 {
            let _ = write!(
                line,
                ", {} letters of other topics skipped",
                self.other_topics
            );
        }
        if dry_run {
            line.push_str("; nothing was written or committed");
        }
        line
    }

    /// One line per letter refused again or not replayable (up to
    /// [`LISTED`] of each, then a count of the rest).
    pub fn detail_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut list = |what: &str, details: &[Detail], total: u64| {
            for d in details {
                lines.push(match &d.id {
                    Some(id) => format!("{what}: {id} ({}): {}", d.at, d.reason),
                    None => format!("{what}: {}: {}", d.at, d.reason),
                });
            }
            let rest = total.saturating_sub(details.len() as u64);
            if rest > 0 {
                lines.push(format!("{what}: ... and {rest} more"));
            }
        };
        list("refused again", &self.refused, self.refused_again);
        list("not replayable", &self.unreplayable, self.not_replayable);
        lines
    }
}

/// The dry-run line of a letter that would be replayed.
pub fn dry_run_line(topic: &str, letter: &Letter, size: u64) -> String {
    let form = match letter.contents {
        Contents::Full(_) => "full",
        Contents::Reduced { .. } => "reduced (original read from the topic)",
    };
    format!(
        "would replay {} ({}): {}, {form}, reason: {}",
        letter.document_id(topic),
        letter.at,
        human_size(size),
        if letter.reason.is_empty() {
            "(none given)".to_string()
        } else {
            one_line(&letter.reason)
        }
    )
}

/// `512 B`, `1.5 KiB`, `3.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A reason on one line, at most 300 characters.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::letter::Payload;
    use std::sync::Arc;

    fn at(offset: i64) -> LetterAt {
        LetterAt::Topic {
            topic: Arc::from("app.dlq"),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn tally_counts_and_lists() {
        let mut t = Tally::default();
        t.record(&at(0), Some("app-0-5".into()), 10, &Fate::Replayed);
        t.record(
            &at(1),
            Some("app-0-6".into()),
            3,
            &Fate::RefusedAgain("400 mapper_parsing_exception:\nbad".into()),
        );
        t.record(&at(2), None, 0, &Fate::NotReplayable("malformed".into()));
        t.record(&at(3), None, 0, &Fate::OtherTopic);
        assert_eq!(
            (
                t.read,
                t.replayed,
                t.refused_again,
                t.not_replayable,
                t.other_topics
            ),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(t.replayed_bytes, 10);
        assert_eq!(
            t.summary_line("app", "app.dlq", false),
            "dlq replay of app from app.dlq: 3 read, 1 replayed, 1 refused again, 1 not replayable, 1 letters of other topics skipped"
        );
        assert_eq!(
            t.detail_lines(),
            [
                "refused again: app-0-6 (app.dlq/0/1): 400 mapper_parsing_exception: bad",
                "not replayable: app.dlq/0/2: malformed"
            ]
        );
        assert!(t
            .summary_line("app", "app.dlq", true)
            .ends_with("nothing was written or committed"));
        assert!(t.progress_line("app", false, 0).contains("1 replayed"));
        assert!(t
            .progress_line("app", false, 7)
            .ends_with(", 7 waiting for an answer"));
        assert!(!Fate::RefusedAgain(String::new()).is_final());
        assert!(Fate::NotReplayable(String::new()).is_final());
    }

    #[test]
    fn long_lists_are_cut() {
        let mut t = Tally::default();
        for i in 0..(LISTED as i64 + 3) {
            t.record(&at(i), None, 0, &Fate::RefusedAgain("x".into()));
        }
        let lines = t.detail_lines();
        assert_eq!(lines.len(), LISTED + 1);
        assert_eq!(lines[LISTED], "refused again: ... and 3 more");
    }

    #[test]
    fn dry_run_lines_and_sizes() {
        let letter = Letter {
            at: at(4),
            partition: 1,
            offset: 9,
            reason: "400 x".into(),
            contents: Contents::Full(Payload::default()),
        };
        assert_eq!(
            dry_run_line("app", &letter, 2048),
            "would replay app-1-9 (app.dlq/0/4): 2.0 KiB, full, reason: 400 x"
        );
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
        assert_eq!(one_line(&"é".repeat(400)).chars().count(), 303);
    }
}
