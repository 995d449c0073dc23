//! What a step will do with one VM, as typed data, and its JSON form (which adds the
//! transition in words for people and tools that read saved plans).

use crate::abiquo::model::{PowerRequest, VmState};
use crate::plan::PlannedFallback;
use crate::plan::text;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// What a step will do with one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "DispositionJson", from = "DispositionJson")]
pub enum Disposition {
    /// Send `request`: the VM goes `from` → `to`.
    Act {
        from: VmState,
        to: VmState,
        request: PowerRequest,
        /// Azure: the power off also releases the compute.
        deallocate: bool,
        /// The hard off that follows when the graceful shutdown fails or is too slow.
        fallback: Option<PlannedFallback>,
    },
    /// Nothing to do: the VM already is where the action leads (or cannot be running).
    Skip { reason: String },
    /// The API would reject the action; `code` is the Abiquo code it would give.
    Refuse {
        code: Option<String>,
        reason: String,
    },
    /// Matched an `exclude` selector.
    Excluded,
    /// Protected VM and the step does not set `allow_protected`.
    Protected { cause: Option<String> },
}

impl Disposition {
    /// Whether the executor looks at this VM at run time (everything but exclusions and
    /// protections, which do not depend on the state).
    pub fn is_live(&self) -> bool {
        !matches!(self, Disposition::Excluded | Disposition::Protected { .. })
    }

    /// Text for "skipped: …" / "failed: …" (the transition for an acting VM).
    pub fn reason(&self) -> String {
        match self {
            Disposition::Act {
                from,
                to,
                request,
                deallocate,
                fallback,
            } => text::transition(from, to, *request, *deallocate, fallback.as_ref()),
            Disposition::Skip { reason } => reason.clone(),
            Disposition::Refuse {
                code: Some(code),
                reason,
            } => format!("{code}: {reason}"),
            Disposition::Refuse { code: None, reason } => reason.clone(),
            Disposition::Excluded => "excluded".into(),
            Disposition::Protected { cause: Some(c) } => format!("protected: {c}"),
            Disposition::Protected { cause: None } => "protected".into(),
        }
    }
}

// The JSON shape of `Disposition`; its doc comments are the schema's descriptions.
/// What a step will do with one VM.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[schemars(rename = "Disposition")]
enum DispositionJson {
    /// Send the power `request`: the VM goes `from` → `to` (`transition` says it in words,
    /// e.g. `ON → OFF (graceful)`).
    Act {
        #[schemars(with = "String")]
        from: VmState,
        #[schemars(with = "String")]
        to: VmState,
        request: PowerRequest,
        /// Azure: the power off also releases the compute.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        deallocate: bool,
        /// The hard off that follows when the graceful shutdown fails or is too slow.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<PlannedFallback>,
        /// The transition in words, for people; ignored when a saved plan is read back.
        #[serde(default)]
        transition: String,
    },
    /// Nothing to do: the VM already is where the action leads (or cannot be running).
    Skip { reason: String },
    /// The API would reject the action; `code` is the Abiquo code it would give.
    Refuse {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        reason: String,
    },
    /// Matched an `exclude` selector.
    Excluded,
    /// Protected VM and the step does not set `allow_protected`.
    Protected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
}

impl From<Disposition> for DispositionJson {
    fn from(d: Disposition) -> Self {
        let transition = d.reason();
        match d {
            Disposition::Act {
                from,
                to,
                request,
                deallocate,
                fallback,
            } => DispositionJson::Act {
                from,
                to,
                request,
                deallocate,
                fallback,
                transition,
            },
            Disposition::Skip { reason } => DispositionJson::Skip { reason },
            Disposition::Refuse { code, reason } => DispositionJson::Refuse { code, reason },
            Disposition::Excluded => DispositionJson::Excluded,
            Disposition::Protected { cause } => DispositionJson::Protected { cause },
        }
    }
}

impl From<DispositionJson> for Disposition {
    fn from(d: DispositionJson) -> Self {
        match d {
            DispositionJson::Act {
                from,
                to,
                request,
                deallocate,
                fallback,
                transition: _,
            } => Disposition::Act {
                from,
                to,
                request,
                deallocate,
                fallback,
            },
            DispositionJson::Skip { reason } => Disposition::Skip { reason },
            DispositionJson::Refuse { code, reason } => Disposition::Refuse { code, reason },
            DispositionJson::Excluded => Disposition::Excluded,
            DispositionJson::Protected { cause } => Disposition::Protected { cause },
        }
    }
}

impl JsonSchema for Disposition {
    fn schema_name() -> Cow<'static, str> {
        DispositionJson::schema_name()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        DispositionJson::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abiquo::model::PowerState;
    use crate::runbook::model::Action;

    fn shutdown() -> Disposition {
        Disposition::Act {
            from: VmState::On,
            to: VmState::Off,
            request: PowerRequest::State {
                target: PowerState::Off,
                graceful: true,
            },
            deallocate: false,
            fallback: Some(PlannedFallback {
                action: Action::Off,
                after_ms: 300_000,
            }),
        }
    }

    #[test]
    fn json_carries_the_typed_transition_and_its_words() {
        let json = serde_json::to_value(shutdown()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "act",
                "from": "ON",
                "to": "OFF",
                "request": { "kind": "state", "target": "OFF", "graceful": true },
                "fallback": { "action": "off", "after_ms": 300_000 },
                "transition": "ON → OFF (graceful, fallback hard off after 5m)",
            })
        );
        let back: Disposition = serde_json::from_value(json).unwrap();
        assert_eq!(back, shutdown());
    }

    #[test]
    fn other_kinds_keep_their_json_shape() {
        let refuse = Disposition::Refuse {
            code: None,
            reason: "no".into(),
        };
        assert_eq!(
            serde_json::to_value(&refuse).unwrap(),
            serde_json::json!({ "kind": "refuse", "reason": "no" })
        );
        assert_eq!(
            serde_json::to_value(Disposition::Protected { cause: None }).unwrap(),
            serde_json::json!({ "kind": "protected" })
        );
    }
}
