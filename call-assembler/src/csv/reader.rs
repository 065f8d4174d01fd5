//! [`RecordReader`]: bytes of a CSV file in, records and rejected records out, with bounds
//! ([`BoundedScanner`]) and byte offsets. What the file readers (the CSV follower, a replayed
//! file) use.

use std::ops::Range;

use super::{BoundedScanner, Scan};

/// How much of a rejected record is kept (its start).
pub const REJECTED_HEAD: usize = 4096;

/// A record [`RecordReader`] rejected: longer than [`super::MAX_RECORD_BYTES`], or with a
/// quote still open after [`super::MAX_RECORD_LINES`] newlines or at the end of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// Where it starts in the input (bytes).
    pub offset: u64,
    /// How many bytes were dropped for it (reading resumed just after them).
    pub len: u64,
    /// Its first bytes (at most [`REJECTED_HEAD`]).
    pub head: Vec<u8>,
}

/// What [`RecordReader::next`] hands out, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A record: these bytes of [`RecordReader::get`] (with its newline, except a last record
    /// at the end of the input that had none).
    Record(Range<usize>),
    /// A record that was rejected.
    Rejected(RejectedRecord),
}

/// Finds the records in bytes that arrive a piece at a time, with bounds (see
/// [`BoundedScanner`]); holds at most one unfinished record (plus the last piece pushed).
///
/// ```
/// use call_assembler::csv::{Item, RecordReader};
///
/// let mut r = RecordReader::at(100);
/// r.push(b"\"a\",\"b\"\n\"c");
/// let Some(Item::Record(range)) = r.next(false) else { panic!() };
/// assert_eq!(r.get(range), b"\"a\",\"b\"\n");
/// assert_eq!(r.position(), 108);
/// assert_eq!(r.next(false), None); // "c is not finished
/// let Some(Item::Rejected(bad)) = r.next(true) else { panic!() }; // and never will be
/// assert_eq!((bad.offset, bad.len, &bad.head[..]), (108, 2, &b"\"c"[..]));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RecordReader {
    buf: Vec<u8>,
    /// Bytes of `buf` looked at and handed out (or being skipped).
    done: usize,
    /// The input offset of `buf[0]`.
    base: u64,
    /// The input offset just past the last item handed out.
    position: u64,
    scanner: BoundedScanner,
    /// A rejected record whose line is still being skipped.
    rejecting: Option<RejectedRecord>,
}

impl RecordReader {
    /// A reader at offset 0 of its input.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader whose input starts at `offset` (where reading a file began).
    pub fn at(offset: u64) -> Self {
        Self {
            base: offset,
            position: offset,
            ..Self::default()
        }
    }

    /// A reader at offset 0 with other bounds (see [`BoundedScanner::with_limits`]).
    pub fn with_limits(max_bytes: usize, max_lines: usize) -> Self {
        Self {
            scanner: BoundedScanner::with_limits(max_bytes, max_lines),
            ..Self::default()
        }
    }

    /// Adds bytes read.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.done > 0 {
            self.buf.drain(..self.done.min(self.buf.len()));
            self.base = self.base.saturating_add(self.done as u64);
            self.done = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next record or rejected record, or `None` when more bytes are needed. `at_end`:
    /// nothing more will be pushed, so a last record without a newline is handed out and one
    /// with a quote still open is rejected (call until `None`; the reader is then empty and
    /// ready for more input).
    pub fn next(&mut self, at_end: bool) -> Option<Item> {
        loop {
            let rest = self.buf.get(self.done..).unwrap_or_default();
            let scan = if at_end {
                self.scanner.finish(rest)
            } else {
                self.scanner.next(rest)
            };
            let start = self.done;
            match scan {
                Scan::Record(n) => {
                    self.done = start.saturating_add(n);
                    self.position = self.offset_of(self.done);
                    return Some(Item::Record(start..self.done));
                }
                Scan::Rejected(n) => {
                    let head = rest
                        .get(..n.min(REJECTED_HEAD))
                        .unwrap_or_default()
                        .to_vec();
                    let rejected = RejectedRecord {
                        offset: self.offset_of(start),
                        len: n as u64,
                        head,
                    };
                    self.done = start.saturating_add(n);
                    if self.scanner.is_discarding() {
                        self.rejecting = Some(rejected);
                        continue;
                    }
                    self.position = self.offset_of(self.done);
                    return Some(Item::Rejected(rejected));
                }
                Scan::Skip(n) => {
                    self.done = start.saturating_add(n);
                    if let Some(r) = self.rejecting.as_mut() {
                        r.len = r.len.saturating_add(n as u64);
                    }
                    if !self.scanner.is_discarding() {
                        self.position = self.offset_of(self.done);
                        if let Some(r) = self.rejecting.take() {
                            return Some(Item::Rejected(r));
                        }
                    }
                }
                Scan::Incomplete => {
                    if at_end && let Some(r) = self.rejecting.take() {
                        self.position = self.offset_of(self.done);
                        return Some(Item::Rejected(r));
                    }
                    return None;
                }
            }
        }
    }

    /// The bytes of a record handed out by the last [`RecordReader::next`] (valid until the
    /// next [`RecordReader::push`]).
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        self.buf.get(range).unwrap_or_default()
    }

    /// The input offset just past the last item handed out: where reading would start again
    /// without losing or repeating one.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The input offset just past the last byte pushed.
    pub fn read_to(&self) -> u64 {
        self.base.saturating_add(self.buf.len() as u64)
    }

    /// Bytes pushed but not handed out yet (an unfinished record, or a rejected line still
    /// being skipped).
    pub fn held(&self) -> u64 {
        self.read_to().saturating_sub(self.position)
    }

    fn offset_of(&self, at: usize) -> u64 {
        self.base.saturating_add(at as u64)
    }

    /// How many bytes the scanner looked at in all (see [`BoundedScanner::bytes_examined`]).
    pub fn bytes_examined(&self) -> u64 {
        self.scanner.bytes_examined()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_one_rejection_with_its_offset_and_head() {
        let mut r = RecordReader::at(10);
        r.push(b"\"ok\"\n");
        let mut line = vec![b'x'; super::super::MAX_RECORD_BYTES + 5000];
        line.push(b'\n');
        let mut items = Vec::new();
        for piece in line.chunks(65536).chain([&b"\"next\"\n"[..]]) {
            r.push(piece);
            while let Some(item) = r.next(false) {
                items.push(match item {
                    Item::Record(range) => Item::Record(
                        usize::try_from(r.position()).unwrap() - range.len()
                            ..usize::try_from(r.position()).unwrap(),
                    ),
                    other => other,
                });
            }
        }
        assert_eq!(items.len(), 3, "{:?}", items.len());
        assert_eq!(items[0], Item::Record(10..15));
        let Item::Rejected(bad) = &items[1] else {
            panic!("{:?}", items[1])
        };
        assert_eq!(bad.offset, 15);
        assert_eq!(bad.len, line.len() as u64);
        assert_eq!(bad.head.len(), REJECTED_HEAD);
        assert_eq!(r.position(), r.read_to());
        assert_eq!(r.held(), 0);
        assert!(r.bytes_examined() <= 2 * r.read_to());
    }
}
