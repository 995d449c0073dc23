//! The one integration-test binary: each module tests one command against the real binary
//! (or the library), with the simulator on 127.0.0.1 where a cloud is needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod architecture;
mod docs;
mod early;
mod faults;
mod hardening;
mod health;
mod html;
mod journal;
mod output;
mod perf;
mod plan;
mod rehearsal;
mod restarts;
mod run;
mod servers;
mod sim;
mod snapshot;
mod support;
mod validate;
