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
//! | [`sdp`] | pure | SDP parse, RFC 3264 offer/answer, rewrite for media anchoring |
//! | [`txn`] | pure | sans-IO RFC 3261 §17 transactions (with RFC 6026) |
//! | [`routing`] | pure | policy: request + sender identity + table + directory → decision + trace |
//! | [`config`] | pure | TOML mirror → validated configuration |
//! | [`flow`] | pure | what crosses between transports and the core: flows, events, transmits |
//! | [`stats`] | pure | the counters the core and the anchor publish |
//! | [`cdr`] | pure + IO writer | call records the core emits when a call ends; their writer thread and `cdr show`/`tail` |
//! | [`proxy`] | pure core + driver | the RFC 3261 §16 proxy in named phases (sans-IO), its tokio loop, media anchoring over a backend |
//! | [`transport`] | IO | UDP/TCP/TLS listeners, connection table, TLS identity from the verified certificate, reload |
//! | [`media`] | IO | RTP/SRTP relay behind [`media::MediaBackend`] (knows nothing of SIP) |
//! | [`directory`] | IO | users, tenant, mediation servers: the SQLite store and its watcher |
//! | [`pki`] | IO | the built-in root CA (issue, sign, export, revoke) and the TLS verifiers |
//! | [`admin`] | IO | cmdlet-like CLI, admin HTTP API, metrics exposition |
//! | [`server`] | IO | the composition root: wires all of the above and runs them |
//! | [`reload`] | IO | configuration reload (SIGHUP, file change, API): validated, then in force at once |
//! | [`state`] | IO | secrets kept in the state directory (0600) |
//!
//! Pure modules import no tokio, no socket and no clock: time is passed in.

pub mod admin;
pub mod cdr;
pub mod config;
pub mod directory;
pub mod flow;
pub mod media;
pub mod pki;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod state;
pub mod stats;
pub mod transport;
pub mod txn;
