//! Reporters: consume executor events; results table, failed jobs, JSON.
