//! The Cisco Meeting Server feed: posted CDR batches in, one completed meeting per call out.
//!
//! * Every record is kept for the sample receiver's API (`source_records`, one row per
//!   session and `recordIndex`), every posted body is kept raw (`inputs`), a body that does not
//!   parse is a reject.
//! * Duplicates: CMS numbers the records of a session (`recordIndex`) and resends a batch until
//!   it gets a 200, so a record whose exact (session, index) was committed before is a
//!   duplicate: dropped (and answered 200). The committed indexes are kept per session as runs,
//!   bounded ([`seen`]: a forged index far ahead hides no other), and saved with each batch.
//! * Records of open calls are journaled (as a one-record CMS batch) under their call id and
//!   replayed after a restart; the journal of a call goes when the call is emitted.
//! * The assembler's surprises ([`CmsAnomaly`](crate::CmsAnomaly)) come out as
//!   [`Event::Anomaly`] with [`Anomaly::Cms`](crate::Anomaly::Cms).

use std::collections::HashMap;
use std::time::Instant;

use super::{Commit, Event, Feed, FeedCounts, JournalEntry, Out, RawInput, Restored, SourceRecord};
use crate::{
    CmsAssembler, CmsAssemblerConfig, CmsBatch, CmsRecord, Output, cms_record_api_json,
    parse_cms_xml, write_cms_records,
};

mod seen;

use seen::Sessions;

/// What the receiver hands over.
#[derive(Debug)]
pub enum CmsInput {
    /// A replayed file's bytes: the whole file is one posted body (parsed at the end).
    Bytes(Vec<u8>),
    /// A posted body that parsed.
    Batch {
        /// The body as received.
        raw: Vec<u8>,
        /// What it holds.
        batch: CmsBatch<'static>,
    },
    /// A posted body that did not parse: kept as a reject.
    Reject {
        /// The body as received.
        raw: Vec<u8>,
        /// Why (with the position).
        reason: String,
    },
}

impl From<Vec<u8>> for CmsInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

/// Checks, deduplicates, journals and assembles CMS records.
#[derive(Debug)]
pub struct CmsFeed {
    source: String,
    asm: CmsAssembler,
    sessions: Sessions,
    sessions_changed: bool,
    /// Leg, recording and stream ids to their call's id (records that name only themselves).
    owner: HashMap<String, String>,
    replay: Vec<u8>,
    posts: u64,
    out: Out,
    /// Records dropped as duplicates; records reported missing by CMS.
    duplicates: u64,
    missing: u64,
}

/// The journal key of a record: its call's id, when it names one or its object is known.
fn key_of(owner: &HashMap<String, String>, r: &CmsRecord<'_>) -> Option<String> {
    r.call_id()
        .map(str::to_owned)
        .or_else(|| r.object_id().and_then(|id| owner.get(id).cloned()))
}

impl CmsFeed {
    /// The name of the state holding the committed record indexes per session.
    pub fn sessions_state_name(source: &str) -> String {
        format!("{source}/sessions")
    }

    /// A feed with nothing open and no session seen. `source` names its journal and states
    /// (`cms` or `cms/<site>`).
    pub fn new(source: &str, config: CmsAssemblerConfig, now: Instant) -> Self {
        Self::restore(source, config, now, &Restored::default())
    }

    /// A feed whose open calls are rebuilt from the journal in `saved`, and which goes on
    /// dropping the records of each session whose index was committed.
    pub fn restore(
        source: &str,
        config: CmsAssemblerConfig,
        now: Instant,
        saved: &Restored,
    ) -> Self {
        let sessions = saved
            .state(&Self::sessions_state_name(source))
            .and_then(Sessions::from_saved)
            .unwrap_or_default();
        let mut p = Self {
            source: source.to_owned(),
            asm: CmsAssembler::new(config),
            sessions,
            sessions_changed: false,
            owner: HashMap::new(),
            replay: Vec::new(),
            posts: 0,
            out: Out::default(),
            duplicates: 0,
            missing: 0,
        };
        for (entry, _) in &saved.journal {
            match parse_cms_xml(&entry.line) {
                Ok(batch) => {
                    for r in &batch.records {
                        p.learn(r);
                        p.asm.handle_record(now, r);
                    }
                }
                Err(e) => p
                    .out
                    .journal_reject(entry, format!("journaled record no longer parses: {e}")),
            }
        }
        p.drain();
        p
    }

    /// Records dropped as duplicates, and records CMS said it could not deliver
    /// (`numPreceedingRecordsMissing`), since start.
    pub fn dropped(&self) -> (u64, u64) {
        (self.duplicates, self.missing)
    }

    fn learn(&mut self, r: &CmsRecord<'_>) {
        if let (Some(call), Some(id)) = (r.call_id(), r.object_id()) {
            if call != id {
                self.owner.insert(id.to_owned(), call.to_owned());
            }
        }
    }

    /// Handles one parsed post (`raw` is kept as received).
    pub fn handle_post(&mut self, now: Instant, raw: Vec<u8>, batch: &CmsBatch<'_>) {
        self.posts += 1;
        let session = batch.session.as_deref().unwrap_or_default().to_owned();
        if let Some(n) = batch.preceding_missing.filter(|n| *n > 0) {
            self.missing_records(n, &session);
        }
        for r in &batch.records {
            if let Some(n) = r.preceding_missing.filter(|n| *n > 0) {
                self.missing_records(n, &session);
            }
            if let Some(index) = r.record_index.filter(|_| !session.is_empty()) {
                // A duplicate still marks its run used: the state changes either way.
                self.sessions_changed = true;
                if self.sessions.check_and_insert(&session, index) {
                    self.duplicates += 1;
                    continue;
                }
                self.out.commit.records.push(SourceRecord {
                    source: self.source.clone(),
                    session: session.clone(),
                    index: i64::try_from(index).unwrap_or(i64::MAX),
                    body: serde_json::to_vec(&cms_record_api_json(r)).unwrap_or_default(),
                });
            }
            self.out.counts.records += 1;
            self.learn(r);
            self.asm.handle_record(now, r);
            if let Some(key) = key_of(&self.owner, r) {
                self.out.commit.journal_add.push(JournalEntry {
                    source: self.source.clone(),
                    call_key: key,
                    line: write_cms_records(
                        &session,
                        batch.call_bridge.as_deref(),
                        std::slice::from_ref(r),
                    ),
                });
            }
            self.drain();
        }
        self.out.commit.inputs.push(RawInput {
            source: self.source.clone(),
            body: raw,
        });
    }

    fn missing_records(&mut self, n: u64, session: &str) {
        self.missing += n;
        self.out.events.push_back(Event::BadInput {
            number: self.posts,
            error: format!("CMS reports {n} records of session {session} missing before this one"),
        });
    }

    /// Keeps a body that did not parse.
    pub fn handle_reject(&mut self, raw: Vec<u8>, reason: String) {
        self.posts += 1;
        self.out
            .reject(&self.source, self.posts, reason.clone(), reason, raw);
    }

    fn drain(&mut self) {
        while let Some(out) = self.asm.poll_output() {
            match out {
                Output::Call(call) => {
                    let id = call.call_id.to_string();
                    self.owner.retain(|_, c| *c != id);
                    self.out
                        .commit
                        .journal_remove
                        .push((self.source.clone(), id));
                    self.out.call(call);
                }
                Output::Anomaly(a) => self.out.events.push_back(Event::Anomaly(a)),
            }
        }
    }
}

impl Feed for CmsFeed {
    type Input = CmsInput;

    const KIND: &'static str = "cms";

    fn state_names(source: &str) -> Vec<String> {
        vec![Self::sessions_state_name(source)]
    }

    fn handle_input(&mut self, now: Instant, input: CmsInput) {
        match input {
            CmsInput::Bytes(b) => self.replay.extend_from_slice(&b),
            CmsInput::Batch { raw, batch } => self.handle_post(now, raw, &batch),
            CmsInput::Reject { raw, reason } => self.handle_reject(raw, reason),
        }
    }

    fn handle_disconnect(&mut self) {
        self.replay.clear();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
    }

    /// A replayed file is one posted body: parsed now; then every open call is flushed.
    fn handle_end(&mut self, now: Instant) {
        let body = std::mem::take(&mut self.replay);
        if !body.iter().all(u8::is_ascii_whitespace) {
            match parse_cms_xml(&body) {
                Ok(batch) => {
                    let batch = batch.into_owned();
                    self.handle_post(now, body, &batch);
                }
                Err(e) => self.handle_reject(body, e.to_string()),
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

    /// Everything to commit, with the sessions' committed indexes when they changed.
    fn take_commit(&mut self) -> Commit {
        let mut commit = std::mem::take(&mut self.out.commit);
        if self.sessions_changed {
            if let Ok(s) = serde_json::to_vec(&self.sessions) {
                commit
                    .states
                    .push((Self::sessions_state_name(&self.source), s));
            }
            self.sessions_changed = false;
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
