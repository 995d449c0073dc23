//! Exit-code policy, documented in `--help` and the README.

use std::process::ExitCode;

/// How a command ended, from the operator's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for succeeded (or was already so).
    Success,
    /// The run finished but some VMs failed.
    SomeFailed,
    /// Bad usage or an invalid runbook; nothing was touched.
    Usage,
    /// The run was aborted: failure threshold, deadline, API unreachable, auth refused,
    /// or a saved plan no longer matches the cloud.
    Aborted,
    /// The operator answered no when asked to proceed; nothing was touched.
    Declined,
    /// Interrupted by Ctrl-C.
    Interrupted,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::SomeFailed => 1,
            Outcome::Usage => 2,
            Outcome::Aborted => 3,
            Outcome::Declined => 4,
            Outcome::Interrupted => 130,
        }
    }
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        ExitCode::from(o.code())
    }
}

/// The environment, as every command's `--help` ends.
macro_rules! environment_help {
    () => {
        "\
Environment (credentials come from it only, never from flags or runbooks):
  ABIQUO_API_URL                              the API endpoint (or --endpoint)
  ABIQUO_API_USERNAME + ABIQUO_API_PASSWORD   HTTP Basic, traded once for a session token
  ABIQUO_API_TOKEN                            Abiquo token (Authorization: Token)
  ABIQUO_API_BEARER                           OpenID Connect access token (Authorization: Bearer)
  ABIQUO_API_INSECURE=1                       do not verify TLS certificates (or --insecure)
  POWERBOOK_RUNS_DIR                          directory of run journals (or --runs-dir)
  NO_COLOR=1                                  no colours (or --color never)
  RUST_LOG                                    log filter, e.g. powerbook=debug (overrides -v/-q)
"
    };
}

/// The codes of `run` and `resume` from 2 on, shared by their help and the top-level one.
macro_rules! run_codes_after_1 {
    () => {
        "  2    usage error or invalid runbook (nothing was touched)
  3    run aborted: failure threshold, deadline, API unreachable, authentication refused,
       or a saved plan that no longer matches the cloud
  4    declined: the answer to `Proceed?` was not yes (nothing was touched)
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP): tasks in flight were drained"
    };
}

/// `--help` of `powerbook` itself: every command's codes.
pub const EXIT_CODES_HELP: &str = concat!(
    environment_help!(),
    "
Exit codes:
  0    success: every VM reached its target state (or already was there)
  1    the run finished but some VMs failed; plan --strict: the plan has warnings
",
    run_codes_after_1!()
);

/// `--help` of `run` and `resume`.
pub const RUN_HELP: &str = concat!(
    environment_help!(),
    "
Exit codes:
  0    success: every VM reached its target state (or already was there)
  1    the run finished but some VMs failed
",
    run_codes_after_1!()
);

/// `--help` of `plan`.
pub const PLAN_HELP: &str = concat!(
    environment_help!(),
    "
Exit codes:
  0    the plan was made (with --strict: and has no warnings)
  1    --strict: the plan has warnings
  2    usage error or invalid runbook
  3    the API could not be reached, refused the credentials or could not list the VMs"
);

/// `--help` of `snapshot`.
pub const SNAPSHOT_HELP: &str = concat!(
    environment_help!(),
    "
Exit codes:
  0    the inventory was written
  1    the inventory could not be written (FILE)
  2    usage error: no endpoint or credentials, or FILE exists (pass --force)
  3    the API could not be reached, refused the credentials or could not list the VDCs,
       vApps or VMs"
);

/// `--help` of `validate`.
pub const VALIDATE_HELP: &str = "\
Exit codes:
  0    every runbook is valid (with --strict: and has no warnings)
  2    a runbook is invalid or cannot be read (with --strict: or has warnings)";

/// `--help` of `sim`.
pub const SIM_HELP: &str = "\
Environment:
  RUST_LOG              log filter (or -v/-q)

Exit codes:
  0    stopped by Ctrl-C or a termination signal
  2    usage error or invalid inventory
  3    cannot listen on the address";

/// `--help` of the commands that print what powerbook knows (schema, completions, man).
pub const PRINT_HELP: &str = "\
Exit codes:
  0    printed";

/// `--help` of `report`.
pub const REPORT_HELP: &str = "\
Exit codes:
  0    the page was written
  1    the page could not be written (FILE)
  2    usage error, or a journal that cannot be read";

/// `--help` of the commands that read local files only (runs, restore, schema).
pub const LOCAL_HELP: &str = "\
Environment:
  POWERBOOK_RUNS_DIR    directory of run journals (or --runs-dir)
  NO_COLOR=1            no colours (or --color never)

Exit codes:
  0    done
  1    restore: the run touched no VM, or the runbook cannot be written
  2    usage error, or a journal that cannot be read";
