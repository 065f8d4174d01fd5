//! The dialler pipeline: items of a dialler's Redis list (or lines of a replayed JSON-lines
//! file) in, one completed call per CDR out. Pure code: no IO, time passed in.
//!
//! Nothing is journaled: every item is a whole call, committed (or rejected with its raw bytes)
//! in the batch that the source acknowledges only after the commit.

use std::time::Instant;

use call_assembler::dialler_call;

use super::{Out, Pipeline, Restored};

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
pub struct DiallerPipeline {
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

impl DiallerPipeline {
    /// A pipeline for `source` (`dialler` or `dialler/<site>`); `clock` ties the monotonic time
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
    pub fn item(&mut self, now: Instant, raw: &[u8]) {
        self.number += 1;
        match dialler_call(&self.site, raw, self.wall(now), self.max_item) {
            Ok(call) => {
                self.out.counts.records += 1;
                self.out.counts.complete += 1;
                self.out.batch.calls.push(call);
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

    fn lines(&mut self, now: Instant, bytes: &[u8]) {
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
            self.item(now, line);
        }
    }
}

impl Pipeline for DiallerPipeline {
    type Input = DiallerInput;

    const KIND: &'static str = "dialler";

    fn state_names(_source: &str) -> Vec<String> {
        Vec::new()
    }

    fn input(&mut self, now: Instant, input: DiallerInput) {
        match input {
            DiallerInput::Bytes(b) => self.lines(now, &b),
            DiallerInput::Items(items) => {
                for raw in &items {
                    self.item(now, raw);
                }
            }
        }
    }

    fn reset_connection(&mut self) {
        self.partial.clear();
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn finish(&mut self, now: Instant) {
        let last = std::mem::take(&mut self.partial);
        self.line(now, &last);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn open_calls(&self) -> usize {
        0
    }

    fn out(&self) -> &Out {
        &self.out
    }

    fn out_mut(&mut self) -> &mut Out {
        &mut self.out
    }
}

/// Builds the dialler pipeline of a relay (nothing to restore: no call is ever open).
pub fn restore(
    source: &str,
    site: &str,
    max_item: usize,
    now: Instant,
    now_ms: i64,
    _saved: &Restored,
) -> DiallerPipeline {
    DiallerPipeline::new(source, site, max_item, (now, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads_and_bad_items_are_rejected_with_their_bytes() {
        let now = Instant::now();
        let mut p = DiallerPipeline::new("dialler", "", 200, (now, 1_795_000_000_000));
        p.input(
            now,
            DiallerInput::Bytes(b"{\"internal_call_ref\":\"a\"}\r\n{\"intern".to_vec()),
        );
        p.input(
            now,
            DiallerInput::Bytes(b"al_call_ref\":\"b\"}\n\nnot json\n".to_vec()),
        );
        p.input(now, DiallerInput::Items(vec![b"[1]".to_vec()]));
        p.input(
            now,
            DiallerInput::Bytes(b"{\"dial_number\":\"1\"}".to_vec()),
        );
        p.finish(now);
        let b = p.take_batch();
        let refs: Vec<&str> = b.calls.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(refs.len(), 3);
        assert_eq!(&refs[..2], ["a", "b"]);
        let raw: Vec<&[u8]> = b.rejects.iter().map(|r| r.raw.as_slice()).collect();
        assert_eq!(raw, [b"not json".as_slice(), b"[1]"]);
        assert_eq!(p.counts().bad_lines, 2);
        assert_eq!(
            b.calls[0].start_time,
            chrono::DateTime::from_timestamp_millis(1_795_000_000_000)
                .unwrap()
                .naive_utc()
        );
    }
}
