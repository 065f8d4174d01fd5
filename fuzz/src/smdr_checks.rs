//! Invariants of `smdr-parse`'s entry points: [`check_parse_smdr`] for the `parse_smdr` target and
//! [`check_framer`] for the `framer` target.
//!
//! Both take arbitrary bytes and panic (with the input in the message) when an invariant breaks.
//! This file uses only `smdr_parse` and `std`, because `smdr-parse/tests/fuzz_corpus.rs` includes
//! it with `#[path]` to replay the corpus and the kept crash inputs on stable.

use smdr_parse::{
    DEFAULT_MAX_LINE, Frame, ParseError, ParseErrorKind, Parsed, SmdrFramer, SmdrRecord,
    parse_smdr, skip_line,
};

/// The bytes, printable (for assertion messages).
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Whether a line holds only what the parser trims from a line's end (`\r`, `\n`, space, tab):
/// the lines the framer and `parse_smdr` skip as blank, and `SmdrRecord::parse` rejects as empty.
fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
}

/// Whether `bytes` is nothing but blank lines (each ended by `\n`).
fn only_blank_lines(bytes: &[u8]) -> bool {
    bytes.is_empty() || (bytes.ends_with(b"\n") && is_blank(bytes))
}

/// Where the line holding byte `at` starts: just after the last `\n` before `at`.
fn line_start(data: &[u8], at: usize) -> usize {
    data.get(..at)
        .and_then(|head| head.iter().rposition(|&b| b == b'\n'))
        .map_or(0, |nl| nl + 1)
}

/// `SmdrRecord::parse` on one line, with its invariants; returns the result.
///
/// * `Ok`: 17 to 37 fields, `extra` only with all 37; writing the record and parsing it again
///   gives an equal record (round trip), and writing that gives the same bytes.
/// * `Err`: the offset is within the line; `EmptyLine` exactly for blank lines.
/// * A line ending (`\r\n`) appended to the input changes nothing.
pub fn check_record(line: &[u8]) -> Result<SmdrRecord<'_>, ParseError> {
    let parsed = SmdrRecord::parse(line);
    match &parsed {
        Ok(record) => {
            assert!(
                (17..=37).contains(&record.field_count),
                "field_count {} out of range for {}",
                record.field_count,
                show(line)
            );
            assert!(
                record.extra.is_none() || record.field_count == 37,
                "extra fields without all 37 known ones: {}",
                show(line)
            );
            let written = record.to_line();
            assert!(written.ends_with(b"\r\n"), "{}", show(&written));
            let again = match SmdrRecord::parse(&written) {
                Ok(again) => again,
                Err(e) => panic!(
                    "written record does not parse ({e})\n  input:   {}\n  written: {}",
                    show(line),
                    show(&written)
                ),
            };
            assert_eq!(
                &again,
                record,
                "round trip changed the record\n  input:   {}\n  written: {}",
                show(line),
                show(&written)
            );
            assert_eq!(
                show(&again.to_line()),
                show(&written),
                "writing is not idempotent for {}",
                show(line)
            );
            assert_eq!(&record.clone().into_owned(), record);
        }
        Err(e) => {
            assert!(
                e.offset <= line.len(),
                "error offset {} past the end ({}) of {}: {e}",
                e.offset,
                line.len(),
                show(line)
            );
            assert_eq!(
                matches!(e.kind, ParseErrorKind::EmptyLine),
                is_blank(line),
                "EmptyLine must be reported exactly for blank lines: {e} for {}",
                show(line)
            );
        }
    }
    let mut terminated = line.to_vec();
    terminated.extend_from_slice(b"\r\n");
    assert_eq!(
        SmdrRecord::parse(&terminated),
        parsed,
        "a trailing CRLF changed the result for {}",
        show(line)
    );
    parsed
}

/// Every invariant of the `parse_smdr` target:
///
/// * [`parse_smdr`] on the buffer: `Complete` has `0 < consumed <= len`, ends at a `\n`, skipped
///   only blank lines, and holds what `SmdrRecord::parse` makes of the line; `Incomplete` means
///   only blank lines and an unterminated tail of at most `DEFAULT_MAX_LINE` bytes; `Err` has
///   `offset <= len`, within the first line that is not blank;
/// * [`check_record`] on the whole buffer as one line (round trip);
/// * consuming the buffer with `parse_smdr` + `skip_line` gives the same records and errors as
///   the default framer with `SmdrRecord::parse` on each line.
pub fn check_parse_smdr(data: &[u8]) {
    check_first_record(data);
    let _ = check_record(data);
    let by_parse_smdr = records_via_parse_smdr(data);
    let by_framer = records_via_framer(data);
    assert_eq!(
        by_parse_smdr,
        by_framer,
        "parse_smdr and SmdrFramer disagree on {}",
        show(data)
    );
}

fn check_first_record(data: &[u8]) {
    match parse_smdr(data) {
        Ok(Parsed::Complete { value, consumed }) => {
            assert!(
                0 < consumed && consumed <= data.len(),
                "consumed {consumed} of {} bytes: {}",
                data.len(),
                show(data)
            );
            let Some(line_with_nl) = data.get(..consumed) else {
                unreachable!("checked above")
            };
            assert!(
                line_with_nl.ends_with(b"\n"),
                "consumed {consumed} does not end at a line end: {}",
                show(data)
            );
            let start = line_start(data, consumed - 1);
            assert!(
                only_blank_lines(&data[..start]),
                "parse_smdr skipped a line that is not blank: {}",
                show(data)
            );
            assert!(consumed - 1 - start <= DEFAULT_MAX_LINE);
            assert_eq!(
                SmdrRecord::parse(&data[start..consumed]).as_ref(),
                Ok(&value),
                "parse_smdr and SmdrRecord::parse disagree on {}",
                show(data)
            );
        }
        Ok(Parsed::Incomplete) => {
            let tail = line_start(data, data.len());
            assert!(
                only_blank_lines(&data[..tail]),
                "Incomplete, but there is a whole line that is not blank: {}",
                show(data)
            );
            assert!(
                data.len() - tail <= DEFAULT_MAX_LINE,
                "Incomplete with {} bytes after the last line end",
                data.len() - tail
            );
        }
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} past the end ({}): {e}: {}",
                e.offset,
                data.len(),
                show(data)
            );
            let start = line_start(data, e.offset);
            assert!(
                only_blank_lines(&data[..start]),
                "error offset {} is not in the first line that is not blank: {e}: {}",
                e.offset,
                show(data)
            );
            let line = &data[start..];
            match e.kind {
                ParseErrorKind::LineTooLong { max } => {
                    assert_eq!(max, DEFAULT_MAX_LINE);
                    assert_eq!(e.offset, start, "LineTooLong must point at the line start");
                    let window = line.get(..=DEFAULT_MAX_LINE);
                    assert!(
                        window.is_some_and(|w| !w.contains(&b'\n')),
                        "LineTooLong for a line of at most DEFAULT_MAX_LINE bytes"
                    );
                }
                ParseErrorKind::EmptyLine => {
                    panic!(
                        "parse_smdr must skip blank lines, not report them: {}",
                        show(data)
                    )
                }
                _ => {
                    let Some(end) = line.iter().position(|&b| b == b'\n') else {
                        panic!("{e} for a line without a terminator: {}", show(data))
                    };
                    assert_eq!(
                        SmdrRecord::parse(&line[..end]).map_err(|e| e.with_base(start)),
                        Err(e),
                        "parse_smdr and SmdrRecord::parse disagree on {}",
                        show(data)
                    );
                }
            }
        }
    }
}

type Outcome = Result<SmdrRecord<'static>, ParseError>;

/// Records and errors (offsets from the start of `data`) from [`parse_smdr`], skipping bad lines
/// with [`skip_line`] as its docs say, until it returns `Incomplete`.
fn records_via_parse_smdr(data: &[u8]) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(rest) = data.get(pos..) {
        match parse_smdr(rest) {
            Ok(Parsed::Complete { value, consumed }) => {
                assert!(consumed > 0, "no progress at {pos}: {}", show(data));
                out.push(Ok(value.into_owned()));
                pos += consumed;
            }
            Ok(Parsed::Incomplete) => break,
            Err(e) => {
                let at = e.offset;
                out.push(Err(e.with_base(pos)));
                match rest.get(at..).and_then(skip_line) {
                    Some(n) => pos += at + n,
                    None => break,
                }
            }
        }
    }
    out
}

/// The same from `SmdrFramer::default()` fed the whole buffer (no `finish`: an unterminated last
/// line is `Incomplete` for `parse_smdr`).
fn records_via_framer(data: &[u8]) -> Vec<Outcome> {
    let mut framer = SmdrFramer::default();
    framer.push(data);
    let mut out = Vec::new();
    while let Some(frame) = framer.next_frame() {
        out.push(match frame {
            Frame::Line { line, offset, .. } => SmdrRecord::parse(line)
                .map(SmdrRecord::into_owned)
                .map_err(|e| e.with_base(usize::try_from(offset).unwrap_or(usize::MAX))),
            Frame::TooLong { offset, max, .. } => Err(ParseError {
                offset: usize::try_from(offset).unwrap_or(usize::MAX),
                kind: ParseErrorKind::LineTooLong { max },
            }),
        });
    }
    out
}

/// A frame, owned, to compare runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedFrame {
    /// [`Frame::Line`].
    Line {
        /// The line (shown escaped).
        line: String,
        /// 1-based line number.
        number: u64,
        /// Offset of its first byte in the stream.
        offset: u64,
    },
    /// [`Frame::TooLong`].
    TooLong {
        /// 1-based line number.
        number: u64,
        /// Offset of its first byte in the stream.
        offset: u64,
        /// The maximum.
        max: usize,
    },
}

impl OwnedFrame {
    fn new(frame: &Frame<'_>) -> Self {
        match *frame {
            Frame::Line {
                line,
                number,
                offset,
            } => Self::Line {
                line: show(line),
                number,
                offset,
            },
            Frame::TooLong {
                number,
                offset,
                max,
            } => Self::TooLong {
                number,
                offset,
                max,
            },
        }
    }

    fn number(&self) -> u64 {
        match self {
            Self::Line { number, .. } | Self::TooLong { number, .. } => *number,
        }
    }
}

/// What the `framer` target decodes from its input bytes (a plain layout, no `arbitrary`, so
/// that the stable replay decodes corpus files the same way):
///
/// `[m, n, size_1 .. size_n, payload ..]`: `max_line` is `64 + m * 448 / 255` (64 to 512), `n % 16`
/// chunk sizes of 0 to 255 bytes follow (used in turn, over and over; 0 pushes an empty chunk),
/// and the rest is the stream. With no non-zero size the payload is pushed in one chunk. Missing
/// bytes count as 0.
#[derive(Debug, Clone, Copy)]
pub struct FramerInput<'a> {
    /// The framer's maximum line length.
    pub max_line: usize,
    /// Chunk sizes, used in turn.
    pub chunk_sizes: &'a [u8],
    /// The stream.
    pub payload: &'a [u8],
}

impl<'a> FramerInput<'a> {
    /// Decodes the layout described on the type.
    pub fn decode(data: &'a [u8]) -> Self {
        let (m, rest) = data.split_first().map_or((0, data), |(m, r)| (*m, r));
        let (n, rest) = rest.split_first().map_or((0, rest), |(n, r)| (*n, r));
        let (chunk_sizes, payload) = rest.split_at(usize::from(n % 16).min(rest.len()));
        Self {
            max_line: 64 + usize::from(m) * 448 / 255,
            chunk_sizes,
            payload,
        }
    }

    /// The payload cut into the chunks to push, in order.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        if self.chunk_sizes.iter().all(|&s| s == 0) {
            return vec![self.payload];
        }
        let mut chunks = Vec::new();
        let mut rest = self.payload;
        for &size in self.chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(usize::from(size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }
}

/// The frames the framer must produce for `payload`, from its documentation: every line (split
/// at `\n`, numbered from 1, blank ones counted but not returned) of at most `max_line` bytes as
/// `Line`, a longer one as one `TooLong`; an unterminated last line of at most `max_line` bytes
/// comes from `finish` if it is not blank. Returns (frames from `next_frame`, frame from `finish`).
pub fn expected_frames(payload: &[u8], max_line: usize) -> (Vec<OwnedFrame>, Option<OwnedFrame>) {
    let mut frames = Vec::new();
    let mut offset = 0u64;
    let mut number = 0u64;
    let mut rest = payload;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        number += 1;
        if line.len() > max_line {
            frames.push(OwnedFrame::TooLong {
                number,
                offset,
                max: max_line,
            });
        } else if !is_blank(line) {
            frames.push(OwnedFrame::Line {
                line: show(line),
                number,
                offset,
            });
        }
        offset += nl as u64 + 1;
        rest = &rest[nl + 1..];
    }
    let mut last = None;
    if rest.len() > max_line {
        frames.push(OwnedFrame::TooLong {
            number: number + 1,
            offset,
            max: max_line,
        });
    } else if !rest.is_empty() && !is_blank(rest) {
        last = Some(OwnedFrame::Line {
            line: show(rest),
            number: number + 1,
            offset,
        });
    }
    (frames, last)
}

/// One run of the framer over `chunks`, checking the buffer bound after every push and drain.
/// Returns (frames from `next_frame`, `lines()` before `finish`, frame from `finish`).
fn run_framer(
    max_line: usize,
    chunks: &[&[u8]],
    mut on_line: impl FnMut(&[u8]),
) -> (Vec<OwnedFrame>, u64, Option<OwnedFrame>) {
    let mut framer = SmdrFramer::new(max_line);
    let mut frames = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        assert!(
            framer.buffered() <= max_line + chunk.len(),
            "buffered {} > max_line {max_line} + chunk {} after a push",
            framer.buffered(),
            chunk.len()
        );
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line { line, .. } = frame {
                assert!(line.len() <= max_line && !line.contains(&b'\n'));
                on_line(line);
            }
            frames.push(OwnedFrame::new(&frame));
        }
        assert!(
            framer.buffered() <= max_line,
            "buffered {} > max_line {max_line} with no frame ready",
            framer.buffered()
        );
    }
    let lines = framer.lines();
    let last = framer.finish().map(|f| OwnedFrame::new(&f));
    assert_eq!(framer.buffered(), 0, "bytes left after finish");
    assert!(!framer.is_discarding());
    assert!(framer.finish().is_none(), "finish returned a second frame");
    assert!(framer.next_frame().is_none(), "a frame after finish");
    (frames, lines, last)
}

/// Every invariant of the `framer` target, for input bytes in the [`FramerInput`] layout:
/// pushing the payload in the decoded chunks and pushing it at once both give exactly the frames
/// of [`expected_frames`]; line numbers strictly increase; `buffered()` never exceeds
/// `max_line` + the chunk just pushed (and `max_line` once drained); `lines()` counts every
/// `\n`; lines that parse round-trip ([`check_record`]).
pub fn check_framer(data: &[u8]) {
    let input = FramerInput::decode(data);
    let max_line = input.max_line;
    let chunks = input.chunks();
    let (want, want_last) = expected_frames(input.payload, max_line);
    let newlines = input.payload.iter().filter(|&&b| b == b'\n').count() as u64;

    let whole = run_framer(max_line, &[input.payload], |line| {
        let _ = check_record(line);
    });
    let chunked = run_framer(max_line, &chunks, |_| {});

    for (how, (frames, lines, last)) in [("at once", &whole), ("in chunks", &chunked)] {
        let numbers: Vec<u64> = frames.iter().chain(last).map(OwnedFrame::number).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "line numbers do not increase ({how}): {numbers:?}\n  max_line {max_line}, chunks {:?}\n  payload {}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            show(input.payload)
        );
        assert_eq!(
            (frames, last),
            (&want, &want_last),
            "frames pushed {how} differ from the expected ones\n  max_line {max_line}, chunks {:?}\n  payload {}",
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            show(input.payload)
        );
        assert_eq!(
            *lines, newlines,
            "lines() before finish ({how}) is not the number of line ends"
        );
    }
}
