//! `powerbook schema`: the JSON Schema of the runbook format.

use crate::commands::validate::emit;
use crate::exit::Outcome;

pub fn schema() -> Outcome {
    emit(&crate::runbook::schema::schema_json());
    Outcome::Success
}
