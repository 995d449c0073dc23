//! Inventory text → [`raw`](super::raw) structs. Walks the parsed TOML tree by hand (as the
//! runbook reader does) so that every syntax error, unknown key, wrong type and missing name
//! is reported, each where it is written, instead of stopping at the first.

use super::Problem;
use super::raw::{RawInventory, RawSettings, RawVapp, RawVdc, RawVm, Sp, keys};
use crate::runbook::diagnostic::did_you_mean;
use crate::runbook::read::typed::{Entry, TypedValues, sorted};
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// What reading produced: the raw inventory (partial where values were wrong) and every
/// problem found. When the TOML itself does not parse only its syntax errors are reported:
/// the recovered tree is partial and would cause spurious follow-up errors.
#[derive(Debug, Default)]
pub(super) struct Read {
    pub raw: RawInventory,
    pub problems: Vec<Problem>,
    pub syntax_failed: bool,
}

pub(super) fn read(source: &str) -> Read {
    let (doc, errors) = DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        let problems = errors
            .iter()
            .map(|e| Problem {
                at: e.span().map_or(0, |s| s.start),
                message: format!("TOML syntax error: {}", e.message().trim_end()),
            })
            .collect();
        return Read {
            raw: RawInventory::default(),
            problems,
            syntax_failed: true,
        };
    }
    let mut reader = Reader::default();
    let raw = reader.inventory(doc.get_ref());
    Read {
        raw,
        problems: reader.problems,
        syntax_failed: false,
    }
}

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn inventory(&mut self, table: &DeTable<'_>) -> RawInventory {
        let mut inv = RawInventory::default();
        for (k, v) in self.entries(table, keys::INVENTORY, "at the top level") {
            match k.get_ref().as_ref() {
                "settings" => {
                    inv.settings = self
                        .table(k, v)
                        .map(|t| Spanned::new(v.span(), self.settings(t)));
                }
                "vdc" => inv.vdcs = self.tables(k, v, "[[vdc]]", Self::vdc),
                _ => {}
            }
        }
        inv
    }

    fn settings(&mut self, table: &DeTable<'_>) -> RawSettings {
        let mut s = RawSettings::default();
        for (k, v) in self.entries(table, keys::SETTINGS, "in [settings]") {
            match k.get_ref().as_ref() {
                "task_duration" => s.task_duration = self.duration(k, v),
                "task_jitter" => s.task_jitter = self.duration(k, v),
                "durations" => s.durations = self.durations(k, v),
                "seed" => s.seed = self.unsigned(k, v),
                "speed" => s.speed = self.number(k, v),
                "accepted_versions" => s.accepted_versions = self.string_list(k, v),
                "locked_code" => s.locked_code = self.string(k, v),
                "resume_as_reset" => s.resume_as_reset = self.boolean(k, v),
                "allow_paused_off" => s.allow_paused_off = self.boolean(k, v),
                "azure_deallocate_stopped" => s.azure_deallocate_stopped = self.boolean(k, v),
                "ack_sets_ack_error" => s.ack_sets_ack_error = self.boolean(k, v),
                "emit_entity" => s.emit_entity = self.boolean(k, v),
                _ => {}
            }
        }
        s
    }

    fn vdc(&mut self, span: Range<usize>, table: &DeTable<'_>) -> RawVdc {
        let mut d = RawVdc::default();
        let entries = self.entries(table, keys::VDC, "in a [[vdc]]");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "name" => d.name = self.string(k, v),
                "id" => d.id = self.unsigned(k, v),
                "hypervisor" => d.hypervisor = self.string(k, v),
                "vapp" => d.vapps = self.tables(k, v, "[[vdc.vapp]]", Self::vapp),
                _ => {}
            }
        }
        self.require_name(table, &entries, keys::VDC, span, "VDC");
        d
    }

    fn vapp(&mut self, span: Range<usize>, table: &DeTable<'_>) -> RawVapp {
        let mut a = RawVapp::default();
        let entries = self.entries(table, keys::VAPP, "in a [[vdc.vapp]]");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "name" => a.name = self.string(k, v),
                "id" => a.id = self.unsigned(k, v),
                "vm" => a.vms = self.tables(k, v, "[[vdc.vapp.vm]]", Self::vm),
                _ => {}
            }
        }
        self.require_name(table, &entries, keys::VAPP, span, "vApp");
        a
    }

    fn vm(&mut self, span: Range<usize>, table: &DeTable<'_>) -> RawVm {
        let mut m = RawVm::default();
        let entries = self.entries(table, keys::VM, "in a [[vdc.vapp.vm]]");
        for (k, v) in &entries {
            match k.get_ref().as_ref() {
                "name" => m.name = self.string(k, v),
                "id" => m.id = self.unsigned(k, v),
                "label" => m.label = self.string(k, v),
                "state" => m.state = self.string(k, v),
                "guest_tools" => m.guest_tools = self.boolean(k, v),
                "protected" => m.protected = self.boolean(k, v),
                "protected_cause" => m.protected_cause = self.string(k, v),
                "fail_rate" => m.fail_rate = self.number(k, v),
                "fail_actions" => m.fail_actions = self.string_list(k, v),
                "forbidden" => m.forbidden = self.boolean(k, v),
                "deallocated" => m.deallocated = self.boolean(k, v),
                "ips" => m.ips = self.string_list(k, v),
                _ => {}
            }
        }
        self.require_name(table, &entries, keys::VM, span, "VM");
        m
    }

    /// An array of tables (`[[vdc]]`), each read by `read` with its span.
    fn tables<'i, T>(
        &mut self,
        k: &Spanned<DeString<'i>>,
        v: &Spanned<DeValue<'i>>,
        header: &str,
        read: fn(&mut Self, Range<usize>, &DeTable<'i>) -> T,
    ) -> Vec<Sp<T>> {
        let DeValue::Array(items) = v.get_ref() else {
            let help = format!("write each one as its own {header} table");
            self.wrong_type(k, v, "an array of tables", Some(&help));
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => {
                    let value = read(self, item.span(), t);
                    out.push(Spanned::new(item.span(), value));
                }
                other => self.push_wrong_type(
                    item.span(),
                    &format!("an item of `{}`", k.get_ref()),
                    "a table",
                    other,
                    None,
                ),
            }
        }
        out
    }

    /// The table's entries in source order, minus unknown keys (reported here, with the
    /// known key they are most likely a misspelling of).
    fn entries<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        known: &[&str],
        place: &str,
    ) -> Vec<Entry<'a, 'i>> {
        let mut out = Vec::new();
        for (k, v) in sorted(table) {
            let key: &str = k.get_ref();
            if known.contains(&key) {
                out.push((k, v));
                continue;
            }
            let message = match did_you_mean(key, known.iter().copied()) {
                Some(s) => format!("unknown key `{key}` {place}; did you mean `{s}`?"),
                None => format!(
                    "unknown key `{key}` {place}; expected one of: {}",
                    known.join(", ")
                ),
            };
            self.problem(k.span(), message);
        }
        out
    }

    /// A VDC, vApp or VM needs a name; a misspelt `name` is already reported as such.
    fn require_name(
        &mut self,
        table: &DeTable<'_>,
        entries: &[Entry<'_, '_>],
        known: &[&str],
        span: Range<usize>,
        what: &str,
    ) {
        let has = entries.iter().any(|(k, _)| k.get_ref().as_ref() == "name");
        let misspelt = table.iter().any(|(k, _)| {
            let k: &str = k.get_ref();
            !known.contains(&k) && did_you_mean(k, known.iter().copied()) == Some("name")
        });
        if !has && !misspelt {
            self.problem(
                span,
                format!("this {what} has no `name`; add e.g. name = \"...\""),
            );
        }
    }

    /// A whole number of 0 or more (ids, the seed).
    fn unsigned(&mut self, k: &Spanned<DeString<'_>>, v: &Spanned<DeValue<'_>>) -> Option<Sp<u64>> {
        match v.get_ref() {
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Spanned::new(v.span(), n)),
                Err(_) if i.as_str().starts_with('-') => {
                    self.problem(v.span(), format!("`{}` must be 0 or more", k.get_ref()));
                    None
                }
                Err(_) => {
                    self.problem(
                        v.span(),
                        format!("`{}` is too large (it must fit in 64 bits)", k.get_ref()),
                    );
                    None
                }
            },
            DeValue::String(s) if s.trim().parse::<u64>().is_ok() => {
                let help = format!("write {} without quotes", s.trim());
                self.wrong_type(k, v, "an integer", Some(&help));
                None
            }
            _ => {
                self.wrong_type(k, v, "an integer", None);
                None
            }
        }
    }

    /// A number, integer or float (speed, rates).
    fn number(&mut self, k: &Spanned<DeString<'_>>, v: &Spanned<DeValue<'_>>) -> Option<Sp<f64>> {
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            DeValue::String(s) if s.trim().parse::<f64>().is_ok() => {
                let help = format!("write {} without quotes", s.trim());
                self.wrong_type(k, v, "a number", Some(&help));
                return None;
            }
            _ => {
                self.wrong_type(k, v, "a number", None);
                return None;
            }
        };
        match parsed {
            Some(n) => Some(Spanned::new(v.span(), n)),
            None => {
                self.problem(v.span(), format!("`{}` is not a number", k.get_ref()));
                None
            }
        }
    }

    /// A duration is a string; a bare number gets a hint to add a unit.
    fn duration(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<String>> {
        self.duration_in(k, v, &["ms"], "\"1500ms\" or \"2s\"")
    }

    /// `[settings.durations]`: action → duration string (the actions are checked later).
    fn durations(
        &mut self,
        k: &Spanned<DeString<'_>>,
        v: &Spanned<DeValue<'_>>,
    ) -> Option<Sp<BTreeMap<Sp<String>, Sp<String>>>> {
        let table = self.table(k, v)?;
        let mut out = BTreeMap::new();
        for (action, value) in sorted(table) {
            if let Some(d) = self.duration(action, value) {
                out.insert(Spanned::new(action.span(), action.get_ref().to_string()), d);
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            at: span.start,
            message: message.into(),
        });
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
        let mut message = format!("wrong type for {what}: expected {expected}, found {found}");
        if let Some(help) = help {
            message.push_str("; ");
            message.push_str(help);
        }
        self.problem(span, message);
    }
}
