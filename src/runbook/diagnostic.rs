//! Located runbook diagnostics: what went wrong, where, and how to fix it. Rendered with miette
//! for people and as JSON for editors and CI. One concept in one file (a little over 500
//! lines with its tests): the diagnostic, its miette adapters and its two renderings.

use super::lines::{IndexedSource, LineIndex};
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;
use std::fmt;
use std::io::IsTerminal;
use std::ops::Range;

/// How bad a diagnostic is. Warnings fail validation only under `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a runbook, located by a byte span of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable identifier, e.g. `runbook::unknown-key`. Documented in runbooks/README.md.
    pub code: &'static str,
    pub message: String,
    /// Byte range in the source; `None` when the problem is not in the text (unreadable file).
    pub span: Option<Range<usize>>,
    /// Text under the primary span.
    pub label: Option<String>,
    pub help: Option<String>,
    /// Further spans that explain the primary one ("first defined here").
    pub secondary: Vec<(Range<usize>, String)>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            span: Some(span),
            label: None,
            help: None,
            secondary: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, span, message)
        }
    }

    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    #[must_use]
    pub fn with_secondary(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span.clone()?;
        let primary = LabeledSpan::new_primary_with_span(self.label.clone(), span);
        let rest = self
            .secondary
            .iter()
            .map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), s.clone()));
        Some(Box::new(std::iter::once(primary).chain(rest)))
    }
}

/// A runbook that did not load: every diagnostic found (errors and warnings), with the
/// source they point into.
#[derive(Debug, Clone)]
pub struct Failure {
    /// File name as given (used in `file:line:col`).
    pub name: String,
    pub source: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// All diagnostics rendered for a terminal (see [`render`]).
    pub fn render(&self) -> String {
        render(&self.name, &self.source, &self.diagnostics)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{}: invalid runbook ({n} error{plural})", self.name)?;
        if let Some(first) = self.errors().next() {
            write!(f, ": {first}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

impl miette::Diagnostic for Failure {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("runbook::invalid"))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics
                .iter()
                .map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}

/// A diagnostic paired with its named source, for standalone rendering. Labels far from the
/// primary one become separate notes: miette joins all labels of a diagnostic into one snippet,
/// which would print every line between two steps written 200 lines apart.
struct Located<'a> {
    diagnostic: &'a Diagnostic,
    source: &'a NamedSource<IndexedSource>,
    labels: Vec<LabeledSpan>,
    notes: Vec<Note<'a>>,
}

/// A label to draw: span, text, whether it is the primary one.
type Mark = (Range<usize>, Option<String>, bool);

/// Labels closer than this many lines are shown in one snippet.
const SNIPPET_GAP: usize = 4;

impl<'a> Located<'a> {
    fn new(
        diagnostic: &'a Diagnostic,
        source: &'a NamedSource<IndexedSource>,
        index: &LineIndex<'_>,
    ) -> Self {
        let Some(primary) = &diagnostic.span else {
            return Self {
                diagnostic,
                source,
                labels: Vec::new(),
                notes: Vec::new(),
            };
        };
        let line = |offset: usize| index.line_col(offset).0;
        let mut all: Vec<Mark> = vec![(primary.clone(), diagnostic.label.clone(), true)];
        all.extend(
            diagnostic
                .secondary
                .iter()
                .map(|(s, l)| (s.clone(), Some(l.clone()), false)),
        );
        all.sort_by_key(|(s, _, _)| s.start);
        // Split into clusters of nearby labels, in source order.
        let mut clusters: Vec<Vec<Mark>> = Vec::new();
        for item in all {
            let near = clusters
                .last()
                .and_then(|c| c.last())
                .is_some_and(|(prev, _, _)| {
                    line(item.0.start).saturating_sub(line(prev.end)) <= SNIPPET_GAP
                });
            match clusters.last_mut() {
                Some(cluster) if near => cluster.push(item),
                _ => clusters.push(vec![item]),
            }
        }
        let to_labels = |cluster: Vec<Mark>| -> Vec<LabeledSpan> {
            cluster
                .into_iter()
                .map(|(span, label, primary)| {
                    if primary {
                        LabeledSpan::new_primary_with_span(label, span)
                    } else {
                        LabeledSpan::new_with_span(label, span)
                    }
                })
                .collect()
        };
        let mut labels = Vec::new();
        let mut notes = Vec::new();
        for cluster in clusters {
            if cluster.iter().any(|(_, _, primary)| *primary) {
                labels = to_labels(cluster);
            } else {
                let message = cluster
                    .iter()
                    .filter_map(|(_, l, _)| l.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let spans = cluster
                    .into_iter()
                    .map(|(span, _, _)| LabeledSpan::new_with_span(None, span))
                    .collect();
                notes.push(Note {
                    source,
                    message,
                    labels: spans,
                });
            }
        }
        Self {
            diagnostic,
            source,
            labels,
            notes,
        }
    }
}

impl fmt::Debug for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.diagnostic, f)
    }
}

impl std::error::Error for Located<'_> {}

impl miette::Diagnostic for Located<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        miette::Diagnostic::code(self.diagnostic)
    }
    fn severity(&self) -> Option<miette::Severity> {
        miette::Diagnostic::severity(self.diagnostic)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        miette::Diagnostic::help(self.diagnostic)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().cloned()))
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.diagnostic
            .span
            .as_ref()
            .map(|_| self.source as &dyn miette::SourceCode)
    }
}

/// A far-away secondary label, shown as its own snippet after the diagnostic.
#[derive(Debug)]
struct Note<'a> {
    source: &'a NamedSource<IndexedSource>,
    message: String,
    labels: Vec<LabeledSpan>,
}

impl fmt::Display for Note<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Note<'_> {}

impl miette::Diagnostic for Note<'_> {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.source as &dyn miette::SourceCode)
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }
}

/// Whether diagnostics may use colour: a terminal on stderr, no `NO_COLOR`, not in test mode.
fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none()
        && std::env::var_os("POWERBOOK_TEST_MODE").is_none_or(|v| v != "1")
        && std::io::stderr().is_terminal()
}

/// At most this many diagnostics per file are rendered for people; `--output json` has all.
pub const RENDER_LIMIT: usize = 50;

/// Renders diagnostics (in order) with the source line, a label under the span, and
/// `name:line:col`. Without colour the text is deterministic, which the snapshots rely on.
/// Past [`RENDER_LIMIT`] the errors are kept before the warnings, and a last line counts
/// the rest.
pub fn render(name: &str, source: &str, diagnostics: &[Diagnostic]) -> String {
    let theme = if colour_allowed() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_links(false)
        .with_width(100);
    let index = LineIndex::new(source);
    let named = NamedSource::new(name, IndexedSource::new(source.to_owned()));
    let mut out = String::new();
    for diagnostic in shown(diagnostics) {
        let located = Located::new(diagnostic, &named, &index);
        let notes = located.notes.iter().map(|n| n as &dyn miette::Diagnostic);
        let rendered = std::iter::once(&located as &dyn miette::Diagnostic)
            .chain(notes)
            .try_for_each(|d| handler.render_report(&mut out, d));
        if rendered.is_err() {
            // The renderer refused (it should not): fall back to a plain line.
            out.push_str(&plain_line(name, &index, diagnostic));
            out.push('\n');
        }
    }
    if let Some(hidden) = diagnostics
        .len()
        .checked_sub(RENDER_LIMIT)
        .filter(|&n| n > 0)
    {
        out.push_str(&format!(
            "… and {hidden} more (all of them in `powerbook validate --output json`)\n"
        ));
    }
    out
}

/// The diagnostics to render, in their order: all of them up to [`RENDER_LIMIT`], else the
/// first errors and then the first warnings up to it.
fn shown(diagnostics: &[Diagnostic]) -> impl Iterator<Item = &Diagnostic> {
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let error_slots = errors.min(RENDER_LIMIT);
    let warning_slots = RENDER_LIMIT - error_slots;
    let (mut errors_left, mut warnings_left) = (error_slots, warning_slots);
    diagnostics.iter().filter(move |d| {
        let left = if d.is_error() {
            &mut errors_left
        } else {
            &mut warnings_left
        };
        let keep = *left > 0;
        *left = left.saturating_sub(1);
        keep
    })
}

/// Writes text to stderr; a closed stderr is ignored rather than a panic (as `eprint!` would).
pub fn to_stderr(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// `file:line:col: severity[code]: message` on one line.
pub fn plain_line(name: &str, index: &LineIndex<'_>, d: &Diagnostic) -> String {
    let severity = match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    match &d.span {
        Some(span) => {
            let (line, col) = index.line_col(span.start);
            format!("{name}:{line}:{col}: {severity}[{}]: {}", d.code, d.message)
        }
        None => format!("{name}: {severity}[{}]: {}", d.code, d.message),
    }
}

/// The JSON shape of one diagnostic (`validate --output json`).
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl JsonDiagnostic {
    pub fn new(index: &LineIndex<'_>, d: &Diagnostic) -> Self {
        let (start, end) = match &d.span {
            Some(span) => (
                Some(index.line_col(span.start)),
                Some(index.line_col(span.end)),
            ),
            None => (None, None),
        };
        Self {
            severity: d.severity,
            code: d.code,
            message: d.message.clone(),
            line: start.map(|p| p.0),
            column: start.map(|p| p.1),
            end_line: end.map(|p| p.0),
            end_column: end.map(|p| p.1),
            label: d.label.clone(),
            help: d.help.clone(),
        }
    }
}

/// The candidate `word` is most likely a typo of: a close spelling (case and swapped letters
/// count little), or else a candidate that has it as a word (words split at `_`, `-`, space:
/// `timeout` → `task_timeout`, `web` → `web down`) or is a word of it
/// (`max_concurrency` → `concurrency`).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let close = candidates
        .iter()
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), *c))
        .filter(|(d, c)| {
            // About one edit per three characters, at least one.
            *d <= (c.chars().count().max(word.chars().count()) / 3).max(1)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    close.or_else(|| {
        let parts = |s: &str| {
            s.split(['_', '-', ' '])
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        candidates.iter().copied().find(|c| {
            let c = c.to_lowercase();
            (lower.len() >= 3 && parts(&c).contains(&lower))
                || (c.len() >= 3 && parts(&lower).contains(&c))
        })
    })
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
/// adjacent characters each cost one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_shows_errors_first_up_to_the_limit_and_counts_the_rest() {
        let source = "x\n".repeat(200);
        let mut diagnostics: Vec<Diagnostic> = (0..120)
            .map(|i| Diagnostic::warning("t::warning", 2 * i..2 * i + 1, format!("w{i}")))
            .collect();
        diagnostics.push(Diagnostic::error("t::error", 390..391, "the error"));
        let shown: Vec<&str> = shown(&diagnostics).map(|d| d.message.as_str()).collect();
        assert_eq!(shown.len(), RENDER_LIMIT);
        assert_eq!(shown.last(), Some(&"the error"));
        assert_eq!(shown[0], "w0");
        let text = render("t.toml", &source, &diagnostics);
        assert_eq!(text.matches("t::warning").count(), RENDER_LIMIT - 1);
        assert!(text.contains("the error"));
        assert!(
            text.ends_with("… and 71 more (all of them in `powerbook validate --output json`)\n")
        );
        let few = render("t.toml", &source, &diagnostics[..3]);
        assert!(!few.contains("more"), "{few}");
    }

    #[test]
    fn did_you_mean_suggests_close_words_only() {
        let keys = ["concurrency", "deadline", "requests_per_second"];
        assert_eq!(did_you_mean("concurency", keys), Some("concurrency"));
        assert_eq!(did_you_mean("Deadline", keys), Some("deadline"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(did_you_mean("on", ["ON", "OFF"]), Some("ON"));
        assert_eq!(did_you_mean("pasue", ["size", "pause"]), Some("pause"));
        assert_eq!(
            did_you_mean("timeout", ["task_timeout"]),
            Some("task_timeout")
        );
        assert_eq!(
            did_you_mean("max_concurrency", ["concurrency"]),
            Some("concurrency")
        );
        assert_eq!(
            did_you_mean("web", ["web down", "db down"]),
            Some("web down")
        );
        assert_eq!(did_you_mean("x", ["on", "off"]), None);
    }
}
