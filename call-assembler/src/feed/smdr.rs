//! The SMDR feed: bytes of an IP Office SMDR stream in, [`Commit`]s out.
//!
//! Continuation records (a call's records before its last one) are journaled under
//! `call_id/start`; calls of one final record never are. Each commit carries the assembler's
//! epoch state (under the source's name) and, when a call was emitted incomplete, the calls it
//! flushed (under [`SmdrFeed::flushed_state_name`]), so a restart goes on with the same ids.

use std::collections::HashMap;
use std::time::Instant;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use smdr_parse::{Frame, ParseError, SmdrFramer, SmdrRecord};

use super::{Commit, Event, Feed, FeedCounts, JournalEntry, Out, Restored};
use crate::{Call, OpenCallState, Output, SmdrAssembler, SmdrAssemblerConfig, SmdrAssemblerState};

/// What the feed saves with each commit besides the journal: the assembler's epoch state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedState {
    epoch: u32,
    highest: Option<(u64, NaiveDateTime)>,
}

/// Frames, parses and assembles SMDR, collecting what must be committed.
#[derive(Debug)]
pub struct SmdrFeed {
    source: String,
    framer: SmdrFramer,
    asm: SmdrAssembler,
    out: Out,
    /// The assembler's incomplete-call count when its flushed calls were last saved.
    saved_incomplete: u64,
}

/// The journal key of a call: `call_id/start`.
fn key(call_id: u64, start: NaiveDateTime) -> String {
    format!("{call_id}/{}", crate::iso_timestamp(&start))
}

impl SmdrFeed {
    /// A feed with nothing open. `source` names its journal and states (`smdr` or
    /// `smdr/<site>`).
    pub fn new(source: &str, config: SmdrAssemblerConfig, now: Instant) -> Self {
        Self::restore(source, config, now, &Restored::default())
    }

    /// The name under which the calls flushed incomplete are saved, beside `source`'s state.
    pub fn flushed_state_name(source: &str) -> String {
        format!("{source}/flushed")
    }

    /// A feed whose open calls are rebuilt from what was committed for `source`: the journal
    /// (lines in arrival order) and the states [`Feed::state_names`] names. Journaled lines
    /// that no longer parse are kept as rejects in the first commit.
    pub fn restore(
        source: &str,
        config: SmdrAssemblerConfig,
        now: Instant,
        saved: &Restored,
    ) -> Self {
        let state: SavedState = saved
            .state(source)
            .and_then(|s| serde_json::from_slice(s).ok())
            .unwrap_or_default();
        let flushed: Vec<((u64, NaiveDateTime), u32)> = saved
            .state(&Self::flushed_state_name(source))
            .and_then(|s| serde_json::from_slice(s).ok())
            .unwrap_or_default();
        let part_of: HashMap<String, u32> = flushed
            .iter()
            .map(|((id, start), part)| (key(*id, *start), *part))
            .collect();
        // Group the journal by call, keeping the order of first appearance. Every open call is
        // of the current epoch: a restart flushes all calls open before it.
        let mut open: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (e, _) in &saved.journal {
            match index.get(e.call_key.as_str()) {
                Some(&i) => {
                    if let Some((_, lines)) = open.get_mut(i) {
                        lines.push(e.line.clone());
                    }
                }
                None => {
                    index.insert(&e.call_key, open.len());
                    open.push((e.call_key.clone(), vec![e.line.clone()]));
                }
            }
        }
        let asm_state = SmdrAssemblerState {
            epoch: state.epoch,
            highest: state.highest,
            // An open call whose key was flushed before is that key's later part.
            open: open
                .into_iter()
                .map(|(key, lines)| OpenCallState {
                    epoch: state.epoch,
                    part: part_of.get(&key).copied().unwrap_or(0),
                    lines,
                })
                .collect(),
            flushed,
        };
        let (asm, bad) = SmdrAssembler::restore(config, now, &asm_state);
        let mut feed = Self {
            saved_incomplete: asm.stats().incomplete,
            source: source.to_owned(),
            framer: SmdrFramer::default(),
            asm,
            out: Out::default(),
        };
        for line in bad {
            feed.out.commit.rejects.push(super::Reject {
                source: feed.source.clone(),
                reason: "journaled line no longer parses".into(),
                raw: line,
            });
        }
        feed
    }

    /// Feeds bytes as read from the connection or file.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(frame) = self.framer.next_frame() {
            match frame {
                Frame::Line { line, number, .. } => match SmdrRecord::parse(line) {
                    Ok(record) => {
                        self.out.counts.records += 1;
                        if record.continuation {
                            self.out.commit.journal_add.push(JournalEntry {
                                source: self.source.clone(),
                                call_key: key(record.call_id, record.call_start),
                                line: line.to_vec(),
                            });
                        }
                        self.asm.handle_record(now, &record);
                    }
                    Err(error) => self.out.reject(
                        &self.source,
                        number,
                        format!("line {number}: {error}"),
                        error.to_string(),
                        line.to_vec(),
                    ),
                },
                Frame::TooLong { number, max, .. } => {
                    let error = ParseError {
                        offset: 0,
                        kind: smdr_parse::ParseErrorKind::LineTooLong { max },
                    };
                    self.out.reject(
                        &self.source,
                        number,
                        format!("line {number}: {error}"),
                        error.to_string(),
                        Vec::new(),
                    );
                }
            }
            self.drain();
        }
    }

    /// The assembler, for its counters.
    pub fn assembler(&self) -> &SmdrAssembler {
        &self.asm
    }

    fn drain(&mut self) {
        while let Some(out) = self.asm.poll_output() {
            match out {
                Output::Call(call) => self.add_call(call),
                Output::Anomaly(a) => self.out.events.push_back(Event::Anomaly(a)),
            }
        }
    }

    fn add_call(&mut self, call: Call) {
        // Calls of one final record were never journaled.
        if call.records.len() > 1 || !call.complete {
            self.out.commit.journal_remove.push((
                self.source.clone(),
                key(
                    call.records.first().map_or(0, |r| r.call_id),
                    call.start_time,
                ),
            ));
        }
        self.out.call(call);
    }
}

impl Feed for SmdrFeed {
    type Input = Vec<u8>;

    const KIND: &'static str = "smdr";

    fn state_names(source: &str) -> Vec<String> {
        vec![source.to_owned(), Self::flushed_state_name(source)]
    }

    fn handle_input(&mut self, now: Instant, input: Vec<u8>) {
        self.handle_bytes(now, &input);
    }

    /// A partial line is discarded (the PBX sends it again whole).
    fn handle_disconnect(&mut self) {
        self.framer = SmdrFramer::default();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
    }

    /// The last unterminated line, then every open call flushed as incomplete.
    fn handle_end(&mut self, now: Instant) {
        let tail = self.framer.finish().and_then(|f| match f {
            Frame::Line { line, .. } => Some(line.to_vec()),
            Frame::TooLong { .. } => None,
        });
        if let Some(mut line) = tail {
            line.push(b'\n');
            self.handle_bytes(now, &line);
        }
        self.asm.flush(now);
        self.drain();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.asm.poll_timeout()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Everything to commit, with the assembler's state.
    fn take_commit(&mut self) -> Commit {
        let mut commit = std::mem::take(&mut self.out.commit);
        if !commit.is_empty() {
            let saved = SavedState {
                epoch: self.asm.epoch(),
                highest: self.asm.highest(),
            };
            if let Ok(s) = serde_json::to_vec(&saved) {
                commit.states.push((self.source.clone(), s));
            }
            // The flushed calls change only when a call is emitted incomplete: save them then.
            let incomplete = self.asm.stats().incomplete;
            if incomplete != self.saved_incomplete {
                if let Ok(s) = serde_json::to_vec(&self.asm.flushed()) {
                    commit
                        .states
                        .push((Self::flushed_state_name(&self.source), s));
                    self.saved_incomplete = incomplete;
                }
            }
        }
        commit
    }

    fn open_calls(&self) -> usize {
        self.asm.open_calls()
    }

    fn counts(&self) -> FeedCounts {
        self.out.counts
    }
}
