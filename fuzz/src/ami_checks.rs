//! Invariants of `ami-proto`'s entry points: [`check_ami_parse`] for the `ami_parse` target and
//! [`check_ami_framer`] for the `ami_framer` target.
//!
//! Both take arbitrary bytes and panic (with the input in the message) when an invariant breaks.
//! This file uses only `ami_proto` and `std`, because `ami-proto/tests/fuzz_corpus.rs` includes
//! it with `#[path]` to replay the corpus and the kept crash inputs on stable.

use ami_proto::{
    AmiFramer, AmiMessage, CelEventKind, CelExtra, Event, Frame, HeaderBuf, Limits, ParseError,
    ParseErrorKind, Parsed, Timestamp, parse_ami, parse_local_datetime, skip_message,
};

/// The bytes, printable (for assertion messages).
fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The framer's notion of a blank line (without its `\n`): at most 64 spaces, tabs and `\r`.
fn is_blank(line: &[u8]) -> bool {
    line.len() <= 64 && line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `name: value` split the way the documentation says (name: printable ASCII but `:`, not
/// starting with a space; one optional space after the colon).
fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = line.split_at(colon);
    let valid = name.first().is_some_and(|&b| b != b' ')
        && name.iter().all(|&b| (0x20..=0x7e).contains(&b));
    let after = &rest[1..];
    let value = after.strip_prefix(b" ").unwrap_or(after);
    valid.then_some((name, strip_cr(value)))
}

fn is_greeting(line: &[u8]) -> bool {
    line.starts_with(b"Asterisk Call Manager/")
}

fn is_follows(line: &[u8]) -> bool {
    header(line).is_some_and(|(n, v)| {
        n.eq_ignore_ascii_case(b"Response") && v.eq_ignore_ascii_case(b"Follows")
    })
}

fn is_message_start(line: &[u8]) -> bool {
    is_greeting(line)
        || header(line).is_some_and(|(n, _)| {
            [&b"Event"[..], b"Response", b"Action"]
                .iter()
                .any(|x| n.eq_ignore_ascii_case(x))
        })
}

fn ends_command(line: &[u8]) -> bool {
    strip_cr(line).ends_with(b"--END COMMAND--")
}

/// Everything a caller can read from a message, read (no panics allowed), plus its invariants:
/// header names are valid, values hold no `\n`, writing and parsing again gives an equal message
/// and the same bytes, the owned copy and the reused-storage parse are equal, `split_events`
/// keeps every header in order.
pub fn check_message(frame: &[u8], m: &AmiMessage<'_>) {
    for (name, value) in m.headers() {
        assert!(
            header(format!("{name}:").as_bytes()).is_some(),
            "invalid header name {name:?} from {}",
            show(frame)
        );
        assert!(
            !value.contains(&b'\n'),
            "a value holds a line end: {}",
            show(frame)
        );
    }
    assert_eq!(m.headers().len(), m.len());
    let written = m.to_bytes();
    let again = match AmiMessage::parse(&written) {
        Ok(again) => again,
        Err(e) => panic!(
            "written message does not parse ({e})\n  input:   {}\n  written: {}",
            show(frame),
            show(&written)
        ),
    };
    assert_eq!(
        &again,
        m,
        "round trip changed the message\n  input:   {}\n  written: {}",
        show(frame),
        show(&written)
    );
    assert_eq!(
        show(&again.to_bytes()),
        show(&written),
        "writing is not idempotent for {}",
        show(frame)
    );
    assert_eq!(&m.clone().into_owned(), m);
    let mut buf = HeaderBuf::new();
    assert_eq!(AmiMessage::parse_with(frame, &mut buf).as_ref(), Ok(m));
    let parts: Vec<(String, Vec<u8>)> = m
        .split_events()
        .flat_map(|p| {
            p.headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    let all: Vec<(String, Vec<u8>)> = m
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_vec()))
        .collect();
    assert_eq!(
        parts,
        all,
        "split_events lost or moved headers: {}",
        show(frame)
    );
    read_everything(m);
}

/// Every typed accessor, called.
fn read_everything(m: &AmiMessage<'_>) {
    let _ = (
        m.event(),
        m.response(),
        m.action(),
        m.action_id(),
        m.timestamp(),
    );
    let _ = (
        m.greeting(),
        m.greeting_version(),
        m.command_output(),
        m.event_count(),
    );
    match m.typed() {
        Event::Cel(c) => {
            let _ = (c.kind(), c.extra(), c.extra_json(), c.event_time());
            let _ = (c.event_timestamp(), c.channel().linkedid(), c.uniqueid());
        }
        Event::Cdr(c) => {
            let _ = (c.start_time(), c.answer_time(), c.end_time());
            let _ = (c.duration(), c.billable_seconds(), c.disposition());
        }
        Event::DialBegin(d) | Event::DialEnd(d) => {
            let _ = (
                d.dest().variables().count(),
                d.caller().state(),
                d.dest_uniqueid(),
            );
            let _ = (d.dest_channel(), d.dial_status(), d.dest().priority());
        }
        Event::Hangup(h) | Event::HangupRequest(h) | Event::SoftHangupRequest(h) => {
            let _ = (h.cause(), h.cause_txt(), h.channel().variable("X"));
        }
        Event::Newchannel(v) | Event::Newstate(v) | Event::NewCallerid(v) => {
            let c = v.channel();
            let _ = (
                c.name(),
                c.uniqueid(),
                c.linkedid(),
                c.state(),
                c.caller_id_name(),
            );
        }
        Event::BridgeEnter(b) | Event::BridgeLeave(b) => {
            let _ = (b.bridge_uniqueid(), b.num_channels(), b.channel().name());
        }
        Event::LegacyBridge(b) => {
            let _ = (b.is_link(), b.uniqueid1(), b.uniqueid2());
        }
        Event::BlindTransfer(t) => {
            let _ = (t.is_external(), t.transferee().uniqueid(), t.extension());
        }
        Event::AttendedTransfer(t) => {
            let _ = (
                t.dest_type(),
                t.transfer_target().uniqueid(),
                t.is_external(),
            );
        }
        Event::CoreShowChannel(c) => {
            let _ = (c.duration(), c.channel().uniqueid());
        }
        Event::CoreShowChannelsComplete(c) => {
            let _ = c.list_items();
        }
        Event::Response(r) => {
            let _ = (r.status(), r.is_success(), r.challenge(), r.message_text());
        }
        Event::Rename(r) => {
            let _ = (r.old_name(), r.new_name());
        }
        Event::VarSet(v) => {
            let _ = (v.variable(), v.value());
        }
        _ => {}
    }
}

/// Every invariant of the `ami_parse` target:
///
/// * [`AmiMessage::parse`] on the buffer: `Ok` satisfies [`check_message`]; `Err` has
///   `offset <= len`;
/// * [`parse_ami`] on the buffer agrees with a default [`AmiFramer`] fed the same bytes: a
///   `Complete` value is the framer's first frame parsed, consumed up to where the framer
///   stopped, with `0 < consumed <= len` and the prefixes before it `Incomplete`; `Incomplete`
///   means the framer has no frame; `Err` is the framer's error frame or the parse error of
///   its first frame;
/// * [`skip_message`] returns a count within the buffer that ends at a line end;
/// * the CEL `Extra`, timestamp and date-time readers never panic.
pub fn check_ami_parse(data: &[u8]) {
    match AmiMessage::parse(data) {
        Ok(m) => check_message(data, &m),
        Err(e) => assert!(
            e.offset <= data.len(),
            "error offset {} past the end ({}): {e}: {}",
            e.offset,
            data.len(),
            show(data)
        ),
    }
    check_parse_ami_against_framer(data);
    if let Some(n) = skip_message(data) {
        assert!(0 < n && n <= data.len() && data[..n].ends_with(b"\n"));
    }
    let _ = CelExtra::parse(data, CelEventKind::Hangup);
    let _ = CelExtra::parse(data, CelEventKind::BlindTransfer);
    let _ = Timestamp::parse(data);
    let _ = parse_local_datetime(data);
}

fn check_parse_ami_against_framer(data: &[u8]) {
    let stateless = parse_ami(data);
    let mut framer = AmiFramer::default();
    framer.push(data);
    let first = framer.next_frame().map(|f| match f {
        Frame::Greeting { line, offset, .. }
        | Frame::Message {
            bytes: line,
            offset,
            ..
        } => (
            AmiMessage::parse(line).map(AmiMessage::into_owned),
            offset,
            line.to_vec(),
        ),
        Frame::Error { kind, offset, .. } => {
            (Err(ParseError { offset: 0, kind }), offset, Vec::new())
        }
        Frame::Truncated { .. } => unreachable!("next_frame never returns Truncated"),
    });
    match (&stateless, first) {
        (Ok(Parsed::Incomplete), None) => {}
        (Ok(Parsed::Complete { value, consumed }), Some((Ok(m), _, frame))) => {
            assert_eq!(
                value,
                &m,
                "parse_ami and the framer disagree on {}",
                show(data)
            );
            assert!(0 < *consumed && *consumed <= data.len());
            assert_eq!(
                *consumed as u64,
                framer.consumed(),
                "parse_ami consumed a different count than the framer on {}",
                show(data)
            );
            for k in [0, consumed / 2, consumed - 1] {
                assert_eq!(
                    parse_ami(&data[..k]),
                    Ok(Parsed::Incomplete),
                    "a strict prefix ({k} of {consumed}) is not Incomplete: {}",
                    show(data)
                );
            }
            check_message(&frame, value);
        }
        (Err(e), Some((Err(f), offset, _))) => {
            assert!(e.offset <= data.len());
            let f = f.with_base(usize::try_from(offset).unwrap_or(usize::MAX));
            assert_eq!(e, &f, "parse_ami and the framer disagree on {}", show(data));
        }
        (s, f) => panic!(
            "parse_ami says {s:?}, the framer's first frame {f:?}, on {}",
            show(data)
        ),
    }
}

/// A frame, owned, to compare runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedFrame {
    /// [`Frame::Greeting`]: (line, number, offset).
    Greeting(String, u64, u64),
    /// [`Frame::Message`]: (bytes, number, offset).
    Message(String, u64, u64),
    /// [`Frame::Error`]: (kind, number, offset).
    Error(ParseErrorKind, u64, u64),
    /// [`Frame::Truncated`]: (bytes, number, offset).
    Truncated(String, u64, u64),
}

impl OwnedFrame {
    fn new(frame: &Frame<'_>) -> Self {
        match frame {
            Frame::Greeting {
                line,
                number,
                offset,
            } => Self::Greeting(show(line), *number, *offset),
            Frame::Message {
                bytes,
                number,
                offset,
            } => Self::Message(show(bytes), *number, *offset),
            Frame::Error {
                kind,
                number,
                offset,
            } => Self::Error(kind.clone(), *number, *offset),
            Frame::Truncated {
                bytes,
                number,
                offset,
            } => Self::Truncated(show(bytes), *number, *offset),
        }
    }
}

/// What the `ami_framer` target decodes from its input bytes (a plain layout, no `arbitrary`,
/// so that the stable replay decodes corpus files the same way):
///
/// `[m, h, n, size_1 .. size_n, payload ..]`: `max_message` is `16 + 16 * m` (16 to 4,096),
/// `max_headers` is `h / 4` (0 to 63) or the default for `h = 255`; `n % 16` chunk sizes of 0 to
/// 255 bytes follow (used in turn, over and over; 0 pushes an empty chunk), and the rest is the
/// stream. With no non-zero size the payload is pushed in one chunk. Missing bytes count as 0.
#[derive(Debug, Clone, Copy)]
pub struct FramerInput<'a> {
    /// The framer's limits.
    pub limits: Limits,
    /// Chunk sizes, used in turn.
    pub chunk_sizes: &'a [u8],
    /// The stream.
    pub payload: &'a [u8],
}

impl<'a> FramerInput<'a> {
    /// Decodes the layout described on the type.
    pub fn decode(data: &'a [u8]) -> Self {
        let (m, rest) = data.split_first().map_or((0, data), |(m, r)| (*m, r));
        let (h, rest) = rest.split_first().map_or((0, rest), |(h, r)| (*h, r));
        let (n, rest) = rest.split_first().map_or((0, rest), |(n, r)| (*n, r));
        let (chunk_sizes, payload) = rest.split_at(usize::from(n % 16).min(rest.len()));
        let max_headers = if h == 255 {
            Limits::default().max_headers
        } else {
            usize::from(h / 4)
        };
        Self {
            limits: Limits {
                max_message: 16 + 16 * usize::from(m),
                max_headers,
            },
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

/// A line-by-line model of the framer's documented behaviour over a whole stream: returns the
/// frames `next_frame` gives for the stream pushed at once, and what `finish` gives then.
pub fn expected_frames(data: &[u8], limits: Limits) -> (Vec<OwnedFrame>, Option<OwnedFrame>) {
    let (frames, last) = model(data, limits);
    let n = frames.len() as u64;
    let number = |(k, f): (usize, M)| f.owned(k as u64 + 1);
    let frames: Vec<OwnedFrame> = frames.into_iter().enumerate().map(number).collect();
    (frames, last.map(|f| f.owned(n + 1)))
}

/// A frame of the model, before numbering: (what, offset).
enum M {
    Greeting(Vec<u8>, usize),
    Message(Vec<u8>, usize),
    Error(ParseErrorKind, usize),
    Truncated(Vec<u8>, usize),
}

impl M {
    fn owned(self, number: u64) -> OwnedFrame {
        match self {
            Self::Greeting(b, at) => OwnedFrame::Greeting(show(&b), number, at as u64),
            Self::Message(b, at) => OwnedFrame::Message(show(&b), number, at as u64),
            Self::Error(k, at) => OwnedFrame::Error(k, number, at as u64),
            Self::Truncated(b, at) => OwnedFrame::Truncated(show(&b), number, at as u64),
        }
    }
}

fn model(data: &[u8], limits: Limits) -> (Vec<M>, Option<M>) {
    let max = limits.max_message.max(1);
    let nl = |from: usize| {
        data[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i)
    };
    let mut frames = Vec::new();
    let too_large = ParseErrorKind::MessageTooLarge { max };
    let too_many = ParseErrorKind::TooManyHeaders {
        max: limits.max_headers,
    };
    // Drops a message from `from` (a line start) up to and including the next blank line;
    // `None` when the stream ends first.
    let discard = |from: usize| -> Option<usize> {
        let mut p = from;
        loop {
            let n = nl(p)?;
            let blank = is_blank(&data[p..n]);
            p = n + 1;
            if blank {
                return Some(p);
            }
        }
    };
    let mut pos = 0usize;
    'idle: loop {
        // Between frames.
        let Some(n) = nl(pos) else {
            let rest = &data[pos..];
            if is_blank(rest) {
                return (frames, None);
            }
            if rest.len() > max {
                frames.push(M::Error(too_large, pos));
                return (frames, None);
            }
            return (frames, Some(M::Truncated(rest.to_vec(), pos)));
        };
        let line = &data[pos..n];
        let start = pos;
        let mut at = n + 1;
        if is_blank(line) {
            pos = at;
            continue;
        }
        let first_error = if at - start > max {
            Some(too_large.clone())
        } else if is_greeting(line) {
            frames.push(M::Greeting(strip_cr(line).to_vec(), start));
            pos = at;
            continue;
        } else if limits.max_headers < 1 {
            Some(too_many.clone())
        } else {
            None
        };
        if let Some(kind) = first_error {
            frames.push(M::Error(kind, start));
            match discard(at) {
                Some(p) => {
                    pos = p;
                    continue;
                }
                None => return (frames, None),
            }
        }
        let follows = is_follows(line);
        let mut lines = 1usize;
        let mut end_seen = false;
        let mut blank_at: Option<usize> = None;
        loop {
            if end_seen {
                pos = match &data[at..] {
                    [] | [b'\r'] => {
                        return (frames, Some(M::Truncated(data[start..].to_vec(), start)));
                    }
                    [b'\n', ..] => at + 1,
                    [b'\r', b'\n', ..] => at + 2,
                    _ => at,
                };
                frames.push(M::Message(data[start..at].to_vec(), start));
                continue 'idle;
            }
            let Some(n) = nl(at) else {
                let rest = &data[at..];
                if let (true, Some(b)) = (follows, blank_at) {
                    // The first bytes of a line after blank output lines decide whether it
                    // starts the next message.
                    if rest.len() < 22 && !rest.contains(&b':') {
                        return (frames, Some(M::Truncated(data[start..].to_vec(), start)));
                    }
                    if is_message_start(rest) {
                        frames.push(M::Message(data[start..b].to_vec(), start));
                        pos = at;
                        continue 'idle;
                    }
                }
                if !is_blank(rest) && at - start + rest.len() > max {
                    frames.push(M::Error(too_large, start));
                    return (frames, None);
                }
                return (frames, Some(M::Truncated(data[start..].to_vec(), start)));
            };
            let line = &data[at..n];
            let next = n + 1;
            let error = if follows {
                if let (Some(b), true) = (blank_at, is_message_start(line)) {
                    frames.push(M::Message(data[start..b].to_vec(), start));
                    pos = at;
                    continue 'idle;
                }
                if is_blank(line) {
                    blank_at = blank_at.or(Some(at));
                } else {
                    blank_at = None;
                    end_seen = ends_command(line);
                }
                (next - start > max).then(|| too_large.clone())
            } else {
                if is_blank(line) {
                    frames.push(M::Message(data[start..at].to_vec(), start));
                    pos = next;
                    continue 'idle;
                }
                lines += 1;
                if next - start > max {
                    Some(too_large.clone())
                } else if lines > limits.max_headers {
                    Some(too_many.clone())
                } else {
                    None
                }
            };
            if let Some(kind) = error {
                frames.push(M::Error(kind, start));
                match discard(next) {
                    Some(p) => {
                        pos = p;
                        continue 'idle;
                    }
                    None => return (frames, None),
                }
            }
            at = next;
        }
    }
}

/// One run of the framer over `chunks`, checking the bounds after every push and drain.
/// Returns (frames from `next_frame`, frame from `finish`).
fn run_framer(limits: Limits, chunks: &[&[u8]]) -> (Vec<OwnedFrame>, Option<OwnedFrame>) {
    let max = limits.max_message.max(1);
    let mut framer = AmiFramer::new(limits);
    let mut frames = Vec::new();
    let mut total = 0u64;
    let mut headers = HeaderBuf::new();
    for chunk in chunks {
        framer.push(chunk);
        total += chunk.len() as u64;
        while let Some(frame) = framer.next_frame() {
            if let Frame::Message { bytes, .. } = frame {
                assert!(
                    !bytes.is_empty() && bytes.len() <= max && bytes.ends_with(b"\n"),
                    "bad message frame {}",
                    show(bytes)
                );
                if let Ok(m) = AmiMessage::parse_with(bytes, &mut headers) {
                    // The header limit counts the lines of a message; command output (after
                    // `Response: Follows`) is bounded by size only.
                    let follows = m.header(0).is_some_and(|(n, v)| {
                        n.eq_ignore_ascii_case("Response") && v.eq_ignore_ascii_case(b"Follows")
                    });
                    assert!(m.len() <= limits.max_headers || follows, "{}", show(bytes));
                }
            }
            frames.push(OwnedFrame::new(&frame));
        }
        assert!(
            framer.buffered() <= max + 66,
            "buffered {} > max_message {max} + 66 with no frame ready",
            framer.buffered()
        );
        assert_eq!(framer.consumed() + framer.buffered() as u64, total);
    }
    let last = framer.finish().map(|f| OwnedFrame::new(&f));
    assert_eq!(framer.buffered(), 0, "bytes left after finish");
    assert_eq!(framer.consumed(), total);
    assert!(!framer.is_discarding());
    assert!(framer.finish().is_none(), "finish returned a second frame");
    assert!(framer.next_frame().is_none(), "a frame after finish");
    (frames, last)
}

/// Every invariant of the `ami_framer` target, for input bytes in the [`FramerInput`] layout:
/// pushing the payload in the decoded chunks and pushing it at once both give exactly the
/// frames of [`expected_frames`] (numbers from 1 without gaps, offsets where each frame
/// starts); message frames are within the limits; `buffered()` stays within one maximum
/// message (plus a short pending blank line) once drained; every byte is accounted for; every
/// message frame that parses satisfies [`check_message`].
pub fn check_ami_framer(data: &[u8]) {
    let input = FramerInput::decode(data);
    let chunks = input.chunks();
    let (want, want_last) = expected_frames(input.payload, input.limits);
    let whole = run_framer(input.limits, &[input.payload]);
    let chunked = run_framer(input.limits, &chunks);
    for (how, got) in [("at once", &whole), ("in chunks", &chunked)] {
        assert_eq!(
            got,
            &(want.clone(), want_last.clone()),
            "frames pushed {how} differ from the model\n  limits {:?}, chunks {:?}\n  payload {}",
            input.limits,
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            show(input.payload)
        );
    }
    // Every message frame parses to a message that round-trips, or fails with an offset in it.
    let mut framer = AmiFramer::new(input.limits);
    framer.push(input.payload);
    while let Some(frame) = framer.next_frame() {
        if let Frame::Message { bytes, .. } | Frame::Greeting { line: bytes, .. } = frame {
            match AmiMessage::parse(bytes) {
                Ok(m) => check_message(bytes, &m),
                Err(e) => assert!(e.offset <= bytes.len()),
            }
        }
    }
}
