//! Configuration: a TOML file, read into a serde mirror that refuses unknown keys ([`raw`]),
//! then converted into validated types before any socket opens.
//!
//! Every error names the file, the key path and the reason (and the line, where the TOML
//! parser gives one): `config/sipedge.toml: gateways[1].site: site "lab2" is not defined`.
//!
//! This module is pure: it reads no clock and opens no socket. Name resolution of FQDNs that
//! are not in `[hosts]` happens later, in the IO layer.

mod model;
mod raw;
mod types;
mod validate;

#[cfg(test)]
mod test_support;

pub use types::{
    CertSource, ConfigError, Fqdn, HostName, Side, SrtpMode, Transport, VoiceRoutingPolicy,
};

pub use model::{
    AdminSettings, Appliance, CloudPeer, Config, Gateway, Limits, MediaSettings, MediationServer,
    RoutingSettings, SideListen, SipSettings, Site, Tenant, TlsSettings, UserDecl, DEFAULT_CODECS,
};
