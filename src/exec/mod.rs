//! Executor: runs a plan with bounded concurrency and emits events.
pub mod cmd;
