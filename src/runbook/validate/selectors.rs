//! Selectors: name-or-id fields, globs, states, hypervisors and hrefs.

use super::Validator;
use crate::abiquo::model::VmState;
use crate::runbook::model::{Action, NameOrId, Pattern, Selector};
use crate::runbook::raw::{HYPERVISORS, RawNameOrId, RawSelector, Sp};

impl Validator<'_> {
    pub(super) fn selectors(
        &mut self,
        raw: Option<&Sp<Vec<Sp<RawSelector>>>>,
        action: Option<Action>,
    ) -> Vec<Selector> {
        let Some(raw) = raw else { return Vec::new() };
        raw.get_ref()
            .iter()
            .map(|s| self.selector(s.get_ref(), action))
            .collect()
    }

    fn selector(&mut self, raw: &RawSelector, action: Option<Action>) -> Selector {
        let hypervisor = raw.hypervisor.as_ref().and_then(|h| {
            let text = h.get_ref();
            if HYPERVISORS.contains(&text.as_str()) {
                Some(text.clone())
            } else {
                self.unknown_choice("runbook::unknown-hypervisor", "hypervisor", h, HYPERVISORS);
                None
            }
        });
        if let (Some(Action::Deallocate), Some(h), Some(raw_h)) =
            (action, &hypervisor, &raw.hypervisor)
            && h != "AZURE"
        {
            self.err(
                "runbook::deallocate-non-azure",
                raw_h.span(),
                format!("`deallocate` only works on Azure VMs, but this selector pins `{h}`"),
            )
            .label("not AZURE")
            .help("use `off` or `shutdown` for VMs on other hypervisors");
        }
        let known_states: Vec<&str> = VmState::KNOWN.iter().map(VmState::as_str).collect();
        Selector {
            vdc: raw.vdc.as_ref().and_then(|v| self.name_or_id("vdc", v)),
            vapp: raw.vapp.as_ref().and_then(|v| self.name_or_id("vapp", v)),
            vm: raw.vm.as_ref().and_then(|v| self.pattern("vm", v)),
            label: raw.label.as_ref().and_then(|v| self.pattern("label", v)),
            state: raw
                .state
                .as_ref()
                .and_then(|s| match VmState::parse_known(s.get_ref()) {
                    Some(state) => Some(state),
                    None => {
                        self.unknown_choice("runbook::unknown-state", "state", s, &known_states);
                        None
                    }
                }),
            hypervisor,
            href: raw
                .href
                .as_ref()
                .and_then(|h| self.url("href", h, "expected the VM's full URL (its `edit` link)")),
        }
    }

    fn name_or_id(&mut self, key: &str, raw: &Sp<RawNameOrId>) -> Option<NameOrId> {
        match raw.get_ref() {
            RawNameOrId::Id(n) => match u64::try_from(*n) {
                Ok(id) => Some(NameOrId::Id(id)),
                Err(_) => {
                    self.err(
                        "runbook::out-of-range",
                        raw.span(),
                        format!("`{key}` id cannot be negative"),
                    )
                    .label("negative");
                    None
                }
            },
            RawNameOrId::Name(s) => self
                .pattern(key, &Sp::new(raw.span(), s.clone()))
                .map(NameOrId::Name),
        }
    }

    fn pattern(&mut self, key: &str, raw: &Sp<String>) -> Option<Pattern> {
        let text = raw.get_ref();
        if text.trim().is_empty() {
            self.err(
                "runbook::empty-value",
                raw.span(),
                format!("`{key}` is empty"),
            )
            .label("an empty pattern matches nothing")
            .help(format!(
                "remove `{key}` or give a name or glob such as \"web-*\""
            ));
            return None;
        }
        match Pattern::new(text) {
            Ok(p) => Some(p),
            Err(e) => {
                let reason = match e.kind() {
                    globset::ErrorKind::UnclosedClass => "unclosed character class `[`".to_owned(),
                    globset::ErrorKind::UnopenedAlternates => "`}` without `{`".to_owned(),
                    globset::ErrorKind::UnclosedAlternates => "unclosed `{`".to_owned(),
                    globset::ErrorKind::NestedAlternates => "nested `{` alternates".to_owned(),
                    other => other.to_string(),
                };
                self.err(
                    "runbook::invalid-glob",
                    raw.span(),
                    format!("invalid pattern in `{key}`: {reason}"),
                )
                .label("not a valid glob")
                .help("globs use * (any text), ? (one character), [abc] and {a,b}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn deallocate_is_accepted_on_azure_or_unpinned_selectors() {
        let body = "[[step]]\nname = \"a\"\naction = \"deallocate\"\ntargets = [{ vdc = \"azure-prod\" }, { hypervisor = \"AZURE\" }]\n";
        assert!(codes(body).is_empty());
    }
}
