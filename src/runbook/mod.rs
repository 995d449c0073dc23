//! Runbook language: parse TOML, validate strictly, report located diagnostics.

pub mod cmd;
pub mod model;
