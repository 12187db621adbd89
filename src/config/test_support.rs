//! Helpers shared by the configuration's unit tests: the shipped lab file, loading it, and the
//! error of a variant of it.

use std::path::Path;

use super::{Config, ConfigError};

pub(super) const LAB: &str = include_str!("../../config/sipedge.toml");

pub(super) fn lab() -> Config {
    Config::from_toml(Path::new("config/sipedge.toml"), LAB).unwrap()
}

pub(super) fn err_of(text: &str) -> ConfigError {
    Config::from_toml(Path::new("t.toml"), text).unwrap_err()
}
