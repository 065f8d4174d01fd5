//! Pipelines: what a source delivers (bytes, or messages from a protocol client) in, a
//! [`Batch`] for the outbox out. Pure code: no IO, time passed in.
//!
//! Every relay runs the same loop ([`crate::runtime`]) over one [`Pipeline`]: feed input,
//! commit the batch, acknowledge. The pipeline owns the source's framing, parsing, assembler and
//! journal keys; the loop owns the outbox, the workers and the clock.

use std::collections::HashMap;
use std::time::Instant;

use call_assembler::Anomaly;
use cdr_sinks::outbox::{Batch, JournalEntry, Reject};

pub mod ami;
pub mod cel_csv;
pub mod cms;
pub mod dialler;
pub mod reconcile;
pub mod smdr;

pub use ami::{AmiInput, AmiPipeline};
pub use cms::{CmsInput, CmsPipeline};
pub use dialler::{DiallerInput, DiallerPipeline};
pub use smdr::SmdrPipeline;

/// Something worth counting or logging that happened in a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An input unit (a line, a message) was rejected and kept in the reject table.
    BadInput {
        /// 1-based number of the unit on the current connection or file.
        number: u64,
        /// Why.
        error: String,
    },
    /// The assembler reported something surprising.
    Anomaly(Anomaly),
    /// AMI and the CDR were compared for a call (see [`reconcile`]).
    Reconciled(reconcile::Reconciled),
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Records (SMDR lines, AMI messages) parsed.
    pub records: u64,
    /// Lines or messages rejected.
    pub bad_lines: u64,
    /// Complete calls emitted.
    pub complete: u64,
    /// Incomplete calls emitted.
    pub incomplete: u64,
}

/// What a pipeline collected since the last commit, and its counters.
#[derive(Debug, Default)]
pub struct Out {
    /// To commit.
    pub batch: Batch,
    /// To log and count.
    pub events: Vec<Event>,
    /// Counters since start.
    pub counts: PipelineCounts,
}

impl Out {
    /// Keeps a unit (line, message, item, body) that could not be used: counted, reported as
    /// an event, and its bytes kept in the reject table under `reason`.
    pub fn reject(
        &mut self,
        source: &str,
        number: u64,
        reason: String,
        error: String,
        raw: Vec<u8>,
    ) {
        self.counts.bad_lines += 1;
        self.batch.rejects.push(Reject {
            source: source.to_owned(),
            reason,
            raw,
        });
        self.events.push(Event::BadInput { number, error });
    }
}

/// What the outbox kept for a source: its journal (with commit times, ms since the epoch) and
/// its saved states by name.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    /// Journal entries, oldest first.
    pub journal: Vec<(JournalEntry, i64)>,
    /// Saved states by name.
    pub states: HashMap<String, Vec<u8>>,
}

impl Restored {
    /// The journal with each entry's place on the monotonic clock: `now` is `now_ms` on the
    /// wall clock, and an entry committed `d` ago is replayed at `now - d`, never going
    /// backwards (even when the monotonic clock cannot reach that far back), so an assembler
    /// fed these times sees the gaps between its inputs as they were.
    pub fn journal_on_time_line(
        &self,
        now: Instant,
        now_ms: i64,
    ) -> impl Iterator<Item = (&JournalEntry, Instant)> + '_ {
        let mut last: Option<Instant> = None;
        self.journal.iter().map(move |(entry, received_ms)| {
            let age =
                std::time::Duration::from_millis(u64::try_from(now_ms - received_ms).unwrap_or(0));
            let at = match now.checked_sub(age) {
                Some(t) => last.map_or(t, |l| t.max(l)),
                None => last.unwrap_or(now),
            };
            last = Some(at);
            (entry, at)
        })
    }

    /// The state saved under `name`.
    pub fn state(&self, name: &str) -> Option<&[u8]> {
        self.states.get(name).map(Vec::as_slice)
    }
}

/// One source kind's processing, driven by [`crate::runtime`].
pub trait Pipeline: Send + 'static {
    /// What the source hands over: raw bytes (from a TCP stream or a replayed file, hence
    /// `From<Vec<u8>>`) or decoded messages.
    type Input: From<Vec<u8>> + Send + 'static;

    /// The source kind (`smdr`, `ami`): metrics label and default source name.
    const KIND: &'static str;

    /// The names of the states the pipeline saves for `source` (loaded into [`Restored`]).
    fn state_names(source: &str) -> Vec<String>;

    /// Feeds input as received.
    fn input(&mut self, now: Instant, input: Self::Input);

    /// The connection dropped: partial input is discarded.
    fn reset_connection(&mut self);

    /// Passes time (timeouts, periodic updates).
    fn handle_timeout(&mut self, now: Instant);

    /// End of input (a replayed file): every open call is flushed.
    fn finish(&mut self, now: Instant);

    /// When [`Pipeline::handle_timeout`] should run next.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Calls still open.
    fn open_calls(&self) -> usize;

    /// What the pipeline collected.
    fn out(&self) -> &Out;

    /// What the pipeline collected, to take from.
    fn out_mut(&mut self) -> &mut Out;

    /// Counters.
    fn counts(&self) -> PipelineCounts {
        self.out().counts
    }

    /// Events since the last call, for logs and metrics.
    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.out_mut().events)
    }

    /// Everything to commit since the last call; empty when nothing happened.
    fn take_batch(&mut self) -> Batch {
        std::mem::take(&mut self.out_mut().batch)
    }
}
