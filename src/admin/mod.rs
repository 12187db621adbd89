//! Administration: the persistent directory, the admin CLI and HTTP API, metrics.

pub mod directory;
