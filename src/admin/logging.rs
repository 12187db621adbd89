//! Logging set-up for every command.
//!
//! - **Colour only on a terminal**: ANSI escapes when stderr is a terminal
//!   (`std::io::IsTerminal`), never in a file, a pipe or the journal.
//! - **JSON** (`--log-format json`): one object per line with stable field names:
//!   `timestamp` (RFC 3339 UTC), `level` (`ERROR`…`TRACE`), `target` (the module), `message`,
//!   the event's own fields beside them (`call_id`, `side`, `remote`, `reason`, `status`, …),
//!   and `span` (the current span's fields) when there is one.
//! - **Never blocking**: events are formatted on the thread that logs them (the core's loop,
//!   a connection task) into a buffer and handed to a bounded queue; one writer thread writes
//!   them to stderr. A full queue drops the line and counts it
//!   (`sipedge_log_lines_dropped_total`) instead of stalling the caller.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use clap::ValueEnum;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The log format of `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line (stable field names).
    Json,
}

/// Lines the queue can hold before new ones are dropped.
pub const QUEUE_LINES: usize = 16_384;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because the writer was behind.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The [`MakeWriter`] handing each event to the writer thread.
#[derive(Debug, Clone)]
pub struct NonBlocking {
    tx: SyncSender<Msg>,
    dropped: &'static AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Line(l) => write!(f, "Line({} bytes)", l.len()),
            Msg::Flush(_) => write!(f, "Flush"),
        }
    }
}

/// Collects one event's bytes; sends them as one line when the event is written.
pub struct EventBuffer {
    tx: SyncSender<Msg>,
    dropped: &'static AtomicU64,
    buf: Vec<u8>,
}

impl Write for EventBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for NonBlocking {
    type Writer = EventBuffer;
    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer {
            tx: self.tx.clone(),
            dropped: self.dropped,
            buf: Vec::with_capacity(256),
        }
    }
}

/// Flushes what was logged when dropped (at the end of `main`), waiting at most two seconds.
#[derive(Debug)]
pub struct LogGuard {
    tx: SyncSender<Msg>,
}

impl LogGuard {
    /// Waits until every line queued so far is written (at most `t`).
    pub fn flush(&self, t: Duration) {
        let (ack_tx, ack_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(t);
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(2));
    }
}

fn writer_loop(rx: Receiver<Msg>, mut sink: Box<dyn Write + Send>) {
    while let Ok(m) = rx.recv() {
        match m {
            Msg::Line(l) => {
                let _ = sink.write_all(&l);
            }
            Msg::Flush(ack) => {
                let _ = sink.flush();
                let _ = ack.try_send(());
            }
        }
    }
    let _ = sink.flush();
}

/// A non-blocking writer over `sink` with a queue of `lines`, its writer thread and guard.
/// When the thread cannot be started, lines go nowhere (and are counted as dropped).
pub fn non_blocking(
    sink: Box<dyn Write + Send>,
    lines: usize,
    dropped: &'static AtomicU64,
) -> (NonBlocking, LogGuard) {
    let (tx, rx) = sync_channel(lines.max(1));
    let _ = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer_loop(rx, sink));
    (
        NonBlocking {
            tx: tx.clone(),
            dropped,
        },
        LogGuard { tx },
    )
}

/// The filter: `RUST_LOG` when set, else `level`, else `info`.
pub fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber writing to stderr; keep the guard until the end of `main`.
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    let ansi = std::io::stderr().is_terminal();
    let (writer, guard) = non_blocking(Box::new(std::io::stderr()), QUEUE_LINES, &DROPPED);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    guard
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_stable_names_and_no_escape_codes() {
        static D: AtomicU64 = AtomicU64::new(0);
        let out = Shared::default();
        let (w, guard) = non_blocking(Box::new(out.clone()), 64, &D);
        let sub = tracing_subscriber::fmt()
            .with_writer(w)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("call", call_id = "c1@x");
            let _e = span.enter();
            tracing::info!(status = 486u16, outcome = "busy", "call ended");
        });
        guard.flush(Duration::from_secs(2));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains('\u{1b}'), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        for k in [
            "timestamp",
            "level",
            "target",
            "message",
            "status",
            "outcome",
            "span",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {text}");
        }
        assert_eq!(v["message"], "call ended");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["span"]["call_id"], "c1@x");
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_logging_thread() {
        static D: AtomicU64 = AtomicU64::new(0);
        /// A sink that blocks until the test ends.
        struct Stuck(Arc<Mutex<()>>);
        impl Write for Stuck {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let _g = self.0.lock();
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (w, guard) = non_blocking(Box::new(Stuck(gate.clone())), 4, &D);
        let sub = tracing_subscriber::fmt().with_writer(w).finish();
        let t0 = std::time::Instant::now();
        tracing::subscriber::with_default(sub, || {
            for i in 0..100 {
                tracing::info!(i, "line");
            }
        });
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The writer holds one line, the queue four: the rest were dropped and counted.
        assert!(
            D.load(Ordering::Relaxed) >= 90,
            "{}",
            D.load(Ordering::Relaxed)
        );
        drop(held);
        guard.flush(Duration::from_secs(2));
    }
}
