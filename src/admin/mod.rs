//! Administration: the cmdlet-like CLI, the admin HTTP API and the metrics exposition. The
//! directory it changes lives in [`crate::directory`]; what the running proxy publishes, in
//! [`crate::stats`].

pub mod cli;
pub mod http;
pub mod json;
pub mod metrics;
