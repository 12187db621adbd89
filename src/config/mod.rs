//! Configuration: a TOML file, read into a serde mirror that refuses unknown keys ([`raw`]),
//! then converted into validated types before any socket opens.
//!
//! Every error names the file, the key path and the reason (and the line, where the TOML
//! parser gives one): `config/sipedge.toml: gateways[1].site: site "lab2" is not defined`.
//!
//! This module is pure: it reads no clock and opens no socket. Name resolution of FQDNs that
//! are not in `[hosts]` happens later, in the IO layer.
//!
//! # Layout
//!
//! A file flows `raw.rs` → `validate/` → `model.rs`:
//!
//! - `raw.rs`: the serde mirror of the file, `deny_unknown_fields` on every table; nothing in
//!   it is trusted. Reading into it refuses syntax errors and unknown keys, with their key path
//!   and line.
//! - `validate/`: [`Config::load`] and [`Config::from_toml`], and the `Validator` that checks
//!   the mirror table by table (one file per group of tables) and builds the model; the first
//!   value refused is the error.
//! - `model.rs`: the validated model, [`Config`] and its tables, with `Config`'s accessors.
//! - `reload.rs`: what a reload may change on a running appliance, what needs a restart.
//! - `types.rs`: the validated newtypes and small enums ([`ConfigError`], [`Fqdn`],
//!   [`HostName`], [`Transport`], [`Side`], [`SrtpMode`], [`VoiceRoutingPolicy`],
//!   [`CertSource`]).
//!
//! Everything public is re-exported here: the rest of the crate names `config::X`, never a file.

mod model;
mod raw;
mod reload;
mod types;
mod validate;
mod warnings;

#[cfg(test)]
mod test_support;

pub use types::{
    CertSource, ConfigError, Fqdn, HostName, LatchMode, Side, SrtpMode, Transport,
    VoiceRoutingPolicy,
};

pub use model::{
    redact_url, AdminSettings, Appliance, CloudPeer, Config, DialPlanDecl, DialRule,
    DirectorySettings, DnsSettings, Gateway, Limits, MediaSettings, MediationServer,
    OverloadSettings, RoutingSettings, SideListen, SipSettings, Site, Tenant, TlsSettings,
    UnknownSenders, UserDecl, DEFAULT_CODECS, DEFAULT_EMERGENCY_NUMBERS,
};
