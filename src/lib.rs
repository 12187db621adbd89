//! # sipedge
//!
//! A SIP/TLS edge and mediation server for PSTN trunking: PSTN gateways of a
//! *site* trunk to it over TCP/TLS, it relays their calls to the *cloud peer*
//! (the cloud voice service's SIP proxy) and back.
//!
//! The crate is layered; `ARCHITECTURE.md` is the long-form map.
//!
//! | module | kind | what it holds |
//! |---|---|---|
//! | [`sip`] | pure | zero-copy SIP messages: parse once over `Bytes`, edit by splices |
//! | [`sdp`] | pure | SDP rewrite for media anchoring |
//! | [`txn`] | pure | sans-IO RFC 3261 §17 transactions (with RFC 6026) |
//! | [`routing`] | pure | policy: request + sender identity + table → decision + trace |
//! | [`config`] | pure | TOML mirror → validated configuration |
//! | [`transport`] | IO | UDP/TCP listeners, flows, connection table |
//! | [`proxy`] | IO | the RFC 3261 §16 stateful proxy, in named phases |
//! | [`media`] | IO | RTP relay (knows nothing of SIP) |
//! | [`pki`] | IO | root CA for gateway certificates |
//! | [`admin`] | IO | admin API and metrics |
//!
//! Pure modules import no tokio, no socket and no clock: time is passed in.

pub mod admin;
pub mod config;
pub mod directory;
pub mod flow;
pub mod media;
pub mod pki;
pub mod proxy;
pub mod routing;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod stats;
pub mod transport;
pub mod txn;
