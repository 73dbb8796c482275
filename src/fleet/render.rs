//! Rendering the fleet view as the aligned tables of `logingest status`.

use std::fmt::Write as _;

use super::FleetStatus;

impl FleetStatus {
    /// The plain-text report: group and members, partitions, unowned topics.
    pub fn to_table(&self) -> String {
        let unknown = if self.owners_known { "-" } else { "?" };
        let num = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "GROUP {}  STATE {}  PROTOCOL {}  MEMBERS {}",
            self.group_id,
            self.group_state.as_deref().unwrap_or("unknown"),
            self.protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("-"),
            self.members.len()
        );
        out.push('\n');
        let members: Vec<Vec<String>> = self
            .members
            .iter()
            .map(|m| {
                vec![
                    m.instance.clone(),
                    m.host.clone().unwrap_or_else(|| "-".into()),
                    m.partitions
                        .as_ref()
                        .map_or_else(|| "?".into(), |p| p.len().to_string()),
                ]
            })
            .collect();
        table(&mut out, &["INSTANCE", "HOST", "PARTITIONS"], &members);
        out.push('\n');
        let total_lag: i64 = self.partitions.iter().filter_map(|p| p.lag).sum();
        let unknown_lag = self.partitions.iter().filter(|p| p.lag.is_none()).count();
        let rows: Vec<Vec<String>> = self
            .partitions
            .iter()
            .map(|p| {
                vec![
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.owner.clone().unwrap_or_else(|| unknown.into()),
                    num(p.committed_offset),
                    num(p.high_watermark),
                    num(p.lag),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "TOPIC",
                "PARTITION",
                "OWNER",
                "COMMITTED",
                "HIGH-WATERMARK",
                "LAG",
            ],
            &rows,
        );
        let _ = write!(
            out,
            "{} partitions, total lag {total_lag}",
            self.partitions.len()
        );
        let _ = match unknown_lag {
            0 => writeln!(out),
            n => writeln!(out, " (lag unknown for {n})"),
        };
        out.push('\n');
        if !self.elasticsearch_nodes.is_empty() {
            let rows: Vec<Vec<String>> = self
                .elasticsearch_nodes
                .iter()
                .map(|n| vec![n.node.clone(), if n.up { "up" } else { "down" }.to_string()])
                .collect();
            table(&mut out, &["ELASTICSEARCH NODE", "STATE"], &rows);
            out.push('\n');
        }
        if !self.partitions.is_empty() {
            table(
                &mut out,
                &["TOPIC", "MAX-LAG", "MAX-LAG-SECONDS"],
                &self.topic_lags(),
            );
            out.push('\n');
        }
        if self.unowned_topics.is_empty() {
            out.push_str("REGISTERED TOPICS WITH NO OWNER: none\n");
        } else {
            out.push_str("REGISTERED TOPICS WITH NO OWNER:\n");
            let rows: Vec<Vec<String>> = self
                .unowned_topics
                .iter()
                .map(|u| vec![u.topic.clone(), u.reason.clone()])
                .collect();
            table(&mut out, &["TOPIC", "REASON"], &rows);
        }
        out
    }
}

impl FleetStatus {
    /// Per topic: the largest lag in messages and in seconds over its
    /// partitions (`-` when no partition's is known).
    fn topic_lags(&self) -> Vec<Vec<String>> {
        let mut topics: std::collections::BTreeMap<&str, (Option<i64>, Option<f64>)> =
            std::collections::BTreeMap::new();
        for p in &self.partitions {
            let entry = topics.entry(p.topic.as_str()).or_default();
            entry.0 = entry.0.max(p.lag);
            entry.1 = match (entry.1, p.lag_seconds) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        topics
            .into_iter()
            .map(|(topic, (messages, seconds))| {
                vec![
                    topic.to_string(),
                    messages.map_or_else(|| "-".into(), |m| m.to_string()),
                    seconds.map_or_else(|| "-".into(), |s| format!("{}", s.floor() as i64)),
                ]
            })
            .collect()
    }
}

/// Appends a left-aligned table, columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}
