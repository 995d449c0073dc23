//! `powerbook completions SHELL` and `powerbook man`: generated from the command line's own
//! definition, so they never disagree with `--help`.

use crate::cli::Cli;
use crate::commands::session::print_stdout;
use crate::exit::Outcome;
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "powerbook", &mut out);
    print_stdout(&String::from_utf8_lossy(&out));
    Outcome::Success
}

/// The man page of `powerbook`, then one section per command with its own options.
pub fn man() -> Outcome {
    let command = Cli::command();
    let mut out = Vec::new();
    let page = clap_mangen::Man::new(command.clone());
    if let Err(e) = page.render(&mut out) {
        eprintln!("error: cannot render the man page: {e}");
        return Outcome::Aborted;
    }
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("powerbook {}", sub.get_name());
        let extra = sub.get_after_help().is_some();
        let man = clap_mangen::Man::new(sub.clone().bin_name(name.clone()));
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        let sections = man
            .render_synopsis_section(&mut out)
            .and_then(|()| man.render_description_section(&mut out))
            .and_then(|()| man.render_options_section(&mut out))
            .and_then(|()| {
                if extra {
                    man.render_extra_section(&mut out)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = sections {
            eprintln!("error: cannot render the man page: {e}");
            return Outcome::Aborted;
        }
    }
    print_stdout(&String::from_utf8_lossy(&out));
    Outcome::Success
}
