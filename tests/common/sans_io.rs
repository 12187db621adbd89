//! The proxy core on the lab configuration, without sockets: for tests that drive it with
//! messages and a virtual clock.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sipedge::config::{Config, Side, Transport};
use sipedge::flow::Flow;
use sipedge::proxy::Core;
use sipedge::routing::{Directory, RoutingTable};

/// Our UDP listener on a side, as in the lab configuration.
pub fn lab_listener(side: Side) -> std::net::SocketAddr {
    match side {
        Side::Gateway => "127.0.0.1:5068",
        Side::Cloud => "127.0.0.1:5062",
    }
    .parse()
    .unwrap()
}

/// A core on the lab configuration with `edit` applied to its text, started at `now`.
pub fn lab_core(now: Instant, edit: impl FnOnce(String) -> String) -> Core {
    let text = edit(include_str!("../../config/sipedge.toml").to_owned());
    let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
    let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
    let local = HashMap::from([
        ((Side::Gateway, Transport::Udp), lab_listener(Side::Gateway)),
        ((Side::Cloud, Transport::Udp), lab_listener(Side::Cloud)),
    ]);
    let dir = Arc::new(arc_swap::ArcSwap::from_pointee(Directory::from_config(
        &cfg,
    )));
    Core::new(now, Arc::new(cfg), table, local, dir)
}

/// A UDP flow from `remote` to our listener on `side`.
pub fn udp_flow(side: Side, remote: &str) -> Flow {
    Flow {
        side,
        transport: Transport::Udp,
        local: lab_listener(side),
        remote: remote.parse().unwrap(),
        conn: None,
        identity: None,
    }
}
