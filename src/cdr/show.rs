//! `sipedge cdr show --last N [--json]` and `sipedge cdr tail [--json]`: the call records in
//! the daily files under `<state_dir>/cdr/`, read whether the appliance runs or not. A line
//! that does not parse (a file edited by hand, a line being written) is skipped and counted
//! on stderr, never a reason to stop.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;

use super::CdrEntry;

#[derive(Subcommand, Debug)]
pub enum CdrCommand {
    /// The last N call records, oldest first.
    Show {
        /// How many records (at least 1).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        last: u64,
        /// A JSON array of the records as written.
        #[arg(long)]
        json: bool,
    },
    /// Follow the records as they are written (the newest daily file, then the next day's).
    Tail {
        /// Records already written to print first.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
        last: u64,
        /// One JSON line per record, as written.
        #[arg(long)]
        json: bool,
    },
}

/// The daily files of `dir`, oldest first (their names sort by date).
pub fn daily_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cdr-") && n.ends_with(".jsonl"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    v.sort();
    Ok(v)
}

/// The last `n` records of the files in `dir`, oldest first, and how many lines did not parse.
pub fn last_entries(dir: &Path, n: usize) -> std::io::Result<(Vec<CdrEntry>, usize)> {
    let mut out: VecDeque<CdrEntry> = VecDeque::new();
    let mut bad = 0;
    for f in daily_files(dir)?.iter().rev() {
        if out.len() >= n {
            break;
        }
        let mut in_file: VecDeque<CdrEntry> = VecDeque::new();
        let reader = BufReader::new(std::fs::File::open(f)?);
        for line in reader.split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<CdrEntry>(&line) {
                Ok(e) => {
                    if in_file.len() >= n {
                        in_file.pop_front();
                    }
                    in_file.push_back(e);
                }
                Err(_) => bad += 1,
            }
        }
        while let Some(e) = in_file.pop_back() {
            if out.len() >= n {
                break;
            }
            out.push_front(e);
        }
    }
    Ok((out.into(), bad))
}

/// One record on one line, for people.
pub fn format_text(e: &CdrEntry) -> String {
    let mut s = format!(
        "{}  {:<8} {:<9} {:>3}  {:>8.3}s  {} -> {}",
        e.start, e.direction, e.outcome, e.status, e.duration_s, e.caller, e.callee
    );
    if let Some(u) = &e.user {
        s.push_str(&format!("  user={u}"));
    }
    if let Some(g) = &e.gateway {
        s.push_str(&format!("  gateway={g}"));
    }
    s.push_str(&format!("  ended_by={}", e.ended_by));
    if let Some(l) = &e.legs {
        s.push_str(&format!(
            "  media gw rx/tx {}/{} cloud rx/tx {}/{}{}",
            l.gateway.rx_packets,
            l.gateway.tx_packets,
            l.cloud.rx_packets,
            l.cloud.tx_packets,
            if l.cloud.srtp { " (cloud SRTP)" } else { "" }
        ));
    }
    s.push_str(&format!("  call_id={}", e.call_id));
    if !e.reason.is_empty() {
        s.push_str(&format!("  reason={:?}", e.reason));
    }
    s
}

/// Writes a line; `false` when stdout is closed (`| head`): the caller stops quietly.
fn out(w: &mut impl Write, line: &str) -> bool {
    writeln!(w, "{line}").and_then(|_| w.flush()).is_ok()
}

/// Runs a `cdr` command on the files of `dir`.
pub fn run(cmd: CdrCommand, dir: &Path) -> Result<(), String> {
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match cmd {
        CdrCommand::Show { last, json } => {
            let n = usize::try_from(last).unwrap_or(usize::MAX);
            let (entries, bad) =
                last_entries(dir, n).map_err(|e| format!("{}: {e}", dir.display()))?;
            if bad > 0 {
                eprintln!(
                    "warning: {bad} lines in {} are not call records; skipped",
                    dir.display()
                );
            }
            if json {
                let text = serde_json::to_string_pretty(&entries).map_err(|e| e.to_string())?;
                out(&mut w, &text);
            } else if entries.is_empty() {
                out(&mut w, &format!("no call records in {}", dir.display()));
            } else {
                for e in &entries {
                    if !out(&mut w, &format_text(e)) {
                        break;
                    }
                }
            }
            Ok(())
        }
        CdrCommand::Tail { last, json } => {
            let n = usize::try_from(last).unwrap_or(usize::MAX);
            if n > 0 {
                let (entries, _) =
                    last_entries(dir, n).map_err(|e| format!("{}: {e}", dir.display()))?;
                for e in &entries {
                    if !print_entry(&mut w, e, json) {
                        return Ok(());
                    }
                }
            }
            let mut t = Tail::at_end(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            loop {
                for line in t.poll().map_err(|e| format!("{}: {e}", dir.display()))? {
                    let Ok(e) = serde_json::from_str::<CdrEntry>(&line) else {
                        continue;
                    };
                    if !print_entry(&mut w, &e, json) {
                        return Ok(());
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

fn print_entry(w: &mut impl Write, e: &CdrEntry, json: bool) -> bool {
    if json {
        match serde_json::to_string(e) {
            Ok(s) => out(w, &s),
            Err(_) => true,
        }
    } else {
        out(w, &format_text(e))
    }
}

/// Follows the newest daily file of a directory: complete lines appended since the last poll,
/// then the next day's file when it appears.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    file: Option<PathBuf>,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    /// Starts after what is written now.
    pub fn at_end(dir: &Path) -> std::io::Result<Tail> {
        let file = daily_files(dir)?.pop();
        let offset = match &file {
            Some(f) => std::fs::metadata(f)?.len(),
            None => 0,
        };
        Ok(Tail {
            dir: dir.to_owned(),
            file,
            offset,
            partial: Vec::new(),
        })
    }

    /// Complete lines written since the last call.
    pub fn poll(&mut self) -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        if let Some(f) = self.file.clone() {
            self.read_new(&f, &mut lines)?;
        }
        // A newer file (the next day): finish the old one above, then switch.
        let newest = daily_files(&self.dir)?.pop();
        if newest.is_some() && newest != self.file {
            self.file = newest;
            self.offset = 0;
            self.partial.clear();
            if let Some(f) = self.file.clone() {
                self.read_new(&f, &mut lines)?;
            }
        }
        Ok(lines)
    }

    fn read_new(&mut self, path: &Path, lines: &mut Vec<String>) -> std::io::Result<()> {
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
            self.partial.clear();
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        f.take(len.saturating_sub(self.offset))
            .read_to_end(&mut buf)?;
        self.offset = self.offset.saturating_add(buf.len() as u64);
        self.partial.extend_from_slice(&buf);
        while let Some(pos) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line).trim().to_owned();
            if !text.is_empty() {
                lines.push(text);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::test_support::{answered, failed};
    use crate::cdr::writer::{DailyFiles, Writer};
    use crate::cdr::WallClock;
    use std::time::{Instant, SystemTime};

    fn write_days(dir: &Path) {
        let i0 = Instant::now();
        let day = |d: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_787_200 + d * 86_400);
        for (d, ids) in [(0, &["a", "b"][..]), (1, &["c", "d", "e"][..])] {
            let mut w = Writer::new(
                WallClock::new(i0, day(d)),
                vec![Box::new(DailyFiles::new(dir))],
            );
            for id in ids {
                w.write(&answered(i0, id, 3));
            }
            w.flush();
        }
    }

    #[test]
    fn last_n_spans_days_oldest_first_and_skips_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        write_days(tmp.path());
        let files = daily_files(tmp.path()).unwrap();
        assert_eq!(files.len(), 2);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&files[1])
            .unwrap()
            .write_all(b"not json\n{\"half\":\n")
            .unwrap();
        let (e, bad) = last_entries(tmp.path(), 4).unwrap();
        let ids: Vec<&str> = e.iter().map(|e| e.call_id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d", "e"]);
        assert_eq!(bad, 2);
        let (e, _) = last_entries(tmp.path(), 1).unwrap();
        assert_eq!(e[0].call_id, "e");
        let (e, _) = last_entries(&tmp.path().join("none"), 5).unwrap();
        assert!(e.is_empty());
        let entry = CdrEntry::from_record(
            &failed(Instant::now(), "f@x", 486),
            &WallClock::new(Instant::now(), SystemTime::UNIX_EPOCH),
        );
        let line = format_text(&entry);
        assert!(line.contains("outbound") && line.contains("busy") && line.contains("486"));
    }

    #[test]
    fn tail_sees_appended_lines_whole_and_the_next_days_file() {
        let tmp = tempfile::tempdir().unwrap();
        let f1 = tmp.path().join("cdr-2025-03-01.jsonl");
        std::fs::write(&f1, b"{\"old\":1}\n").unwrap();
        let mut t = Tail::at_end(tmp.path()).unwrap();
        assert!(t.poll().unwrap().is_empty());
        let mut f = std::fs::OpenOptions::new().append(true).open(&f1).unwrap();
        f.write_all(b"{\"n\":1}\n{\"n\":").unwrap();
        assert_eq!(t.poll().unwrap(), ["{\"n\":1}"]);
        f.write_all(b"2}\n").unwrap();
        std::fs::write(tmp.path().join("cdr-2025-03-02.jsonl"), b"{\"n\":3}\n").unwrap();
        assert_eq!(t.poll().unwrap(), ["{\"n\":2}", "{\"n\":3}"]);
        assert!(t.poll().unwrap().is_empty());
    }
}
