//! The `sim` command(s).

use crate::exit::Outcome;

pub async fn serve(_args: crate::cli::SimArgs) -> Outcome {
    not_yet("sim")
}

fn not_yet(cmd: &str) -> Outcome {
    eprintln!("error: `{cmd}` is not implemented in this build");
    Outcome::Usage
}
