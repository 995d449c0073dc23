//! One step's settings: its action, waves, fallback and thresholds, over `[defaults]`.

use super::Validator;
use crate::runbook::diagnostic::Diagnostic;
use crate::runbook::model::{
    Action, Amount, Fallback, GATE_INTERVAL, GATE_TIMEOUT, Gate, GateCheck, OnFailure, Order,
    Runbook, Step, VM_PLACEHOLDERS, Waves, unknown_placeholder,
};
use crate::runbook::raw::{RawAmount, RawDefaults, RawFallback, RawGate, RawStep, Sp};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Step settings after applying `[defaults]`.
pub(super) struct Inherited {
    task_timeout: Duration,
    on_failure: OnFailure,
    max_failures: Option<Amount>,
    concurrency: Option<NonZeroUsize>,
    order: Order,
    allow_protected: bool,
    expected_duration: Option<Duration>,
}

impl Inherited {
    fn built_in() -> Self {
        Inherited {
            task_timeout: Runbook::DEFAULT_TASK_TIMEOUT,
            on_failure: OnFailure::default(),
            max_failures: None,
            concurrency: None,
            order: Order::default(),
            allow_protected: false,
            expected_duration: None,
        }
    }
}

/// The settings both `[defaults]` and a step may give; a step's override the defaults,
/// which override the built-ins.
struct Overrides<'r> {
    task_timeout: Option<&'r Sp<String>>,
    on_failure: Option<&'r Sp<String>>,
    max_failures: Option<&'r Sp<RawAmount>>,
    concurrency: Option<&'r Sp<i64>>,
    order: Option<&'r Sp<String>>,
    allow_protected: Option<&'r Sp<bool>>,
    expected_duration: Option<&'r Sp<String>>,
}

impl<'r> From<&'r RawDefaults> for Overrides<'r> {
    fn from(raw: &'r RawDefaults) -> Self {
        Overrides {
            task_timeout: raw.task_timeout.as_ref(),
            on_failure: raw.on_failure.as_ref(),
            max_failures: raw.max_failures.as_ref(),
            concurrency: raw.concurrency.as_ref(),
            order: raw.order.as_ref(),
            allow_protected: raw.allow_protected.as_ref(),
            expected_duration: raw.expected_duration.as_ref(),
        }
    }
}

impl<'r> From<&'r RawStep> for Overrides<'r> {
    fn from(raw: &'r RawStep) -> Self {
        Overrides {
            task_timeout: raw.task_timeout.as_ref(),
            on_failure: raw.on_failure.as_ref(),
            max_failures: raw.max_failures.as_ref(),
            concurrency: raw.concurrency.as_ref(),
            order: raw.order.as_ref(),
            allow_protected: raw.allow_protected.as_ref(),
            expected_duration: raw.expected_duration.as_ref(),
        }
    }
}

impl Validator<'_> {
    pub(super) fn defaults(&mut self, raw: Option<&RawDefaults>) -> Inherited {
        let built_in = Inherited::built_in();
        match raw {
            Some(raw) => self.inherit(raw.into(), &built_in),
            None => built_in,
        }
    }

    /// `raw` over `base`. An invalid timeout, `on_failure` or `order` keeps the base value
    /// (the error is reported); an invalid threshold, concurrency or estimate is dropped.
    fn inherit(&mut self, raw: Overrides<'_>, base: &Inherited) -> Inherited {
        Inherited {
            task_timeout: raw
                .task_timeout
                .and_then(|t| self.duration("task_timeout", t))
                .unwrap_or(base.task_timeout),
            on_failure: raw
                .on_failure
                .and_then(|o| self.on_failure(o))
                .unwrap_or(base.on_failure),
            max_failures: match raw.max_failures {
                Some(m) => self.amount("max_failures", m, 0),
                None => base.max_failures,
            },
            concurrency: match raw.concurrency {
                Some(c) => self.positive("concurrency", c),
                None => base.concurrency,
            },
            order: raw.order.and_then(|o| self.order(o)).unwrap_or(base.order),
            allow_protected: raw
                .allow_protected
                .map_or(base.allow_protected, |b| *b.get_ref()),
            expected_duration: match raw.expected_duration {
                Some(e) => self.duration("expected_duration", e),
                None => base.expected_duration,
            },
        }
    }

    pub(super) fn step(&mut self, raw: &RawStep, defaults: &Inherited) -> Step {
        let action = raw.action.as_ref().and_then(|a| self.action(a));
        let targets = self.selectors(raw.targets.as_ref(), action);
        let exclude = self.selectors(raw.exclude.as_ref(), None);
        let settings = self.inherit(raw.into(), defaults);
        if let (Order::Sequential, Some(c)) = (settings.order, &raw.concurrency) {
            self.warn(
                "runbook::ignored-key",
                c.span(),
                "`concurrency` has no effect with order = \"sequential\"",
            )
            .label("sequential steps act on one VM at a time");
        }
        let waves = raw.waves.as_ref().and_then(|w| {
            let w = w.get_ref();
            let sizes = match (&w.size, &w.sizes) {
                (Some(s), _) => vec![self.amount("size", s, 1)?],
                (None, Some(list)) if list.get_ref().is_empty() => {
                    self.err("runbook::invalid-amount", list.span(), "`sizes` is empty")
                        .label("a ramp needs at least one wave size")
                        .help("e.g. sizes = [1, \"10%\", \"25%\"]");
                    return None;
                }
                (None, Some(list)) => {
                    let sizes: Vec<Amount> = list
                        .get_ref()
                        .iter()
                        .filter_map(|s| self.amount("sizes", s, 1))
                        .collect();
                    (sizes.len() == list.get_ref().len()).then_some(sizes)?
                }
                (None, None) => return None,
            };
            let pause = match &w.pause {
                Some(p) => self.duration("pause", p)?,
                None => Duration::ZERO,
            };
            let gate = match &w.gate {
                Some(g) => Some(self.gate(g)?),
                None => None,
            };
            Some(Waves { sizes, pause, gate })
        });
        let fallback = raw
            .fallback
            .as_ref()
            .and_then(|f| self.fallback(f, raw.action.as_ref(), action));
        let gate = raw.gate.as_ref().and_then(|g| self.gate(g));
        Step {
            name: raw
                .name
                .as_ref()
                .map(|n| n.get_ref().clone())
                .unwrap_or_default(),
            action: action.unwrap_or(Action::On),
            targets,
            exclude,
            after: Vec::new(),
            after_gates: Vec::new(),
            order: settings.order,
            concurrency: settings.concurrency,
            waves,
            gate,
            fallback,
            task_timeout: settings.task_timeout,
            on_failure: settings.on_failure,
            max_failures: settings.max_failures,
            allow_protected: settings.allow_protected,
            expected_duration: settings.expected_duration,
        }
    }

    fn fallback(
        &mut self,
        raw: &Sp<RawFallback>,
        raw_action: Option<&Sp<String>>,
        action: Option<Action>,
    ) -> Option<Fallback> {
        let f = raw.get_ref();
        let fb_action = match &f.action {
            Some(a) if a.get_ref() == "off" => Some(Action::Off),
            Some(a) => {
                self.err(
                    "runbook::invalid-value",
                    a.span(),
                    format!("unsupported fallback action `{}`", a.get_ref()),
                )
                .label("the only fallback is `off` (hard power off)");
                None
            }
            None => Some(Action::Off),
        };
        let after = f.after.as_ref().and_then(|a| self.duration("after", a));
        if let Some(a) = action
            && !matches!(a, Action::Shutdown | Action::Restart)
        {
            let mut d = Diagnostic::error(
                "runbook::fallback-not-shutdown",
                raw.span(),
                format!("`fallback` only applies to `shutdown` and `restart` steps, not `{a}`"),
            )
            .label("remove this fallback")
            .help("a fallback hard-offs VMs whose graceful shutdown fails or is too slow");
            if let Some(ra) = raw_action {
                d = d.with_secondary(ra.span(), format!("this step's action is `{a}`"));
            }
            self.diags.push(d);
            return None;
        }
        let after = after?;
        Some(Fallback {
            action: fb_action?,
            after,
        })
    }
}

impl Validator<'_> {
    /// Every `{vm.…}` of a gate is known, and none is in an `approve` message (one
    /// question per VM is not a gate). False after reporting.
    fn placeholders(&mut self, g: &RawGate) -> bool {
        let mut texts: Vec<&Sp<String>> = Vec::new();
        texts.extend(g.tcp.as_ref());
        texts.extend(g.http.as_ref().and_then(|h| h.get_ref().url.as_ref()));
        if let Some(c) = &g.command {
            texts.extend(c.get_ref().iter());
        }
        let mut ok = true;
        for text in texts {
            if let Some(bad) = unknown_placeholder(text.get_ref()) {
                self.err(
                    "runbook::unknown-placeholder",
                    text.span(),
                    format!("unknown placeholder `{bad}`"),
                )
                .label(format!("expected one of {}", VM_PLACEHOLDERS.join(", ")))
                .help("`{vm.ip}` is the VM's first NIC address, as the API shows it");
                ok = false;
            }
        }
        if let Some(message) = &g.approve
            && message.get_ref().contains("{vm.")
        {
            self.err(
                "runbook::invalid-gate",
                message.span(),
                "an `approve` gate is asked once, so it cannot name `{vm.…}`",
            )
            .label("ask once for the whole wave or step")
            .help("check each VM with a tcp, http or command gate, then approve once");
            ok = false;
        }
        ok
    }

    /// A gate: exactly one check (the reader reports otherwise), each value in range.
    pub(super) fn gate(&mut self, raw: &Sp<RawGate>) -> Option<Gate> {
        let g = raw.get_ref();
        if !self.placeholders(g) {
            return None;
        }
        let timeout = match &g.timeout {
            Some(t) => self.duration("timeout", t)?,
            None => GATE_TIMEOUT,
        };
        let interval = match &g.interval {
            Some(i) => self.duration("interval", i)?,
            None => GATE_INTERVAL,
        };
        let check = if let Some(address) = &g.tcp {
            let text = address.get_ref().trim();
            let port = text.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty())
                    .then(|| port.parse::<u16>().ok())
                    .flatten()
            });
            if port.is_none_or(|p| p == 0) {
                self.err(
                    "runbook::invalid-gate",
                    address.span(),
                    format!("`tcp` is not host:port: `{text}`"),
                )
                .label("a host and a port from 1 to 65535")
                .help("e.g. tcp = \"db-1.internal:5432\"");
                return None;
            }
            GateCheck::Tcp {
                address: text.to_owned(),
            }
        } else if let Some(http) = &g.http {
            let h = http.get_ref();
            let url = self.url("url", h.url.as_ref()?, "an http(s) URL to GET")?;
            let status = match &h.status {
                None => 200,
                Some(s) => match u16::try_from(*s.get_ref()) {
                    Ok(code @ 100..=599) => code,
                    _ => {
                        self.err(
                            "runbook::out-of-range",
                            s.span(),
                            format!("`status` is not an HTTP status: {}", s.get_ref()),
                        )
                        .label("from 100 to 599");
                        return None;
                    }
                },
            };
            GateCheck::Http { url, status }
        } else if let Some(command) = &g.command {
            let argv: Vec<String> = command
                .get_ref()
                .iter()
                .map(|a| a.get_ref().clone())
                .collect();
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                self.err(
                    "runbook::invalid-gate",
                    command.span(),
                    "`command` has no program",
                )
                .label("the program, then its arguments")
                .help("e.g. command = [\"/usr/local/bin/check-db\", \"--primary\"]");
                return None;
            }
            GateCheck::Command { argv }
        } else if let Some(message) = &g.approve {
            let text = message.get_ref().trim();
            if text.is_empty() {
                self.err(
                    "runbook::invalid-gate",
                    message.span(),
                    "`approve` is empty",
                )
                .label("what the operator is asked to approve")
                .help("e.g. approve = \"the canary serves: go on with the rest?\"");
                return None;
            }
            GateCheck::Approve {
                message: text.to_owned(),
            }
        } else {
            return None;
        };
        Some(Gate {
            check,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use crate::runbook::model::Amount;
    use std::time::Duration;

    #[test]
    fn step_settings_override_defaults_which_override_built_ins() {
        let rb = runbook(&format!(
            "[defaults]\ntask_timeout = \"1h 30m\"\nmax_failures = 0\norder = \"sequential\"\nallow_protected = true\n\
             [[step]]\nname = \"a\"\n{STEP}\
             [[step]]\nname = \"b\"\ntask_timeout = \"2m\"\nmax_failures = \"100%\"\norder = \"parallel\"\nallow_protected = false\n{STEP}"
        ));
        let (a, b) = (&rb.steps[0], &rb.steps[1]);
        assert_eq!(a.task_timeout, Duration::from_secs(5400));
        assert_eq!(a.max_failures, Some(Amount::Count(0)));
        assert_eq!(a.order, crate::runbook::model::Order::Sequential);
        assert!(a.allow_protected);
        assert_eq!(b.task_timeout, Duration::from_secs(120));
        assert_eq!(b.max_failures, Some(Amount::Percent(100)));
        assert_eq!(b.order, crate::runbook::model::Order::Parallel);
        assert!(!b.allow_protected);
    }
}

#[cfg(test)]
mod placeholder_tests {
    use super::super::test_support::*;
    use crate::runbook::parse;

    const DOWN: &str = "[[step]]\nname = \"db\"\n";
    const UP: &str = "[[step]]\nname = \"app\"\nafter = [\"db\"]\n";

    #[test]
    fn a_gate_may_name_each_vms_address_and_name() {
        let rb = runbook(&format!(
            "{DOWN}{STEP}{UP}{STEP}gate = {{ tcp = \"{{vm.ip}}:5432\" }}\n\
             waves = {{ size = 1, gate = {{ command = [\"check\", \"{{vm.name}}\"] }} }}\n"
        ));
        assert!(rb.steps[1].gate.as_ref().unwrap().check.per_vm());
    }

    #[test]
    fn an_unknown_placeholder_is_an_error_at_its_value() {
        let src = format!(
            "name = \"t\"\n{DOWN}{STEP}{UP}{STEP}gate = {{ tcp = \"{{vm.addr}}:5432\" }}\n"
        );
        let err = parse("t.toml", &src).err().unwrap();
        let d = &err.diagnostics[0];
        assert_eq!(d.code, "runbook::unknown-placeholder");
        assert!(d.message.contains("{vm.addr}"), "{}", d.message);
        assert_eq!(&src[d.span.clone().unwrap()], "\"{vm.addr}:5432\"");
    }

    #[test]
    fn a_per_vm_gate_needs_vms_to_check_and_an_approval_is_asked_once() {
        let first = format!("[[step]]\nname = \"a\"\n{STEP}gate = {{ tcp = \"{{vm.ip}}:22\" }}\n");
        assert_eq!(codes(&first), ["runbook::invalid-gate"]);
        let approve = format!("{DOWN}{STEP}{UP}{STEP}gate = {{ approve = \"{{vm.name}} ok?\" }}\n");
        assert_eq!(codes(&approve), ["runbook::invalid-gate"]);
    }
}
