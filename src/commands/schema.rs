//! `powerbook schema`: the JSON Schema of the runbook format, or of the inventory format.

use crate::cli::SchemaArgs;
use crate::commands::validate::emit;
use crate::exit::Outcome;

pub fn schema(args: &SchemaArgs) -> Outcome {
    if args.inventory {
        emit(&crate::sim::inventory_schema_json());
    } else {
        emit(&crate::runbook::schema::schema_json());
    }
    Outcome::Success
}
