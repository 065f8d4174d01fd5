//! The Asterisk AMI feed: raw AMI bytes (a replayed capture) or messages from an AMI client in,
//! [`Commit`]s out.
//!
//! Every message that changed an open call is journaled, as received, under the call's key
//! ([`AmiAssembler::last_key`]); when the call is emitted its keys are retired
//! ([`AmiAssembler::take_retired`]) and their journal entries removed in the same commit. After
//! a restart the journal is replayed through a fresh assembler on its original time line, so
//! calls that were open survive the restart whole.

use std::time::Instant;

use ami_proto::{AmiFramer, AmiMessage, Frame, HeaderBuf, Limits};

use super::{Commit, Event, Feed, FeedCounts, JournalEntry, Out, Restored};
use crate::{AmiAssembler, AmiAssemblerConfig, Call, Output, UpdateEvent};

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
pub struct AmiFeed {
    source: String,
    framer: AmiFramer,
    headers: HeaderBuf,
    asm: AmiAssembler,
    pub(super) out: Out,
}

impl AmiFeed {
    /// A feed with no open calls. `source` names its journal (`ami` or `ami/<site>`).
    pub fn new(source: &str, config: AmiAssemblerConfig) -> Self {
        Self {
            source: source.to_owned(),
            framer: AmiFramer::new(Limits::default()),
            headers: HeaderBuf::new(),
            asm: AmiAssembler::new(config),
            out: Out::default(),
        }
    }

    /// A feed whose open calls are rebuilt from the journal in `saved`: each message is
    /// replayed at the monotonic time that corresponds to when it was committed (`now` is
    /// `now_ms` on the wall clock). Calls whose deadlines passed while the relay was down are
    /// emitted at the first [`Feed::handle_timeout`].
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
                Err(e) => p
                    .out
                    .journal_reject(entry, format!("journaled message no longer parses: {e}")),
            }
        }
        // What was journaled stays journaled; only what the replay finished is retired.
        p.drain();
        p
    }

    /// Feeds bytes of a raw AMI stream.
    pub fn handle_bytes(&mut self, now: Instant, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(frame) = self.framer.next_frame() {
            match frame {
                Frame::Greeting { .. } => {}
                Frame::Message { bytes, number, .. } => {
                    match AmiMessage::parse_with(bytes, &mut self.headers) {
                        Ok(msg) => {
                            self.out.counts.records += 1;
                            self.asm.handle_message(now, &msg);
                            journal(&mut self.out, &self.asm, &self.source, bytes);
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

    /// Feeds messages decoded by an AMI client.
    pub fn handle_messages(&mut self, now: Instant, messages: &[AmiMessage<'_>]) {
        for msg in messages {
            self.out.counts.records += 1;
            self.asm.handle_message(now, msg);
            journal(&mut self.out, &self.asm, &self.source, msg.as_bytes());
            self.drain();
        }
    }

    /// After a reconnect: closes the calls whose channels vanished during the gap.
    pub fn handle_resync(&mut self, now: Instant, channels: &[AmiMessage<'_>]) {
        self.asm.resync(now, channels);
        self.drain();
    }

    /// The assembler, for its counters.
    pub fn assembler(&self) -> &AmiAssembler {
        &self.asm
    }

    fn drain(&mut self) {
        for call in emitted(&mut self.asm, &mut self.out, &self.source) {
            add_call(&mut self.out, call);
        }
    }
}

/// Journals `bytes` under the key of the call the assembler just applied them to, if any.
fn journal(out: &mut Out, asm: &AmiAssembler, source: &str, bytes: &[u8]) {
    if let Some(key) = asm.last_key() {
        out.commit.journal_add.push(JournalEntry {
            source: source.to_owned(),
            call_key: key.to_owned(),
            line: bytes.to_vec(),
        });
    }
}

/// Puts a call in the commit: a progress record with the updates, a final call with the calls.
pub(super) fn add_call(out: &mut Out, call: Call) {
    if call
        .update
        .as_ref()
        .is_some_and(|u| u.event != UpdateEvent::Ended)
    {
        out.commit.updates.push(call);
    } else {
        out.call(call);
    }
}

/// Takes what an Asterisk assembler emitted: its anomalies become events, the journal keys it
/// retired are removed from `source`'s journal, and its calls are returned in order (shared by
/// the AMI and the CEL feeds).
pub(super) fn emitted(asm: &mut AmiAssembler, out: &mut Out, source: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    while let Some(o) = asm.poll_output() {
        match o {
            Output::Call(call) => calls.push(call),
            Output::Anomaly(a) => out.events.push_back(Event::Anomaly(a)),
        }
    }
    for key in asm.take_retired() {
        out.commit
            .journal_remove
            .push((source.to_owned(), key.to_string()));
    }
    calls
}

impl Feed for AmiFeed {
    type Input = AmiInput;

    const KIND: &'static str = "ami";

    fn state_names(_source: &str) -> Vec<String> {
        Vec::new()
    }

    fn handle_input(&mut self, now: Instant, input: AmiInput) {
        match input {
            AmiInput::Bytes(b) => self.handle_bytes(now, &b),
            AmiInput::Messages(m) => self.handle_messages(now, &m),
            AmiInput::Resync(c) => self.handle_resync(now, &c),
        }
    }

    fn handle_disconnect(&mut self) {
        self.framer = AmiFramer::new(self.framer.limits());
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
    }

    fn handle_end(&mut self, now: Instant) {
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

    fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    fn take_commit(&mut self) -> Commit {
        std::mem::take(&mut self.out.commit)
    }

    fn open_calls(&self) -> usize {
        self.asm.open_calls()
    }

    fn counts(&self) -> FeedCounts {
        self.out.counts
    }
}
