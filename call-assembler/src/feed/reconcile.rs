//! AMI live, the CDR as the book of record: AMI input and CDR rows in, [`Commit`]s out.
//!
//! AMI loses whatever happens while its connection is down. With a CDR source beside it (the
//! cdr_csv file, or the cdr table's rows in cdr_csv's fields), this feed compares the two after
//! the fact:
//!
//! * AMI input goes through the [`AmiFeed`] unchanged: its calls are delivered as soon as
//!   they are assembled. Every Linkedid AMI sees (the keys it journals and retires, the calls it
//!   emits) is remembered.
//! * CDR rows are grouped by Linkedid, journaled under `cdr:<linkedid>`, and wait
//!   [`ReconcileConfig::wait`] after their first row. Then:
//!   - AMI emitted a call with that Linkedid: **matched**. Its disposition and billsec are
//!     compared with the CDR's; each difference is a **disagreement** (counted and logged).
//!   - AMI has the Linkedid in an open call: they wait again.
//!   - AMI never saw the Linkedid (it happened during a gap): the call is rebuilt from its CDR
//!     rows ([`crate::AmiAssembler::call_from_cdr`]) and delivered with
//!     `reconciled: true`. It has the id AMI would have given it, so if AMI did deliver it
//!     after all (before a restart, say), the outbox keeps the first one only.
//! * A call AMI emitted is remembered (journaled under `seen:<linkedid>` with its disposition
//!   and billsec) until its CDR rows match it; one that finds none within
//!   [`ReconcileConfig::flag_after`] is **missing from the CDR**: counted and logged.
//! * At the end of the input (`--replay` beside a CDR file read `--once`), everything waiting
//!   is decided at once.
//!
//! Both waits and the CDR rows survive a restart (the journal); the CDR source's position is
//! saved with the commit like the CSV follower's. What is not kept across a restart: which
//! Linkedids AMI saw in calls emitted before it (their CDR rows then match the `seen:` entry,
//! or are rebuilt, and the outbox drops the rebuilt call as a repeat of the delivered one).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::cel::{
    CdrRow, CelData, CelFeed, CelInput, CsvFile, cdr_row, parse_cdr, rejected_reason, row_line,
};
use super::{AmiFeed, AmiInput, Commit, Event, Feed, FeedCounts, JournalEntry, Restored};
use crate::csv::{Item, RecordReader, RejectedRecord};
use crate::{AmiAssemblerConfig, Call, UpdateEvent};

/// How long the two sides wait for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// How long a Linkedid's CDR rows wait, after the first one, for AMI to have seen the call
    /// before the call is rebuilt from them.
    pub wait: Duration,
    /// How long a call AMI emitted waits for CDR rows before it is flagged as missing from the
    /// CDR.
    pub flag_after: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(60),
            flag_after: Duration::from_secs(600),
        }
    }
}

/// What the reconciling source hands over.
#[derive(Debug)]
pub enum AsteriskInput {
    /// From AMI (or a replayed AMI capture).
    Ami(AmiInput),
    /// CDR rows (cdr_csv lines, or cdr table rows in cdr_csv's fields), with their position.
    Cdr(CelInput),
}

impl From<Vec<u8>> for AsteriskInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Ami(AmiInput::Bytes(bytes))
    }
}

/// The outcome of comparing AMI with the CDR for one Linkedid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// AMI and the CDR both have the call.
    Matched {
        /// The Linkedid.
        linkedid: String,
    },
    /// A field differs between AMI's call and the CDR's.
    Disagreement {
        /// The Linkedid.
        linkedid: String,
        /// `disposition` or `billsec`.
        field: &'static str,
        /// AMI's value.
        ami: String,
        /// The CDR's value.
        cdr: String,
    },
    /// AMI never saw the call: rebuilt from the CDR and delivered.
    Rebuilt {
        /// The Linkedid.
        linkedid: String,
    },
    /// CDR rows AMI never saw that no call could be rebuilt from (kept as rejects).
    Unusable {
        /// The Linkedid.
        linkedid: String,
    },
    /// AMI emitted the call but the CDR has no row of it.
    MissingFromCdr {
        /// The Linkedid.
        linkedid: String,
    },
}

impl Reconciled {
    /// The metric label of the outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Matched { .. } => "matched",
            Self::Disagreement { .. } => "disagreement",
            Self::Rebuilt { .. } => "reconciled",
            Self::Unusable { .. } => "unusable",
            Self::MissingFromCdr { .. } => "missing_from_cdr",
        }
    }
}

/// What AMI said about a call it emitted, kept until the CDR confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct AmiSummary {
    disposition: String,
    billsec: Option<u32>,
}

#[derive(Debug)]
struct Awaiting {
    summary: AmiSummary,
    since: Instant,
}

#[derive(Debug)]
struct PendingCdr {
    rows: Vec<CdrRow>,
    lines: Vec<String>,
    since: Instant,
}

/// Whether AMI's Linkedid is still in an open call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Open,
    Emitted(Instant),
}

/// The AMI feed plus the comparison with the CDR (see the module documentation).
#[derive(Debug)]
pub struct ReconcileFeed {
    ami: AmiFeed,
    source: String,
    config: ReconcileConfig,
    /// CDR bytes after the last newline (a replayed file only).
    partial: RecordReader,
    lines: u64,
    seen: HashMap<String, Seen>,
    awaiting: HashMap<String, Awaiting>,
    pending: HashMap<String, PendingCdr>,
    /// How far into the commit's journal additions, removals and calls [`Self::note`] looked.
    noted: (usize, usize, usize),
    outcomes: VecDeque<Reconciled>,
}

const CDR_PREFIX: &str = "cdr:";
const SEEN_PREFIX: &str = "seen:";

impl ReconcileFeed {
    /// A feed with nothing open. `source` names its journal (`ami` or `ami/<site>`).
    pub fn new(source: &str, asm: AmiAssemblerConfig, config: ReconcileConfig) -> Self {
        Self::around(AmiFeed::new(source, asm), source, config)
    }

    fn around(ami: AmiFeed, source: &str, config: ReconcileConfig) -> Self {
        Self {
            ami,
            source: source.to_owned(),
            config,
            partial: RecordReader::new(),
            lines: 0,
            seen: HashMap::new(),
            awaiting: HashMap::new(),
            pending: HashMap::new(),
            noted: (0, 0, 0),
            outcomes: VecDeque::new(),
        }
    }

    /// The state name under which the CDR file's position is saved (the same as
    /// `CEL_MODE=csv`'s, as it is the same file).
    pub fn cdr_state_name(source: &str) -> String {
        CelFeed::state_name(source, CsvFile::Cdr)
    }

    /// A feed rebuilt from `saved`: AMI's open calls from its journal (as
    /// [`AmiFeed::restore`] does), the waiting CDR rows and the AMI calls waiting for their
    /// CDR rows from theirs, on the original time line (`now` is `now_ms` on the wall clock).
    pub fn restore(
        source: &str,
        asm: AmiAssemblerConfig,
        config: ReconcileConfig,
        now: Instant,
        now_ms: i64,
        saved: &Restored,
    ) -> Self {
        let (mine, ami): (Vec<_>, Vec<_>) = saved.journal.iter().cloned().partition(|(e, _)| {
            e.call_key.starts_with(CDR_PREFIX) || e.call_key.starts_with(SEEN_PREFIX)
        });
        let ami_saved = Restored {
            journal: ami,
            states: saved.states.clone(),
        };
        let mut p = Self::around(
            AmiFeed::restore(source, asm, now, now_ms, &ami_saved),
            source,
            config,
        );
        for (entry, _) in &ami_saved.journal {
            p.seen.insert(entry.call_key.clone(), Seen::Open);
        }
        let mine = Restored {
            journal: mine,
            states: HashMap::new(),
        };
        for (entry, at) in mine.journal_on_time_line(now, now_ms) {
            let text = String::from_utf8_lossy(&entry.line);
            if let Some(linkedid) = entry.call_key.strip_prefix(SEEN_PREFIX) {
                match serde_json::from_str::<AmiSummary>(&text) {
                    Ok(summary) => {
                        p.seen.insert(linkedid.to_owned(), Seen::Emitted(at));
                        p.awaiting
                            .insert(linkedid.to_owned(), Awaiting { summary, since: at });
                    }
                    Err(e) => p
                        .ami
                        .out
                        .journal_reject(entry, format!("not an AMI call summary: {e}")),
                }
            } else if let Some((key, row)) = parse_cdr(&text) {
                p.add_cdr_row(at, key, row, text.into_owned(), false);
            } else {
                p.ami
                    .out
                    .journal_reject(entry, "journaled CDR line no longer parses".into());
            }
        }
        p.note(now);
        p
    }

    /// Feeds bytes of the cdr_csv file (`at_end`: there is no more); a record past the bounds
    /// of [`crate::csv::BoundedScanner`] is rejected and reading goes on at the next line.
    fn push_cdr(&mut self, now: Instant, bytes: &[u8], at_end: bool) {
        self.partial.push(bytes);
        while let Some(item) = self.partial.next(at_end) {
            let range = match item {
                Item::Record(range) => range,
                Item::Rejected(r) => {
                    self.rejected_cdr(&r);
                    continue;
                }
            };
            let line = String::from_utf8_lossy(self.partial.get(range))
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            self.lines += 1;
            if line.trim().is_empty() {
                continue;
            }
            match parse_cdr(&line) {
                Some((key, row)) => self.new_cdr_row(now, key, row, line),
                None => self.bad_cdr(line),
            }
        }
    }

    fn rejected_cdr(&mut self, r: &RejectedRecord) {
        self.lines += 1;
        let why = rejected_reason(CsvFile::Cdr, r);
        self.ami
            .out
            .reject(&self.source, self.lines, why.clone(), why, r.head.clone());
    }

    /// [`ReconcileFeed::push_cdr`] for rows already in fields ([`CelData::Rows`]): each is
    /// used as its line would be, and numbered as a line.
    fn push_cdr_rows(&mut self, now: Instant, rows: Vec<Vec<String>>) {
        for fields in rows {
            self.lines += 1;
            // A row without fields is the blank line a file would have: skipped.
            if fields.is_empty() {
                continue;
            }
            let line = row_line(&fields);
            match cdr_row(fields) {
                Some((key, row)) => self.new_cdr_row(now, key, row, line),
                None => self.bad_cdr(line),
            }
        }
    }

    fn new_cdr_row(&mut self, now: Instant, key: String, row: CdrRow, line: String) {
        self.ami.out.counts.records += 1;
        self.add_cdr_row(now, key, row, line, true);
    }

    fn bad_cdr(&mut self, line: String) {
        let number = self.lines;
        self.ami.out.reject(
            &self.source,
            number,
            format!("cdr line {number}: not a cdr_csv row (16 to 21 fields)"),
            "not a cdr_csv row (16 to 21 fields)".into(),
            line.into_bytes(),
        );
    }

    fn add_cdr_row(&mut self, now: Instant, key: String, row: CdrRow, line: String, journal: bool) {
        if journal {
            let entry = JournalEntry {
                source: self.source.clone(),
                call_key: format!("{CDR_PREFIX}{key}"),
                line: line.clone().into_bytes(),
            };
            self.ami.out.commit.journal_add.push(entry);
        }
        let p = self.pending.entry(key).or_insert_with(|| PendingCdr {
            rows: Vec::new(),
            lines: Vec::new(),
            since: now,
        });
        p.rows.push(row);
        p.lines.push(line);
    }

    /// Looks at what the AMI feed added to the commit since the last look: the Linkedids it
    /// journaled and retired, and the calls it emitted.
    fn note(&mut self, now: Instant) {
        let (a, r, c) = self.noted;
        let batch = &self.ami.out.commit;
        let mut opened = Vec::new();
        for e in batch.journal_add.iter().skip(a) {
            // Most messages belong to a call already seen: no copy of its key then.
            let mine = e.call_key.starts_with(CDR_PREFIX) || e.call_key.starts_with(SEEN_PREFIX);
            if !mine && !self.seen.contains_key(&e.call_key) {
                opened.push(e.call_key.clone());
            }
        }
        let mut retired = Vec::new();
        for (_, key) in batch.journal_remove.iter().skip(r) {
            if !key.starts_with(CDR_PREFIX) && !key.starts_with(SEEN_PREFIX) {
                retired.push(key.clone());
            }
        }
        let mut emitted = Vec::new();
        for call in batch.calls.iter().skip(c) {
            if !call.reconciled && is_final(call) {
                emitted.push((
                    call.linkedid.to_string(),
                    AmiSummary {
                        disposition: call.disposition.to_string(),
                        billsec: call.billsec,
                    },
                ));
            }
        }
        self.noted = (
            batch.journal_add.len(),
            batch.journal_remove.len(),
            batch.calls.len(),
        );
        for key in opened {
            self.seen.entry(key).or_insert(Seen::Open);
        }
        for key in retired {
            self.seen.insert(key, Seen::Emitted(now));
        }
        for (linkedid, summary) in emitted {
            if linkedid.is_empty() {
                continue;
            }
            self.seen.insert(linkedid.clone(), Seen::Emitted(now));
            let line = serde_json::to_vec(&summary).unwrap_or_default();
            let out = &mut self.ami.out;
            out.commit.journal_add.push(JournalEntry {
                source: self.source.clone(),
                call_key: format!("{SEEN_PREFIX}{linkedid}"),
                line,
            });
            self.awaiting.insert(
                linkedid,
                Awaiting {
                    summary,
                    since: now,
                },
            );
        }
        let batch = &self.ami.out.commit;
        self.noted = (
            batch.journal_add.len(),
            batch.journal_remove.len(),
            batch.calls.len(),
        );
    }

    /// Decides the CDR groups and AMI calls whose wait is over at `now` (all of them with
    /// `all`).
    fn decide(&mut self, now: Instant, all: bool) {
        let mut due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| all || now.saturating_duration_since(p.since) >= self.config.wait)
            .map(|(k, _)| k.clone())
            .collect();
        // Decided in Linkedid order, not the map's: the same input gives the same commits.
        due.sort_unstable();
        for key in due {
            match (
                self.awaiting.contains_key(&key),
                self.seen.get(&key).copied(),
            ) {
                (true, _) => {
                    let Some(p) = self.pending.remove(&key) else {
                        continue;
                    };
                    self.forget(&key);
                    if let Some(a) = self.awaiting.remove(&key) {
                        self.unjournal(SEEN_PREFIX, &key);
                        self.compare(&key, &a.summary, &p.rows);
                    }
                    self.outcomes
                        .push_back(Reconciled::Matched { linkedid: key });
                }
                (false, Some(Seen::Open)) if !all => {
                    // AMI still has the call open: wait for it to be emitted.
                    if let Some(p) = self.pending.get_mut(&key) {
                        p.since = now;
                    }
                }
                (false, Some(_)) => {
                    // Seen by AMI in a call under another Linkedid (merged), or still open
                    // at the end of the input.
                    self.pending.remove(&key);
                    self.forget(&key);
                    self.outcomes
                        .push_back(Reconciled::Matched { linkedid: key });
                }
                (false, None) => {
                    let Some(p) = self.pending.remove(&key) else {
                        continue;
                    };
                    self.forget(&key);
                    self.rebuild(key, p);
                }
            }
        }
        let mut flagged: Vec<String> = self
            .awaiting
            .iter()
            .filter(|(_, a)| {
                all || now.saturating_duration_since(a.since) >= self.config.flag_after
            })
            .map(|(k, _)| k.clone())
            .collect();
        flagged.sort_unstable();
        for key in flagged {
            self.awaiting.remove(&key);
            self.unjournal(SEEN_PREFIX, &key);
            self.outcomes
                .push_back(Reconciled::MissingFromCdr { linkedid: key });
        }
        // Linkedids of emitted calls are remembered as long as CDR rows could still come.
        let keep = self.config.wait + self.config.flag_after;
        self.seen.retain(|_, s| match s {
            Seen::Open => true,
            Seen::Emitted(at) => now.saturating_duration_since(*at) < keep,
        });
    }

    /// Removes the journal entries of a decided CDR group.
    fn forget(&mut self, key: &str) {
        self.unjournal(CDR_PREFIX, key);
    }

    fn unjournal(&mut self, prefix: &str, key: &str) {
        self.ami
            .out
            .commit
            .journal_remove
            .push((self.source.clone(), format!("{prefix}{key}")));
    }

    fn compare(&mut self, key: &str, ami: &AmiSummary, rows: &[CdrRow]) {
        let maps = row_maps(rows);
        let Some(cdr) = self.ami.assembler().call_from_cdr(&maps) else {
            return;
        };
        if cdr.disposition != ami.disposition {
            self.outcomes.push_back(Reconciled::Disagreement {
                linkedid: key.to_owned(),
                field: "disposition",
                ami: ami.disposition.clone(),
                cdr: cdr.disposition.to_string(),
            });
        }
        let (a, c) = (ami.billsec.unwrap_or(0), cdr.billsec.unwrap_or(0));
        // Asterisk rounds billsec per row; AMI's comes from microsecond timestamps.
        if a.abs_diff(c) > 1 {
            self.outcomes.push_back(Reconciled::Disagreement {
                linkedid: key.to_owned(),
                field: "billsec",
                ami: a.to_string(),
                cdr: c.to_string(),
            });
        }
    }

    fn rebuild(&mut self, key: String, p: PendingCdr) {
        let maps = row_maps(&p.rows);
        match self.ami.assembler().call_from_cdr(&maps) {
            Some(call) => {
                self.ami.out.call(call);
                // Not an AMI call: not noted as one.
                self.noted.2 = self.ami.out.commit.calls.len();
                self.outcomes
                    .push_back(Reconciled::Rebuilt { linkedid: key });
            }
            None => {
                for line in p.lines {
                    let number = self.lines;
                    self.ami.out.reject(
                        &self.source,
                        number,
                        format!("Linkedid {key}: no call can be rebuilt from its CDR rows"),
                        "no call can be rebuilt from these CDR rows".into(),
                        line.into_bytes(),
                    );
                }
                self.outcomes
                    .push_back(Reconciled::Unusable { linkedid: key });
            }
        }
    }
}

fn is_final(call: &Call) -> bool {
    call.update
        .as_ref()
        .is_none_or(|u| u.event == UpdateEvent::Ended)
}

fn row_maps(rows: &[CdrRow]) -> Vec<BTreeMap<CompactString, CompactString>> {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|(k, v)| ((*k).into(), v.as_str().into()))
                .collect()
        })
        .collect()
}

impl Feed for ReconcileFeed {
    type Input = AsteriskInput;

    const KIND: &'static str = "ami";

    fn state_names(source: &str) -> Vec<String> {
        vec![
            Self::cdr_state_name(source),
            CelFeed::db_state_name(source, CsvFile::Cdr),
        ]
    }

    fn handle_input(&mut self, now: Instant, input: AsteriskInput) {
        match input {
            AsteriskInput::Ami(a) => self.ami.handle_input(now, a),
            AsteriskInput::Cdr(c) => {
                match c.data {
                    CelData::Bytes(bytes) => self.push_cdr(now, &bytes, false),
                    CelData::Rows(rows) => self.push_cdr_rows(now, rows),
                    CelData::Rejected(r) => self.rejected_cdr(&r),
                }
                if let Some(pos) = c.pos {
                    let value = serde_json::to_vec(&pos).unwrap_or_default();
                    let name = Self::cdr_state_name(&self.source);
                    self.ami.out.commit.save_state(name, value);
                }
                if let Some((name, value)) = c.state {
                    self.ami.out.commit.save_state(name, value);
                }
            }
        }
        self.note(now);
    }

    fn handle_disconnect(&mut self) {
        self.ami.handle_disconnect();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.ami.handle_timeout(now);
        self.note(now);
        self.decide(now, false);
    }

    fn handle_end(&mut self, now: Instant) {
        if self.partial.held() > 0 {
            self.push_cdr(now, &[], true);
        }
        self.ami.handle_end(now);
        self.note(now);
        self.decide(now, true);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let cdr = self
            .pending
            .values()
            .map(|p| p.since + self.config.wait)
            .min();
        let flag = self
            .awaiting
            .values()
            .map(|a| a.since + self.config.flag_after)
            .min();
        [self.ami.poll_timeout(), cdr, flag]
            .into_iter()
            .flatten()
            .min()
    }

    /// AMI's events first, then the outcomes of the comparison.
    fn poll_event(&mut self) -> Option<Event> {
        self.ami
            .poll_event()
            .or_else(|| self.outcomes.pop_front().map(Event::Reconciled))
    }

    fn take_commit(&mut self) -> Commit {
        self.noted = (0, 0, 0);
        self.ami.take_commit()
    }

    fn open_calls(&self) -> usize {
        self.ami.open_calls()
    }

    fn counts(&self) -> FeedCounts {
        self.ami.counts()
    }
}
