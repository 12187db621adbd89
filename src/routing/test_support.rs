//! Fixtures shared by the routing unit tests: the lab configuration (`config/sipedge.toml`),
//! its routing table and directory, and its first gateway as a sender.

use std::path::Path;

use super::{Directory, RoutingTable, Sender};
use crate::config::Config;

fn cfg() -> Config {
    Config::from_toml(
        Path::new("config/sipedge.toml"),
        include_str!("../../config/sipedge.toml"),
    )
    .unwrap()
}

pub(super) fn table() -> RoutingTable {
    let cfg = cfg();
    RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap()
}

pub(super) fn dir() -> Directory {
    Directory::from_config(&cfg())
}

pub(super) fn gw1() -> Sender {
    Sender::Gateway {
        name: "gw1.lab.example".into(),
        site: "lab".into(),
    }
}
