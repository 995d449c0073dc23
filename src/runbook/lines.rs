//! Where lines start in a runbook, computed once: byte offset → line and column by binary
//! search, and a miette source that reads only the lines around a span. Without it every
//! diagnostic rescans the text from the top, which makes thousands of diagnostics in a
//! multi-megabyte runbook quadratic.

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

/// Line starts of a text (lines end at `\n`).
#[derive(Debug, Clone)]
pub struct LineIndex<'s> {
    text: &'s str,
    /// Byte offset where each line starts; the first is 0.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(text: &'s str) -> Self {
        Self {
            text,
            starts: line_starts(text),
        }
    }

    /// 1-based line and column (in characters) of a byte offset. Offsets past the end or
    /// inside a character are clamped, so this never panics.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_of(offset);
        let start = self.starts.get(line).copied().unwrap_or(0).min(offset);
        let before = &self.text.as_bytes()[start..offset];
        // Characters are the bytes that do not continue a UTF-8 sequence.
        let col = before.iter().filter(|b| (**b & 0xC0) != 0x80).count() + 1;
        (line + 1, col)
    }

    /// 0-based line holding byte `offset`.
    fn line_of(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// A runbook text for miette that reads a span from a window of lines around it instead of
/// from the start of the file. Its answers are the ones miette's own `str` source gives.
#[derive(Debug)]
pub struct IndexedSource {
    text: String,
    starts: Vec<usize>,
    /// miette also breaks lines at a lone `\r`; the window is then not used.
    lone_cr: bool,
}

impl IndexedSource {
    pub fn new(text: String) -> Self {
        let starts = line_starts(&text);
        let bytes = text.as_bytes();
        let lone_cr = bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
        Self {
            text,
            starts,
            lone_cr,
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1)
    }
}

impl SourceCode for IndexedSource {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let end = span.offset().saturating_add(span.len());
        if self.lone_cr || end > self.text.len() {
            return self
                .text
                .read_span(span, context_lines_before, context_lines_after);
        }
        let first = self.line_of(span.offset());
        let last = self.line_of(end.saturating_sub(1).max(span.offset()));
        // One line more than needed before too: miette's scan treats offset 0 specially.
        let from_line = first.saturating_sub(context_lines_before.saturating_add(1));
        // Two lines more than needed, so that the scan below stops where a full scan would.
        let to_line = last.saturating_add(context_lines_after).saturating_add(2);
        let from = self.starts.get(from_line).copied().unwrap_or(0);
        let to = self.starts.get(to_line).copied().unwrap_or(self.text.len());
        let window = &self.text.as_bytes()[from..to];
        let local = SourceSpan::new((span.offset() - from).into(), span.len());
        let contents = window.read_span(&local, context_lines_before, context_lines_after)?;
        let covered = SourceSpan::new(
            (contents.span().offset() + from).into(),
            contents.span().len(),
        );
        Ok(Box::new(MietteSpanContents::new(
            contents.data(),
            covered,
            contents.line() + from_line,
            contents.column(),
            contents.line_count() + from_line,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let src = "a = 1\nbé = 2\n";
        let index = LineIndex::new(src);
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(5), (1, 6));
        assert_eq!(index.line_col(6), (2, 1));
        // `=` after a two-byte character is the fourth character of line 2.
        assert_eq!(index.line_col(6 + 4), (2, 4));
        assert_eq!(index.line_col(999), (3, 1));
        // Inside the two-byte `é`: clamped back to its start.
        assert_eq!(index.line_col(8), (2, 2));
    }

    #[test]
    fn indexed_source_reads_spans_as_the_full_text_does() {
        let text: String = (0..40)
            .map(|i| match i % 3 {
                0 => format!("line {i} = \"é\"\r\n"),
                1 => "\n".to_owned(),
                _ => format!("k{i} = [1,\n  2]\n"),
            })
            .collect();
        let indexed = IndexedSource::new(text.clone());
        let same = |a: &dyn SpanContents<'_>, b: &dyn SpanContents<'_>| {
            a.data() == b.data()
                && a.span() == b.span()
                && a.line() == b.line()
                && a.column() == b.column()
                && a.line_count() == b.line_count()
        };
        for start in (0..text.len()).step_by(7) {
            for len in [0, 1, 5, 30] {
                if start + len > text.len() {
                    continue;
                }
                for context in [0, 1, 2] {
                    let span = SourceSpan::new(start.into(), len);
                    let full = text.as_str().read_span(&span, context, context).unwrap();
                    let fast = indexed.read_span(&span, context, context).unwrap();
                    assert!(
                        same(full.as_ref(), fast.as_ref()),
                        "span {start}+{len}, context {context}"
                    );
                }
            }
        }
        let past_end = SourceSpan::new((text.len() + 1).into(), 1);
        assert!(indexed.read_span(&past_end, 1, 1).is_err());
    }
}
