//! Finding records with bounds: a record longer than [`MAX_RECORD_BYTES`], or whose quotes stay
//! open across more than [`MAX_RECORD_LINES`] newlines, is rejected and reading resumes at the
//! line after its first one.
//!
//! Why both bounds: a quote that is never closed (a line cut short when Asterisk was killed,
//! one stray `"` at the top of a file) turns every later newline into one inside quotes, so
//! without a bound the rest of the file is one record that never ends and no call comes out.
//! RFC 4180 allows newlines in quoted fields, and Asterisk's CSV files may carry one in a
//! field, but a record of more than a hundred lines or of a megabyte is not a CEL or CDR row: it
//! is an unterminated quote. The line bound finds it after a few kilobytes, so a file that is
//! followed live does not hold back its calls until a megabyte more is written; the byte bound
//! catches a line that never ends.
//!
//! Where reading resumes: at the line after the rejected record's first newline (its first
//! line, the one with the open quote, is what is rejected). When the record has no newline in
//! its first [`MAX_RECORD_BYTES`], everything up to the next newline is skipped
//! ([`Scan::Skip`]). A record that ends while a quote is still open at the end of the input
//! ([`BoundedScanner::finish`]) is rejected the same way.
//!
//! The scanner keeps its state between calls, so a growing buffer is never scanned from its
//! start again; after a rejection the bytes up to the bound are scanned once more from the
//! resume point (and, as those lines then end each at its own newline, not a third time), so
//! every byte is looked at no more than twice.

use memchr::{memchr, memchr2};

/// The most bytes one record may have (with its newline).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// The most newlines inside quotes one record may have.
pub const MAX_RECORD_LINES: usize = 100;

/// What [`BoundedScanner::next`] found at the start of the buffer. After anything but
/// [`Scan::Incomplete`], remove the bytes it names from the start of the buffer before the next
/// call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A complete record: the first `n` bytes (with its newline).
    Record(usize),
    /// The record at the start is rejected (too long, or a quote left open): drop its first `n`
    /// bytes (its first line, or as much of the line as was looked at; the rest of such a line
    /// comes as [`Scan::Skip`]).
    Rejected(usize),
    /// `n` more bytes of a rejected line, up to and with its newline: drop them.
    Skip(usize),
    /// Nothing complete yet: read more.
    Incomplete,
}

/// Finds records in a buffer that grows, with bounds (see the module documentation).
///
/// ```
/// use call_assembler::csv::{BoundedScanner, Scan};
///
/// let mut sc = BoundedScanner::with_limits(1 << 20, 2);
/// let mut buf: &[u8] = b"\"open,1\n\"a\",\"b\"\n\"c\"\n\"d\"\n";
/// // The quote opened on the first line is still open after two more newlines.
/// assert_eq!(sc.next(buf), Scan::Rejected(8));
/// buf = &buf[8..];
/// assert_eq!(sc.next(buf), Scan::Record(8));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedScanner {
    max_bytes: usize,
    max_lines: usize,
    /// Bytes of the current record scanned so far.
    scanned: usize,
    /// Whether they end inside quotes.
    quoted: bool,
    /// Where the record's first newline is (one inside quotes, or the record would have ended).
    first_newline: Option<usize>,
    /// Newlines inside quotes so far.
    lines: usize,
    /// Skipping the rest of a rejected line.
    discarding: bool,
    /// Bytes looked at, in all.
    examined: u64,
}

impl Default for BoundedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl BoundedScanner {
    /// A scanner with the default bounds ([`MAX_RECORD_BYTES`], [`MAX_RECORD_LINES`]).
    pub fn new() -> Self {
        Self::with_limits(MAX_RECORD_BYTES, MAX_RECORD_LINES)
    }

    /// A scanner with other bounds (at least one byte).
    pub fn with_limits(max_bytes: usize, max_lines: usize) -> Self {
        Self {
            max_bytes: max_bytes.max(1),
            max_lines,
            scanned: 0,
            quoted: false,
            first_newline: None,
            lines: 0,
            discarding: false,
            examined: 0,
        }
    }

    /// How many bytes were looked at since the scanner was made (to check that nothing is
    /// scanned again and again).
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// Whether it is skipping the rest of a rejected line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Forgets the current record (the next call starts at the start of its buffer).
    pub fn reset(&mut self) {
        self.scanned = 0;
        self.quoted = false;
        self.first_newline = None;
        self.lines = 0;
        self.discarding = false;
    }

    /// What is at the start of `buf`. Between calls `buf` may only grow at its end, until a call
    /// returns something other than [`Scan::Incomplete`]: then remove the bytes it names first.
    pub fn next(&mut self, buf: &[u8]) -> Scan {
        if self.discarding {
            return match memchr(b'\n', buf) {
                Some(at) => {
                    self.note(at.saturating_add(1));
                    self.reset();
                    Scan::Skip(at.saturating_add(1))
                }
                None if buf.is_empty() => Scan::Incomplete,
                None => {
                    self.note(buf.len());
                    Scan::Skip(buf.len())
                }
            };
        }
        let window = buf.get(..buf.len().min(self.max_bytes)).unwrap_or(buf);
        let mut pos = self.scanned.min(window.len());
        loop {
            let rest = window.get(pos..).unwrap_or_default();
            let Some(at) = memchr2(b'"', b'\n', rest).and_then(|off| pos.checked_add(off)) else {
                self.note(window.len().saturating_sub(pos));
                self.scanned = window.len();
                if window.len() >= self.max_bytes {
                    return self.reject();
                }
                return Scan::Incomplete;
            };
            self.note(at.saturating_add(1).saturating_sub(pos));
            pos = at.saturating_add(1);
            if window.get(at) == Some(&b'\n') {
                if !self.quoted {
                    self.reset();
                    return Scan::Record(pos);
                }
                self.first_newline.get_or_insert(at);
                self.lines = self.lines.saturating_add(1);
                if self.lines > self.max_lines {
                    self.scanned = pos;
                    return self.reject();
                }
            } else {
                // `""` inside quotes closes and reopens them: parity is all that matters.
                self.quoted = !self.quoted;
            }
        }
    }

    /// [`BoundedScanner::next`] when nothing more will come after `buf` (the end of a replayed
    /// file, a rotated file's last bytes): a last record without its newline is a record, and
    /// one whose quote is still open is rejected. Call it until it returns
    /// [`Scan::Incomplete`] (`buf` is then empty).
    pub fn finish(&mut self, buf: &[u8]) -> Scan {
        if buf.is_empty() {
            // Ready for another input from its start.
            self.reset();
            return Scan::Incomplete;
        }
        match self.next(buf) {
            Scan::Incomplete if self.quoted => self.reject(),
            Scan::Incomplete => {
                self.reset();
                Scan::Record(buf.len())
            }
            other => other,
        }
    }

    fn note(&mut self, n: usize) {
        self.examined = self.examined.saturating_add(n as u64);
    }

    fn reject(&mut self) -> Scan {
        let scanned = self.scanned;
        let first = self.first_newline;
        self.reset();
        match first {
            Some(at) => Scan::Rejected(at.saturating_add(1)),
            None => {
                // The line has not ended within the bound: the rest of it is skipped.
                self.discarding = true;
                Scan::Rejected(scanned.max(1))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::csv::{quote_field, record_end};
    use proptest::prelude::*;

    /// Everything `sc` makes of `input` fed in `chunk`-byte reads then finished: the records and
    /// the rejected (offset, dropped bytes), with skipped bytes added to their rejection.
    fn run(
        mut sc: BoundedScanner,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<Vec<u8>>, Vec<(usize, usize)>) {
        let mut records = Vec::new();
        let mut rejects: Vec<(usize, usize)> = Vec::new();
        let mut start = 0; // offset of buf[0] in input
        let mut fed = 0;
        let mut ended = false;
        loop {
            let buf = &input[start..fed];
            let got = if ended { sc.finish(buf) } else { sc.next(buf) };
            match got {
                Scan::Record(n) => {
                    records.push(buf[..n].to_vec());
                    start += n;
                }
                Scan::Rejected(n) => {
                    rejects.push((start, n));
                    start += n;
                }
                Scan::Skip(n) => {
                    rejects.last_mut().unwrap().1 += n;
                    start += n;
                }
                Scan::Incomplete if ended => return (records, rejects),
                Scan::Incomplete if fed == input.len() => ended = true,
                Scan::Incomplete => fed = (fed + chunk).min(input.len()),
            }
        }
    }

    #[test]
    fn an_unterminated_quote_at_the_top_loses_only_its_line() {
        let mut file = b"\"CHAN_START\",\"cut short\n".to_vec();
        let good: Vec<String> = (0..500)
            .map(|i| format!("\"HANGUP\",\"{i}\",\"x\"\n"))
            .collect();
        file.extend(good.concat().as_bytes());
        let (records, rejects) = run(BoundedScanner::new(), &file, 4096);
        assert_eq!(rejects, [(0, 24)]);
        assert_eq!(records.len(), 500);
        assert_eq!(records[499], good[499].as_bytes());
    }

    #[test]
    fn a_line_past_the_byte_bound_is_skipped_to_its_end() {
        let mut file = vec![b'x'; 3000];
        file.extend(b"\n\"a\"\n");
        let (records, rejects) = run(BoundedScanner::with_limits(1000, 10), &file, 64);
        assert_eq!(rejects, [(0, 3001)], "the whole line, in pieces");
        assert_eq!(records, [b"\"a\"\n".to_vec()]);
        // A quoted one with newlines in it is cut at its first line.
        let mut file = b"\"a\n".to_vec();
        file.extend(vec![b'y'; 3000]);
        file.extend(b"\n\"b\"\n");
        let (records, rejects) = run(BoundedScanner::with_limits(1000, 10), &file, 64);
        assert_eq!(rejects[0], (0, 3));
        assert_eq!(rejects[1].0, 3, "the long second line on its own");
        assert_eq!(records, [b"\"b\"\n".to_vec()]);
    }

    #[test]
    fn a_quote_open_at_the_end_is_rejected_then_the_rest_read() {
        let (records, rejects) = run(BoundedScanner::new(), b"\"a\nb\nc", 2);
        assert_eq!(rejects, [(0, 3)]);
        assert_eq!(records, [b"b\n".to_vec(), b"c".to_vec()]);
        let (records, rejects) = run(BoundedScanner::new(), b"a,\"b\nc\"\n", 3);
        assert!(rejects.is_empty());
        assert_eq!(records, [b"a,\"b\nc\"\n".to_vec()]);
    }

    #[test]
    fn linear_however_the_bytes_arrive() {
        // A stray quote at the top of 2 MiB of rows, read 100 bytes at a time: every byte is
        // looked at no more than twice, and everything after the first line comes out.
        let mut file = b"\"stray\n".to_vec();
        let row = b"\"CHAN_START\",\"1795355648.579430\",\"1001\"\n";
        while file.len() < 2 << 20 {
            file.extend_from_slice(row);
        }
        let sc = BoundedScanner::new();
        let mut probe = sc.clone();
        let (records, rejects) = run(sc, &file, 100);
        assert_eq!(rejects, [(0, 7)]);
        assert_eq!(records.len(), (file.len() - 7) / row.len());
        // Count what it examined on the same input.
        let mut buf_start = 0;
        let mut fed = 0;
        while buf_start < file.len() {
            match probe.next(&file[buf_start..fed]) {
                Scan::Record(n) | Scan::Rejected(n) | Scan::Skip(n) => buf_start += n,
                Scan::Incomplete => fed = (fed + 100).min(file.len()),
            }
        }
        assert!(
            probe.bytes_examined() <= 2 * file.len() as u64,
            "{} bytes examined for {}",
            probe.bytes_examined(),
            file.len()
        );
        // The unbounded reading of the same file finds no record at all.
        assert_eq!(record_end(&file), None);
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z0-9 ]{0,6}", "[\",\r\na-zé\"]{0,10}", any::<String>()]
    }

    proptest! {
        /// On valid input within the bounds it finds exactly what [`record_end`] finds,
        /// whatever the reads, and rejects nothing.
        #[test]
        fn agrees_with_record_end_on_valid_input(
            records in proptest::collection::vec(proptest::collection::vec(field(), 1..5), 1..8),
            chunk in 1usize..50,
        ) {
            let mut file = String::new();
            for fields in &records {
                let quoted: Vec<String> = fields.iter().map(|f| quote_field(f)).collect();
                file.push_str(&quoted.join(","));
                file.push('\n');
            }
            let mut model = Vec::new();
            let mut at = 0;
            while let Some(n) = record_end(&file.as_bytes()[at..]) {
                model.push(file.as_bytes()[at..at + n].to_vec());
                at += n;
            }
            let (got, rejects) = run(BoundedScanner::new(), file.as_bytes(), chunk);
            prop_assert!(rejects.is_empty());
            prop_assert_eq!(got, model);
        }

        /// On any input: every byte is in exactly one record or rejection, in order, records
        /// are within the bounds, and reads of any size give the same answer.
        #[test]
        fn any_bytes_are_covered_once_within_bounds(
            bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\n'), Just(b','), Just(b'a')], 0..400),
            chunk in 1usize..40,
        ) {
            let limits = || BoundedScanner::with_limits(64, 3);
            let (records, rejects) = run(limits(), &bytes, chunk);
            let whole = run(limits(), &bytes, bytes.len().max(1));
            prop_assert_eq!(&(records.clone(), rejects.clone()), &whole);
            let total: usize = records.iter().map(Vec::len).sum::<usize>()
                + rejects.iter().map(|r| r.1).sum::<usize>();
            prop_assert_eq!(total, bytes.len());
            for r in &records {
                prop_assert!(r.len() <= 64);
            }
        }
    }
}
