//! Compile errors: VRL's diagnostics with their line and column.

use std::fmt;

use vrl::diagnostic::{Diagnostic, DiagnosticList, Formatter, Note};

use super::sandbox;

/// VRL's code for a call to a function it does not know.
const UNDEFINED_FUNCTION: usize = 105;

/// A program that does not compile.
///
/// `Display` is one line per problem, `line:column: error[Ennn]: message
/// (label)`, for a registry warning; [`CompileError::rendered`] is VRL's
/// own multi-line report with the source excerpt, without colour, for a
/// terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(&self.problems))]
pub struct CompileError {
    /// The errors, in VRL's order.
    pub problems: Vec<Problem>,
    rendered: String,
}

/// One error of a program that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// VRL's error code (`E103` is 103).
    pub code: usize,
    /// VRL's message, e.g. "unhandled fallible assignment".
    pub message: String,
    /// Where, 1-based, when VRL gives a location.
    pub line: Option<usize>,
    /// The column, 1-based, in characters.
    pub column: Option<usize>,
    /// The message of the primary label (the text under the caret).
    pub detail: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "{line}:{column}: ")?;
        }
        write!(f, "error[E{:03}]: {}", self.code, self.message)?;
        match &self.detail {
            Some(detail) if !detail.is_empty() && *detail != self.message => {
                write!(f, " ({detail})")
            }
            _ => Ok(()),
        }
    }
}

fn summary(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("; ")
}

impl CompileError {
    /// VRL's report: the source lines with the problems underlined, and
    /// notes (no ANSI colour).
    pub fn rendered(&self) -> &str {
        &self.rendered
    }

    /// An error that is not VRL's (e.g. the program is empty).
    pub(crate) fn other(message: &str) -> Self {
        Self {
            problems: vec![Problem {
                code: 0,
                message: message.to_string(),
                line: None,
                column: None,
                detail: None,
            }],
            rendered: message.to_string(),
        }
    }

    pub(crate) fn from_diagnostics(source: &str, mut diagnostics: DiagnosticList) -> Self {
        let mut problems = Vec::new();
        for diagnostic in diagnostics.iter_mut() {
            if !diagnostic.is_problem() {
                continue;
            }
            explain_sandbox(source, diagnostic);
            problems.push(problem(source, diagnostic));
        }
        let rendered = Formatter::new(source, diagnostics).to_string();
        Self {
            problems,
            rendered: rendered.trim_start_matches('\n').to_string(),
        }
    }
}

/// Adds a note to a call to a function left out of the sandbox, and the
/// reason to the message, so that "undefined function" does not read like
/// a typo.
fn explain_sandbox(source: &str, diagnostic: &mut Diagnostic) {
    if diagnostic.code != UNDEFINED_FUNCTION {
        return;
    }
    let Some(name) = primary(diagnostic).and_then(|l| source.get(l.span.range())) else {
        return;
    };
    if let Some(why) = sandbox::why_unavailable(name) {
        diagnostic.message = format!(
            "{} `{name}`: not available in logingest's sandbox, {why}",
            diagnostic.message
        );
        diagnostic.notes.insert(
            0,
            Note::Hint(format!(
                "`{name}` is left out of logingest's VRL: {why} (programs come from etcd, \
                 which many people can write)"
            )),
        );
    }
}

fn primary(diagnostic: &Diagnostic) -> Option<&vrl::diagnostic::Label> {
    diagnostic
        .labels
        .iter()
        .find(|l| l.primary)
        .or_else(|| diagnostic.labels.first())
}

fn problem(source: &str, diagnostic: &Diagnostic) -> Problem {
    let label = primary(diagnostic);
    let (line, column) = match label {
        Some(label) => {
            let (line, column) = line_column(source, label.span.start());
            (Some(line), Some(column))
        }
        None => (None, None),
    };
    Problem {
        code: diagnostic.code,
        message: diagnostic.message.clone(),
        line,
        column,
        detail: label.map(|l| l.message.clone()),
    }
}

/// 1-based line and column (in characters) of a byte offset, as VRL's
/// report shows them.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_are_one_based_in_characters() {
        let source = "a = 1\nbé = 2";
        assert_eq!(line_column(source, 0), (1, 1));
        assert_eq!(line_column(source, 4), (1, 5));
        assert_eq!(line_column(source, 6), (2, 1));
        assert_eq!(line_column(source, 9), (2, 3), "é is one column");
        assert_eq!(line_column(source, 100), (2, 7));
    }
}
