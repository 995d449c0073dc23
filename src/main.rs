use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = powerbook::cli::Cli::parse();
    powerbook::commands::main(cli).into()
}
