//! The read and write tasks of one stream connection.
//!
//! * Read: bytes are framed into SIP messages and parsed off the core's loop. A message must
//!   arrive whole (header and body) within `limits.message_timeout_ms` of its first byte: a
//!   slow sender is dropped and its buffer returned, it cannot hold a connection (and its
//!   memory) for the idle timeout. A connection with nothing pending closes after the idle
//!   timeout.
//! * Write: a bounded queue per connection; past half of it, keepalive pongs and our OPTIONS
//!   are shed so that replies and calls still get through ([`enqueue`]); a write that does not
//!   complete within the message deadline closes the connection (a peer that stopped reading).
//! * Either side closing, or a [`Notify`] from the transports (a revoked certificate), ends
//!   both.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{SendError, Transports};
use crate::flow::{Flow, Inbound};
use crate::sip::{Frame, FramingError, StreamFramer};

/// What may be dropped first when a connection's write queue fills: keepalive pongs and our
/// OPTIONS (health probes; their transaction times out like a lost probe).
pub(super) fn sheddable(data: &[u8]) -> bool {
    data == b"\r\n" || data.starts_with(b"OPTIONS ")
}

/// Queues `data` to a connection's writer: past half of `capacity`, sheddable messages are
/// dropped (counted); a full queue refuses anything.
pub(super) fn enqueue(
    tx: &mpsc::Sender<Bytes>,
    data: Bytes,
    capacity: usize,
) -> Result<(), SendError> {
    if sheddable(&data) && tx.capacity() < capacity / 2 {
        crate::stats::TRANSPORT.write_shed();
        debug!("write queue over half full: ping or OPTIONS shed");
        return Ok(());
    }
    tx.try_send(data).map_err(|_| SendError::QueueFull)
}

pub(super) async fn write_loop<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Bytes>,
    deadline: Duration,
    close: Arc<Notify>,
) {
    while let Some(data) = rx.recv().await {
        let write = async {
            wr.write_all(&data).await?;
            // TLS buffers records: push them out now.
            wr.flush().await
        };
        match tokio::time::timeout(deadline, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                warn!("write stalled past the message deadline, closing connection");
                crate::stats::TRANSPORT.message_timeout();
                break;
            }
        }
    }
    close.notify_one();
}

/// Why a read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    Closed,
    Idle,
    SlowMessage,
    Told,
}

pub(super) async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    flow: Flow,
    t: &Arc<Transports>,
    close: &Notify,
) -> Ended {
    let mut framer = StreamFramer::new(t.limits.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    // When the message in progress must be complete.
    let mut message_deadline: Option<Instant> = None;
    loop {
        let wait = match message_deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => t.limits.idle_timeout,
        };
        let n = tokio::select! {
            _ = close.notified() => return Ended::Told,
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => match r {
                Err(_) if message_deadline.is_some() => {
                    warn!(side = flow.side.as_str(), remote = %flow.remote, buffered = framer.buffered(), "message not complete within the deadline, closing connection");
                    crate::stats::TRANSPORT.message_timeout();
                    return Ended::SlowMessage;
                }
                Err(_) => {
                    debug!(remote = %flow.remote, "connection idle, closing");
                    return Ended::Idle;
                }
                Ok(Err(_)) | Ok(Ok(0)) => return Ended::Closed,
                Ok(Ok(n)) => n,
            }
        };
        framer.push(buf.get(..n).unwrap_or_default());
        let mut framed = false;
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Keepalive)) => {
                    framed = true;
                    // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                    let _ = t.send(
                        flow.side,
                        flow.transport,
                        flow.remote,
                        Bytes::from_static(b"\r\n"),
                    );
                }
                Ok(Some(Frame::Message(m))) => {
                    framed = true;
                    if t.inbound.send(Inbound::Message(flow, m)).await.is_err() {
                        return Ended::Closed;
                    }
                }
                Err(e) => {
                    let fatal = !matches!(e, FramingError::Invalid(_));
                    if let Some(head) = framer.rejected_head() {
                        let ev = Inbound::Malformed {
                            flow,
                            bytes: Bytes::copy_from_slice(head),
                            response: e.response(),
                            reason: e.to_string(),
                        };
                        if t.inbound.send(ev).await.is_err() {
                            return Ended::Closed;
                        }
                    }
                    if !fatal {
                        // A well-framed but invalid message: answered, the stream goes on.
                        framed = true;
                        continue;
                    }
                    // Framing is lost (RFC 3261 §18.3): give the proxy a moment to queue its
                    // answer, then close.
                    warn!(remote = %flow.remote, error = %e, "stream framing error, closing connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return Ended::Closed;
                }
            }
        }
        message_deadline = match (framer.in_message(), message_deadline) {
            // Nothing pending, or only the start of a CRLF keepalive.
            (false, _) => None,
            // A new message began after the last complete one: its own deadline.
            (true, Some(_)) if framed => Some(Instant::now() + t.limits.message_timeout),
            (true, Some(d)) => Some(d),
            (true, None) => Some(Instant::now() + t.limits.message_timeout),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_and_options_are_shed_first() {
        assert!(sheddable(b"\r\n"));
        assert!(sheddable(b"OPTIONS sip:gw1.lab.example SIP/2.0\r\n"));
        assert!(!sheddable(b"SIP/2.0 200 OK\r\n"));
        assert!(!sheddable(b"INVITE sip:x SIP/2.0\r\n"));
        let (tx, _rx) = mpsc::channel::<Bytes>(4);
        // Half full: a ping is shed (Ok, not queued), a reply still queued.
        for _ in 0..3 {
            enqueue(&tx, Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"), 4).unwrap();
        }
        assert_eq!(tx.capacity(), 1);
        enqueue(&tx, Bytes::from_static(b"\r\n"), 4).unwrap();
        assert_eq!(tx.capacity(), 1, "the ping was shed");
        enqueue(&tx, Bytes::from_static(b"SIP/2.0 180 Ringing\r\n\r\n"), 4).unwrap();
        assert!(matches!(
            enqueue(&tx, Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"), 4),
            Err(SendError::QueueFull)
        ));
    }
}
