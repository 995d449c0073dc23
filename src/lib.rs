//! powerbook: declarative TOML runbooks of VM power actions for Abiquo clouds.
//!
//! The pipeline, one module per stage:
//! [`runbook`] (parse + validate) → [`plan`] (resolve targets, order, waves) →
//! [`exec`] (scheduler, task waits; emits events) → [`report`] (table, JSON).
//! [`abiquo`] is the API client and model; [`sim`] is the local API simulator.
//! [`cli`] parses the command line and [`commands`] drives the stages per subcommand.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod abiquo;
pub mod cli;
pub mod commands;
pub mod exec;
pub mod exit;
pub mod journal;
pub mod plan;
pub mod report;
pub mod runbook;
pub mod sim;
