//! The SMDR pipeline: bytes in, a [`Batch`] for the outbox out. Pure code: no IO, time passed in.

use std::time::Instant;

use call_assembler::{
    Call, OpenCallState, Output, SmdrAssembler, SmdrAssemblerConfig, SmdrAssemblerState,
};
use cdr_sinks::outbox::{Batch, JournalEntry, Reject};
use serde::{Deserialize, Serialize};
use smdr_parse::{Frame, ParseError, SmdrFramer, SmdrRecord};

use super::{Event, Out, Pipeline, PipelineCounts, Restored};

/// What the pipeline saves with each batch besides the journal: the assembler's epoch state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SavedState {
    epoch: u32,
    highest: Option<(u64, chrono::NaiveDateTime)>,
}

/// Frames, parses and assembles SMDR, collecting what must be committed.
#[derive(Debug)]
pub struct SmdrPipeline {
    source: String,
    framer: SmdrFramer,
    asm: SmdrAssembler,
    out: Out,
    /// The assembler's incomplete-call count when its flushed calls were last saved.
    saved_incomplete: u64,
}

/// The journal key of a call: `call_id/start`.
fn key(call_id: u64, start: chrono::NaiveDateTime) -> String {
    format!("{call_id}/{}", call_assembler::iso_timestamp(&start))
}

impl SmdrPipeline {
    /// The name under which the calls flushed incomplete are saved, beside `source`'s state.
    pub fn flushed_state_name(source: &str) -> String {
        format!("{source}/flushed")
    }

    /// A pipeline whose open calls are rebuilt from `journal` (lines in arrival order), `state`
    /// and `flushed` (what the batches saved under `source` and
    /// [`SmdrPipeline::flushed_state_name`]). `source` names the journal (`smdr` or
    /// `smdr/<site>`).
    pub fn restore(
        source: &str,
        config: SmdrAssemblerConfig,
        now: Instant,
        journal: &[JournalEntry],
        state: Option<&[u8]>,
        flushed: Option<&[u8]>,
    ) -> Self {
        let saved: SavedState = state
            .and_then(|s| serde_json::from_slice(s).ok())
            .unwrap_or_default();
        let flushed: Vec<((u64, chrono::NaiveDateTime), u32)> = flushed
            .and_then(|s| serde_json::from_slice(s).ok())
            .unwrap_or_default();
        let part_of: std::collections::HashMap<String, u32> = flushed
            .iter()
            .map(|((id, start), part)| (key(*id, *start), *part))
            .collect();
        // Group the journal by call, keeping the order of first appearance. Every open call is
        // of the current epoch: a restart flushes all calls open before it.
        let mut open: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for e in journal {
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
        let state = SmdrAssemblerState {
            epoch: saved.epoch,
            highest: saved.highest,
            // An open call whose key was flushed before is that key's later part.
            open: open
                .into_iter()
                .map(|(key, lines)| OpenCallState {
                    epoch: saved.epoch,
                    part: part_of.get(&key).copied().unwrap_or(0),
                    lines,
                })
                .collect(),
            flushed,
        };
        let (asm, bad) = SmdrAssembler::restore(config, now, &state);
        let saved_incomplete = asm.stats().incomplete;
        let mut p = Self {
            saved_incomplete,
            source: source.to_owned(),
            framer: SmdrFramer::default(),
            asm,
            out: Out::default(),
        };
        for line in bad {
            p.out.batch.rejects.push(Reject {
                source: p.source.clone(),
                reason: "journaled line no longer parses".into(),
                raw: line,
            });
        }
        p
    }

    /// Feeds bytes as read from the connection or file.
    pub fn push(&mut self, now: Instant, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(frame) = self.framer.next_frame() {
            match frame {
                Frame::Line { line, number, .. } => match SmdrRecord::parse(line) {
                    Ok(record) => {
                        self.out.counts.records += 1;
                        if record.continuation {
                            self.out.batch.journal_add.push(JournalEntry {
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

    /// The connection dropped: a partial line is discarded (the PBX sends it again whole).
    pub fn reset_connection(&mut self) {
        self.framer = SmdrFramer::default();
    }

    /// Passes time: flushes calls idle past their timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
    }

    /// End of input (a replayed file): the last unterminated line, then every open call flushed
    /// as incomplete.
    pub fn finish(&mut self, now: Instant) {
        let tail = self.framer.finish().and_then(|f| match f {
            Frame::Line { line, .. } => Some(line.to_vec()),
            Frame::TooLong { .. } => None,
        });
        if let Some(mut line) = tail {
            line.push(b'\n');
            self.push(now, &line);
        }
        self.asm.flush(now);
        self.drain();
    }

    /// When [`SmdrPipeline::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.asm.poll_timeout()
    }

    /// Calls waiting for more records.
    pub fn open_calls(&self) -> usize {
        self.asm.open_calls()
    }

    /// Counters.
    pub fn counts(&self) -> PipelineCounts {
        self.out.counts
    }

    /// Events since the last call, for logs and metrics.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.out.events)
    }

    /// Everything to commit since the last call, with the assembler's state. Empty when
    /// nothing happened.
    pub fn take_batch(&mut self) -> Batch {
        let mut batch = std::mem::take(&mut self.out.batch);
        if !batch.is_empty() {
            let saved = SavedState {
                epoch: self.asm.epoch(),
                highest: self.asm.highest(),
            };
            if let Ok(s) = serde_json::to_vec(&saved) {
                batch.states.push((self.source.clone(), s));
            }
            // The flushed calls change only when a call is emitted incomplete: save them then.
            let incomplete = self.asm.stats().incomplete;
            if incomplete != self.saved_incomplete {
                if let Ok(s) = serde_json::to_vec(&self.asm.flushed()) {
                    batch
                        .states
                        .push((Self::flushed_state_name(&self.source), s));
                    self.saved_incomplete = incomplete;
                }
            }
        }
        batch
    }

    fn drain(&mut self) {
        while let Some(out) = self.asm.poll_output() {
            match out {
                Output::Call(call) => self.add_call(call),
                Output::Anomaly(a) => self.out.events.push(Event::Anomaly(a)),
                _ => {}
            }
        }
    }

    fn add_call(&mut self, call: Call) {
        if call.complete {
            self.out.counts.complete += 1;
        } else {
            self.out.counts.incomplete += 1;
        }
        // Calls of one final record were never journaled.
        if call.records.len() > 1 || !call.complete {
            self.out.batch.journal_remove.push((
                self.source.clone(),
                key(
                    call.records.first().map_or(0, |r| r.call_id),
                    call.start_time,
                ),
            ));
        }
        self.out.batch.calls.push(call);
    }
}

impl Pipeline for SmdrPipeline {
    type Input = Vec<u8>;

    const KIND: &'static str = "smdr";

    fn state_names(source: &str) -> Vec<String> {
        vec![source.to_owned(), Self::flushed_state_name(source)]
    }

    fn input(&mut self, now: Instant, input: Vec<u8>) {
        self.push(now, &input);
    }

    fn reset_connection(&mut self) {
        Self::reset_connection(self);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }

    fn finish(&mut self, now: Instant) {
        Self::finish(self, now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn open_calls(&self) -> usize {
        Self::open_calls(self)
    }

    fn out(&self) -> &Out {
        &self.out
    }

    fn out_mut(&mut self) -> &mut Out {
        &mut self.out
    }

    fn take_batch(&mut self) -> Batch {
        Self::take_batch(self)
    }
}

/// Builds the SMDR pipeline of a relay from what the outbox kept.
pub fn restore(
    source: &str,
    config: SmdrAssemblerConfig,
    now: Instant,
    saved: &Restored,
) -> SmdrPipeline {
    let journal: Vec<JournalEntry> = saved.journal.iter().map(|(e, _)| e.clone()).collect();
    SmdrPipeline::restore(
        source,
        config,
        now,
        &journal,
        saved.state(source),
        saved.state(&SmdrPipeline::flushed_state_name(source)),
    )
}
