//! Abiquo API: model types shared with the simulator, media types, and the HTTP client.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod client;
pub mod codes;
pub mod error;
pub mod media;
pub mod model;
pub mod retry;
pub mod so_far;
pub mod tasks;

pub use api::{CloudApi, MutationAnswer};
pub use auth::Credentials;
pub use client::{Client, ClientConfig, ClientStats};
pub use error::ClientError;
pub use retry::RetryPolicy;
