//! Plan: resolve each step's selectors to VMs, order steps, split waves, estimate.
pub mod cmd;
