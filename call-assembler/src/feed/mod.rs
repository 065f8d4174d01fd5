//! Feeds: the embedder's unit. A feed takes what one source delivers (SMDR bytes, AMI messages,
//! CEL/CDR rows, CMS batches, dialler items) with `now`, and hands out one [`Commit`] at a time:
//! the journal entries of open calls, the completed calls and progress records, the rejects,
//! and the source's resume state. It restores itself from what was committed before a crash
//! ([`Restored`]).
//!
//! An embedder's whole program is:
//!
//! 1. read from the source; `feed.handle_input(now, input)` (and `feed.handle_timeout(now)`
//!    when [`Feed::poll_timeout`] passes);
//! 2. log or count what [`Feed::poll_event`] returns;
//! 3. `outbox.commit(&feed.take_commit())` (for example `cdr_sinks::outbox::Outbox`, which takes
//!    a [`Commit`] as it is), and only then acknowledge the input upstream;
//! 4. wake the delivery engine.
//!
//! At start, load the source's journal (with commit times) and the states named by
//! [`Feed::state_names`] into a [`Restored`], and build the feed with its `restore`
//! constructor: open calls come back whole, and every call goes out exactly once.
//!
//! Feeds are pure code like the assemblers: no IO, no clock; time is an argument.
//!
//! | feed | input | journal | states |
//! |---|---|---|---|
//! | [`SmdrFeed`] | bytes of the SMDR stream | continuation records by `call_id/start` (`/part-N` for a later part) | assembler epoch and restart evidence, flushed calls |
//! | [`AmiFeed`] | AMI bytes or messages | messages by the assembler's key | - |
//! | [`CelFeed`] | lines of cel_custom / cdr_csv files, or database rows in their fields | rows by call key, CDR rows by `cdr:<linkedid>` | file positions, database watermarks |
//! | [`ReconcileFeed`] | AMI input and CDR rows | AMI's, CDR rows, AMI summaries (`seen:`) | CDR position or watermark |
//! | [`CmsFeed`] | posted CMS batches | records by call id | highest `recordIndex` per session |
//! | [`DiallerFeed`] | list items (one CDR each) | - | - |
//! | [`RelayedFeed`] | calls relayed as JSON (JetStream messages, JSONL lines) | - | - |

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::{Anomaly, Call};

mod ami;
mod cel;
mod cms;
mod dialler;
mod reconcile;
mod relayed;
mod smdr;

pub use ami::{AmiFeed, AmiInput};
pub use cel::{CDR_HOLD, CdrRow, CelData, CelFeed, CelInput, CsvFile, FilePos, cdr_row, parse_cdr};
pub use cms::{CmsFeed, CmsInput};
pub use dialler::{DiallerFeed, DiallerInput};
pub use reconcile::{AsteriskInput, ReconcileConfig, ReconcileFeed, Reconciled};
pub use relayed::{RelayedFeed, RelayedInput};
pub use smdr::SmdrFeed;

#[cfg(test)]
mod tests;

/// One record line of a still-open call, journaled so the call survives a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The source kind and instance (for example `smdr`).
    pub source: String,
    /// The call's key within the source (SMDR: `call_id/start`).
    pub call_key: String,
    /// The record as received.
    pub line: Vec<u8>,
}

/// Input that could not be used, kept with its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Which source it came from.
    pub source: String,
    /// Why it was rejected.
    pub reason: String,
    /// The bytes as received.
    pub raw: Vec<u8>,
}

/// A body as a source received it (a posted CDR batch), kept as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInput {
    /// Which source received it.
    pub source: String,
    /// The bytes.
    pub body: Vec<u8>,
}

/// One record of a source that numbers its records (CMS: session and `recordIndex`), kept for
/// an API that lists records; a record already kept under the same key is not kept again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// Which source.
    pub source: String,
    /// The numbering's scope (CMS: the session).
    pub session: String,
    /// The record's number in it.
    pub index: i64,
    /// What to keep (CMS: the record as the sample receiver's API shows it, JSON).
    pub body: Vec<u8>,
}

/// Everything one source commits at once: the unit a feed hands out and a store commits in one
/// transaction.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Records of calls that are still open.
    pub journal_add: Vec<JournalEntry>,
    /// Calls (source, key) whose journal entries are no longer needed.
    pub journal_remove: Vec<(String, String)>,
    /// Completed (or flushed) calls, each to be delivered to every sink.
    pub calls: Vec<Call>,
    /// Progress records of calls still going on (progressive mode: `update` is `started` or
    /// `updated`), each delivered to every sink under its own key; not part of the call store,
    /// which holds only final calls.
    pub updates: Vec<Call>,
    /// Rejected input.
    pub rejects: Vec<Reject>,
    /// Bodies kept as received.
    pub inputs: Vec<RawInput>,
    /// Numbered records kept for listing.
    pub records: Vec<SourceRecord>,
    /// Small named states to save with the commit (for SMDR the assembler's epoch, and the calls
    /// it flushed incomplete; a file position; a database watermark); each replaces the value
    /// saved under its name before.
    pub states: Vec<(String, Vec<u8>)>,
}

impl Commit {
    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.journal_add.is_empty()
            && self.journal_remove.is_empty()
            && self.calls.is_empty()
            && self.updates.is_empty()
            && self.rejects.is_empty()
            && self.inputs.is_empty()
            && self.records.is_empty()
            && self.states.is_empty()
    }

    /// Saves `value` under `name` with the commit; a later value in the same commit replaces it.
    pub fn save_state(&mut self, name: String, value: Vec<u8>) {
        match self.states.iter_mut().find(|(n, _)| *n == name) {
            Some(s) => s.1 = value,
            None => self.states.push((name, value)),
        }
    }
}

/// Something worth counting or logging that happened in a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// AMI and the CDR were compared for a call (see [`ReconcileFeed`]).
    Reconciled(Reconciled),
    /// CDR rows that no call claimed within [`CDR_HOLD`] (or by the end of the input) were
    /// dropped ([`CelFeed`]).
    UnclaimedCdr {
        /// Their Linkedid.
        linkedid: String,
        /// How many rows.
        rows: usize,
    },
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedCounts {
    /// Records (SMDR lines, AMI messages, rows, items) parsed.
    pub records: u64,
    /// Lines or messages rejected.
    pub bad_lines: u64,
    /// Complete calls emitted.
    pub complete: u64,
    /// Incomplete calls emitted.
    pub incomplete: u64,
}

/// What the store kept for a source: its journal (with commit times, ms since the epoch) and
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
            let age = Duration::from_millis(u64::try_from(now_ms - received_ms).unwrap_or(0));
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

    /// What is left after committing `commit` at `at_ms` on top of this: its journal entries
    /// added, the removed ones gone, its states saved. A store does the same in its
    /// transaction; tests and embedders without one can keep a `Restored` this way.
    pub fn apply(&mut self, commit: &Commit, at_ms: i64) {
        self.journal
            .extend(commit.journal_add.iter().cloned().map(|e| (e, at_ms)));
        if !commit.journal_remove.is_empty() {
            self.journal.retain(|(e, _)| {
                !commit
                    .journal_remove
                    .iter()
                    .any(|(s, k)| *s == e.source && *k == e.call_key)
            });
        }
        for (name, value) in &commit.states {
            self.states.insert(name.clone(), value.clone());
        }
    }
}

/// One source kind's feed: what the source hands over in, [`Commit`]s and [`Event`]s out.
///
/// Drive it like an assembler: `handle_*` with `now`, then drain [`Feed::poll_event`], commit
/// [`Feed::take_commit`], and sleep until [`Feed::poll_timeout`] or more input.
pub trait Feed {
    /// What the source hands over (bytes, decoded messages, rows, items).
    type Input;

    /// The source kind (`smdr`, `ami`, `cms`, `dialler`): metrics label and default source
    /// name.
    const KIND: &'static str;

    /// The names of the states the feed saves for `source` (to load into [`Restored`]).
    fn state_names(source: &str) -> Vec<String>;

    /// Feeds input as received.
    fn handle_input(&mut self, now: Instant, input: Self::Input);

    /// The connection dropped: partial input is discarded.
    fn handle_disconnect(&mut self);

    /// Passes time (timeouts, periodic decisions).
    fn handle_timeout(&mut self, now: Instant);

    /// End of input (a replayed file): everything open is decided or flushed.
    fn handle_end(&mut self, now: Instant);

    /// When [`Feed::handle_timeout`] should run next.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event since the last call, for logs and metrics.
    fn poll_event(&mut self) -> Option<Event>;

    /// Everything to commit since the last call; empty when nothing happened.
    fn take_commit(&mut self) -> Commit;

    /// Calls still open.
    fn open_calls(&self) -> usize;

    /// Counters since start.
    fn counts(&self) -> FeedCounts;
}

/// What a feed collected since the last commit, its events and its counters.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub(crate) commit: Commit,
    pub(crate) events: VecDeque<Event>,
    pub(crate) counts: FeedCounts,
}

impl Out {
    /// Keeps a unit (line, message, item, body) that could not be used: counted, reported as
    /// an event, and its bytes kept in the reject table under `reason`.
    pub(crate) fn reject(
        &mut self,
        source: &str,
        number: u64,
        reason: String,
        error: String,
        raw: Vec<u8>,
    ) {
        self.counts.bad_lines += 1;
        self.commit.rejects.push(Reject {
            source: source.to_owned(),
            reason,
            raw,
        });
        self.events.push_back(Event::BadInput { number, error });
    }

    /// Keeps journaled bytes that can no longer be used (no event: nothing new was read).
    pub(crate) fn journal_reject(&mut self, entry: &JournalEntry, reason: String) {
        self.commit.rejects.push(Reject {
            source: entry.source.clone(),
            reason,
            raw: entry.line.clone(),
        });
    }

    /// Counts a final call and adds it to the commit.
    pub(crate) fn call(&mut self, call: Call) {
        if call.complete {
            self.counts.complete += 1;
        } else {
            self.counts.incomplete += 1;
        }
        self.commit.calls.push(call);
    }
}
