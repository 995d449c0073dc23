//! Abiquo API: model types shared with the simulator, media types, and the HTTP client.

pub mod client;
pub mod media;
pub mod model;
