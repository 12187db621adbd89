//! Administration: the persistent directory, the admin CLI and HTTP API, metrics.

pub mod cli;
pub mod directory;
pub mod http;
