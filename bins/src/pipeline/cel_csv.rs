//! The Asterisk CSV pipeline (`ami-relay` with `CEL_MODE=csv`): lines of the cel_custom file
//! and of the cdr_csv file in, a [`Batch`](cdr_sinks::outbox::Batch) for the outbox out. Pure
//! code: no IO, time passed in.
//!
//! * CEL rows ([`CelRow::from_fields`], in the configured [`CelColumns`]) go to the same [`AmiAssembler`] as AMI events
//!   ([`AmiAssembler::handle_cel_row`]): one implementation of the call logic, two transports.
//!   A row that changed an open call is journaled under the call's key
//!   ([`AmiAssembler::last_key`]) and the keys of emitted calls are retired, as in the AMI
//!   pipeline, so a restart mid-call loses nothing.
//! * CDR rows (cdr_csv) are kept by Linkedid (the `linkedid` column with `newcdrcolumns`;
//!   without it the row's `uniqueid`, else its channel) and journaled under `cdr:<linkedid>`.
//!   When a call with that Linkedid is emitted (a final record, complete or not) they are put in
//!   its [`Call::cdr`], in file order, keyed by cdr_csv's column names, and their journal
//!   entries are removed. The assembler emits a call its grace period after its end, so a CDR
//!   row written up to then is attached; rows no call claims within [`CDR_HOLD`] (or by the end
//!   of a `--once` run) are dropped with a warning.
//! * Each input carries the file position (inode, offset just past its last complete line);
//!   it is saved as a state ([`CelCsvPipeline::state_name`]) in the same batch as the calls and
//!   journal entries those lines produced, so the outbox commit that makes them durable also
//!   moves the offset. The follower ([`crate::csv_source`]) starts from the saved position.
//! * The database source ([`crate::db_source`], `CEL_MODE=db`) hands over the same lines, made
//!   from the rows of Asterisk's `cel` and `cdr` tables, with its watermark as a general state
//!   ([`CelCsvInput::state`], saved under [`CelCsvPipeline::db_state_name`]) in place of a file
//!   position: committed in the same batch as the calls its rows produced.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use call_assembler::{AmiAssembler, AmiAssemblerConfig, Call, CelColumns, CelRow, UpdateEvent};
use cdr_sinks::outbox::{JournalEntry, Reject};
use serde::{Deserialize, Serialize};

use super::{Out, Pipeline, Restored};

/// How long CDR rows wait for their call before they are dropped.
pub const CDR_HOLD: Duration = Duration::from_secs(600);

/// Which of the two files a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CsvFile {
    /// The cel_custom file.
    Cel,
    /// The cdr_csv file.
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

/// What the CSV source hands over.
#[derive(Debug)]
pub struct CelCsvInput {
    /// Which file.
    pub file: CsvFile,
    /// Bytes: complete lines from the follower; anything from a replay (`--replay cel.csv`).
    pub bytes: Vec<u8>,
    /// The file position after `bytes`, saved with the batch (`None` for a replay).
    pub pos: Option<FilePos>,
    /// Any other progress to save with the batch that holds `bytes`, as (state name, value):
    /// the database source's watermark ([`crate::db_source`]) under
    /// [`CelCsvPipeline::db_state_name`]. `bytes` may be empty, to save the state alone.
    pub state: Option<(String, Vec<u8>)>,
}

impl From<Vec<u8>> for CelCsvInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self {
            file: CsvFile::Cel,
            bytes,
            pos: None,
            state: None,
        }
    }
}

/// One cdr_csv row: cdr_csv's column names with their values, in file order.
pub(crate) type CdrRow = Vec<(&'static str, String)>;

/// One cdr_csv row: its Linkedid (the grouping key: the `linkedid` column, else `uniqueid`, else
/// `channel`) and its columns.
pub(crate) fn parse_cdr(line: &str) -> Option<(String, CdrRow)> {
    let fields = call_assembler::csv::split_record(line)?;
    let cols = call_assembler::csv::cdr_columns(fields.len())?;
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

#[derive(Debug)]
struct PendingCdr {
    rows: Vec<CdrRow>,
    since: Instant,
}

/// Assembles calls from CEL and CDR CSV lines, collecting what must be committed.
#[derive(Debug)]
pub struct CelCsvPipeline {
    source: String,
    asm: AmiAssembler,
    out: Out,
    /// Bytes after the last newline, per file (only a replay leaves any).
    partial: HashMap<CsvFile, Vec<u8>>,
    lines: HashMap<CsvFile, u64>,
    cdr: HashMap<String, PendingCdr>,
    /// The cel_custom file's columns.
    columns: CelColumns,
}

impl CelCsvPipeline {
    /// A pipeline with no open calls. `source` names its journal and states (`ami` or
    /// `ami/<site>`).
    pub fn new(source: &str, config: AmiAssemblerConfig) -> Self {
        Self {
            source: source.to_owned(),
            asm: AmiAssembler::new(config),
            out: Out::default(),
            partial: HashMap::new(),
            lines: HashMap::new(),
            cdr: HashMap::new(),
            columns: CelColumns::sample(),
        }
    }

    /// The same pipeline reading cel_custom lines in `columns`' order (instead of the sample
    /// mapping's).
    pub fn with_columns(mut self, columns: CelColumns) -> Self {
        self.columns = columns;
        self
    }

    /// The state name under which `file`'s position is saved for `source`.
    pub fn state_name(source: &str, file: CsvFile) -> String {
        format!("{source}/csv/{}", file.tag())
    }

    /// The state name under which the database source's watermark for the table of `file`
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

    /// A pipeline whose open calls and waiting CDR rows are rebuilt from the journal in
    /// `saved`, each row replayed at the monotonic time that corresponds to when it was
    /// committed (`now` is `now_ms` on the wall clock), as [`super::AmiPipeline::restore`] does.
    /// CEL lines are read in `columns`' order (the journal holds them as the file had them).
    pub fn restore(
        source: &str,
        config: AmiAssemblerConfig,
        columns: CelColumns,
        now: Instant,
        now_ms: i64,
        saved: &Restored,
    ) -> Self {
        let mut p = Self::new(source, config).with_columns(columns);
        for (entry, at) in saved.journal_on_time_line(now, now_ms) {
            let text = String::from_utf8_lossy(&entry.line);
            let (file, line) = match text.split_once('\t') {
                Some(("cel", l)) => (CsvFile::Cel, l),
                Some(("cdr", l)) => (CsvFile::Cdr, l),
                _ => {
                    p.out.batch.rejects.push(Reject {
                        source: p.source.clone(),
                        reason: "journaled CSV line without its file tag".into(),
                        raw: entry.line.clone(),
                    });
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
        match file {
            CsvFile::Cel => match call_assembler::csv::split_record(line).and_then(|f| {
                let fields: Vec<&str> = f.iter().map(String::as_str).collect();
                CelRow::from_fields(&self.columns, &fields)
            }) {
                Some(row) => {
                    if journal {
                        self.out.counts.records += 1;
                    }
                    self.asm.handle_cel_row(now, &row);
                    if journal && let Some(key) = self.asm.last_key() {
                        self.out.batch.journal_add.push(JournalEntry {
                            source: self.source.clone(),
                            call_key: key.to_owned(),
                            line: format!("cel\t{line}").into_bytes(),
                        });
                    }
                }
                None => self.bad(file, number, line),
            },
            CsvFile::Cdr => match parse_cdr(line) {
                Some((key, row)) => {
                    if journal {
                        self.out.counts.records += 1;
                        self.out.batch.journal_add.push(JournalEntry {
                            source: self.source.clone(),
                            call_key: format!("cdr:{key}"),
                            line: format!("cdr\t{line}").into_bytes(),
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
                None => self.bad(file, number, line),
            },
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

    /// Feeds bytes of `file`: every complete line is used, the rest kept for the next input.
    pub fn push(&mut self, now: Instant, file: CsvFile, bytes: &[u8]) {
        let mut buf = self.partial.remove(&file).unwrap_or_default();
        buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(n) = call_assembler::csv::record_end(buf.get(start..).unwrap_or_default()) {
            let end = start + n;
            let line =
                String::from_utf8_lossy(buf.get(start..end - 1).unwrap_or_default()).into_owned();
            start = end;
            let number = {
                let n = self.lines.entry(file).or_insert(0);
                *n += 1;
                *n
            };
            self.apply(now, file, &line, number, true);
            self.drain();
        }
        buf.drain(..start);
        if !buf.is_empty() {
            self.partial.insert(file, buf);
        }
    }

    /// Drops CDR rows that waited longer than [`CDR_HOLD`] (all of them with `all`).
    fn expire_cdr(&mut self, now: Instant, all: bool) {
        let old: Vec<String> = self
            .cdr
            .iter()
            .filter(|(_, p)| all || now.saturating_duration_since(p.since) >= CDR_HOLD)
            .map(|(k, _)| k.clone())
            .collect();
        for key in old {
            if let Some(p) = self.cdr.remove(&key) {
                tracing::warn!(
                    linkedid = %key,
                    rows = p.rows.len(),
                    "CDR rows that no call claimed are dropped"
                );
            }
            self.out
                .batch
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
        if call
            .update
            .as_ref()
            .is_some_and(|u| u.event != UpdateEvent::Ended)
        {
            self.out.batch.updates.push(call);
            return;
        }
        if let Some(p) = self.cdr.remove(call.call_id.as_str()) {
            for row in p.rows {
                call.cdr.push(
                    row.into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect::<BTreeMap<_, _>>(),
                );
            }
            self.out
                .batch
                .journal_remove
                .push((self.source.clone(), format!("cdr:{}", call.call_id)));
        }
        if call.complete {
            self.out.counts.complete += 1;
        } else {
            self.out.counts.incomplete += 1;
        }
        self.out.batch.calls.push(call);
    }

    fn save_pos(&mut self, file: CsvFile, pos: FilePos) {
        let name = Self::state_name(&self.source, file);
        let value = serde_json::to_vec(&pos).unwrap_or_default();
        self.save_state(name, value);
    }

    /// Saves `value` under `name` with the batch; a later value in the same batch replaces it.
    fn save_state(&mut self, name: String, value: Vec<u8>) {
        match self.out.batch.states.iter_mut().find(|(n, _)| *n == name) {
            Some(s) => s.1 = value,
            None => self.out.batch.states.push((name, value)),
        }
    }
}

impl Pipeline for CelCsvPipeline {
    type Input = CelCsvInput;

    const KIND: &'static str = "ami";

    fn state_names(source: &str) -> Vec<String> {
        vec![
            Self::state_name(source, CsvFile::Cel),
            Self::state_name(source, CsvFile::Cdr),
            Self::db_state_name(source, CsvFile::Cel),
            Self::db_state_name(source, CsvFile::Cdr),
        ]
    }

    fn input(&mut self, now: Instant, input: CelCsvInput) {
        self.push(now, input.file, &input.bytes);
        if let Some(pos) = input.pos {
            self.save_pos(input.file, pos);
        }
        if let Some((name, value)) = input.state {
            self.save_state(name, value);
        }
    }

    fn reset_connection(&mut self) {
        self.partial.clear();
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.asm.handle_timeout(now);
        self.drain();
        self.expire_cdr(now, false);
    }

    fn finish(&mut self, now: Instant) {
        // A last line without its newline (a replayed file) is used as it is.
        for file in [CsvFile::Cdr, CsvFile::Cel] {
            if let Some(rest) = self.partial.remove(&file) {
                let mut rest = rest;
                rest.push(b'\n');
                self.push(now, file, &rest);
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn cdr_layouts_by_field_count() {
        let base = r#""","1001","2001","internal","""Alice"" <1001>","SIP/a","SIP/b","Dial","x","2026-11-22 13:54:08","2026-11-22 13:54:10","2026-11-22 13:54:13",5,3,"ANSWERED","DOCUMENTATION""#;
        let (key, row) = parse_cdr(base).unwrap();
        assert_eq!(key, "SIP/a");
        assert_eq!(row.len(), 16);
        let (key, _) = parse_cdr(&format!(r#"{base},"1.5""#)).unwrap();
        assert_eq!(key, "1.5");
        let (key, row) = parse_cdr(&format!(r#"{base},"1.5","","","1.4",7"#)).unwrap();
        assert_eq!(key, "1.4");
        assert_eq!(row[4].1, "\"Alice\" <1001>");
        assert_eq!(parse_cdr("a,b"), None);
    }

    #[test]
    fn cdr_rows_attach_to_their_call_and_the_offset_rides_with_the_batch() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/asterisk/01_answered_caller_hangup");
        let (Ok(cel), Ok(cdr)) = (
            std::fs::read(dir.join("cel.csv")),
            std::fs::read(dir.join("cdr.csv")),
        ) else {
            return;
        };
        let mut p = CelCsvPipeline::new("ami", AmiAssemblerConfig::default());
        let now = Instant::now();
        let pos = FilePos {
            inode: 7,
            offset: cdr.len() as u64,
        };
        p.input(
            now,
            CelCsvInput {
                file: CsvFile::Cdr,
                bytes: cdr,
                pos: Some(pos),
                state: None,
            },
        );
        p.input(now, CelCsvInput::from(cel));
        p.finish(now);
        let batch = p.take_batch();
        assert_eq!(batch.calls.len(), 1);
        assert_eq!(batch.calls[0].cdr.len(), 3);
        assert_eq!(batch.calls[0].cdr[0]["disposition"], "ANSWERED");
        assert_eq!(
            batch.states,
            vec![("ami/csv/cdr".to_owned(), serde_json::to_vec(&pos).unwrap())]
        );
    }

    #[test]
    fn a_database_watermark_rides_with_the_batch_of_its_rows() {
        let name = CelCsvPipeline::db_state_name("ami/hq", CsvFile::Cel);
        assert_eq!(name, "ami/hq/db/cel");
        assert!(CelCsvPipeline::state_names("ami/hq").contains(&name));
        let mut p = CelCsvPipeline::new("ami/hq", AmiAssemblerConfig::default());
        let now = Instant::now();
        let line = r#""CHAN_START","2026-11-22 13:54:08.579430","","","","","","2001","internal","Local/2001@internal-0000002c;1","","","3","","1795355648.116","1795355648.116","","","","""#;
        for (bytes, mark) in [(format!("{line}\n").into_bytes(), "1"), (Vec::new(), "2")] {
            p.input(
                now,
                CelCsvInput {
                    file: CsvFile::Cel,
                    bytes,
                    pos: None,
                    state: Some((name.clone(), mark.as_bytes().to_vec())),
                },
            );
        }
        let batch = p.take_batch();
        assert_eq!(
            batch.journal_add.len(),
            1,
            "the row is journaled with its call"
        );
        assert_eq!(batch.states, vec![(name, b"2".to_vec())]);
    }
}
