//! The Asterisk AMI pipeline: raw AMI bytes (a replayed capture) or messages from the AMI client
//! in, a [`Batch`](cdr_sinks::outbox::Batch) for the outbox out. Pure code: no IO, time passed in.
//!
//! Every message that changed an open call is journaled, as received, under the call's key
//! ([`AmiAssembler::last_key`]); when the call is emitted its keys are retired
//! ([`AmiAssembler::take_retired`]) and their journal entries removed in the same commit. After
//! a restart the journal is replayed through a fresh assembler on its original time line, so
//! calls that were open survive the restart whole.

use std::time::Instant;

use ami_proto::{AmiFramer, AmiMessage, Frame, HeaderBuf, Limits};
use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call, Output, UpdateEvent};
use cdr_sinks::outbox::{JournalEntry, Reject};

use super::{Event, Out, Pipeline, Restored};

/// What the AMI source hands over.
#[derive(Debug)]
pub enum AmiInput {
    /// Raw bytes of an AMI stream (a replayed capture).
    Bytes(Vec<u8>),
    /// Messages from the live client, in order.
    Messages(Vec<AmiMessage<'static>>),
    /// After a (re)connect: the `CoreShowChannel` events listing every live channel.
    Resync(Vec<AmiMessage<'static>>),
}

impl From<Vec<u8>> for AmiInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

/// Frames, parses and assembles AMI, collecting what must be committed.
#[derive(Debug)]
pub struct AmiPipeline {
    source: String,
    framer: AmiFramer,
    headers: HeaderBuf,
    asm: AmiAssembler,
    out: Out,
}

impl AmiPipeline {
    /// A pipeline with no open calls. `source` names its journal (`ami` or `ami/<site>`).
    pub fn new(source: &str, config: AmiAssemblerConfig) -> Self {
        Self {
            source: source.to_owned(),
            framer: AmiFramer::new(Limits::default()),
            headers: HeaderBuf::new(),
            asm: AmiAssembler::new(config),
            out: Out::default(),
        }
    }

    /// A pipeline whose open calls are rebuilt from the journal in `saved`: each message is
    /// replayed at the monotonic time that corresponds to when it was committed (`now` is
    /// `now_ms` on the wall clock). Calls whose deadlines passed while the relay was down are
    /// emitted at the first [`AmiPipeline::handle_timeout`].
    pub fn restore(
        source: &str,
        config: AmiAssemblerConfig,
        now: Instant,
        now_ms: i64,
        saved: &Restored,
    ) -> Self {
        let mut p = Self::new(source, config);
        for (entry, at) in saved.journal_on_time_line(now, now_ms) {
            match AmiMessage::parse_with(&entry.line, &mut p.headers) {
                Ok(msg) => p.asm.handle_message(at, &msg),
                Err(e) => p.out.batch.rejects.push(Reject {
                    source: p.source.clone(),
                    reason: format!("journaled message no longer parses: {e}"),
                    raw: entry.line.clone(),
                }),
            }
        }
        // What was journaled stays journaled; only what the replay finished is retired.
        p.drain();
        p
    }

    /// Feeds bytes of a raw AMI stream.
    pub fn push(&mut self, now: Instant, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(frame) = self.framer.next_frame() {
            match frame {
                Frame::Greeting { .. } => {}
                Frame::Message { bytes, number, .. } => {
                    match AmiMessage::parse_with(bytes, &mut self.headers) {
                        Ok(msg) => {
                            self.out.counts.records += 1;
                            self.asm.handle_message(now, &msg);
                            if let Some(key) = self.asm.last_key() {
                                self.out.batch.journal_add.push(JournalEntry {
                                    source: self.source.clone(),
                                    call_key: key.to_owned(),
                                    line: bytes.to_vec(),
                                });
                            }
                        }
                        Err(e) => self.out.reject(
                            &self.source,
                            number,
                            format!("message {number}: {e}"),
                            e.to_string(),
                            bytes.to_vec(),
                        ),
                    }
                }
                Frame::Error { kind, number, .. } => self.out.reject(
                    &self.source,
                    number,
                    format!("message {number}: {kind}"),
                    kind.to_string(),
                    Vec::new(),
                ),
                Frame::Truncated { bytes, number, .. } => self.out.reject(
                    &self.source,
                    number,
                    format!("message {number}: cut off by the end of the input"),
                    "cut off by the end of the input".into(),
                    bytes.to_vec(),
                ),
            }
            self.drain();
        }
    }

    /// Feeds messages decoded by the AMI client.
    pub fn handle_messages(&mut self, now: Instant, messages: &[AmiMessage<'_>]) {
        for msg in messages {
            self.out.counts.records += 1;
            self.asm.handle_message(now, msg);
            if let Some(key) = self.asm.last_key() {
                self.out.batch.journal_add.push(JournalEntry {
                    source: self.source.clone(),
                    call_key: key.to_owned(),
                    line: msg.as_bytes().to_vec(),
                });
            }
            self.drain();
        }
    }

    /// After a reconnect: closes the calls whose channels vanished during the gap.
    pub fn resync(&mut self, now: Instant, channels: &[AmiMessage<'_>]) {
        self.asm.resync(now, channels);
        self.drain();
    }

    /// The assembler, for its counters.
    pub fn assembler(&self) -> &AmiAssembler {
        &self.asm
    }

    fn drain(&mut self) {
        for call in emitted(&mut self.asm, &mut self.out, &self.source) {
            self.add_call(call);
        }
    }

    fn add_call(&mut self, call: Call) {
        if call
            .update
            .as_ref()
            .is_some_and(|u| u.event != UpdateEvent::Ended)
        {
            self.out.batch.updates.push(call);
            return;
        }
        if call.complete {
            self.out.counts.complete += 1;
        } else {
            self.out.counts.incomplete += 1;
        }
        self.out.batch.calls.push(call);
    }
}

/// Takes what an Asterisk assembler emitted: its anomalies become events, the journal keys it
/// retired are removed from `source`'s journal, and its calls are returned in order (shared by
/// the AMI and the CEL CSV pipelines).
pub(super) fn emitted(asm: &mut AmiAssembler, out: &mut Out, source: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    while let Some(o) = asm.poll_output() {
        match o {
            Output::Call(call) => calls.push(call),
            Output::Anomaly(a) => out.events.push(Event::Anomaly(a)),
            _ => {}
        }
    }
    for key in asm.take_retired() {
        out.batch
            .journal_remove
            .push((source.to_owned(), key.to_string()));
    }
    calls
}

impl Pipeline for AmiPipeline {
    type Input = AmiInput;

    const KIND: &'static str = "ami";

    fn state_names(_source: &str) -> Vec<String> {
        Vec::new()
    }

    fn input(&mut self, now: Instant, input: AmiInput) {
        match input {
            AmiInput::Bytes(b) => self.push(now, &b),
            AmiInput::Messages(m) => self.handle_messages(now, &m),
            AmiInput::Resync(c) => self.resync(now, &c),
        }
    }

    fn reset_connection(&mut self) {
        self.framer = AmiFramer::new(self.framer.limits());
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
    }

    fn finish(&mut self, now: Instant) {
        let tail = self.framer.finish().map(|f| match f {
            Frame::Truncated { bytes, number, .. } => (bytes.to_vec(), number),
            Frame::Message { bytes, number, .. } => (bytes.to_vec(), number),
            Frame::Greeting { number, .. } | Frame::Error { number, .. } => (Vec::new(), number),
        });
        if let Some((bytes, number)) = tail.filter(|(b, _)| !b.is_empty()) {
            // A capture that ends without the blank line after its last message: a message
            // whose last line is whole is used, anything else is kept as a reject.
            let whole = bytes.ends_with(b"\n");
            match AmiMessage::parse_with(&bytes, &mut self.headers) {
                Ok(msg) if whole => {
                    self.out.counts.records += 1;
                    self.asm.handle_message(now, &msg);
                    self.drain();
                }
                _ => self.out.reject(
                    &self.source,
                    number,
                    format!("message {number}: cut off by the end of the input"),
                    "cut off by the end of the input".into(),
                    bytes,
                ),
            }
        }
        self.asm.flush(now);
        self.drain();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.asm.poll_timeout()
    }

    fn open_calls(&self) -> usize {
        self.asm.open_calls()
    }

    fn out(&self) -> &Out {
        &self.out
    }

    fn out_mut(&mut self) -> &mut Out {
        &mut self.out
    }
}
