//! One TOML value → its raw type, or a wrong-type error that says what was expected.

use super::Reader;
use super::typed::TypedValues;
use crate::runbook::diagnostic::Diagnostic;
use crate::runbook::raw::{RawAmount, RawNameOrId, Sp};
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeString, DeValue};

/// How a value written as an integer, or as a string, becomes a `T`.
type Constructors<T> = (fn(i64) -> T, fn(String) -> T);

impl Reader {
    pub(super) fn integer(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<i64>> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Spanned::new(v.span(), n)),
                Err(_) => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            "runbook::out-of-range",
                            v.span(),
                            format!("`{}` is too large", k.get_ref()),
                        )
                        .label("does not fit in 64 bits"),
                    );
                    None
                }
            },
            DeValue::String(s) if s.trim().parse::<i64>().is_ok() => {
                self.wrong_type(
                    k,
                    v,
                    "an integer",
                    Some(&format!("write {} without quotes", s.trim())),
                );
                None
            }
            _ => {
                self.wrong_type(k, v, "an integer", None);
                None
            }
        }
    }

    /// A duration is a string; a bare number gets a hint to add a unit.
    pub(super) fn duration(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<String>> {
        self.duration_in(k, v, &["s", "m"], "\"30s\", \"5m\", \"1h 30m\"")
    }

    pub(super) fn amount(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<RawAmount>> {
        self.integer_or_text(
            k,
            v,
            (RawAmount::Count, RawAmount::Text),
            "a count or a percentage",
            Some("write a count (3) or a percentage string (\"10%\")"),
        )
    }

    pub(super) fn name_or_id(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<RawNameOrId>> {
        self.integer_or_text(
            k,
            v,
            (RawNameOrId::Id, RawNameOrId::Name),
            "a name or a numeric id",
            None,
        )
    }

    /// An integer or a string, each made a `T` by its constructor; anything else is a
    /// wrong type.
    fn integer_or_text<T>(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
        (from_integer, from_text): Constructors<T>,
        expected: &str,
        help: Option<&str>,
    ) -> Option<Sp<T>> {
        match v.get_ref() {
            DeValue::Integer(_) => self
                .integer(k, v)
                .map(|n| Spanned::new(n.span(), from_integer(*n.get_ref()))),
            DeValue::String(s) => Some(Spanned::new(v.span(), from_text(s.to_string()))),
            _ => {
                self.wrong_type(k, v, expected, help);
                None
            }
        }
    }

    /// An array of counts or percentages (wave sizes).
    pub(super) fn amount_list(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<Vec<Sp<RawAmount>>>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                k,
                v,
                "an array of wave sizes",
                Some("e.g. sizes = [1, \"10%\", \"25%\"] (the last size repeats)"),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Integer(_) | DeValue::String(_) => {
                    if let Some(a) = self.amount(k, item) {
                        out.push(a);
                    }
                }
                other => self.push_wrong_type(
                    item.span(),
                    &format!("`{}`", k.get_ref()),
                    "a count or a percentage",
                    other,
                    Some("write a count (3) or a percentage string (\"10%\")"),
                ),
            }
        }
        Some(Spanned::new(v.span(), out))
    }
}

impl TypedValues for Reader {
    fn report_wrong_type(
        &mut self,
        span: Range<usize>,
        what: &str,
        expected: &str,
        found: &'static str,
        help: Option<&str>,
    ) {
        let mut d = Diagnostic::error(
            "runbook::wrong-type",
            span,
            format!("wrong type for {what}: expected {expected}, found {found}"),
        )
        .label(format!("expected {expected}"));
        if let Some(h) = help {
            d = d.help(h);
        }
        self.diagnostics.push(d);
    }
}
