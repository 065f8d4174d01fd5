//! The relayed-calls feed: calls another relay already assembled, as the JSON body every sink
//! sends (a JetStream message, a line of a JSONL sink's file), in; the same calls out, to be
//! committed as they are (`nats-relay`, the hub).
//!
//! Nothing is journaled and nothing is restored: every message is a whole call (or a progress
//! record). A call keeps its own id, source and site, so the outbox, which ignores a call id it
//! already has, stores a call published twice (a redelivery, a redundant relay) once.

use std::time::Instant;

use super::{Commit, Event, Feed, FeedCounts, Out};
use crate::Call;

/// What the relayed-calls source hands over.
#[derive(Debug)]
pub enum RelayedInput {
    /// Bytes of a JSON-lines file (a replay): one call per line.
    Bytes(Vec<u8>),
    /// Message bodies, each one call's JSON, in the order received.
    Messages(Vec<Vec<u8>>),
}

impl From<Vec<u8>> for RelayedInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

/// Decodes relayed calls, collecting what must be committed.
#[derive(Debug)]
pub struct RelayedFeed {
    source: String,
    max_item: usize,
    /// A replayed file's unfinished last line.
    partial: Vec<u8>,
    number: u64,
    out: Out,
}

impl RelayedFeed {
    /// A feed for `source` (`nats` or `nats/<site>`): the name its rejects are kept under.
    /// Messages over `max_item` bytes are rejected undecoded.
    pub fn new(source: &str, max_item: usize) -> Self {
        Self {
            source: source.to_owned(),
            max_item,
            partial: Vec::new(),
            number: 0,
            out: Out::default(),
        }
    }

    /// Handles one message: a call's JSON. A completed call goes to [`Commit::calls`], a
    /// progress record (with `update`) to [`Commit::updates`]; anything else is rejected.
    pub fn handle_message(&mut self, raw: &[u8]) {
        self.number += 1;
        let decoded = if raw.len() > self.max_item {
            Err(format!("{} bytes, more than {}", raw.len(), self.max_item))
        } else {
            serde_json::from_slice::<Call>(raw)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    if c.id.is_empty() {
                        Err("the call has no id".to_owned())
                    } else {
                        Ok(c)
                    }
                })
        };
        match decoded {
            Ok(call) => {
                self.out.counts.records += 1;
                if call.update.is_some() {
                    self.out.commit.updates.push(call);
                } else {
                    self.out.call(call);
                }
            }
            Err(e) => self.out.reject(
                &self.source,
                self.number,
                format!("message {}: not a call: {e}", self.number),
                e,
                raw.to_vec(),
            ),
        }
    }

    /// Handles bytes of a JSON-lines file: every complete line is a message.
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (line, tail) = rest.split_at(i);
            rest = tail.get(1..).unwrap_or_default();
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > self.max_item.saturating_add(2) {
            // Keep the head only: the line is rejected as too large when it ends.
            self.partial.truncate(self.max_item.saturating_add(2));
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            self.handle_message(line);
        }
    }
}

impl Feed for RelayedFeed {
    type Input = RelayedInput;

    const KIND: &'static str = "nats";

    fn state_names(_source: &str) -> Vec<String> {
        Vec::new()
    }

    fn handle_input(&mut self, _now: Instant, input: RelayedInput) {
        match input {
            RelayedInput::Bytes(b) => self.handle_bytes(&b),
            RelayedInput::Messages(items) => {
                for raw in &items {
                    self.handle_message(raw);
                }
            }
        }
    }

    fn handle_disconnect(&mut self) {
        self.partial.clear();
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn handle_end(&mut self, _now: Instant) {
        let last = std::mem::take(&mut self.partial);
        self.line(&last);
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

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests start their synthetic clock anywhere
mod tests {
    use super::*;

    fn call_json(id: &str, update: bool) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": id, "source": "smdr", "site": "a", "call_id": "1", "start": "2024/01/01 10:00:00",
            "start_time": "2024-01-01T10:00:00", "end_time": "2024-01-01T10:01:00",
            "duration": 60, "ring": 0, "hold": 0, "park": 0, "direction": "inbound",
            "caller": "1", "called": "2", "answered": true, "complete": true, "legs": []
        });
        if update {
            v["update"] = serde_json::json!({"sequence": 2, "kind": "updated"});
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn calls_updates_and_rejects() {
        let mut f = RelayedFeed::new("nats", 1 << 20);
        let ok = call_json("smdr:a:1", false);
        let serde_ok = serde_json::from_slice::<Call>(&ok);
        assert!(serde_ok.is_ok(), "{serde_ok:?}");
        f.handle_input(
            Instant::now(),
            RelayedInput::Messages(vec![ok.clone(), b"{not json".to_vec(), ok]),
        );
        let c = f.take_commit();
        assert_eq!(c.calls.len(), 2, "a repeat is the outbox's to drop");
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(f.counts().records, 2);
        assert_eq!(f.counts().bad_lines, 1);
        let mut small = RelayedFeed::new("nats", 10);
        small.handle_message(&call_json("x", false));
        assert_eq!(small.take_commit().rejects.len(), 1, "over the size limit");
    }

    #[test]
    fn jsonl_lines_split_anywhere() {
        let mut all = call_json("a", false);
        all.push(b'\n');
        all.extend(call_json("b", false));
        all.extend_from_slice(b"\r\n\n");
        all.extend(call_json("c", false));
        for split in 0..all.len() {
            let mut f = RelayedFeed::new("nats", 1 << 20);
            let (x, y) = all.split_at(split);
            f.handle_input(Instant::now(), RelayedInput::Bytes(x.to_vec()));
            f.handle_input(Instant::now(), RelayedInput::Bytes(y.to_vec()));
            f.handle_end(Instant::now());
            let ids: Vec<String> = f.take_commit().calls.into_iter().map(|c| c.id).collect();
            assert_eq!(ids, ["a", "b", "c"], "split at {split}");
        }
    }
}
