//! The `exec` command(s).

use crate::exit::Outcome;

pub async fn run(_args: crate::cli::RunArgs) -> Outcome {
    not_yet("run")
}

fn not_yet(cmd: &str) -> Outcome {
    eprintln!("error: `{cmd}` is not implemented in this build");
    Outcome::Usage
}
