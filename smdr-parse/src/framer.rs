//! Line framing: finding where records end in a byte stream.

use crate::parse::trim_line;
use crate::{ParseError, ParseErrorKind, SmdrRecord};

/// The default maximum line length. Real records are 100 to 400 bytes.
pub const DEFAULT_MAX_LINE: usize = 8 * 1024;

/// The result of a stateless parse over a buffer, as in httparse: either a whole value and the
/// number of bytes it used (terminator included), or a note that the buffer ends too early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// A complete value; advance the buffer by `consumed` bytes.
    Complete {
        /// The value.
        value: T,
        /// Bytes used from the start of the buffer, terminator included.
        consumed: usize,
    },
    /// No terminator yet: read more bytes and call again with the longer buffer.
    Incomplete,
}

/// Parses the first record in `buf`, which must start at a line start.
///
/// * `Ok(Parsed::Complete { .. })`: a record; skip `consumed` bytes (blank lines before the record
///   are skipped and counted in `consumed`).
/// * `Ok(Parsed::Incomplete)`: no line terminator within [`DEFAULT_MAX_LINE`] bytes yet.
/// * `Err(e)`: the line is malformed (or longer than [`DEFAULT_MAX_LINE`]); `e.offset` is from the
///   start of `buf`. Skip to the next `\n` with [`skip_line`] and go on.
///
/// For a stream that must never buffer an endless line, use [`SmdrFramer`].
///
/// ```
/// use smdr_parse::{parse_smdr, Parsed};
/// let buf = b"2017/05/26 00:00:57,00:00:17,21,,I,203,6049471660,,0,1036511,0,\
///             T9001,Line 1.0,V9542,VM Channel 42,0,0\r\n2017/05/26";
/// let Ok(Parsed::Complete { value, consumed }) = parse_smdr(buf) else { panic!() };
/// assert_eq!(value.call_id, 1036511);
/// assert_eq!(parse_smdr(&buf[consumed..]), Ok(Parsed::Incomplete));
/// ```
pub fn parse_smdr(buf: &[u8]) -> Result<Parsed<SmdrRecord<'_>>, ParseError> {
    let mut start = 0usize;
    loop {
        let rest = buf.get(start..).unwrap_or_default();
        let window = rest
            .get(..DEFAULT_MAX_LINE.saturating_add(1))
            .unwrap_or(rest);
        let Some(nl) = memchr::memchr(b'\n', window) else {
            return if rest.len() > DEFAULT_MAX_LINE {
                Err(ParseError {
                    offset: start,
                    kind: ParseErrorKind::LineTooLong {
                        max: DEFAULT_MAX_LINE,
                    },
                })
            } else {
                Ok(Parsed::Incomplete)
            };
        };
        let line = window.get(..nl).unwrap_or_default();
        let end = start.saturating_add(nl).saturating_add(1);
        if trim_line(line).is_empty() {
            start = end;
            continue;
        }
        // Builds the record in place: `SmdrRecord::parse` and a re-wrap would copy it.
        return crate::parse::parse_complete(line, start, end);
    }
}

/// The number of bytes up to and including the first `\n` in `buf`, or `None` if there is none:
/// how far to skip after [`parse_smdr`] returned an error.
pub fn skip_line(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf).map(|i| i.saturating_add(1))
}

/// One frame from [`SmdrFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'b> {
    /// A complete line, without its terminator (a trailing `\r` is left for the parser to trim).
    Line {
        /// The line's bytes.
        line: &'b [u8],
        /// 1-based line number in the stream.
        number: u64,
        /// Byte offset of the line's first byte in the stream.
        offset: u64,
    },
    /// A line longer than the maximum: it is being dropped (the bytes of it that already arrived
    /// are gone; the rest is dropped as it arrives). Reported once per such line.
    TooLong {
        /// 1-based line number in the stream.
        number: u64,
        /// Byte offset of the line's first byte in the stream.
        offset: u64,
        /// The configured maximum.
        max: usize,
    },
}

/// A streaming, IO-free line framer with a bounded buffer.
///
/// Push bytes as they arrive ([`SmdrFramer::push`]), then take frames until
/// [`SmdrFramer::next_frame`] returns `None`. Lines may end in `\r\n` or `\n`; blank lines are
/// skipped. A line that grows past the maximum is reported once as [`Frame::TooLong`] and its
/// bytes are discarded up to the next `\n`, so memory stays bounded whatever the peer sends.
/// The framer remembers how far it scanned, so a line arriving one byte at a time is not
/// rescanned from its start.
///
/// ```
/// use smdr_parse::{Frame, SmdrFramer, SmdrRecord};
/// let mut framer = SmdrFramer::new(1024);
/// framer.push(b"2017/05/26 00:00:57,00:00:17,21,,I,203,6049471660,,0,1036511,0,T9001,");
/// assert!(framer.next_frame().is_none());
/// framer.push(b"Line 1.0,V9542,VM Channel 42,0,0\r\n");
/// let Some(Frame::Line { line, number, .. }) = framer.next_frame() else { panic!() };
/// assert_eq!(number, 1);
/// assert_eq!(SmdrRecord::parse(line).unwrap().call_id, 1036511);
/// ```
#[derive(Debug, Clone)]
pub struct SmdrFramer {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    /// Bytes from `pos` already searched for `\n` without success.
    scanned: usize,
    /// Dropping the rest of an over-long line.
    discarding: bool,
    max_line: usize,
    /// Lines fully consumed so far.
    lines: u64,
    /// Stream offset of `buf[pos]`.
    offset: u64,
}

impl Default for SmdrFramer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl SmdrFramer {
    /// A framer that accepts lines of up to `max_line` bytes (terminator excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            discarding: false,
            max_line: max_line.max(1),
            lines: 0,
            offset: 0,
        }
    }

    /// Appends bytes read from the stream. Call [`SmdrFramer::next_frame`] until it returns
    /// `None` before pushing more, or the buffer may hold more than one maximum line.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            if self.pos >= self.buf.len() {
                self.buf.clear();
            } else {
                self.buf.drain(..self.pos);
            }
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Lines seen so far (including blank and over-long ones).
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Whether the framer is dropping the rest of an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
        self.offset = self.offset.saturating_add(n as u64);
        self.scanned = 0;
    }

    /// The next frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let available = self.buffered();
            if self.discarding {
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                match memchr::memchr(b'\n', rest) {
                    Some(nl) => {
                        self.discarding = false;
                        self.lines = self.lines.saturating_add(1);
                        self.consume(nl.saturating_add(1));
                        continue;
                    }
                    None => {
                        self.consume(available);
                        return None;
                    }
                }
            }
            // Search only what was not searched before, and never past one maximum line.
            let limit = available.min(self.max_line.saturating_add(1));
            let from = self.scanned.min(limit);
            let found = self
                .buf
                .get(self.pos.saturating_add(from)..self.pos.saturating_add(limit))
                .and_then(|w| memchr::memchr(b'\n', w))
                .map(|i| i.saturating_add(from));
            let Some(nl) = found else {
                self.scanned = limit;
                if available > self.max_line {
                    let number = self.lines.saturating_add(1);
                    let offset = self.offset;
                    // Drop the over-long line up to its terminator if that already arrived
                    // (the lines after it must survive); otherwise drop what is here and keep
                    // discarding until the terminator comes.
                    let after = self.pos.saturating_add(limit);
                    match self.buf.get(after..).and_then(|r| memchr::memchr(b'\n', r)) {
                        Some(i) => {
                            self.lines = number;
                            self.consume(limit.saturating_add(i).saturating_add(1));
                        }
                        None => {
                            self.discarding = true;
                            self.consume(available);
                        }
                    }
                    return Some(Frame::TooLong {
                        number,
                        offset,
                        max: self.max_line,
                    });
                }
                return None;
            };
            self.lines = self.lines.saturating_add(1);
            let number = self.lines;
            let offset = self.offset;
            let start = self.pos;
            let end = start.saturating_add(nl);
            self.consume(nl.saturating_add(1));
            let blank = trim_line(self.buf.get(start..end).unwrap_or_default()).is_empty();
            if blank {
                continue;
            }
            return Some(Frame::Line {
                line: self.buf.get(start..end).unwrap_or_default(),
                number,
                offset,
            });
        }
    }

    /// At end of stream: the last line if it had no terminator, then nothing. Use after
    /// [`SmdrFramer::next_frame`] returned `None` and no more bytes will come.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        if self.discarding {
            self.discarding = false;
            let n = self.buffered();
            self.consume(n);
            self.lines = self.lines.saturating_add(1);
            return None;
        }
        let start = self.pos;
        let n = self.buffered();
        if n == 0 {
            return None;
        }
        self.consume(n);
        let line = self.buf.get(start..).unwrap_or_default();
        if trim_line(line).is_empty() {
            return None;
        }
        self.lines = self.lines.saturating_add(1);
        Some(Frame::Line {
            line,
            number: self.lines,
            offset: self.offset.saturating_sub(n as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(framer: &mut SmdrFramer) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = framer.next_frame() {
            match f {
                Frame::Line { line, number, .. } => out.push((number, line.to_vec())),
                Frame::TooLong { number, .. } => out.push((number, b"<too long>".to_vec())),
            }
        }
        out
    }

    #[test]
    fn crlf_lf_blank_and_split() {
        let mut f = SmdrFramer::new(16);
        f.push(b"ab\r\n\r\ncd\nef");
        assert_eq!(
            lines(&mut f),
            vec![(1, b"ab\r".to_vec()), (3, b"cd".to_vec())]
        );
        f.push(b"g\n");
        assert_eq!(lines(&mut f), vec![(4, b"efg".to_vec())]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn over_long_line_is_reported_once_and_skipped() {
        let mut f = SmdrFramer::new(4);
        f.push(b"123");
        assert!(lines(&mut f).is_empty());
        f.push(b"4567");
        assert_eq!(lines(&mut f), vec![(1, b"<too long>".to_vec())]);
        assert!(f.is_discarding());
        f.push(b"89");
        assert!(lines(&mut f).is_empty());
        assert_eq!(f.buffered(), 0, "discarded bytes are not kept");
        f.push(b"0\nok\n");
        assert_eq!(lines(&mut f), vec![(2, b"ok".to_vec())]);
    }

    #[test]
    fn lines_after_an_over_long_line_in_the_same_push_survive() {
        let mut f = SmdrFramer::new(4);
        f.push(b"1234567\nok\nyes\n");
        assert_eq!(
            lines(&mut f),
            vec![
                (1, b"<too long>".to_vec()),
                (2, b"ok".to_vec()),
                (3, b"yes".to_vec())
            ]
        );
        assert!(!f.is_discarding());
    }

    #[test]
    fn a_line_of_exactly_max_is_accepted() {
        let mut f = SmdrFramer::new(4);
        f.push(b"1234\n12345\n");
        assert_eq!(
            lines(&mut f),
            vec![(1, b"1234".to_vec()), (2, b"<too long>".to_vec())]
        );
    }

    #[test]
    fn finish_returns_the_unterminated_tail() {
        let mut f = SmdrFramer::new(16);
        f.push(b"a\nbc");
        assert_eq!(lines(&mut f), vec![(1, b"a".to_vec())]);
        match f.finish() {
            Some(Frame::Line {
                line,
                number,
                offset,
            }) => {
                assert_eq!((line, number, offset), (&b"bc"[..], 2, 2));
            }
            other => panic!("{other:?}"),
        }
        assert!(f.finish().is_none());
    }

    #[test]
    fn byte_at_a_time_scans_each_byte_once() {
        let mut f = SmdrFramer::new(64);
        for b in b"hello world" {
            f.push(&[*b]);
            assert!(f.next_frame().is_none());
            assert_eq!(f.scanned, f.buffered());
        }
        f.push(b"\n");
        assert_eq!(lines(&mut f), vec![(1, b"hello world".to_vec())]);
    }

    #[test]
    fn parse_smdr_skips_blank_lines_and_reports_offsets() {
        assert_eq!(parse_smdr(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse_smdr(b"\r\n\r\n"), Ok(Parsed::Incomplete));
        let err = parse_smdr(b"\r\nnot a record\r\n").unwrap_err();
        assert_eq!(err.offset, 2 + 12);
        assert_eq!(skip_line(b"\r\nx"), Some(2));
        let long = vec![b'x'; DEFAULT_MAX_LINE + 1];
        assert!(matches!(
            parse_smdr(&long),
            Err(ParseError {
                kind: ParseErrorKind::LineTooLong { .. },
                ..
            })
        ));
    }
}
