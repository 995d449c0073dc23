//! `powerbook sim`: a local simulator of the Abiquo API surface powerbook uses.
pub mod cmd;
