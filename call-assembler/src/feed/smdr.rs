//! The SMDR feed: bytes of an IP Office SMDR stream in, [`Commit`]s out.
//!
//! Continuation records (a call's records before its last one) are journaled under
//! `call_id/start` (`call_id/start/part-N` for a later part of the call); calls of one final
//! record never are. Each commit carries the assembler's epoch state (under the source's name:
//! the epoch, the highest call, and the evidence of a PBX restart gathered so far: whether the
//! connection dropped and the run of restart-like records) and, when a call was emitted
//! incomplete, the calls it flushed (under [`SmdrFeed::flushed_state_name`]), so a restart goes
//! on with the same ids and makes the same decisions.

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
    #[serde(default)]
    armed: bool,
    #[serde(default)]
    run: Vec<(u64, NaiveDateTime)>,
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
    /// The state changed without anything else to commit (a disconnect): save it anyway.
    state_dirty: bool,
}

/// The journal key of a call's part: `call_id/start`, with `/part-N` for a later part.
fn key(call_id: u64, start: NaiveDateTime, part: u32) -> String {
    let base = format!("{call_id}/{}", crate::iso_timestamp(&start));
    if part == 0 {
        base
    } else {
        format!("{base}/part-{part}")
    }
}

/// A journal key split into the call's key and its part, when the key names one.
fn split_key(key: &str) -> (&str, Option<u32>) {
    match key.rsplit_once("/part-") {
        Some((base, part)) => match part.parse() {
            Ok(p) => (base, Some(p)),
            Err(_) => (key, None),
        },
        None => (key, None),
    }
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
            .map(|((id, start), part)| (key(*id, *start, 0), *part))
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
            // An open call's part is in its key; one journaled without (before parts were in
            // keys) whose key was flushed before is that key's later part.
            open: open
                .into_iter()
                .map(|(key, lines)| {
                    let (base, part) = split_key(&key);
                    OpenCallState {
                        epoch: state.epoch,
                        part: part.unwrap_or_else(|| part_of.get(base).copied().unwrap_or(0)),
                        lines,
                    }
                })
                .collect(),
            flushed,
            armed: state.armed,
            run: state.run,
        };
        let (asm, bad) = SmdrAssembler::restore(config, now, &asm_state);
        let mut feed = Self {
            saved_incomplete: asm.stats().incomplete,
            source: source.to_owned(),
            framer: SmdrFramer::default(),
            asm,
            out: Out::default(),
            state_dirty: false,
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
                        self.asm.handle_record(now, &record);
                        // Filed under the part it joined (a call past the record limit goes
                        // on in its next part).
                        if record.continuation {
                            let part = self.asm.current_part(record.call_id, record.call_start);
                            self.out.commit.journal_add.push(JournalEntry {
                                source: self.source.clone(),
                                call_key: key(record.call_id, record.call_start, part),
                                line: line.to_vec(),
                            });
                        }
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
            let call_id = call.records.first().map_or(0, |r| r.call_id);
            self.out.commit.journal_remove.push((
                self.source.clone(),
                key(call_id, call.start_time, call.part),
            ));
            if call.part > 0 {
                // A later part journaled before parts were in keys.
                self.out
                    .commit
                    .journal_remove
                    .push((self.source.clone(), key(call_id, call.start_time, 0)));
            }
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

    /// A partial line is discarded (the PBX sends it again whole), and the first record of the
    /// next connection may reveal a PBX restart on its own (a rebooting IP Office drops the
    /// connection; a forged line mid-stream does not).
    fn handle_disconnect(&mut self) {
        self.framer = SmdrFramer::default();
        self.asm.handle_disconnect();
        self.state_dirty = true;
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
        if !commit.is_empty() || std::mem::take(&mut self.state_dirty) {
            let restart = self.asm.restart_evidence();
            let saved = SavedState {
                epoch: self.asm.epoch(),
                highest: self.asm.highest(),
                armed: restart.0,
                run: restart.1,
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
