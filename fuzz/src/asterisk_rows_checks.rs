//! Checks for the `asterisk_rows` target: the Asterisk CSV rows code of `call_assembler`, that
//! is the [`call_assembler::csv`] reader and writer, [`CelColumns`], [`CelRow::from_fields`],
//! CEL rows fed to an [`AmiAssembler`], and [`AmiAssembler::call_from_cdr`] on CDR rows.
//!
//! Uses only `call_assembler`, `compact_str`, `serde_json` and `std` (all dependencies of
//! `call-assembler`), so `call-assembler/tests/asterisk_rows_fuzz_corpus.rs` includes it with
//! `#[path]` and replays the corpus on stable.
//!
//! The input decodes by hand (no `arbitrary`):
//!
//! * byte 0, the mode: bit 0 progressive (bit 1: a 5 s interval, else 0), bit 2
//!   `max_open_calls` 2 (else 100,000), bit 3 `internal_number_max_len` 4, bit 4 tenant rules,
//!   bit 5 a 30 s idle timeout (else an hour), bits 6-7 the zone's fixed offset 0, 3600, -18000 or
//!   50400;
//! * byte 1: `k = b % 16` chunk sizes follow, one byte each (0 to 255 bytes; a 0 is a call that
//!   adds nothing), used in turn; none (or all 0) feeds the payload at once;
//! * then a byte `g = b % 8`: `g` time steps follow, one byte each, used in turn, one per CEL
//!   row: bits 0-5 are seconds (times 60 with bit 6; 63 moves `now` 10 s *back*), bit 7 also
//!   runs `handle_timeout` at the deadline `poll_timeout()` gives after the row; none: 1 s;
//! * the rest is the payload, CSV bytes (the seeds are fixture `cel.csv` and `cdr.csv` files).
//!
//! Checked:
//!
//! * record boundaries: [`record_end`] applied repeatedly, and a [`RecordScanner`] fed the
//!   payload in the chunks, both give exactly the ends of a byte-by-byte model (a `\n` ends a
//!   record when an even number of `"` precede it in the record);
//! * a [`RecordReader`] fed the payload in the chunks, then ended: its records and rejected
//!   records cover the payload once, in order, with their offsets; with the default bounds and
//!   nothing rejected its records end where the model's do; with small bounds (64 bytes, 2
//!   quoted newlines) no record is longer and the chunks change nothing;
//! * every record (read as lossy UTF-8): [`split_record`] gives what a char-by-char model of
//!   the documented reading gives (`None` exactly for an odd number of `"`), and never `None`
//!   for a record `record_end` found; its fields written with [`write_record`] are one record
//!   (`record_end` is its length) that `split_record` reads back to the same fields;
//! * [`CelColumns::from_mapping`] and [`CelColumns::parse_list`] on every record and on the
//!   whole payload: no panic; an error's byte offset points at its bracket (`NotAName`'s index
//!   at an item); columns always hold `eventtype` and `uniqueid`, and when no name holds
//!   `$ { } ,` their `to_string()` reads back with `parse_list` to the same columns;
//! * [`CelRow::from_fields`] with [`CelColumns::sample`] (and with the first record's columns
//!   when it is a mapping) on every record's fields: no panic; a row has a non-empty
//!   `eventtype` and `uniqueid`, and [`CelRow::from_named`] with the sample names agrees;
//!   [`CelRow::parse_csv_line`] does not panic;
//! * the sample rows fed to an [`AmiAssembler`] with `handle_cel_row` at the stepped times
//!   (`handle_timeout(now)` before each, as a run loop does), then `flush`, draining
//!   `poll_output` after each: no panic; open calls within `max_open_calls`; `poll_timeout()`
//!   after `now` once `handle_timeout(now)` ran; every call serializes to JSON, has
//!   `start_time <= end_time`, `billsec <= duration` and its answer within the call; nothing
//!   open, due or held after the flush;
//! * [`AmiAssembler::call_from_cdr`] on rows made of every record's fields under cdr_csv's 21
//!   column names ([`CDR_COLUMNS`]): each row alone, the rows grouped by `linkedid` (else
//!   `uniqueid`, else `channel`, as `ami-relay`'s CSV pipeline groups them), and the first
//!   [`MAX_CDR_ROWS`] rows together: no panic; a call is `reconciled`, complete, part 0, keyed
//!   by a non-empty `linkedid`, has `start_time <= end_time`, `billsec <= duration` with
//!   `ring` the rest, `answered` exactly with an `answer_time` within the call (and then
//!   `ANSWERED`), at least one leg, the rows as its `cdr`, and serializes to JSON.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use call_assembler::csv::{
    Item, RecordReader, RecordScanner, record_end, split_record, write_record,
};
use call_assembler::{
    AmiAssembler, AmiAssemblerConfig, Call, CelColumns, CelColumnsError, CelRow, Output, RuleField,
    TenantRule,
};
use compact_str::CompactString;

pub use call_assembler::csv::CDR_COLUMNS;

/// The most CDR rows rebuilt into one call at once (more add time, not cases).
pub const MAX_CDR_ROWS: usize = 64;

/// A CDR row as `call_from_cdr` takes it.
pub type CdrRow = BTreeMap<CompactString, CompactString>;

/// The decoded input.
struct Input<'a> {
    mode: u8,
    chunks: Vec<usize>,
    steps: Vec<u8>,
    payload: &'a [u8],
}

fn decode(data: &[u8]) -> Input<'_> {
    let mut at = 0usize;
    let mut byte = || {
        let b = data.get(at).copied();
        at += 1;
        b
    };
    let mode = byte().unwrap_or(0);
    let k = byte().unwrap_or(0) % 16;
    let chunks = (0..k).filter_map(|_| byte()).map(usize::from).collect();
    let g = byte().unwrap_or(0) % 8;
    let steps = (0..g).filter_map(|_| byte()).collect();
    Input {
        mode,
        chunks,
        steps,
        payload: data.get(at..).unwrap_or_default(),
    }
}

/// The configuration the mode byte asks for.
pub fn config(mode: u8) -> AmiAssemblerConfig {
    let bit = |i: u8| mode & (1 << i) != 0;
    AmiAssemblerConfig {
        site: "fuzz".into(),
        grace: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(if bit(5) { 30 } else { 3600 }),
        max_open_calls: if bit(2) { 2 } else { 100_000 },
        progress_interval: bit(0).then(|| Duration::from_secs(if bit(1) { 5 } else { 0 })),
        internal_number_max_len: bit(3).then_some(4),
        zone: call_assembler::PbxZone::fixed_secs(
            [0, 3600, -18_000, 50_400][usize::from(mode >> 6)],
        ),
        tenant_rules: if bit(4) {
            vec![
                TenantRule {
                    field: RuleField::Context,
                    prefix: "from-".into(),
                    tenant: "trunks".into(),
                },
                TenantRule {
                    field: RuleField::Accountcode,
                    prefix: "a".into(),
                    tenant: "acme".into(),
                },
                TenantRule {
                    field: RuleField::Called,
                    prefix: String::new(),
                    tenant: "default".into(),
                },
            ]
        } else {
            Vec::new()
        },
        ..AmiAssemblerConfig::default()
    }
}

/// Runs every check on one input (panics saying what broke).
pub fn check_asterisk_rows(data: &[u8]) {
    let input = decode(data);
    let payload = input.payload;
    let ends = check_boundaries(payload, &input.chunks);

    let config = config(input.mode);
    let asm = AmiAssembler::new(config.clone());
    let sample = CelColumns::sample();
    let mut mapped: Option<CelColumns> = None;
    let mut cel_rows = Vec::new();
    let mut cdr_rows: Vec<CdrRow> = Vec::new();
    // The complete records, then the unterminated tail (if any).
    let mut records: Vec<(&[u8], bool)> = Vec::new();
    let mut start = 0usize;
    for &end in &ends {
        records.push((&payload[start..end], true));
        start = end;
    }
    if start < payload.len() {
        records.push((&payload[start..], false));
    }
    for (record, complete) in records {
        let text = String::from_utf8_lossy(record);
        let fields = check_split(&text, complete);
        check_columns(&text);
        if mapped.is_none() {
            mapped = CelColumns::from_mapping(&text).ok();
        }
        let _ = CelRow::parse_csv_line(&text);
        let Some(fields) = fields else { continue };
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        if let Some(row) = check_cel_row(&sample, &refs, true) {
            cel_rows.push(row);
        }
        if let Some(cols) = &mapped {
            check_cel_row(cols, &refs, false);
        }
        let row: CdrRow = CDR_COLUMNS
            .iter()
            .zip(&refs)
            .map(|(k, v)| (CompactString::from(*k), CompactString::from(*v)))
            .collect();
        check_cdr(&asm, std::slice::from_ref(&row));
        cdr_rows.push(row);
    }
    check_columns(&String::from_utf8_lossy(payload));

    // CDR rows grouped as the CSV pipeline groups them, then all together.
    let mut groups: BTreeMap<CompactString, Vec<CdrRow>> = BTreeMap::new();
    for row in &cdr_rows {
        let key = ["linkedid", "uniqueid", "channel"]
            .iter()
            .filter_map(|k| row.get(*k))
            .find(|v| !v.trim().is_empty())
            .cloned()
            .unwrap_or_default();
        groups.entry(key).or_default().push(row.clone());
    }
    for rows in groups.values().filter(|g| g.len() > 1) {
        check_cdr(&asm, &rows[..rows.len().min(MAX_CDR_ROWS)]);
    }
    if cdr_rows.len() > 1 {
        check_cdr(&asm, &cdr_rows[..cdr_rows.len().min(MAX_CDR_ROWS)]);
    }

    check_assembler(config, &cel_rows, &input.steps);
}

/// The record ends of a byte-by-byte model: a `\n` ends a record when an even number of `"`
/// precede it in that record.
fn model_ends(buf: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut quoted = false;
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => ends.push(i + 1),
            _ => {}
        }
    }
    ends
}

/// `record_end` repeatedly and a `RecordScanner` fed in `chunks` against the model; the ends.
fn check_boundaries(payload: &[u8], chunks: &[usize]) -> Vec<usize> {
    let want = model_ends(payload);

    let mut got = Vec::new();
    let mut at = 0usize;
    while let Some(n) = record_end(&payload[at..]) {
        assert!(n > 0 && at + n <= payload.len(), "record_end {n} at {at}");
        at += n;
        got.push(at);
    }
    assert_eq!(got, want, "record_end applied repeatedly");

    let mut got = Vec::new();
    let mut sc = RecordScanner::new();
    let mut start = 0usize;
    let mut fed = 0usize;
    let all_at_once = chunks.iter().all(|&c| c == 0);
    let mut turn = 0usize;
    loop {
        let step = if all_at_once {
            payload.len()
        } else {
            chunks[turn % chunks.len()]
        };
        turn += 1;
        fed = fed.saturating_add(step).min(payload.len());
        while let Some(n) = sc.next_end(&payload[start..fed]) {
            assert!(
                n > 0 && start + n <= fed,
                "RecordScanner end {n} at {start} with {fed} fed"
            );
            start += n;
            got.push(start);
        }
        if fed == payload.len() {
            break;
        }
    }
    assert_eq!(got, want, "RecordScanner fed in chunks {chunks:?}");
    assert_eq!(sc.next_end(&payload[start..]), None, "the tail again");

    let (items, before_end) = read_items(RecordReader::new(), payload, chunks);
    if items.iter().all(|i| matches!(i, (_, _, false))) {
        let ends: Vec<usize> = items[..before_end].iter().map(|i| i.0 + i.1).collect();
        assert_eq!(ends, want, "RecordReader with nothing rejected");
    }
    let small = || RecordReader::with_limits(64, 2);
    let (items, _) = read_items(small(), payload, chunks);
    let (whole, _) = read_items(small(), payload, &[0]);
    assert_eq!(
        items, whole,
        "RecordReader with small bounds, chunks {chunks:?}"
    );
    for (_, len, rejected) in &items {
        assert!(*rejected || *len <= 64, "a record of {len} bytes");
    }
    want
}

/// A [`RecordReader`] fed `payload` in `chunks` (all at once when they are all 0), then ended:
/// its items as (offset, length, rejected), checked to cover the payload once in order; and how
/// many came before the end.
fn read_items(
    mut r: RecordReader,
    payload: &[u8],
    chunks: &[usize],
) -> (Vec<(usize, usize, bool)>, usize) {
    let mut items = Vec::new();
    let mut fed = 0usize;
    let all_at_once = chunks.iter().all(|&c| c == 0);
    let mut turn = 0usize;
    let mut before_end = 0;
    let mut at_end = false;
    loop {
        if !at_end {
            let step = if all_at_once {
                payload.len()
            } else {
                chunks[turn % chunks.len()]
            };
            turn += 1;
            let next = fed.saturating_add(step).min(payload.len());
            r.push(&payload[fed..next]);
            fed = next;
        }
        while let Some(item) = r.next(at_end) {
            let at = items
                .last()
                .map_or(0, |(o, l, _): &(usize, usize, bool)| o + l);
            match item {
                Item::Record(range) => {
                    assert_eq!(r.get(range.clone()), &payload[at..at + range.len()]);
                    items.push((at, range.len(), false));
                }
                Item::Rejected(bad) => {
                    assert_eq!(bad.offset as usize, at, "rejected at {at}");
                    let len = bad.len as usize;
                    assert!(bad.head.len() <= len && payload[at..].starts_with(&bad.head));
                    items.push((at, len, true));
                }
            }
            assert_eq!(r.position() as usize, at + items.last().map_or(0, |i| i.1));
        }
        if at_end {
            break;
        }
        if fed == payload.len() {
            before_end = items.len();
            at_end = true;
        }
    }
    let covered = items.last().map_or(0, |(o, l, _)| o + l);
    assert_eq!(covered, payload.len(), "everything read once");
    assert_eq!(r.held(), 0);
    (items, before_end)
}

/// The documented reading of one record, char by char.
fn model_split(record: &str) -> Option<Vec<String>> {
    let record = match record.strip_suffix('\n') {
        Some(r) => r.strip_suffix('\r').unwrap_or(r),
        None => record,
    };
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = record.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') => quoted = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}

/// `split_record` against the model, and the fields written back; the fields.
fn check_split(text: &str, complete: bool) -> Option<Vec<String>> {
    let fields = split_record(text);
    assert_eq!(fields, model_split(text), "split_record of {text:?}");
    let odd = text.bytes().filter(|b| *b == b'"').count() % 2 == 1;
    assert_eq!(fields.is_none(), odd, "None iff a quote is open: {text:?}");
    if complete {
        assert!(fields.is_some(), "a whole record does not split: {text:?}");
    }
    let fields = fields?;
    assert!(!fields.is_empty());
    let mut line = String::new();
    write_record(&mut line, &fields);
    assert_eq!(
        record_end(line.as_bytes()),
        Some(line.len()),
        "a written record is not one record: {line:?}"
    );
    assert_eq!(
        split_record(&line).as_ref(),
        Some(&fields),
        "write_record then split_record: {line:?}"
    );
    Some(fields)
}

/// `CelColumns::from_mapping` and `parse_list` on `text`.
fn check_columns(text: &str) {
    let bracket_at = |e: &CelColumnsError| match e {
        CelColumnsError::Unclosed { open: c, at } | CelColumnsError::Unopened { close: c, at } => {
            assert!(
                text.get(*at..).is_some_and(|r| r.starts_with(*c)),
                "{e} but the text there is {:?}",
                text.get(*at..)
            );
        }
        CelColumnsError::NotAName { index, .. } => {
            assert!(*index < text.split(',').count(), "{e}");
        }
        _ => {}
    };
    for cols in [CelColumns::from_mapping(text), CelColumns::parse_list(text)] {
        match cols {
            Err(e) => bracket_at(&e),
            Ok(cols) => {
                assert!(!cols.is_empty());
                assert!(cols.position("eventtype").is_some(), "{cols:?}");
                assert!(cols.position("uniqueid").is_some(), "{cols:?}");
                let plain = cols
                    .names()
                    .iter()
                    .all(|n| !n.contains(['$', '{', '}', ',']));
                if plain {
                    let list = cols.to_string();
                    assert_eq!(
                        CelColumns::parse_list(&list).as_ref(),
                        Ok(&cols),
                        "to_string then parse_list: {list:?}"
                    );
                }
            }
        }
    }
}

/// `CelRow::from_fields` with `columns`; with the sample columns (`sample`), `from_named`
/// agrees.
fn check_cel_row(columns: &CelColumns, fields: &[&str], sample: bool) -> Option<CelRow> {
    let row = CelRow::from_fields(columns, fields)?;
    assert!(!row.eventtype.trim().is_empty(), "{row:?}");
    assert!(!row.uniqueid.trim().is_empty(), "{row:?}");
    if sample {
        let named = columns
            .names()
            .iter()
            .map(CompactString::as_str)
            .zip(fields.iter().copied());
        assert_eq!(CelRow::from_named(named).as_ref(), Some(&row), "from_named");
    }
    Some(row)
}

/// `call_from_cdr` on `rows`, and the call's invariants.
fn check_cdr(asm: &AmiAssembler, rows: &[CdrRow]) {
    let Some(c) = asm.call_from_cdr(rows) else {
        return;
    };
    let what = || format!("{c:?}");
    assert!(c.reconciled && c.complete, "{}", what());
    assert_eq!((c.flush_reason, c.part), (None, 0), "{}", what());
    assert!(
        !c.linkedid.is_empty() && c.call_id == c.linkedid,
        "{}",
        what()
    );
    check_call_times(&c);
    let billsec = c
        .billsec
        .unwrap_or_else(|| panic!("no billsec: {}", what()));
    assert_eq!(c.ring, c.duration - billsec, "ring: {}", what());
    // A party answering implies the PBX answered the caller and Asterisk's `ANSWERED`; not the
    // other way round (a queue or IVR answering the caller is billed, but nobody talked).
    if c.answered {
        assert!(c.answer_time.is_some(), "{}", what());
        assert_eq!(c.disposition, "ANSWERED", "{}", what());
    }
    let (talk, wait) = (c.talk_secs.unwrap_or(0), c.wait_secs.unwrap_or(0));
    // Seconds saturate at u32::MAX (a hostile call of more than 136 years): then each part may
    // be as long as the whole.
    let parts = u64::from(talk) + u64::from(wait);
    if c.duration < u32::MAX {
        assert_eq!(parts, u64::from(c.duration), "talk + wait: {}", what());
    } else {
        assert!(parts >= u64::from(c.duration), "talk + wait: {}", what());
    }
    if !c.answered {
        assert_eq!(talk, 0, "talk without an answer: {}", what());
    }
    assert!(!c.legs.is_empty(), "no legs: {}", what());
    assert_eq!(c.cdr, rows, "cdr rows");
    check_json(&c);
}

/// `start_time <= end_time`, `billsec <= duration`, the answer within the call.
fn check_call_times(c: &Call) {
    assert!(c.start_time <= c.end_time, "end before start: {c:?}");
    assert!(
        c.billsec.unwrap_or(0) <= c.duration,
        "billsec over duration: {c:?}"
    );
    assert!(
        c.answer_time
            .is_none_or(|a| c.start_time <= a && a <= c.end_time),
        "answer outside the call: {c:?}"
    );
}

fn check_json(c: &Call) {
    if let Err(e) = serde_json::to_string(c) {
        panic!("a call does not serialize: {e}: {c:?}");
    }
}

/// The CEL rows through an `AmiAssembler` at the stepped times, then a flush.
fn check_assembler(config: AmiAssemblerConfig, rows: &[CelRow], steps: &[u8]) {
    let max_open = config.max_open_calls;
    let mut asm = AmiAssembler::new(config);
    // Room to step back from the start.
    let base = Instant::now() + Duration::from_secs(86_400);
    let mut now = base;
    // The latest `now` the assembler saw (it clamps earlier ones to it).
    let mut latest: Option<Instant> = None;
    let drain = |asm: &mut AmiAssembler| {
        while let Some(out) = asm.poll_output() {
            if let Output::Call(c) = out {
                check_call_times(&c);
                check_json(&c);
            }
        }
        assert!(asm.open_calls() <= max_open, "{} open", asm.open_calls());
    };
    for (i, row) in rows.iter().enumerate() {
        let step = if steps.is_empty() {
            1
        } else {
            steps[i % steps.len()]
        };
        let secs = u64::from(step & 0x3f);
        if secs == 0x3f {
            now = now.checked_sub(Duration::from_secs(10)).unwrap_or(now);
        } else {
            now += Duration::from_secs(if step & 0x40 != 0 { secs * 60 } else { secs });
        }
        let seen = latest.map_or(now, |l| l.max(now));
        latest = Some(seen);
        asm.handle_timeout(now);
        drain(&mut asm);
        if let Some(t) = asm.poll_timeout() {
            assert!(t > seen, "poll_timeout not after handle_timeout(now)");
        }
        asm.handle_cel_row(now, row);
        drain(&mut asm);
        // Bit 7: on to the deadline, as a run loop whose timer fired.
        if let Some(t) = (step & 0x80 != 0).then(|| asm.poll_timeout()).flatten() {
            now = now.max(t);
            latest = latest.max(Some(now));
            asm.handle_timeout(now);
            drain(&mut asm);
        }
    }
    asm.flush(now);
    drain(&mut asm);
    assert_eq!(asm.open_calls(), 0, "open after the flush");
    assert_eq!(asm.poll_timeout(), None, "a deadline after the flush");
    assert!(asm.is_idle(), "not idle after the flush: {asm:?}");
}
