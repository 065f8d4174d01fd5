//! Framing: finding where AMI frames end in a byte stream.

use crate::parse::{
    MAX_BLANK_LINE, ends_command, find_nl, is_blank, is_follows, is_greeting, is_message_start,
    message_start_decided, strip_cr,
};
use crate::{AmiMessage, HeaderBuf, ParseError, ParseErrorKind};

/// The default maximum message size in bytes (terminating blank line excluded). Events are
/// 200 bytes to a few KiB; old-style command output can be much longer.
pub const DEFAULT_MAX_MESSAGE: usize = 256 * 1024;
/// The default maximum number of header lines of a message. Events have 10 to 100; Asterisk 14+
/// sends each line of command output as an `Output` header.
pub const DEFAULT_MAX_HEADERS: usize = 4096;

/// Bounds on what one frame may hold, so that memory stays bounded whatever a peer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a message may have, terminating blank line excluded (at least 1).
    pub max_message: usize,
    /// The most header lines a message may have (command output lines not counted).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_MAX_MESSAGE,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

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
    /// No complete frame yet: read more bytes and call again with the longer buffer.
    Incomplete,
}

/// One frame from [`AmiFramer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'b> {
    /// The greeting a server sends first (`Asterisk Call Manager/9.0.0`), without its line
    /// terminator. Recognised at the start of any frame.
    Greeting {
        /// The line.
        line: &'b [u8],
        /// 1-based frame number in the stream.
        number: u64,
        /// Byte offset of the line's first byte in the stream.
        offset: u64,
    },
    /// A complete message: its header lines (and command output), each with its line
    /// terminator, without the blank line that ended it. Parse it with
    /// [`AmiMessage::parse_with`].
    Message {
        /// The message's bytes.
        bytes: &'b [u8],
        /// 1-based frame number in the stream.
        number: u64,
        /// Byte offset of the message's first byte in the stream.
        offset: u64,
    },
    /// A message over a limit ([`ParseErrorKind::MessageTooLarge`] or
    /// [`ParseErrorKind::TooManyHeaders`]): its bytes are dropped up to the next blank line
    /// (those that already arrived are gone, the rest is dropped as it arrives). Reported once.
    Error {
        /// What limit it broke.
        kind: ParseErrorKind,
        /// 1-based frame number in the stream.
        number: u64,
        /// Byte offset of the message's first byte in the stream.
        offset: u64,
    },
    /// Only from [`AmiFramer::finish`]: the stream ended inside a frame. These are the bytes
    /// that arrived; they never came with their terminator.
    Truncated {
        /// The bytes of the unfinished frame.
        bytes: &'b [u8],
        /// 1-based frame number in the stream.
        number: u64,
        /// Byte offset of the frame's first byte in the stream.
        offset: u64,
    },
}

/// Where the scanner is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames: blank lines are skipped, the next line starts a frame.
    Idle,
    /// In a message, after its first line.
    Headers,
    /// In `Response: Follows` command output; `end_seen` once `--END COMMAND--` ended a line;
    /// `blank`: where the current run of blank lines started, if the last line was blank.
    Follows {
        end_seen: bool,
        blank: Option<usize>,
    },
    /// Dropping a message over a limit up to the next blank line; `dropped`: bytes of the
    /// current line dropped already (`usize::MAX` when they were not all blank).
    Discard { dropped: usize },
}

/// What the scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Need more bytes.
    NeedMore,
    /// Drop this many bytes (blank lines between frames, or a message being discarded).
    Skip(usize),
    /// The greeting: the line's length (without terminator) and the bytes it used.
    Greeting { len: usize, consumed: usize },
    /// A message of `len` bytes that used `consumed` bytes (its blank line included).
    Message { len: usize, consumed: usize },
    /// A message over a limit; drop `consumed` bytes, then discard up to the next blank line.
    TooLarge {
        kind: ParseErrorKind,
        consumed: usize,
    },
}

/// The incremental frame scanner shared by [`AmiFramer`] and [`parse_ami`]: it remembers the
/// start of the first line it has not examined, so no byte is examined twice.
#[derive(Debug, Clone)]
struct Scanner {
    state: State,
    /// Offset (from the frame's start) of the first line not examined yet.
    scanned: usize,
    /// Offset up to which bytes were searched for `\n` without finding one (so that a long
    /// line arriving in small pieces is searched once, not once per piece).
    searched: usize,
    /// Header lines of the current message so far.
    lines: usize,
}

impl Scanner {
    const fn new() -> Self {
        Self {
            state: State::Idle,
            scanned: 0,
            searched: 0,
            lines: 0,
        }
    }

    fn reset(&mut self, state: State) {
        self.state = state;
        self.scanned = 0;
        self.searched = 0;
        self.lines = 0;
    }

    /// Looks for the end of the frame that starts at `buf[0]`. After any step but `NeedMore`
    /// the caller drops the bytes the step used and calls again.
    fn step(&mut self, buf: &[u8], limits: &Limits) -> Step {
        let max = limits.max_message.max(1);
        loop {
            if let State::Discard { dropped } = self.state {
                return self.discard(buf, dropped);
            }
            let at = self.scanned;
            let rest = buf.get(at..).unwrap_or_default();
            if let State::Follows { end_seen: true, .. } = self.state {
                // The line after `--END COMMAND--`: a blank one belongs to this frame; anything
                // else starts the next frame.
                let consumed = match rest {
                    [] | [b'\r'] => {
                        self.searched = buf.len();
                        return Step::NeedMore;
                    }
                    [b'\n', ..] => at.saturating_add(1),
                    [b'\r', b'\n', ..] => at.saturating_add(2),
                    _ => at,
                };
                self.reset(State::Idle);
                return Step::Message { len: at, consumed };
            }
            let from = self.searched.max(at);
            let found = buf
                .get(from..)
                .and_then(find_nl)
                .map(|i| from.saturating_add(i).saturating_sub(at));
            let Some(nl) = found else {
                self.searched = buf.len();
                // A partial line. After blank lines in command output, it decides (as soon as
                // its first bytes do) whether the output ended without its marker.
                if let State::Follows { blank: Some(b), .. } = self.state {
                    match message_start_decided(rest) {
                        None => return Step::NeedMore,
                        Some(true) => {
                            self.reset(State::Idle);
                            return Step::Message {
                                len: b,
                                consumed: at,
                            };
                        }
                        Some(false) => {}
                    }
                }
                // One that may still become a blank line is short and not counted.
                if !is_blank(rest) && at.saturating_add(rest.len()) > max {
                    self.reset(State::Discard {
                        dropped: usize::MAX,
                    });
                    return Step::TooLarge {
                        kind: ParseErrorKind::MessageTooLarge { max },
                        consumed: buf.len(),
                    };
                }
                return Step::NeedMore;
            };
            let line = rest.get(..nl).unwrap_or_default();
            let next = at.saturating_add(nl).saturating_add(1);
            match self.state {
                State::Idle => {
                    if is_blank(line) {
                        self.reset(State::Idle);
                        return Step::Skip(next);
                    }
                    if next > max {
                        self.reset(State::Discard { dropped: 0 });
                        return Step::TooLarge {
                            kind: ParseErrorKind::MessageTooLarge { max },
                            consumed: next,
                        };
                    }
                    if is_greeting(line) {
                        self.reset(State::Idle);
                        return Step::Greeting {
                            len: strip_cr(line).len(),
                            consumed: next,
                        };
                    }
                    self.state = if is_follows(line) {
                        State::Follows {
                            end_seen: false,
                            blank: None,
                        }
                    } else {
                        State::Headers
                    };
                    self.lines = 1;
                    if self.lines > limits.max_headers {
                        self.reset(State::Discard { dropped: 0 });
                        return Step::TooLarge {
                            kind: ParseErrorKind::TooManyHeaders {
                                max: limits.max_headers,
                            },
                            consumed: next,
                        };
                    }
                }
                State::Headers => {
                    if is_blank(line) {
                        self.reset(State::Idle);
                        return Step::Message {
                            len: at,
                            consumed: next,
                        };
                    }
                    self.lines = self.lines.saturating_add(1);
                    let kind = if next > max {
                        Some(ParseErrorKind::MessageTooLarge { max })
                    } else if self.lines > limits.max_headers {
                        Some(ParseErrorKind::TooManyHeaders {
                            max: limits.max_headers,
                        })
                    } else {
                        None
                    };
                    if let Some(kind) = kind {
                        self.reset(State::Discard { dropped: 0 });
                        return Step::TooLarge {
                            kind,
                            consumed: next,
                        };
                    }
                }
                State::Follows { blank, .. } => {
                    // Blank lines are output, unless `--END COMMAND--` never came and the
                    // next message starts after them (a `Response: Follows` without output).
                    if let Some(b) = blank {
                        if is_message_start(line) {
                            self.reset(State::Idle);
                            return Step::Message {
                                len: b,
                                consumed: at,
                            };
                        }
                    }
                    if next > max {
                        self.reset(State::Discard { dropped: 0 });
                        return Step::TooLarge {
                            kind: ParseErrorKind::MessageTooLarge { max },
                            consumed: next,
                        };
                    }
                    self.state = if is_blank(line) {
                        State::Follows {
                            end_seen: false,
                            blank: blank.or(Some(at)),
                        }
                    } else {
                        State::Follows {
                            end_seen: ends_command(line),
                            blank: None,
                        }
                    };
                }
                State::Discard { .. } => {}
            }
            self.scanned = next;
        }
    }

    /// Drops bytes of a message over a limit up to and including the next blank line. Keeps a
    /// partial last byte (it may be the `\r` of that blank line); `dropped` counts the bytes of
    /// the current line dropped before (`usize::MAX` once they cannot be part of a blank line).
    fn discard(&mut self, buf: &[u8], mut dropped: usize) -> Step {
        let mut at = 0usize;
        loop {
            let rest = buf.get(at..).unwrap_or_default();
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let line = rest.get(..nl).unwrap_or_default();
                    let blank =
                        is_blank(line) && dropped.saturating_add(line.len()) <= MAX_BLANK_LINE;
                    at = at.saturating_add(nl).saturating_add(1);
                    dropped = 0;
                    if blank {
                        self.reset(State::Idle);
                        return Step::Skip(at);
                    }
                }
                None => {
                    if let Some(drop) = rest.len().checked_sub(1).filter(|d| *d > 0) {
                        let part = rest.get(..drop).unwrap_or_default();
                        dropped = if is_blank(part) {
                            dropped.saturating_add(drop)
                        } else {
                            usize::MAX
                        };
                        at = at.saturating_add(drop);
                    }
                    self.reset(State::Discard { dropped });
                    return if at == 0 {
                        Step::NeedMore
                    } else {
                        Step::Skip(at)
                    };
                }
            }
        }
    }
}

/// Parses the first frame in `buf`, which must start at a frame start (blank lines before it
/// are skipped), with the default [`Limits`].
///
/// * `Ok(Parsed::Complete { .. })`: a message or the greeting; skip `consumed` bytes (the
///   blank lines before it and its terminating blank line included).
/// * `Ok(Parsed::Incomplete)`: no complete frame yet; every strict prefix of a frame is
///   incomplete.
/// * `Err(e)`: the frame is malformed or over a limit; `e.offset` is from the start of `buf`.
///   Skip to the next blank line with [`skip_message`] and go on.
///
/// The header index is allocated per call; for a stream use [`AmiFramer`] with
/// [`AmiMessage::parse_with`].
///
/// ```
/// use ami_proto::{parse_ami, Parsed};
/// let buf = b"Event: Hangup\r\nUniqueid: 1414510601.2\r\nCause: 16\r\n\r\nEvent: Ne";
/// let Ok(Parsed::Complete { value, consumed }) = parse_ami(buf) else { panic!() };
/// assert_eq!(value.event(), Some("Hangup"));
/// assert_eq!(value.get("UniqueID"), Some(&b"1414510601.2"[..]));
/// assert_eq!(parse_ami(&buf[consumed..]), Ok(Parsed::Incomplete));
/// ```
pub fn parse_ami(buf: &[u8]) -> Result<Parsed<AmiMessage<'_>>, ParseError> {
    let limits = Limits::default();
    let mut scanner = Scanner::new();
    let mut start = 0usize;
    loop {
        let rest = buf.get(start..).unwrap_or_default();
        let (frame, consumed) = match scanner.step(rest, &limits) {
            Step::NeedMore => return Ok(Parsed::Incomplete),
            Step::Skip(n) => {
                start = start.saturating_add(n);
                continue;
            }
            Step::Greeting { len, consumed } | Step::Message { len, consumed } => {
                (rest.get(..len).unwrap_or_default(), consumed)
            }
            Step::TooLarge { kind, .. } => return Err(ParseError::new(start, kind)),
        };
        return match AmiMessage::parse(frame) {
            Ok(value) => Ok(Parsed::Complete {
                value,
                consumed: start.saturating_add(consumed),
            }),
            Err(e) => Err(e.with_base(start)),
        };
    }
}

/// The number of bytes up to and including the next blank line in `buf` (the end of the
/// current message), or `None` if there is none yet: how far to skip after [`parse_ami`]
/// returned an error.
pub fn skip_message(buf: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    let mut content = false;
    for nl in memchr::memchr_iter(b'\n', buf) {
        let blank = is_blank(buf.get(at..nl).unwrap_or_default());
        at = nl.saturating_add(1);
        if blank && content {
            return Some(at);
        }
        content |= !blank;
    }
    None
}

/// A streaming, IO-free AMI framer with a bounded buffer.
///
/// Push bytes as they arrive ([`AmiFramer::push`]), then take frames until
/// [`AmiFramer::next_frame`] returns `None`. It finds:
///
/// * the greeting line (`Asterisk Call Manager/X.Y.Z`), as its own frame, even when the next
///   message follows on the next line without a blank line;
/// * messages: lines ending in `\r\n` or `\n`, up to a blank line; extra blank lines between
///   messages are skipped. A line of at most 64 spaces, tabs and `\r` counts as blank (no header
///   can be all spaces; captures have them);
/// * old-style command output: a message starting `Response: Follows` runs to the line ending
///   in `--END COMMAND--` (blank lines inside the output are kept), plus one blank line. If
///   blank lines are followed by a line that can only start a message (`Event:`, `Response:`,
///   `Action:` or the greeting) before any marker came, the message ended at the first of those
///   blank lines: a `Response: Follows` without output or marker (as some proxies and test
///   captures write it) cannot swallow the stream.
///
/// A message that grows past [`Limits::max_message`] bytes or [`Limits::max_headers`] lines is
/// reported once as [`Frame::Error`] and its bytes are dropped up to the next blank line, so
/// memory stays bounded whatever the peer sends: once drained, the framer holds at most one
/// maximum message and a short partial blank line. (Dropped command output resumes at its first
/// blank line, so the rest of it may come out as a malformed message.) The framer remembers where it stopped
/// scanning, so a message arriving a byte at a time is examined once, not once per byte.
///
/// A frame that never got its terminator is never returned by `next_frame`; at end of stream,
/// [`AmiFramer::finish`] hands it over as [`Frame::Truncated`].
///
/// ```
/// use ami_proto::{AmiFramer, AmiMessage, Frame, HeaderBuf};
/// let mut framer = AmiFramer::default();
/// let mut headers = HeaderBuf::new();
/// framer.push(b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nActionID: a1\r\n");
/// assert!(matches!(framer.next_frame(), Some(Frame::Greeting { line: b"Asterisk Call Manager/9.0.0", .. })));
/// assert!(framer.next_frame().is_none());
/// framer.push(b"Message: Authentication accepted\r\n\r\n");
/// let Some(Frame::Message { bytes, number, .. }) = framer.next_frame() else { panic!() };
/// assert_eq!(number, 2);
/// let msg = AmiMessage::parse_with(bytes, &mut headers).unwrap();
/// assert_eq!(msg.response(), Some("Success"));
/// assert_eq!(msg.action_id(), Some("a1"));
/// ```
#[derive(Debug, Clone)]
pub struct AmiFramer {
    buf: Vec<u8>,
    /// Start of unconsumed bytes in `buf`.
    pos: usize,
    scanner: Scanner,
    limits: Limits,
    /// Frames returned so far.
    frames: u64,
    /// Stream offset of `buf[pos]`.
    offset: u64,
}

impl Default for AmiFramer {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl AmiFramer {
    /// A framer with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scanner: Scanner::new(),
            limits: Limits {
                max_message: limits.max_message.max(1),
                max_headers: limits.max_headers,
            },
            frames: 0,
            offset: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Appends bytes read from the stream. Call [`AmiFramer::next_frame`] until it returns
    /// `None` before pushing more, or the buffer may hold more than one maximum message.
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

    /// Bytes received but not yet returned in a frame (or dropped).
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Frames returned so far (greeting, messages, errors and truncated frames).
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes of the stream consumed so far (returned in frames, skipped or dropped).
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// Whether the framer is dropping the rest of a message over a limit.
    pub fn is_discarding(&self) -> bool {
        matches!(self.scanner.state, State::Discard { .. })
    }

    fn consume(&mut self, n: usize) {
        self.pos = self.pos.saturating_add(n);
        self.offset = self.offset.saturating_add(n as u64);
    }

    /// The next frame, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let avail = self.buf.get(self.pos..).unwrap_or_default();
            let step = self.scanner.step(avail, &self.limits);
            let (start, offset) = (self.pos, self.offset);
            match step {
                Step::NeedMore => return None,
                Step::Skip(n) => {
                    self.consume(n);
                    continue;
                }
                Step::TooLarge { kind, consumed, .. } => {
                    self.consume(consumed);
                    self.frames = self.frames.saturating_add(1);
                    return Some(Frame::Error {
                        kind,
                        number: self.frames,
                        offset,
                    });
                }
                Step::Greeting { len, consumed } => {
                    self.consume(consumed);
                    self.frames = self.frames.saturating_add(1);
                    let line = self
                        .buf
                        .get(start..start.saturating_add(len))
                        .unwrap_or_default();
                    return Some(Frame::Greeting {
                        line,
                        number: self.frames,
                        offset,
                    });
                }
                Step::Message { len, consumed } => {
                    self.consume(consumed);
                    self.frames = self.frames.saturating_add(1);
                    let bytes = self
                        .buf
                        .get(start..start.saturating_add(len))
                        .unwrap_or_default();
                    return Some(Frame::Message {
                        bytes,
                        number: self.frames,
                        offset,
                    });
                }
            }
        }
    }

    /// At end of stream: the frame that never got its terminator (as [`Frame::Truncated`]),
    /// then nothing. Use after [`AmiFramer::next_frame`] returned `None` and no more bytes will
    /// come. Blank bytes and the rest of a discarded message are dropped silently.
    pub fn finish(&mut self) -> Option<Frame<'_>> {
        let state = self.scanner.state;
        self.scanner.reset(State::Idle);
        let n = self.buffered();
        let (start, offset) = (self.pos, self.offset);
        self.consume(n);
        let bytes = self.buf.get(start..).unwrap_or_default();
        if matches!(state, State::Discard { .. }) || (state == State::Idle && is_blank(bytes)) {
            return None;
        }
        self.frames = self.frames.saturating_add(1);
        Some(Frame::Truncated {
            bytes,
            number: self.frames,
            offset,
        })
    }

    /// Like [`AmiFramer::next_frame`], parsing each message (and the greeting) into `headers`:
    /// `Ok` with the message, or `Err` for a frame over a limit or malformed (offsets from the
    /// start of the stream; the frame is skipped either way).
    pub fn next_message<'s>(
        &'s mut self,
        headers: &'s mut HeaderBuf,
    ) -> Option<Result<AmiMessage<'s>, ParseError>> {
        Some(match self.next_frame()? {
            Frame::Greeting {
                line: bytes,
                offset,
                ..
            }
            | Frame::Message { bytes, offset, .. }
            | Frame::Truncated { bytes, offset, .. } => AmiMessage::parse_with(bytes, headers)
                .map_err(|e| e.with_base(usize::try_from(offset).unwrap_or(usize::MAX))),
            Frame::Error { kind, offset, .. } => Err(ParseError::new(
                usize::try_from(offset).unwrap_or(usize::MAX),
                kind,
            )),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames as text: `G:<line>`, `M:<bytes>`, `E:<kind>`, `T:<bytes>` (from `finish`).
    fn drain(f: &mut AmiFramer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = f.next_frame() {
            out.push(show(&frame));
        }
        out
    }

    fn show(frame: &Frame<'_>) -> String {
        match frame {
            Frame::Greeting { line, .. } => format!("G:{}", line.escape_ascii()),
            Frame::Message { bytes, .. } => format!("M:{}", bytes.escape_ascii()),
            Frame::Error { kind, .. } => format!("E:{kind}"),
            Frame::Truncated { bytes, .. } => format!("T:{}", bytes.escape_ascii()),
        }
    }

    fn all(input: &[u8], limits: Limits) -> Vec<String> {
        let mut f = AmiFramer::new(limits);
        f.push(input);
        let mut out = drain(&mut f);
        out.extend(f.finish().as_ref().map(show));
        out
    }

    #[test]
    fn greeting_crlf_lf_and_extra_blank_lines() {
        let out = all(
            b"Asterisk Call Manager/1.3\nAction: login\nEvents: on\n\n\r\n\nA: 1\r\nB:\r\n\r\n",
            Limits::default(),
        );
        assert_eq!(
            out,
            [
                "G:Asterisk Call Manager/1.3",
                "M:Action: login\\nEvents: on\\n",
                "M:A: 1\\r\\nB:\\r\\n",
            ]
        );
    }

    #[test]
    fn numbers_and_offsets() {
        let mut f = AmiFramer::default();
        f.push(b"Asterisk Call Manager/9.0.0\r\n\r\nA: 1\r\n\r\nB: 2\n\n");
        let Some(Frame::Greeting { number, offset, .. }) = f.next_frame() else {
            panic!()
        };
        assert_eq!((number, offset), (1, 0));
        let Some(Frame::Message { number, offset, .. }) = f.next_frame() else {
            panic!()
        };
        assert_eq!((number, offset), (2, 31));
        let Some(Frame::Message { number, offset, .. }) = f.next_frame() else {
            panic!()
        };
        assert_eq!((number, offset), (3, 39));
        assert!(f.next_frame().is_none());
        assert_eq!((f.frames(), f.consumed(), f.buffered()), (3, 45, 0));
    }

    #[test]
    fn command_output_runs_to_end_command() {
        let input = b"Response: Follows\nPrivilege: Command\nrow 1\n\nrow 3\n--END COMMAND--\n\n\
                      Response: Follows\nx--END COMMAND--\nEvent: Next\n\n";
        assert_eq!(
            all(input, Limits::default()),
            [
                "M:Response: Follows\\nPrivilege: Command\\nrow 1\\n\\nrow 3\\n--END COMMAND--\\n",
                "M:Response: Follows\\nx--END COMMAND--\\n",
                "M:Event: Next\\n",
            ]
        );
    }

    #[test]
    fn follows_without_output_ends_before_the_next_message() {
        // goami2's capture: no output, no marker; the blank line is followed by an action.
        let input = b"Response: Follows\r\nPrivilege: Command\r\nActionID: b\r\n\r\n\
                      Action: QueueStatus\r\n\r\n";
        assert_eq!(
            all(input, Limits::default()),
            [
                "M:Response: Follows\\r\\nPrivilege: Command\\r\\nActionID: b\\r\\n",
                "M:Action: QueueStatus\\r\\n",
            ]
        );
        // Output that starts with blank lines (as `sip show peer` does) is still output.
        let input = b"Response: Follows\nActionID: 1\n\n\n  * Name : 1000\n--END COMMAND--\n\n";
        assert_eq!(all(input, Limits::default()).len(), 1);
    }

    #[test]
    fn lines_of_spaces_are_blank() {
        assert_eq!(
            all(b" \nAction: Ping\n \t\r\nA: 1\n\n", Limits::default()),
            ["M:Action: Ping\\n", "M:A: 1\\n"]
        );
    }

    #[test]
    fn a_truncated_last_frame_is_never_complete() {
        for input in [
            &b"Event: A\r\nStatus: 0"[..],
            b"Event: A\r\nStatus: 0\r\n",
            b"Event: A\r\nStatus: 0\r\n\r",
            b"Response: Follows\nrow\n--END COMMAND--\n",
            b"Asterisk Call Manager/1",
        ] {
            let mut f = AmiFramer::default();
            f.push(input);
            assert!(f.next_frame().is_none(), "{input:?}");
            let Some(Frame::Truncated { bytes, .. }) = f.finish() else {
                panic!("{input:?}")
            };
            assert_eq!(bytes, input);
            assert!(f.finish().is_none());
        }
        // Blank bytes at the end are not a frame.
        let mut f = AmiFramer::default();
        f.push(b"A: 1\n\n\r\n\r");
        assert_eq!(drain(&mut f), ["M:A: 1\\n"]);
        assert!(f.finish().is_none());
    }

    #[test]
    fn over_long_messages_are_reported_once_and_skipped() {
        let limits = Limits {
            max_message: 16,
            max_headers: 3,
        };
        // In one push: the messages after it survive.
        assert_eq!(
            all(b"A: 0123456789abcdef\nB: 1\n\nC: 2\n\n", limits),
            ["E:message longer than 16 bytes", "M:C: 2\\n"]
        );
        assert_eq!(
            all(b"A:1\nB:2\nC:3\nD:4\nE:5\n\nF: 6\n\n", limits),
            ["E:more than 3 headers", "M:F: 6\\n"]
        );
        // A line with no end in sight: dropped as it arrives, memory stays bounded.
        let mut f = AmiFramer::new(limits);
        f.push(b"Event: 0123456789");
        assert_eq!(drain(&mut f), ["E:message longer than 16 bytes"]);
        assert!(f.is_discarding());
        for _ in 0..100 {
            f.push(b"0123456789012345678901234567890123456789");
            assert!(drain(&mut f).is_empty());
            assert!(f.buffered() <= 1, "{}", f.buffered());
        }
        f.push(b"\nmore: x\n\r");
        assert!(drain(&mut f).is_empty());
        f.push(b"\nOK: 1\n\n");
        assert_eq!(drain(&mut f), ["M:OK: 1\\n"]);
        assert!(!f.is_discarding());
        // A message of exactly the maximum is fine.
        assert_eq!(
            all(b"A: 0123456789ab\n\n", limits),
            ["M:A: 0123456789ab\\n"]
        );
    }

    #[test]
    fn byte_at_a_time_gives_the_same_frames_and_searches_once() {
        let input = b"Asterisk Call Manager/2.10.4\r\nResponse: Success\r\nMessage: ok\r\n\r\n\
                      Response: Follows\r\nout\r\n\r\n--END COMMAND--\r\n\r\nEvent: X\r\n\r\n";
        let whole = all(input, Limits::default());
        let mut f = AmiFramer::default();
        let mut out = Vec::new();
        for b in input {
            f.push(&[*b]);
            out.extend(drain(&mut f));
            // Everything buffered has been searched for a line end once.
            assert_eq!(f.scanner.searched.max(f.scanner.scanned), f.buffered());
        }
        assert!(f.finish().is_none());
        assert_eq!(out, whole);
        assert_eq!(whole.len(), 4);
    }

    #[test]
    fn parse_ami_and_skip_message() {
        assert_eq!(parse_ami(b""), Ok(Parsed::Incomplete));
        assert_eq!(parse_ami(b"\r\n\n"), Ok(Parsed::Incomplete));
        let Ok(Parsed::Complete { value, consumed }) =
            parse_ami(b"\nAsterisk Call Manager/1.3\nA: b\n")
        else {
            panic!()
        };
        assert_eq!((value.greeting_version(), consumed), (Some("1.3"), 27));
        let buf = b"\r\nEvent: X\r\nstray\r\n\r\nEvent: Y\r\n\r\n";
        let e = parse_ami(buf).unwrap_err();
        assert_eq!(e, ParseError::new(12, ParseErrorKind::MissingColon));
        let skip = skip_message(buf).unwrap();
        let Ok(Parsed::Complete { value, .. }) = parse_ami(&buf[skip..]) else {
            panic!()
        };
        assert_eq!(value.event(), Some("Y"));
        assert_eq!(skip_message(b"\n\nA: 1\n"), None);
        let long = [b'x'; DEFAULT_MAX_MESSAGE + 2];
        assert!(matches!(
            parse_ami(&long),
            Err(ParseError {
                kind: ParseErrorKind::MessageTooLarge { .. },
                offset: 0
            })
        ));
    }

    #[test]
    fn next_message_parses_and_reports() {
        let mut f = AmiFramer::new(Limits {
            max_message: 64,
            max_headers: 2,
        });
        let mut h = HeaderBuf::new();
        f.push(b"Event: A\n\nnot a header\n\nA:1\nB:2\nC:3\n\nEvent: B\n");
        assert_eq!(f.next_message(&mut h).unwrap().unwrap().event(), Some("A"));
        assert_eq!(
            f.next_message(&mut h).unwrap().unwrap_err(),
            ParseError::new(10, ParseErrorKind::MissingColon)
        );
        assert_eq!(
            f.next_message(&mut h).unwrap().unwrap_err(),
            ParseError::new(24, ParseErrorKind::TooManyHeaders { max: 2 })
        );
        assert!(f.next_message(&mut h).is_none());
    }
}
