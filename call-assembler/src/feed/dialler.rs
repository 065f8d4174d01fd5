//! The dialler feed: items of a dialler's list (or lines of a replayed JSON-lines file) in, one
//! completed call per CDR out ([`crate::dialler_call`]).
//!
//! Nothing is journaled and nothing is restored: every item is a whole call, committed (or
//! rejected with its raw bytes) in the commit that the source acknowledges only after it is
//! durable.

use std::time::Instant;

use super::{Commit, Event, Feed, FeedCounts, Out};
use crate::dialler_call;

/// What the dialler source hands over.
#[derive(Debug)]
pub enum DiallerInput {
    /// Bytes of a JSON-lines file (a replay): one CDR per line.
    Bytes(Vec<u8>),
    /// List items, each one CDR, in list order.
    Items(Vec<Vec<u8>>),
}

impl From<Vec<u8>> for DiallerInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

/// Checks and converts dialler CDRs, collecting what must be committed.
#[derive(Debug)]
pub struct DiallerFeed {
    source: String,
    site: String,
    max_item: usize,
    /// A monotonic instant and the wall clock (ms since the epoch) at that instant.
    clock: (Instant, i64),
    /// A replayed file's unfinished last line.
    partial: Vec<u8>,
    number: u64,
    out: Out,
}

impl DiallerFeed {
    /// A feed for `source` (`dialler` or `dialler/<site>`); `clock` ties the monotonic time
    /// passed in to the wall clock (calls carry the time they were received, in UTC, since a
    /// dialler CDR has none). Items over `max_item` bytes are rejected unparsed.
    pub fn new(source: &str, site: &str, max_item: usize, clock: (Instant, i64)) -> Self {
        Self {
            source: source.to_owned(),
            site: site.to_owned(),
            max_item,
            clock,
            partial: Vec::new(),
            number: 0,
            out: Out::default(),
        }
    }

    fn wall(&self, now: Instant) -> chrono::NaiveDateTime {
        let (at, ms) = self.clock;
        let since = i64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(0);
        chrono::DateTime::from_timestamp_millis(ms.saturating_add(since))
            .unwrap_or_default()
            .naive_utc()
    }

    /// Handles one item.
    pub fn handle_item(&mut self, now: Instant, raw: &[u8]) {
        self.number += 1;
        match dialler_call(&self.site, raw, self.wall(now), self.max_item) {
            Ok(call) => {
                self.out.counts.records += 1;
                self.out.call(call);
            }
            Err(e) => self.out.reject(
                &self.source,
                self.number,
                format!("item {}: {e}", self.number),
                e.to_string(),
                raw.to_vec(),
            ),
        }
    }

    /// Handles bytes of a JSON-lines file: every complete line is an item.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(i);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.line(now, line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(now, &whole);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > self.max_item.saturating_add(2) {
            // Keep the head only: the line is rejected as too large when it ends.
            self.partial.truncate(self.max_item.saturating_add(2));
        }
    }

    fn line(&mut self, now: Instant, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            self.handle_item(now, line);
        }
    }
}

impl Feed for DiallerFeed {
    type Input = DiallerInput;

    const KIND: &'static str = "dialler";

    fn state_names(_source: &str) -> Vec<String> {
        Vec::new()
    }

    fn handle_input(&mut self, now: Instant, input: DiallerInput) {
        match input {
            DiallerInput::Bytes(b) => self.handle_bytes(now, &b),
            DiallerInput::Items(items) => {
                for raw in &items {
                    self.handle_item(now, raw);
                }
            }
        }
    }

    fn handle_disconnect(&mut self) {
        self.partial.clear();
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_end(&mut self, now: Instant) {
        let last = std::mem::take(&mut self.partial);
        self.line(now, &last);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    fn take_commit(&mut self) -> Commit {
        std::mem::take(&mut self.out.commit)
    }

    fn open_calls(&self) -> usize {
        0
    }

    fn counts(&self) -> FeedCounts {
        self.out.counts
    }
}
