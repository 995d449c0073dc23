//! How human output is drawn: its width, whether it is coloured, and how much of a large
//! run is listed. Every table of the human output starts from [`new_table`].

use comfy_table::{Attribute, Cell, Color, ContentArrangement, Table, presets};

/// Width when stdout is not a terminal (files, pipes, CI logs, tests): stable, and what a
/// terminal of 120 columns shows without wrapping.
pub const STABLE_WIDTH: u16 = 120;

/// Above this many rows, the rows that need no attention are counted instead of listed.
pub const FULL_LISTING_MAX: usize = 20;

/// How many rows to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Show {
    /// Every row of a small run; only the rows that need attention (failed, not started,
    /// interrupted, refused) of a larger one, the rest counted.
    #[default]
    Auto,
    /// Every row.
    All,
    /// Only the rows that need attention, however small the run.
    Problems,
}

impl Show {
    /// Whether `rows` rows are listed in full.
    pub fn lists_all(self, rows: usize) -> bool {
        match self {
            Show::All => true,
            Show::Auto => rows <= FULL_LISTING_MAX,
            Show::Problems => false,
        }
    }
}

/// How to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderOptions {
    /// Deterministic output (POWERBOOK_TEST_MODE=1): durations and clock times redacted.
    pub test_mode: bool,
    /// Columns to fit.
    pub width: u16,
    /// ANSI colours on outcomes.
    pub color: bool,
    pub show: Show,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            test_mode: false,
            width: STABLE_WIDTH,
            color: false,
            show: Show::Auto,
        }
    }
}

/// When to colour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set (and not empty) or `TERM=dumb`.
    #[default]
    Auto,
    Always,
    Never,
}

impl RenderOptions {
    /// For what goes to stdout: the terminal's width on a terminal, [`STABLE_WIDTH`]
    /// elsewhere (and in test mode).
    pub fn for_stdout(test_mode: bool, color: ColorWhen, show: Show) -> Self {
        use std::io::IsTerminal;
        let tty = !test_mode && std::io::stdout().is_terminal();
        let width = if tty {
            Table::new().width().unwrap_or(STABLE_WIDTH)
        } else {
            STABLE_WIDTH
        };
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
            || std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let color = match color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => tty && !no_color,
        };
        Self {
            test_mode,
            width: width.max(40),
            color,
            show,
        }
    }
}

/// A table of the house style, fitted to the options' width.
pub fn new_table(opts: RenderOptions) -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .force_no_tty()
        .set_width(opts.width);
    if opts.color {
        t.enforce_styling();
    }
    t
}

/// What a cell says about the run, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Quiet,
    Bad,
    Warn,
    Plain,
}

/// A cell coloured by its tone (colours only show when the table is styled).
pub fn cell(text: impl Into<String>, tone: Tone) -> Cell {
    let c = Cell::new(text.into());
    match tone {
        Tone::Good => c.fg(Color::Green),
        Tone::Quiet => c.fg(Color::DarkGrey),
        Tone::Bad => c.fg(Color::Red).add_attribute(Attribute::Bold),
        Tone::Warn => c.fg(Color::Yellow),
        Tone::Plain => c,
    }
}

/// `text` in the tone's colour, for lines outside tables.
pub fn paint(text: &str, tone: Tone, opts: RenderOptions) -> String {
    if !opts.color {
        return text.to_owned();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Quiet => "90",
        Tone::Bad => "1;31",
        Tone::Warn => "33",
        Tone::Plain => return text.to_owned(),
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// `1 VM`, `3 VMs`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Words of `text` on lines of at most `width` characters, every line after the first
/// indented by `indent` spaces (a word longer than a line stays whole).
pub fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line_len = indent;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_are_listed_whole_and_large_ones_only_when_asked() {
        assert!(Show::Auto.lists_all(FULL_LISTING_MAX));
        assert!(!Show::Auto.lists_all(FULL_LISTING_MAX + 1));
        assert!(Show::All.lists_all(10_000));
        assert!(!Show::Problems.lists_all(1));
    }

    #[test]
    fn colour_and_the_terminal_width_only_on_a_terminal_unless_asked() {
        use std::io::IsTerminal;
        let auto = RenderOptions::for_stdout(false, ColorWhen::Auto, Show::Auto);
        if !std::io::stdout().is_terminal() {
            assert!(!auto.color);
            assert_eq!(auto.width, STABLE_WIDTH);
        }
        assert!(RenderOptions::for_stdout(false, ColorWhen::Always, Show::Auto).color);
        assert!(!RenderOptions::for_stdout(false, ColorWhen::Never, Show::Auto).color);
        let test = RenderOptions::for_stdout(true, ColorWhen::Auto, Show::Auto);
        assert!(!test.color);
        assert_eq!(test.width, STABLE_WIDTH);
    }

    #[test]
    fn painting_wraps_text_in_ansi_codes_only_with_colour_on() {
        let on = RenderOptions {
            color: true,
            ..RenderOptions::default()
        };
        assert_eq!(paint("failed", Tone::Bad, on), "\x1b[1;31mfailed\x1b[0m");
        assert_eq!(
            paint("failed", Tone::Bad, RenderOptions::default()),
            "failed"
        );
    }

    #[test]
    fn wrapping_keeps_lines_within_the_width_and_indents_continuations() {
        let text = wrap("one two three four five six", 10, 2);
        assert_eq!(text, "one two\n  three\n  four\n  five six");
        assert!(text.lines().all(|l| l.chars().count() <= 10));
        assert_eq!(
            wrap("averyveryverylongword x", 5, 0),
            "averyveryverylongword\nx"
        );
    }
}
