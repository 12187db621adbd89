//! The call-record writer: one thread fed by the driver's channel (`driver::Io::records`), so
//! neither the core's loop nor the runtime's threads ever wait on a disk. Each record is turned
//! into its written form once ([`CdrEntry`]) and handed to every [`RecordSink`]:
//!
//! - [`DailyFiles`]: appends one JSON line to `<state_dir>/cdr/cdr-YYYY-MM-DD.jsonl` (UTC date
//!   of the call's end), one `write` per line on a file opened for appending, synced after each
//!   batch;
//! - [`LogLine`]: one `info` line per call with its outcome;
//! - the admin's call statistics (metrics, status page), which implement the trait too;
//! - a PostgreSQL sink (the fleet issue) implements [`RecordSink`] and is added to the list in
//!   `server.rs`; nothing else changes.
//!
//! A failing sink is counted and logged (at most once a minute per sink) and never stops the
//! others.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{utc_date, CallRecord, CdrEntry, WallClock};

/// Where the daily files live.
pub fn cdr_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cdr")
}

/// The daily file's name for a UTC date `YYYY-MM-DD`.
pub fn file_name(date: &str) -> String {
    format!("cdr-{date}.jsonl")
}

/// Somewhere a finished call goes.
pub trait RecordSink: Send {
    /// A short name for logs (`files`, `log`, `stats`, `postgres`…).
    fn name(&self) -> &'static str;
    /// Takes one record; `entry` is its written form (wall-clock times).
    fn write(&mut self, record: &CallRecord, entry: &CdrEntry) -> Result<(), String>;
    /// Called when the channel is empty (after a batch) and at the end.
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// Appends JSON lines to the daily files under a directory.
#[derive(Debug)]
pub struct DailyFiles {
    dir: PathBuf,
    /// The date and file written last.
    open: Option<(String, File)>,
    dirty: bool,
}

impl DailyFiles {
    pub fn new(dir: impl Into<PathBuf>) -> DailyFiles {
        DailyFiles {
            dir: dir.into(),
            open: None,
            dirty: false,
        }
    }

    fn file(&mut self, date: &str) -> Result<&mut File, String> {
        if self.open.as_ref().is_none_or(|(d, _)| d != date) {
            if let Some((_, f)) = self.open.take() {
                let _ = f.sync_data();
            }
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| format!("{}: {e}", self.dir.display()))?;
            let path = self.dir.join(file_name(date));
            use std::os::unix::fs::OpenOptionsExt;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            self.open = Some((date.to_owned(), f));
        }
        match &mut self.open {
            Some((_, f)) => Ok(f),
            None => Err("no file".into()),
        }
    }
}

impl RecordSink for DailyFiles {
    fn name(&self) -> &'static str {
        "files"
    }

    fn write(&mut self, _: &CallRecord, entry: &CdrEntry) -> Result<(), String> {
        let date = entry.end.get(..10).unwrap_or("unknown").to_owned();
        let mut line = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let f = self.file(&date)?;
        // One write per line: with O_APPEND a reader never sees half a line from us.
        f.write_all(&line).map_err(|e| e.to_string())?;
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.dirty {
            if let Some((_, f)) = &self.open {
                f.sync_data().map_err(|e| e.to_string())?;
            }
            self.dirty = false;
        }
        Ok(())
    }
}

/// One `info` line per call with its outcome (no numbers: those are in the files).
#[derive(Debug, Default)]
pub struct LogLine;

impl RecordSink for LogLine {
    fn name(&self) -> &'static str {
        "log"
    }

    fn write(&mut self, r: &CallRecord, e: &CdrEntry) -> Result<(), String> {
        info!(
            call_id = %r.call_id,
            direction = r.direction.as_str(),
            outcome = r.outcome(),
            status = r.status,
            duration_s = e.duration_s,
            setup_s = e.setup_s.unwrap_or(-1.0),
            site = %r.site,
            gateway = r.gateway.as_deref().unwrap_or("-"),
            ended_by = r.ended_by.as_str(),
            reason = %r.reason,
            "call ended"
        );
        Ok(())
    }
}

/// The writer: the wall clock of this run, the sinks, and a count of failed writes.
pub struct Writer {
    clock: WallClock,
    sinks: Vec<Box<dyn RecordSink>>,
    errors: Arc<AtomicU64>,
    last_warning: Vec<Option<Instant>>,
}

impl Writer {
    pub fn new(clock: WallClock, sinks: Vec<Box<dyn RecordSink>>) -> Writer {
        let n = sinks.len();
        Writer {
            clock,
            sinks,
            errors: Arc::default(),
            last_warning: vec![None; n],
        }
    }

    /// Failed writes so far (any sink), for `sipedge_call_record_errors_total`.
    pub fn errors(&self) -> Arc<AtomicU64> {
        self.errors.clone()
    }

    /// Hands one record to every sink.
    pub fn write(&mut self, r: &CallRecord) {
        let entry = CdrEntry::from_record(r, &self.clock);
        for i in 0..self.sinks.len() {
            let res = match self.sinks.get_mut(i) {
                Some(s) => s.write(r, &entry),
                None => Ok(()),
            };
            if let Err(e) = res {
                self.failed(i, &e);
            }
        }
    }

    /// Flushes every sink.
    pub fn flush(&mut self) {
        for i in 0..self.sinks.len() {
            let res = match self.sinks.get_mut(i) {
                Some(s) => s.flush(),
                None => Ok(()),
            };
            if let Err(e) = res {
                self.failed(i, &e);
            }
        }
    }

    fn failed(&mut self, i: usize, e: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Some(last) = self.last_warning.get_mut(i) else {
            return;
        };
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            let sink = self.sinks.get(i).map_or("?", |s| s.name());
            warn!(sink, error = %e, "call record not written");
        }
    }

    /// Runs on its own thread until every sender of `rx` is gone, then flushes.
    pub fn spawn(
        mut self,
        mut rx: mpsc::Receiver<CallRecord>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || {
                while let Some(r) = rx.blocking_recv() {
                    self.write(&r);
                    while let Ok(r) = rx.try_recv() {
                        self.write(&r);
                    }
                    self.flush();
                }
                self.flush();
            })
    }
}

/// A writer for `state_dir` with the file and log sinks, its clock read now.
pub fn standard(state_dir: &Path, extra: Vec<Box<dyn RecordSink>>) -> Writer {
    let clock = WallClock::new(Instant::now(), SystemTime::now());
    let mut sinks: Vec<Box<dyn RecordSink>> = vec![
        Box::new(DailyFiles::new(cdr_dir(state_dir))),
        Box::new(LogLine),
    ];
    sinks.extend(extra);
    Writer::new(clock, sinks)
}

/// Today's file name (UTC) — what `cdr tail` follows first.
pub fn today_file(dir: &Path) -> PathBuf {
    dir.join(file_name(&utc_date(SystemTime::now())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::test_support::{answered, failed};

    struct Broken;
    impl RecordSink for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn write(&mut self, _: &CallRecord, _: &CdrEntry) -> Result<(), String> {
            Err("disk on fire".into())
        }
    }

    #[test]
    fn records_are_appended_as_json_lines_to_the_file_of_their_utc_day() {
        let tmp = tempfile::tempdir().unwrap();
        let i0 = Instant::now();
        // 2025-03-01T23:59:58Z: the first call ends that day, the second the next.
        let s0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_873_598);
        let mut w = Writer::new(
            WallClock::new(i0, s0),
            vec![Box::new(DailyFiles::new(tmp.path())), Box::new(Broken)],
        );
        let errors = w.errors();
        w.write(&failed(i0, "a@x", 486));
        w.write(&answered(i0, "b@x", 5));
        w.flush();
        let day1 = std::fs::read_to_string(tmp.path().join("cdr-2025-03-01.jsonl")).unwrap();
        let day2 = std::fs::read_to_string(tmp.path().join("cdr-2025-03-02.jsonl")).unwrap();
        assert_eq!(day1.lines().count(), 1);
        assert_eq!(day2.lines().count(), 1);
        let e: CdrEntry = serde_json::from_str(day2.trim()).unwrap();
        assert_eq!(e.call_id, "b@x");
        assert_eq!(e.duration_s, 5.0);
        let e: CdrEntry = serde_json::from_str(day1.trim()).unwrap();
        assert_eq!((e.status, e.outcome.as_str()), (486, "busy"));
        // The broken sink failed twice and did not stop the file sink.
        assert_eq!(errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_thread_drains_the_channel_and_stops_when_the_senders_are_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel(16);
        let w = standard(tmp.path(), Vec::new());
        let h = w.spawn(rx).unwrap();
        let i0 = Instant::now();
        for n in 0..3 {
            tx.try_send(answered(i0, &format!("c{n}@x"), 1)).unwrap();
        }
        drop(tx);
        h.join().unwrap();
        let text = std::fs::read_to_string(today_file(&cdr_dir(tmp.path()))).unwrap_or_else(|_| {
            // The records ended "now + 3 s": around midnight that is tomorrow's file.
            let dir = cdr_dir(tmp.path());
            let f = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
            std::fs::read_to_string(f.path()).unwrap()
        });
        assert_eq!(text.lines().count(), 3);
    }
}
