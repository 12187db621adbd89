//! The stateful proxy: [`core::Core`] is the RFC 3261 §16 proxy as a sans-IO state machine
//! (phases admit → route → forward → relay_response → fail → log); [`driver`] is the tokio loop
//! that feeds it. Maintenance mode and the drain (SIGTERM/SIGINT) refuse new calls and OPTIONS
//! with 503 and Retry-After while calls in progress go on; the drain ends when the last call has
//! ended, or at `limits.drain_timeout_s` with a BYE of ours to both legs of every call left
//! (`core/service.rs`). A reloaded configuration reaches the core through the driver.
//! [`anchor`] binds media anchoring to dialogs over a [`crate::media::MediaBackend`];
//! [`health`] keeps the OPTIONS health of the targets.

pub mod anchor;
pub mod core;
pub mod driver;
pub mod health;

pub use self::core::{Core, ALLOW};

use std::sync::Arc;

use bytes::Bytes;

/// A call, as the core and the anchor key it: the peer that sent its initial INVITE (a gateway's
/// name, another site's mediation server, or the cloud peer's FQDN) and its Call-ID. Two peers
/// using one Call-ID are two calls; a request from a third peer finds neither.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    pub peer: Arc<str>,
    pub call_id: Bytes,
}

impl CallKey {
    pub fn new(peer: &str, call_id: Bytes) -> CallKey {
        CallKey {
            peer: Arc::from(peer),
            call_id,
        }
    }

    /// The Call-ID as text (for logs and BYEs).
    pub fn call_id_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.call_id)
    }
}
