//! The `plan` command(s).

use crate::exit::Outcome;

pub async fn plan(_args: crate::cli::PlanArgs) -> Outcome {
    not_yet("plan")
}

fn not_yet(cmd: &str) -> Outcome {
    eprintln!("error: `{cmd}` is not implemented in this build");
    Outcome::Usage
}
