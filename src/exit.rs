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

/// Text appended to `--help`.
pub const EXIT_CODES_HELP: &str = "\
Credentials come from the environment only, never from flags or runbooks:
  ABIQUO_API_USERNAME + ABIQUO_API_PASSWORD   HTTP Basic, traded once for a session token
  ABIQUO_API_TOKEN                            Abiquo token (Authorization: Token)
  ABIQUO_API_BEARER                           OpenID Connect access token (Authorization: Bearer)

Exit codes:
  0    success: every VM reached its target state (or already was there)
  1    the run finished but some VMs failed
  2    usage error or invalid runbook (nothing was touched)
  3    run aborted: failure threshold, deadline, API unreachable, authentication refused,
       or a saved plan that no longer matches the cloud
  4    declined: the answer to `Proceed?` was not yes (nothing was touched)
  130  interrupted (Ctrl-C, SIGTERM or SIGHUP): tasks in flight were drained";
