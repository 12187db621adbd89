//! The stateful proxy: [`core::Core`] is the RFC 3261 §16 proxy as a sans-IO state machine
//! (phases admit → route → forward → relay_response → fail → log); [`driver`] is the tokio loop
//! that feeds it. SIGTERM/SIGINT start a graceful drain: new INVITEs get 503 with Retry-After,
//! transactions in flight finish, then the loop ends (bounded by `limits.drain_timeout_s`).
//! [`anchor`] binds media anchoring to dialogs over a [`crate::media::MediaBackend`];
//! [`health`] keeps the OPTIONS health of the targets.

pub mod anchor;
pub mod core;
pub mod driver;
pub mod health;

pub use self::core::{Core, ALLOW};
