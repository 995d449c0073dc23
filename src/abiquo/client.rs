//! HTTP client for the Abiquo API (shared by plan, run and resume).
