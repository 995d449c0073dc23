//! Reading one TOML value as the type a key wants, for every hand-written reader of a TOML
//! file (runbooks, simulator inventories): each reader says only where a value of the wrong
//! type is reported; the checks and their wording are shared.

use std::ops::Range;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// A key and its value, as a table holds them.
pub(crate) type Entry<'a, 'i> = (&'a Spanned<DeString<'i>>, &'a Spanned<DeValue<'i>>);

/// The entries of `table` in source order (the tree itself is sorted by key).
pub(crate) fn sorted<'a, 'i>(table: &'a DeTable<'i>) -> Vec<Entry<'a, 'i>> {
    let mut entries: Vec<Entry<'a, 'i>> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// How a value's type is named in messages.
pub(crate) fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Typed reads of TOML values; an implementor reports a value of the wrong type.
pub(crate) trait TypedValues {
    /// `what` (e.g. "`seed`") at `span` is `found` where `expected` was wanted.
    fn report_wrong_type(
        &mut self,
        span: Range<usize>,
        what: &str,
        expected: &str,
        found: &'static str,
        help: Option<&str>,
    );

    fn wrong_type(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
        expected: &str,
        help: Option<&str>,
    ) {
        let what = format!("`{}`", k.get_ref());
        self.push_wrong_type(v.span(), &what, expected, v.get_ref(), help);
    }

    fn push_wrong_type(
        &mut self,
        span: Range<usize>,
        what: &str,
        expected: &str,
        found: &DeValue<'_>,
        help: Option<&str>,
    ) {
        self.report_wrong_type(span, what, expected, type_name(found), help);
    }

    fn table<'a, 'i>(
        &mut self,
        k: &Spanned<DeString<'i>>,
        v: &'a Spanned<DeValue<'i>>,
    ) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(k, v, "a table", None);
                None
            }
        }
    }

    fn string(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Spanned<String>> {
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            _ => {
                self.wrong_type(k, v, "a string", None);
                None
            }
        }
    }

    fn boolean(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Spanned<bool>> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            DeValue::String(s) if matches!(s.as_ref(), "true" | "false") => {
                let help = format!("write {s} without quotes");
                self.wrong_type(k, v, "a boolean", Some(&help));
                None
            }
            _ => {
                self.wrong_type(k, v, "a boolean (true or false)", None);
                None
            }
        }
    }

    /// A duration is a string: a bare number gets a hint to add one of `units` to it,
    /// anything else the `examples` of the file's own kind.
    fn duration_in(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
        units: &[&str],
        examples: &str,
    ) -> Option<Spanned<String>> {
        match v.get_ref() {
            DeValue::String(_) => self.string(k, v),
            DeValue::Integer(i) => {
                let n = i.as_str();
                let with: Vec<String> = units.iter().map(|u| format!("\"{n}{u}\"")).collect();
                let help = format!(
                    "durations are strings with a unit, e.g. {}",
                    with.join(" or ")
                );
                self.wrong_type(k, v, "a duration string", Some(&help));
                None
            }
            _ => {
                let help = format!("durations are strings with a unit, e.g. {examples}");
                self.wrong_type(k, v, "a duration string", Some(&help));
                None
            }
        }
    }

    fn string_list(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Spanned<Vec<Spanned<String>>>> {
        let items = match v.get_ref() {
            DeValue::Array(items) => items,
            DeValue::String(s) => {
                let help = format!("write a list: {} = [\"{s}\"]", k.get_ref());
                self.wrong_type(k, v, "an array of strings", Some(&help));
                return None;
            }
            _ => {
                self.wrong_type(k, v, "an array of strings", None);
                return None;
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => self.push_wrong_type(
                    item.span(),
                    &format!("an item of `{}`", k.get_ref()),
                    "a string",
                    other,
                    None,
                ),
            }
        }
        Some(Spanned::new(v.span(), out))
    }
}
