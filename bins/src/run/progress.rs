//! Progress of a replay on stderr (`--replay`): a live line on a terminal, a log line every few
//! seconds otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use call_assembler::feed::FeedCounts;
use cdr_sinks::outbox::{CommitReport, SinkTally};

/// Progress of a replay on stderr: a live line on a terminal, a log line every few seconds
/// otherwise.
pub struct Progress {
    bytes: Arc<AtomicU64>,
    total: Option<u64>,
    started: Instant,
    last: Mutex<Instant>,
    tty: bool,
}

impl Progress {
    /// Starts reporting: `bytes` is the count of bytes read so far, `total` the input's size.
    pub fn start(bytes: Arc<AtomicU64>, total: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            bytes,
            total,
            started: now,
            last: Mutex::new(now),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Reports `c` if the last report is old enough.
    pub fn update(&self, c: FeedCounts) {
        let every = if self.tty {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        let line = self.line(c);
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            tracing::info!("{line}");
        }
    }

    fn line(&self, c: FeedCounts) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let bytes = self.bytes.load(Ordering::Relaxed);
        let rate = c.records as f64 / secs;
        let mut s = format!(
            "{:.1} MB, {} records ({:.0}/s), {} calls",
            bytes as f64 / 1e6,
            c.records,
            rate,
            c.complete + c.incomplete
        );
        if let Some(total) = self.total.filter(|t| *t > 0) {
            let done = bytes as f64 / total as f64;
            let left = if done > 0.0 {
                secs * (1.0 - done) / done
            } else {
                0.0
            };
            s.push_str(&format!(", {:.0}%, {:.0} s left", done * 100.0, left));
        }
        s
    }

    /// The closing line: the replay's counts, then what the store and each sink got.
    pub fn finish(self, c: FeedCounts, tally: &RunTally) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        tracing::info!(
            "replay done in {:.1} s: {}; {}",
            self.started.elapsed().as_secs_f64(),
            self.line(c),
            tally
        );
    }
}

/// What a run stored and queued, added up over its commits: the replay's closing line.
#[derive(Debug, Clone, Default)]
pub struct RunTally {
    /// Records counted into the metrics so far.
    pub records_reported: u64,
    /// Calls newly stored.
    pub stored: u64,
    /// Calls (and progress records) the store already held (not stored again).
    pub already_stored: u64,
    /// Per remote sink: its name and what it was given.
    pub sinks: Vec<(String, SinkTally)>,
}

impl RunTally {
    /// An empty tally for the remote sinks `names` (in the outbox's order).
    pub fn new(names: &[String]) -> Self {
        Self {
            sinks: names
                .iter()
                .map(|n| (n.clone(), SinkTally::default()))
                .collect(),
            ..Self::default()
        }
    }

    /// Adds one commit's report.
    pub fn add(&mut self, report: &CommitReport) {
        self.stored += report.calls as u64;
        self.already_stored += report.duplicates as u64;
        for ((_, total), one) in self.sinks.iter_mut().zip(&report.sinks) {
            total.add(*one);
        }
    }
}

impl std::fmt::Display for RunTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "store: {} new, {} already stored",
            self.stored, self.already_stored
        )?;
        for (name, t) in &self.sinks {
            write!(f, "; {name}: {} queued, {} already had", t.queued, t.had)?;
        }
        Ok(())
    }
}
