//! CSV as Asterisk's CSV backends write it (`cdr_csv`, `cel_custom` with `CSV_QUOTE`), read and
//! written without IO.
//!
//! * Fields are separated by `,`. A field is bare or in double quotes; inside quotes `""` is one
//!   `"`, and commas and newlines are part of the field (RFC 4180).
//! * A record ends at a `\n` (optionally after `\r`) that is not inside quotes.
//!
//! [`record_end`] (or [`RecordScanner`] for a buffer that grows) finds where a record ends in
//! bytes read so far ([`BoundedScanner`] also rejects a record past a size bound or with a quote
//! left open, and resumes at the next line: what the file readers use), [`split_record`] splits one record into fields, and [`write_field`],
//! [`quote_field`] and [`write_record`] write fields the way Asterisk's `CSV_QUOTE` does
//! (always quoted), so database rows can be turned into the same lines.
//!
//! Quotes are read the way Asterisk's readers and most CSV tools read them: every `"` outside
//! quotes opens a quoted stretch (even in the middle of a field, whose text then simply goes
//! on), and inside quotes `""` is a literal `"` and a lone `"` closes it. With this reading a
//! newline is inside quotes exactly when an odd number of `"` precede it in its record, so
//! [`record_end`] and [`split_record`] always agree on what is quoted, even for malformed
//! input.
//!
//! ```
//! use call_assembler::csv::{record_end, split_record, write_record};
//!
//! let buf = b"\"CHAN_START\",\"1795355648.579430\",\"a \"\"b\"\"\nc\"\n\"HANGUP\"";
//! let end = record_end(buf).unwrap(); // the newline inside quotes does not end the record
//! let first = std::str::from_utf8(&buf[..end]).unwrap();
//! assert_eq!(
//!     split_record(first).unwrap(),
//!     ["CHAN_START", "1795355648.579430", "a \"b\"\nc"]
//! );
//! assert_eq!(record_end(&buf[end..]), None); // the second record is not complete yet
//!
//! let mut line = String::new();
//! write_record(&mut line, ["CHAN_START", "a \"b\"\nc"]);
//! assert_eq!(line, "\"CHAN_START\",\"a \"\"b\"\"\nc\"\n");
//! ```

use memchr::{memchr, memchr2};

mod bounded;
mod reader;

pub use bounded::{BoundedScanner, MAX_RECORD_BYTES, MAX_RECORD_LINES, Scan};
pub use reader::{Item, REJECTED_HEAD, RecordReader, RejectedRecord};

/// cdr_csv's columns with every optional one on (`loguniqueid`, `loguserfield`,
/// `newcdrcolumns`): 21 fields, the layout of the lab captures and of the cdr table's rows
/// as `ami-relay` reads them.
pub const CDR_COLUMNS: [&str; 21] = [
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
    "peeraccount",
    "linkedid",
    "sequence",
];

/// The column names of a cdr_csv row with `n` fields: the 16 base columns, then `uniqueid`
/// (`loguniqueid`), `userfield` (`loguserfield`), and `peeraccount`, `linkedid`, `sequence`
/// (`newcdrcolumns`); the field count decides which are present (17: uniqueid; 18: uniqueid,
/// userfield; 19: the new columns; 20: uniqueid and the new columns; 21: all). `None` for other
/// counts.
pub fn cdr_columns(n: usize) -> Option<Vec<&'static str>> {
    // Positions in CDR_COLUMNS past the 16 base columns: 16 uniqueid, 17 userfield,
    // 18 peeraccount, 19 linkedid, 20 sequence.
    let extra: &[usize] = match n {
        16 => &[],
        17 => &[16],
        18 => &[16, 17],
        19 => &[18, 19, 20],
        20 => &[16, 18, 19, 20],
        21 => &[16, 17, 18, 19, 20],
        _ => return None,
    };
    let (base, optional) = CDR_COLUMNS.split_at(16);
    let mut cols = base.to_vec();
    cols.extend(extra.iter().filter_map(|i| optional.get(i - 16)));
    Some(cols)
}

/// Splits one CSV record into its fields: bare or double-quoted, with `""` for a `"` inside
/// quotes; a quoted field may hold commas and newlines. One trailing `\n` or `\r\n` (the
/// record's terminator, as [`record_end`] includes it) is ignored.
///
/// `None` when a quote is not closed (a record cut short). An empty record is one empty field.
/// Text after a closing quote is kept (`"ab"c` is `abc`), and a `"` in the middle of a field
/// opens quotes there (see the module docs); neither is an error.
pub fn split_record(record: &str) -> Option<Vec<String>> {
    let record = strip_terminator(record);
    let bytes = record.as_bytes();
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut pos = 0usize;
    let mut quoted = false;
    loop {
        let rest = bytes.get(pos..)?;
        let hit = if quoted {
            memchr(b'"', rest)
        } else {
            memchr2(b'"', b',', rest)
        };
        let Some(off) = hit else {
            if quoted {
                return None;
            }
            field.push_str(record.get(pos..)?);
            fields.push(field);
            return Some(fields);
        };
        let at = pos.checked_add(off)?;
        // `"` and `,` are ASCII, so `pos..at` lies on character boundaries.
        field.push_str(record.get(pos..at)?);
        let next = at.checked_add(1)?;
        match bytes.get(at) {
            Some(b'"') if quoted => {
                if bytes.get(next) == Some(&b'"') {
                    field.push('"');
                    pos = next.checked_add(1)?;
                } else {
                    quoted = false;
                    pos = next;
                }
            }
            Some(b'"') => {
                quoted = true;
                pos = next;
            }
            _ => {
                fields.push(std::mem::take(&mut field));
                pos = next;
            }
        }
    }
}

/// The record without one trailing `\n` or `\r\n`.
fn strip_terminator(record: &str) -> &str {
    match record.strip_suffix('\n') {
        Some(r) => r.strip_suffix('\r').unwrap_or(r),
        None => record,
    }
}

/// Where the first complete record in `buf` ends: the index just past the first `\n` that is
/// not inside quotes, or `None` when `buf` holds no complete record yet (read more).
///
/// It scans `buf` from the start on every call; for a buffer that grows a little at a time
/// while a long record is incomplete, [`RecordScanner`] goes on where it stopped.
pub fn record_end(buf: &[u8]) -> Option<usize> {
    RecordScanner::default().next_end(buf)
}

/// [`record_end`] for a buffer that grows: it remembers how far it scanned, so bytes are
/// looked at once however often it is called.
///
/// Call [`RecordScanner::next_end`] with the buffer after each read. Between calls the buffer
/// may only grow at its end, until a call returns `Some(end)`: then remove the first `end`
/// bytes (the record) before the next call, which starts afresh. After dropping bytes for any
/// other reason, call [`RecordScanner::reset`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordScanner {
    /// Bytes of the current record scanned so far.
    scanned: usize,
    /// Whether those end inside quotes.
    quoted: bool,
}

impl RecordScanner {
    /// A scanner at the start of a record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the record at the start of `buf` ends (just past its `\n`), or `None` when it is
    /// not complete yet. After `Some`, the scanner is at the start of the next record (which
    /// the caller moves to the start of `buf`).
    pub fn next_end(&mut self, buf: &[u8]) -> Option<usize> {
        let mut pos = self.scanned.min(buf.len());
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            let hit = if self.quoted {
                memchr(b'"', rest)
            } else {
                memchr2(b'"', b'\n', rest)
            };
            let Some(at) = hit.and_then(|off| pos.checked_add(off)) else {
                self.scanned = buf.len();
                return None;
            };
            let next = at.saturating_add(1);
            if buf.get(at) == Some(&b'\n') {
                self.reset();
                return Some(next);
            }
            // `""` inside quotes closes and reopens them: parity is all that matters.
            self.quoted = !self.quoted;
            pos = next;
        }
    }

    /// Forgets what was scanned (the next call starts at the start of its buffer).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Appends `field` quoted as Asterisk's `CSV_QUOTE` writes it: always in double quotes, each
/// `"` doubled.
pub fn write_field(out: &mut String, field: &str) {
    out.reserve(field.len().saturating_add(2));
    out.push('"');
    let mut rest = field;
    while let Some((before, after)) = rest.split_once('"') {
        out.push_str(before);
        out.push_str("\"\"");
        rest = after;
    }
    out.push_str(rest);
    out.push('"');
}

/// `field` quoted as Asterisk's `CSV_QUOTE` writes it (see [`write_field`]).
pub fn quote_field(field: &str) -> String {
    let mut out = String::new();
    write_field(&mut out, field);
    out
}

/// Appends one record: every field quoted ([`write_field`]), separated by commas, then `\n`
/// (as `cdr_csv` and `cel_custom` end their lines). [`split_record`] reads it back.
pub fn write_record<I>(out: &mut String, fields: I)
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(out, f.as_ref());
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cdr_layouts_by_field_count() {
        assert_eq!(cdr_columns(21).unwrap(), CDR_COLUMNS);
        assert_eq!(cdr_columns(16).unwrap(), CDR_COLUMNS[..16]);
        assert_eq!(cdr_columns(17).unwrap().last(), Some(&"uniqueid"));
        assert_eq!(
            cdr_columns(19).unwrap()[16..],
            ["peeraccount", "linkedid", "sequence"]
        );
        assert_eq!(cdr_columns(18).unwrap()[16..], ["uniqueid", "userfield"]);
        assert_eq!(
            cdr_columns(20).unwrap()[16..],
            ["uniqueid", "peeraccount", "linkedid", "sequence"]
        );
        assert_eq!(cdr_columns(15), None);
        assert_eq!(cdr_columns(22), None);
    }

    #[test]
    fn fields_bare_quoted_and_escaped() {
        assert_eq!(
            split_record(r#""a","""Alice"" <1001>",,3,"x,y""#).unwrap(),
            ["a", "\"Alice\" <1001>", "", "3", "x,y"]
        );
        assert_eq!(split_record("").unwrap(), [""]);
        assert_eq!(split_record(",").unwrap(), ["", ""]);
        assert_eq!(split_record("\"\"").unwrap(), [""]);
        assert_eq!(split_record("a,b\r\n").unwrap(), ["a", "b"]);
        assert_eq!(split_record("a,b\n").unwrap(), ["a", "b"]);
        assert_eq!(
            split_record("\"a\nb\",\"c\r\nd\"\n").unwrap(),
            ["a\nb", "c\r\nd"]
        );
        assert_eq!(split_record("\"ab\"c,d").unwrap(), ["abc", "d"]);
        assert_eq!(split_record("ab\"c,d\"e").unwrap(), ["abc,de"]);
        assert_eq!(split_record("\"é,\"\"ü\"\"\",ß").unwrap(), ["é,\"ü\"", "ß"]);
    }

    #[test]
    fn unterminated_quote_is_none() {
        assert_eq!(split_record("\"open"), None);
        assert_eq!(split_record("a,\"b\"\"\n"), None);
        assert_eq!(split_record("\""), None);
    }

    #[test]
    fn record_end_skips_quoted_newlines() {
        assert_eq!(record_end(b""), None);
        assert_eq!(record_end(b"a,b"), None);
        assert_eq!(record_end(b"a,b\nc"), Some(4));
        assert_eq!(record_end(b"a,b\r\nc"), Some(5));
        assert_eq!(record_end(b"\"a\nb\",c\nd"), Some(8));
        assert_eq!(record_end(b"\"a\"\"\nb\"\n"), Some(8));
        assert_eq!(record_end(b"\"a\nb"), None);
        assert_eq!(record_end(b"\n"), Some(1));
    }

    #[test]
    fn scanner_resumes_where_it_stopped() {
        let text = b"\"x\ny\",\"a\"\"b\"\n\"next\"\n";
        let mut sc = RecordScanner::new();
        for n in 0..12 {
            assert_eq!(sc.next_end(&text[..n]), None, "prefix {n}");
        }
        assert_eq!(sc.next_end(&text[..13]), Some(13));
        let rest = &text[13..];
        for n in 0..rest.len() {
            assert_eq!(sc.next_end(&rest[..n]), None, "prefix {n}");
        }
        assert_eq!(sc.next_end(rest), Some(rest.len()));
    }

    #[test]
    fn quoting_like_csv_quote() {
        assert_eq!(quote_field(""), "\"\"");
        assert_eq!(quote_field("a"), "\"a\"");
        assert_eq!(quote_field("\"Alice\" <1001>"), "\"\"\"Alice\"\" <1001>\"");
        let mut line = String::new();
        write_record(&mut line, ["a,b", "", "c\nd"]);
        assert_eq!(line, "\"a,b\",\"\",\"c\nd\"\n");
        let empty: [&str; 0] = [];
        let mut line = String::new();
        write_record(&mut line, empty);
        assert_eq!(line, "\n");
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9 ]{0,6}", "[\",\r\na-zé\"]{0,10}", any::<String>(),]
    }

    /// A field as a writer might put it: quoted, or bare when that is unambiguous.
    fn written(f: &str, bare: bool) -> String {
        if bare && !f.contains(['"', ',', '\n', '\r']) {
            f.to_owned()
        } else {
            quote_field(f)
        }
    }

    proptest! {
        #[test]
        fn split_reads_back_what_was_written(
            fields in proptest::collection::vec(field(), 1..8),
            bare in proptest::collection::vec(any::<bool>(), 8),
            crlf in any::<bool>(),
        ) {
            let joined: Vec<String> = fields
                .iter()
                .zip(&bare)
                .map(|(f, b)| written(f, *b))
                .collect();
            let mut line = joined.join(",");
            prop_assert_eq!(split_record(&line), Some(fields.clone()));
            line.push_str(if crlf { "\r\n" } else { "\n" });
            prop_assert_eq!(split_record(&line), Some(fields.clone()));
            let mut written_line = String::new();
            write_record(&mut written_line, &fields);
            prop_assert_eq!(split_record(&written_line), Some(fields));
        }

        #[test]
        fn record_end_finds_exactly_the_record_boundaries(
            records in proptest::collection::vec(
                (proptest::collection::vec(field(), 1..5), any::<bool>(), any::<bool>()),
                1..6,
            ),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut buf = String::new();
            let mut bounds = Vec::new();
            let mut want = Vec::new();
            for (fields, bare, crlf) in &records {
                let joined: Vec<String> = fields.iter().map(|f| written(f, *bare)).collect();
                buf.push_str(&joined.join(","));
                buf.push_str(if *crlf { "\r\n" } else { "\n" });
                bounds.push(buf.len());
                want.push(fields.clone());
            }
            // Every record in turn, read back the same.
            let mut at = 0;
            for (end, fields) in bounds.iter().zip(&want) {
                let n = record_end(&buf.as_bytes()[at..]);
                prop_assert_eq!(n.map(|n| at + n), Some(*end));
                prop_assert_eq!(split_record(&buf[at..*end]), Some(fields.clone()));
                at = *end;
            }
            prop_assert_eq!(record_end(&buf.as_bytes()[at..]), None);
            // A prefix holds exactly the records that end within it.
            let n = cut.index(buf.len() + 1);
            let complete = bounds.iter().filter(|b| **b <= n).count();
            let mut got = 0;
            let mut at = 0;
            let mut sc = RecordScanner::new();
            // The scanner fed the prefix a byte at a time agrees.
            let mut fed = 0;
            let mut scanned = 0;
            while let Some(e) = record_end(&buf.as_bytes()[at..n]) {
                at += e;
                got += 1;
            }
            while fed < n {
                fed += 1;
                if let Some(e) = sc.next_end(&buf.as_bytes()[scanned..fed]) {
                    scanned += e;
                    prop_assert!(bounds.contains(&scanned));
                }
            }
            prop_assert_eq!(got, complete);
            prop_assert_eq!(scanned, at);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Some(end) = record_end(&bytes) {
                prop_assert!(end > 0 && end <= bytes.len());
                prop_assert_eq!(bytes[end - 1], b'\n');
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = split_record(&text);
        }
    }
}
