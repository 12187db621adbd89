//! TLS handshake slots: inbound handshakes are capped per side and per source address, and
//! outbound ones have their own budget, so that stalled handshakes from one address cannot
//! lock a gateway or the cloud peer out, and our own connects never wait behind inbound ones.
//!
//! * per source: at most `per_source` inbound handshakes in progress from one address, on
//!   both sides together; beyond it the connection is closed at once;
//! * per side: at most `per_side` inbound handshakes in progress on one side from addresses
//!   that are no configured peer of that side; a configured peer's address is bounded by the
//!   per-source cap only, so strangers filling the side's slots do not lock it out;
//! * outbound: at most `outbound` of our own handshakes at once; a connect waits for a slot
//!   (they are few and bounded by the handshake deadline).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Side;

/// The handshake slots of the appliance.
#[derive(Debug)]
pub struct HandshakeSlots {
    gateway: Arc<Semaphore>,
    cloud: Arc<Semaphore>,
    outbound: Arc<Semaphore>,
    per_source: usize,
    sources: Mutex<HashMap<IpAddr, usize>>,
}

/// Why an inbound handshake got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    Source,
    Side,
}

impl NoSlot {
    pub fn reason(self) -> &'static str {
        match self {
            NoSlot::Source => "too many handshakes in progress from this address",
            NoSlot::Side => "too many handshakes in progress",
        }
    }
}

/// An inbound slot; released when dropped.
#[derive(Debug)]
pub struct InboundSlot {
    slots: Arc<HandshakeSlots>,
    ip: IpAddr,
    _side: Option<OwnedSemaphorePermit>,
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.slots.sources.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl HandshakeSlots {
    pub fn new(per_side: usize, per_source: usize, outbound: usize) -> Arc<HandshakeSlots> {
        Arc::new(HandshakeSlots {
            gateway: Arc::new(Semaphore::new(per_side)),
            cloud: Arc::new(Semaphore::new(per_side)),
            outbound: Arc::new(Semaphore::new(outbound)),
            per_source,
            sources: Mutex::default(),
        })
    }

    /// A slot for an inbound handshake from `ip` on `side`, or why not (never waits).
    pub fn try_inbound(
        self: &Arc<Self>,
        side: Side,
        ip: IpAddr,
        configured_peer: bool,
    ) -> Result<InboundSlot, NoSlot> {
        let mut m = self.sources.lock().map_err(|_| NoSlot::Source)?;
        let n = m.get(&ip).copied().unwrap_or(0);
        if n >= self.per_source {
            return Err(NoSlot::Source);
        }
        let side_permit = if configured_peer {
            None
        } else {
            let sem = match side {
                Side::Gateway => &self.gateway,
                Side::Cloud => &self.cloud,
            };
            Some(sem.clone().try_acquire_owned().map_err(|_| NoSlot::Side)?)
        };
        m.insert(ip, n + 1);
        Ok(InboundSlot {
            slots: self.clone(),
            ip,
            _side: side_permit,
        })
    }

    /// A slot for one of our own handshakes (waits for one; the caller bounds the wait).
    pub async fn outbound(&self) -> Option<OwnedSemaphorePermit> {
        self.outbound.clone().acquire_owned().await.ok()
    }

    /// Inbound handshakes in progress from `ip`.
    pub fn in_progress_from(&self, ip: IpAddr) -> usize {
        self.sources
            .lock()
            .map(|m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_source_and_per_side_caps() {
        let s = HandshakeSlots::new(3, 2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let gw: IpAddr = "192.0.2.9".parse().unwrap();
        let a1 = s.try_inbound(Side::Gateway, a, false).unwrap();
        let _a2 = s.try_inbound(Side::Gateway, a, false).unwrap();
        assert_eq!(
            s.try_inbound(Side::Gateway, a, false).unwrap_err(),
            NoSlot::Source
        );
        let _b1 = s.try_inbound(Side::Gateway, b, false).unwrap();
        // The side is full for strangers, not for a configured peer, nor for the other side.
        assert_eq!(
            s.try_inbound(Side::Gateway, b, false).unwrap_err(),
            NoSlot::Side
        );
        let _g = s.try_inbound(Side::Gateway, gw, true).unwrap();
        let _c = s.try_inbound(Side::Cloud, b, false).unwrap();
        assert_eq!(s.in_progress_from(b), 2);
        drop(a1);
        assert_eq!(s.in_progress_from(a), 1);
        let _a3 = s.try_inbound(Side::Gateway, a, false).unwrap();
        // Outbound has its own budget.
        let p = s.outbound().await.unwrap();
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), s.outbound())
                .await
                .is_err()
        );
        drop(p);
        assert!(s.outbound().await.is_some());
    }
}
