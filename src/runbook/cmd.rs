//! The `runbook` command(s).

use crate::exit::Outcome;

pub fn validate(_args: &crate::cli::ValidateArgs) -> Outcome {
    not_yet("validate")
}

pub fn schema() -> Outcome {
    not_yet("schema")
}

fn not_yet(cmd: &str) -> Outcome {
    eprintln!("error: `{cmd}` is not implemented in this build");
    Outcome::Usage
}
