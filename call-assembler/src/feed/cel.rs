//! The Asterisk CEL/CDR rows feed: lines of the cel_custom file and of the cdr_csv file, or
//! rows of Asterisk's `cel` and `cdr` tables already in fields ([`CelData::Rows`]), in;
//! [`Commit`]s out.
//!
//! * A row in fields is used as the line of the same fields would be, without writing and
//!   splitting CSV; it is written as that line ([`crate::csv::write_record`]) only where a line
//!   is kept: in the journal (so restore reads one form, whatever the source) and in a reject.
//! * CEL rows ([`CelRow::from_fields`], in the configured [`CelColumns`]) go to the same
//!   [`AmiAssembler`] as AMI events ([`AmiAssembler::handle_cel_row`]): one implementation of
//!   the call logic, two transports. A row that changed an open call is journaled under the
//!   call's key ([`AmiAssembler::last_key`]) and the keys of emitted calls are retired, as in
//!   the AMI feed, so a restart mid-call loses nothing.
//! * CDR rows (cdr_csv) are kept by Linkedid (the `linkedid` column with `newcdrcolumns`;
//!   without it the row's `uniqueid`, else its channel) and journaled under `cdr:<linkedid>`.
//!   When a call with that Linkedid is emitted (a final record, complete or not) they are put in
//!   its [`Call::cdr`], in file order, keyed by cdr_csv's column names, and their journal
//!   entries are removed. The assembler emits a call its grace period after its end, so a CDR
//!   row written up to then is attached; rows no call claims within [`CDR_HOLD`] (or by the end
//!   of the input) are dropped and reported ([`Event::UnclaimedCdr`]).
//! * Each input may carry the file position (inode, offset just past its last complete line);
//!   it is saved as a state ([`CelFeed::state_name`]) in the same commit as the calls and
//!   journal entries those lines produced, so the commit that makes them durable also moves the
//!   offset. A database reader hands over its watermark instead ([`CelInput::state`], saved
//!   under [`CelFeed::db_state_name`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Commit, Event, Feed, FeedCounts, JournalEntry, Out, Restored};
use crate::csv::{Item, RecordReader, RejectedRecord};
use crate::{AmiAssembler, AmiAssemblerConfig, Call, CelColumns, CelRow};

/// How long CDR rows wait for their call before they are dropped.
pub const CDR_HOLD: Duration = Duration::from_secs(600);

/// Which of the two files a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsvFile {
    /// The cel_custom file (or the `cel` table).
    Cel,
    /// The cdr_csv file (or the `cdr` table).
    Cdr,
}

impl CsvFile {
    fn tag(self) -> &'static str {
        match self {
            Self::Cel => "cel",
            Self::Cdr => "cdr",
        }
    }
}

/// A position in a followed file: which file (its inode) and the offset just past the last line
/// handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    /// The file's inode (0 where there is none).
    pub inode: u64,
    /// Bytes read.
    pub offset: u64,
}

/// The records of a [`CelInput`]: CSV bytes, or rows already in fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CelData {
    /// Bytes of the file: complete lines from a follower; anything from a replay.
    Bytes(Vec<u8>),
    /// Rows (a database reader), each the fields of one line of the file in its layout: a CEL
    /// row in the feed's [`CelColumns`], a CDR row in one of cdr_csv's layouts
    /// ([`crate::csv::cdr_columns`]).
    Rows(Vec<Vec<String>>),
    /// A record the file reader rejected (too long, or a quote left open: see
    /// [`crate::csv::BoundedScanner`]): kept as a reject (its first bytes) and counted.
    Rejected(RejectedRecord),
}

/// What the CEL/CDR source hands over.
#[derive(Debug)]
pub struct CelInput {
    /// Which file (or table).
    pub file: CsvFile,
    /// Its bytes or rows.
    pub data: CelData,
    /// The file position after `data`, saved with the commit (`None` for a replay).
    pub pos: Option<FilePos>,
    /// Any other progress to save with the commit that holds `data`, as (state name, value):
    /// a database reader's watermark under [`CelFeed::db_state_name`]. `data` may be empty,
    /// to save the state alone.
    pub state: Option<(String, Vec<u8>)>,
}

impl From<Vec<u8>> for CelInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            file: CsvFile::Cel,
            data: CelData::Bytes(bytes),
            pos: None,
            state: None,
        }
    }
}

/// One cdr_csv row: cdr_csv's column names with their values, in file order.
pub type CdrRow = Vec<(&'static str, String)>;

/// One cdr_csv row: its Linkedid (the grouping key: the `linkedid` column, else `uniqueid`, else
/// `channel`) and its columns; `None` when the line is not a cdr_csv row.
pub fn parse_cdr(line: &str) -> Option<(String, CdrRow)> {
    cdr_row(crate::csv::split_record(line)?)
}

/// [`parse_cdr`] for a row already in fields.
pub fn cdr_row(fields: Vec<String>) -> Option<(String, CdrRow)> {
    let cols = crate::csv::cdr_columns(fields.len())?;
    let row: CdrRow = cols.into_iter().zip(fields).collect();
    let get = |name: &str| {
        row.iter()
            .find(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let key = get("linkedid")
        .or_else(|| get("uniqueid"))
        .or_else(|| get("channel"))?;
    Some((key, row))
}

/// The line of a row's fields, as the cdr_csv and cel_custom files have it (every field quoted,
/// [`crate::csv::write_record`]), without its newline: what is journaled or rejected for a row.
pub(crate) fn row_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = String::new();
    crate::csv::write_record(&mut line, fields);
    line.pop();
    line
}

/// Why a record the reader rejected is kept as a reject (with its byte offset).
pub(crate) fn rejected_reason(file: CsvFile, r: &RejectedRecord) -> String {
    format!(
        "{} record at byte {} ({} bytes skipped): longer than {} bytes or a quote left open \
         (more than {} newlines inside quotes, or at the end); read on from the next line",
        file.tag(),
        r.offset,
        r.len,
        crate::csv::MAX_RECORD_BYTES,
        crate::csv::MAX_RECORD_LINES,
    )
}

#[derive(Debug)]
struct PendingCdr {
    rows: Vec<CdrRow>,
    since: Instant,
}

/// Assembles calls from CEL and CDR lines, collecting what must be committed.
#[derive(Debug)]
pub struct CelFeed {
    source: String,
    asm: AmiAssembler,
    out: Out,
    /// Bytes after the last complete record, per file (only a replay leaves any), with the
    /// bounded scan of them.
    readers: HashMap<CsvFile, RecordReader>,
    lines: HashMap<CsvFile, u64>,
    cdr: HashMap<String, PendingCdr>,
    /// The cel_custom file's columns.
    columns: CelColumns,
}

impl CelFeed {
    /// A feed with no open calls reading CEL lines in `columns`' order. `source` names its
    /// journal and states (`ami` or `ami/<site>`).
    pub fn new(source: &str, config: AmiAssemblerConfig, columns: CelColumns) -> Self {
        Self {
            source: source.to_owned(),
            asm: AmiAssembler::new(config),
            out: Out::default(),
            readers: HashMap::new(),
            lines: HashMap::new(),
            cdr: HashMap::new(),
            columns,
        }
    }

    /// The state name under which `file`'s position is saved for `source`.
    pub fn state_name(source: &str, file: CsvFile) -> String {
        format!("{source}/csv/{}", file.tag())
    }

    /// The state name under which a database reader's watermark for the table of `file`
    /// (`cel` or `cdr`) is saved for `source`.
    pub fn db_state_name(source: &str, file: CsvFile) -> String {
        format!("{source}/db/{}", file.tag())
    }

    /// The saved position of `file`, if any.
    pub fn saved_pos(source: &str, file: CsvFile, saved: &Restored) -> Option<FilePos> {
        saved
            .state(&Self::state_name(source, file))
            .and_then(|b| serde_json::from_slice(b).ok())
    }

    /// A feed whose open calls and waiting CDR rows are rebuilt from the journal in `saved`,
    /// each row replayed at the monotonic time that corresponds to when it was committed (`now`
    /// is `now_ms` on the wall clock), as [`super::AmiFeed::restore`] does. CEL lines are read
    /// in `columns`' order (the journal holds them as the file had them).
    pub fn restore(
        source: &str,
        config: AmiAssemblerConfig,
        columns: CelColumns,
        now: Instant,
        now_ms: i64,
        saved: &Restored,
    ) -> Self {
        let mut p = Self::new(source, config, columns);
        for (entry, at) in saved.journal_on_time_line(now, now_ms) {
            let text = String::from_utf8_lossy(&entry.line);
            let (file, line) = match text.split_once('\t') {
                Some(("cel", l)) => (CsvFile::Cel, l),
                Some(("cdr", l)) => (CsvFile::Cdr, l),
                _ => {
                    p.out
                        .journal_reject(entry, "journaled CSV line without its file tag".into());
                    continue;
                }
            };
            // Already journaled: applied without journaling again.
            p.apply(at, file, line, 0, false);
        }
        p.drain();
        p
    }

    /// Feeds one line of `file` (without its newline); `journal`: keep it in the journal when it
    /// belongs to an open call.
    fn apply(&mut self, now: Instant, file: CsvFile, line: &str, number: u64, journal: bool) {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return;
        }
        match crate::csv::split_record(line) {
            Some(fields) => self.apply_fields(now, file, fields, Some(line), number, journal),
            None => self.bad(file, number, line),
        }
    }

    /// Feeds one row of `file` in fields; `line` is its line when it came as one (else the line
    /// is written from the fields, only when it is journaled or rejected).
    fn apply_fields(
        &mut self,
        now: Instant,
        file: CsvFile,
        fields: Vec<String>,
        line: Option<&str>,
        number: u64,
        journal: bool,
    ) {
        let line_of = |fields: &[String]| line.map_or_else(|| row_line(fields), str::to_owned);
        match file {
            CsvFile::Cel => {
                let row = {
                    let f: Vec<&str> = fields.iter().map(String::as_str).collect();
                    CelRow::from_fields(&self.columns, &f)
                };
                match row {
                    Some(row) => {
                        if journal {
                            self.out.counts.records += 1;
                        }
                        self.asm.handle_cel_row(now, &row);
                        if journal && let Some(key) = self.asm.last_key() {
                            let call_key = key.to_owned();
                            self.out.commit.journal_add.push(JournalEntry {
                                source: self.source.clone(),
                                call_key,
                                line: format!("cel\t{}", line_of(&fields)).into_bytes(),
                            });
                        }
                    }
                    None => self.bad(file, number, &line_of(&fields)),
                }
            }
            CsvFile::Cdr => {
                let text = line_of(&fields);
                let Some((key, row)) = cdr_row(fields) else {
                    self.bad(file, number, &text);
                    return;
                };
                if journal {
                    self.out.counts.records += 1;
                    self.out.commit.journal_add.push(JournalEntry {
                        source: self.source.clone(),
                        call_key: format!("cdr:{key}"),
                        line: format!("cdr\t{text}").into_bytes(),
                    });
                }
                self.cdr
                    .entry(key)
                    .or_insert_with(|| PendingCdr {
                        rows: Vec::new(),
                        since: now,
                    })
                    .rows
                    .push(row);
            }
        }
    }

    fn bad(&mut self, file: CsvFile, number: u64, line: &str) {
        let what = match file {
            CsvFile::Cel => "not a CEL row",
            CsvFile::Cdr => "not a cdr_csv row (16 to 21 fields)",
        };
        self.out.reject(
            &self.source,
            number,
            format!("{} line {number}: {what}", file.tag()),
            what.into(),
            line.as_bytes().to_vec(),
        );
    }

    /// Feeds bytes of `file`: every complete record is used, the rest kept for the next input
    /// (`at_end`: there is no more, see [`RecordReader::next`]). A record past the bounds of
    /// [`crate::csv::BoundedScanner`] is rejected and reading goes on at the next line.
    pub fn handle_bytes(&mut self, now: Instant, file: CsvFile, bytes: &[u8]) {
        self.read_bytes(now, file, bytes, false);
    }

    fn read_bytes(&mut self, now: Instant, file: CsvFile, bytes: &[u8], at_end: bool) {
        let mut reader = self.readers.remove(&file).unwrap_or_default();
        reader.push(bytes);
        while let Some(item) = reader.next(at_end) {
            match item {
                Item::Record(range) => {
                    let record = reader.get(range);
                    let record = record.strip_suffix(b"\n").unwrap_or(record);
                    let line = String::from_utf8_lossy(record).into_owned();
                    let number = self.next_number(file);
                    self.apply(now, file, &line, number, true);
                    self.drain();
                }
                Item::Rejected(r) => self.rejected(file, r),
            }
        }
        if reader.held() > 0 {
            self.readers.insert(file, reader);
        }
    }

    fn next_number(&mut self, file: CsvFile) -> u64 {
        let n = self.lines.entry(file).or_insert(0);
        *n += 1;
        *n
    }

    /// Keeps a record the reader rejected (its first bytes) and reports it.
    fn rejected(&mut self, file: CsvFile, r: RejectedRecord) {
        let number = self.next_number(file);
        let why = rejected_reason(file, &r);
        self.out
            .reject(&self.source, number, why.clone(), why, r.head);
    }

    /// Feeds rows of `file` already in fields (see [`CelData::Rows`]): each is used as its line
    /// would be by [`CelFeed::handle_bytes`], and numbered as a line.
    pub fn handle_rows(&mut self, now: Instant, file: CsvFile, rows: Vec<Vec<String>>) {
        for fields in rows {
            let number = self.next_number(file);
            // A row without fields is the blank line a file would have: skipped.
            if !fields.is_empty() {
                self.apply_fields(now, file, fields, None, number, true);
                self.drain();
            }
        }
    }

    /// Drops CDR rows that waited longer than [`CDR_HOLD`] (all of them with `all`).
    fn expire_cdr(&mut self, now: Instant, all: bool) {
        let mut old: Vec<String> = self
            .cdr
            .iter()
            .filter(|(_, p)| all || now.saturating_duration_since(p.since) >= CDR_HOLD)
            .map(|(k, _)| k.clone())
            .collect();
        old.sort();
        for key in old {
            if let Some(p) = self.cdr.remove(&key) {
                self.out.events.push_back(Event::UnclaimedCdr {
                    linkedid: key.clone(),
                    rows: p.rows.len(),
                });
            }
            self.out
                .commit
                .journal_remove
                .push((self.source.clone(), format!("cdr:{key}")));
        }
    }

    fn drain(&mut self) {
        for call in super::ami::emitted(&mut self.asm, &mut self.out, &self.source) {
            self.add_call(call);
        }
    }

    fn add_call(&mut self, mut call: Call) {
        let is_final = call
            .update
            .as_ref()
            .is_none_or(|u| u.event == crate::UpdateEvent::Ended);
        if is_final && let Some(p) = self.cdr.remove(call.call_id.as_str()) {
            for row in p.rows {
                call.cdr.push(
                    row.into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect::<BTreeMap<_, _>>(),
                );
            }
            self.out
                .commit
                .journal_remove
                .push((self.source.clone(), format!("cdr:{}", call.call_id)));
        }
        super::ami::add_call(&mut self.out, call);
    }
}

impl Feed for CelFeed {
    type Input = CelInput;

    const KIND: &'static str = "ami";

    fn state_names(source: &str) -> Vec<String> {
        vec![
            Self::state_name(source, CsvFile::Cel),
            Self::state_name(source, CsvFile::Cdr),
            Self::db_state_name(source, CsvFile::Cel),
            Self::db_state_name(source, CsvFile::Cdr),
        ]
    }

    fn handle_input(&mut self, now: Instant, input: CelInput) {
        match input.data {
            CelData::Bytes(bytes) => self.handle_bytes(now, input.file, &bytes),
            CelData::Rows(rows) => self.handle_rows(now, input.file, rows),
            CelData::Rejected(r) => self.rejected(input.file, r),
        }
        if let Some(pos) = input.pos {
            let name = Self::state_name(&self.source, input.file);
            let value = serde_json::to_vec(&pos).unwrap_or_default();
            self.out.commit.save_state(name, value);
        }
        if let Some((name, value)) = input.state {
            self.out.commit.save_state(name, value);
        }
    }

    fn handle_disconnect(&mut self) {
        self.readers.clear();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
        self.expire_cdr(now, false);
    }

    fn handle_end(&mut self, now: Instant) {
        // A last line without its newline (a replayed file) is used as it is; one with a quote
        // still open is rejected and the lines after its first one read.
        for file in [CsvFile::Cdr, CsvFile::Cel] {
            if self.readers.contains_key(&file) {
                self.read_bytes(now, file, &[], true);
            }
        }
        self.asm.flush(now);
        self.drain();
        self.expire_cdr(now, true);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let cdr = self.cdr.values().map(|p| p.since + CDR_HOLD).min();
        match (self.asm.poll_timeout(), cdr) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
